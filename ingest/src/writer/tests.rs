//! Tests of the writer against an in-memory fake syncer that checks every rule of the
//! conversation (DESIGN.md; the syncer's limits) and records what it was told.

use super::*;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use protocol::SimClock;

/// Realtime at the start of every test.
const START: Time = Time(1_700_000_000 * TIME_UNITS_PER_SEC);

/// A frame at 30 fps, 90 kHz.
const FRAME_90K: i64 = 3000;

/// What a sample-file write does instead of succeeding in full.
#[derive(Debug)]
enum Fault {
    /// Fails with this errno, writing nothing.
    Errno(Errno),
    /// Writes at most this many bytes.
    Short(usize),
}

/// What the writer asked of the fake, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    AddEntry(i32),
    Open(CompositeId),
    Progress(CompositeId),
    Close(CompositeId),
    /// A recording given up at its last reported sample.
    Abandon(CompositeId),
    /// An open the fake refused (disk full).
    OpenRefused,
    Wait(CompositeId),
    /// A wait for the syncer to acknowledge the recording through this offset.
    WaitAcknowledged(CompositeId, u64),
}

/// One recording as the fake saw it.
#[derive(Debug)]
struct Rec {
    id: CompositeId,
    run_offset: i32,
    sample_entry_id: i32,
    /// The start the run requires (the previous close's end), for run offsets > 0.
    expected_start: Option<Time>,
    /// The sample file's contents.
    data: Vec<u8>,
    /// Samples reported by progress and close, in order.
    reported: Vec<SampleReport>,
    /// Per progress report: the samples it carried and its times.
    progress: Vec<(Vec<SampleReport>, RecordingTimes)>,
    /// The offset through which the fake acknowledged reports: it acknowledges only when the
    /// writer waits, the latest a real syncer may, so that a writer that writes past the
    /// window without waiting fails the fake's check.
    acknowledged_bytes: u64,
    close: Option<Close>,
    /// The end reason it was abandoned with.
    abandoned: Option<String>,
}

impl Rec {
    fn media_90k(&self) -> i64 {
        let close = self.close.as_ref().expect("closed");
        self.reported.last().unwrap().pts_90k
            + i64::from(close.last_sample_duration_90k.unwrap_or(0))
    }

    fn times(&self) -> RecordingTimes {
        self.close.as_ref().expect("closed").times
    }

    fn end(&self) -> Time {
        let t = self.times();
        t.start + Duration(i64::from(t.wall_duration_90k))
    }
}

#[derive(Debug, Default)]
struct FakeSyncer {
    entries: Vec<SampleEntry>,
    recs: Vec<Rec>,
    /// Index in `recs` of the growing recording.
    growing: Option<usize>,
    /// The close sent and not yet accepted.
    outstanding: Option<CompositeId>,
    /// The last close's run offset, end and media duration, which a continuing open must
    /// follow.
    run_tail: Option<(i32, Time, i64)>,
    events: Vec<Event>,
    /// Applied to the next sample-file writes, one each.
    faults: VecDeque<Fault>,
    /// `wait_accepted` times out instead of accepting.
    never_accept: bool,
    /// `progress` fails as if the connection were lost.
    lose_on_progress: bool,
    /// `wait_acknowledged` times out instead of acknowledging.
    never_acknowledge: bool,
    /// The next this many opens are refused as on a full disk.
    refuse_opens: u32,
}

/// The fake link; clones share one fake syncer.
#[derive(Clone, Debug, Default)]
struct Fake(Rc<RefCell<FakeSyncer>>);

const STREAM: i32 = 7;

/// A sample file of the fake.
struct FakeFile {
    syncer: Rc<RefCell<FakeSyncer>>,
    rec: usize,
}

impl Write for FakeFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut s = self.syncer.borrow_mut();
        let n = match s.faults.pop_front() {
            Some(Fault::Errno(e)) => return Err(io::Error::from_raw_os_error(e as i32)),
            Some(Fault::Short(n)) => n.min(buf.len()),
            None => buf.len(),
        };
        let r = &mut s.recs[self.rec];
        assert!(
            (r.data.len() + n) as u64 <= r.acknowledged_bytes + WRITE_WINDOW_BYTES,
            "recording {} written to {} bytes past the window of {} acknowledged",
            r.id,
            r.data.len() + n,
            r.acknowledged_bytes
        );
        r.data.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Checks new samples the way the syncer does: the first pts is 0, each later one at least
/// `MIN_SAMPLE_DURATION_90K` and at most `i32::MAX` after the previous, sizes in range.
fn check_samples(prev: Option<SampleReport>, new: &[SampleReport]) {
    let mut prev = prev;
    for s in new {
        assert!(
            s.bytes >= 1 && s.bytes as usize <= h264::MAX_FRAME_BYTES,
            "{s:?}"
        );
        match prev {
            None => assert_eq!(s.pts_90k, 0, "first sample's pts"),
            Some(p) => {
                let d = s.pts_90k - p.pts_90k;
                assert!(
                    (MIN_SAMPLE_DURATION_90K..=i64::from(i32::MAX)).contains(&d),
                    "duration {d} from {p:?} to {s:?}"
                );
            }
        }
        prev = Some(*s);
    }
}

/// Checks a time model the way the syncer does at a close.
fn check_times(media_90k: i64, times: &RecordingTimes) {
    let wall = i64::from(times.wall_duration_90k);
    assert!(
        (wall - media_90k).abs() <= media_90k / 2000 + 1,
        "wall {wall} not within 500 ppm of media {media_90k}"
    );
    assert!(
        (0..=MAX_WALL_DURATION_90K).contains(&wall),
        "wall {wall} out of range"
    );
}

impl SyncerLink for Fake {
    type File = FakeFile;

    fn add_sample_entry(&mut self, entry: &SampleEntry) -> Result<i32, LinkError> {
        let mut s = self.0.borrow_mut();
        assert!(
            !s.entries.contains(entry),
            "sample entry added twice on one connection"
        );
        s.entries.push(entry.clone());
        let id = s.entries.len() as i32;
        s.events.push(Event::AddEntry(id));
        Ok(id)
    }

    fn open(
        &mut self,
        run_offset: i32,
        sample_entry_id: i32,
    ) -> Result<Opened<FakeFile>, LinkError> {
        let mut s = self.0.borrow_mut();
        if s.refuse_opens > 0 {
            s.refuse_opens -= 1;
            s.events.push(Event::OpenRefused);
            return Ok(Opened::Refused {
                message: "create: No space left on device".to_owned(),
            });
        }
        assert!(
            (1..=s.entries.len() as i32).contains(&sample_entry_id),
            "unknown sample entry {sample_entry_id}"
        );
        assert_eq!(s.growing, None, "open while a recording is growing");
        let expected_start = if run_offset == 0 {
            None
        } else {
            let (prev_offset, end, media_90k) =
                s.run_tail.expect("run offset > 0 without a previous close");
            assert_eq!(run_offset, prev_offset + 1, "run offsets are consecutive");
            assert!(
                media_90k >= MIN_RECORDING_DURATION_90K,
                "a run continued from a recording of {media_90k} ticks"
            );
            Some(end)
        };
        let id = CompositeId::new(STREAM, s.recs.len() as i32);
        s.recs.push(Rec {
            id,
            run_offset,
            sample_entry_id,
            expected_start,
            data: Vec::new(),
            reported: Vec::new(),
            progress: Vec::new(),
            acknowledged_bytes: 0,
            close: None,
            abandoned: None,
        });
        s.growing = Some(s.recs.len() - 1);
        s.events.push(Event::Open(id));
        let rec = s.recs.len() - 1;
        Ok(Opened::Recording(
            id,
            FakeFile {
                syncer: self.0.clone(),
                rec,
            },
        ))
    }

    fn progress(
        &mut self,
        id: CompositeId,
        samples: Vec<SampleReport>,
        times: RecordingTimes,
        written_bytes: u64,
    ) -> Result<(), LinkError> {
        let mut s = self.0.borrow_mut();
        if s.lose_on_progress {
            return Err(LinkError::Lost {
                reason: "test".to_owned(),
            });
        }
        let i = s.growing.expect("progress without a growing recording");
        let r = &mut s.recs[i];
        assert_eq!(r.id, id, "progress of a recording that is not growing");
        assert!(!samples.is_empty(), "empty progress report");
        check_samples(r.reported.last().copied(), &samples);
        r.reported.extend_from_slice(&samples);
        let reported_bytes: u64 = r.reported.iter().map(|s| u64::from(s.bytes)).sum();
        assert!(
            reported_bytes <= r.data.len() as u64,
            "reported {reported_bytes} bytes, but only {} were written",
            r.data.len()
        );
        assert_eq!(written_bytes, reported_bytes, "the report's offset");
        check_times(r.reported.last().unwrap().pts_90k, &times);
        if let Some(start) = r.expected_start {
            assert_eq!(times.start, start, "progress start abuts the previous end");
        }
        r.progress.push((samples, times));
        s.events.push(Event::Progress(id));
        Ok(())
    }

    fn close(&mut self, close: Close) -> Result<(), LinkError> {
        let mut s = self.0.borrow_mut();
        assert_eq!(
            s.outstanding, None,
            "a close was sent while another was outstanding"
        );
        let i = s.growing.take().expect("close without a growing recording");
        let r = &mut s.recs[i];
        assert_eq!(r.id, close.id, "close of a recording that is not growing");
        check_samples(r.reported.last().copied(), &close.samples);
        r.reported.extend_from_slice(&close.samples);
        assert!(!r.reported.is_empty(), "closed with no samples");
        let reported_bytes: u64 = r.reported.iter().map(|s| u64::from(s.bytes)).sum();
        assert_eq!(
            reported_bytes,
            r.data.len() as u64,
            "file size = index total"
        );
        assert_eq!(
            close.writer_blake3,
            *blake3::hash(&r.data).as_bytes(),
            "writer's blake3"
        );
        if let Some(d) = close.last_sample_duration_90k {
            assert!(i64::from(d) >= MIN_SAMPLE_DURATION_90K, "last duration {d}");
        }
        let media = r.reported.last().unwrap().pts_90k
            + i64::from(close.last_sample_duration_90k.unwrap_or(0));
        check_times(media, &close.times);
        if let Some(start) = r.expected_start {
            assert_eq!(close.times.start, start, "start abuts the previous end");
        }
        let end = close.times.start + Duration(i64::from(close.times.wall_duration_90k));
        let (id, run_offset) = (r.id, r.run_offset);
        r.close = Some(close);
        s.run_tail = Some((run_offset, end, media));
        s.outstanding = Some(id);
        s.events.push(Event::Close(id));
        Ok(())
    }

    fn abandon(&mut self, id: CompositeId, end_reason: &str) -> Result<(), LinkError> {
        let mut s = self.0.borrow_mut();
        assert_eq!(
            s.outstanding, None,
            "an abandon was sent while a close was outstanding"
        );
        let i = s
            .growing
            .take()
            .expect("abandon without a growing recording");
        let r = &mut s.recs[i];
        assert_eq!(r.id, id, "abandon of a recording that is not growing");
        r.abandoned = Some(end_reason.to_owned());
        s.run_tail = None;
        s.outstanding = Some(id);
        s.events.push(Event::Abandon(id));
        Ok(())
    }

    fn wait_accepted(
        &mut self,
        id: CompositeId,
        timeout: std::time::Duration,
    ) -> Result<(), LinkError> {
        let mut s = self.0.borrow_mut();
        assert_eq!(s.outstanding, Some(id), "waiting for a close never sent");
        s.events.push(Event::Wait(id));
        if s.never_accept {
            return Err(LinkError::AcceptTimeout {
                id,
                waited: timeout,
            });
        }
        s.outstanding = None;
        Ok(())
    }

    fn wait_acknowledged(
        &mut self,
        id: CompositeId,
        written_bytes: u64,
        timeout: std::time::Duration,
    ) -> Result<(), LinkError> {
        let mut s = self.0.borrow_mut();
        s.events.push(Event::WaitAcknowledged(id, written_bytes));
        let i = s
            .growing
            .expect("waiting for a window without a growing recording");
        let never_acknowledge = s.never_acknowledge;
        let r = &mut s.recs[i];
        assert_eq!(r.id, id, "waiting for a window of a recording not growing");
        let reported_bytes: u64 = r.reported.iter().map(|s| u64::from(s.bytes)).sum();
        assert!(
            written_bytes <= reported_bytes,
            "waiting for {written_bytes} acknowledged, {reported_bytes} reported"
        );
        if never_acknowledge {
            return Err(LinkError::AcknowledgeTimeout {
                id,
                written_bytes,
                waited: timeout,
            });
        }
        r.acknowledged_bytes = reported_bytes;
        Ok(())
    }
}

/// A writer on a fake syncer, a simulated clock and a stop flag.
struct Harness {
    fake: Fake,
    clock: SimClock,
    stop: Arc<AtomicBool>,
    writer: Writer<Fake>,
    entry: Arc<SampleEntry>,
}

fn clip_entry() -> Arc<SampleEntry> {
    let clip = h264::parse_clip(include_bytes!("../../testdata/clip.h264")).unwrap();
    Arc::new(clip.sample_entries[0].clone())
}

/// Another sample entry, as after a change of video parameters.
fn other_entry(n: u16) -> Arc<SampleEntry> {
    let mut e = (*clip_entry()).clone();
    e.width += n;
    e.data.push(n as u8);
    Arc::new(e)
}

fn harness(stream_id: i32, rotate_sec: u32) -> Harness {
    let fake = Fake::default();
    let clock = SimClock::new(START);
    let stop = Arc::new(AtomicBool::new(false));
    let config = WriterConfig {
        stream_id,
        rotate_sec,
        accept_timeout: std::time::Duration::from_secs(1),
        open_budget: Default::default(),
    };
    let writer = Writer::new(fake.clone(), config, Arc::new(clock.clone()), stop.clone()).unwrap();
    Harness {
        fake,
        clock,
        stop,
        writer,
        entry: clip_entry(),
    }
}

/// A frame whose bytes identify it (key frames bigger), arriving at local time `local`.
fn frame(pts_90k: i64, is_key: bool, local: Time, entry: &Arc<SampleEntry>) -> Frame {
    let len = if is_key { 1000 } else { 100 };
    Frame {
        data: (0..len).map(|i| (pts_90k / 90 + i) as u8).collect(),
        is_key,
        pts_90k,
        local_time: local,
        sample_entry: entry.clone(),
    }
}

/// The local time of pts on a perfect clock.
fn at(pts_90k: i64) -> Time {
    START + Duration(pts_90k)
}

impl Harness {
    /// Writes frames `range` of a constant-rate stream with a key frame every `gop` frames,
    /// frame `i` at pts `i * frame_90k` arriving at `local(pts)`. The writer's clock stands
    /// still (what it measures is its own sleeping); see [`Harness::feed_in_real_time`].
    fn feed(
        &mut self,
        range: std::ops::Range<i64>,
        frame_90k: i64,
        gop: i64,
        local: impl Fn(i64) -> Time,
    ) {
        for i in range {
            let pts = i * frame_90k;
            let f = frame(pts, i % gop == 0, local(pts), &self.entry);
            self.writer.write(&f).unwrap();
        }
    }

    /// [`Harness::feed`] with the writer's clock advancing by `pace` after each frame: a frame
    /// duration for a real-time source (so that its open budget refills as in life).
    fn feed_in_real_time(
        &mut self,
        range: std::ops::Range<i64>,
        frame_90k: i64,
        gop: i64,
        pace: Duration,
        local: impl Fn(i64) -> Time,
    ) {
        for i in range {
            self.feed(i..i + 1, frame_90k, gop, &local);
            self.clock.advance(pace);
        }
    }

    fn s(&self) -> std::cell::Ref<'_, FakeSyncer> {
        self.fake.0.borrow()
    }
}

// ---- rotation ------------------------------------------------------------------------------

#[test]
fn rotation_happens_at_the_first_key_frame_at_or_past_the_interval() {
    let mut h = harness(0, 2); // stream 0: no stagger
    h.feed(0..200, FRAME_90K, 25, at);
    let s = h.s();
    // Key frames at 0, 25, 50, ...; 2 s is 60 frames, so the first key frame at or past it is
    // frame 75, and from there frame 150.
    let sizes: Vec<usize> = s.recs.iter().map(|r| r.reported.len()).collect();
    assert_eq!(&sizes[..2], [75, 75]);
    assert_eq!(s.recs.len(), 3);
    for r in &s.recs[..2] {
        assert!(r.reported[0].is_key);
        let close = r.close.as_ref().unwrap();
        assert_eq!(close.last_sample_duration_90k, Some(3000));
        assert_eq!(close.end_reason, None);
        assert_eq!(r.media_90k(), 75 * FRAME_90K);
    }
    let offsets: Vec<i32> = s.recs.iter().map(|r| r.run_offset).collect();
    assert_eq!(offsets, [0, 1, 2]);
    assert_eq!(s.recs[2].close, None, "the third is still growing");
}

#[test]
fn first_recording_of_a_run_is_shortened_by_the_streams_stagger() {
    let rotate_90k = 10 * TIME_UNITS_PER_SEC;
    let stagger = stagger_90k(1, rotate_90k);
    assert!(stagger > 0 && stagger < rotate_90k, "{stagger}");
    let mut h = harness(1, 10);
    h.feed(0..700, FRAME_90K, 1, at); // every frame a key frame
    let s = h.s();
    let first_target = rotate_90k - stagger;
    let first_media = (first_target + FRAME_90K - 1) / FRAME_90K * FRAME_90K;
    assert_eq!(s.recs[0].media_90k(), first_media);
    assert_eq!(s.recs[1].media_90k(), rotate_90k);
}

#[test]
fn a_stagger_that_leaves_less_than_the_minimum_adds_an_interval_to_the_first_recording() {
    let rotate_90k = 10 * TIME_UNITS_PER_SEC;
    let stream = (1..1000)
        .find(|&id| rotate_90k - stagger_90k(id, rotate_90k) < MIN_RECORDING_DURATION_90K)
        .expect("a stream whose stagger leaves less than the minimum");
    let mut h = harness(stream, 10);
    h.feed(0..1000, FRAME_90K, 1, at); // every frame a key frame
    let s = h.s();
    let first_target = 2 * rotate_90k - stagger_90k(stream, rotate_90k);
    let first_media = (first_target + FRAME_90K - 1) / FRAME_90K * FRAME_90K;
    assert_eq!(s.recs[0].media_90k(), first_media, "stream {stream}");
    assert!(first_media >= MIN_RECORDING_DURATION_90K);
    // The run goes on from it (the fake refuses to continue a shorter one).
    assert_eq!(s.recs[1].run_offset, 1);
    assert_eq!(s.recs[1].media_90k(), rotate_90k);
}

#[test]
fn staggers_spread_streams_across_the_interval() {
    let rotate_90k = 60 * TIME_UNITS_PER_SEC;
    assert_eq!(stagger_90k(0, rotate_90k), 0);
    let mut staggers: Vec<i64> = (1..=8).map(|id| stagger_90k(id, rotate_90k)).collect();
    assert!(staggers.iter().all(|s| (0..rotate_90k).contains(s)));
    staggers.sort();
    let min_gap = staggers.windows(2).map(|w| w[1] - w[0]).min().unwrap();
    assert!(
        min_gap >= rotate_90k / 20,
        "8 streams within {min_gap} ticks of each other: {staggers:?}"
    );
}

/// A source eight times faster than real time with a 1 s interval would open eight
/// recordings a second; the writer keeps within the syncer's open budget instead, postponing
/// rotations (the recordings get longer), so that it never meets a refused open.
#[test]
fn rotations_wait_for_the_open_budget() {
    use protocol::limits::{OPEN_BURST, OPEN_INTERVAL_90K};
    let mut h = harness(0, 1);
    let local_secs = 20;
    let frames = local_secs * 8 * TIME_UNITS_PER_SEC / FRAME_90K;
    // The writer's own clock runs at an eighth of the media's pace, as real time does for
    // such a source (whose frames' local times follow their pts).
    h.feed_in_real_time(0..frames, FRAME_90K, 1, Duration(FRAME_90K / 8), at);
    let s = h.s();
    let opens = s.recs.len() as i64;
    let budget = i64::from(OPEN_BURST) + local_secs * TIME_UNITS_PER_SEC / OPEN_INTERVAL_90K;
    assert!(opens <= budget, "{opens} opens, budget {budget}");
    assert!(opens >= local_secs, "it still rotates: {opens}");
    let later = &s.recs[OPEN_BURST as usize + 1];
    assert!(
        later.media_90k() >= 4 * TIME_UNITS_PER_SEC,
        "{}",
        later.media_90k()
    );
    assert!(
        s.recs
            .iter()
            .all(|r| r.close.as_ref().is_none_or(|c| c.end_reason.is_none()))
    );
}

#[test]
fn rotate_interval_out_of_range_is_refused() {
    for rotate_sec in [0, MAX_ROTATE_SEC + 1] {
        let config = WriterConfig {
            stream_id: 1,
            rotate_sec,
            accept_timeout: DEFAULT_ACCEPT_TIMEOUT,
            open_budget: Default::default(),
        };
        let clock: Arc<dyn Clock> = Arc::new(SimClock::new(START));
        let err = Writer::new(Fake::default(), config, clock, Arc::default())
            .err()
            .unwrap();
        assert!(
            matches!(err, WriterError::BadRotateInterval { .. }),
            "{err}"
        );
    }
}

// ---- time model ----------------------------------------------------------------------------

#[test]
fn first_recording_starts_at_the_least_delayed_frame_uncorrected() {
    let mut h = harness(0, 2);
    let delays = [900, 300, 600, 95, 450, 700];
    let local = |pts: i64| at(pts) + Duration(delays[(pts / FRAME_90K) as usize % delays.len()]);
    h.feed(0..70, FRAME_90K, 30, local);
    let s = h.s();
    let r = &s.recs[0];
    assert_eq!(r.times().start, START + Duration(95));
    assert_eq!(i64::from(r.times().wall_duration_90k), r.media_90k());
    assert_eq!(r.times().local_time_delta_90k, 0);
}

#[test]
fn recordings_of_a_run_abut_exactly() {
    let mut h = harness(3, 1);
    // A jittery, slightly fast local clock.
    let local = |pts: i64| at(pts + pts / 5000) + Duration((pts * 7919) % 1500);
    h.feed_in_real_time(0..400, FRAME_90K, 15, Duration(FRAME_90K), local);
    let s = h.s();
    let closed: Vec<&Rec> = s.recs.iter().filter(|r| r.close.is_some()).collect();
    assert!(closed.len() >= 10, "{}", closed.len());
    for pair in closed.windows(2) {
        assert_eq!(pair[1].times().start, pair[0].end());
        assert_eq!(pair[1].run_offset, pair[0].run_offset + 1);
    }
}

#[test]
fn wall_duration_follows_a_fast_local_clock_by_at_most_500_ppm() {
    let mut h = harness(0, 2);
    h.feed(0..200, FRAME_90K, 30, |pts| at(pts + pts / 100)); // 1% fast
    let s = h.s();
    let (first, second) = (&s.recs[0], &s.recs[1]);
    assert_eq!(
        i64::from(first.times().wall_duration_90k),
        first.media_90k()
    );
    let media = second.media_90k();
    assert_eq!(
        i64::from(second.times().wall_duration_90k),
        media + media / 2000
    );
    assert!(second.times().local_time_delta_90k > media / 2000);
}

#[test]
fn wall_duration_follows_a_slow_local_clock_by_at_most_500_ppm() {
    let mut h = harness(0, 2);
    h.feed(0..200, FRAME_90K, 30, |pts| at(pts - pts / 100)); // 1% slow
    let s = h.s();
    let second = &s.recs[1];
    let media = second.media_90k();
    assert_eq!(
        i64::from(second.times().wall_duration_90k),
        media - media / 2000
    );
    assert!(second.times().local_time_delta_90k < -(media / 2000));
}

#[test]
fn small_differences_from_the_local_clock_are_corrected_in_full() {
    let mut h = harness(0, 2);
    // From the second recording (frame 60 on) every frame arrives 20 ticks later.
    h.feed(0..130, FRAME_90K, 30, |pts| {
        at(pts) + Duration(if pts >= 60 * FRAME_90K { 20 } else { 0 })
    });
    let s = h.s();
    let second = &s.recs[1];
    assert_eq!(second.times().local_time_delta_90k, 20);
    assert_eq!(
        i64::from(second.times().wall_duration_90k),
        second.media_90k() + 20
    );
}

// ---- refused frames ------------------------------------------------------------------------

#[test]
fn pts_not_increasing_is_refused_and_nothing_changes() {
    let mut h = harness(0, 60);
    h.feed(0..2, FRAME_90K, 30, at);
    let e = h.entry.clone();
    for pts in [FRAME_90K, FRAME_90K - 1, -5] {
        let err = h.writer.write(&frame(pts, false, at(pts), &e)).unwrap_err();
        assert!(
            matches!(
                err,
                WriterError::PtsNotIncreasing {
                    prev_pts_90k: FRAME_90K,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.is_frame_refused());
    }
    h.writer
        .write(&frame(2 * FRAME_90K, false, at(6000), &e))
        .unwrap();
    h.writer.close(end_reason::SHUTDOWN).unwrap();
    assert_eq!(h.s().recs[0].reported.len(), 3);
}

#[test]
fn pts_jump_that_does_not_fit_i32_is_refused() {
    let mut h = harness(0, 60);
    h.feed(0..1, FRAME_90K, 30, at);
    let e = h.entry.clone();
    for pts in [i64::from(i32::MAX) + 1, i64::MAX] {
        let err = h.writer.write(&frame(pts, true, at(0), &e)).unwrap_err();
        assert!(matches!(err, WriterError::PtsJump { .. }), "{err}");
    }
    assert_eq!(h.s().recs.len(), 1);
    assert_eq!(
        h.s().events.len(),
        3,
        "entry, open, progress: {:?}",
        h.s().events
    );
}

#[test]
fn sample_shorter_than_the_minimum_is_refused() {
    let mut h = harness(0, 60);
    h.feed(0..1, FRAME_90K, 30, at);
    let e = h.entry.clone();
    let err = h.writer.write(&frame(89, false, at(89), &e)).unwrap_err();
    assert!(
        matches!(
            err,
            WriterError::SampleTooShort {
                duration_90k: 89,
                ..
            }
        ),
        "{err}"
    );
    h.writer.write(&frame(90, false, at(90), &e)).unwrap();
}

#[test]
fn empty_frame_is_refused() {
    let mut h = harness(0, 60);
    let mut f = frame(0, true, at(0), &h.entry);
    f.data.clear();
    let err = h.writer.write(&f).unwrap_err();
    assert!(
        matches!(err, WriterError::BadSampleSize { bytes: 0, .. }),
        "{err}"
    );
    assert!(h.s().events.is_empty());
}

// ---- sample entries ------------------------------------------------------------------------

#[test]
fn sample_entry_change_on_a_key_frame_closes_and_continues_the_run() {
    let mut h = harness(0, 60);
    h.feed(0..40, FRAME_90K, 5, at); // 40 frames: more than MIN_RECORDING_DURATION_90K
    let b = other_entry(1);
    for i in 40..50 {
        let pts = i * FRAME_90K;
        h.writer
            .write(&frame(pts, i % 5 == 0, at(pts), &b))
            .unwrap();
    }
    h.writer.close(end_reason::SHUTDOWN).unwrap();
    let s = h.s();
    assert_eq!(s.entries.len(), 2);
    let (first, second) = (&s.recs[0], &s.recs[1]);
    let close = first.close.as_ref().unwrap();
    assert_eq!(
        close.end_reason.as_deref(),
        Some(end_reason::SAMPLE_ENTRY_CHANGE)
    );
    assert_eq!(close.last_sample_duration_90k, Some(3000));
    assert_eq!((first.sample_entry_id, second.sample_entry_id), (1, 2));
    assert_eq!(second.run_offset, 1);
    assert_eq!(second.reported.len(), 10);
    // Each entry was added once, before its first use.
    let adds: Vec<&Event> = s
        .events
        .iter()
        .filter(|e| matches!(e, Event::AddEntry(_)))
        .collect();
    assert_eq!(adds, [&Event::AddEntry(1), &Event::AddEntry(2)]);
    let add2 = s
        .events
        .iter()
        .position(|e| *e == Event::AddEntry(2))
        .unwrap();
    let open2 = s
        .events
        .iter()
        .position(|e| *e == Event::Open(second.id))
        .unwrap();
    assert!(add2 < open2);
}

#[test]
fn sample_entry_change_before_the_minimum_duration_ends_the_run() {
    let mut h = harness(0, 60);
    h.feed(0..10, FRAME_90K, 5, at); // 10 frames: less than MIN_RECORDING_DURATION_90K
    let b = other_entry(1);
    for i in 10..20 {
        let pts = i * FRAME_90K;
        h.writer
            .write(&frame(pts, i % 5 == 0, at(pts), &b))
            .unwrap();
    }
    let s = h.s();
    let close = s.recs[0].close.as_ref().unwrap();
    assert_eq!(
        close.end_reason.as_deref(),
        Some(end_reason::SAMPLE_ENTRY_CHANGE)
    );
    assert_eq!(close.last_sample_duration_90k, None, "a trailing zero");
    assert_eq!(s.recs[1].run_offset, 0, "a new run");
    assert_eq!(s.recs[1].sample_entry_id, 2);
}

#[test]
fn sample_entry_change_on_a_non_key_frame_is_refused() {
    let mut h = harness(0, 60);
    h.feed(0..3, FRAME_90K, 30, at);
    let b = other_entry(1);
    let err = h
        .writer
        .write(&frame(3 * FRAME_90K, false, at(9000), &b))
        .unwrap_err();
    assert!(
        matches!(
            err,
            WriterError::SampleEntryChangeNotOnKeyFrame { pts_90k: 9000, .. }
        ),
        "{err}"
    );
    assert!(err.is_frame_refused());
    assert_eq!(h.s().recs.len(), 1);
    assert_eq!(h.writer.growing(), Some(h.s().recs[0].id));
}

#[test]
fn too_many_sample_entries_are_refused() {
    let mut h = harness(0, 60);
    for n in 0..=MAX_SAMPLE_ENTRIES_PER_STREAM as u16 {
        let pts = i64::from(n) * FRAME_90K;
        let result = h.writer.write(&frame(pts, true, at(pts), &other_entry(n)));
        if usize::from(n) < MAX_SAMPLE_ENTRIES_PER_STREAM {
            result.unwrap();
        } else {
            assert!(matches!(result, Err(WriterError::TooManySampleEntries)));
        }
    }
    assert_eq!(h.s().entries.len(), MAX_SAMPLE_ENTRIES_PER_STREAM);
}

// ---- closing -------------------------------------------------------------------------------

#[test]
fn close_without_the_next_pts_leaves_a_trailing_zero_and_ends_the_run() {
    let mut h = harness(0, 60);
    h.feed(0..10, FRAME_90K, 30, at);
    h.writer.close(end_reason::SHUTDOWN).unwrap();
    assert_eq!(h.writer.growing(), None);
    h.feed(20..25, FRAME_90K, 30, |pts| at(pts) + Duration(777));
    let s = h.s();
    let first = &s.recs[0];
    let close = first.close.as_ref().unwrap();
    assert_eq!(close.last_sample_duration_90k, None);
    assert_eq!(close.end_reason.as_deref(), Some(end_reason::SHUTDOWN));
    assert_eq!(first.media_90k(), 9 * FRAME_90K);
    let second = &s.recs[1];
    assert_eq!(second.run_offset, 0, "a new run");
    assert_eq!(second.expected_start, None);
}

#[test]
fn dropping_the_writer_closes_the_recording_with_reason_drop() {
    let h = harness(0, 60);
    let fake = h.fake.clone();
    let mut writer = h.writer;
    for i in 0..5 {
        let pts = i * FRAME_90K;
        writer
            .write(&frame(pts, i == 0, at(pts), &h.entry))
            .unwrap();
    }
    drop(writer);
    let s = fake.0.borrow();
    let close = s.recs[0].close.as_ref().unwrap();
    assert_eq!(close.end_reason.as_deref(), Some(end_reason::DROP));
    assert_eq!(close.last_sample_duration_90k, None);
    assert_eq!(s.recs[0].reported.len(), 5);
}

#[test]
fn only_one_close_is_outstanding_at_a_time() {
    let mut h = harness(0, 1);
    h.feed_in_real_time(0..300, FRAME_90K, 30, Duration(FRAME_90K), at);
    let s = h.s();
    let closes: Vec<usize> = (0..s.events.len())
        .filter(|&i| matches!(s.events[i], Event::Close(_)))
        .collect();
    assert!(closes.len() >= 8, "{:?}", s.events);
    for pair in closes.windows(2) {
        let Event::Close(prev) = s.events[pair[0]] else {
            unreachable!()
        };
        assert!(
            s.events[pair[0]..pair[1]].contains(&Event::Wait(prev)),
            "close at event {} sent before {prev} was accepted",
            pair[1]
        );
    }
}

#[test]
fn a_close_not_accepted_in_time_fails_the_next_close() {
    let mut h = harness(0, 1);
    h.fake.0.borrow_mut().never_accept = true;
    h.feed(0..31, FRAME_90K, 30, at); // the first rotation, at frame 30
    let e = h.entry.clone();
    let mut result = Ok(());
    for i in 31..61 {
        let pts = i * FRAME_90K;
        result = h.writer.write(&frame(pts, i % 30 == 0, at(pts), &e));
        if result.is_err() {
            break;
        }
    }
    let err = result.unwrap_err();
    assert!(
        matches!(err, WriterError::Link(LinkError::AcceptTimeout { .. })),
        "{err}"
    );
    // The growing recording was abandoned: nothing more is written or sent.
    let growing = h.s().recs[1].id;
    let err = h
        .writer
        .write(&frame(61 * FRAME_90K, true, at(0), &e))
        .unwrap_err();
    assert!(
        matches!(err, WriterError::Abandoned { id } if id == growing),
        "{err}"
    );
}

#[test]
fn a_lost_link_abandons_the_recording_and_drop_sends_nothing() {
    let mut h = harness(0, 60);
    h.feed(0..3, FRAME_90K, 30, at);
    h.fake.0.borrow_mut().lose_on_progress = true;
    let e = h.entry.clone();
    let err = h
        .writer
        .write(&frame(30 * FRAME_90K, true, at(90_000), &e))
        .unwrap_err();
    assert!(
        matches!(err, WriterError::Link(LinkError::Lost { .. })),
        "{err}"
    );
    let Harness { writer, fake, .. } = h;
    drop(writer);
    assert!(fake.0.borrow().recs[0].close.is_none());
}

// ---- limits --------------------------------------------------------------------------------

#[test]
fn no_key_frame_within_the_maximum_duration_ends_the_run_with_a_trailing_zero() {
    let frame_90k = 9000; // 10 fps
    let mut h = harness(0, MAX_ROTATE_SEC);
    h.feed(0..3001, frame_90k, i64::MAX, at);
    let s = h.s();
    let first = &s.recs[0];
    let close = first.close.as_ref().unwrap();
    assert_eq!(close.end_reason.as_deref(), Some(end_reason::MAX_DURATION));
    assert_eq!(close.last_sample_duration_90k, None);
    // Frame 2999 (pts 26 991 000) would have taken the recording past the maximum.
    assert_eq!(first.reported.len(), 2999);
    assert_eq!(first.media_90k(), 2998 * frame_90k);
    assert!(first.media_90k() <= MEDIA_DURATION_CAP_90K);
    assert_eq!(s.recs[1].run_offset, 0, "the run ended");
}

#[test]
fn a_pts_gap_past_the_maximum_duration_ends_the_run() {
    let mut h = harness(0, 60);
    h.feed(0..3, FRAME_90K, 30, at);
    let e = h.entry.clone();
    let pts = 2 * FRAME_90K + i64::from(i32::MAX);
    h.writer.write(&frame(pts, true, at(pts), &e)).unwrap();
    let s = h.s();
    let close = s.recs[0].close.as_ref().unwrap();
    assert_eq!(close.last_sample_duration_90k, None);
    assert_eq!(close.end_reason.as_deref(), Some(end_reason::MAX_DURATION));
    assert_eq!((s.recs[1].run_offset, s.recs[1].reported.len()), (0, 1));
}

#[test]
fn the_sample_count_limit_rotates_within_the_run() {
    let mut h = harness(0, MAX_ROTATE_SEC);
    let n = i64::from(MAX_SAMPLES_PER_RECORDING);
    let e = h.entry.clone();
    for i in 0..=n {
        let pts = i * MIN_SAMPLE_DURATION_90K;
        let f = Frame {
            data: vec![i as u8],
            is_key: i == 0,
            pts_90k: pts,
            local_time: at(pts),
            sample_entry: e.clone(),
        };
        h.writer.write(&f).unwrap();
    }
    let s = h.s();
    let first = &s.recs[0];
    assert_eq!(first.reported.len(), MAX_SAMPLES_PER_RECORDING as usize);
    let close = first.close.as_ref().unwrap();
    assert_eq!(close.end_reason.as_deref(), Some(end_reason::SIZE_LIMIT));
    assert_eq!(close.last_sample_duration_90k, Some(90));
    assert_eq!(s.recs[1].run_offset, 1);
}

/// A growing recording of one sample at pts 0 and `bytes` bytes, its last sample at
/// `last_pts_90k`, for [`Recording::next_step`].
fn growing_recording(bytes: u64, last_pts_90k: i64) -> Recording<()> {
    Recording {
        id: CompositeId::new(STREAM, 0),
        file: (),
        run_offset: 0,
        sample_entry_id: 1,
        run_start: None,
        rotate_at_90k: MAX_ROTATE_SEC as i64 * TIME_UNITS_PER_SEC,
        first_pts_90k: 0,
        last_pts_90k,
        samples: 2,
        bytes,
        reported_bytes: 0,
        local_start: START,
        unreported: Vec::new(),
        last_report_local: START,
        hasher: blake3::Hasher::new(),
    }
}

#[test]
fn the_bytes_limit_rotates_within_the_run_only_past_the_minimum_duration() {
    let e = clip_entry();
    let near_full = MAX_RECORDING_BYTES - 10;
    // 100 bytes more would pass the limit: before the minimum duration the run ends.
    let short = growing_recording(near_full, FRAME_90K);
    let f = frame(2 * FRAME_90K, false, at(2 * FRAME_90K), &e);
    assert!(matches!(
        short.next_step(&f, 1, true).unwrap(),
        Step::Close {
            next_pts_90k: None,
            reason: Some(end_reason::SIZE_LIMIT)
        }
    ));
    let long = growing_recording(near_full, MIN_RECORDING_DURATION_90K);
    let pts = MIN_RECORDING_DURATION_90K + FRAME_90K;
    let f = frame(pts, false, at(pts), &e);
    assert!(matches!(
        long.next_step(&f, 1, true).unwrap(),
        Step::Close {
            next_pts_90k: Some(p),
            reason: Some(end_reason::SIZE_LIMIT)
        } if p == pts
    ));
}

// ---- write window --------------------------------------------------------------------------

/// Bytes of the big frames [`feed_big_frames`] writes.
const BIG_FRAME_BYTES: u64 = (1 << 20) + 16;

/// A key frame of 1000 bytes, then non-key frames of [`BIG_FRAME_BYTES`] all arriving at the
/// same local time (so that no report falls due by time), until a write fails or `frames` were
/// written.
fn feed_big_frames(h: &mut Harness, frames: i64) -> Result<(), WriterError> {
    let e = h.entry.clone();
    h.writer.write(&frame(0, true, START, &e))?;
    for i in 1..frames {
        h.writer.write(&Frame {
            data: vec![i as u8; BIG_FRAME_BYTES as usize],
            is_key: false,
            pts_90k: i * FRAME_90K,
            local_time: START,
            sample_entry: e.clone(),
        })?;
    }
    Ok(())
}

#[test]
fn the_writer_reports_and_waits_for_an_acknowledgement_before_writing_past_the_window() {
    let mut h = harness(0, 60);
    let frames = (WRITE_WINDOW_BYTES / BIG_FRAME_BYTES) as i64 + 8;
    feed_big_frames(&mut h, frames).unwrap(); // the fake checks every write's offset
    let s = h.s();
    let id = s.recs[0].id;
    // The frame that would first pass the window: the key frame's report alone does not cover
    // what must be acknowledged, so everything before the frame is reported, then waited for.
    let first_over = (WRITE_WINDOW_BYTES - 1000) / BIG_FRAME_BYTES + 1;
    let needed = 1000 + first_over * BIG_FRAME_BYTES - WRITE_WINDOW_BYTES;
    assert!(needed > 1000);
    let tail: Vec<&Event> = s
        .events
        .iter()
        .filter(|e| !matches!(e, Event::AddEntry(_)))
        .collect();
    assert_eq!(
        tail[..4],
        [
            &Event::Open(id),
            &Event::Progress(id),
            &Event::Progress(id),
            &Event::WaitAcknowledged(id, needed)
        ],
        "{:?}",
        s.events
    );
    let r = &s.recs[0];
    assert_eq!(
        r.progress[1].0.len() as u64,
        first_over - 1,
        "reported up to the frame"
    );
    assert_eq!(
        r.data.len() as u64,
        1000 + (frames as u64 - 1) * BIG_FRAME_BYTES
    );
}

#[test]
fn a_window_never_acknowledged_abandons_the_recording_within_it() {
    let mut h = harness(0, 60);
    h.fake.0.borrow_mut().never_acknowledge = true;
    let frames = (WRITE_WINDOW_BYTES / BIG_FRAME_BYTES) as i64 + 8;
    let err = feed_big_frames(&mut h, frames).unwrap_err();
    assert!(
        matches!(err, WriterError::Link(LinkError::AcknowledgeTimeout { .. })),
        "{err}"
    );
    let id = h.s().recs[0].id;
    assert!(h.s().recs[0].data.len() as u64 <= WRITE_WINDOW_BYTES);
    let err = h.writer.close(end_reason::SHUTDOWN).and_then(|()| {
        h.writer
            .write(&frame(1 << 30, true, START, &h.entry.clone()))
    });
    assert!(
        matches!(err, Err(WriterError::Abandoned { id: i }) if i == id),
        "{err:?}"
    );
    assert!(
        h.s().recs[0].close.is_none(),
        "an abandoned recording is never closed"
    );
}

// ---- progress ------------------------------------------------------------------------------

#[test]
fn progress_is_reported_at_every_key_frame() {
    let mut h = harness(0, 60);
    h.feed(0..45, FRAME_90K, 10, at);
    let s = h.s();
    let r = &s.recs[0];
    let counts: Vec<usize> = r.progress.iter().map(|(s, _)| s.len()).collect();
    assert_eq!(counts, [1, 10, 10, 10, 10]);
    for (samples, times) in &r.progress {
        let last = samples.last().unwrap();
        assert!(last.is_key, "each report ends at the key frame");
        // The last sample counts as 0: media = its pts; uncorrected in a run's first.
        assert_eq!(i64::from(times.wall_duration_90k), last.pts_90k);
    }
}

#[test]
fn progress_is_reported_every_second_of_local_time_between_key_frames() {
    let mut h = harness(0, 60);
    h.feed(0..100, FRAME_90K, 1000, at);
    let s = h.s();
    let counts: Vec<usize> = s.recs[0].progress.iter().map(|(s, _)| s.len()).collect();
    assert_eq!(counts, [1, 30, 30, 30]);
}

#[test]
fn progress_is_reported_when_the_local_clock_goes_back() {
    let mut h = harness(0, 60);
    h.feed(0..3, FRAME_90K, 1000, at);
    h.feed(3..4, FRAME_90K, 1000, |_| at(0) - Duration::from_secs(3600));
    let counts: Vec<usize> = h.s().recs[0]
        .progress
        .iter()
        .map(|(s, _)| s.len())
        .collect();
    assert_eq!(counts, [1, 3]);
}

// ---- write failures ------------------------------------------------------------------------

#[test]
fn transient_write_errors_are_retried_with_backoff() {
    let mut h = harness(0, 60);
    h.fake
        .0
        .borrow_mut()
        .faults
        .extend([Fault::Errno(Errno::EIO), Fault::Errno(Errno::EAGAIN)]);
    h.feed(0..3, FRAME_90K, 30, at);
    assert_eq!(
        h.clock.monotonic(),
        Time(0) + Duration::from_millis(100 + 200),
        "slept 100 ms then 200 ms"
    );
    h.writer.close(end_reason::SHUTDOWN).unwrap(); // the fake checks size and blake3
    assert_eq!(h.s().recs[0].reported.len(), 3);
}

#[test]
fn short_writes_continue_where_they_stopped() {
    let mut h = harness(0, 60);
    h.fake
        .0
        .borrow_mut()
        .faults
        .extend([Fault::Short(10), Fault::Short(1), Fault::Short(999)]);
    h.feed(0..3, FRAME_90K, 30, at);
    h.writer.close(end_reason::SHUTDOWN).unwrap();
    let s = h.s();
    assert_eq!(s.recs[0].data.len(), 1000 + 100 + 100);
}

#[test]
fn a_full_disk_ends_the_recording_at_its_last_whole_sample_and_pauses() {
    let mut h = harness(0, 60);
    h.feed(0..7, FRAME_90K, 5, at);
    // Frame 7 finds the disk full after 40 of its bytes.
    h.fake
        .0
        .borrow_mut()
        .faults
        .extend([Fault::Short(40), Fault::Errno(Errno::ENOSPC)]);
    // Not retried, and not the caller's problem: frames 7 and on are dropped for a second.
    h.feed(7..40, FRAME_90K, 5, at);
    assert_eq!(h.clock.monotonic(), Time(0), "a full disk is not retried");
    {
        let s = h.s();
        let r = &s.recs[0];
        assert_eq!(r.abandoned.as_deref(), Some(end_reason::DISK_FULL));
        assert_eq!(r.reported.len(), 7, "every whole sample reported first");
        let reported_bytes: u64 = r.reported.iter().map(|s| u64::from(s.bytes)).sum();
        assert_eq!(
            r.data.len() as u64,
            reported_bytes + 40,
            "a part of frame 7 follows"
        );
        assert_eq!(s.recs.len(), 1, "nothing opened during the pause");
    }
    // Frame 40 is the first key frame a second or more after frame 7: a new run begins.
    h.feed(40..50, FRAME_90K, 5, at);
    h.writer.close(end_reason::SHUTDOWN).unwrap();
    let s = h.s();
    assert_eq!(s.recs.len(), 2);
    assert_eq!(s.recs[1].run_offset, 0, "a new run");
    assert_eq!(
        s.recs[1].reported[0].bytes, 1000,
        "it starts on a key frame"
    );
    assert_eq!(s.recs[1].reported.len(), 10);
    let order: Vec<&Event> = s
        .events
        .iter()
        .filter(|e| matches!(e, Event::Abandon(_) | Event::Wait(_) | Event::Close(_)))
        .collect();
    let (a, b) = (s.recs[0].id, s.recs[1].id);
    assert_eq!(
        order,
        [&Event::Abandon(a), &Event::Wait(a), &Event::Close(b)],
        "the abandon counts as the outstanding close"
    );
}

#[test]
fn a_full_disk_at_a_recording_s_first_frame_abandons_it_unreported() {
    let mut h = harness(0, 60);
    h.fake
        .0
        .borrow_mut()
        .faults
        .push_back(Fault::Errno(Errno::EDQUOT));
    h.feed(0..1, FRAME_90K, 30, at);
    let s = h.s();
    assert!(s.recs[0].reported.is_empty());
    assert_eq!(s.recs[0].abandoned.as_deref(), Some(end_reason::DISK_FULL));
    assert!(!s.events.iter().any(|e| matches!(e, Event::Progress(_))));
}

#[test]
fn the_pause_doubles_while_the_disk_stays_full() {
    let mut h = harness(0, 60);
    h.fake.0.borrow_mut().refuse_opens = 2;
    let enospc = |h: &mut Harness| {
        h.fake
            .0
            .borrow_mut()
            .faults
            .push_back(Fault::Errno(Errno::ENOSPC))
    };
    // One key frame a second. Refused at 0 s: paused 1 s. Refused at 1 s: no recording took
    // data, so paused 2 s. Opened at 3 s.
    h.feed(0..105, FRAME_90K, 30, at);
    {
        let s = h.s();
        let opens = s
            .events
            .iter()
            .filter(|e| matches!(e, Event::OpenRefused | Event::Open(_)))
            .count();
        assert_eq!(opens, 2 + 1, "{:?}", s.events);
        assert_eq!(s.recs[0].data.len(), 1000 + 14 * 100, "opened at 3 s");
    }
    // Full again at 3.5 s, before the recording lasted the 2 s pause before it: 4 s.
    enospc(&mut h);
    h.feed(105..106, FRAME_90K, 30, at);
    assert_eq!(h.writer.last_pause, Duration::from_secs(4));
    // Opened at 8 s; full at 13 s, after lasting longer than the pause: back to 1 s.
    h.feed(106..390, FRAME_90K, 30, at);
    assert_eq!(h.s().recs.len(), 2);
    assert_eq!(h.s().recs[1].reported[0].pts_90k, 0);
    enospc(&mut h);
    h.feed(390..391, FRAME_90K, 30, at);
    assert_eq!(h.writer.last_pause, DISK_FULL_RETRY_MIN);
    // Opened at 14 s.
    h.feed(391..450, FRAME_90K, 30, at);
    h.writer.close(end_reason::SHUTDOWN).unwrap();
    let s = h.s();
    assert_eq!(s.recs.len(), 3);
    assert_eq!(s.recs[2].data.len(), 1000 + 29 * 100, "opened at 14 s");
}

#[test]
fn a_zero_byte_write_is_a_permanent_failure() {
    let mut h = harness(0, 60);
    h.fake.0.borrow_mut().faults.push_back(Fault::Short(0));
    let err = h
        .writer
        .write(&frame(0, true, at(0), &h.entry))
        .unwrap_err();
    assert!(matches!(err, WriterError::Write { .. }), "{err}");
}

#[test]
fn a_write_failing_at_shutdown_abandons_the_recording() {
    let mut h = harness(0, 60);
    h.feed(0..3, FRAME_90K, 30, at);
    h.stop.store(true, Ordering::SeqCst);
    h.fake
        .0
        .borrow_mut()
        .faults
        .push_back(Fault::Errno(Errno::EIO));
    let e = h.entry.clone();
    let err = h
        .writer
        .write(&frame(3 * FRAME_90K, false, at(9000), &e))
        .unwrap_err();
    assert!(matches!(err, WriterError::WriteAborted { .. }), "{err}");
    let err = h
        .writer
        .write(&frame(4 * FRAME_90K, false, at(12_000), &e))
        .unwrap_err();
    assert!(matches!(err, WriterError::Abandoned { .. }), "{err}");
    let Harness { writer, fake, .. } = h;
    drop(writer);
    let s = fake.0.borrow();
    assert!(s.recs[0].close.is_none(), "left to the syncer's salvage");
    assert!(
        !s.events.iter().any(|e| matches!(e, Event::Close(_))),
        "{:?}",
        s.events
    );
}

#[test]
fn a_permanent_write_error_abandons_the_recording() {
    let mut h = harness(0, 60);
    h.feed(0..2, FRAME_90K, 30, at);
    h.fake
        .0
        .borrow_mut()
        .faults
        .push_back(Fault::Errno(Errno::EBADF));
    let e = h.entry.clone();
    let err = h
        .writer
        .write(&frame(2 * FRAME_90K, false, at(6000), &e))
        .unwrap_err();
    assert!(matches!(err, WriterError::Write { .. }), "{err}");
    assert!(!err.is_frame_refused());
    assert_eq!(h.clock.monotonic(), Time(0), "not retried");
    let Harness { writer, fake, .. } = h;
    drop(writer);
    assert!(fake.0.borrow().recs[0].close.is_none());
}
