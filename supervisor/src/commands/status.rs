//! `nvr status` and `nvr recordings`: what the data dir holds, from the running syncer if one
//! answers (it never stalls recording: the syncer answers from memory and one read) or else
//! from the database read under the dir lock, without recovery and without writing.

use std::collections::HashMap;
use std::process::ExitCode;

use protocol::messages::{GarbageStatus, RecordingSummary};
use protocol::{CompositeId, Duration, Time};
use serde::Serialize;
use syncer::db::Database;
use syncer::layout::DataDir;
use syncer::retention::round_up;

use super::CmdResult;
use super::access::{Access, connect_or_lock};
use super::table::{Align, Table};
use crate::size::Size;
use crate::state::{ProcessState, SupervisorState};

/// `nvr status --json`.
#[derive(Debug, Serialize)]
struct StatusJson {
    /// `running` if a syncer answered on the admin socket, else `stopped`.
    syncer: &'static str,
    /// Pid of the `nvr run` supervising the data dir, if one runs.
    supervisor_pid: Option<u32>,
    cameras: Vec<CameraStatus>,
    /// Files of deleted recordings not unlinked yet; those whose unlink keeps failing are
    /// retried with backoff (known only from a running syncer).
    garbage: GarbageStatus,
}

/// One camera in `nvr status`.
#[derive(Debug, Serialize)]
struct CameraStatus {
    id: i32,
    name: String,
    /// `running`, `restarting`, `failed` (from `nvr run`), or `stopped`.
    state: &'static str,
    /// Restarts of its ingest since `nvr run` started.
    restarts: u32,
    last_error: Option<String>,
    /// For a failed camera: when `nvr run` tries it again (RFC 3339).
    next_try: Option<String>,
    committed_recordings: u64,
    /// Each recording rounded up to 4 KiB, as the quota counts them.
    committed_bytes: i64,
    retain_bytes: i64,
    newest_recording: Option<NewestJson>,
    /// The recording being written now (16-hex id), if any.
    growing: Option<String>,
}

#[derive(Debug, Serialize)]
struct NewestJson {
    /// 16-hex composite id.
    id: String,
    /// RFC 3339.
    start: String,
    start_90k: i64,
}

/// One stream as the syncer or the database reports it, before the supervisor's view is
/// merged in.
struct StreamView {
    id: i32,
    name: String,
    committed_recordings: u64,
    committed_bytes: i64,
    retain_bytes: i64,
    newest: Option<(CompositeId, Time)>,
    growing: Option<CompositeId>,
}

fn process_state(s: ProcessState) -> &'static str {
    match s {
        ProcessState::Running => "running",
        ProcessState::Restarting => "restarting",
        ProcessState::Failed => "failed",
    }
}

pub fn status(d: &DataDir, json: bool) -> CmdResult {
    let (online, streams, garbage) = match connect_or_lock(d)? {
        Access::Online(mut c) => {
            let report = c.status()?;
            let garbage = report.garbage;
            let streams = report
                .streams
                .into_iter()
                .map(|s| StreamView {
                    id: s.id,
                    name: s.name,
                    committed_recordings: s.committed_recordings,
                    committed_bytes: s.committed_bytes,
                    retain_bytes: s.retain_bytes,
                    newest: s.newest_committed.zip(s.newest_committed_start),
                    growing: s.growing,
                })
                .collect();
            (true, streams, garbage)
        }
        Access::Offline(o) => {
            let db = o.read()?;
            let garbage = GarbageStatus {
                files: db.garbage()?.len() as u64,
                ..GarbageStatus::default()
            };
            (false, offline_streams(&db)?, garbage)
        }
    };
    let supervisor = SupervisorState::read(d);
    let cameras: Vec<CameraStatus> = streams
        .into_iter()
        .map(|s| {
            let sup = supervisor
                .as_ref()
                .and_then(|st| st.cameras.iter().find(|c| c.name == s.name));
            let state = match sup {
                Some(c) => process_state(c.state),
                // Written to without `nvr run` (e.g. an ingest started by hand).
                None if s.growing.is_some() => "running",
                None => "stopped",
            };
            CameraStatus {
                id: s.id,
                state,
                restarts: sup.map_or(0, |c| c.restarts),
                last_error: sup.and_then(|c| c.last_error.clone()),
                next_try: sup.and_then(|c| c.retry_at).map(|t| t.to_string()),
                committed_recordings: s.committed_recordings,
                committed_bytes: s.committed_bytes,
                retain_bytes: s.retain_bytes,
                newest_recording: s.newest.map(|(id, start)| NewestJson {
                    id: id.to_string(),
                    start: start.to_string(),
                    start_90k: start.0,
                }),
                growing: s.growing.map(|g| g.to_string()),
                name: s.name,
            }
        })
        .collect();
    let out = StatusJson {
        syncer: if online { "running" } else { "stopped" },
        supervisor_pid: supervisor.as_ref().map(|s| s.pid),
        cameras,
        garbage,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", render_status(&out, supervisor.as_ref()));
    }
    Ok(ExitCode::SUCCESS)
}

fn render_status(out: &StatusJson, supervisor: Option<&SupervisorState>) -> String {
    let mut text = match supervisor {
        Some(s) => format!(
            "nvr run: pid {}; syncer {} ({} restarts)\n",
            s.pid,
            process_state(s.syncer),
            s.syncer_restarts
        ),
        None => format!("nvr run: not running; syncer {}\n", out.syncer),
    };
    let g = &out.garbage;
    if g.failing_unlinks > 0 {
        text.push_str(&format!(
            "garbage: {} files to unlink, {} failing (retried with backoff); latest: {}\n",
            g.files,
            g.failing_unlinks,
            g.newest_error.as_deref().unwrap_or("-")
        ));
    } else if g.files > 0 {
        text.push_str(&format!("garbage: {} files to unlink\n", g.files));
    }
    if out.cameras.is_empty() {
        text.push_str("no cameras; add one with `nvr camera add NAME --source URL`\n");
        return text;
    }
    let mut t = Table::new(&[
        ("CAMERA", Align::Left),
        ("STATE", Align::Left),
        ("RESTARTS", Align::Right),
        ("RECORDINGS", Align::Right),
        ("USED", Align::Right),
        ("QUOTA", Align::Right),
        ("NEWEST", Align::Left),
        ("LAST ERROR", Align::Left),
    ]);
    let size = |b: i64| Size(u64::try_from(b).unwrap_or(0)).to_string();
    for c in &out.cameras {
        t.row(vec![
            c.name.clone(),
            c.state.to_owned(),
            c.restarts.to_string(),
            c.committed_recordings.to_string(),
            size(c.committed_bytes),
            size(c.retain_bytes),
            c.newest_recording
                .as_ref()
                .map_or("-".to_owned(), |n| format!("{} {}", n.id, n.start)),
            match (&c.last_error, &c.next_try) {
                (Some(e), Some(t)) => format!("{e} (next try {t})"),
                (Some(e), None) => e.clone(),
                (None, Some(t)) => format!("next try {t}"),
                (None, None) => "-".to_owned(),
            },
        ]);
    }
    text.push_str(&t.render());
    text
}

/// Every stream's committed recordings as the database has them.
fn offline_streams(db: &Database) -> Result<Vec<StreamView>, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    for row in db.streams()? {
        let sizes = db.recording_sizes(row.id)?;
        let newest = db.newest_recording(row.id)?.map(|r| (r.id, r.start));
        out.push(StreamView {
            id: row.id,
            committed_recordings: sizes.len() as u64,
            committed_bytes: sizes.iter().map(|&(_, b)| round_up(b)).sum(),
            retain_bytes: row.config.retain_bytes,
            newest,
            growing: None,
            name: row.name,
        });
    }
    Ok(out)
}

/// One recording in `nvr recordings --json`: the same fields whether the syncer or the
/// database answered.
#[derive(Debug, PartialEq, Eq, Serialize)]
struct RecordingJson {
    /// 16-hex composite id: also the sample file's name.
    id: String,
    camera: String,
    /// RFC 3339.
    start: String,
    /// 90 kHz ticks since the Unix epoch.
    start_90k: i64,
    wall_duration_90k: i32,
    media_duration_90k: i32,
    sample_file_bytes: i64,
    video_samples: i32,
    video_sync_samples: i32,
    run_offset: i32,
    /// Hex.
    blake3: String,
    end_reason: Option<String>,
    flags: i32,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl From<RecordingSummary> for RecordingJson {
    fn from(r: RecordingSummary) -> Self {
        RecordingJson {
            id: r.id.to_string(),
            camera: r.stream_name,
            start: r.start.to_string(),
            start_90k: r.start.0,
            wall_duration_90k: r.wall_duration_90k,
            media_duration_90k: r.media_duration_90k,
            sample_file_bytes: r.sample_file_bytes,
            video_samples: r.video_samples,
            video_sync_samples: r.video_sync_samples,
            run_offset: r.run_offset,
            blake3: hex(&r.blake3),
            end_reason: r.end_reason,
            flags: r.flags,
        }
    }
}

pub fn recordings(d: &DataDir, camera: Option<&str>, json: bool) -> CmdResult {
    let list: Vec<RecordingJson> = match connect_or_lock(d)? {
        Access::Online(mut c) => c
            .recordings(camera)?
            .into_iter()
            .map(RecordingJson::from)
            .collect(),
        Access::Offline(o) => {
            let db = o.read()?;
            let names: HashMap<i32, String> =
                db.streams()?.into_iter().map(|r| (r.id, r.name)).collect();
            let filter = match camera {
                None => None,
                Some(n) => Some(
                    names
                        .iter()
                        .find(|(_, name)| *name == n)
                        .map(|(&id, _)| id)
                        .ok_or_else(|| format!("no camera named {n:?}"))?,
                ),
            };
            db.recordings(filter)?
                .into_iter()
                .map(|r| {
                    let camera = names.get(&r.id.stream()).cloned().unwrap_or_default();
                    RecordingJson::from(r.summary(camera))
                })
                .collect()
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        println!("no committed recordings");
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&[
        ("ID", Align::Left),
        ("CAMERA", Align::Left),
        ("START", Align::Left),
        ("DURATION", Align::Right),
        ("SIZE", Align::Right),
        ("SAMPLES", Align::Right),
        ("RUN", Align::Right),
        ("END REASON", Align::Left),
    ]);
    for r in &list {
        t.row(vec![
            r.id.clone(),
            r.camera.clone(),
            r.start.clone(),
            Duration(i64::from(r.wall_duration_90k)).to_string(),
            Size(u64::try_from(r.sample_file_bytes).unwrap_or(0)).to_string(),
            r.video_samples.to_string(),
            r.run_offset.to_string(),
            r.end_reason.clone().unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    print!("{}", t.render());
    Ok(ExitCode::SUCCESS)
}
