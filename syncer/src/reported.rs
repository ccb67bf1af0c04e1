//! What a writer has reported of a growing recording, checked against the limits.
//!
//! The writer reports each sample only after `write(2)` returned for its bytes, so the reported
//! samples are what a salvage may keep. A sample's duration is the next sample's pts minus its
//! own, so the last reported sample's duration stays unknown until the next report or the close.

use protocol::messages::SampleReport;
use protocol::sample_index::SampleIndexEncoder;

use crate::limits;

#[derive(Debug, Default)]
pub struct ReportedSamples {
    encoder: SampleIndexEncoder,
    /// Index of every reported sample but the last.
    index: Vec<u8>,
    last: Option<SampleReport>,
    pub samples: u32,
    pub key_samples: u32,
    /// Sum of the reported samples' sizes, in bytes.
    pub total_bytes: u64,
}

impl ReportedSamples {
    /// Appends reported samples in order, stopping at the first one that breaks a rule (those
    /// before it stay appended).
    pub fn push_all(&mut self, samples: &[SampleReport]) -> Result<(), String> {
        samples.iter().try_for_each(|&s| self.push(s))
    }

    /// Appends one reported sample; on error nothing changes.
    pub fn push(&mut self, s: SampleReport) -> Result<(), String> {
        if s.bytes == 0 || s.bytes > limits::MAX_SAMPLE_BYTES {
            return Err(format!(
                "sample of {} bytes (allowed 1..={})",
                s.bytes,
                limits::MAX_SAMPLE_BYTES
            ));
        }
        if self.samples >= limits::MAX_SAMPLES_PER_RECORDING {
            return Err(format!(
                "more than {} samples in one recording",
                limits::MAX_SAMPLES_PER_RECORDING
            ));
        }
        let total = self.total_bytes + u64::from(s.bytes);
        if total > limits::MAX_RECORDING_BYTES {
            return Err(format!(
                "recording would exceed {} bytes",
                limits::MAX_RECORDING_BYTES
            ));
        }
        match self.last {
            None if s.pts_90k != 0 => {
                return Err(format!("first sample has pts {}, expected 0", s.pts_90k));
            }
            None => {}
            Some(prev) => {
                // Checked: both are the writer's numbers (found by tests/session_fuzz.rs).
                let d = s.pts_90k.checked_sub(prev.pts_90k).unwrap_or(i64::MIN);
                if d < limits::MIN_SAMPLE_DURATION_90K || d > i64::from(i32::MAX) {
                    return Err(format!(
                        "pts {} after {}: duration {} outside {}..={}",
                        s.pts_90k,
                        prev.pts_90k,
                        i128::from(s.pts_90k) - i128::from(prev.pts_90k),
                        limits::MIN_SAMPLE_DURATION_90K,
                        i32::MAX
                    ));
                }
                if s.pts_90k > limits::MAX_MEDIA_DURATION_90K {
                    return Err(format!(
                        "pts {} exceeds the maximum recording duration {}",
                        s.pts_90k,
                        limits::MAX_MEDIA_DURATION_90K
                    ));
                }
                let before = self.index.len();
                self.encoder
                    .add_sample(d as i32, prev.bytes as i32, prev.is_key, &mut self.index);
                if self.index.len() > limits::MAX_INDEX_BYTES {
                    self.index.truncate(before);
                    return Err(format!("index exceeds {} bytes", limits::MAX_INDEX_BYTES));
                }
            }
        }
        self.last = Some(s);
        self.samples += 1;
        self.key_samples += u32::from(s.is_key);
        self.total_bytes = total;
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.samples == 0
    }

    /// Media duration of the complete samples, 90 kHz (the last sample counts as 0).
    pub fn media_duration_90k(&self) -> i64 {
        self.last.map_or(0, |l| l.pts_90k)
    }

    /// The full index with the last sample's duration given (0 = unknown, trailing zero).
    pub fn finish(&self, last_duration_90k: i32) -> Vec<u8> {
        let mut index = self.index.clone();
        if let Some(l) = self.last {
            let mut enc = self.encoder.clone();
            enc.add_sample(last_duration_90k, l.bytes as i32, l.is_key, &mut index);
        }
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::sample_index::summarize;

    fn s(pts_90k: i64, bytes: u32, is_key: bool) -> SampleReport {
        SampleReport {
            pts_90k,
            bytes,
            is_key,
        }
    }

    #[test]
    fn builds_the_index_one_sample_behind() {
        let mut r = ReportedSamples::default();
        r.push(s(0, 1000, true)).unwrap();
        r.push(s(3000, 10, false)).unwrap();
        r.push(s(6003, 15, false)).unwrap();
        // Until the next report or the close, the last sample's duration is unknown.
        assert_eq!(r.media_duration_90k(), 6003);
        let mut expected = Vec::new();
        let mut enc = SampleIndexEncoder::default();
        enc.add_sample(3000, 1000, true, &mut expected);
        enc.add_sample(3003, 10, false, &mut expected);
        enc.add_sample(2997, 15, false, &mut expected);
        assert_eq!(r.finish(2997), expected);
        assert_eq!(r.total_bytes, 1025);
        let sum = summarize(&r.finish(0)).unwrap();
        assert_eq!((sum.samples, sum.key_samples), (3, 1));
        assert_eq!(sum.media_duration_90k, 6003);
        assert_eq!(sum.last_sample_duration_90k, 0);
    }

    #[test]
    fn rejects_bad_reports_without_changing_anything() {
        let mut r = ReportedSamples::default();
        assert!(r.push(s(5, 1, true)).is_err(), "first pts must be 0");
        r.push(s(0, 1, true)).unwrap();
        assert!(r.push(s(0, 1, false)).is_err(), "pts must increase");
        assert!(r.push(s(-1, 1, false)).is_err(), "pts backwards");
        assert!(r.push(s(1 << 40, 1, false)).is_err(), "jump past i32");
        assert!(r.push(s(i64::MIN, 1, false)).is_err(), "no overflow");
        r.push(s(3000, 1, false)).unwrap();
        assert!(
            r.push(s(i64::MIN, 1, false)).is_err(),
            "no overflow after a positive pts"
        );
        assert!(r.push(s(10, 0, false)).is_err(), "too short");
        assert!(r.push(s(3000, 0, false)).is_err(), "empty sample");
        assert_eq!(r.samples, 2);
        assert_eq!(r.total_bytes, 2);
    }
}
