//! A real RTSP server on loopback for the tests of `rtsp://` sources: GStreamer's
//! gst-rtsp-server (Debian's packages, run by the system `/usr/bin/python3`) serving the
//! shipped clip, remuxed to .mp4, in an endless loop; see `tests/rtsp/serve.py`. Or, to change
//! the stream's video parameters mid-session as a reconfigured camera does, that clip in turn
//! with a smaller generated one ([`RtspServer::start_alternating`], [`small_clip_mp4`]). Also
//! [`ffprobe_video_pts`], to read a stream with a client nobody here wrote.
//!
//! The server is ended only by its own pid (SIGTERM in [`RtspServer::stop`], SIGKILL on drop).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::Proc;

/// The system Python, which has Debian's GStreamer bindings (not a pyenv one on `PATH`).
const PYTHON: &str = "/usr/bin/python3";

/// The mount point `serve.py` is started with.
const MOUNT: &str = "/clip";

/// How long the server may take to print its readiness line. It takes about 0.4 s on an idle
/// machine; a loaded 2-core CI machine running tests in parallel takes longer.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`RtspServer::stop`] waits for the server to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The Debian packages `serve.py` needs (what `.ci/run` installs).
const PACKAGES: &str = "gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base \
                        gstreamer1.0-plugins-good gstreamer1.0-plugins-bad";

/// Whether the test `test` must be skipped because the server cannot run here
/// ([`rtsp_server_available`]); if so, says `SKIPPED` loudly, with the reason.
pub fn skip_without_rtsp_server(test: &str) -> bool {
    match rtsp_server_available() {
        Ok(()) => false,
        Err(why) => {
            eprintln!("SKIPPED: {test} did not run: {why}");
            true
        }
    }
}

/// Checks that the server can run here: `/usr/bin/python3` imports GStreamer and
/// GstRtspServer 1.0 through gi and has the elements `serve.py` uses, and `ffmpeg` (for
/// [`clip_mp4`]) and `ffprobe` (for [`ffprobe_video_pts`]) run. The error says what is missing.
pub fn rtsp_server_available() -> Result<(), String> {
    const CHECK: &str = "\
import gi
gi.require_version('Gst', '1.0')
gi.require_version('GstRtspServer', '1.0')
from gi.repository import Gst, GstRtspServer
Gst.init(None)
missing = [e for e in ('filesrc', 'qtdemux', 'h264parse', 'appsink', 'appsrc', 'rtph264pay')
           if Gst.ElementFactory.find(e) is None]
if missing:
    raise SystemExit('missing GStreamer elements: ' + ', '.join(missing))
";
    let out = Command::new(PYTHON)
        .args(["-c", CHECK])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {PYTHON}: {e} (install {PACKAGES})"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = stderr.lines().last().unwrap_or("no error output");
        return Err(format!(
            "{PYTHON} cannot load GStreamer's RTSP server ({}): {why} (install {PACKAGES})",
            out.status
        ));
    }
    for tool in ["ffmpeg", "ffprobe"] {
        let ok = Command::new(tool)
            .arg("-version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(format!("`{tool} -version` does not run (install ffmpeg)"));
        }
    }
    Ok(())
}

/// Remuxes the shipped clip ([`crate::clip_path`]: raw H.264, 30 fps, 120 frames) into
/// `dir/clip.mp4` and returns its path. The raw stream has no timestamps; `-r 30` on the input
/// gives each frame its 1/30 s, which the .mp4 keeps (served as raw Annex B, every timestamp
/// would be zero).
pub fn clip_mp4(dir: &Path) -> PathBuf {
    let mp4 = dir.join("clip.mp4");
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-r", "30", "-i"])
        .arg(crate::clip_path())
        .args(["-c", "copy"])
        .arg(&mp4)
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg could not remux the clip into {} ({}): {}",
        mp4.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    mp4
}

/// The size of [`small_clip_mp4`]'s frames, width by height.
pub const SMALL_CLIP_SIZE: (u64, u64) = (160, 120);

/// How many frames [`small_clip_mp4`] has: 2 s at 30 fps.
pub const SMALL_CLIP_FRAMES: i32 = 60;

/// Generates `dir/small.mp4` with ffmpeg's libx264 and returns its path: a test pattern of
/// [`SMALL_CLIP_SIZE`], [`SMALL_CLIP_FRAMES`] frames at 30 fps (as the shipped clip), Main
/// profile without B-frames, a key frame every second; its SPS and PPS differ from the shipped
/// clip's (320x240), so switching to it changes the stream's video parameters. (Debian's
/// `ffmpeg` brings libx264: `libavcodec59` depends on `libx264-164`.)
pub fn small_clip_mp4(dir: &Path) -> PathBuf {
    let mp4 = dir.join("small.mp4");
    let (width, height) = SMALL_CLIP_SIZE;
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc=size={width}x{height}:rate=30"))
        .args(["-frames:v", &SMALL_CLIP_FRAMES.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-profile:v",
            "main",
            "-pix_fmt",
            "yuv420p",
        ])
        .args([
            "-g",
            "30",
            "-bf",
            "0",
            "-x264-params",
            "keyint=30:scenecut=0",
        ])
        .arg(&mp4)
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg could not encode {} with libx264 ({}): {}",
        mp4.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    mp4
}

/// A running `tests/rtsp/serve.py`: GStreamer's RTSP server on 127.0.0.1 serving an .mp4 (or
/// two in turn) at `/clip`, looped forever with ever-increasing timestamps, over RTP/TCP
/// (interleaved) and RTP/UDP. Killed by its pid (SIGKILL) when dropped, through its [`Proc`].
pub struct RtspServer {
    proc: Option<Proc>,
    mp4: PathBuf,
    /// Served after `mp4`, in turn with it (`serve.py --then`).
    then: Option<PathBuf>,
    auth: Option<(String, String)>,
    port: u16,
    stderr: Arc<Mutex<String>>,
}

impl RtspServer {
    /// Starts the server on `port` (`None`: a free port the server picks itself, so no other
    /// process can take it between picking and binding) and waits for it to listen. With
    /// `auth = Some((user, password))` the stream requires those credentials (Digest
    /// authentication).
    pub fn start(mp4: &Path, port: Option<u16>, auth: Option<(&str, &str)>) -> RtspServer {
        let mut s = RtspServer {
            proc: None,
            mp4: mp4.to_owned(),
            then: None,
            auth: auth.map(|(u, p)| (u.to_owned(), p.to_owned())),
            port: port.unwrap_or(0),
            stderr: Arc::default(),
        };
        s.spawn();
        s
    }

    /// Starts the server on a free port, without credentials, serving `first` then `second`
    /// then `first` again and so on, each pass from its first key frame, timestamps increasing
    /// throughout; and waits for it to listen. When the two have different video parameters
    /// (see [`small_clip_mp4`]), each switch sends the new SPS and PPS in-band on that key
    /// frame; the SDP has only `first`'s. Each client starts at `first`'s frame 0.
    pub fn start_alternating(first: &Path, second: &Path) -> RtspServer {
        let mut s = RtspServer {
            proc: None,
            mp4: first.to_owned(),
            then: Some(second.to_owned()),
            auth: None,
            port: 0,
            stderr: Arc::default(),
        };
        s.spawn();
        s
    }

    /// `rtsp://127.0.0.1:PORT/clip`, without credentials.
    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}{MOUNT}", self.port)
    }

    /// The TCP port the server listens on (kept across [`RtspServer::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Freezes the server (SIGSTOP): its connections stay open but nothing is sent or
    /// answered, as with a camera that hangs. [`RtspServer::resume`] undoes it.
    pub fn pause(&self) {
        self.proc
            .as_ref()
            .expect("server running")
            .signal(Signal::SIGSTOP);
    }

    /// Lets a [`RtspServer::pause`]d server go on (SIGCONT).
    pub fn resume(&self) {
        self.proc
            .as_ref()
            .expect("server running")
            .signal(Signal::SIGCONT);
    }

    /// What the server has written to stderr so far, in every run (for failure messages).
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// Stops the server with SIGTERM and waits for it to exit; panics if it does not exit
    /// cleanly. Clients' connections drop. Does nothing if it is stopped already.
    pub fn stop(&mut self) {
        let Some(mut proc) = self.proc.take() else {
            return;
        };
        if proc.try_status().is_none() {
            proc.signal(Signal::SIGTERM);
        }
        let status = proc.wait(STOP_TIMEOUT);
        assert!(
            status.success(),
            "RTSP server on port {} exited with {status} on SIGTERM; stderr:\n{}",
            self.port,
            self.stderr()
        );
    }

    /// Stops the server if it runs, then starts it again on the same port (the server's
    /// listening socket has SO_REUSEADDR, so connections left in TIME_WAIT do not block it).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts `serve.py` on `self.port` (0: any free one, which then becomes `self.port`) and
    /// waits for its `READY rtsp://127.0.0.1:PORT/clip` line.
    fn spawn(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("rtsp/serve.py");
        let mut cmd = Command::new(PYTHON);
        cmd.arg(&script)
            .arg("--mp4")
            .arg(&self.mp4)
            .args(["--port", &self.port.to_string(), "--path", MOUNT])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(then) = &self.then {
            cmd.arg("--then").arg(then);
        }
        if let Some((user, password)) = &self.auth {
            cmd.args(["--user", user, "--password", password]);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {PYTHON} {}: {e}", script.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let proc = Proc {
            child,
            name: format!("RTSP server (port {})", self.port),
        };
        let collected = Arc::clone(&self.stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut s = collected.lock().expect("stderr lock");
                s.push_str(&line);
                s.push('\n');
            }
        });
        // The reader sends the readiness line, then keeps draining stdout until the server
        // exits; the channel closes early if the server exits first.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("READY ") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => line,
            Err(e) => {
                drop(proc); // kills it by pid if still running
                // Give the stderr reader a moment to collect the last words.
                std::thread::sleep(Duration::from_millis(200));
                let why = match e {
                    mpsc::RecvTimeoutError::Timeout => format!("not ready in {READY_TIMEOUT:?}"),
                    mpsc::RecvTimeoutError::Disconnected => "exited before ready".to_owned(),
                };
                panic!(
                    "RTSP server (port {}) {why}; stderr:\n{}",
                    self.port,
                    self.stderr()
                );
            }
        };
        let port: u16 = line
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.strip_suffix(MOUNT))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("RTSP server printed a malformed readiness line {line:?}"));
        assert!(
            self.port == 0 || self.port == port,
            "RTSP server asked for port {} but listens on {port}",
            self.port
        );
        self.port = port;
        self.proc = Some(proc);
    }
}

/// Reads `seconds` of `url`'s video with `ffprobe` over `transport` ("tcp" or "udp") and
/// returns the packets' presentation times in seconds, in arrival order (packets with no
/// time yet, such as the very first before RTCP sync, are left out). `Err` holds ffprobe's
/// exit status and stderr, e.g. `401 Unauthorized`.
pub fn ffprobe_video_pts(url: &str, transport: &str, seconds: u32) -> Result<Vec<f64>, String> {
    let mut child = Command::new("ffprobe")
        .args(["-v", "error", "-rtsp_transport", transport])
        // Socket I/O timeout in microseconds: a stalled server fails the read, not hangs it.
        .args(["-timeout", "5000000"])
        .args(["-select_streams", "v:0", "-show_entries", "packet=pts_time"])
        .args(["-of", "csv=p=0", "-read_intervals", &format!("%+{seconds}")])
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ffprobe");
    let read_all = |mut r: Box<dyn Read + Send>| -> JoinHandle<String> {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = read_all(Box::new(child.stderr.take().expect("piped stderr")));
    let mut proc = Proc {
        child,
        name: format!("ffprobe {url} over {transport}"),
    };
    let status = proc.wait(Duration::from_secs(u64::from(seconds) + 30));
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    if !status.success() {
        return Err(format!(
            "ffprobe {url} over {transport}: {status}: {stderr}"
        ));
    }
    // One `pts_time[,side data…]` line per packet.
    Ok(stdout
        .lines()
        .filter_map(|l| l.split(',').next())
        .filter_map(|t| t.parse().ok())
        .collect())
}
