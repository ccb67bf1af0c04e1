//! A stalled syncer costs no recording (DESIGN.md, failure handling): the real `nvr-syncer` is
//! stopped with SIGSTOP while two real ingests record, a heavy camera (10 MB a second) and a
//! light one, until the heavy camera has filled its 64 MiB write window (about 7 s). The
//! heavy camera's writer writes on within the window, then waits for the syncer instead of
//! writing further; after SIGCONT both go on on the same connection, and every recording of
//! both is kept.

use std::path::Path;
use std::time::Duration;

use e2e::*;
use nix::sys::signal::Signal;
use syncer::admin_client::AdminClient;
use syncer::layout::DataDir;

/// 40 Mbit/s at twice real time: 10 MB a second.
const HEAVY: &str = "synthetic:?fps=30&bitrate=40000000&gop=30&speed=2";
const LIGHT: &str = "synthetic:?fps=30&bitrate=2000000&gop=30";
/// How long the stall takes at least on a machine that keeps up with the heavy camera.
const STALL: Duration = Duration::from_secs(10);
/// Longest the test lets the syncer stay stopped.
const MAX_STALL: Duration = Duration::from_secs(40);
const WINDOW_BYTES: u64 = protocol::limits::WRITE_WINDOW_BYTES;

/// The size of the largest sample file.
fn largest_file_bytes(d: &DataDir) -> u64 {
    largest_in(&d.sample_dir_path())
}

fn largest_in(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("sample dir")
        .map(|e| e.expect("entry").metadata().expect("metadata").len())
        .max()
        .unwrap_or(0)
}

/// Recordings of `stream` the running syncer has committed.
fn committed_of_stream(d: &DataDir, stream: i32) -> usize {
    AdminClient::connect(d)
        .and_then(|mut a| a.recordings(None))
        .expect("recordings from the syncer")
        .iter()
        .filter(|r| r.id.stream() == stream)
        .count()
}

#[test]
fn a_stalled_syncer_costs_no_recording_and_the_writer_waits_within_its_window() {
    // Stream 1 ("a") rotates late enough that one recording spans the stall.
    let (_tmp, d) = data_dir(&[
        ("a", camera("synthetic:", 1, 60)),
        ("b", camera("synthetic:", 1, 2)),
    ]);
    let mut syncer = start_syncer(&d);
    let mut a = start_ingest(&d, "a", HEAVY, &[]);
    let mut b = start_ingest(&d, "b", LIGHT, &[]);
    wait_until(
        "a committed recording of b",
        Duration::from_secs(30),
        || committed_of_stream(&d, 2) >= 1,
    );

    syncer.signal(Signal::SIGSTOP);
    // 10 MB a second passes the window within about 7 s: from then on the heavy writer waits
    // and its file stops growing. A slow machine may take longer to get there, so the stall
    // lasts until the file has stood still for a second (or fails after MAX_STALL).
    let stalled = std::time::Instant::now();
    let mut last = largest_file_bytes(&d);
    let stood_still = loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = largest_file_bytes(&d);
        if now == last && now > WINDOW_BYTES / 2 {
            break now;
        }
        assert!(
            stalled.elapsed() < MAX_STALL,
            "the heavy camera's file kept growing ({now} bytes) through a {MAX_STALL:?} stall"
        );
        last = now;
    };
    let stall = stalled.elapsed();
    syncer.signal(Signal::SIGCONT);
    assert!(
        stall >= STALL / 2,
        "the file stood still after {stall:?}: the writer waited before its window was full"
    );
    assert!(
        stood_still <= 2 * WINDOW_BYTES,
        "the heavy camera's file holds {stood_still} bytes after the stall"
    );
    for p in [&mut a, &mut b] {
        assert!(p.try_status().is_none(), "an ingest ended during the stall");
    }

    std::thread::sleep(Duration::from_secs(4));
    // Both still on their first connection: SIGTERM ends them cleanly (a lost connection
    // would have ended them with an error already).
    a.stop(Duration::from_secs(30));
    b.stop(Duration::from_secs(30));
    syncer.stop(Duration::from_secs(30));

    let violations = check(&d);
    assert!(violations.is_empty(), "{violations:#?}");
    let rows = recordings(&d);
    for stream in [1, 2] {
        let rs: Vec<_> = rows.iter().filter(|r| r.id.stream() == stream).collect();
        assert!(rs.len() >= 2, "stream {stream}: {} recordings", rs.len());
        for (i, r) in rs.iter().enumerate() {
            // Contiguous ids (none discarded) in one run (never reconnected).
            assert_eq!(
                (r.id.recording(), r.run_offset),
                (i as i32, i as i32),
                "stream {stream}: {r:?}"
            );
        }
        assert_eq!(rs.last().unwrap().end_reason.as_deref(), Some("shutdown"));
    }
    let heavy_bytes: i64 = rows
        .iter()
        .filter(|r| r.id.stream() == 1)
        .map(|r| r.sample_file_bytes)
        .sum();
    assert!(
        heavy_bytes as u64 > WINDOW_BYTES,
        "the heavy camera kept {heavy_bytes} bytes"
    );
}

/// A writer as fast as the disk takes it (50 MB of media a second at `speed=max`) never
/// outruns its window, however far the syncer's answers lag: nothing is dropped as over
/// budget.
#[test]
fn a_writer_at_full_speed_stays_within_its_window() {
    let mut config = camera("synthetic:", 1, 2);
    config.retain_bytes = 256 << 20;
    let (_tmp, d) = data_dir(&[("a", config)]);
    let mut syncer = start_syncer(&d);
    let mut a = start_ingest(
        &d,
        "a",
        "synthetic:?fps=30&bitrate=400000000&gop=30&speed=max",
        &[],
    );
    std::thread::sleep(Duration::from_secs(3));
    a.stop(Duration::from_secs(30));
    syncer.stop(Duration::from_secs(30));
    let violations = check(&d);
    assert!(violations.is_empty(), "{violations:#?}");
    let rows = recordings(&d);
    assert!(rows.len() >= 2, "{} recordings", rows.len());
    for pair in rows.windows(2) {
        assert_eq!(
            (pair[1].id.recording(), pair[1].run_offset),
            (pair[0].id.recording() + 1, pair[0].run_offset + 1),
            "{pair:?}"
        );
    }
}
