//! A progressive `.mp4` (ISO/IEC 14496-12) of one video track, built from sample indexes.
//!
//! Why not a muxer crate: the Rust muxers take samples one at a time with their bytes, and
//! either keep the whole media in memory or write the `moov` last (a seek back, or a second
//! pass to make the file start quickly). nvr already knows every sample's size, duration and
//! key flag from the sample indexes before reading a byte of video, so the `moov` can be
//! written first and the `mdat` streamed straight from the sample files. What remains is a
//! header builder of a dozen boxes, small enough to own and test box by box.
//!
//! The file is:
//!
//! ```text
//! ftyp (isom; isom iso2 avc1 mp41)
//! moov
//!   mvhd                          timescale 90 000
//!   trak
//!     tkhd                        enabled, in movie; width and height as 16.16
//!     mdia
//!       mdhd                      timescale 90 000, language und
//!       hdlr                      vide
//!       minf
//!         vmhd
//!         dinf / dref / "url "    self-contained: the media is in this file
//!         stbl
//!           stsd                  the recordings' sample entry (e.g. avc1 + avcC), verbatim
//!           stts                  durations, run-length coded
//!           stss                  key frames, 1-based sample numbers
//!           stsz                  each sample's size
//!           stsc                  samples per chunk (one chunk per recording)
//!           stco | co64           chunk offsets; co64 once any exceeds 32 bits
//! mdat                            a 64-bit "largesize" header once it exceeds 32 bits
//! ```
//!
//! Every time is in 90 kHz ticks, the unit of the sample indexes, so nothing is rescaled.
//! Boxes whose times may exceed 32 bits (`mvhd`, `tkhd`, `mdhd`) switch to version 1 when
//! they do.

use protocol::{TIME_UNITS_PER_SEC, Time};
use thiserror::Error;

/// Ticks per second of the movie and of the track: the sample index's 90 kHz.
pub const TIMESCALE_90K: u32 = TIME_UNITS_PER_SEC as u32;

/// Seconds from 1904-01-01 (the epoch of mp4 times) to 1970-01-01.
const SECS_1904_TO_1970: i64 = 2_082_844_800;

/// The `ftyp` box: major brand `isom`, minor version 0x200, and the brands a player needs to
/// see to accept H.264 in an ISO base media file.
const FTYP: &[u8] = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41";

/// The identity matrix of `mvhd` and `tkhd` (16.16, 16.16, 2.30 fixed point).
const UNITY_MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// The only track's id; `mvhd`'s next track id is one more.
const TRACK_ID: u32 = 1;

/// `tkhd` flags: track enabled, used in the presentation.
const TKHD_ENABLED_IN_MOVIE: u32 = 0x3;

/// ISO 639-2 "und" packed as three 5-bit letters (each minus 0x60).
const LANGUAGE_UND: u16 =
    ((b'u' - 0x60) as u16) << 10 | ((b'n' - 0x60) as u16) << 5 | (b'd' - 0x60) as u16;

/// Why a header could not be built.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Mp4Error {
    /// The sample entry must be exactly one box with a 32-bit size (as `h264` builds `avc1`).
    #[error(
        "the sample entry ({len} bytes) is not one whole box: its header says {declared} bytes"
    )]
    MalformedSampleEntry { len: usize, declared: u32 },
    /// A movie needs at least one sample.
    #[error("no samples to write")]
    NoSamples,
    /// Sample numbers of the tables are 32-bit.
    #[error("more than {} samples do not fit an mp4 sample table", u32::MAX)]
    TooManySamples,
    /// A box other than `mdat` would exceed the 32-bit box size.
    #[error("the {fourcc} box would take {bytes} bytes, past the 32-bit box size")]
    BoxTooLarge { fourcc: String, bytes: usize },
}

/// One chunk: samples stored back to back in the `mdat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Chunk {
    samples: u32,
    /// Offset of its first byte from the start of the `mdat` payload.
    mdat_offset: u64,
}

/// The sample tables of the one track, built sample by sample.
///
/// Memory is four bytes per sample (the `stsz` entries) plus a few per chunk, key frame and
/// change of duration: an hour of 30 fps video is under half a MiB.
#[derive(Clone, Debug, Default)]
pub struct SampleTable {
    /// `stts`: `(sample_count, sample_delta_90k)` runs of equal durations.
    time_to_sample: Vec<(u32, u32)>,
    /// `stsz`: each sample's size in bytes.
    sizes: Vec<u32>,
    /// `stss`: 1-based numbers of the key-frame samples.
    sync_samples: Vec<u32>,
    chunks: Vec<Chunk>,
    duration_90k: u64,
    mdat_payload_bytes: u64,
}

impl SampleTable {
    pub fn new() -> Self {
        SampleTable::default()
    }

    /// Starts a new chunk at the current end of the `mdat` payload: the following samples are
    /// stored contiguously after it (e.g. one recording's sample file). Starting a chunk while
    /// the current one is empty is harmless.
    pub fn start_chunk(&mut self) {
        if self.chunks.last().is_some_and(|c| c.samples == 0) {
            return;
        }
        self.chunks.push(Chunk {
            samples: 0,
            mdat_offset: self.mdat_payload_bytes,
        });
    }

    /// Appends a sample to the current chunk.
    ///
    /// Panics if no chunk was started: the caller decides where chunks begin.
    pub fn push(&mut self, duration_90k: u32, bytes: u32, is_key: bool) -> Result<(), Mp4Error> {
        let number = u32::try_from(self.sizes.len() + 1).map_err(|_| Mp4Error::TooManySamples)?;
        let chunk = self
            .chunks
            .last_mut()
            .expect("SampleTable::start_chunk before the first sample");
        chunk.samples += 1;
        match self.time_to_sample.last_mut() {
            Some((count, delta)) if *delta == duration_90k => *count += 1,
            _ => self.time_to_sample.push((1, duration_90k)),
        }
        self.sizes.push(bytes);
        if is_key {
            self.sync_samples.push(number);
        }
        self.duration_90k += u64::from(duration_90k);
        self.mdat_payload_bytes += u64::from(bytes);
        Ok(())
    }

    pub fn samples(&self) -> u32 {
        // `push` keeps the count within u32.
        self.sizes.len() as u32
    }

    /// Sum of the durations, 90 kHz.
    pub fn duration_90k(&self) -> u64 {
        self.duration_90k
    }

    /// Sum of the sizes: the bytes that must follow the header.
    pub fn mdat_payload_bytes(&self) -> u64 {
        self.mdat_payload_bytes
    }
}

/// What the track shows.
#[derive(Clone, Copy, Debug)]
pub struct VideoTrack<'a> {
    pub width: u16,
    pub height: u16,
    /// The ISO/IEC 14496-12 sample entry box (e.g. `avc1` holding `avcC`), copied into `stsd`
    /// as it is.
    pub sample_entry: &'a [u8],
    /// Creation and modification time of the movie (e.g. the first recording's start).
    pub created: Time,
}

/// Everything of the file before the `mdat` payload: `ftyp`, `moov` and the `mdat` header.
/// The caller writes these bytes, then exactly [`SampleTable::mdat_payload_bytes`] of
/// samples in the order they were pushed.
#[derive(Clone, Debug)]
pub struct Header {
    pub bytes: Vec<u8>,
    /// Whether chunk offsets are 64-bit (`co64`) rather than `stco`.
    pub wide_offsets: bool,
}

/// Builds the header of a movie of `table`'s samples.
pub fn header(track: &VideoTrack<'_>, table: &SampleTable) -> Result<Header, Mp4Error> {
    check_sample_entry(track.sample_entry)?;
    if table.sizes.is_empty() {
        return Err(Mp4Error::NoSamples);
    }
    let mdat = mdat_header(table.mdat_payload_bytes);
    // The offsets' width sets the moov's length, which moves the offsets; their values do not
    // change its length. So measure with placeholder offsets, then write the real ones. Going
    // wide only lengthens the moov, so the decision is final.
    let mut wide_offsets = false;
    let last_chunk = table.chunks.last().map_or(0, |c| c.mdat_offset);
    let base = loop {
        let moov_len = moov(track, table, 0, wide_offsets)?.len();
        let base = (FTYP.len() + moov_len + mdat.len()) as u64;
        if wide_offsets || base + last_chunk <= u64::from(u32::MAX) {
            break base;
        }
        wide_offsets = true;
    };
    let mut bytes = FTYP.to_vec();
    bytes.extend_from_slice(&moov(track, table, base, wide_offsets)?);
    bytes.extend_from_slice(&mdat);
    debug_assert_eq!(bytes.len() as u64, base);
    Ok(Header {
        bytes,
        wide_offsets,
    })
}

fn check_sample_entry(entry: &[u8]) -> Result<(), Mp4Error> {
    let declared = entry
        .get(..4)
        .map_or(0, |s| u32::from_be_bytes(s.try_into().expect("4 bytes")));
    if entry.len() < 8 || declared as usize != entry.len() {
        return Err(Mp4Error::MalformedSampleEntry {
            len: entry.len(),
            declared,
        });
    }
    Ok(())
}

/// The `mdat` header for a payload of `payload_bytes`: 8 bytes, or 16 with a 64-bit
/// `largesize` (size field 1) when the box would not fit 32 bits.
pub fn mdat_header(payload_bytes: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(16);
    match u32::try_from(payload_bytes + 8) {
        Ok(size) => {
            put_u32(&mut h, size);
            h.extend_from_slice(b"mdat");
        }
        Err(_) => {
            put_u32(&mut h, 1);
            h.extend_from_slice(b"mdat");
            put_u64(&mut h, payload_bytes + 16);
        }
    }
    h
}

/// The `moov` box, with chunk offsets relative to the file start given the `mdat` payload
/// starts at `mdat_payload_start`.
fn moov(
    track: &VideoTrack<'_>,
    table: &SampleTable,
    mdat_payload_start: u64,
    wide_offsets: bool,
) -> Result<Vec<u8>, Mp4Error> {
    let created_sec = u64::try_from(
        track
            .created
            .0
            .div_euclid(TIME_UNITS_PER_SEC)
            .saturating_add(SECS_1904_TO_1970),
    )
    .unwrap_or(0);
    let duration = table.duration_90k;
    let mut out = Vec::new();
    boxed(&mut out, b"moov", |o| {
        timed_full_box(o, b"mvhd", created_sec, duration, 0, |o, v1| {
            put_times(o, v1, created_sec, TIMESCALE_90K, None, duration);
            put_u32(o, 0x0001_0000); // rate 1.0
            put_u16(o, 0x0100); // volume 1.0
            o.extend_from_slice(&[0; 10]); // reserved
            UNITY_MATRIX.iter().for_each(|&m| put_u32(o, m));
            o.extend_from_slice(&[0; 24]); // pre_defined
            put_u32(o, TRACK_ID + 1); // next_track_ID
            Ok(())
        })?;
        boxed(o, b"trak", |o| {
            timed_full_box(
                o,
                b"tkhd",
                created_sec,
                duration,
                TKHD_ENABLED_IN_MOVIE,
                |o, v1| {
                    put_times(o, v1, created_sec, TRACK_ID, Some(0), duration);
                    o.extend_from_slice(&[0; 8]); // reserved
                    put_u16(o, 0); // layer
                    put_u16(o, 0); // alternate_group
                    put_u16(o, 0); // volume: 0 for video
                    put_u16(o, 0); // reserved
                    UNITY_MATRIX.iter().for_each(|&m| put_u32(o, m));
                    put_u32(o, u32::from(track.width) << 16);
                    put_u32(o, u32::from(track.height) << 16);
                    Ok(())
                },
            )?;
            boxed(o, b"mdia", |o| {
                timed_full_box(o, b"mdhd", created_sec, duration, 0, |o, v1| {
                    put_times(o, v1, created_sec, TIMESCALE_90K, None, duration);
                    put_u16(o, LANGUAGE_UND);
                    put_u16(o, 0); // pre_defined
                    Ok(())
                })?;
                full_box(o, b"hdlr", 0, 0, |o| {
                    put_u32(o, 0); // pre_defined
                    o.extend_from_slice(b"vide");
                    o.extend_from_slice(&[0; 12]); // reserved
                    o.extend_from_slice(b"VideoHandler\0");
                    Ok(())
                })?;
                boxed(o, b"minf", |o| {
                    full_box(o, b"vmhd", 0, 1, |o| {
                        o.extend_from_slice(&[0; 8]); // graphicsmode, opcolor
                        Ok(())
                    })?;
                    boxed(o, b"dinf", |o| {
                        full_box(o, b"dref", 0, 0, |o| {
                            put_u32(o, 1); // entry_count
                            // Flag 1: the media data is in this file.
                            full_box(o, b"url ", 0, 1, |_| Ok(()))
                        })
                    })?;
                    boxed(o, b"stbl", |o| {
                        stbl(o, track, table, mdat_payload_start, wide_offsets)
                    })
                })
            })
        })
    })?;
    Ok(out)
}

fn stbl(
    o: &mut Vec<u8>,
    track: &VideoTrack<'_>,
    table: &SampleTable,
    mdat_payload_start: u64,
    wide_offsets: bool,
) -> Result<(), Mp4Error> {
    full_box(o, b"stsd", 0, 0, |o| {
        put_u32(o, 1); // entry_count
        o.extend_from_slice(track.sample_entry);
        Ok(())
    })?;
    full_box(o, b"stts", 0, 0, |o| {
        put_u32(o, table.time_to_sample.len() as u32);
        for &(count, delta) in &table.time_to_sample {
            put_u32(o, count);
            put_u32(o, delta);
        }
        Ok(())
    })?;
    full_box(o, b"stss", 0, 0, |o| {
        put_u32(o, table.sync_samples.len() as u32);
        table.sync_samples.iter().for_each(|&n| put_u32(o, n));
        Ok(())
    })?;
    full_box(o, b"stsz", 0, 0, |o| {
        put_u32(o, 0); // sample_size: 0 = each sample has its own
        put_u32(o, table.samples());
        table.sizes.iter().for_each(|&s| put_u32(o, s));
        Ok(())
    })?;
    full_box(o, b"stsc", 0, 0, |o| {
        // (first_chunk, samples_per_chunk, sample_description_index), one entry per change of
        // samples_per_chunk. Chunks without samples are never left in the table.
        let mut runs: Vec<(u32, u32)> = Vec::new();
        for (i, c) in table.chunks.iter().filter(|c| c.samples > 0).enumerate() {
            if runs.last().is_none_or(|&(_, n)| n != c.samples) {
                runs.push((i as u32 + 1, c.samples));
            }
        }
        put_u32(o, runs.len() as u32);
        for (first_chunk, samples) in runs {
            put_u32(o, first_chunk);
            put_u32(o, samples);
            put_u32(o, 1);
        }
        Ok(())
    })?;
    let chunks = table.chunks.iter().filter(|c| c.samples > 0);
    let count = chunks.clone().count() as u32;
    if wide_offsets {
        full_box(o, b"co64", 0, 0, |o| {
            put_u32(o, count);
            chunks.for_each(|c| put_u64(o, mdat_payload_start + c.mdat_offset));
            Ok(())
        })
    } else {
        full_box(o, b"stco", 0, 0, |o| {
            put_u32(o, count);
            for c in chunks {
                let offset = mdat_payload_start + c.mdat_offset;
                // `header` chose stco only when the largest offset fits (or offsets are
                // placeholders while measuring).
                put_u32(o, u32::try_from(offset).unwrap_or(u32::MAX));
            }
            Ok(())
        })
    }
}

/// Appends a box: its 32-bit size, `fourcc`, and what `body` appends.
fn boxed(
    out: &mut Vec<u8>,
    fourcc: &[u8; 4],
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), Mp4Error>,
) -> Result<(), Mp4Error> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(fourcc);
    body(out)?;
    let bytes = out.len() - start;
    let size = u32::try_from(bytes).map_err(|_| Mp4Error::BoxTooLarge {
        fourcc: String::from_utf8_lossy(fourcc).into_owned(),
        bytes,
    })?;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

/// Appends a "full box": a box whose body starts with a version byte and 24 bits of flags.
fn full_box(
    out: &mut Vec<u8>,
    fourcc: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), Mp4Error>,
) -> Result<(), Mp4Error> {
    boxed(out, fourcc, |o| {
        put_u32(o, u32::from(version) << 24 | (flags & 0x00ff_ffff));
        body(o)
    })
}

/// A full box with times (`mvhd`, `tkhd`, `mdhd`): version 1 (64-bit times) when the time or
/// the duration does not fit 32 bits; `body` is told which.
fn timed_full_box(
    out: &mut Vec<u8>,
    fourcc: &[u8; 4],
    time_sec: u64,
    duration: u64,
    flags: u32,
    body: impl FnOnce(&mut Vec<u8>, bool) -> Result<(), Mp4Error>,
) -> Result<(), Mp4Error> {
    let v1 = time_sec > u64::from(u32::MAX) || duration > u64::from(u32::MAX);
    full_box(out, fourcc, u8::from(v1), flags, |o| body(o, v1))
}

/// The shared head of `mvhd`, `tkhd` and `mdhd`: creation and modification time, a 32-bit
/// field (timescale, or `tkhd`'s track id followed by `reserved`), then the duration; 32 or 64
/// bits wide by version.
fn put_times(
    o: &mut Vec<u8>,
    v1: bool,
    time_sec: u64,
    field: u32,
    reserved: Option<u32>,
    duration: u64,
) {
    let put_wide = |o: &mut Vec<u8>, n: u64| {
        if v1 {
            put_u64(o, n);
        } else {
            // Version 0 is chosen only when every value fits.
            put_u32(o, n as u32);
        }
    };
    put_wide(o, time_sec); // creation_time
    put_wide(o, time_sec); // modification_time
    put_u32(o, field);
    if let Some(r) = reserved {
        put_u32(o, r);
    }
    put_wide(o, duration);
}

fn put_u16(o: &mut Vec<u8>, n: u16) {
    o.extend_from_slice(&n.to_be_bytes());
}

fn put_u32(o: &mut Vec<u8>, n: u32) {
    o.extend_from_slice(&n.to_be_bytes());
}

fn put_u64(o: &mut Vec<u8>, n: u64) {
    o.extend_from_slice(&n.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal, well-formed sample entry: an `avc1` box of 16 bytes.
    const ENTRY: &[u8] = b"\x00\x00\x00\x10avc1\x01\x02\x03\x04\x05\x06\x07\x08";

    fn track() -> VideoTrack<'static> {
        VideoTrack {
            width: 320,
            height: 240,
            sample_entry: ENTRY,
            created: Time(0),
        }
    }

    /// A box as parsed back: type, the range of its body within the buffer.
    #[derive(Debug)]
    struct Parsed {
        fourcc: String,
        body: std::ops::Range<usize>,
    }

    /// Splits `buf[range]` into boxes, checking each size stays inside the range and that they
    /// tile it exactly.
    fn boxes(buf: &[u8], range: std::ops::Range<usize>) -> Vec<Parsed> {
        let mut out = Vec::new();
        let mut at = range.start;
        while at < range.end {
            let size32 = u32::from_be_bytes(buf[at..at + 4].try_into().unwrap());
            let fourcc = String::from_utf8(buf[at + 4..at + 8].to_vec()).unwrap();
            let (header, size) = match size32 {
                1 => (
                    16,
                    u64::from_be_bytes(buf[at + 8..at + 16].try_into().unwrap()),
                ),
                n => (8, u64::from(n)),
            };
            let end = at + size as usize;
            assert!(end <= range.end, "{fourcc} at {at} overruns its parent");
            out.push(Parsed {
                fourcc,
                body: at + header..end,
            });
            at = end;
        }
        assert_eq!(at, range.end, "boxes tile their parent");
        out
    }

    /// Length of a header without its trailing `mdat` header (whose size counts the payload
    /// that follows the header).
    fn before_mdat(buf: &[u8]) -> usize {
        let n = buf.len();
        if n >= 16 && &buf[n - 16..n - 8] == b"\x00\x00\x00\x01mdat" {
            n - 16
        } else {
            assert_eq!(&buf[n - 4..], b"mdat");
            n - 8
        }
    }

    /// The body of the child `path` (e.g. `["moov", "trak"]`) of a header.
    fn find(buf: &[u8], path: &[&str]) -> std::ops::Range<usize> {
        let mut range = 0..before_mdat(buf);
        for (depth, name) in path.iter().enumerate() {
            // Full boxes with children: skip version/flags (and dref/stsd's entry count).
            let skip = match depth.checked_sub(1).map(|d| path[d]) {
                Some("dref" | "stsd") => 8,
                _ => 0,
            };
            let children = boxes(buf, range.start + skip..range.end);
            range = children
                .into_iter()
                .find(|b| b.fourcc == *name)
                .unwrap_or_else(|| panic!("no {name} in {path:?}"))
                .body;
        }
        range
    }

    fn u32s(buf: &[u8], range: std::ops::Range<usize>) -> Vec<u32> {
        buf[range]
            .chunks(4)
            .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn names(buf: &[u8], range: std::ops::Range<usize>) -> Vec<String> {
        boxes(buf, range).into_iter().map(|b| b.fourcc).collect()
    }

    /// Two chunks: three samples (key, 3000, 3000, 3000) and two (key, 3000, 1500).
    fn two_chunks() -> SampleTable {
        let mut t = SampleTable::new();
        t.start_chunk();
        t.push(3000, 100, true).unwrap();
        t.push(3000, 10, false).unwrap();
        t.push(3000, 11, false).unwrap();
        t.start_chunk();
        t.push(3000, 120, true).unwrap();
        t.push(1500, 12, false).unwrap();
        t
    }

    #[test]
    fn boxes_nest_as_the_standard_orders_them_and_sizes_add_up() {
        let table = two_chunks();
        let h = header(&track(), &table).unwrap();
        let b = &h.bytes;
        assert_eq!(names(b, 0..before_mdat(b)), ["ftyp", "moov"]);
        assert_eq!(&b[b.len() - 8..b.len() - 4], &(8u32 + 253).to_be_bytes());
        assert_eq!(&b[b.len() - 4..], b"mdat");
        assert_eq!(table.mdat_payload_bytes(), 253);
        let moov = find(b, &["moov"]);
        assert_eq!(names(b, moov), ["mvhd", "trak"]);
        assert_eq!(names(b, find(b, &["moov", "trak"])), ["tkhd", "mdia"]);
        assert_eq!(
            names(b, find(b, &["moov", "trak", "mdia"])),
            ["mdhd", "hdlr", "minf"]
        );
        let minf = ["moov", "trak", "mdia", "minf"];
        assert_eq!(names(b, find(b, &minf)), ["vmhd", "dinf", "stbl"]);
        let stbl = [&minf[..], &["stbl"]].concat();
        assert_eq!(
            names(b, find(b, &stbl)),
            ["stsd", "stts", "stss", "stsz", "stsc", "stco"]
        );
        assert!(!h.wide_offsets);
        let url = find(b, &[&minf[..], &["dinf", "dref", "url "]].concat());
        assert_eq!(&b[url], &[0, 0, 0, 1], "self-contained");
        let stsd = find(b, &[&stbl[..], &["stsd"]].concat());
        assert_eq!(&b[stsd.start + 8..stsd.end], ENTRY, "sample entry verbatim");
    }

    #[test]
    fn sample_tables_hold_durations_keys_sizes_chunks_and_offsets() {
        let table = two_chunks();
        let h = header(&track(), &table).unwrap();
        let b = &h.bytes;
        let stbl = |name: &str| {
            let r = find(b, &["moov", "trak", "mdia", "minf", "stbl", name]);
            u32s(b, r.start + 4..r.end) // past version and flags
        };
        // Run-length: 4 x 3000, then 1 x 1500.
        assert_eq!(stbl("stts"), [2, 4, 3000, 1, 1500]);
        assert_eq!(stbl("stss"), [2, 1, 4]);
        assert_eq!(stbl("stsz"), [0, 5, 100, 10, 11, 120, 12]);
        // Chunk 1 holds 3 samples, chunk 2 holds 2.
        assert_eq!(stbl("stsc"), [2, 1, 3, 1, 2, 2, 1]);
        let payload = b.len() as u32;
        assert_eq!(stbl("stco"), [2, payload, payload + 121]);
    }

    #[test]
    fn track_header_and_media_header_carry_size_timescale_and_duration() {
        let table = two_chunks();
        let created = Time(1_795_754_918 * 90_000);
        let t = VideoTrack { created, ..track() };
        let b = header(&t, &table).unwrap().bytes;
        let mvhd = u32s(&b, find(&b, &["moov", "mvhd"]));
        let created_1904 = (1_795_754_918 + SECS_1904_TO_1970) as u32;
        assert_eq!(mvhd[..5], [0, created_1904, created_1904, 90_000, 13_500]);
        let tkhd = find(&b, &["moov", "trak", "tkhd"]);
        let tkhd = u32s(&b, tkhd);
        assert_eq!(tkhd[0], TKHD_ENABLED_IN_MOVIE);
        assert_eq!(tkhd[3], TRACK_ID);
        assert_eq!(tkhd[5], 13_500);
        assert_eq!(tkhd[tkhd.len() - 2..], [320 << 16, 240 << 16]);
        let mdhd = u32s(&b, find(&b, &["moov", "trak", "mdia", "mdhd"]));
        assert_eq!(mdhd[3..5], [90_000, 13_500]);
        let hdlr = find(&b, &["moov", "trak", "mdia", "hdlr"]);
        assert_eq!(&b[hdlr.start + 8..hdlr.start + 12], b"vide");
    }

    #[test]
    fn repeated_start_chunk_leaves_no_empty_chunk() {
        let mut t = SampleTable::new();
        t.start_chunk();
        t.start_chunk();
        t.push(3000, 5, true).unwrap();
        t.start_chunk();
        let b = header(&track(), &t).unwrap().bytes;
        let stco = find(&b, &["moov", "trak", "mdia", "minf", "stbl", "stco"]);
        assert_eq!(u32s(&b, stco)[1], 1, "one chunk");
    }

    #[test]
    fn offsets_past_4_gib_switch_to_co64_and_mdat_to_largesize() {
        let mut t = SampleTable::new();
        // Three chunks of one 2 GiB sample each: the third starts past 4 GiB.
        for _ in 0..3 {
            t.start_chunk();
            t.push(3000, 1 << 31, true).unwrap();
        }
        let h = header(&track(), &t).unwrap();
        assert!(h.wide_offsets);
        let b = &h.bytes;
        let stbl = find(b, &["moov", "trak", "mdia", "minf", "stbl"]);
        assert_eq!(names(b, stbl.clone()).last().unwrap(), "co64");
        let co64 = find(b, &["moov", "trak", "mdia", "minf", "stbl", "co64"]);
        let body = &b[co64.start + 8..co64.end];
        let offsets: Vec<u64> = body
            .chunks(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
            .collect();
        let start = b.len() as u64;
        assert_eq!(offsets, [start, start + (1 << 31), start + (2 << 31)]);
        // mdat: size 1, then the 64-bit size including its 16-byte header.
        let mdat = &b[b.len() - 16..];
        assert_eq!(&mdat[..8], b"\x00\x00\x00\x01mdat");
        assert_eq!(
            u64::from_be_bytes(mdat[8..].try_into().unwrap()),
            (3u64 << 31) + 16
        );
    }

    #[test]
    fn mdat_header_is_32_bit_exactly_while_it_fits() {
        let fits = u64::from(u32::MAX) - 8;
        assert_eq!(mdat_header(fits)[..4], u32::MAX.to_be_bytes());
        assert_eq!(mdat_header(fits).len(), 8);
        assert_eq!(mdat_header(fits + 1).len(), 16);
    }

    #[test]
    fn stco_is_kept_while_the_last_chunk_starts_below_4_gib() {
        let mut t = SampleTable::new();
        t.start_chunk();
        t.push(3000, 1 << 31, true).unwrap();
        t.start_chunk();
        t.push(3000, 1 << 31, true).unwrap();
        // The payload exceeds 4 GiB (largesize), but both chunks start below it.
        let h = header(&track(), &t).unwrap();
        assert!(!h.wide_offsets);
        assert_eq!(
            &h.bytes[h.bytes.len() - 16..h.bytes.len() - 8],
            b"\x00\x00\x00\x01mdat"
        );
    }

    #[test]
    fn long_movies_use_version_1_times() {
        let mut t = SampleTable::new();
        t.start_chunk();
        // Two samples of 2^31 ticks: the duration exceeds 32 bits (about 13 h at 90 kHz).
        t.push(1 << 31, 1, true).unwrap();
        t.push(1 << 31, 1, false).unwrap();
        let b = header(&track(), &t).unwrap().bytes;
        let mvhd = find(&b, &["moov", "mvhd"]);
        assert_eq!(b[mvhd.start], 1, "version 1");
        // version/flags, creation (8), modification (8), timescale (4), duration (8)
        let d = &b[mvhd.start + 24..mvhd.start + 32];
        assert_eq!(u64::from_be_bytes(d.try_into().unwrap()), 1 << 32);
        let mdhd = find(&b, &["moov", "trak", "mdia", "mdhd"]);
        assert_eq!(b[mdhd.start], 1);
    }

    #[test]
    fn malformed_sample_entries_and_empty_tables_are_refused() {
        let mut t = SampleTable::new();
        assert_eq!(header(&track(), &t).unwrap_err(), Mp4Error::NoSamples);
        t.start_chunk();
        t.push(3000, 1, true).unwrap();
        for entry in [&b""[..], b"\x00\x00\x00\x08av", b"\x00\x00\x00\x20avc1\x00"] {
            let bad = VideoTrack {
                sample_entry: entry,
                ..track()
            };
            assert!(matches!(
                header(&bad, &t),
                Err(Mp4Error::MalformedSampleEntry { .. })
            ));
        }
    }
}
