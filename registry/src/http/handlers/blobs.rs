//! Blob reads (end-2) and deletes (end-10).

use crate::http::body::RequestBody;
use http::header::{ACCEPT_RANGES, CONTENT_RANGE, ETAG, RANGE};
use http::{Request, StatusCode};
use storage::{Digest, RepositoryName};

use super::header_names::DOCKER_CONTENT_DIGEST;
use super::{header_str, HandlerResult, Reply};
use crate::app::App;
use crate::http::body;
use crate::http::range::{content_range_header, parse_range};

const OCTET_STREAM: &str = "application/octet-stream";

/// `GET|HEAD /v2/<name>/blobs/<digest>`, with `Range` support on GET (206 / 416).
/// The body streams from the store segment by segment; nothing is buffered here.
pub async fn get(
    app: &App,
    repo: &RepositoryName,
    digest: &Digest,
    head: bool,
    req: &Request<RequestBody>,
) -> HandlerResult {
    if head {
        let info = app.store.stat_repo_blob(repo, digest).await?;
        return Ok(blob_reply(StatusCode::OK, digest)
            .head(OCTET_STREAM, info.size)
            .build());
    }
    let range = header_str(req, RANGE).and_then(parse_range);
    let read = app.store.read_repo_blob(repo, digest, range).await?;
    let len = read.range.end - read.range.start;
    let reply = if read.partial {
        blob_reply(StatusCode::PARTIAL_CONTENT, digest).header(
            CONTENT_RANGE,
            content_range_header(&read.range, read.info.size),
        )
    } else {
        blob_reply(StatusCode::OK, digest)
    };
    Ok(reply
        .stream(OCTET_STREAM, len, body::from_store(read.body))
        .build())
}

/// `DELETE /v2/<name>/blobs/<digest>`: unlinks the blob from the repository (202).
/// The content stays while other repositories link it.
pub async fn delete(app: &App, repo: &RepositoryName, digest: &Digest) -> HandlerResult {
    app.store.unlink_blob(repo, digest).await?;
    Ok(Reply::new(StatusCode::ACCEPTED)
        .header(DOCKER_CONTENT_DIGEST, digest.to_string())
        .build())
}

fn blob_reply(status: StatusCode, digest: &Digest) -> Reply {
    Reply::new(status)
        .header(DOCKER_CONTENT_DIGEST, digest.to_string())
        .header(ETAG, format!("\"{digest}\""))
        .header(ACCEPT_RANGES, "bytes")
}
