//! Power loss at every crash point of a two-stream workload recorded by the ingest crate's
//! writer.
//!
//! The syncer core and the real [`ingest::writer::Writer`] run in this one process on the
//! simulated file system: each writer talks to the core through [`Link`], which serves its
//! requests with the daemon's request table ([`IngestSession`]) and hands it the syncer's
//! write-only [`SimFile`], so the writer's `write(2)`s of sample bytes are crash points too.
//! Frames come from `synthetic:` sources at `speed=max` (local time = start + pts) paced by one
//! [`SimClock`](protocol::SimClock), so every run is the same.
//!
//! The workload runs startup recovery (over leftovers of an earlier crash), then records on two
//! streams sharing one sample dir: rotations within runs (the writer's, staggered per stream),
//! planned flushes, quota deletions and garbage collection, an ingest killed mid-recording
//! (salvage of its reported prefix, truncating the unreported tail), one killed right after a
//! report (salvage of everything), one killed after writing the first frame of a recording but
//! before reporting it (discard), ingests restarted on fresh connections, and a clean shutdown
//! (writers close, then the syncer). The simulated file system enumerates its crash points
//! (every create, write, truncate, fsync, directory fsync, unlink and SQLite COMMIT). For each
//! one the test replays the workload on a fresh copy of the starting state, stops the machine
//! there, drops what was not durable (and, separately, keeps everything: both are legal
//! outcomes), recovers, and checks:
//!
//! - recovery never refuses to start (a crash leaves only leftovers it understands);
//! - DESIGN.md invariants 1, 2, 5, 6 on the database and files (`check_invariants`);
//! - invariant 3: every recording reported *committed* before the crash is still there, unless
//!   the quota deleted it, which takes the oldest first;
//! - invariant 4: next ids are past every id that left a file or a row, and a new recording
//!   after recovery gets a fresh id;
//! - a killed ingest's recording, if it became a recording, has exactly the samples reported
//!   (DESIGN.md's loss window: only the unreported tail); with none reported it is discarded;
//! - the recovered syncer records (with the writer again) and shuts down cleanly.

mod support;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use ingest::h264::SampleEntry;
use ingest::source::{Source, SourceError};
use ingest::writer::{
    Close, DEFAULT_ACCEPT_TIMEOUT, LinkError, Opened, SyncerLink, Writer, WriterConfig,
    WriterError, end_reason,
};
use protocol::clock::Clock;
use protocol::limits::OpenBudget;
use protocol::messages::{IngestReply, IngestRequest, RecordingTimes, SampleReport};
use protocol::{CompositeId, Duration};
use support::*;
use syncer::db::StreamConfig;
use syncer::durability::PendingSave;
use syncer::fs::DirFile;
use syncer::ingest_session::{Action, IngestSession};
use syncer::sim_fs::{OpKind, PowerLossMode, SimFile, SimFs, catch_crash};
use syncer::{Error, Syncer};

/// The cameras: 6 fps, a key frame every 3 frames (0.5 s), 40 kbit/s, so a key frame is 2000
/// bytes, the others 250, and a 1 s recording (the rotate interval) is 5000 bytes, accounted
/// as two 4 KiB blocks (8 KiB).
const SOURCE: &str = "synthetic:?fps=6&gop=3&bitrate=40000&speed=max";

/// One frame of [`SOURCE`], 90 kHz: the clock advances by this much per step of the workload.
const FRAME: Duration = Duration(15_000);

/// Steps of the enumerated workload (one frame of each stream per step): 5 s of media.
const STEPS: u32 = 30;

/// The step after which stream b's ingest is killed: its frame 10, a non-key frame after the
/// key frame 9 whose report covered frames 7..=9 of its second recording (frames 6..=11), so
/// the salvage keeps frames 6..=9 and truncates frame 10.
const KILL_B_AFTER_STEP: u32 = 10;

/// The step after which stream a's ingest is armed to die after writing the first frame of its
/// next recording, before reporting it: that recording is discarded.
const ARM_A_AFTER_STEP: u32 = 14;

/// The step after which stream b's (second) ingest is armed to die right after its next
/// report: the salvage keeps every sample, the last one with duration 0.
const ARM_B_AFTER_STEP: u32 = 20;

fn streams() -> Vec<(&'static str, StreamConfig)> {
    let rotate_1s = |c: StreamConfig| StreamConfig { rotate_sec: 1, ..c };
    vec![
        // Three recordings fit; the rest rotate out.
        ("a", rotate_1s(config(3 * 8192, 1))),
        ("b", rotate_1s(config(4 * 8192, 1))),
    ]
}

/// What the workload observed before the crash.
#[derive(Default, Debug)]
struct Ledger {
    /// Ids reported committed.
    committed: BTreeSet<CompositeId>,
    /// Recordings growing when their ingest died, with the samples it had reported: if one
    /// becomes a recording, it has exactly those (DESIGN.md's loss window of an ingest crash:
    /// only the unreported tail), so with none it is discarded.
    killed: BTreeMap<CompositeId, u32>,
}

/// Why the workload (or the recording after recovery) failed, short of a simulated crash.
#[derive(Debug, thiserror::Error)]
enum WorkloadError {
    #[error(transparent)]
    Syncer(#[from] Error),
    #[error(transparent)]
    Writer(#[from] WriterError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// The syncer core of the workload, shared by every connection as the daemon's core thread
/// owns it. Single-threaded here: a stream worker's durability work runs in line.
type Core = Rc<RefCell<Syncer<SimFs>>>;

/// The descriptor a writer gets: the syncer's second, write-only [`SimFile`] of the recording,
/// so the writer's bytes go through the simulated file system (each `write` a crash point).
struct SampleFile(SimFile);

impl io::Write for SampleFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        DirFile::write(&mut self.0, buf)
    }

    /// Nothing is buffered: each `write` is a `write(2)`.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One brokered ingest connection, served in process. Requests go through the connection's
/// [`IngestSession`] as in the daemon; a close's save ([`PendingSave`]) runs when the stream's
/// "worker" gets to it: [`Link::run_save`], which the workload calls after each frame (so the
/// writer opens and writes the next recording before the previous one is fsynced, as with a
/// real worker), or when the writer waits for the accept. Cloning shares the connection: the
/// workload keeps a clone to kill the ingest.
#[derive(Clone)]
struct Link(Rc<RefCell<Conn>>);

struct Conn {
    core: Core,
    session: IngestSession,
    /// The close the writer sent whose save has not run yet; accepted once it has.
    saving: Option<PendingSave<SimFile>>,
    state: ConnState,
    /// Ids opened on this connection, oldest first.
    opened: Vec<CompositeId>,
    /// Samples reported in progress of the newest opened recording.
    reported: u32,
    /// The offset through which the syncer acknowledged the newest opened recording.
    acknowledged_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConnState {
    Up,
    /// The ingest dies after writing the first frame of its next recording, before reporting
    /// it (at the open: `Dying`).
    DieAtNextOpen,
    /// Opened the recording it dies with; its first report kills it.
    Dying,
    /// The ingest dies right after its next report reaches the syncer, before writing more.
    DieAfterNextReport,
    /// Killed as armed; every call fails with [`LinkError::Lost`].
    DiedAsArmed,
    /// The connection ended otherwise; every call fails with [`LinkError::Lost`].
    Gone,
}

impl ConnState {
    fn ended(self) -> bool {
        matches!(self, ConnState::DiedAsArmed | ConnState::Gone)
    }
}

fn lost(reason: impl Into<String>) -> LinkError {
    LinkError::Lost {
        reason: reason.into(),
    }
}

/// A syncer error ends the connection (the daemon drops it, or, for a failed save, the crash
/// point being explored stops the workload anyway).
fn failed(e: Error) -> LinkError {
    lost(format!("the syncer failed: {e}"))
}

impl Link {
    fn new(core: &Core, stream_id: i32) -> Link {
        Link(Rc::new(RefCell::new(Conn {
            core: core.clone(),
            session: IngestSession::new(stream_id),
            saving: None,
            state: ConnState::Up,
            opened: Vec::new(),
            reported: 0,
            acknowledged_bytes: 0,
        })))
    }

    /// Ids opened on this connection, oldest first.
    fn opened(&self) -> Vec<CompositeId> {
        self.0.borrow().opened.clone()
    }

    /// The newest recording opened, with the samples reported in its progress (what a
    /// salvage must keep when the ingest dies with it growing).
    fn newest(&self) -> Option<(CompositeId, u32)> {
        let c = self.0.borrow();
        c.opened.last().map(|&id| (id, c.reported))
    }

    fn ended(&self) -> bool {
        self.0.borrow().state.ended()
    }

    fn died_as_armed(&self) -> bool {
        self.0.borrow().state == ConnState::DiedAsArmed
    }

    /// Arms a death: [`ConnState::DieAtNextOpen`] or [`ConnState::DieAfterNextReport`].
    fn arm(&self, death: ConnState) {
        self.0.borrow_mut().state = death;
    }

    /// Kills the ingest as armed and fails the writer's call.
    fn die_as_armed(&self) -> Result<(), LinkError> {
        self.kill("killed as armed").map_err(failed)?;
        self.0.borrow_mut().state = ConnState::DiedAsArmed;
        Err(lost("killed"))
    }

    /// The stream's worker runs the outstanding close's save, if any, and the syncer accepts it.
    fn run_save(&self) -> Result<(), LinkError> {
        self.0.borrow_mut().run_save()
    }

    /// The ingest is killed: the connection ends, the outstanding close completes on its own,
    /// and the growing recording is salvaged (or discarded if nothing was reported).
    fn kill(&self, why: &str) -> Result<(), Error> {
        self.0.borrow_mut().kill(why)
    }

    /// The syncer dies: nothing more reaches it, nothing is salvaged.
    fn sever(&self) {
        let mut c = self.0.borrow_mut();
        c.state = ConnState::Gone;
        c.saving = None;
    }

    /// Serves one request; any error ends the connection, as the daemon does.
    fn request(&self, req: IngestRequest) -> Result<Action<SimFile>, LinkError> {
        let mut c = self.0.borrow_mut();
        if c.state.ended() {
            return Err(lost("the connection ended"));
        }
        let c = &mut *c;
        let result = c.session.handle(&mut *c.core.borrow_mut(), req);
        result.map_err(|e| match c.kill(&format!("bad request: {e}")) {
            Ok(()) => lost(format!("the syncer dropped the connection: {e}")),
            Err(salvage) => failed(salvage),
        })
    }
}

impl Conn {
    fn run_save(&mut self) -> Result<(), LinkError> {
        let Some(pending) = self.saving.take() else {
            return Ok(());
        };
        let id = pending.id();
        let dir = self.core.borrow().dir().clone();
        let result = pending.run(&*dir);
        match self.session.saved(&mut *self.core.borrow_mut(), id, result) {
            Ok(IngestReply::Accepted { .. }) => Ok(()),
            Ok(other) => unreachable!("saved answers Accepted, not {other:?}"),
            Err(e) => Err(failed(e)),
        }
    }

    fn kill(&mut self, why: &str) -> Result<(), Error> {
        self.state = ConnState::Gone;
        if let Some(pending) = self.saving.take() {
            let id = pending.id();
            let dir = self.core.borrow().dir().clone();
            let result = pending.run(&*dir);
            self.session
                .saved(&mut *self.core.borrow_mut(), id, result)?;
        }
        let mut core = self.core.borrow_mut();
        if let Some(pending) = self.session.disconnected(&mut *core, why)? {
            let id = pending.id();
            let result = pending.run(&**core.dir());
            core.finish_save(id, result)?;
        }
        Ok(())
    }
}

impl SyncerLink for Link {
    type File = SampleFile;

    fn add_sample_entry(&mut self, entry: &SampleEntry) -> Result<i32, LinkError> {
        let req = IngestRequest::AddSampleEntry {
            width: entry.width,
            height: entry.height,
            rfc6381_codec: entry.rfc6381_codec.clone(),
            data: entry.data.clone(),
        };
        match self.request(req)? {
            Action::Reply(IngestReply::SampleEntry { id }) => Ok(id),
            other => unreachable!("AddSampleEntry answered with {other:?}"),
        }
    }

    fn open(
        &mut self,
        run_offset: i32,
        sample_entry_id: i32,
    ) -> Result<Opened<SampleFile>, LinkError> {
        let req = IngestRequest::OpenRecording {
            run_offset,
            sample_entry_id,
        };
        match self.request(req)? {
            Action::Opened(id, file) => {
                let mut c = self.0.borrow_mut();
                c.opened.push(id);
                c.reported = 0;
                c.acknowledged_bytes = 0;
                if c.state == ConnState::DieAtNextOpen {
                    c.state = ConnState::Dying;
                }
                Ok(Opened::Recording(id, SampleFile(file)))
            }
            Action::Reply(IngestReply::OpenRefused { message }) => Ok(Opened::Refused { message }),
            other => unreachable!("OpenRecording answered with {other:?}"),
        }
    }

    fn progress(
        &mut self,
        id: CompositeId,
        samples: Vec<SampleReport>,
        times: RecordingTimes,
        written_bytes: u64,
    ) -> Result<(), LinkError> {
        if self.0.borrow().state == ConnState::Dying {
            return self.die_as_armed();
        }
        let n = u32::try_from(samples.len()).expect("a report holds at most u32::MAX samples");
        let req = IngestRequest::Progress {
            id,
            samples,
            times,
            written_bytes,
        };
        match self.request(req)? {
            Action::Reply(IngestReply::Progressed {
                id: i,
                written_bytes: w,
            }) if i == id && w == written_bytes => {}
            other => unreachable!("Progress answered with {other:?}"),
        }
        let mut c = self.0.borrow_mut();
        c.reported += n;
        c.acknowledged_bytes = written_bytes;
        drop(c);
        if self.0.borrow().state == ConnState::DieAfterNextReport {
            return self.die_as_armed();
        }
        Ok(())
    }

    fn close(&mut self, close: Close) -> Result<(), LinkError> {
        let req = IngestRequest::CloseRecording {
            id: close.id,
            samples: close.samples,
            last_sample_duration_90k: close.last_sample_duration_90k,
            times: close.times,
            end_reason: close.end_reason,
            writer_blake3: close.writer_blake3,
        };
        match self.request(req)? {
            Action::Save(pending) => {
                let mut c = self.0.borrow_mut();
                assert!(c.saving.is_none(), "the writer sent two closes at once");
                c.saving = Some(pending);
                Ok(())
            }
            other => unreachable!("CloseRecording answered with {other:?}"),
        }
    }

    fn abandon(&mut self, id: CompositeId, end_reason: &str) -> Result<(), LinkError> {
        let req = IngestRequest::AbandonRecording {
            id,
            end_reason: end_reason.to_owned(),
        };
        match self.request(req)? {
            Action::Save(pending) => {
                let mut c = self.0.borrow_mut();
                assert!(c.saving.is_none(), "the writer sent two closes at once");
                c.saving = Some(pending);
                Ok(())
            }
            Action::Reply(IngestReply::Accepted { id: i }) if i == id => Ok(()),
            other => unreachable!("AbandonRecording answered with {other:?}"),
        }
    }

    /// The save runs now if it has not yet (the simulated worker never takes long).
    fn wait_accepted(
        &mut self,
        id: CompositeId,
        _timeout: std::time::Duration,
    ) -> Result<(), LinkError> {
        if self.ended() {
            return Err(lost("the connection ended"));
        }
        let saving = self.0.borrow().saving.as_ref().map(PendingSave::id);
        assert!(
            saving.is_none_or(|s| s == id),
            "waiting for {id} while {saving:?} is outstanding"
        );
        self.run_save()
    }

    /// Reports are acknowledged as they are made (the simulated syncer never stalls).
    fn wait_acknowledged(
        &mut self,
        id: CompositeId,
        written_bytes: u64,
        _timeout: std::time::Duration,
    ) -> Result<(), LinkError> {
        if self.ended() {
            return Err(lost("the connection ended"));
        }
        let c = self.0.borrow();
        assert!(
            c.opened.last() == Some(&id) && c.acknowledged_bytes >= written_bytes,
            "waiting for {id} through {written_bytes}; acknowledged {}",
            c.acknowledged_bytes
        );
        Ok(())
    }
}

/// One ingest process: a source, the real writer, and a handle on its connection.
struct Ingest {
    source: Source,
    writer: Writer<Link>,
    link: Link,
}

impl Ingest {
    /// Starts an ingest on a fresh connection for `stream_id`, as the supervisor does; its
    /// source starts at pts 0 with local time = the clock's realtime now + pts.
    fn start(core: &Core, env: &Env, stream_id: i32) -> Result<Ingest, WorkloadError> {
        let clock = Arc::new(env.clock.clone()) as Arc<dyn Clock>;
        let stop = Arc::new(AtomicBool::new(false));
        let source = Source::open(SOURCE, clock.clone(), stop.clone())?;
        let rotate_sec = core
            .borrow()
            .stream_rows()
            .iter()
            .find(|r| r.id == stream_id)
            .expect("the stream exists")
            .config
            .rotate_sec;
        let link = Link::new(core, stream_id);
        let config = WriterConfig {
            stream_id,
            rotate_sec,
            accept_timeout: DEFAULT_ACCEPT_TIMEOUT,
            // As the simulated syncer's (`support::options`).
            open_budget: OpenBudget::new(0, 0),
        };
        let writer = Writer::new(link.clone(), config, clock, stop)?;
        Ok(Ingest {
            source,
            writer,
            link,
        })
    }

    /// Writes the next frame, then lets the stream's worker run the close it may have sent.
    /// Returns whether the ingest is still alive (an armed death may have killed it).
    fn step(&mut self) -> Result<bool, WorkloadError> {
        let frame = self
            .source
            .next_frame()
            .expect("a source without its stop flag set never ends");
        match self.writer.write(&frame) {
            Err(WriterError::Link(LinkError::Lost { .. })) if self.link.died_as_armed() => {
                Ok(false)
            }
            r => {
                r?;
                self.link.run_save()?;
                Ok(true)
            }
        }
    }

    /// Closes the growing recording (end reason `shutdown`) and waits for the accept, as on
    /// SIGTERM.
    fn stop(mut self) -> Result<(), WorkloadError> {
        self.writer.close(end_reason::SHUTDOWN)?;
        self.writer.wait_accepted(DEFAULT_ACCEPT_TIMEOUT)?;
        Ok(())
    }
}

/// Runs due planned flushes until none is due at the current time; returns the ids committed.
fn poll_core(core: &Core) -> Result<Vec<CompositeId>, Error> {
    poll(&mut core.borrow_mut())
}

/// The starting state: two streams with committed recordings, plus what a crash leaves
/// behind: a growing recording's file with reported samples (abandoned: the syncer died) and
/// garbage rows of quota deletions whose files still exist.
fn base_state() -> (Env, Vec<i32>) {
    let (env, ids) = init_env(&streams());
    let core: Core = Rc::new(RefCell::new(start(&env).unwrap()));
    let mut a = Ingest::start(&core, &env, ids[0]).unwrap();
    let mut b = Ingest::start(&core, &env, ids[1]).unwrap();
    // 4.5 s: a's first (staggered) recording and three more, over its quota of three.
    for _ in 0..27 {
        assert!(a.step().unwrap() && b.step().unwrap());
        env.clock.advance(FRAME);
    }
    a.stop().unwrap();
    // Commit (which moves a's oldest recording to garbage) but crash before unlinking it, while
    // b's recording grows.
    core.borrow_mut().flush("base").unwrap();
    b.link.sever();
    drop((b, core));
    assert!(!open_db(&env).garbage().unwrap().is_empty());
    let fs = env.fs.power_loss(PowerLossMode::KeepAll);
    (env.fork(fs), ids)
}

/// The enumerated workload. Everything it learns goes into `ledger` as it happens.
fn workload(env: &Env, ids: &[i32], ledger: &mut Ledger) -> Result<(), WorkloadError> {
    let core: Core = Rc::new(RefCell::new(start(env)?));
    let mut ingests = [
        Ingest::start(&core, env, ids[0])?,
        Ingest::start(&core, env, ids[1])?,
    ];
    for step in 0..STEPS {
        for i in 0..ingests.len() {
            if !ingests[i].step()? {
                ledger.killed.extend(ingests[i].link.newest());
                ingests[i] = Ingest::start(&core, env, ids[i])?;
            }
        }
        if step == KILL_B_AFTER_STEP {
            ledger.killed.extend(ingests[1].link.newest());
            ingests[1].link.kill("killed mid-recording")?;
            ingests[1] = Ingest::start(&core, env, ids[1])?;
        }
        if step == ARM_A_AFTER_STEP {
            ingests[0].link.arm(ConnState::DieAtNextOpen);
        }
        if step == ARM_B_AFTER_STEP {
            ingests[1].link.arm(ConnState::DieAfterNextReport);
        }
        env.clock.advance(FRAME);
        ledger.committed.extend(poll_core(&core)?);
    }
    for ingest in ingests {
        ingest.stop()?;
    }
    let c = core.borrow_mut().shutdown()?;
    ledger.committed.extend(c.into_iter().flat_map(|c| c.ids));
    Ok(())
}

/// Records about a second on every stream after recovery (one rotation for most), stops the
/// ingests and the syncer; returns the ids opened per stream.
fn record_after_recovery(
    core: &Core,
    env: &Env,
    ids: &[i32],
) -> Result<BTreeMap<i32, Vec<CompositeId>>, WorkloadError> {
    let mut ingests = Vec::new();
    for &id in ids {
        ingests.push(Ingest::start(core, env, id)?);
    }
    for _ in 0..8 {
        for ingest in &mut ingests {
            assert!(ingest.step()?, "nothing is armed to kill this ingest");
        }
        env.clock.advance(FRAME);
        poll_core(core)?;
    }
    let mut opened = BTreeMap::new();
    for (&id, ingest) in ids.iter().zip(ingests) {
        opened.insert(id, ingest.link.opened());
        ingest.stop()?;
    }
    core.borrow_mut().shutdown()?;
    Ok(opened)
}

/// Checks one recovered state; returns violations.
fn check_recovered(
    env: &Env,
    ids: &[i32],
    ledger: &Ledger,
    files_before: &BTreeSet<CompositeId>,
) -> Vec<String> {
    let mut v = Vec::new();
    let s = match start_with_report(env) {
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
    let rows: BTreeMap<CompositeId, i32> = s
        .db()
        .recordings(None)
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.video_samples))
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
    // Salvage keeps exactly what was reported.
    for (id, &reported) in &ledger.killed {
        if let Some(&samples) = rows.get(id)
            && i64::from(samples) != i64::from(reported)
        {
            v.push(format!(
                "recording {id} of a killed ingest has {samples} samples; {reported} were reported"
            ));
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
    let core: Core = Rc::new(RefCell::new(s));
    match record_after_recovery(&core, env, ids) {
        Ok(opened) => {
            for id in opened.values().flatten() {
                if id.recording() < next[&id.stream()] {
                    v.push(format!("new recording {id} reuses an id"));
                }
            }
        }
        Err(e) => v.push(format!("recording after recovery failed: {e}")),
    }
    v.extend(check_invariants(&env.fs, core.borrow().db()));
    v
}

fn copy_of(fs: &SimFs) -> SimFs {
    fs.power_loss(PowerLossMode::KeepAll)
}

#[test]
fn power_loss_at_every_crash_point_keeps_every_invariant() {
    let (base, ids) = base_state();

    // A full run without a crash counts the crash points and shows the workload does what it
    // should: quota deletions and gc (unlinks), a salvage that truncates, kills.
    let full = base.fork(copy_of(&base.fs));
    let mut ledger = Ledger::default();
    workload(&full, &ids, &mut ledger).unwrap();
    let total = full.fs.crash_points_seen();
    assert!(
        total > 100,
        "the workload should be substantial, got {total}"
    );
    assert!(!ledger.committed.is_empty());
    // Three kills: one before any report (discarded), two after (salvaged and committed).
    assert_eq!(ledger.killed.len(), 3, "{ledger:?}");
    for (id, &reported) in &ledger.killed {
        assert_eq!(
            reported == 0,
            !ledger.committed.contains(id),
            "recording {id} of a killed ingest, {reported} samples reported, should be \
             committed exactly when it reported any: {ledger:?}"
        );
    }
    let trace = full.fs.trace();
    for kind in [OpKind::SetLen, OpKind::Unlink, OpKind::Commit] {
        assert!(trace.iter().any(|op| op.kind == kind), "no {kind:?} op");
    }
    let clean = check_recovered(
        &full.fork(copy_of(&full.fs)),
        &ids,
        &ledger,
        &sample_files(&full.fs).into_iter().collect(),
    );
    assert!(clean.is_empty(), "{clean:?}");

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
        "power loss (ingest writer): explored {total} crash points x 2 power-loss outcomes = \
         {explored} recoveries, {} violations",
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
    // b's growing recording was abandoned with the syncer: its file is past b's next id.
    let abandoned = sample_files(&base.fs)
        .into_iter()
        .filter(|id| id.stream() == ids[1])
        .max()
        .unwrap();
    let s = start(&base).unwrap();
    // Recovery made the abandoned file garbage and removed it, and collected the garbage row
    // of a's deleted recording.
    assert!(s.db().garbage().unwrap().is_empty());
    assert!(!recording_ids(s.db()).contains(&abandoned));
    assert_eq!(sample_files(&base.fs), recording_ids(s.db()));
    let b = s
        .stream_rows()
        .into_iter()
        .find(|r| r.id == ids[1])
        .unwrap();
    assert!(b.next_recording_id > abandoned.recording());
}
