//! Manifests: get/head (end-3), put (end-7), delete (end-9).

use crate::http::body::RequestBody;
use http::header::{CONTENT_TYPE, ETAG, LOCATION};
use http::{Request, StatusCode};
use storage::{Digest, NewManifest, Reference, RepositoryName, StoreError};

use super::header_names::{DOCKER_CONTENT_DIGEST, OCI_SUBJECT};
use super::{content_length, header_str, HandlerResult, Reply};
use crate::app::App;
use crate::http::body::{collect_limited, CollectError};
use crate::http::errors::{ApiError, ErrorCode};
use crate::http::manifest::{self, content_type_media_type};

/// `GET|HEAD /v2/<name>/manifests/<reference>`: the exact bytes pushed, with the
/// media type they were pushed as.
///
/// `Accept` is not used to choose or convert: valv stores one representation per
/// digest and returns it even when the client's Accept list omits its type, as
/// distribution does for OCI types. Clients check the returned Content-Type.
pub async fn get(
    app: &App,
    repo: &RepositoryName,
    reference: &Reference,
    head: bool,
) -> HandlerResult {
    let reply = |digest: &Digest| {
        Reply::new(StatusCode::OK)
            .header(DOCKER_CONTENT_DIGEST, digest.to_string())
            .header(ETAG, format!("\"{digest}\""))
    };
    if head {
        let info = app.store.stat_manifest(repo, reference).await?;
        return Ok(reply(&info.digest)
            .head(&info.media_type, info.size)
            .build());
    }
    let m = app.store.get_manifest(repo, reference).await?;
    Ok(reply(&m.info.digest)
        .bytes(&m.info.media_type, m.bytes)
        .build())
}

fn too_large(limit: usize) -> ApiError {
    // MANIFEST_INVALID rather than SIZE_INVALID: the manifest is refused for what it is
    // (too big), not because a declared length disagreed with the body.
    ApiError::new(ErrorCode::ManifestInvalid)
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        .with_message(format!("manifest exceeds the {limit}-byte limit"))
        .with_detail(serde_json::json!({ "limit": limit }))
}

/// `PUT /v2/<name>/manifests/<reference>`: validates the manifest against its media
/// type, checks that every blob and child manifest it references is already in the
/// repository, then stores it (and points the tag at it, when pushed by tag).
pub async fn put(
    app: &App,
    repo: &RepositoryName,
    reference: Reference,
    req: Request<RequestBody>,
) -> HandlerResult {
    let limit = app.settings.max_manifest_bytes;
    let declared_too_large = content_length(&req)?.is_some_and(|l| l > limit as u64);
    let media_type = content_type_media_type(header_str(&req, CONTENT_TYPE));
    // Reading on past the limit (without keeping it) lets the client receive the 413.
    let drain = 4 * limit as u64;
    let bytes = match collect_limited(req.into_body(), limit, drain, declared_too_large).await {
        Ok(b) => b,
        Err(CollectError::TooLarge) => return Err(too_large(limit)),
        Err(CollectError::Body(e)) => return Err(e.into()),
    };
    let parsed = manifest::parse(media_type.as_deref(), &bytes)
        .map_err(|e| ApiError::new(ErrorCode::ManifestInvalid).with_message(e.to_string()))?;

    let (digest, tag) = match reference {
        Reference::Digest(d) => (d, None),
        Reference::Tag(t) => (Digest::sha256_of(&bytes), Some(t)),
    };
    // Checked here as well as in the store so that a mismatch is reported as such
    // rather than as whichever reference check happens to fail first.
    if Digest::compute(digest.algorithm(), &bytes) != digest {
        return Err(ApiError::new(ErrorCode::DigestInvalid)
            .with_message(format!("the manifest's digest is not {digest}")));
    }
    let references = parsed.blobs.len() + parsed.manifests.len();
    let most = app.settings.max_manifest_references;
    if references > most {
        return Err(
            ApiError::new(ErrorCode::ManifestInvalid).with_message(format!(
            "the manifest references {references} blobs and manifests; at most {most} are accepted"
        )),
        );
    }
    check_references(app, repo, &parsed).await?;

    let subject = parsed.subject.clone();
    let new = NewManifest {
        bytes,
        media_type: parsed.kind.media_type().to_owned(),
        digest,
        subject: parsed.subject,
        artifact_type: parsed.artifact_type,
        annotations: parsed.annotations,
    };
    let info = app.store.put_manifest(repo, new, tag.as_ref()).await?;
    let mut reply = Reply::new(StatusCode::CREATED)
        .header(LOCATION, format!("/v2/{repo}/manifests/{}", info.digest))
        .header(DOCKER_CONTENT_DIGEST, info.digest.to_string());
    if let Some(subject) = subject {
        reply = reply.header(OCI_SUBJECT, subject.to_string());
    }
    Ok(reply.build())
}

/// MANIFEST_BLOB_UNKNOWN for the first referenced blob or child manifest that is not in
/// the repository. A subject need not exist (the spec requires accepting it).
async fn check_references(
    app: &App,
    repo: &RepositoryName,
    parsed: &manifest::Parsed,
) -> Result<(), ApiError> {
    let unknown = |what: &str, d: &Digest| {
        ApiError::new(ErrorCode::ManifestBlobUnknown)
            .with_message(format!(
                "the manifest references {what} {d}, which is not in repository {repo}"
            ))
            .with_detail(serde_json::json!({ "digest": d.to_string() }))
    };
    // Each distinct digest once: a manifest may name one layer many times.
    let mut seen = std::collections::HashSet::new();
    for d in parsed.blobs.iter().filter(|d| seen.insert(*d)) {
        match app.store.stat_repo_blob(repo, d).await {
            Ok(_) => {}
            Err(StoreError::BlobUnknown) => return Err(unknown("blob", d)),
            Err(e) => return Err(e.into()),
        }
    }
    for d in parsed.manifests.iter().filter(|d| seen.insert(*d)) {
        match app
            .store
            .stat_manifest(repo, &Reference::Digest(d.clone()))
            .await
        {
            Ok(_) => {}
            Err(StoreError::ManifestUnknown) => return Err(unknown("manifest", d)),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `DELETE /v2/<name>/manifests/<reference>`: by digest, the manifest (with its tags
/// and referrers entry); by tag, only the tag. 202 either way.
pub async fn delete(app: &App, repo: &RepositoryName, reference: &Reference) -> HandlerResult {
    match reference {
        Reference::Digest(d) => app.store.delete_manifest(repo, d).await?,
        Reference::Tag(t) => app.store.delete_tag(repo, t).await?,
    }
    Ok(Reply::new(StatusCode::ACCEPTED).build())
}
