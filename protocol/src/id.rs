//! Recording ids and the sample file names derived from them.
//!
//! A recording is named by its stream and its id within that stream. Both are packed into one
//! `i64` so the pair can be a single SQLite key and a single file name. Ids within a stream only
//! grow and are never reused (DESIGN.md invariant 4), so the numeric order of [`CompositeId`]s
//! of one stream is the order in which their recordings were opened.

use std::fmt;
use std::str::FromStr;

/// Length of a sample file name: one lowercase hex digit per nibble of the `i64`.
pub const FILE_NAME_LEN: usize = 16;

/// A recording's globally unique id: stream id in the high 32 bits, recording id in the low 32.
///
/// Invariant for every id this crate creates or parses: the recording id is `>= 0`, so the
/// low half never carries a sign bit and ordering by the `i64` is ordering by
/// `(stream, recording)`, also for negative stream ids. The field is public for storage (it is
/// the value in the `recording.composite_id` column); code that builds one from parts uses
/// [`CompositeId::new`], which checks the invariant.
///
/// `Display` is the sample file's name: exactly [`FILE_NAME_LEN`] lowercase hex digits of the
/// value as `u64`, e.g. stream 1, recording 2 is `0000000100000002`.
#[derive(
    Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize,
)]
pub struct CompositeId(pub i64);

impl CompositeId {
    /// Packs `stream_id` and `recording_id`.
    ///
    /// Panics if `recording_id` is negative: recording ids are allocated from a counter that
    /// starts at 0 and only grows, so a negative one is a bug in the caller, not bad input.
    pub fn new(stream_id: i32, recording_id: i32) -> Self {
        assert!(
            recording_id >= 0,
            "recording id {recording_id} of stream {stream_id} is negative"
        );
        CompositeId((i64::from(stream_id) << 32) | i64::from(recording_id))
    }

    /// The stream id (high 32 bits).
    pub fn stream(self) -> i32 {
        (self.0 >> 32) as i32
    }

    /// The recording id within the stream (low 32 bits).
    pub fn recording(self) -> i32 {
        self.0 as i32
    }

    /// Parses a sample file name as found in the sample directory.
    ///
    /// Returns `None` for anything that is not exactly [`FILE_NAME_LEN`] lowercase hex digits
    /// naming an id with a non-negative recording id, i.e. for anything this crate's `Display`
    /// would never have produced. Takes bytes because directory entries are not necessarily
    /// UTF-8.
    pub fn parse_file_name(name: &[u8]) -> Option<CompositeId> {
        parse(name).ok()
    }
}

impl fmt::Display for CompositeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0 as u64)
    }
}

/// A string that does not name a [`CompositeId`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not exactly 16 lowercase hex digits.
    #[error("composite id {text:?} is not {FILE_NAME_LEN} lowercase hex digits")]
    BadFormat { text: String },

    /// Well formed, but the low 32 bits are a negative recording id, which is never allocated.
    #[error("composite id {text:?} has a negative recording id")]
    NegativeRecording { text: String },
}

impl FromStr for CompositeId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s.as_bytes()).map_err(|problem| {
            let text = s.to_owned();
            match problem {
                ParseProblem::BadFormat => IdError::BadFormat { text },
                ParseProblem::NegativeRecording => IdError::NegativeRecording { text },
            }
        })
    }
}

/// Why [`parse`] rejected its input; [`IdError`] without the text, so that
/// [`CompositeId::parse_file_name`] does not allocate for every directory entry.
enum ParseProblem {
    BadFormat,
    NegativeRecording,
}

fn parse(text: &[u8]) -> Result<CompositeId, ParseProblem> {
    if text.len() != FILE_NAME_LEN {
        return Err(ParseProblem::BadFormat);
    }
    let mut value: u64 = 0;
    for &b in text {
        let nibble = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return Err(ParseProblem::BadFormat),
        };
        value = (value << 4) | u64::from(nibble);
    }
    let id = CompositeId(value as i64);
    if id.recording() < 0 {
        return Err(ParseProblem::NegativeRecording);
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip() {
        for (stream, recording) in [(0, 0), (1, 2), (7, i32::MAX), (i32::MAX, 0), (-1, 5)] {
            let id = CompositeId::new(stream, recording);
            assert_eq!((id.stream(), id.recording()), (stream, recording));
        }
    }

    #[test]
    fn file_name_round_trips() {
        for id in [
            CompositeId::new(1, 2),
            CompositeId::new(i32::MAX, i32::MAX),
            CompositeId::new(-3, 9),
        ] {
            let name = id.to_string();
            assert_eq!(CompositeId::parse_file_name(name.as_bytes()), Some(id));
            assert_eq!(name.parse::<CompositeId>(), Ok(id));
        }
    }

    #[test]
    fn display_is_the_sample_file_name() {
        assert_eq!(CompositeId::new(1, 2).to_string(), "0000000100000002");
        assert_eq!(CompositeId::new(-1, 0).to_string(), "ffffffff00000000");
    }

    #[test]
    fn order_within_a_stream_is_recording_order() {
        assert!(CompositeId::new(3, 1) < CompositeId::new(3, 2));
        assert!(CompositeId::new(3, i32::MAX) < CompositeId::new(4, 0));
        assert!(CompositeId::new(-2, i32::MAX) < CompositeId::new(-1, 0));
    }

    #[test]
    fn parse_rejects_names_display_never_produces() {
        for bad in [
            "000000010000000A",  // uppercase
            "000000010000002",   // short
            "00000001000000020", // long
            "00000001000000g2",  // not hex
            "+000000100000002",  // sign
            "",
        ] {
            assert_eq!(CompositeId::parse_file_name(bad.as_bytes()), None, "{bad}");
            assert_eq!(
                bad.parse::<CompositeId>(),
                Err(IdError::BadFormat {
                    text: bad.to_owned()
                })
            );
        }
    }

    #[test]
    fn error_names_the_bad_text() {
        assert_eq!(
            "nope".parse::<CompositeId>().map_err(|e| e.to_string()),
            Err("composite id \"nope\" is not 16 lowercase hex digits".to_owned())
        );
    }

    #[test]
    fn parse_rejects_negative_recording_id() {
        let name = "00000001ffffffff";
        assert_eq!(CompositeId::parse_file_name(name.as_bytes()), None);
        assert_eq!(
            name.parse::<CompositeId>(),
            Err(IdError::NegativeRecording {
                text: name.to_owned()
            })
        );
    }

    #[test]
    fn parse_rejects_non_utf8_bytes() {
        assert_eq!(CompositeId::parse_file_name(b"00000001000000\xff2"), None);
    }

    #[test]
    #[should_panic(expected = "negative")]
    fn new_panics_on_negative_recording_id() {
        CompositeId::new(1, -1);
    }
}
