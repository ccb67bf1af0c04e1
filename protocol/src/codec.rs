//! Frames: how a message becomes bytes on the socket and back. The only module that knows the
//! encoding (bincode), so it can be replaced without touching the message types or the socket
//! code.
//!
//! A frame is a [`PREFIX_BYTES`]-byte little-endian `u32` body length followed by the body: the
//! message in bincode 2's standard configuration (little endian, variable-length integers)
//! through its `serde` support. A body is at most [`MAX_FRAME_BYTES`]; the reader checks the
//! prefix before it allocates or reads the body ([`body_len`]). Lengths inside the body cannot
//! make the decoder allocate much more either: bincode's byte limit refuses a string longer than
//! a frame, and serde preallocates at most 1 MiB for a sequence whatever length it is told.
//!
//! Decoding is strict: a body must be exactly one message. Trailing bytes are an error rather
//! than ignored, so two encoders that disagree fail loudly instead of half-working.

use bincode::config;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::wire::WireError;

/// Largest frame body in bytes (the length prefix not included). The biggest real message, a
/// close with the samples of one second, is a few kilobytes; sample entries are under 1 KiB.
pub const MAX_FRAME_BYTES: usize = 4 << 20;

/// Size of the length prefix that starts every frame, in bytes.
pub const PREFIX_BYTES: usize = 4;

/// Encodes `msg` as a whole frame: length prefix and body.
///
/// Fails with [`WireError::Oversize`] if the body would exceed [`MAX_FRAME_BYTES`] (the peer
/// would refuse it), and with [`WireError::Encode`] if `msg` cannot be serialized (a bug in its
/// `Serialize` impl; the derived ones of [`crate::messages`] always succeed).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, WireError> {
    let mut frame = vec![0; PREFIX_BYTES];
    bincode::serde::encode_into_std_write(msg, &mut frame, config::standard())
        .map_err(|e| WireError::Encode(e.to_string()))?;
    let len = frame.len() - PREFIX_BYTES;
    let prefix = u32::try_from(len)
        .ok()
        .filter(|&l| l as usize <= MAX_FRAME_BYTES)
        .ok_or(WireError::Oversize {
            len,
            max: MAX_FRAME_BYTES,
        })?;
    frame[..PREFIX_BYTES].copy_from_slice(&prefix.to_le_bytes());
    Ok(frame)
}

/// The body length a frame's prefix announces, checked against [`MAX_FRAME_BYTES`] so that the
/// reader refuses an oversize frame before it allocates for or reads its body.
pub fn body_len(prefix: [u8; PREFIX_BYTES]) -> Result<usize, WireError> {
    // A u32 always fits the usize of the 32- and 64-bit targets nvr runs on.
    let len = u32::from_le_bytes(prefix) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(WireError::Oversize {
            len,
            max: MAX_FRAME_BYTES,
        });
    }
    Ok(len)
}

/// Decodes a frame body (without its prefix) as one `T`, consuming all of it.
///
/// Fails with [`WireError::Oversize`] for a body over [`MAX_FRAME_BYTES`], and with
/// [`WireError::Decode`] for a body that is not exactly one `T`: bad variant index, invalid
/// UTF-8, a length past the end or past the limit, or bytes left over.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    if body.len() > MAX_FRAME_BYTES {
        return Err(WireError::Oversize {
            len: body.len(),
            max: MAX_FRAME_BYTES,
        });
    }
    let limited = config::standard().with_limit::<MAX_FRAME_BYTES>();
    let (msg, used) = bincode::serde::decode_from_slice(body, limited)
        .map_err(|e| WireError::Decode(e.to_string()))?;
    if used != body.len() {
        return Err(WireError::Decode(format!(
            "{} of the body's {} bytes are left over after the message",
            body.len() - used,
            body.len()
        )));
    }
    Ok(msg)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::messages::{AdminRequest, IngestRequest, RecordingTimes, SampleReport};
    use crate::{CompositeId, Time};
    use proptest::prelude::*;

    fn body(frame: &[u8]) -> &[u8] {
        &frame[PREFIX_BYTES..]
    }

    #[test]
    fn prefix_is_the_little_endian_body_length() {
        let frame = encode(&"abc".to_owned()).unwrap();
        // bincode standard: a varint length (1 byte) and the 3 bytes.
        assert_eq!(frame, [4, 0, 0, 0, 3, b'a', b'b', b'c']);
        assert_eq!(body_len([4, 0, 0, 0]).unwrap(), 4);
    }

    /// A page of the longest recording summaries fits in one frame (with room to spare: a
    /// quarter of the limit), so `AdminReply::Recordings` never fails to encode.
    #[test]
    fn a_full_page_of_the_longest_recordings_fits_in_a_frame() {
        use crate::messages::{
            AdminReply, MAX_END_REASON_BYTES, MAX_RECORDINGS_PER_PAGE, RecordingSummary,
        };
        let longest = RecordingSummary {
            id: CompositeId::new(i32::MAX, i32::MAX),
            stream_name: "n".repeat(64),
            start: Time(i64::MAX),
            wall_duration_90k: i32::MAX,
            media_duration_90k: i32::MAX,
            sample_file_bytes: i64::MAX,
            video_samples: i32::MAX,
            video_sync_samples: i32::MAX,
            run_offset: i32::MAX,
            flags: i32::MAX,
            end_reason: Some("é".repeat(MAX_END_REASON_BYTES / 2)),
            blake3: [0xff; 32],
        };
        let page = AdminReply::Recordings(vec![longest; MAX_RECORDINGS_PER_PAGE as usize]);
        let frame = encode(&page).unwrap();
        assert!(frame.len() < MAX_FRAME_BYTES / 4, "{} bytes", frame.len());
    }

    #[test]
    fn encode_refuses_a_body_over_the_limit() {
        let err = encode(&vec![0u8; MAX_FRAME_BYTES]).unwrap_err();
        assert!(
            matches!(err, WireError::Oversize { len, max: MAX_FRAME_BYTES } if len > MAX_FRAME_BYTES),
            "{err:?}"
        );
    }

    #[test]
    fn body_len_refuses_a_prefix_over_the_limit() {
        let at_limit = u32::try_from(MAX_FRAME_BYTES).unwrap();
        assert_eq!(body_len(at_limit.to_le_bytes()).unwrap(), MAX_FRAME_BYTES);
        let err = body_len((at_limit + 1).to_le_bytes()).unwrap_err();
        assert!(matches!(
            err,
            WireError::Oversize { len, max: MAX_FRAME_BYTES } if len == MAX_FRAME_BYTES + 1
        ));
    }

    #[test]
    fn decode_refuses_left_over_bytes() {
        let mut frame = encode(&7u32).unwrap();
        frame.push(0);
        let err = decode::<u32>(body(&frame)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "undecodable frame: 1 of the body's 2 bytes are left over after the message"
        );
    }

    #[test]
    fn decode_refuses_an_unknown_variant() {
        // Variant index 200 as a bincode varint (251 = u16 follows).
        let err = decode::<IngestRequest>(&[251, 200, 0]).unwrap_err();
        assert!(matches!(err, WireError::Decode(_)), "{err:?}");
    }

    #[test]
    fn decode_refuses_a_string_length_past_the_limit_before_allocating_it() {
        // AddSampleEntry whose codec string claims u64::MAX / 2 bytes.
        let mut bytes = vec![0, 1, 1]; // variant 0, width 1, height 1
        bytes.push(253); // varint marker: a u64 follows
        bytes.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
        let err = decode::<IngestRequest>(&bytes).unwrap_err();
        assert_eq!(err.to_string(), "undecodable frame: LimitExceeded");
    }

    #[test]
    fn decode_refuses_a_sequence_length_past_the_end() {
        // AddSampleEntry whose data claims u64::MAX / 2 bytes. serde preallocates at most
        // 1 MiB for a sequence whatever length it is told, then the body runs out.
        let mut bytes = vec![0, 1, 1, 0]; // variant 0, width 1, height 1, empty codec string
        bytes.push(253); // varint marker: a u64 follows
        bytes.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
        let err = decode::<IngestRequest>(&bytes).unwrap_err();
        assert!(matches!(err, WireError::Decode(_)), "{err:?}");
    }

    pub(crate) fn sample_report() -> impl Strategy<Value = SampleReport> {
        (any::<i64>(), any::<u32>(), any::<bool>()).prop_map(|(pts_90k, bytes, is_key)| {
            SampleReport {
                pts_90k,
                bytes,
                is_key,
            }
        })
    }

    proptest! {
        #[test]
        fn sample_reports_round_trip(
            samples in proptest::collection::vec(sample_report(), 0..500),
            start in any::<i64>(),
            wall_duration_90k in any::<i32>(),
            local_time_delta_90k in any::<i64>(),
            written_bytes in any::<u64>(),
        ) {
            let msg = IngestRequest::Progress {
                id: CompositeId::new(3, 7),
                samples,
                times: RecordingTimes { start: Time(start), wall_duration_90k, local_time_delta_90k },
                written_bytes,
            };
            let frame = encode(&msg).unwrap();
            let prefix: [u8; PREFIX_BYTES] = frame[..PREFIX_BYTES].try_into().unwrap();
            prop_assert_eq!(body_len(prefix).unwrap(), frame.len() - PREFIX_BYTES);
            prop_assert_eq!(decode::<IngestRequest>(body(&frame)).unwrap(), msg);
        }

        #[test]
        fn arbitrary_bodies_decode_or_fail_without_panicking(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let _ = decode::<IngestRequest>(&bytes);
            let _ = decode::<AdminRequest>(&bytes);
        }
    }
}
