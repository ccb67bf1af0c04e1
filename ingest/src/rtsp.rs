//! `rtsp://` sources: an IP camera's H.264 stream, read with the `retina` RTSP client (the one
//! written for Moonfire NVR).
//!
//! # URL
//!
//! `rtsp://[USER:PASSWORD@]HOST[:PORT]/PATH[?QUERY]`, parsed by [`RtspUrl::parse`] (in
//! `protocol::source_url`, so that `nvr camera add` checks a URL exactly as it is read here).
//! Two query parameters are ours and are taken out before the URL goes to the camera:
//!
//! - `transport=tcp|udp`: how RTP packets travel. `tcp` (the default) interleaves them on the
//!   RTSP connection, which survives NAT and firewalls and never reorders; `udp` is for cameras
//!   on a LAN (retina drops out-of-order packets and sends no receiver reports).
//! - `stall_sec=N` (1 to 300, default [`DEFAULT_STALL_SEC`]): a session that delivers no video
//!   frame for this long is ended as stalled. Needed because a camera (or server) that stops
//!   sending without closing the connection never ends the stream on its own.
//!
//! The rest of the query is the camera's and is sent as given. Credentials come from the URL's
//! user info (percent-decoded), or else from [`Credentials`] given separately: `nvr-ingest`
//! reads them from its environment so that a password never shows on a command line.
//!
//! # Addresses
//!
//! [`Camera::new`] resolves the URL's host once, before the ingest enters its sandbox (which
//! leaves no file system for the resolver's configuration, and no socket but TCP to the
//! camera's port): every connect goes to one of those addresses, by IP, the next one after a
//! failed connect. The request URL names the address too; RTSP has no `Host` header, and
//! digest authentication covers whatever URL is sent. A camera whose name moves to another
//! address is reached again once its ingest restarts.
//!
//! # Sessions
//!
//! [`Camera::next_event`] connects when it has no session (DESCRIBE, SETUP of the first H.264
//! video stream, PLAY), each step bounded by [`CONNECT_TIMEOUT`], and yields the session's
//! frames, starting at its first key frame (a recording must start decodable). A session
//! ends, yielding [`Event::Ended`] with a reason meant for the recording's end reason, when:
//! the camera closes it, an RTSP or RTP error occurs, no frame arrives for the stall timeout,
//! the camera sends a frame the writer could not record (pts not increasing, a frame too
//! large, parameters our H.264 parser refuses), or the caller ends it
//! ([`Camera::end_session`]). Then, and after a failed connect, the camera waits
//! ([`RECONNECT_BACKOFF_INITIAL`], doubling up to [`RECONNECT_BACKOFF_MAX`]; back to the
//! initial delay once a session lasted [`STABLE_SESSION`]) and connects again. Nothing here
//! ever gives up or panics on what a camera sends: a network error costs a gap, not the
//! process.
//!
//! # Time
//!
//! A frame's pts is its RTP timestamp (extended to 64 bits by retina) minus that of the
//! session's first packet, converted to 90 kHz: it restarts near 0 in every session (frames
//! before the first key frame are skipped), and each session is a new run for the writer. Its local time is the realtime clock when the frame was taken from the
//! session.

use std::fmt;
use std::net::{IpAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures_util::StreamExt;
use protocol::messages::MAX_END_REASON_BYTES;
use protocol::{Clock, TIME_UNITS_PER_SEC};
use retina::client::{
    Demuxed, PlayOptions, Session, SessionOptions, SetupOptions, TcpTransportOptions,
    UdpTransportOptions,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use tracing::{info, warn};

use crate::h264::{self, SampleEntry};
use crate::source::Frame;

/// Longest each of DESCRIBE, SETUP and PLAY may take before the connect counts as failed.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Wait before the first reconnect after a session ended or a connect failed.
pub const RECONNECT_BACKOFF_INITIAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Longest wait between reconnects; the wait doubles after each failure until it reaches this.
pub const RECONNECT_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// A session that lasted this long resets the reconnect wait to its initial value.
pub const STABLE_SESSION: std::time::Duration = std::time::Duration::from_secs(30);

/// The port of an `rtsp://` URL without one (retina's default too).
pub const DEFAULT_PORT: u16 = 554;

/// How long dropping a [`Camera`] waits for the TEARDOWN of its session.
const TEARDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// Longest a wait for the camera goes without checking the stop flag.
const STOP_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// A user name and password for a camera (never shown by `Debug`).
pub use protocol::source_url::UrlCredentials as Credentials;
pub use protocol::source_url::{DEFAULT_STALL_SEC, MAX_STALL_SEC, RtspUrl, Transport};

/// Why a [`Camera`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CameraError {
    #[error("cannot build the I/O runtime: {0}")]
    Runtime(#[source] std::io::Error),

    #[error("cannot resolve the camera's host {host:?}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },

    #[error("the camera's host {host:?} resolves to no address")]
    NoAddress { host: String },
}

/// What [`Camera::next_event`] yields.
#[derive(Debug)]
pub enum Event {
    /// The next frame of the session.
    Frame(Frame),
    /// The session ended; the growing recording should close with this end reason (it
    /// starts with `camera-`). The camera reconnects on the next call.
    Ended { reason: String },
}

/// The playing session and what is known of its frames.
struct Playing {
    demuxed: Pin<Box<Demuxed>>,
    /// Index of the H.264 stream in the session's streams.
    stream_i: usize,
    /// The stream's RTP clock rate in Hz.
    clock_rate: u32,
    /// The sample entry of the current parameters, once a key frame has arrived.
    entry: Option<Arc<SampleEntry>>,
    /// pts of the last frame yielded, 90 kHz.
    last_pts_90k: Option<i64>,
    /// When the last video frame (or the PLAY) arrived: the stall clock.
    last_frame: Instant,
    started: Instant,
}

/// An RTSP camera: connects, yields frames, and reconnects with backoff (see the module docs).
pub struct Camera {
    url: RtspUrl,
    /// The host's addresses, resolved once (see the module docs, "Addresses"); never empty.
    addresses: Vec<IpAddr>,
    /// Index in `addresses` of the one the next connect goes to.
    next_address: usize,
    credentials: Option<Credentials>,
    clock: Arc<dyn Clock>,
    stop: Arc<AtomicBool>,
    runtime: tokio::runtime::Runtime,
    session: Option<Playing>,
    /// How long to wait before the next connect; `None` connects at once.
    backoff: Option<std::time::Duration>,
    /// Consecutive failed connects, for the logs.
    failures: u32,
    /// Longest each connect step may take: [`CONNECT_TIMEOUT`] (shorter in tests).
    connect_timeout: std::time::Duration,
}

impl fmt::Debug for Camera {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Camera")
            .field("url", &self.url.url.as_str())
            .field("transport", &self.url.transport)
            .field("playing", &self.session.is_some())
            .finish_non_exhaustive()
    }
}

impl Camera {
    /// A camera at `url`, authenticating with the URL's credentials or else `credentials`:
    /// builds the I/O runtime and resolves the host (see the module docs, "Addresses").
    /// Nothing is sent until [`Camera::next_event`].
    pub fn new(
        url: RtspUrl,
        credentials: Option<Credentials>,
        clock: Arc<dyn Clock>,
        stop: Arc<AtomicBool>,
    ) -> Result<Camera, CameraError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(CameraError::Runtime)?;
        let addresses = resolve(&url)?;
        Ok(Camera {
            credentials: url.credentials.clone().or(credentials),
            url,
            addresses,
            next_address: 0,
            clock,
            stop,
            runtime,
            session: None,
            backoff: None,
            failures: 0,
            connect_timeout: CONNECT_TIMEOUT,
        })
    }

    /// The camera's TCP port, the only one the ingest's sandbox lets it connect to.
    pub fn port(&self) -> u16 {
        port(&self.url)
    }

    /// The addresses the camera's host resolved to.
    pub fn addresses(&self) -> &[IpAddr] {
        &self.addresses
    }

    /// The next frame, or the end of a session; `None` once the stop flag is set (checked at
    /// least every 100 ms while waiting for the camera).
    pub fn next_event(&mut self) -> Option<Event> {
        loop {
            if self.stopped() {
                return None;
            }
            if self.session.is_none() {
                if let Some(wait) = self.backoff
                    && !self.sleep(wait)
                {
                    return None;
                }
                self.connect();
                continue;
            }
            match self.poll() {
                Ok(Some(frame)) => return Some(Event::Frame(frame)),
                Ok(None) => continue,
                Err(reason) => {
                    self.end_session(&reason);
                    return Some(Event::Ended { reason });
                }
            }
        }
    }

    /// Ends the session (if any) with `reason`, logged, e.g. because the writer refused one of
    /// its frames; the next [`Camera::next_event`] reconnects after the backoff.
    pub fn end_session(&mut self, reason: &str) {
        let Some(s) = self.session.take() else {
            return;
        };
        let lasted = s.started.elapsed();
        warn!(
            reason,
            lasted_sec = lasted.as_secs_f64(),
            "camera session ended"
        );
        self.backoff = Some(if lasted >= STABLE_SESSION {
            RECONNECT_BACKOFF_INITIAL
        } else {
            next_backoff(self.backoff)
        });
        // Dropping a session spawns its TEARDOWN (retina's default policy) on the runtime,
        // which must be current; the task runs during the next `block_on`.
        let _runtime = self.runtime.enter();
        drop(s);
    }

    /// DESCRIBE, SETUP, PLAY, to the next of the host's addresses. On failure, logs, sets the
    /// backoff and moves on to the following address.
    fn connect(&mut self) {
        let address = self.addresses[self.next_address];
        let mut url = self.url.clone();
        url.url
            .set_ip_host(address)
            .expect("an rtsp:// URL has a host, which an IP address can replace");
        let creds = self
            .credentials
            .clone()
            .map(|c| retina::client::Credentials {
                username: c.username,
                password: c.password,
            });
        let stop = self.stop.clone();
        let limit = self.connect_timeout;
        let connecting = async move {
            let options = SessionOptions::default()
                .creds(creds)
                .user_agent(format!("nvr-ingest/{}", env!("CARGO_PKG_VERSION")));
            let mut session = bounded(
                "DESCRIBE",
                limit,
                Session::describe(url.url.clone(), options),
            )
            .await?;
            let stream_i = session
                .streams()
                .iter()
                .position(|s| s.media() == "video" && s.encoding_name() == "h264")
                .ok_or_else(|| {
                    let offered: Vec<String> = session
                        .streams()
                        .iter()
                        .map(|s| format!("{}/{}", s.media(), s.encoding_name()))
                        .collect();
                    format!(
                        "the camera offers no H.264 video stream (it offers: {})",
                        offered.join(", ")
                    )
                })?;
            let clock_rate = session.streams()[stream_i].clock_rate_hz();
            if clock_rate == 0 {
                return Err("the camera's H.264 stream has an RTP clock rate of 0".to_owned());
            }
            let transport = match url.transport {
                Transport::Tcp => retina::client::Transport::Tcp(TcpTransportOptions::default()),
                Transport::Udp => retina::client::Transport::Udp(UdpTransportOptions::default()),
            };
            let setup = SetupOptions::default()
                .transport(transport)
                .frame_format(FrameFormat::MP4);
            bounded("SETUP", limit, session.setup(stream_i, setup)).await?;
            let playing = bounded("PLAY", limit, session.play(PlayOptions::default())).await?;
            let demuxed = playing
                .demuxed()
                .map_err(|e| format!("cannot depacketize the stream: {e}"))?;
            Ok::<_, String>((demuxed, stream_i, clock_rate))
        };
        // The connect runs in slices of STOP_POLL, so a stop is honoured within one even while
        // a camera takes its time to answer (each step may take up to `limit`).
        let result = self.runtime.block_on(async move {
            let mut connecting = std::pin::pin!(connecting);
            loop {
                match tokio::time::timeout(STOP_POLL, &mut connecting).await {
                    Ok(r) => return Some(r),
                    Err(_) if stop.load(Ordering::SeqCst) => return None,
                    Err(_) => {}
                }
            }
        });
        let Some(result) = result else {
            return; // stopped; the half-made session is dropped on this runtime
        };
        match result {
            Ok((demuxed, stream_i, clock_rate)) => {
                info!(
                    url = %self.url.url,
                    %address,
                    transport = ?self.url.transport,
                    clock_rate,
                    "camera session playing"
                );
                let now = Instant::now();
                self.session = Some(Playing {
                    demuxed: Box::pin(demuxed),
                    stream_i,
                    clock_rate,
                    entry: None,
                    last_pts_90k: None,
                    last_frame: now,
                    started: now,
                });
                self.failures = 0;
            }
            Err(reason) => {
                self.failures = self.failures.saturating_add(1);
                self.next_address = (self.next_address + 1) % self.addresses.len();
                let wait = next_backoff(self.backoff);
                warn!(
                    url = %self.url.url,
                    %address,
                    failures = self.failures,
                    retry_in_sec = wait.as_secs_f64(),
                    "cannot connect to the camera: {reason}"
                );
                self.backoff = Some(wait);
            }
        }
    }

    /// Waits up to [`STOP_POLL`] for the session's next item. `Ok(None)`: nothing for the
    /// writer yet (no item in time, RTCP, a frame before the first key frame); `Err`: the
    /// session is over, with the end reason.
    fn poll(&mut self) -> Result<Option<Frame>, String> {
        let s = self.session.as_mut().expect("poll needs a session");
        let stall = self.url.stall_timeout;
        // Stalled only if nothing is waiting either: time the writer spent (a retried write,
        // a slow close) is not the camera's.
        let item = self
            .runtime
            .block_on(async { tokio::time::timeout(STOP_POLL, s.demuxed.next()).await });
        let item = match item {
            Err(_) if s.last_frame.elapsed() >= stall => {
                return Err(format!(
                    "camera-stalled: no frame for {} s",
                    stall.as_secs()
                ));
            }
            Err(_) => return Ok(None),
            Ok(None) => return Err("camera-disconnected: the camera ended the session".to_owned()),
            Ok(Some(Err(e))) => return Err(reason("camera-error", &e)),
            Ok(Some(Ok(item))) => item,
        };
        let CodecItem::VideoFrame(f) = item else {
            return Ok(None);
        };
        if f.stream_id() != s.stream_i {
            return Ok(None);
        }
        s.last_frame = Instant::now();
        if f.loss() > 0 {
            warn!(packets = f.loss(), "RTP packets lost before this frame");
        }
        if f.has_new_parameters() || s.entry.is_none() {
            if s.entry.is_none() && !f.is_random_access_point() {
                return Ok(None); // wait for a key frame to start on
            }
            let streams = s.demuxed.streams();
            let Some(ParametersRef::Video(params)) = streams[s.stream_i].parameters() else {
                return Err("camera-bad-stream: a video frame without video parameters".to_owned());
            };
            let entry = SampleEntry::from_avc_decoder_configuration_record(params.extra_data())
                .map_err(|e| reason("camera-bad-stream: parameters refused", &e))?;
            if s.entry.as_deref() != Some(&entry) {
                info!(
                    codec = %entry.rfc6381_codec,
                    width = entry.width,
                    height = entry.height,
                    "camera video parameters"
                );
                s.entry = Some(Arc::new(entry));
            }
        }
        let entry = s.entry.clone().expect("set above");
        let pts_90k = i64::try_from(
            i128::from(f.timestamp().elapsed()) * i128::from(TIME_UNITS_PER_SEC)
                / i128::from(s.clock_rate),
        )
        .map_err(|_| "camera-bad-stream: timestamp out of range".to_owned())?;
        if let Some(last) = s.last_pts_90k
            && pts_90k <= last
        {
            return Err(format!(
                "camera-bad-stream: timestamp went from {last} to {pts_90k} (90 kHz)"
            ));
        }
        s.last_pts_90k = Some(pts_90k);
        let is_key = f.is_random_access_point();
        let data = f.into_data();
        if data.is_empty() || data.len() > h264::MAX_FRAME_BYTES {
            return Err(format!(
                "camera-bad-stream: a frame of {} bytes (limit {})",
                data.len(),
                h264::MAX_FRAME_BYTES
            ));
        }
        Ok(Some(Frame {
            data,
            is_key,
            pts_90k,
            local_time: self.clock.realtime(),
            sample_entry: entry,
        }))
    }

    /// Sleeps `d` in slices, checking the stop flag; false if it was set. It sleeps on the
    /// runtime, so that the TEARDOWN of an ended session, spawned there, goes out meanwhile.
    fn sleep(&self, d: std::time::Duration) -> bool {
        let end = Instant::now() + d;
        loop {
            if self.stopped() {
                return false;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            let slice = left.min(STOP_POLL);
            self.runtime
                .block_on(async { tokio::time::sleep(slice).await });
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

impl Drop for Camera {
    /// Drops the session inside the runtime (see [`Camera::end_session`]) and gives its
    /// TEARDOWN up to [`TEARDOWN_GRACE`] to reach the camera, so that a camera limited to a
    /// few sessions is not left holding ours until it times out.
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _runtime = self.runtime.enter();
            drop(s);
            self.runtime
                .block_on(async { tokio::time::sleep(TEARDOWN_GRACE).await });
        }
    }
}

/// The port of `url`: its own, or [`DEFAULT_PORT`].
fn port(url: &RtspUrl) -> u16 {
    url.url.port().unwrap_or(DEFAULT_PORT)
}

/// The addresses of `url`'s host: itself if it is an IP address, else what the system's
/// resolver says.
fn resolve(url: &RtspUrl) -> Result<Vec<IpAddr>, CameraError> {
    let host = match url.url.host() {
        Some(url::Host::Ipv4(ip)) => return Ok(vec![IpAddr::V4(ip)]),
        Some(url::Host::Ipv6(ip)) => return Ok(vec![IpAddr::V6(ip)]),
        Some(url::Host::Domain(host)) => host,
        None => "",
    };
    let resolved = (host, port(url))
        .to_socket_addrs()
        .map_err(|source| CameraError::Resolve {
            host: host.to_owned(),
            source,
        })?;
    let mut addresses: Vec<IpAddr> = Vec::new();
    for a in resolved {
        if !addresses.contains(&a.ip()) {
            addresses.push(a.ip());
        }
    }
    if addresses.is_empty() {
        return Err(CameraError::NoAddress {
            host: host.to_owned(),
        });
    }
    Ok(addresses)
}

/// Runs one step of a connect, bounded by `limit`; the error names the step.
async fn bounded<T>(
    what: &str,
    limit: std::time::Duration,
    step: impl std::future::Future<Output = Result<T, retina::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, step).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(one_line(&format!("{what} failed: {e}"))),
        Err(_) => Err(format!("{what} timed out after {limit:?}")),
    }
}

/// `text` with its line breaks turned into `; `, for single-line logs and end reasons.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The wait after `current` (none yet: the initial one).
fn next_backoff(current: Option<std::time::Duration>) -> std::time::Duration {
    match current {
        None => RECONNECT_BACKOFF_INITIAL,
        Some(d) => (d * 2).min(RECONNECT_BACKOFF_MAX),
    }
}

/// An end reason `prefix: error` on one line (retina's errors span several), cut to the
/// syncer's [`MAX_END_REASON_BYTES`]: an error text from a camera can be long.
pub fn reason(prefix: &str, e: &dyn fmt::Display) -> String {
    let mut r = one_line(&format!("{prefix}: {e}"));
    if r.len() > MAX_END_REASON_BYTES {
        let mut cut = MAX_END_REASON_BYTES;
        while !r.is_char_boundary(cut) {
            cut -= 1;
        }
        r.truncate(cut);
    }
    r
}

#[cfg(test)]
mod tests;
