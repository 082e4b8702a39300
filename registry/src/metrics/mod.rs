//! What `/metrics` reports (docs/OPERATIONS.md "Metrics" lists every metric).
//!
//! - [`Metrics`]: the one registry of this process, held by the [`crate::app::App`]
//!   (nothing global), and [`Metrics::render`], the Prometheus text format (0.0.4).
//! - [`HttpMetrics`]: requests by route class, method and status class, their latency,
//!   request and response bytes, uploads in progress; recorded by
//!   `crate::http::metrics` at the server's request edge.
//! - [`kms`]: a [`kms_client::Kek`] wrapper counting and timing every vault operation.
//! - `store`: the storage crate's own counters (object-store requests, segments,
//!   the manifest cache), read at scrape time.
//! - the key state, read from [`crate::keys::KeyStatus`] and the keyring at scrape time.
//!
//! Built on `prometheus-client` (the Prometheus project's Rust client): no global
//! registry, atomics for counters, label sets that are plain structs of enums here, so
//! recording a request allocates nothing. The per-request HTTP series are [`sharded`]
//! (a slot per thread, added up at scrape time) so requests on different cores do not
//! write the same cache lines. No label carries a repository, a digest or a
//! user: every label value comes from a fixed set.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::keys::{KeyState, KeyStatus};

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Latency buckets of HTTP requests, in seconds: 1 ms to 1 min.
const HTTP_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 60.0,
];

/// Latency buckets of vault operations, in seconds: 1 ms (a local key) to 2 min (a
/// vault that retries, up to the probe timeout).
const KMS_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

/// A label value from a fixed set.
macro_rules! label_value {
    ($t:ty) => {
        impl ::prometheus_client::encoding::EncodeLabelValue for $t {
            fn encode(
                &self,
                encoder: &mut ::prometheus_client::encoding::LabelValueEncoder,
            ) -> Result<(), ::std::fmt::Error> {
                ::std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    };
}

/// The route a request matched, as a class: the route template without its names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClass {
    /// `/v2/`
    Base,
    Catalog,
    Tags,
    Manifest,
    Blob,
    /// Upload sessions and monolithic pushes (`/v2/<name>/blobs/uploads/…`).
    Upload,
    Referrers,
    /// `/admin/v1/…`
    Admin,
    /// `/auth/token`
    Token,
    /// `/healthz`, `/readyz`
    Health,
    /// `/metrics`
    Metrics,
    /// Anything that matched no route (404, 405, or a name that does not parse).
    Other,
}

impl RouteClass {
    const COUNT: usize = RouteClass::Other as usize + 1;

    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::Base => "base",
            RouteClass::Catalog => "catalog",
            RouteClass::Tags => "tags",
            RouteClass::Manifest => "manifest",
            RouteClass::Blob => "blob",
            RouteClass::Upload => "upload",
            RouteClass::Referrers => "referrers",
            RouteClass::Admin => "admin",
            RouteClass::Token => "token",
            RouteClass::Health => "health",
            RouteClass::Metrics => "metrics",
            RouteClass::Other => "other",
        }
    }
}
label_value!(RouteClass);

pub mod kms;
pub mod sharded;
mod store;

/// The request method; the ones no route serves are `other`, so a client cannot
/// make up label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MethodLabel {
    Get,
    Head,
    Put,
    Post,
    Patch,
    Delete,
    Other,
}

impl MethodLabel {
    const COUNT: usize = MethodLabel::Other as usize + 1;

    pub fn of(method: &http::Method) -> MethodLabel {
        match *method {
            http::Method::GET => MethodLabel::Get,
            http::Method::HEAD => MethodLabel::Head,
            http::Method::PUT => MethodLabel::Put,
            http::Method::POST => MethodLabel::Post,
            http::Method::PATCH => MethodLabel::Patch,
            http::Method::DELETE => MethodLabel::Delete,
            _ => MethodLabel::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MethodLabel::Get => "GET",
            MethodLabel::Head => "HEAD",
            MethodLabel::Put => "PUT",
            MethodLabel::Post => "POST",
            MethodLabel::Patch => "PATCH",
            MethodLabel::Delete => "DELETE",
            MethodLabel::Other => "other",
        }
    }
}
label_value!(MethodLabel);

/// A response status as its class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusClass {
    Informational,
    Success,
    Redirection,
    ClientError,
    ServerError,
}

impl StatusClass {
    const COUNT: usize = StatusClass::ServerError as usize + 1;

    pub fn of(status: http::StatusCode) -> StatusClass {
        match status.as_u16() {
            0..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StatusClass::Informational => "1xx",
            StatusClass::Success => "2xx",
            StatusClass::Redirection => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
        }
    }
}
label_value!(StatusClass);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: RouteClass,
    pub method: MethodLabel,
    pub status: StatusClass,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: RouteClass,
    pub method: MethodLabel,
}

fn http_histogram() -> sharded::Histogram {
    sharded::Histogram::new(&HTTP_BUCKETS)
}

fn kms_histogram() -> Histogram {
    Histogram::new(KMS_BUCKETS)
}

/// The HTTP edge's metrics (recorded by `crate::http::metrics`).
///
/// A request finds its series in [`HttpMetrics::route`]: a table with a slot per route
/// class and method, filled from the families the first time that pair is seen. So
/// recording is a few atomic adds, with no label hashing and no family lock per
/// request, and a series appears in `/metrics` only once it has been used.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    // The per-request series are sharded by thread (`sharded`): every request writes
    // them, and shared atomics would bounce their cache lines between cores.
    requests: Family<RequestLabels, sharded::Counter>,
    /// Until the response head is ready (a blob's streaming time is not in it).
    duration: Family<RouteLabels, sharded::Histogram, fn() -> sharded::Histogram>,
    request_bytes: Family<RouteLabels, sharded::Counter>,
    response_bytes: Family<RouteLabels, sharded::Counter>,
    /// Requests streaming an upload body on this node now.
    pub uploads_in_progress: Gauge,
    /// Connections being served on this node now.
    pub connections_open: Gauge,
    /// Connections refused because their client held its limit.
    pub connections_refused: Counter,
    routes: std::sync::Arc<[std::sync::OnceLock<RouteSeries>]>,
}

/// The series of one route class and method (handles share their family's values).
#[derive(Debug)]
pub struct RouteSeries {
    labels: RouteLabels,
    /// By status class, each made on its first use.
    requests: [std::sync::OnceLock<sharded::Counter>; StatusClass::COUNT],
    pub duration: sharded::Histogram,
    pub request_bytes: sharded::Counter,
    pub response_bytes: sharded::Counter,
}

impl RouteSeries {
    /// The request counter of `status`'s class.
    pub fn requests(&self, families: &HttpMetrics, status: StatusClass) -> &sharded::Counter {
        self.requests[status as usize].get_or_init(|| {
            let RouteLabels { route, method } = self.labels;
            families
                .requests
                .get_or_create(&RequestLabels {
                    route,
                    method,
                    status,
                })
                .clone()
        })
    }
}

impl HttpMetrics {
    fn new() -> HttpMetrics {
        HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(http_histogram),
            request_bytes: Family::default(),
            response_bytes: Family::default(),
            uploads_in_progress: Gauge::default(),
            connections_open: Gauge::default(),
            connections_refused: Counter::default(),
            routes: (0..RouteClass::COUNT * MethodLabel::COUNT)
                .map(|_| std::sync::OnceLock::new())
                .collect(),
        }
    }

    /// The series of requests on `labels`' route class with its method.
    pub fn route(&self, labels: &RouteLabels) -> &RouteSeries {
        let slot = labels.route as usize * MethodLabel::COUNT + labels.method as usize;
        self.routes[slot].get_or_init(|| RouteSeries {
            labels: labels.clone(),
            requests: Default::default(),
            duration: self.duration.get_or_create(labels).clone(),
            request_bytes: self.request_bytes.get_or_create(labels).clone(),
            response_bytes: self.response_bytes.get_or_create(labels).clone(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyStateLabel {
    Active,
    Degraded,
    Revoked,
    Unavailable,
}

impl KeyStateLabel {
    const ALL: [KeyStateLabel; 4] = [
        KeyStateLabel::Active,
        KeyStateLabel::Degraded,
        KeyStateLabel::Revoked,
        KeyStateLabel::Unavailable,
    ];

    fn of(state: &KeyState) -> KeyStateLabel {
        match state {
            KeyState::Active => KeyStateLabel::Active,
            KeyState::Degraded { .. } => KeyStateLabel::Degraded,
            KeyState::Revoked { .. } => KeyStateLabel::Revoked,
            KeyState::Unavailable { .. } => KeyStateLabel::Unavailable,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            KeyStateLabel::Active => "active",
            KeyStateLabel::Degraded => "degraded",
            KeyStateLabel::Revoked => "revoked",
            KeyStateLabel::Unavailable => "unavailable",
        }
    }
}
label_value!(KeyStateLabel);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KeyStateLabels {
    state: KeyStateLabel,
}

/// The key gauges, set from the key status at each scrape.
#[derive(Debug, Clone, Default)]
struct KeyMetrics {
    state: Family<KeyStateLabels, Gauge>,
    last_probe_success: Gauge,
}

/// Every metric of this process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub http: HttpMetrics,
    pub kms: kms::KmsMetrics,
    keys: KeyMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// The registry with every metric this process records itself; the store's
    /// counters join with [`Metrics::register_store`] once it is open.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("valv");
        let http = HttpMetrics::new();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route class, method and status class",
            http.requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time from a request's arrival until its response head was ready",
            Unit::Seconds,
            http.duration.clone(),
        );
        registry.register_with_unit(
            "http_request",
            "Request body bytes read",
            Unit::Bytes,
            http.request_bytes.clone(),
        );
        registry.register_with_unit(
            "http_response",
            "Response body bytes sent",
            Unit::Bytes,
            http.response_bytes.clone(),
        );
        registry.register(
            "uploads_in_progress",
            "Requests streaming an upload body (PATCH, PUT or monolithic POST) on this node now",
            http.uploads_in_progress.clone(),
        );
        registry.register(
            "http_connections_open",
            "Client connections being served on this node now",
            http.connections_open.clone(),
        );
        registry.register(
            "http_connections_refused",
            "Connections answered 429 and closed because their client (an IPv4 address or IPv6 /64) held server.max_connections_per_client",
            http.connections_refused.clone(),
        );
        let kms = kms::KmsMetrics {
            operations: Family::default(),
            duration: Family::new_with_constructor(kms_histogram),
        };
        registry.register(
            "kms_operations",
            "Key-encryption-key operations, by provider, operation and outcome",
            kms.operations.clone(),
        );
        registry.register_with_unit(
            "kms_operation_duration",
            "Latency of key-encryption-key operations, retries included",
            Unit::Seconds,
            kms.duration.clone(),
        );
        let keys = KeyMetrics::default();
        registry.register(
            "key_state",
            "1 for the key watcher's current state of the registry key, 0 for the others",
            keys.state.clone(),
        );
        registry.register(
            "key_last_probe_success_timestamp_seconds",
            "When the key-encryption key last unwrapped the registry key (a probe, a recovery or the start)",
            keys.last_probe_success.clone(),
        );
        Metrics {
            registry,
            http,
            kms,
            keys,
        }
    }

    /// Adds the store's counters (read from it at every scrape).
    pub fn register_store(&mut self, store: storage::Store) {
        self.registry
            .register_collector(Box::new(store::StoreCollector::new(store)));
    }

    /// Everything, in the Prometheus text format ([`CONTENT_TYPE`]), with the key
    /// gauges as `status` says now.
    pub fn render(&self, status: &KeyStatus) -> String {
        let current = KeyStateLabel::of(&status.get());
        for state in KeyStateLabel::ALL {
            self.keys
                .state
                .get_or_create(&KeyStateLabels { state })
                .set(i64::from(state == current));
        }
        self.keys
            .last_probe_success
            .set(status.last_probe_success().unwrap_or(0));
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail; an encoder error would be a bug in a label.
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::error!(error = %e, "encoding the metrics failed");
        }
        out
    }
}
