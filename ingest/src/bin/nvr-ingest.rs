//! `nvr-ingest`: records one camera stream into the sample files the syncer hands it over the
//! connection on fd 3. Started by the supervisor (`nvr run`), one process per camera; see
//! `--help` for the command line and the exit statuses.

use std::io::IsTerminal;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use clap::Parser;
use ingest::client::{Client, Handshaken};
use ingest::rtsp::{self, Camera, Credentials, Event, RtspUrl};
use ingest::sandbox::{self, Policy};
use ingest::source::{Prepared, Source, SourceError};
use ingest::writer::{
    DEFAULT_ACCEPT_TIMEOUT, LinkError, MAX_ROTATE_SEC, Writer, WriterConfig, WriterError,
    end_reason,
};
use nix::sys::socket::{AddressFamily, SockType, SockaddrLike, SockaddrStorage, sockopt};
use protocol::source_url::{PASSWORD_ENV, USERNAME_ENV};
use protocol::{Clock, Conn, RealClock, WireError};
use tracing::{error, info, info_span, warn};

/// The descriptor of the syncer connection.
const SYNCER_FD: RawFd = protocol::wire::INGEST_CONNECTION_FD;

/// How long a shutdown waits for the syncer to accept the last close.
const SHUTDOWN_ACCEPT_WAIT: Duration = Duration::from_secs(10);

/// Exit statuses (also in `--help`).
mod status {
    /// Usage or configuration error: bad arguments or source URL, fd 3 not a Unix stream
    /// socket, protocol version mismatch, the sandbox cannot be entered. Restarting the same
    /// way will fail the same way.
    pub const USAGE: u8 = 2;
    /// The syncer connection was lost: end of file, socket or framing error, a fatal error
    /// from the syncer, a refused request, a close not accepted in time.
    pub const CONNECTION_LOST: u8 = 3;
    /// The source failed: its file is missing or not H.264, or it produced frames the writer
    /// refuses (pts not increasing, ...).
    pub const SOURCE: u8 = 4;
    /// Writing a sample file failed with an error that is not transient; the recording was
    /// abandoned to the syncer's salvage.
    pub const WRITE: u8 = 5;
}

const AFTER_HELP: &str = "\
The syncer connection:
  nvr-ingest talks to the syncer only over file descriptor 3, a connected Unix stream socket
  that the syncer brokered for this camera's stream (the supervisor passes it). It is given no
  path in the sample directory and opens no database: the syncer hands it a write-only
  descriptor for each recording.

Exit statuses:
  0  shut down on SIGTERM or SIGINT: the growing recording was closed (end reason
     \"shutdown\") and its acceptance awaited up to 10 s; or a write was abandoned by the
     shutdown, which the syncer salvages
  2  usage or configuration error: bad arguments or source URL, fd 3 not a connected Unix
     stream socket, protocol version mismatch with the syncer, the sandbox cannot be entered
  3  syncer connection lost (end of file, socket or framing error, fatal error from the
     syncer, refused request, close not accepted in time): restart with a fresh connection
  4  source error: the source file is missing or not H.264, or the source produced frames
     that cannot be recorded (the recording is closed with end reason \"source-error\")
  5  writing a sample file failed permanently; the syncer salvages the recording

The sandbox:
  Once the source is open (a file: source's file, an rtsp:// camera's host resolved) and
  before anything from it is read, nvr-ingest enters its sandbox: no new privileges, resource
  limits, Landlock (no file system, TCP only to the camera's port) and a seccomp allowlist; a
  syscall outside it kills the process with SIGSYS. See SECURITY.md.

Camera credentials:
  From the rtsp:// URL's user info, or else from the environment variables NVR_RTSP_USERNAME
  and NVR_RTSP_PASSWORD (what nvr run uses, so that a password is never on a command line).

Logs go to stderr, each line naming the camera; RUST_LOG sets the filter (default info).";

/// Records one camera stream into sample files handed over by the syncer on fd 3.
#[derive(Debug, Parser)]
#[command(name = "nvr-ingest", version, after_help = AFTER_HELP)]
struct Args {
    /// The camera (stream) name, shown in every log line.
    #[arg(long, value_name = "NAME")]
    camera: String,

    /// Where frames come from: `rtsp://[USER:PASSWORD@]HOST[:PORT]/PATH[?transport=tcp|udp]
    /// [&stall_sec=N]` (an IP camera's H.264 stream; other query parameters go to the camera),
    /// `file:PATH[?speed=N|max][&fps=F]` (H.264 Annex B, looped, real time unless `speed` says
    /// otherwise; `fps` applies when the SPS has no timing) or
    /// `synthetic:[?fps=F][&bitrate=BITS][&gop=N][&speed=N|max]` (generated frames).
    #[arg(long, value_name = "URL")]
    source: String,

    /// Rotate to a new recording at the first key frame this many seconds of media into the
    /// current one; overrides the syncer's setting for the stream.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_ROTATE_SEC)))]
    rotate_sec: Option<u32>,

    /// Read a `file:` source from this inherited descriptor (opened read-only by the
    /// supervisor) instead of opening its path; the path still names it in logs.
    #[arg(long, value_name = "FD", value_parser = clap::value_parser!(i32).range(i64::from(SYNCER_FD) + 1..))]
    source_fd: Option<RawFd>,
}

/// Why the process exits with a nonzero status.
struct Failure {
    status: u8,
    message: String,
}

impl Failure {
    fn new(status: u8, message: impl std::fmt::Display) -> Self {
        Failure {
            status,
            message: message.to_string(),
        }
    }

    fn link(e: LinkError) -> Self {
        let status = match e {
            LinkError::Handshake(WireError::VersionMismatch { .. }) => status::USAGE,
            _ => status::CONNECTION_LOST,
        };
        Failure::new(status, e)
    }

    fn source(e: SourceError) -> Self {
        let status = match e {
            SourceError::BadUrl { .. } => status::USAGE,
            _ => status::SOURCE,
        };
        Failure::new(status, e)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let span = info_span!("nvr-ingest", camera = %args.camera);
    let _entered = span.enter();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            error!(status = f.status, "{}", f.message);
            ExitCode::from(f.status)
        }
    }
}

fn run(args: &Args) -> Result<(), Failure> {
    // First, before anything else can open a descriptor that lands on 3.
    let conn = syncer_connection()?;
    let source_file = args.source_fd.map(inherited_source).transpose()?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone()).map_err(|e| {
            Failure::new(status::USAGE, format!("cannot handle signal {signal}: {e}"))
        })?;
    }
    let handshaken = Handshaken::new(conn).map_err(Failure::link)?;
    let clock: Arc<dyn Clock> = Arc::new(RealClock);
    let opened = Opened::open(&args.source, source_file, clock.clone(), stop.clone())?;
    enter_sandbox(&opened)?;
    // The client's reader thread is born in the sandbox.
    let client = handshaken.start().map_err(Failure::link)?;
    let hello = client.hello().clone();
    info!(
        stream_id = hello.stream_id,
        stream = %hello.stream_name,
        rotate_sec = hello.rotate_sec,
        "connected to the syncer"
    );
    let rotate_sec = match args.rotate_sec {
        Some(n) => n,
        None if (1..=MAX_ROTATE_SEC).contains(&hello.rotate_sec) => hello.rotate_sec,
        None => {
            let clamped = hello.rotate_sec.clamp(1, MAX_ROTATE_SEC);
            warn!(
                rotate_sec = hello.rotate_sec,
                clamped, "the syncer's rotate interval is out of range; clamped"
            );
            clamped
        }
    };
    let mut input = opened.start(clock.clone(), stop.clone())?;
    info!(source = %protocol::source_url::redact(&args.source), rotate_sec, "recording");
    let config = WriterConfig {
        stream_id: hello.stream_id,
        rotate_sec,
        accept_timeout: DEFAULT_ACCEPT_TIMEOUT,
        open_budget: Default::default(),
    };
    let mut writer =
        Writer::new(client, config, clock, stop).map_err(|e| Failure::new(status::USAGE, e))?;
    while let Some(event) = input.next_event() {
        let frame = match event {
            Event::Frame(frame) => frame,
            Event::Ended { reason } => {
                close(&mut writer, &reason)?;
                continue;
            }
        };
        match writer.write(&frame) {
            Ok(()) => {}
            Err(WriterError::WriteAborted { id, source }) => {
                info!(recording = %id, error = %source, "write abandoned by the shutdown; the syncer salvages");
                return Ok(());
            }
            Err(WriterError::Link(e)) => return Err(Failure::link(e)),
            Err(e) if e.is_frame_refused() => match &mut input {
                Input::Camera(camera) => {
                    // A camera's bad frame costs its session, not the process.
                    let reason = rtsp::reason("camera-bad-stream", &e);
                    camera.end_session(&reason);
                    close(&mut writer, &reason)?;
                }
                Input::Source(_) => {
                    finish(&mut writer, end_reason::SOURCE_ERROR)?;
                    return Err(Failure::new(status::SOURCE, e));
                }
            },
            Err(e) => return Err(Failure::new(status::WRITE, e)),
        }
    }
    info!("shutting down");
    finish(&mut writer, end_reason::SHUTDOWN)
}

/// Enters the sandbox: see `ingest::sandbox` (and SECURITY.md).
fn enter_sandbox(opened: &Opened) -> Result<(), Failure> {
    let camera_port = match opened {
        Opened::Source(_) => None,
        Opened::Camera(c) => Some(c.port()),
    };
    let report = sandbox::enter(&Policy::new(camera_port))
        .map_err(|e| Failure::new(status::USAGE, format!("cannot enter the sandbox: {e}")))?;
    info!("sandbox entered: {report}");
    let missing = report.landlock_missing();
    if !missing.is_empty() {
        warn!(
            "this kernel's Landlock (ABI {}) does not enforce: {}; the other layers do",
            report.landlock_abi,
            missing.join(", ")
        );
    }
    Ok(())
}

/// A source opened before the sandbox: nothing of it read yet.
enum Opened {
    Source(Prepared),
    /// A camera with its runtime built and its host resolved; boxed, as in [`Input`].
    Camera(Box<Camera>),
}

impl Opened {
    fn open(
        url: &str,
        file: Option<std::fs::File>,
        clock: Arc<dyn Clock>,
        stop: Arc<AtomicBool>,
    ) -> Result<Opened, Failure> {
        if !url.starts_with("rtsp:") {
            return Source::prepare_with(url, file)
                .map(Opened::Source)
                .map_err(Failure::source);
        }
        let url = RtspUrl::parse(url).map_err(|e| Failure::source(e.into()))?;
        let from_env = std::env::var(USERNAME_ENV)
            .ok()
            .map(|username| Credentials {
                username,
                password: std::env::var(PASSWORD_ENV).unwrap_or_default(),
            });
        info!(
            transport = ?url.transport,
            stall_sec = url.stall_timeout.as_secs(),
            credentials = if url.credentials.is_some() {
                "from the URL"
            } else if from_env.is_some() {
                "from the environment"
            } else {
                "none"
            },
            "camera"
        );
        let camera = Camera::new(url, from_env, clock, stop).map_err(|e| {
            Failure::new(status::SOURCE, format!("cannot start the RTSP client: {e}"))
        })?;
        info!(addresses = ?camera.addresses(), "camera host resolved");
        Ok(Opened::Camera(Box::new(camera)))
    }

    /// Reads (parses) the source; call it in the sandbox.
    fn start(self, clock: Arc<dyn Clock>, stop: Arc<AtomicBool>) -> Result<Input, Failure> {
        match self {
            Opened::Source(prepared) => {
                let source = Source::start(prepared, clock, stop).map_err(Failure::source)?;
                info!(speed = ?source.speed(), "source opened");
                Ok(Input::Source(source))
            }
            Opened::Camera(camera) => Ok(Input::Camera(camera)),
        }
    }
}

/// Where frames come from: a clip or generator ([`Source`]), or an RTSP camera.
enum Input {
    Source(Source),
    /// Boxed: a camera holds a runtime and is much larger than a source.
    Camera(Box<Camera>),
}

impl Input {
    /// The next frame or end of a camera session; `None` once stopped.
    fn next_event(&mut self) -> Option<Event> {
        match self {
            Input::Source(s) => s.next_frame().map(Event::Frame),
            Input::Camera(c) => c.next_event(),
        }
    }
}

/// Closes the growing recording, if any, with `reason` (a camera session ended); the next
/// frame begins a new run.
fn close(writer: &mut Writer<Client>, reason: &str) -> Result<(), Failure> {
    if let Some(id) = writer.growing() {
        info!(recording = %id, reason, "closing: the camera session ended");
    }
    match writer.close(reason) {
        Ok(()) => Ok(()),
        Err(WriterError::Link(e)) => Err(Failure::link(e)),
        Err(e) => Err(Failure::new(status::CONNECTION_LOST, e)),
    }
}

/// Closes the growing recording with `reason` and waits (at most [`SHUTDOWN_ACCEPT_WAIT`] in
/// all) for the syncer to accept it. A timeout is only a warning: the syncer still finishes
/// the close, or salvages the recording once the connection ends.
fn finish(writer: &mut Writer<Client>, reason: &str) -> Result<(), Failure> {
    let deadline = Instant::now() + SHUTDOWN_ACCEPT_WAIT;
    let result = writer
        .wait_accepted(SHUTDOWN_ACCEPT_WAIT)
        .and_then(|()| writer.close(reason))
        .and_then(|()| writer.wait_accepted(deadline.saturating_duration_since(Instant::now())));
    match result {
        Ok(()) => {
            info!(
                committed_on_this_connection = writer.link().committed_recordings(),
                "last recording accepted"
            );
            Ok(())
        }
        Err(WriterError::Link(LinkError::AcceptTimeout { id, waited })) => {
            warn!(recording = %id, ?waited, "the syncer did not accept the close in time");
            Ok(())
        }
        Err(WriterError::Link(e)) => Err(Failure::link(e)),
        Err(e) => Err(Failure::new(status::CONNECTION_LOST, e)),
    }
}

/// Takes the inherited descriptor `fd` (`--source-fd`) as a `file:` source's file: it must be
/// open for reading.
fn inherited_source(fd: RawFd) -> Result<std::fs::File, Failure> {
    let usage = |what: &str| Failure::new(status::USAGE, format!("--source-fd {fd} {what}"));
    // SAFETY: fcntl(F_GETFL) only reads the descriptor's flags; any integer is fine to ask.
    let flags = unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFL) };
    if flags == -1 {
        return Err(usage("is not open"));
    }
    if flags & nix::libc::O_ACCMODE == nix::libc::O_WRONLY {
        return Err(usage("is not open for reading"));
    }
    // SAFETY: `fd` is open (checked above), was inherited for this purpose, and nothing in
    // this process has taken it: this runs right after fd 3 is taken, and only once.
    Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Takes fd 3 as the syncer connection, checking that it is a connected Unix stream socket.
fn syncer_connection() -> Result<Conn, Failure> {
    let usage = |what: String| {
        Failure::new(
            status::USAGE,
            format!(
                "fd {SYNCER_FD} {what}; nvr-ingest must be started with the syncer connection on fd {SYNCER_FD}"
            ),
        )
    };
    // SAFETY: fcntl(F_GETFD) only reads the descriptor's flags; any integer is fine to ask.
    if unsafe { nix::libc::fcntl(SYNCER_FD, nix::libc::F_GETFD) } == -1 {
        return Err(usage("is not open".to_owned()));
    }
    // SAFETY: fd 3 is open (checked above), was inherited, and nothing in this process has
    // taken it: this runs before anything else opens a descriptor, and only once.
    let fd = unsafe { OwnedFd::from_raw_fd(SYNCER_FD) };
    let is_socket = nix::sys::stat::fstat(&fd)
        .map_err(|e| usage(format!("cannot be inspected ({e})")))?
        .st_mode
        & nix::libc::S_IFMT
        == nix::libc::S_IFSOCK;
    if !is_socket {
        return Err(usage("is not a socket".to_owned()));
    }
    let is_unix = nix::sys::socket::getsockname::<SockaddrStorage>(fd.as_raw_fd())
        .is_ok_and(|a| a.family() == Some(AddressFamily::Unix));
    let is_stream =
        nix::sys::socket::getsockopt(&fd, sockopt::SockType).is_ok_and(|t| t == SockType::Stream);
    if !is_unix || !is_stream {
        return Err(usage("is not a Unix stream socket".to_owned()));
    }
    Ok(Conn::from(UnixStream::from(fd)))
}
