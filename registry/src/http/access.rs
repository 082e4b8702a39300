//! Request ids and the access log: every request is served with its id as a task-local
//! value (so any event logged while it is handled names it), ends with one line at INFO on
//! the target `valv::access`, and answers with the id in `X-Request-Id`, errors and
//! refusals included.
//!
//! What the access line holds is chosen, not dumped: the method, the route template,
//! the path (never the query: the token endpoint's may carry a password), the HTTP
//! version, the status, the subject the gate admitted (a name, never a credential),
//! the response bytes, the duration and a verified client-certificate subject. No
//! header value except the request id, and no body.
//!
//! When traces are exported ([`crate::telemetry`]) the request is the trace's SERVER
//! span (name, kind, method, route, status, request id), which takes the client's
//! `traceparent` as its parent and stays open until the response body has been sent.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
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

/// Each byte's two hex digits, for generated ids.
const HEX_PAIRS: [[u8; 2]; 256] = {
    let digits = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        pairs[i] = [digits[i >> 4], digits[i & 0xf]];
        i += 1;
    }
    pairs
};

/// What a thread makes its request ids from.
struct IdState {
    /// Drawn from the OS once per thread: 64 random bits keep threads' ids apart.
    prefix: u64,
    next: u64,
    /// Room for the next ids, each a slice of one shared buffer.
    block: BytesMut,
}

thread_local! {
    static ID_STATE: std::cell::RefCell<IdState> = std::cell::RefCell::new(IdState {
        prefix: {
            let mut bytes = [0u8; 8];
            // The OS generator fails only if the OS has none; ids then still tell this
            // thread's requests apart, where refusing requests would not serve.
            if SystemRandom::new().fill(&mut bytes).is_err() {
                tracing::warn!("no OS randomness for request ids");
            }
            u64::from_be_bytes(bytes)
        },
        next: 0,
        block: BytesMut::new(),
    });
}

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

    /// 32 hex digits: a random prefix drawn once per thread and that thread's
    /// counter, so ids are unique across threads, nodes and restarts without a system
    /// call per request, and no two cores write the same counter (an id is a label,
    /// not a secret).
    pub fn generate() -> RequestId {
        let bytes = ID_STATE.with(|state| {
            let mut state = state.borrow_mut();
            let n = state.next;
            state.next = n.wrapping_add(1);
            let mut hex = [0u8; 32];
            let digits = (u128::from(state.prefix) << 64 | u128::from(n)).to_be_bytes();
            for (out, byte) in hex.chunks_exact_mut(2).zip(digits) {
                out.copy_from_slice(&HEX_PAIRS[usize::from(byte)]);
            }
            // Split off a block that many ids share: one allocation per 64 of them.
            let block = &mut state.block;
            if block.capacity() - block.len() < hex.len() {
                *block = BytesMut::with_capacity(64 * hex.len());
            }
            block.extend_from_slice(&hex);
            block.split().freeze()
        });
        // 32 hex digits are a valid header value.
        RequestId(HeaderValue::from_maybe_shared(bytes).expect("hex digits"))
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

tokio::task_local! {
    /// The id of the request this task is serving, which every log line written while
    /// it is served names ([`crate::logging`]).
    static CURRENT: RequestId;
}

/// `f` of the id of the request this task is serving, if it is serving one.
pub fn current_id<R>(f: impl FnOnce(&str) -> R) -> Option<R> {
    CURRENT.try_with(|id| f(id.as_str())).ok()
}

/// `f`, run as the request `id`: log lines written while it is polled name the id.
pub fn serving<F: Future>(
    id: RequestId,
    f: F,
) -> tokio::task::futures::TaskLocalFuture<RequestId, F> {
    CURRENT.scope(id, f)
}

/// Serves `req` with `serve` as the request of its id, then sets `X-Request-Id` on the
/// response and writes the access line.
///
/// The id is a task-local value while the request is served, not a span: a line
/// written inside names it, and nothing is formatted unless a line is written. Only a
/// `RUST_LOG` that names the `request` span (`[request]=info`) makes one, at ERROR level
/// so that it is enabled whenever any event is.
/// The duration runs from `started` until the response head is ready; a streamed body
/// (a blob) continues after it.
///
/// What this costs per request when the access line is off (`RUST_LOG=warn`): the id
/// (a reference count, or one small allocation for a new one), its header, and a swap
/// of the task-local on each poll; nothing is formatted.
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
    // With traces on, the trace's SERVER span is the request's; the log never shows it
    // (it is at TRACE), so access lines look the same either way.
    let traces = telemetry::on();
    let server = traces
        .then(|| telemetry::sampled(req.headers()))
        .flatten()
        .map(|trace| server_span(&id, &req, trace));
    let span = crate::logging::span_filtered().then(|| match &server {
        Some(server) => tracing::error_span!(parent: server, "request", request_id = %id),
        None => tracing::error_span!("request", request_id = %id),
    });
    let method = req.method().clone();
    let version = req.version();
    // The path, for the access line only (a clone and a drop of the URI otherwise).
    let uri = (enabled() || span.is_some()).then(|| req.uri().clone());
    // Boxed: the handler's future is a few kilobytes, and moved by value it would be
    // copied on its way in here and again into the wrappers.
    let served = Box::pin(serve(req));
    let request_span = span.clone();
    let mut scoped = std::pin::pin!(serving(id, async move {
        let mut resp = match &span {
            Some(span) => served.instrument(span.clone()).await,
            None => served.await,
        };
        let subject = resp.extensions_mut().remove::<Subject>();
        // A `RUST_LOG` naming the request span enables the line only inside it; any
        // other filter answers the same inside and out.
        let in_span = |f: &mut dyn FnMut()| match &span {
            Some(span) => span.in_scope(f),
            None => f(),
        };
        let mut on = enabled();
        if !on && span.is_some() {
            in_span(&mut || on = enabled());
        }
        if on {
            let bytes = resp
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .or_else(|| resp.body().size_hint().exact());
            let path = uri.as_ref().map_or("-", |uri| uri.path());
            in_span(&mut || {
                current_id(|id| {
                    tracing::info!(
                        target: "valv::access",
                        // Display, not Debug: text lines show them unquoted.
                        request_id = %id,
                        %method,
                        route = %routes::template(path).unwrap_or("-"),
                        %path,
                        ?version,
                        status = resp.status().as_u16(),
                        subject = %subject.as_ref().map_or("-", |s| s.0.as_str()),
                        bytes = bytes.unwrap_or(0),
                        // Whole microseconds, so the number prints short (0.23, not
                        // 0.2300000001).
                        duration_ms = started.elapsed().as_micros() as f64 / 1000.0,
                        client = conn.client_subject.as_deref(),
                        "request"
                    )
                });
            });
        }
        resp
    }));
    let mut resp = match &server {
        Some(server) => scoped.as_mut().instrument(server.clone()).await,
        None => scoped.as_mut().await,
    };
    let id = scoped
        .take_value()
        .expect("the id is taken once, after the request");
    // With traces on, a streamed body is polled as the request (and in its spans):
    // what it reads is in its trace, or, when it is not traced, in none.
    if traces {
        if let Some(server) = &server {
            let status = resp.status();
            server.record("http.response.status_code", status.as_u16());
            if status.is_server_error() {
                server.record("otel.status_code", "error");
            }
        }
        let id = id.clone();
        resp = resp.map(|body| {
            InSpan {
                body,
                server,
                request: request_span,
                id,
            }
            .boxed_unsync()
        });
    }
    resp.headers_mut().insert(X_REQUEST_ID, id.0);
    resp
}

/// The request's SERVER span for its trace, the child of the client's span when
/// `trace` names one.
fn server_span<B>(id: &RequestId, req: &Request<B>, trace: telemetry::Trace) -> Span {
    let path = req.uri().path();
    let route = routes::template(path).unwrap_or("-");
    let span = tracing::trace_span!(
        target: telemetry::TARGET,
        telemetry::SERVER_SPAN,
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
    telemetry::adopt_parent(&span, trace);
    span
}

/// A response body polled inside the request's spans and as its request, which it
/// holds open until the body is done: a streamed blob's reads are part of the
/// request's trace, and what they log names the request.
struct InSpan {
    body: Body,
    server: Option<Span>,
    request: Option<Span>,
    id: RequestId,
}

impl hyper::body::Body for InSpan {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        let _server = this.server.as_ref().map(Span::enter);
        let _request = this.request.as_ref().map(Span::enter);
        let body = &mut this.body;
        CURRENT.sync_scope(this.id.clone(), || Pin::new(body).poll_frame(cx))
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
