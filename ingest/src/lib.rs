//! nvr's per-camera ingest: one `nvr-ingest` process reads one camera stream and writes its
//! frames into the sample-file descriptors that the syncer hands it (DESIGN.md, "Processes").
//!
//! The ingest is the unprivileged side of the split. It parses everything that comes from the
//! camera, so that a parser bug or a hostile camera costs at most this one stream, and it holds
//! nothing it could use against another stream: no database (this crate never links SQLite and
//! does not depend on the syncer crate), no path in the sample directory, only the connection
//! it was started with and the descriptors received over it.
//!
//! This increment provides the H.264 parsing that the `file:PATH` source needs ([`h264`]):
//! Annex B byte streams into NAL units, the SPS into dimensions and an RFC 6381 codec string,
//! the `avc1`/`avcC` sample entry an `.mp4` needs, and access units into length-prefixed frames
//! with key-frame flags. The sources, the writer state machine and the syncer client follow.

pub mod h264;
