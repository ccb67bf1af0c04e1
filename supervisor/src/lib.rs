//! `nvr`: the command line a user types, and the supervisor behind `nvr run`.
//!
//! Each subcommand lives in its own module of [`commands`]. While `nvr run` is active every
//! command goes through the running syncer's admin socket (the syncer stays the only process
//! that opens SQLite); otherwise a command opens the database itself under the sample dir's
//! lock.

pub mod cli;
pub mod commands;
pub mod identity;
pub mod ingest_uids;
pub mod mp4;
pub mod progress;
pub mod size;
pub mod state;
mod stderr_tail;
pub mod supervise;
