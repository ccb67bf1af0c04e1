//! Support for the end-to-end tests and benchmarks: locating the built binaries, setting up a
//! data dir, running `nvr-syncer` and `nvr-ingest` as real processes (ended only by pid, only
//! the ones started here), and checking a stopped data dir against DESIGN.md's invariants.

pub mod playback;
pub mod rtsp;

use std::io::BufRead;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use protocol::clock::RealClock;
use syncer::admin_client::AdminClient;
use syncer::db::{Database, RecordingRow, StreamConfig};
use syncer::layout::DataDir;

/// Path of a workspace binary built in the same profile as the running test or bench.
///
/// `cargo test --workspace` builds every binary of the workspace (each package with
/// integration tests gets its binaries built); for benches run `cargo build --release --bins`
/// first.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in <target>/<profile>/deps");
    let p = profile_dir.join(name);
    assert!(
        p.exists(),
        "{} is not built; run `cargo build --workspace --bins` (in this profile) first",
        p.display()
    );
    p
}

/// The H.264 clip shipped with the ingest crate.
pub fn clip_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ingest/testdata/clip.h264")
}

/// An initialized data dir in a temp dir, with the given cameras `(name, config)`.
pub fn data_dir(cameras: &[(&str, StreamConfig)]) -> (tempfile::TempDir, DataDir) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let d = DataDir::new(tmp.path().join("data"));
    init_data_dir(&d, cameras);
    (tmp, d)
}

/// Initializes `d` (created if missing) with the given cameras.
pub fn init_data_dir(d: &DataDir, cameras: &[(&str, StreamConfig)]) {
    d.init().expect("init");
    let dir = Arc::new(d.lock_sample_dir().expect("lock"));
    let db = Database::open(&d.db_path()).expect("open db");
    let (mut s, _) =
        syncer::Syncer::start(dir, db, Arc::new(RealClock), Default::default()).expect("start");
    for (name, config) in cameras {
        s.add_stream(name, config.clone()).expect("add stream");
    }
    s.shutdown().expect("shutdown");
}

pub fn camera(source: &str, flush_if_sec: u32, rotate_sec: u32) -> StreamConfig {
    StreamConfig {
        source: source.to_owned(),
        retain_bytes: 1 << 30,
        flush_if_sec,
        rotate_sec,
    }
}

/// A child process started here, killed by pid on drop if still running.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    name: String,
}

impl Proc {
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).unwrap_or_else(|e| panic!("signal {sig} to {}: {e}", self.name));
    }

    /// Waits at most `timeout` for exit.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits at most `timeout` for a successful exit (panics otherwise).
    pub fn stop(&mut self, timeout: Duration) {
        self.signal(Signal::SIGTERM);
        let status = self.wait(timeout);
        assert!(
            status.success(),
            "{} exited with {status} on SIGTERM",
            self.name
        );
    }

    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// CPU time (user + system) the process has used so far, from `/proc/<pid>/stat`.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("read /proc/<pid>/stat");
        // Fields after the parenthesized command name; utime and stime are the 14th and 15th.
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        let ticks: u64 =
            f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as u64;
        Duration::from_nanos(ticks * 1_000_000_000 / hz)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Makes `fd` the child's fd 3 (the one descriptor `nvr-ingest` talks on, and the readiness
/// pipe of `nvr-syncer`).
fn with_fd3(cmd: &mut Command, fd: &OwnedFd) {
    let raw = fd.as_raw_fd();
    // SAFETY: only dup2 or fcntl (async-signal-safe) run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would leave close-on-exec set: clear it instead.
            let r = if raw == 3 {
                nix::libc::fcntl(3, nix::libc::F_SETFD, 0)
            } else {
                nix::libc::dup2(raw, 3)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Starts `nvr-syncer` on `d` and waits for its readiness.
pub fn start_syncer(d: &DataDir) -> Proc {
    start_syncer_with(d, &[])
}

/// [`start_syncer`] with extra arguments.
pub fn start_syncer_with(d: &DataDir, extra: &[&str]) -> Proc {
    start_syncer_logged(d, extra, None)
}

/// [`start_syncer_with`], its log (stderr) going to the file `log` if given.
pub fn start_syncer_logged(d: &DataDir, extra: &[&str], log: Option<&Path>) -> Proc {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    let mut cmd = Command::new(binary("nvr-syncer"));
    cmd.arg("--data-dir")
        .arg(&d.root)
        .args(["--ready-fd", "3", "--shutdown-grace-sec", "5"])
        .args(extra)
        .stdin(Stdio::null());
    if let Some(log) = log {
        cmd.stderr(std::fs::File::create(log).expect("create the syncer's log"));
    }
    with_fd3(&mut cmd, &write);
    let child = cmd.spawn().expect("spawn nvr-syncer");
    drop(write);
    let mut line = String::new();
    std::io::BufReader::new(std::fs::File::from(read))
        .read_line(&mut line)
        .expect("read readiness");
    assert_eq!(line, "ready\n", "nvr-syncer died before becoming ready");
    Proc {
        child,
        name: "nvr-syncer".into(),
    }
}

/// Asks the syncer for a connection for `camera` and starts its `nvr-ingest` on it.
pub fn start_ingest(d: &DataDir, camera: &str, source: &str, extra: &[&str]) -> Proc {
    start_ingest_logged(d, camera, source, extra, None)
}

/// [`start_ingest`], its log (stderr) going to the file `log` if given.
pub fn start_ingest_logged(
    d: &DataDir,
    camera: &str,
    source: &str,
    extra: &[&str],
    log: Option<&Path>,
) -> Proc {
    let fd = AdminClient::connect(d)
        .expect("admin")
        .connect_ingest(camera)
        .expect("brokered connection");
    let mut cmd = Command::new(binary("nvr-ingest"));
    cmd.args(["--camera", camera, "--source", source])
        .args(extra)
        .stdin(Stdio::null());
    if let Some(log) = log {
        cmd.stderr(std::fs::File::create(log).expect("create the ingest's log"));
    }
    with_fd3(&mut cmd, &fd);
    let child = cmd.spawn().expect("spawn nvr-ingest");
    drop(fd);
    Proc {
        child,
        name: format!("nvr-ingest {camera}"),
    }
}

/// Starts `nvr run` (the supervisor) on `d` with extra arguments; its children's output goes
/// to this process's stderr.
pub fn start_nvr_run(d: &DataDir, extra: &[&str]) -> Proc {
    start_nvr_run_logged(d, extra, None)
}

/// [`start_nvr_run`], its log (stderr, with its children's) going to the file `log` if given.
pub fn start_nvr_run_logged(d: &DataDir, extra: &[&str], log: Option<&Path>) -> Proc {
    start_nvr_run_from(&binary("nvr"), d, extra, log, &[])
}

/// [`start_nvr_run_logged`] of the `nvr` binary at `nvr` (whose directory holds the
/// `nvr-syncer` and `nvr-ingest` it starts), with extra environment variables `env`.
pub fn start_nvr_run_from(
    nvr: &Path,
    d: &DataDir,
    extra: &[&str],
    log: Option<&Path>,
    env: &[(&str, &std::ffi::OsStr)],
) -> Proc {
    let mut cmd = Command::new(nvr);
    cmd.envs(env.iter().copied());
    cmd.arg("--data-dir")
        .arg(&d.root)
        .arg("run")
        .args(extra)
        .stdin(Stdio::null());
    if let Some(log) = log {
        cmd.stderr(std::fs::File::create(log).expect("create nvr run's log"));
    }
    let child = cmd.spawn().expect("spawn nvr run");
    Proc {
        child,
        name: "nvr run".into(),
    }
}

/// Committed recordings of a stopped data dir, oldest first.
pub fn recordings(d: &DataDir) -> Vec<RecordingRow> {
    Database::open(&d.db_path())
        .expect("open db")
        .recordings(None)
        .expect("recordings")
}

/// Checks a stopped data dir with `syncer::check` (what `nvr check --hash` runs): every
/// invariant of DESIGN.md, each file hashed. Returns the violations, each naming the
/// recording or file.
pub fn check(d: &DataDir) -> Vec<String> {
    let db = Database::open(&d.db_path()).expect("open db");
    let dir = syncer::fs::RealDir::open_dir(&d.sample_dir_path()).expect("sample dir");
    let opts = syncer::check::CheckOptions {
        hash: true,
        live: false,
    };
    let report = syncer::check::check(&db, &dir, opts, &mut |_| {}).expect("check runs");
    report
        .violations
        .iter()
        .map(|v| format!("{} {}: {}", v.kind.as_str(), v.subject, v.message))
        .collect()
}

/// Pids and command lines of processes whose command line mentions `needle` (each test's temp
/// dir is unique, so its path picks out that test's processes), excluding this process.
pub fn pids_mentioning(needle: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if pid != me && cmd.contains(needle) {
            out.push((pid, cmd));
        }
    }
    out
}

/// Polls `f` every 50 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Everything in the data dir, with its mode, that is not its owner's alone: directories must
/// be 0700, regular files 0600, and anything else (the admin socket) closed to group and
/// others. Empty when the data dir is private.
pub fn not_private(d: &DataDir) -> Vec<String> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let mut bad = Vec::new();
    let mut check = |p: &Path| {
        let m = std::fs::symlink_metadata(p).unwrap();
        let mode = m.permissions().mode() & 0o7777;
        let ok = if m.is_dir() {
            mode == syncer::layout::PRIVATE_DIR_MODE
        } else if m.file_type().is_file() {
            mode == syncer::layout::PRIVATE_FILE_MODE
        } else {
            m.file_type().is_socket() && mode & 0o077 == 0
        };
        if !ok {
            bad.push(format!("{} is {mode:o}", p.display()));
        }
    };
    check(&d.root);
    for dir in [d.root.clone(), d.sample_dir_path()] {
        for e in std::fs::read_dir(&dir).unwrap() {
            check(&e.unwrap().path());
        }
    }
    bad
}

/// A mount this test made (a tmpfs, a read-only bind); unmounted on drop, even when the test
/// fails.
pub struct Mounted(pub PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Mounts a tmpfs of `size` (e.g. `6m`, or `6m,nr_inodes=40` with more options) in a new
/// temporary dir; `None` (having said SKIPPED)
/// if that cannot be done here (it needs root, or root of a user namespace).
pub fn mount_tmpfs(size: &str) -> Option<(tempfile::TempDir, Mounted)> {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    if let Err(e) = nix::mount::mount(
        Some("tmpfs"),
        &mnt,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some(format!("size={size}").as_str()),
    ) {
        eprintln!("SKIPPED: cannot mount a tmpfs here ({e})");
        return None;
    }
    Some((tmp, Mounted(mnt)))
}

/// Makes `dir` read-only by bind-mounting it onto itself read-only, as a read-only mount of a
/// data dir's disk would; `None` (having said SKIPPED) where mounting is not allowed.
pub fn bind_read_only(dir: &Path) -> Option<Mounted> {
    use nix::mount::{MsFlags, mount};
    if let Err(e) = mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>) {
        eprintln!("SKIPPED: cannot bind-mount here ({e})");
        return None;
    }
    let mounted = Mounted(dir.to_owned());
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    mount(None::<&str>, dir, None::<&str>, flags, None::<&str>).expect("remount read-only");
    Some(mounted)
}
