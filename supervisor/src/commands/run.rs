//! `nvr run`: supervise the syncer and one ingest per camera until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use syncer::layout::DataDir;

use super::CmdResult;
use crate::cli::RunArgs;
use crate::identity::{self, Identity};
use crate::ingest_uids::{self, IngestUids};
use crate::supervise::{self, Backoff, Config, Intensity, Supervisor};

/// The directory holding `nvr` and its sibling binaries `nvr-syncer` and `nvr-ingest`.
pub fn bin_dir() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or("the nvr executable has no parent directory")?
        .to_owned();
    for b in ["nvr-syncer", "nvr-ingest"] {
        if !dir.join(b).exists() {
            return Err(format!(
                "{b} not found next to nvr in {}; build every binary (`cargo build --release` \
                 at the workspace root) or install all three together",
                dir.display()
            )
            .into());
        }
    }
    Ok(dir)
}

/// Resolves `--ingest-uids`: per-camera uids as root (the default range unless one is given),
/// none otherwise; a range asked for without root is an error, not a silent downgrade.
fn ingest_uids(
    asked: Option<IngestUids>,
) -> Result<Option<IngestUids>, Box<dyn std::error::Error>> {
    let me = nix::unistd::geteuid();
    if !me.is_root() {
        if let Some(r) = asked {
            return Err(format!(
                "--ingest-uids {r} needs nvr run to be started as root (running as uid {me})"
            )
            .into());
        }
        tracing::info!(uid = %me, "not started as root: ingests run under this uid, sandboxed");
        return Ok(None);
    }
    let range = match asked {
        Some(r) => r,
        None => ingest_uids::DEFAULT.parse()?,
    };
    range.check_usable()?;
    tracing::info!(%range, "each camera's ingest runs under a uid of its own");
    Ok(Some(range))
}

/// Started as root on a data dir another user owns (`nvr init --user`): the syncer runs as
/// that user, whose uid must not be one of the ingests'.
fn syncer_owner(
    d: &DataDir,
    ingest_uids: Option<IngestUids>,
) -> Result<Option<Identity>, Box<dyn std::error::Error>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let Some(owner) = identity::data_dir_owner(d)? else {
        return Ok(None);
    };
    if let Some(r) = ingest_uids
        && r.contains(owner.uid.as_raw())
    {
        return Err(format!(
            "the data dir's owner, uid {}, is in --ingest-uids {r}: choose another range",
            owner.uid
        )
        .into());
    }
    // Source files are opened with the owner's identity (supervise::open_source_file): none
    // of root's groups may count then.
    nix::unistd::setgroups(&[]).map_err(|e| format!("cannot drop supplementary groups: {e}"))?;
    tracing::info!(uid = %owner.uid, "the syncer runs as the data dir's owner");
    Ok(Some(owner))
}

/// Tells systemd the service is ready, when started as a `Type=notify` unit.
fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot notify systemd");
            return;
        }
    };
    let bytes = path.as_encoded_bytes();
    let r = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|a| sock.send_to_addr(b"READY=1", &a))
    } else {
        sock.send_to(b"READY=1", &path)
    };
    if let Err(e) = r {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Builds the supervisor configuration for `d`.
pub fn config(
    d: &DataDir,
    args: &RunArgs,
    stop_requests: Arc<AtomicUsize>,
) -> Result<Config, Box<dyn std::error::Error>> {
    if !d.db_path().exists() {
        return Err(format!(
            "no database at {}; run `nvr init` first",
            d.db_path().display()
        )
        .into());
    }
    d.check_writable()?;
    check_min_free(d, args.min_free.0, args.min_free_inodes)?;
    let ingest_uids = ingest_uids(args.ingest_uids)?;
    Ok(Config {
        data_dir: d.clone(),
        bin_dir: bin_dir()?,
        ingest_uids,
        syncer_owner: syncer_owner(d, ingest_uids)?,
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout_sec),
        backoff: Backoff {
            initial: Duration::from_millis(args.restart_backoff_ms),
            max: Duration::from_secs(args.restart_backoff_max_sec),
            ..Backoff::default()
        },
        intensity: Intensity {
            max_restarts: args.max_restarts,
            window: Duration::from_secs(args.restart_window_sec),
            failed_retry: Duration::from_secs(args.failed_retry_sec),
        },
        min_free_bytes: args.min_free.0,
        min_free_inodes: args.min_free_inodes,
        stop_requests,
    })
}

/// Refuses a `--min-free` or `--min-free-inodes` the sample dir's file system can never
/// have, before anything starts (the syncer would refuse it at each start).
fn check_min_free(
    d: &DataDir,
    min_free_bytes: u64,
    min_free_inodes: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let options = syncer::SyncerOptions {
        min_free_bytes,
        min_free_inodes,
        ..syncer::SyncerOptions::default()
    };
    options
        .check_against(d.sample_fs_size()?)
        .map_err(|e| match e {
            syncer::Error::MinFreeInodesTooLarge { .. } => format!("--min-free-inodes: {e}"),
            e => format!("--min-free: {e}"),
        })
        .map_err(Into::into)
}

pub fn run(d: &DataDir, args: RunArgs) -> CmdResult {
    let stop = Arc::new(AtomicUsize::new(0));
    let cfg = config(d, &args, stop.clone())?;
    supervise::watch_signals(stop)?;
    eprintln!(
        "nvr run: supervising {}; Ctrl-C or SIGTERM stops (a second one hurries)",
        d.root.display()
    );
    Supervisor::new(cfg).run(notify_ready)?;
    eprintln!("nvr run: stopped cleanly");
    Ok(ExitCode::SUCCESS)
}
