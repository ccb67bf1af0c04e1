//! A real small file system: recording keeps going on a disk far smaller than the quotas, and
//! startup never fails because the disk is full; growing files that fill the disk end at their
//! last whole sample instead of stalling every camera; a minimum free space the disk cannot
//! have is refused; the guard's warnings are rate-limited.
//!
//! Mounts a small tmpfs. As root it does so directly; otherwise each test re-runs itself inside
//! `unshare -Urm` (a new user namespace, mapped to root, with its own mount namespace, where an
//! unprivileged user may mount a tmpfs). Only where neither works does the test say SKIPPED
//! loudly and pass.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::*;
use nix::sys::signal::Signal;
use syncer::admin_client::AdminClient;
use syncer::layout::DataDir;

/// Raises `seen[stream]` to the newest committed recording id of each stream.
fn observe(d: &DataDir, seen: &mut [i32; 2]) {
    let recs = AdminClient::connect(d)
        .and_then(|mut a| a.recordings(None))
        .unwrap_or_else(|e| panic!("recordings from the syncer: {e}"));
    for r in recs {
        let s = (r.id.stream() - 1) as usize;
        seen[s] = seen[s].max(r.id.recording());
    }
}

/// Set in the environment of the copy of this test that runs inside `unshare -Urm`.
const IN_NAMESPACE_ENV: &str = "NVR_FULL_DISK_IN_USER_NAMESPACE";

#[test]
fn recording_goes_on_when_the_disk_is_smaller_than_the_quotas() {
    as_root(
        "recording_goes_on_when_the_disk_is_smaller_than_the_quotas",
        full_disk_body,
    );
}

#[test]
fn growing_files_that_fill_the_disk_end_at_their_last_sample_and_recording_goes_on() {
    as_root(
        "growing_files_that_fill_the_disk_end_at_their_last_sample_and_recording_goes_on",
        growing_files_fill_the_disk_body,
    );
}

#[test]
fn a_stream_of_many_files_cannot_take_the_inodes_of_another() {
    as_root(
        "a_stream_of_many_files_cannot_take_the_inodes_of_another",
        few_inodes_body,
    );
}

/// Runs `body` as root: at once if this process is root, else in a copy of the test named
/// `test_name` inside `unshare -Urm`.
fn as_root(test_name: &str, body: fn()) {
    if nix::unistd::geteuid().is_root() {
        body();
        return;
    }
    assert!(
        std::env::var_os(IN_NAMESPACE_ENV).is_none(),
        "inside `unshare -Urm` but not root: the uid map did not apply"
    );
    rerun_in_user_namespace(test_name);
}

/// Runs the test `test_name` again, as root of a new user and mount namespace, and fails if
/// that copy fails. Skips loudly (passing) when unprivileged user namespaces are not available
/// here.
fn rerun_in_user_namespace(test_name: &str) {
    match Command::new("unshare").args(["-Urm", "true"]).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            eprintln!(
                "SKIPPED: not root, and `unshare -Urm` fails here ({}: {}); \
                 the full-disk test did not run",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return;
        }
        Err(e) => {
            eprintln!(
                "SKIPPED: not root, and `unshare` cannot be run ({e}); the full-disk test did \
                 not run"
            );
            return;
        }
    }
    eprintln!("not root: running the full-disk test inside `unshare -Urm`");
    let exe = std::env::current_exe().unwrap();
    let status = Command::new("unshare")
        .arg("-Urm")
        .arg(exe)
        .args(["--exact", test_name, "--nocapture", "--test-threads", "1"])
        .env(IN_NAMESPACE_ENV, "1")
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the full-disk test failed inside `unshare -Urm`: {status}"
    );
}

fn full_disk_body() {
    let Some((_tmp, guard)) = mount_tmpfs("6m") else {
        return;
    };
    let mnt = guard.0.clone();
    let d = DataDir::new(mnt.join("data"));
    // Quotas of 1 GiB on a 6 MiB disk: only the free-space guard can make room. At four
    // times real speed the open budget rotates about once a second: 0.5 MB recordings.
    let source = "synthetic:?fps=30&bitrate=1000000&gop=30&speed=4";
    init_data_dir(
        &d,
        &[
            ("a", StreamConfigExt::big(camera(source, 1, 1))),
            ("b", StreamConfigExt::big(camera(source, 1, 1))),
        ],
    );
    let mut syncer = start_syncer_with(&d, &["--min-free-bytes", "2097152"]);
    let mut a = start_ingest(&d, "a", source, &[]);
    let mut b = start_ingest(&d, "b", source, &[]);
    // About 1 MB/s of media into a 6 MiB disk for 10 s. Each stream opens at most one
    // recording a second past its burst (`protocol::limits::OpenBudget`), and a full disk
    // pauses it, so 4 s must see a new recording of each.
    let mut seen = [0; 2];
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(6) {
        observe(&d, &mut seen);
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = seen;
    while t.elapsed() < Duration::from_secs(10) {
        observe(&d, &mut seen);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        seen[0] > before[0] && seen[1] > before[1],
        "recording stalled on the full disk: newest ids {seen:?}, 4 s before {before:?}"
    );
    stop_cleanly(&d, [&mut a, &mut b], &mut syncer);
    let rows = recordings(&d);
    assert!(!rows.is_empty());
    let first_kept = rows.iter().map(|r| r.id.recording()).min().unwrap();
    assert!(
        first_kept > 0,
        "the oldest recordings were deleted to make room"
    );

    // Startup never fails because the disk is full: fill it to the last byte, start again.
    let junk_path = mnt.join("junk");
    let mut junk = std::fs::File::create(&junk_path).unwrap();
    let block = vec![0u8; 64 << 10];
    let started = Instant::now();
    while junk.write_all(&block).is_ok() {
        assert!(started.elapsed() < Duration::from_secs(30));
    }
    let mut tiny = vec![0u8; 512];
    while junk.write_all(&tiny).is_ok() {}
    tiny.truncate(1);
    while junk.write_all(&tiny).is_ok() {}
    drop(junk);
    let mut syncer = start_syncer_with(&d, &["--min-free-bytes", "0"]);
    let status = AdminClient::connect(&d).unwrap().status().unwrap();
    assert_eq!(status.streams.len(), 2);
    // Free the disk again before the stop, whose last commit may need room.
    std::fs::remove_file(junk_path).unwrap();
    syncer.signal(Signal::SIGTERM);
    assert!(syncer.wait(Duration::from_secs(30)).success());
    let violations = check(&d);
    assert!(violations.is_empty(), "{violations:#?}");
}

/// A file system with bytes to spare but 36 inodes (a few taken by the data dir itself), and
/// two cameras within their quotas: `many` rotates as often as its open budget allows,
/// `few` every 10 s. Inodes run low, the guard keeps 16 free by deleting the oldest
/// recordings of the stream with the most files, and `few` loses nothing, never fails a
/// create, and keeps recording (an open flood used to leave the honest camera "failed" on
/// ENOSPC while bytes were free).
fn few_inodes_body() {
    let Some((_tmp, guard)) = mount_tmpfs("64m,nr_inodes=36") else {
        return;
    };
    let d = DataDir::new(guard.0.join("data"));
    let fast = "synthetic:?fps=30&bitrate=200000&gop=30&speed=4";
    let slow = "synthetic:?fps=30&bitrate=200000&gop=30";
    init_data_dir(
        &d,
        &[
            ("many", StreamConfigExt::big(camera(fast, 1, 1))),
            ("few", StreamConfigExt::big(camera(slow, 1, 10))),
        ],
    );
    let mut syncer = start_syncer_with(&d, &["--min-free-inodes", "16"]);
    let mut many = start_ingest(&d, "many", fast, &[]);
    let mut few = start_ingest(&d, "few", slow, &[]);
    let mut seen = [0; 2];
    let t = Instant::now();
    let mut least_free = u64::MAX;
    while t.elapsed() < Duration::from_secs(23) {
        observe(&d, &mut seen);
        let st = nix::sys::statvfs::statvfs(&d.sample_dir_path()).unwrap();
        least_free = least_free.min(st.files_available() as u64);
        std::thread::sleep(Duration::from_millis(100));
    }
    stop_cleanly(&d, [&mut many, &mut few], &mut syncer);
    let rows = recordings(&d);
    let few_ids: Vec<i32> = rows
        .iter()
        .filter(|r| r.id.stream() == 2)
        .map(|r| r.id.recording())
        .collect();
    assert_eq!(
        few_ids,
        (0..few_ids.len() as i32).collect::<Vec<_>>(),
        "few lost one"
    );
    assert!(few_ids.len() >= 2, "few recorded {few_ids:?}");
    let many_first = rows
        .iter()
        .find(|r| r.id.stream() == 1)
        .unwrap()
        .id
        .recording();
    assert!(
        many_first > 0,
        "many's oldest were deleted to keep inodes free"
    );
    assert!(seen[0] > 20, "many kept recording: {seen:?}");
    assert!(least_free >= 4, "{least_free} inodes were left at worst");

    // The default reserve of 1024 inodes is more than this file system has: refused, by the
    // syncer and by `nvr run`, naming both numbers.
    let out = Command::new(binary("nvr-syncer"))
        .arg("--data-dir")
        .arg(&d.root)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("free inodes (1024)") && stderr.contains("(36)"),
        "{stderr}"
    );
    let out = Command::new(binary("nvr"))
        .arg("--data-dir")
        .arg(&d.root)
        .arg("run")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--min-free-inodes: the minimum of free inodes"),
        "{stderr}"
    );
}

/// Quotas far beyond the tiny disk.
trait StreamConfigExt {
    fn big(self) -> Self;
}

impl StreamConfigExt for syncer::db::StreamConfig {
    fn big(self) -> Self {
        syncer::db::StreamConfig {
            retain_bytes: 1 << 30,
            ..self
        }
    }
}

/// Two cameras whose recordings are each bigger than the 8 MiB disk, so that nothing is
/// committed when their growing files fill it: each ends at its last whole sample (end reason
/// `disk-full`) and is committed, the guard deletes the oldest to make room, and both cameras
/// go on recording; the guard's warnings come a few times, not at every event. Then a
/// `--min-free` at the disk's size is refused, by the syncer and by `nvr run`.
fn growing_files_fill_the_disk_body() {
    let Some((tmp, guard)) = mount_tmpfs("8m") else {
        return;
    };
    let d = DataDir::new(guard.0.join("data"));
    // About 2 MB/s per camera, rotating every 60 s of media: 30 MB recordings.
    let source = "synthetic:?fps=30&bitrate=4000000&gop=30&speed=4";
    init_data_dir(
        &d,
        &[
            ("a", StreamConfigExt::big(camera(source, 1, 60))),
            ("b", StreamConfigExt::big(camera(source, 1, 60))),
        ],
    );
    let log = std::path::PathBuf::from("/tmp/fd-syncer.log");
    let _ = &tmp;
    let mut syncer = start_syncer_logged(&d, &["--min-free-bytes", "1048576"], Some(&log));
    let ingest_logs = [tmp.path().join("a.log"), tmp.path().join("b.log")];
    let mut a = start_ingest_logged(&d, "a", source, &[], Some(&ingest_logs[0]));
    let mut b = start_ingest_logged(&d, "b", source, &[], Some(&ingest_logs[1]));
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(12));
    stop_cleanly(&d, [&mut a, &mut b], &mut syncer);
    // Each camera's disk-full recordings were committed (its syncer connection counts the
    // commits it was told of), and it went on after each pause.
    for path in &ingest_logs {
        let logged = std::fs::read_to_string(path).unwrap();
        let pauses = logged.matches("the disk is full").count();
        let resumed = logged
            .matches("recording again after the disk was full")
            .count();
        let committed: u64 = logged
            .lines()
            .find_map(|l| l.split("committed_on_this_connection=").nth(1))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no commit count in {}:\n{logged}", path.display()));
        eprintln!(
            "{}: {pauses} pauses, {resumed} resumed, {committed} committed",
            path.display()
        );
        assert!(
            pauses >= 2 && resumed >= 2 && committed >= 2,
            "{}: {pauses} pauses, {resumed} resumed, {committed} committed:\n{logged}",
            path.display()
        );
    }
    let logged = std::fs::read_to_string(&log).unwrap();
    let warnings = logged
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("disk nearly full"))
        .count();
    let minutes = started.elapsed().as_secs() / 60;

    assert!(
        warnings as u64 <= 2 * (minutes + 1),
        "{warnings} free-space warnings in {minutes} min: not rate-limited\n{logged}"
    );

    // A minimum free space of the whole disk is refused, naming both sizes.
    let out = Command::new(binary("nvr-syncer"))
        .arg("--data-dir")
        .arg(&d.root)
        .args(["--min-free-bytes", &(8u64 << 20).to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("not below the size"), "{stderr}");
    let out = Command::new(binary("nvr"))
        .arg("--data-dir")
        .arg(&d.root)
        .args(["run", "--min-free", "16MiB"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--min-free") && stderr.contains("not below the size"),
        "{stderr}"
    );
}

/// Checks that both ingests are still running, stops them and then the syncer with SIGTERM
/// (each must exit 0), and requires `nvr check` to find nothing.
fn stop_cleanly(d: &DataDir, ingests: [&mut Proc; 2], syncer: &mut Proc) {
    let [a, b] = ingests;
    assert!(
        a.try_status().is_none() && b.try_status().is_none(),
        "an ingest died"
    );
    for p in [&*a, &*b] {
        p.signal(Signal::SIGTERM);
    }
    assert!(a.wait(Duration::from_secs(30)).success());
    assert!(b.wait(Duration::from_secs(30)).success());
    syncer.signal(Signal::SIGTERM);
    assert!(syncer.wait(Duration::from_secs(30)).success());
    let violations = check(d);
    assert!(violations.is_empty(), "{violations:#?}");
}
