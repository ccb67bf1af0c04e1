//! H.264 (AVC) parsing for the `file:PATH` source: from an Annex B byte stream to the frames
//! and the sample entry that a recording needs.
//!
//! The pipeline, each stage usable on its own:
//!
//! 1. [`nal_units`] splits an Annex B byte stream (ITU-T H.264 Annex B) into [`NalUnit`]s:
//!    3- and 4-byte start codes, leading and trailing zero bytes. Garbage is a typed
//!    [`H264Error`] naming the byte offset, never a panic.
//! 2. [`access_units`] groups NAL units into [`AccessUnit`]s (one coded picture each, H.264
//!    7.4.1.2.3): a new access unit begins at an access unit delimiter, at an SPS, PPS, SEI or
//!    type 14..=18 NAL unit that follows a slice, or at a slice with `first_mb_in_slice == 0`
//!    that follows a slice. A key frame is an access unit holding an IDR slice.
//! 3. [`Sps::parse`] and [`SampleEntry::from_parameter_sets`] turn the parameter sets into the
//!    picture size (after cropping), the RFC 6381 codec string `avc1.PPCCLL`, and the ISO/IEC
//!    14496-12 `avc1` VisualSampleEntry box with its ISO/IEC 14496-15 `avcC` record: the bytes
//!    an `.mp4` `stsd` holds, and what the syncer stores as a video sample entry.
//! 4. [`parse_clip`] does all of the above for a whole in-memory stream and returns a [`Clip`]
//!    of [`Frame`]s in the AVC sample format: every NAL unit prefixed by its 4-byte big-endian
//!    length, as an `.mp4` sample holds it, without SPS, PPS and access unit delimiters (the
//!    parameter sets live in the sample entry; the delimiters carry nothing a sample needs).
//!
//! # Why `h264-reader` for the parameter sets, and not for the byte stream
//!
//! The SPS is dense with conditional syntax (chroma format, bit depths and scaling lists of the
//! High profiles, interlacing, cropping, VUI with HRD parameters); a subtle slip there silently
//! yields a wrong size. `h264-reader` (also what Moonfire NVR's RTSP library, retina, uses) is
//! maintained, parses all of it, removes emulation-prevention bytes, and checks values against
//! the spec's ranges and level limits. This module uses it for the SPS, the PPS and the few
//! slice-header fields it needs. The Annex B splitter is written here instead: the crate's
//! push-based reader is built for streaming callbacks and passes garbage through silently,
//! while this module wants borrowed slices with their byte offsets and a typed error for
//! input that is not an H.264 byte stream at all.
//!
//! # Parameter-set changes: one sample entry per generation
//!
//! A stream may change its SPS or PPS mid-way (a camera reconfigured, or clips concatenated).
//! [`Clip::sample_entries`] lists every distinct sample entry in order of first use, and each
//! [`Frame::sample_entry_index`] names the one it was coded with. Parameter sets repeated
//! unchanged before each key frame (as most encoders send them) do not start a new entry, and a
//! stream that returns to earlier parameters reuses that entry, so entries are exactly the
//! distinct `avc1` boxes. The alternative, ending the clip or yielding an event at each change,
//! would push the bookkeeping onto every consumer; an index per frame lets the writer see "the
//! video parameters changed" by comparing two integers and close the recording there (issue 3).
//!
//! # What is not supported, loudly
//!
//! - One SPS and one PPS at a time: a slice or PPS that refers to a parameter-set id other than
//!   the latest one's is [`H264Error::ParameterSetMismatch`]. Cameras send a single pair; a
//!   stream that switches between several PPS ids per picture would need an `avcC` listing all
//!   of them, which the syncer's one-sample-entry-per-recording model does not want either.
//! - Field pictures (`field_pic_flag == 1`): an `.mp4` sample is a frame, and pairing fields
//!   into frames is not done here. Interlaced *frame* coding (MBAFF) is fine.
//! - Data partitioning without partition A (Extended profile), and sizes beyond the 16-bit
//!   width and height of a VisualSampleEntry.
//!
//! Key frames are IDR pictures only; a stream that relies on recovery-point SEI messages
//! instead has no key frames here.

use std::io::ErrorKind;

use h264_reader::Context;
use h264_reader::nal::pps::{PicParameterSet, PpsError};
use h264_reader::nal::sps::{ChromaFormat, FrameMbsFlags, ProfileIdc, SeqParameterSet, SpsError};
use h264_reader::rbsp::{BitRead, BitReader, BitReaderError, ByteReader};

/// Largest frame (all of an access unit's NAL units with their length prefixes), in bytes: the
/// syncer's largest accepted sample ([`protocol::limits::MAX_SAMPLE_BYTES`]), so an oversized
/// frame is reported here, naming its position in the source, rather than as a rejected
/// recording later.
pub const MAX_FRAME_BYTES: usize = protocol::limits::MAX_SAMPLE_BYTES as usize;

/// Bytes of the big-endian length before each NAL unit of a [`Frame`] (`avcC`'s
/// `lengthSizeMinusOne` is this minus one).
pub const NAL_LENGTH_BYTES: usize = 4;

/// Bytes of an `avc1` VisualSampleEntry before its `avcC` box: box header (8), reserved (6),
/// data_reference_index (2), pre_defined and reserved (16), width and height (4), resolutions
/// (8), reserved (4), frame_count (2), compressorname (32), depth (2), pre_defined (2).
const VISUAL_SAMPLE_ENTRY_BYTES: usize = 86;

/// Bytes of an ISO BMFF box header: 32-bit size and four-character type.
const BOX_HEADER_BYTES: usize = 8;

/// 72 dots per inch in 16.16 fixed point, the value ISO/IEC 14496-12 prescribes.
const RESOLUTION_72_DPI: u32 = 0x0048_0000;

/// NAL unit types (H.264 Table 7-1) that this module treats specially.
pub mod nal_type {
    /// Coded slice of a non-IDR picture.
    pub const SLICE: u8 = 1;
    /// Coded slice data partition A (carries the slice header).
    pub const SLICE_PARTITION_A: u8 = 2;
    /// Coded slice data partition C, the last of the partition types.
    pub const SLICE_PARTITION_C: u8 = 4;
    /// Coded slice of an IDR picture: the access unit is a key frame.
    pub const SLICE_IDR: u8 = 5;
    /// Supplemental enhancement information.
    pub const SEI: u8 = 6;
    /// Sequence parameter set.
    pub const SPS: u8 = 7;
    /// Picture parameter set.
    pub const PPS: u8 = 8;
    /// Access unit delimiter.
    pub const AUD: u8 = 9;
    /// First of the types (prefix NAL unit, subset SPS, depth parameter set, reserved) that,
    /// like an SPS, begin a new access unit when they follow a slice.
    pub const FIRST_AU_PREFIX: u8 = 14;
    /// Last of the types that begin a new access unit when they follow a slice.
    pub const LAST_AU_PREFIX: u8 = 18;
}

/// Why a byte stream could not be parsed. Every variant but [`H264Error::NoFrames`] names the
/// byte offset in the input where the problem is (for a NAL unit, the offset of its header
/// byte, just after the start code).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum H264Error {
    /// Bytes that are neither zero padding nor an Annex B start code where one must be: the
    /// input is not an H.264 byte stream, or a NAL unit holds a `00 00 00` sequence.
    #[error("expected an Annex B start code (00 00 01) at byte {offset}: not an H.264 byte stream")]
    MissingStartCode { offset: usize },

    /// A NAL unit header with its forbidden_zero_bit (the top bit) set.
    #[error("NAL unit at byte {offset} has forbidden_zero_bit set (header byte {header:#04x})")]
    ForbiddenZeroBit { offset: usize, header: u8 },

    /// The input ends, or the next start code comes, before `what` is complete.
    #[error("truncated {what} at byte {offset}")]
    Truncated { offset: usize, what: &'static str },

    /// A syntax error or out-of-range value in `what`.
    #[error("malformed {what} at byte {offset}: {reason}")]
    Malformed {
        offset: usize,
        what: &'static str,
        reason: String,
    },

    /// Valid H.264 that this module does not handle (see the module documentation).
    #[error("unsupported H.264 stream at byte {offset}: {what}")]
    Unsupported { offset: usize, what: String },

    /// A slice before any SPS or PPS: there is nothing to describe it with.
    #[error("slice at byte {offset} comes before any {missing}")]
    MissingParameterSet {
        offset: usize,
        missing: &'static str,
    },

    /// A slice or PPS that refers to a parameter set other than the current one.
    #[error(
        "{what} at byte {offset} refers to {refers_to} id {id}, but the current {refers_to} has id {current}"
    )]
    ParameterSetMismatch {
        offset: usize,
        what: &'static str,
        refers_to: &'static str,
        id: u32,
        current: u32,
    },

    /// NAL units that form no picture: an access unit delimiter, SEI or parameter sets followed
    /// by another access unit delimiter or by the end of the stream.
    #[error("access unit at byte {offset} has no coded picture (no slice NAL unit)")]
    AccessUnitWithoutPicture { offset: usize },

    /// A frame larger than [`MAX_FRAME_BYTES`].
    #[error("frame at byte {offset} is {bytes} bytes, over the limit of {MAX_FRAME_BYTES}")]
    FrameTooLarge { offset: usize, bytes: usize },

    /// A stream with no coded picture at all.
    #[error("the H.264 stream holds no frames")]
    NoFrames,
}

/// One NAL unit of a byte stream: its header byte and payload, still with its emulation
/// prevention bytes (exactly what goes into an `avcC` record or a length-prefixed sample).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NalUnit<'a> {
    offset: usize,
    bytes: &'a [u8],
}

impl<'a> NalUnit<'a> {
    /// Checks a NAL unit from outside an Annex B stream (e.g. RTP); `offset` is where it starts
    /// in whatever the caller wants errors to point into. It must hold a header byte whose
    /// forbidden_zero_bit is clear.
    pub fn new(offset: usize, bytes: &'a [u8]) -> Result<Self, H264Error> {
        let Some(&header) = bytes.first() else {
            return Err(H264Error::Truncated {
                offset,
                what: "NAL unit (empty)",
            });
        };
        if header & 0x80 != 0 {
            return Err(H264Error::ForbiddenZeroBit { offset, header });
        }
        Ok(Self { offset, bytes })
    }

    /// Byte offset of the header byte in the input.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The header byte and the payload; never empty.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// `nal_unit_type`, the low 5 bits of the header (see [`nal_type`]).
    pub fn nal_type(&self) -> u8 {
        self.bytes[0] & 0x1f
    }

    /// Whether this is a VCL NAL unit: coded slice data (types 1 to 5).
    pub fn is_vcl(&self) -> bool {
        (nal_type::SLICE..=nal_type::SLICE_IDR).contains(&self.nal_type())
    }

    /// Whether this NAL unit starts with a slice header (coded slices and partition A).
    fn has_slice_header(&self) -> bool {
        matches!(
            self.nal_type(),
            nal_type::SLICE | nal_type::SLICE_PARTITION_A | nal_type::SLICE_IDR
        )
    }

    /// A reader of the RBSP: the payload after the header, emulation prevention removed.
    fn rbsp(&self) -> BitReader<ByteReader<&'a [u8]>> {
        BitReader::new(ByteReader::skipping_h264_header(self.bytes))
    }
}

/// Splits an Annex B byte stream into its NAL units. See [`NalUnits`].
pub fn nal_units(stream: &[u8]) -> NalUnits<'_> {
    NalUnits {
        stream,
        pos: 0,
        failed: false,
    }
}

/// Iterator over the NAL units of an Annex B byte stream.
///
/// Each NAL unit follows a start code `00 00 01`; any number of zero bytes may precede a start
/// code (`zero_byte`, `leading_zero_8bits` and `trailing_zero_8bits` in Annex B, which makes
/// the 4-byte form `00 00 00 01` just a case of this). A NAL unit runs to the next `00 00 00`
/// or `00 00 01`, which emulation prevention keeps out of its payload, or to the end of the
/// input, and loses its trailing zero bytes: a NAL unit's last byte is never zero.
///
/// Empty input yields nothing; any other input must hold a NAL unit. After the first error the
/// iterator ends.
#[derive(Clone, Debug)]
pub struct NalUnits<'a> {
    stream: &'a [u8],
    /// Where the zero bytes and start code before the next NAL unit begin.
    pos: usize,
    failed: bool,
}

impl<'a> NalUnits<'a> {
    fn next_unit(&mut self) -> Result<Option<NalUnit<'a>>, H264Error> {
        let stream = self.stream;
        let zeros_start = self.pos;
        let zeros = stream[zeros_start..]
            .iter()
            .take_while(|&&b| b == 0)
            .count();
        let one = zeros_start + zeros;
        self.pos = one;
        if one == stream.len() {
            // Trailing zeros after the last NAL unit are padding, but input that is nothing
            // but zeros has no start code at all.
            return if zeros_start == 0 {
                Err(H264Error::MissingStartCode { offset: one })
            } else {
                Ok(None)
            };
        }
        if stream[one] != 1 || zeros < 2 {
            return Err(H264Error::MissingStartCode { offset: one });
        }
        let start = one + 1;
        if start == stream.len() {
            return Err(H264Error::Truncated {
                offset: zeros_start,
                what: "NAL unit (start code at the end of the input)",
            });
        }
        let boundary = stream[start..]
            .windows(3)
            .position(|w| w[0] == 0 && w[1] == 0 && w[2] <= 1)
            .map_or(stream.len(), |p| start + p);
        let trailing_zeros = stream[start..boundary]
            .iter()
            .rev()
            .take_while(|&&b| b == 0)
            .count();
        self.pos = boundary;
        NalUnit::new(start, &stream[start..boundary - trailing_zeros]).map(Some)
    }
}

impl<'a> Iterator for NalUnits<'a> {
    type Item = Result<NalUnit<'a>, H264Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos == self.stream.len() {
            return None;
        }
        let result = self.next_unit();
        self.failed = result.is_err();
        result.transpose()
    }
}

/// The NAL units of one coded picture, in stream order; at least one is a slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessUnit<'a> {
    nal_units: Vec<NalUnit<'a>>,
}

impl<'a> AccessUnit<'a> {
    /// The NAL units, in stream order.
    pub fn nal_units(&self) -> &[NalUnit<'a>] {
        &self.nal_units
    }

    /// Byte offset of the first NAL unit's header.
    pub fn offset(&self) -> usize {
        self.nal_units[0].offset
    }

    /// Whether this access unit is a key frame: it holds an IDR slice, so decoding can start
    /// here (given the parameter sets).
    pub fn is_key(&self) -> bool {
        self.nal_units
            .iter()
            .any(|n| n.nal_type() == nal_type::SLICE_IDR)
    }

    fn first_slice(&self) -> &NalUnit<'a> {
        self.nal_units
            .iter()
            .find(|n| n.is_vcl())
            .expect("an AccessUnit holds a slice")
    }
}

/// Groups the NAL units of an Annex B byte stream into access units. See [`AccessUnits`].
pub fn access_units(stream: &[u8]) -> AccessUnits<'_> {
    AccessUnits {
        nal_units: nal_units(stream),
        pending: Vec::new(),
        pending_has_slice: false,
        failed: false,
    }
}

/// Iterator over the access units of an Annex B byte stream, by the rule in the module
/// documentation. It holds back one access unit until it sees where the next one begins.
/// After the first error the iterator ends.
#[derive(Clone, Debug)]
pub struct AccessUnits<'a> {
    nal_units: NalUnits<'a>,
    /// NAL units of the access unit being gathered.
    pending: Vec<NalUnit<'a>>,
    /// Whether `pending` holds a slice, so the next AUD, parameter set, SEI or first slice of
    /// a picture begins a new access unit.
    pending_has_slice: bool,
    failed: bool,
}

impl<'a> AccessUnits<'a> {
    fn next_unit(&mut self) -> Result<Option<AccessUnit<'a>>, H264Error> {
        loop {
            let Some(nal) = self.nal_units.next().transpose()? else {
                return self.take_pending(None);
            };
            let t = nal.nal_type();
            let starts_new = if self.pending_has_slice {
                match t {
                    nal_type::AUD | nal_type::SEI | nal_type::SPS | nal_type::PPS => true,
                    nal_type::FIRST_AU_PREFIX..=nal_type::LAST_AU_PREFIX => true,
                    _ if nal.has_slice_header() => first_mb_in_slice(&nal)? == 0,
                    _ => false,
                }
            } else {
                // An AUD is always first; anything gathered before it had no picture.
                t == nal_type::AUD && !self.pending.is_empty()
            };
            if starts_new {
                return self.take_pending(Some(nal));
            }
            self.pending_has_slice |= nal.is_vcl();
            self.pending.push(nal);
        }
    }

    /// Completes the pending access unit and starts the next with `next` (if any).
    fn take_pending(
        &mut self,
        next: Option<NalUnit<'a>>,
    ) -> Result<Option<AccessUnit<'a>>, H264Error> {
        let nal_units = std::mem::replace(&mut self.pending, next.into_iter().collect());
        let had_slice = std::mem::replace(
            &mut self.pending_has_slice,
            next.is_some_and(|n| n.is_vcl()),
        );
        match nal_units.first() {
            None => Ok(None),
            Some(first) if !had_slice => Err(H264Error::AccessUnitWithoutPicture {
                offset: first.offset,
            }),
            Some(_) => Ok(Some(AccessUnit { nal_units })),
        }
    }
}

impl<'a> Iterator for AccessUnits<'a> {
    type Item = Result<AccessUnit<'a>, H264Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let result = self.next_unit();
        self.failed = result.is_err();
        result.transpose()
    }
}

/// Maps a bit-reader error in `what` to a typed error: running out of bits is truncation.
fn bit_error(nal: &NalUnit<'_>, what: &'static str, e: BitReaderError) -> H264Error {
    match e {
        BitReaderError::ReaderError(_, ref io) if io.kind() == ErrorKind::UnexpectedEof => {
            H264Error::Truncated {
                offset: nal.offset,
                what,
            }
        }
        e => H264Error::Malformed {
            offset: nal.offset,
            what,
            reason: format!("{e:?}"),
        },
    }
}

/// Reads `first_mb_in_slice`, the first field of a slice header.
fn first_mb_in_slice(nal: &NalUnit<'_>) -> Result<u32, H264Error> {
    nal.rbsp()
        .read_ue("first_mb_in_slice")
        .map_err(|e| bit_error(nal, "slice header", e))
}

/// The slice-header fields that tie a picture to its parameter sets and tell its structure.
struct SliceHeaderStart {
    pic_parameter_set_id: u32,
    field_pic: bool,
}

impl SliceHeaderStart {
    /// Reads a slice header (H.264 7.3.3) up to `field_pic_flag`, which needs the SPS.
    fn read(nal: &NalUnit<'_>, sps: &Sps) -> Result<Self, H264Error> {
        let mut r = nal.rbsp();
        let err = |e| bit_error(nal, "slice header", e);
        r.read_ue("first_mb_in_slice").map_err(err)?;
        r.read_ue("slice_type").map_err(err)?;
        let pic_parameter_set_id = r.read_ue("pic_parameter_set_id").map_err(err)?;
        if sps.separate_colour_plane {
            r.skip(2, "colour_plane_id").map_err(err)?;
        }
        r.skip(u32::from(sps.log2_max_frame_num), "frame_num")
            .map_err(err)?;
        let field_pic = !sps.frame_mbs_only && r.read_bit("field_pic_flag").map_err(err)?;
        Ok(Self {
            pic_parameter_set_id,
            field_pic,
        })
    }
}

/// What this module needs of a sequence parameter set (H.264 7.3.2.1.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sps {
    pub seq_parameter_set_id: u8,
    pub profile_idc: u8,
    /// `constraint_set0_flag` to `constraint_set5_flag` and the two reserved zero bits, as the
    /// byte that follows `profile_idc` in the SPS.
    pub constraint_flags: u8,
    pub level_idc: u8,
    /// 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4 (1 when the profile does not code it).
    pub chroma_format_idc: u8,
    pub separate_colour_plane: bool,
    pub bit_depth_luma_minus8: u8,
    pub bit_depth_chroma_minus8: u8,
    /// Bits of `frame_num` in a slice header.
    pub log2_max_frame_num: u8,
    /// False when pictures may be fields or MBAFF frames (interlaced coding).
    pub frame_mbs_only: bool,
    /// Displayed width in pixels, after cropping.
    pub width: u16,
    /// Displayed height in pixels, after cropping.
    pub height: u16,
    /// Duration of one frame in 90 kHz ticks from the VUI timing information:
    /// `2 * num_units_in_tick / time_scale` seconds (H.264 E.2.1: a frame is two ticks),
    /// rounded to the nearest tick. `None` when the SPS carries no timing information, or
    /// timing that gives no frame duration from 1 tick to `i32::MAX` ticks.
    pub frame_duration_90k: Option<u32>,
}

impl Sps {
    /// Parses an SPS NAL unit.
    pub fn parse(nal: NalUnit<'_>) -> Result<Self, H264Error> {
        parse_sps(&nal).map(|(sps, _)| sps)
    }

    /// The RFC 6381 codec string, `avc1.` then profile_idc, the constraint-flags byte and
    /// level_idc as two lowercase hex digits each (e.g. `avc1.4d401e`).
    pub fn rfc6381_codec(&self) -> String {
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.profile_idc, self.constraint_flags, self.level_idc
        )
    }

    /// Whether the SPS of this profile codes chroma format and bit depths, which an `avcC`
    /// record then repeats after its PPS list (ISO/IEC 14496-15 5.3.3.1.2).
    fn has_chroma_info(&self) -> bool {
        ProfileIdc::from(self.profile_idc).has_chroma_info()
    }
}

/// Parses an SPS NAL unit into this module's summary and `h264-reader`'s full form (which
/// parsing the PPS needs).
fn parse_sps(nal: &NalUnit<'_>) -> Result<(Sps, SeqParameterSet), H264Error> {
    const WHAT: &str = "SPS";
    let malformed = |reason: String| H264Error::Malformed {
        offset: nal.offset,
        what: WHAT,
        reason,
    };
    if nal.nal_type() != nal_type::SPS {
        return Err(malformed(format!(
            "NAL unit type {} is not an SPS",
            nal.nal_type()
        )));
    }
    let full = SeqParameterSet::from_bits(nal.rbsp()).map_err(|e| match e {
        SpsError::RbspReaderError(e) => bit_error(nal, WHAT, e),
        e => malformed(format!("{e:?}")),
    })?;
    let chroma = &full.chroma_info;
    if let ChromaFormat::Invalid(idc) = chroma.chroma_format {
        return Err(malformed(format!("chroma_format_idc {idc} is not 0 to 3")));
    }
    let (width, height) = full
        .pixel_dimensions()
        .map_err(|e| malformed(format!("{e:?}")))?;
    let (Ok(width), Ok(height)) = (u16::try_from(width), u16::try_from(height)) else {
        return Err(H264Error::Unsupported {
            offset: nal.offset,
            what: format!("{width}x{height} pixels exceed a sample entry's 16-bit dimensions"),
        });
    };
    if width == 0 || height == 0 {
        return Err(malformed(format!("cropped to {width}x{height} pixels")));
    }
    let sps = Sps {
        seq_parameter_set_id: full.seq_parameter_set_id.id(),
        profile_idc: full.profile_idc.into(),
        constraint_flags: full.constraint_flags.into(),
        level_idc: full.level_idc,
        chroma_format_idc: u8::try_from(chroma.chroma_format.to_u32())
            .expect("chroma_format_idc checked to be 0 to 3"),
        separate_colour_plane: chroma.separate_colour_plane_flag,
        bit_depth_luma_minus8: chroma.bit_depth_luma_minus8,
        bit_depth_chroma_minus8: chroma.bit_depth_chroma_minus8,
        log2_max_frame_num: full.log2_max_frame_num(),
        frame_mbs_only: matches!(full.frame_mbs_flags, FrameMbsFlags::Frames),
        width,
        height,
        frame_duration_90k: frame_duration_90k(&full),
    };
    Ok((sps, full))
}

/// The frame duration an SPS's VUI timing information gives; see [`Sps::frame_duration_90k`].
fn frame_duration_90k(sps: &SeqParameterSet) -> Option<u32> {
    let timing = sps.vui_parameters.as_ref()?.timing_info.as_ref()?;
    if timing.num_units_in_tick == 0 || timing.time_scale == 0 {
        return None;
    }
    // 2 * 90_000 * u32::MAX fits a u64 with room for the rounding term.
    let scale = u64::from(timing.time_scale);
    let ticks = (2 * 90_000 * u64::from(timing.num_units_in_tick) + scale / 2) / scale;
    u32::try_from(ticks)
        .ok()
        .filter(|&t| t > 0 && t <= i32::MAX as u32)
}

/// Parses a PPS NAL unit against its SPS, returning its `pic_parameter_set_id`. Parsing it
/// whole (not just the ids) rejects a garbled PPS here rather than in a viewer's decoder.
fn parse_pps(nal: &NalUnit<'_>, sps: &SeqParameterSet) -> Result<u32, H264Error> {
    const WHAT: &str = "PPS";
    if nal.nal_type() != nal_type::PPS {
        return Err(H264Error::Malformed {
            offset: nal.offset,
            what: WHAT,
            reason: format!("NAL unit type {} is not a PPS", nal.nal_type()),
        });
    }
    let mut ctx = Context::new();
    ctx.put_seq_param_set(sps.clone());
    match PicParameterSet::from_bits(&ctx, nal.rbsp()) {
        Ok(pps) => Ok(pps.pic_parameter_set_id.id().into()),
        Err(PpsError::UnknownSeqParamSetId(id)) => Err(H264Error::ParameterSetMismatch {
            offset: nal.offset,
            what: WHAT,
            refers_to: "SPS",
            id: id.id().into(),
            current: sps.seq_parameter_set_id.id().into(),
        }),
        Err(PpsError::RbspReaderError(e)) => Err(bit_error(nal, WHAT, e)),
        Err(e) => Err(H264Error::Malformed {
            offset: nal.offset,
            what: WHAT,
            reason: format!("{e:?}"),
        }),
    }
}

/// A video sample entry: what the syncer stores once per distinct stream format and every
/// recording refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampleEntry {
    /// Displayed width in pixels, after cropping.
    pub width: u16,
    /// Displayed height in pixels, after cropping.
    pub height: u16,
    /// RFC 6381 codec string, e.g. `avc1.4d400d`.
    pub rfc6381_codec: String,
    /// The ISO/IEC 14496-12 `avc1` VisualSampleEntry box, holding the `avcC` box.
    pub data: Vec<u8>,
}

impl SampleEntry {
    /// Builds the sample entry of one SPS and one PPS NAL unit (the PPS must refer to the SPS).
    pub fn from_parameter_sets(sps: NalUnit<'_>, pps: NalUnit<'_>) -> Result<Self, H264Error> {
        let (summary, full) = parse_sps(&sps)?;
        parse_pps(&pps, &full)?;
        Self::build(&summary, &sps, &pps)
    }

    /// Builds the sample entry of an `AVCDecoderConfigurationRecord` received from elsewhere
    /// (an RTSP camera's, as its client assembled it): the record's first SPS and first PPS
    /// go through [`Self::from_parameter_sets`], so a camera's parameters are checked by the
    /// same parser as a file's, and the entry holds a record of our own making. Offsets in
    /// errors are into `record`.
    ///
    /// Refused: a record that is not version 1, declares NAL unit lengths other than 4 bytes
    /// (samples are framed with [`NAL_LENGTH_BYTES`]), or has no SPS or no PPS.
    pub fn from_avc_decoder_configuration_record(record: &[u8]) -> Result<Self, H264Error> {
        const WHAT: &str = "avcC record";
        let truncated = |offset| H264Error::Truncated { offset, what: WHAT };
        let malformed = |offset, reason: String| H264Error::Malformed {
            offset,
            what: WHAT,
            reason,
        };
        let header = record.get(..6).ok_or(truncated(record.len()))?;
        if header[0] != 1 {
            return Err(malformed(0, format!("version {} (expected 1)", header[0])));
        }
        let length_bytes = usize::from(header[4] & 0b11) + 1;
        if length_bytes != NAL_LENGTH_BYTES {
            return Err(malformed(
                4,
                format!("NAL unit lengths of {length_bytes} bytes (expected {NAL_LENGTH_BYTES})"),
            ));
        }
        // One list of parameter sets: a count (masked to its bits), then u16-length-prefixed
        // NAL units. Returns the first and the offset just past the list.
        let list = |at: usize, count_mask: u8, what: &'static str| {
            let count = record.get(at).ok_or(truncated(at))? & count_mask;
            let mut pos = at + 1;
            let mut first = None;
            for _ in 0..count {
                let len = record.get(pos..pos + 2).ok_or(truncated(pos))?;
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                let nal = record
                    .get(pos + 2..pos + 2 + len)
                    .ok_or(truncated(pos + 2))?;
                if first.is_none() {
                    first = Some(NalUnit::new(pos + 2, nal)?);
                }
                pos += 2 + len;
            }
            let first = first.ok_or_else(|| malformed(at, format!("no {what}")))?;
            Ok::<_, H264Error>((first, pos))
        };
        let (sps, after_sps) = list(5, 0b1_1111, "SPS")?;
        let (pps, _) = list(after_sps, 0xff, "PPS")?;
        Self::from_parameter_sets(sps, pps)
    }

    fn build(summary: &Sps, sps: &NalUnit<'_>, pps: &NalUnit<'_>) -> Result<Self, H264Error> {
        let record = avc_decoder_configuration_record(summary, sps, pps)?;
        Ok(Self {
            width: summary.width,
            height: summary.height,
            rfc6381_codec: summary.rfc6381_codec(),
            data: avc1_box(summary.width, summary.height, &record),
        })
    }

    /// The `AVCDecoderConfigurationRecord`: the payload of the `avcC` box inside [`Self::data`].
    pub fn avc_decoder_configuration_record(&self) -> &[u8] {
        &self.data[VISUAL_SAMPLE_ENTRY_BYTES + BOX_HEADER_BYTES..]
    }

    /// Parses the SPS held in the `avcC` record, e.g. for its [`Sps::frame_duration_90k`].
    ///
    /// Entries this module builds always hold one; an entry put together by hand that does
    /// not is [`H264Error::Truncated`] or [`H264Error::Malformed`], with offsets into the
    /// record.
    pub fn sps(&self) -> Result<Sps, H264Error> {
        const SPS_LENGTH_AT: usize = 6;
        let record = self
            .data
            .get(VISUAL_SAMPLE_ENTRY_BYTES + BOX_HEADER_BYTES..)
            .unwrap_or_default();
        let truncated = H264Error::Truncated {
            offset: 0,
            what: "avcC record",
        };
        let len_bytes = record
            .get(SPS_LENGTH_AT..SPS_LENGTH_AT + 2)
            .ok_or(truncated.clone())?;
        let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
        let start = SPS_LENGTH_AT + 2;
        let sps = record.get(start..start + len).ok_or(truncated)?;
        Sps::parse(NalUnit::new(start, sps)?)
    }
}

/// Builds an `AVCDecoderConfigurationRecord` (ISO/IEC 14496-15 5.3.3.1) of one SPS and one
/// PPS, declaring 4-byte NAL unit lengths.
fn avc_decoder_configuration_record(
    summary: &Sps,
    sps: &NalUnit<'_>,
    pps: &NalUnit<'_>,
) -> Result<Vec<u8>, H264Error> {
    let length = |nal: &NalUnit<'_>, what: &'static str| {
        u16::try_from(nal.bytes.len()).map_err(|_| H264Error::Unsupported {
            offset: nal.offset,
            what: format!(
                "{what} of {} bytes exceeds avcC's 16-bit length",
                nal.bytes.len()
            ),
        })
    };
    let sps_len = length(sps, "SPS")?;
    let pps_len = length(pps, "PPS")?;
    let mut r = Vec::with_capacity(16 + sps.bytes.len() + pps.bytes.len());
    r.push(1); // configurationVersion
    r.push(summary.profile_idc); // AVCProfileIndication
    r.push(summary.constraint_flags); // profile_compatibility
    r.push(summary.level_idc); // AVCLevelIndication
    r.push(0xfc | (NAL_LENGTH_BYTES as u8 - 1)); // reserved '111111', lengthSizeMinusOne
    r.push(0xe0 | 1); // reserved '111', numOfSequenceParameterSets
    r.extend_from_slice(&sps_len.to_be_bytes());
    r.extend_from_slice(sps.bytes);
    r.push(1); // numOfPictureParameterSets
    r.extend_from_slice(&pps_len.to_be_bytes());
    r.extend_from_slice(pps.bytes);
    if summary.has_chroma_info() {
        r.push(0xfc | summary.chroma_format_idc); // reserved '111111', chroma_format
        r.push(0xf8 | summary.bit_depth_luma_minus8); // reserved '11111', bit_depth_luma_minus8
        r.push(0xf8 | summary.bit_depth_chroma_minus8); // reserved, bit_depth_chroma_minus8
        r.push(0); // numOfSequenceParameterSetExt
    }
    Ok(r)
}

/// Builds an `avc1` VisualSampleEntry box (ISO/IEC 14496-12 12.1.3, 14496-15 5.4.2) around an
/// `avcC` record.
fn avc1_box(width: u16, height: u16, avcc_record: &[u8]) -> Vec<u8> {
    let avcc_bytes = BOX_HEADER_BYTES + avcc_record.len();
    let total_bytes = VISUAL_SAMPLE_ENTRY_BYTES + avcc_bytes;
    let box_size = |bytes: usize| {
        u32::try_from(bytes)
            .expect("avcC holds two parameter sets of 16-bit length")
            .to_be_bytes()
    };
    let mut b = Vec::with_capacity(total_bytes);
    b.extend_from_slice(&box_size(total_bytes));
    b.extend_from_slice(b"avc1");
    b.extend_from_slice(&[0; 6]); // reserved
    b.extend_from_slice(&1u16.to_be_bytes()); // data_reference_index
    b.extend_from_slice(&[0; 16]); // pre_defined, reserved, pre_defined[3]
    b.extend_from_slice(&width.to_be_bytes());
    b.extend_from_slice(&height.to_be_bytes());
    b.extend_from_slice(&RESOLUTION_72_DPI.to_be_bytes()); // horizresolution
    b.extend_from_slice(&RESOLUTION_72_DPI.to_be_bytes()); // vertresolution
    b.extend_from_slice(&[0; 4]); // reserved
    b.extend_from_slice(&1u16.to_be_bytes()); // frame_count
    b.extend_from_slice(&[0; 32]); // compressorname: empty (length byte 0, padding)
    b.extend_from_slice(&0x0018u16.to_be_bytes()); // depth: colour, no alpha
    b.extend_from_slice(&(-1i16).to_be_bytes()); // pre_defined
    assert_eq!(b.len(), VISUAL_SAMPLE_ENTRY_BYTES);
    b.extend_from_slice(&box_size(avcc_bytes));
    b.extend_from_slice(b"avcC");
    b.extend_from_slice(avcc_record);
    assert_eq!(b.len(), total_bytes);
    b
}

/// One frame (access unit) in the AVC sample format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Each NAL unit but SPS, PPS and AUD, prefixed by its length as [`NAL_LENGTH_BYTES`]
    /// big-endian bytes; at most [`MAX_FRAME_BYTES`].
    pub data: Vec<u8>,
    /// Whether the frame holds an IDR slice, so decoding can start here.
    pub is_key: bool,
    /// Index into [`Clip::sample_entries`] of the parameter sets this frame was coded with.
    pub sample_entry_index: usize,
}

/// A whole H.264 stream, parsed: what the `file:` source loops over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clip {
    /// Distinct sample entries in order of first use; never empty.
    pub sample_entries: Vec<SampleEntry>,
    /// Frames in stream (decoding) order; never empty.
    pub frames: Vec<Frame>,
}

impl Clip {
    /// The sample entry of `frame`.
    pub fn sample_entry(&self, frame: &Frame) -> &SampleEntry {
        &self.sample_entries[frame.sample_entry_index]
    }
}

/// Parses a whole Annex B byte stream into frames and their sample entries.
pub fn parse_clip(stream: &[u8]) -> Result<Clip, H264Error> {
    let mut builder = ClipBuilder::default();
    for au in access_units(stream) {
        builder.push(&au?)?;
    }
    builder.finish()
}

/// The parameter sets the latest frames were coded with.
struct ActiveParameterSets<'a> {
    sps_bytes: &'a [u8],
    pps_bytes: &'a [u8],
    sps: Sps,
    pic_parameter_set_id: u32,
    sample_entry_index: usize,
}

/// Turns access units into frames, tracking parameter-set generations.
#[derive(Default)]
struct ClipBuilder<'a> {
    /// The latest SPS and PPS seen, which the next slice uses.
    latest_sps: Option<NalUnit<'a>>,
    latest_pps: Option<NalUnit<'a>>,
    /// The SPS and PPS in use, parsed, or `None` before the first slice.
    active: Option<ActiveParameterSets<'a>>,
    sample_entries: Vec<SampleEntry>,
    frames: Vec<Frame>,
}

impl<'a> ClipBuilder<'a> {
    fn push(&mut self, au: &AccessUnit<'a>) -> Result<(), H264Error> {
        for nal in au.nal_units() {
            match nal.nal_type() {
                nal_type::SPS => self.latest_sps = Some(*nal),
                nal_type::PPS => self.latest_pps = Some(*nal),
                _ => {}
            }
        }
        let slice = au.first_slice();
        if !slice.has_slice_header() {
            return Err(H264Error::Unsupported {
                offset: slice.offset,
                what: "data partition B or C without partition A".to_owned(),
            });
        }
        let active = self.activate(slice)?;
        let header = SliceHeaderStart::read(slice, &active.sps)?;
        if header.pic_parameter_set_id != active.pic_parameter_set_id {
            return Err(H264Error::ParameterSetMismatch {
                offset: slice.offset,
                what: "slice",
                refers_to: "PPS",
                id: header.pic_parameter_set_id,
                current: active.pic_parameter_set_id,
            });
        }
        if header.field_pic {
            return Err(H264Error::Unsupported {
                offset: slice.offset,
                what: "field pictures (field_pic_flag = 1)".to_owned(),
            });
        }
        let sample_entry_index = active.sample_entry_index;
        let frame = Frame {
            data: frame_data(au)?,
            is_key: au.is_key(),
            sample_entry_index,
        };
        self.frames.push(frame);
        Ok(())
    }

    /// Returns the parameter sets for `slice`, parsing them and adding a sample entry if they
    /// changed since the previous frame.
    fn activate(&mut self, slice: &NalUnit<'a>) -> Result<&ActiveParameterSets<'a>, H264Error> {
        let missing = |missing| H264Error::MissingParameterSet {
            offset: slice.offset,
            missing,
        };
        let sps = self.latest_sps.ok_or_else(|| missing("SPS"))?;
        let pps = self.latest_pps.ok_or_else(|| missing("PPS"))?;
        let unchanged = self
            .active
            .as_ref()
            .is_some_and(|a| a.sps_bytes == sps.bytes && a.pps_bytes == pps.bytes);
        if !unchanged {
            let (summary, full) = parse_sps(&sps)?;
            let pic_parameter_set_id = parse_pps(&pps, &full)?;
            let entry = SampleEntry::build(&summary, &sps, &pps)?;
            let sample_entry_index = match self.sample_entries.iter().position(|e| *e == entry) {
                Some(i) => i,
                None => {
                    self.sample_entries.push(entry);
                    self.sample_entries.len() - 1
                }
            };
            self.active = Some(ActiveParameterSets {
                sps_bytes: sps.bytes,
                pps_bytes: pps.bytes,
                sps: summary,
                pic_parameter_set_id,
                sample_entry_index,
            });
        }
        Ok(self.active.as_ref().expect("activated above"))
    }

    fn finish(self) -> Result<Clip, H264Error> {
        if self.frames.is_empty() {
            return Err(H264Error::NoFrames);
        }
        Ok(Clip {
            sample_entries: self.sample_entries,
            frames: self.frames,
        })
    }
}

/// Whether a NAL unit belongs in a frame's sample data: parameter sets go into the sample
/// entry instead, and access unit delimiters are implied by the sample boundaries.
fn belongs_in_sample(nal: &NalUnit<'_>) -> bool {
    !matches!(
        nal.nal_type(),
        nal_type::SPS | nal_type::PPS | nal_type::AUD
    )
}

/// The AVC sample data of an access unit: its NAL units, each after a 4-byte length.
fn frame_data(au: &AccessUnit<'_>) -> Result<Vec<u8>, H264Error> {
    let nal_units = || au.nal_units().iter().filter(|n| belongs_in_sample(n));
    let bytes: usize = nal_units().map(|n| NAL_LENGTH_BYTES + n.bytes.len()).sum();
    if bytes > MAX_FRAME_BYTES {
        return Err(H264Error::FrameTooLarge {
            offset: au.offset(),
            bytes,
        });
    }
    let mut data = Vec::with_capacity(bytes);
    for nal in nal_units() {
        let len = u32::try_from(nal.bytes.len()).expect("bounded by MAX_FRAME_BYTES");
        data.extend_from_slice(&len.to_be_bytes());
        data.extend_from_slice(nal.bytes);
    }
    Ok(data)
}

#[cfg(test)]
mod tests;
