//! `nvr export` checked by software no one here wrote: the shipped clip is recorded through
//! the real `nvr-syncer` and `nvr-ingest`, exported, and read back by ffprobe and ffmpeg.
//!
//! Without ffprobe/ffmpeg the playback tests print `SKIPPED: ...` and pass; `.ci/run`
//! installs them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::playback::{ffmpeg_installed, nvr_export};
use nix::sys::signal::Signal;
use protocol::Duration as Ticks;
use syncer::db::RecordingRow;
use syncer::layout::DataDir;

/// The clip runs at 30 fps.
const FRAME_90K: i64 = 3_000;

/// Run offsets of the committed recordings, oldest first, as the running syncer reports them.
fn committed_run_offsets(d: &DataDir) -> Vec<i32> {
    syncer::admin_client::AdminClient::connect(d)
        .and_then(|mut a| a.recordings(None))
        .map(|list| list.iter().map(|r| r.run_offset).collect())
        .unwrap_or_default()
}

/// Records the clip at 4x speed on camera "cam" (1 s rotation) in `runs` runs of at least
/// three recordings each (two rotations), then stops every process. Returns the rows.
fn record(runs: usize) -> (tempfile::TempDir, DataDir, Vec<RecordingRow>) {
    let source = format!("file:{}?speed=4", e2e::clip_path().display());
    let (tmp, d) = e2e::data_dir(&[("cam", e2e::camera(&source, 1, 1))]);
    let mut syncer = e2e::start_syncer(&d);
    for run in 0..runs {
        let mut ingest = e2e::start_ingest(&d, "cam", &source, &[]);
        let deadline = Instant::now() + Duration::from_secs(30);
        // This run's first two recordings committed; the third, growing, is closed and
        // committed at shutdown.
        loop {
            let offsets = committed_run_offsets(&d);
            let runs_seen = offsets.iter().filter(|&&o| o == 0).count();
            if runs_seen == run + 1 && offsets.last().is_some_and(|&o| o >= 1) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "run {run}: committed {offsets:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        ingest.signal(Signal::SIGTERM);
        assert!(ingest.wait(Duration::from_secs(15)).success());
    }
    syncer.signal(Signal::SIGTERM);
    assert!(syncer.wait(Duration::from_secs(15)).success());
    let rows = e2e::recordings(&d);
    assert!(rows.len() >= 3 * runs, "{rows:#?}");
    (tmp, d, rows)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Exported files hold the shipped clip, which runs at 30 fps.
fn assert_plays(file: &Path, rows: &[&RecordingRow]) {
    e2e::playback::assert_plays(file, rows, FRAME_90K);
}

fn partial(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// A path in `dir` as a command-line argument (temp dirs have UTF-8 names).
fn arg(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().expect("UTF-8 temp path").to_owned()
}

#[test]
fn a_range_spanning_two_runs_exports_every_frame_playably() {
    if !ffmpeg_installed() {
        return;
    }
    let (tmp, d, rows) = record(2);
    let runs = rows.iter().filter(|r| r.run_offset == 0).count();
    assert_eq!(runs, 2, "{rows:#?}");
    let first = &rows[0];
    let last = &rows[rows.len() - 1];
    // Display rounds down to the millisecond; the end is exclusive, so go one past.
    let start = first.start.to_string();
    let end = (last.start + Ticks(i64::from(last.wall_duration_90k) + 90)).to_string();
    let out_path = arg(tmp.path(), "range.mp4");
    let out = nvr_export(
        &d,
        &[
            "--camera", "cam", "--start", &start, "--end", &end, "-o", &out_path,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("exported {} recording(s)", rows.len())),
        "{stdout}"
    );
    assert!(stdout.contains("2 run(s)"), "{stdout}");
    let out_path = Path::new(&out_path);
    assert!(!partial(out_path).exists());
    assert_plays(out_path, &rows.iter().collect::<Vec<_>>());
}

#[test]
fn a_range_selects_only_the_recordings_it_overlaps() {
    if !ffmpeg_installed() {
        return;
    }
    let (tmp, d, rows) = record(1);
    // From inside the second recording to inside the third, given with an offset.
    let (second, third) = (&rows[1], &rows[2]);
    let start = second.start + Ticks(i64::from(second.wall_duration_90k) / 2);
    let end = third.start + Ticks(FRAME_90K);
    let shift = Ticks(90 * 60 * 60 * 1000); // +01:00
    let in_zone = |t: protocol::Time| (t + shift).to_string().replace('Z', "+01:00");
    let out_path = arg(tmp.path(), "part.mp4");
    let out = nvr_export(
        &d,
        &[
            "--camera",
            "cam",
            "--start",
            &in_zone(start),
            "--end",
            &in_zone(end),
            "-o",
            &out_path,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("({}..{}", second.id, third.id)),
        "{}",
        text(&out.stdout)
    );
    assert_plays(Path::new(&out_path), &[second, third]);
}

#[test]
fn one_recording_exports_by_id() {
    if !ffmpeg_installed() {
        return;
    }
    let (tmp, d, rows) = record(1);
    let r = &rows[1];
    let out_path = arg(tmp.path(), "one.mp4");
    let id = r.id.to_string();
    let out = nvr_export(&d, &["--camera", "cam", "--id", &id, "-o", &out_path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_plays(Path::new(&out_path), &[r]);
}

#[test]
fn a_sample_file_deleted_meanwhile_fails_the_export_naming_it() {
    let (tmp, d, rows) = record(1);
    // As if retention deleted it after the rows were read.
    let gone = &rows[1];
    std::fs::remove_file(d.sample_dir_path().join(gone.id.to_string())).unwrap();
    let out_path = arg(tmp.path(), "gone.mp4");
    let out = nvr_export(
        &d,
        &[
            "--camera",
            "cam",
            "--start",
            &rows[0].start.to_string(),
            "--end",
            "2999-01-01T00:00:00Z",
            "-o",
            &out_path,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&gone.id.to_string()), "{stderr}");
    assert!(stderr.contains("is gone"), "{stderr}");
    assert!(!Path::new(&out_path).exists());
    assert!(!partial(Path::new(&out_path)).exists());
}

#[test]
fn unknown_cameras_empty_ranges_and_unknown_ids_are_clear_errors() {
    let (tmp, d) = e2e::data_dir(&[("cam", e2e::camera("synthetic:", 1, 1))]);
    let out_path = arg(tmp.path(), "x.mp4");
    let range = [
        "--start",
        "2026-11-27T04:48:38Z",
        "--end",
        "2026-11-27T05:48:38Z",
    ];
    let cases: [(Vec<&str>, &str); 4] = [
        (
            [&["--camera", "nope"][..], &range].concat(),
            "no camera named \"nope\"",
        ),
        (
            [&["--camera", "cam"][..], &range].concat(),
            "camera \"cam\" has no committed recordings between 2026-11-27T04:48:38.000Z \
             and 2026-11-27T05:48:38.000Z",
        ),
        (
            vec![
                "--camera",
                "cam",
                "--start",
                "2026-11-27T04:48:38Z",
                "--end",
                "2026-11-27T05:48:38+02:00",
            ],
            "the range is empty",
        ),
        (
            vec!["--camera", "cam", "--id", "0000000100000005"],
            "0000000100000005 is not a committed recording of camera \"cam\"",
        ),
    ];
    for (args, message) in cases {
        let out = nvr_export(&d, &[&args[..], &["-o", &out_path]].concat());
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.starts_with("nvr export: "), "{stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!Path::new(&out_path).exists());
        assert!(!partial(Path::new(&out_path)).exists());
    }
}

#[test]
fn malformed_times_and_missing_bounds_are_usage_errors() {
    let (tmp, d) = e2e::data_dir(&[("cam", e2e::camera("synthetic:", 1, 1))]);
    let out_path = arg(tmp.path(), "x.mp4");
    for (args, message) in [
        (
            vec![
                "--start",
                "2026-11-27 04:48",
                "--end",
                "2026-11-27T05:00:00Z",
            ],
            "not an RFC 3339 time",
        ),
        (vec!["--start", "2026-11-27T04:48:38Z"], "--end"),
        (vec![], "--start"),
        (
            vec![
                "--id",
                "0000000100000001",
                "--start",
                "2026-11-27T04:48:38Z",
            ],
            "cannot be used with",
        ),
    ] {
        let out = nvr_export(
            &d,
            &[&["--camera", "cam", "-o", &out_path][..], &args].concat(),
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

#[test]
fn export_reads_committed_recordings_while_the_syncer_records() {
    if !ffmpeg_installed() {
        return;
    }
    let source = format!("file:{}?speed=4", e2e::clip_path().display());
    let (tmp, d) = e2e::data_dir(&[("cam", e2e::camera(&source, 1, 1))]);
    let mut syncer = e2e::start_syncer(&d);
    let mut ingest = e2e::start_ingest(&d, "cam", &source, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while committed_run_offsets(&d).len() < 2 {
        assert!(Instant::now() < deadline, "no recordings committed");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The syncer holds the data dir's lock and keeps committing meanwhile.
    let out_path = arg(tmp.path(), "live.mp4");
    let out = nvr_export(
        &d,
        &[
            "--camera",
            "cam",
            "--start",
            "2000-01-01T00:00:00Z",
            "--end",
            "2999-01-01T00:00:00Z",
            "-o",
            &out_path,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    ingest.signal(Signal::SIGTERM);
    assert!(ingest.wait(Duration::from_secs(15)).success());
    syncer.signal(Signal::SIGTERM);
    assert!(syncer.wait(Duration::from_secs(15)).success());
    // "exported N recording(s)": the first N rows, which were committed at export time.
    let stdout = text(&out.stdout);
    let n: usize = stdout
        .strip_prefix("exported ")
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    let rows = e2e::recordings(&d);
    assert!(n >= 2 && n <= rows.len(), "{n} of {}", rows.len());
    assert_plays(Path::new(&out_path), &rows[..n].iter().collect::<Vec<_>>());
}
