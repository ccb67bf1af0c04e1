//! `nvr check [--hash] [--repair] [--json]`: verifies DESIGN.md's invariants against the
//! database and the sample files (`syncer::check`), optionally applies the safe repairs, and
//! exits 0 only when the data dir is clean (after repair, when repair fixed everything).
//!
//! With no `nvr run` active the command takes the data dir's lock, like any offline command.
//! While recording is active (the syncer's admin socket answers) a plain check still runs, read
//! only and without the lock, so recording never stalls; `--repair` is refused then, because
//! only the syncer may change the sample dir while it runs.

use std::io::Write;
use std::process::ExitCode;

use serde_json::json;
use syncer::check::{CheckOptions, CheckReport, RepairReport, check, repair};
use syncer::db::Database;
use syncer::fs::RealDir;
use syncer::layout::DataDir;

use super::CmdResult;
use super::access::supervised_syncer;
use crate::progress::ProgressLine;
use crate::size::Size;

/// Runs [`check`], showing its progress on `line`.
fn check_with_progress(
    db: &Database,
    dir: &RealDir,
    opts: CheckOptions,
    line: &mut ProgressLine,
) -> Result<CheckReport, syncer::Error> {
    let report = check(db, dir, opts, &mut |p| {
        line.update(
            p.done_bytes,
            p.total_bytes,
            &format!(", {}/{} files", p.done_files, p.total_files),
        )
    });
    line.finish();
    report
}

pub fn run(d: &DataDir, hash: bool, repair_requested: bool, json: bool) -> CmdResult {
    let live = supervised_syncer(d)?.is_ok();
    if live && repair_requested {
        return Err(
            "recording is active; stop `nvr run` first (repair needs the data dir to \
                    itself)"
                .into(),
        );
    }
    let opts = CheckOptions { hash, live };
    let mut line = ProgressLine::new("hashing", hash);
    let db_path = d.db_path();
    if !db_path.exists() {
        return Err(format!("no database at {}; run `nvr init`", db_path.display()).into());
    }
    let (report, repaired) = if live {
        let db = Database::open_read_only(&db_path)?;
        let sample = d.sample_dir_path();
        let dir =
            RealDir::open_dir(&sample).map_err(|e| format!("open {}: {e}", sample.display()))?;
        (check_with_progress(&db, &dir, opts, &mut line)?, None)
    } else {
        let dir = d.lock_sample_dir()?;
        if repair_requested {
            d.check_writable()?;
            let mut db = Database::open(&db_path)?;
            let report = check_with_progress(&db, &dir, opts, &mut line)?;
            let repaired = repair(&mut db, &dir, &report)?;
            (report, Some(repaired))
        } else {
            // Read-only: a plain check changes nothing, so it works on a read-only data dir.
            let db = Database::open_locked_for_reading(&db_path)?;
            (check_with_progress(&db, &dir, opts, &mut line)?, None)
        }
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
