//! nvr's per-camera ingest: one `nvr-ingest` process reads one camera stream and writes its
//! frames into the sample-file descriptors that the syncer hands it (DESIGN.md, "Processes").
//!
//! The ingest is the unprivileged side of the split. It parses everything that comes from the
//! camera, so that a parser bug or a hostile camera costs at most this one stream, and it holds
//! nothing it could use against another stream: no database (this crate never links SQLite and
//! does not depend on the syncer crate), no path in the sample directory, only the connection
//! it was started with and the descriptors received over it.
//!
//! The pipeline, one module each:
//!
//! - [`source`]: a source URL (`file:`, `synthetic:`) becomes paced [`source::Frame`]s with
//!   pts, local time and sample entry; [`h264`] parses the Annex B files.
//! - [`rtsp`]: an `rtsp://` camera, read with the `retina` client, becomes
//!   [`rtsp::Event`]s: frames, and the ends of sessions, after which it reconnects.
//! - [`writer`]: the state machine that turns frames into recordings: time model, rotation,
//!   progress reports, closes, write retries. It talks to the syncer through the
//!   [`writer::SyncerLink`] trait.
//! - [`client`]: the [`writer::SyncerLink`] over the brokered socket.
//! - [`sandbox`]: no new privileges, resource limits, Landlock and a seccomp allowlist,
//!   entered once everything is open and before any untrusted input is read.
//!
//! The `nvr-ingest` binary wires them together, with signals and exit statuses.

pub mod client;
pub mod h264;
pub mod rtsp;
pub mod sandbox;
pub mod source;
pub mod writer;
