//! Traces: OpenTelemetry spans, exported by OTLP over HTTP/protobuf when
//! `telemetry.otlp_endpoint` is set (the `otlp` cargo feature, on in the image).
//!
//! Each request is a SERVER span named by its method and route template
//! (`GET /v2/{name}/blobs/{digest}`), the child of the client's span when its
//! `traceparent` header (W3C Trace Context) names one. It lasts until the response's
//! last byte is sent, so a streamed blob's reads are inside it. Each object-store
//! request and each key-vault operation is a CLIENT span under it.
//!
//! The spans are `tracing` spans at TRACE under [`TARGET`], turned into OpenTelemetry
//! ones by a layer that sees only them. No log filter short of `trace` shows them, and
//! without an endpoint that layer is not installed, so they are never created and cost
//! a disabled-callsite check each; the SERVER span is made only when spans are exported
//! ([`on`]). The log's request id is not a span ([`crate::http::access`]), so the CLIENT
//! spans are the SERVER span's children.
//!
//! Export is batched on a thread of the exporter's own, so a slow or absent collector
//! never holds up a request; what is queued when the process stops is flushed
//! ([`Tracing::shutdown`], bounded).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::config::TelemetryConfig;

/// The target of the CLIENT spans (object store, key vault).
pub use storage::backend::TRACE_TARGET as TARGET;

/// The name of a request's SERVER span (its OpenTelemetry name is `otel.name`).
pub const SERVER_SPAN: &str = "server";

static ON: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported: a collector is configured and the exporter started.
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// A constant, so that looking it up hashes a known name rather than parsing a string.
#[cfg(feature = "otlp")]
const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// `telemetry.sample_ratio` as a threshold on a uniform 64-bit draw: a request is
/// traced when its draw is below it (`u64::MAX`: every request).
static SAMPLE_BELOW: AtomicU64 = AtomicU64::new(u64::MAX);

/// The trace a request joins when it is traced: the client's span, when its
/// `traceparent` names one (extracted once, for the decision and the parent both).
#[derive(Debug, Default)]
pub struct Trace {
    #[cfg(feature = "otlp")]
    parent: Option<opentelemetry::Context>,
}

/// Whether to trace a request with `headers`, and under which parent: the client's
/// decision when its `traceparent` makes one (the sampled flag), else a draw against
/// `telemetry.sample_ratio`. A request not traced makes no span at all, so costs
/// nothing of the exporter's.
pub fn sampled(headers: &http::HeaderMap) -> Option<Trace> {
    #[cfg(feature = "otlp")]
    if let Some((parent, decided)) = otlp::client_parent(headers) {
        return decided.then_some(Trace {
            parent: Some(parent),
        });
    }
    #[cfg(not(feature = "otlp"))]
    let _ = headers;
    let below = SAMPLE_BELOW.load(Ordering::Relaxed);
    (below == u64::MAX || draw() < below).then(Trace::default)
}

/// A uniform 64-bit draw from this thread's generator (SplitMix64, seeded once per
/// thread from the OS): a sampling decision is not a secret, and a system call per
/// request would cost more than the decision saves.
fn draw() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut seed = [0u8; 8];
            // Without OS randomness the clock seeds it: still a spread of decisions,
            // which is all sampling needs.
            if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed).is_err() {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
                seed = (now.unwrap_or_default().as_nanos() as u64).to_le_bytes();
            }
            u64::from_le_bytes(seed)
        });
    }
    STATE.with(|state| {
        let next = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// The running exporter (or none). [`Tracing::shutdown`] flushes it.
#[derive(Debug, Default)]
pub struct Tracing {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

/// What the exporter's shutdown may take at most: a collector that does not answer
/// must not hold the process past its stop grace.
pub const SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Tracing {
    /// Sends what is still queued and stops the exporter, for at most
    /// [`SHUTDOWN_TIMEOUT`]. Blocks: call it once the server has stopped.
    pub fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider {
            ON.store(false, Ordering::Relaxed);
            if let Err(e) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
                tracing::warn!(error = %e, "traces: the last spans may not have been sent");
            }
        }
    }
}

/// The layer that turns valv's spans into OpenTelemetry ones and exports them, with
/// the exporter's handle; `None` when no endpoint is configured.
pub type ExportLayer =
    Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

/// Starts the exporter `config` asks for, if any.
///
/// Fails when the endpoint is set but spans cannot be exported: a build without the
/// `otlp` feature, or an exporter that cannot be built.
pub fn start(config: &TelemetryConfig) -> Result<(Option<ExportLayer>, Tracing), String> {
    let Some(endpoint) = &config.otlp_endpoint else {
        return Ok((None, Tracing::default()));
    };
    let ratio = config.sample_ratio.0.clamp(0.0, 1.0);
    // 2^64 × ratio, saturating: 1.0 is every request.
    let below = if ratio >= 1.0 {
        u64::MAX
    } else {
        (ratio * 2f64.powi(64)) as u64
    };
    SAMPLE_BELOW.store(below, Ordering::Relaxed);
    #[cfg(feature = "otlp")]
    {
        let (layer, provider) = otlp::start(&traces_url(endpoint), &config.service_name)?;
        ON.store(true, Ordering::Relaxed);
        Ok((
            Some(layer),
            Tracing {
                provider: Some(provider),
            },
        ))
    }
    #[cfg(not(feature = "otlp"))]
    {
        let _ = endpoint;
        Err(
            "telemetry.otlp_endpoint is set, but this valv was built without traces \
             (build it with `--features otlp`; the container image has them)"
                .to_owned(),
        )
    }
}

/// The URL spans are posted to: the endpoint as given when it names a path (a
/// collector behind a proxy), else the OTLP default path `/v1/traces` under it (an
/// endpoint is usually a collector's base URL, `http://collector:4318`).
pub fn traces_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    let path_start = trimmed
        .find("://")
        .map(|i| i + 3)
        .and_then(|host| trimmed[host..].find('/').map(|p| host + p));
    match path_start {
        Some(_) => trimmed.to_owned(),
        None => format!("{trimmed}/v1/traces"),
    }
}

/// Makes `span` (a request's SERVER span) the child of the client's span `trace`
/// names; without one (no or a malformed `traceparent`) it stays a root.
pub fn adopt_parent(span: &tracing::Span, trace: Trace) {
    #[cfg(feature = "otlp")]
    if let Some(parent) = trace.parent {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        // Fails only when the span is disabled or already started: it is neither.
        let _ = span.set_parent(parent);
    }
    #[cfg(not(feature = "otlp"))]
    let _ = (span, trace);
}

#[cfg(feature = "otlp")]
mod otlp {
    use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
    use opentelemetry::trace::TraceContextExt as _;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry::Context;
    use opentelemetry_otlp::{Protocol, WithExportConfig as _};
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
    use opentelemetry_sdk::Resource;
    use tracing::subscriber::Interest;
    use tracing_subscriber::Layer as _;

    use super::{ExportLayer, SERVER_SPAN, TARGET};

    pub(super) fn start(
        url: &str,
        service_name: &str,
    ) -> Result<(ExportLayer, SdkTracerProvider), String> {
        // The exporter's HTTP client is reqwest's, on the rustls provider valv uses.
        kms_client::install_tls_provider();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url)
            .build()
            .map_err(|e| format!("telemetry.otlp_endpoint {url}: {e}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            // A client's sampling decision (the traceparent's flag) is kept; requests
            // that come without one are all traced.
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .with_resource(
                Resource::builder()
                    .with_service_name(service_name.to_owned())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("valv");
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            // Spans only: the SERVER and CLIENT spans under TARGET. Events
            // (log lines) stay in the log. A CLIENT span inside a request that is not
            // traced (no SERVER span above it) is not made: it would be a root of its
            // own. Outside requests (the key watcher's probes) CLIENT spans are roots.
            .with_filter(
                tracing_subscriber::filter::DynFilterFn::new(|m, cx| {
                    m.is_span()
                        && m.target() == TARGET
                        && (m.name() == SERVER_SPAN
                            || cx.lookup_current().is_some()
                            || crate::http::access::current_id(|_| ()).is_none())
                })
                // Decided per call site for everything else, once: any other call
                // site stays disabled for this layer (a per-call check on every log
                // call site would cost more than the spans themselves).
                .with_callsite_filter(|m| {
                    if m.is_span() && m.target() == TARGET {
                        Interest::sometimes()
                    } else {
                        Interest::never()
                    }
                }),
            )
            .boxed();
        Ok((layer, provider))
    }

    /// Reads W3C Trace Context from request headers.
    struct Headers<'a>(&'a http::HeaderMap);

    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }

        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|k| k.as_str()).collect()
        }
    }

    /// The client's span and its sampled flag, when the request's `traceparent`
    /// (W3C Trace Context, read by the SDK's propagator) names a valid one.
    pub(super) fn client_parent(headers: &http::HeaderMap) -> Option<(Context, bool)> {
        if !headers.contains_key(super::TRACEPARENT) {
            return None;
        }
        let parent = TraceContextPropagator::new().extract(&Headers(headers));
        let client = parent.span().span_context().clone();
        client.is_valid().then(|| (parent, client.is_sampled()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_url_defaults_its_path() {
        for (endpoint, url) in [
            ("http://collector:4318", "http://collector:4318/v1/traces"),
            ("http://collector:4318/", "http://collector:4318/v1/traces"),
            (
                "https://collector.internal/ingest/traces",
                "https://collector.internal/ingest/traces",
            ),
            (
                "http://127.0.0.1:4318/v1/traces",
                "http://127.0.0.1:4318/v1/traces",
            ),
        ] {
            assert_eq!(traces_url(endpoint), url, "{endpoint}");
        }
    }
}
