//! Tests of the H.264 parser: the shipped clips (made by ffmpeg/x264, see
//! `testdata/README.md`), crafted inputs for each error, and properties on arbitrary bytes.

use super::*;
use proptest::prelude::*;

/// 4 s of 320x240 Main profile at 30 fps, an IDR every 30 frames, no B frames.
const CLIP: &[u8] = include_bytes!("../../testdata/clip.h264");
/// 2 frames, High 4:2:2, 318x178 (cropped by 2 columns and 14 rows).
const HIGH422: &[u8] = include_bytes!("../../testdata/high422_318x178.h264");
/// 2 frames, High 4:4:4 Predictive, 317x177 (crop unit of one pixel).
const HIGH444: &[u8] = include_bytes!("../../testdata/high444_317x177.h264");
/// 2 frames, High 10 (10-bit 4:2:0), 320x240.
const HIGH10: &[u8] = include_bytes!("../../testdata/high10_320x240.h264");
/// 2 frames, High, interlaced coding as MBAFF frames, 320x240.
const MBAFF: &[u8] = include_bytes!("../../testdata/mbaff_320x240.h264");

// ---- helpers -------------------------------------------------------------------------------

/// Writes RBSP bits MSB first, for crafting parameter sets and slice headers independently of
/// the reader under test.
#[derive(Default)]
struct Bits {
    bytes: Vec<u8>,
    bit_len: usize,
}

impl Bits {
    fn bit(&mut self, b: bool) -> &mut Self {
        if self.bit_len.is_multiple_of(8) {
            self.bytes.push(0);
        }
        if b {
            *self.bytes.last_mut().unwrap() |= 0x80 >> (self.bit_len % 8);
        }
        self.bit_len += 1;
        self
    }

    fn u(&mut self, n: u32, v: u32) -> &mut Self {
        for i in (0..n).rev() {
            self.bit((v >> i) & 1 == 1);
        }
        self
    }

    fn ue(&mut self, v: u32) -> &mut Self {
        let x = u64::from(v) + 1;
        let n = 64 - x.leading_zeros();
        for _ in 1..n {
            self.bit(false);
        }
        for i in (0..n).rev() {
            self.bit((x >> i) & 1 == 1);
        }
        self
    }

    fn se(&mut self, v: i32) -> &mut Self {
        let k = if v > 0 { 2 * v - 1 } else { -2 * v };
        self.ue(u32::try_from(k).unwrap())
    }

    /// `rbsp_trailing_bits()`: a stop bit, then zeros to the byte boundary.
    fn rbsp(&mut self) -> Vec<u8> {
        self.bit(true);
        self.bit_len = 0;
        std::mem::take(&mut self.bytes)
    }
}

/// A NAL unit of the given header byte and RBSP, with emulation prevention applied.
fn nal(header: u8, rbsp: &[u8]) -> Vec<u8> {
    let mut out = vec![header];
    let mut zeros = usize::from(header == 0);
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    out
}

/// An Annex B stream of the given NAL units with 4-byte start codes.
fn annex_b<T: AsRef<[u8]>>(nal_units: &[T]) -> Vec<u8> {
    let mut out = Vec::new();
    for n in nal_units {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(n.as_ref());
    }
    out
}

fn split(stream: &[u8]) -> Result<Vec<&[u8]>, H264Error> {
    nal_units(stream).map(|n| n.map(|n| n.bytes())).collect()
}

/// The first NAL unit of type `t` in `stream`.
fn first_of_type(stream: &[u8], t: u8) -> NalUnit<'_> {
    nal_units(stream)
        .map(Result::unwrap)
        .find(|n| n.nal_type() == t)
        .unwrap()
}

/// The NAL units of AVC sample data, checking that the length prefixes tile it exactly.
fn sample_nal_units(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let len = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
        out.push(&data[4..4 + len]);
        data = &data[4 + len..];
    }
    out
}

fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// An I slice of `header` (e.g. 0x65 for IDR) referring to `pps_id`, for a stream whose SPS has
/// `log2_max_frame_num` bits of frame_num; `field_pic` is written only when given.
fn slice(header: u8, pps_id: u32, log2_max_frame_num: u8, field_pic: Option<bool>) -> Vec<u8> {
    let mut b = Bits::default();
    b.ue(0).ue(7).ue(pps_id).u(u32::from(log2_max_frame_num), 0);
    if let Some(f) = field_pic {
        b.bit(f);
    }
    b.u(16, 0xabcd); // the rest of a slice, as far as this parser cares
    nal(header, &b.rbsp())
}

/// A High profile 1920x1080 SPS (1088 coded rows, 8 cropped) whose scaling matrix mixes every
/// way a list can be coded: explicit, "use default", frozen part-way, and absent.
fn high_sps_with_scaling_lists() -> Vec<u8> {
    let mut b = Bits::default();
    b.u(8, 100).u(8, 0).u(8, 40); // profile_idc High, constraint flags, level 4.0
    b.ue(0); // seq_parameter_set_id
    b.ue(1).ue(0).ue(0).bit(false); // 4:2:0, 8-bit luma and chroma, no transform bypass
    b.bit(true); // seq_scaling_matrix_present_flag
    b.bit(true); // list 0 (4x4 intra Y): all deltas 0, flat 8
    for _ in 0..16 {
        b.se(0);
    }
    b.bit(true).se(-8); // list 1: next_scale 0 at j = 0, "use default"
    b.bit(false); // list 2: absent, falls back
    b.bit(true).se(1).se(1).se(-10); // list 3: 9, 10, then frozen
    b.bit(false).bit(false); // lists 4, 5
    b.bit(true); // list 6 (8x8 intra Y): 9, 10, ..., 72
    for _ in 0..64 {
        b.se(1);
    }
    b.bit(false); // list 7
    b.ue(0); // log2_max_frame_num_minus4
    b.ue(2); // pic_order_cnt_type
    b.ue(1).bit(false); // max_num_ref_frames, gaps_in_frame_num_value_allowed_flag
    b.ue(119).ue(67); // 120 x 68 macroblocks
    b.bit(true).bit(true); // frame_mbs_only_flag, direct_8x8_inference_flag
    b.bit(true).ue(0).ue(0).ue(0).ue(4); // cropping: 4 units of 2 rows at the bottom
    b.bit(false); // vui_parameters_present_flag
    nal(0x67, &b.rbsp())
}

// ---- the shipped clip ----------------------------------------------------------------------

#[test]
fn shipped_clip_has_120_frames_with_key_frames_every_30() {
    let clip = parse_clip(CLIP).unwrap();
    assert_eq!(clip.frames.len(), 120);
    let keys: Vec<usize> = (0..clip.frames.len())
        .filter(|&i| clip.frames[i].is_key)
        .collect();
    assert_eq!(keys, [0, 30, 60, 90]);
}

#[test]
fn shipped_clip_is_320x240_main_profile_level_1_3() {
    let clip = parse_clip(CLIP).unwrap();
    assert_eq!(clip.sample_entries.len(), 1);
    let entry = &clip.sample_entries[0];
    assert_eq!((entry.width, entry.height), (320, 240));
    // ffprobe: profile=Main (77 = 0x4d), level=13 (0x0d); x264 sets constraint_set1_flag.
    assert_eq!(entry.rfc6381_codec, "avc1.4d400d");
    assert!(clip.frames.iter().all(|f| f.sample_entry_index == 0));
}

#[test]
fn repeated_parameter_sets_do_not_start_a_new_sample_entry() {
    let sps_count = nal_units(CLIP)
        .filter(|n| n.as_ref().unwrap().nal_type() == nal_type::SPS)
        .count();
    assert_eq!(
        sps_count, 4,
        "the clip repeats its SPS before each key frame"
    );
    assert_eq!(parse_clip(CLIP).unwrap().sample_entries.len(), 1);
}

#[test]
fn avcc_record_holds_the_streams_parameter_sets() {
    let clip = parse_clip(CLIP).unwrap();
    let record = clip.sample_entries[0].avc_decoder_configuration_record();
    let sps = first_of_type(CLIP, nal_type::SPS).bytes();
    let pps = first_of_type(CLIP, nal_type::PPS).bytes();
    assert_eq!(record[..4], [1, 0x4d, 0x40, 0x0d]); // version, profile, flags, level
    assert_eq!(record[4], 0xff, "4-byte NAL lengths");
    assert_eq!(record[5], 0xe1, "one SPS");
    assert_eq!(usize::from(read_u16(record, 6)), sps.len());
    assert_eq!(&record[8..8 + sps.len()], sps);
    let p = 8 + sps.len();
    assert_eq!(record[p], 1, "one PPS");
    assert_eq!(usize::from(read_u16(record, p + 1)), pps.len());
    assert_eq!(
        &record[p + 3..],
        pps,
        "no extension fields for Main profile"
    );

    let parsed = h264_reader::avcc::AvcDecoderConfigurationRecord::try_from(record).unwrap();
    assert_eq!(parsed.length_size_minus_one(), 3);
    assert_eq!(parsed.num_of_sequence_parameter_sets(), 1);
    parsed.create_context().unwrap();
}

#[test]
fn avc1_box_is_a_visual_sample_entry_around_avcc() {
    let clip = parse_clip(CLIP).unwrap();
    let entry = &clip.sample_entries[0];
    let b = &entry.data;
    assert_eq!(read_u32(b, 0) as usize, b.len());
    assert_eq!(&b[4..8], b"avc1");
    assert_eq!(b[8..14], [0; 6]);
    assert_eq!(read_u16(b, 14), 1, "data_reference_index");
    assert_eq!(b[16..32], [0; 16]);
    assert_eq!((read_u16(b, 32), read_u16(b, 34)), (320, 240));
    assert_eq!((read_u32(b, 36), read_u32(b, 40)), (0x48_0000, 0x48_0000));
    assert_eq!(read_u32(b, 44), 0);
    assert_eq!(read_u16(b, 48), 1, "frame_count");
    assert_eq!(b[50..82], [0; 32], "compressorname");
    assert_eq!(read_u16(b, 82), 0x18, "depth");
    assert_eq!(read_u16(b, 84), 0xffff, "pre_defined = -1");
    assert_eq!(read_u32(b, 86) as usize, b.len() - 86);
    assert_eq!(&b[90..94], b"avcC");
    assert_eq!(&b[94..], entry.avc_decoder_configuration_record());
}

#[test]
fn sample_entry_from_parameter_sets_equals_the_clips() {
    let entry = SampleEntry::from_parameter_sets(
        first_of_type(CLIP, nal_type::SPS),
        first_of_type(CLIP, nal_type::PPS),
    )
    .unwrap();
    assert_eq!(entry, parse_clip(CLIP).unwrap().sample_entries[0]);
}

#[test]
fn frames_are_length_prefixed_without_parameter_sets_or_delimiters() {
    let clip = parse_clip(CLIP).unwrap();
    let mut from_frames = Vec::new();
    for (i, frame) in clip.frames.iter().enumerate() {
        let units = sample_nal_units(&frame.data);
        let types: Vec<u8> = units.iter().map(|n| n[0] & 0x1f).collect();
        assert!(
            types
                .iter()
                .all(|&t| t != nal_type::SPS && t != nal_type::PPS)
        );
        assert!(types.iter().all(|&t| t != nal_type::AUD));
        let slice_type = if frame.is_key { 5 } else { 1 };
        assert!(types.contains(&slice_type), "frame {i}: {types:?}");
        from_frames.extend(units);
    }
    let in_stream: Vec<&[u8]> = split(CLIP)
        .unwrap()
        .into_iter()
        .filter(|n| !matches!(n[0] & 0x1f, 7..=9))
        .collect();
    assert_eq!(
        from_frames, in_stream,
        "every other NAL unit, in order, once"
    );
}

// ---- high profiles, interlacing, parameter-set changes ---------------------------------------

#[test]
fn high_profiles_report_size_codec_and_avcc_chroma_fields() {
    // (stream, width, height, codec, chroma_format_idc, bit_depth_luma_minus8)
    let cases = [
        (HIGH422, 318, 178, "avc1.7a000d", 2, 0),
        (HIGH444, 317, 177, "avc1.f4000d", 3, 0),
        (HIGH10, 320, 240, "avc1.6e000d", 1, 2),
    ];
    for (stream, width, height, codec, chroma, depth) in cases {
        let clip = parse_clip(stream).unwrap();
        assert_eq!(clip.frames.len(), 2, "{codec}");
        assert!(clip.frames[0].is_key);
        let entry = &clip.sample_entries[0];
        assert_eq!((entry.width, entry.height), (width, height), "{codec}");
        assert_eq!(entry.rfc6381_codec, codec);
        let record = entry.avc_decoder_configuration_record();
        let ext = &record[record.len() - 4..];
        assert_eq!(
            ext,
            [0xfc | chroma, 0xf8 | depth, 0xf8 | depth, 0],
            "{codec}"
        );
        let parsed = h264_reader::avcc::AvcDecoderConfigurationRecord::try_from(record).unwrap();
        assert_eq!(parsed.chroma_format(), Some(chroma), "{codec}");
    }
}

#[test]
fn mbaff_interlaced_frames_are_whole_frames() {
    let sps = Sps::parse(first_of_type(MBAFF, nal_type::SPS)).unwrap();
    assert!(!sps.frame_mbs_only);
    let clip = parse_clip(MBAFF).unwrap();
    assert_eq!(clip.frames.len(), 2);
    let entry = &clip.sample_entries[0];
    assert_eq!((entry.width, entry.height), (320, 240));
    assert_eq!(entry.rfc6381_codec, "avc1.640015");
}

#[test]
fn scaling_lists_are_parsed_and_cropping_applied() {
    let nal = high_sps_with_scaling_lists();
    let sps = Sps::parse(NalUnit::new(0, &nal).unwrap()).unwrap();
    assert_eq!((sps.width, sps.height), (1920, 1080));
    assert_eq!(sps.rfc6381_codec(), "avc1.640028");
    assert_eq!(sps.chroma_format_idc, 1);
}

#[test]
fn a_parameter_set_change_starts_a_new_sample_entry_and_going_back_reuses_the_old() {
    let stream = [CLIP, HIGH422, CLIP].concat();
    let clip = parse_clip(&stream).unwrap();
    assert_eq!(clip.frames.len(), 242);
    assert_eq!(clip.sample_entries.len(), 2);
    assert_eq!(clip.sample_entries[1].rfc6381_codec, "avc1.7a000d");
    let indexes: Vec<usize> = clip.frames.iter().map(|f| f.sample_entry_index).collect();
    assert!(indexes[..120].iter().all(|&i| i == 0));
    assert_eq!(indexes[120..122], [1, 1]);
    assert!(indexes[122..].iter().all(|&i| i == 0));
    assert_eq!(clip.sample_entry(&clip.frames[121]).width, 318);
}

// ---- Annex B splitting ---------------------------------------------------------------------

#[test]
fn three_and_four_byte_start_codes_and_zero_padding_are_accepted() {
    let stream = [
        &[0, 0, 0, 0, 0, 1, 0x09, 0xf0][..], // leading zeros, then a 3-byte start code
        &[0, 0, 0, 1, 0x67, 0x42, 0x00][..], // 4-byte start code; the 00 is trailing padding
        &[0, 0, 1, 0x68, 0xce][..],          // 3-byte start code
        &[0, 0, 0, 0][..],                   // trailing zeros at the end of the stream
    ]
    .concat();
    let units: Vec<NalUnit<'_>> = nal_units(&stream).map(Result::unwrap).collect();
    let bytes: Vec<&[u8]> = units.iter().map(|n| n.bytes()).collect();
    assert_eq!(bytes, [&[0x09, 0xf0][..], &[0x67, 0x42], &[0x68, 0xce]]);
    let offsets: Vec<usize> = units.iter().map(|n| n.offset()).collect();
    assert_eq!(offsets, [6, 12, 18]);
}

#[test]
fn empty_input_has_no_nal_units() {
    assert_eq!(split(&[]), Ok(vec![]));
}

#[test]
fn garbage_without_a_start_code_is_rejected() {
    assert_eq!(
        split(b"not h264"),
        Err(H264Error::MissingStartCode { offset: 0 })
    );
    assert_eq!(
        split(&[0, 0, 0]),
        Err(H264Error::MissingStartCode { offset: 3 })
    );
    assert_eq!(
        split(&[0, 1, 0x67]),
        Err(H264Error::MissingStartCode { offset: 1 }),
        "one zero byte before 01 is not a start code"
    );
}

#[test]
fn three_zeros_inside_a_nal_unit_are_rejected() {
    // Emulation prevention keeps 00 00 00 out of a NAL unit, so it must precede a start code.
    assert_eq!(
        split(&[0, 0, 1, 0x41, 0x9a, 0, 0, 0, 0x42]),
        Err(H264Error::MissingStartCode { offset: 8 })
    );
}

#[test]
fn forbidden_zero_bit_is_rejected() {
    assert_eq!(
        split(&[0, 0, 0, 1, 0x09, 0xf0, 0, 0, 1, 0xe5, 0x88]),
        Err(H264Error::ForbiddenZeroBit {
            offset: 9,
            header: 0xe5
        })
    );
}

#[test]
fn start_code_at_the_end_is_truncated() {
    let err = split(&[0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1]).unwrap_err();
    assert!(
        matches!(err, H264Error::Truncated { offset: 5, .. }),
        "{err}"
    );
}

#[test]
fn empty_nal_unit_between_start_codes_is_truncated() {
    let err = split(&[0, 0, 1, 0, 0, 1, 0x09, 0xf0]).unwrap_err();
    assert!(
        matches!(err, H264Error::Truncated { offset: 3, .. }),
        "{err}"
    );
}

#[test]
fn iteration_ends_after_an_error() {
    let mut it = nal_units(b"garbage");
    assert!(it.next().unwrap().is_err());
    assert!(it.next().is_none());
}

// ---- crafted streams: parameter sets and access units ----------------------------------------

/// The clip's SPS and PPS and its first IDR slice, as NAL unit bytes.
fn clip_sps_pps_idr() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    (
        first_of_type(CLIP, nal_type::SPS).bytes().to_vec(),
        first_of_type(CLIP, nal_type::PPS).bytes().to_vec(),
        first_of_type(CLIP, nal_type::SLICE_IDR).bytes().to_vec(),
    )
}

#[test]
fn truncated_sps_is_reported_as_truncated() {
    let (sps, pps, idr) = clip_sps_pps_idr();
    let stream = annex_b(&[&sps[..5], &pps, &idr]);
    assert_eq!(
        parse_clip(&stream),
        Err(H264Error::Truncated {
            offset: 4,
            what: "SPS"
        })
    );
}

#[test]
fn truncated_slice_header_is_reported_as_truncated() {
    let (sps, pps, _) = clip_sps_pps_idr();
    let stream = annex_b(&[&sps[..], &pps, &[0x65]]);
    let err = parse_clip(&stream).unwrap_err();
    assert!(
        matches!(
            err,
            H264Error::Truncated {
                what: "slice header",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn malformed_sps_is_rejected() {
    let mut b = Bits::default();
    b.u(8, 100).u(8, 0).u(8, 30).ue(0).ue(4); // chroma_format_idc 4 does not exist
    b.ue(0).ue(0).bit(false).bit(false); // bit depths, no transform bypass, no scaling matrix
    b.ue(0).ue(2).ue(1).bit(false); // frame_num bits, poc type, refs, gaps
    b.ue(19).ue(14).bit(true).bit(true).bit(false).bit(false); // 320x240, no cropping, no VUI
    let sps = nal(0x67, &b.rbsp());
    let err = Sps::parse(NalUnit::new(0, &sps).unwrap()).unwrap_err();
    assert!(
        matches!(err, H264Error::Malformed { what: "SPS", .. }),
        "{err}"
    );
}

#[test]
fn sizes_beyond_a_sample_entrys_16_bits_are_unsupported() {
    let mut b = Bits::default();
    b.u(8, 66).u(8, 0).u(8, 62).ue(0); // Baseline, level 6.2
    b.ue(0).ue(2).ue(1).bit(false); // frame_num bits, poc type, refs, gaps
    b.ue(4096).ue(0); // 4097 x 1 macroblocks: 65552 x 16 pixels
    b.bit(true).bit(true).bit(false).bit(false);
    let sps = nal(0x67, &b.rbsp());
    let err = Sps::parse(NalUnit::new(0, &sps).unwrap()).unwrap_err();
    assert!(matches!(err, H264Error::Unsupported { .. }), "{err}");
}

#[test]
fn slice_before_parameter_sets_is_rejected() {
    let (sps, _, idr) = clip_sps_pps_idr();
    assert_eq!(
        parse_clip(&annex_b(&[&idr])),
        Err(H264Error::MissingParameterSet {
            offset: 4,
            missing: "SPS"
        })
    );
    assert_eq!(
        parse_clip(&annex_b(&[&sps, &idr])),
        Err(H264Error::MissingParameterSet {
            offset: 4 + sps.len() + 4,
            missing: "PPS"
        })
    );
}

#[test]
fn slice_referring_to_another_pps_is_rejected() {
    let (sps, pps, _) = clip_sps_pps_idr();
    let bits = Sps::parse(NalUnit::new(0, &sps).unwrap())
        .unwrap()
        .log2_max_frame_num;
    let stream = annex_b(&[sps.clone(), pps, slice(0x65, 1, bits, None)]);
    let err = parse_clip(&stream).unwrap_err();
    assert!(
        matches!(
            err,
            H264Error::ParameterSetMismatch {
                what: "slice",
                id: 1,
                current: 0,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn pps_referring_to_another_sps_is_rejected() {
    let (sps, _, idr) = clip_sps_pps_idr();
    let mut b = Bits::default();
    b.ue(0).ue(1); // pic_parameter_set_id 0, seq_parameter_set_id 1
    b.bit(false).bit(false).ue(0).ue(0).ue(0).bit(false).u(2, 0);
    b.se(0).se(0).se(0).bit(true).bit(false).bit(false);
    let pps = nal(0x68, &b.rbsp());
    let err = parse_clip(&annex_b(&[sps, pps, idr])).unwrap_err();
    assert!(
        matches!(
            err,
            H264Error::ParameterSetMismatch {
                what: "PPS",
                refers_to: "SPS",
                id: 1,
                current: 0,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn field_pictures_are_unsupported() {
    let sps = first_of_type(MBAFF, nal_type::SPS).bytes();
    let pps = first_of_type(MBAFF, nal_type::PPS).bytes();
    let bits = Sps::parse(NalUnit::new(0, sps).unwrap())
        .unwrap()
        .log2_max_frame_num;
    let frame = slice(0x65, 0, bits, Some(false));
    assert_eq!(
        parse_clip(&annex_b(&[sps, pps, &frame]))
            .unwrap()
            .frames
            .len(),
        1
    );
    let field = slice(0x65, 0, bits, Some(true));
    let err = parse_clip(&annex_b(&[sps, pps, &field])).unwrap_err();
    assert!(matches!(err, H264Error::Unsupported { .. }), "{err}");
}

#[test]
fn delimiter_without_a_picture_is_rejected() {
    let (sps, pps, idr) = clip_sps_pps_idr();
    let aud = [0x09, 0xf0];
    assert_eq!(
        parse_clip(&annex_b(&[&aud[..], &aud, &sps, &pps, &idr])),
        Err(H264Error::AccessUnitWithoutPicture { offset: 4 })
    );
}

#[test]
fn trailing_nal_units_without_a_picture_are_rejected() {
    let (sps, pps, idr) = clip_sps_pps_idr();
    let stream = annex_b(&[&sps[..], &pps, &idr, &sps]);
    let sps_offset = stream.len() - sps.len();
    assert_eq!(
        parse_clip(&stream),
        Err(H264Error::AccessUnitWithoutPicture { offset: sps_offset })
    );
}

#[test]
fn delimiters_begin_access_units_and_are_left_out_of_frames() {
    let (sps, pps, idr) = clip_sps_pps_idr();
    let aud = [0x09, 0xf0];
    let stream = annex_b(&[&aud[..], &sps, &pps, &idr, &aud, &idr]);
    let clip = parse_clip(&stream).unwrap();
    assert_eq!(clip.frames.len(), 2);
    for frame in &clip.frames {
        assert_eq!(sample_nal_units(&frame.data), [&idr[..]]);
    }
}

#[test]
fn empty_stream_has_no_frames() {
    assert_eq!(parse_clip(&[]), Err(H264Error::NoFrames));
}

#[test]
fn oversized_frame_is_rejected() {
    let (sps, pps, mut idr) = clip_sps_pps_idr();
    idr.resize(MAX_FRAME_BYTES, 0x55);
    let err = parse_clip(&annex_b(&[sps, pps, idr])).unwrap_err();
    assert!(matches!(err, H264Error::FrameTooLarge { .. }), "{err}");
}

// ---- properties ------------------------------------------------------------------------------

/// Bytes rich in the values that matter to a start-code scanner.
fn scanner_bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop_oneof![any::<u8>(), 0u8..=1, Just(0u8)], 0..max_len)
}

proptest! {
    #[test]
    fn splitter_never_panics_on_arbitrary_bytes(bytes in scanner_bytes(2048)) {
        for unit in nal_units(&bytes).flatten() {
            prop_assert!(!unit.bytes().is_empty());
            prop_assert_eq!(unit.bytes()[0] & 0x80, 0);
            prop_assert_ne!(*unit.bytes().last().unwrap(), 0);
        }
    }

    #[test]
    fn parse_clip_never_panics_on_arbitrary_bytes(bytes in scanner_bytes(2048)) {
        let _ = parse_clip(&bytes);
    }

    #[test]
    fn parse_clip_never_panics_on_a_corrupted_clip(
        flips in prop::collection::vec((0usize..4096, any::<u8>()), 1..8),
    ) {
        let mut stream = CLIP[..8192].to_vec();
        for (at, value) in flips {
            stream[at] = value;
        }
        let _ = parse_clip(&stream);
    }

    #[test]
    fn splitter_recovers_the_nal_units_of_any_annex_b_stream(
        units in prop::collection::vec(
            (0u8..0x80, prop::collection::vec(any::<u8>(), 0..64), any::<bool>(), 0usize..3),
            1..16,
        ),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (header, mut rbsp, four_byte_start_code, trailing_zeros) in units {
            rbsp.push(0x80); // rbsp_stop_one_bit: a NAL unit never ends in a zero byte
            let unit = nal(header, &rbsp);
            if four_byte_start_code {
                stream.push(0);
            }
            stream.extend_from_slice(&[0, 0, 1]);
            stream.extend_from_slice(&unit);
            stream.resize(stream.len() + trailing_zeros, 0);
            expected.push(unit);
        }
        let got = split(&stream).unwrap();
        prop_assert_eq!(got, expected);
    }
}

// ---- frame timing ----------------------------------------------------------------------------

#[test]
fn shipped_clip_sps_gives_30_fps_frame_duration() {
    let clip = parse_clip(CLIP).unwrap();
    let sps = clip.sample_entries[0].sps().unwrap();
    assert_eq!((sps.width, sps.height), (320, 240));
    // x264 writes VUI timing num_units_in_tick = 1, time_scale = 60: two ticks a frame.
    assert_eq!(sps.frame_duration_90k, Some(3000));
}

#[test]
fn sps_without_vui_timing_has_no_frame_duration() {
    let sps = Sps::parse(NalUnit::new(0, &high_sps_with_scaling_lists()).unwrap()).unwrap();
    assert_eq!(sps.frame_duration_90k, None);
}

#[test]
fn sample_entry_without_an_sps_is_truncated() {
    let mut entry = parse_clip(CLIP).unwrap().sample_entries[0].clone();
    entry
        .data
        .truncate(VISUAL_SAMPLE_ENTRY_BYTES + BOX_HEADER_BYTES + 7);
    assert!(
        matches!(entry.sps(), Err(H264Error::Truncated { .. })),
        "{:?}",
        entry.sps()
    );
}

#[test]
fn sample_entry_from_a_received_avcc_record_equals_the_clips() {
    for stream in [CLIP, HIGH422, HIGH10] {
        let clip = parse_clip(stream).unwrap();
        let entry = &clip.sample_entries[0];
        let again = SampleEntry::from_avc_decoder_configuration_record(
            entry.avc_decoder_configuration_record(),
        )
        .unwrap();
        assert_eq!(&again, entry);
    }
}

#[test]
fn received_avcc_records_that_we_cannot_use_are_refused_naming_why() {
    let clip = parse_clip(CLIP).unwrap();
    let good = clip.sample_entries[0]
        .avc_decoder_configuration_record()
        .to_vec();
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut r = good.clone();
        f(&mut r);
        SampleEntry::from_avc_decoder_configuration_record(&r)
            .unwrap_err()
            .to_string()
    };
    assert!(with(&|r| r[0] = 0).contains("version 0"));
    assert!(with(&|r| r[4] = 0xfd).contains("lengths of 2 bytes"));
    assert!(with(&|r| r[5] = 0xe0).contains("no SPS"));
    assert!(with(&|r| r.truncate(r.len() - 1)).contains("truncated avcC record"));
    let sps_len = usize::from(read_u16(&good, 6));
    assert!(with(&|r| r[8 + sps_len] = 0).contains("no PPS"));
    assert!(with(&|r| r.truncate(3)).contains("truncated avcC record"));
    // An SPS slot holding a PPS: our parser refuses it.
    assert!(
        SampleEntry::from_avc_decoder_configuration_record(&{
            let mut r = good.clone();
            r[8] = 0x68;
            r
        })
        .is_err()
    );
}
