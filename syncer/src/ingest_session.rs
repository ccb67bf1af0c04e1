//! What an ingest connection may ask of the syncer: the privileged side's request table.
//!
//! An ingest's stream is its connection (brokered by the syncer, never dialled), so no request
//! names a stream, and every recording id a request names is checked against the ids this
//! connection holds. Like OpenSSH's privsep monitor, the table is small and explicit:
//!
//! | request | allowed when | effect |
//! |---|---|---|
//! | `AddSampleEntry` | fewer than [`MAX_SAMPLE_ENTRIES_PER_STREAM`] added on this connection | insert or look up the entry |
//! | `OpenRecording` | nothing growing on this connection, entry added on it; a run offset > 0 continues the stream's run, whose latest recording lasted at least [`protocol::limits::MIN_RECORDING_DURATION_90K`] | new id, file, write-only descriptor; `OpenRefused` if the disk cannot take a file or the stream is past its open budget |
//! | `Progress` | `id` is this connection's growing recording | record the reported samples; answer `Progressed` (the write window) |
//! | `CloseRecording` | `id` is the growing recording and no other close is outstanding | verify, fsync, hash ([`Action::Save`]); *accepted* after [`IngestSession::saved`] |
//! | `AbandonRecording` | as `CloseRecording` | salvage to the reported samples now; *accepted* as for a close |
//!
//! Anything else, and any request that breaks a limit, is an error: the caller answers with it
//! and drops the connection; the growing recording, if any, is then salvaged
//! ([`IngestSession::disconnected`]). Nothing another stream holds is reachable from here.

use std::collections::BTreeSet;

use protocol::CompositeId;
use protocol::messages::{IngestReply, IngestRequest, MAX_END_REASON_BYTES};

use crate::db::RecordingToInsert;
use crate::durability::{PendingSave, SaveFailure};
pub use protocol::limits::{MAX_SAMPLE_ENTRIES_PER_STREAM, MAX_SAMPLE_ENTRY_BYTES};

use crate::error::Error;
use crate::fs::Dir;
use crate::store::{CloseRequest, Syncer};

/// The syncer's state for one ingest connection.
#[derive(Debug)]
pub struct IngestSession {
    stream_id: i32,
    /// The recording this connection is writing, if any.
    growing: Option<CompositeId>,
    /// The recording whose close is being made durable, if any.
    closing: Option<CompositeId>,
    /// Sample entries this connection added (and so may open recordings with).
    sample_entries: BTreeSet<i32>,
}

/// What the caller does with a request's outcome.
#[derive(Debug)]
pub enum Action<F> {
    /// Send this answer.
    Reply(IngestReply),
    /// Send `Opened { id }` with the writer's descriptor.
    Opened(CompositeId, F),
    /// Run this on the stream's worker, then call [`IngestSession::saved`].
    Save(PendingSave<F>),
}

impl IngestSession {
    pub fn new(stream_id: i32) -> Self {
        IngestSession {
            stream_id,
            growing: None,
            closing: None,
            sample_entries: BTreeSet::new(),
        }
    }

    pub fn stream_id(&self) -> i32 {
        self.stream_id
    }

    /// The recording being written or closed, if any (shutdown waits for neither).
    pub fn busy(&self) -> bool {
        self.growing.is_some() || self.closing.is_some()
    }

    pub fn growing(&self) -> Option<CompositeId> {
        self.growing
    }

    fn reject(&self, reason: String) -> Error {
        Error::Rejected {
            stream: self.stream_id,
            reason,
        }
    }

    /// Checks that `id` is the recording this connection is writing.
    fn check_growing(&self, id: CompositeId) -> Result<(), Error> {
        if self.growing != Some(id) {
            return Err(self.reject(format!(
                "recording {id} is not this connection's open recording (it holds {})",
                self.growing
                    .map_or_else(|| "none".to_owned(), |g| g.to_string())
            )));
        }
        Ok(())
    }

    /// Serves one request. An `Err` means the connection must be answered with the error and
    /// dropped, then [`IngestSession::disconnected`] called.
    pub fn handle<D: Dir>(
        &mut self,
        syncer: &mut Syncer<D>,
        req: IngestRequest,
    ) -> Result<Action<D::File>, Error> {
        match req {
            IngestRequest::AddSampleEntry {
                width,
                height,
                rfc6381_codec,
                data,
            } => {
                if self.sample_entries.len() >= MAX_SAMPLE_ENTRIES_PER_STREAM {
                    return Err(self.reject(format!(
                        "more than {MAX_SAMPLE_ENTRIES_PER_STREAM} sample entries"
                    )));
                }
                if width == 0
                    || height == 0
                    || data.is_empty()
                    || data.len() > MAX_SAMPLE_ENTRY_BYTES
                    || rfc6381_codec.len() > 64
                {
                    return Err(self.reject(format!(
                        "bad sample entry: {width}x{height}, codec {rfc6381_codec:?}, {} bytes \
                         (at most {MAX_SAMPLE_ENTRY_BYTES})",
                        data.len()
                    )));
                }
                let keep: Vec<i32> = self.sample_entries.iter().copied().collect();
                let id = syncer.add_sample_entry(
                    self.stream_id,
                    &keep,
                    width,
                    height,
                    &rfc6381_codec,
                    &data,
                )?;
                self.sample_entries.insert(id);
                Ok(Action::Reply(IngestReply::SampleEntry { id }))
            }
            IngestRequest::OpenRecording {
                run_offset,
                sample_entry_id,
            } => {
                if let Some(g) = self.growing {
                    return Err(self.reject(format!("open while recording {g} is still growing")));
                }
                if !self.sample_entries.contains(&sample_entry_id) {
                    return Err(self.reject(format!(
                        "sample entry {sample_entry_id} was not added on this connection"
                    )));
                }
                let (id, writer) =
                    match syncer.open_recording(self.stream_id, run_offset, sample_entry_id) {
                        Ok(opened) => opened,
                        // The disk's state, or the open budget: the ingest tries again later.
                        Err(e) if e.is_out_of_space() || matches!(e, Error::OpenTooSoon { .. }) => {
                            return Ok(Action::Reply(IngestReply::OpenRefused {
                                message: e.to_string(),
                            }));
                        }
                        Err(e) => return Err(e),
                    };
                self.growing = Some(id);
                Ok(Action::Opened(id, writer))
            }
            IngestRequest::Progress {
                id,
                samples,
                times,
                written_bytes,
            } => {
                self.check_growing(id)?;
                // A bad report leaves the recording growing, for `disconnected` to salvage.
                let written_bytes = syncer.progress(id, &samples, times, written_bytes)?;
                Ok(Action::Reply(IngestReply::Progressed { id, written_bytes }))
            }
            IngestRequest::CloseRecording {
                id,
                samples,
                last_sample_duration_90k,
                times,
                end_reason,
                writer_blake3,
            } => {
                self.check_closable(id, end_reason.as_deref())?;
                self.growing = None;
                let pending = syncer.begin_close(
                    id,
                    CloseRequest {
                        samples,
                        last_sample_duration_90k,
                        times,
                        end_reason,
                        writer_blake3,
                    },
                )?;
                self.closing = Some(id);
                Ok(Action::Save(pending))
            }
            IngestRequest::AbandonRecording { id, end_reason } => {
                self.check_closable(id, Some(&end_reason))?;
                self.growing = None;
                match syncer.begin_salvage(id, &end_reason)? {
                    None => Ok(Action::Reply(IngestReply::Accepted { id })),
                    Some(pending) => {
                        self.closing = Some(id);
                        Ok(Action::Save(pending))
                    }
                }
            }
        }
    }

    /// Checks a close or an abandon of `id`: the growing recording, a one-line end reason, and
    /// no other close outstanding.
    fn check_closable(&self, id: CompositeId, end_reason: Option<&str>) -> Result<(), Error> {
        self.check_growing(id)?;
        if let Some(r) = end_reason
            && (r.len() > MAX_END_REASON_BYTES || r.chars().any(char::is_control))
        {
            return Err(self.reject(format!(
                "end reason of {id} is {} bytes or holds control characters (at most \
                 {MAX_END_REASON_BYTES} bytes on one line)",
                r.len()
            )));
        }
        if let Some(c) = self.closing {
            return Err(self.reject(format!(
                "close of {id} while the close of {c} is still outstanding"
            )));
        }
        Ok(())
    }

    /// A close's durability work finished: concludes it and returns the answer, *accepted* or
    /// the error (the caller drops the connection unless it is a failed fsync, which is no
    /// fault of the ingest's).
    pub fn saved<D: Dir>(
        &mut self,
        syncer: &mut Syncer<D>,
        id: CompositeId,
        result: Result<RecordingToInsert, SaveFailure>,
    ) -> Result<IngestReply, Error> {
        if self.closing == Some(id) {
            self.closing = None;
        }
        syncer.finish_save(id, result)?;
        Ok(IngestReply::Accepted { id })
    }

    /// The connection is gone (crash, kill, bad frame, takeover): returns the salvage of what
    /// it was writing, to run on the stream's worker and conclude with
    /// [`Syncer::finish_save`]. A close still outstanding completes on its own.
    pub fn disconnected<D: Dir>(
        &mut self,
        syncer: &mut Syncer<D>,
        why: &str,
    ) -> Result<Option<PendingSave<D::File>>, Error> {
        match self.growing.take() {
            None => Ok(None),
            Some(id) => syncer.begin_salvage(id, why),
        }
    }
}
