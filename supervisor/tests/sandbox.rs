//! The ingest sandbox under `nvr run`: every ingest runs with no new privileges, a seccomp
//! filter and its resource limits, and `file:`, `synthetic:` and `rtsp://` (TCP and UDP)
//! cameras still record; an ingest killed by SIGSYS shows as killed by the sandbox.
//!
//! The `rtsp://` test needs GStreamer's RTSP server and ffmpeg (see `e2e::rtsp`); without
//! them it prints `SKIPPED: ...` and passes.

use std::time::Duration;

use e2e::rtsp::{RtspServer, clip_mp4, skip_without_rtsp_server};
use e2e::{pids_mentioning, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use supervisor::state::SupervisorState;
use syncer::layout::DataDir;

/// Committed recordings of `camera`, as the running syncer reports them.
fn committed(d: &DataDir, camera: &str) -> usize {
    syncer::admin_client::AdminClient::connect(d)
        .and_then(|mut a| a.recordings(Some(camera)))
        .map(|r| r.len())
        .unwrap_or(0)
}

/// A camera name no other test's process has: the pid of this test process is in it.
fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// The pid of `camera`'s running ingest.
fn ingest_pid(camera: &str) -> Option<i32> {
    let needle = format!("nvr-ingest --camera {camera} ");
    pids_mentioning(&needle).first().map(|(p, _)| *p)
}

/// The value of `field` in `/proc/<pid>/<file>` lines `field<sep>value`.
fn proc_field(pid: i32, file: &str, field: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/{file}:\n{text}"))
        .trim()
        .to_owned()
}

/// `ingest::sandbox::MAX_DATA_BYTES` (this crate does not depend on the ingest's).
const MAX_DATA_BYTES: u64 = 192 << 20;

/// `ingest::sandbox::MAX_OPEN_FILES`.
const MAX_OPEN_FILES: u64 = 32;

/// Checks that `camera`'s ingest runs sandboxed: `NoNewPrivs: 1`, `Seccomp: 2` (filter mode),
/// and the sandbox's data and open-file limits.
fn assert_sandboxed(camera: &str) {
    let pid = ingest_pid(camera).unwrap_or_else(|| panic!("{camera}'s ingest runs"));
    assert_eq!(proc_field(pid, "status", "NoNewPrivs:"), "1", "{camera}");
    assert_eq!(proc_field(pid, "status", "Seccomp:"), "2", "{camera}");
    let data = proc_field(pid, "limits", "Max data size");
    let data_limit = MAX_DATA_BYTES.to_string();
    assert!(
        data.split_whitespace().take(2).all(|v| v == data_limit),
        "{camera}: Max data size {data}"
    );
    let files = proc_field(pid, "limits", "Max open files");
    let files_limit = MAX_OPEN_FILES.to_string();
    assert!(
        files.split_whitespace().take(2).all(|v| v == files_limit),
        "{camera}: Max open files {files}"
    );
    if nix::unistd::geteuid().is_root() {
        // Each camera its own uid, from nvr run's default range (supervisor/tests/run.rs
        // checks the exact mapping).
        let uid: u32 = proc_field(pid, "status", "Uid:")
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((61000..=61999).contains(&uid), "{camera}: uid {uid}");
    }
}

/// Starts `nvr run` on cameras `(name, source)`, waits for two recordings from each, checks
/// that each ingest is sandboxed, stops, and checks the data dir.
fn record_sandboxed(tmp: &tempfile::TempDir, cameras: &[(String, String)]) {
    let configs: Vec<(&str, syncer::db::StreamConfig)> = cameras
        .iter()
        .map(|(n, s)| (n.as_str(), e2e::camera(s, 1, 1)))
        .collect();
    let d = DataDir::new(tmp.path().join("data"));
    e2e::init_data_dir(&d, &configs);
    let mut nvr = e2e::start_nvr_run(&d, &[]);
    wait_until(
        "two recordings from each camera",
        Duration::from_secs(60),
        || cameras.iter().all(|(n, _)| committed(&d, n) >= 2),
    );
    for (name, _) in cameras {
        assert_sandboxed(name);
    }
    nvr.signal(Signal::SIGTERM);
    assert!(nvr.wait(Duration::from_secs(60)).success());
    let violations = e2e::check(&d);
    assert!(violations.is_empty(), "{violations:#?}");
    let rows = e2e::recordings(&d);
    for (i, (name, _)) in cameras.iter().enumerate() {
        let stream = i32::try_from(i + 1).unwrap();
        let ended: Vec<_> = rows.iter().filter(|r| r.id.stream() == stream).collect();
        assert!(ended.len() >= 2, "{name}: {} recordings", ended.len());
        assert_eq!(
            ended.last().unwrap().end_reason.as_deref(),
            Some("shutdown"),
            "{name} stopped cleanly, not killed"
        );
    }
}

#[test]
fn file_and_synthetic_cameras_record_in_the_sandbox() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = tmp.path().join("clip.h264");
    std::fs::copy(e2e::clip_path(), &clip).unwrap();
    record_sandboxed(
        &tmp,
        &[
            (unique("file"), format!("file:{}", clip.display())),
            (unique("synthetic"), "synthetic:".to_owned()),
        ],
    );
}

#[test]
fn rtsp_cameras_record_in_the_sandbox_over_tcp_and_udp() {
    if skip_without_rtsp_server("rtsp_cameras_record_in_the_sandbox_over_tcp_and_udp") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let server = RtspServer::start(&clip_mp4(tmp.path()), None, None);
    // By name, so that the host is resolved before the sandbox and connected to by address.
    let url = server.url().replacen("127.0.0.1", "localhost", 1);
    record_sandboxed(
        &tmp,
        &[
            (unique("tcp"), format!("{url}?stall_sec=5")),
            (unique("udp"), format!("{url}?transport=udp&stall_sec=5")),
        ],
    );
}

#[test]
fn an_ingest_killed_by_sigsys_is_reported_as_killed_by_the_sandbox() {
    let tmp = tempfile::tempdir().unwrap();
    let name = unique("victim");
    let d = DataDir::new(tmp.path().join("data"));
    e2e::init_data_dir(&d, &[(&name, e2e::camera("synthetic:", 1, 1))]);
    let mut nvr = e2e::start_nvr_run(&d, &[]);
    wait_until("the ingest to run", Duration::from_secs(30), || {
        ingest_pid(&name).is_some()
    });
    // What the seccomp filter does to a forbidden syscall, sent by hand to the ingest that
    // this test's `nvr run` started.
    let pid = ingest_pid(&name).unwrap();
    kill(Pid::from_raw(pid), Signal::SIGSYS).unwrap();
    wait_until("the exit to be reported", Duration::from_secs(30), || {
        SupervisorState::read(&d).is_some_and(|s| {
            s.cameras
                .iter()
                .any(|c| c.last_error.as_deref() == Some("killed by the sandbox (SIGSYS)"))
        })
    });
    let status = std::process::Command::new(e2e::binary("nvr"))
        .arg("--data-dir")
        .arg(&d.root)
        .arg("status")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(
        stdout.contains("killed by the sandbox (SIGSYS)"),
        "nvr status:\n{stdout}"
    );
    nvr.signal(Signal::SIGTERM);
    assert!(nvr.wait(Duration::from_secs(60)).success());
}
