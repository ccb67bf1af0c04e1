//! `nvr camera add | list | set | remove`.
//!
//! Each goes through the running syncer if one answers, else through a syncer started in this
//! process on the locked data dir (see [`super::access`]). Names and settings are checked by
//! `syncer::db` ([`validate_camera_name`], [`StreamConfig::validate`]), the one place both
//! paths share; the command checks them up front only to fail before touching the data dir.

use std::process::ExitCode;

use protocol::messages::{CameraConfig, CameraInfo};
use protocol::source_url::redact;
use serde::Serialize;
use syncer::db::{StreamConfig, validate_camera_name};
use syncer::fs::RealDir;
use syncer::layout::DataDir;
use syncer::{Error, Syncer};

use super::CmdResult;
use super::access::{Access, connect_or_lock};
use super::table::{Align, Table};
use crate::cli::{CameraCommand, CameraCredentials, CameraSettings};
use crate::size::Size;

/// Quota of a new camera unless `--retain` says otherwise.
pub const DEFAULT_RETAIN: Size = Size(10 << 30);
/// `--flush-if-sec` of a new camera unless given.
pub const DEFAULT_FLUSH_IF_SEC: u32 = 60;
/// `--rotate-sec` of a new camera unless given.
pub const DEFAULT_ROTATE_SEC: u32 = 60;

pub fn run(d: &DataDir, command: CameraCommand) -> CmdResult {
    match command {
        CameraCommand::Add {
            name,
            source,
            credentials,
            settings,
        } => add(d, &name, with_credentials(source, &credentials)?, &settings),
        CameraCommand::List { json } => list(d, json),
        CameraCommand::Set {
            name,
            source,
            credentials,
            settings,
        } => {
            let source = source
                .map(|s| with_credentials(s, &credentials))
                .transpose()?;
            set(d, &name, source, &settings)
        }
        CameraCommand::Remove {
            name,
            delete_recordings,
        } => remove(d, &name, delete_recordings),
    }
}

/// `source` with `--username` and `--password-file` put into its user info (percent-encoded).
/// Refused: credentials for a source that is not `rtsp://`, or given both ways.
fn with_credentials(
    source: String,
    c: &CameraCredentials,
) -> Result<String, Box<dyn std::error::Error>> {
    let Some(username) = &c.username else {
        return Ok(source);
    };
    let mut url = url::Url::parse(&source)
        .ok()
        .filter(|u| u.scheme() == "rtsp" && u.has_host())
        .ok_or_else(|| {
            format!(
                "--username applies to rtsp:// sources only, not {:?}",
                redact(&source)
            )
        })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{:?} already holds credentials; give them in the URL or with --username, not both",
            redact(&source)
        )
        .into());
    }
    let password = match &c.password_file {
        None => String::new(),
        Some(path) => {
            let text = if path.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(path)
            }
            .map_err(|e| format!("cannot read the password file {}: {e}", path.display()))?;
            text.lines().next().unwrap_or_default().to_owned()
        }
    };
    // Encoded here, `%` included (the url crate leaves a `%` as it is, which would then be
    // decoded as an escape): the camera must get exactly the bytes of the file.
    let encode = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let password = encode(&password);
    let set = url
        .set_username(&encode(username))
        .and_then(|()| url.set_password((!password.is_empty()).then_some(&password)));
    set.map_err(|()| format!("cannot put credentials into {:?}", redact(&source)))?;
    Ok(url.to_string())
}

fn no_camera(name: &str) -> Box<dyn std::error::Error> {
    format!("no camera named {name:?}").into()
}

/// Runs `f` on a syncer started on the locked data dir, then shuts the syncer down (also
/// after `f` failed, so that what it did is flushed and the lock released cleanly).
fn offline_change<T>(
    offline: super::access::Offline,
    f: impl FnOnce(&mut Syncer<RealDir>) -> Result<T, Box<dyn std::error::Error>>,
) -> Result<T, Box<dyn std::error::Error>> {
    let mut s = offline.write()?;
    let result = f(&mut s);
    let stopped = s.shutdown();
    let out = result?;
    stopped?;
    Ok(out)
}

fn stream_id(s: &Syncer<RealDir>, name: &str) -> Result<i32, Box<dyn std::error::Error>> {
    s.stream_rows()
        .into_iter()
        .find(|r| r.name == name)
        .map(|r| r.id)
        .ok_or_else(|| no_camera(name))
}

fn add(d: &DataDir, name: &str, source: String, settings: &CameraSettings) -> CmdResult {
    let config = StreamConfig {
        source,
        retain_bytes: settings.retain.unwrap_or(DEFAULT_RETAIN).as_i64(),
        flush_if_sec: settings.flush_if_sec.unwrap_or(DEFAULT_FLUSH_IF_SEC),
        rotate_sec: settings.rotate_sec.unwrap_or(DEFAULT_ROTATE_SEC),
    };
    validate_camera_name(name)?;
    config.validate()?;
    let info = match connect_or_lock(d)? {
        Access::Online(mut c) => c.add_camera(name, config.into())?,
        Access::Offline(o) => offline_change(o, |s| {
            let id = s.add_stream(name, config.clone())?;
            Ok(CameraInfo {
                id,
                name: name.to_owned(),
                config: config.into(),
            })
        })?,
    };
    println!("added camera {}", describe(&info));
    Ok(ExitCode::SUCCESS)
}

/// `NAME (id N): source S, retain SIZE, flush-if-sec N, rotate-sec N`.
fn describe(c: &CameraInfo) -> String {
    format!(
        "{} (id {}): source {}, retain {}, flush-if-sec {}, rotate-sec {}",
        c.name,
        c.id,
        redact(&c.config.source),
        retain(&c.config),
        c.config.flush_if_sec,
        c.config.rotate_sec
    )
}

fn retain(c: &CameraConfig) -> Size {
    Size(u64::try_from(c.retain_bytes).unwrap_or(0))
}

/// One camera in `camera list --json` (its source's password shown as `***`).
#[derive(Debug, Serialize)]
struct CameraJson<'a> {
    id: i32,
    name: &'a str,
    source: String,
    retain_bytes: i64,
    flush_if_sec: u32,
    rotate_sec: u32,
}

fn cameras(d: &DataDir) -> Result<Vec<CameraInfo>, Box<dyn std::error::Error>> {
    Ok(match connect_or_lock(d)? {
        Access::Online(mut c) => c.cameras()?,
        Access::Offline(o) => o.read()?.streams()?.iter().map(CameraInfo::from).collect(),
    })
}

fn list(d: &DataDir, json: bool) -> CmdResult {
    let cams = cameras(d)?;
    if json {
        let out: Vec<CameraJson> = cams
            .iter()
            .map(|c| CameraJson {
                id: c.id,
                name: &c.name,
                source: redact(&c.config.source),
                retain_bytes: c.config.retain_bytes,
                flush_if_sec: c.config.flush_if_sec,
                rotate_sec: c.config.rotate_sec,
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    if cams.is_empty() {
        println!("no cameras; add one with `nvr camera add NAME --source URL`");
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&[
        ("ID", Align::Right),
        ("NAME", Align::Left),
        ("RETAIN", Align::Right),
        ("FLUSH-IF-SEC", Align::Right),
        ("ROTATE-SEC", Align::Right),
        ("SOURCE", Align::Left),
    ]);
    for c in &cams {
        t.row(vec![
            c.id.to_string(),
            c.name.clone(),
            retain(&c.config).to_string(),
            c.config.flush_if_sec.to_string(),
            c.config.rotate_sec.to_string(),
            redact(&c.config.source),
        ]);
    }
    print!("{}", t.render());
    Ok(ExitCode::SUCCESS)
}

fn set(d: &DataDir, name: &str, source: Option<String>, settings: &CameraSettings) -> CmdResult {
    if source.is_none()
        && settings.retain.is_none()
        && settings.flush_if_sec.is_none()
        && settings.rotate_sec.is_none()
    {
        return Err(format!(
            "nothing to change for camera {name:?}: give --source, --retain, --flush-if-sec \
             or --rotate-sec"
        )
        .into());
    }
    let retain_bytes = settings.retain.map(Size::as_i64);
    let (before, after, recordings_before, recordings_after) = match connect_or_lock(d)? {
        Access::Online(mut c) => {
            let count = |c: &mut syncer::admin_client::AdminClient| {
                c.status().map(|s| {
                    s.streams
                        .iter()
                        .find(|s| s.name == name)
                        .map_or(0, |s| s.committed_recordings)
                })
            };
            let before = c
                .cameras()?
                .into_iter()
                .find(|c| c.name == name)
                .ok_or_else(|| no_camera(name))?;
            let n0 = count(&mut c)?;
            let after = c.set_camera(
                name,
                source,
                retain_bytes,
                settings.flush_if_sec,
                settings.rotate_sec,
            )?;
            let n1 = count(&mut c)?;
            (before, after, n0, n1)
        }
        Access::Offline(o) => offline_change(o, |s| {
            let id = stream_id(s, name)?;
            let row = s
                .stream_rows()
                .into_iter()
                .find(|r| r.id == id)
                .expect("found above");
            let mut config = row.config.clone();
            config.source = source.unwrap_or(config.source);
            config.retain_bytes = retain_bytes.unwrap_or(config.retain_bytes);
            config.flush_if_sec = settings.flush_if_sec.unwrap_or(config.flush_if_sec);
            config.rotate_sec = settings.rotate_sec.unwrap_or(config.rotate_sec);
            let count = |s: &Syncer<RealDir>| {
                s.stream_summary(id)
                    .map_or(0, |x| x.committed_recordings as u64)
            };
            let n0 = count(s);
            s.set_stream_config(id, config)?;
            let n1 = count(s);
            let after = s
                .stream_rows()
                .into_iter()
                .find(|r| r.id == id)
                .expect("still there");
            Ok((CameraInfo::from(&row), CameraInfo::from(&after), n0, n1))
        })?,
    };
    println!("changed camera {}", describe(&after));
    if after.config.retain_bytes < before.config.retain_bytes {
        println!(
            "retain lowered from {} to {}: {} recording(s) deleted",
            retain(&before.config),
            retain(&after.config),
            recordings_before.saturating_sub(recordings_after)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn remove(d: &DataDir, name: &str, delete_recordings: bool) -> CmdResult {
    let deleted = match connect_or_lock(d)? {
        Access::Online(mut c) => {
            let n = c
                .status()?
                .streams
                .iter()
                .find(|s| s.name == name)
                .ok_or_else(|| no_camera(name))?
                .committed_recordings;
            c.remove_camera(name, delete_recordings)?;
            n
        }
        Access::Offline(o) => offline_change(o, |s| {
            let id = stream_id(s, name)?;
            let n = s
                .stream_summary(id)
                .map_or(0, |x| x.committed_recordings as u64);
            match s.remove_stream(id, delete_recordings) {
                Ok(()) => Ok(n),
                Err(e @ (Error::HasRecordings { .. } | Error::StreamBusy { .. })) => Err(e.into()),
                Err(e) => Err(format!("camera {name:?} not removed: {e}").into()),
            }
        })?,
    };
    if delete_recordings {
        println!("removed camera {name} and its {deleted} recording(s)");
    } else {
        println!("removed camera {name}");
    }
    Ok(ExitCode::SUCCESS)
}
