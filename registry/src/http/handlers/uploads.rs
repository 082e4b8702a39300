//! Blob uploads: start (end-4a/4b, mount end-11), status (end-13), chunks (end-5),
//! finish (end-6) and cancel. Sessions live in the store, so any node can continue one.

use std::time::Duration;

use http::header::{CONTENT_RANGE, LOCATION, RANGE, RETRY_AFTER};
use http::{Request, StatusCode};
use hyper::body::Body as _;
use storage::{Digest, RepositoryName, StoreError, UploadId, UploadStatus};

use super::header_names::{DOCKER_CONTENT_DIGEST, DOCKER_UPLOAD_UUID};
use super::{content_length, header_str, HandlerResult, Reply};
use crate::app::App;
use crate::auth::policy::Action;
use crate::auth::Principal;
use crate::http::body::{request_stream, RequestBody};
use crate::http::conn::Connection;
use crate::http::errors::{blob_too_large, ApiError, ErrorCode};
use crate::http::gate::retry_after;
use crate::http::query::Query;
use crate::http::range::{parse_content_range, upload_range_header, ContentRangeError};
use crate::http::sessions::Refused;

fn upload_location(repo: &RepositoryName, id: &UploadId) -> String {
    format!("/v2/{repo}/blobs/uploads/{id}")
}

/// 202 (or 204) with where the session is and how far it got.
fn session_reply(status: StatusCode, s: &UploadStatus) -> Reply {
    Reply::new(status)
        .header(LOCATION, upload_location(&s.repository, &s.id))
        .header(RANGE, upload_range_header(s.offset))
        .header(DOCKER_UPLOAD_UUID, s.id.as_str())
}

/// 201 for a blob now in the repository.
fn blob_created(repo: &RepositoryName, digest: &Digest) -> Reply {
    Reply::new(StatusCode::CREATED)
        .header(LOCATION, format!("/v2/{repo}/blobs/{digest}"))
        .header(DOCKER_CONTENT_DIGEST, digest.to_string())
}

/// The 416 for a chunk that does not continue the session: tells the client where the
/// session stands so it can resume from there.
fn out_of_order(repo: &RepositoryName, id: &UploadId, offset: u64, why: String) -> ApiError {
    ApiError::new(ErrorCode::BlobUploadInvalid)
        .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
        .with_message(why)
        .with_detail(serde_json::json!({ "offset": offset }))
        .with_header(LOCATION, upload_location(repo, id))
        .with_header(RANGE, upload_range_header(offset))
        .with_header(DOCKER_UPLOAD_UUID, id.as_str())
}

/// Maps store errors of an append or finish, adding the session's position to a 416.
fn upload_error(repo: &RepositoryName, id: &UploadId, e: StoreError) -> ApiError {
    match e {
        StoreError::OffsetMismatch { current } => out_of_order(
            repo,
            id,
            current,
            format!("chunk does not start at the upload's current offset {current}"),
        ),
        other => other.into(),
    }
}

/// `POST /v2/<name>/blobs/uploads/`: mount (`?mount=&from=`), monolithic
/// (`?digest=`, body is the blob), or a new session.
pub async fn start(
    app: &App,
    conn: &Connection,
    principal: &Principal,
    repo: &RepositoryName,
    query: &Query,
    req: Request<RequestBody>,
) -> HandlerResult {
    if let Some(mount) = query.get("mount") {
        let digest: Digest = mount.parse()?;
        if let Some(reply) = try_mount(app, principal, repo, &digest, query.get("from")).await? {
            return Ok(reply.build());
        }
        // Not mountable: the spec says to fall back to an ordinary session (202).
    } else if let Some(d) = query.get("digest") {
        let digest: Digest = d.parse()?;
        let declared = content_length(&req)?;
        refuse_declared_too_large(app, 0, declared)?;
        let body = request_stream(req.into_body(), declared);
        let info = app.store.put_blob(repo, &digest, body).await?;
        return Ok(blob_created(repo, &info.digest).build());
    }
    // A new session, if this client and this repository have room for one.
    let place = app
        .sessions
        .admit(conn.peer.ip(), repo)
        .map_err(|refused| too_many_sessions(app, refused))?;
    let session = app.store.create_upload(repo).await?;
    place.opened(&session.id);
    Ok(session_reply(StatusCode::ACCEPTED, &session).build())
}

/// 429 for a session past a limit: the client should finish or cancel one, or wait
/// for its idle ones to stop counting.
fn too_many_sessions(app: &App, refused: Refused) -> ApiError {
    let message = match refused {
        Refused::Client(n) => format!(
            "this client has {n} upload sessions open, the most allowed \
             (server.max_upload_sessions_per_client); finish or cancel one"
        ),
        Refused::Repository(n) => format!(
            "this repository has {n} upload sessions open, the most allowed \
             (server.max_upload_sessions_per_repository)"
        ),
    };
    // Idle sessions are let go on a scan every few seconds: a minute is a fair wait.
    let wait = app.sessions.idle().min(Duration::from_secs(60));
    ApiError::new(ErrorCode::TooManyRequests)
        .with_message(message)
        .with_header(RETRY_AFTER, retry_after(wait))
}

/// Links `digest` into `repo` if the client may read it. With `from`, only from that
/// repository (the spec's mount), and only if the caller may pull `from`; without it,
/// from anywhere (automatic mount), but only while access control is off (valv is then
/// single-tenant: every client may read every repository). `None` when the blob is
/// not there to mount, or the caller may not read where it is: the answer is then an
/// ordinary upload session, which says nothing about whether the blob exists.
/// (distribution instead refuses the whole request, 401, without pull on `from`; a
/// session serves clients better and leaks no more.)
async fn try_mount(
    app: &App,
    principal: &Principal,
    repo: &RepositoryName,
    digest: &Digest,
    from: Option<&str>,
) -> Result<Option<Reply>, ApiError> {
    let from = from.filter(|f| !f.is_empty());
    if from.is_none() && !matches!(principal, Principal::Open) {
        return Ok(None);
    }
    if let Some(from) = from {
        let from: RepositoryName = from.parse()?;
        if !app.auth.allows(principal, Action::Pull, &from) {
            return Ok(None);
        }
        match app.store.stat_repo_blob(&from, digest).await {
            Ok(_) => {}
            Err(StoreError::BlobUnknown) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    match app.store.link_blob(repo, digest).await {
        Ok(info) => Ok(Some(blob_created(repo, &info.digest))),
        Err(StoreError::BlobUnknown) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `GET /v2/<name>/blobs/uploads/<id>`: 204 with the session's `Range`.
pub async fn status(app: &App, repo: &RepositoryName, id: &UploadId) -> HandlerResult {
    let s = app.store.upload_status(repo, id).await?;
    Ok(session_reply(StatusCode::NO_CONTENT, &s).build())
}

/// 413 before reading a body whose declared length would take the blob past
/// `storage.max_blob_bytes` from `start`. A body that does not declare it is counted
/// as it streams, by the store.
fn refuse_declared_too_large(app: &App, start: u64, declared: Option<u64>) -> Result<(), ApiError> {
    match (app.settings.max_blob_bytes, declared) {
        (Some(limit), Some(n)) if start.saturating_add(n) > limit => Err(blob_too_large(limit)),
        _ => Ok(()),
    }
}

/// Where a chunk goes and how long the client says it is.
struct Chunk {
    /// From `Content-Range`; `None` appends at the session's offset (streamed PATCH,
    /// what docker sends).
    start: Option<u64>,
    /// The length the body must have: the range's length, else `Content-Length`.
    declared: Option<u64>,
}

/// Reads `Content-Range` / `Content-Length` of a chunk.
///
/// Fails with 400 for a malformed `Content-Range`, and with 416 when the range is
/// inverted or its length disagrees with `Content-Length` (the chunk cannot be what
/// the range claims); the 416 reports the session's offset.
async fn chunk_of(
    app: &App,
    repo: &RepositoryName,
    id: &UploadId,
    req: &Request<RequestBody>,
) -> Result<Chunk, ApiError> {
    let length = content_length(req)?;
    let Some(value) = header_str(req, CONTENT_RANGE) else {
        // Where the chunk starts is the session's offset, which the store checks.
        refuse_declared_too_large(app, 0, length)?;
        return Ok(Chunk {
            start: None,
            declared: length,
        });
    };
    let why = match parse_content_range(value) {
        Ok(range) if length.is_none_or(|l| l == range.length()) => {
            refuse_declared_too_large(app, range.start, Some(range.length()))?;
            return Ok(Chunk {
                start: Some(range.start),
                declared: Some(range.length()),
            });
        }
        Ok(range) => format!(
            "Content-Range {}-{} is {} bytes but Content-Length is {}",
            range.start,
            range.end,
            range.length(),
            length.unwrap_or_default()
        ),
        Err(ContentRangeError::Inverted) => {
            format!("Content-Range {value:?} ends before it starts")
        }
        Err(ContentRangeError::Malformed) => {
            return Err(
                ApiError::new(ErrorCode::BlobUploadInvalid).with_message(format!(
                    "malformed Content-Range {value:?}: expected <start>-<end>"
                )),
            )
        }
    };
    // The 416 tells the client where to resume, which needs the session (and makes an
    // unknown session a 404 rather than a 416).
    let s = app.store.upload_status(repo, id).await?;
    Err(out_of_order(repo, id, s.offset, why))
}

/// `PATCH /v2/<name>/blobs/uploads/<id>`: appends a chunk, streamed into the store.
pub async fn patch(
    app: &App,
    repo: &RepositoryName,
    id: &UploadId,
    req: Request<RequestBody>,
) -> HandlerResult {
    let chunk = chunk_of(app, repo, id, &req).await?;
    let body = request_stream(req.into_body(), chunk.declared);
    app.sessions.touched(id);
    let s = app
        .store
        .append_upload(repo, id, chunk.start, body)
        .await
        .map_err(|e| upload_error(repo, id, e))?;
    app.sessions.touched(id);
    Ok(session_reply(StatusCode::ACCEPTED, &s).build())
}

/// `PUT /v2/<name>/blobs/uploads/<id>?digest=`: commits the blob, optionally with a
/// last chunk in the body. The store verifies the digest before anything is visible.
pub async fn finish(
    app: &App,
    repo: &RepositoryName,
    id: &UploadId,
    query: &Query,
    req: Request<RequestBody>,
) -> HandlerResult {
    let digest: Digest = query
        .get("digest")
        .ok_or_else(|| {
            ApiError::new(ErrorCode::DigestInvalid)
                .with_message("the digest query parameter is required")
        })?
        .parse()?;
    // An empty body (Content-Length: 0, or none at all) carries no last chunk.
    let last = if req.body().is_end_stream() {
        None
    } else {
        let chunk = chunk_of(app, repo, id, &req).await?;
        Some((chunk.start, request_stream(req.into_body(), chunk.declared)))
    };
    let info = app
        .store
        .finish_upload(repo, id, &digest, last)
        .await
        .map_err(|e| upload_error(repo, id, e))?;
    app.sessions.ended(id);
    Ok(blob_created(repo, &info.digest).build())
}

/// `DELETE /v2/<name>/blobs/uploads/<id>`: cancels the session (204).
pub async fn cancel(app: &App, repo: &RepositoryName, id: &UploadId) -> HandlerResult {
    app.store.cancel_upload(repo, id).await?;
    app.sessions.ended(id);
    Ok(Reply::new(StatusCode::NO_CONTENT).build())
}
