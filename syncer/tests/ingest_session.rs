//! The request table an ingest connection is held to.

mod support;

use protocol::CompositeId;
use protocol::messages::{IngestReply, IngestRequest, RecordingTimes, SampleReport};
use support::*;
use syncer::Syncer;
use syncer::fs::DirFile;
use syncer::ingest_session::{IngestSession, MAX_SAMPLE_ENTRIES_PER_STREAM};
use syncer::sim_fs::{SimFile, SimFs};

fn add_entry(n: u8) -> IngestRequest {
    IngestRequest::AddSampleEntry {
        width: 640,
        height: 480,
        rfc6381_codec: "avc1.4d401e".into(),
        data: vec![n; 8],
    }
}

fn times() -> RecordingTimes {
    RecordingTimes {
        start: T0,
        wall_duration_90k: 3000,
        local_time_delta_90k: 0,
    }
}

/// Adds a sample entry on the connection and opens a recording with it.
fn add_entry_and_open(
    s: &mut Syncer<SimFs>,
    session: &mut IngestSession,
) -> (CompositeId, SimFile) {
    let Some(IngestReply::SampleEntry { id: entry }) =
        session.handle(s, add_entry(1)).unwrap().reply
    else {
        panic!("expected a sample entry id");
    };
    let r = session
        .handle(
            s,
            IngestRequest::OpenRecording {
                run_offset: 0,
                sample_entry_id: entry,
            },
        )
        .unwrap();
    let Some(IngestReply::Opened { id }) = r.reply else {
        panic!("expected Opened");
    };
    (id, r.writer.expect("a writer descriptor comes with Opened"))
}

#[test]
fn a_connection_writes_only_its_own_recording() {
    let (env, ids) = init_env(&[("a", config(1 << 30, 0)), ("b", config(1 << 30, 0))]);
    let mut s = start(&env).unwrap();
    let mut a = IngestSession::new(ids[0]);
    let mut b = IngestSession::new(ids[1]);

    // An entry must be added on the connection before it is used.
    let e = a
        .handle(
            &mut s,
            IngestRequest::OpenRecording {
                run_offset: 0,
                sample_entry_id: 1,
            },
        )
        .unwrap_err();
    assert!(
        e.to_string().contains("not added on this connection"),
        "{e}"
    );
    let (id, mut w) = add_entry_and_open(&mut s, &mut a);
    b.handle(&mut s, add_entry(1)).unwrap();
    assert_eq!(id.stream(), ids[0]);

    // A second open while growing is refused (even with an entry the connection added).
    let entry = match a.handle(&mut s, add_entry(1)).unwrap().reply {
        Some(IngestReply::SampleEntry { id }) => id,
        r => panic!("expected a sample entry id, got {r:?}"),
    };
    let e = a
        .handle(
            &mut s,
            IngestRequest::OpenRecording {
                run_offset: 0,
                sample_entry_id: entry,
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("still growing"), "{e}");

    // b cannot report on or close a's recording, nor one it invents.
    for victim in [id, CompositeId::new(ids[1], 0)] {
        let e = b
            .handle(
                &mut s,
                IngestRequest::Progress {
                    id: victim,
                    samples: vec![],
                    times: times(),
                },
            )
            .unwrap_err();
        assert!(e.to_string().contains("not this connection's"), "{e}");
    }

    // a writes, reports, closes: accepted, then committed by the flush.
    w.write(&[7u8; 100]).unwrap();
    let sample = SampleReport {
        pts_90k: 0,
        bytes: 100,
        is_key: true,
    };
    assert!(
        a.handle(
            &mut s,
            IngestRequest::Progress {
                id,
                samples: vec![sample],
                times: times()
            }
        )
        .unwrap()
        .reply
        .is_none(),
        "progress is not acknowledged"
    );
    let r = a
        .handle(
            &mut s,
            IngestRequest::CloseRecording {
                id,
                samples: vec![],
                last_sample_duration_90k: Some(3000),
                times: times(),
                end_reason: None,
                writer_blake3: *blake3::hash(&[7u8; 100]).as_bytes(),
            },
        )
        .unwrap();
    assert_eq!(r.reply, Some(IngestReply::Accepted { id }));
    assert_eq!(poll(&mut s).unwrap(), vec![id]);
}

#[test]
fn a_disconnected_connection_is_salvaged() {
    let (env, ids) = init_env(&[("a", config(1 << 30, 0))]);
    let mut s = start(&env).unwrap();
    let mut a = IngestSession::new(ids[0]);
    let (id, mut w) = add_entry_and_open(&mut s, &mut a);
    w.write(&[1u8; 500]).unwrap();
    let samples = vec![SampleReport {
        pts_90k: 0,
        bytes: 500,
        is_key: true,
    }];
    a.handle(
        &mut s,
        IngestRequest::Progress {
            id,
            samples,
            times: times(),
        },
    )
    .unwrap();
    drop(w);
    a.disconnected(&mut s, "ingest disconnected").unwrap();
    poll(&mut s).unwrap();
    let rows = s.db().recordings(None).unwrap();
    assert_eq!((rows[0].id, rows[0].sample_file_bytes), (id, 500));
    assert_eq!(rows[0].end_reason.as_deref(), Some("ingest disconnected"));
}

#[test]
fn sample_entries_per_connection_are_limited() {
    let (env, ids) = init_env(&[("a", config(1 << 30, 0))]);
    let mut s = start(&env).unwrap();
    let mut a = IngestSession::new(ids[0]);
    for n in 0..MAX_SAMPLE_ENTRIES_PER_STREAM {
        a.handle(&mut s, add_entry(n as u8)).unwrap();
    }
    let e = a.handle(&mut s, add_entry(200)).unwrap_err();
    assert!(e.to_string().contains("sample entries"), "{e}");
}
