//! The `nvr-syncer` daemon as a real process: brokered connections, descriptor passing, pushed
//! commits, salvage of a vanished ingest, hostile peers, takeover, graceful stop.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use protocol::messages::{
    AdminReply, Hello, HelloReply, IngestReply, IngestRequest, PROTOCOL_VERSION, ROLE_INGEST,
    RecordingTimes, SampleReport,
};
use protocol::wire::{Conn, WireError};
use protocol::{CompositeId, Time};
use syncer::admin_client::AdminClient;
use syncer::db::{Database, StreamConfig};
use syncer::layout::DataDir;

/// A running `nvr-syncer`, killed (by pid) if the test ends before stopping it.
struct Daemon {
    child: Child,
    data_dir: DataDir,
}

impl Daemon {
    /// Starts the daemon and waits for its readiness line on an inherited pipe (fd 3).
    fn start(data_dir: &DataDir) -> Daemon {
        Daemon::start_with(data_dir, &[])
    }

    /// [`Daemon::start`] with extra arguments.
    fn start_with(data_dir: &DataDir, extra: &[&str]) -> Daemon {
        // Close-on-exec, so that other tests' children do not inherit it; dup2 clears the flag
        // on the copy at fd 3.
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let write_fd = write.as_raw_fd();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nvr-syncer"));
        cmd.arg("--data-dir")
            .arg(&data_dir.root)
            .args(["--ready-fd", "3", "--shutdown-grace-sec", "2"])
            .args(extra)
            .stdin(Stdio::null());
        // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // dup2 onto itself would leave close-on-exec set: clear it instead.
                let r = if write_fd == 3 {
                    nix::libc::fcntl(3, nix::libc::F_SETFD, 0)
                } else {
                    nix::libc::dup2(write_fd, 3)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop(write);
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(std::fs::File::from(read)),
            &mut line,
        )
        .unwrap();
        assert_eq!(line, "ready\n", "the syncer died before becoming ready");
        Daemon {
            child,
            data_dir: data_dir.clone(),
        }
    }

    fn admin(&self) -> AdminClient {
        AdminClient::connect(&self.data_dir).unwrap()
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// Waits for exit (at most 20 s) and returns the status code.
    fn wait(mut self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "the syncer did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An initialized data dir with streams "a" and "b" (commits at once: `flush_if_sec` 0).
fn data_dir() -> (tempfile::TempDir, DataDir) {
    let tmp = tempfile::tempdir().unwrap();
    let d = data_dir_in(tmp.path());
    (tmp, d)
}

/// [`data_dir`] at `parent/data`.
fn data_dir_in(parent: &std::path::Path) -> DataDir {
    let d = DataDir::new(parent.join("data"));
    d.init().unwrap();
    let dir = std::sync::Arc::new(d.lock_sample_dir().unwrap());
    let db = Database::open(&d.db_path()).unwrap();
    let (mut s, _) = syncer::Syncer::start(
        dir,
        db,
        std::sync::Arc::new(protocol::clock::RealClock),
        Default::default(),
    )
    .unwrap();
    for name in ["a", "b"] {
        s.add_stream(
            name,
            StreamConfig {
                source: "synthetic:".into(),
                retain_bytes: 1 << 30,
                flush_if_sec: 0,
                rotate_sec: 2,
            },
        )
        .unwrap();
    }
    s.shutdown().unwrap();
    d
}

/// A test ingest speaking the protocol on a brokered connection.
struct Ingest {
    conn: Conn,
    hello: HelloReply,
    entry: i32,
}

impl Ingest {
    fn connect(admin: &mut AdminClient, stream: &str) -> Ingest {
        let fd = admin.connect_ingest(stream).unwrap();
        let mut conn = Conn::from(UnixStream::from(fd));
        conn.send(&Hello::new(ROLE_INGEST)).unwrap();
        let hello: HelloReply = conn.recv().unwrap();
        conn.send(&IngestRequest::AddSampleEntry {
            width: 320,
            height: 240,
            rfc6381_codec: "avc1.4d400d".into(),
            data: b"avc1 test entry".to_vec(),
        })
        .unwrap();
        // Commits are pushed per stream: after a takeover, the new connection may first hear
        // of the previous connection's recordings.
        let entry = loop {
            match conn.recv().unwrap() {
                IngestReply::SampleEntry { id } => break id,
                IngestReply::Committed { .. } => {}
                other => panic!("expected a sample entry, got {other:?}"),
            }
        };
        Ingest { conn, hello, entry }
    }

    fn open(&mut self, run_offset: i32) -> (CompositeId, std::fs::File) {
        self.conn
            .send(&IngestRequest::OpenRecording {
                run_offset,
                sample_entry_id: self.entry,
            })
            .unwrap();
        loop {
            match self.conn.recv_with_optional_fd::<IngestReply>().unwrap() {
                (IngestReply::Opened { id }, Some(fd)) => return (id, std::fs::File::from(fd)),
                // Commits of the stream may be pushed at any time.
                (IngestReply::Committed { .. }, None) => {}
                other => panic!("expected Opened with a descriptor, got {:?}", other.0),
            }
        }
    }

    /// Writes `n` samples of `len` bytes at 30 fps as a recording's first report, and waits
    /// for the syncer to acknowledge it; returns the bytes.
    fn write(&mut self, id: CompositeId, f: &mut std::fs::File, n: u32, len: usize) -> Vec<u8> {
        let mut all = Vec::new();
        let mut samples = Vec::new();
        for i in 0..n {
            let data = vec![i as u8; len];
            f.write_all(&data).unwrap();
            all.extend_from_slice(&data);
            samples.push(SampleReport {
                pts_90k: i64::from(i) * 3000,
                bytes: len as u32,
                is_key: i == 0,
            });
        }
        self.conn
            .send(&IngestRequest::Progress {
                id,
                samples,
                times: times(i64::from(n - 1) * 3000),
                written_bytes: all.len() as u64,
            })
            .unwrap();
        let answer = self.expect("progressed", |r| {
            matches!(
                r,
                IngestReply::Progressed { .. } | IngestReply::Error { .. }
            )
        });
        let expected = IngestReply::Progressed {
            id,
            written_bytes: all.len() as u64,
        };
        assert_eq!(answer, expected);
        all
    }

    fn close(&mut self, id: CompositeId, n: u32, data: &[u8]) {
        self.conn
            .send(&IngestRequest::CloseRecording {
                id,
                samples: vec![],
                last_sample_duration_90k: Some(3000),
                times: times(i64::from(n) * 3000),
                end_reason: Some("test".into()),
                writer_blake3: *blake3::hash(data).as_bytes(),
            })
            .unwrap();
    }

    /// Records one recording of `n` samples of `len` bytes as a run of its own, and waits for
    /// its commit; returns its id, the kept write descriptor and the bytes.
    fn record(&mut self, n: u32, len: usize) -> (CompositeId, std::fs::File, Vec<u8>) {
        let (id, mut f) = self.open(0);
        let data = self.write(id, &mut f, n, len);
        self.close(id, n, &data);
        self.expect(
            "committed",
            |r| matches!(r, IngestReply::Committed { ids } if ids.contains(&id)),
        );
        (id, f, data)
    }

    /// Makes sure the syncer has processed everything sent so far (an answered request).
    fn round_trip(&mut self) {
        self.conn
            .send(&IngestRequest::AddSampleEntry {
                width: 320,
                height: 240,
                rfc6381_codec: "avc1.4d400d".into(),
                data: b"avc1 test entry".to_vec(),
            })
            .unwrap();
        self.expect("sample entry", |r| {
            matches!(r, IngestReply::SampleEntry { .. })
        });
    }

    /// Reads answers until `pred` matches one, returning it.
    fn expect(&mut self, what: &str, pred: impl Fn(&IngestReply) -> bool) -> IngestReply {
        loop {
            let r: IngestReply = self
                .conn
                .recv()
                .unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
            if pred(&r) {
                return r;
            }
        }
    }
}

fn times(media_90k: i64) -> RecordingTimes {
    RecordingTimes {
        start: Time(1_795_737_600 * 90_000),
        wall_duration_90k: media_90k as i32,
        local_time_delta_90k: 0,
    }
}

fn set_read_timeout(c: &Conn) {
    c.stream()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
}

#[test]
fn records_commits_and_stops_gracefully() {
    let (_tmp, d) = data_dir();
    let daemon = Daemon::start(&d);
    let mut admin = daemon.admin();
    let mut a = Ingest::connect(&mut admin, "a");
    set_read_timeout(&a.conn);
    assert_eq!(a.hello.stream_name, "a");
    assert_eq!(a.hello.rotate_sec, 2);
    let (id, mut f) = a.open(0);
    let data = a.write(id, &mut f, 10, 1000);
    a.close(id, 10, &data);
    a.expect("accepted", |r| *r == IngestReply::Accepted { id });
    a.expect(
        "committed",
        |r| matches!(r, IngestReply::Committed { ids } if ids.contains(&id)),
    );

    let status = admin.status().unwrap();
    let sa = status.streams.iter().find(|s| s.name == "a").unwrap();
    assert_eq!(sa.committed_recordings, 1);
    assert_eq!(sa.newest_committed, Some(id));
    let recs = admin.recordings(Some("a")).unwrap();
    assert_eq!(recs[0].blake3, *blake3::hash(&data).as_bytes());
    assert_eq!(recs[0].sample_file_bytes, 10_000);

    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.wait(), 0);
    assert!(
        !d.root.join("syncer.sock").exists()
            || UnixStream::connect(d.root.join("syncer.sock")).is_err()
    );
}

#[test]
fn a_vanished_ingest_is_salvaged_and_the_other_stream_goes_on() {
    let (_tmp, d) = data_dir();
    let daemon = Daemon::start(&d);
    let mut admin = daemon.admin();
    let mut a = Ingest::connect(&mut admin, "a");
    let mut b = Ingest::connect(&mut admin, "b");
    set_read_timeout(&b.conn);
    let (ida, mut fa) = a.open(0);
    let reported = a.write(ida, &mut fa, 5, 1000);
    a.round_trip();
    // Written but never reported: lost with the ingest.
    fa.write_all(&[9u8; 700]).unwrap();
    drop(a); // The ingest vanishes (as on kill -9): its connection closes.

    let (idb, mut fb) = b.open(0);
    let data = b.write(idb, &mut fb, 3, 100);
    b.close(idb, 3, &data);
    b.expect(
        "b committed",
        |r| matches!(r, IngestReply::Committed { ids } if ids.contains(&idb)),
    );

    // a's recording is salvaged to what was reported.
    let deadline = Instant::now() + Duration::from_secs(10);
    let rec = loop {
        if let Some(r) = admin.recordings(Some("a")).unwrap().into_iter().next() {
            break r;
        }
        assert!(Instant::now() < deadline, "a's recording was not salvaged");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(rec.id, ida);
    assert_eq!(rec.sample_file_bytes, 5000);
    assert_eq!(rec.blake3, *blake3::hash(&reported).as_bytes());
    assert_eq!(rec.flags & 1, 1, "trailing zero");
    daemon.signal(nix::sys::signal::Signal::SIGINT);
    assert_eq!(daemon.wait(), 0);
}

#[test]
fn hostile_ingests_get_clear_errors_and_cost_others_nothing() {
    let (_tmp, d) = data_dir();
    let daemon = Daemon::start(&d);
    let mut admin = daemon.admin();
    let mut b = Ingest::connect(&mut admin, "b");
    set_read_timeout(&b.conn);
    let (idb, mut fb) = b.open(0);

    // Wrong version: the answer names ours, then the connection ends.
    let fd = admin.connect_ingest("a").unwrap();
    let mut c = Conn::from(UnixStream::from(fd));
    set_read_timeout(&c);
    c.send(&Hello {
        protocol_version: PROTOCOL_VERSION + 7,
        role: ROLE_INGEST.into(),
    })
    .unwrap();
    let reply: HelloReply = c.recv().unwrap();
    assert_eq!(reply.protocol_version, PROTOCOL_VERSION);
    assert!(matches!(c.recv::<IngestReply>(), Err(WireError::Closed)));

    // Garbage bytes after the hello: the connection is dropped.
    let fd = admin.connect_ingest("a").unwrap();
    let mut s = UnixStream::from(fd);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&protocol::codec::encode(&Hello::new(ROLE_INGEST)).unwrap())
        .unwrap();
    s.write_all(&[4, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest); // HelloReply, then EOF.

    // A second open while one is growing: a fatal error naming the recording.
    let mut a = Ingest::connect(&mut admin, "a");
    set_read_timeout(&a.conn);
    let (ida, _fa) = a.open(0);
    a.conn
        .send(&IngestRequest::OpenRecording {
            run_offset: 0,
            sample_entry_id: a.entry,
        })
        .unwrap();
    let IngestReply::Error { message } =
        a.expect("error", |r| matches!(r, IngestReply::Error { .. }))
    else {
        unreachable!()
    };
    assert!(message.contains(&ida.to_string()), "{message}");

    // A close whose size does not match the file.
    let mut a = Ingest::connect(&mut admin, "a");
    set_read_timeout(&a.conn);
    let (ida, mut fa) = a.open(0);
    let data = a.write(ida, &mut fa, 2, 100);
    fa.write_all(b"extra").unwrap();
    a.close(ida, 2, &data);
    let IngestReply::Error { message, .. } =
        a.expect("error", |r| matches!(r, IngestReply::Error { .. }))
    else {
        unreachable!()
    };
    assert!(message.contains("205 bytes"), "{message}");

    // A descriptor where none is expected.
    let mut a = Ingest::connect(&mut admin, "a");
    set_read_timeout(&a.conn);
    let devnull = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
    a.conn
        .send_with_fd(
            &IngestRequest::Progress {
                id: CompositeId::new(1, 0),
                samples: vec![],
                times: times(0),
                written_bytes: 0,
            },
            std::os::fd::AsFd::as_fd(&devnull),
        )
        .unwrap();
    assert!(a.conn.recv::<IngestReply>().is_err(), "connection dropped");

    // An oversize frame: refused from its length prefix alone.
    let mut a = Ingest::connect(&mut admin, "a");
    set_read_timeout(&a.conn);
    let mut raw = a.conn.stream().try_clone().unwrap();
    raw.write_all(&(64u32 << 20).to_le_bytes()).unwrap();
    assert!(a.conn.recv::<IngestReply>().is_err(), "connection dropped");

    // pts going backwards.
    let mut a = Ingest::connect(&mut admin, "a");
    set_read_timeout(&a.conn);
    let (ida, mut fa) = a.open(0);
    a.write(ida, &mut fa, 3, 100);
    a.conn
        .send(&IngestRequest::Progress {
            id: ida,
            samples: vec![SampleReport {
                pts_90k: 3000,
                bytes: 100,
                is_key: false,
            }],
            times: times(6000),
            written_bytes: 400,
        })
        .unwrap();
    let IngestReply::Error { message } =
        a.expect("error", |r| matches!(r, IngestReply::Error { .. }))
    else {
        unreachable!()
    };
    assert!(message.contains("pts 3000"), "{message}");

    // Through all of it, b records and commits.
    let data = b.write(idb, &mut fb, 3, 100);
    b.close(idb, 3, &data);
    b.expect(
        "b committed",
        |r| matches!(r, IngestReply::Committed { ids } if ids.contains(&idb)),
    );

    // Garbage on the admin socket gets an error answer, and the syncer stays up.
    let mut raw = UnixStream::connect(d.root.join("syncer.sock")).unwrap();
    raw.write_all(&[0xff; 64]).unwrap();
    drop(raw);
    assert!(daemon.admin().status().is_ok());
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.wait(), 0);
}

#[test]
fn a_new_connection_for_a_stream_takes_over() {
    let (_tmp, d) = data_dir();
    let daemon = Daemon::start(&d);
    let mut admin = daemon.admin();
    let mut old = Ingest::connect(&mut admin, "a");
    set_read_timeout(&old.conn);
    let (id_old, mut f) = old.open(0);
    let data = old.write(id_old, &mut f, 4, 100);
    old.round_trip();
    let mut new = Ingest::connect(&mut admin, "a");
    set_read_timeout(&new.conn);
    // The old connection is closed; what it had reported is salvaged; the new one records.
    assert!(old.conn.recv::<IngestReply>().is_err());
    let (id_new, mut f) = new.open(0);
    assert!(id_new.recording() > id_old.recording());
    let d2 = new.write(id_new, &mut f, 2, 100);
    new.close(id_new, 2, &d2);
    new.expect(
        "committed",
        |r| matches!(r, IngestReply::Committed { ids } if ids.contains(&id_new)),
    );
    let recs = admin.recordings(Some("a")).unwrap();
    let salvaged = recs.iter().find(|r| r.id == id_old).expect("salvaged");
    assert_eq!(salvaged.blake3, *blake3::hash(&data).as_bytes());
    assert_eq!(
        salvaged.end_reason.as_deref(),
        Some("taken over by a new connection")
    );
    let mut admin2 = daemon.admin();
    match admin2.request(&protocol::messages::AdminRequest::ConnectIngest {
        stream_name: "nope".into(),
    }) {
        Err(e) => assert!(e.to_string().contains("no camera named \"nope\""), "{e}"),
        Ok(r) => assert!(matches!(r, AdminReply::Error { .. })),
    }
    // Recordings come in pages of 1 to MAX_RECORDINGS_PER_PAGE.
    for limit in [0, protocol::messages::MAX_RECORDINGS_PER_PAGE + 1] {
        let page = protocol::messages::AdminRequest::Recordings {
            stream_name: None,
            after: None,
            limit,
        };
        match daemon.admin().request(&page) {
            Err(e) => assert!(e.to_string().contains("a page of"), "{e}"),
            Ok(r) => panic!("a page of {limit}: {r:?}"),
        }
    }
    let page = protocol::messages::AdminRequest::Recordings {
        stream_name: Some("a".into()),
        after: Some(id_old),
        limit: 1,
    };
    match daemon.admin().request(&page) {
        Ok(AdminReply::Recordings(r)) => {
            assert_eq!(r.iter().map(|r| r.id).collect::<Vec<_>>(), [id_new]);
        }
        other => panic!("{other:?}"),
    }
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.wait(), 0);
}

#[test]
fn an_admin_client_of_another_uid_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root to connect as another uid");
        return;
    }
    let (_tmp, d) = data_dir();
    let daemon = Daemon::start(&d);
    let sock = d.root.join("syncer.sock");
    // Open the file system's door so that only SO_PEERCRED stands in the way.
    for p in [&d.root.parent().unwrap().to_path_buf(), &d.root, &sock] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    // A peer running as nobody: it prints whatever the syncer answers before closing.
    let out = Command::new("python3")
        .args([
            "-c",
            "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); \
             s.settimeout(10); d=b''\nwhile True:\n  c=s.recv(4096)\n  if not c: break\n  d+=c\n\
             sys.stdout.buffer.write(d)",
            sock.to_str().unwrap(),
        ])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("python3 runs");
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        answer.contains("uid 65534 may not use"),
        "{answer:?} {out:?}"
    );
    // The syncer is unaffected.
    assert!(daemon.admin().status().is_ok());
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.wait(), 0);
}

/// Idle admin clients cannot take the socket: one past the limit is refused with an error
/// naming it, an ingest connection is still brokered once an idle client times out, and the
/// idle clients are dropped after the idle timeout.
#[test]
fn admin_connections_are_capped_and_idle_ones_time_out() {
    use syncer::server::{ADMIN_IDLE_TIMEOUT, MAX_ADMIN_CONNECTIONS};
    let (_tmp, d) = data_dir();
    let daemon = Daemon::start(&d);
    let sock = d.root.join("syncer.sock");
    // Idle clients: connected, never a word. The syncer takes each in (the first status
    // answered after them proves it has).
    let idle: Vec<UnixStream> = (0..MAX_ADMIN_CONNECTIONS - 1)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    let mut last = daemon.admin(); // the limit's last slot, held
    last.status().unwrap();
    let err = AdminClient::connect(&d).unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "too many admin connections (the limit is {MAX_ADMIN_CONNECTIONS})"
        )),
        "{err}"
    );
    drop(last);
    // The idle ones are dropped after the timeout: reading them ends.
    let started = Instant::now();
    for mut s in idle {
        s.set_read_timeout(Some(ADMIN_IDLE_TIMEOUT * 3)).unwrap();
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut s, &mut buf).unwrap();
    }
    assert!(started.elapsed() < ADMIN_IDLE_TIMEOUT * 3);
    // Everything works again, ingest brokering included.
    let mut a = Ingest::connect(&mut daemon.admin(), "a");
    let (id, mut f) = a.open(0);
    let data = a.write(id, &mut f, 2, 100);
    a.close(id, 2, &data);
    a.expect("accepted", |r| matches!(r, IngestReply::Accepted { .. }));
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.wait(), 0);
}

/// A `pids` cgroup of the syncer's own, removed on drop (the syncer moved back out first).
struct PidsCgroup {
    dir: std::path::PathBuf,
    pid: u32,
}

impl PidsCgroup {
    /// Moves `pid` into a new cgroup v1 `pids` group; `None` where that cannot be done here.
    fn enter(pid: u32) -> Option<PidsCgroup> {
        let root = std::path::Path::new("/sys/fs/cgroup/pids");
        let dir = root.join(format!("nvr-test-{}-{pid}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        let g = PidsCgroup { dir, pid };
        std::fs::write(g.dir.join("cgroup.procs"), pid.to_string()).ok()?;
        Some(g)
    }

    fn set_max(&self, max: &str) {
        std::fs::write(self.dir.join("pids.max"), max).unwrap();
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write("/sys/fs/cgroup/pids/cgroup.procs", self.pid.to_string());
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn threads_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

/// With no thread to spare (a `pids` limit), an admin client and a brokered connection are
/// refused with an error, and the syncer keeps its socket: once the limit is lifted it serves
/// and records as before.
#[test]
fn a_failed_thread_spawn_refuses_that_connection_only() {
    let (_tmp, d) = data_dir();
    let daemon = Daemon::start(&d);
    let pid = daemon.child.id();
    let Some(cgroup) = PidsCgroup::enter(pid) else {
        eprintln!("SKIPPED: no cgroup v1 pids controller to limit the syncer's threads");
        return;
    };
    // Room for one admin thread and no more.
    cgroup.set_max(&(threads_of(pid) + 1).to_string());
    let mut admin = daemon.admin();
    let refused = AdminClient::connect(&d).unwrap_err();
    assert!(
        matches!(refused, syncer::admin_client::AdminError::Wire(_)),
        "{refused}"
    );
    let err = admin.connect_ingest("a").unwrap_err();
    assert!(err.to_string().contains("connection for \"a\""), "{err}");
    admin.status().expect("the syncer serves on");
    cgroup.set_max("max");
    drop(admin);
    let mut a = Ingest::connect(&mut daemon.admin(), "a");
    let (id, mut f) = a.open(0);
    let data = a.write(id, &mut f, 2, 100);
    a.close(id, 2, &data);
    a.expect("accepted", |r| matches!(r, IngestReply::Accepted { .. }));
    drop(cgroup);
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.wait(), 0);
}

/// Waits until `f` holds, at most 10 s.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A hostile ingest (this test process) keeps a committed recording's descriptor and writes
/// 8 MiB more through it (36 MiB this way once made the free-space guard delete another
/// camera's recordings): within a second or two the syncer cuts the file back to its
/// committed length, drops that connection saying why, and the recording's bytes and hash are
/// as committed. The same once the connection is closed but the process still runs. The other
/// stream records on meanwhile.
#[test]
fn a_kept_descriptor_cannot_grow_a_committed_recording() {
    let (_tmp, d) = data_dir();
    let daemon = Daemon::start(&d);
    let mut admin = daemon.admin();
    let mut b = Ingest::connect(&mut admin, "b");
    set_read_timeout(&b.conn);
    for closes_connection in [false, true] {
        let mut a = Ingest::connect(&mut admin, "a");
        set_read_timeout(&a.conn);
        let (id, mut f, data) = a.record(10, 1000);
        if closes_connection {
            a.conn.stream().shutdown(std::net::Shutdown::Both).unwrap();
            // The syncer has seen the connection go (the other stream's round trip comes after).
            b.round_trip();
        }
        f.write_all(&vec![0xee; 8 << 20]).unwrap();
        let path = d
            .sample_dir_path()
            .join(syncer::layout::sample_file_name(id));
        eventually("the file cut back", || {
            std::fs::metadata(&path).unwrap().len() == 10_000
        });
        assert_eq!(std::fs::read(&path).unwrap(), data);
        let rec = admin.recordings(Some("a")).unwrap();
        let rec = rec.iter().find(|r| r.id == id).unwrap();
        assert_eq!(rec.blake3, *blake3::hash(&data).as_bytes());
        if !closes_connection {
            let error = a.expect("the connection dropped", |r| {
                matches!(r, IngestReply::Error { .. })
            });
            let IngestReply::Error { message } = error else {
                unreachable!()
            };
            assert!(message.contains("more than the 10000 it may"), "{message}");
        }
        // The other stream was not held up.
        b.record(3, 100);
    }
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.wait(), 0);
}

/// A hostile ingest leaves the `Opened` frame, with its descriptor, unread in the socket, and
/// breaks a rule so that the syncer drops the connection and is done with the file (a discard);
/// seconds later it takes the descriptor and writes past what the file may hold. The file is
/// still watched (a descriptor in flight is in no table, but the syncer knows the frame was not
/// read) and cut back.
#[test]
fn a_descriptor_left_in_flight_is_still_watched() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: watching an ingest's descriptors needs root");
        return;
    }
    let (_tmp, d) = data_dir();
    let daemon = Daemon::start(&d);
    let mut admin = daemon.admin();
    let mut a = Ingest::connect(&mut admin, "a");
    set_read_timeout(&a.conn);
    let id = CompositeId::new(a.hello.stream_id, 0);
    a.conn
        .send(&IngestRequest::OpenRecording {
            run_offset: 0,
            sample_entry_id: a.entry,
        })
        .unwrap();
    // A report of a recording that is not this connection's: refused, connection dropped.
    a.conn
        .send(&IngestRequest::Progress {
            id: CompositeId::new(a.hello.stream_id + 1, 0),
            samples: vec![],
            times: times(0),
            written_bytes: 0,
        })
        .unwrap();
    // The syncer discards the file and looks at what the process holds, twice.
    std::thread::sleep(Duration::from_millis(2500));
    let (reply, fd) = a.conn.recv_with_optional_fd::<IngestReply>().unwrap();
    assert_eq!(reply, IngestReply::Opened { id });
    let mut f = std::fs::File::from(fd.expect("the descriptor"));
    let window = protocol::limits::WRITE_WINDOW_BYTES;
    f.write_all(&vec![0xee; window as usize + (6 << 20)])
        .unwrap();
    eventually("the file cut back to what it could hold", || {
        f.metadata().unwrap().len() <= window
    });
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.wait(), 0);
}

/// A tmpfs this test mounted, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A kept descriptor used to fill the disk (16 MiB into a committed recording on a 24 MiB
/// file system that keeps 8 MiB free): the file is cut back before the free-space guard looks,
/// so the other stream loses none of its recordings for it.
#[test]
fn a_kept_descriptor_filling_the_disk_costs_no_other_stream_a_recording() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: mounting a tmpfs needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &mnt,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=24m"),
    )
    .unwrap();
    let _mounted = Tmpfs(mnt.clone());
    let d = data_dir_in(&mnt);
    let daemon = Daemon::start_with(&d, &["--min-free-bytes", &(8u64 << 20).to_string()]);
    let mut admin = daemon.admin();
    let mut b = Ingest::connect(&mut admin, "b");
    set_read_timeout(&b.conn);
    let kept: Vec<CompositeId> = (0..3).map(|_| b.record(3, 1000).0).collect();
    let mut a = Ingest::connect(&mut admin, "a");
    set_read_timeout(&a.conn);
    let (id, mut f, _) = a.record(10, 1000);
    f.write_all(&vec![0xee; 16 << 20]).unwrap();
    // Another stream's request at once: the syncer's next round comes before its next tick.
    b.round_trip();
    let path = d
        .sample_dir_path()
        .join(syncer::layout::sample_file_name(id));
    eventually("the file cut back", || {
        std::fs::metadata(&path).unwrap().len() == 10_000
    });
    // Let the syncer go round its loop a few times.
    b.round_trip();
    std::thread::sleep(Duration::from_millis(1500));
    b.round_trip();
    let left: Vec<CompositeId> = admin
        .recordings(Some("b"))
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, kept, "b lost a recording to a's kept descriptor");
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.wait(), 0);
}
