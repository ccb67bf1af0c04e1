//! Tests of source URLs, pacing and frame generation, on a simulated clock.

use super::*;
use protocol::SimClock;
use std::io::Write;

const START: Time = Time(1_700_000_000 * TIME_UNITS_PER_SEC);

fn clip_path() -> String {
    format!("{}/testdata/clip.h264", env!("CARGO_MANIFEST_DIR"))
}

fn open(url: &str, clock: &SimClock) -> Source {
    Source::open(url, Arc::new(clock.clone()), Arc::default()).unwrap()
}

fn frames(source: &mut Source, n: usize) -> Vec<Frame> {
    (0..n).map(|_| source.next_frame().unwrap()).collect()
}

#[test]
fn missing_file_is_a_read_error_naming_the_path() {
    let clock = SimClock::new(START);
    let err = Source::open(
        "file:/nonexistent/clip.h264",
        Arc::new(clock),
        Arc::default(),
    )
    .unwrap_err();
    assert!(matches!(err, SourceError::Read { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/clip.h264"), "{err}");
}

#[test]
fn a_file_without_end_is_refused_at_the_size_limit() {
    // /dev/zero has no size and never ends: the read stops just past the limit.
    let prepared = Source::prepare("file:/dev/zero").unwrap();
    let err = Source::start(prepared, Arc::new(SimClock::new(START)), Arc::default()).unwrap_err();
    assert!(
        matches!(err, SourceError::FileTooLarge { bytes, .. } if bytes > MAX_FILE_BYTES
            && bytes <= MAX_FILE_BYTES + READ_CHUNK_BYTES as u64),
        "{err}"
    );
}

#[test]
fn a_file_over_the_limit_is_refused_before_it_is_read() {
    let file = tempfile::NamedTempFile::new().unwrap();
    file.as_file().set_len(MAX_FILE_BYTES + 1).unwrap();
    let err = Source::prepare(&format!("file:{}", file.path().display())).unwrap_err();
    assert!(
        matches!(err, SourceError::FileTooLarge { bytes, .. } if bytes == MAX_FILE_BYTES + 1),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_h264_is_a_parse_error() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(b"this is not an H.264 stream").unwrap();
    let url = format!("file:{}", file.path().display());
    let clock = SimClock::new(START);
    let err = Source::open(&url, Arc::new(clock), Arc::default()).unwrap_err();
    assert!(
        matches!(
            err,
            SourceError::Parse {
                source: H264Error::MissingStartCode { .. },
                ..
            }
        ),
        "{err}"
    );
}

// ---- file: ---------------------------------------------------------------------------------

#[test]
fn file_loops_forever_with_increasing_pts() {
    let clip = h264::parse_clip(&std::fs::read(clip_path()).unwrap()).unwrap();
    let clock = SimClock::new(START);
    let mut source = open(&format!("file:{}?speed=max", clip_path()), &clock);
    let got = frames(&mut source, 2 * clip.frames.len() + 10);
    for (i, f) in got.iter().enumerate() {
        let original = &clip.frames[i % clip.frames.len()];
        // 30 fps from the SPS's VUI timing.
        assert_eq!(f.pts_90k, i as i64 * 3000, "frame {i}");
        assert_eq!(f.is_key, original.is_key, "frame {i}");
        assert_eq!(f.data, original.data, "frame {i}");
        assert_eq!(*f.sample_entry, clip.sample_entries[0]);
    }
    assert!(Arc::ptr_eq(&got[0].sample_entry, &got[200].sample_entry));
}

#[test]
fn sps_timing_wins_over_the_fps_parameter() {
    let clock = SimClock::new(START);
    let mut source = open(&format!("file:{}?speed=max&fps=10", clip_path()), &clock);
    let got = frames(&mut source, 2);
    assert_eq!(got[1].pts_90k, 3000);
}

#[test]
fn speed_max_never_sleeps_and_uses_a_synthetic_local_clock() {
    let clock = SimClock::new(START);
    let mut source = open(&format!("file:{}?speed=max", clip_path()), &clock);
    for f in frames(&mut source, 300) {
        assert_eq!(f.local_time, START + Duration(f.pts_90k));
    }
    assert_eq!(clock.monotonic(), Time(0), "no sleeping");
}

#[test]
fn real_time_delivers_each_frame_at_its_pts_stamped_with_the_realtime_clock() {
    let clock = SimClock::new(START);
    let mut source = open(&format!("file:{}", clip_path()), &clock);
    for _ in 0..40 {
        let f = source.next_frame().unwrap();
        assert_eq!(clock.monotonic(), Time(f.pts_90k));
        assert_eq!(f.local_time, clock.realtime());
    }
}

#[test]
fn speed_n_runs_n_times_faster_with_a_synthetic_local_clock() {
    let clock = SimClock::new(START);
    let mut source = open(&format!("file:{}?speed=2", clip_path()), &clock);
    for _ in 0..40 {
        let f = source.next_frame().unwrap();
        assert_eq!(clock.monotonic(), Time(f.pts_90k / 2));
        assert_eq!(f.local_time, START + Duration(f.pts_90k));
    }
}

/// A simulated clock that sets the stop flag the first time anything sleeps on it.
struct StopOnSleep {
    clock: SimClock,
    stop: Arc<AtomicBool>,
}

impl Clock for StopOnSleep {
    fn realtime(&self) -> Time {
        self.clock.realtime()
    }
    fn monotonic(&self) -> Time {
        self.clock.monotonic()
    }
    fn sleep(&self, d: Duration) {
        self.clock.sleep(d);
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn stop_ends_a_wait_within_one_poll_interval() {
    let clock = SimClock::new(START);
    let stop = Arc::new(AtomicBool::new(false));
    let paced = StopOnSleep {
        clock: clock.clone(),
        stop: stop.clone(),
    };
    // At 0.1 fps the second frame is due 10 s after the first.
    let mut source = Source::open("synthetic:?fps=0.1", Arc::new(paced), stop.clone()).unwrap();
    assert!(
        source.next_frame().is_some(),
        "the first frame is due at once"
    );
    assert!(source.next_frame().is_none());
    assert_eq!(clock.monotonic(), Time(0) + STOP_POLL_INTERVAL);
}

#[test]
fn a_stopped_source_yields_nothing() {
    let clock = SimClock::new(START);
    let stop = Arc::new(AtomicBool::new(true));
    let mut source = Source::open("synthetic:?speed=max", Arc::new(clock), stop).unwrap();
    assert!(source.next_frame().is_none());
}

// ---- synthetic: ----------------------------------------------------------------------------

#[test]
fn synthetic_frames_have_the_bitrate_gop_and_frame_rate_asked_for() {
    let clock = SimClock::new(START);
    let mut source = open("synthetic:?fps=25&bitrate=1000000&gop=10&speed=max", &clock);
    let got = frames(&mut source, 100); // 4 s, 10 GOPs
    let bits: usize = got.iter().map(|f| f.data.len() * 8).sum();
    let bitrate = bits as f64 / 4.0;
    assert!(
        (bitrate - 1e6).abs() < 1e6 * 0.001,
        "{bitrate} bits a second"
    );
    for (i, f) in got.iter().enumerate() {
        assert_eq!(f.pts_90k, i as i64 * 3600);
        assert_eq!(f.is_key, i % 10 == 0, "frame {i}");
        // One length-prefixed NAL unit: IDR or non-IDR slice.
        let len = u32::from_be_bytes(f.data[..4].try_into().unwrap()) as usize;
        assert_eq!(len, f.data.len() - 4);
        assert_eq!(f.data[4] & 0x1f, if f.is_key { 5 } else { 1 });
    }
    let key_ratio = got[0].data.len() as f64 / got[1].data.len() as f64;
    assert!(
        (key_ratio - 8.0).abs() < 0.01,
        "key frames {key_ratio} times larger"
    );
    assert_ne!(got[1].data, got[2].data, "pseudo-random contents");
    assert_eq!(
        (got[0].sample_entry.width, got[0].sample_entry.height),
        (320, 240),
        "the shipped clip's sample entry"
    );
}

#[test]
fn synthetic_frames_too_large_for_a_sample_are_refused() {
    let clock = SimClock::new(START);
    let err = Source::open(
        "synthetic:?fps=1&bitrate=1000000000",
        Arc::new(clock),
        Arc::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, SourceError::BadUrl { reason, .. } if reason.contains("over the limit")),
        "{err}"
    );
}
