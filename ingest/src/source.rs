//! Where frames come from: a source URL names an input, and [`Source::next_frame`] yields its
//! frames one by one, paced like a camera, each stamped with its pts and local time.
//!
//! # Source URLs
//!
//! `file:PATH` and `synthetic:`, with their parameters (`speed`, `fps`, `bitrate`, `gop`), as
//! [`protocol::source_spec`] parses them: the same parse the syncer checks a camera's source
//! with when it is added. A `file:` source is an H.264 Annex B file (parsed with
//! [`crate::h264`]), looped forever and read into memory once (at most [`MAX_FILE_BYTES`]: it is
//! meant for test clips, not hours of video; the read stops there, whatever the file claims,
//! so that a device such as `/dev/zero` is refused rather than read forever); a frame lasts
//! what the VUI timing of its SPS says ([`crate::h264::Sps::frame_duration_90k`]), `fps` only
//! for an SPS without timing.
//! `synthetic:` generates frames for load tests ([`SyntheticParams`]).
//!
//! # Opening in two steps
//!
//! [`Source::prepare`] opens what the source needs (a `file:` source's file) and reads
//! nothing; [`Source::start`] reads and parses. `nvr-ingest` enters its sandbox in between
//! ([`crate::sandbox`]), so that the file's bytes are parsed with no file system left to
//! reach. [`Source::open`] does both at once.
//!
//! # Time
//!
//! pts starts at 0 and grows by each frame's duration, across loops of a file, so it is strictly
//! increasing for the life of the source. A frame is delivered when the source's monotonic clock
//! reaches `start + pts / speed` (at once for `max`); stopping is checked at least every
//! [`STOP_POLL_INTERVAL`] while waiting.
//!
//! Local time (what the writer's time model compares the media clock with) is the realtime
//! clock when the frame is delivered, if the source runs in real time. Otherwise the realtime
//! clock has nothing to say about the media, so the source uses a synthetic local clock, the
//! realtime at the start plus the pts: recordings then get wall durations equal to their media
//! durations and start times that abut exactly, as if a perfect camera had been recording.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use protocol::{Clock, Duration, TIME_UNITS_PER_SEC, Time};

use crate::h264::{self, H264Error, NAL_LENGTH_BYTES, SampleEntry};

pub use protocol::source_spec::{
    DEFAULT_BITRATE, DEFAULT_FPS, DEFAULT_GOP, MAX_FPS, MIN_FPS, SourceSpec, SourceUrl, Speed,
    SyntheticParams,
};

/// Largest file a `file:` source reads, in bytes: it holds the whole file in memory, twice
/// while parsing it (the bytes and the frames cut from them), within the ingest's data limit
/// ([`crate::sandbox::FRAME_DATA_BYTES`]).
pub const MAX_FILE_BYTES: u64 = 48 << 20;

const _: () = assert!(
    2 * MAX_FILE_BYTES + 2 * h264::MAX_FRAME_BYTES as u64 <= crate::sandbox::FRAME_DATA_BYTES
);

/// Bytes a `file:` source reads at a time.
const READ_CHUNK_BYTES: usize = 1 << 20;

/// Longest a source waits for a frame's time without checking its stop flag.
pub const STOP_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The shipped clip whose sample entry `synthetic:` frames claim.
const SHIPPED_CLIP: &[u8] = include_bytes!("../testdata/clip.h264");

/// One frame from a source, ready for the writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The sample in AVC format (length-prefixed NAL units); `1..=h264::MAX_FRAME_BYTES` bytes.
    pub data: Vec<u8>,
    /// Whether decoding can start at this frame.
    pub is_key: bool,
    /// Presentation time, 90 kHz ticks on the source's timeline; strictly increasing.
    pub pts_90k: i64,
    /// The local clock when the frame arrived (see the module docs, "Time").
    pub local_time: Time,
    /// The video parameters the frame was coded with.
    pub sample_entry: Arc<SampleEntry>,
}

/// Why a source could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A URL that names no source this build knows, or one with bad parameters.
    #[error("bad source URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },

    /// The file of a `file:` source could not be read.
    #[error("cannot read source file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file of a `file:` source holds more than [`MAX_FILE_BYTES`] (`bytes`: its size
    /// if it has one, or what was read before the limit stopped the read).
    #[error("source file {path} holds {bytes} bytes or more, over the limit of {MAX_FILE_BYTES}")]
    FileTooLarge { path: PathBuf, bytes: u64 },

    /// The file of a `file:` source (or, for `synthetic:`, the shipped clip) is not H.264
    /// this crate can parse.
    #[error("cannot parse H.264 in {what}: {source}")]
    Parse {
        what: String,
        #[source]
        source: H264Error,
    },
}

impl From<protocol::source_url::BadSourceUrl> for SourceError {
    fn from(e: protocol::source_url::BadSourceUrl) -> Self {
        SourceError::BadUrl {
            url: e.url,
            reason: e.reason,
        }
    }
}

/// Frame duration in 90 kHz ticks of `fps` frames a second, rounded; `fps` is within
/// [`MIN_FPS`]..=[`MAX_FPS`], so the result is 90 to 900 000.
fn duration_of_fps(fps: f64) -> i64 {
    (TIME_UNITS_PER_SEC as f64 / fps).round() as i64
}

/// A source of frames: see the module docs.
pub struct Source {
    frames: Frames,
    speed: Speed,
    clock: Arc<dyn Clock>,
    stop: Arc<AtomicBool>,
    /// The monotonic clock when the source opened: pts 0 is due then.
    start_monotonic: Time,
    /// The realtime clock when the source opened: the synthetic local time of pts 0.
    start_realtime: Time,
    /// pts of the next frame.
    next_pts_90k: i64,
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("speed", &self.speed)
            .field("next_pts_90k", &self.next_pts_90k)
            .finish_non_exhaustive()
    }
}

/// The frames of a source, without their timing.
enum Frames {
    /// A clip looped forever.
    Clip {
        frames: Vec<h264::Frame>,
        /// Per sample entry of the clip: the entry and its frame duration in 90 kHz ticks.
        entries: Vec<(Arc<SampleEntry>, i64)>,
        next: usize,
    },
    Synthetic(Synthetic),
}

impl Frames {
    /// The next frame's data, key flag, duration in 90 kHz ticks and sample entry.
    fn next(&mut self) -> (Vec<u8>, bool, i64, Arc<SampleEntry>) {
        match self {
            Frames::Clip {
                frames,
                entries,
                next,
            } => {
                let f = &frames[*next];
                *next = (*next + 1) % frames.len();
                let (entry, duration) = &entries[f.sample_entry_index];
                (f.data.clone(), f.is_key, *duration, entry.clone())
            }
            Frames::Synthetic(s) => s.next(),
        }
    }
}

/// Generates `synthetic:` frames.
struct Synthetic {
    entry: Arc<SampleEntry>,
    duration_90k: i64,
    gop: u32,
    key_bytes: usize,
    other_bytes: usize,
    /// Position of the next frame in its GOP (0: key frame).
    in_gop: u32,
    /// xorshift64 state for the frames' bytes; never 0.
    rng: u64,
}

impl Synthetic {
    fn new(p: SyntheticParams) -> Result<Self, SourceError> {
        let entry = shipped_clip_entry().map_err(|source| SourceError::Parse {
            what: "the shipped clip".to_owned(),
            source,
        })?;
        let (key_bytes, other_bytes) = p.frame_bytes();
        // A frame holds at least a length prefix and a NAL header.
        let min_bytes = NAL_LENGTH_BYTES as u64 + 1;
        let key_bytes = key_bytes.max(min_bytes);
        let other_bytes = other_bytes.max(min_bytes);
        assert!(
            key_bytes <= h264::MAX_FRAME_BYTES as u64,
            "SourceUrl::parse refuses synthetic frames larger than a sample"
        );
        Ok(Synthetic {
            entry,
            duration_90k: duration_of_fps(p.fps),
            gop: p.gop,
            key_bytes: key_bytes as usize,
            other_bytes: other_bytes as usize,
            in_gop: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
        })
    }

    fn next(&mut self) -> (Vec<u8>, bool, i64, Arc<SampleEntry>) {
        let is_key = self.in_gop == 0;
        self.in_gop = (self.in_gop + 1) % self.gop;
        let bytes = if is_key {
            self.key_bytes
        } else {
            self.other_bytes
        };
        // One NAL unit: IDR slice (type 5) or non-IDR slice (type 1), nal_ref_idc 3 / 2.
        let nal_len = u32::try_from(bytes - NAL_LENGTH_BYTES).expect("bounded by MAX_FRAME_BYTES");
        let mut data = Vec::with_capacity(bytes + 8);
        data.extend_from_slice(&nal_len.to_be_bytes());
        data.push(if is_key { 0x65 } else { 0x41 });
        while data.len() < bytes {
            // xorshift64 (Marsaglia): fast, and plenty for bytes nobody decodes.
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            data.extend_from_slice(&self.rng.to_le_bytes());
        }
        data.truncate(bytes);
        (data, is_key, self.duration_90k, self.entry.clone())
    }
}

/// The sample entry of the shipped clip, parsed once per process.
fn shipped_clip_entry() -> Result<Arc<SampleEntry>, H264Error> {
    static ENTRY: OnceLock<Result<Arc<SampleEntry>, H264Error>> = OnceLock::new();
    ENTRY
        .get_or_init(|| {
            let mut clip = h264::parse_clip(SHIPPED_CLIP)?;
            Ok(Arc::new(clip.sample_entries.swap_remove(0)))
        })
        .clone()
}

/// A source opened but not read yet: see the module docs, "Opening in two steps".
#[derive(Debug)]
pub struct Prepared {
    input: PreparedInput,
    speed: Speed,
}

#[derive(Debug)]
enum PreparedInput {
    File {
        path: PathBuf,
        file: std::fs::File,
        /// The file's size (0 for a device or pipe, which have none).
        size: u64,
        fps: f64,
    },
    Synthetic(SyntheticParams),
}

impl Source {
    /// Opens the source `url` names ([`Source::prepare`] then [`Source::start`]).
    pub fn open(
        url: &str,
        clock: Arc<dyn Clock>,
        stop: Arc<AtomicBool>,
    ) -> Result<Source, SourceError> {
        Source::start(Source::prepare(url)?, clock, stop)
    }

    /// Parses `url` and opens a `file:` source's file, reading none of it.
    pub fn prepare(url: &str) -> Result<Prepared, SourceError> {
        Source::prepare_with(url, None)
    }

    /// Like [`Source::prepare`], but a `file:` source reads `opened` instead of opening its
    /// path: the supervisor opens it and passes the descriptor, since an ingest under its own
    /// uid may not be allowed to open the file. `opened` is ignored by other sources.
    pub fn prepare_with(url: &str, opened: Option<std::fs::File>) -> Result<Prepared, SourceError> {
        let SourceUrl { spec, speed } = SourceUrl::parse(url)?;
        let input = match spec {
            SourceSpec::File { path, fps } => {
                let read_err = |source| SourceError::Read {
                    path: path.clone(),
                    source,
                };
                let file = match opened {
                    Some(f) => f,
                    None => std::fs::File::open(&path).map_err(read_err)?,
                };
                let size = file.metadata().map_err(read_err)?.len();
                if size > MAX_FILE_BYTES {
                    return Err(SourceError::FileTooLarge { path, bytes: size });
                }
                PreparedInput::File {
                    path,
                    file,
                    size,
                    fps,
                }
            }
            SourceSpec::Synthetic(p) => PreparedInput::Synthetic(p),
        };
        Ok(Prepared { input, speed })
    }

    /// Reads and parses the prepared source. It is paced by `clock` and stops
    /// (`next_frame` returns `None`) once `stop` is set.
    pub fn start(
        prepared: Prepared,
        clock: Arc<dyn Clock>,
        stop: Arc<AtomicBool>,
    ) -> Result<Source, SourceError> {
        let frames = match prepared.input {
            PreparedInput::File {
                path,
                file,
                size,
                fps,
            } => read_clip(path, file, size, fps)?,
            PreparedInput::Synthetic(p) => Frames::Synthetic(Synthetic::new(p)?),
        };
        let speed = prepared.speed;
        Ok(Source {
            frames,
            speed,
            start_monotonic: clock.monotonic(),
            start_realtime: clock.realtime(),
            clock,
            stop,
            next_pts_90k: 0,
        })
    }

    /// How fast this source runs.
    pub fn speed(&self) -> Speed {
        self.speed
    }

    /// Waits until the next frame is due and returns it, or `None` once the stop flag is set
    /// (checked before each frame and at least every [`STOP_POLL_INTERVAL`] while waiting).
    pub fn next_frame(&mut self) -> Option<Frame> {
        if self.stopped() {
            return None;
        }
        let pts_90k = self.next_pts_90k;
        let due = match self.speed {
            Speed::RealTime => Some(self.start_monotonic + Duration(pts_90k)),
            Speed::Times(n) => Some(self.start_monotonic + Duration((pts_90k as f64 / n) as i64)),
            Speed::Max => None,
        };
        if let Some(due) = due {
            loop {
                if self.stopped() {
                    return None;
                }
                let now = self.clock.monotonic();
                if now >= due {
                    break;
                }
                self.clock.sleep((due - now).min(STOP_POLL_INTERVAL));
            }
        }
        let (data, is_key, duration_90k, sample_entry) = self.frames.next();
        self.next_pts_90k += duration_90k;
        let local_time = match self.speed {
            Speed::RealTime => self.clock.realtime(),
            Speed::Times(_) | Speed::Max => self.start_realtime + Duration(pts_90k),
        };
        Some(Frame {
            data,
            is_key,
            pts_90k,
            local_time,
            sample_entry,
        })
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// Reads all of `file` (`size` bytes, or any number for a file without a size), in chunks of
/// [`READ_CHUNK_BYTES`], refusing more than [`MAX_FILE_BYTES`].
fn read_bounded(
    path: &std::path::Path,
    file: std::fs::File,
    size: u64,
) -> Result<Vec<u8>, SourceError> {
    let mut data = Vec::with_capacity(size.min(MAX_FILE_BYTES) as usize);
    let mut file = std::io::Read::take(file, MAX_FILE_BYTES + 1);
    let mut chunk = vec![0; READ_CHUNK_BYTES];
    loop {
        let n = match std::io::Read::read(&mut file, &mut chunk) {
            Ok(0) => return Ok(data),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(SourceError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        if (data.len() + n) as u64 > MAX_FILE_BYTES {
            return Err(SourceError::FileTooLarge {
                path: path.to_owned(),
                bytes: (data.len() + n) as u64,
            });
        }
        data.extend_from_slice(&chunk[..n]);
    }
}

/// Reads and parses a `file:` source's clip.
fn read_clip(
    path: PathBuf,
    file: std::fs::File,
    size: u64,
    fps: f64,
) -> Result<Frames, SourceError> {
    let data = read_bounded(&path, file, size)?;
    let parse_err = |source| SourceError::Parse {
        what: path.display().to_string(),
        source,
    };
    let clip = h264::parse_clip(&data).map_err(parse_err)?;
    drop(data);
    let mut entries = Vec::with_capacity(clip.sample_entries.len());
    for entry in clip.sample_entries {
        let fastest = duration_of_fps(MAX_FPS);
        let slowest = duration_of_fps(MIN_FPS);
        let duration = match entry.sps().map_err(parse_err)?.frame_duration_90k {
            Some(d) if (fastest..=slowest).contains(&i64::from(d)) => i64::from(d),
            Some(d) => {
                tracing::warn!(
                    path = %path.display(),
                    frame_duration_90k = d,
                    fps,
                    "SPS timing is outside {MIN_FPS}..={MAX_FPS} fps; using the fps parameter"
                );
                duration_of_fps(fps)
            }
            None => duration_of_fps(fps),
        };
        entries.push((Arc::new(entry), duration));
    }
    Ok(Frames::Clip {
        frames: clip.frames,
        entries,
        next: 0,
    })
}

#[cfg(test)]
mod tests;
