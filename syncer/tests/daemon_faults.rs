//! Faults at each seam of a running daemon: the real server loop ([`serve_with`]), its real
//! sockets and a real ingest client (`ingest::client::Client` under `ingest::writer::Writer`,
//! fed by a `synthetic:` source at full speed), over the real file system wrapped in a layer
//! that fails one chosen operation with EIO.
//!
//! One test per seam; each checks that the recording hit is handled as DESIGN.md says, that
//! the others are committed, that `nvr check --hash` is clean afterwards, and that the fault is
//! logged exactly once, naming its recording (the log is captured with a test subscriber). The
//! write seam belongs to the ingest: it writes the sample bytes into the descriptor the syncer
//! handed out, so its fault is injected into the writer's descriptor.
//!
//! The last test fills the database (`SQLITE_FULL`, through `PRAGMA max_page_count`) while
//! recording, and starts the daemon again on a database packed to its cap.
//!
//! The tests share one captured log, so they run one at a time ([`serial`]).

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ingest::client::Client;
use ingest::h264::SampleEntry;
use ingest::source::Source;
use ingest::writer::{Close, LinkError, Opened, SyncerLink, Writer, WriterConfig, WriterError};
use nix::errno::Errno;
use protocol::clock::{Clock, RealClock};
use protocol::limits::OpenBudget;
use protocol::messages::{RecordingTimes, SampleReport};
use protocol::wire::Conn;
use protocol::{CompositeId, TIME_UNITS_PER_SEC};
use syncer::check::{CheckOptions, check};
use syncer::db::{Database, RecordingRow, StreamConfig};
use syncer::fs::{Dir, DirFile, FileStat, OpenMode, RealDir};
use syncer::layout::{DataDir, sample_file_name};
use syncer::server::{Seams, ServeOptions, serve_with};
use syncer::{Error, SyncerOptions};

/// A fast source: 30 fps, a key frame every 10 frames, no pacing (synthetic local clock).
const SOURCE: &str = "synthetic:?fps=30&bitrate=200000&gop=10&speed=max";

/// The one camera's stream id (the first added).
const STREAM: i32 = 1;

/// Frames for about six one-second recordings.
const FRAMES: usize = 200;

// ---------------------------------------------------------------------------------------------
// The fault layer.

/// Where a fault is injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seam {
    /// `write(2)` on the ingest's descriptor.
    Write,
    Create,
    FileSync,
    DirSync,
    Unlink,
    Truncate,
    /// SQLite COMMIT (through the database's commit hook).
    Commit,
}

#[derive(Debug)]
struct Fault {
    seam: Seam,
    /// Only operations on this file; `None`: any.
    name: Option<String>,
    /// Fails once, after letting this many matching operations through.
    skip: u32,
}

/// The armed faults and how many were injected, shared by the dir, its files, the commit hook
/// and the ingest's descriptors.
#[derive(Clone, Debug, Default)]
struct Faults(Arc<Mutex<(Vec<Fault>, Vec<Seam>)>>);

impl Faults {
    fn arm(&self, seam: Seam, name: Option<String>, skip: u32) {
        self.lock().0.push(Fault { seam, name, skip });
    }

    /// Fails with EIO if an armed fault matches (disarming it); otherwise lets the operation go.
    fn check(&self, seam: Seam, name: Option<&str>) -> io::Result<()> {
        let mut g = self.lock();
        let (armed, injected) = &mut *g;
        let Some(i) = armed
            .iter()
            .position(|f| f.seam == seam && (f.name.is_none() || f.name.as_deref() == name))
        else {
            return Ok(());
        };
        if armed[i].skip > 0 {
            armed[i].skip -= 1;
            return Ok(());
        }
        armed.remove(i);
        injected.push(seam);
        Err(io::Error::from(Errno::EIO))
    }

    /// The seams where a fault was injected, in order.
    fn injected(&self) -> Vec<Seam> {
        self.lock().1.clone()
    }

    fn lock(&self) -> MutexGuard<'_, (Vec<Fault>, Vec<Seam>)> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The real sample dir, with [`Faults`] in front of each operation (which then does nothing).
#[derive(Debug)]
struct FaultDir {
    inner: RealDir,
    faults: Faults,
}

/// A file of a [`FaultDir`].
#[derive(Debug)]
struct FaultFile {
    file: File,
    name: String,
    faults: Faults,
}

impl FaultDir {
    fn wrap(&self, file: File, name: &str) -> FaultFile {
        FaultFile {
            file,
            name: name.to_owned(),
            faults: self.faults.clone(),
        }
    }
}

impl Dir for FaultDir {
    type File = FaultFile;

    fn create_new(&self, name: &str) -> io::Result<FaultFile> {
        self.faults.check(Seam::Create, Some(name))?;
        Ok(self.wrap(self.inner.create_new(name)?, name))
    }

    fn open(&self, name: &str, mode: OpenMode) -> io::Result<FaultFile> {
        Ok(self.wrap(self.inner.open(name, mode)?, name))
    }

    fn unlink(&self, name: &str) -> io::Result<()> {
        self.faults.check(Seam::Unlink, Some(name))?;
        self.inner.unlink(name)
    }

    fn sync(&self) -> io::Result<()> {
        self.faults.check(Seam::DirSync, None)?;
        self.inner.sync()
    }

    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }

    fn free_bytes(&self) -> io::Result<Option<u64>> {
        self.inner.free_bytes()
    }

    fn is_removed(&self) -> io::Result<bool> {
        self.inner.is_removed()
    }

    fn free_inodes(&self) -> io::Result<Option<u64>> {
        self.inner.free_inodes()
    }
}

impl DirFile for FaultFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        DirFile::write(&mut self.file, buf)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        DirFile::write_all_at(&self.file, buf, offset)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        DirFile::read_at(&self.file, buf, offset)
    }

    fn sync_all(&self) -> io::Result<()> {
        self.faults.check(Seam::FileSync, Some(&self.name))?;
        DirFile::sync_all(&self.file)
    }

    fn stat(&self) -> io::Result<FileStat> {
        DirFile::stat(&self.file)
    }

    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.faults.check(Seam::Truncate, Some(&self.name))?;
        DirFile::set_len(&self.file, len_bytes)
    }
}

impl From<FaultFile> for OwnedFd {
    fn from(f: FaultFile) -> OwnedFd {
        OwnedFd::from(f.file)
    }
}

/// The ingest's [`Client`], whose sample-file descriptors go through [`Faults`] (seam
/// [`Seam::Write`]).
struct FaultLink {
    client: Client,
    faults: Faults,
}

/// An ingest's write-only descriptor of one recording.
struct FaultWriter {
    file: File,
    name: String,
    faults: Faults,
}

impl Write for FaultWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.faults.check(Seam::Write, Some(&self.name))?;
        Write::write(&mut self.file, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl SyncerLink for FaultLink {
    type File = FaultWriter;

    fn add_sample_entry(&mut self, entry: &SampleEntry) -> Result<i32, LinkError> {
        self.client.add_sample_entry(entry)
    }

    fn open(
        &mut self,
        run_offset: i32,
        sample_entry_id: i32,
    ) -> Result<Opened<FaultWriter>, LinkError> {
        let (id, file) = match self.client.open(run_offset, sample_entry_id)? {
            Opened::Recording(id, file) => (id, file),
            Opened::Refused { message } => return Ok(Opened::Refused { message }),
        };
        let w = FaultWriter {
            file,
            name: sample_file_name(id),
            faults: self.faults.clone(),
        };
        Ok(Opened::Recording(id, w))
    }

    fn progress(
        &mut self,
        id: CompositeId,
        samples: Vec<SampleReport>,
        times: RecordingTimes,
        written_bytes: u64,
    ) -> Result<(), LinkError> {
        self.client.progress(id, samples, times, written_bytes)
    }

    fn wait_acknowledged(
        &mut self,
        id: CompositeId,
        written_bytes: u64,
        timeout: Duration,
    ) -> Result<(), LinkError> {
        self.client.wait_acknowledged(id, written_bytes, timeout)
    }

    fn close(&mut self, close: Close) -> Result<(), LinkError> {
        self.client.close(close)
    }

    fn abandon(&mut self, id: CompositeId, end_reason: &str) -> Result<(), LinkError> {
        self.client.abandon(id, end_reason)
    }

    fn wait_accepted(&mut self, id: CompositeId, timeout: Duration) -> Result<(), LinkError> {
        self.client.wait_accepted(id, timeout)
    }
}

// ---------------------------------------------------------------------------------------------
// The captured log.

static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        LOG.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Serializes the tests (they share [`LOG`]) and empties the log.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    static LOGGING: Once = Once::new();
    LOGGING.call_once(|| {
        tracing_subscriber::fmt()
            .with_writer(|| LogWriter)
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .init();
    });
    let g = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    LOG.lock().unwrap_or_else(PoisonError::into_inner).clear();
    g
}

/// Captured lines of `process` (`"syncer"` or `"ingest"`, by their tracing targets) that carry
/// the injected error (EIO).
fn fault_lines(process: &str) -> Vec<String> {
    let log = LOG.lock().unwrap_or_else(PoisonError::into_inner);
    let target = format!(" {process}::");
    String::from_utf8_lossy(&log)
        .lines()
        .filter(|l| l.contains(&target) && l.contains("os error 5"))
        .map(str::to_owned)
        .collect()
}

/// Asserts that exactly one fault was injected, at `seam` (showing the log if not).
fn assert_injected(faults: &Faults, seam: Seam) {
    let injected = faults.injected();
    if injected != [seam] {
        let log = LOG.lock().unwrap_or_else(PoisonError::into_inner);
        panic!(
            "injected {injected:?}, expected [{seam:?}]; log:\n{}",
            String::from_utf8_lossy(&log)
        );
    }
}

/// Asserts that the fault was logged exactly once by `process`, on a line naming `subject`.
fn assert_logged_once(process: &str, subject: &str) {
    let lines = fault_lines(process);
    assert_eq!(
        lines.len(),
        1,
        "the fault should be logged once by the {process}: {lines:#?}"
    );
    assert!(
        lines[0].contains(subject),
        "the log line should name {subject}: {}",
        lines[0]
    );
}

// ---------------------------------------------------------------------------------------------
// The daemon and its ingest.

/// File name of recording `r` of the stream.
fn name(r: i32) -> String {
    sample_file_name(CompositeId::new(STREAM, r))
}

/// A data dir with one camera `a` of quota `retain_bytes`, flushed as soon as saved.
fn data_dir(retain_bytes: i64) -> (tempfile::TempDir, DataDir) {
    let tmp = tempfile::tempdir().unwrap();
    let d = DataDir::new(tmp.path().join("data"));
    d.init().unwrap();
    let mut db = Database::open(&d.db_path()).unwrap();
    let config = StreamConfig {
        source: SOURCE.to_owned(),
        retain_bytes,
        flush_if_sec: 0,
        rotate_sec: 1,
    };
    assert_eq!(db.add_stream("a", &config).unwrap(), STREAM);
    (tmp, d)
}

/// The daemon, serving on a thread of the test.
struct Daemon {
    data_dir: DataDir,
    thread: JoinHandle<Result<(), Error>>,
}

impl Daemon {
    /// Starts serving `d` through `faults` and waits until it is ready.
    fn start(d: &DataDir, faults: &Faults) -> Daemon {
        Daemon::start_capped(d, faults, None)
    }

    /// [`Daemon::start`]; with `db_headroom_pages`, the database may grow only that many pages
    /// past its size at startup (`PRAGMA max_page_count`), after which commits get
    /// `SQLITE_FULL`.
    fn start_capped(d: &DataDir, faults: &Faults, db_headroom_pages: Option<u32>) -> Daemon {
        drop(lock(d));
        let opts = ServeOptions {
            syncer: SyncerOptions {
                reserve_bytes: 64 << 10,
                flush_retry_delay: protocol::Duration(TIME_UNITS_PER_SEC / 5),
                min_free_bytes: 0,
                min_free_inodes: 0,
                open_budget: OpenBudget::new(0, 0),
            },
            shutdown_grace: Duration::from_secs(5),
            holds_relayed: false,
        };
        let seams = Seams {
            wrap_dir: {
                let faults = faults.clone();
                move |inner| FaultDir { inner, faults }
            },
            prepare_db: {
                let faults = faults.clone();
                move |db: &mut Database| {
                    db.set_commit_hook(Some(Box::new(move || faults.check(Seam::Commit, None))));
                    if let Some(headroom) = db_headroom_pages {
                        let cap = db.page_count()? + headroom;
                        assert_eq!(db.set_max_page_count(cap)?, cap);
                    }
                    Ok(())
                }
            },
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let dd = d.clone();
        let thread = std::thread::Builder::new()
            .name("daemon-core".to_owned())
            .spawn(move || serve_with(&dd, opts, seams, move || ready_tx.send(()).unwrap()))
            .unwrap();
        if ready_rx.recv_timeout(Duration::from_secs(20)).is_err() {
            panic!("the daemon did not start: {:?}", thread.join());
        }
        Daemon {
            data_dir: d.clone(),
            thread,
        }
    }

    /// A new ingest connection for camera `a`, as the supervisor would broker it.
    fn ingest(&self, faults: &Faults) -> Ingest {
        let fd = syncer::admin_client::AdminClient::connect(&self.data_dir)
            .unwrap()
            .connect_ingest("a")
            .unwrap();
        let client = Client::connect(Conn::from(UnixStream::from(fd))).unwrap();
        let stream_id = client.hello().stream_id;
        let clock: Arc<dyn Clock> = Arc::new(RealClock);
        let stop = Arc::new(AtomicBool::new(false));
        let link = FaultLink {
            client,
            faults: faults.clone(),
        };
        let config = WriterConfig {
            stream_id,
            rotate_sec: 1,
            accept_timeout: Duration::from_secs(20),
            // As the daemon's: many recordings a second at full speed.
            open_budget: OpenBudget::new(0, 0),
        };
        Ingest {
            writer: Writer::new(link, config, clock.clone(), stop.clone()).unwrap(),
            source: Source::open(SOURCE, clock, stop).unwrap(),
        }
    }

    /// Asks for a graceful stop and returns how serving ended.
    fn stop(self) -> Result<(), Error> {
        syncer::admin_client::AdminClient::connect(&self.data_dir)
            .unwrap()
            .shutdown()
            .unwrap();
        self.join()
    }

    /// Waits for the daemon to return by itself.
    fn join(self) -> Result<(), Error> {
        self.thread.join().expect("the daemon panicked")
    }
}

/// One ingest connection: a source and the writer state machine over the real client.
struct Ingest {
    writer: Writer<FaultLink>,
    source: Source,
}

impl Ingest {
    /// Writes `n` frames; stops at the first error.
    fn frames(&mut self, n: usize) -> Result<(), WriterError> {
        for _ in 0..n {
            let frame = self.source.next_frame().expect("the source runs forever");
            self.writer.write(&frame)?;
        }
        Ok(())
    }

    /// Closes the growing recording and waits until the syncer accepted it.
    fn finish(mut self) {
        self.writer.wait_accepted(Duration::from_secs(20)).unwrap();
        self.writer.close("shutdown").unwrap();
        self.writer.wait_accepted(Duration::from_secs(20)).unwrap();
    }
}

/// Locks the sample dir of a stopped daemon, whose stream workers may still hold it (and its
/// lock) for a moment after it returned.
fn lock(d: &DataDir) -> RealDir {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match d.lock_sample_dir() {
            Ok(dir) => return dir,
            Err(e) => assert!(
                Instant::now() < deadline,
                "the sample dir stays locked: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The committed recordings of a stopped data dir, after `nvr check --hash` found it clean.
fn checked_rows(d: &DataDir) -> Vec<RecordingRow> {
    let dir = lock(d);
    let db = Database::open(&d.db_path()).unwrap();
    let opts = CheckOptions {
        hash: true,
        live: false,
    };
    let report = check(&db, &dir, opts, &mut |_| {}).unwrap();
    assert!(report.is_clean(), "{:#?}", report.violations);
    db.recordings(None).unwrap()
}

fn ids(rows: &[RecordingRow]) -> Vec<i32> {
    rows.iter().map(|r| r.id.recording()).collect()
}

/// Whether the stream's sample dir holds recording `r`'s file.
fn has_file(d: &DataDir, r: i32) -> bool {
    d.sample_dir_path().join(name(r)).exists()
}

/// Waits until the daemon has committed recording `r`.
fn wait_committed(d: &DataDir, r: i32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let recs = syncer::admin_client::AdminClient::connect(d)
            .unwrap()
            .recordings(None)
            .unwrap();
        if recs.iter().any(|x| x.id.recording() >= r) {
            return;
        }
        assert!(Instant::now() < deadline, "recording {r} never committed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// One test per seam.

/// A failed `write(2)` of the ingest wrote nothing: the writer retries it with backoff and
/// nothing is lost (every recording committed, its bytes hashed by the syncer).
#[test]
fn failed_write_is_retried_and_loses_nothing() {
    let _serial = serial();
    let (_tmp, d) = data_dir(1 << 30);
    let faults = Faults::default();
    faults.arm(Seam::Write, Some(name(1)), 5);
    let daemon = Daemon::start(&d, &faults);
    let mut ingest = daemon.ingest(&faults);
    ingest.frames(FRAMES).unwrap();
    ingest.finish();
    daemon.stop().unwrap();

    assert_injected(&faults, Seam::Write);
    let rows = checked_rows(&d);
    let n = rows.len() as i32;
    assert!(n >= 4, "{:?}", ids(&rows));
    assert_eq!(
        ids(&rows),
        (0..n).collect::<Vec<_>>(),
        "a recording was lost"
    );
    let samples: i32 = rows.iter().map(|r| r.video_samples).sum();
    assert_eq!(samples as usize, FRAMES, "a frame was lost");
    assert_logged_once("ingest", &name(1));
    assert!(fault_lines("syncer").is_empty());
}

/// A failed create: the id is discarded (never reused), the ingest's connection is dropped
/// with the error, and its next connection records on.
#[test]
fn failed_create_discards_only_that_id() {
    let _serial = serial();
    let (_tmp, d) = data_dir(1 << 30);
    let faults = Faults::default();
    faults.arm(Seam::Create, Some(name(1)), 0);
    let daemon = Daemon::start(&d, &faults);
    let mut ingest = daemon.ingest(&faults);
    match ingest.frames(FRAMES) {
        Err(WriterError::Link(LinkError::Lost { .. })) => {}
        other => panic!("the failed create should end the connection, got {other:?}"),
    }
    drop(ingest);
    let mut ingest = daemon.ingest(&faults);
    ingest.frames(FRAMES / 2).unwrap();
    ingest.finish();
    daemon.stop().unwrap();

    assert_injected(&faults, Seam::Create);
    let rows = checked_rows(&d);
    let got = ids(&rows);
    assert_eq!(got[..2], [0, 2], "{got:?}");
    assert!(got.len() >= 3, "recording did not go on: {got:?}");
    assert!(!has_file(&d, 1));
    assert_logged_once("syncer", &name(1));
}

/// A failed file fsync (Linux: reported once, the dirty data dropped): that recording is
/// discarded (`io-error`) and never committed; the recordings before and after it are.
#[test]
fn failed_fsync_discards_only_that_recording() {
    let _serial = serial();
    let (_tmp, d) = data_dir(1 << 30);
    let faults = Faults::default();
    faults.arm(Seam::FileSync, Some(name(1)), 0);
    let daemon = Daemon::start(&d, &faults);
    let mut ingest = daemon.ingest(&faults);
    // The syncer tells the writer the close of 1 failed; the connection and the recordings
    // after 1 go on.
    ingest.frames(FRAMES).unwrap();
    ingest.finish();
    daemon.stop().unwrap();

    assert_injected(&faults, Seam::FileSync);
    let rows = checked_rows(&d);
    let got = ids(&rows);
    assert!(
        !got.contains(&1),
        "the recording whose fsync failed was committed: {got:?}"
    );
    assert_eq!(got[0], 0, "{got:?}");
    let after = &got[1..];
    assert_eq!(
        after,
        (2..2 + after.len() as i32).collect::<Vec<_>>(),
        "a recording after the failed one was lost: {got:?}"
    );
    assert!(after.len() >= 2, "recording did not go on: {got:?}");
    assert!(!has_file(&d, 1));
    assert_logged_once("syncer", &name(1));
}

/// A failed directory fsync is fatal: the daemon returns the error at once; started again,
/// recovery makes the data dir consistent, nothing committed is lost, and recording resumes.
#[test]
fn failed_dir_fsync_restarts_through_recovery() {
    let _serial = serial();
    let (_tmp, d) = data_dir(1 << 30);
    let faults = Faults::default();
    let daemon = Daemon::start(&d, &faults);
    let mut ingest = daemon.ingest(&faults);
    ingest.frames(FRAMES / 3).unwrap();
    wait_committed(&d, 0);
    let committed: Vec<i32> = syncer::admin_client::AdminClient::connect(&d)
        .unwrap()
        .recordings(None)
        .unwrap()
        .iter()
        .map(|r| r.id.recording())
        .collect();
    faults.arm(Seam::DirSync, None, 0);
    let _ = ingest.frames(FRAMES);
    match daemon.join() {
        Err(e @ Error::DirSyncFailed(_)) => assert!(e.is_fatal()),
        other => panic!("the daemon should stop on a failed dir fsync, got {other:?}"),
    }
    drop(ingest);
    assert_injected(&faults, Seam::DirSync);
    assert_logged_once("syncer", "fsync of the sample dir failed");

    let daemon = Daemon::start(&d, &Faults::default());
    let mut ingest = daemon.ingest(&faults);
    ingest.frames(FRAMES / 2).unwrap();
    ingest.finish();
    daemon.stop().unwrap();
    let got = ids(&checked_rows(&d));
    for r in &committed {
        assert!(got.contains(r), "committed recording {r} lost: {got:?}");
    }
    assert!(
        got.last() > committed.last(),
        "recording did not resume: {got:?}"
    );
    assert_eq!(
        fault_lines("syncer").len(),
        1,
        "logged again after the restart"
    );
}

/// A failed unlink of a recording the quota deletes is retried with backoff; the file goes.
#[test]
fn failed_unlink_is_retried() {
    let _serial = serial();
    // About three recordings' worth: the oldest ones are deleted while recording.
    let (_tmp, d) = data_dir(80 << 10);
    let faults = Faults::default();
    faults.arm(Seam::Unlink, Some(name(0)), 0);
    let daemon = Daemon::start(&d, &faults);
    let mut ingest = daemon.ingest(&faults);
    ingest.frames(FRAMES).unwrap();
    ingest.finish();
    daemon.stop().unwrap();

    assert_injected(&faults, Seam::Unlink);
    let got = ids(&checked_rows(&d));
    assert!(!got.contains(&0) && !got.is_empty(), "{got:?}");
    assert!(!has_file(&d, 0), "the unlink was not retried");
    assert_logged_once("syncer", &name(0));
}

/// A failed truncate while salvaging a recording whose ingest vanished (its file holds bytes
/// past the last reported sample): that salvage is discarded, nothing else is affected.
#[test]
fn failed_truncate_discards_only_that_salvage() {
    let _serial = serial();
    let (_tmp, d) = data_dir(1 << 30);
    let faults = Faults::default();
    faults.arm(Seam::Truncate, None, 0);
    let daemon = Daemon::start(&d, &faults);
    let mut ingest = daemon.ingest(&faults);
    // Well into the third recording, a few frames after a key frame (so after a progress
    // report): those frames are on disk but unreported.
    while ingest.writer.growing() != Some(CompositeId::new(STREAM, 2)) {
        ingest.frames(1).unwrap();
    }
    ingest.frames(13).unwrap();
    // A takeover, as after a restart of the ingest: the old connection is dropped and what
    // it was writing salvaged.
    let mut second = daemon.ingest(&faults);
    drop(ingest);
    second.frames(FRAMES / 2).unwrap();
    second.finish();
    daemon.stop().unwrap();

    assert_injected(&faults, Seam::Truncate);
    let got = ids(&checked_rows(&d));
    assert_eq!(got[..2], [0, 1], "{got:?}");
    assert!(!got.contains(&2), "{got:?}");
    assert!(got.len() >= 4, "recording did not go on: {got:?}");
    assert_logged_once("syncer", &name(2));
}

/// A failed COMMIT changes nothing and is retried after a delay; nothing is lost.
#[test]
fn failed_commit_is_retried() {
    let _serial = serial();
    let (_tmp, d) = data_dir(1 << 30);
    let faults = Faults::default();
    let daemon = Daemon::start(&d, &faults);
    let mut ingest = daemon.ingest(&faults);
    // Armed once the sample entry is committed, so the first flush of a recording meets it.
    ingest.frames(1).unwrap();
    faults.arm(Seam::Commit, None, 0);
    ingest.frames(FRAMES).unwrap();
    ingest.finish();
    daemon.stop().unwrap();

    assert_injected(&faults, Seam::Commit);
    let rows = checked_rows(&d);
    let n = rows.len() as i32;
    assert!(n >= 4);
    assert_eq!(
        ids(&rows),
        (0..n).collect::<Vec<_>>(),
        "a recording was lost"
    );
    assert_logged_once("syncer", "flush failed");
}

/// The committed recordings, as the daemon reports them now.
fn committed_now(d: &DataDir) -> Vec<i32> {
    syncer::admin_client::AdminClient::connect(d)
        .unwrap()
        .recordings(None)
        .unwrap()
        .iter()
        .map(|r| r.id.recording())
        .collect()
}

/// Lines of the captured log that contain `text`.
fn log_lines(text: &str) -> usize {
    let log = LOG.lock().unwrap_or_else(PoisonError::into_inner);
    String::from_utf8_lossy(&log)
        .lines()
        .filter(|l| l.contains(text))
        .count()
}

/// `SQLITE_FULL` while recording: with its quota far away, the stream gives up its oldest
/// recordings so that commits go on; every recording reported committed is kept unless it is
/// older than every kept one (only the oldest go), and the daemon starts on a database packed
/// to its cap (no free page at all) and records on.
#[test]
fn full_database_deletes_the_oldest_and_recording_goes_on() {
    let _serial = serial();
    let (_tmp, d) = data_dir(1 << 30);
    let faults = Faults::default();
    let mut ledger = std::collections::BTreeSet::new();
    let daemon = Daemon::start_capped(&d, &faults, Some(2));
    let mut ingest = daemon.ingest(&faults);
    for _ in 0..40 {
        ingest.frames(60).unwrap();
        ledger.extend(committed_now(&d));
    }
    let last = ingest.writer.growing().unwrap().recording();
    ingest.finish();
    // Commits go on while the database is full (not only the one of the graceful stop).
    wait_committed(&d, last);
    ledger.extend(committed_now(&d));
    daemon.stop().unwrap();
    assert!(
        log_lines("database full: deleting the oldest recordings") > 0,
        "the database never filled up"
    );
    let got = ids(&checked_rows(&d));
    let first = *got.first().expect("recordings survive");
    assert!(first > 0, "nothing was deleted: {got:?}");
    let newest = *ledger.last().unwrap();
    assert_eq!(newest, last);
    assert_eq!(
        got,
        (first..=newest).collect::<Vec<_>>(),
        "not only the oldest went"
    );
    assert!(
        ledger.range(first..).eq(got.iter()),
        "a recording reported committed is gone"
    );

    // Packed to the last page: startup (which commits its open) and recording still work.
    rusqlite::Connection::open(d.db_path())
        .unwrap()
        .execute_batch("vacuum")
        .unwrap();
    let daemon = Daemon::start_capped(&d, &faults, Some(0));
    let mut ingest = daemon.ingest(&faults);
    ingest.frames(FRAMES).unwrap();
    ingest.finish();
    daemon.stop().unwrap();
    let after = ids(&checked_rows(&d));
    assert!(
        after.last() > Some(&newest),
        "nothing was committed on the packed database: {after:?}"
    );
    assert!(faults.injected().is_empty());
}
