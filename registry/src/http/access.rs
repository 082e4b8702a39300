//! Request ids and the access log: every request runs inside a span carrying its id
//! (so any event logged while it is handled names it), ends with one line at INFO on
//! the target `valv::access`, and answers with the id in `X-Request-Id`, errors and
//! refusals included.
//!
//! What the access line holds is chosen, not dumped: the method, the route template,
//! the path (never the query: the token endpoint's may carry a password), the HTTP
//! version, the status, the subject the gate admitted (a name, never a credential),
//! the response bytes, the duration and a verified client-certificate subject. No
//! header value except the request id, and no body.
//!
//! When traces are exported ([`crate::telemetry`]) the request span has a parent, the
//! trace's SERVER span (name, kind, method, route, status, request id), which takes the
//! client's `traceparent` as its own parent and stays open until the response body has
//! been sent.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Frame, SizeHint};
use ring::rand::{SecureRandom, SystemRandom};
use tracing::{Instrument as _, Span};

use crate::http::body::Body;
use crate::http::conn::Connection;
use crate::http::handlers::Subject;
use crate::http::routes;
use crate::telemetry;

/// The request id header, read from the client and always sent back.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client-sent id kept; a longer one is replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// A request's id: the client's `X-Request-Id` when it is 1–128 visible ASCII
/// characters (so it can be logged and echoed as it is), else a new one of 32 hex
/// digits. Held as the header value it is sent back as: keeping the client's costs a
/// reference count, not a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The id for a request with `headers`: the client's if sane, else a new one.
    pub fn for_request(headers: &HeaderMap) -> RequestId {
        headers
            .get(X_REQUEST_ID)
            .and_then(RequestId::from_client)
            .unwrap_or_else(RequestId::generate)
    }

    /// The client's id, if it is 1–128 bytes of visible ASCII (`!` to `~`: no spaces,
    /// no control characters, nothing a log reader could mistake for structure).
    pub fn from_client(value: &HeaderValue) -> Option<RequestId> {
        let b = value.as_bytes();
        let sane = !b.is_empty()
            && b.len() <= MAX_REQUEST_ID_LEN
            && b.iter().all(|c| c.is_ascii_graphic());
        sane.then(|| RequestId(value.clone()))
    }

    /// 32 hex digits: a random prefix drawn once per process and a counter, so ids
    /// are unique across nodes and restarts without a system call per request (an
    /// id is a label, not a secret).
    pub fn generate() -> RequestId {
        static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let prefix = *PREFIX.get_or_init(|| {
            let mut bytes = [0u8; 8];
            // The OS generator fails only if the OS has none; ids then still tell this
            // process's requests apart, where refusing requests would not serve.
            if SystemRandom::new().fill(&mut bytes).is_err() {
                tracing::warn!("no OS randomness for request ids");
            }
            u64::from_be_bytes(bytes)
        });
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut hex = [0u8; 32];
        let digits = (u128::from(prefix) << 64) | u128::from(n);
        for (i, out) in hex.iter_mut().enumerate() {
            let nibble = (digits >> (124 - 4 * i)) & 0xf;
            *out = b"0123456789abcdef"[nibble as usize];
        }
        // 32 hex digits are a valid header value.
        RequestId(HeaderValue::from_maybe_shared(Bytes::copy_from_slice(&hex)).expect("hex digits"))
    }

    pub fn as_str(&self) -> &str {
        // Both constructors admit visible ASCII only.
        self.0.to_str().unwrap_or("-")
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the access line would be written: what it alone needs is gathered only then.
pub fn enabled() -> bool {
    tracing::enabled!(target: "valv::access", tracing::Level::INFO)
}

/// Serves `req` with `serve` inside the request's span, then sets `X-Request-Id` on the
/// response and writes the access line.
///
/// The span is at ERROR level so that it is enabled whenever any event is: under
/// `RUST_LOG=warn` a warning inside a request still names its request id.
/// The duration runs from `started` until the response head is ready; a streamed body
/// (a blob) continues after it.
///
/// What this costs per request when the access line is off (`RUST_LOG=warn`): the id
/// (a reference count, or one small allocation for a new one), the span, and a
/// reference count on the URI; nothing is formatted.
pub async fn logged<B, F, Fut>(
    conn: &Connection,
    started: Instant,
    req: Request<B>,
    serve: F,
) -> Response<Body>
where
    F: FnOnce(Request<B>) -> Fut,
    Fut: Future<Output = Response<Body>>,
{
    let id = RequestId::for_request(req.headers());
    // With traces on, the request span's parent is the trace's SERVER span; the log
    // never shows that one (it is at TRACE), so access lines look the same either way.
    let server = telemetry::on().then(|| server_span(&id, &req));
    let span = match &server {
        Some(server) => tracing::error_span!(parent: server, "request", request_id = %id),
        None => tracing::error_span!("request", request_id = %id),
    };
    let method = req.method().clone();
    let version = req.version();
    let uri = req.uri().clone();
    // Boxed: the handler's future is a few kilobytes, and moved by value it would be
    // copied on its way in here and again into the span's wrapper.
    let mut served = Box::pin(serve(req)).instrument(span);
    let mut resp = match &server {
        Some(server) => (&mut served).instrument(server.clone()).await,
        None => (&mut served).await,
    };
    let span = served.span();
    let subject = resp.extensions_mut().remove::<Subject>();
    // A `RUST_LOG` naming the request span (`[request]=info`) enables the line only
    // inside it; any other filter answers the same inside and out.
    if enabled() || (crate::logging::span_filtered() && span.in_scope(enabled)) {
        let bytes = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .or_else(|| resp.body().size_hint().exact());
        let path = uri.path();
        span.in_scope(|| {
            tracing::info!(
                target: "valv::access",
                // Display, not Debug: text lines show them unquoted.
                request_id = %id.as_str(),
                %method,
                route = %routes::template(path).unwrap_or("-"),
                %path,
                ?version,
                status = resp.status().as_u16(),
                subject = %subject.as_ref().map_or("-", |s| s.0.as_str()),
                bytes = bytes.unwrap_or(0),
                // Whole microseconds, so the number prints short (0.23, not 0.2300000001).
                duration_ms = started.elapsed().as_micros() as f64 / 1000.0,
                client = conn.client_subject.as_deref(),
                "request"
            )
        });
    }
    resp.headers_mut().insert(X_REQUEST_ID, id.0);
    if let Some(server) = server {
        let status = resp.status();
        server.record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            server.record("otel.status_code", "error");
        }
        let request = span.clone();
        resp = resp.map(|body| {
            InSpan {
                body,
                server,
                request,
            }
            .boxed_unsync()
        });
    }
    resp
}

/// The request's SERVER span for its trace, the child of the client's span when
/// `traceparent` names one.
fn server_span<B>(id: &RequestId, req: &Request<B>) -> Span {
    let path = req.uri().path();
    let route = routes::template(path).unwrap_or("-");
    let span = tracing::trace_span!(
        target: telemetry::TARGET,
        "server",
        request_id = %id,
        otel.name = %format_args!("{} {route}", req.method()),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %req.method(),
        http.route = route,
        url.path = path,
        network.protocol.version = ?req.version(),
        http.response.status_code = tracing::field::Empty,
    );
    telemetry::adopt_parent(&span, req.headers());
    span
}

/// A response body polled inside the request's spans, which it holds open until the
/// body is done: a streamed blob's reads are part of the request's trace.
struct InSpan {
    body: Body,
    server: Span,
    request: Span,
}

impl hyper::body::Body for InSpan {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        let _server = this.server.enter();
        let _request = this.request.enter();
        Pin::new(&mut this.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_for(value: &[u8]) -> Option<RequestId> {
        RequestId::from_client(&HeaderValue::from_bytes(value).expect("header value"))
    }

    #[test]
    fn a_sane_client_id_is_kept_as_it_is() {
        for v in [
            "a",
            "req-42",
            "0123456789abcdef",
            "a.b_c:d/e=f~!",
            &"x".repeat(128),
        ] {
            assert_eq!(
                id_for(v.as_bytes()).map(|i| i.as_str().to_owned()),
                Some(v.to_owned()),
                "{v}"
            );
        }
    }

    #[test]
    fn an_insane_client_id_is_replaced() {
        let long = "x".repeat(129);
        for v in [
            &b""[..],
            b" ",
            b"has space",
            b"tab\there",
            b"caf\xc3\xa9",
            b"\xff",
            long.as_bytes(),
        ] {
            assert_eq!(id_for(v), None, "{v:?}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(X_REQUEST_ID, HeaderValue::from_static("two words"));
        let id = RequestId::for_request(&headers);
        assert_ne!(id.as_str(), "two words");
        assert_eq!(id.as_str().len(), 32);
    }

    #[test]
    fn generated_ids_are_32_hex_digits_and_differ() {
        let (a, b) = (RequestId::generate(), RequestId::generate());
        assert_ne!(a, b);
        for id in [&a, &b] {
            assert_eq!(id.as_str().len(), 32);
            assert!(id.as_str().bytes().all(|c| c.is_ascii_hexdigit()), "{id}");
        }
        assert_eq!(
            RequestId::for_request(&HeaderMap::new()).as_str().len(),
            32,
            "no header: a new id"
        );
    }
}
