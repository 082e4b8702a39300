//! A counter and a histogram for the per-request series, whose updates stay on the
//! updating thread's own cache line.
//!
//! `prometheus-client`'s `Counter` is one atomic and its `Histogram` a mutex around the
//! buckets: every request on every core writes the same cache lines, and on a
//! multi-core server each write first takes the line from the core that wrote it last
//! (tens to hundreds of nanoseconds, on the cheapest requests as much as everything
//! else the metrics cost). These keep one slot per thread (threads are spread over
//! [`SHARDS`] slots on first use), padded to its own line; a scrape adds the slots
//! up. Values are the same, a scrape is not a snapshot across slots (a request may be
//! in one series' total and not yet in another's), as with separate atomics.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Slots per metric: more than the threads that serve requests on any machine valv
/// is sized for; threads beyond share slots (still correct, just contended).
const SHARDS: usize = 16;

/// A slot on a cache line of its own (128 bytes: adjacent-line prefetch pairs lines).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// This thread's slot.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

/// A monotonic counter (Prometheus `counter`). Clones share their value.
#[derive(Debug, Clone, Default)]
pub struct Counter {
    slots: Arc<[Padded<AtomicU64>; SHARDS]>,
}

impl Counter {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, n: u64) {
        self.slots[shard()].0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.slots
            .iter()
            .fold(0u64, |sum, s| sum.wrapping_add(s.0.load(Ordering::Relaxed)))
    }
}

impl TypedMetric for Counter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for Counter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The most bucket bounds a [`Histogram`] takes.
const MAX_BOUNDS: usize = 15;

/// One thread's slot of a histogram: a count per bucket (the last is `+Inf`), and the
/// sum in nanoseconds (exact, and one integer add).
#[derive(Debug, Default)]
struct HistogramSlot {
    buckets: [AtomicU64; MAX_BOUNDS + 1],
    sum_nanos: AtomicU64,
}

/// A latency histogram (Prometheus `histogram`, in seconds) with fixed bucket bounds.
/// Clones share their values. Its count is the sum of its buckets.
#[derive(Debug, Clone)]
pub struct Histogram {
    /// Upper bounds in seconds, ascending; values above the last go to `+Inf`.
    bounds: &'static [f64],
    slots: Arc<[Padded<HistogramSlot>; SHARDS]>,
}

impl Histogram {
    /// Panics (at start-up, where histograms are made) if `bounds` has more than
    /// [`MAX_BOUNDS`] entries.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        assert!(bounds.len() <= MAX_BOUNDS, "too many histogram buckets");
        Histogram {
            bounds,
            slots: Arc::default(),
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        // `le` semantics: the first bucket whose bound is at least the value.
        let bucket = self.bounds.partition_point(|&b| b < secs);
        let slot = &self.slots[shard()].0;
        slot.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        slot.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The sum in seconds, the count, and each bucket's own (not cumulative) count with
    /// its bound, `+Inf` last.
    fn totals(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .map(|b| (b, 0))
            .collect();
        let mut nanos = 0u64;
        for slot in self.slots.iter() {
            for (total, count) in buckets.iter_mut().zip(&slot.0.buckets) {
                total.1 = total.1.wrapping_add(count.load(Ordering::Relaxed));
            }
            nanos = nanos.wrapping_add(slot.0.sum_nanos.load(Ordering::Relaxed));
        }
        let count = buckets.iter().fold(0u64, |n, b| n.wrapping_add(b.1));
        (nanos as f64 / 1e9, count, buckets)
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.totals();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_add_up() {
        let c = Counter::default();
        let h = Histogram::new(&[0.001, 0.01]);
        std::thread::scope(|s| {
            for t in 0..20u64 {
                let (c, h) = (c.clone(), h.clone());
                s.spawn(move || {
                    for _ in 0..1000 {
                        c.inc_by(t);
                        h.observe(Duration::from_micros(500 * t));
                    }
                });
            }
        });
        assert_eq!(c.get(), 1000 * (0..20).sum::<u64>());
        let (sum, count, buckets) = h.totals();
        assert_eq!(count, 20_000);
        // 0, 0.5 and 1 ms are <= 1 ms (le); 1.5 to 9.5 ms <= 10 ms; nothing above.
        assert_eq!(
            buckets,
            vec![(0.001, 3000), (0.01, 17_000), (f64::INFINITY, 0)]
        );
        let expected: f64 = (0..20).map(|t| 1000.0 * 500e-6 * t as f64).sum();
        assert!((sum - expected).abs() < 1e-9, "{sum} vs {expected}");
    }
}
