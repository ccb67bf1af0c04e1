//! What a `file:` or `synthetic:` source URL names, parsed once for every process: the command
//! line and the syncer check a camera's source with [`SourceUrl::parse`] when it is added or
//! changed, and the ingest opens the same parse, so a source accepted is a source the ingest
//! can run (apart from the file being readable).
//!
//! - `file:PATH[?speed=N|max][&fps=F]`: an H.264 Annex B file, looped; `fps` is for an SPS
//!   without timing (default [`DEFAULT_FPS`]).
//! - `synthetic:[?fps=F][&bitrate=B][&gop=G][&speed=N|max]`: generated frames, `fps` a second
//!   (default 30), about `bitrate` bits a second (default 2 000 000), a key frame every `gop`
//!   (default 30); see [`SyntheticParams`].
//!
//! `speed`: real time by default, `speed=N` (positive) N times faster, `speed=max` as fast as
//! frames are taken. `rtsp://` URLs are [`crate::source_url::RtspUrl`]'s.

use std::path::PathBuf;

use crate::limits::MAX_SAMPLE_BYTES;
use crate::source_url::BadSourceUrl;

/// Frames a second of a `file:` source whose SPS has no timing, and of `synthetic:`, unless
/// the URL's `fps` says otherwise.
pub const DEFAULT_FPS: f64 = 30.0;

/// Bits a second of a `synthetic:` source unless its URL's `bitrate` says otherwise.
pub const DEFAULT_BITRATE: u64 = 2_000_000;

/// Frames from one key frame to the next of a `synthetic:` source unless its URL's `gop` says
/// otherwise.
pub const DEFAULT_GOP: u32 = 30;

/// Highest frame rate a source accepts: the syncer's shortest sample is 90 ticks (1 ms).
pub const MAX_FPS: f64 = 1000.0;

/// Lowest frame rate a source accepts: a frame at least every 10 s.
pub const MIN_FPS: f64 = 0.1;

/// How many times bigger than the others a synthetic key frame is (see
/// [`SyntheticParams::bitrate`]).
pub const SYNTHETIC_KEY_FRAME_WEIGHT: u64 = 8;

/// How fast a source delivers frames relative to their pts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Speed {
    /// A frame when the clock reaches its pts; local time is the realtime clock.
    RealTime,
    /// This many times faster than real time (positive, not 1); synthetic local time.
    Times(f64),
    /// No waiting at all; synthetic local time.
    Max,
}

/// Parameters of a `synthetic:` source.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SyntheticParams {
    /// Frames a second, [`MIN_FPS`] to [`MAX_FPS`].
    pub fps: f64,
    /// Average bits a second over whole GOPs. Within a GOP, the key frame gets 8 shares of
    /// the bytes and every other frame one, roughly as in real H.264.
    pub bitrate: u64,
    /// Frames from one key frame to the next, `>= 1` (1: every frame is a key frame).
    pub gop: u32,
}

/// What a source URL names.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceSpec {
    /// `file:PATH`, with the frame rate for an SPS without timing.
    File { path: PathBuf, fps: f64 },
    /// `synthetic:`.
    Synthetic(SyntheticParams),
}

/// A parsed source URL.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceUrl {
    pub spec: SourceSpec,
    pub speed: Speed,
}

impl SourceUrl {
    /// Parses a source URL (see the module docs). Every problem is a [`BadSourceUrl`]: an
    /// unknown scheme, an empty path, an unknown, repeated or unparseable parameter, a value
    /// out of range, or a synthetic key frame larger than a sample may be.
    pub fn parse(url: &str) -> Result<Self, BadSourceUrl> {
        let bad = |reason: String| BadSourceUrl {
            url: url.to_owned(),
            reason,
        };
        let (scheme, rest) = url
            .split_once(':')
            .ok_or_else(|| bad("expected file:PATH or synthetic:".to_owned()))?;
        let (body, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut params = Params::parse(query).map_err(bad)?;
        let speed = params.speed().map_err(bad)?;
        let spec = match scheme {
            "file" => {
                if body.is_empty() {
                    return Err(bad("file: needs a path".to_owned()));
                }
                let fps = params.fps().map_err(bad)?;
                SourceSpec::File {
                    path: PathBuf::from(body),
                    fps,
                }
            }
            "synthetic" => {
                if !body.is_empty() {
                    return Err(bad(format!(
                        "synthetic: takes no path (found {body:?}); parameters go after '?'"
                    )));
                }
                let fps = params.fps().map_err(bad)?;
                let bitrate = params
                    .number::<u64>("bitrate")
                    .map_err(bad)?
                    .unwrap_or(DEFAULT_BITRATE);
                let gop = params
                    .number::<u32>("gop")
                    .map_err(bad)?
                    .unwrap_or(DEFAULT_GOP);
                if bitrate == 0 || gop == 0 {
                    return Err(bad("bitrate and gop must be positive".to_owned()));
                }
                let p = SyntheticParams { fps, bitrate, gop };
                let (key_bytes, _) = p.frame_bytes();
                if key_bytes > u64::from(MAX_SAMPLE_BYTES) {
                    return Err(bad(format!(
                        "a key frame would be {key_bytes} bytes, over the limit of \
                         {MAX_SAMPLE_BYTES}: lower the bitrate or raise fps or gop"
                    )));
                }
                SourceSpec::Synthetic(p)
            }
            other => {
                return Err(bad(format!(
                    "unsupported scheme {other:?} (expected file, synthetic or rtsp)"
                )));
            }
        };
        params.finish().map_err(bad)?;
        Ok(SourceUrl { spec, speed })
    }
}

/// The `key=value` pairs of a URL's query, taken one by one so leftovers can be refused.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: &str) -> Result<Self, String> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("parameter {pair:?} is not key=value"))?;
            if pairs.iter().any(|(seen, _)| seen == k) {
                return Err(format!("parameter {k:?} given twice"));
            }
            pairs.push((k.to_owned(), v.to_owned()));
        }
        Ok(Params(pairs))
    }

    fn take(&mut self, key: &str) -> Option<String> {
        let i = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(i).1)
    }

    fn number<T: std::str::FromStr>(&mut self, key: &str) -> Result<Option<T>, String> {
        self.take(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("{key}={v:?} is not a valid number"))
            })
            .transpose()
    }

    fn fps(&mut self) -> Result<f64, String> {
        let fps = self.number::<f64>("fps")?.unwrap_or(DEFAULT_FPS);
        if !(MIN_FPS..=MAX_FPS).contains(&fps) {
            return Err(format!("fps={fps} is outside {MIN_FPS}..={MAX_FPS}"));
        }
        Ok(fps)
    }

    fn speed(&mut self) -> Result<Speed, String> {
        match self.take("speed").as_deref() {
            None => Ok(Speed::RealTime),
            Some("max") => Ok(Speed::Max),
            Some(v) => match v.parse::<f64>() {
                Ok(1.0) => Ok(Speed::RealTime),
                Ok(n) if n.is_finite() && n > 0.0 => Ok(Speed::Times(n)),
                _ => Err(format!("speed={v:?} is neither a positive number nor max")),
            },
        }
    }

    fn finish(self) -> Result<(), String> {
        match self.0.first() {
            None => Ok(()),
            Some((k, _)) => Err(format!("unknown parameter {k:?}")),
        }
    }
}

impl SyntheticParams {
    /// Bytes of a key frame and of any other frame: a GOP's bytes in shares, the key frame's
    /// weight plus one per other frame (before any minimum the frame's format needs).
    pub fn frame_bytes(&self) -> (u64, u64) {
        let gop_bytes = self.bitrate as f64 / 8.0 * f64::from(self.gop) / self.fps;
        let shares = SYNTHETIC_KEY_FRAME_WEIGHT + u64::from(self.gop) - 1;
        let share = gop_bytes / shares as f64;
        let key = (share * SYNTHETIC_KEY_FRAME_WEIGHT as f64).round();
        (key as u64, share.round() as u64)
    }
}

#[cfg(test)]
mod tests;
