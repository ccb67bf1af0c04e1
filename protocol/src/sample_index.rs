//! The sample index codec: one compact blob per recording that lists every sample's duration,
//! size and key-frame flag (DESIGN.md, "Sample index format").
//!
//! Per sample, two unsigned LEB128 varints (7 bits a byte, low group first, high bit set on
//! every byte but the last):
//!
//! 1. `(zigzag(duration_90k - previous duration_90k) << 1) | is_key`
//! 2. `zigzag(bytes - previous bytes of a sample of the same kind)`
//!
//! where `zigzag(n) = (n << 1) ^ (n >> 31)` on `i32` and every "previous" starts at 0.
//! Durations of consecutive frames barely change, so the first varint is usually one byte.
//! Sizes are delta-coded against the same kind because key frames are one to two orders of
//! magnitude larger than the frames between them; alternating deltas would be large.
//!
//! A sample's position in the sample file and its start time are not stored: they are the sums
//! of the sizes and durations before it, which the decoder accumulates.
//!
//! # What a valid index is
//!
//! The decoder accepts exactly the blobs that [`SampleIndexEncoder`] can produce: every varint
//! minimal and in range, every duration `>= 0` and `0` only on the last sample, every size
//! `> 0`, and every running total representable. The codec is therefore a bijection between
//! valid blobs and sample lists, so a prefix of whole samples of a valid index is itself the
//! valid index of those samples ([`whole_sample_prefix`] relies on this), and two indexes
//! describe the same samples iff their bytes are equal.
//!
//! The index arrives from an ingest process, which the syncer does not trust: decoding never
//! panics and reports the first problem as an [`IndexError`] naming the byte offset or sample.

/// Most bytes a varint of either field can take: the first field needs up to 33 bits (a
/// zigzagged `i32` plus the key flag), the second 32; five 7-bit groups hold 35.
const MAX_VARINT_LEN: usize = 5;

/// Largest valid first varint: any zigzagged `i32`, shifted to make room for the key flag.
const MAX_DURATION_VARINT: u64 = ((u32::MAX as u64) << 1) | 1;

/// Largest valid second varint: any zigzagged `i32`.
const MAX_BYTES_VARINT: u64 = u32::MAX as u64;

/// One sample as decoded from an index.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Byte offset of the sample in its sample file: the sum of the sizes before it.
    pub pos: u64,
    /// Start relative to the recording's start, in 90 kHz ticks: the sum of the durations
    /// before it.
    pub start_90k: i64,
    /// Duration in 90 kHz ticks; `>= 0`, and `0` only on the last sample of a recording
    /// (its successor's pts was unknown: the "trailing zero").
    pub duration_90k: i32,
    /// Size in bytes; `> 0`.
    pub bytes: i32,
    /// Whether the sample is a key frame (decodable without the samples before it).
    pub is_key: bool,
}

/// A problem in a sample index, naming where it is. `sample` fields are 0-based sample numbers;
/// `offset` fields are byte offsets in the index blob.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// The index ends in the middle of a varint (or between a sample's two varints).
    #[error("sample index ends inside the varint at byte {offset}")]
    TruncatedVarint { offset: usize },

    /// A varint continues past the longest valid encoding.
    #[error("varint at byte {offset} of sample index is longer than {MAX_VARINT_LEN} bytes")]
    VarintTooLong { offset: usize },

    /// A varint has a redundant trailing zero group; the encoder never writes one, and
    /// accepting it would give one index two encodings.
    #[error("varint at byte {offset} of sample index is not minimally encoded")]
    VarintNotMinimal { offset: usize },

    /// A varint's value does not fit its field.
    #[error("varint at byte {offset} of sample index has out-of-range value {value}")]
    VarintOutOfRange { offset: usize, value: u64 },

    /// A sample's decoded duration is negative.
    #[error("sample {sample} has negative duration {duration_90k} (90 kHz ticks)")]
    NegativeDuration { sample: u32, duration_90k: i32 },

    /// A sample other than the last has zero duration.
    #[error("sample {sample} has zero duration but is not the last sample")]
    ZeroDurationNotLast { sample: u32 },

    /// A sample's decoded size is zero or negative.
    #[error("sample {sample} has non-positive size {bytes} bytes")]
    NonPositiveSize { sample: u32, bytes: i32 },

    /// Applying a delta, or a running total (start time, byte position, sample count),
    /// overflows its type.
    #[error("sample {sample} overflows a duration, size or running total")]
    Overflow { sample: u32 },
}

/// Totals of a valid sample index.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexSummary {
    /// Number of samples.
    pub samples: u32,
    /// Number of key-frame samples; `<= samples`.
    pub key_samples: u32,
    /// Sum of all durations, in 90 kHz ticks.
    pub media_duration_90k: i64,
    /// Sum of all sizes: the length the sample file must have.
    pub total_bytes: u64,
    /// Duration of the last sample in 90 kHz ticks (`0` for a trailing zero or an empty
    /// index).
    pub last_sample_duration_90k: i32,
}

impl IndexSummary {
    /// Accounts for `s`, the sample after all those already counted. Cannot overflow: the
    /// decoder checked that `s`'s end and number are representable.
    fn add(&mut self, s: &Sample) {
        self.samples += 1;
        self.key_samples += u32::from(s.is_key);
        self.media_duration_90k = s.start_90k + i64::from(s.duration_90k);
        self.total_bytes = s.pos + s.bytes as u64;
        self.last_sample_duration_90k = s.duration_90k;
    }
}

/// Appends samples to an index blob, one at a time as the ingest writes them.
///
/// Holds only what the next sample's deltas are relative to, so an ingest can keep its index
/// in a single growing `Vec<u8>`.
#[derive(Clone, Debug, Default)]
pub struct SampleIndexEncoder {
    /// Duration of the last sample added, in 90 kHz ticks (0 before the first).
    prev_duration_90k: i32,
    /// Size of the last key sample added, in bytes (0 before the first).
    prev_bytes_key: i32,
    /// Size of the last non-key sample added, in bytes (0 before the first).
    prev_bytes_nonkey: i32,
    /// Whether the last sample added had zero duration, which only the last sample may have.
    ended_with_zero_duration: bool,
}

impl SampleIndexEncoder {
    /// An encoder for an empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the sample's two varints to `out`.
    ///
    /// Panics unless `duration_90k >= 0`, `bytes > 0` and no zero-duration sample was added
    /// before: those are the decoder's rules, and an encoder that broke them would produce an
    /// index the syncer rejects. Callers validate media before it reaches the index.
    pub fn add_sample(&mut self, duration_90k: i32, bytes: i32, is_key: bool, out: &mut Vec<u8>) {
        assert!(
            duration_90k >= 0,
            "sample duration {duration_90k} (90 kHz ticks) is negative"
        );
        assert!(bytes > 0, "sample size {bytes} bytes is not positive");
        assert!(
            !self.ended_with_zero_duration,
            "a sample follows a zero-duration sample, which must be the last"
        );
        // Both operands are in 0..=i32::MAX, so neither subtraction overflows.
        let duration_delta = duration_90k - self.prev_duration_90k;
        let prev_bytes = if is_key {
            &mut self.prev_bytes_key
        } else {
            &mut self.prev_bytes_nonkey
        };
        let bytes_delta = bytes - *prev_bytes;
        *prev_bytes = bytes;
        self.prev_duration_90k = duration_90k;
        self.ended_with_zero_duration = duration_90k == 0;
        append_varint(
            (u64::from(zigzag(duration_delta)) << 1) | u64::from(is_key),
            out,
        );
        append_varint(u64::from(zigzag(bytes_delta)), out);
    }
}

/// Decodes an index blob sample by sample.
///
/// Yields `Ok` for each valid sample; on the first problem yields that `Err` and then ends
/// (the iterator is fused), since nothing after a corrupt sample can be located.
#[derive(Clone, Debug)]
pub struct SampleIndexIterator<'a> {
    index: &'a [u8],
    /// Byte offset in `index` of the next sample's first varint; everything before it has
    /// decoded as whole, valid samples.
    offset: usize,
    /// Number of the next sample (0-based) = samples yielded so far.
    next_sample: u32,
    /// `pos` of the next sample: bytes of the samples so far.
    next_pos: u64,
    /// `start_90k` of the next sample: duration of the samples so far.
    next_start_90k: i64,
    /// What the next sample's deltas are relative to, as in [`SampleIndexEncoder`].
    prev_duration_90k: i32,
    prev_bytes_key: i32,
    prev_bytes_nonkey: i32,
    /// Set once an error has been yielded; iteration is over.
    failed: bool,
}

impl<'a> SampleIndexIterator<'a> {
    /// An iterator over the samples of `index`.
    pub fn new(index: &'a [u8]) -> Self {
        SampleIndexIterator {
            index,
            offset: 0,
            next_sample: 0,
            next_pos: 0,
            next_start_90k: 0,
            prev_duration_90k: 0,
            prev_bytes_key: 0,
            prev_bytes_nonkey: 0,
            failed: false,
        }
    }

    fn decode_next(&mut self) -> Result<Sample, IndexError> {
        let sample = self.next_sample;
        if sample > 0 && self.prev_duration_90k == 0 {
            return Err(IndexError::ZeroDurationNotLast { sample: sample - 1 });
        }
        let (first, offset) = read_varint(self.index, self.offset, MAX_DURATION_VARINT)?;
        let (second, offset) = read_varint(self.index, offset, MAX_BYTES_VARINT)?;
        let overflow = || IndexError::Overflow { sample };

        // The range checks in read_varint make both casts lossless.
        let is_key = first & 1 == 1;
        let duration_90k = self
            .prev_duration_90k
            .checked_add(unzigzag((first >> 1) as u32))
            .ok_or_else(overflow)?;
        if duration_90k < 0 {
            return Err(IndexError::NegativeDuration {
                sample,
                duration_90k,
            });
        }
        let prev_bytes = if is_key {
            self.prev_bytes_key
        } else {
            self.prev_bytes_nonkey
        };
        let bytes = prev_bytes
            .checked_add(unzigzag(second as u32))
            .ok_or_else(overflow)?;
        if bytes <= 0 {
            return Err(IndexError::NonPositiveSize { sample, bytes });
        }
        let next_start_90k = self
            .next_start_90k
            .checked_add(i64::from(duration_90k))
            .ok_or_else(overflow)?;
        let next_pos = self
            .next_pos
            .checked_add(bytes as u64)
            .ok_or_else(overflow)?;
        let next_sample = sample.checked_add(1).ok_or_else(overflow)?;

        let decoded = Sample {
            pos: self.next_pos,
            start_90k: self.next_start_90k,
            duration_90k,
            bytes,
            is_key,
        };
        self.offset = offset;
        self.next_sample = next_sample;
        self.next_pos = next_pos;
        self.next_start_90k = next_start_90k;
        self.prev_duration_90k = duration_90k;
        if is_key {
            self.prev_bytes_key = bytes;
        } else {
            self.prev_bytes_nonkey = bytes;
        }
        Ok(decoded)
    }
}

impl Iterator for SampleIndexIterator<'_> {
    type Item = Result<Sample, IndexError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset == self.index.len() {
            return None;
        }
        let result = self.decode_next();
        self.failed = result.is_err();
        Some(result)
    }
}

impl std::iter::FusedIterator for SampleIndexIterator<'_> {}

/// Validates a whole index and returns its totals.
pub fn summarize(index: &[u8]) -> Result<IndexSummary, IndexError> {
    let mut summary = IndexSummary::default();
    for sample in SampleIndexIterator::new(index) {
        summary.add(&sample?);
    }
    Ok(summary)
}

/// The index of the longest prefix of whole samples whose bytes fit in `file_len` bytes, with
/// its totals. Salvage uses it when an ingest died mid-recording: the sample file may hold
/// fewer bytes than the index describes (or more, if the ingest wrote samples it never
/// reported), and the recording is cut to what both agree on. The caller truncates the file to
/// `total_bytes`, never extends it.
///
/// The last kept sample keeps its encoded duration; the caller decides whether the
/// recording's end is known. Because the codec is a bijection (see the module docs), the
/// returned index is the byte prefix of `index` and equals re-encoding the kept samples.
///
/// The whole `index` is validated, not only the kept prefix: an index that is corrupt anywhere
/// came from a misbehaving peer and is not trusted for salvage.
pub fn whole_sample_prefix(
    index: &[u8],
    file_len: u64,
) -> Result<(Vec<u8>, IndexSummary), IndexError> {
    let mut summary = IndexSummary::default();
    let mut prefix_len = 0;
    let mut samples = SampleIndexIterator::new(index);
    while let Some(sample) = samples.next() {
        let sample = sample?;
        // Sizes are positive, so once one sample ends past file_len every later one does too.
        if sample.pos + sample.bytes as u64 <= file_len {
            summary.add(&sample);
            prefix_len = samples.offset;
        }
    }
    Ok((index[..prefix_len].to_vec(), summary))
}

fn zigzag(n: i32) -> u32 {
    ((n << 1) ^ (n >> 31)) as u32
}

fn unzigzag(z: u32) -> i32 {
    ((z >> 1) as i32) ^ -((z & 1) as i32)
}

fn append_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads the varint starting at `index[offset]`, returning its value (`<= max`, which must be
/// below `2^(7 * MAX_VARINT_LEN)`) and the offset just past it.
fn read_varint(index: &[u8], offset: usize, max: u64) -> Result<(u64, usize), IndexError> {
    let mut value = 0u64;
    for i in 0..MAX_VARINT_LEN {
        let Some(&byte) = index.get(offset + i) else {
            return Err(IndexError::TruncatedVarint { offset });
        };
        // At most 5 groups of 7 bits: no bit can be shifted out of the u64.
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Err(IndexError::VarintNotMinimal { offset });
            }
            if value > max {
                return Err(IndexError::VarintOutOfRange { offset, value });
            }
            return Ok((value, offset + i + 1));
        }
    }
    Err(IndexError::VarintTooLong { offset })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `(duration_90k, bytes, is_key)` of each sample.
    type Spec = (i32, i32, bool);

    /// DESIGN.md's test vector.
    const VECTOR_SAMPLES: [Spec; 5] = [
        (10, 1000, true),
        (9, 10, false),
        (11, 15, false),
        (10, 12, false),
        (10, 1050, true),
    ];
    const VECTOR_INDEX: [u8; 11] = [
        0x29, 0xd0, 0x0f, 0x02, 0x14, 0x08, 0x0a, 0x02, 0x05, 0x01, 0x64,
    ];

    fn encode(samples: &[Spec]) -> Vec<u8> {
        let mut encoder = SampleIndexEncoder::new();
        let mut out = Vec::new();
        for &(duration_90k, bytes, is_key) in samples {
            encoder.add_sample(duration_90k, bytes, is_key, &mut out);
        }
        out
    }

    fn decode(index: &[u8]) -> Result<Vec<Sample>, IndexError> {
        SampleIndexIterator::new(index).collect()
    }

    /// The samples `specs` describe, with positions and starts accumulated.
    fn expected_samples(specs: &[Spec]) -> Vec<Sample> {
        let mut pos = 0;
        let mut start_90k = 0;
        specs
            .iter()
            .map(|&(duration_90k, bytes, is_key)| {
                let s = Sample {
                    pos,
                    start_90k,
                    duration_90k,
                    bytes,
                    is_key,
                };
                pos += bytes as u64;
                start_90k += i64::from(duration_90k);
                s
            })
            .collect()
    }

    #[test]
    fn encodes_design_test_vector() {
        assert_eq!(encode(&VECTOR_SAMPLES), VECTOR_INDEX);
    }

    #[test]
    fn decodes_design_test_vector() {
        assert_eq!(decode(&VECTOR_INDEX), Ok(expected_samples(&VECTOR_SAMPLES)));
        assert_eq!(
            summarize(&VECTOR_INDEX),
            Ok(IndexSummary {
                samples: 5,
                key_samples: 2,
                media_duration_90k: 50,
                total_bytes: 2087,
                last_sample_duration_90k: 10,
            })
        );
    }

    #[test]
    fn empty_index_has_no_samples() {
        assert_eq!(decode(&[]), Ok(vec![]));
        assert_eq!(summarize(&[]), Ok(IndexSummary::default()));
    }

    #[test]
    fn trailing_zero_duration_is_valid() {
        let index = encode(&[(10, 5, true), (0, 7, false)]);
        let summary = summarize(&index).expect("valid");
        assert_eq!(summary.last_sample_duration_90k, 0);
        assert_eq!(summary.media_duration_90k, 10);
    }

    #[test]
    fn rejects_index_ending_inside_a_varint() {
        assert_eq!(
            decode(&[0x80]),
            Err(IndexError::TruncatedVarint { offset: 0 })
        );
        // A sample's first varint without its second.
        assert_eq!(
            decode(&[0x29]),
            Err(IndexError::TruncatedVarint { offset: 1 })
        );
        // The vector cut inside the key frame's size.
        assert_eq!(
            decode(&VECTOR_INDEX[..2]),
            Err(IndexError::TruncatedVarint { offset: 1 })
        );
    }

    #[test]
    fn rejects_varint_longer_than_five_bytes() {
        assert_eq!(
            decode(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
            Err(IndexError::VarintTooLong { offset: 0 })
        );
    }

    #[test]
    fn rejects_non_minimal_varint() {
        assert_eq!(
            decode(&[0x82, 0x00, 0x02]),
            Err(IndexError::VarintNotMinimal { offset: 0 })
        );
        assert_eq!(
            decode(&[0x28, 0x82, 0x80, 0x00]),
            Err(IndexError::VarintNotMinimal { offset: 1 })
        );
    }

    #[test]
    fn rejects_varint_too_large_for_its_field() {
        // 2^33 in the duration field.
        assert_eq!(
            decode(&[0x80, 0x80, 0x80, 0x80, 0x20, 0x02]),
            Err(IndexError::VarintOutOfRange {
                offset: 0,
                value: 1 << 33
            })
        );
        // 2^32 in the size field.
        assert_eq!(
            decode(&[0x28, 0x80, 0x80, 0x80, 0x80, 0x10]),
            Err(IndexError::VarintOutOfRange {
                offset: 1,
                value: 1 << 32
            })
        );
    }

    #[test]
    fn accepts_largest_in_range_varints() {
        // Duration i32::MAX, key; then a non-key sample of size i32::MAX.
        let index = encode(&[(i32::MAX, 1, true), (0, i32::MAX, false)]);
        assert_eq!(&index[..5], &[0xfd, 0xff, 0xff, 0xff, 0x1f]);
        assert!(summarize(&index).is_ok());
    }

    #[test]
    fn rejects_negative_duration() {
        // Duration delta -1 from 0, size 1.
        assert_eq!(
            decode(&[0x02, 0x02]),
            Err(IndexError::NegativeDuration {
                sample: 0,
                duration_90k: -1
            })
        );
    }

    #[test]
    fn rejects_zero_duration_before_the_last_sample() {
        let mut index = encode(&[(10, 5, true), (0, 7, false)]);
        index.extend_from_slice(&[0x00, 0x02]); // another sample of duration 0
        let mut samples = SampleIndexIterator::new(&index);
        assert!(samples.next().expect("sample 0").is_ok());
        assert!(samples.next().expect("sample 1").is_ok());
        assert_eq!(
            samples.next(),
            Some(Err(IndexError::ZeroDurationNotLast { sample: 1 }))
        );
    }

    #[test]
    fn rejects_zero_or_negative_size() {
        // Duration 10, size 0.
        assert_eq!(
            decode(&[0x28, 0x00]),
            Err(IndexError::NonPositiveSize {
                sample: 0,
                bytes: 0
            })
        );
        // Duration 10, size -5.
        assert_eq!(
            decode(&[0x28, 0x09]),
            Err(IndexError::NonPositiveSize {
                sample: 0,
                bytes: -5
            })
        );
    }

    #[test]
    fn rejects_duration_delta_that_overflows() {
        let mut index = encode(&[(i32::MAX, 1, true)]);
        index.extend_from_slice(&[0x04, 0x00]); // duration delta +1, same key size
        assert_eq!(decode(&index), Err(IndexError::Overflow { sample: 1 }));
    }

    #[test]
    fn rejects_size_delta_that_overflows() {
        let mut index = encode(&[(10, i32::MAX, false)]);
        index.extend_from_slice(&[0x00, 0x02]); // same duration, size delta +1
        assert_eq!(decode(&index), Err(IndexError::Overflow { sample: 1 }));
    }

    #[test]
    fn rejects_running_totals_that_overflow() {
        // Reaching these totals for real takes billions of samples; start mid-way instead.
        let index = encode(&[(10, 5, true)]);
        let mut samples = SampleIndexIterator::new(&index);
        samples.next_start_90k = i64::MAX - 5;
        assert_eq!(
            samples.next(),
            Some(Err(IndexError::Overflow { sample: 0 }))
        );

        let mut samples = SampleIndexIterator::new(&index);
        samples.next_pos = u64::MAX - 4;
        assert_eq!(
            samples.next(),
            Some(Err(IndexError::Overflow { sample: 0 }))
        );

        let mut samples = SampleIndexIterator::new(&index);
        samples.next_sample = u32::MAX;
        samples.prev_duration_90k = 10;
        assert_eq!(
            samples.next(),
            Some(Err(IndexError::Overflow { sample: u32::MAX }))
        );
    }

    #[test]
    fn errors_name_the_offset_or_sample() {
        assert_eq!(
            IndexError::VarintTooLong { offset: 7 }.to_string(),
            "varint at byte 7 of sample index is longer than 5 bytes"
        );
        assert_eq!(
            IndexError::ZeroDurationNotLast { sample: 3 }.to_string(),
            "sample 3 has zero duration but is not the last sample"
        );
    }

    #[test]
    fn iteration_ends_after_the_first_error() {
        let mut samples = SampleIndexIterator::new(&[0x28, 0x00, 0x28, 0x02]);
        assert!(matches!(samples.next(), Some(Err(_))));
        assert_eq!(samples.next(), None);
    }

    #[test]
    fn whole_sample_prefix_keeps_samples_that_fit() {
        // Sample ends: 1000, 1010, 1025, 1037, 2087.
        let cases: [(u64, usize); 7] = [
            (0, 0),
            (999, 0),
            (1000, 1),
            (1024, 2),
            (1037, 4),
            (2087, 5),
            (1 << 40, 5),
        ];
        for (file_len, kept) in cases {
            let (prefix, summary) =
                whole_sample_prefix(&VECTOR_INDEX, file_len).expect("valid index");
            assert_eq!(
                prefix,
                encode(&VECTOR_SAMPLES[..kept]),
                "file_len {file_len}"
            );
            assert_eq!(summary, summarize(&prefix).expect("valid prefix"));
            assert!(summary.total_bytes <= file_len);
        }
    }

    #[test]
    fn whole_sample_prefix_keeps_last_kept_duration() {
        let (_, summary) = whole_sample_prefix(&VECTOR_INDEX, 1024).expect("valid index");
        assert_eq!(summary.samples, 2);
        assert_eq!(summary.last_sample_duration_90k, 9);
        assert_eq!(summary.media_duration_90k, 19);
    }

    #[test]
    fn whole_sample_prefix_rejects_corruption_past_the_prefix() {
        let mut index = VECTOR_INDEX.to_vec();
        index.push(0x80);
        assert_eq!(
            whole_sample_prefix(&index, 1000),
            Err(IndexError::TruncatedVarint { offset: 11 })
        );
    }

    /// Valid sample lists: durations and sizes well inside `i32`, except that the last
    /// duration may be the trailing zero.
    fn sample_specs() -> impl Strategy<Value = Vec<Spec>> {
        (
            prop::collection::vec((1..=i32::MAX / 2, 1..=i32::MAX / 2, any::<bool>()), 0..64),
            any::<bool>(),
        )
            .prop_map(|(mut specs, trailing_zero)| {
                if let (true, Some(last)) = (trailing_zero, specs.last_mut()) {
                    last.0 = 0;
                }
                specs
            })
    }

    proptest! {
        #[test]
        fn round_trips_valid_sample_lists(specs in sample_specs()) {
            let index = encode(&specs);
            let expected = expected_samples(&specs);
            prop_assert_eq!(decode(&index), Ok(expected.clone()));
            let summary = summarize(&index).expect("valid");
            prop_assert_eq!(summary.samples as usize, specs.len());
            prop_assert_eq!(
                summary.total_bytes,
                expected.last().map_or(0, |s| s.pos + s.bytes as u64)
            );
        }

        #[test]
        fn decoder_never_panics_and_accepts_only_canonical_indexes(
            index in prop::collection::vec(any::<u8>(), 0..128),
            file_len in any::<u64>(),
        ) {
            let decoded = decode(&index);
            prop_assert_eq!(summarize(&index).is_ok(), decoded.is_ok());
            prop_assert_eq!(whole_sample_prefix(&index, file_len).is_ok(), decoded.is_ok());
            if let Ok(samples) = decoded {
                let specs: Vec<Spec> =
                    samples.iter().map(|s| (s.duration_90k, s.bytes, s.is_key)).collect();
                prop_assert_eq!(encode(&specs), index);
            }
        }

        #[test]
        fn whole_sample_prefix_is_the_longest_fitting_prefix(
            specs in sample_specs(),
            boundary in any::<prop::sample::Index>(),
            offset in -1i64..=1,
        ) {
            let index = encode(&specs);
            let ends: Vec<u64> = expected_samples(&specs)
                .iter()
                .map(|s| s.pos + s.bytes as u64)
                .collect();
            // Just before, at or after a sample boundary, where off-by-one errors live.
            let boundaries: Vec<u64> = std::iter::once(0).chain(ends.iter().copied()).collect();
            let file_len = boundaries[boundary.index(boundaries.len())].saturating_add_signed(offset);
            let kept = ends.iter().take_while(|&&end| end <= file_len).count();
            let (prefix, summary) = whole_sample_prefix(&index, file_len).expect("valid");
            prop_assert_eq!(&prefix, &encode(&specs[..kept]));
            prop_assert_eq!(summary, summarize(&prefix).expect("valid prefix"));
        }
    }
}
