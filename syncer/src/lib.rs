//! nvr's syncer: the one process that owns the database and the sample dir.
//!
//! It creates, fsyncs, hashes, truncates and unlinks sample files, commits recordings to
//! SQLite in batches, deletes the oldest recordings to keep each stream within its byte quota,
//! and recovers from a crash at any step. Writers (the ingest processes) only ever hold the
//! write-only descriptors it hands out. See `ARCHITECTURE.md` and DESIGN.md for the whole.
//!
//! Every sample-dir operation goes through the [`fs`] seam, so [`sim_fs`] can inject faults and
//! simulate power loss; every clock read goes through `protocol::clock`.

pub mod admin_client;
pub mod check;
pub mod db;
mod dropped;
pub mod durability;
pub mod error;
pub mod exposure;
pub mod flush_plan;
pub mod fs;
pub mod garbage;
pub mod ingest_session;
pub mod layout;
/// The limits of the ingest protocol, which the syncer enforces (defined in `protocol`, which
/// the ingest shares).
pub use protocol::limits;
pub mod meta;
pub mod recovery;
pub mod reported;
pub mod reserve;
pub mod retention;
pub mod server;
pub mod sim_fs;
pub mod store;
pub mod throttle;

pub use error::Error;
pub use store::{CloseRequest, Committed, Syncer, SyncerOptions};
