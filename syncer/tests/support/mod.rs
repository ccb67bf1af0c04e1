//! Test support: a simulated environment (SimFs + SimClock + a database in a temp dir), a
//! writer that does what an ingest process does, and an invariant checker.

#![allow(dead_code)] // Each test binary uses its own subset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use protocol::clock::{Clock, SimClock};
use protocol::messages::{RecordingTimes, SampleReport};
use protocol::retry::retry;
use protocol::sample_index::summarize;
use protocol::{CompositeId, Duration, TIME_UNITS_PER_SEC, Time};
use syncer::db::{Database, StreamConfig};
use syncer::fs::{Dir, DirFile};
use syncer::layout::sample_file_name;
use syncer::recovery::RecoveryReport;
use syncer::retention::round_up;
use syncer::sim_fs::{SimFile, SimFs};
use syncer::{CloseRequest, Error, Syncer, SyncerOptions};

/// 2026-11-27T00:00:00Z in 90 kHz units.
pub const T0: Time = Time(1_795_737_600 * TIME_UNITS_PER_SEC);

/// Frame duration used by the writers: 30 fps.
pub const FRAME_90K: i64 = 3000;

/// Samples of [`FRAME_90K`] in the shortest recording a run may go on from
/// (`limits::MIN_RECORDING_DURATION_90K`, counting the last sample's duration): 30.
pub const MIN_RUN_SAMPLES: u32 = (syncer::limits::MIN_RECORDING_DURATION_90K / FRAME_90K) as u32;

pub struct Env {
    pub fs: SimFs,
    pub clock: SimClock,
    pub tmp: tempfile::TempDir,
}

impl Env {
    pub fn db_path(&self) -> PathBuf {
        self.tmp.path().join("db.sqlite3")
    }

    /// A copy of this environment: same disk contents (as they would be after `mode` power
    /// loss), same database file, a fresh clock at the same time.
    pub fn fork(&self, fs: SimFs) -> Env {
        let tmp = tmpdir();
        copy_db(&self.db_path(), &tmp.path().join("db.sqlite3"));
        let clock = SimClock::new(self.clock.realtime());
        Env { fs, clock, tmp }
    }
}

/// A temp dir for databases, in memory when the machine has /dev/shm: commits fsync.
pub fn tmpdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(t) = tempfile::tempdir_in(shm)
    {
        return t;
    }
    tempfile::tempdir().unwrap()
}

/// Copies a closed database (and its WAL, if any) to `to`.
pub fn copy_db(from: &Path, to: &Path) {
    for suffix in ["", "-wal"] {
        let mut f = from.as_os_str().to_owned();
        f.push(suffix);
        let mut t = to.as_os_str().to_owned();
        t.push(suffix);
        if Path::new(&f).exists() {
            std::fs::copy(&f, &t).unwrap();
        }
    }
}

pub fn config(retain_bytes: i64, flush_if_sec: u32) -> StreamConfig {
    StreamConfig {
        source: "synthetic:".to_owned(),
        retain_bytes,
        flush_if_sec,
        rotate_sec: 2,
    }
}

pub fn options() -> SyncerOptions {
    SyncerOptions {
        reserve_bytes: 64 << 10,
        // Only matters where a test gives the SimFs a capacity.
        min_free_bytes: 96 << 10,
        // Simulated writers open recordings many times a (simulated) second; the budget has
        // its own tests (tests/ingest_session.rs).
        open_budget: syncer::limits::OpenBudget::new(0, 0),
        ..Default::default()
    }
}

/// Initializes a data dir on a fresh SimFs with the given streams; returns the environment
/// (the syncer is stopped again) and the stream ids.
pub fn init_env(streams: &[(&str, StreamConfig)]) -> (Env, Vec<i32>) {
    let env = Env {
        fs: SimFs::new(),
        clock: SimClock::new(T0),
        tmp: tmpdir(),
    };
    syncer::layout::init(&env.fs, &env.db_path()).unwrap();
    let mut s = start(&env).unwrap();
    let ids: Vec<i32> = streams
        .iter()
        .map(|(name, c)| s.add_stream(name, c.clone()).unwrap())
        .collect();
    // One sample entry per stream, whose id is the stream's ([`entry_of`]).
    for &stream in &ids {
        let entry = s.add_sample_entry(stream, &[], 640, 480, "avc1.4d401e", b"entry");
        assert_eq!(entry.unwrap(), entry_of(stream));
    }
    s.shutdown().unwrap();
    (env, ids)
}

/// The sample entry [`init_env`] added for `stream`.
pub fn entry_of(stream: i32) -> i32 {
    stream
}

/// Opens the database with COMMIT wired to the SimFs as a crash point, and starts the syncer.
pub fn start(env: &Env) -> Result<Syncer<SimFs>, Error> {
    start_with_report(env).map(|(s, _)| s)
}

/// [`start`], also returning what recovery found.
pub fn start_with_report(env: &Env) -> Result<(Syncer<SimFs>, RecoveryReport), Error> {
    start_with_options(env, options())
}

/// [`start_with_report`] with other options.
pub fn start_with_options(
    env: &Env,
    options: SyncerOptions,
) -> Result<(Syncer<SimFs>, RecoveryReport), Error> {
    let mut db = Database::open(&env.db_path())?;
    let fs = env.fs.clone();
    db.set_commit_hook(Some(Box::new(move || fs.commit_point())));
    Syncer::start(
        Arc::new(env.fs.clone()),
        db,
        Arc::new(env.clock.clone()) as Arc<dyn Clock>,
        options,
    )
}

/// Deterministic content of sample `n` of recording `id`.
pub fn sample_bytes(id: CompositeId, n: u32, len: usize) -> Vec<u8> {
    let seed = blake3::hash(format!("{id}/{n}").as_bytes());
    seed.as_bytes().iter().copied().cycle().take(len).collect()
}

/// Does what an ingest's writer does: writes samples into the descriptor the syncer handed
/// out (retrying failed writes with backoff: nothing was written), then reports them.
#[derive(Debug)]
pub struct Writer {
    pub id: CompositeId,
    file: SimFile,
    hasher: blake3::Hasher,
    next_pts_90k: i64,
    samples: u32,
    unreported: Vec<SampleReport>,
    pub start: Time,
    local_time_delta_90k: i64,
    bytes: u64,
}

impl Writer {
    pub fn open(
        s: &mut Syncer<SimFs>,
        stream: i32,
        run_offset: i32,
        start: Time,
    ) -> Result<Writer, Error> {
        let (id, file) = s.open_recording(stream, run_offset, entry_of(stream))?;
        Ok(Writer {
            id,
            file,
            hasher: blake3::Hasher::new(),
            next_pts_90k: 0,
            samples: 0,
            unreported: Vec::new(),
            start,
            local_time_delta_90k: 0,
            bytes: 0,
        })
    }

    /// The local time delta the next report or close claims.
    pub fn set_local_time_delta(&mut self, delta_90k: i64) {
        self.local_time_delta_90k = delta_90k;
    }

    /// Writes one sample of `len` bytes (key frame every 10th).
    pub fn write_sample(&mut self, clock: &dyn Clock, len: usize) {
        let data = sample_bytes(self.id, self.samples, len);
        let mut rest = &data[..];
        while !rest.is_empty() {
            let n = retry(
                clock,
                &|| false,
                |_: &std::io::Error, _| {},
                || self.file.write(rest),
            )
            .unwrap();
            rest = &rest[n..];
        }
        self.hasher.update(&data);
        self.unreported.push(SampleReport {
            pts_90k: self.next_pts_90k,
            bytes: len as u32,
            is_key: self.samples.is_multiple_of(10),
        });
        self.samples += 1;
        self.next_pts_90k += FRAME_90K;
        self.bytes += len as u64;
    }

    fn times(&self, media_90k: i64) -> RecordingTimes {
        RecordingTimes {
            start: self.start,
            wall_duration_90k: media_90k as i32,
            local_time_delta_90k: self.local_time_delta_90k,
        }
    }

    /// Reports the unreported samples, ending at the bytes written so far (every one of them).
    pub fn report(&mut self, s: &mut Syncer<SimFs>) -> Result<(), Error> {
        let samples = std::mem::take(&mut self.unreported);
        let media = self.next_pts_90k - FRAME_90K;
        let acknowledged = s.progress(self.id, &samples, self.times(media), self.bytes)?;
        assert_eq!(
            acknowledged, self.bytes,
            "the report's offset is acknowledged"
        );
        Ok(())
    }

    /// Closes with the last sample's duration known; returns the end time (the next
    /// recording of the run starts there).
    pub fn close(mut self, s: &mut Syncer<SimFs>) -> Result<Time, Error> {
        let media = self.next_pts_90k;
        let req = CloseRequest {
            samples: std::mem::take(&mut self.unreported),
            last_sample_duration_90k: Some(FRAME_90K as i32),
            times: self.times(media),
            end_reason: Some("rotation".to_owned()),
            writer_blake3: *self.hasher.finalize().as_bytes(),
        };
        s.close_recording(self.id, req)?;
        Ok(self.start + Duration(media))
    }
}

/// Records one whole recording of `samples` samples of `len` bytes, reporting every 5.
pub fn record(
    s: &mut Syncer<SimFs>,
    clock: &SimClock,
    stream: i32,
    run_offset: i32,
    start: Time,
    samples: u32,
    len: usize,
) -> Result<(CompositeId, Time), Error> {
    let mut w = Writer::open(s, stream, run_offset, start)?;
    for i in 0..samples {
        w.write_sample(clock, len);
        clock.advance(Duration(FRAME_90K));
        if i % 5 == 4 {
            w.report(s)?;
        }
    }
    let id = w.id;
    let end = w.close(s)?;
    Ok((id, end))
}

/// Runs due planned flushes until none is due at the current time.
pub fn poll(s: &mut Syncer<SimFs>) -> Result<Vec<CompositeId>, Error> {
    let mut out = Vec::new();
    loop {
        let c = s.poll()?;
        out.extend(c.into_iter().flat_map(|c| c.ids));
        if !s.poll_due() {
            return Ok(out);
        }
    }
}

/// Checks DESIGN.md's invariants 1, 2, 5 and 6 on a stopped data dir (after recovery): returns
/// each violation as a sentence naming the recording or file.
pub fn check_invariants(fs: &SimFs, db: &Database) -> Vec<String> {
    let mut v = Vec::new();
    let rows = db.recordings(None).unwrap();
    let streams: BTreeMap<i32, _> = db
        .streams()
        .unwrap()
        .into_iter()
        .map(|s| (s.id, s))
        .collect();
    let names = fs.names();
    let garbage = db.garbage().unwrap();
    for r in &rows {
        let name = sample_file_name(r.id);
        match fs.read_current(&name) {
            None => v.push(format!("recording {} has no file", r.id)),
            Some(data) => {
                if data.len() as i64 != r.sample_file_bytes {
                    v.push(format!(
                        "recording {}: file has {} bytes, row says {}",
                        r.id,
                        data.len(),
                        r.sample_file_bytes
                    ));
                }
                if blake3::hash(&data).as_bytes() != &r.blake3 {
                    v.push(format!("recording {}: blake3 mismatch", r.id));
                }
            }
        }
        match db.video_index(r.id).unwrap().map(|i| summarize(&i)) {
            Some(Ok(sum)) => {
                if sum.total_bytes as i64 != r.sample_file_bytes
                    || sum.samples as i32 != r.video_samples
                    || sum.media_duration_90k != i64::from(r.media_duration_90k)
                {
                    v.push(format!("recording {}: index disagrees with its row", r.id));
                }
            }
            Some(Err(e)) => v.push(format!("recording {}: index does not decode: {e}", r.id)),
            None => v.push(format!("recording {}: no index", r.id)),
        }
        let next = streams.get(&r.id.stream()).map(|s| s.next_recording_id);
        if next.is_none_or(|n| r.id.recording() >= n) {
            v.push(format!(
                "recording {} is at or past its stream's next id",
                r.id
            ));
        }
    }
    for n in &names {
        if let Some(id) = CompositeId::parse_file_name(n.as_bytes())
            && !rows.iter().any(|r| r.id == id)
            && !garbage.contains(&id)
        {
            v.push(format!(
                "file {n} is neither a committed recording nor garbage"
            ));
        }
    }
    for w in rows.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if a.id.stream() == b.id.stream()
            && b.run_offset == a.run_offset + 1
            && b.id.recording() == a.id.recording() + 1
            && b.start != a.start + Duration(i64::from(a.wall_duration_90k))
        {
            v.push(format!(
                "recording {} does not start where {} ended",
                b.id, a.id
            ));
        }
    }
    for s in streams.values() {
        let used: i64 = rows
            .iter()
            .filter(|r| r.id.stream() == s.id)
            .map(|r| round_up(r.sample_file_bytes))
            .sum();
        if used > s.config.retain_bytes {
            v.push(format!(
                "stream {}: {used} bytes committed exceed quota {}",
                s.name, s.config.retain_bytes
            ));
        }
    }
    v
}

/// Ids of the committed recordings, oldest first.
pub fn recording_ids(db: &Database) -> Vec<CompositeId> {
    db.recordings(None).unwrap().iter().map(|r| r.id).collect()
}

/// Opens the database without a hook (for checks).
pub fn open_db(env: &Env) -> Database {
    Database::open(&env.db_path()).unwrap()
}

/// The sample files currently in the directory.
pub fn sample_files(fs: &SimFs) -> Vec<CompositeId> {
    fs.names()
        .iter()
        .filter_map(|n| CompositeId::parse_file_name(n.as_bytes()))
        .collect()
}

pub fn dir_sync(fs: &SimFs) {
    fs.sync().unwrap();
}
