//! Recording real RTSP streams through `nvr run`: GStreamer's RTSP server (Debian's packages,
//! see `e2e::rtsp`) serves the shipped clip on 127.0.0.1, cameras read it over TCP and UDP
//! with digest credentials, the server stalls, stops and comes back, and what was recorded is
//! exported and checked by ffprobe and ffmpeg.
//!
//! Without the server's packages or ffmpeg the test prints `SKIPPED: ...` and passes;
//! `.ci/run` installs them.

use std::path::Path;
use std::time::Duration;

use e2e::playback::{assert_plays, export_ok};
use e2e::rtsp::{RtspServer, clip_mp4, skip_without_rtsp_server};
use e2e::{pids_mentioning, wait_until};
use protocol::Duration as Ticks;
use syncer::db::RecordingRow;
use syncer::layout::DataDir;

/// The shipped clip runs at 30 fps.
const FRAME_90K: i64 = 3_000;

/// The password the server requires; it must never show on a command line.
const PASSWORD: &str = "s3cret-pw";

/// The committed recordings of `camera`, oldest first, as the running syncer reports them.
fn committed(d: &DataDir, camera: &str) -> Vec<protocol::messages::RecordingSummary> {
    syncer::admin_client::AdminClient::connect(d)
        .and_then(|mut a| a.recordings(Some(camera)))
        .unwrap_or_default()
}

/// Waits until every camera has `n` more committed recordings than it had when this was
/// called, in the same run as its newest (recording goes on).
fn wait_for_more(d: &DataDir, cameras: &[&str], n: usize, what: &str) {
    let before: Vec<usize> = cameras.iter().map(|c| committed(d, c).len()).collect();
    wait_until(what, Duration::from_secs(40), || {
        cameras
            .iter()
            .zip(&before)
            .all(|(c, &b)| committed(d, c).len() >= b + n)
    });
}

/// Waits until every camera's newest committed recording ended with a reason starting with
/// `prefix` after index `after` (a session end closed the growing recording).
fn wait_for_end_reason(d: &DataDir, cameras: &[&str], prefix: &str) {
    let before: Vec<usize> = cameras.iter().map(|c| committed(d, c).len()).collect();
    wait_until(
        &format!("recordings ended with {prefix:?}"),
        Duration::from_secs(30),
        || {
            cameras.iter().zip(&before).all(|(c, &b)| {
                committed(d, c).iter().skip(b.saturating_sub(1)).any(|r| {
                    r.end_reason
                        .as_deref()
                        .is_some_and(|e| e.starts_with(prefix))
                })
            })
        },
    );
}

/// Exports every recording of `camera` and checks with ffprobe and ffmpeg that the file holds
/// each recorded frame and plays cleanly, across the runs the server's outages began.
fn export_and_verify(d: &DataDir, dir: &Path, camera: &str, rows: &[RecordingRow]) {
    let first = rows.first().expect("recordings");
    let last = rows.last().expect("recordings");
    let end = last.start + Ticks(i64::from(last.wall_duration_90k) + 90);
    let out_path = dir.join(format!("{camera}.mp4"));
    let out = out_path.to_str().expect("UTF-8 temp path");
    let (start, end) = (first.start.to_string(), end.to_string());
    export_ok(
        d,
        &[
            "--camera", camera, "--start", &start, "--end", &end, "-o", out,
        ],
    );
    assert_plays(&out_path, &rows.iter().collect::<Vec<_>>(), FRAME_90K);
}

#[test]
fn records_a_real_rtsp_server_through_a_stall_and_a_restart_and_exports_playably() {
    if skip_without_rtsp_server("records_a_real_rtsp_server_through_a_stall_and_a_restart") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mp4 = clip_mp4(tmp.path());
    let mut server = RtspServer::start(&mp4, None, Some(("nvr", PASSWORD)));
    let with_creds = |password: &str, query: &str| {
        server
            .url()
            .replacen("rtsp://", &format!("rtsp://nvr:{password}@"), 1)
            + query
    };
    // Rotation 1 s (the clip has a key frame a second), commits within 1 s, a 2 s stall limit.
    let cams = [
        ("tcp", with_creds(PASSWORD, "?stall_sec=2")),
        ("udp", with_creds(PASSWORD, "?transport=udp&stall_sec=2")),
        ("refused", with_creds("wrong-password", "")),
    ];
    let configs: Vec<(&str, syncer::db::StreamConfig)> = cams
        .iter()
        .map(|(n, s)| (*n, e2e::camera(s, 1, 1)))
        .collect();
    let d = DataDir::new(tmp.path().join("data"));
    e2e::init_data_dir(&d, &configs);
    let recording = ["tcp", "udp"];

    let mut nvr = e2e::start_nvr_run(&d, &[]);
    wait_for_more(&d, &recording, 3, "three recordings from each camera");
    // Its command line names this test's server (by port) and the camera.
    let server_url = server.url();
    let refused_pid = || {
        pids_mentioning(&server_url)
            .into_iter()
            .find(|(_, c)| c.contains("nvr-ingest") && c.contains("--camera refused"))
            .map(|(p, _)| p)
    };
    let refused_ingest = refused_pid().expect("the refused camera's ingest runs");
    // The supervisor passes credentials in the environment: no command line shows them.
    // (The test server itself is given it on its command line.)
    let showing: Vec<_> = pids_mentioning(PASSWORD)
        .into_iter()
        .filter(|(_, c)| !c.contains("rtsp/serve.py"))
        .collect();
    assert_eq!(showing, vec![], "a password on a command line");

    // Stalled: the server stops sending (SIGSTOP) without closing anything. Each camera ends
    // its session after 2 s without a frame, closing its recording, and reconnects once the
    // server answers again.
    server.pause();
    wait_for_end_reason(&d, &recording, "camera-stalled: no frame for 2 s");
    std::thread::sleep(Duration::from_millis(1500));
    server.resume();
    wait_for_more(&d, &recording, 2, "recording after the stall");

    // Stopped and started again on the same port: sessions end, reconnects are refused for a
    // while, then recording resumes in a new run.
    server.stop();
    wait_for_end_reason(&d, &recording, "camera-");
    std::thread::sleep(Duration::from_secs(2));
    server.restart();
    wait_for_more(&d, &recording, 2, "recording after the server restart");

    // A camera whose credentials are refused records nothing and is not restarted: the
    // process keeps retrying with backoff.
    assert!(committed(&d, "refused").is_empty());
    assert_eq!(refused_pid(), Some(refused_ingest));
    nvr.stop(Duration::from_secs(30));
    server.stop();

    assert_eq!(e2e::check(&d), Vec::<String>::new(), "nvr check");
    let rows = e2e::recordings(&d);
    // Cameras were added in order: stream ids 1, 2, 3.
    for (id, cam) in (1..).zip(recording) {
        let mine: Vec<RecordingRow> = rows
            .iter()
            .filter(|r| r.id.stream() == id)
            .cloned()
            .collect();
        // Three runs at least: the first, after the stall, after the restart.
        let runs = mine.iter().filter(|r| r.run_offset == 0).count();
        assert!(runs >= 3, "{cam}: {runs} runs in {mine:#?}");
        let reasons: Vec<&str> = mine
            .iter()
            .filter_map(|r| r.end_reason.as_deref())
            .collect();
        assert!(
            reasons.iter().any(|r| r.starts_with("camera-stalled"))
                && reasons
                    .iter()
                    .any(|r| r.starts_with("camera-") && !r.starts_with("camera-stalled")),
            "{cam}: end reasons {reasons:?}"
        );
        export_and_verify(&d, tmp.path(), cam, &mine);
    }
}
