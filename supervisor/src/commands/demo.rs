//! `nvr demo`: records two cameras from the shipped H.264 clip, stops gracefully, checks the
//! result with `nvr check --hash`, and prints a summary.

use std::io::{IsTerminal, Write};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use protocol::clock::RealClock;
use syncer::admin_client::AdminClient;
use syncer::db::{Database, StreamConfig};
use syncer::layout::DataDir;

use super::CmdResult;
use crate::cli::{DemoArgs, RunArgs};
use crate::supervise::{self, Supervisor};

/// The clip both demo cameras record: 4 s of ffmpeg's test pattern, 320x240, 30 fps (see
/// `ingest/testdata/README.md`), looped by the ingest.
const CLIP: &[u8] = include_bytes!("../../../ingest/testdata/clip.h264");

const CAMERAS: [&str; 2] = ["demo-1", "demo-2"];

/// The data dir to use: the one given (missing or empty), else a new temporary one that is
/// kept afterwards so the recordings can be looked at.
fn prepare_dir(given: Option<DataDir>) -> Result<DataDir, Box<dyn std::error::Error>> {
    let d = match given {
        Some(d) => {
            if d.root.exists() && std::fs::read_dir(&d.root)?.next().is_some() {
                return Err(format!(
                    "{} is not empty; give `nvr demo` a new or empty directory",
                    d.root.display()
                )
                .into());
            }
            d
        }
        None => DataDir::new(
            tempfile::Builder::new()
                .prefix("nvr-demo-")
                .tempdir()?
                .keep(),
        ),
    };
    d.init()?;
    let clip = d.root.join("demo-clip.h264");
    std::fs::write(&clip, CLIP)?;
    let dir = Arc::new(d.lock_sample_dir()?);
    let db = Database::open(&d.db_path())?;
    let (mut s, _) = syncer::Syncer::start(dir, db, Arc::new(RealClock), Default::default())?;
    for name in CAMERAS {
        s.add_stream(
            name,
            StreamConfig {
                source: format!("file:{}", clip.display()),
                retain_bytes: 256 << 20,
                flush_if_sec: 2,
                rotate_sec: 4,
            },
        )?;
    }
    s.shutdown()?;
    Ok(d)
}

/// Prints a live progress line until `done`, and requests the stop after `duration`.
fn progress(d: DataDir, duration: Duration, stop: Arc<AtomicUsize>, done: Arc<AtomicBool>) {
    let start = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut last_line = Instant::now() - Duration::from_secs(10);
    while !done.load(Ordering::SeqCst) {
        let elapsed = start.elapsed();
        if elapsed >= duration && stop.load(Ordering::SeqCst) == 0 {
            stop.fetch_add(1, Ordering::SeqCst);
        }
        let committed = AdminClient::connect(&d)
            .and_then(|mut a| a.status())
            .map(|s| {
                let n: u64 = s.streams.iter().map(|s| s.committed_recordings).sum();
                let b: i64 = s.streams.iter().map(|s| s.committed_bytes).sum();
                format!(
                    "{n} recordings committed, {:.1} MiB",
                    b as f64 / (1 << 20) as f64
                )
            })
            .unwrap_or_else(|_| "starting".to_owned());
        let line = format!(
            "demo: {:>3} s / {} s recording 2 cameras: {committed}",
            elapsed.as_secs().min(duration.as_secs()),
            duration.as_secs()
        );
        if tty {
            eprint!("\r{line}\x1b[K");
        } else if last_line.elapsed() >= Duration::from_secs(5) {
            eprintln!("{line}");
            last_line = Instant::now();
        }
        let _ = std::io::stderr().flush();
        std::thread::sleep(Duration::from_millis(500));
    }
    if tty {
        eprintln!();
    }
}

pub fn run(given: Option<DataDir>, args: DemoArgs) -> CmdResult {
    let d = prepare_dir(given)?;
    eprintln!("demo: data dir {}", d.root.display());
    let stop = Arc::new(AtomicUsize::new(0));
    let run_args = RunArgs::default();
    let cfg = super::run::config(&d, &run_args, stop.clone())?;
    supervise::watch_signals(stop.clone())?;
    let done = Arc::new(AtomicBool::new(false));
    let reporter = {
        let (d, done, stop) = (d.clone(), done.clone(), stop.clone());
        std::thread::spawn(move || progress(d, args.duration, stop, done))
    };
    let result = Supervisor::new(cfg).run(|| {});
    done.store(true, Ordering::SeqCst);
    let _ = reporter.join();
    result?;

    eprintln!("demo: stopped; checking every recording (nvr check --hash)");
    let check = Command::new(std::env::current_exe()?)
        .arg("--data-dir")
        .arg(&d.root)
        .args(["check", "--hash"])
        .status()?;
    let rows = Database::open(&d.db_path())?.recordings(None)?;
    let bytes: i64 = rows.iter().map(|r| r.sample_file_bytes).sum();
    println!();
    println!("recordings   {} ({} cameras)", rows.len(), CAMERAS.len());
    println!("bytes        {:.1} MiB", bytes as f64 / (1 << 20) as f64);
    println!(
        "check        {}",
        if check.success() {
            "clean"
        } else {
            "VIOLATIONS (see above)"
        }
    );
    println!("data dir     {}", d.root.display());
    println!(
        "look         nvr --data-dir {} recordings",
        d.root.display()
    );
    Ok(if check.success() && !rows.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
