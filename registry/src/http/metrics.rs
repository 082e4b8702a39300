//! `/metrics` at the HTTP edge: what each request records ([`observe`] then
//! [`Observation::finish`], the server's only two calls), the `/metrics` handler of the
//! main listener, and the separate metrics listener ([`serve`]).
//!
//! Recording a request is a few atomic adds on series found by index
//! ([`HttpMetrics::route`]); nothing is allocated for a response whose length is
//! known, one small box for a streamed one (its bytes are counted as they are sent).
//!
//! Who may read `/metrics` on the main listener: anyone while access control is off
//! (everything else is open then too); with `[auth]` on, the admin role (the admin
//! token or an admin user), as for the admin API. Operators who scrape without
//! registry credentials set `server.metrics_listen` (a loopback or private address):
//! that listener serves `/metrics` and nothing else, without authentication, as
//! distribution's debug listener does.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::app::App;
use crate::auth::{Principal, Refusal};
use crate::http::body::{Body, BodyEnd, RequestBody};
use crate::http::conn::Connection;
use crate::http::gate;
use crate::http::reply::{HandlerResult, Reply};
use crate::http::routes::{Route, RouteError};
use crate::metrics::{HttpMetrics, MethodLabel, RouteClass, RouteLabels, StatusClass};

/// The class `/metrics` labels a routed request with.
pub fn class(route: &Result<Route, RouteError>) -> RouteClass {
    let Ok(route) = route else {
        return RouteClass::Other;
    };
    match route {
        Route::Healthz | Route::Readyz => RouteClass::Health,
        Route::Metrics => RouteClass::Metrics,
        Route::AdminEncryption
        | Route::AdminRotateKey
        | Route::AdminSweep
        | Route::AdminSealLinks => RouteClass::Admin,
        Route::AuthToken { .. } => RouteClass::Token,
        Route::ApiBase => RouteClass::Base,
        Route::Catalog => RouteClass::Catalog,
        Route::ListTags { .. } => RouteClass::Tags,
        Route::GetManifest { .. } | Route::PutManifest { .. } | Route::DeleteManifest { .. } => {
            RouteClass::Manifest
        }
        Route::GetBlob { .. } | Route::DeleteBlob { .. } => RouteClass::Blob,
        Route::StartUpload { .. }
        | Route::UploadStatus { .. }
        | Route::PatchUpload { .. }
        | Route::FinishUpload { .. }
        | Route::CancelUpload { .. } => RouteClass::Upload,
        Route::Referrers { .. } => RouteClass::Referrers,
    }
}

/// One request being measured: created when it is routed, finished with its response.
#[derive(Debug)]
pub struct Observation<'a> {
    metrics: &'a HttpMetrics,
    labels: RouteLabels,
    started: Instant,
    /// Holds `valv_uploads_in_progress` up while an upload body may be streaming; a
    /// request cut off mid-body drops it too.
    _upload: Option<InProgress>,
}

#[derive(Debug)]
struct InProgress(Gauge);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Starts measuring a request on `route`; `body` tells whether it carries a body.
pub fn observe<'a>(
    app: &'a App,
    route: &Result<Route, RouteError>,
    method: &Method,
    body: &BodyEnd,
    started: Instant,
) -> Observation<'a> {
    let metrics = &app.metrics.http;
    let route = class(route);
    let upload = (route == RouteClass::Upload && body.unread()).then(|| {
        metrics.uploads_in_progress.inc();
        InProgress(metrics.uploads_in_progress.clone())
    });
    Observation {
        metrics,
        labels: RouteLabels {
            route,
            method: MethodLabel::of(method),
        },
        started,
        _upload: upload,
    }
}

impl Observation<'_> {
    /// Records the request (its count, latency and request bytes) as its response head
    /// is ready, and counts the response body's bytes: at once when its length is
    /// known, as it is sent when it streams.
    pub fn finish(self, resp: Response<Body>, body: &BodyEnd) -> Response<Body> {
        let series = self.metrics.route(&self.labels);
        series
            .requests(self.metrics, StatusClass::of(resp.status()))
            .inc();
        series.duration.observe(self.started.elapsed());
        let read = body.bytes_read();
        if read > 0 {
            series.request_bytes.inc_by(read);
        }
        // HEAD responses carry headers only, whatever their Content-Length says.
        let exact = if self.labels.method == MethodLabel::Head {
            Some(0)
        } else {
            resp.body().size_hint().exact()
        };
        match exact {
            Some(n) => {
                series.response_bytes.inc_by(n);
                resp
            }
            None => {
                let sent = series.response_bytes.clone();
                resp.map(|inner| Counted { inner, sent }.boxed_unsync())
            }
        }
    }
}

/// A streamed response body that counts the bytes it hands to hyper.
struct Counted {
    inner: Body,
    sent: crate::metrics::sharded::Counter,
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.sent.inc_by(data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The metrics as a response.
fn render(app: &App) -> Response<Body> {
    Reply::new(StatusCode::OK)
        .bytes(
            crate::metrics::CONTENT_TYPE,
            Bytes::from(app.metrics.render(&app.key_status)),
        )
        .build()
}

/// `GET /metrics` on the main listener: open without access control, the admin role
/// with it (module docs).
pub fn handle(
    app: &App,
    conn: &Connection,
    principal: &Principal,
    req: &Request<RequestBody>,
) -> HandlerResult {
    if app.auth.enabled() && !app.auth.is_admin(principal) {
        let refusal = match principal {
            Principal::Open | Principal::Anonymous => Refusal::Unauthenticated {
                message: "/metrics needs the admin role (or use server.metrics_listen)",
                scope: None,
                insufficient: false,
            },
            _ => Refusal::Denied,
        };
        return Err(gate::refusal(app, conn, req, refusal));
    }
    Ok(render(app))
}

/// Connections the metrics listener serves at once: a scraper or two, and a person.
const METRICS_CONNECTIONS: usize = 16;

/// Serves `/metrics` (and nothing else) on `listener`, without authentication, until
/// `shutdown` completes. HTTP/1.1, plain text: bind it to a loopback or private address.
///
/// Fails only if the listener itself fails in a way that is not per-connection.
pub async fn serve(listener: TcpListener, app: Arc<App>, shutdown: impl Future) -> io::Result<()> {
    let limit = Arc::new(Semaphore::new(METRICS_CONNECTIONS));
    let header_timeout = app.settings.header_read_timeout;
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return Ok(()),
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req: Request<Incoming>| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(metrics_only(&app, &req)) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "metrics connection ended with an error");
            }
        });
    }
}

/// The metrics listener's one resource.
fn metrics_only<B>(app: &App, req: &Request<B>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => render(app),
        (_, "/metrics") => Reply::new(StatusCode::METHOD_NOT_ALLOWED)
            .header(http::header::ALLOW, "GET, HEAD")
            .build(),
        _ => Reply::new(StatusCode::NOT_FOUND).build(),
    }
}
