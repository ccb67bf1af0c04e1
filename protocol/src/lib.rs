//! Shared domain types of nvr's processes (supervisor, syncer, ingests) and the wire protocol
//! between them: recording ids and sample file names ([`CompositeId`]), 90 kHz time ([`Time`],
//! [`Duration`]), the sample index codec, the clock seam ([`Clock`]) with retry backoff built on
//! it, and the messages, their framing and descriptor passing.
//!
//! Everything but [`wire`] is pure computation on values, with no I/O but the clock, so every
//! process can depend on it and the ingest can validate what it sends exactly as the syncer will
//! check it. The protocol is three layers, each replaceable without the others: [`messages`]
//! (what is said, as `serde` types), [`codec`] (how a message becomes a length-prefixed frame;
//! the only module that knows bincode), and [`wire`] (frames and `SCM_RIGHTS` descriptors over
//! a Unix stream socket).

pub mod clock;
pub mod codec;
pub mod id;
pub mod limits;
pub mod messages;
pub mod retry;
pub mod sample_index;
pub mod source_spec;
pub mod source_url;
pub mod time;
pub mod wire;

pub use clock::{Clock, RealClock, SimClock};
pub use id::{CompositeId, IdError};
pub use retry::{RetryStopped, retry};
pub use sample_index::{
    IndexError, IndexSummary, Sample, SampleIndexEncoder, SampleIndexIterator, summarize,
    whole_sample_prefix,
};
pub use time::{Duration, TIME_UNITS_PER_SEC, Time};
pub use wire::{Conn, WireError, check_version, peer_uid};
