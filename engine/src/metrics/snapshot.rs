//! What one shard answers to [`Query::Metrics`](crate::control::Query::Metrics), and the sum
//! over shards that a scrape renders.
//!
//! Latency histograms stay hdrhistograms on their shards (microseconds, 3 significant digits).
//! A shard answers with their counts at the fixed Prometheus bucket bounds of
//! [`BOUNDS_US`] plus their sum and count, not with the histograms themselves: bucket
//! counts add exactly across shards, and a few hundred bytes cross the mesh instead of the
//! ~200 KiB array of each histogram.

use hdrhistogram::Histogram;

use super::counters::CounterValues;

/// Upper bounds of the latency buckets, microseconds (100 µs .. 10 s); `+Inf` follows.
pub const BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// A latency distribution at the bounds of [`BOUNDS_US`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets {
    /// Values in each bucket, not cumulative: `counts[i]` holds values in
    /// `(BOUNDS_US[i-1], BOUNDS_US[i]]`; the last entry is above the last bound.
    pub counts: [u64; BOUNDS_US.len() + 1],
    /// Sum of all values, microseconds.
    pub sum_us: f64,
    /// Number of values.
    pub count: u64,
}

impl Buckets {
    /// The distribution of `h` (values in microseconds).
    pub fn of(h: &Histogram<u64>) -> Self {
        let mut b = Buckets::default();
        for v in h.iter_recorded() {
            let n = v.count_at_value();
            // hdrhistogram stores a range of equivalent values per slot; its lowest value
            // decides the bucket, so an exact bound (10 000 µs) lands at or below it.
            let value = h.lowest_equivalent(v.value_iterated_to());
            let i = BOUNDS_US.partition_point(|&bound| bound < value);
            b.counts[i] += n;
            b.sum_us += h.median_equivalent(value) as f64 * n as f64;
            b.count += n;
        }
        b
    }

    /// Adds another shard's distribution.
    pub fn add(&mut self, o: &Buckets) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.sum_us += o.sum_us;
        self.count += o.count;
    }
}

/// One shard's metrics, or their sum over every shard.
#[derive(Debug, Clone, Default)]
pub struct ShardMetricsSnapshot {
    /// The counters.
    pub counters: CounterValues,
    /// Streams published here (origins).
    pub live_streams: u64,
    /// Publishers, by [`Protocol`](super::Protocol) index.
    pub publishers: [u64; super::counters::PROTOCOLS],
    /// LL-HLS clients that fetched something within
    /// [`HLS_ACTIVE_WINDOW`](crate::control::HLS_ACTIVE_WINDOW), over all streams.
    pub hls_clients: u64,
    /// Ingest-to-egress latency of RTMP(S) video frames.
    pub rtmp_egress_latency: Buckets,
    /// Ingest-to-egress latency of video frames sent to SRT players.
    pub srt_egress_latency: Buckets,
    /// Time RTMP(S) video frames waited in a player's outbox.
    pub rtmp_queue_wait: Buckets,
    /// Ingest-to-part latency of LL-HLS.
    pub hls_part_latency: Buckets,
}

impl ShardMetricsSnapshot {
    /// Adds another shard's snapshot.
    pub fn add(&mut self, o: &ShardMetricsSnapshot) {
        self.counters.add(&o.counters);
        self.live_streams += o.live_streams;
        for (a, b) in self.publishers.iter_mut().zip(&o.publishers) {
            *a += b;
        }
        self.hls_clients += o.hls_clients;
        self.rtmp_egress_latency.add(&o.rtmp_egress_latency);
        self.srt_egress_latency.add(&o.srt_egress_latency);
        self.rtmp_queue_wait.add(&o.rtmp_queue_wait);
        self.hls_part_latency.add(&o.hls_part_latency);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values: &[u64]) -> Histogram<u64> {
        let mut h = Histogram::new_with_bounds(1, 60_000_000, 3).unwrap();
        for &v in values {
            h.record(v).unwrap();
        }
        h
    }

    #[test]
    fn values_land_in_their_buckets() {
        let b = Buckets::of(&hist(&[1, 100, 101, 10_000, 10_003, 70_000, 30_000_000]));
        assert_eq!(b.count, 7);
        assert_eq!(b.counts[0], 2, "1 and 100 are <= 100 µs");
        assert_eq!(b.counts[1], 1, "101 is in (100, 250]");
        assert_eq!(
            b.counts[6], 2,
            "10 000 and 10 003 share an hdr slot at the bound"
        );
        assert_eq!(b.counts[8 + 1], 1, "70 ms is in (50, 100] ms");
        assert_eq!(b.counts[BOUNDS_US.len()], 1, "30 s is above every bound");
        let exact = 1.0 + 100.0 + 101.0 + 10_000.0 + 10_003.0 + 70_000.0 + 30_000_000.0;
        assert!((b.sum_us - exact).abs() / exact < 0.001, "{}", b.sum_us);
    }

    #[test]
    fn shards_add_like_a_merged_histogram() {
        let (a, c) = (hist(&[50, 600, 4_000]), hist(&[700, 2_000_000]));
        let mut merged = a.clone();
        merged.add(&c).unwrap();
        let mut sum = Buckets::of(&a);
        sum.add(&Buckets::of(&c));
        let whole = Buckets::of(&merged);
        assert_eq!(sum.counts, whole.counts);
        assert_eq!(sum.count, whole.count);
        assert!((sum.sum_us - whole.sum_us).abs() < 1e-6);
        assert_eq!(Buckets::of(&hist(&[])), Buckets::default());
    }
}
