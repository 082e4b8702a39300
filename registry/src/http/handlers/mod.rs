//! Request handlers. Each one parses what the route did not (query, headers), calls the
//! store, and builds the response; anything more belongs in the store or a parser.
//! [`handle`] runs the gate (`http::gate`) first; [`admin`] is the admin API.

use http::header::CONTENT_LENGTH;
use http::{HeaderName, Request};

use self::admin::AdminAction;
use crate::app::App;
use crate::auth::Principal;
use crate::http::body::RequestBody;
use crate::http::conn::Connection;
use crate::http::errors::{ApiError, ErrorCode};
use crate::http::gate;
use crate::http::query::Query;
use crate::http::reply::{HandlerResult, Reply};
use crate::http::routes::Route;

pub mod admin;
mod base;
mod blobs;
mod manifests;
mod tags;
mod token;
mod uploads;

/// Header names the spec and Docker clients use (lowercase, as HTTP/1 is case-blind).
pub mod header_names {
    use http::HeaderName;
    pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
    pub const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
    pub const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
    pub const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");
}

/// Who the gate admitted, for the access log (a name, never a credential). The
/// server reads it from the response's extensions.
#[derive(Debug, Clone)]
pub struct Subject(pub String);

/// Runs the handler for `route`, once the gate has admitted the request. The
/// response carries the caller's [`Subject`].
pub async fn handle(
    app: &App,
    conn: &Connection,
    route: Route,
    req: Request<RequestBody>,
) -> HandlerResult {
    let query = Query::parse(req.uri().query());
    let principal = gate::admit(app, conn, &route, &req).await?;
    // Named only when the access line is written (a string and a map per request
    // otherwise).
    let subject = crate::http::access::enabled().then(|| Subject(principal.subject()));
    // Errors become responses here, so that they carry the subject too.
    let mut resp = dispatch(app, conn, route, &principal, &query, req)
        .await
        .unwrap_or_else(crate::http::reply::error_response);
    if let Some(subject) = subject {
        resp.extensions_mut().insert(subject);
    }
    Ok(resp)
}

async fn dispatch(
    app: &App,
    conn: &Connection,
    route: Route,
    principal: &Principal,
    query: &Query,
    req: Request<RequestBody>,
) -> HandlerResult {
    // The arms that write, list or administer are boxed: their futures are large
    // (streaming bodies, retries), and inline they would make every request's future
    // as large as the largest, to be moved on each GET. An allocation is nothing next
    // to what those requests do.
    match route {
        Route::Healthz => Ok(base::healthz()),
        Route::Readyz => Ok(base::readyz(app)),
        Route::Metrics => crate::http::metrics::handle(app, conn, principal, &req),
        Route::ApiBase => Ok(base::api_base()),
        Route::GetManifest {
            repo,
            reference,
            head,
        } => manifests::get(app, &repo, &reference, head).await,
        Route::GetBlob { repo, digest, head } => blobs::get(app, &repo, &digest, head, &req).await,
        Route::AuthToken { post } => Box::pin(token::handle(app, conn, post, query, req)).await,
        Route::AdminEncryption => {
            Box::pin(admin::handle(app, principal, AdminAction::Show, req)).await
        }
        Route::AdminRotateKey => {
            Box::pin(admin::handle(app, principal, AdminAction::RotateKey, req)).await
        }
        Route::AdminSweep => Box::pin(admin::handle(app, principal, AdminAction::Sweep, req)).await,
        Route::AdminSealLinks => {
            Box::pin(admin::handle(app, principal, AdminAction::SealLinks, req)).await
        }
        Route::Catalog => Box::pin(base::catalog(app, principal, query)).await,
        Route::ListTags { repo } => Box::pin(tags::list(app, &repo, query)).await,
        Route::Referrers { repo, digest } => {
            Box::pin(tags::referrers(app, &repo, &digest, query)).await
        }
        Route::PutManifest { repo, reference } => {
            Box::pin(manifests::put(app, &repo, reference, req)).await
        }
        Route::DeleteManifest { repo, reference } => {
            Box::pin(manifests::delete(app, &repo, &reference)).await
        }
        Route::DeleteBlob { repo, digest } => Box::pin(blobs::delete(app, &repo, &digest)).await,
        Route::StartUpload { repo } => {
            Box::pin(uploads::start(app, conn, principal, &repo, query, req)).await
        }
        Route::UploadStatus { repo, id } => {
            app.sessions.touched(&id);
            Box::pin(uploads::status(app, &repo, &id)).await
        }
        Route::PatchUpload { repo, id } => Box::pin(uploads::patch(app, &repo, &id, req)).await,
        Route::FinishUpload { repo, id } => {
            Box::pin(uploads::finish(app, &repo, &id, query, req)).await
        }
        Route::CancelUpload { repo, id } => Box::pin(uploads::cancel(app, &repo, &id)).await,
    }
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
