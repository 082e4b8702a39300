//! The log subscriber: `RUST_LOG` picks the lines (default `info`), `log.format` their
//! shape, and they go to stderr (stdout carries only the "listening on" line that
//! scripts and the test harness wait for).
//!
//! `json` writes one object per line: `timestamp` (RFC 3339, UTC), `level`, `target`,
//! `message`, the event's fields beside them, and `span` (`{"request_id":…,"name":
//! "request"}`) for every event logged while a request is handled
//! ([`crate::http::access`]); [`lines`] writes both shapes.
//!
//! `RUST_LOG` of targets and levels (`info`, `warn,valv::access=info`) is applied by a
//! static filter, which costs a level comparison per event. A directive naming spans or
//! fields (`[request{…}]`) needs `EnvFilter`'s span matching, which is used for it, and
//! then each request is served inside a real `request` span for it to match.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::LogFormat;
use crate::telemetry::ExportLayer;

mod lines;

/// Set when `RUST_LOG` names spans: whether an event is on may then depend on the span
/// it is in, and a check made outside the request span must be made again inside it.
static SPAN_FILTER: AtomicBool = AtomicBool::new(false);

/// Whether the filter in use can enable an event only inside some span.
pub fn span_filtered() -> bool {
    SPAN_FILTER.load(Ordering::Relaxed)
}

/// The filter `RUST_LOG` (or `default`) describes: a static one when it names only
/// targets and levels, else `EnvFilter` (which also warns of bad directives on stderr).
fn filter_from_env(default: &str) -> (Option<Targets>, Option<EnvFilter>) {
    let spec = std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_default();
    let spec = if spec.trim().is_empty() {
        default
    } else {
        &spec
    };
    if !spec.contains('[') {
        if let Ok(targets) = Targets::from_str(spec) {
            return (Some(targets), None);
        }
    }
    SPAN_FILTER.store(true, Ordering::Relaxed);
    (None, Some(EnvFilter::builder().parse_lossy(spec)))
}

/// Installs the global subscriber, with `export` (the trace exporter's layer) when
/// traces are on. Called once, before anything logs.
///
/// Without an exporter, the log filter is the subscriber's only one (the cheapest
/// arrangement). With one, each layer filters for itself: the log shows what
/// `RUST_LOG` asks for, the exporter sees only its spans.
pub fn init(format: LogFormat, export: Option<ExportLayer>) {
    let (targets, spans) = filter_from_env("info");
    match export {
        None => tracing_subscriber::registry()
            .with(targets)
            .with(spans)
            .with(lines::layer(format))
            .init(),
        Some(export) => {
            let registry = tracing_subscriber::registry().with(export);
            match (targets, spans) {
                (Some(targets), _) => registry
                    .with(lines::layer(format).with_filter(targets))
                    .init(),
                (None, spans) => registry
                    .with(lines::layer(format).with_filter(spans))
                    .init(),
            }
        }
    }
}
