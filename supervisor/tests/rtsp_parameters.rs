//! A real RTSP camera whose video parameters change mid-session: GStreamer's RTSP server (see
//! `e2e::rtsp`) serves the shipped clip (320x240, 4 s) and a generated smaller one (160x120,
//! 2 s) in turn, the new SPS/PPS in-band on each switch's key frame. `nvr run` must start a new
//! recording on that key frame, with the new sample entry, in the same run, closing the
//! previous one with end reason `sample-entry-change`; each recording, exported alone, has its
//! clip's size.
//!
//! Without the server's packages or ffmpeg the test prints `SKIPPED: ...` and passes;
//! `.ci/run` installs them.

use std::path::Path;
use std::time::{Duration, Instant};

use e2e::Proc;
use e2e::playback::{assert_decodes_cleanly, export_ok, probe};
use e2e::rtsp::{
    RtspServer, SMALL_CLIP_FRAMES, SMALL_CLIP_SIZE, clip_mp4, skip_without_rtsp_server,
    small_clip_mp4,
};
use protocol::messages::RecordingSummary;
use syncer::db::RecordingRow;
use syncer::layout::DataDir;

/// The camera's name.
const CAMERA: &str = "cam";

/// The end reason of a recording closed because the next frame has other video parameters.
const SAMPLE_ENTRY_CHANGE: &str = "sample-entry-change";

/// How many parameter changes to record before stopping: shipped -> small -> shipped ->
/// small, about 10 s of stream.
const CHANGES: usize = 3;

/// The shipped clip: its frames' size and count (4 s at 30 fps).
const CLIP_SIZE: (u64, u64) = (320, 240);
const CLIP_FRAMES: i32 = 120;

/// The committed recordings of [`CAMERA`], oldest first, as the running syncer reports them
/// (none while it is not answering yet).
fn committed(d: &DataDir) -> Vec<RecordingSummary> {
    syncer::admin_client::AdminClient::connect(d)
        .and_then(|mut a| a.recordings(Some(CAMERA)))
        .unwrap_or_default()
}

/// Waits until [`CHANGES`] committed recordings were closed for a parameter change; panics
/// with what was committed and the server's stderr if that takes over 40 s or `nvr run` exits.
fn wait_for_changes(d: &DataDir, nvr: &mut Proc, server: &RtspServer) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(status) = nvr.try_status() {
            panic!(
                "nvr run exited with {status} (its stderr is above); server stderr:\n{}",
                server.stderr()
            );
        }
        let rows = committed(d);
        let changes = rows
            .iter()
            .filter(|r| r.end_reason.as_deref() == Some(SAMPLE_ENTRY_CHANGE))
            .count();
        if changes >= CHANGES {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{changes} of {CHANGES} recordings ended with {SAMPLE_ENTRY_CHANGE:?} after 40 s; \
             committed: {rows:#?}\nserver stderr:\n{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Exports recording `row` alone and returns its frames' size, after checking with ffprobe that
/// it holds the recording's samples and with ffmpeg that it decodes cleanly.
fn export_size(d: &DataDir, dir: &Path, row: &RecordingRow) -> (u64, u64) {
    let out_path = dir.join(format!("{}.mp4", row.id));
    let id = row.id.to_string();
    let out = out_path.to_str().expect("UTF-8 temp path");
    export_ok(d, &["--camera", CAMERA, "--id", &id, "-o", out]);
    let p = probe(&out_path);
    assert_eq!(p.codec, "h264", "{}: {p:?}", row.id);
    assert_eq!(p.frames, row.video_samples as u64, "{}: {p:?}", row.id);
    assert_decodes_cleanly(&out_path);
    (p.width, p.height)
}

#[test]
fn a_parameter_change_starts_a_new_recording_on_its_key_frame_in_the_same_run() {
    if skip_without_rtsp_server("a_parameter_change_starts_a_new_recording") {
        return;
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("temp dir");
    let big = clip_mp4(tmp.path());
    let small = small_clip_mp4(tmp.path());
    let mut server = RtspServer::start_alternating(&big, &small);
    // Rotation only after 60 s, so every close within the test is a parameter change; commits
    // within 1 s.
    let d = DataDir::new(tmp.path().join("data"));
    e2e::init_data_dir(&d, &[(CAMERA, e2e::camera(&server.url(), 1, 60))]);

    let mut nvr = e2e::start_nvr_run(&d, &[]);
    wait_for_changes(&d, &mut nvr, &server);
    nvr.stop(Duration::from_secs(30));
    server.stop();

    assert_eq!(e2e::check(&d), Vec::<String>::new(), "nvr check");
    let rows = e2e::recordings(&d);
    let context = || format!("recordings: {rows:#?}\nserver stderr:\n{}", server.stderr());
    assert!(rows.len() > CHANGES, "{}", context());

    // One run: each change continues it, and only the last recording ends for another
    // reason: `shutdown`, closed by the stop.
    for (i, pair) in rows.windows(2).enumerate() {
        let (r, next) = (&pair[0], &pair[1]);
        assert_eq!(
            r.end_reason.as_deref(),
            Some(SAMPLE_ENTRY_CHANGE),
            "recording {i} ({}) ended otherwise; {}",
            r.id,
            context()
        );
        assert_eq!(
            (next.open_id, next.run_offset),
            (r.open_id, r.run_offset + 1),
            "recording {} does not continue {}'s run; {}",
            next.id,
            r.id,
            context()
        );
        assert_ne!(
            next.video_sample_entry_id,
            r.video_sample_entry_id,
            "recording {} closed for a change keeps the sample entry; {}",
            r.id,
            context()
        );
    }
    assert_eq!(rows[0].run_offset, 0, "{}", context());
    let last = rows.last().expect("recordings");
    assert_eq!(
        last.end_reason.as_deref(),
        Some("shutdown"),
        "{}",
        context()
    );

    // Two sample entries, in turn: the shipped clip's, then the small one's.
    let entries = [rows[0].video_sample_entry_id, rows[1].video_sample_entry_id];
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(
            r.video_sample_entry_id,
            entries[i % 2],
            "recording {i} ({}) breaks the alternation; {}",
            r.id,
            context()
        );
        // The writer opens a recording only on a key frame, and both clips have one a second.
        assert!(r.video_sync_samples >= 1, "{}: no key frame", r.id);
    }
    // Each recording between the first and the last is one whole pass of its clip: the switch
    // is seen on the very key frame that brings the new parameters.
    for (i, r) in rows.iter().enumerate().take(rows.len() - 1).skip(1) {
        let frames = [CLIP_FRAMES, SMALL_CLIP_FRAMES][i % 2];
        assert_eq!(
            r.video_samples,
            frames,
            "recording {i} ({}) is not one pass of its clip; {}",
            r.id,
            context()
        );
    }

    assert_eq!(export_size(&d, tmp.path(), &rows[0]), CLIP_SIZE);
    assert_eq!(export_size(&d, tmp.path(), &rows[1]), SMALL_CLIP_SIZE);
    eprintln!(
        "{} recordings, {CHANGES}+ parameter changes, in {:.1} s",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
}
