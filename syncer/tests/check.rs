//! `nvr check` and `--repair` on a simulated data dir: a healthy one checks clean, each kind of
//! violation is found and named, and repair fixes only what is safe to fix.

mod support;

use nix::errno::Errno;
use protocol::{CompositeId, Duration};
use support::*;
use syncer::check::{
    CheckOptions, CheckReport, Progress, RepairActionKind, ViolationKind, check, repair,
};
use syncer::db::{Database, FLAG_FILE_MISSING};
use syncer::fs::{Dir, DirFile, OpenMode};
use syncer::layout::sample_file_name;
use syncer::sim_fs::{OpKind, SimFs};

const PLAIN: CheckOptions = CheckOptions {
    hash: false,
    live: false,
};
const HASH: CheckOptions = CheckOptions {
    hash: true,
    live: false,
};

/// A stopped data dir with one stream "cam" holding one run of three committed recordings
/// (ids 0-2), and id 3 discarded (so garbage, then collected and forgotten). Next id is 4.
struct Fixture {
    env: Env,
    stream: i32,
    ids: Vec<CompositeId>,
    /// An id below the next id whose file and garbage row are gone.
    discarded: CompositeId,
}

fn fixture() -> Fixture {
    let (env, streams) = init_env(&[("cam", config(1 << 30, 0))]);
    let stream = streams[0];
    let mut s = start(&env).unwrap();
    let mut ids = Vec::new();
    let mut t = T0;
    for run_offset in 0..3 {
        let (id, end) = record(
            &mut s,
            &env.clock,
            stream,
            run_offset,
            t,
            MIN_RUN_SAMPLES,
            280 + run_offset as usize,
        )
        .unwrap();
        ids.push(id);
        t = end;
    }
    let (discarded, _) = s.open_recording(stream, 0, 1).unwrap();
    s.abandon_recording(discarded, "test").unwrap();
    s.shutdown().unwrap();
    drop(s);
    // Recovery at the next start forgets the collected garbage; stop again.
    start(&env).unwrap().shutdown().unwrap();
    Fixture {
        env,
        stream,
        ids,
        discarded,
    }
}

fn run_check(env: &Env, opts: CheckOptions) -> CheckReport {
    check(&open_db(env), &env.fs, opts, &mut |_| {}).unwrap()
}

/// `(kind, subject)` of each violation, sorted.
fn found(r: &CheckReport) -> Vec<(ViolationKind, String)> {
    let mut v: Vec<_> = r
        .violations
        .iter()
        .map(|v| (v.kind, v.subject.clone()))
        .collect();
    v.sort();
    v
}

fn one(kind: ViolationKind, subject: impl ToString) -> Vec<(ViolationKind, String)> {
    vec![(kind, subject.to_string())]
}

/// Runs SQL on the database behind the syncer's back, foreign keys off, to damage it.
fn tamper_db(env: &Env, sql: &str) {
    let conn = rusqlite::Connection::open(env.db_path()).unwrap();
    conn.execute_batch("pragma foreign_keys = off;").unwrap();
    conn.execute_batch(sql).unwrap();
}

fn create_file(fs: &SimFs, id: CompositeId, data: &[u8]) {
    let f = fs.create_new(&sample_file_name(id)).unwrap();
    f.write_all_at(data, 0).unwrap();
}

#[test]
fn healthy_data_dir_checks_clean_with_and_without_hash() {
    let fx = fixture();
    let r = run_check(&fx.env, PLAIN);
    assert!(r.is_clean(), "{:?}", r.violations);
    assert_eq!((r.recordings, r.files, r.bytes_hashed), (3, 3, 0));

    let total: u64 = (280..283).map(|len| u64::from(MIN_RUN_SAMPLES) * len).sum();
    let mut last = Progress::default();
    let r = check(&open_db(&fx.env), &fx.env.fs, HASH, &mut |p| last = p).unwrap();
    assert!(r.is_clean(), "{:?}", r.violations);
    assert_eq!(r.bytes_hashed, total);
    assert_eq!(
        last,
        Progress {
            done_bytes: total,
            total_bytes: total,
            done_files: 3,
            total_files: 3
        }
    );
}

#[test]
fn truncated_file_is_a_length_mismatch() {
    let fx = fixture();
    let name = sample_file_name(fx.ids[1]);
    fx.env
        .fs
        .open(&name, OpenMode::ReadWrite)
        .unwrap()
        .set_len(100)
        .unwrap();
    let r = run_check(&fx.env, HASH);
    assert_eq!(found(&r), one(ViolationKind::LengthMismatch, fx.ids[1]));
    assert!(
        r.violations[0].message.contains("100 bytes"),
        "{}",
        r.violations[0]
    );
}

#[test]
fn altered_contents_are_a_hash_mismatch_found_only_with_hash() {
    let fx = fixture();
    let name = sample_file_name(fx.ids[0]);
    let f = fx.env.fs.open(&name, OpenMode::ReadWrite).unwrap();
    f.write_all_at(b"tampered", 40).unwrap();
    assert!(run_check(&fx.env, PLAIN).is_clean());
    let r = run_check(&fx.env, HASH);
    assert_eq!(found(&r), one(ViolationKind::HashMismatch, fx.ids[0]));
}

#[test]
fn deleted_file_is_missing() {
    let fx = fixture();
    fx.env.fs.unlink(&sample_file_name(fx.ids[2])).unwrap();
    let r = run_check(&fx.env, PLAIN);
    assert_eq!(found(&r), one(ViolationKind::MissingFile, fx.ids[2]));
    assert_eq!(r.files, 2);
}

/// A committed file holding blocks past its end (preallocated through a kept descriptor after
/// its commit) is found: its stream's quota does not count them (`check --hash` used to say
/// clean of a 1 MiB quota holding 1.1 GiB).
#[test]
fn preallocation_past_a_committed_file_is_over_allocated() {
    let fx = fixture();
    fx.env
        .fs
        .set_extra_allocated(&sample_file_name(fx.ids[0]), 4 << 20);
    let r = run_check(&fx.env, PLAIN);
    assert_eq!(found(&r), one(ViolationKind::OverAllocated, fx.ids[0]));
}

#[test]
fn read_error_is_an_unreadable_file() {
    let fx = fixture();
    let name = sample_file_name(fx.ids[1]);
    fx.env.fs.set_fault_hook(move |op| {
        (op.kind == OpKind::ReadAt && op.name.as_deref() == Some(name.as_str()))
            .then_some(Errno::EIO)
    });
    let r = run_check(&fx.env, HASH);
    assert_eq!(found(&r), one(ViolationKind::UnreadableFile, fx.ids[1]));
}

#[test]
fn file_that_is_neither_recording_nor_garbage_is_an_orphan() {
    let fx = fixture();
    create_file(&fx.env.fs, fx.discarded, b"stray");
    let r = run_check(&fx.env, PLAIN);
    assert_eq!(found(&r), one(ViolationKind::OrphanFile, fx.discarded));
}

#[test]
fn file_past_the_next_id_is_abandoned() {
    let fx = fixture();
    let past = CompositeId::new(fx.stream, 7);
    create_file(&fx.env.fs, past, b"growing once");
    let r = run_check(&fx.env, PLAIN);
    assert_eq!(found(&r), one(ViolationKind::AbandonedFile, past));
}

#[test]
fn file_of_an_unknown_stream_is_reported() {
    let fx = fixture();
    let foreign = CompositeId::new(fx.stream + 40, 0);
    create_file(&fx.env.fs, foreign, b"whose?");
    let r = run_check(&fx.env, PLAIN);
    assert_eq!(found(&r), one(ViolationKind::UnknownStreamFile, foreign));
}

#[test]
fn garbage_rows_and_foreign_names_are_only_noted() {
    let fx = fixture();
    // A garbage row whose file is still there (gc not yet run), and one whose file is gone.
    create_file(&fx.env.fs, fx.discarded, b"garbage");
    let gone = CompositeId::new(fx.stream + 1, 0);
    tamper_db(
        &fx.env,
        &format!(
            "insert into garbage values ({}), ({});",
            fx.discarded.0, gone.0
        ),
    );
    fx.env.fs.create_new("notes.txt").unwrap();
    let r = run_check(&fx.env, PLAIN);
    assert!(r.is_clean(), "{:?}", r.violations);
    let notes = r.notes.join("\n");
    assert!(
        notes.contains("2 garbage rows (1 still with a file)"),
        "{notes}"
    );
    assert!(notes.contains("notes.txt"), "{notes}");
}

#[test]
fn garbage_row_at_or_past_the_next_id_is_reported() {
    let fx = fixture();
    let past = CompositeId::new(fx.stream, 4);
    tamper_db(
        &fx.env,
        &format!("insert into garbage values ({});", past.0),
    );
    let r = run_check(&fx.env, PLAIN);
    assert_eq!(found(&r), one(ViolationKind::IdNotBelowNext, past));
}

#[test]
fn undecodable_index_is_a_bad_index() {
    let fx = fixture();
    tamper_db(
        &fx.env,
        &format!(
            "update recording_playback set video_index = x'ff' where composite_id = {};",
            fx.ids[1].0
        ),
    );
    let r = run_check(&fx.env, PLAIN);
    assert_eq!(found(&r), one(ViolationKind::BadIndex, fx.ids[1]));
}

#[test]
fn missing_index_is_reported() {
    let fx = fixture();
    tamper_db(
        &fx.env,
        &format!(
            "delete from recording_playback where composite_id = {};",
            fx.ids[0].0
        ),
    );
    let r = run_check(&fx.env, PLAIN);
    assert_eq!(found(&r), one(ViolationKind::MissingIndex, fx.ids[0]));
}

#[test]
fn index_totals_that_disagree_with_the_row_are_an_index_mismatch() {
    let fx = fixture();
    tamper_db(
        &fx.env,
        &format!(
            "update recording set video_samples = video_samples + 1, flags = 1
             where composite_id = {};",
            fx.ids[2].0
        ),
    );
    let r = run_check(&fx.env, PLAIN);
    assert_eq!(found(&r), one(ViolationKind::IndexMismatch, fx.ids[2]));
    let msg = &r.violations[0].message;
    assert!(
        msg.contains("samples 30 in the index, 31 in the row"),
        "{msg}"
    );
    assert!(msg.contains("trailing-zero flag is set"), "{msg}");
}

#[test]
fn wall_duration_beyond_500_ppm_is_reported() {
    let fx = fixture();
    // 30 frames of 3000 ticks: 500 ppm of 90000 is 45, plus one tick of rounding.
    tamper_db(
        &fx.env,
        &format!(
            "update recording set wall_duration_90k = media_duration_90k + 46
             where composite_id = {};
             update recording set wall_duration_90k = media_duration_90k - 47,
                                  start_time_90k = start_time_90k + 46
             where composite_id = {};",
            fx.ids[0].0, fx.ids[1].0
        ),
    );
    let r = run_check(&fx.env, PLAIN);
    // Recording 0 ends 46 ticks later, where recording 1 now starts: only 1 is skewed, and
    // recording 2 no longer starts where 1 ends.
    assert_eq!(
        found(&r),
        vec![
            (ViolationKind::WallDurationSkew, fx.ids[1].to_string()),
            (ViolationKind::RunDiscontinuity, fx.ids[2].to_string()),
        ]
    );
}

#[test]
fn recording_that_does_not_start_where_its_run_left_off_is_a_discontinuity() {
    let fx = fixture();
    tamper_db(
        &fx.env,
        &format!(
            "update recording set start_time_90k = start_time_90k + {}
             where composite_id = {};",
            Duration::from_millis(1).0,
            fx.ids[2].0
        ),
    );
    let r = run_check(&fx.env, PLAIN);
    assert_eq!(found(&r), one(ViolationKind::RunDiscontinuity, fx.ids[2]));
}

#[test]
fn recording_at_or_past_the_next_id_is_reported() {
    let fx = fixture();
    tamper_db(&fx.env, "update stream set cum_recordings = 2;");
    let r = run_check(&fx.env, PLAIN);
    assert_eq!(found(&r), one(ViolationKind::IdNotBelowNext, fx.ids[2]));
}

#[test]
fn unknown_sample_entry_is_reported() {
    let fx = fixture();
    tamper_db(
        &fx.env,
        &format!(
            "update recording set video_sample_entry_id = 42 where composite_id = {};",
            fx.ids[0].0
        ),
    );
    let r = run_check(&fx.env, PLAIN);
    assert_eq!(found(&r), one(ViolationKind::UnknownSampleEntry, fx.ids[0]));
}

#[test]
fn committed_bytes_over_the_quota_are_reported() {
    let fx = fixture();
    // Three recordings of under 12 KiB each take three 4 KiB blocks each.
    tamper_db(&fx.env, "update stream set retain_bytes = 8 * 4096;");
    let r = run_check(&fx.env, PLAIN);
    assert_eq!(found(&r), one(ViolationKind::OverQuota, "cam"));
    tamper_db(&fx.env, "update stream set retain_bytes = 9 * 4096;");
    assert!(run_check(&fx.env, PLAIN).is_clean());
}

#[test]
fn meta_of_another_database_is_reported() {
    let fx = fixture();
    tamper_db(&fx.env, "update db_info set uuid = randomblob(16);");
    let r = run_check(&fx.env, PLAIN);
    assert_eq!(found(&r), one(ViolationKind::MetaMismatch, "meta"));
    assert!(
        r.violations[0].message.contains("belongs to database"),
        "{}",
        r.violations[0]
    );
}

#[test]
fn every_violation_kind_has_a_distinct_snake_case_name() {
    let names: std::collections::BTreeSet<&str> =
        ViolationKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(names.len(), ViolationKind::ALL.len());
    for n in names {
        assert!(n.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{n}");
    }
}

#[test]
fn live_check_treats_files_past_the_next_id_as_in_flight() {
    let fx = fixture();
    let mut s = start(&fx.env).unwrap();
    let mut w = Writer::open(&mut s, fx.stream, 0, T0 + Duration::from_secs(60)).unwrap();
    w.write_sample(&fx.env.clock, 500);
    let live = CheckOptions {
        hash: true,
        live: true,
    };
    let r = check(s.db(), s.dir().as_ref(), live, &mut |_| {}).unwrap();
    assert!(r.is_clean(), "{:?}", r.violations);
    let notes = r.notes.join("\n");
    assert!(notes.contains("recording was active"), "{notes}");
    assert!(
        notes.contains(&format!("{}: recording in flight", w.id)),
        "{notes}"
    );

    // The same state seen as a stopped data dir: the file is abandoned.
    let r = check(s.db(), s.dir().as_ref(), HASH, &mut |_| {}).unwrap();
    assert_eq!(found(&r), one(ViolationKind::AbandonedFile, w.id));
}

#[test]
fn live_check_forgives_a_recording_deleted_while_checking() {
    let fx = fixture();
    let victim = fx.ids[2];
    let db = open_db(&fx.env);
    let live = CheckOptions {
        hash: false,
        live: true,
    };
    let mut deleted = false;
    // After the snapshot and the listing (progress is first reported after the first row's
    // file), a recording is deleted as retention or `camera remove` would.
    let r = check(&db, &fx.env.fs, live, &mut |_| {
        if !deleted {
            deleted = true;
            tamper_db(
                &fx.env,
                &format!(
                    "delete from recording_playback where composite_id = {0};
                     delete from recording where composite_id = {0};
                     insert into garbage values ({0});",
                    victim.0
                ),
            );
            fx.env.fs.unlink(&sample_file_name(victim)).unwrap();
        }
    })
    .unwrap();
    assert!(r.is_clean(), "{:?}", r.violations);
    assert!(
        r.notes
            .iter()
            .any(|n| n == &format!("{victim}: deleted by retention while checking")),
        "{:?}",
        r.notes
    );
}

#[test]
fn repair_trashes_orphans_marks_missing_files_and_leaves_newer_ids_to_recovery() {
    let fx = fixture();
    let fs = &fx.env.fs;
    let abandoned = CompositeId::new(fx.stream, 9);
    let unknown = CompositeId::new(fx.stream + 1, 3);
    for id in [fx.discarded, abandoned, unknown] {
        create_file(fs, id, b"stray");
    }
    fs.unlink(&sample_file_name(fx.ids[1])).unwrap();
    let r = run_check(&fx.env, PLAIN);
    assert_eq!(
        found(&r),
        vec![
            (ViolationKind::MissingFile, fx.ids[1].to_string()),
            (ViolationKind::OrphanFile, fx.discarded.to_string()),
            (ViolationKind::AbandonedFile, abandoned.to_string()),
            (ViolationKind::UnknownStreamFile, unknown.to_string()),
        ]
    );

    let mut db = open_db(&fx.env);
    let rep = repair(&mut db, fs, &r).unwrap();
    let mut actions: Vec<_> = rep
        .actions
        .iter()
        .map(|a| (a.kind, a.subject.clone()))
        .collect();
    actions.sort();
    assert_eq!(
        actions,
        vec![
            (RepairActionKind::TrashedFile, fx.discarded.to_string()),
            (RepairActionKind::MarkedFileMissing, fx.ids[1].to_string()),
        ]
    );
    // A file at or past the next id, or of an unknown stream, could be a newer database's:
    // repair leaves it (and the id) alone.
    let left: Vec<_> = rep.left.iter().map(|v| v.subject.clone()).collect();
    assert_eq!(left, vec![abandoned.to_string(), unknown.to_string()]);
    assert_eq!(
        sample_files(fs),
        vec![fx.ids[0], fx.ids[2], abandoned, unknown]
    );
    assert!(db.garbage().unwrap().is_empty());
    assert_eq!(db.streams().unwrap()[0].next_recording_id, 4);
    let row = &db.recordings(None).unwrap()[1];
    assert_eq!(row.flags & FLAG_FILE_MISSING, FLAG_FILE_MISSING);
    drop(db);

    // The syncer's recovery, which checks the meta itself, collects the rest, and never hands
    // out the abandoned id again.
    let mut s = start(&fx.env).unwrap();
    let (id, _) = record(&mut s, &fx.env.clock, fx.stream, 0, T0, 3, 100).unwrap();
    assert_eq!(id, CompositeId::new(fx.stream, 10));
    s.shutdown().unwrap();
    let r = run_check(&fx.env, HASH);
    assert!(r.is_clean(), "{:?}", r.violations);
    assert!(
        r.notes
            .iter()
            .any(|n| n.starts_with(&format!("{}: file is missing", fx.ids[1]))),
        "{:?}",
        r.notes
    );
}

/// A database restored from an older backup does not know the newer recordings: check says so
/// first, and repair refuses rather than unlinking them as strays.
#[test]
fn repair_refuses_a_database_older_than_the_sample_dir() {
    let fx = fixture();
    let backup = tmpdir();
    let backup_db = backup.path().join("db.sqlite3");
    copy_db(&fx.env.db_path(), &backup_db);
    let mut s = start(&fx.env).unwrap();
    let mut newer = Vec::new();
    let mut t = T0 + Duration(3_000_000);
    for run_offset in 0..2 {
        let (id, end) = record(
            &mut s,
            &fx.env.clock,
            fx.stream,
            run_offset,
            t,
            MIN_RUN_SAMPLES,
            300,
        )
        .unwrap();
        newer.push(id);
        t = end;
    }
    s.shutdown().unwrap();
    drop(s);
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", fx.env.db_path().display()));
    }
    copy_db(&backup_db, &fx.env.db_path());
    let files_before = sample_files(&fx.env.fs);

    let r = run_check(&fx.env, PLAIN);
    assert_eq!(r.violations[0].kind, ViolationKind::MetaMismatch, "{r:?}");
    assert!(
        found(&r).contains(&(ViolationKind::AbandonedFile, newer[0].to_string())),
        "{r:?}"
    );
    let err = repair(&mut open_db(&fx.env), &fx.env.fs, &r).unwrap_err();
    assert!(matches!(err, syncer::Error::RepairRefused(_)), "{err}");
    assert!(err.to_string().contains("older backup"), "{err}");
    assert_eq!(sample_files(&fx.env.fs), files_before);
    for id in newer {
        assert!(files_before.contains(&id));
    }
    assert!(open_db(&fx.env).garbage().unwrap().is_empty());
}

/// Another data dir's database: nothing of this dir is touched.
#[test]
fn repair_refuses_another_data_dirs_database() {
    let fx = fixture();
    let other = fixture();
    copy_db(&other.env.db_path(), &fx.env.db_path());
    let files_before = sample_files(&fx.env.fs);
    let r = run_check(&fx.env, PLAIN);
    assert_eq!(r.violations[0].kind, ViolationKind::MetaMismatch, "{r:?}");
    let err = repair(&mut open_db(&fx.env), &fx.env.fs, &r).unwrap_err();
    assert!(matches!(err, syncer::Error::RepairRefused(_)), "{err}");
    assert_eq!(sample_files(&fx.env.fs), files_before);
}

#[test]
fn repair_records_garbage_before_unlinking_and_forgets_it_after_the_dir_sync() {
    let fx = fixture();
    let fs = &fx.env.fs;
    create_file(fs, fx.discarded, b"stray");
    let r = run_check(&fx.env, PLAIN);
    let mut db = open_db(&fx.env);
    let hook_fs = fs.clone();
    db.set_commit_hook(Some(Box::new(move || hook_fs.commit_point())));
    let before = fs.trace().last().unwrap().seq;
    repair(&mut db, fs, &r).unwrap();
    let steps: Vec<OpKind> = fs
        .trace()
        .into_iter()
        .filter(|op| op.seq > before && op.kind.is_crash_point())
        .map(|op| op.kind)
        .collect();
    assert_eq!(
        steps,
        vec![
            OpKind::Commit,
            OpKind::Unlink,
            OpKind::DirSync,
            OpKind::Commit
        ]
    );
}

#[test]
fn repair_never_touches_a_file_with_the_wrong_hash_or_length() {
    let fx = fixture();
    let fs = &fx.env.fs;
    let altered = sample_file_name(fx.ids[0]);
    fs.open(&altered, OpenMode::ReadWrite)
        .unwrap()
        .write_all_at(b"x", 0)
        .unwrap();
    let truncated = sample_file_name(fx.ids[1]);
    fs.open(&truncated, OpenMode::ReadWrite)
        .unwrap()
        .set_len(10)
        .unwrap();
    let before = (fs.read_current(&altered), fs.read_current(&truncated));
    let rows_before = open_db(&fx.env).recordings(None).unwrap();

    let r = run_check(&fx.env, HASH);
    assert_eq!(
        found(&r),
        vec![
            (ViolationKind::LengthMismatch, fx.ids[1].to_string()),
            (ViolationKind::HashMismatch, fx.ids[0].to_string()),
        ]
    );
    let rep = repair(&mut open_db(&fx.env), fs, &r).unwrap();
    assert!(rep.actions.is_empty(), "{:?}", rep.actions);
    assert_eq!(rep.left, r.violations);
    assert_eq!(
        (fs.read_current(&altered), fs.read_current(&truncated)),
        before
    );
    assert_eq!(open_db(&fx.env).recordings(None).unwrap(), rows_before);
}

#[test]
fn repair_rechecks_a_stale_report_before_acting() {
    let fx = fixture();
    let fs = &fx.env.fs;
    // A report claiming a committed recording's file is an orphan, and a present file missing.
    let mut r = CheckReport::default();
    r.violations.push(syncer::check::Violation {
        kind: ViolationKind::OrphanFile,
        subject: fx.ids[0].to_string(),
        message: "stale".to_owned(),
    });
    r.violations.push(syncer::check::Violation {
        kind: ViolationKind::MissingFile,
        subject: fx.ids[1].to_string(),
        message: "stale".to_owned(),
    });
    let rep = repair(&mut open_db(&fx.env), fs, &r).unwrap();
    assert!(rep.actions.is_empty(), "{:?}", rep.actions);
    assert_eq!(rep.left.len(), 2);
    assert_eq!(sample_files(fs), fx.ids);
    assert!(run_check(&fx.env, HASH).is_clean());
}

#[test]
fn read_only_open_sees_the_data_dir_and_refuses_to_write() {
    let fx = fixture();
    let db = Database::open_read_only(&fx.env.db_path()).unwrap();
    let r = check(&db, &fx.env.fs, HASH, &mut |_| {}).unwrap();
    assert!(r.is_clean(), "{:?}", r.violations);
    let mut db = db;
    assert!(db.mark_files_missing(&[fx.ids[0]]).is_err());
}
