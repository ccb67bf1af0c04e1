//! Power loss at every crash point of a two-stream workload.
//!
//! The workload runs startup recovery (over leftovers of an earlier crash), then records on two
//! streams sharing one sample dir: rotations within runs, planned flushes, quota deletions and
//! garbage collection, a salvage, a discard, and a clean shutdown. The simulated file system
//! enumerates its crash points (every create, write, truncate, fsync, directory fsync, unlink
//! and SQLite COMMIT). For each one the test replays the workload on a fresh copy of the
//! starting state, stops the machine there, drops what was not durable (and, separately,
//! keeps everything: both are legal outcomes), recovers, and checks:
//!
//! - recovery never refuses to start (a crash leaves only leftovers it understands);
//! - DESIGN.md invariants 1, 2, 5, 6 on the database and files (`check_invariants`);
//! - invariant 3: every recording reported *committed* before the crash is still there, unless
//!   the quota deleted it, which takes the oldest first;
//! - invariant 4: next ids are past every id that left a file or a row, and a new recording
//!   after recovery gets a fresh id;
//! - the recovered syncer records and shuts down cleanly again.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use protocol::{CompositeId, Duration};
use support::*;
use syncer::Error;
use syncer::sim_fs::{PowerLossMode, SimFs, catch_crash};

/// What the workload observed before the crash.
#[derive(Default, Debug)]
struct Ledger {
    /// Ids reported committed.
    committed: BTreeSet<CompositeId>,
}

/// Sample size and count of the workload's recordings: 5 samples of 1000 bytes, accounted as
/// two 4 KiB blocks (8 KiB).
const SAMPLES: u32 = 5;
const SAMPLE_BYTES: usize = 1000;

fn streams() -> Vec<(&'static str, syncer::db::StreamConfig)> {
    vec![
        // Three recordings fit; the rest rotate out.
        ("a", config(3 * 8192, 1)),
        ("b", config(4 * 8192, 1)),
    ]
}

/// The starting state: two streams with committed recordings, plus what a crash leaves
/// behind: a growing recording's file (abandoned) and garbage rows whose files still exist.
fn base_state() -> (Env, Vec<i32>) {
    let (env, ids) = init_env(&streams());
    let (a, b) = (ids[0], ids[1]);
    let mut s = start(&env).unwrap();
    let mut ta = T0;
    for run_offset in 0..4 {
        ta = record(&mut s, &env.clock, a, run_offset, ta, SAMPLES, SAMPLE_BYTES)
            .unwrap()
            .1;
    }
    record(&mut s, &env.clock, b, 0, T0, SAMPLES, SAMPLE_BYTES).unwrap();
    // Commit (which moves a's oldest recording to garbage) but crash before unlinking it.
    s.flush("base").unwrap();
    let mut w = Writer::open(&mut s, b, 0, T0).unwrap();
    for _ in 0..3 {
        w.write_sample(&env.clock, SAMPLE_BYTES);
    }
    w.report(&mut s).unwrap();
    drop(w);
    drop(s);
    assert!(!open_db(&env).garbage().unwrap().is_empty());
    let fs = env.fs.power_loss(PowerLossMode::KeepAll);
    (env.fork(fs), ids)
}

/// The enumerated workload. Everything it learns goes into `ledger` as it happens.
fn workload(env: &Env, ids: &[i32], ledger: &mut Ledger) -> Result<(), Error> {
    let (a, b) = (ids[0], ids[1]);
    let mut s = start(env)?;
    let clock = &env.clock;
    let mut note = |c: Vec<CompositeId>| ledger.committed.extend(c);
    let (mut ta, mut tb) = (T0 + Duration::from_secs(100), T0 + Duration::from_secs(100));
    let (mut ra, mut rb) = (0, 0);
    for round in 0..5 {
        ta = record(&mut s, clock, a, ra, ta, SAMPLES, SAMPLE_BYTES)?.1;
        ra += 1;
        if round == 1 {
            // b's writer dies mid-recording: salvage of what it reported.
            let mut w = Writer::open(&mut s, b, rb, tb)?;
            for _ in 0..4 {
                w.write_sample(clock, SAMPLE_BYTES);
            }
            w.report(&mut s)?;
            w.write_sample(clock, SAMPLE_BYTES);
            let id = w.id;
            drop(w);
            s.abandon_recording(id, "writer gone")?;
            rb = 0;
            tb += Duration::from_secs(10);
        } else {
            tb = record(&mut s, clock, b, rb, tb, SAMPLES, SAMPLE_BYTES)?.1;
            rb += 1;
        }
        if round == 2 {
            // a's writer dies before reporting anything: discarded.
            let w = Writer::open(&mut s, a, 0, ta)?;
            let id = w.id;
            drop(w);
            s.abandon_recording(id, "writer gone")?;
            ra = 0;
            ta += Duration::from_secs(10);
        }
        clock.advance(Duration::from_secs(1));
        note(poll(&mut s)?);
    }
    let c = s.shutdown()?;
    note(c.into_iter().flat_map(|c| c.ids).collect());
    Ok(())
}

/// Checks one recovered state; returns violations.
fn check_recovered(
    env: &Env,
    ids: &[i32],
    ledger: &Ledger,
    files_before: &BTreeSet<CompositeId>,
) -> Vec<String> {
    let mut v = Vec::new();
    let mut s = match start_with_report(env) {
        Ok((s, report)) => {
            // Orphans (files below the next id that are neither recordings nor garbage) are
            // cleaned up, but no crash of ours may produce them.
            for id in &report.orphans {
                v.push(format!("recovery found orphan file {id}"));
            }
            s
        }
        Err(e) => return vec![format!("recovery refused to start: {e}")],
    };
    v.extend(check_invariants(&env.fs, s.db()));
    let rows: BTreeMap<CompositeId, i64> = s
        .db()
        .recordings(None)
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.sample_file_bytes))
        .collect();
    if !s.db().garbage().unwrap().is_empty() {
        v.push("garbage rows remain after recovery".to_owned());
    }
    // Invariant 3.
    for &stream in ids {
        let present: Vec<CompositeId> = ledger
            .committed
            .iter()
            .filter(|id| id.stream() == stream && rows.contains_key(id))
            .copied()
            .collect();
        for &missing in ledger
            .committed
            .iter()
            .filter(|id| id.stream() == stream && !rows.contains_key(id))
        {
            let newer_exists = rows.keys().any(|r| r.stream() == stream && *r > missing);
            let oldest_first = present.iter().all(|&p| p > missing);
            if !newer_exists || !oldest_first {
                v.push(format!("committed recording {missing} was lost"));
            }
        }
    }
    // Invariant 4.
    let next: BTreeMap<i32, i32> = s
        .stream_rows()
        .iter()
        .map(|r| (r.id, r.next_recording_id))
        .collect();
    for id in files_before.iter().chain(ledger.committed.iter()) {
        if next.get(&id.stream()).is_some_and(|&n| id.recording() >= n) {
            v.push(format!(
                "next id of stream {} is not past {id}",
                id.stream()
            ));
        }
    }
    // The recovered syncer works.
    for &stream in ids {
        match record(
            &mut s,
            &env.clock,
            stream,
            0,
            T0 + Duration::from_secs(1000),
            2,
            100,
        ) {
            Ok((id, _)) if id.recording() < next[&stream] => {
                v.push(format!("new recording {id} reuses an id"));
            }
            Ok(_) => {}
            Err(e) => v.push(format!("recording after recovery failed: {e}")),
        }
    }
    if let Err(e) = s.shutdown() {
        v.push(format!("shutdown after recovery failed: {e}"));
    }
    v.extend(check_invariants(&env.fs, s.db()));
    v
}

fn copy_of(fs: &SimFs) -> SimFs {
    fs.power_loss(PowerLossMode::KeepAll)
}

#[test]
fn power_loss_at_every_crash_point_keeps_every_invariant() {
    let (base, ids) = base_state();

    // A full run without a crash counts the crash points.
    let full = base.fork(copy_of(&base.fs));
    let mut ledger = Ledger::default();
    workload(&full, &ids, &mut ledger).unwrap();
    let total = full.fs.crash_points_seen();
    assert!(
        total > 100,
        "the workload should be substantial, got {total}"
    );
    assert!(!ledger.committed.is_empty());

    let mut explored = 0u64;
    let mut violations = Vec::new();
    for k in 0..total {
        let env = base.fork(copy_of(&base.fs));
        env.fs.arm_crash(k);
        let mut ledger = Ledger::default();
        let r = catch_crash(|| workload(&env, &ids, &mut ledger));
        match r {
            Err(_crash) => {}
            Ok(r) => panic!("crash point {k} of {total} was not reached: {r:?}"),
        }
        for mode in [PowerLossMode::DropUnsynced, PowerLossMode::KeepAll] {
            let after = env.fork(env.fs.power_loss(mode));
            let files_before: BTreeSet<CompositeId> = sample_files(&after.fs).into_iter().collect();
            for msg in check_recovered(&after, &ids, &ledger, &files_before) {
                violations.push(format!("crash point {k} ({mode:?}): {msg}"));
            }
            explored += 1;
        }
    }
    println!(
        "power loss: explored {total} crash points x 2 power-loss outcomes = {explored} recoveries, {} violations",
        violations.len()
    );
    assert!(
        violations.is_empty(),
        "{} violations:\n{}",
        violations.len(),
        violations.join("\n")
    );
}

#[test]
fn the_base_state_has_leftovers_for_recovery() {
    let (base, ids) = base_state();
    let s = start(&base).unwrap();
    // The abandoned growing recording of b got an id past the next id; recovery made it
    // garbage and removed it, and collected the garbage row of a's deleted recording.
    assert!(s.db().garbage().unwrap().is_empty());
    let files = sample_files(&base.fs);
    let rows = recording_ids(s.db());
    assert_eq!(files, rows);
    // b's growing recording (id 1) was abandoned: its next id moved past it.
    assert_eq!(s.stream_rows()[1].id, ids[1]);
    assert!(s.stream_rows()[1].next_recording_id >= 2);
}
