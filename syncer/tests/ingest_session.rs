//! The request table an ingest connection is held to.

mod support;

use nix::errno::Errno;
use protocol::CompositeId;
use protocol::messages::{
    IngestReply, IngestRequest, MAX_END_REASON_BYTES, RecordingTimes, SampleReport,
};
use support::*;
use syncer::Syncer;
use syncer::fs::DirFile;
use syncer::ingest_session::{Action, IngestSession, MAX_SAMPLE_ENTRIES_PER_STREAM};
use syncer::layout::sample_file_name;
use syncer::sim_fs::{OpKind, SimFile, SimFs};

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

fn entry_id(s: &mut Syncer<SimFs>, session: &mut IngestSession, n: u8) -> i32 {
    match session.handle(s, add_entry(n)).unwrap() {
        Action::Reply(IngestReply::SampleEntry { id }) => id,
        a => panic!("expected a sample entry id, got {a:?}"),
    }
}

/// Adds a sample entry on the connection and opens a recording with it.
fn add_entry_and_open(
    s: &mut Syncer<SimFs>,
    session: &mut IngestSession,
) -> (CompositeId, SimFile) {
    let entry = entry_id(s, session, 1);
    let open = IngestRequest::OpenRecording {
        run_offset: 0,
        sample_entry_id: entry,
    };
    match session.handle(s, open).unwrap() {
        Action::Opened(id, w) => (id, w),
        a => panic!("expected Opened, got {a:?}"),
    }
}

fn close(id: CompositeId, data: &[u8]) -> IngestRequest {
    IngestRequest::CloseRecording {
        id,
        samples: vec![SampleReport {
            pts_90k: 0,
            bytes: data.len() as u32,
            is_key: true,
        }],
        last_sample_duration_90k: Some(3000),
        times: times(),
        end_reason: None,
        writer_blake3: *blake3::hash(data).as_bytes(),
    }
}

#[test]
fn a_connection_writes_only_its_own_recording() {
    let (env, ids) = init_env(&[("a", config(1 << 30, 0)), ("b", config(1 << 30, 0))]);
    let mut s = start(&env).unwrap();
    let mut a = IngestSession::new(ids[0]);
    let mut b = IngestSession::new(ids[1]);

    // An entry must be added on the connection before it is used.
    let open1 = IngestRequest::OpenRecording {
        run_offset: 0,
        sample_entry_id: 1,
    };
    let e = a.handle(&mut s, open1).unwrap_err();
    assert!(
        e.to_string().contains("not added on this connection"),
        "{e}"
    );
    let (id, mut w) = add_entry_and_open(&mut s, &mut a);
    assert_eq!(id.stream(), ids[0]);
    entry_id(&mut s, &mut b, 1);

    // A second open while growing is refused (even with an entry the connection added).
    let entry = entry_id(&mut s, &mut a, 1);
    let again = IngestRequest::OpenRecording {
        run_offset: 0,
        sample_entry_id: entry,
    };
    let e = a.handle(&mut s, again).unwrap_err();
    assert!(e.to_string().contains("still growing"), "{e}");

    // b cannot report on or close a's recording, nor one it invents.
    for victim in [id, CompositeId::new(ids[1], 0)] {
        let progress = IngestRequest::Progress {
            id: victim,
            samples: vec![],
            times: times(),
            written_bytes: 0,
        };
        let e = b.handle(&mut s, progress).unwrap_err();
        assert!(e.to_string().contains("not this connection's"), "{e}");
        let e = b.handle(&mut s, close(victim, b"x")).unwrap_err();
        assert!(e.to_string().contains("not this connection's"), "{e}");
    }

    // a writes, reports, closes: the durability work, then accepted, then committed.
    let data = [7u8; 100];
    w.write(&data).unwrap();
    let progress = IngestRequest::Progress {
        id,
        samples: vec![],
        times: times(),
        written_bytes: 0,
    };
    assert!(matches!(
        a.handle(&mut s, progress).unwrap(),
        Action::Reply(IngestReply::Progressed { id: i, written_bytes: 0 }) if i == id
    ));
    let Action::Save(p) = a.handle(&mut s, close(id, &data)).unwrap() else {
        panic!("expected the save work");
    };
    assert!(a.busy(), "busy until the save concludes");
    let result = p.run(&**s.dir());
    assert_eq!(
        a.saved(&mut s, id, result).unwrap(),
        IngestReply::Accepted { id }
    );
    assert!(!a.busy());
    assert_eq!(poll(&mut s).unwrap(), vec![id]);
}

#[test]
fn only_one_close_is_outstanding_per_connection() {
    let (env, ids) = init_env(&[("a", config(1 << 30, 0))]);
    let mut s = start(&env).unwrap();
    let mut a = IngestSession::new(ids[0]);
    let (id1, mut w) = add_entry_and_open(&mut s, &mut a);
    w.write(b"x").unwrap();
    let Action::Save(p1) = a.handle(&mut s, close(id1, b"x")).unwrap() else {
        panic!("expected the save work");
    };
    // While it is outstanding the next recording may grow, but not close.
    let (id2, mut w) = add_entry_and_open(&mut s, &mut a);
    w.write(b"y").unwrap();
    let e = a.handle(&mut s, close(id2, b"y")).unwrap_err();
    assert!(e.to_string().contains("still outstanding"), "{e}");
    let result = p1.run(&**s.dir());
    a.saved(&mut s, id1, result).unwrap();
}

/// The connection's end salvages its growing recording, also after a report was rejected (the
/// caller drops the connection then): the samples reported before are kept.
#[test]
fn a_disconnected_connection_is_salvaged_even_after_a_rejected_report() {
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
    let progress = IngestRequest::Progress {
        id,
        samples,
        times: times(),
        written_bytes: 500,
    };
    a.handle(&mut s, progress).unwrap();
    let lying = IngestRequest::Progress {
        id,
        samples: vec![],
        times: times(),
        written_bytes: 501,
    };
    let e = a.handle(&mut s, lying).unwrap_err();
    assert!(e.to_string().contains("offset 501"), "{e}");
    drop(w);
    let p = a
        .disconnected(&mut s, "ingest disconnected")
        .unwrap()
        .expect("something to salvage");
    let result = p.run(&**s.dir());
    s.finish_save(id, result).unwrap();
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
        entry_id(&mut s, &mut a, n as u8);
    }
    let e = a.handle(&mut s, add_entry(200)).unwrap_err();
    assert!(e.to_string().contains("sample entries"), "{e}");
}

#[test]
fn end_reasons_are_one_short_line() {
    let (env, ids) = init_env(&[("a", config(1 << 30, 0))]);
    let mut s = start(&env).unwrap();
    for (reason, ok) in [
        ("x".repeat(MAX_END_REASON_BYTES + 1), false),
        ("two\nlines".to_owned(), false),
        ("x".repeat(MAX_END_REASON_BYTES), true),
    ] {
        let mut a = IngestSession::new(ids[0]);
        let (id, mut w) = add_entry_and_open(&mut s, &mut a);
        w.write(b"x").unwrap();
        let IngestRequest::CloseRecording {
            id,
            samples,
            last_sample_duration_90k,
            times,
            writer_blake3,
            ..
        } = close(id, b"x")
        else {
            unreachable!()
        };
        let request = IngestRequest::CloseRecording {
            id,
            samples,
            last_sample_duration_90k,
            times,
            end_reason: Some(reason.clone()),
            writer_blake3,
        };
        match a.handle(&mut s, request) {
            Ok(Action::Save(p)) if ok => {
                let result = p.run(&**s.dir());
                a.saved(&mut s, id, result).unwrap();
            }
            Err(e) if !ok => {
                assert!(e.to_string().contains("end reason"), "{e}");
                // Refused, the recording is still the connection's, to salvage when it ends
                // (nothing was reported, so there is nothing to keep).
                assert_eq!(a.growing(), Some(id));
                if let Some(p) = a.disconnected(&mut s, "ingest disconnected").unwrap() {
                    let result = p.run(&**s.dir());
                    s.finish_save(id, result).unwrap();
                }
            }
            other => panic!("{reason:?}: {other:?}"),
        }
    }
}

/// A full disk costs the tail of a sample, not the connection: an abandoned recording keeps
/// its reported samples and the part of a sample after them is cut; the next open works.
#[test]
fn an_abandoned_recording_keeps_its_reported_samples_and_the_connection_goes_on() {
    let (env, ids) = init_env(&[("a", config(1 << 30, 0))]);
    let mut s = start(&env).unwrap();
    let mut a = IngestSession::new(ids[0]);
    let (id, mut w) = add_entry_and_open(&mut s, &mut a);
    w.write(&[1u8; 500]).unwrap();
    let progress = IngestRequest::Progress {
        id,
        samples: vec![SampleReport {
            pts_90k: 0,
            bytes: 500,
            is_key: true,
        }],
        times: times(),
        written_bytes: 500,
    };
    a.handle(&mut s, progress).unwrap();
    w.write(&[2u8; 70]).unwrap(); // part of the next sample, then the disk was full
    let abandon = IngestRequest::AbandonRecording {
        id,
        end_reason: "disk-full".to_owned(),
    };
    let Action::Save(p) = a.handle(&mut s, abandon).unwrap() else {
        panic!("expected the salvage work");
    };
    // It is the outstanding close: another close must wait for it.
    let (id2, mut w2) = add_entry_and_open(&mut s, &mut a);
    w2.write(b"y").unwrap();
    let e = a.handle(&mut s, close(id2, b"y")).unwrap_err();
    assert!(e.to_string().contains("still outstanding"), "{e}");
    let result = p.run(&**s.dir());
    assert_eq!(
        a.saved(&mut s, id, result).unwrap(),
        IngestReply::Accepted { id }
    );
    assert_eq!(poll(&mut s).unwrap(), vec![id]);
    let rows = s.db().recordings(None).unwrap();
    assert_eq!((rows[0].id, rows[0].sample_file_bytes), (id, 500));
    assert_eq!(rows[0].end_reason.as_deref(), Some("disk-full"));
    assert_eq!(
        env.fs.read_current(&sample_file_name(id)).unwrap(),
        vec![1u8; 500]
    );
}

/// An abandon with nothing reported discards the file and is accepted at once.
#[test]
fn an_abandon_with_nothing_reported_is_accepted_at_once() {
    let (env, ids) = init_env(&[("a", config(1 << 30, 0))]);
    let mut s = start(&env).unwrap();
    let mut a = IngestSession::new(ids[0]);
    let (id, mut w) = add_entry_and_open(&mut s, &mut a);
    w.write(&[2u8; 70]).unwrap();
    let abandon = IngestRequest::AbandonRecording {
        id,
        end_reason: "disk-full".to_owned(),
    };
    assert!(matches!(
        a.handle(&mut s, abandon).unwrap(),
        Action::Reply(IngestReply::Accepted { id: i }) if i == id
    ));
    assert!(!a.busy());
    poll(&mut s).unwrap();
    assert!(s.db().recordings(None).unwrap().is_empty());
}

/// A create that fails for want of space is answered `OpenRefused`, not with the error that
/// drops the connection; the next open, once there is room, works.
#[test]
fn an_open_on_a_full_disk_is_refused_without_dropping_the_connection() {
    let (env, ids) = init_env(&[("a", config(1 << 30, 0))]);
    let mut s = start(&env).unwrap();
    let mut a = IngestSession::new(ids[0]);
    let entry = entry_id(&mut s, &mut a, 1);
    let open = IngestRequest::OpenRecording {
        run_offset: 0,
        sample_entry_id: entry,
    };
    env.fs.fail_nth(OpKind::CreateNew, 0, Errno::ENOSPC);
    match a.handle(&mut s, open.clone()).unwrap() {
        Action::Reply(IngestReply::OpenRefused { message }) => {
            assert!(message.contains("No space left"), "{message}")
        }
        other => panic!("expected OpenRefused, got {other:?}"),
    }
    assert!(!a.busy());
    let Action::Opened(id, _) = a.handle(&mut s, open).unwrap() else {
        panic!("the second open works");
    };
    assert_eq!(a.growing(), Some(id));
}

/// Opens past a stream's budget (a burst, then one a second) are refused for the writer to try
/// again, as on a full disk: the connection stays, and another stream's budget is its own. An
/// open flood made 216 files a second and exhausted a file system's inodes in a minute.
#[test]
fn opens_past_the_budget_are_refused_and_the_connection_stays() {
    use syncer::limits::{OPEN_BURST, OPEN_INTERVAL_90K, OpenBudget};
    let (env, ids) = init_env(&[("a", config(1 << 30, 0)), ("b", config(1 << 30, 0))]);
    let budgeted = syncer::SyncerOptions {
        open_budget: OpenBudget::default(),
        ..options()
    };
    let (mut s, _) = start_with_options(&env, budgeted).unwrap();
    let mut a = IngestSession::new(ids[0]);
    let entry = entry_id(&mut s, &mut a, 1);
    let try_open = |s: &mut Syncer<SimFs>, session: &mut IngestSession| {
        let open = IngestRequest::OpenRecording {
            run_offset: 0,
            sample_entry_id: entry,
        };
        match session.handle(s, open).unwrap() {
            Action::Opened(id, _writer) => {
                let abandon = IngestRequest::AbandonRecording {
                    id,
                    end_reason: "test".into(),
                };
                assert!(matches!(
                    session.handle(s, abandon).unwrap(),
                    Action::Reply(IngestReply::Accepted { .. })
                ));
                true
            }
            Action::Reply(IngestReply::OpenRefused { message }) => {
                assert!(message.contains("faster than its budget"), "{message}");
                false
            }
            a => panic!("unexpected {a:?}"),
        }
    };
    let opened = (0..20).filter(|_| try_open(&mut s, &mut a)).count();
    assert_eq!(opened, OPEN_BURST as usize);
    env.clock.advance(protocol::Duration(OPEN_INTERVAL_90K));
    assert!(try_open(&mut s, &mut a), "one more a second later");
    assert!(!try_open(&mut s, &mut a));
    // Stream b was not charged for a's opens.
    let mut b = IngestSession::new(ids[1]);
    let (id, _w) = add_entry_and_open(&mut s, &mut b);
    assert_eq!(id.stream(), ids[1]);
}

/// A recording shorter than the minimum duration ends its run: an open continuing it is an
/// error (the caller drops the connection), an open of a new run is not.
#[test]
fn a_connection_may_not_continue_a_run_from_a_short_recording() {
    let (env, ids) = init_env(&[("a", config(1 << 30, 0))]);
    let mut s = start(&env).unwrap();
    let mut a = IngestSession::new(ids[0]);
    let (id, mut w) = add_entry_and_open(&mut s, &mut a);
    w.write(b"x").unwrap();
    // One sample of 3000 ticks.
    let Action::Save(p) = a.handle(&mut s, close(id, b"x")).unwrap() else {
        panic!("expected the save work");
    };
    let result = p.run(&**s.dir());
    a.saved(&mut s, id, result).unwrap();
    let entry = entry_id(&mut s, &mut a, 1);
    let open = |run_offset| IngestRequest::OpenRecording {
        run_offset,
        sample_entry_id: entry,
    };
    let e = a.handle(&mut s, open(1)).unwrap_err();
    assert!(matches!(e, syncer::Error::Rejected { .. }), "{e:?}");
    assert!(
        e.to_string().contains(&format!(
            "recording {id} was shorter than the minimum duration (3000 ticks < 90000)"
        )),
        "{e}"
    );
    assert!(!a.busy(), "nothing opened");
    assert!(matches!(
        a.handle(&mut s, open(0)).unwrap(),
        Action::Opened(..)
    ));
    assert_eq!(
        poll(&mut s).unwrap(),
        vec![id],
        "the short one is committed"
    );
}

/// Sample entries belong to a stream: one ingest registering another camera's exact box as
/// 1x1 with codec `avc1.000000` gets an entry of its own stream, and the other camera's
/// entry, recordings and exports are untouched; it cannot open a recording with the other
/// stream's entry either. A stream holds a bounded number of entries: past it, those no
/// recording uses go first, else the new one is refused.
#[test]
fn an_ingest_can_only_register_and_use_its_own_streams_sample_entries() {
    use syncer::limits::MAX_STORED_SAMPLE_ENTRIES_PER_STREAM;
    let (env, ids) = init_env(&[("a", config(1 << 30, 0)), ("b", config(1 << 30, 0))]);
    let mut s = start(&env).unwrap();
    let box_of_a = b"entry".to_vec(); // what init_env registered for every stream
    let mut b = IngestSession::new(ids[1]);
    let poison = IngestRequest::AddSampleEntry {
        width: 1,
        height: 1,
        rfc6381_codec: "avc1.000000".into(),
        data: box_of_a.clone(),
    };
    let Action::Reply(IngestReply::SampleEntry { id: poisoned }) =
        b.handle(&mut s, poison).unwrap()
    else {
        panic!("expected an entry");
    };
    assert_eq!(poisoned, entry_of(ids[1]), "b's own entry with those bytes");
    let entries = s.db().sample_entries().unwrap();
    let a_entry = entries.iter().find(|e| e.id == entry_of(ids[0])).unwrap();
    assert_eq!((a_entry.width, a_entry.height), (640, 480));
    assert_eq!(a_entry.rfc6381_codec, "avc1.4d401e");
    // Nor can it open with a's entry (it was never added on its connection, and is a's).
    let e = s.open_recording(ids[1], 0, entry_of(ids[0])).unwrap_err();
    assert!(e.to_string().contains("unknown video sample entry"), "{e}");

    // The bound: reconnecting ingests that each add new entries (16 per connection at most)
    // never take b past it; an entry a committed recording uses, and those of the live
    // connection, are never the ones that go.
    let (used, _) = record(&mut s, &env.clock, ids[1], 0, T0, 3, 100).unwrap();
    poll(&mut s).unwrap();
    let b_entries = |s: &Syncer<SimFs>| {
        let all = s.db().sample_entries().unwrap();
        all.into_iter()
            .filter(|e| e.stream_id == ids[1])
            .map(|e| e.id)
            .collect::<Vec<_>>()
    };
    for n in 0..200u8 {
        let mut live = IngestSession::new(ids[1]);
        let mine = [
            entry_id(&mut s, &mut live, n),
            entry_id(&mut s, &mut live, !n),
        ];
        let now = b_entries(&s);
        assert!(
            now.len() <= MAX_STORED_SAMPLE_ENTRIES_PER_STREAM,
            "{}",
            now.len()
        );
        assert!(
            mine.iter().all(|e| now.contains(e)),
            "the connection's own stay"
        );
        assert!(
            now.contains(&entry_of(ids[1])),
            "the committed recording's stays"
        );
    }
    let row = s.db().recordings(None).unwrap();
    assert_eq!(
        row.iter()
            .find(|r| r.id == used)
            .unwrap()
            .video_sample_entry_id,
        entry_of(ids[1])
    );
    // a lost nothing.
    assert!(s.db().has_sample_entry(ids[0], entry_of(ids[0])).unwrap());
}
