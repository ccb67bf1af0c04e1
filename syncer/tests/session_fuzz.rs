//! A hostile ingest as a property: arbitrary sequences of requests, with arbitrary numbers and
//! arbitrary raw frames through the decoder, against the request table and the syncer on a
//! simulated disk. Whatever is sent, nothing panics (this runs in a debug build, so any
//! unchecked arithmetic would), no error is fatal to the syncer, the data dir keeps every
//! invariant, and another stream's committed recording is untouched.
//!
//! `PROPTEST_CASES=5000 cargo test -p nvr-syncer --test session_fuzz` runs a longer search; a
//! failure prints the sequence, shrunk, and proptest keeps its seed for the next run.

mod support;

use proptest::prelude::*;
use protocol::codec::decode;
use protocol::messages::{IngestRequest, RecordingTimes, SampleReport};
use protocol::{CompositeId, Duration, Time, limits};
use support::*;
use syncer::Syncer;
use syncer::fs::DirFile;
use syncer::ingest_session::{Action, IngestSession};
use syncer::sim_fs::{SimFile, SimFs};

/// Sample duration of the honest writes, 90 kHz: half the minimum recording duration
/// (`limits::MIN_RECORDING_DURATION_90K`, the last sample's counted), so that a recording of
/// one sample is short and one of two is not, and sequences reach both continued runs and the
/// refusal to continue a short recording's run (the model continues after every close).
const SAMPLE_90K: i64 = limits::MIN_RECORDING_DURATION_90K / 2;

/// Which recording id a request names.
#[derive(Clone, Debug)]
enum PickId {
    /// The one this connection is writing (or a made-up one when there is none).
    Growing,
    Any(u64),
}

#[derive(Clone, Debug)]
enum Op {
    AddEntry {
        width: u16,
        height: u16,
        codec: String,
        data: Vec<u8>,
    },
    Open {
        /// `None`: the next of this connection's run.
        run_offset: Option<i32>,
        /// `None`: the entry last added on this connection; else any id.
        entry: Option<i32>,
    },
    /// Writes one sample of this many bytes, as a writer would (it is reported as unreported
    /// samples are, below).
    Write(usize),
    /// `None` fields are what an honest writer would send: the samples written since the last
    /// report, the time model so far, the bytes written so far.
    Progress {
        id: PickId,
        samples: Option<Vec<SampleReport>>,
        times: Option<RecordingTimes>,
        written_bytes: Option<u64>,
    },
    Close {
        id: PickId,
        samples: Option<Vec<SampleReport>>,
        last_sample_duration_90k: Option<i32>,
        times: Option<RecordingTimes>,
        /// Whether the reported hash is that of what was written.
        true_hash: bool,
    },
    Abandon {
        id: PickId,
        reason: String,
    },
    Disconnect,
    Tick(u16),
    Raw(Vec<u8>),
}

/// Numbers that reach both the plausible paths and every boundary.
fn i64_value() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => 0i64..100_000,
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
        1 => Just(-1i64),
        1 => Just(limits::MAX_START_90K),
        1 => Just(limits::MAX_WALL_DURATION_90K + 1),
        2 => any::<i64>(),
    ]
}

fn i32_value() -> impl Strategy<Value = i32> {
    prop_oneof![
        4 => 0i32..10_000,
        1 => Just(i32::MIN),
        1 => Just(i32::MAX),
        1 => Just(-1i32),
        2 => any::<i32>(),
    ]
}

fn samples() -> impl Strategy<Value = Vec<SampleReport>> {
    let sample = (
        i64_value(),
        prop_oneof![4 => 1u32..2000, 1 => any::<u32>(), 1 => Just(0u32)],
        any::<bool>(),
    )
        .prop_map(|(pts_90k, bytes, is_key)| SampleReport {
            pts_90k,
            bytes,
            is_key,
        });
    proptest::collection::vec(sample, 0..6)
}

fn times() -> impl Strategy<Value = RecordingTimes> {
    let start = prop_oneof![
        4 => (0i64..1_000_000).prop_map(|d| T0 + Duration(d)),
        1 => i64_value().prop_map(Time),
    ];
    (start, i32_value(), i64_value()).prop_map(|(start, wall, delta)| RecordingTimes {
        start,
        wall_duration_90k: wall,
        local_time_delta_90k: delta,
    })
}

/// Mostly what an honest writer sends (`None`), sometimes anything.
fn mostly_honest<T: std::fmt::Debug + Clone>(
    any: impl Strategy<Value = T>,
) -> impl Strategy<Value = Option<T>> {
    prop_oneof![12 => Just(None), 1 => any.prop_map(Some)]
}

fn pick_id() -> impl Strategy<Value = PickId> {
    prop_oneof![12 => Just(PickId::Growing), 1 => any::<u64>().prop_map(PickId::Any)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (prop_oneof![3 => 1u16..4000, 1 => any::<u16>()], prop_oneof![3 => 1u16..4000, 1 => any::<u16>()],
              prop_oneof![3 => Just("avc1.4d401e".to_owned()), 1 => "[a-z0-9.]{0,70}"],
              proptest::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(width, height, codec, data)| Op::AddEntry { width, height, codec, data }),
        3 => (mostly_honest(i32_value()), mostly_honest(i32_value()))
            .prop_map(|(run_offset, entry)| Op::Open { run_offset, entry }),
        6 => (1usize..3000).prop_map(Op::Write),
        4 => (pick_id(), mostly_honest(samples()), mostly_honest(times()), mostly_honest(any::<u64>()))
            .prop_map(|(id, samples, times, written_bytes)| Op::Progress { id, samples, times, written_bytes }),
        3 => (pick_id(), mostly_honest(samples()), prop_oneof![3 => Just(Some(SAMPLE_90K as i32)), 1 => proptest::option::of(i32_value())], mostly_honest(times()), prop_oneof![4 => Just(true), 1 => Just(false)])
            .prop_map(|(id, samples, last_sample_duration_90k, times, true_hash)| Op::Close { id, samples, last_sample_duration_90k, times, true_hash }),
        1 => (pick_id(), "[ -~\n]{0,40}").prop_map(|(id, reason)| Op::Abandon { id, reason }),
        1 => Just(Op::Disconnect),
        2 => (0u16..200).prop_map(Op::Tick),
        1 => proptest::collection::vec(any::<u8>(), 0..120).prop_map(Op::Raw),
    ]
}

/// One hostile connection after another on stream `stream`.
struct Hostile {
    stream: i32,
    session: IngestSession,
    entries: Vec<i32>,
    writer: Option<(CompositeId, SimFile)>,
    written: Vec<u8>,
    /// Samples written and not yet reported, as an honest writer would report them.
    unreported: Vec<SampleReport>,
    next_pts_90k: i64,
    /// The run offset the model opens next: one more after each accepted close, also after a
    /// short recording's (which an honest writer would not continue: the syncer refuses).
    run_offset: i32,
    /// Where the growing recording starts: the end of the run's previous one.
    start: Time,
}

impl Hostile {
    fn new(stream: i32) -> Self {
        Hostile {
            stream,
            session: IngestSession::new(stream),
            entries: Vec::new(),
            writer: None,
            written: Vec::new(),
            unreported: Vec::new(),
            next_pts_90k: 0,
            run_offset: 0,
            start: T0,
        }
    }

    /// The time model an honest writer reports: media time so far as wall time.
    fn honest_times(&self) -> RecordingTimes {
        RecordingTimes {
            start: self.start,
            wall_duration_90k: self.next_pts_90k as i32,
            local_time_delta_90k: 0,
        }
    }

    fn id(&self, pick: &PickId) -> CompositeId {
        match (pick, &self.writer) {
            (PickId::Growing, Some((id, _))) => *id,
            (PickId::Growing, None) => CompositeId::new(self.stream, 1),
            (PickId::Any(raw), _) => CompositeId(*raw as i64),
        }
    }

    fn request(&mut self, op: Op) -> Option<IngestRequest> {
        Some(match op {
            Op::AddEntry {
                width,
                height,
                codec,
                data,
            } => IngestRequest::AddSampleEntry {
                width,
                height,
                rfc6381_codec: codec,
                data,
            },
            Op::Open { run_offset, entry } => IngestRequest::OpenRecording {
                run_offset: run_offset.unwrap_or(self.run_offset),
                sample_entry_id: entry.unwrap_or(*self.entries.last().unwrap_or(&1)),
            },
            Op::Progress {
                id,
                samples,
                times,
                written_bytes,
            } => IngestRequest::Progress {
                id: self.id(&id),
                times: times.unwrap_or_else(|| self.honest_times()),
                samples: samples.unwrap_or_else(|| std::mem::take(&mut self.unreported)),
                written_bytes: written_bytes.unwrap_or(self.written.len() as u64),
            },
            Op::Close {
                id,
                samples,
                last_sample_duration_90k,
                times,
                true_hash,
            } => IngestRequest::CloseRecording {
                id: self.id(&id),
                times: times.unwrap_or_else(|| self.honest_times()),
                samples: samples.unwrap_or_else(|| std::mem::take(&mut self.unreported)),
                last_sample_duration_90k,
                end_reason: None,
                writer_blake3: if true_hash {
                    *blake3::hash(&self.written).as_bytes()
                } else {
                    [7; 32]
                },
            },
            Op::Abandon { id, reason } => IngestRequest::AbandonRecording {
                id: self.id(&id),
                end_reason: reason,
            },
            Op::Raw(bytes) => decode::<IngestRequest>(&bytes).ok()?,
            Op::Write(_) | Op::Disconnect | Op::Tick(_) => return None,
        })
    }

    /// What an honest writer would do first where `op` needs a growing recording or an entry
    /// this connection lacks (so that sequences get past the first requests), else `op`.
    fn prerequisite_or(&self, op: Op) -> Op {
        let needs_growing = matches!(
            op,
            Op::Write(_)
                | Op::Progress {
                    id: PickId::Growing,
                    ..
                }
                | Op::Close {
                    id: PickId::Growing,
                    ..
                }
                | Op::Abandon {
                    id: PickId::Growing,
                    ..
                }
        ) && self.writer.is_none();
        let needs_entry = needs_growing || matches!(op, Op::Open { entry: None, .. });
        if needs_entry && self.entries.is_empty() {
            Op::AddEntry {
                width: 640,
                height: 480,
                codec: "avc1.4d401e".to_owned(),
                data: vec![self.stream as u8; 16],
            }
        } else if needs_growing {
            Op::Open {
                run_offset: None,
                entry: None,
            }
        } else if matches!(op, Op::Close { samples: None, .. }) && self.written.is_empty() {
            Op::Write(100)
        } else if matches!(
            op,
            Op::Open {
                run_offset: None,
                entry: None
            }
        ) && self.writer.is_some()
        {
            Op::Close {
                id: PickId::Growing,
                samples: None,
                last_sample_duration_90k: Some(SAMPLE_90K as i32),
                times: None,
                true_hash: true,
            }
        } else {
            op
        }
    }

    /// Applies one op; panics only on what must never happen (a fatal error).
    fn apply(&mut self, s: &mut Syncer<SimFs>, env: &Env, op: Op) {
        let op = self.prerequisite_or(op);
        match op {
            Op::Write(n) => {
                if let Some((id, f)) = self.writer.as_mut() {
                    let data = sample_bytes(*id, self.written.len() as u32, n);
                    if f.write(&data).is_ok_and(|w| w == n) {
                        self.written.extend_from_slice(&data);
                        self.unreported.push(SampleReport {
                            pts_90k: self.next_pts_90k,
                            bytes: n as u32,
                            is_key: self.next_pts_90k == 0,
                        });
                        self.next_pts_90k += SAMPLE_90K;
                    }
                }
                return;
            }
            Op::Disconnect => return self.drop_connection(s, "disconnected"),
            Op::Tick(secs) => {
                env.clock.advance(Duration(i64::from(secs) * 90_000));
                poll(s).unwrap_or_else(|e| panic!("poll failed fatally: {e}"));
                return;
            }
            _ => {}
        }
        let Some(req) = self.request(op) else {
            return;
        };
        match self.session.handle(s, req) {
            Ok(Action::Reply(protocol::messages::IngestReply::SampleEntry { id })) => {
                self.entries.push(id)
            }
            Ok(Action::Reply(_)) => {}
            Ok(Action::Opened(id, f)) => {
                self.writer = Some((id, f));
                self.written.clear();
                self.unreported.clear();
                self.next_pts_90k = 0;
            }
            Ok(Action::Save(p)) => {
                let id = p.id();
                self.writer = None;
                let result = p.run(&**s.dir());
                match self.session.saved(s, id, result) {
                    Ok(_) => {
                        self.run_offset += 1;
                        self.start += Duration(self.next_pts_90k);
                    }
                    Err(e) => {
                        assert!(!e.is_fatal(), "fatal error concluding a save: {e}");
                        self.drop_connection(s, "bad close");
                    }
                }
            }
            Err(e) => {
                assert!(!e.is_fatal(), "fatal error from a request: {e}");
                self.drop_connection(s, "bad request");
            }
        }
    }

    /// What the daemon does when a connection goes: salvage, then a fresh connection.
    fn drop_connection(&mut self, s: &mut Syncer<SimFs>, why: &str) {
        match self.session.disconnected(s, why) {
            Ok(Some(p)) => {
                let id = p.id();
                let result = p.run(&**s.dir());
                if let Err(e) = s.finish_save(id, result) {
                    assert!(!e.is_fatal(), "fatal error concluding a salvage: {e}");
                }
            }
            Ok(None) => {}
            Err(e) => assert!(!e.is_fatal(), "fatal error on disconnect: {e}"),
        }
        *self = Hostile::new(self.stream);
    }
}

proptest! {
    // 64 cases unless PROPTEST_CASES says otherwise.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64),
    ))]

    #[test]
    fn arbitrary_requests_break_nothing(ops in proptest::collection::vec(op(), 1..60)) {
        let (env, ids) = init_env(&[("honest", config(1 << 30, 0)), ("hostile", config(1 << 20, 0))]);
        let mut s = start(&env).unwrap();
        let (kept, _) = record(&mut s, &env.clock, ids[0], 0, T0, 10, 500).unwrap();
        poll(&mut s).unwrap();
        let mut h = Hostile::new(ids[1]);
        for op in ops {
            h.apply(&mut s, &env, op);
        }
        h.drop_connection(&mut s, "end of test");
        s.shutdown().unwrap();
        drop(s);
        let s = start(&env).unwrap();
        drop(s);
        let db = open_db(&env);
        let violations = check_invariants(&env.fs, &db);
        prop_assert!(violations.is_empty(), "{:#?}", violations);
        prop_assert!(recording_ids(&db).contains(&kept), "the honest stream's recording is kept");
    }
}
