//! Shared domain types of nvr's processes (supervisor, syncer, ingests): recording ids and
//! sample file names ([`CompositeId`]), 90 kHz time ([`Time`], [`Duration`]), the sample index
//! codec, and the clock seam ([`Clock`]) with retry backoff built on it.
//!
//! Everything here is pure computation on values, with no I/O but the clock, so every process
//! can depend on it and the ingest can validate what it sends exactly as the syncer will check
//! it. The wire protocol between the processes (message types, framing, descriptor passing)
//! will be added to this crate as well.

pub mod clock;
pub mod id;
pub mod retry;
pub mod sample_index;
pub mod time;

pub use clock::{Clock, RealClock, SimClock};
pub use id::{CompositeId, IdError};
pub use retry::{RetryStopped, retry};
pub use sample_index::{
    IndexError, IndexSummary, Sample, SampleIndexEncoder, SampleIndexIterator, summarize,
    whole_sample_prefix,
};
pub use time::{Duration, TIME_UNITS_PER_SEC, Time};
