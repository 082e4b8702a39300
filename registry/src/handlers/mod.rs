//! Request handlers. Each one parses what the route did not (query, headers), calls the
//! store, and builds the response; anything more belongs in the store or a parser.

use crate::body::RequestBody;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use serde::Serialize;

use crate::admin::AdminAction;
use crate::app::App;
use crate::body::{self, Body};
use crate::errors::{ApiError, ErrorCode};
use crate::query::Query;
use crate::routes::Route;

mod base;
mod blobs;
mod manifests;
mod tags;
mod uploads;

/// Header names the spec and Docker clients use (lowercase, as HTTP/1 is case-blind).
pub mod names {
    use http::HeaderName;
    pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
    pub const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
    pub const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
    pub const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");
}

pub type HandlerResult = Result<Response<Body>, ApiError>;

/// Runs the handler for `route`.
pub async fn handle(app: &App, route: Route, req: Request<RequestBody>) -> HandlerResult {
    let query = Query::parse(req.uri().query());
    // Content needs the registry keys: while the key is revoked or the vault has been
    // unreachable past the grace, every content request is refused (DESIGN §7). The
    // version check, the health endpoints and the admin API (an operator must be able
    // to see and fix a revoked key) keep answering.
    if !matches!(
        route,
        Route::Healthz
            | Route::Readyz
            | Route::ApiBase
            | Route::AdminEncryption
            | Route::AdminRotateKey
            | Route::AdminSweep
    ) {
        app.keys.gate()?;
    }
    match route {
        Route::Healthz => Ok(base::healthz()),
        Route::Readyz => Ok(base::readyz(app)),
        Route::ApiBase => Ok(base::api_base()),
        Route::AdminEncryption => crate::admin::handle(app, AdminAction::Show, req).await,
        Route::AdminRotateKey => crate::admin::handle(app, AdminAction::RotateKey, req).await,
        Route::AdminSweep => crate::admin::handle(app, AdminAction::Sweep, req).await,
        Route::Catalog => base::catalog(app, &query).await,
        Route::ListTags { repo } => tags::list(app, &repo, &query).await,
        Route::Referrers { repo, digest } => tags::referrers(app, &repo, &digest, &query).await,
        Route::GetManifest {
            repo,
            reference,
            head,
        } => manifests::get(app, &repo, &reference, head).await,
        Route::PutManifest { repo, reference } => manifests::put(app, &repo, reference, req).await,
        Route::DeleteManifest { repo, reference } => {
            manifests::delete(app, &repo, &reference).await
        }
        Route::GetBlob { repo, digest, head } => blobs::get(app, &repo, &digest, head, &req).await,
        Route::DeleteBlob { repo, digest } => blobs::delete(app, &repo, &digest).await,
        Route::StartUpload { repo } => uploads::start(app, &repo, &query, req).await,
        Route::UploadStatus { repo, id } => uploads::status(app, &repo, &id).await,
        Route::PatchUpload { repo, id } => uploads::patch(app, &repo, &id, req).await,
        Route::FinishUpload { repo, id } => uploads::finish(app, &repo, &id, &query, req).await,
        Route::CancelUpload { repo, id } => uploads::cancel(app, &repo, &id).await,
    }
}

/// A response under construction. Header values come from typed names and numbers,
/// so they are always valid header text; one that is not is dropped and logged
/// rather than turned into a panic.
#[derive(Debug)]
pub struct Reply {
    resp: Response<Body>,
}

impl Reply {
    /// An empty response.
    pub fn new(status: StatusCode) -> Reply {
        let mut resp = Response::new(body::empty());
        *resp.status_mut() = status;
        Reply { resp }
    }

    pub fn header(mut self, name: HeaderName, value: impl AsRef<str>) -> Reply {
        match HeaderValue::from_str(value.as_ref()) {
            Ok(v) => {
                self.resp.headers_mut().insert(name, v);
            }
            Err(_) => tracing::warn!(header = %name, "dropping an invalid response header value"),
        }
        self
    }

    /// A JSON body.
    pub fn json(self, content_type: &str, value: &impl Serialize) -> Reply {
        // Serialising our own plain structs cannot fail.
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        self.bytes(content_type, Bytes::from(bytes))
    }

    /// A body held in memory (JSON, manifests).
    pub fn bytes(self, content_type: &str, bytes: Bytes) -> Reply {
        let len = bytes.len();
        let mut r = self
            .header(CONTENT_TYPE, content_type)
            .header(CONTENT_LENGTH, len.to_string());
        *r.resp.body_mut() = body::full(bytes);
        r
    }

    /// A streamed body of known length.
    pub fn stream(self, content_type: &str, len: u64, body: Body) -> Reply {
        let mut r = self
            .header(CONTENT_TYPE, content_type)
            .header(CONTENT_LENGTH, len.to_string());
        *r.resp.body_mut() = body;
        r
    }

    /// The headers of a GET without its body, for HEAD.
    pub fn head(self, content_type: &str, len: u64) -> Reply {
        self.header(CONTENT_TYPE, content_type)
            .header(CONTENT_LENGTH, len.to_string())
    }

    pub fn build(self) -> Response<Body> {
        self.resp
    }
}

/// The error response for `e`.
pub fn error_response(e: ApiError) -> Response<Body> {
    let json = e.body();
    let mut r = Reply::new(e.status).bytes("application/json; charset=utf-8", Bytes::from(json));
    for (name, value) in e.headers {
        r.resp.headers_mut().insert(name, value);
    }
    r.build()
}

/// `Content-Length` of the request, if declared. hyper has already refused malformed
/// values, so a parse failure here would be an invalid header reaching us anyway.
fn content_length<B>(req: &Request<B>) -> Result<Option<u64>, ApiError> {
    match req.headers().get(CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::new(ErrorCode::SizeInvalid).with_message("malformed Content-Length")
            }),
    }
}

fn header_str<B>(req: &Request<B>, name: HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}
