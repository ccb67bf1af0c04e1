//! `nvr check [--hash] [--repair] [--json]`: verifies DESIGN.md's invariants against the
//! database and the sample files (`syncer::check`), optionally applies the safe repairs, and
//! exits 0 only when the data dir is clean (after repair, when repair fixed everything).
//!
//! With no `nvr run` active the command takes the data dir's lock, like any offline command.
//! While recording is active (the syncer's admin socket answers) a plain check still runs, read
//! only and without the lock, so recording never stalls; `--repair` is refused then, because
//! only the syncer may change the sample dir while it runs.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::json;
use syncer::admin_client::AdminClient;
use syncer::check::{CheckOptions, CheckReport, Progress, RepairReport, check, repair};
use syncer::db::Database;
use syncer::fs::RealDir;
use syncer::layout::DataDir;

use super::CmdResult;
use crate::size::Size;

/// Shortest interval between two redraws of the progress line on a terminal.
const REDRAW_INTERVAL: Duration = Duration::from_millis(100);

pub fn run(d: &DataDir, hash: bool, repair_requested: bool, json: bool) -> CmdResult {
    let live = AdminClient::connect(d).is_ok();
    if live && repair_requested {
        return Err(
            "recording is active; stop `nvr run` first (repair needs the data dir to \
                    itself)"
                .into(),
        );
    }
    let opts = CheckOptions { hash, live };
    let mut line = ProgressLine::new(hash);
    let db_path = d.db_path();
    if !db_path.exists() {
        return Err(format!("no database at {}; run `nvr init`", db_path.display()).into());
    }
    let (report, repaired) = if live {
        let db = Database::open_read_only(&db_path)?;
        let sample = d.sample_dir_path();
        let dir =
            RealDir::open_dir(&sample).map_err(|e| format!("open {}: {e}", sample.display()))?;
        let report = check(&db, &dir, opts, &mut |p| line.update(p));
        line.finish();
        (report?, None)
    } else {
        let dir = d.lock_sample_dir()?;
        let mut db = Database::open(&db_path)?;
        let report = check(&db, &dir, opts, &mut |p| line.update(p));
        line.finish();
        let report = report?;
        let repaired = if repair_requested {
            Some(repair(&mut db, &dir, &report)?)
        } else {
            None
        };
        (report, repaired)
    };
    let clean = match &repaired {
        Some(r) => r.left.is_empty(),
        None => report.is_clean(),
    };
    let out = if json {
        let mut s = serde_json::to_string_pretty(&to_json(&report, repaired.as_ref(), clean))?;
        s.push('\n');
        s
    } else {
        to_text(&report, repaired.as_ref(), clean)
    };
    std::io::stdout().write_all(out.as_bytes())?;
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn to_json(
    report: &CheckReport,
    repaired: Option<&RepairReport>,
    clean: bool,
) -> serde_json::Value {
    let violations: Vec<_> = report
        .violations
        .iter()
        .map(|v| json!({"kind": v.kind.as_str(), "subject": v.subject, "message": v.message}))
        .collect();
    let actions: Vec<_> = repaired
        .map(|r| r.actions.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|a| json!({"action": a.kind.as_str(), "subject": a.subject, "message": a.message}))
        .collect();
    json!({
        "clean": clean,
        "recordings": report.recordings,
        "files": report.files,
        "bytes_hashed": report.bytes_hashed,
        "violations": violations,
        "notes": report.notes,
        "repaired": actions,
    })
}

fn to_text(report: &CheckReport, repaired: Option<&RepairReport>, clean: bool) -> String {
    let mut s = String::new();
    for v in &report.violations {
        s += &format!("violation: {v}\n");
    }
    for n in &report.notes {
        s += &format!("note: {n}\n");
    }
    if let Some(r) = repaired {
        for a in &r.actions {
            s += &format!("repaired: {a}\n");
        }
    }
    let mut summary = format!(
        "{} recordings, {} sample files",
        report.recordings, report.files
    );
    if report.bytes_hashed > 0 {
        summary += &format!(", {} hashed", Size(report.bytes_hashed));
    }
    let n = report.violations.len();
    let found = format!("{n} violation{}", if n == 1 { "" } else { "s" });
    let verdict = match repaired {
        _ if n == 0 => "clean".to_owned(),
        None => format!("NOT CLEAN: {found}"),
        Some(_) if clean => format!("clean after repair: {found}, all repaired"),
        Some(r) => format!(
            "NOT CLEAN: {found}, {} left after repair (repair fixes only stray and missing \
             files)",
            r.left.len()
        ),
    };
    s += &format!("check: {summary}: {verdict}\n");
    s
}

/// The `--hash` progress line on stderr: rewritten in place on a terminal, otherwise one line
/// per tenth of the bytes so logs stay short.
struct ProgressLine {
    enabled: bool,
    tty: bool,
    start: Instant,
    last_draw: Option<Instant>,
    /// Non-terminal: the next tenth (0..=10) to print a line at.
    next_tenth: u64,
}

impl ProgressLine {
    fn new(hash: bool) -> Self {
        ProgressLine {
            enabled: hash,
            tty: std::io::stderr().is_terminal(),
            start: Instant::now(),
            last_draw: None,
            next_tenth: 0,
        }
    }

    fn update(&mut self, p: Progress) {
        if !self.enabled || p.total_bytes == 0 {
            return;
        }
        let done = p.done_bytes >= p.total_bytes;
        if self.tty {
            let now = Instant::now();
            if !done && self.last_draw.is_some_and(|t| now - t < REDRAW_INTERVAL) {
                return;
            }
            self.last_draw = Some(now);
            eprint!("\r{}\x1b[K", self.text(p));
        } else {
            let tenth = p.done_bytes * 10 / p.total_bytes;
            if tenth < self.next_tenth {
                return;
            }
            self.next_tenth = tenth + 1;
            self.last_draw = Some(Instant::now());
            eprintln!("{}", self.text(p));
        }
    }

    fn text(&self, p: Progress) -> String {
        let secs = self.start.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            format!("{}/s", Size((p.done_bytes as f64 / secs) as u64))
        } else {
            "-".to_owned()
        };
        format!(
            "hashing: {} / {} ({}%), {rate}, {}/{} files",
            Size(p.done_bytes),
            Size(p.total_bytes),
            p.done_bytes * 100 / p.total_bytes,
            p.done_files,
            p.total_files
        )
    }

    /// Ends the line on a terminal.
    fn finish(&mut self) {
        if self.tty && self.last_draw.is_some() {
            eprintln!();
        }
    }
}
