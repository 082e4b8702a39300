//! The accept loop: a bounded number of connections, TLS when configured, graceful
//! shutdown; each request is logged by [`access`].
//!
//! Plain connections speak HTTP/1.1. TLS connections ([`crate::tls::accept`]: the
//! handshake, bounded by the header-read timeout) speak what ALPN chose, HTTP/2 or
//! HTTP/1.1, through hyper-util's auto builder; both get the same service, the
//! header-read timeout (HTTP/1) and the same graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::app::App;
use crate::http::access;
use crate::http::admission::{self, Admission, Ticket};
use crate::http::body::{Body, RequestBody};
use crate::http::conn::Connection;
use crate::http::errors::{name_error, ApiError, ErrorCode};
use crate::http::handlers::handle;
use crate::http::metrics;
use crate::http::reply::error_response;
use crate::http::routes::{route, RouteError};
use crate::tls::{Negotiated, ServerTls};
use crate::{API_VERSION, API_VERSION_HEADER};

/// Made once, at compile time: `from_static` outside a constant checks the name on
/// every call (~220 instructions a request).
const API_VERSION_NAME: HeaderName = HeaderName::from_static(API_VERSION_HEADER);

/// The header count hyper's HTTP/1 parser admits when none is set.
const HYPER_MAX_HEADERS: usize = 100;

/// Serves `listener` until `shutdown` completes, then stops accepting, lets in-flight
/// requests finish for up to the configured grace period, and cuts what remains.
/// Cutting is safe: a blob or manifest is committed by one atomic put in the store, so
/// an interrupted request leaves nothing half-visible.
///
/// With `tls`, every connection is TLS, and each handshake takes the configuration
/// `tls` holds at that moment (so a reload applies to new connections only).
///
/// Fails only if the listener itself fails in a way that is not per-connection.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    tls: Option<Arc<ServerTls>>,
    shutdown: impl Future,
) -> io::Result<()> {
    let admission = Admission::new(
        app.settings.max_connections,
        app.settings.max_connections_per_client,
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        // Wait for a free slot before accepting: over the limit, clients queue in the
        // kernel's backlog instead of costing us memory.
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = admission.slot() => slot,
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Per-connection failures (the peer reset before accept) and
                    // resource exhaustion (EMFILE) are both survivable; back off a
                    // little so the latter does not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // One client at its own limit is refused here, its slot freed at once.
        let Some(ticket) = admission.admit(slot, peer.ip()) else {
            tracing::debug!(%peer, "connection refused: the client holds its limit");
            app.metrics.http.connections_refused.inc();
            admission::refuse(stream, tls.is_none());
            continue;
        };
        tracing::trace!(%peer, "connection accepted");
        // Responses are written as a header block then body frames; with Nagle's
        // algorithm a small response waits for the client's delayed ACK (~40 ms).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let open = app.metrics.http.connections_open.clone();
        open.inc();
        let served = serve_connection(
            stream,
            peer,
            tls.clone(),
            app.clone(),
            stop_rx.clone(),
            ticket,
        );
        connections.spawn(async move {
            served.await;
            open.dec();
        });
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }

    drop(listener);
    let _ = stop_tx.send(true);
    while connections.try_join_next().is_some() {}
    let in_flight = connections.len();
    if in_flight > 0 {
        tracing::info!(
            connections = in_flight,
            "shutting down: waiting for in-flight requests"
        );
    }
    let drained = tokio::time::timeout(app.settings.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            grace = ?app.settings.shutdown_grace,
            "grace period over: cutting the remaining connections"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// One connection, from its TLS handshake (if any) to its end; holds its slot
/// (`_ticket`) throughout.
async fn serve_connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    tls: Option<Arc<ServerTls>>,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
    _ticket: Ticket,
) {
    let Some(tls) = tls else {
        return serve_http(
            stream,
            Connection::plain(peer),
            Negotiated::Http1,
            app,
            stop,
        )
        .await;
    };
    // The header-read timeout bounds the handshake too: a client that stalls in it
    // holds a slot just as a slow-header client would.
    let handshake = crate::tls::accept(&tls, stream, app.settings.header_read_timeout);
    let accepted = tokio::select! {
        accepted = handshake => accepted,
        // Shutting down: no request has started on this connection.
        _ = async { drop(stop.wait_for(|stopping| *stopping).await) } => return,
    };
    match accepted {
        Ok(accepted) => {
            let connection = Connection {
                peer,
                tls: true,
                client_subject: accepted.client_subject,
            };
            serve_http(accepted.stream, connection, accepted.negotiated, app, stop).await
        }
        // Scanners and misconfigured clients fail handshakes all day; a client
        // certificate from another CA is one of these too.
        Err(e) => tracing::debug!(%peer, error = %e, "TLS connection not served"),
    }
}

/// Serves HTTP on an established connection (plain, or after the TLS handshake) until
/// the client closes it, or until `stop`, after the request in progress.
async fn serve_http<I>(
    io: I,
    connection: Connection,
    protocol: Negotiated,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = app.settings.header_read_timeout;
    let (max_header_bytes, max_headers) = (app.settings.max_header_bytes, app.settings.max_headers);
    let connection = Arc::new(connection);
    let service = service_fn(move |req| {
        let app = app.clone();
        let connection = connection.clone();
        async move { Ok::<_, Infallible>(serve_request(&app, &connection, req).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(max_header_bytes);
    // hyper's own limit is the default of 100 headers, parsed into arrays on the stack.
    // Set explicitly, the limit makes it build both arrays on the heap for every
    // request, element by element (~1,700 instructions, 6 % of a cached manifest GET).
    if max_headers != HYPER_MAX_HEADERS {
        builder.http1().max_headers(max_headers);
    }
    builder.http2().timer(TokioTimer::new());
    // ALPN decided; only a TLS client that offered no ALPN leaves it to detection.
    let builder = match protocol {
        Negotiated::Http1 => builder.http1_only(),
        Negotiated::Http2 => builder.http2_only(),
        Negotiated::Unspecified => builder,
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        // The connection first, the stop signal second: no random draw per poll.
        biased;
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = async { drop(stop.wait_for(|stopping| *stopping).await) } => {
            // Finish the request in progress (if any), then close: keep-alive
            // connections idle between requests close at once.
            conn.as_mut().graceful_shutdown();
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error during shutdown");
            }
        }
    }
}

/// One request, logged: its id and access line are [`access::logged`]'s.
async fn serve_request(app: &App, conn: &Connection, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    access::logged(conn, started, req, |req| respond(app, conn, started, req)).await
}

/// Routes and handles one request.
async fn respond(
    app: &App,
    conn: &Connection,
    started: Instant,
    req: Request<Incoming>,
) -> Response<Body> {
    let version = req.version();
    let method = req.method().clone();
    let (parts, body) = req.into_parts();
    let (body, body_end) = RequestBody::new(body, app.settings.body_idle_timeout);
    let req = Request::from_parts(parts, body);
    let routed = route(&method, req.uri().path());
    let observation = metrics::observe(app, &routed, &method, &body_end, started);
    let mut resp = match routed {
        Ok(r) => match handle(app, conn, r, req).await {
            Ok(resp) => resp,
            Err(e) => error_response(e),
        },
        Err(e) => error_response(route_error(e)),
    };
    resp.headers_mut()
        .insert(API_VERSION_NAME, HeaderValue::from_static(API_VERSION));
    if body_end.unread() && version < http::Version::HTTP_2 {
        // hyper closes an HTTP/1 connection whose request body was left unread; saying
        // so keeps the client from reusing it for its next request (RFC 9112 §9.6).
        // HTTP/2 resets just the stream, and forbids the header.
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    observation.finish(resp, &body_end)
}

fn route_error(e: RouteError) -> ApiError {
    match e {
        RouteError::NotFound => crate::http::errors::no_such_endpoint(),
        RouteError::MethodNotAllowed { allow } => ApiError::new(ErrorCode::Unsupported)
            .with_message("method not allowed on this endpoint")
            .with_header(http::header::ALLOW, allow),
        RouteError::Name(n) => name_error(n),
        RouteError::ManifestUnknown => ApiError::new(ErrorCode::ManifestUnknown),
    }
}
