//! Scenario tests of the syncer core on the simulated file system and clock: one behaviour
//! each, named for it.

mod support;

use nix::errno::Errno;
use protocol::clock::Clock;
use protocol::{CompositeId, Duration, Time};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use support::*;
use syncer::db::Database;
use syncer::fs::{Dir, DirFile, OpenMode};
use syncer::layout::sample_file_name;
use syncer::sim_fs::{OpKind, PowerLossMode};
use syncer::{Error, Syncer};

/// Writes `bytes` at `offset` of a recording's file behind the writer's and syncer's backs.
fn tamper(env: &Env, id: CompositeId, offset: u64, bytes: &[u8]) {
    env.fs
        .open(&sample_file_name(id), syncer::fs::OpenMode::ReadWrite)
        .unwrap()
        .write_all_at(bytes, offset)
        .unwrap();
}

fn one_stream(retain: i64, flush_if_sec: u32) -> (Env, i32) {
    let (env, ids) = init_env(&[("a", config(retain, flush_if_sec))]);
    (env, ids[0])
}

#[test]
fn planned_flush_commits_flush_if_sec_after_the_recordings_start() {
    let (env, a) = one_stream(1 << 30, 10);
    let mut s = start(&env).unwrap();
    // A 1-second recording (30 samples): the flush is due 10 s after its start, i.e. 9 s
    // after its close.
    let (id, _) = record(&mut s, &env.clock, a, 0, T0, 30, 100).unwrap();
    assert!(poll(&mut s).unwrap().is_empty());
    env.clock.advance(Duration::from_secs(9) - Duration(1));
    assert!(poll(&mut s).unwrap().is_empty(), "not yet due");
    assert_eq!(s.db().recordings(None).unwrap().len(), 0);
    env.clock.advance(Duration(1));
    assert_eq!(poll(&mut s).unwrap(), vec![id]);
    assert_eq!(s.db().recordings(None).unwrap().len(), 1);
}

#[test]
fn one_flush_commits_a_batch_and_skips_plans_it_made_unnecessary() {
    let (env, a) = one_stream(1 << 30, 10);
    let mut s = start(&env).unwrap();
    let (id1, end) = record(&mut s, &env.clock, a, 0, T0, 30, 100).unwrap();
    let (id2, _) = record(&mut s, &env.clock, a, 1, end, 30, 100).unwrap();
    env.clock.advance(Duration::from_secs(8));
    // The first plan fires and commits both recordings in one transaction.
    assert_eq!(poll(&mut s).unwrap(), vec![id1, id2]);
    // The second recording's plan is now unnecessary: nothing more happens when it is due.
    env.clock.advance(Duration::from_secs(5));
    assert!(poll(&mut s).unwrap().is_empty());
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn double_flush_is_harmless() {
    let (env, a) = one_stream(1 << 30, 10);
    let mut s = start(&env).unwrap();
    let (id, _) = record(&mut s, &env.clock, a, 0, T0, 30, 100).unwrap();
    let c = s.flush("first").unwrap();
    assert_eq!(c[0].ids, vec![id]);
    assert!(s.flush("second").unwrap().is_empty());
    env.clock.advance(Duration::from_secs(60));
    assert!(poll(&mut s).unwrap().is_empty());
    assert_eq!(s.db().recordings(None).unwrap().len(), 1);
}

#[test]
fn failed_writes_are_retried_and_lose_nothing() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    env.fs.fail_nth(OpKind::Write, 0, Errno::EIO);
    env.fs.fail_nth(OpKind::Write, 1, Errno::ENOSPC);
    let before = env.clock.monotonic();
    let (id, _) = record(&mut s, &env.clock, a, 0, T0, 3, 100).unwrap();
    assert!(env.clock.monotonic() > before, "backed off before retrying");
    poll(&mut s).unwrap();
    let db = s.db();
    assert_eq!(db.recordings(None).unwrap()[0].id, id);
    assert!(check_invariants(&env.fs, db).is_empty());
}

#[test]
fn failed_unlinks_are_retried_and_garbage_rows_really_go() {
    let (env, a) = one_stream(4096, 0);
    let mut s = start(&env).unwrap();
    let (id1, end) = record(&mut s, &env.clock, a, 0, T0, MIN_RUN_SAMPLES, 10).unwrap();
    poll(&mut s).unwrap();
    env.fs.fail_nth(OpKind::Unlink, 0, Errno::EIO);
    env.fs.fail_nth(OpKind::Unlink, 1, Errno::EIO);
    // The quota holds one block: the second recording pushes the first out.
    let (id2, _) = record(&mut s, &env.clock, a, 1, end, MIN_RUN_SAMPLES, 10).unwrap();
    poll(&mut s).unwrap();
    // Nothing waits for the failing unlink: it is tried again 1 s, then 2 s later.
    let mut waited = Duration(0);
    while env.fs.names().contains(&sample_file_name(id1)) {
        let g = s.garbage_status();
        assert_eq!((g.files, g.failing_unlinks), (1, 1), "{g:?}");
        assert!(waited < Duration::from_secs(10), "never retried");
        env.clock.advance(Duration::from_secs(1));
        waited += Duration::from_secs(1);
        poll(&mut s).unwrap();
    }
    assert_eq!(waited, Duration::from_secs(3));
    assert_eq!(s.garbage_status(), Default::default());
    assert_eq!(
        s.db().garbage().unwrap(),
        vec![id1],
        "row kept until the next flush"
    );
    // The next flush forgets the garbage row (a regression Moonfire NVR once shipped).
    s.flush("forget").unwrap();
    assert!(s.db().garbage().unwrap().is_empty());
    assert_eq!(recording_ids(s.db()), vec![id2]);
}

/// A garbage file that cannot be unlinked (EPERM, as on an immutable file) blocks nothing:
/// both streams record, flush and apply retention on, its row stays garbage (never reused),
/// `status` counts it with its error, retries back off to at most five minutes, and once the
/// cause is gone it is collected.
#[test]
fn an_unlink_failing_for_good_blocks_nothing_and_is_retried_with_backoff() {
    let (env, ids) = init_env(&[("a", config(4096, 0)), ("b", config(1 << 30, 0))]);
    let (a, b) = (ids[0], ids[1]);
    let mut s = start(&env).unwrap();
    let (stuck, mut end_a) = record(&mut s, &env.clock, a, 0, T0, MIN_RUN_SAMPLES, 10).unwrap();
    poll(&mut s).unwrap();
    let stuck_name = sample_file_name(stuck);
    let (name, attempts) = (stuck_name.clone(), Arc::new(AtomicUsize::new(0)));
    let counter = attempts.clone();
    env.fs.set_fault_hook(move |op| {
        let hit = op.kind == OpKind::Unlink && op.name.as_deref() == Some(&name);
        if hit {
            counter.fetch_add(1, Ordering::SeqCst);
        }
        hit.then_some(Errno::EPERM)
    });
    let mut end_b = T0;
    for i in 0..40 {
        // An hour of recording: a's quota deletes each previous recording as the next commits.
        env.clock.advance(Duration::from_secs(90));
        let (_, e) = record(&mut s, &env.clock, a, i + 1, end_a, MIN_RUN_SAMPLES, 10).unwrap();
        end_a = e;
        let (_, e) = record(&mut s, &env.clock, b, i, end_b, MIN_RUN_SAMPLES, 10).unwrap();
        end_b = e;
        poll(&mut s).unwrap();
    }
    let g = s.garbage_status();
    assert_eq!((g.files, g.failing_unlinks), (1, 1), "{g:?}");
    let error = g.newest_error.unwrap();
    assert!(
        error.contains(&stuck_name) && error.contains("not permitted"),
        "{error}"
    );
    assert!(s.db().garbage().unwrap().contains(&stuck), "still garbage");
    assert_eq!(
        recording_ids(s.db()).len(),
        1 + 40,
        "a keeps its newest, b all 40"
    );
    // Backoff: doubling from 1 s, capped at 5 min; far fewer attempts than flushes.
    let attempts = attempts.load(Ordering::SeqCst);
    assert!(
        (8..=20).contains(&attempts),
        "{attempts} attempts in an hour"
    );
    env.fs.clear_faults();
    env.clock.advance(syncer::garbage::RETRY_MAX);
    poll(&mut s).unwrap();
    assert!(!env.fs.names().contains(&stuck_name));
    s.flush("forget").unwrap();
    assert!(s.db().garbage().unwrap().is_empty());
    assert!(check_invariants(&env.fs, s.db()).is_empty());
}

#[test]
fn fsync_failure_discards_the_recording_and_never_commits_lost_data() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    env.fs.fail_nth(OpKind::FileSync, 0, Errno::EIO);
    let e = record(&mut s, &env.clock, a, 0, T0, 3, 100).unwrap_err();
    let Error::SyncFailed { id, .. } = e else {
        panic!("expected SyncFailed, got {e}");
    };
    assert!(e.to_string().contains("io-error"), "{e}");
    poll(&mut s).unwrap();
    assert!(
        s.db().recordings(None).unwrap().is_empty(),
        "never committed"
    );
    assert!(
        !env.fs.names().contains(&sample_file_name(id)),
        "file removed"
    );
    // The next recording gets a new id: the discarded one is never reused.
    let (id2, _) = record(
        &mut s,
        &env.clock,
        a,
        0,
        T0 + Duration::from_secs(10),
        3,
        100,
    )
    .unwrap();
    assert_eq!(id2.recording(), id.recording() + 1);
    poll(&mut s).unwrap();
    drop(s);
    // After a power loss, what was committed is intact.
    let env2 = env.fork(env.fs.power_loss(PowerLossMode::DropUnsynced));
    let s = start(&env2).unwrap();
    assert!(check_invariants(&env2.fs, s.db()).is_empty());
    assert_eq!(s.db().recordings(None).unwrap()[0].id, id2);
}

#[test]
fn ids_are_never_reused_across_discards_and_restarts() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    let w = Writer::open(&mut s, a, 0, T0).unwrap();
    let first = w.id;
    // Writer gone before reporting anything: discarded.
    s.abandon_recording(first, "test").unwrap();
    drop(w);
    // An open whose file never got committed, then a crash (drop without flush).
    let w = Writer::open(&mut s, a, 0, T0).unwrap();
    let second = w.id;
    assert_eq!(second.recording(), first.recording() + 1);
    drop(s);
    let mut s = start(&env).unwrap();
    let (third, _) = record(&mut s, &env.clock, a, 0, T0, 3, 100).unwrap();
    assert!(
        third.recording() > second.recording(),
        "{third} after {second}"
    );
    poll(&mut s).unwrap();
    assert!(check_invariants(&env.fs, s.db()).is_empty());
}

#[test]
fn quota_deletes_the_oldest_and_counts_growing_recordings() {
    // Quota of three blocks; each recording is one block.
    let (env, a) = one_stream(3 * 4096, 0);
    let mut s = start(&env).unwrap();
    let mut ids = Vec::new();
    let mut start_t = T0;
    for run_offset in 0..3 {
        let (id, end) = record(
            &mut s,
            &env.clock,
            a,
            run_offset,
            start_t,
            MIN_RUN_SAMPLES,
            10,
        )
        .unwrap();
        ids.push(id);
        start_t = end;
        poll(&mut s).unwrap();
    }
    assert_eq!(s.db().recordings(None).unwrap().len(), 3);
    // A growing recording counts: saving the next one deletes the oldest committed.
    let mut w = Writer::open(&mut s, a, 3, start_t).unwrap();
    w.write_sample(&env.clock, 100);
    w.report(&mut s).unwrap();
    let growing = Writer::open(&mut s, a, 0, T0).unwrap_err();
    assert!(growing.to_string().contains("still growing"), "{growing}");
    w.close(&mut s).unwrap();
    poll(&mut s).unwrap();
    let left = recording_ids(s.db());
    assert_eq!(left.len(), 3);
    assert_eq!(left[0], ids[1], "the oldest went first");
    assert!(check_invariants(&env.fs, s.db()).is_empty());
}

#[test]
fn lowering_the_quota_deletes_at_once() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    let mut t = T0;
    for run_offset in 0..4 {
        t = record(&mut s, &env.clock, a, run_offset, t, MIN_RUN_SAMPLES, 10)
            .unwrap()
            .1;
    }
    poll(&mut s).unwrap();
    assert_eq!(s.db().recordings(None).unwrap().len(), 4);
    s.set_stream_config(a, config(2 * 4096, 0)).unwrap();
    assert_eq!(s.db().recordings(None).unwrap().len(), 2);
    assert_eq!(
        sample_files(&env.fs).len(),
        2,
        "files unlinked before returning"
    );
}

#[test]
fn salvage_keeps_the_reported_whole_samples_and_truncates_the_rest() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    let mut w = Writer::open(&mut s, a, 0, T0).unwrap();
    for _ in 0..4 {
        w.write_sample(&env.clock, 1000);
    }
    w.report(&mut s).unwrap();
    // Written but never reported: the unreported tail is what an ingest crash loses.
    w.write_sample(&env.clock, 1000);
    let id = w.id;
    drop(w);
    s.abandon_recording(id, "writer gone").unwrap();
    poll(&mut s).unwrap();
    let r = &s.db().recordings(None).unwrap()[0];
    assert_eq!(r.sample_file_bytes, 4000);
    assert_eq!(r.video_samples, 4);
    assert_eq!(r.flags & syncer::db::FLAG_TRAILING_ZERO, 1);
    assert_eq!(r.media_duration_90k as i64, 3 * FRAME_90K);
    assert_eq!(r.end_reason.as_deref(), Some("writer gone"));
    assert_eq!(
        env.fs.read_current(&sample_file_name(id)).unwrap().len(),
        4000
    );
    assert!(check_invariants(&env.fs, s.db()).is_empty());
}

#[test]
fn salvage_never_extends_a_file_shorter_than_reported() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    let mut w = Writer::open(&mut s, a, 0, T0).unwrap();
    for _ in 0..3 {
        w.write_sample(&env.clock, 1000);
    }
    w.report(&mut s).unwrap();
    let id = w.id;
    drop(w);
    // The file lost its last 500 bytes (say, a writer that lied): keep two whole samples.
    let name = sample_file_name(id);
    env.fs
        .open(&name, syncer::fs::OpenMode::ReadWrite)
        .unwrap()
        .set_len(2500)
        .unwrap();
    s.abandon_recording(id, "writer gone").unwrap();
    poll(&mut s).unwrap();
    let r = &s.db().recordings(None).unwrap()[0];
    assert_eq!((r.sample_file_bytes, r.video_samples), (2000, 2));
    // Its last kept sample's duration is known from the next sample's pts.
    assert_eq!(r.media_duration_90k as i64, 2 * FRAME_90K);
    assert!(check_invariants(&env.fs, s.db()).is_empty());
}

#[test]
fn close_that_contradicts_the_file_is_rejected_and_discarded() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    // Size mismatch: one more byte written than reported.
    let mut w = Writer::open(&mut s, a, 0, T0).unwrap();
    w.write_sample(&env.clock, 100);
    let id = w.id;
    tamper(&env, id, 100, b"x");
    let e = w.close(&mut s).unwrap_err();
    assert!(e.to_string().contains("101 bytes"), "{e}");
    poll(&mut s).unwrap();
    assert!(s.db().recordings(None).unwrap().is_empty());
    assert!(sample_files(&env.fs).is_empty());
    assert_eq!(s.stream_rows()[0].next_recording_id, id.recording() + 1);
}

/// A writer's preallocation past the end (`fallocate` with `FALLOC_FL_KEEP_SIZE`: 400 one-byte
/// recordings each holding 4 MiB were all accepted, a 1 MiB quota held 1.1 GiB) is released at
/// close: the committed file holds only its data's blocks.
#[test]
fn preallocation_is_released_at_close() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    for close in [true, false] {
        let mut w = Writer::open(&mut s, a, 0, T0).unwrap();
        w.write_sample(&env.clock, 100);
        w.report(&mut s).unwrap();
        let name = sample_file_name(w.id);
        env.fs.set_extra_allocated(&name, 1 << 30);
        if close {
            w.close(&mut s).unwrap();
        } else {
            s.abandon_recording(w.id, "writer gone").unwrap();
        }
        poll(&mut s).unwrap();
        let f = env.fs.open(&name, OpenMode::ReadOnly).unwrap();
        assert_eq!(f.stat().unwrap().allocated_bytes, 4096, "close {close}");
    }
    assert_eq!(s.db().recordings(None).unwrap().len(), 2);
    assert!(check_invariants(&env.fs, s.db()).is_empty());
}

#[test]
fn a_run_must_abut_exactly() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    let (_, end) = record(&mut s, &env.clock, a, 0, T0, MIN_RUN_SAMPLES, 10).unwrap();
    let e = record(
        &mut s,
        &env.clock,
        a,
        1,
        end + Duration(1),
        MIN_RUN_SAMPLES,
        10,
    )
    .unwrap_err();
    assert!(e.to_string().contains("abut"), "{e}");
    let e = Writer::open(&mut s, a, 5, end).unwrap_err();
    assert!(e.to_string().contains("run offset"), "{e}");
}

/// A recording shorter than `limits::MIN_RECORDING_DURATION_90K` is committed, but it ends its
/// run: each recording costs an inode, an id and a row, so only a run's last may be short.
#[test]
fn a_recording_shorter_than_the_minimum_is_kept_but_ends_its_run() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    // One sample short of the minimum: 29 samples of 3000 ticks, the last's counted.
    let (short, end) = record(&mut s, &env.clock, a, 0, T0, MIN_RUN_SAMPLES - 1, 10).unwrap();
    let e = Writer::open(&mut s, a, 1, end).unwrap_err();
    assert!(matches!(e, Error::Rejected { .. }), "{e:?}");
    let want = format!(
        "recording {short} was shorter than the minimum duration (87000 ticks < 90000) and so \
         ended its run; a recording continuing it (run offset 1) is refused"
    );
    assert!(e.to_string().contains(&want), "{e}");
    // A new run is fine, and the short recording was committed.
    let (next, _) = record(&mut s, &env.clock, a, 0, end, MIN_RUN_SAMPLES, 10).unwrap();
    poll(&mut s).unwrap();
    assert_eq!(recording_ids(s.db()), vec![short, next]);
    assert!(check_invariants(&env.fs, s.db()).is_empty());
}

#[test]
fn a_recording_of_the_minimum_duration_continues_its_run() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    let (first, end) = record(&mut s, &env.clock, a, 0, T0, MIN_RUN_SAMPLES, 10).unwrap();
    let (second, _) = record(&mut s, &env.clock, a, 1, end, 3, 10).unwrap();
    poll(&mut s).unwrap();
    let rows = s.db().recordings(None).unwrap();
    assert_eq!((rows[0].id, rows[0].media_duration_90k), (first, 90_000));
    assert_eq!((rows[1].id, rows[1].run_offset), (second, 1));
}

/// A salvage always ends its run (the writer is gone), so a short salvaged recording cannot
/// be continued either.
#[test]
fn a_salvaged_short_recording_ends_its_run() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    let mut w = Writer::open(&mut s, a, 0, T0).unwrap();
    w.write_sample(&env.clock, 100);
    w.write_sample(&env.clock, 100);
    w.report(&mut s).unwrap();
    let id = w.id;
    drop(w);
    s.abandon_recording(id, "writer gone").unwrap();
    let e = Writer::open(&mut s, a, 1, T0 + Duration(FRAME_90K)).unwrap_err();
    assert!(matches!(e, Error::Rejected { .. }), "{e:?}");
    assert!(e.to_string().contains("run offset 1"), "{e}");
    poll(&mut s).unwrap();
    assert_eq!(recording_ids(s.db()), vec![id], "salvaged and committed");
}

#[test]
fn abandoned_files_are_removed_before_serving() {
    let (env, a) = one_stream(1 << 30, 0);
    // Files a crash could leave: an id past the next id, and a file of an unknown stream.
    let past = CompositeId::new(a, 7);
    let unknown = CompositeId::new(99, 0);
    for id in [past, unknown] {
        env.fs.create_new(&sample_file_name(id)).unwrap();
    }
    dir_sync(&env.fs);
    let mut s = start(&env).unwrap();
    assert!(sample_files(&env.fs).is_empty());
    assert!(s.db().garbage().unwrap().is_empty());
    let (id, _) = record(&mut s, &env.clock, a, 0, T0, 3, 100).unwrap();
    assert_eq!(id.recording(), 8, "next id moved past the abandoned file");
}

#[test]
fn eexist_on_create_is_a_loud_bug_not_a_loop() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    // Someone created the next id's file behind the syncer's back.
    env.fs
        .create_new(&sample_file_name(CompositeId::new(a, 0)))
        .unwrap();
    let e = Writer::open(&mut s, a, 0, T0).unwrap_err();
    assert!(
        e.is_fatal() && e.to_string().contains("already exists"),
        "{e}"
    );
}

#[test]
fn failed_dir_fsync_is_fatal() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    env.fs.fail_nth(OpKind::DirSync, 0, Errno::EIO);
    let e = record(&mut s, &env.clock, a, 0, T0, 3, 100).unwrap_err();
    assert!(e.is_fatal(), "{e}");
    drop(s);
    // The restart through recovery is clean.
    let s = start(&env).unwrap();
    assert!(check_invariants(&env.fs, s.db()).is_empty());
}

#[test]
fn full_database_releases_the_reserve_and_commits() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    assert!(env.fs.names().contains(&"reserve".to_owned()));
    record(&mut s, &env.clock, a, 0, T0, 3, 100).unwrap();
    env.fs.fail_nth(OpKind::Commit, 0, Errno::ENOSPC);
    assert!(
        poll(&mut s).unwrap().len() == 1,
        "retried at once after the release"
    );
    assert_eq!(s.db().recordings(None).unwrap().len(), 1);
    // Re-created once space allows.
    record(
        &mut s,
        &env.clock,
        a,
        0,
        T0 + Duration::from_secs(10),
        3,
        100,
    )
    .unwrap();
    poll(&mut s).unwrap();
    assert!(env.fs.names().contains(&"reserve".to_owned()));
}

#[test]
fn failed_flush_is_retried_after_a_delay() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    record(&mut s, &env.clock, a, 0, T0, 3, 100).unwrap();
    env.fs.fail_nth(OpKind::Commit, 0, Errno::EIO);
    assert!(poll(&mut s).unwrap().is_empty());
    assert!(s.db().recordings(None).unwrap().is_empty());
    env.clock.advance(options().flush_retry_delay);
    assert_eq!(poll(&mut s).unwrap().len(), 1);
}

#[test]
fn a_sample_dir_of_another_database_is_refused() {
    let (env, _) = one_stream(1 << 30, 0);
    let (other, _) = one_stream(1 << 30, 0);
    let mixed = env.fork(other.fs.clone());
    let e = start(&mixed).unwrap_err();
    assert!(e.to_string().contains("belongs to database"), "{e}");
}

#[test]
fn a_database_restored_from_an_older_backup_is_refused() {
    let (env, _) = one_stream(1 << 30, 0);
    let backup = env.fork(env.fs.clone());
    // Start twice more on the live pair: the dir's meta moves on.
    drop(start(&env).unwrap());
    drop(start(&env).unwrap());
    let restored = Env {
        fs: env.fs.clone(),
        clock: env.clock.clone(),
        tmp: backup.tmp,
    };
    let e = start(&restored).unwrap_err();
    assert!(e.to_string().contains("restored from a backup"), "{e}");
}

/// A failing unlink is tried once and left for later: collecting garbage never sleeps, so
/// the core thread that runs it is never held up.
#[test]
fn collecting_garbage_never_waits_for_a_failing_unlink() {
    let (env, a) = one_stream(4096, 0);
    let mut s = start(&env).unwrap();
    let (_, end) = record(&mut s, &env.clock, a, 0, T0, MIN_RUN_SAMPLES, 10).unwrap();
    poll(&mut s).unwrap();
    env.fs.fail_all(OpKind::Unlink, Errno::EIO);
    record(&mut s, &env.clock, a, 1, end, MIN_RUN_SAMPLES, 10).unwrap();
    s.flush("push the first recording out").unwrap();
    let before = env.clock.monotonic();
    s.collect_garbage().unwrap();
    assert_eq!(env.clock.monotonic(), before, "no backoff sleep");
    assert_eq!(s.garbage_status().failing_unlinks, 1);
}

#[test]
fn a_writer_hash_that_disagrees_with_the_file_is_rejected() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    let mut w = Writer::open(&mut s, a, 0, T0).unwrap();
    w.write_sample(&env.clock, 100);
    let id = w.id;
    // Overwrite a byte behind the writer's back: same size, different content.
    tamper(&env, id, 0, b"\xff");
    let e = w.close(&mut s).unwrap_err();
    assert!(e.to_string().contains("blake3"), "{e}");
    poll(&mut s).unwrap();
    assert!(s.db().recordings(None).unwrap().is_empty());
    assert!(sample_files(&env.fs).is_empty());
}

#[test]
fn enospc_on_create_releases_the_reserve() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    assert!(env.fs.names().contains(&"reserve".to_owned()));
    env.fs.fail_nth(OpKind::CreateNew, 0, Errno::ENOSPC);
    let e = Writer::open(&mut s, a, 0, T0).unwrap_err();
    assert!(e.to_string().contains("create"), "{e}");
    assert!(!env.fs.names().contains(&"reserve".to_owned()));
    // The failed id is garbage; the next open gets a fresh id and the reserve comes back
    // after the next successful flush.
    let (id, _) = record(&mut s, &env.clock, a, 0, T0, 3, 100).unwrap();
    assert_eq!(id.recording(), 1);
    poll(&mut s).unwrap();
    assert!(env.fs.names().contains(&"reserve".to_owned()));
    assert!(check_invariants(&env.fs, s.db()).is_empty());
}

#[test]
fn shutdown_with_failing_unlinks_ends_promptly_and_leaves_garbage_for_the_next_start() {
    let (env, a) = one_stream(4096, 0);
    let mut s = start(&env).unwrap();
    let (first, end) = record(&mut s, &env.clock, a, 0, T0, MIN_RUN_SAMPLES, 10).unwrap();
    poll(&mut s).unwrap();
    env.fs.fail_all(OpKind::Unlink, Errno::EIO);
    record(&mut s, &env.clock, a, 1, end, MIN_RUN_SAMPLES, 10).unwrap();
    let before = env.clock.monotonic();
    s.shutdown().unwrap();
    assert!(env.clock.monotonic() - before < Duration::from_secs(1));
    drop(s);
    env.fs.clear_faults();
    let s = start(&env).unwrap();
    assert!(!sample_files(&env.fs).contains(&first));
    assert!(s.db().garbage().unwrap().is_empty());
    assert!(check_invariants(&env.fs, s.db()).is_empty());
}

#[test]
fn a_salvaged_recording_within_a_run_starts_where_the_previous_ended() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    let (_, end) = record(&mut s, &env.clock, a, 0, T0, MIN_RUN_SAMPLES, 10).unwrap();
    // The departed writer reported a start that does not abut.
    let mut w = Writer::open(&mut s, a, 1, end + Duration(12345)).unwrap();
    w.write_sample(&env.clock, 100);
    w.report(&mut s).unwrap();
    let id = w.id;
    drop(w);
    s.abandon_recording(id, "writer gone").unwrap();
    poll(&mut s).unwrap();
    let rows = s.db().recordings(None).unwrap();
    assert_eq!(rows[1].start, end);
    assert!(check_invariants(&env.fs, s.db()).is_empty());
}

/// The file may grow to the window past the last acknowledged report, however late the next
/// report arrives (a stalled syncer), and no further: a breach is rejected, the recording stays
/// growing, and when its connection goes, the salvage keeps the reported samples and cuts the
/// rest.
#[test]
fn a_file_grown_past_the_window_is_rejected_and_salvaged_to_its_reported_samples() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    let mut w = Writer::open(&mut s, a, 0, T0).unwrap();
    w.write_sample(&env.clock, 100);
    w.report(&mut s).unwrap(); // acknowledged through 100
    w.write_sample(&env.clock, 100);
    w.write_sample(&env.clock, 100);
    let id = w.id;
    let window = syncer::limits::WRITE_WINDOW_BYTES;
    // Written on (and reported later) while the syncer stalled: exactly the window.
    tamper(&env, id, 100 + window - 1, b"x");
    let samples = [sample(3000, 100)];
    assert_eq!(s.progress(id, &samples, times(3000), 200).unwrap(), 200);
    // One byte more than the window past the new acknowledgement.
    tamper(&env, id, 200 + window, b"x");
    let e = s
        .progress(id, &[sample(6000, 100)], times(6000), 300)
        .unwrap_err();
    assert!(e.to_string().contains("past its budget"), "{e}");
    assert!(matches!(e, Error::Rejected { .. }), "{e:?}");
    drop(w);
    s.abandon_recording(id, "dropped").unwrap();
    poll(&mut s).unwrap();
    let rows = s.db().recordings(None).unwrap();
    assert_eq!(rows.len(), 1, "salvaged, not discarded");
    assert_eq!(
        (rows[0].sample_file_bytes, rows[0].video_samples),
        (300, 3),
        "every sample that passed its checks, the tail cut"
    );
    assert!(check_invariants(&env.fs, s.db()).is_empty());
}

fn sample(pts_90k: i64, bytes: u32) -> protocol::messages::SampleReport {
    protocol::messages::SampleReport {
        pts_90k,
        bytes,
        is_key: false,
    }
}

fn times(wall_duration_90k: i32) -> protocol::messages::RecordingTimes {
    protocol::messages::RecordingTimes {
        start: T0,
        wall_duration_90k,
        local_time_delta_90k: 0,
    }
}

#[test]
fn a_report_whose_offset_disagrees_with_its_samples_or_the_file_is_rejected() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    let mut w = Writer::open(&mut s, a, 0, T0).unwrap();
    w.write_sample(&env.clock, 100);
    w.report(&mut s).unwrap();
    w.write_sample(&env.clock, 100);
    let e = s
        .progress(w.id, &[sample(3000, 100)], times(3000), 250)
        .unwrap_err();
    assert!(e.to_string().contains("offset 250"), "{e}");
    // A sample the file does not hold yet.
    let e = s
        .progress(w.id, &[sample(6000, 100)], times(6000), 300)
        .unwrap_err();
    assert!(e.to_string().contains("fewer than the 300 reported"), "{e}");
}

/// A salvage that cuts a long unreported tail measures the allocation after the cut: the
/// blocks the tail held are free again, and the recording is kept.
#[test]
fn a_salvage_that_cuts_a_long_tail_keeps_the_recording() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    let mut w = Writer::open(&mut s, a, 0, T0).unwrap();
    for _ in 0..203 {
        w.write_sample(&env.clock, 1000);
    }
    w.report(&mut s).unwrap();
    let id = w.id;
    tamper(&env, id, 203_000 + 5_000_000 - 1, b"x"); // a 5 MB unreported tail
    drop(w);
    s.abandon_recording(id, "dropped").unwrap();
    poll(&mut s).unwrap();
    let rows = s.db().recordings(None).unwrap();
    assert_eq!(rows.len(), 1, "kept");
    assert_eq!(rows[0].sample_file_bytes, 203_000);
    assert!(check_invariants(&env.fs, s.db()).is_empty());
}

/// A report with a sample out of order is rejected without its samples; the connection's end
/// salvages what was reported before.
#[test]
fn pts_going_backwards_is_rejected_and_the_earlier_samples_salvaged() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    let mut w = Writer::open(&mut s, a, 0, T0).unwrap();
    w.write_sample(&env.clock, 100);
    w.write_sample(&env.clock, 100);
    w.report(&mut s).unwrap();
    w.write_sample(&env.clock, 100);
    let e = s
        .progress(w.id, &[sample(1, 100)], times(3000), 300)
        .unwrap_err();
    assert!(e.to_string().contains("duration"), "{e}");
    let id = w.id;
    drop(w);
    s.abandon_recording(id, "dropped").unwrap();
    poll(&mut s).unwrap();
    let rows = s.db().recordings(None).unwrap();
    assert_eq!((rows.len(), rows[0].video_samples), (1, 2));
    assert_eq!(
        rows[0].wall_duration_90k, 3000,
        "the times of the last good report"
    );
    assert!(check_invariants(&env.fs, s.db()).is_empty());
}

/// Times near `i64::MAX` (or before 2000, or a local delta of years) are refused with a typed
/// rejection naming the limit, at a report and at close, instead of being stored (or
/// overflowing `start + wall`); nothing is kept, and the stream records on afterwards.
#[test]
fn absurd_times_are_rejected_at_report_and_close() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    for (start, delta) in [
        (Time(i64::MAX - 10), 0),
        (Time(i64::MIN), 0),
        (Time(syncer::limits::MIN_START_90K - 1), 0),
        (Time(syncer::limits::MAX_START_90K + 1), 0),
        (T0, i64::MAX),
        (T0, -syncer::limits::MAX_LOCAL_TIME_DELTA_90K - 1),
    ] {
        for at_close in [false, true] {
            let mut w = Writer::open(&mut s, a, 0, T0).unwrap();
            w.write_sample(&env.clock, 100);
            w.write_sample(&env.clock, 100);
            w.start = start;
            w.set_local_time_delta(delta);
            let id = w.id;
            let e = if at_close {
                w.close(&mut s).map(|_| ())
            } else {
                // A rejected report leaves the recording to the salvage at the connection's
                // end, which finds nothing reported to keep.
                let e = w.report(&mut s).unwrap_err();
                s.abandon_recording(id, "dropped").unwrap();
                Err(e)
            }
            .unwrap_err();
            assert!(matches!(e, syncer::Error::Rejected { .. }), "{e}");
            let text = e.to_string();
            assert!(
                text.contains("outside") || text.contains("local time delta"),
                "{text}"
            );
        }
    }
    poll(&mut s).unwrap();
    assert!(s.db().recordings(None).unwrap().is_empty());
    let (id, _) = record(&mut s, &env.clock, a, 0, T0, 3, 100).unwrap();
    poll(&mut s).unwrap();
    assert_eq!(recording_ids(s.db()), vec![id]);
    assert!(check_invariants(&env.fs, s.db()).is_empty());
}

/// Crash points of kind `Commit` (SQLite COMMITs) in the trace so far.
fn commits(env: &Env) -> usize {
    env.fs
        .trace()
        .iter()
        .filter(|op| op.kind == OpKind::Commit)
        .count()
}

#[test]
fn removing_a_stream_moves_its_recordings_to_garbage_in_one_commit() {
    let (env, ids) = init_env(&[("a", config(1 << 30, 0)), ("b", config(1 << 30, 0))]);
    let (a, b) = (ids[0], ids[1]);
    let mut s = start(&env).unwrap();
    let mut a_ids = Vec::new();
    let mut t = T0;
    for run_offset in 0..3 {
        let (id, end) = record(&mut s, &env.clock, a, run_offset, t, MIN_RUN_SAMPLES, 10).unwrap();
        a_ids.push(id);
        t = end;
    }
    let (b_id, _) = record(&mut s, &env.clock, b, 0, T0, MIN_RUN_SAMPLES, 10).unwrap();
    poll(&mut s).unwrap();
    assert_eq!(recording_ids(s.db()).len(), 4);

    // A failed COMMIT changes nothing: the removal is one transaction.
    env.fs.fail_nth(OpKind::Commit, 0, Errno::EIO);
    s.remove_stream(a, true).unwrap_err();
    assert_eq!(recording_ids(s.db()).len(), 4);
    assert_eq!(s.db().streams().unwrap().len(), 2);
    assert_eq!(sample_files(&env.fs).len(), 4);

    let before = commits(&env);
    s.remove_stream(a, true).unwrap();
    assert_eq!(commits(&env) - before, 1, "one COMMIT moved them all");
    assert_eq!(
        recording_ids(s.db()),
        vec![b_id],
        "the other stream untouched"
    );
    assert_eq!(
        s.db().garbage().unwrap(),
        a_ids,
        "garbage rows stay until the next flush forgets them"
    );
    assert_eq!(
        sample_files(&env.fs),
        vec![b_id],
        "files unlinked before returning"
    );
    let streams = s.db().streams().unwrap();
    assert_eq!(streams.iter().map(|r| r.id).collect::<Vec<_>>(), vec![b]);
    assert!(s.stream_summary(a).is_none());

    // The id is never reused, and the next start finds everything consistent.
    let c = s.add_stream("a", config(1 << 30, 0)).unwrap();
    assert!(c > b, "new stream id {c} reuses a removed one");
    s.shutdown().unwrap();
    let s = start(&env).unwrap();
    assert!(s.db().garbage().unwrap().is_empty());
    assert!(check_invariants(&env.fs, s.db()).is_empty());
}

#[test]
fn removing_a_stream_with_recordings_needs_delete_recordings() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    let (id, _) = record(&mut s, &env.clock, a, 0, T0, 3, 100).unwrap();
    // Synced but not yet committed counts too.
    let e = s.remove_stream(a, false).unwrap_err();
    assert!(
        matches!(&e, Error::HasRecordings { recordings: 1, name, .. } if name == "a"),
        "{e}"
    );
    assert!(e.to_string().contains("--delete-recordings"), "{e}");
    poll(&mut s).unwrap();
    let before = commits(&env);
    let e = s.remove_stream(a, false).unwrap_err();
    assert!(e.to_string().contains("1 committed recording"), "{e}");
    assert_eq!(commits(&env), before, "a refusal commits nothing");
    assert_eq!(recording_ids(s.db()), vec![id]);
    assert_eq!(sample_files(&env.fs), vec![id]);
}

#[test]
fn removing_a_stream_without_recordings_needs_no_flag() {
    let (env, ids) = init_env(&[("a", config(1 << 30, 0)), ("b", config(1 << 30, 0))]);
    let mut s = start(&env).unwrap();
    s.remove_stream(ids[0], false).unwrap();
    assert_eq!(s.db().streams().unwrap().len(), 1);
    let e = s.remove_stream(ids[0], false).unwrap_err();
    assert!(matches!(e, Error::NoSuchStream(_)), "{e}");
}

#[test]
fn a_stream_with_a_recording_in_flight_is_not_removed() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    let mut w = Writer::open(&mut s, a, 0, T0).unwrap();
    w.write_sample(&env.clock, 100);
    w.report(&mut s).unwrap();
    let e = s.remove_stream(a, true).unwrap_err();
    assert!(
        matches!(e, Error::StreamBusy { recording, .. } if recording == w.id),
        "{e}"
    );
    assert!(e.to_string().contains("being written"), "{e}");
    // Once the writer is gone and its recording salvaged, the removal goes through, and the
    // salvaged recording is deleted with the stream.
    s.abandon_recording(w.id, "test").unwrap();
    s.remove_stream(a, true).unwrap();
    assert!(s.db().recordings(None).unwrap().is_empty());
    assert!(sample_files(&env.fs).is_empty());
    s.shutdown().unwrap();
    let s = start(&env).unwrap();
    assert!(check_invariants(&env.fs, s.db()).is_empty());
}

#[test]
fn invalid_camera_names_and_settings_are_refused_before_anything_changes() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    let e = s.add_stream("no spaces", config(1 << 30, 0)).unwrap_err();
    assert!(matches!(e, Error::InvalidConfig(_)), "{e}");
    assert!(e.to_string().contains("\"no spaces\""), "{e}");
    let mut bad = config(1 << 30, 0);
    bad.rotate_sec = 0;
    let e = s.add_stream("ok", bad.clone()).unwrap_err();
    assert!(e.to_string().contains("rotate_sec 0"), "{e}");
    let e = s.set_stream_config(a, bad).unwrap_err();
    assert!(e.to_string().contains("rotate_sec 0"), "{e}");
    assert_eq!(s.db().streams().unwrap().len(), 1);
    assert_eq!(s.db().streams().unwrap()[0].config, config(1 << 30, 0));
}

#[test]
fn a_full_disk_deletes_the_oldest_beyond_quotas_and_recording_goes_on() {
    // Quotas far above the disk: only the free-space guard can make room.
    let (env, ids) = init_env(&[("a", config(1 << 30, 0)), ("b", config(1 << 30, 0))]);
    let mut s = start(&env).unwrap();
    // Room for about 20 recordings of 12 KiB (plus the 64 KiB reserve).
    env.fs.set_capacity_bytes(Some(320 << 10));
    let min_free = syncer::SyncerOptions::default().min_free_bytes;
    assert!(
        min_free > 320 << 10,
        "the default guard is above this tiny disk"
    );
    let mut t = [T0, T0];
    let mut runs = [0, 0];
    let mut all = Vec::new();
    for i in 0..60 {
        let k = i % 2;
        let (id, end) = record(
            &mut s,
            &env.clock,
            ids[k],
            runs[k],
            t[k],
            MIN_RUN_SAMPLES,
            400,
        )
        .unwrap();
        all.push(id);
        t[k] = end;
        runs[k] += 1;
        poll(&mut s).unwrap();
    }
    let left = recording_ids(s.db());
    assert!(
        !left.is_empty() && left.len() < all.len(),
        "{} left",
        left.len()
    );
    // What is left is the newest of each stream, and everything checks out.
    for stream in &ids {
        let mut mine = all.iter().filter(|id| id.stream() == *stream);
        let mut kept = left.iter().filter(|id| id.stream() == *stream);
        assert_eq!(
            kept.next_back(),
            mine.next_back(),
            "stream {stream} keeps its newest"
        );
    }
    assert!(check_invariants(&env.fs, s.db()).is_empty());
    let free = syncer::fs::Dir::free_bytes(&env.fs).unwrap().unwrap();
    assert!(free >= options().min_free_bytes, "{free} free");
}

/// Inodes are a resource like bytes: a stream of many tiny recordings (well within its byte
/// quota) on a file system with few inodes makes the guard delete *its* oldest (it holds the
/// most files), and the other camera loses nothing and never fails a create. Opens are
/// refused only below a quarter of the reserve.
#[test]
fn few_free_inodes_shed_the_stream_with_the_most_files() {
    let (env, ids) = init_env(&[("tiny", config(1 << 30, 0)), ("cam", config(1 << 30, 0))]);
    let opts = syncer::SyncerOptions {
        min_free_inodes: 16,
        ..options()
    };
    let (mut s, _) = start_with_options(&env, opts).unwrap();
    env.fs.set_capacity_inodes(Some(60));
    let (mut t, mut runs) = ([T0, T0], [0, 0]);
    let mut cam = Vec::new();
    // 150 recordings, one in ten the camera's: it keeps fewer files than the tiny stream.
    for i in 0..150 {
        let k = usize::from(i % 10 == 0);
        let (id, end) = record(
            &mut s,
            &env.clock,
            ids[k],
            runs[k],
            t[k],
            MIN_RUN_SAMPLES,
            3,
        )
        .unwrap();
        if k == 1 {
            cam.push(id);
        }
        t[k] = end;
        runs[k] += 1;
        poll(&mut s).unwrap();
        let free = syncer::fs::Dir::free_inodes(&env.fs).unwrap().unwrap();
        assert!(free >= 15, "iteration {i}: {free} inodes free");
    }
    let left = recording_ids(s.db());
    for id in &cam {
        assert!(
            left.contains(id),
            "{id} of the camera with few files was deleted"
        );
    }
    assert!(left.iter().filter(|id| id.stream() == ids[0]).count() > 0);
    assert!(check_invariants(&env.fs, s.db()).is_empty());

    // Below a quarter of the reserve, opens are refused as on a full disk.
    let live = 60 - syncer::fs::Dir::free_inodes(&env.fs).unwrap().unwrap();
    env.fs.set_capacity_inodes(Some(live + 3));
    let e = s.open_recording(ids[1], 0, 1).unwrap_err();
    assert!(e.is_out_of_space(), "{e}");
    assert!(e.to_string().contains("out of inodes"), "{e}");
}

/// Space a stream's growing recording holds counts against that stream: on a full disk the
/// guard sheds the stream holding the most bytes in all, not the one with the most committed
/// (whose recordings would otherwise pay for another stream's file).
#[test]
fn a_full_disk_sheds_the_stream_whose_growing_file_holds_the_space() {
    let (env, ids) = init_env(&[
        ("grower", config(1 << 30, 0)),
        ("steady", config(1 << 30, 0)),
    ]);
    let mut s = start(&env).unwrap();
    let (grower, steady) = (ids[0], ids[1]);
    let (first, end) = record(&mut s, &env.clock, grower, 0, T0, MIN_RUN_SAMPLES, 400).unwrap();
    let mut t = T0;
    for run in 0..3 {
        t = record(&mut s, &env.clock, steady, run, t, MIN_RUN_SAMPLES, 400)
            .unwrap()
            .1;
    }
    poll(&mut s).unwrap();
    // 12 KiB committed for the grower against 36 KiB for steady, but 200 KiB growing.
    let mut w = Writer::open(&mut s, grower, 1, end).unwrap();
    for _ in 0..20 {
        w.write_sample(&env.clock, 10_000);
    }
    w.report(&mut s).unwrap();
    let used: u64 = env
        .fs
        .names()
        .iter()
        .filter_map(|n| env.fs.read_current(n))
        .map(|d| d.len() as u64)
        .sum();
    // 8 KiB short of the guard's 96 KiB: one recording's worth.
    env.fs.set_capacity_bytes(Some(used + (88 << 10)));
    s.ensure_free_space().unwrap();
    let left = recording_ids(s.db());
    assert!(!left.contains(&first), "the grower's oldest went: {left:?}");
    assert_eq!(
        left.iter().filter(|id| id.stream() == steady).count(),
        3,
        "{left:?}"
    );
}

/// When the free-space guard's deletions cannot be unlinked (every unlink fails), it stops
/// deleting: the space would never come, and going on would take the whole archive.
#[test]
fn a_full_disk_whose_unlinks_fail_deletes_no_more_than_its_first_batch() {
    let (env, ids) = init_env(&[("a", config(1 << 30, 0)), ("b", config(1 << 30, 0))]);
    let mut s = start(&env).unwrap();
    // The 64 KiB reserve, the guard's 96 KiB and about three recordings of 12 KiB.
    env.fs.set_capacity_bytes(Some(200 << 10));
    let mut t = [T0, T0];
    for (k, &stream) in ids.iter().enumerate() {
        let (_, end) = record(&mut s, &env.clock, stream, 0, t[k], MIN_RUN_SAMPLES, 400).unwrap();
        t[k] = end;
        poll(&mut s).unwrap();
    }
    env.fs.fail_all(OpKind::Unlink, Errno::EIO);
    let mut kept_after = Vec::new();
    for i in 1..8 {
        let k = i % 2;
        let (id, end) = record(
            &mut s,
            &env.clock,
            ids[k],
            i as i32 / 2,
            t[k],
            MIN_RUN_SAMPLES,
            400,
        )
        .unwrap();
        t[k] = end;
        poll(&mut s).unwrap();
        if i > 1 {
            kept_after.push(id);
        }
    }
    let left = recording_ids(s.db());
    for id in &kept_after {
        assert!(
            left.contains(id),
            "{id} deleted while unlinks fail: {left:?}"
        );
    }
    assert!(
        s.garbage_status().failing_unlinks >= 1,
        "{left:?} {:?}",
        s.garbage_status()
    );
}

/// A database that cannot grow at all (at its `max_page_count`; releasing the reserve file
/// gives it nothing) does not stop startup: when the open's row needs a page, recovery deletes
/// the oldest recordings, beyond quota, as a running syncer does when its database is full.
#[test]
fn startup_with_a_database_that_cannot_grow_deletes_the_oldest_to_record_its_open() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    let mut t = T0;
    for _ in 0..40 {
        t = record(&mut s, &env.clock, a, 0, t, 300, 100).unwrap().1;
    }
    s.flush("test").unwrap();
    s.shutdown().unwrap();
    let before = recording_ids(&open_db(&env));
    assert_eq!(before.len(), 40);
    // Each start records one open row; with the database capped at its size, sooner or later
    // the opens table needs a page the cap does not allow.
    for i in 0..150 {
        let db = Database::open(&env.db_path()).unwrap();
        let pages = db.page_count().unwrap();
        assert_eq!(db.set_max_page_count(pages).unwrap(), pages);
        let (mut s, _) = Syncer::start(
            Arc::new(env.fs.clone()),
            db,
            Arc::new(env.clock.clone()) as Arc<dyn Clock>,
            options(),
        )
        .unwrap_or_else(|e| panic!("start {i} with a full database: {e}"));
        s.shutdown().unwrap();
    }
    let db = open_db(&env);
    let after = recording_ids(&db);
    assert!(after.len() < before.len(), "nothing was deleted: {after:?}");
    // The oldest went, the newest stayed.
    assert_eq!(after, before[before.len() - after.len()..]);
    assert_eq!(check_invariants(&env.fs, &db), Vec::<String>::new());
}

/// When deleting recordings cannot make the database room (here: rows too small to free a
/// page), a full database does not take every recording with it: at most a few times the
/// inserts of the failing flush wait for deletion, and once the database can grow again the
/// flush commits with only those deleted.
#[test]
fn a_full_database_deletions_cannot_help_sheds_a_bounded_number() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    let mut t = T0;
    for _ in 0..60 {
        t = record(&mut s, &env.clock, a, 0, t, 2, 10).unwrap().1;
    }
    poll(&mut s).unwrap();
    assert_eq!(recording_ids(s.db()).len(), 60);
    let pages = s.db().page_count().unwrap();
    s.db().set_max_page_count(pages).unwrap();
    // One large recording to insert: its index needs a page the cap does not allow.
    record(&mut s, &env.clock, a, 0, t, 2000, 10).unwrap();
    for _ in 0..50 {
        s.poll().unwrap();
        env.clock.advance(Duration::from_secs(1));
    }
    assert_eq!(
        recording_ids(s.db()).len(),
        60,
        "the flush should keep failing"
    );
    s.db().set_max_page_count(1 << 20).unwrap();
    s.flush("test").unwrap();
    let left = recording_ids(s.db()).len();
    // 60 + 1 inserted, at most 4 (SHED_FOR_DB_FACTOR x 1 insert) deleted.
    assert!((57..=60).contains(&left), "{left} recordings left");
    assert_eq!(check_invariants(&env.fs, s.db()), Vec::<String>::new());
}

/// Growing files filled the disk before anything was committed, so the database cannot take
/// the commit and nothing committed can be deleted for it: the largest uncommitted recording
/// is discarded and its file unlinked (which needs no database write), and the rest commit.
/// At most two go between commits, however long the database stays full.
#[test]
fn a_disk_full_of_uncommitted_recordings_gives_up_the_largest_to_commit_the_rest() {
    let (env, ids) = init_env(&[("a", config(1 << 30, 60)), ("b", config(1 << 30, 60))]);
    let mut s = start(&env).unwrap();
    let (big, _) = record(&mut s, &env.clock, ids[0], 0, T0, 30, 1000).unwrap();
    let (small, _) = record(&mut s, &env.clock, ids[1], 0, T0, 3, 1000).unwrap();
    let (smaller, _) = record(
        &mut s,
        &env.clock,
        ids[1],
        0,
        T0 + Duration::from_secs(9),
        2,
        1000,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // The disk is full, and so every commit fails for want of space.
    env.fs.set_capacity_bytes(Some(1 << 40));
    let live = (1 << 40) - syncer::fs::Dir::free_bytes(&env.fs).unwrap().unwrap();
    env.fs.set_capacity_bytes(Some(live));
    env.fs.fail_all(OpKind::Commit, Errno::ENOSPC);
    env.clock.advance(Duration::from_secs(60));
    for _ in 0..20 {
        s.poll().unwrap();
        env.clock.advance(Duration::from_secs(1));
    }
    let names = env.fs.names();
    assert!(!names.contains(&sample_file_name(big)), "{names:?}");
    assert!(
        !names.contains(&sample_file_name(small)),
        "the second largest"
    );
    assert!(
        names.contains(&sample_file_name(smaller)),
        "no more than two: {names:?}"
    );
    env.fs.clear_faults();
    env.fs.set_capacity_bytes(None);
    env.clock.advance(options().flush_retry_delay);
    poll(&mut s).unwrap();
    assert_eq!(recording_ids(s.db()), vec![smaller]);
    assert!(check_invariants(&env.fs, s.db()).is_empty());
}

/// While the reserve file is released (for a commit that frees space) and cannot be made
/// again, no new sample file may eat the room: opens are refused as out of space, not as an
/// error of the ingest's, until the reserve is back.
#[test]
fn opens_wait_while_the_reserve_is_released() {
    let (env, a) = one_stream(1 << 30, 0);
    let mut s = start(&env).unwrap();
    let fill = |env: &Env| {
        env.fs.set_capacity_bytes(Some(1 << 40));
        let live = (1 << 40) - syncer::fs::Dir::free_bytes(&env.fs).unwrap().unwrap();
        env.fs.set_capacity_bytes(Some(live));
    };
    fill(&env);
    env.fs.fail_nth(OpKind::CreateNew, 0, Errno::ENOSPC);
    let e = s.open_recording(a, 0, 1).unwrap_err();
    assert!(e.is_out_of_space(), "{e}");
    assert!(!env.fs.names().contains(&"reserve".to_owned()), "released");
    // Something else (another camera's growing file) takes the room at once.
    fill(&env);
    let e = s.open_recording(a, 0, 1).unwrap_err();
    assert!(matches!(e, Error::ReserveReleased), "{e}");
    assert!(e.is_out_of_space());
    // Room again: the open makes the reserve again first, then opens.
    env.fs.set_capacity_bytes(None);
    s.open_recording(a, 0, 1).unwrap();
    assert!(env.fs.names().contains(&"reserve".to_owned()));
}
