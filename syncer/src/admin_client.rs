//! The client side of the admin socket, for the supervisor, the `nvr` command line and tests:
//! status, recordings, cameras (list, add, set, remove), brokered ingest connections, shutdown.
//!
//! Every call has a deadline ([`DEFAULT_DEADLINE`], or the caller's): the connect and its
//! hello together, and each request with its answer, fail with [`AdminError::Deadline`] once it
//! has passed, so that a stopped or stuck syncer never hangs a command or the supervisor. (The
//! socket timeouts are set to what is left of it before each send and receive; the syncer is
//! trusted not to trickle a frame byte by byte.) A listing of many pages has the deadline per
//! page. Changes that may wait on the disk (`set_camera` lowering a quota, `remove_camera`
//! waiting for saves) have at least [`SLOW_DEADLINE`].

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};

use protocol::messages::{
    AdminReply, AdminRequest, CameraConfig, CameraInfo, DroppedIngest, Hello, IngestHolds,
    MAX_RECORDINGS_PER_PAGE, ROLE_ADMIN, RecordingSummary, StatusReport,
};
use protocol::wire::{Conn, WireError};
use thiserror::Error;

use crate::layout::DataDir;
use crate::server::socket_path;

#[derive(Debug, Error)]
pub enum AdminError {
    #[error("cannot connect to the syncer at {path}: {source} (is `nvr run` active?)")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("syncer admin connection: {0}")]
    Wire(WireError),
    #[error(
        "the syncer did not answer within {waited:?} (is it stopped or stuck? a change it was \
         asked for may still be made)"
    )]
    Deadline { waited: Duration },
    #[error("the syncer refused: {0}")]
    Refused(String),
    #[error("the syncer answered {got} where {expected} was expected")]
    Unexpected { got: String, expected: &'static str },
}

/// How long an admin call may wait for the syncer unless its caller says otherwise.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// The least deadline of a camera change, which may wait for saves or delete many recordings
/// on a slow disk.
pub const SLOW_DEADLINE: Duration = Duration::from_secs(300);

pub struct AdminClient {
    conn: Conn,
    deadline: Duration,
    /// The deadline of the call under way (see [`AdminClient::deadline_of`]).
    current: Duration,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient").finish_non_exhaustive()
    }
}

impl AdminClient {
    /// Connects to the syncer serving `data_dir` and says hello, with [`DEFAULT_DEADLINE`].
    pub fn connect(data_dir: &DataDir) -> Result<AdminClient, AdminError> {
        Self::connect_with_deadline(data_dir, DEFAULT_DEADLINE)
    }

    /// Connects and says hello; this and every later call fail past `deadline`.
    pub fn connect_with_deadline(
        data_dir: &DataDir,
        deadline: Duration,
    ) -> Result<AdminClient, AdminError> {
        let give_up = Instant::now() + deadline;
        let path = socket_path(data_dir);
        let stream = connect_socket(&path, deadline).map_err(|source| {
            if source.kind() == io::ErrorKind::TimedOut {
                AdminError::Deadline { waited: deadline }
            } else {
                AdminError::Connect { path, source }
            }
        })?;
        let mut c = AdminClient {
            conn: Conn::from(stream),
            deadline,
            current: deadline,
        };
        // A syncer refusing the connection (too many clients) may answer and hang up before
        // the hello is sent: its answer is still there to read.
        c.arm(give_up)?;
        let hello = c.conn.send(&Hello::new(ROLE_ADMIN));
        let answer = c.arm(give_up).and_then(|()| c.recv());
        if let (Err(e), Err(_)) = (hello, &answer) {
            return Err(c.wire_error(e));
        }
        match answer? {
            AdminReply::Ok => Ok(c),
            AdminReply::Error { message } => Err(AdminError::Refused(message)),
            other => Err(unexpected(other, "Ok")),
        }
    }

    /// Bounds the next send or receive by what is left until `give_up`, and makes a timeout
    /// of either the deadline passing.
    fn arm(&mut self, give_up: Instant) -> Result<(), AdminError> {
        let left = give_up.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(AdminError::Deadline {
                waited: self.current,
            });
        }
        let s = self.conn.stream();
        s.set_read_timeout(Some(left))
            .and_then(|()| s.set_write_timeout(Some(left)))
            .map_err(|e| self.wire_error(WireError::Io(e)))
    }

    /// The deadline of `req` (see the module docs).
    fn deadline_of(&self, req: &AdminRequest) -> Duration {
        match req {
            AdminRequest::SetCamera { .. } | AdminRequest::RemoveCamera { .. } => {
                self.deadline.max(SLOW_DEADLINE)
            }
            _ => self.deadline,
        }
    }

    /// Sends `msg` and bounds the wait for its answer, both by `msg`'s deadline.
    fn send(&mut self, msg: &AdminRequest) -> Result<(), AdminError> {
        self.current = self.deadline_of(msg);
        let give_up = Instant::now() + self.current;
        self.arm(give_up)?;
        self.conn.send(msg).map_err(|e| self.wire_error(e))?;
        self.arm(give_up)
    }

    fn recv(&mut self) -> Result<AdminReply, AdminError> {
        self.conn.recv().map_err(|e| self.wire_error(e))
    }

    /// A socket timeout is the deadline passing.
    fn wire_error(&self, e: WireError) -> AdminError {
        match e {
            WireError::Io(io)
                if matches!(
                    io.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                AdminError::Deadline {
                    waited: self.current,
                }
            }
            e => AdminError::Wire(e),
        }
    }

    /// One request, one answer (refusals as `Err`).
    pub fn request(&mut self, req: &AdminRequest) -> Result<AdminReply, AdminError> {
        self.send(req)?;
        match self.recv()? {
            AdminReply::Error { message } => Err(AdminError::Refused(message)),
            r => Ok(r),
        }
    }

    /// A fresh connection bound to the stream, for its ingest's fd 3.
    pub fn connect_ingest(&mut self, stream_name: &str) -> Result<OwnedFd, AdminError> {
        self.send(&AdminRequest::ConnectIngest {
            stream_name: stream_name.to_owned(),
        })?;
        let answer = self.conn.recv_with_optional_fd::<AdminReply>();
        match answer.map_err(|e| self.wire_error(e))? {
            (AdminReply::IngestConnection, Some(fd)) => Ok(fd),
            (AdminReply::Error { message }, None) => Err(AdminError::Refused(message)),
            (other, _) => Err(unexpected(other, "IngestConnection with a descriptor")),
        }
    }

    /// Tells an unprivileged syncer what each ingest holds (see `AdminRequest::IngestHolds`).
    pub fn ingest_holds(&mut self, holds: Vec<IngestHolds>) -> Result<(), AdminError> {
        match self.request(&AdminRequest::IngestHolds { holds })? {
            AdminReply::Ok => Ok(()),
            other => Err(unexpected(other, "Ok")),
        }
    }

    /// The ingests the syncer dropped for breaking a rule since sequence number `after`.
    pub fn dropped_ingests(&mut self, after: u64) -> Result<Vec<DroppedIngest>, AdminError> {
        match self.request(&AdminRequest::DroppedIngests { after })? {
            AdminReply::DroppedIngests(d) => Ok(d),
            other => Err(unexpected(other, "DroppedIngests")),
        }
    }

    pub fn status(&mut self) -> Result<StatusReport, AdminError> {
        match self.request(&AdminRequest::Status)? {
            AdminReply::Status(s) => Ok(s),
            other => Err(unexpected(other, "Status")),
        }
    }

    /// Every committed recording (of `stream_name`, or of every stream), in id order, asked
    /// for page by page ([`MAX_RECORDINGS_PER_PAGE`] at a time). Each page is a consistent
    /// view; between pages the syncer goes on committing and deleting, so the whole is as of
    /// no single moment (a recording deleted meanwhile may be missing, one committed meanwhile
    /// present).
    pub fn recordings(
        &mut self,
        stream_name: Option<&str>,
    ) -> Result<Vec<RecordingSummary>, AdminError> {
        let mut out: Vec<RecordingSummary> = Vec::new();
        loop {
            let req = AdminRequest::Recordings {
                stream_name: stream_name.map(str::to_owned),
                after: out.last().map(|r| r.id),
                limit: MAX_RECORDINGS_PER_PAGE,
            };
            let page = match self.request(&req)? {
                AdminReply::Recordings(r) => r,
                other => return Err(unexpected(other, "Recordings")),
            };
            let after = out.last().map(|r| r.id);
            if page
                .first()
                .is_some_and(|r| after.is_some_and(|a| r.id <= a))
            {
                return Err(AdminError::Unexpected {
                    got: format!(
                        "a page of recordings that does not go past {}",
                        after.expect("checked")
                    ),
                    expected: "the next page",
                });
            }
            let last = page.len() < MAX_RECORDINGS_PER_PAGE as usize;
            out.extend(page);
            if last {
                return Ok(out);
            }
        }
    }

    /// Every camera with its settings, in id order.
    pub fn cameras(&mut self) -> Result<Vec<CameraInfo>, AdminError> {
        match self.request(&AdminRequest::ListCameras)? {
            AdminReply::Cameras(c) => Ok(c),
            other => Err(unexpected(other, "Cameras")),
        }
    }

    /// Adds a camera; returns it as added.
    pub fn add_camera(
        &mut self,
        name: &str,
        config: CameraConfig,
    ) -> Result<CameraInfo, AdminError> {
        let req = AdminRequest::AddCamera {
            name: name.to_owned(),
            config,
        };
        self.one_camera(&req)
    }

    /// Changes a camera's settings (`None` keeps one); returns the camera as changed. Lowering
    /// `retain_bytes` has deleted the excess when this returns.
    pub fn set_camera(
        &mut self,
        name: &str,
        source: Option<String>,
        retain_bytes: Option<i64>,
        flush_if_sec: Option<u32>,
        rotate_sec: Option<u32>,
    ) -> Result<CameraInfo, AdminError> {
        let req = AdminRequest::SetCamera {
            name: name.to_owned(),
            source,
            retain_bytes,
            flush_if_sec,
            rotate_sec,
        };
        self.one_camera(&req)
    }

    /// Removes a camera (see [`AdminRequest::RemoveCamera`]); its files are unlinked when this
    /// returns.
    pub fn remove_camera(&mut self, name: &str, delete_recordings: bool) -> Result<(), AdminError> {
        let req = AdminRequest::RemoveCamera {
            name: name.to_owned(),
            delete_recordings,
        };
        match self.request(&req)? {
            AdminReply::Ok => Ok(()),
            other => Err(unexpected(other, "Ok")),
        }
    }

    fn one_camera(&mut self, req: &AdminRequest) -> Result<CameraInfo, AdminError> {
        match self.request(req)? {
            AdminReply::Cameras(mut c) if c.len() == 1 => Ok(c.remove(0)),
            other => Err(unexpected(other, "Cameras with one camera")),
        }
    }

    /// Asks for a graceful stop (as SIGTERM does).
    pub fn shutdown(&mut self) -> Result<(), AdminError> {
        match self.request(&AdminRequest::Shutdown)? {
            AdminReply::Ok => Ok(()),
            other => Err(unexpected(other, "Ok")),
        }
    }
}

/// Connects to the admin socket at `path` within `deadline` (a syncer that stopped accepting
/// fills its backlog, where a blocking connect would wait for ever), then bounds every read
/// and write of the connection by `deadline`.
fn connect_socket(path: &Path, deadline: Duration) -> io::Result<UnixStream> {
    let give_up = Instant::now() + deadline;
    let addr = UnixAddr::new(path)?;
    loop {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) => {
                let stream = UnixStream::from(fd);
                stream.set_nonblocking(false)?;
                stream.set_read_timeout(Some(deadline))?;
                stream.set_write_timeout(Some(deadline))?;
                return Ok(stream);
            }
            Err(Errno::EAGAIN) if Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(Errno::EAGAIN) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the socket accepted no connection within {deadline:?}"),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn unexpected(got: AdminReply, expected: &'static str) -> AdminError {
    let got = format!("{got:?}");
    AdminError::Unexpected {
        got: got.chars().take(80).collect(),
        expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A syncer that accepts nothing (stopped, or its core stuck): connections wait in the
    /// backlog and no hello is answered. The call fails with the deadline instead of hanging.
    #[test]
    fn a_syncer_that_never_answers_fails_the_call_at_its_deadline() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DataDir::new(tmp.path().to_owned());
        let _listener = std::os::unix::net::UnixListener::bind(socket_path(&d)).unwrap();
        let deadline = Duration::from_millis(200);
        let t = Instant::now();
        let err = AdminClient::connect_with_deadline(&d, deadline).unwrap_err();
        assert!(
            matches!(err, AdminError::Deadline { waited } if waited == deadline),
            "{err}"
        );
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }

    #[test]
    fn no_socket_is_a_connect_error_naming_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DataDir::new(tmp.path().to_owned());
        let err = AdminClient::connect_with_deadline(&d, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, AdminError::Connect { .. }), "{err}");
        assert!(
            err.to_string().contains(crate::server::SOCKET_FILE_NAME),
            "{err}"
        );
    }
}

#[cfg(test)]
mod deadline_tests {
    use super::*;

    /// The connect and the hello share one deadline. The syncer here takes 60% of the
    /// deadline to accept (its backlog is full, so the connect waits) and as long again to
    /// answer the hello: each step is within the deadline, their sum is not, and the call
    /// fails once the deadline has passed.
    #[test]
    fn one_deadline_covers_the_connect_and_its_hello() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DataDir::new(tmp.path().to_owned());
        let listener = std::os::unix::net::UnixListener::bind(socket_path(&d)).unwrap();
        // Fill the backlog: connects then fail with EAGAIN until one is accepted.
        let addr = UnixAddr::new(&socket_path(&d)).unwrap();
        let mut fillers = Vec::new();
        loop {
            let fd = socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::SOCK_NONBLOCK,
                None,
            )
            .unwrap();
            match connect(fd.as_raw_fd(), &addr) {
                Ok(()) => fillers.push(fd),
                Err(Errno::EAGAIN) => break,
                Err(e) => panic!("{e}"),
            }
        }
        let deadline = Duration::from_millis(500);
        let step = deadline * 6 / 10;
        let queued = fillers.len();
        let server = std::thread::spawn(move || {
            std::thread::sleep(step);
            // The queued fillers first, then the client, which connects once there is room.
            let mut accepted: Vec<_> = (0..=queued).map(|_| listener.accept().unwrap().0).collect();
            let mut conn = Conn::from(accepted.pop().unwrap());
            let _hello: Hello = conn.recv().unwrap();
            std::thread::sleep(step);
            let _ = conn.send(&AdminReply::Ok);
            std::thread::sleep(step);
        });
        let t = Instant::now();
        let err = AdminClient::connect_with_deadline(&d, deadline).unwrap_err();
        let took = t.elapsed();
        assert!(matches!(err, AdminError::Deadline { .. }), "{err}");
        assert!(took < deadline + step / 2, "took {took:?}");
        server.join().unwrap();
        drop(fillers);
    }
}
