//! The storage crate's counters, read from the [`Store`] at each scrape: nothing is
//! recorded twice, and the store's hot paths keep their plain atomics.

use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use storage::backend::ObjectOperation;
use storage::Store;

#[derive(Debug)]
pub(super) struct StoreCollector {
    store: Store,
}

impl StoreCollector {
    pub(super) fn new(store: Store) -> StoreCollector {
        StoreCollector { store }
    }
}

/// One counter family `name{label=…}` with one sample per `(value, count)`.
fn counters<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    samples: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in samples {
        let labels = [(label, value)];
        ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    n: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(n);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let objects = self.store.object_store_metrics();
        let ops = ObjectOperation::ALL;
        counters(
            &mut encoder,
            "object_store_requests",
            "Requests made of the object store, by operation.",
            "operation",
            ops.iter().map(|&op| (op.as_str(), objects.requests(op))),
        )?;
        counters(
            &mut encoder,
            "object_store_errors",
            "Object-store requests that failed, by operation (not found, already exists and precondition answers are not failures).",
            "operation",
            ops.iter().map(|&op| (op.as_str(), objects.errors(op))),
        )?;
        let m = self.store.metrics();
        counter(
            &mut encoder,
            "segments_sealed",
            "Blob segments encrypted by uploads.",
            m.segments_sealed.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "segments_opened",
            "Blob segments decrypted and authenticated by reads.",
            m.segments_opened.load(Ordering::Relaxed),
        )?;
        let cache = self.store.manifest_cache_stats();
        counters(
            &mut encoder,
            "manifest_cache_hits",
            "Manifest lookups answered from memory: reference (a tag or digest resolved) or content (manifest bytes).",
            "cache",
            [
                ("reference", cache.reference_hits),
                ("content", cache.content_hits),
            ],
        )?;
        counters(
            &mut encoder,
            "manifest_cache_misses",
            "Manifest lookups that read the object store.",
            "cache",
            [
                ("reference", cache.reference_misses),
                ("content", cache.content_misses),
            ],
        )?;
        // The keyring records its last rotation, so every node reports the same time,
        // across restarts; a keyring never rotated has none.
        let rotated = self
            .store
            .keyring()
            .ok()
            .and_then(|ring| ring.doc.last_rotation);
        if let Some(at) = rotated {
            let gauge = ConstGauge::new(at.timestamp());
            gauge.encode(encoder.encode_descriptor(
                "key_last_rotation_timestamp_seconds",
                "When the registry keys were last rewrapped under a new key version (from the keyring; absent before the first rotation).",
                None,
                gauge.metric_type(),
            )?)?;
        }
        Ok(())
    }
}
