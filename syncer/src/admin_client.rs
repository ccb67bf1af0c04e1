//! The client side of the admin socket, for the supervisor, the `nvr` command line and tests:
//! status, recordings, cameras (list, add, set, remove), brokered ingest connections, shutdown.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use protocol::messages::{
    AdminReply, AdminRequest, CameraConfig, CameraInfo, Hello, MAX_RECORDINGS_PER_PAGE, ROLE_ADMIN,
    RecordingSummary, StatusReport,
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
    Wire(#[from] WireError),
    #[error("the syncer refused: {0}")]
    Refused(String),
    #[error("the syncer answered {got} where {expected} was expected")]
    Unexpected { got: String, expected: &'static str },
}

pub struct AdminClient {
    conn: Conn,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient").finish_non_exhaustive()
    }
}

impl AdminClient {
    /// Connects to the syncer serving `data_dir` and says hello.
    pub fn connect(data_dir: &DataDir) -> Result<AdminClient, AdminError> {
        let path = socket_path(data_dir);
        let stream =
            UnixStream::connect(&path).map_err(|source| AdminError::Connect { path, source })?;
        let mut conn = Conn::from(stream);
        conn.send(&Hello::new(ROLE_ADMIN))?;
        match conn.recv::<AdminReply>()? {
            AdminReply::Ok => Ok(AdminClient { conn }),
            AdminReply::Error { message } => Err(AdminError::Refused(message)),
            other => Err(unexpected(other, "Ok")),
        }
    }

    /// One request, one answer (refusals as `Err`).
    pub fn request(&mut self, req: &AdminRequest) -> Result<AdminReply, AdminError> {
        self.conn.send(req)?;
        match self.conn.recv::<AdminReply>()? {
            AdminReply::Error { message } => Err(AdminError::Refused(message)),
            r => Ok(r),
        }
    }

    /// A fresh connection bound to the stream, for its ingest's fd 3.
    pub fn connect_ingest(&mut self, stream_name: &str) -> Result<OwnedFd, AdminError> {
        self.conn.send(&AdminRequest::ConnectIngest {
            stream_name: stream_name.to_owned(),
        })?;
        match self.conn.recv_with_optional_fd::<AdminReply>()? {
            (AdminReply::IngestConnection, Some(fd)) => Ok(fd),
            (AdminReply::Error { message }, None) => Err(AdminError::Refused(message)),
            (other, _) => Err(unexpected(other, "IngestConnection with a descriptor")),
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

fn unexpected(got: AdminReply, expected: &'static str) -> AdminError {
    let got = format!("{got:?}");
    AdminError::Unexpected {
        got: got.chars().take(80).collect(),
        expected,
    }
}
