//! Startup recovery: everything the syncer does before it serves (DESIGN.md, failure handling).
//!
//! In order:
//! 1. Check the sample dir's meta against the database (the caller has locked the dir).
//! 2. Record this start as a new open, in the meta write order of [`crate::meta`]; if the
//!    database cannot grow, make room first (the reserve file, then the oldest recordings).
//! 3. Turn abandoned files into garbage and advance next ids past them, in one transaction:
//!    ids at or past a stream's next id (opened but never committed before a crash), files of
//!    streams the database does not know, and files below the next id that are neither a
//!    committed recording nor garbage (which no crash of ours produces; logged loudly).
//! 4. Apply retention (a quota may have been lowered while stopped), flush.
//! 5. Unlink all garbage, fsync the dir, and forget the rows in a last flush.
//! 6. Create the reserve file if it is missing (never fatal).
//!
//! Every step is idempotent, so a crash during recovery is recovered by the next start.

use std::collections::BTreeMap;
use std::sync::Arc;

use protocol::clock::Clock;
use protocol::{CompositeId, Time};
use tracing::{info, warn};
use uuid::Uuid;

use crate::db::{Database, FlushBatch};
use crate::error::Error;
use crate::fs::Dir;
use crate::meta::{self, META_FILE_NAME, Open};
use crate::reserve::{self, RESERVE_FILE_NAME};
use crate::store::{Syncer, SyncerOptions};

/// What recovery found and did, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub open: Option<Open>,
    /// Files of known streams at or past the next id.
    pub abandoned: Vec<CompositeId>,
    /// Files of streams the database does not know.
    pub unknown_stream_files: Vec<CompositeId>,
    /// Files below the next id that were neither recordings nor garbage.
    pub orphans: Vec<CompositeId>,
    /// Names in the sample dir that are not nvr's.
    pub foreign_names: Vec<String>,
}

impl<D: Dir> Syncer<D> {
    /// Recovers the sample dir `dir` (already locked) and database `db`, then returns a syncer
    /// ready to serve.
    pub fn start(
        dir: Arc<D>,
        mut db: Database,
        clock: Arc<dyn Clock>,
        options: SyncerOptions,
    ) -> Result<(Syncer<D>, RecoveryReport), Error> {
        // 1-2: verify, then the new open in meta write order.
        let info = db.info()?;
        let mut m = meta::read_meta(&*dir)?;
        m.check_against(info.db_uuid, info.dir_uuid, info.last_complete_open)?;
        let open = Open {
            id: db.next_open_id()?,
            uuid: Uuid::new_v4(),
        };
        m.last_complete_open = info.last_complete_open;
        m.in_progress_open = Some(open);
        meta::rewrite_meta(&*dir, &m).map_err(|e| Error::io("write", META_FILE_NAME, e))?;
        record_open_making_room(&*dir, &mut db, open, clock.realtime())?;
        m.last_complete_open = Some(open);
        m.in_progress_open = None;
        meta::rewrite_meta(&*dir, &m).map_err(|e| Error::io("write", META_FILE_NAME, e))?;
        info!(%open, "database and sample dir opened");

        let mut syncer = Syncer::from_parts(dir, db, clock, open, options)?;
        let mut report = abandon_files(&mut syncer)?;
        report.open = Some(open);

        // 4-5.
        for id in syncer.stream_ids() {
            syncer.enforce_quota_of(id);
        }
        let d = syncer.dir.clone();
        syncer.reserve_present = reserve::exists(&*d);
        syncer.flush_making_room("startup retention")?;
        syncer.collect_garbage()?;
        syncer.flush_making_room("startup: forget collected garbage")?;

        // 6.
        if syncer.options.reserve_bytes > 0 {
            match reserve::ensure(&*syncer.dir, syncer.options.reserve_bytes) {
                Ok(()) => syncer.reserve_present = true,
                Err(e) => warn!(error = %e, "could not create the reserve file; continuing"),
            }
        }
        Ok((syncer, report))
    }
}

/// Runs a database write; if it fails because the disk is full and the reserve file is
/// there, releases the reserve and tries once more. Startup never fails only because the disk
/// is full (DESIGN.md, failure handling).
fn with_room<D: Dir, T>(dir: &D, mut f: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    match f() {
        Err(Error::Db(e)) if e.is_full() => {
            warn!("disk full at startup: releasing the reserve file");
            reserve::release(dir).map_err(|e| Error::io("unlink", RESERVE_FILE_NAME, e))?;
            f()
        }
        r => r,
    }
}

/// Step 2's database write: records the open. While the database cannot grow, it makes room:
/// first the reserve file goes (room on a full disk), then the oldest recording of the stream
/// with the most recordings, one at a time, beyond its quota (room under a `max_page_count`,
/// or on a disk full for other reasons), as a running syncer does when its database is full.
/// A deleted recording's id becomes garbage, its file collected in step 5. (The syncer does
/// not exist yet, so this works on the database directly, one deletion per transaction.)
/// Startup fails for a full database when no recording is left to delete, or when even the
/// deletion cannot commit (a file system too full for its WAL frames).
fn record_open_making_room<D: Dir>(
    dir: &D,
    db: &mut Database,
    open: Open,
    now: Time,
) -> Result<(), Error> {
    let mut reserve_released = false;
    loop {
        let full = match db.record_open(open, now) {
            Err(e) if e.is_full() => e,
            r => return r.map_err(Error::from),
        };
        if !reserve_released {
            warn!("database full at startup: releasing the reserve file");
            reserve::release(dir).map_err(|e| Error::io("unlink", RESERVE_FILE_NAME, e))?;
            reserve_released = true;
            continue;
        }
        let Some(id) = db.oldest_of_the_largest_stream()? else {
            return Err(full.into());
        };
        warn!(recording = %id, "database full at startup: deleting the oldest recording beyond its quota");
        db.commit_batch(&FlushBatch {
            deletions: vec![id],
            ..Default::default()
        })?;
    }
}

/// Step 3.
fn abandon_files<D: Dir>(syncer: &mut Syncer<D>) -> Result<RecoveryReport, Error> {
    let names = syncer
        .dir
        .list()
        .map_err(|e| Error::io("list", "sample dir", e))?;
    let next_ids = syncer.stream_next_ids();
    let committed = syncer.committed_ids();
    let mut report = RecoveryReport::default();
    let mut new_next: BTreeMap<i32, i32> = BTreeMap::new();
    for name in names {
        let Some(id) = CompositeId::parse_file_name(name.as_bytes()) else {
            if name != META_FILE_NAME && name != RESERVE_FILE_NAME {
                warn!(%name, "ignoring a file nvr did not create in the sample dir");
                report.foreign_names.push(name);
            }
            continue;
        };
        if syncer.garbage.contains(id) {
            continue;
        }
        match next_ids.get(&id.stream()) {
            None => report.unknown_stream_files.push(id),
            Some(&next) if id.recording() >= next => {
                let n = new_next.entry(id.stream()).or_insert(next);
                *n = (*n).max(id.recording() + 1);
                report.abandoned.push(id);
            }
            Some(_) if !committed.contains(&id) => {
                warn!(file = %name, "file is neither a committed recording nor garbage");
                report.orphans.push(id);
            }
            Some(_) => {}
        }
    }
    let mut batch = FlushBatch {
        new_garbage: report
            .abandoned
            .iter()
            .chain(&report.unknown_stream_files)
            .chain(&report.orphans)
            .copied()
            .collect(),
        next_recording_ids: new_next.into_iter().collect(),
        ..Default::default()
    };
    batch.new_garbage.sort();
    if !batch.is_empty() {
        info!(
            abandoned = report.abandoned.len(),
            unknown_stream = report.unknown_stream_files.len(),
            orphans = report.orphans.len(),
            "recording abandoned files as garbage"
        );
        let d = syncer.dir.clone();
        with_room(&*d, || syncer.commit_recovery_batch(&batch))?;
    }
    Ok(report)
}
