//! The syncer side of the writer over the real connection: [`Client`] implements
//! [`SyncerLink`] by speaking the ingest conversation of [`protocol::messages`] on the socket
//! the syncer brokered (fd 3 of `nvr-ingest`).
//!
//! # Threads
//!
//! The syncer may push frames at any time (`Committed`, a late `Accepted` or `CloseFailed`, an
//! `Error` before it drops the connection), so a reader thread receives every frame, with its descriptor if it
//! has one, and queues it; the writer's thread, the only one that sends, takes frames from the
//! queue when it waits for an answer and drains it before each request. A lost connection is
//! therefore noticed at the next request (at most a progress interval later while frames flow).
//!
//! # Pairing answers with requests
//!
//! `AddSampleEntry` and `OpenRecording` are answered at once, in order, so the client waits
//! for the answer right after sending them; `Committed`, `Progressed`, `Accepted` and
//! `CloseFailed` arriving meanwhile are taken in passing, each naming its recording, so none
//! can be mistaken for the answer to another request. `Progressed` must name the growing
//! recording (or the closing one, whose last reports may be answered after its close was
//! sent) and acknowledge no more than was reported; the latest acknowledgement of the growing
//! recording is kept for [`SyncerLink::wait_acknowledged`]. `CloseFailed` (the recording's fsync failed; the syncer discards
//! it) ends the outstanding close like `Accepted` does, and is logged: the connection and the
//! growing recording go on, since only that recording is lost (DESIGN.md, failure handling). A
//! descriptor is accepted only with `Opened`; anything else carrying one, and any answer nobody
//! asked for, is a [`LinkError::Protocol`] violation. An `Error` means the syncer drops the
//! connection: [`LinkError::Lost`].

use std::fs::File;
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::Instant;

use protocol::messages::{
    Hello, HelloReply, IngestReply, IngestRequest, ROLE_INGEST, RecordingTimes, SampleReport,
};
use protocol::{CompositeId, Conn, WireError, check_version};
use tracing::{debug, warn};

use crate::h264::SampleEntry;
use crate::writer::{Close, LinkError, Opened, SyncerLink};

/// Frames the reader thread may queue before it stops reading the socket (the syncer then
/// blocks on a full socket buffer, which is harmless: only pushed notices can pile up).
const INCOMING_QUEUE: usize = 64;

/// The write window of the growing recording, as the client has seen it.
#[derive(Clone, Copy, Debug)]
struct Window {
    id: CompositeId,
    reported_bytes: u64,
    acknowledged_bytes: u64,
}

/// What the reader thread hands over.
enum Incoming {
    Frame(IngestReply, Option<OwnedFd>),
    /// The connection failed or ended; the reader thread has stopped.
    Failed(WireError),
}

/// A connection to the syncer, after the handshake. See the module docs.
pub struct Client {
    /// The sending half; the reader thread holds another handle on the same socket.
    conn: Conn,
    incoming: Receiver<Incoming>,
    hello: HelloReply,
    /// The recording whose close was sent and not yet accepted.
    closing: Option<CompositeId>,
    /// The growing recording (opened, close not sent), with the offset of its last report
    /// sent and of the syncer's last acknowledgement.
    growing: Option<Window>,
    /// Recordings the syncer reported committed on this connection.
    committed: u64,
    /// Why the connection was lost, once it was: every later call fails with it.
    lost: Option<String>,
}

/// A connection after the handshake, before its reader thread: `nvr-ingest` enters its
/// sandbox in between, so that the thread is born inside it.
pub struct Handshaken {
    conn: Conn,
    hello: HelloReply,
}

impl Handshaken {
    /// Performs the handshake on `conn`: the ingest's `Hello`, the syncer's `HelloReply`,
    /// whose version must be ours.
    pub fn new(mut conn: Conn) -> Result<Handshaken, LinkError> {
        conn.send(&Hello::new(ROLE_INGEST))
            .map_err(LinkError::Handshake)?;
        let hello: HelloReply = conn.recv().map_err(LinkError::Handshake)?;
        check_version(hello.protocol_version).map_err(LinkError::Handshake)?;
        Ok(Handshaken { conn, hello })
    }

    /// The syncer's answer to the handshake.
    pub fn hello(&self) -> &HelloReply {
        &self.hello
    }

    /// Starts the reader thread, in the current tracing span.
    pub fn start(self) -> Result<Client, LinkError> {
        let Handshaken { conn, hello } = self;
        let receiver = conn
            .try_clone()
            .map_err(|e| LinkError::Handshake(WireError::Io(e)))?;
        let (tx, incoming) = mpsc::sync_channel(INCOMING_QUEUE);
        let span = tracing::Span::current();
        std::thread::Builder::new()
            .name("syncer-reader".to_owned())
            .spawn(move || {
                let _entered = span.enter();
                read_frames(receiver, tx);
            })
            .map_err(|e| LinkError::Handshake(WireError::Io(e)))?;
        debug!(
            stream_id = hello.stream_id,
            stream = %hello.stream_name,
            rotate_sec = hello.rotate_sec,
            "connected to the syncer"
        );
        Ok(Client {
            conn,
            incoming,
            hello,
            closing: None,
            growing: None,
            committed: 0,
            lost: None,
        })
    }
}

impl Client {
    /// Performs the handshake on `conn` and starts the reader thread ([`Handshaken`]).
    pub fn connect(conn: Conn) -> Result<Client, LinkError> {
        Handshaken::new(conn)?.start()
    }

    /// The syncer's answer to the handshake: the stream this connection records.
    pub fn hello(&self) -> &HelloReply {
        &self.hello
    }

    /// How many recordings the syncer reported committed (durable) on this connection so far.
    pub fn committed_recordings(&self) -> u64 {
        self.committed
    }

    /// The window of `id`, which the writer says is growing.
    fn growing_window(&mut self, id: CompositeId) -> &mut Window {
        let growing = self.growing;
        match &mut self.growing {
            Some(w) if w.id == id => w,
            _ => panic!("{id} is not the growing recording ({growing:?})"),
        }
    }

    /// Records that the connection is lost and returns the error for it.
    fn lose(&mut self, reason: String) -> LinkError {
        warn!(%reason, "syncer connection lost");
        self.lost = Some(reason.clone());
        LinkError::Lost { reason }
    }

    fn send(&mut self, req: &IngestRequest) -> Result<(), LinkError> {
        self.check_not_lost()?;
        self.conn
            .send(req)
            .map_err(|e| self.lose(format!("cannot send to the syncer: {e}")))
    }

    fn check_not_lost(&self) -> Result<(), LinkError> {
        match &self.lost {
            Some(reason) => Err(LinkError::Lost {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The next frame from the reader thread: waiting for one until `deadline` (`Ok(None)` if
    /// it passes), or not at all if `deadline` is now or past.
    fn recv(&mut self, deadline: Option<Instant>) -> Result<Option<Incoming>, LinkError> {
        self.check_not_lost()?;
        let received = match deadline {
            None => self
                .incoming
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
            Some(d) => self
                .incoming
                .recv_timeout(d.saturating_duration_since(Instant::now())),
        };
        match received {
            Ok(Incoming::Failed(WireError::Closed)) => {
                Err(self.lose("the syncer closed the connection".to_owned()))
            }
            Ok(Incoming::Failed(e)) => Err(self.lose(e.to_string())),
            Ok(frame) => Ok(Some(frame)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                Err(self.lose("the reader thread ended".to_owned()))
            }
        }
    }

    /// Takes in a frame: pushed notices (`Committed`, `Accepted`, `CloseFailed`) and errors
    /// are handled here; anything else is returned for the caller to pair with its request.
    fn take(
        &mut self,
        frame: Incoming,
    ) -> Result<Option<(IngestReply, Option<OwnedFd>)>, LinkError> {
        let Incoming::Frame(reply, fd) = frame else {
            unreachable!("recv turns failures into errors");
        };
        if fd.is_some() && !matches!(reply, IngestReply::Opened { .. }) {
            return Err(self.violation(format!("a descriptor came with {reply:?}")));
        }
        match reply {
            IngestReply::Committed { ids } => {
                self.committed += ids.len() as u64;
                debug!(?ids, total = self.committed, "committed");
                Ok(None)
            }
            IngestReply::Progressed { id, written_bytes } => {
                self.acknowledge(id, written_bytes)?;
                Ok(None)
            }
            IngestReply::Accepted { id } => {
                if self.closing != Some(id) {
                    return Err(self.violation(format!(
                        "accepted recording {id}, but the outstanding close is {:?}",
                        self.closing
                    )));
                }
                self.closing = None;
                Ok(None)
            }
            IngestReply::CloseFailed { id, message } => {
                if self.closing != Some(id) {
                    return Err(self.violation(format!(
                        "close of recording {id} failed, but the outstanding close is {:?}",
                        self.closing
                    )));
                }
                warn!(recording = %id, %message, "the syncer could not make the recording durable; it is discarded");
                self.closing = None;
                Ok(None)
            }
            IngestReply::Error { message } => {
                Err(self.lose(format!("the syncer refused a request: {message}")))
            }
            other => Ok(Some((other, fd))),
        }
    }

    /// Takes in an acknowledgement of a report of `id` through `written_bytes`.
    fn acknowledge(&mut self, id: CompositeId, written_bytes: u64) -> Result<(), LinkError> {
        match &mut self.growing {
            Some(w) if w.id == id && written_bytes <= w.reported_bytes => {
                w.acknowledged_bytes = w.acknowledged_bytes.max(written_bytes);
                Ok(())
            }
            // The close carries the rest; its earlier reports may be answered after it.
            _ if self.closing == Some(id) => Ok(()),
            growing => {
                let growing = *growing;
                Err(self.violation(format!(
                    "acknowledged recording {id} through offset {written_bytes}, but the growing \
                     recording is {growing:?}"
                )))
            }
        }
    }

    /// A protocol violation: the conversation cannot go on.
    fn violation(&mut self, what: String) -> LinkError {
        warn!(%what, "protocol violation by the syncer");
        self.lost = Some(format!("protocol violation by the syncer: {what}"));
        LinkError::Protocol { what }
    }

    /// Handles whatever has arrived, without waiting.
    fn poll(&mut self) -> Result<(), LinkError> {
        while let Some(frame) = self.recv(Some(Instant::now()))? {
            if let Some((other, _)) = self.take(frame)? {
                return Err(self.violation(format!("{other:?} answers no request")));
            }
        }
        Ok(())
    }

    /// Takes in pushed frames until `done` holds, for at most `timeout` (then `timed_out`). A
    /// frame that is no pushed notice answers no request: a violation.
    fn wait_for(
        &mut self,
        timeout: std::time::Duration,
        timed_out: LinkError,
        done: impl Fn(&Client) -> bool,
    ) -> Result<(), LinkError> {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            let Some(frame) = self.recv(Some(deadline))? else {
                return Err(timed_out);
            };
            if let Some((other, _)) = self.take(frame)? {
                return Err(self.violation(format!("{other:?} answers no request")));
            }
        }
        Ok(())
    }

    /// Sends `req` and waits for its answer.
    fn request(&mut self, req: IngestRequest) -> Result<(IngestReply, Option<OwnedFd>), LinkError> {
        self.poll()?;
        self.send(&req)?;
        loop {
            let frame = self.recv(None)?.expect("recv without a deadline waits");
            if let Some(answer) = self.take(frame)? {
                return Ok(answer);
            }
        }
    }
}

impl Drop for Client {
    /// Ends the connection both ways, so that the syncer sees it end now (the reader thread
    /// holds another handle on the socket) and the reader thread stops.
    fn drop(&mut self) {
        if let Err(e) = self.conn.stream().shutdown(Shutdown::Both) {
            debug!(error = %e, "shutting down the syncer connection");
        }
    }
}

impl SyncerLink for Client {
    type File = File;

    fn add_sample_entry(&mut self, entry: &SampleEntry) -> Result<i32, LinkError> {
        match self.request(IngestRequest::AddSampleEntry {
            width: entry.width,
            height: entry.height,
            rfc6381_codec: entry.rfc6381_codec.clone(),
            data: entry.data.clone(),
        })? {
            (IngestReply::SampleEntry { id }, _) => Ok(id),
            (other, _) => Err(self.violation(format!("{other:?} answers AddSampleEntry"))),
        }
    }

    fn open(&mut self, run_offset: i32, sample_entry_id: i32) -> Result<Opened<File>, LinkError> {
        match self.request(IngestRequest::OpenRecording {
            run_offset,
            sample_entry_id,
        })? {
            (IngestReply::Opened { id }, Some(fd)) if id.stream() == self.hello.stream_id => {
                self.growing = Some(Window {
                    id,
                    reported_bytes: 0,
                    acknowledged_bytes: 0,
                });
                Ok(Opened::Recording(id, File::from(fd)))
            }
            (IngestReply::OpenRefused { message }, None) => Ok(Opened::Refused { message }),
            (IngestReply::Opened { id }, Some(_)) => Err(self.violation(format!(
                "opened recording {id} of stream {}, but this connection records stream {}",
                id.stream(),
                self.hello.stream_id
            ))),
            (IngestReply::Opened { id }, None) => {
                Err(self.violation(format!("opened recording {id} without a descriptor")))
            }
            (other, _) => Err(self.violation(format!("{other:?} answers OpenRecording"))),
        }
    }

    fn progress(
        &mut self,
        id: CompositeId,
        samples: Vec<SampleReport>,
        times: RecordingTimes,
        written_bytes: u64,
    ) -> Result<(), LinkError> {
        self.poll()?;
        let window = self.growing_window(id);
        assert!(
            written_bytes >= window.reported_bytes,
            "report of {id} through {written_bytes} after one through {}",
            window.reported_bytes
        );
        self.send(&IngestRequest::Progress {
            id,
            samples,
            times,
            written_bytes,
        })?;
        self.growing_window(id).reported_bytes = written_bytes;
        Ok(())
    }

    fn close(&mut self, close: Close) -> Result<(), LinkError> {
        self.poll()?;
        assert!(
            self.closing.is_none(),
            "close of {} while the close of {:?} is outstanding",
            close.id,
            self.closing
        );
        let id = close.id;
        self.send(&IngestRequest::CloseRecording {
            id,
            samples: close.samples,
            last_sample_duration_90k: close.last_sample_duration_90k,
            times: close.times,
            end_reason: close.end_reason,
            writer_blake3: close.writer_blake3,
        })?;
        self.closing = Some(id);
        self.growing = None;
        Ok(())
    }

    fn abandon(&mut self, id: CompositeId, end_reason: &str) -> Result<(), LinkError> {
        self.poll()?;
        assert!(
            self.closing.is_none(),
            "abandon of {id} while the close of {:?} is outstanding",
            self.closing
        );
        self.growing_window(id);
        self.send(&IngestRequest::AbandonRecording {
            id,
            end_reason: end_reason.to_owned(),
        })?;
        self.closing = Some(id);
        self.growing = None;
        Ok(())
    }

    fn wait_accepted(
        &mut self,
        id: CompositeId,
        timeout: std::time::Duration,
    ) -> Result<(), LinkError> {
        assert!(
            self.closing.is_none() || self.closing == Some(id),
            "waiting for the close of {id} while the close of {:?} is outstanding",
            self.closing
        );
        let timed_out = LinkError::AcceptTimeout {
            id,
            waited: timeout,
        };
        self.wait_for(timeout, timed_out, |c| c.closing != Some(id))
    }

    fn wait_acknowledged(
        &mut self,
        id: CompositeId,
        written_bytes: u64,
        timeout: std::time::Duration,
    ) -> Result<(), LinkError> {
        let window = *self.growing_window(id);
        assert!(
            written_bytes <= window.reported_bytes,
            "waiting for {id} through {written_bytes}, reported only through {}",
            window.reported_bytes
        );
        let timed_out = LinkError::AcknowledgeTimeout {
            id,
            written_bytes,
            waited: timeout,
        };
        self.wait_for(timeout, timed_out, |c| {
            c.growing
                .is_some_and(|w| w.id == id && w.acknowledged_bytes >= written_bytes)
        })
    }
}

/// The reader thread: queues every frame until the connection fails or the client is gone.
fn read_frames(mut conn: Conn, tx: SyncSender<Incoming>) {
    loop {
        let (frame, last) = match conn.recv_with_optional_fd::<IngestReply>() {
            Ok((reply, fd)) => (Incoming::Frame(reply, fd), false),
            Err(e) => (Incoming::Failed(e), true),
        };
        if tx.send(frame).is_err() || last {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
