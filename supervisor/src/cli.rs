//! The command line: global options and the subcommands. Each subcommand's behaviour is in
//! `crate::commands`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::size::Size;

/// A hardened, multi-process recorder for security-camera streams.
///
/// While `nvr run` is active, commands go through the running syncer's admin socket;
/// otherwise they open the data dir themselves (taking its lock).
#[derive(Debug, Parser)]
#[command(name = "nvr", version)]
pub struct Cli {
    /// The data dir: `db.sqlite3` and `sample/` [default: ./nvr-data; `demo`: a new
    /// temporary dir].
    #[arg(long, global = true, env = "NVR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// The data dir when none is given.
pub const DEFAULT_DATA_DIR: &str = "./nvr-data";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Creates the database and sample dir (idempotent on a healthy data dir).
    Init {
        /// Started as root: give the data dir to this user, whom `nvr run` as root then runs
        /// the syncer as (and every other command started as root acts as).
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// Adds, lists, changes or removes cameras.
    Camera {
        #[command(subcommand)]
        command: CameraCommand,
    },
    /// Supervises the syncer and one ingest per camera until SIGINT/SIGTERM.
    Run(RunArgs),
    /// Per camera: state, restarts, committed recordings, bytes used vs quota, last commit.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Lists committed recordings.
    Recordings {
        /// Only this camera's.
        #[arg(long, value_name = "NAME")]
        camera: Option<String>,
        /// Print JSON (one array of objects) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Verifies DESIGN.md's invariants against the database and the files; exit status 0
    /// only when clean.
    Check {
        /// Recompute the blake3 of every sample file.
        #[arg(long)]
        hash: bool,
        /// Apply the safe fixes (trash orphan files, mark rows whose files are gone) and say
        /// what was done. Refused while recording is active.
        #[arg(long)]
        repair: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Records two cameras from the shipped clip for a while, stops, checks, and summarizes.
    Demo(DemoArgs),
    /// Writes a camera's committed recordings to a playable .mp4.
    ///
    /// Recordings overlapping [--start, --end) are exported whole, in id order, across runs
    /// (a gap between runs is closed up: samples play back to back). Works while recording:
    /// it only reads the database and committed (immutable) sample files.
    Export(ExportArgs),
}

/// Settings of a camera; `None` keeps the current (or default) value.
#[derive(Debug, Clone, Args)]
pub struct CameraSettings {
    /// Quota of committed recordings, e.g. `500MiB`, `10GiB`.
    // Hyphen values reach the size parser, which says why `-5GiB` is wrong.
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    pub retain: Option<Size>,
    /// Commit recordings at most this many seconds after their start.
    #[arg(long, value_name = "N")]
    pub flush_if_sec: Option<u32>,
    /// Rotate to a new recording at the first key frame past this many seconds of media.
    #[arg(long, value_name = "N")]
    pub rotate_sec: Option<u32>,
}

/// An `rtsp://` camera's credentials given apart from its URL: stored with the URL (in the
/// database), passed to the ingest in its environment, shown as `***` in listings.
#[derive(Debug, Clone, Default, Args)]
pub struct CameraCredentials {
    /// User name for the `rtsp://` camera of `--source` (instead of `USER:PASSWORD@` in it).
    #[arg(long, value_name = "NAME", requires = "source")]
    pub username: Option<String>,
    /// File whose first line is the camera's password (`-`: standard input), so that the
    /// password never appears on a command line.
    #[arg(long, value_name = "FILE", requires = "username")]
    pub password_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum CameraCommand {
    /// Adds a camera.
    Add {
        name: String,
        /// `rtsp://[USER:PASSWORD@]HOST[:PORT]/PATH[?transport=tcp|udp][&stall_sec=N]`,
        /// `file:PATH[?speed=N|max]` or `synthetic:[?fps=..]`.
        #[arg(long, value_name = "URL")]
        source: String,
        #[command(flatten)]
        credentials: CameraCredentials,
        #[command(flatten)]
        settings: CameraSettings,
    },
    /// Lists the cameras.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Changes a camera's settings; lowering `--retain` deletes the excess at once.
    Set {
        name: String,
        #[arg(long, value_name = "URL")]
        source: Option<String>,
        #[command(flatten)]
        credentials: CameraCredentials,
        #[command(flatten)]
        settings: CameraSettings,
    },
    /// Removes a camera.
    Remove {
        name: String,
        /// Also delete its recordings (required if it has any).
        #[arg(long)]
        delete_recordings: bool,
    },
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Started as root, each camera's ingest runs as uid and gid FIRST + its stream id, with
    /// no supplementary groups; every id of the range must be unassigned in the user and group
    /// databases [default when root: 61000-61999].
    #[arg(long, value_name = "FIRST-LAST")]
    pub ingest_uids: Option<crate::ingest_uids::IngestUids>,
    /// Seconds to wait for children at shutdown before SIGKILL.
    #[arg(long, default_value_t = 20)]
    pub shutdown_timeout_sec: u64,
    /// A camera restarted more than this many times within `--restart-window-sec` is marked
    /// failed.
    #[arg(long, default_value_t = 5)]
    pub max_restarts: usize,
    /// The window of `--max-restarts`, in seconds.
    #[arg(long, default_value_t = 60)]
    pub restart_window_sec: u64,
    /// Seconds before a failed camera is tried again; doubles while its tries fail, up to an
    /// hour.
    #[arg(long, default_value_t = 300)]
    pub failed_retry_sec: u64,
    /// First restart delay in milliseconds; it doubles with each quick failure.
    #[arg(long, default_value_t = 500)]
    pub restart_backoff_ms: u64,
    /// Longest restart delay, in seconds.
    #[arg(long, default_value_t = 30)]
    pub restart_backoff_max_sec: u64,
    /// Keep at least this much free on the sample dir's file system, deleting the oldest
    /// recordings beyond their quotas when it runs low (0 disables), e.g. `1GiB`.
    #[arg(long, value_name = "SIZE", default_value = "16MiB")]
    pub min_free: Size,
    /// Likewise keep at least this many inodes free (0 disables); opens are refused below a
    /// quarter of it.
    #[arg(long, value_name = "N", default_value_t = syncer::SyncerOptions::default().min_free_inodes)]
    pub min_free_inodes: u64,
}

impl Default for RunArgs {
    fn default() -> Self {
        RunArgs {
            ingest_uids: None,
            shutdown_timeout_sec: 20,
            max_restarts: 5,
            restart_window_sec: 60,
            failed_retry_sec: 300,
            restart_backoff_ms: 500,
            restart_backoff_max_sec: 30,
            min_free: Size(syncer::SyncerOptions::default().min_free_bytes),
            min_free_inodes: syncer::SyncerOptions::default().min_free_inodes,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// How long to record, e.g. `30s`, `2m`.
    #[arg(long, default_value = "30s", value_parser = crate::size::parse_duration)]
    pub duration: std::time::Duration,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// The camera whose recordings to export.
    #[arg(long, value_name = "NAME")]
    pub camera: String,
    /// Start of the range, RFC 3339 (e.g. `2026-11-27T04:48:38Z`, `...38.5+01:00`).
    #[arg(
        long,
        value_name = "TIME",
        value_parser = protocol::Time::parse_rfc3339,
        requires = "end",
        required_unless_present = "id"
    )]
    pub start: Option<protocol::Time>,
    /// End of the range (exclusive), RFC 3339.
    #[arg(
        long,
        value_name = "TIME",
        value_parser = protocol::Time::parse_rfc3339,
        requires = "start"
    )]
    pub end: Option<protocol::Time>,
    /// Exports only this recording: its 16-hex id, as `nvr recordings` lists it.
    #[arg(long, value_name = "ID", conflicts_with_all = ["start", "end"])]
    pub id: Option<protocol::CompositeId>,
    /// The .mp4 to write; written as `FILE.partial` and renamed over FILE when complete.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
}
