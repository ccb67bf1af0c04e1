//! The `nvr-syncer` daemon: one [`Syncer`] served to ingest connections and the admin socket.
//!
//! Threads, and what each may block on:
//!
//! - **core** (the caller of [`serve`]): owns the [`Syncer`], and with it SQLite. Every state
//!   change happens here, one [`Event`] at a time; it never waits on a peer or on a slow disk
//!   operation of a recording (only on a quick create, an SQLite COMMIT and the unlinks of gc).
//! - **per-stream workers**: run a close's or a salvage's [`PendingSave::run`] (fstat, fsync,
//!   dir fsync, hash, truncate), so one stream's slow or failing disk never delays another's.
//! - **per ingest connection**: a reader that decodes requests (nothing else: a bad frame or
//!   a descriptor where none is expected ends the connection), and a writer that drains a
//!   bounded queue of answers; an ingest that does not read its answers is dropped rather than
//!   allowed to stall the core.
//! - **admin**: an accept loop on `<data-dir>/syncer.sock` and one thread per admin client,
//!   refused unless its uid (`SO_PEERCRED`) is the syncer's own or root.
//! - **signals**: SIGTERM / SIGINT start a graceful stop.
//!
//! A graceful stop refuses new opens, waits (at most [`ServeOptions::shutdown_grace`]) for
//! the ingests to close their recordings, salvages what is still growing, flushes, collects
//! garbage and returns. A fatal error (a failed directory fsync, a state bug) returns an
//! error at once: the supervisor restarts the syncer, whose recovery makes everything
//! consistent again.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::time::Instant;

use protocol::CompositeId;
use protocol::clock::{Clock, RealClock};
use protocol::limits::WRITE_WINDOW_BYTES;
use protocol::messages::{
    AdminReply, AdminRequest, CameraInfo, Hello, HelloReply, IngestHolds, IngestReply,
    IngestRequest, MAX_RECORDINGS_PER_PAGE, PROTOCOL_VERSION, ROLE_ADMIN, ROLE_INGEST,
    RecordingSummary, StatusReport, StreamStatus,
};
use protocol::wire::{self, Conn, WireError};
use signal_hook::consts::{SIGINT, SIGTERM};
use tracing::{debug, error, info, warn};

use crate::db::{Database, RecordingToInsert, StreamConfig, StreamRow};
use crate::dropped::DroppedLog;
use crate::durability::{PendingSave, SaveFailure};
use crate::error::Error;
use crate::exposure::{self, Exposure};
use crate::fs::{Dir, RealDir};
use crate::ingest_session::{Action, IngestSession};
use crate::layout::DataDir;
use crate::store::{Committed, Syncer, SyncerOptions};

/// The admin socket's file name in the data dir.
pub const SOCKET_FILE_NAME: &str = "syncer.sock";

/// Answers queued for one ingest connection before it counts as not reading them.
pub const OUTGOING_QUEUE_LEN: usize = 256;

/// Longest the core waits for an event before checking planned flushes and the stop.
const TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Admin clients served at once; one more is refused with an error naming the limit, so that
/// idle or stuck clients cannot take every thread (and with them, the socket).
pub const MAX_ADMIN_CONNECTIONS: usize = 32;

/// An admin client that sends nothing (or reads nothing) for this long is disconnected: every
/// admin call is one request and one prompt answer.
pub const ADMIN_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub syncer: SyncerOptions,
    /// How long a graceful stop waits for ingests to close their recordings.
    pub shutdown_grace: std::time::Duration,
    /// The files ingests hold are listed by the supervisor (`AdminRequest::IngestHolds`),
    /// since this syncer may not list them itself (it runs unprivileged).
    pub holds_relayed: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            syncer: SyncerOptions::default(),
            shutdown_grace: std::time::Duration::from_secs(10),
            holds_relayed: false,
        }
    }
}

/// The admin socket's path for a data dir.
pub fn socket_path(data_dir: &DataDir) -> PathBuf {
    data_dir.root.join(SOCKET_FILE_NAME)
}

type ConnId = u64;

enum Event {
    Hello {
        conn: ConnId,
        hello: Hello,
        /// The process that sent it, as the kernel recorded it.
        pid: Option<i32>,
    },
    Ingest {
        conn: ConnId,
        req: IngestRequest,
    },
    Gone {
        conn: ConnId,
        why: String,
    },
    Saved {
        conn: ConnId,
        id: CompositeId,
        /// A salvage (no one to answer) rather than a close.
        salvage: bool,
        result: Result<RecordingToInsert, SaveFailure>,
    },
    Admin {
        req: AdminRequest,
        reply: AdminAnswer,
    },
    /// A graceful stop; a second one cuts the grace period short.
    Stop {
        why: String,
    },
}

enum Outgoing {
    Hello(HelloReply),
    Reply(IngestReply, Option<OwnedFd>),
}

struct Connection {
    session: IngestSession,
    out: SyncSender<Outgoing>,
    /// Answered the hello: only then may `Committed` be pushed.
    greeted: bool,
    /// The files its process was handed (from the hello on; see `crate::exposure`).
    exposure: Option<Exposure>,
    /// Its process, as the kernel recorded it with the hello, if known.
    pid: Option<i32>,
    /// `Opened` frames handed to its writer thread.
    opened: u64,
    /// `Opened` frames its writer thread has sent, and the syncer's end of the socket: what
    /// the process has read ([`exposure::Delivery`]).
    opened_sent: Arc<AtomicU64>,
    socket: OwnedFd,
}

/// Where an admin request's answer goes.
type AdminAnswer = Sender<(AdminReply, Option<OwnedFd>)>;

/// An [`AdminRequest::RemoveCamera`] waiting for the camera's recordings in flight (the
/// salvage of the one its dropped connection was writing) to be saved.
struct PendingRemoval {
    stream: i32,
    name: String,
    delete_recordings: bool,
    reply: AdminAnswer,
}

struct Job<F> {
    conn: ConnId,
    salvage: bool,
    pending: PendingSave<F>,
}

/// Runs the daemon on `data_dir` until a graceful stop completes (`Ok`) or a fatal error.
/// `ready` is called once recovery is done and the admin socket listens.
pub fn serve(data_dir: &DataDir, opts: ServeOptions, ready: impl FnOnce()) -> Result<(), Error> {
    opts.syncer.check_against(data_dir.sample_fs_size()?)?;
    serve_with(data_dir, opts, Seams::default(), ready)
}

/// The seams of [`serve_with`]: how the daemon reaches its sample dir and its database. The
/// binary uses the defaults (the locked dir itself, the database as opened); the daemon-level
/// fault tests wrap the dir in a fault-injecting [`Dir`] and set a commit hook or a page limit
/// on the database, so that the real server loop, sockets and ingest clients meet the faults.
pub struct Seams<W, P> {
    /// Wraps the locked sample dir (the lock stays held while the result lives); every
    /// sample-dir operation of the daemon then goes through the result.
    pub wrap_dir: W,
    /// Called on the database once opened, before recovery.
    pub prepare_db: P,
}

/// The defaults: the real dir, the database untouched.
pub type DefaultSeams = Seams<fn(RealDir) -> RealDir, fn(&mut Database) -> Result<(), Error>>;

impl Default for DefaultSeams {
    fn default() -> Self {
        Seams {
            wrap_dir: |d| d,
            prepare_db: |_| Ok(()),
        }
    }
}

/// [`serve`] through `seams`. The wrapped dir's files must turn into descriptors (the
/// writer's one is handed to the ingest over the socket). Like [`serve`], it assumes the
/// process ends when it returns: the admin accept loop and the signal watcher are not joined
/// (a test serving in-process leaves them idle; its stream workers end within moments).
pub fn serve_with<D, W, P>(
    data_dir: &DataDir,
    opts: ServeOptions,
    seams: Seams<W, P>,
    ready: impl FnOnce(),
) -> Result<(), Error>
where
    D: Dir,
    D::File: Into<OwnedFd>,
    W: FnOnce(RealDir) -> D,
    P: FnOnce(&mut Database) -> Result<(), Error>,
{
    let dir = Arc::new((seams.wrap_dir)(data_dir.lock_sample_dir()?));
    data_dir.make_private()?;
    // Startup never fails only because the disk is full: make room for the database first.
    let low = opts.syncer.reserve_bytes.max(1 << 20);
    match crate::reserve::release_if_low(&*dir, low) {
        Ok(true) => warn!("disk nearly full at startup: released the reserve file"),
        Ok(false) => {}
        Err(e) => warn!(error = %e, "cannot check free space at startup"),
    }
    let mut db = Database::open(&data_dir.db_path())?;
    (seams.prepare_db)(&mut db)?;
    let clock: Arc<dyn Clock> = Arc::new(RealClock);
    let (syncer, report) = Syncer::start(dir.clone(), db, clock.clone(), opts.syncer.clone())?;
    info!(
        abandoned = report.abandoned.len(),
        unknown_stream_files = report.unknown_stream_files.len(),
        orphans = report.orphans.len(),
        "recovery done"
    );

    // The dir lock is held, so no other syncer can own this socket: a leftover is stale.
    let path = socket_path(data_dir);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(Error::io("remove stale socket", path.display(), e));
        }
        _ => {}
    }
    let listener = UnixListener::bind(&path).map_err(|e| Error::io("bind", path.display(), e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io("chmod", path.display(), e))?;
    }

    let (tx, rx) = mpsc::channel();
    let spawn_failed = |e| Error::io("spawn", "a syncer thread", e);
    spawn_named("admin-accept", {
        let tx = tx.clone();
        move || accept_admin(listener, tx)
    })
    .map_err(spawn_failed)?;
    // Registered here, before readiness, so that a stop asked for the moment the syncer is
    // ready is a graceful stop, not the default action of the signal.
    let signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .map_err(|e| Error::io("watch", "SIGTERM and SIGINT", e))?;
    spawn_named("signals", {
        let tx = tx.clone();
        move || watch_signals(signals, tx)
    })
    .map_err(spawn_failed)?;
    info!(socket = %path.display(), "ready");
    ready();

    let mut core = Core {
        clock,
        syncer,
        dir,
        tx,
        conns: HashMap::new(),
        by_stream: HashMap::new(),
        workers: HashMap::new(),
        next_conn: 1,
        jobs_in_flight: 0,
        stop: None,
        grace: opts.shutdown_grace,
        holds_relayed: opts.holds_relayed,
        removals: Vec::new(),
        orphans: Vec::new(),
        dropped: DroppedLog::default(),
        exposures_checked: Instant::now(),
        exposures_unwatchable: false,
    };
    core.run(rx)
}

/// Starts a named thread. A failure (a `pids` limit) is returned, never a panic: the caller
/// refuses what the thread was for.
fn spawn_named(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map(drop)
}

/// Where a graceful stop stands.
#[derive(Clone, Copy, Debug)]
enum Stopping {
    /// Waiting until this instant for ingests to close their recordings.
    Grace(Instant),
    /// Connections dropped; waiting for their salvages.
    Draining,
}

struct Core<D: Dir> {
    /// The clock the syncer plans flushes with.
    clock: Arc<dyn Clock>,
    syncer: Syncer<D>,
    dir: Arc<D>,
    tx: Sender<Event>,
    conns: HashMap<ConnId, Connection>,
    by_stream: HashMap<i32, ConnId>,
    workers: HashMap<i32, Sender<Job<D::File>>>,
    next_conn: ConnId,
    jobs_in_flight: usize,
    stop: Option<Stopping>,
    grace: std::time::Duration,
    /// See [`ServeOptions::holds_relayed`].
    holds_relayed: bool,
    /// Camera removals waiting for their stream's saves; its connections are refused meanwhile.
    removals: Vec<PendingRemoval>,
    /// Exposures of ingest processes whose connections are gone but which still run.
    orphans: Vec<Exposure>,
    /// When exposed files were last looked at.
    exposures_checked: Instant,
    /// An ingest's descriptors could not be listed (no privilege), said once.
    exposures_unwatchable: bool,
    /// Ingests dropped for breaking a rule, for the supervisor to end.
    dropped: DroppedLog,
}

impl<D: Dir> Core<D>
where
    D::File: Into<OwnedFd>,
{
    fn run(&mut self, rx: Receiver<Event>) -> Result<(), Error> {
        loop {
            let timeout = match self.syncer.next_deadline() {
                Some(d) => {
                    let left = d - self.syncer_now();
                    left.to_std().unwrap_or_default().min(TICK)
                }
                None => TICK,
            };
            match rx.recv_timeout(timeout) {
                Ok(ev) => self.handle(ev)?,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    unreachable!("the core holds a sender")
                }
            }
            self.syncer.check_sample_dir()?;
            // One look at the file system per round (`statvfs`), not one per check.
            let flush_due = self.syncer.poll_due();
            let short = self.syncer.short_of_space();
            if flush_due || short || self.exposures_checked.elapsed() >= TICK {
                // Before a flush and before the free-space guard deletes anything: space a
                // breach took is back first, and never paid for with another's recordings.
                self.enforce_exposures();
            }
            if flush_due {
                let c = self.syncer.poll()?;
                self.push_committed(c);
            } else if short && let Err(e) = self.syncer.ensure_free_space() {
                if e.is_fatal() {
                    return Err(e);
                }
                warn!(error = %e, "freeing space failed; will retry");
            }
            if self.advance_stop() {
                self.try_removals()?;
                for p in self.removals.drain(..) {
                    let _ = p.reply.send(admin_error(format!(
                        "camera {:?} was not removed: the syncer stopped first",
                        p.name
                    )));
                }
                let c = self.syncer.shutdown()?;
                self.push_committed(c);
                info!("stopped cleanly");
                return Ok(());
            }
        }
    }

    fn syncer_now(&self) -> protocol::Time {
        self.clock.monotonic()
    }

    /// Moves a graceful stop along; true when it is time to flush and return.
    fn advance_stop(&mut self) -> bool {
        match self.stop {
            None => false,
            Some(Stopping::Grace(until)) => {
                let idle =
                    self.jobs_in_flight == 0 && self.conns.values().all(|c| !c.session.busy());
                if idle || Instant::now() >= until {
                    if !idle {
                        warn!("grace period over; salvaging what is still being written");
                    }
                    let ids: Vec<ConnId> = self.conns.keys().copied().collect();
                    for id in ids {
                        self.drop_conn(id, "syncer shutdown");
                    }
                    self.stop = Some(Stopping::Draining);
                }
                false
            }
            Some(Stopping::Draining) => self.jobs_in_flight == 0,
        }
    }

    fn begin_stop(&mut self, why: &str) {
        if self.stop.is_none() {
            info!(
                why,
                "stopping: no new recordings; waiting for ingests to close theirs"
            );
            self.syncer.stop_flag().store(true, Ordering::SeqCst);
            self.stop = Some(Stopping::Grace(Instant::now() + self.grace));
        }
    }

    fn handle(&mut self, ev: Event) -> Result<(), Error> {
        match ev {
            Event::Hello { conn, hello, pid } => self.hello(conn, hello, pid),
            Event::Ingest { conn, req } => self.ingest_request(conn, req)?,
            Event::Gone { conn, why } => {
                if self.conns.contains_key(&conn) {
                    info!(conn, %why, "ingest connection ended");
                    self.drop_conn(conn, &format!("ingest connection ended: {why}"));
                }
            }
            Event::Saved {
                conn,
                id,
                salvage,
                result,
            } => {
                self.jobs_in_flight -= 1;
                self.saved(conn, id, salvage, result)?;
                self.try_removals()?;
            }
            Event::Admin {
                req:
                    AdminRequest::RemoveCamera {
                        name,
                        delete_recordings,
                    },
                reply,
            } => self.remove_camera(name, delete_recordings, reply)?,
            Event::Admin { req, reply } => {
                // The admin thread may be gone (its client hung up); nothing to do then.
                match self.admin(req) {
                    Ok(answer) => {
                        let _ = reply.send(answer);
                    }
                    Err(e) => {
                        let _ = reply.send(admin_error(e.to_string()));
                        return Err(e);
                    }
                }
            }
            Event::Stop { why } => match self.stop {
                None => self.begin_stop(&why),
                Some(Stopping::Grace(_)) => {
                    info!(why, "asked again: not waiting for ingests any longer");
                    self.stop = Some(Stopping::Grace(Instant::now()));
                }
                Some(Stopping::Draining) => {}
            },
        }
        Ok(())
    }

    fn hello(&mut self, conn: ConnId, hello: Hello, pid: Option<i32>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        // An ingest in this very process (a test's) cannot be told from the duplicates the
        // watch keeps: not watched.
        let other = pid.filter(|&p| p != std::process::id() as i32);
        let delivery = |socket| exposure::Delivery {
            socket,
            opened_sent: c.opened_sent.clone(),
        };
        c.exposure = match (other.and_then(Exposure::of_process), c.socket.try_clone()) {
            (Some(e), Ok(socket)) => Some(e.with_delivery(delivery(socket))),
            // Without a descriptor to ask, nothing can be known delivered: not watched, as
            // when out of descriptors anyway.
            (Some(_), Err(err)) => {
                warn!(conn, error = %err, "cannot watch the ingest's files");
                None
            }
            (None, _) => None,
        };
        c.pid = pid;
        let stream_id = c.session.stream_id();
        let Some(row) = self
            .syncer
            .stream_rows()
            .into_iter()
            .find(|r| r.id == stream_id)
        else {
            return;
        };
        let reply = HelloReply {
            protocol_version: PROTOCOL_VERSION,
            stream_id,
            stream_name: row.name,
            rotate_sec: row.config.rotate_sec,
        };
        let problem = match wire::check_version(hello.protocol_version) {
            Err(e) => Some(e.to_string()),
            Ok(()) if hello.role != ROLE_INGEST => Some(format!(
                "role {:?} on an ingest connection, expected {ROLE_INGEST:?}",
                hello.role
            )),
            Ok(()) => None,
        };
        // Answered whatever the version, so both sides can name both versions.
        let _ = c.out.try_send(Outgoing::Hello(reply));
        c.greeted = problem.is_none();
        if let Some(p) = problem {
            warn!(conn, problem = %p, "ingest hello refused");
            self.drop_conn(conn, "hello refused");
        }
    }

    fn ingest_request(&mut self, conn: ConnId, req: IngestRequest) -> Result<(), Error> {
        let Some(c) = self.conns.get_mut(&conn) else {
            return Ok(()); // A connection already dropped: its late requests are ignored.
        };
        if !c.greeted {
            self.refuse(conn, "request before the hello".to_owned());
            return Ok(());
        }
        match c.session.handle(&mut self.syncer, req) {
            Ok(Action::Reply(reply)) => {
                if let (IngestReply::Progressed { id, written_bytes }, Some(e)) =
                    (&reply, c.exposure.as_mut())
                {
                    e.allow(*id, written_bytes.saturating_add(WRITE_WINDOW_BYTES));
                }
                self.send(conn, reply, None)
            }
            Ok(Action::Opened(id, file)) => {
                let fd: OwnedFd = file.into();
                c.opened += 1;
                if let Some(e) = c.exposure.as_mut()
                    && let Err(err) = e.expose(&fd, id, WRITE_WINDOW_BYTES, c.opened)
                {
                    // Never a descriptor the syncer could not take back in size (EMFILE).
                    error!(recording = %id, error = %err, "cannot watch its file");
                    let why = format!("recording {id}: its file cannot be watched ({err})");
                    self.drop_conn(conn, &why);
                    return Ok(());
                }
                self.send(conn, IngestReply::Opened { id }, Some(fd))
            }
            Ok(Action::Save(pending)) => self.dispatch(conn, false, pending),
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => self.refuse(conn, e.to_string()),
        }
        Ok(())
    }

    fn saved(
        &mut self,
        conn: ConnId,
        id: CompositeId,
        salvage: bool,
        result: Result<RecordingToInsert, SaveFailure>,
    ) -> Result<(), Error> {
        let final_bytes = result.as_ref().ok().map(|r| r.row.sample_file_bytes as u64);
        self.settle_exposed(conn, id, final_bytes);
        let outcome = match (salvage, self.conns.get_mut(&conn)) {
            (false, Some(c)) => c.session.saved(&mut self.syncer, id, result),
            _ => self
                .syncer
                .finish_save(id, result)
                .map(|()| IngestReply::Accepted { id }),
        };
        match outcome {
            Ok(reply) if !salvage => self.send(conn, reply, None),
            Ok(_) => {}
            Err(e) if e.is_fatal() => return Err(e),
            // Not the ingest's fault: it may go on with its next recording.
            Err(e @ Error::SyncFailed { .. }) if !salvage => self.send(
                conn,
                IngestReply::CloseFailed {
                    id,
                    message: e.to_string(),
                },
                None,
            ),
            Err(e) if !salvage => self.refuse(conn, e.to_string()),
            // A failed save was logged once, with its context, by `finish_save`.
            Err(e @ (Error::SyncFailed { .. } | Error::Io { .. } | Error::Rejected { .. })) => {
                debug!(recording = %id, error = %e, "salvage failed; recording discarded")
            }
            Err(e) => warn!(recording = %id, error = %e, "salvage failed; recording discarded"),
        }
        Ok(())
    }

    /// Answers `message` as a fatal error and drops the connection; the supervisor learns of
    /// it ([`DroppedLog`]) and ends the process.
    fn refuse(&mut self, conn: ConnId, message: String) {
        self.record_drop(conn, &message);
        self.send(
            conn,
            IngestReply::Error {
                message: message.clone(),
            },
            None,
        );
        self.drop_conn(conn, &message);
    }

    /// Logs that connection `conn` is dropped for breaking a rule, and keeps it for the
    /// supervisor ([`DroppedLog`]).
    fn record_drop(&mut self, conn: ConnId, message: &str) {
        if let Some(c) = self.conns.get(&conn) {
            let name = self.stream_name(c.session.stream_id());
            warn!(conn, stream = %name, pid = ?c.pid, %message, "dropping ingest connection");
            self.dropped.record(name, c.pid, message.to_owned());
        }
    }

    fn send(&mut self, conn: ConnId, reply: IngestReply, fd: Option<OwnedFd>) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        match c.out.try_send(Outgoing::Reply(reply, fd)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                // Unread answers may hold descriptors: the process must end (as on a refusal).
                let why = "ingest is not reading its answers";
                self.record_drop(conn, why);
                self.drop_conn(conn, why);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.drop_conn(conn, "ingest connection's writer ended");
            }
        }
    }

    fn push_committed(&mut self, committed: Vec<Committed>) {
        for c in committed {
            let Some(&conn) = self.by_stream.get(&c.stream_id) else {
                continue;
            };
            if self.conns.get(&conn).is_some_and(|x| x.greeted) {
                self.send(conn, IngestReply::Committed { ids: c.ids }, None);
            }
        }
    }

    /// Forgets a connection: its writer drains what is queued then shuts the socket (which
    /// ends the reader), and what it was writing is salvaged.
    fn drop_conn(&mut self, conn: ConnId, why: &str) {
        let Some(mut c) = self.conns.remove(&conn) else {
            return;
        };
        let stream = c.session.stream_id();
        if self.by_stream.get(&stream) == Some(&conn) {
            self.by_stream.remove(&stream);
        }
        let growing = c.session.growing();
        let salvage = c.session.disconnected(&mut self.syncer, why);
        if let Some(mut e) = c.exposure.take() {
            if let (Some(id), Ok(None)) = (growing, &salvage) {
                e.settle(id, None); // discarded: nothing to salvage
            }
            self.orphans.push(e); // Looked at one last time once the process is gone.
        }
        match salvage {
            Ok(Some(pending)) => self.dispatch(conn, true, pending),
            Ok(None) => {}
            Err(e) => error!(conn, error = %e, "could not salvage"),
        }
    }

    /// The syncer is done with `id`, which its connection `conn` (live or gone) was writing.
    fn settle_exposed(&mut self, conn: ConnId, id: CompositeId, final_bytes: Option<u64>) {
        let live = self.conns.get_mut(&conn).and_then(|c| c.exposure.as_mut());
        if live.is_some_and(|e| e.settle(id, final_bytes)) {
            return;
        }
        for e in &mut self.orphans {
            if e.settle(id, final_bytes) {
                return;
            }
        }
    }

    /// Looks at every file an ingest process still holds (see `crate::exposure`): one that
    /// holds more than it may is cut back and fsynced, and a live connection that did it is
    /// dropped. Processes that have exited are forgotten.
    fn enforce_exposures(&mut self) {
        self.exposures_checked = Instant::now();
        let (gone, orphans) = std::mem::take(&mut self.orphans)
            .into_iter()
            .partition::<Vec<_>, _>(|e| e.is_gone());
        self.orphans = orphans;
        for e in gone {
            let pid = e.pid();
            for b in e.last_look() {
                log_breach(pid, &b);
            }
        }
        let relayed = self.holds_relayed;
        let mut unlisted = None;
        self.police(|e| {
            if relayed {
                return e.enforce_listed(None); // What they hold comes from the supervisor.
            }
            let (breaches, listed) = e.enforce();
            if let Err(err) = listed {
                unlisted = Some((e.pid(), err));
            }
            breaches
        });
        if let Some((pid, err)) = unlisted
            && !std::mem::replace(&mut self.exposures_unwatchable, true)
        {
            warn!(pid, error = %err, "cannot list an ingest's descriptors: files it keeps after \
                  their commit are not watched (run as root, or under nvr run as root)");
        }
    }

    /// The supervisor listed what each ingest holds (`AdminRequest::IngestHolds`): every
    /// exposure of those processes is looked at, and what they closed forgotten.
    fn relayed_holds(&mut self, holds: Vec<IngestHolds>) {
        let by_pid: HashMap<i32, Option<BTreeSet<exposure::InodeKey>>> = holds
            .into_iter()
            .map(|h| (h.pid, h.files.map(|f| f.into_iter().collect())))
            .collect();
        self.police(|e| match by_pid.get(&e.pid()) {
            Some(held) => e.enforce_listed(held.as_ref()),
            None => Vec::new(),
        });
    }

    /// Applies `look` to every exposure (live connections' and orphans'), then acts on what
    /// it found: each breach logged; a live connection that did it, or whose process holds
    /// more than [`exposure::MAX_EXPOSED_FILES`], dropped; an orphan's process reported.
    fn police(&mut self, mut look: impl FnMut(&mut Exposure) -> Vec<exposure::Breach>) {
        let mut offenders = Vec::new();
        let mut gone_offenders = Vec::new();
        let live = self
            .conns
            .iter_mut()
            .filter_map(|(&conn, c)| c.exposure.as_mut().map(|e| (Some(conn), e)));
        let gone = self.orphans.iter_mut().map(|e| (None, e));
        for (conn, e) in live.chain(gone) {
            let mut reasons: Vec<(CompositeId, String)> = look(e)
                .iter()
                .map(|b| {
                    log_breach(e.pid(), b);
                    let why = format!(
                        "recording {} held {} bytes ({} on disk), more than the {} it may: cut back",
                        b.id, b.size_bytes, b.allocated_bytes, b.allowed_bytes
                    );
                    (b.id, why)
                })
                .collect();
            if e.exposed_files() > exposure::MAX_EXPOSED_FILES
                && e.listing_is_fresh()
                && let Some(id) = e.newest_id()
            {
                let why = format!(
                    "it holds {} sample files it was handed (at most {} may stay open)",
                    e.exposed_files(),
                    exposure::MAX_EXPOSED_FILES
                );
                reasons.push((id, why));
            }
            for (id, why) in reasons {
                match conn {
                    Some(conn) => offenders.push((conn, why)),
                    None => gone_offenders.push((e.pid(), id, why)),
                }
            }
        }
        for (conn, why) in offenders {
            self.refuse(conn, why);
        }
        for (pid, id, why) in gone_offenders {
            let name = self.stream_name(id.stream());
            let reason = format!("after its connection ended, {why}");
            self.dropped.record(name, Some(pid), reason);
        }
    }

    /// Hands durability work to the stream's worker, starting it on first use.
    fn dispatch(&mut self, conn: ConnId, salvage: bool, pending: PendingSave<D::File>) {
        let stream = pending.id().stream();
        let job = Job {
            conn,
            salvage,
            pending,
        };
        self.jobs_in_flight += 1;
        let job = match self.worker(stream) {
            Some(w) => match w.send(job) {
                Ok(()) => return,
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        // No worker thread could be made (a `pids` limit): the save runs here, on the core
        // thread. Every stream waits meanwhile, but nothing is lost.
        warn!(
            stream,
            "no worker thread for the stream; saving on the core thread"
        );
        let id = job.pending.id();
        let result = job.pending.run(&*self.dir);
        let ev = Event::Saved {
            conn: job.conn,
            id,
            salvage: job.salvage,
            result,
        };
        self.tx.send(ev).expect("the core holds its own receiver");
    }

    /// The stream's worker, started on first use; `None` if its thread cannot be made (it is
    /// tried again at the next save).
    fn worker(&mut self, stream: i32) -> Option<&Sender<Job<D::File>>> {
        if !self.workers.contains_key(&stream) {
            let (jtx, jrx) = mpsc::channel::<Job<D::File>>();
            let dir = self.dir.clone();
            let tx = self.tx.clone();
            let spawned = spawn_named(&format!("stream-{stream}"), move || {
                for job in jrx {
                    let id = job.pending.id();
                    let result = job.pending.run(&*dir);
                    let ev = Event::Saved {
                        conn: job.conn,
                        id,
                        salvage: job.salvage,
                        result,
                    };
                    if tx.send(ev).is_err() {
                        return;
                    }
                }
            });
            if let Err(e) = spawned {
                warn!(stream, error = %e, "cannot start the stream's worker thread");
                return None;
            }
            self.workers.insert(stream, jtx);
        }
        self.workers.get(&stream)
    }

    /// Answers an admin request. `Err` only for a fatal error, which stops the syncer.
    fn admin(&mut self, req: AdminRequest) -> Result<(AdminReply, Option<OwnedFd>), Error> {
        let error = |message: String| Ok(admin_error(message));
        match req {
            AdminRequest::ConnectIngest { stream_name } => {
                if self.stop.is_some() {
                    return error("the syncer is shutting down".to_owned());
                }
                let Some(row) = self.row_named(&stream_name) else {
                    return error(no_camera(&stream_name));
                };
                if self.removals.iter().any(|p| p.stream == row.id) {
                    return error(format!("camera {stream_name:?} is being removed"));
                }
                match self.connect_ingest(row.id) {
                    Ok(fd) => Ok((AdminReply::IngestConnection, Some(fd))),
                    Err(e) => error(format!("connection for {stream_name:?}: {e}")),
                }
            }
            AdminRequest::Status => match self.status() {
                Ok(r) => Ok((AdminReply::Status(r), None)),
                Err(e) => error(format!("status: {e}")),
            },
            AdminRequest::Recordings {
                stream_name,
                after,
                limit,
            } => match self.recordings(stream_name, after, limit) {
                Ok(r) => Ok((AdminReply::Recordings(r), None)),
                Err(e) => error(e.to_string()),
            },
            AdminRequest::IngestHolds { .. } if !self.holds_relayed => {
                error("this syncer lists what ingests hold itself (no --holds-relayed)".into())
            }
            AdminRequest::IngestHolds { holds } => {
                self.relayed_holds(holds);
                Ok((AdminReply::Ok, None))
            }
            AdminRequest::DroppedIngests { after } => {
                Ok((AdminReply::DroppedIngests(self.dropped.since(after)), None))
            }
            AdminRequest::Shutdown => {
                self.begin_stop("asked on the admin socket");
                Ok((AdminReply::Ok, None))
            }
            AdminRequest::ListCameras => Ok((
                AdminReply::Cameras(self.syncer.stream_rows().iter().map(camera_info).collect()),
                None,
            )),
            AdminRequest::AddCamera { name, config } => {
                match self.syncer.add_stream(&name, StreamConfig::from(config)) {
                    Ok(_) => self.camera_answer(&name),
                    Err(e) if e.is_fatal() => Err(e),
                    Err(e) => error(format!("camera {name:?} not added: {e}")),
                }
            }
            AdminRequest::SetCamera {
                name,
                source,
                retain_bytes,
                flush_if_sec,
                rotate_sec,
            } => {
                let Some(row) = self.row_named(&name) else {
                    return error(no_camera(&name));
                };
                let mut config = row.config.clone();
                config.source = source.unwrap_or(config.source);
                config.retain_bytes = retain_bytes.unwrap_or(config.retain_bytes);
                config.flush_if_sec = flush_if_sec.unwrap_or(config.flush_if_sec);
                config.rotate_sec = rotate_sec.unwrap_or(config.rotate_sec);
                if config.retain_bytes < row.config.retain_bytes {
                    // Commit what is synced now (telling the ingests), so that the flush the
                    // lowered quota makes carries only its deletions.
                    match self.syncer.flush("before lowering a quota") {
                        Ok(c) => self.push_committed(c),
                        Err(e) if e.is_fatal() => return Err(e),
                        Err(e) => return error(format!("camera {name:?} not changed: {e}")),
                    }
                }
                match self.syncer.set_stream_config(row.id, config) {
                    Ok(()) => self.camera_answer(&name),
                    Err(e) if e.is_fatal() => Err(e),
                    Err(e) => error(format!("camera {name:?} not changed: {e}")),
                }
            }
            AdminRequest::RemoveCamera { .. } => {
                unreachable!("handled by Core::remove_camera, which may answer later")
            }
        }
    }

    /// The name of stream `id`, or its number if it has none (removed meanwhile).
    fn stream_name(&self, id: i32) -> String {
        let rows = self.syncer.stream_rows();
        rows.into_iter()
            .find(|r| r.id == id)
            .map_or_else(|| format!("stream {id}"), |r| r.name)
    }

    fn row_named(&self, name: &str) -> Option<StreamRow> {
        self.syncer
            .stream_rows()
            .into_iter()
            .find(|r| r.name == name)
    }

    /// [`AdminReply::Cameras`] with the camera `name` alone, as it is now.
    fn camera_answer(&self, name: &str) -> Result<(AdminReply, Option<OwnedFd>), Error> {
        let row = self
            .row_named(name)
            .ok_or_else(|| Error::Bug(format!("camera {name:?} vanished while changing it")))?;
        Ok((AdminReply::Cameras(vec![camera_info(&row)]), None))
    }

    /// Starts removing a camera. With `delete_recordings`, its live ingest connection is
    /// dropped first (so its growing recording is salvaged, then deleted with the rest) and
    /// the answer waits for that salvage; without, a camera with recordings or a recording in
    /// flight is refused at once.
    fn remove_camera(
        &mut self,
        name: String,
        delete_recordings: bool,
        reply: AdminAnswer,
    ) -> Result<(), Error> {
        let Some(row) = self.row_named(&name) else {
            let _ = reply.send(admin_error(no_camera(&name)));
            return Ok(());
        };
        if self.removals.iter().any(|p| p.stream == row.id) {
            let _ = reply.send(admin_error(format!(
                "camera {name:?} is already being removed"
            )));
            return Ok(());
        }
        if delete_recordings && let Some(&conn) = self.by_stream.get(&row.id) {
            info!(stream = row.id, %name, "dropping the connection of a camera being removed");
            self.drop_conn(conn, "camera removed");
        }
        self.removals.push(PendingRemoval {
            stream: row.id,
            name,
            delete_recordings,
            reply,
        });
        self.try_removals()
    }

    /// Completes the pending removals whose streams have nothing being written or saved.
    fn try_removals(&mut self) -> Result<(), Error> {
        let mut i = 0;
        while i < self.removals.len() {
            let p = &self.removals[i];
            if p.delete_recordings && self.syncer.stream_busy(p.stream) {
                i += 1;
                continue;
            }
            let p = self.removals.remove(i);
            let result = match self.syncer.flush("before removing a camera") {
                Ok(c) => {
                    self.push_committed(c);
                    self.syncer.remove_stream(p.stream, p.delete_recordings)
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    if let Some(&conn) = self.by_stream.get(&p.stream) {
                        self.drop_conn(conn, "camera removed");
                    }
                    // Its worker is idle (nothing is being saved): let it end.
                    self.workers.remove(&p.stream);
                    let _ = p.reply.send((AdminReply::Ok, None));
                }
                Err(e) => {
                    let message = match &e {
                        // These name the camera and say what to do.
                        Error::HasRecordings { .. } | Error::StreamBusy { .. } => e.to_string(),
                        _ => format!("camera {:?} not removed: {e}", p.name),
                    };
                    let _ = p.reply.send(admin_error(message));
                    if e.is_fatal() {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    /// Makes a socketpair bound to `stream`, taking over from its previous connection.
    fn connect_ingest(&mut self, stream: i32) -> io::Result<OwnedFd> {
        if let Some(&old) = self.by_stream.get(&stream) {
            info!(
                stream,
                "closing the previous connection of the stream (takeover)"
            );
            self.drop_conn(old, "taken over by a new connection");
        }
        let (ours, theirs) = UnixStream::pair()?;
        let conn = self.next_conn;
        self.next_conn += 1;
        let (out_tx, out_rx) = mpsc::sync_channel(OUTGOING_QUEUE_LEN);
        let writer = Conn::from(ours.try_clone()?);
        let shutdown = ours.try_clone()?;
        let reader = Conn::from(ours.try_clone()?);
        let socket = OwnedFd::from(ours.try_clone()?);
        let opened_sent = Arc::new(AtomicU64::new(0));
        let sent = opened_sent.clone();
        // Before the ingest can send its hello: the kernel records the sender's pid at send.
        reader.pass_credentials()?;
        spawn_named(&format!("ingest-{conn}-out"), move || {
            write_ingest(writer, out_rx, &sent);
            let _ = shutdown.shutdown(std::net::Shutdown::Both);
        })?;
        let tx = self.tx.clone();
        // If this thread cannot be made, the writer thread ends with the queue's sender,
        // dropped here with the error, and the socketpair closes.
        spawn_named(&format!("ingest-{conn}-in"), move || {
            read_ingest(conn, reader, tx)
        })?;
        drop(ours);
        self.conns.insert(
            conn,
            Connection {
                session: IngestSession::new(stream),
                out: out_tx,
                greeted: false,
                exposure: None,
                pid: None,
                opened: 0,
                opened_sent,
                socket,
            },
        );
        self.by_stream.insert(stream, conn);
        debug!(stream, conn, "ingest connection brokered");
        Ok(OwnedFd::from(theirs))
    }

    /// The status report; `Err` only for a failed database read.
    fn status(&self) -> Result<StatusReport, Error> {
        let mut streams = Vec::new();
        for r in self.syncer.stream_rows() {
            let s = self
                .syncer
                .stream_summary(r.id)
                .expect("rows and summaries agree");
            let newest_committed_start = match s.newest_committed {
                Some(_) => self.syncer.db().newest_recording(r.id)?.map(|n| n.start),
                None => None,
            };
            streams.push(StreamStatus {
                id: r.id,
                name: r.name,
                committed_recordings: s.committed_recordings as u64,
                committed_bytes: s.committed_bytes,
                retain_bytes: r.config.retain_bytes,
                newest_committed: s.newest_committed,
                growing: s.growing,
                newest_committed_start,
            });
        }
        Ok(StatusReport {
            streams,
            garbage: self.syncer.garbage_status(),
        })
    }

    /// One page of recordings (see [`AdminRequest::Recordings`]); a limit outside
    /// `1..=MAX_RECORDINGS_PER_PAGE` is refused.
    fn recordings(
        &self,
        stream_name: Option<String>,
        after: Option<CompositeId>,
        limit: u32,
    ) -> Result<Vec<RecordingSummary>, Error> {
        if !(1..=MAX_RECORDINGS_PER_PAGE).contains(&limit) {
            return Err(Error::Rejected {
                stream: -1,
                reason: format!(
                    "a page of {limit} recordings; pages hold 1 to {MAX_RECORDINGS_PER_PAGE}"
                ),
            });
        }
        let rows = self.syncer.stream_rows();
        let filter = match &stream_name {
            None => None,
            Some(n) => Some(
                rows.iter()
                    .find(|r| &r.name == n)
                    .ok_or_else(|| Error::Rejected {
                        stream: -1,
                        reason: format!("no camera named {n:?}"),
                    })?
                    .id,
            ),
        };
        let names: HashMap<i32, String> = rows.into_iter().map(|r| (r.id, r.name)).collect();
        Ok(self
            .syncer
            .db()
            .recordings_page(filter, after, limit)?
            .into_iter()
            .map(|r| {
                let name = names.get(&r.id.stream()).cloned().unwrap_or_default();
                r.summary(name)
            })
            .collect())
    }
}

/// Logs a file found holding more than it may, and its cut back.
fn log_breach(pid: i32, b: &exposure::Breach) {
    error!(
        stream = b.id.stream(),
        recording = %b.id,
        pid,
        size_bytes = b.size_bytes,
        allocated_bytes = b.allocated_bytes,
        allowed_bytes = b.allowed_bytes,
        cut_back = ?b.repair,
        "an ingest wrote past what its recording may hold: cut back"
    );
}

fn admin_error(message: String) -> (AdminReply, Option<OwnedFd>) {
    (AdminReply::Error { message }, None)
}

fn no_camera(name: &str) -> String {
    format!("no camera named {name:?}")
}

fn camera_info(row: &StreamRow) -> CameraInfo {
    CameraInfo::from(row)
}

/// Reads an ingest connection: its hello, then requests, until it ends.
fn read_ingest(conn: ConnId, mut c: Conn, tx: Sender<Event>) {
    let why = match c.recv_with_sender_pid::<Hello>() {
        Err(e) => e.to_string(),
        Ok((hello, pid)) => {
            if tx.send(Event::Hello { conn, hello, pid }).is_err() {
                return;
            }
            loop {
                match c.recv::<IngestRequest>() {
                    Ok(req) => {
                        if tx.send(Event::Ingest { conn, req }).is_err() {
                            return;
                        }
                    }
                    Err(WireError::Closed) => break "closed by the ingest".to_owned(),
                    Err(e) => break e.to_string(),
                }
            }
        }
    };
    let _ = tx.send(Event::Gone { conn, why });
}

/// Sends queued answers until the core drops the queue or the socket fails.
/// Sends what the core queues for one ingest; counts the `Opened` frames sent in
/// `opened_sent` (after each is in the socket: see `exposure::Delivery`).
fn write_ingest(mut c: Conn, rx: Receiver<Outgoing>, opened_sent: &AtomicU64) {
    for out in rx {
        let r = match &out {
            Outgoing::Hello(h) => c.send(h),
            Outgoing::Reply(reply, Some(fd)) => c.send_with_fd(reply, std::os::fd::AsFd::as_fd(fd)),
            Outgoing::Reply(reply, None) => c.send(reply),
        };
        if let Err(e) = r {
            debug!(error = %e, "ingest connection write failed");
            return;
        }
        if matches!(out, Outgoing::Reply(IngestReply::Opened { .. }, _)) {
            opened_sent.fetch_add(1, Ordering::Release);
        }
    }
}

/// Accepts admin clients, each served on its own thread, at most [`MAX_ADMIN_CONNECTIONS`] at
/// once. A client over the limit, or one no thread can be made for (a `pids` limit), is
/// refused; the listener itself never stops.
fn accept_admin(listener: UnixListener, tx: Sender<Event>) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let s = match stream {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "accept on the admin socket failed");
                continue;
            }
        };
        if active.load(Ordering::SeqCst) >= MAX_ADMIN_CONNECTIONS {
            warn!(
                limit = MAX_ADMIN_CONNECTIONS,
                "admin connection refused: too many"
            );
            refuse_admin(
                s,
                format!("too many admin connections (the limit is {MAX_ADMIN_CONNECTIONS})"),
            );
            continue;
        }
        if let Err(e) = s
            .set_read_timeout(Some(ADMIN_IDLE_TIMEOUT))
            .and_then(|()| s.set_write_timeout(Some(ADMIN_IDLE_TIMEOUT)))
        {
            warn!(error = %e, "cannot set the admin connection's timeouts; refused");
            continue;
        }
        let slot = AdminSlot::take(&active);
        let tx = tx.clone();
        let spawned = std::thread::Builder::new()
            .name("admin".to_owned())
            .spawn(move || {
                let _slot = slot;
                if let Err(e) = serve_admin(s, tx) {
                    debug!(error = %e, "admin client ended");
                }
            });
        // On failure the closure, with the connection and its slot, is dropped: refused.
        if let Err(e) = spawned {
            warn!(error = %e, "no thread for an admin client; connection refused");
        }
    }
}

/// One of the [`MAX_ADMIN_CONNECTIONS`], given back on drop.
struct AdminSlot(Arc<AtomicUsize>);

impl AdminSlot {
    fn take(active: &Arc<AtomicUsize>) -> AdminSlot {
        active.fetch_add(1, Ordering::SeqCst);
        AdminSlot(active.clone())
    }
}

impl Drop for AdminSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answers a client's hello with `message` and hangs up, without waiting on it for more than
/// a moment.
fn refuse_admin(s: UnixStream, message: String) {
    let _ = s.set_write_timeout(Some(std::time::Duration::from_millis(100)));
    let mut c = Conn::from(s);
    if let Err(e) = c.send(&AdminReply::Error { message }) {
        debug!(error = %e, "refusing an admin client");
    }
}

/// Serves one admin client: uid check, hello, then requests until it hangs up.
fn serve_admin(stream: UnixStream, tx: Sender<Event>) -> Result<(), WireError> {
    let uid = wire::peer_uid(&stream)?;
    let own = nix::unistd::geteuid().as_raw();
    let mut c = Conn::from(stream);
    if uid != own && uid != 0 {
        warn!(
            uid,
            "admin connection from a uid that is not allowed refused"
        );
        c.send(&AdminReply::Error {
            message: format!(
                "uid {uid} may not use this syncer's admin socket (only {own} and root)"
            ),
        })?;
        return Ok(());
    }
    let hello: Hello = c.recv()?;
    if let Err(e) = wire::check_version(hello.protocol_version) {
        c.send(&AdminReply::Error {
            message: e.to_string(),
        })?;
        return Err(e);
    }
    if hello.role != ROLE_ADMIN {
        c.send(&AdminReply::Error {
            message: format!(
                "role {:?} on the admin socket, expected {ROLE_ADMIN:?}",
                hello.role
            ),
        })?;
        return Ok(());
    }
    c.send(&AdminReply::Ok)?;
    loop {
        let req: AdminRequest = match c.recv() {
            Ok(r) => r,
            Err(WireError::Closed) => return Ok(()),
            Err(WireError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                let _ = c.send(&AdminReply::Error {
                    message: format!("idle for {ADMIN_IDLE_TIMEOUT:?}; disconnected"),
                });
                return Ok(());
            }
            Err(e) => {
                // Garbage: say why, then hang up.
                let _ = c.send(&AdminReply::Error {
                    message: e.to_string(),
                });
                return Err(e);
            }
        };
        if matches!(req, AdminRequest::IngestHolds { .. }) && uid != 0 {
            // What ingests hold lets the syncer forget files: only the supervisor (root),
            // which can list them, may say.
            c.send(&AdminReply::Error {
                message: format!("uid {uid} may not relay what ingests hold (only root)"),
            })?;
            continue;
        }
        let (rtx, rrx) = mpsc::channel();
        if tx.send(Event::Admin { req, reply: rtx }).is_err() {
            return Ok(());
        }
        let Ok((reply, fd)) = rrx.recv() else {
            return Ok(());
        };
        match fd {
            Some(fd) => c.send_with_fd(&reply, std::os::fd::AsFd::as_fd(&fd))?,
            None => c.send(&reply)?,
        }
    }
}

/// Turns each SIGTERM and SIGINT into a stop event for the core.
fn watch_signals(mut signals: signal_hook::iterator::Signals, tx: Sender<Event>) {
    for sig in signals.forever() {
        let name = if sig == SIGTERM { "SIGTERM" } else { "SIGINT" };
        if tx
            .send(Event::Stop {
                why: format!("{name} received"),
            })
            .is_err()
        {
            return;
        }
    }
}
