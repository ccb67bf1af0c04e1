//! The `nvr-ingest` binary as the supervisor runs it: a real process with the syncer
//! connection on fd 3, served by a fake syncer in this test process. Checks the exit statuses
//! `--help` documents, the shutdown on SIGTERM, and that every log line names the camera.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use protocol::messages::{
    Hello, HelloReply, IngestReply, IngestRequest, PROTOCOL_VERSION, ROLE_INGEST,
};
use protocol::{CompositeId, Conn, WireError};

const CAMERA: &str = "cam-test";
const STREAM: i32 = 3;

/// Longest a test waits for the process to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts `nvr-ingest` with `fd` (if any) as its fd 3 and `args` after `--camera`.
fn spawn(fd: Option<RawFd>, args: &[&str]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nvr-ingest"));
    cmd.args(["--camera", CAMERA])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec the closure calls only dup2, fcntl and close, which are
    // async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let ok = match fd {
                Some(3) => nix::libc::fcntl(3, nix::libc::F_SETFD, 0) != -1,
                Some(fd) => nix::libc::dup2(fd, 3) != -1,
                None => {
                    nix::libc::close(3);
                    true
                }
            };
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    cmd.spawn().unwrap()
}

/// Waits for `child` to exit (killing it after [`EXIT_TIMEOUT`]); returns its status and
/// stderr.
fn wait(mut child: Child) -> (ExitStatus, String) {
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).unwrap();
        s
    });
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("nvr-ingest did not exit within {EXIT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().unwrap())
}

fn handshake(conn: &mut Conn, version: u32) {
    let hello: Hello = conn.recv().unwrap();
    assert_eq!(hello, Hello::new(ROLE_INGEST));
    conn.send(&HelloReply {
        protocol_version: version,
        stream_id: STREAM,
        stream_name: CAMERA.to_owned(),
        rotate_sec: 60,
    })
    .unwrap();
}

/// Runs `serve` on the syncer end of a socketpair whose other end is returned, for fd 3.
fn syncer<T: Send + 'static>(
    serve: impl FnOnce(Conn) -> T + Send + 'static,
) -> (Conn, JoinHandle<T>) {
    let (ingest, syncer) = Conn::pair().unwrap();
    (ingest, std::thread::spawn(move || serve(syncer)))
}

#[test]
fn fd_3_closed_or_not_a_socket_is_a_usage_error() {
    let file = tempfile::tempfile().unwrap();
    for fd in [None, Some(file.as_raw_fd())] {
        let (status, stderr) = wait(spawn(fd, &["--source", "synthetic:"]));
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("fd 3"), "{stderr}");
    }
}

#[test]
fn bad_arguments_are_a_usage_error() {
    let (status, _) = wait(spawn(None, &["--source"]));
    assert_eq!(status.code(), Some(2));
    let (status, _) = wait(spawn(
        None,
        &["--source", "synthetic:", "--rotate-sec", "0"],
    ));
    assert_eq!(status.code(), Some(2));
}

#[test]
fn help_explains_fd_3_and_the_exit_statuses() {
    let out = Command::new(env!("CARGO_BIN_EXE_nvr-ingest"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "file descriptor 3",
        "Exit statuses",
        "  3  syncer connection lost",
    ] {
        assert!(help.contains(needle), "{needle:?} not in {help}");
    }
}

#[test]
fn protocol_version_mismatch_is_a_usage_error() {
    let (conn, server) = syncer(|mut c| {
        handshake(&mut c, PROTOCOL_VERSION + 1);
        c
    });
    let fd = conn.as_fd().as_raw_fd();
    let child = spawn(Some(fd), &["--source", "synthetic:"]);
    drop(conn);
    let (status, stderr) = wait(child);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("protocol version mismatch"), "{stderr}");
    drop(server.join().unwrap());
}

#[test]
fn bad_source_url_is_a_usage_error_and_a_missing_file_a_source_error() {
    for (source, code) in [
        ("http://camera/x", 2),
        ("rtsp://camera/x?transport=quic", 2),
        ("file:/nonexistent.h264", 4),
    ] {
        let (conn, server) = syncer(|mut c| {
            handshake(&mut c, PROTOCOL_VERSION);
            c
        });
        let child = spawn(Some(conn.as_fd().as_raw_fd()), &["--source", source]);
        drop(conn);
        let (status, stderr) = wait(child);
        assert_eq!(status.code(), Some(code), "{source}: {stderr}");
        drop(server.join().unwrap());
    }
}

#[test]
fn syncer_closing_the_connection_is_connection_lost() {
    let (conn, server) = syncer(|mut c| {
        handshake(&mut c, PROTOCOL_VERSION);
        // Gone before answering the first request.
        let _: IngestRequest = c.recv().unwrap();
    });
    let child = spawn(
        Some(conn.as_fd().as_raw_fd()),
        &["--source", "synthetic:?speed=max"],
    );
    drop(conn);
    let (status, stderr) = wait(child);
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("syncer connection lost"), "{stderr}");
    server.join().unwrap();
}

#[test]
fn a_fatal_error_from_the_syncer_is_connection_lost() {
    let (conn, server) = syncer(|mut c| {
        handshake(&mut c, PROTOCOL_VERSION);
        let _: IngestRequest = c.recv().unwrap();
        c.send(&IngestReply::Error {
            message: "too many sample entries".to_owned(),
        })
        .unwrap();
        c
    });
    let child = spawn(
        Some(conn.as_fd().as_raw_fd()),
        &["--source", "synthetic:?speed=max"],
    );
    drop(conn);
    let (status, stderr) = wait(child);
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("too many sample entries"), "{stderr}");
    drop(server.join().unwrap());
}

/// What the fake syncer of the shutdown test saw: per close, its end reason and whether it
/// had a last sample duration.
type Closes = Vec<(Option<String>, bool)>;

#[test]
fn sigterm_closes_the_recording_with_reason_shutdown_and_exits_0() {
    let (pid_tx, pid_rx) = mpsc::channel::<u32>();
    let (conn, server) = syncer(move |mut c| {
        handshake(&mut c, PROTOCOL_VERSION);
        let mut files: Vec<File> = Vec::new();
        let mut closes: Closes = Vec::new();
        let mut progress = 0;
        let pid = pid_rx.recv().unwrap();
        loop {
            match c.recv::<IngestRequest>() {
                Ok(IngestRequest::AddSampleEntry { .. }) => {
                    c.send(&IngestReply::SampleEntry { id: 1 }).unwrap();
                }
                Ok(IngestRequest::OpenRecording { .. }) => {
                    let id = CompositeId::new(STREAM, files.len() as i32);
                    files.push(tempfile::tempfile().unwrap());
                    c.send_with_fd(&IngestReply::Opened { id }, files.last().unwrap().as_fd())
                        .unwrap();
                }
                Ok(IngestRequest::Progress {
                    id, written_bytes, ..
                }) => {
                    c.send(&IngestReply::Progressed { id, written_bytes })
                        .unwrap();
                    progress += 1;
                    if progress == 3 {
                        kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
                    }
                }
                Ok(IngestRequest::CloseRecording {
                    id,
                    end_reason,
                    last_sample_duration_90k,
                    ..
                }) => {
                    closes.push((end_reason, last_sample_duration_90k.is_some()));
                    c.send(&IngestReply::Accepted { id }).unwrap();
                }
                Ok(other) => panic!("fake syncer: unexpected {other:?}"),
                Err(WireError::Closed) => return closes,
                Err(e) => panic!("fake syncer: {e}"),
            }
        }
    });
    // Real time, a key frame (and so a progress report) every 5 frames.
    let child = spawn(
        Some(conn.as_fd().as_raw_fd()),
        &["--source", "synthetic:?fps=30&gop=5"],
    );
    pid_tx.send(child.id()).unwrap();
    drop(conn);
    let (status, stderr) = wait(child);
    assert_eq!(status.code(), Some(0), "{stderr}");
    let closes = server.join().unwrap();
    assert_eq!(
        closes.last(),
        Some(&(Some("shutdown".to_owned()), false)),
        "trailing zero, reason shutdown: {closes:?}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() >= 3, "{stderr}");
    for line in lines {
        assert!(line.contains(CAMERA), "log line without the camera: {line}");
    }
}
