//! `nvr-syncer`: the privileged daemon of one data dir. See `syncer::server`.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use syncer::layout::DataDir;
use syncer::server::{ServeOptions, serve};

/// The syncer of an nvr data dir: the only process that opens its database and creates,
/// fsyncs, hashes and deletes its sample files. Normally started by `nvr run`.
///
/// It runs recovery, then serves the admin socket `<data-dir>/syncer.sock` (its own uid and
/// root only) and the ingest connections it brokers there, until SIGTERM or SIGINT (a second
/// signal stops waiting for ingests). Exit status: 0 after a clean stop, 1 on an error (the
/// supervisor restarts it; recovery makes the data dir consistent first).
#[derive(Debug, Parser)]
#[command(name = "nvr-syncer", version)]
struct Args {
    /// The data dir (made by `nvr init`).
    #[arg(long, env = "NVR_DATA_DIR", default_value = "./nvr-data")]
    data_dir: PathBuf,

    /// Write "ready\n" to this inherited descriptor, then close it, once recovery is done and
    /// the admin socket listens.
    #[arg(long)]
    ready_fd: Option<i32>,

    /// Seconds a graceful stop waits for ingests to close their recordings.
    #[arg(long, default_value_t = 10)]
    shutdown_grace_sec: u64,

    /// Keep at least this many bytes free on the sample dir's file system by deleting the
    /// oldest recordings beyond their quotas (0 disables).
    #[arg(long, default_value_t = syncer::SyncerOptions::default().min_free_bytes)]
    min_free_bytes: u64,

    /// Likewise keep at least this many inodes free (0 disables).
    #[arg(long, default_value_t = syncer::SyncerOptions::default().min_free_inodes)]
    min_free_inodes: u64,

    /// The files ingests hold are listed by the supervisor (`nvr run` as root passes this to
    /// a syncer it runs as the data dir's owner, which may not list them itself).
    #[arg(long)]
    holds_relayed: bool,
}

/// Raises the soft descriptor limit to the hard one: the daemon holds a descriptor per
/// growing recording, per brokered connection, and per file an ingest was handed and still
/// holds (`syncer::exposure`, up to `MAX_EXPOSED_FILES` per ingest).
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        eprintln!("nvr-syncer: cannot raise the open files limit to {hard}: {e}");
    }
}

fn main() -> ExitCode {
    syncer::layout::set_private_umask();
    raise_open_files_limit();
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let _span = tracing::info_span!("nvr-syncer").entered();
    let ready_fd = match args.ready_fd {
        Some(fd) if fd < 3 => {
            eprintln!(
                "nvr-syncer: --ready-fd {fd} is a standard stream; give an inherited descriptor >= 3"
            );
            return ExitCode::from(2);
        }
        // SAFETY: the descriptor is inherited for exactly this purpose and used only here.
        Some(fd) => Some(unsafe { OwnedFd::from_raw_fd(fd) }),
        None => None,
    };
    let opts = ServeOptions {
        holds_relayed: args.holds_relayed,
        shutdown_grace: std::time::Duration::from_secs(args.shutdown_grace_sec),
        syncer: syncer::SyncerOptions {
            min_free_bytes: args.min_free_bytes,
            min_free_inodes: args.min_free_inodes,
            ..Default::default()
        },
    };
    let data_dir = DataDir::new(&args.data_dir);
    let result = serve(&data_dir, opts, move || {
        if let Some(fd) = ready_fd {
            let mut f = std::fs::File::from(fd);
            if let Err(e) = f.write_all(b"ready\n") {
                tracing::warn!(error = %e, "could not signal readiness");
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(data_dir = %args.data_dir.display(), error = %e, "nvr-syncer failed");
            eprintln!("nvr-syncer: {}: {e}", args.data_dir.display());
            ExitCode::from(1)
        }
    }
}
