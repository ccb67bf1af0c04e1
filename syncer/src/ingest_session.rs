//! What an ingest connection may ask of the syncer: the privileged side's request table.
//!
//! An ingest's stream is its connection (brokered by the syncer, never dialled), so no request
//! names a stream, and every recording id a request names is checked against the ids this
//! connection holds. Like OpenSSH's privsep monitor, the table is small and explicit:
//!
//! | request | allowed when | effect |
//! |---|---|---|
//! | `AddSampleEntry` | fewer than [`MAX_SAMPLE_ENTRIES_PER_STREAM`] used by this connection | insert or look up the entry |
//! | `OpenRecording` | nothing growing on this connection, entry known to it | new id, file, write-only descriptor |
//! | `Progress` | `id` is this connection's growing recording | record reported samples |
//! | `CloseRecording` | `id` is this connection's growing recording | verify, fsync, hash; reply *accepted* |
//!
//! Anything else, and any request that breaks a limit, gets an error reply and the connection
//! is dropped; the growing recording, if any, is then salvaged ([`IngestSession::disconnected`]).
//! Nothing another stream holds is reachable from here.

use std::collections::BTreeSet;

use protocol::CompositeId;
use protocol::messages::{IngestReply, IngestRequest};

use crate::error::Error;
use crate::fs::Dir;
use crate::store::{CloseRequest, Syncer};

/// Distinct video sample entries one connection may use.
pub const MAX_SAMPLE_ENTRIES_PER_STREAM: usize = 16;

/// The syncer's state for one ingest connection.
#[derive(Debug)]
pub struct IngestSession {
    stream_id: i32,
    /// The recording this connection is writing, if any.
    growing: Option<CompositeId>,
    /// Sample entries this connection added (and so may open recordings with).
    sample_entries: BTreeSet<i32>,
}

/// What to send back: nothing for progress (it is not acknowledged, to keep the hot path to
/// one message a report), otherwise a reply, with the writer's descriptor for `Opened`.
#[derive(Debug)]
pub struct Reply<F> {
    pub reply: Option<IngestReply>,
    pub writer: Option<F>,
}

impl IngestSession {
    pub fn new(stream_id: i32) -> Self {
        IngestSession {
            stream_id,
            growing: None,
            sample_entries: BTreeSet::new(),
        }
    }

    pub fn stream_id(&self) -> i32 {
        self.stream_id
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

    /// Serves one request. An `Err` means the connection must be dropped (after an error
    /// reply naming the reason) and [`IngestSession::disconnected`] called.
    pub fn handle<D: Dir>(
        &mut self,
        syncer: &mut Syncer<D>,
        req: IngestRequest,
    ) -> Result<Reply<D::File>, Error> {
        let reply = |reply| Reply {
            reply: Some(reply),
            writer: None,
        };
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
                if width == 0 || height == 0 || data.is_empty() || data.len() > 64 << 10 {
                    return Err(self.reject(format!(
                        "bad sample entry: {width}x{height}, {} bytes",
                        data.len()
                    )));
                }
                let id = syncer.add_sample_entry(width, height, &rfc6381_codec, &data)?;
                self.sample_entries.insert(id);
                Ok(reply(IngestReply::SampleEntry { id }))
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
                    syncer.open_recording(self.stream_id, run_offset, sample_entry_id)?;
                self.growing = Some(id);
                Ok(Reply {
                    reply: Some(IngestReply::Opened { id }),
                    writer: Some(writer),
                })
            }
            IngestRequest::Progress { id, samples, times } => {
                self.check_growing(id)?;
                syncer.progress(id, &samples, times)?;
                Ok(Reply {
                    reply: None,
                    writer: None,
                })
            }
            IngestRequest::CloseRecording {
                id,
                samples,
                last_sample_duration_90k,
                times,
                end_reason,
                writer_blake3,
            } => {
                self.check_growing(id)?;
                self.growing = None;
                syncer.close_recording(
                    id,
                    CloseRequest {
                        samples,
                        last_sample_duration_90k,
                        times,
                        end_reason,
                        writer_blake3,
                    },
                )?;
                Ok(reply(IngestReply::Accepted { id }))
            }
        }
    }

    /// The connection is gone (crash, kill, bad frame, takeover): salvage what it was writing.
    pub fn disconnected<D: Dir>(&mut self, syncer: &mut Syncer<D>, why: &str) -> Result<(), Error> {
        match self.growing.take() {
            None => Ok(()),
            Some(id) => syncer.abandon_recording(id, why),
        }
    }
}
