//! Pulling manifests and blobs (end-2, end-3), Range reads, and the manifest formats
//! Docker clients push.

use super::case;
use crate::ctx::{ensure, expect_error, expect_header, expect_status, fail, Ctx, Failure};
use crate::digest::sha256;
use crate::fixtures::{
    docker_image, index, oci_image, push_blob, push_manifest, random, same_bytes, setup, Manifest,
    ACCEPT_ALL, DOCKER_LIST, OCI_INDEX,
};
use crate::http::Response;
use crate::TestCase;

pub fn cases() -> Vec<TestCase> {
    vec![
        case!("pull/manifest-by-tag", Pull, Must,
            "end-3, Pulling manifests: a GET of an existing manifest by tag MUST return 200 and the manifest",
            manifest_by_tag),
        case!("pull/manifest-by-digest", Pull, Must,
            "end-3, Pulling manifests: a GET of an existing manifest by digest MUST return 200 and the manifest",
            manifest_by_digest),
        case!("pull/manifest-exact-bytes", Pull, Must,
            "Pulling manifests: the manifest pulled MUST be the bytes pushed (its digest is the digest of those bytes)",
            manifest_exact_bytes),
        case!("pull/manifest-content-type", Pull, Should,
            "Pulling manifests: the Content-Type SHOULD match what the client pushed as the manifest's Content-Type",
            manifest_content_type),
        case!("pull/manifest-docker-content-digest", Pull, Should,
            "Pulling manifests: a successful response SHOULD carry Docker-Content-Digest, and if present it MUST be the manifest's digest",
            manifest_docker_content_digest),
        case!("pull/manifest-head", Pull, Must,
            "end-3, Checking if content exists: a HEAD of an existing manifest (tag or digest) MUST return 200, with no body",
            manifest_head),
        case!("pull/manifest-head-headers", Pull, Should,
            "Checking if content exists: a HEAD response SHOULD carry Docker-Content-Digest and Content-Length of the manifest",
            manifest_head_headers),
        case!("pull/manifest-unknown-tag", Pull, Must,
            "end-3, Pulling manifests: a manifest that is not found MUST return 404",
            manifest_unknown_tag),
        case!("pull/manifest-unknown-digest", Pull, Must,
            "end-3, Pulling manifests: a manifest that is not found MUST return 404 (by digest, also with HEAD)",
            manifest_unknown_digest),
        case!("pull/manifest-unknown-code", Pull, Should,
            "Error codes (code-7): an unknown manifest is reported as MANIFEST_UNKNOWN in the error envelope",
            manifest_unknown_code),
        case!("pull/manifest-reference-invalid", Pull, Must,
            "end-3, Pulling manifests: a GET or HEAD whose <reference> is neither a tag nor a digest (.INVALID_MANIFEST_NAME, as the official suite sends) names no manifest and MUST return 404",
            manifest_reference_invalid),
        case!("pull/manifest-reference-invalid-code", Pull, Should,
            "Error codes (code-7): a GET of a <reference> that is neither a tag nor a digest is reported as MANIFEST_UNKNOWN in the error envelope",
            manifest_reference_invalid_code),
        case!("pull/repository-unknown", Pull, Must,
            "Pushing manifests: an attempt to pull a nonexistent repository MUST return 404",
            repository_unknown),
        case!("pull/blob-get", Pull, Must,
            "end-2, Pulling blobs: a GET of an existing blob MUST return 200 and the blob",
            blob_get),
        case!("pull/blob-docker-content-digest", Pull, Should,
            "Pulling blobs: a successful response SHOULD carry Docker-Content-Digest; if present it MUST match the body",
            blob_docker_content_digest),
        case!("pull/blob-head", Pull, Must,
            "end-2, Checking if content exists: a HEAD of an existing blob MUST return 200 with no body",
            blob_head),
        case!("pull/blob-head-headers", Pull, Should,
            "Checking if content exists: a HEAD response SHOULD carry Content-Length (the blob's size) and Docker-Content-Digest",
            blob_head_headers),
        case!("pull/blob-unknown", Pull, Must,
            "end-2, Pulling blobs: a blob that is not found MUST return 404 (GET and HEAD)",
            blob_unknown),
        case!("pull/blob-unknown-code", Pull, Should,
            "Error codes (code-1): an unknown blob is reported as BLOB_UNKNOWN in the error envelope",
            blob_unknown_code),
        case!("pull/blob-range", Pull, Should,
            "Pulling blobs: a registry SHOULD support Range requests (RFC 9110): 206, Content-Range and exactly the bytes asked for",
            blob_range),
        case!("pull/blob-range-suffix-and-open", Pull, Should,
            "Pulling blobs, RFC 9110 §14.1.2: open-ended (bytes=N-) and suffix (bytes=-N) ranges return the right bytes",
            blob_range_suffix_and_open),
        case!("pull/blob-range-unsatisfiable", Pull, Should,
            "Pulling blobs, RFC 9110 §15.5.17: a range starting past the end is answered 416 with Content-Range: bytes */<size>",
            blob_range_unsatisfiable),
        case!("pull/oci-index", Pull, Must,
            "end-3, Pulling manifests: an image index is pulled by tag and digest with its exact bytes and Content-Type",
            oci_index),
        case!("pull/docker-schema2", Pull, Should,
            "Pulling manifests (Docker compatibility): a Docker schema 2 manifest is returned byte for byte with its media type",
            docker_schema2),
        case!("pull/docker-manifest-list", Pull, Should,
            "Pulling manifests (Docker compatibility): a Docker manifest list is returned byte for byte with its media type",
            docker_manifest_list),
    ]
}

const TAG: &str = "v1";

/// Pushes a small OCI image under [`TAG`].
fn pushed(ctx: &mut Ctx) -> Result<Manifest, Failure> {
    let m = oci_image(2, 3000);
    let repo = ctx.repo().to_owned();
    push_manifest(ctx, &repo, &m, Some(TAG))?;
    Ok(m)
}

fn get_manifest(ctx: &mut Ctx, reference: &str) -> Result<Response, Failure> {
    let req = ctx
        .request("GET", &format!("/v2/{}/manifests/{reference}", ctx.repo()))
        .header("Accept", ACCEPT_ALL);
    ctx.send(req)
}

fn head_manifest(ctx: &mut Ctx, reference: &str) -> Result<Response, Failure> {
    let req = ctx
        .request("HEAD", &format!("/v2/{}/manifests/{reference}", ctx.repo()))
        .header("Accept", ACCEPT_ALL);
    ctx.send(req)
}

fn manifest_by_tag(ctx: &mut Ctx) -> Result<(), Failure> {
    let m = pushed(ctx)?;
    let resp = get_manifest(ctx, TAG)?;
    expect_status(&resp, &[200], "GET manifest by tag")?;
    same_bytes(&resp.body, &m.bytes, "manifest by tag")
}

fn manifest_by_digest(ctx: &mut Ctx) -> Result<(), Failure> {
    let m = pushed(ctx)?;
    let resp = get_manifest(ctx, &m.digest)?;
    expect_status(&resp, &[200], "GET manifest by digest")?;
    same_bytes(&resp.body, &m.bytes, "manifest by digest")
}

fn manifest_exact_bytes(ctx: &mut Ctx) -> Result<(), Failure> {
    let m = pushed(ctx)?;
    for reference in [TAG, m.digest.as_str()] {
        let resp = get_manifest(ctx, reference)?;
        expect_status(&resp, &[200], "GET manifest")?;
        ensure(sha256(&resp.body) == m.digest, || {
            format!(
                "GET manifest {reference}: the body's digest is {}, the pushed manifest's is {}",
                sha256(&resp.body),
                m.digest
            )
        })?;
    }
    Ok(())
}

fn manifest_content_type(ctx: &mut Ctx) -> Result<(), Failure> {
    let m = pushed(ctx)?;
    for reference in [TAG, m.digest.as_str()] {
        let resp = get_manifest(ctx, reference)?;
        expect_status(&resp, &[200], "GET manifest")?;
        let ct = expect_header(&resp, "Content-Type", "GET manifest")?;
        ensure(ct == m.media_type, || {
            format!(
                "GET manifest {reference}: Content-Type {ct:?}, pushed as {:?}",
                m.media_type
            )
        })?;
    }
    Ok(())
}

fn manifest_docker_content_digest(ctx: &mut Ctx) -> Result<(), Failure> {
    let m = pushed(ctx)?;
    for reference in [TAG, m.digest.as_str()] {
        let resp = get_manifest(ctx, reference)?;
        expect_status(&resp, &[200], "GET manifest")?;
        let d = expect_header(&resp, "Docker-Content-Digest", "GET manifest")?;
        ensure(d == m.digest, || {
            format!(
                "GET manifest {reference}: Docker-Content-Digest {d}, the manifest's digest is {}",
                m.digest
            )
        })?;
    }
    Ok(())
}

fn manifest_head(ctx: &mut Ctx) -> Result<(), Failure> {
    let m = pushed(ctx)?;
    for reference in [TAG, m.digest.as_str()] {
        let resp = head_manifest(ctx, reference)?;
        expect_status(&resp, &[200], &format!("HEAD manifest {reference}"))?;
        ensure(resp.body.is_empty(), || {
            "HEAD manifest: the response has a body".to_owned()
        })?;
    }
    Ok(())
}

fn manifest_head_headers(ctx: &mut Ctx) -> Result<(), Failure> {
    let m = pushed(ctx)?;
    for reference in [TAG, m.digest.as_str()] {
        let resp = head_manifest(ctx, reference)?;
        expect_status(&resp, &[200], &format!("HEAD manifest {reference}"))?;
        let d = expect_header(&resp, "Docker-Content-Digest", "HEAD manifest")?;
        ensure(d == m.digest, || {
            format!(
                "HEAD manifest {reference}: Docker-Content-Digest {d}, expected {}",
                m.digest
            )
        })?;
        let len = expect_header(&resp, "Content-Length", "HEAD manifest")?;
        ensure(len == m.size().to_string(), || {
            format!(
                "HEAD manifest {reference}: Content-Length {len}, the manifest has {} bytes",
                m.size()
            )
        })?;
    }
    Ok(())
}

fn manifest_unknown_tag(ctx: &mut Ctx) -> Result<(), Failure> {
    pushed(ctx)?;
    let resp = get_manifest(ctx, "no-such-tag")?;
    expect_status(&resp, &[404], "GET of an unknown tag")?;
    let resp = head_manifest(ctx, "no-such-tag")?;
    expect_status(&resp, &[404], "HEAD of an unknown tag")
}

fn manifest_unknown_digest(ctx: &mut Ctx) -> Result<(), Failure> {
    pushed(ctx)?;
    let missing = sha256(&random(32));
    let resp = get_manifest(ctx, &missing)?;
    expect_status(&resp, &[404], "GET of an unknown manifest digest")?;
    let resp = head_manifest(ctx, &missing)?;
    expect_status(&resp, &[404], "HEAD of an unknown manifest digest")
}

fn manifest_unknown_code(ctx: &mut Ctx) -> Result<(), Failure> {
    pushed(ctx)?;
    let resp = get_manifest(ctx, "no-such-tag")?;
    expect_error(&resp, &[404], "MANIFEST_UNKNOWN", "GET of an unknown tag")?;
    let resp = get_manifest(ctx, &sha256(&random(32)))?;
    expect_error(
        &resp,
        &[404],
        "MANIFEST_UNKNOWN",
        "GET of an unknown manifest digest",
    )
}

/// What the official conformance suite (v1.1.1) sends as a nonexistent manifest: not a
/// tag (a tag cannot start with `.`) and not a digest.
const INVALID_REFERENCE: &str = ".INVALID_MANIFEST_NAME";

fn manifest_reference_invalid(ctx: &mut Ctx) -> Result<(), Failure> {
    pushed(ctx)?;
    let resp = get_manifest(ctx, INVALID_REFERENCE)?;
    expect_status(&resp, &[404], &format!("GET manifests/{INVALID_REFERENCE}"))?;
    let resp = head_manifest(ctx, INVALID_REFERENCE)?;
    expect_status(
        &resp,
        &[404],
        &format!("HEAD manifests/{INVALID_REFERENCE}"),
    )
}

fn manifest_reference_invalid_code(ctx: &mut Ctx) -> Result<(), Failure> {
    pushed(ctx)?;
    let resp = get_manifest(ctx, INVALID_REFERENCE)?;
    expect_error(
        &resp,
        &[404],
        "MANIFEST_UNKNOWN",
        &format!("GET manifests/{INVALID_REFERENCE}"),
    )
}

fn repository_unknown(ctx: &mut Ctx) -> Result<(), Failure> {
    let repo = ctx.repo_named("never-pushed");
    let req = ctx
        .request("GET", &format!("/v2/{repo}/manifests/{TAG}"))
        .header("Accept", ACCEPT_ALL);
    let resp = ctx.send(req)?;
    expect_status(&resp, &[404], "GET manifest of a repository never pushed")?;
    let resp = ctx.get(&format!("/v2/{repo}/blobs/{}", sha256(b"x")))?;
    expect_status(&resp, &[404], "GET blob of a repository never pushed")
}

/// Pushes one blob of `len` random bytes to the test's repository.
fn one_blob(ctx: &mut Ctx, len: usize) -> Result<(Vec<u8>, String), Failure> {
    let data = random(len);
    let repo = ctx.repo().to_owned();
    let digest = push_blob(ctx, &repo, &data)?;
    Ok((data, digest))
}

fn blob_get(ctx: &mut Ctx) -> Result<(), Failure> {
    let (data, digest) = one_blob(ctx, 100_003)?;
    let resp = ctx.get(&format!("/v2/{}/blobs/{digest}", ctx.repo()))?;
    expect_status(&resp, &[200], "GET blob")?;
    same_bytes(&resp.body, &data, "GET blob")?;
    if let Some(d) = resp.header("Docker-Content-Digest") {
        ensure(d == digest, || {
            format!("GET blob: Docker-Content-Digest {d} does not match the body ({digest})")
        })?;
    }
    Ok(())
}

fn blob_docker_content_digest(ctx: &mut Ctx) -> Result<(), Failure> {
    let (_, digest) = one_blob(ctx, 1000)?;
    let resp = ctx.get(&format!("/v2/{}/blobs/{digest}", ctx.repo()))?;
    expect_status(&resp, &[200], "GET blob")?;
    let d = expect_header(&resp, "Docker-Content-Digest", "GET blob")?;
    ensure(d == digest, || {
        format!("GET blob: Docker-Content-Digest {d}, expected {digest}")
    })
}

fn blob_head(ctx: &mut Ctx) -> Result<(), Failure> {
    let (_, digest) = one_blob(ctx, 4097)?;
    let resp = ctx.head(&format!("/v2/{}/blobs/{digest}", ctx.repo()))?;
    expect_status(&resp, &[200], "HEAD blob")?;
    ensure(resp.body.is_empty(), || {
        "HEAD blob: the response has a body".to_owned()
    })
}

fn blob_head_headers(ctx: &mut Ctx) -> Result<(), Failure> {
    let (data, digest) = one_blob(ctx, 4097)?;
    let resp = ctx.head(&format!("/v2/{}/blobs/{digest}", ctx.repo()))?;
    expect_status(&resp, &[200], "HEAD blob")?;
    let len = expect_header(&resp, "Content-Length", "HEAD blob")?;
    ensure(len == data.len().to_string(), || {
        format!(
            "HEAD blob: Content-Length {len}, the blob has {} bytes",
            data.len()
        )
    })?;
    let d = expect_header(&resp, "Docker-Content-Digest", "HEAD blob")?;
    ensure(d == digest, || {
        format!("HEAD blob: Docker-Content-Digest {d}, expected {digest}")
    })
}

fn blob_unknown(ctx: &mut Ctx) -> Result<(), Failure> {
    one_blob(ctx, 10)?;
    let missing = sha256(&random(32));
    let resp = ctx.get(&format!("/v2/{}/blobs/{missing}", ctx.repo()))?;
    expect_status(&resp, &[404], "GET of an unknown blob")?;
    let resp = ctx.head(&format!("/v2/{}/blobs/{missing}", ctx.repo()))?;
    expect_status(&resp, &[404], "HEAD of an unknown blob")
}

fn blob_unknown_code(ctx: &mut Ctx) -> Result<(), Failure> {
    one_blob(ctx, 10)?;
    let missing = sha256(&random(32));
    let resp = ctx.get(&format!("/v2/{}/blobs/{missing}", ctx.repo()))?;
    expect_error(&resp, &[404], "BLOB_UNKNOWN", "GET of an unknown blob")
}

/// GETs `range` of the blob and checks 206, Content-Range and the bytes.
fn check_range(
    ctx: &mut Ctx,
    digest: &str,
    data: &[u8],
    range: &str,
    first: usize,
    last: usize,
) -> Result<(), Failure> {
    let req = ctx
        .request("GET", &format!("/v2/{}/blobs/{digest}", ctx.repo()))
        .header("Range", range);
    let resp = ctx.send(req)?;
    let what = format!("GET blob with Range: {range}");
    expect_status(&resp, &[206], &what)?;
    let cr = expect_header(&resp, "Content-Range", &what)?;
    let want = format!("bytes {first}-{last}/{}", data.len());
    ensure(cr == want, || {
        format!("{what}: Content-Range {cr:?}, expected {want:?}")
    })?;
    same_bytes(&resp.body, &data[first..=last], &what)
}

fn blob_range(ctx: &mut Ctx) -> Result<(), Failure> {
    let (data, digest) = one_blob(ctx, 300_007)?;
    let n = data.len();
    check_range(ctx, &digest, &data, "bytes=0-0", 0, 0)?;
    check_range(ctx, &digest, &data, "bytes=0-65535", 0, 65535)?;
    check_range(ctx, &digest, &data, "bytes=65536-200000", 65536, 200_000)?;
    check_range(
        ctx,
        &digest,
        &data,
        &format!("bytes={}-{}", n - 1, n - 1),
        n - 1,
        n - 1,
    )?;
    // A last position past the end is cut to the end (RFC 9110 §14.1.2).
    check_range(
        ctx,
        &digest,
        &data,
        &format!("bytes=100-{}", n + 1000),
        100,
        n - 1,
    )
}

fn blob_range_suffix_and_open(ctx: &mut Ctx) -> Result<(), Failure> {
    let (data, digest) = one_blob(ctx, 200_001)?;
    let n = data.len();
    check_range(ctx, &digest, &data, "bytes=123456-", 123_456, n - 1)?;
    check_range(ctx, &digest, &data, "bytes=-1000", n - 1000, n - 1)?;
    check_range(ctx, &digest, &data, &format!("bytes=-{}", n + 5), 0, n - 1)
}

fn blob_range_unsatisfiable(ctx: &mut Ctx) -> Result<(), Failure> {
    let (data, digest) = one_blob(ctx, 1000)?;
    let req = ctx
        .request("GET", &format!("/v2/{}/blobs/{digest}", ctx.repo()))
        .header("Range", "bytes=5000-6000");
    let resp = ctx.send(req)?;
    expect_status(&resp, &[416], "GET blob with a range past its end")?;
    let cr = expect_header(&resp, "Content-Range", "416 response")?;
    let want = format!("bytes */{}", data.len());
    ensure(cr == want, || {
        format!("416 response: Content-Range {cr:?}, expected {want:?}")
    })
}

/// Pushes `children` and an index of `media_type` over them; checks it pulls back.
fn check_index(ctx: &mut Ctx, media_type: &str, children: &[Manifest]) -> Result<(), Failure> {
    let repo = ctx.repo().to_owned();
    for child in children {
        push_manifest(ctx, &repo, child, None)?;
    }
    let platforms = [("linux", "amd64"), ("linux", "arm64"), ("windows", "amd64")];
    let list: Vec<(&Manifest, &str, &str)> = children
        .iter()
        .zip(platforms)
        .map(|(m, (os, arch))| (m, os, arch))
        .collect();
    let idx = index(media_type, &list);
    setup(push_manifest(ctx, &repo, &idx, Some("multi")))?;
    for reference in ["multi", idx.digest.as_str()] {
        let resp = get_manifest(ctx, reference)?;
        expect_status(&resp, &[200], &format!("GET index {reference}"))?;
        same_bytes(&resp.body, &idx.bytes, &format!("index {reference}"))?;
        let ct = expect_header(&resp, "Content-Type", "GET index")?;
        ensure(ct == media_type, || {
            format!("GET index {reference}: Content-Type {ct:?}, expected {media_type:?}")
        })?;
    }
    for child in children {
        let resp = get_manifest(ctx, &child.digest)?;
        expect_status(&resp, &[200], "GET index child by digest")?;
        same_bytes(&resp.body, &child.bytes, "index child")?;
    }
    Ok(())
}

fn oci_index(ctx: &mut Ctx) -> Result<(), Failure> {
    let children = [oci_image(1, 100), oci_image(1, 100)];
    check_index(ctx, OCI_INDEX, &children)
}

fn docker_schema2(ctx: &mut Ctx) -> Result<(), Failure> {
    let m = docker_image("linux", "amd64", 2000);
    let repo = ctx.repo().to_owned();
    push_manifest(ctx, &repo, &m, Some(TAG))?;
    for reference in [TAG, m.digest.as_str()] {
        let resp = get_manifest(ctx, reference)?;
        expect_status(&resp, &[200], "GET Docker manifest")?;
        same_bytes(&resp.body, &m.bytes, "Docker manifest")?;
        let ct = resp.header("Content-Type").unwrap_or("");
        if ct != m.media_type {
            return Err(fail(format!(
                "GET Docker manifest {reference}: Content-Type {ct:?}, expected {:?}",
                m.media_type
            )));
        }
    }
    Ok(())
}

fn docker_manifest_list(ctx: &mut Ctx) -> Result<(), Failure> {
    let children = [
        docker_image("linux", "amd64", 500),
        docker_image("linux", "arm64", 500),
    ];
    check_index(ctx, DOCKER_LIST, &children)
}
