//! Framed connections over Unix stream sockets, with descriptor passing.
//!
//! A [`Conn`] sends and receives the frames of [`crate::codec`] and, where the protocol says
//! so, one file descriptor with a frame (`SCM_RIGHTS`, in the same `sendmsg` as the frame's
//! first bytes).
//!
//! # Descriptors arrive only where the protocol expects one
//!
//! The kernel attaches a passed descriptor to the bytes it was sent with, and installs it in
//! the receiver on the `recvmsg` that reads the first of those bytes, if that call has room for
//! it. Hence:
//!
//! - [`Conn::recv`] reads with `recvmsg` and no control buffer: a descriptor a peer attaches
//!   anyway is closed by the kernel, never installed here, and the read reports it
//!   (`MSG_CTRUNC`) as [`WireError::UnexpectedDescriptor`]. A hostile peer cannot fill the
//!   receiver's descriptor table or slip it a file.
//! - [`Conn::recv_with_fd`] and [`Conn::recv_with_optional_fd`] offer a control buffer on the
//!   first read of the frame only (the sender attaches the descriptor to the prefix), and
//!   accept exactly one descriptor there; extra ones are closed and refused.
//! - Nothing reads ahead: the prefix and then exactly the body are read, never a byte of the
//!   next frame, whose descriptor a buffered read would otherwise consume and lose.
//!
//! # Errors close the connection
//!
//! After any error, the connection's framing state is unknown (a frame may be half read) and
//! the protocol treats the peer as broken: the caller drops the [`Conn`].
//!
//! The socket must be in blocking mode; read and write timeouts set on [`Conn::stream`] surface
//! as [`WireError::Io`].

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, send, sendmsg, sockopt,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{self, PREFIX_BYTES};
use crate::messages::PROTOCOL_VERSION;

/// Most descriptors one `SCM_RIGHTS` message can carry on Linux (`SCM_MAX_FD`). A receive that
/// accepts a descriptor makes room for this many, so that a peer sending more than one cannot
/// truncate the control data (which would leave the installed descriptors unreachable, i.e.
/// leaked); the extra ones are then closed.
const MAX_FDS_PER_MESSAGE: usize = 253;

/// Why a frame could not be sent or received. Every variant but [`WireError::Io`] on a send
/// means the peer is broken or hostile; the connection is dropped either way.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed (including a timeout, `EAGAIN`, and a peer gone while sending).
    #[error("socket I/O failed: {0}")]
    Io(#[from] io::Error),

    /// The peer closed the connection between frames: a clean end.
    #[error("peer closed the connection")]
    Closed,

    /// The peer closed the connection in the middle of a frame.
    #[error("peer closed the connection in the middle of a frame")]
    Truncated,

    /// A frame body longer than the limit, refused before it was read (or, when sending,
    /// before it was written).
    #[error("frame body of {len} bytes exceeds the limit of {max} bytes")]
    Oversize { len: usize, max: usize },

    /// A message that could not be serialized: a bug in its `Serialize` impl.
    #[error("cannot encode message: {0}")]
    Encode(String),

    /// A frame body that is not exactly one message of the expected type.
    #[error("undecodable frame: {0}")]
    Decode(String),

    /// The peer sent a descriptor with a frame that must not carry one, or more than one with
    /// a frame that may carry one. The descriptors were closed, never used.
    #[error("peer sent a file descriptor the protocol does not expect here (closed unused)")]
    UnexpectedDescriptor,

    /// The peer sent no descriptor with a frame that must carry one.
    #[error("peer sent no file descriptor with a frame that must carry one")]
    MissingDescriptor,

    /// The peer speaks another protocol version.
    #[error(
        "protocol version mismatch: this side speaks version {ours}, the peer speaks version {theirs}"
    )]
    VersionMismatch { ours: u32, theirs: u32 },
}

/// The descriptor an ingest process is started with its brokered syncer connection on.
pub const INGEST_CONNECTION_FD: std::os::fd::RawFd = 3;

/// The descriptor an ingest process is started with its `file:` source's file on, opened
/// read-only by the supervisor (`nvr-ingest --source-fd`): an ingest under a uid of its own
/// may not be allowed to open the file, and in its sandbox it opens nothing.
pub const INGEST_SOURCE_FD: std::os::fd::RawFd = 4;

/// Checks the peer's [`PROTOCOL_VERSION`] (from its `Hello` or `HelloReply`) against ours.
pub fn check_version(theirs: u32) -> Result<(), WireError> {
    if theirs != PROTOCOL_VERSION {
        return Err(WireError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs,
        });
    }
    Ok(())
}

/// The uid of the process at the other end of `stream` when it connected (`SO_PEERCRED`), for
/// the admin socket's check (only the syncer's own uid and root may use it).
pub fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    let creds = nix::sys::socket::getsockopt(stream, sockopt::PeerCredentials)?;
    Ok(creds.uid())
}

/// A framed connection over a Unix stream socket. See the module docs.
pub struct Conn {
    stream: UnixStream,
    /// The body of the frame being received; kept to reuse its allocation, at most
    /// [`codec::MAX_FRAME_BYTES`].
    body: Vec<u8>,
}

impl From<UnixStream> for Conn {
    fn from(stream: UnixStream) -> Self {
        Conn {
            stream,
            body: Vec::new(),
        }
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

impl Conn {
    /// Two connected ends of a fresh socketpair (what the syncer makes to broker an ingest
    /// connection).
    pub fn pair() -> io::Result<(Conn, Conn)> {
        let (a, b) = UnixStream::pair()?;
        Ok((a.into(), b.into()))
    }

    /// The socket, e.g. to set timeouts or to check [`peer_uid`].
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// The socket, to pass it on (e.g. with [`Conn::send_with_fd`]).
    pub fn into_stream(self) -> UnixStream {
        self.stream
    }

    /// A second handle on the same socket, so one thread can receive while another sends.
    /// Frames are written whole by one call, but two handles sending at once may interleave
    /// them: only one handle may send, and only one may receive.
    pub fn try_clone(&self) -> io::Result<Conn> {
        Ok(self.stream.try_clone()?.into())
    }

    /// Sends `msg` as one frame.
    pub fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), WireError> {
        let frame = codec::encode(msg)?;
        write_all(self.stream.as_fd(), &frame)
    }

    /// Sends `msg` as one frame with a duplicate of `fd` (the caller keeps its own): one
    /// `sendmsg` carries the descriptor with the frame's first bytes, plain writes the rest if
    /// the kernel took only part.
    pub fn send_with_fd<T: Serialize>(
        &mut self,
        msg: &T,
        fd: BorrowedFd<'_>,
    ) -> Result<(), WireError> {
        let frame = codec::encode(msg)?;
        let fds = [fd.as_raw_fd()];
        let cmsgs = [ControlMessage::ScmRights(&fds)];
        let sent = loop {
            match sendmsg::<()>(
                self.stream.as_raw_fd(),
                &[IoSlice::new(&frame)],
                &cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(n) => break n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(WireError::Io(e.into())),
            }
        };
        // A frame is never empty (it has a prefix), and a successful stream sendmsg of a
        // non-empty buffer sent at least one byte, so the descriptor went out.
        assert!(
            sent > 0,
            "sendmsg of a {}-byte frame sent nothing",
            frame.len()
        );
        write_all(self.stream.as_fd(), &frame[sent..])
    }

    /// Receives one frame that must not carry a descriptor, and decodes it as a `T`.
    pub fn recv<T: DeserializeOwned>(&mut self) -> Result<T, WireError> {
        self.recv_frame(false)?;
        codec::decode(&self.body)
    }

    /// Asks the kernel to record the sender's credentials on what the peer sends from now on
    /// (`SO_PASSCRED`), for [`Conn::recv_with_sender_pid`]: the kernel records them at send
    /// time, so this must come before the peer sends.
    pub fn pass_credentials(&self) -> io::Result<()> {
        nix::sys::socket::setsockopt(&self.stream, sockopt::PassCred, &true).map_err(Into::into)
    }

    /// Receives one frame like [`Conn::recv`], and the pid of the process that sent its first
    /// bytes as the kernel recorded it (`SCM_CREDENTIALS`: a process without `CAP_SYS_ADMIN`
    /// cannot claim another's pid), or `None` if none came ([`Conn::pass_credentials`] was not
    /// asked first). Credentials are turned off after this read, so no later read meets
    /// credentials it has no room for. The syncer learns an ingest's process this way from its
    /// hello: a brokered socketpair's `SO_PEERCRED` names the syncer itself.
    pub fn recv_with_sender_pid<T: DeserializeOwned>(
        &mut self,
    ) -> Result<(T, Option<i32>), WireError> {
        let sock = self.stream.as_fd();
        let mut prefix = [0; PREFIX_BYTES];
        let first = read_some_with_credentials(sock, &mut prefix);
        nix::sys::socket::setsockopt(&sock, sockopt::PassCred, &false)
            .map_err(|e| WireError::Io(e.into()))?;
        let (first, pid) = first?;
        // 0 where the kernel recorded no credentials.
        let pid = pid.filter(|&p| p > 0);
        self.finish_frame(prefix, first)?;
        Ok((codec::decode(&self.body)?, pid))
    }

    /// Receives one frame that must carry exactly one descriptor, and decodes it as a `T`.
    ///
    /// Fails with [`WireError::MissingDescriptor`] if none came. Where the peer may answer
    /// with a frame without one (an error reply, a pushed notice), use
    /// [`Conn::recv_with_optional_fd`] and check the pairing on the decoded message.
    pub fn recv_with_fd<T: DeserializeOwned>(&mut self) -> Result<(T, OwnedFd), WireError> {
        match self.recv_with_optional_fd()? {
            (msg, Some(fd)) => Ok((msg, fd)),
            (_, None) => Err(WireError::MissingDescriptor),
        }
    }

    /// Receives one frame that may carry one descriptor, and decodes it as a `T`.
    ///
    /// The caller checks that the descriptor came with exactly the messages that carry one
    /// (e.g. `IngestReply::Opened`) and drops a stray one. The received descriptor is
    /// close-on-exec.
    pub fn recv_with_optional_fd<T: DeserializeOwned>(
        &mut self,
    ) -> Result<(T, Option<OwnedFd>), WireError> {
        let fd = self.recv_frame(true)?;
        Ok((codec::decode(&self.body)?, fd))
    }

    /// Reads one frame's body into `self.body`: the prefix, then exactly the body. With
    /// `accept_fd`, the first read may return one descriptor.
    fn recv_frame(&mut self, accept_fd: bool) -> Result<Option<OwnedFd>, WireError> {
        let sock = self.stream.as_fd();
        let mut prefix = [0; PREFIX_BYTES];
        let (first, fd) = if accept_fd {
            read_some_accepting_fd(sock, &mut prefix)?
        } else {
            (read_some(sock, &mut prefix)?, None)
        };
        self.finish_frame(prefix, first)?;
        Ok(fd)
    }

    /// Reads the rest of a frame whose first `first` bytes of `prefix` one read returned (0:
    /// the peer closed between frames): the prefix, then exactly the body, into `self.body`.
    fn finish_frame(
        &mut self,
        mut prefix: [u8; PREFIX_BYTES],
        first: usize,
    ) -> Result<(), WireError> {
        if first == 0 {
            return Err(WireError::Closed);
        }
        let sock = self.stream.as_fd();
        read_exact(sock, &mut prefix[first..])?;
        let len = codec::body_len(prefix)?;
        self.body.clear();
        self.body.resize(len, 0);
        read_exact(sock, &mut self.body)
    }
}

/// Writes all of `buf`, with `MSG_NOSIGNAL` so that a vanished peer is an `EPIPE` error rather
/// than a `SIGPIPE` that kills the process.
fn write_all(sock: BorrowedFd<'_>, mut buf: &[u8]) -> Result<(), WireError> {
    while !buf.is_empty() {
        match send(sock.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL) {
            Ok(0) => return Err(WireError::Io(io::ErrorKind::WriteZero.into())),
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(WireError::Io(e.into())),
        }
    }
    Ok(())
}

/// Fills `buf` (which continues a frame already begun); the peer closing first is
/// [`WireError::Truncated`].
fn read_exact(sock: BorrowedFd<'_>, buf: &mut [u8]) -> Result<(), WireError> {
    let mut filled = 0;
    while filled < buf.len() {
        match read_some(sock, &mut buf[filled..])? {
            0 => return Err(WireError::Truncated),
            n => filled += n,
        }
    }
    Ok(())
}

/// One `recvmsg` into non-empty `buf` without a control buffer; 0 means end of stream. A
/// descriptor attached to the bytes read was closed by the kernel and is refused.
fn read_some(sock: BorrowedFd<'_>, buf: &mut [u8]) -> Result<usize, WireError> {
    debug_assert!(!buf.is_empty());
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        match recvmsg::<()>(sock.as_raw_fd(), &mut iov, None, MsgFlags::empty()) {
            Ok(msg) if msg.flags.contains(MsgFlags::MSG_CTRUNC) => {
                return Err(WireError::UnexpectedDescriptor);
            }
            Ok(msg) => return Ok(msg.bytes),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(WireError::Io(e.into())),
        }
    }
}

/// Like [`read_some`], with room for the sender's credentials only (a descriptor attached
/// truncates the control data and is refused, closed by the kernel): returns their pid.
fn read_some_with_credentials(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> Result<(usize, Option<i32>), WireError> {
    let mut control = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
    read_some_with_control(sock, buf, &mut control, |cmsgs| {
        Ok(cmsgs
            .filter_map(|c| match c {
                ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
                _ => None,
            })
            .next())
    })
}

/// Like [`read_some`], but with room for descriptors: returns the one descriptor attached to
/// the bytes read, if any, and refuses (closing them all) more than one.
fn read_some_accepting_fd(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> Result<(usize, Option<OwnedFd>), WireError> {
    // With room for the kernel's maximum, truncation cannot come from descriptors.
    let mut control = nix::cmsg_space!([RawFd; MAX_FDS_PER_MESSAGE]);
    read_some_with_control(sock, buf, &mut control, |cmsgs| {
        let mut fds: Vec<OwnedFd> = Vec::new();
        for cmsg in cmsgs {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                // SAFETY: the kernel just installed these descriptors in this process for
                // this call; nothing else knows them, so each is owned exactly once here.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        if fds.len() > 1 {
            return Err(WireError::UnexpectedDescriptor);
        }
        Ok(fds.pop())
    })
}

/// One `recvmsg` into non-empty `buf` with `control` for ancillary data, retried on `EINTR`;
/// `take` reads the control messages that came. Truncated control data is refused: the
/// data cannot be parsed safely then.
fn read_some_with_control<T>(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    control: &mut Vec<u8>,
    take: impl FnOnce(nix::sys::socket::CmsgIterator<'_>) -> Result<T, WireError>,
) -> Result<(usize, T), WireError> {
    debug_assert!(!buf.is_empty());
    loop {
        let mut iov = [IoSliceMut::new(&mut *buf)];
        let msg = match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut *control),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(WireError::Io(e.into())),
        };
        let Ok(cmsgs) = msg.cmsgs() else {
            return Err(WireError::UnexpectedDescriptor);
        };
        let bytes = msg.bytes;
        return Ok((bytes, take(cmsgs)?));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::MAX_FRAME_BYTES;
    use crate::codec::tests::sample_report;
    use crate::messages::*;
    use crate::{CompositeId, Time};
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    use proptest::prelude::*;
    use std::fs::File;
    use std::io::{Read, Seek, Write};

    fn times() -> RecordingTimes {
        RecordingTimes {
            start: Time(1_700_000_000 * 90_000),
            wall_duration_90k: 5_400_000,
            local_time_delta_90k: -1234,
        }
    }

    fn samples() -> Vec<SampleReport> {
        vec![
            SampleReport {
                pts_90k: 0,
                bytes: 40_000,
                is_key: true,
            },
            SampleReport {
                pts_90k: 3000,
                bytes: 1200,
                is_key: false,
            },
        ]
    }

    /// Sends `msg` one way and back the other, through real sockets.
    fn assert_round_trips<T>(msg: T)
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let (mut a, mut b) = Conn::pair().unwrap();
        a.send(&msg).unwrap();
        let got: T = b.recv().unwrap();
        assert_eq!(got, msg);
        b.send(&got).unwrap();
        assert_eq!(a.recv::<T>().unwrap(), msg);
    }

    /// A pipe whose read end is non-blocking: reading it tells whether any write end is still
    /// open anywhere in this process (`WouldBlock`) or none is (end of file).
    fn probe_pipe() -> (File, OwnedFd) {
        let (reader, writer) = io::pipe().unwrap();
        let reader = OwnedFd::from(reader);
        fcntl(&reader, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
        (File::from(reader), OwnedFd::from(writer))
    }

    fn all_write_ends_closed(reader: &mut File) -> bool {
        match reader.read(&mut [0; 1]) {
            Ok(0) => true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            other => panic!("unexpected read from probe pipe: {other:?}"),
        }
    }

    #[test]
    fn every_message_round_trips() {
        let id = CompositeId::new(2, 41);
        assert_round_trips(Hello::new(ROLE_INGEST));
        assert_round_trips(HelloReply {
            protocol_version: PROTOCOL_VERSION,
            stream_id: 2,
            stream_name: "cam-a".to_owned(),
            rotate_sec: 60,
        });
        for req in [
            IngestRequest::AddSampleEntry {
                width: 1920,
                height: 1080,
                rfc6381_codec: "avc1.64001f".to_owned(),
                data: vec![0, 0, 0, 0x66, b'a', b'v', b'c', b'1'],
            },
            IngestRequest::OpenRecording {
                run_offset: 3,
                sample_entry_id: 1,
            },
            IngestRequest::Progress {
                id,
                samples: samples(),
                times: times(),
                written_bytes: 1 << 40,
            },
            IngestRequest::CloseRecording {
                id,
                samples: samples(),
                last_sample_duration_90k: Some(3000),
                times: times(),
                end_reason: Some("drop".to_owned()),
                writer_blake3: [7; 32],
            },
            IngestRequest::CloseRecording {
                id,
                samples: Vec::new(),
                last_sample_duration_90k: None,
                times: times(),
                end_reason: None,
                writer_blake3: [0; 32],
            },
            IngestRequest::AbandonRecording {
                id,
                end_reason: "disk-full".to_owned(),
            },
        ] {
            assert_round_trips(req);
        }
        for reply in [
            IngestReply::SampleEntry { id: 1 },
            IngestReply::Opened { id },
            IngestReply::Accepted { id },
            IngestReply::Progressed {
                id,
                written_bytes: u64::MAX,
            },
            IngestReply::Committed {
                ids: vec![id, CompositeId::new(2, 42)],
            },
            IngestReply::Error {
                message: "recording 0000000200000029 is not growing".to_owned(),
            },
            IngestReply::CloseFailed {
                id,
                message: "fsync of 0000000200000029 failed".to_owned(),
            },
            IngestReply::OpenRefused {
                message: "create 0000000200000029: No space left on device".to_owned(),
            },
        ] {
            assert_round_trips(reply);
        }
        for req in [
            AdminRequest::ConnectIngest {
                stream_name: "cam-a".to_owned(),
            },
            AdminRequest::Status,
            AdminRequest::Recordings {
                stream_name: None,
                after: None,
                limit: MAX_RECORDINGS_PER_PAGE,
            },
            AdminRequest::Recordings {
                stream_name: Some("cam-b".to_owned()),
                after: Some(CompositeId::new(2, 7)),
                limit: 1,
            },
            AdminRequest::Shutdown,
            AdminRequest::ListCameras,
            AdminRequest::AddCamera {
                name: "cam-a".to_owned(),
                config: CameraConfig {
                    source: "rtsp://cam-a.local/stream1".to_owned(),
                    retain_bytes: 10 << 30,
                    flush_if_sec: 60,
                    rotate_sec: 60,
                },
            },
            AdminRequest::SetCamera {
                name: "cam-a".to_owned(),
                source: None,
                retain_bytes: Some(1 << 30),
                flush_if_sec: None,
                rotate_sec: Some(30),
            },
            AdminRequest::RemoveCamera {
                name: "cam-a".to_owned(),
                delete_recordings: true,
            },
        ] {
            assert_round_trips(req);
        }
        for reply in [
            AdminReply::IngestConnection,
            AdminReply::Status(StatusReport {
                streams: vec![StreamStatus {
                    id: 2,
                    name: "cam-a".to_owned(),
                    committed_recordings: 10,
                    committed_bytes: 1 << 30,
                    retain_bytes: 10 << 30,
                    newest_committed: Some(id),
                    growing: None,
                    newest_committed_start: Some(Time(1_700_000_000 * 90_000)),
                }],
                garbage: GarbageStatus {
                    files: 2,
                    failing_unlinks: 1,
                    newest_error: Some("0000000100000000: Operation not permitted".into()),
                },
            }),
            AdminReply::Recordings(vec![RecordingSummary {
                id,
                stream_name: "cam-a".to_owned(),
                start: Time(1_700_000_000 * 90_000),
                wall_duration_90k: 5_400_000,
                media_duration_90k: 5_400_100,
                sample_file_bytes: 12_345_678,
                video_samples: 1800,
                video_sync_samples: 60,
                run_offset: 0,
                flags: 1,
                end_reason: Some("io-error".to_owned()),
                blake3: [0xab; 32],
            }]),
            AdminReply::Ok,
            AdminReply::Error {
                message: "no stream named \"cam-z\"".to_owned(),
            },
            AdminReply::Cameras(vec![CameraInfo {
                id: 2,
                name: "cam-a".to_owned(),
                config: CameraConfig {
                    source: "synthetic:".to_owned(),
                    retain_bytes: 1 << 30,
                    flush_if_sec: 0,
                    rotate_sec: 2,
                },
            }]),
        ] {
            assert_round_trips(reply);
        }
    }

    #[test]
    fn peer_closing_between_frames_is_closed() {
        let (a, mut b) = Conn::pair().unwrap();
        drop(a);
        assert!(matches!(b.recv::<u32>(), Err(WireError::Closed)));
    }

    #[test]
    fn peer_closing_mid_body_is_truncated() {
        let (a, mut b) = Conn::pair().unwrap();
        let mut raw = a.into_stream();
        raw.write_all(&10u32.to_le_bytes()).unwrap();
        raw.write_all(&[1, 2, 3]).unwrap();
        drop(raw);
        assert!(matches!(b.recv::<Vec<u8>>(), Err(WireError::Truncated)));
    }

    #[test]
    fn peer_closing_mid_prefix_is_truncated() {
        let (a, mut b) = Conn::pair().unwrap();
        let mut raw = a.into_stream();
        raw.write_all(&[1, 0]).unwrap();
        drop(raw);
        assert!(matches!(b.recv::<u32>(), Err(WireError::Truncated)));
    }

    #[test]
    fn oversize_frame_is_refused_before_its_body_is_read() {
        let (a, mut b) = Conn::pair().unwrap();
        let mut raw = a.into_stream();
        raw.write_all(&(1u32 << 30).to_le_bytes()).unwrap();
        raw.write_all(b"rest").unwrap();
        let err = b.recv::<Vec<u8>>().unwrap_err();
        assert!(
            matches!(err, WireError::Oversize { len, max: MAX_FRAME_BYTES } if len == 1 << 30),
            "{err:?}"
        );
        // Nothing past the prefix was consumed.
        let mut rest = [0; 4];
        b.stream().read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"rest");
    }

    #[test]
    fn garbage_body_is_a_decode_error() {
        let (a, mut b) = Conn::pair().unwrap();
        let mut raw = a.into_stream();
        raw.write_all(&8u32.to_le_bytes()).unwrap();
        raw.write_all(&[0xff; 8]).unwrap();
        let err = b.recv::<IngestRequest>().unwrap_err();
        assert!(matches!(err, WireError::Decode(_)), "{err:?}");
    }

    #[test]
    fn unexpected_descriptor_is_refused_and_never_installed() {
        let (mut a, mut b) = Conn::pair().unwrap();
        let (mut probe, writer) = probe_pipe();
        a.send_with_fd(&AdminRequest::Status, writer.as_fd())
            .unwrap();
        drop(writer); // Only the copy in flight is left.
        assert!(!all_write_ends_closed(&mut probe));
        let err = b.recv::<AdminRequest>().unwrap_err();
        assert!(matches!(err, WireError::UnexpectedDescriptor), "{err:?}");
        // The kernel closed the copy in flight instead of installing it in this process.
        assert!(all_write_ends_closed(&mut probe));
    }

    #[test]
    fn descriptor_arrives_and_works() {
        let (mut a, mut b) = Conn::pair().unwrap();
        let mut file = tempfile::tempfile().unwrap();
        let id = CompositeId::new(1, 0);
        a.send_with_fd(&IngestReply::Opened { id }, file.as_fd())
            .unwrap();
        let (reply, fd) = b.recv_with_fd::<IngestReply>().unwrap();
        assert_eq!(reply, IngestReply::Opened { id });
        File::from(fd).write_all(b"frame bytes").unwrap();
        let mut contents = String::new();
        file.rewind().unwrap();
        file.read_to_string(&mut contents).unwrap();
        assert_eq!(contents, "frame bytes");
    }

    #[test]
    fn back_to_back_frames_each_bring_their_own_descriptor() {
        let (mut a, mut b) = Conn::pair().unwrap();
        let mut files = [tempfile::tempfile().unwrap(), tempfile::tempfile().unwrap()];
        for (i, file) in files.iter().enumerate() {
            let id = CompositeId::new(1, i as i32);
            a.send_with_fd(&IngestReply::Opened { id }, file.as_fd())
                .unwrap();
        }
        a.send(&IngestReply::Committed { ids: Vec::new() }).unwrap();

        for i in 0..2 {
            let (reply, fd) = b.recv_with_fd::<IngestReply>().unwrap();
            let id = CompositeId::new(1, i);
            assert_eq!(reply, IngestReply::Opened { id });
            File::from(fd).write_all(id.to_string().as_bytes()).unwrap();
        }
        assert_eq!(
            b.recv::<IngestReply>().unwrap(),
            IngestReply::Committed { ids: Vec::new() }
        );
        for (i, file) in files.iter_mut().enumerate() {
            let mut contents = String::new();
            file.rewind().unwrap();
            file.read_to_string(&mut contents).unwrap();
            assert_eq!(contents, CompositeId::new(1, i as i32).to_string());
        }
    }

    #[test]
    fn frame_without_descriptor_where_one_is_required_is_missing() {
        let (mut a, mut b) = Conn::pair().unwrap();
        a.send(&AdminReply::IngestConnection).unwrap();
        let err = b.recv_with_fd::<AdminReply>().unwrap_err();
        assert!(matches!(err, WireError::MissingDescriptor), "{err:?}");
    }

    #[test]
    fn optional_descriptor_may_be_absent() {
        let (mut a, mut b) = Conn::pair().unwrap();
        let reply = AdminReply::Error {
            message: "no such stream".to_owned(),
        };
        a.send(&reply).unwrap();
        let (got, fd) = b.recv_with_optional_fd::<AdminReply>().unwrap();
        assert_eq!(got, reply);
        assert!(fd.is_none());
    }

    #[test]
    fn more_than_one_descriptor_is_refused_and_all_are_closed() {
        let (a, mut b) = Conn::pair().unwrap();
        let (mut probe1, writer1) = probe_pipe();
        let (mut probe2, writer2) = probe_pipe();
        let frame = codec::encode(&AdminReply::IngestConnection).unwrap();
        let fds = [writer1.as_raw_fd(), writer2.as_raw_fd()];
        sendmsg::<()>(
            a.stream().as_raw_fd(),
            &[IoSlice::new(&frame)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        drop((writer1, writer2));
        let err = b.recv_with_fd::<AdminReply>().unwrap_err();
        assert!(matches!(err, WireError::UnexpectedDescriptor), "{err:?}");
        assert!(all_write_ends_closed(&mut probe1));
        assert!(all_write_ends_closed(&mut probe2));
    }

    #[test]
    fn version_mismatch_names_both_versions() {
        check_version(PROTOCOL_VERSION).unwrap();
        let err = check_version(PROTOCOL_VERSION + 41).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "protocol version mismatch: this side speaks version {PROTOCOL_VERSION}, \
                 the peer speaks version {}",
                PROTOCOL_VERSION + 41
            )
        );
    }

    #[test]
    fn peer_uid_is_our_own_uid_on_a_socketpair() {
        let (a, _b) = Conn::pair().unwrap();
        assert_eq!(
            peer_uid(a.stream()).unwrap(),
            nix::unistd::getuid().as_raw()
        );
    }

    #[test]
    fn the_senders_pid_comes_with_the_first_frame_and_only_then() {
        let (mut a, mut b) = Conn::pair().unwrap();
        b.pass_credentials().unwrap();
        a.send(&Hello::new(ROLE_INGEST)).unwrap();
        a.send(&Hello::new(ROLE_ADMIN)).unwrap();
        let (hello, pid) = b.recv_with_sender_pid::<Hello>().unwrap();
        assert_eq!(hello.role, ROLE_INGEST);
        assert_eq!(pid, Some(std::process::id() as i32));
        // Credentials are off again: a plain receive has no room for them and still works.
        assert_eq!(b.recv::<Hello>().unwrap().role, ROLE_ADMIN);
        // A descriptor on that first frame is refused, not installed.
        let (probe, fd) = probe_pipe();
        b.pass_credentials().unwrap();
        a.send_with_fd(&Hello::new(ROLE_INGEST), fd.as_fd())
            .unwrap();
        drop(fd);
        let e = b.recv_with_sender_pid::<Hello>().unwrap_err();
        assert!(matches!(e, WireError::UnexpectedDescriptor), "{e}");
        let mut probe = probe;
        assert!(all_write_ends_closed(&mut probe));
        // Not asked for before the send: none.
        let (mut a, mut b) = Conn::pair().unwrap();
        a.send(&Hello::new(ROLE_INGEST)).unwrap();
        assert_eq!(b.recv_with_sender_pid::<Hello>().unwrap().1, None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Frames written back to back, in one burst, are received one by one, in order, each
        /// exactly as sent: the reader never takes bytes of the next frame.
        #[test]
        fn back_to_back_frames_are_received_exactly(
            batches in proptest::collection::vec(
                proptest::collection::vec(sample_report(), 0..300), 1..20),
        ) {
            let msgs: Vec<IngestRequest> = batches
                .into_iter()
                .enumerate()
                .map(|(i, samples)| IngestRequest::Progress {
                    id: CompositeId::new(1, i as i32),
                    samples,
                    times: times(),
                    written_bytes: i as u64,
                })
                .collect();
            let burst: Vec<u8> =
                msgs.iter().flat_map(|m| codec::encode(m).unwrap()).collect();
            let (a, mut b) = Conn::pair().unwrap();
            let writer = std::thread::spawn(move || a.stream().write_all(&burst));
            for msg in &msgs {
                prop_assert_eq!(&b.recv::<IngestRequest>().unwrap(), msg);
            }
            writer.join().unwrap().unwrap();
            prop_assert!(matches!(b.recv::<IngestRequest>(), Err(WireError::Closed)));
        }
    }
}
