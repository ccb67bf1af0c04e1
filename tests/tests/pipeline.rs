//! Syncer and ingests as real processes on real sockets: recording with rotation, a kill -9 of
//! an ingest, a lost syncer.

use std::time::Duration;

use e2e::*;
use nix::sys::signal::Signal;
use syncer::db::{FLAG_TRAILING_ZERO, RecordingRow};

fn clip_source(speed: u32) -> String {
    format!("file:{}?speed={speed}", clip_path().display())
}

fn of_stream(rows: &[RecordingRow], stream: i32) -> Vec<&RecordingRow> {
    rows.iter().filter(|r| r.id.stream() == stream).collect()
}

/// Streams 1 ("a") and 2 ("b") record the clip at twice real time with a 2 s rotation.
fn two_cameras() -> (tempfile::TempDir, syncer::layout::DataDir) {
    data_dir(&[
        ("a", camera("synthetic:", 1, 2)),
        ("b", camera("synthetic:", 1, 2)),
    ])
}

#[test]
fn two_ingests_record_with_rotation_and_stop_cleanly() {
    let (_tmp, d) = two_cameras();
    let mut syncer = start_syncer(&d);
    let mut a = start_ingest(&d, "a", &clip_source(2), &[]);
    let mut b = start_ingest(&d, "b", &clip_source(2), &[]);
    std::thread::sleep(Duration::from_secs(5));
    for p in [&a, &b] {
        p.signal(Signal::SIGTERM);
    }
    assert!(a.wait(Duration::from_secs(15)).success());
    assert!(b.wait(Duration::from_secs(15)).success());
    syncer.signal(Signal::SIGTERM);
    assert!(syncer.wait(Duration::from_secs(15)).success());

    let violations = check(&d);
    assert!(violations.is_empty(), "{violations:#?}");
    let rows = recordings(&d);
    for stream in [1, 2] {
        let rs = of_stream(&rows, stream);
        // About 10 s of media in 2 s recordings (the first is shortened by the stagger).
        assert!(rs.len() >= 3, "stream {stream}: {} recordings", rs.len());
        for (i, r) in rs.iter().enumerate() {
            assert_eq!(r.run_offset, i as i32, "one run per stream");
            assert!(r.video_sync_samples >= 1);
        }
        // Rotations happen on media duration at a key frame: whole seconds of the 30 fps clip.
        for r in &rs[1..rs.len() - 1] {
            assert_eq!(r.media_duration_90k % 90_000, 0, "{r:?}");
        }
        assert_eq!(rs.last().unwrap().end_reason.as_deref(), Some("shutdown"));
    }
}

#[test]
fn kill_9_of_an_ingest_loses_only_its_unreported_tail() {
    let (_tmp, d) = two_cameras();
    let mut syncer = start_syncer(&d);
    let a = start_ingest(&d, "a", &clip_source(2), &[]);
    let mut b = start_ingest(&d, "b", &clip_source(2), &[]);
    std::thread::sleep(Duration::from_millis(3300));
    a.signal(Signal::SIGKILL);
    drop(a);
    std::thread::sleep(Duration::from_secs(2));
    b.signal(Signal::SIGTERM);
    assert!(b.wait(Duration::from_secs(15)).success());
    syncer.signal(Signal::SIGTERM);
    assert!(syncer.wait(Duration::from_secs(15)).success());

    let violations = check(&d);
    assert!(violations.is_empty(), "{violations:#?}");
    let rows = recordings(&d);
    let ra = of_stream(&rows, 1);
    let salvaged = ra.last().expect("a recorded");
    // Salvaged to the last reported sample: its file, hash and index agree (check above), it
    // ends with a trailing zero, and says why it ended.
    assert_eq!(salvaged.flags & FLAG_TRAILING_ZERO, FLAG_TRAILING_ZERO);
    let why = salvaged.end_reason.as_deref().unwrap_or_default();
    assert!(why.contains("ingest connection ended"), "{why}");
    // b recorded without a gap: one run, each recording abutting the previous (check above).
    let rb = of_stream(&rows, 2);
    assert!(rb.len() >= 3);
    assert!(rb.iter().enumerate().all(|(i, r)| r.run_offset == i as i32));
}

#[test]
fn an_ingest_exits_with_status_3_when_the_syncer_is_lost() {
    let (_tmp, d) = two_cameras();
    let syncer = start_syncer(&d);
    let mut a = start_ingest(&d, "a", &clip_source(1), &[]);
    std::thread::sleep(Duration::from_millis(500));
    syncer.signal(Signal::SIGKILL);
    drop(syncer);
    let status = a.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(3), "{status:?}");
}
