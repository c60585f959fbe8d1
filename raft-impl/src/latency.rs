//! [`ProposalLatency`]: how long the proposals a node appended as leader took to end, as a
//! histogram any service can export (for example in the Prometheus text format).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets: 100 µs to 5 s, roughly three per decade, the range in
/// which a proposal's latency varies from an idle in-memory cluster to a loaded, durable
/// one.
pub const LATENCY_BUCKETS: [Duration; 14] = [
    Duration::from_micros(100),
    Duration::from_micros(250),
    Duration::from_micros(500),
    Duration::from_millis(1),
    Duration::from_micros(2_500),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(5),
];

/// A histogram of proposal latencies, read with [`Raft::proposal_latency`](crate::Raft::proposal_latency).
///
/// It counts the proposals made through [`Raft::propose`](crate::Raft::propose) on this
/// node that the leader appended to its log, from the call to its end: the response, or
/// [`Lost`](crate::ProposeError::Lost) / [`OutcomeUnknown`](crate::ProposeError::OutcomeUnknown).
/// Proposals refused before they were appended (not the leader, a transfer in progress,
/// stopped) are not counted: their time says nothing about replication.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProposalLatency {
    /// For each bound of [`LATENCY_BUCKETS`], how many proposals took at most that long
    /// (cumulative, as Prometheus histograms are).
    pub at_most: [u64; LATENCY_BUCKETS.len()],
    /// How many proposals were counted (the `+Inf` bucket).
    pub count: u64,
    /// Their latencies added up.
    pub sum: Duration,
}

/// [`LATENCY_BUCKETS`] in nanoseconds: a bucket is found by comparing integers, where
/// comparing `Duration`s (seconds, then nanoseconds) made the search branch twice per
/// step (2.4% of a 256-client run's time in `perf`, most of it this search).
const BOUNDS_NANOS: [u64; LATENCY_BUCKETS.len()] = {
    let mut nanos = [0; LATENCY_BUCKETS.len()];
    let mut i = 0;
    while i < nanos.len() {
        // Every bound is below 5 s: no truncation.
        nanos[i] = LATENCY_BUCKETS[i].as_nanos() as u64;
        i += 1;
    }
    nanos
};

/// The live histogram the apply task records into.
#[derive(Debug, Default)]
pub(crate) struct LatencyRecorder {
    /// Non-cumulative counts per bucket; the last counts what exceeds every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl LatencyRecorder {
    /// Counts one proposal that took `took`.
    ///
    /// One writer only: the apply task, which answers every timed proposal. With one
    /// writer a count goes up by a plain load and store, where an atomic add would lock
    /// the cache line on every write (twice per proposal); a reader still sees the
    /// count before the proposer sees its answer, which the reply channel publishes.
    pub(crate) fn record(&self, took: Duration) {
        // Saturating at 584 years, far beyond the last bound.
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = &self.buckets[BOUNDS_NANOS.partition_point(|&bound| bound < nanos)];
        bucket.store(
            bucket.load(Ordering::Relaxed).saturating_add(1),
            Ordering::Relaxed,
        );
        // Saturating: a sum that would overflow (after centuries of latency) stays at
        // its maximum rather than wrapping to a small number.
        let sum = self.sum_nanos.load(Ordering::Relaxed);
        self.sum_nanos
            .store(sum.saturating_add(nanos), Ordering::Relaxed);
    }

    pub(crate) fn read(&self) -> ProposalLatency {
        let mut histogram = ProposalLatency::default();
        let mut below = 0u64;
        for (at_most, bucket) in histogram.at_most.iter_mut().zip(&self.buckets) {
            below = below.saturating_add(bucket.load(Ordering::Relaxed));
            *at_most = below;
        }
        let beyond = self.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        histogram.count = below.saturating_add(beyond);
        histogram.sum = Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed));
        histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let recorder = LatencyRecorder::default();
        recorder.record(Duration::from_micros(100)); // on the first bound
        recorder.record(Duration::from_micros(101)); // just past it
        recorder.record(Duration::from_millis(3));
        recorder.record(Duration::from_secs(60)); // beyond every bound
        let histogram = recorder.read();
        assert_eq!(histogram.count, 4);
        assert_eq!(histogram.at_most[0], 1, "100 µs is at most 100 µs");
        assert_eq!(histogram.at_most[1], 2);
        assert_eq!(histogram.at_most[4], 2, "3 ms is over 2.5 ms");
        assert_eq!(histogram.at_most[5], 3);
        assert_eq!(histogram.at_most[LATENCY_BUCKETS.len() - 1], 3);
        assert_eq!(
            histogram.sum,
            Duration::from_micros(100 + 101 + 3_000 + 60_000_000)
        );
    }

    #[test]
    fn a_bound_holds_to_the_nanosecond() {
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            let recorder = LatencyRecorder::default();
            recorder.record(*bound);
            recorder.record(*bound + Duration::from_nanos(1));
            let histogram = recorder.read();
            assert_eq!(histogram.at_most[i], 1, "bucket {i} ({bound:?})");
            assert_eq!(histogram.count, 2);
        }
    }
}
