//! The supervisor behind `nvr run`: starts, watches, restarts and stops the syncer and one
//! ingest per camera.
//!
//! - The syncer starts first; the supervisor waits for its readiness line (after recovery) on
//!   an inherited pipe, then asks it, per camera, for a brokered connection and starts
//!   `nvr-ingest --camera NAME --source URL` with that connection as fd 3.
//! - Every child runs in its own process group (a terminal's Ctrl-C reaches the supervisor
//!   alone, so the shutdown order holds) and gets `PR_SET_PDEATHSIG(SIGKILL)` before exec, with
//!   the parent re-checked after, so a killed supervisor never leaves a syncer holding the
//!   data dir's lock. Children are spawned from the supervisor's main thread only: the death
//!   signal follows the spawning *thread*.
//! - A child that exits while not asked to is restarted after a capped exponential backoff
//!   ([`Backoff`]), reset once it ran for [`Backoff::stable_after`]. A camera restarted more
//!   than [`Intensity::max_restarts`] times within [`Intensity::window`] is marked failed with
//!   its last error, and tried again after [`Intensity::failed_retry`] (doubling while the
//!   tries fail); the other cameras keep recording. If the syncer dies, every ingest loses
//!   its connection; the syncer is restarted (its recovery runs first), then every ingest with
//!   a fresh connection.
//! - The camera list is reconciled with the syncer's every [`RECONCILE_EVERY`]: a camera added
//!   or removed with `nvr camera` while running gets its ingest started or stopped.
//! - Stop (first SIGINT/SIGTERM): ingests get SIGTERM and close their recordings (end reason
//!   "shutdown"); then the syncer gets SIGTERM, flushes and exits; anything alive after the
//!   timeout gets SIGKILL. A second signal hurries: ingests get SIGKILL at once (the syncer
//!   salvages their recordings) and the syncer is told to stop waiting.
//! - Ingests run with `RLIMIT_FSIZE` (SIGXFSZ ignored, so an oversized write fails instead of
//!   killing) and `RLIMIT_NOFILE`, and sandbox themselves (`ingest::sandbox`). Started as
//!   root, the supervisor runs each under a uid of its own ([`crate::ingest_uids`]). A `file:`
//!   source's file is opened here and passed on (`protocol::wire::INGEST_SOURCE_FD`).

use std::collections::{BTreeMap, VecDeque};
use std::io::BufRead;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use protocol::messages::{CameraInfo, DroppedIngest, IngestHolds};
use protocol::source_url::{PASSWORD_ENV, USERNAME_ENV, split_credentials};
use syncer::admin_client::AdminClient;
use syncer::layout::DataDir;
use thiserror::Error;
use tracing::{error, info, warn};

use crate::identity::{FsIdentity, Identity};
use crate::ingest_uids::IngestUids;
use crate::state::{CameraState, ProcessState, SupervisorLock, SupervisorState};
use crate::stderr_tail::StderrTail;

/// How often the supervisor looks at its children.
const POLL: Duration = Duration::from_millis(100);

/// How long an exited syncer's stderr may stay open (a descendant holding it) before its reason
/// line is given up on.
const STDERR_CLOSE_WAIT: Duration = Duration::from_secs(1);

/// How often the camera list is compared with the syncer's.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(2);

/// How often an unprivileged syncer is told what each ingest holds: as often as a syncer that
/// may list them looks for itself (`syncer::server`'s tick).
const RELAY_HOLDS_EVERY: Duration = Duration::from_secs(1);

/// Deadline of each step (connect, send, answer) of the supervisor's calls to the syncer: a
/// stopped or stuck syncer delays a call by a few times this, not for ever, so a stop request
/// is carried out within seconds of the call in progress.
const ADMIN_DEADLINE: Duration = Duration::from_secs(5);

/// Longest wait for the syncer's readiness (recovery of a large data dir takes a while).
const SYNCER_READY_TIMEOUT: Duration = Duration::from_secs(600);

/// Descriptors an ingest may hold (its connection, one or two recordings, logs, the source).
const INGEST_NOFILE: u64 = 64;

/// Restart delays: `initial`, doubling up to `max`; back to `initial` after a child ran for
/// `stable_after`.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub stable_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// Delay before restart number `consecutive` (1 = the first after a stable run).
    pub fn delay(&self, consecutive: u32) -> Duration {
        let factor = 1u32 << consecutive.saturating_sub(1).min(16);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// The restart-intensity limit of one camera: more than `max_restarts` within `window` and the
/// camera is marked failed. A failed camera is tried again after `failed_retry`, doubling up
/// to [`MAX_FAILED_RETRY`] while each try fails before it runs stably, since what failed it
/// (a full disk, a camera rebooting) may well go away.
#[derive(Clone, Copy, Debug)]
pub struct Intensity {
    pub max_restarts: usize,
    pub window: Duration,
    pub failed_retry: Duration,
}

/// Longest wait before trying a failed camera again.
pub const MAX_FAILED_RETRY: Duration = Duration::from_secs(3600);

impl Default for Intensity {
    fn default() -> Self {
        Intensity {
            max_restarts: 5,
            window: Duration::from_secs(60),
            failed_retry: Duration::from_secs(300),
        }
    }
}

impl Intensity {
    /// Wait before try number `tries` (from 1) of a failed camera.
    fn failed_delay(&self, tries: u32) -> Duration {
        let factor = 1u32 << tries.saturating_sub(1).min(16);
        self.failed_retry
            .saturating_mul(factor)
            .min(MAX_FAILED_RETRY.max(self.failed_retry))
    }
}

pub struct Config {
    pub data_dir: DataDir,
    /// Where `nvr-syncer` and `nvr-ingest` are (next to `nvr`).
    pub bin_dir: PathBuf,
    /// Per-camera uids (started as root), `None` to run ingests under the supervisor's uid.
    pub ingest_uids: Option<IngestUids>,
    /// The data dir's owner, whom the syncer runs as (started as root; see
    /// [`crate::identity`]), `None` to run it under the supervisor's uid. The supervisor then
    /// lists what each ingest holds for it (`AdminRequest::IngestHolds`).
    pub syncer_owner: Option<Identity>,
    pub shutdown_timeout: Duration,
    pub backoff: Backoff,
    pub intensity: Intensity,
    /// Keep this many bytes free on the sample dir's file system (`nvr-syncer
    /// --min-free-bytes`): below it the oldest recordings go, beyond their quotas.
    pub min_free_bytes: u64,
    /// Keep this many inodes free (`nvr-syncer --min-free-inodes`).
    pub min_free_inodes: u64,
    /// Stop requests: the supervisor stops when this becomes 1 and hurries at 2. Signals
    /// increment it (see [`watch_signals`]); so can a caller (the demo).
    pub stop_requests: Arc<AtomicUsize>,
}

#[derive(Debug, Error)]
pub enum SuperviseError {
    #[error("cannot start {what}: {source}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the syncer failed to start: {0}")]
    SyncerStart(String),
    #[error(transparent)]
    Lock(#[from] crate::state::LockError),
    #[error("the syncer keeps failing ({restarts} restarts within {window:?}); last: {last}")]
    SyncerFailed {
        restarts: usize,
        window: Duration,
        last: String,
    },
}

/// Counts SIGINT and SIGTERM into `requests` (from a thread of its own).
pub fn watch_signals(requests: Arc<AtomicUsize>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
                info!(signal = sig, requests = n, "stop requested");
            }
        })?;
    Ok(())
}

/// A child process and what is known about it.
struct Proc {
    child: Child,
    started: Instant,
}

impl Proc {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn signal(&self, sig: Signal) {
        // The child leads its own process group: signal the whole group.
        if let Err(e) = killpg(self.pid(), sig) {
            let _ = kill(self.pid(), sig);
            tracing::debug!(pid = %self.pid(), error = %e, "killpg failed; signalled the pid");
        }
    }
}

/// One camera's ingest and its restart bookkeeping.
struct Camera {
    info: CameraInfo,
    proc: Option<Proc>,
    state: ProcessState,
    restarts: u32,
    /// Restarts since the last stable run (for the backoff).
    consecutive: u32,
    recent: VecDeque<Instant>,
    next_start: Option<Instant>,
    last_error: Option<String>,
    /// Tries since the camera was last marked failed (0 when not failed); the running ingest,
    /// if any, is such a try until it runs stably.
    failed_tries: u32,
    /// When a failed camera is tried next (realtime, for `nvr status`).
    retry_at: Option<protocol::Time>,
    /// Why the syncer dropped the running ingest, which the supervisor then ended.
    dropped: Option<String>,
}

impl Camera {
    /// Marks the camera failed and schedules its next try.
    fn fail(&mut self, name: &str, intensity: &Intensity, now: Instant) {
        self.failed_tries += 1;
        let retry_in = intensity.failed_delay(self.failed_tries);
        error!(camera = %name, tries = self.failed_tries, ?retry_in, "marked failed; will try again");
        self.state = ProcessState::Failed;
        self.next_start = Some(now + retry_in);
        self.retry_at = Some(
            protocol::Time::from_system(std::time::SystemTime::now())
                + protocol::Duration::from_std(retry_in),
        );
    }

    /// The ingest ended after running for `ran` (or could not start: `ran` zero), for `why`:
    /// a restart after the backoff, or the camera marked failed.
    fn ended(
        &mut self,
        name: &str,
        why: String,
        ran: Duration,
        (backoff, intensity): (&Backoff, &Intensity),
        now: Instant,
    ) {
        self.last_error = Some(why);
        if ran >= backoff.stable_after {
            self.consecutive = 0;
            self.failed_tries = 0;
        }
        self.consecutive += 1;
        self.restarts += 1;
        self.recent.push_back(now);
        while self
            .recent
            .front()
            .is_some_and(|t| now - *t > intensity.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() > intensity.max_restarts || self.failed_tries > 0 {
            // Too many restarts, or a try of a failed camera that failed again.
            self.fail(name, intensity, now);
        } else {
            let delay = backoff.delay(self.consecutive);
            info!(camera = %name, ?delay, "restarting after backoff");
            self.state = ProcessState::Restarting;
            self.next_start = Some(now + delay);
        }
    }

    fn new(info: CameraInfo) -> Self {
        Camera {
            info,
            proc: None,
            state: ProcessState::Restarting,
            restarts: 0,
            consecutive: 0,
            recent: VecDeque::new(),
            next_start: Some(Instant::now()),
            last_error: None,
            failed_tries: 0,
            retry_at: None,
            dropped: None,
        }
    }
}

/// What an ingest's exit status means (its `--help` documents them). SIGSYS is the seccomp
/// filter of the ingest's sandbox killing it for a syscall outside its allowlist.
fn describe_ingest_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (None, Some(nix::libc::SIGSYS)) => "killed by the sandbox (SIGSYS)".into(),
        (Some(2), _) => "exit 2: usage or configuration error".into(),
        (Some(3), _) => "exit 3: lost its syncer connection".into(),
        (Some(4), _) => "exit 4: source error".into(),
        (Some(5), _) => "exit 5: writing a sample file failed".into(),
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        (None, None) => "ended".into(),
    }
}

pub struct Supervisor {
    cfg: Config,
    syncer: Option<Proc>,
    syncer_restarts: VecDeque<Instant>,
    syncer_total_restarts: u32,
    syncer_next_start: Option<Instant>,
    /// Why the syncer last stopped: its exit status and the line it said why in.
    syncer_last_error: String,
    /// The running syncer's stderr, passed through; it keeps the syncer's fatal line.
    syncer_stderr: Option<StderrTail>,
    cameras: BTreeMap<String, Camera>,
    /// Ingests of removed cameras, sent SIGTERM at the given time and not yet reaped; killed
    /// after the shutdown timeout (never waited for in the main loop).
    retiring: Vec<(Proc, Instant)>,
    last_reconcile: Instant,
    /// The state last written to the state file, `None` until a write succeeds.
    written: Option<SupervisorState>,
    /// The last write of the state file failed (warned about once until one succeeds).
    publish_failed: bool,
    /// The last [`DroppedIngest::seq`] of the running syncer handled.
    dropped_seen: u64,
    /// When what ingests hold was last listed for the syncer.
    last_relay: Instant,
}

impl Supervisor {
    pub fn new(cfg: Config) -> Self {
        Supervisor {
            cfg,
            syncer: None,
            syncer_restarts: VecDeque::new(),
            syncer_total_restarts: 0,
            syncer_next_start: Some(Instant::now()),
            syncer_last_error: String::new(),
            syncer_stderr: None,
            cameras: BTreeMap::new(),
            retiring: Vec::new(),
            last_reconcile: Instant::now(),
            written: None,
            publish_failed: false,
            dropped_seen: 0,
            last_relay: Instant::now(),
        }
    }

    /// Runs until a stop request has been carried out. `ready` is called once, when the syncer
    /// is ready and every camera's ingest has been started for the first time.
    pub fn run(mut self, mut ready: impl FnMut()) -> Result<(), SuperviseError> {
        let lock = SupervisorLock::acquire(&self.cfg.data_dir, self.cfg.syncer_owner)?;
        let mut announced = false;
        let result = loop {
            if self.cfg.stop_requests.load(Ordering::SeqCst) > 0 {
                break Ok(());
            }
            if let Err(e) = self.step() {
                break Err(e);
            }
            if !announced
                && self.syncer.is_some()
                && self
                    .cameras
                    .values()
                    .all(|c| c.proc.is_some() || c.state == ProcessState::Failed)
            {
                announced = true;
                ready();
            }
            self.publish(&lock);
            std::thread::sleep(POLL);
        };
        self.shutdown();
        SupervisorState::remove(&self.cfg.data_dir, &lock);
        result
    }

    /// One round: reap, restart, reconcile.
    fn step(&mut self) -> Result<(), SuperviseError> {
        self.reap_retiring();
        // The syncer.
        if let Some(p) = self.syncer.as_mut()
            && let Ok(Some(status)) = p.child.try_wait()
        {
            self.syncer_last_error = self.syncer_exit_reason(&status.to_string());
            error!(why = %self.syncer_last_error, "the syncer exited; restarting it, then every ingest");
            self.syncer = None;
            self.note_syncer_restart()?;
            // Ingests lose their connections and exit on their own; make sure.
            for c in self.cameras.values_mut() {
                if let Some(p) = c.proc.take() {
                    p.signal(Signal::SIGKILL);
                    let mut p = p;
                    let _ = p.child.wait();
                }
                c.state = ProcessState::Restarting;
                c.next_start = None;
            }
        }
        if self.syncer.is_none() {
            if self.syncer_next_start.is_some_and(|t| Instant::now() >= t) {
                self.start_syncer()?;
                self.reconcile();
                for c in self.cameras.values_mut() {
                    if c.state != ProcessState::Failed {
                        c.next_start = Some(Instant::now());
                    }
                }
            } else {
                return Ok(());
            }
        }

        // The ingests.
        let now = Instant::now();
        let backoff = self.cfg.backoff;
        let intensity = self.cfg.intensity;
        for (name, c) in self.cameras.iter_mut() {
            if let Some(p) = c.proc.as_mut()
                && let Ok(Some(status)) = p.child.try_wait()
            {
                // A run the syncer ended for breaking a rule is never a stable one: a camera
                // that behaves for a while and then attacks is marked failed like any other.
                let (why, ran) = match c.dropped.take() {
                    Some(reason) => (
                        format!("ended: the syncer dropped it ({reason})"),
                        Duration::ZERO,
                    ),
                    None => (describe_ingest_exit(status), p.started.elapsed()),
                };
                warn!(camera = %name, %why, "ingest exited");
                c.proc = None;
                c.ended(name, why, ran, (&backoff, &intensity), now);
            }
        }
        let due: Vec<String> = self
            .cameras
            .iter()
            .filter(|(_, c)| c.proc.is_none() && c.next_start.is_some_and(|t| now >= t))
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.start_ingest(&name);
        }
        if self.last_reconcile.elapsed() >= RECONCILE_EVERY {
            self.reconcile();
        }
        if self.cfg.syncer_owner.is_some() && self.last_relay.elapsed() >= RELAY_HOLDS_EVERY {
            self.relay_holds();
        }
        Ok(())
    }

    /// Lists the files each ingest holds open for the unprivileged syncer, which may not
    /// (`AdminRequest::IngestHolds`; see `syncer::exposure`).
    fn relay_holds(&mut self) {
        self.last_relay = Instant::now();
        if self.syncer.is_none() {
            return;
        }
        let pids = self
            .cameras
            .values()
            .filter_map(|c| c.proc.as_ref())
            .chain(self.retiring.iter().map(|(p, _)| p))
            .map(|p| p.pid().as_raw());
        let holds: Vec<IngestHolds> = pids
            .filter_map(|pid| match syncer::exposure::held_files(pid) {
                Ok(files) => Some(IngestHolds {
                    pid,
                    files: files.map(|f| f.into_iter().collect()),
                }),
                Err(e) => {
                    warn!(pid, error = %e, "cannot list an ingest's descriptors for the syncer");
                    None
                }
            })
            .collect();
        let sent = AdminClient::connect_with_deadline(&self.cfg.data_dir, ADMIN_DEADLINE)
            .and_then(|mut a| a.ingest_holds(holds));
        if let Err(e) = sent {
            warn!(error = %e, "cannot tell the syncer what ingests hold");
        }
    }

    fn note_syncer_restart(&mut self) -> Result<(), SuperviseError> {
        let now = Instant::now();
        let intensity = self.cfg.intensity;
        self.syncer_restarts.push_back(now);
        self.syncer_total_restarts += 1;
        while self
            .syncer_restarts
            .front()
            .is_some_and(|t| now - *t > intensity.window)
        {
            self.syncer_restarts.pop_front();
        }
        if self.syncer_restarts.len() > intensity.max_restarts {
            return Err(SuperviseError::SyncerFailed {
                restarts: self.syncer_restarts.len(),
                window: intensity.window,
                last: self.syncer_last_error.clone(),
            });
        }
        let delay = self.cfg.backoff.delay(self.syncer_restarts.len() as u32);
        self.syncer_next_start = Some(now + delay);
        Ok(())
    }

    /// `status` and, when the syncer said why it stopped, that line.
    fn syncer_exit_reason(&mut self, status: &str) -> String {
        match self
            .syncer_stderr
            .take()
            .and_then(|t| t.reason(STDERR_CLOSE_WAIT))
        {
            Some(line) => format!("{status}: {line}"),
            None => status.to_owned(),
        }
    }

    fn start_syncer(&mut self) -> Result<(), SuperviseError> {
        self.dropped_seen = 0; // A new syncer numbers its drops from 1.
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| {
            SuperviseError::Spawn {
                what: "nvr-syncer".into(),
                source: e.into(),
            }
        })?;
        let mut cmd = Command::new(self.cfg.bin_dir.join("nvr-syncer"));
        cmd.arg("--data-dir")
            .arg(&self.cfg.data_dir.root)
            .args(["--ready-fd", "3"])
            .arg("--min-free-bytes")
            .arg(self.cfg.min_free_bytes.to_string())
            .arg("--min-free-inodes")
            .arg(self.cfg.min_free_inodes.to_string())
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        if self.cfg.syncer_owner.is_some() {
            cmd.arg("--holds-relayed");
        }
        let role = ChildRole::Syncer(self.cfg.syncer_owner);
        child_setup(&mut cmd, &[(write.as_raw_fd(), 3)], role);
        let mut child = cmd.spawn().map_err(|source| SuperviseError::Spawn {
            what: "nvr-syncer".into(),
            source,
        })?;
        drop(write);
        let stderr = child.stderr.take().expect("piped");
        match StderrTail::forward(stderr) {
            Ok(tail) => self.syncer_stderr = Some(tail),
            Err(e) => {
                // Nobody would read its stderr, and a full pipe would stall it: stop it now.
                let _ = child.kill();
                let _ = child.wait();
                self.syncer_last_error = format!("cannot forward its stderr: {e}");
                self.note_syncer_restart()?;
                warn!(why = %self.syncer_last_error, "the syncer did not start");
                return Ok(());
            }
        }
        info!(pid = child.id(), "syncer started; waiting for recovery");
        let mut proc = Proc {
            child,
            started: Instant::now(),
        };
        // The readiness line, or EOF if it dies first.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let r = std::io::BufReader::new(std::fs::File::from(read)).read_line(&mut line);
            let _ = tx.send(r.map(|_| line));
        });
        let deadline = Instant::now() + SYNCER_READY_TIMEOUT;
        loop {
            match rx.recv_timeout(POLL) {
                Ok(Ok(line)) if line == "ready\n" => break,
                Ok(_) => {
                    let status = match proc.child.wait() {
                        Ok(s) => s.to_string(),
                        Err(e) => format!("cannot wait for it: {e}"),
                    };
                    let why = self
                        .syncer_exit_reason(&format!("exited before becoming ready ({status})"));
                    self.syncer_last_error = why.clone();
                    self.note_syncer_restart()?;
                    warn!(%why, "the syncer did not start");
                    return Ok(());
                }
                Err(_) if Instant::now() > deadline => {
                    proc.signal(Signal::SIGKILL);
                    let _ = proc.child.wait();
                    return Err(SuperviseError::SyncerStart(format!(
                        "not ready within {SYNCER_READY_TIMEOUT:?}"
                    )));
                }
                Err(_) if self.cfg.stop_requests.load(Ordering::SeqCst) > 0 => {
                    self.syncer = Some(proc);
                    return Ok(());
                }
                Err(_) => {}
            }
        }
        info!("syncer ready");
        self.syncer = Some(proc);
        Ok(())
    }

    /// Brings the camera list in line with the syncer's.
    fn reconcile(&mut self) {
        self.last_reconcile = Instant::now();
        if self.syncer.is_none() {
            return;
        }
        let asked = AdminClient::connect_with_deadline(&self.cfg.data_dir, ADMIN_DEADLINE)
            .and_then(|mut a| Ok((a.cameras()?, a.dropped_ingests(self.dropped_seen)?)));
        let (cameras, dropped) = match asked {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot list cameras from the syncer");
                return;
            }
        };
        self.end_dropped(dropped);
        for info in &cameras {
            match self.cameras.get_mut(&info.name) {
                None => {
                    info!(camera = %info.name, "camera added");
                    self.cameras
                        .insert(info.name.clone(), Camera::new(info.clone()));
                }
                Some(c) if c.info.config.source != info.config.source => {
                    info!(camera = %info.name, "source changed; restarting its ingest");
                    c.info = info.clone();
                    if let Some(p) = &c.proc {
                        p.signal(Signal::SIGTERM);
                    }
                    c.consecutive = 0;
                    c.recent.clear();
                    c.failed_tries = 0;
                    if c.state == ProcessState::Failed {
                        c.state = ProcessState::Restarting;
                        c.next_start = Some(Instant::now());
                    }
                }
                Some(c) => c.info = info.clone(),
            }
        }
        let gone: Vec<String> = self
            .cameras
            .keys()
            .filter(|n| !cameras.iter().any(|c| &c.name == *n))
            .cloned()
            .collect();
        for name in gone {
            info!(camera = %name, "camera removed; stopping its ingest");
            if let Some(c) = self.cameras.remove(&name)
                && let Some(p) = c.proc
            {
                p.signal(Signal::SIGTERM);
                self.retiring.push((p, Instant::now()));
            }
        }
    }

    /// Ends each ingest process the syncer dropped for breaking a rule (a dropped connection
    /// leaves the process its descriptors); the camera restarts as after any exit.
    fn end_dropped(&mut self, dropped: Vec<DroppedIngest>) {
        for d in dropped {
            self.dropped_seen = self.dropped_seen.max(d.seq);
            let Some(c) = self.cameras.get_mut(&d.stream_name) else {
                continue;
            };
            let Some(p) = c.proc.as_ref().filter(|p| d.pid == Some(p.pid().as_raw())) else {
                continue; // Already gone, or unknown: its own exit restarts the camera.
            };
            warn!(camera = %d.stream_name, pid = %p.pid(), reason = %d.reason,
                  "the syncer dropped this ingest: ending it");
            p.signal(Signal::SIGKILL);
            c.dropped = Some(d.reason);
        }
    }

    fn start_ingest(&mut self, name: &str) {
        let Some(c) = self.cameras.get_mut(name) else {
            return;
        };
        let prepared = self
            .cfg
            .ingest_uids
            .map(|r| r.for_stream(c.info.id))
            .transpose()
            .map_err(|e| e.to_string())
            .and_then(|identity| {
                let file = open_source_file(&c.info.config.source, self.cfg.syncer_owner)?;
                Ok((identity, file))
            });
        let (identity, source_file) = match prepared {
            Ok(p) => p,
            Err(e) => {
                warn!(camera = %name, error = %e, "cannot start nvr-ingest");
                let limits = (&self.cfg.backoff, &self.cfg.intensity);
                c.ended(name, e, Duration::ZERO, limits, Instant::now());
                return;
            }
        };
        let fd: OwnedFd =
            match AdminClient::connect_with_deadline(&self.cfg.data_dir, ADMIN_DEADLINE)
                .and_then(|mut a| a.connect_ingest(name))
            {
                Ok(fd) => fd,
                Err(e) => {
                    warn!(camera = %name, error = %e, "no connection from the syncer; retrying");
                    c.last_error = Some(e.to_string());
                    c.next_start = Some(Instant::now() + self.cfg.backoff.initial);
                    return;
                }
            };
        let mut cmd = Command::new(self.cfg.bin_dir.join("nvr-ingest"));
        // A camera's password goes in the environment, never on the command line, which
        // every user of the machine can read (protocol::source_url).
        let (source, credentials) = split_credentials(&c.info.config.source);
        cmd.args(["--camera", name, "--source", &source])
            .stdin(Stdio::null());
        cmd.env_remove(USERNAME_ENV).env_remove(PASSWORD_ENV);
        if let Some(creds) = credentials {
            cmd.env(USERNAME_ENV, creds.username)
                .env(PASSWORD_ENV, creds.password);
        }
        let mut fds = vec![(fd.as_raw_fd(), protocol::wire::INGEST_CONNECTION_FD)];
        if let Some(f) = &source_file {
            let target = protocol::wire::INGEST_SOURCE_FD;
            cmd.arg("--source-fd").arg(target.to_string());
            fds.push((f.as_raw_fd(), target));
        }
        child_setup(&mut cmd, &fds, ChildRole::Ingest(identity));
        match cmd.spawn() {
            Ok(child) => {
                info!(camera = %name, pid = child.id(), "ingest started");
                c.proc = Some(Proc {
                    child,
                    started: Instant::now(),
                });
                c.state = ProcessState::Running;
                c.next_start = None;
                c.retry_at = None;
            }
            Err(e) => {
                error!(camera = %name, error = %e, "cannot start nvr-ingest");
                c.last_error = Some(format!("cannot start nvr-ingest: {e}"));
                c.fail(name, &self.cfg.intensity, Instant::now());
            }
        }
    }

    /// Writes the state file when it changed (and until a write succeeds).
    fn publish(&mut self, lock: &SupervisorLock) {
        let state = SupervisorState {
            pid: std::process::id(),
            syncer: if self.syncer.is_some() {
                ProcessState::Running
            } else {
                ProcessState::Restarting
            },
            syncer_restarts: self.syncer_total_restarts,
            cameras: self
                .cameras
                .iter()
                .map(|(name, c)| CameraState {
                    name: name.clone(),
                    state: c.state,
                    restarts: c.restarts,
                    last_error: c.last_error.clone(),
                    retry_at: c.retry_at.filter(|_| c.state == ProcessState::Failed),
                })
                .collect(),
        };
        if self.written.as_ref() != Some(&state) {
            match state.write(&self.cfg.data_dir, lock) {
                Ok(()) => {
                    self.written = Some(state);
                    self.publish_failed = false;
                }
                // Tried again at the next round; warned about once until a write succeeds.
                Err(e) => {
                    if !self.publish_failed {
                        warn!(error = %e, "cannot write the supervisor state file; retrying");
                    }
                    self.publish_failed = true;
                }
            }
        }
    }

    /// Reaps ingests of removed cameras, killing those that outlived the shutdown timeout.
    fn reap_retiring(&mut self) {
        let timeout = self.cfg.shutdown_timeout;
        self.retiring.retain_mut(|(p, since)| {
            if !matches!(p.child.try_wait(), Ok(None)) {
                return false;
            }
            if since.elapsed() >= timeout {
                warn!(pid = %p.pid(), "a removed camera's ingest did not stop: SIGKILL");
                p.signal(Signal::SIGKILL);
                *since = Instant::now();
            }
            true
        });
    }

    /// The stop sequence of the module docs.
    fn shutdown(&mut self) {
        info!("stopping: ingests first");
        for (mut p, _) in self.retiring.drain(..) {
            p.signal(Signal::SIGKILL);
            let _ = p.child.wait();
        }
        let timeout = self.cfg.shutdown_timeout;
        let stops = || self.cfg.stop_requests.load(Ordering::SeqCst);
        for c in self.cameras.values() {
            if let Some(p) = &c.proc {
                p.signal(Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + timeout;
        let mut hurried = false;
        loop {
            let mut alive = 0;
            for c in self.cameras.values_mut() {
                if let Some(p) = c.proc.as_mut() {
                    match p.child.try_wait() {
                        Ok(None) => alive += 1,
                        _ => c.proc = None,
                    }
                }
            }
            if alive == 0 {
                break;
            }
            if !hurried && (stops() >= 2 || Instant::now() >= deadline) {
                hurried = true;
                warn!(alive, "not waiting any longer for ingests: SIGKILL");
                for c in self.cameras.values() {
                    if let Some(p) = &c.proc {
                        p.signal(Signal::SIGKILL);
                    }
                }
            }
            std::thread::sleep(POLL);
        }
        let Some(mut syncer) = self.syncer.take() else {
            return;
        };
        info!("stopping the syncer");
        syncer.signal(Signal::SIGTERM);
        if stops() >= 2 {
            syncer.signal(Signal::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        let mut hurried_syncer = stops() >= 2;
        loop {
            match syncer.child.try_wait() {
                Ok(Some(status)) => {
                    info!(%status, "syncer exited");
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    error!(error = %e, "waiting for the syncer");
                    break;
                }
            }
            if !hurried_syncer && stops() >= 2 {
                hurried_syncer = true;
                syncer.signal(Signal::SIGTERM);
            }
            if Instant::now() >= deadline || stops() >= 3 {
                warn!("the syncer did not stop in time: SIGKILL");
                syncer.signal(Signal::SIGKILL);
                let _ = syncer.child.wait();
                break;
            }
            std::thread::sleep(POLL);
        }
    }
}

/// Opens a `file:` source's file for its ingest, which may not be allowed to (a uid of its
/// own) and opens nothing once sandboxed; `None` for other sources. Opened non-blocking, so
/// that a FIFO without a writer cannot stall the supervisor, then made blocking again.
///
/// On a data dir given to a user, that user configures the cameras (its syncer's admin
/// socket admits it), so the file is opened with that user's file-system identity: root's
/// access must not be lent to a path the user chose (`/root/...`, a device). The supervisor
/// has no supplementary groups then (`nvr run` drops them), so only the user's uid and gid
/// count.
fn open_source_file(
    source: &str,
    owner: Option<Identity>,
) -> Result<Option<std::fs::File>, String> {
    use protocol::source_spec::{SourceSpec, SourceUrl};
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(SourceUrl {
        spec: SourceSpec::File { path, .. },
        ..
    }) = SourceUrl::parse(source)
    else {
        return Ok(None); // Not a file, or a URL the ingest itself refuses, naming the problem.
    };
    let failed = |e: &dyn std::fmt::Display| format!("cannot open source {}: {e}", path.display());
    let as_owner = owner.map(FsIdentity::assume);
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(&path);
    drop(as_owner);
    let file = opened.map_err(|e| failed(&e))?;
    nix::fcntl::fcntl(
        &file,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .map_err(|e| failed(&e))?;
    Ok(Some(file))
}

/// Which child [`child_setup`] prepares.
#[derive(Clone, Copy, Debug)]
enum ChildRole {
    /// The syncer, as the data dir's owner when given.
    Syncer(Option<Identity>),
    /// An ingest, under its own uid and gid when given. Always with resource limits:
    /// `RLIMIT_FSIZE` at the largest recording (SIGXFSZ ignored, so an oversized write fails
    /// instead of killing) and `RLIMIT_NOFILE`; the ingest's sandbox adds its own.
    Ingest(Option<Identity>),
}

/// Prepares a child: each `(descriptor, target)` of `fds` moved to its target number, its
/// own process group, death with the supervisor, and for an ingest its limits and identity.
fn child_setup(cmd: &mut Command, fds: &[(i32, i32)], role: ChildRole) {
    let parent = nix::unistd::getpid();
    assert!(
        fds.len() <= MAX_MOVED_FDS && fds.iter().all(|&(_, t)| (0..ABOVE_TARGETS).contains(&t)),
        "descriptors to move: {fds:?}"
    );
    let fds = fds.to_vec();
    // SAFETY: only async-signal-safe calls (fcntl, dup2, setpgid, prctl, getppid, setrlimit,
    // signal, setgroups, setgid, setuid, _exit) run between fork and exec, and nothing
    // allocates: `fds` was copied before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let err = |e: nix::Error| std::io::Error::from(e);
            move_descriptors(&fds)?;
            nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0)).map_err(err)?;
            let identity = match role {
                ChildRole::Syncer(identity) => identity,
                ChildRole::Ingest(identity) => {
                    use nix::sys::resource::{Resource, setrlimit};
                    let fsize = syncer::limits::MAX_RECORDING_BYTES;
                    setrlimit(Resource::RLIMIT_FSIZE, fsize, fsize).map_err(err)?;
                    setrlimit(Resource::RLIMIT_NOFILE, INGEST_NOFILE, INGEST_NOFILE)
                        .map_err(err)?;
                    let ignore = nix::sys::signal::SigHandler::SigIgn;
                    nix::sys::signal::signal(Signal::SIGXFSZ, ignore).map_err(err)?;
                    identity
                }
            };
            if let Some(id) = identity {
                id.assume().map_err(err)?;
            }
            // Armed after any change of uid, which clears it (commit_creds).
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(err)?;
            // The supervisor may have died before the death signal was armed.
            if nix::unistd::getppid() != parent {
                nix::libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Most descriptors [`child_setup`] moves.
const MAX_MOVED_FDS: usize = 4;

/// Target descriptor numbers are below this.
const ABOVE_TARGETS: i32 = 10;

/// In a forked child: moves each `(descriptor, target)` to its target (`dup2` leaves it open
/// across exec). Every source is first copied above the targets, so a source that happens to
/// sit on another's target number is not overwritten before it moves. Allocates nothing.
fn move_descriptors(fds: &[(i32, i32)]) -> std::io::Result<()> {
    use nix::libc::{F_DUPFD_CLOEXEC, dup2, fcntl};
    let mut copies = [0i32; MAX_MOVED_FDS];
    for (copy, &(fd, _)) in copies.iter_mut().zip(fds) {
        // SAFETY: fcntl on a descriptor the parent holds open for the child.
        *copy = unsafe { fcntl(fd, F_DUPFD_CLOEXEC, ABOVE_TARGETS) };
        if *copy < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    for (&copy, &(_, target)) in copies.iter().zip(fds) {
        // SAFETY: dup2 onto a small target number; the copy is closed at exec.
        if unsafe { dup2(copy, target) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ingest_killed_by_seccomp_is_reported_as_killed_by_the_sandbox() {
        use std::os::unix::process::ExitStatusExt;
        let by_signal = |s| describe_ingest_exit(ExitStatus::from_raw(s));
        assert_eq!(
            by_signal(nix::libc::SIGSYS),
            "killed by the sandbox (SIGSYS)"
        );
        assert_eq!(by_signal(nix::libc::SIGKILL), "killed by signal 9");
        assert_eq!(
            describe_ingest_exit(ExitStatus::from_raw(4 << 8)),
            "exit 4: source error"
        );
    }

    #[test]
    fn backoff_doubles_to_its_cap() {
        let b = Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(4),
            stable_after: Duration::from_secs(60),
        };
        let d: Vec<u64> = (1..=6).map(|n| b.delay(n).as_millis() as u64).collect();
        assert_eq!(d, [500, 1000, 2000, 4000, 4000, 4000]);
    }
}
