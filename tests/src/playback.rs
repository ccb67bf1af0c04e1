//! Checking exported files with software no one here wrote: ffprobe counts and times their
//! frames, ffmpeg decodes every one of them.

use std::path::Path;
use std::process::{Command, Output};

use protocol::TIME_UNITS_PER_SEC;
use syncer::db::{FLAG_TRAILING_ZERO, RecordingRow};
use syncer::layout::DataDir;

/// Runs `nvr --data-dir D export ARGS` (the `nvr` built beside the test).
pub fn nvr_export(d: &DataDir, args: &[&str]) -> Output {
    Command::new(crate::binary("nvr"))
        .arg("--data-dir")
        .arg(&d.root)
        .arg("export")
        .args(args)
        .output()
        .expect("run nvr export")
}

/// [`nvr_export`], which must succeed: panics with its stderr otherwise.
pub fn export_ok(d: &DataDir, args: &[&str]) {
    let out = nvr_export(d, args);
    assert!(
        out.status.success(),
        "nvr export {args:?}: {}",
        text(&out.stderr)
    );
}

/// Whether ffprobe and ffmpeg run; if not, prints a loud `SKIPPED:` line for the caller's test
/// (`.ci/run` installs them, so there the tests always run).
pub fn ffmpeg_installed() -> bool {
    let runs = |tool: &str| {
        Command::new(tool)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if runs("ffprobe") && runs("ffmpeg") {
        return true;
    }
    eprintln!(
        "SKIPPED: ffprobe/ffmpeg are not installed, so exported files cannot be verified \
         (apt-get install ffmpeg)"
    );
    false
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What ffprobe reports of a file's first video stream, counting frames by demuxing.
#[derive(Debug)]
pub struct Probe {
    pub codec: String,
    pub width: u64,
    pub height: u64,
    pub frames: u64,
    pub duration_sec: f64,
}

/// Probes `file`; panics with ffprobe's output if it reports anything at all on stderr.
pub fn probe(file: &Path) -> Probe {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=nb_read_frames,duration,codec_name,width,height",
        ])
        .args(["-of", "json"])
        .arg(file)
        .output()
        .expect("run ffprobe");
    assert!(out.status.success(), "ffprobe: {}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "ffprobe: {}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    let s = &v["streams"][0];
    let number = |key: &str| -> f64 {
        s[key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key} in {v}"))
            .parse()
            .unwrap()
    };
    Probe {
        codec: s["codec_name"].as_str().expect("codec_name").to_owned(),
        width: s["width"].as_u64().expect("width"),
        height: s["height"].as_u64().expect("height"),
        frames: number("nb_read_frames") as u64,
        duration_sec: number("duration"),
    }
}

/// Decodes every frame of `file` with ffmpeg, which must succeed and report nothing.
pub fn assert_decodes_cleanly(file: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-xerror", "-i"])
        .arg(file)
        .args(["-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    assert!(out.status.success(), "ffmpeg: {}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "ffmpeg: {}", text(&out.stderr));
}

/// The duration an export of `rows` should have, in seconds: their media durations, plus one
/// frame (`frame_90k`, 90 kHz) for each trailing-zero sample, which the export gives the
/// previous frame's duration.
pub fn expected_duration_sec(rows: &[&RecordingRow], frame_90k: i64) -> f64 {
    let ticks: i64 = rows
        .iter()
        .map(|r| {
            i64::from(r.media_duration_90k)
                + if r.flags & FLAG_TRAILING_ZERO != 0 {
                    frame_90k
                } else {
                    0
                }
        })
        .sum();
    ticks as f64 / TIME_UNITS_PER_SEC as f64
}

/// `file` is the shipped clip's video (H.264, 320x240, frames of `frame_90k`) holding every
/// sample of `rows`, as long as they are within a frame, and decodes without a complaint.
pub fn assert_plays(file: &Path, rows: &[&RecordingRow], frame_90k: i64) {
    let p = probe(file);
    assert_eq!(p.codec, "h264", "{p:?}");
    assert_eq!((p.width, p.height), (320, 240), "{p:?}");
    let samples: i64 = rows.iter().map(|r| i64::from(r.video_samples)).sum();
    assert_eq!(p.frames as i64, samples, "{p:?}");
    let frame_sec = frame_90k as f64 / TIME_UNITS_PER_SEC as f64;
    let expected = expected_duration_sec(rows, frame_90k);
    assert!(
        (p.duration_sec - expected).abs() <= frame_sec,
        "duration {} vs expected {expected}: {p:?}",
        p.duration_sec
    );
    assert_decodes_cleanly(file);
}
