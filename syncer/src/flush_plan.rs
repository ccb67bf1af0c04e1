//! When to flush: each synced recording asks for a commit `flush_if_sec` after its start.
//!
//! Batching commits this way spares SSDs (one transaction for many recordings) while bounding
//! how long an accepted recording stays uncommitted. A plan is skipped when another flush has
//! already committed its recording; a failed flush is retried after a delay.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use protocol::{CompositeId, Time};

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Planned {
    /// Monotonic time at which the flush is due.
    when: Time,
    recording: CompositeId,
    reason: String,
}

#[derive(Debug, Default)]
pub struct FlushPlan {
    heap: BinaryHeap<Reverse<Planned>>,
}

impl FlushPlan {
    pub fn plan(&mut self, when: Time, recording: CompositeId, reason: String) {
        self.heap.push(Reverse(Planned {
            when,
            recording,
            reason,
        }));
    }

    /// The earliest monotonic time at which [`FlushPlan::due`] may return something.
    pub fn next_deadline(&self) -> Option<Time> {
        self.heap.peek().map(|p| p.0.when)
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Drops plans whose recordings are already committed, then returns the reason of the
    /// earliest remaining plan if it is due at monotonic time `now`.
    pub fn due(&mut self, now: Time, committed: impl Fn(CompositeId) -> bool) -> Option<String> {
        while let Some(p) = self.heap.peek() {
            if !committed(p.0.recording) {
                break;
            }
            tracing::trace!(recording = %p.0.recording, reason = %p.0.reason, "planned flush no longer needed");
            self.heap.pop();
        }
        let p = self.heap.peek()?;
        (p.0.when <= now).then(|| p.0.reason.clone())
    }

    /// A flush succeeded: every plan is satisfied, either because its recording is now
    /// committed, or because a recording ahead of it in its stream is still closing and will
    /// plan its own flush when its save resolves.
    pub fn flushed(&mut self) {
        self.heap.clear();
    }

    /// A flush failed: retry the earliest plan at `retry_at`.
    pub fn failed(&mut self, retry_at: Time) {
        if let Some(mut p) = self.heap.pop() {
            p.0.when = retry_at;
            self.heap.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(r: i32) -> CompositeId {
        CompositeId::new(1, r)
    }

    #[test]
    fn earliest_plan_fires_when_due() {
        let mut p = FlushPlan::default();
        p.plan(Time(200), id(2), "b".into());
        p.plan(Time(100), id(1), "a".into());
        assert_eq!(p.next_deadline(), Some(Time(100)));
        assert_eq!(p.due(Time(99), |_| false), None);
        assert_eq!(p.due(Time(100), |_| false).as_deref(), Some("a"));
    }

    #[test]
    fn plans_made_unnecessary_are_skipped() {
        let mut p = FlushPlan::default();
        p.plan(Time(100), id(1), "a".into());
        p.plan(Time(200), id(2), "b".into());
        // Recording 1 was committed by some other flush.
        assert_eq!(p.due(Time(150), |i| i == id(1)), None);
        assert_eq!(p.next_deadline(), Some(Time(200)));
    }

    #[test]
    fn failed_flush_is_retried_later() {
        let mut p = FlushPlan::default();
        p.plan(Time(100), id(1), "a".into());
        p.failed(Time(1000));
        assert_eq!(p.due(Time(999), |_| false), None);
        assert!(p.due(Time(1000), |_| false).is_some());
        p.flushed();
        assert!(p.is_empty());
    }
}
