//! The ingests the daemon dropped for breaking a rule, kept for the supervisor
//! (`AdminRequest::DroppedIngests`): dropping a connection cannot take back the descriptors
//! its process holds, so the process itself must end, and only the supervisor (its parent, of
//! any uid) can be relied on to end it and restart the camera.

use std::collections::VecDeque;

use protocol::messages::{DroppedIngest, MAX_DROPPED_INGESTS_KEPT};

/// The latest [`MAX_DROPPED_INGESTS_KEPT`] drops, numbered from 1.
#[derive(Debug, Default)]
pub struct DroppedLog {
    last_seq: u64,
    kept: VecDeque<DroppedIngest>,
}

impl DroppedLog {
    /// Records that `stream_name`'s ingest `pid` was dropped for `reason`.
    pub fn record(&mut self, stream_name: String, pid: Option<i32>, reason: String) {
        self.last_seq += 1;
        if self.kept.len() == MAX_DROPPED_INGESTS_KEPT {
            self.kept.pop_front();
        }
        self.kept.push_back(DroppedIngest {
            seq: self.last_seq,
            stream_name,
            pid,
            reason,
        });
    }

    /// The drops numbered above `after`, oldest first.
    pub fn since(&self, after: u64) -> Vec<DroppedIngest> {
        self.kept
            .iter()
            .filter(|d| d.seq > after)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_drops_in_order() {
        let mut log = DroppedLog::default();
        for i in 0..MAX_DROPPED_INGESTS_KEPT + 3 {
            log.record("cam".into(), Some(i as i32), format!("drop {i}"));
        }
        let all = log.since(0);
        assert_eq!(all.len(), MAX_DROPPED_INGESTS_KEPT);
        assert_eq!(all[0].seq, 4);
        assert_eq!(all.last().unwrap().seq, MAX_DROPPED_INGESTS_KEPT as u64 + 3);
        let after = log.since(all.last().unwrap().seq - 1);
        assert_eq!(after.len(), 1);
        assert_eq!(
            after[0].reason,
            format!("drop {}", MAX_DROPPED_INGESTS_KEPT + 2)
        );
        assert!(log.since(u64::MAX).is_empty());
    }
}
