//! What `nvr run` knows and the syncer does not: each camera's process state. The supervisor
//! rewrites `<data-dir>/supervisor.json` (write to a temporary file, rename) whenever it
//! changes, and removes it when it exits; `nvr status` merges it with the syncer's view.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use syncer::layout::DataDir;

pub const STATE_FILE_NAME: &str = "supervisor.json";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessState {
    /// Started and not known to have exited.
    Running,
    /// Exited unexpectedly; waiting out its backoff before the next start.
    Restarting,
    /// Restarted too often: given up on until `nvr run` restarts.
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CameraState {
    pub name: String,
    pub state: ProcessState,
    /// Restarts since `nvr run` started.
    pub restarts: u32,
    /// How the last run of its ingest ended, if it did.
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorState {
    /// Pid of the `nvr run` process.
    pub pid: u32,
    pub syncer: ProcessState,
    pub syncer_restarts: u32,
    pub cameras: Vec<CameraState>,
}

pub fn state_path(d: &DataDir) -> PathBuf {
    d.root.join(STATE_FILE_NAME)
}

impl SupervisorState {
    /// Replaces the state file atomically.
    pub fn write(&self, d: &DataDir) -> io::Result<()> {
        let path = state_path(d);
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, &path)
    }

    /// Reads the state file of a running `nvr run`: `None` if there is none, or if its
    /// process is gone (a leftover of a killed supervisor).
    pub fn read(d: &DataDir) -> Option<SupervisorState> {
        let s: SupervisorState =
            serde_json::from_slice(&std::fs::read(state_path(d)).ok()?).ok()?;
        Path::new(&format!("/proc/{}", s.pid)).exists().then_some(s)
    }

    pub fn remove(d: &DataDir) {
        let _ = std::fs::remove_file(state_path(d));
    }
}
