//! Tests of the client against an in-process fake syncer on a socketpair, passing real
//! temporary files as the recordings' descriptors.

use super::*;
use std::io::{Read, Seek};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;

use protocol::messages::PROTOCOL_VERSION;
use protocol::{Clock, Duration, SimClock, TIME_UNITS_PER_SEC, Time};

use crate::source::Frame;
use crate::writer::{Writer, WriterConfig, end_reason};

const STREAM: i32 = 5;
const START: Time = Time(1_700_000_000 * TIME_UNITS_PER_SEC);
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs `serve` as the syncer end of a fresh socketpair; returns the ingest end.
fn with_syncer<T: Send + 'static>(
    serve: impl FnOnce(Conn) -> T + Send + 'static,
) -> (Conn, JoinHandle<T>) {
    let (ingest, syncer) = Conn::pair().unwrap();
    (ingest, std::thread::spawn(move || serve(syncer)))
}

/// The syncer's side of the handshake, answering with `version`.
fn handshake(conn: &mut Conn, version: u32) {
    let hello: Hello = conn.recv().unwrap();
    assert_eq!(hello, Hello::new(ROLE_INGEST));
    conn.send(&HelloReply {
        protocol_version: version,
        stream_id: STREAM,
        stream_name: "cam-a".to_owned(),
        rotate_sec: 1,
    })
    .unwrap();
}

fn entry() -> SampleEntry {
    let clip = crate::h264::parse_clip(include_bytes!("../../testdata/clip.h264")).unwrap();
    clip.sample_entries[0].clone()
}

/// A close of `id` (its contents do not matter to the client).
fn close_of(id: CompositeId) -> Close {
    Close {
        id,
        samples: Vec::new(),
        last_sample_duration_90k: None,
        times: RecordingTimes {
            start: START,
            wall_duration_90k: 0,
            local_time_delta_90k: 0,
        },
        end_reason: None,
        writer_blake3: [0; 32],
    }
}

fn connect(conn: Conn) -> Client {
    Client::connect(conn).unwrap()
}

/// What the fake syncer of the full conversation saw.
#[derive(Debug, Default)]
struct Served {
    /// Per recording: its file (the syncer's own handle), run offset, reported samples and
    /// close.
    recordings: Vec<ServedRecording>,
}

#[derive(Debug)]
struct ServedRecording {
    file: File,
    run_offset: i32,
    samples: Vec<SampleReport>,
    /// The close's times and blake3.
    close: Option<(RecordingTimes, [u8; 32])>,
}

/// A fake syncer serving the whole conversation: a sample entry, recordings whose files are
/// temporary files, progress, and closes. A rotation's close is accepted (and committed) only
/// after the answer to the next open, as the real syncer may; a close with an end reason is
/// accepted at once.
fn serve_conversation(mut conn: Conn) -> Served {
    handshake(&mut conn, PROTOCOL_VERSION);
    let mut served = Served::default();
    let mut deferred: Option<CompositeId> = None;
    loop {
        let req = match conn.recv::<IngestRequest>() {
            Ok(req) => req,
            Err(WireError::Closed) => return served,
            Err(e) => panic!("fake syncer: {e}"),
        };
        match req {
            IngestRequest::AddSampleEntry { data, .. } => {
                assert_eq!(data, entry().data);
                conn.send(&IngestReply::SampleEntry { id: 1 }).unwrap();
            }
            IngestRequest::OpenRecording {
                run_offset,
                sample_entry_id,
            } => {
                assert_eq!(sample_entry_id, 1);
                let id = CompositeId::new(STREAM, served.recordings.len() as i32);
                let file = tempfile::tempfile().unwrap();
                conn.send_with_fd(&IngestReply::Opened { id }, file.as_fd())
                    .unwrap();
                served.recordings.push(ServedRecording {
                    file,
                    run_offset,
                    samples: Vec::new(),
                    close: None,
                });
                if let Some(closed) = deferred.take() {
                    conn.send(&IngestReply::Accepted { id: closed }).unwrap();
                    conn.send(&IngestReply::Committed { ids: vec![closed] })
                        .unwrap();
                }
            }
            IngestRequest::Progress {
                id,
                samples,
                written_bytes,
                ..
            } => {
                let r = &mut served.recordings[id.recording() as usize];
                r.samples.extend(samples);
                let reported: u64 = r.samples.iter().map(|s| u64::from(s.bytes)).sum();
                assert_eq!(written_bytes, reported, "the report's offset");
                conn.send(&IngestReply::Progressed { id, written_bytes })
                    .unwrap();
            }
            IngestRequest::CloseRecording {
                id,
                samples,
                times,
                end_reason,
                writer_blake3,
                ..
            } => {
                assert_eq!(deferred, None, "a second close while one is outstanding");
                let r = &mut served.recordings[id.recording() as usize];
                r.samples.extend(samples);
                r.close = Some((times, writer_blake3));
                if end_reason.is_some() {
                    conn.send(&IngestReply::Accepted { id }).unwrap();
                } else {
                    deferred = Some(id);
                }
            }
            IngestRequest::AbandonRecording { id, .. } => panic!("abandon of {id}"),
        }
    }
}

#[test]
fn full_conversation_records_into_the_descriptors_the_syncer_passes() {
    let (conn, syncer) = with_syncer(serve_conversation);
    let client = connect(conn);
    assert_eq!(client.hello().stream_id, STREAM);
    let clock: Arc<dyn Clock> = Arc::new(SimClock::new(START));
    let config = WriterConfig {
        stream_id: STREAM,
        rotate_sec: client.hello().rotate_sec,
        accept_timeout: TIMEOUT,
        open_budget: Default::default(),
    };
    let mut writer = Writer::new(client, config, clock, Arc::new(AtomicBool::new(false))).unwrap();
    let entry = Arc::new(entry());
    for i in 0..100i64 {
        let pts_90k = i * 3000;
        writer
            .write(&Frame {
                data: vec![i as u8; if i % 15 == 0 { 2000 } else { 200 }],
                is_key: i % 15 == 0,
                pts_90k,
                local_time: START + Duration(pts_90k),
                sample_entry: entry.clone(),
            })
            .unwrap();
    }
    writer.close(end_reason::SHUTDOWN).unwrap();
    writer.wait_accepted(TIMEOUT).unwrap();
    assert_eq!(writer.link().committed_recordings(), 2);
    drop(writer);
    let served = syncer.join().unwrap();

    // Rotations at the key frames 60 and 90 (stream 5's stagger would shorten the first
    // target to 0.91 s, under the minimum duration, so it is one interval longer: 1.91 s,
    // which frame 60 is the first key frame past), then the shutdown.
    assert_eq!(served.recordings.len(), 3);
    let mut frame = 0u8;
    let mut prev_end: Option<Time> = None;
    for (offset, r) in served.recordings.iter().enumerate() {
        let (times, writer_blake3) = r.close.expect("closed");
        let mut file = &r.file;
        file.rewind().unwrap();
        let mut contents = Vec::new();
        file.read_to_end(&mut contents).unwrap();
        let total: u64 = r.samples.iter().map(|s| u64::from(s.bytes)).sum();
        assert_eq!(contents.len() as u64, total, "recording {offset}");
        assert_eq!(*blake3::hash(&contents).as_bytes(), writer_blake3);
        let mut pos = 0;
        for s in &r.samples {
            assert!(
                contents[pos..pos + s.bytes as usize]
                    .iter()
                    .all(|&b| b == frame)
            );
            pos += s.bytes as usize;
            frame += 1;
        }
        assert_eq!(r.run_offset, offset as i32);
        if let Some(end) = prev_end {
            assert_eq!(times.start, end, "recording {offset} abuts the previous");
        }
        prev_end = Some(times.start + Duration(i64::from(times.wall_duration_90k)));
    }
    assert_eq!(frame, 100);
}

#[test]
fn version_mismatch_fails_the_handshake_naming_both_versions() {
    let (conn, syncer) = with_syncer(|mut c| handshake(&mut c, PROTOCOL_VERSION + 1));
    let err = Client::connect(conn).err().unwrap();
    assert!(
        matches!(err, LinkError::Handshake(WireError::VersionMismatch { theirs, .. }) if theirs == PROTOCOL_VERSION + 1),
        "{err}"
    );
    syncer.join().unwrap();
}

#[test]
fn a_fatal_error_is_a_lost_connection_and_stays_one() {
    let (conn, syncer) = with_syncer(|mut c| {
        handshake(&mut c, PROTOCOL_VERSION);
        let _: IngestRequest = c.recv().unwrap();
        c.send(&IngestReply::Error {
            message: "sample entry too large".to_owned(),
        })
        .unwrap();
        c
    });
    let mut client = connect(conn);
    let err = client.add_sample_entry(&entry()).unwrap_err();
    assert!(
        matches!(&err, LinkError::Lost { reason } if reason.contains("sample entry too large")),
        "{err}"
    );
    let err = client.open(0, 1).unwrap_err();
    assert!(matches!(err, LinkError::Lost { .. }), "{err}");
    drop(syncer.join().unwrap());
}

#[test]
fn end_of_file_is_a_lost_connection() {
    let (conn, syncer) = with_syncer(|mut c| handshake(&mut c, PROTOCOL_VERSION));
    let mut client = connect(conn);
    syncer.join().unwrap(); // the syncer's end is closed
    let err = client.open(0, 1).unwrap_err();
    assert!(matches!(err, LinkError::Lost { .. }), "{err}");
}

#[test]
fn end_of_file_while_waiting_for_acceptance_is_a_lost_connection() {
    let (conn, syncer) = with_syncer(|mut c| {
        handshake(&mut c, PROTOCOL_VERSION);
        let _: IngestRequest = c.recv().unwrap();
    });
    let mut client = connect(conn);
    let id = CompositeId::new(STREAM, 0);
    client.close(close_of(id)).unwrap();
    syncer.join().unwrap();
    let err = client.wait_accepted(id, TIMEOUT).unwrap_err();
    assert!(matches!(err, LinkError::Lost { .. }), "{err}");
}

#[test]
fn a_descriptor_with_any_reply_but_opened_is_a_protocol_violation() {
    let (conn, syncer) = with_syncer(|mut c| {
        handshake(&mut c, PROTOCOL_VERSION);
        let _: IngestRequest = c.recv().unwrap();
        let file = tempfile::tempfile().unwrap();
        c.send_with_fd(&IngestReply::SampleEntry { id: 1 }, file.as_fd())
            .unwrap();
        c
    });
    let mut client = connect(conn);
    let err = client.add_sample_entry(&entry()).unwrap_err();
    assert!(matches!(err, LinkError::Protocol { .. }), "{err}");
    drop(syncer.join().unwrap());
}

#[test]
fn opened_without_a_descriptor_or_for_another_stream_is_a_protocol_violation() {
    for (id, with_fd) in [
        (CompositeId::new(STREAM, 0), false),
        (CompositeId::new(STREAM + 1, 0), true),
    ] {
        let (conn, syncer) = with_syncer(move |mut c| {
            handshake(&mut c, PROTOCOL_VERSION);
            let _: IngestRequest = c.recv().unwrap();
            let file = tempfile::tempfile().unwrap();
            if with_fd {
                c.send_with_fd(&IngestReply::Opened { id }, file.as_fd())
                    .unwrap();
            } else {
                c.send(&IngestReply::Opened { id }).unwrap();
            }
            c
        });
        let mut client = connect(conn);
        let err = client.open(0, 1).err().unwrap();
        assert!(matches!(err, LinkError::Protocol { .. }), "{err}");
        drop(syncer.join().unwrap());
    }
}

/// A close whose fsync failed ends the outstanding close, whenever it arrives (here while the
/// client waits for the answer to its next request, which it must not be taken for): the
/// connection goes on.
#[test]
fn a_failed_close_is_taken_in_passing_and_the_connection_goes_on() {
    let (conn, syncer) = with_syncer(|mut c| {
        handshake(&mut c, PROTOCOL_VERSION);
        let IngestRequest::CloseRecording { id, .. } = c.recv().unwrap() else {
            panic!("expected the close");
        };
        let _: IngestRequest = c.recv().unwrap(); // the next request
        c.send(&IngestReply::CloseFailed {
            id,
            message: "fsync failed".to_owned(),
        })
        .unwrap();
        c.send(&IngestReply::SampleEntry { id: 4 }).unwrap();
        c
    });
    let mut client = connect(conn);
    let id = CompositeId::new(1, 7);
    client.close(close_of(id)).unwrap();
    assert_eq!(client.add_sample_entry(&entry()).unwrap(), 4);
    // The close is over: nothing left to wait for.
    client.wait_accepted(id, std::time::Duration::ZERO).unwrap();
    drop(syncer.join().unwrap());
}

#[test]
fn committed_notices_are_counted_in_passing() {
    let (conn, syncer) = with_syncer(|mut c| {
        handshake(&mut c, PROTOCOL_VERSION);
        let _: IngestRequest = c.recv().unwrap();
        let ids = vec![CompositeId::new(STREAM, 0), CompositeId::new(STREAM, 1)];
        c.send(&IngestReply::Committed { ids }).unwrap();
        c.send(&IngestReply::SampleEntry { id: 1 }).unwrap();
        c
    });
    let mut client = connect(conn);
    assert_eq!(client.add_sample_entry(&entry()).unwrap(), 1);
    assert_eq!(client.committed_recordings(), 2);
    drop(syncer.join().unwrap());
}

#[test]
fn a_close_not_accepted_in_time_times_out() {
    let (conn, syncer) = with_syncer(|mut c| {
        handshake(&mut c, PROTOCOL_VERSION);
        let _: IngestRequest = c.recv().unwrap();
        c
    });
    let mut client = connect(conn);
    let id = CompositeId::new(STREAM, 0);
    client.close(close_of(id)).unwrap();
    let waited = std::time::Duration::from_millis(50);
    let err = client.wait_accepted(id, waited).unwrap_err();
    assert!(
        matches!(err, LinkError::AcceptTimeout { id: i, .. } if i == id),
        "{err}"
    );
    drop(syncer.join().unwrap());
}

#[test]
fn accepted_for_a_recording_not_closed_is_a_protocol_violation() {
    let (conn, syncer) = with_syncer(|mut c| {
        handshake(&mut c, PROTOCOL_VERSION);
        c.send(&IngestReply::Accepted {
            id: CompositeId::new(STREAM, 9),
        })
        .unwrap();
        c
    });
    let mut client = connect(conn);
    let err = client.add_sample_entry(&entry()).unwrap_err();
    assert!(matches!(err, LinkError::Protocol { .. }), "{err}");
    drop(syncer.join().unwrap());
}

#[test]
fn dropping_the_client_ends_the_connection() {
    let (conn, syncer) = with_syncer(|mut c| {
        handshake(&mut c, PROTOCOL_VERSION);
        c.recv::<IngestRequest>().unwrap_err()
    });
    drop(connect(conn));
    assert!(matches!(syncer.join().unwrap(), WireError::Closed));
}

/// The syncer's side of opening recording 0: answers the next request with it.
fn serve_open(c: &mut Conn) -> CompositeId {
    let IngestRequest::OpenRecording { .. } = c.recv().unwrap() else {
        panic!("expected the open");
    };
    let id = CompositeId::new(STREAM, 0);
    let file = tempfile::tempfile().unwrap();
    c.send_with_fd(&IngestReply::Opened { id }, file.as_fd())
        .unwrap();
    id
}

fn times() -> RecordingTimes {
    close_of(CompositeId::new(STREAM, 0)).times
}

#[test]
fn waiting_for_the_window_returns_once_the_syncer_acknowledges_and_times_out_otherwise() {
    let (conn, syncer) = with_syncer(|mut c| {
        handshake(&mut c, PROTOCOL_VERSION);
        let id = serve_open(&mut c);
        let IngestRequest::Progress { written_bytes, .. } = c.recv().unwrap() else {
            panic!("expected a report");
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        c.send(&IngestReply::Progressed { id, written_bytes })
            .unwrap();
        let _second: IngestRequest = c.recv().unwrap(); // never answered
        c
    });
    let mut client = connect(conn);
    let Opened::Recording(id, _file) = client.open(0, 1).unwrap() else {
        panic!("refused")
    };
    client.progress(id, Vec::new(), times(), 100).unwrap();
    client.wait_acknowledged(id, 60, TIMEOUT).unwrap();
    client
        .wait_acknowledged(id, 100, std::time::Duration::ZERO)
        .unwrap();
    client.progress(id, Vec::new(), times(), 200).unwrap();
    let waited = std::time::Duration::from_millis(50);
    let err = client.wait_acknowledged(id, 150, waited).unwrap_err();
    assert!(
        matches!(err, LinkError::AcknowledgeTimeout { id: i, written_bytes: 150, .. } if i == id),
        "{err}"
    );
    drop(syncer.join().unwrap());
}

/// An acknowledgement of the closing recording may still arrive after its close; one of a
/// recording that is neither growing nor closing is a violation.
#[test]
fn progressed_for_the_closing_recording_is_taken_in_passing_but_for_no_other() {
    for (recording, violation) in [(0, false), (1, true)] {
        let (conn, syncer) = with_syncer(move |mut c| {
            handshake(&mut c, PROTOCOL_VERSION);
            serve_open(&mut c);
            let _report: IngestRequest = c.recv().unwrap();
            let _close: IngestRequest = c.recv().unwrap();
            let _next: IngestRequest = c.recv().unwrap();
            c.send(&IngestReply::Progressed {
                id: CompositeId::new(STREAM, recording),
                written_bytes: 100,
            })
            .unwrap();
            c.send(&IngestReply::SampleEntry { id: 1 }).unwrap();
            c
        });
        let mut client = connect(conn);
        let Opened::Recording(id, _file) = client.open(0, 1).unwrap() else {
            panic!("refused")
        };
        client.progress(id, Vec::new(), times(), 100).unwrap();
        client.close(close_of(id)).unwrap();
        let result = client.add_sample_entry(&entry());
        match (result, violation) {
            (Ok(1), false) => {}
            (Err(LinkError::Protocol { .. }), true) => {}
            (other, _) => panic!("recording {recording}: {other:?}"),
        }
        drop(syncer.join().unwrap());
    }
}

#[test]
fn progressed_past_the_report_is_a_protocol_violation() {
    let (conn, syncer) = with_syncer(|mut c| {
        handshake(&mut c, PROTOCOL_VERSION);
        let id = serve_open(&mut c);
        let _report: IngestRequest = c.recv().unwrap();
        c.send(&IngestReply::Progressed {
            id,
            written_bytes: 101,
        })
        .unwrap();
        c
    });
    let mut client = connect(conn);
    let Opened::Recording(id, _file) = client.open(0, 1).unwrap() else {
        panic!("refused")
    };
    client.progress(id, Vec::new(), times(), 100).unwrap();
    let err = client.wait_acknowledged(id, 100, TIMEOUT).unwrap_err();
    assert!(matches!(err, LinkError::Protocol { .. }), "{err}");
    drop(syncer.join().unwrap());
}

/// A refused open leaves the client ready for the next; an abandon is the outstanding close
/// until its acceptance.
#[test]
fn a_refused_open_and_an_abandon_keep_the_connection() {
    let (conn, syncer) = with_syncer(|mut c| {
        handshake(&mut c, PROTOCOL_VERSION);
        let IngestRequest::OpenRecording { .. } = c.recv().unwrap() else {
            panic!("expected an open");
        };
        c.send(&IngestReply::OpenRefused {
            message: "create: No space left on device".to_owned(),
        })
        .unwrap();
        let id = serve_open(&mut c);
        let req: IngestRequest = c.recv().unwrap();
        assert_eq!(
            req,
            IngestRequest::AbandonRecording {
                id,
                end_reason: "disk-full".to_owned()
            }
        );
        c.send(&IngestReply::Accepted { id }).unwrap();
        let _entry: IngestRequest = c.recv().unwrap();
        c.send(&IngestReply::SampleEntry { id: 1 }).unwrap();
        c
    });
    let mut client = connect(conn);
    let Opened::Refused { message } = client.open(0, 1).unwrap() else {
        panic!("opened");
    };
    assert!(message.contains("No space"), "{message}");
    let Opened::Recording(id, _file) = client.open(0, 1).unwrap() else {
        panic!("refused");
    };
    client.abandon(id, "disk-full").unwrap();
    client.wait_accepted(id, TIMEOUT).unwrap();
    assert_eq!(client.add_sample_entry(&entry()).unwrap(), 1);
    drop(syncer.join().unwrap());
}
