//! Pushing blobs (end-4a/4b, end-5, end-6, end-13, cancel), cross-repository mounts
//! (end-11) and manifests (end-7).

use super::case;
use crate::ctx::{ensure, expect_header, expect_status, fail, Ctx, Failure};
use crate::digest::sha256;
use crate::fixtures::{
    artifact, oci_image, push_blob, put_manifest, random, same_bytes, setup, Manifest, OCI_EMPTY,
    OCI_MANIFEST,
};
use crate::http::{Request, Response, Target};
use crate::TestCase;

pub fn cases() -> Vec<TestCase> {
    vec![
        case!("push/post-starts-upload", Push, Must,
            "end-4a, Pushing blobs: POST /v2/<name>/blobs/uploads/ MUST answer 202 with a Location header",
            post_starts_upload),
        case!("push/post-put-monolithic", Push, Must,
            "end-6, POST then PUT: the PUT <location>?digest= with the whole blob MUST answer 201 with Location, and the blob is stored",
            post_put_monolithic),
        case!("push/blob-location-pullable", Push, Must,
            "end-6, POST then PUT: the Location of the 201 MUST be a pullable blob URL",
            blob_location_pullable),
        case!("push/single-post", Push, Must,
            "end-4b, Single POST: POST ?digest= with the blob MUST answer 201 + Location when supported; otherwise SHOULD answer 202 and the PUT completes it",
            single_post),
        case!("push/chunked", Push, Must,
            "end-5, Pushing a blob in chunks: each PATCH with Content-Range MUST answer 202 with Location; the closing PUT MUST answer 201",
            chunked),
        case!("push/chunked-range-header", Push, Must,
            "end-5, Pushing a blob in chunks: each 202 MUST carry Range: 0-<end-of-range> for the bytes received so far",
            chunked_range_header),
        case!("push/chunked-odd-sizes", Push, Must,
            "end-5, Pushing a blob in chunks: chunks of any size (1 B, 65537 B, 5 MiB + 3) are accepted in order, respecting OCI-Chunk-Min-Length",
            chunked_odd_sizes),
        case!("push/chunked-last-chunk-in-put", Push, Must,
            "end-6, Pushing a blob in chunks: the final chunk MAY be uploaded in the closing PUT, which MUST answer 201",
            last_chunk_in_put),
        case!("push/streamed-patch", Push, Should,
            "apdx-1, stream upload (what docker sends): a PATCH without Content-Range, with a chunked transfer-encoded body, appends the data",
            streamed_patch),
        case!("push/chunk-out-of-order", Push, Must,
            "end-5, Pushing a blob in chunks: a chunk that does not start right after the last one MUST be answered 416",
            chunk_out_of_order),
        case!("push/chunk-repeated", Push, Must,
            "end-5, Pushing a blob in chunks: a chunk sent again (overlapping what was received) is out of order and MUST be answered 416",
            chunk_repeated),
        case!("push/chunk-resume-after-416", Push, Should,
            "end-5, Pushing a blob in chunks: after a 416 the session stays usable and the client resumes at the reported range",
            chunk_resume_after_416),
        case!("push/upload-status", Push, Must,
            "end-13, Getting the upload status: GET <location> MUST answer 204 with Location and Range: 0-<end of received bytes>",
            upload_status),
        case!("push/upload-cancel", Push, Should,
            "end-14, Cancel a blob upload: DELETE <location> SHOULD answer 204; the session is then unknown (404) and nothing is stored",
            upload_cancel),
        case!("push/digest-mismatch", Push, Must,
            "end-6: a PUT whose digest does not match the uploaded content MUST fail with 400, and nothing is stored under that digest",
            digest_mismatch),
        case!("push/mount-from", Push, Must,
            "end-11, Mounting a blob from another repository: a successful mount MUST answer 201 with Location, and the blob is readable in the target",
            mount_from),
        case!("push/mount-unknown-blob", Push, Should,
            "end-11: a registry unable to mount the blob SHOULD answer 202 and start an upload session that works",
            mount_unknown_blob),
        case!("push/mount-automatic", Push, May,
            "end-11: registries MAY treat `from` as optional (automatic mount: 201); otherwise a mount without `from` starts an upload (202)",
            mount_automatic),
        case!("push/manifest-by-tag", Push, Must,
            "end-7, Pushing manifests: PUT /v2/<name>/manifests/<tag> MUST answer 201 with Location",
            manifest_by_tag),
        case!("push/manifest-by-digest", Push, Must,
            "end-7, Pushing manifests: PUT /v2/<name>/manifests/<digest> MUST answer 201 with Location",
            manifest_by_digest),
        case!("push/manifest-location-pullable", Push, Must,
            "end-7, Pushing manifests: the Location MUST be a pullable manifest URL",
            manifest_location_pullable),
        case!("push/manifest-docker-content-digest", Push, Must,
            "end-7, Pushing manifests: the 201 MUST carry Docker-Content-Digest, the digest of the uploaded manifest",
            manifest_docker_content_digest),
        case!("push/manifest-4mib-accepted", Push, Should,
            "Pushing manifests: registries SHOULD expect to support manifest uploads of at least 4 MiB (exactly 4 MiB here)",
            manifest_4mib_accepted),
        case!("push/manifest-too-large", Push, Should,
            "Pushing manifests: a manifest over the registry's size limit SHOULD be refused with 413 (a 16 MiB manifest here)",
            manifest_too_large),
        case!("push/manifest-reference-invalid", Push, Should,
            "end-7, Pushing manifests: a PUT whose <reference> is neither a tag nor a digest (.INVALID_MANIFEST_NAME) is refused with 400, and nothing is stored",
            manifest_reference_invalid),
        case!("push/manifest-subject-missing", Push, Must,
            "Pushing manifests with subject: a manifest whose subject does not exist yet MUST be accepted",
            manifest_subject_missing),
        case!("push/manifest-oci-subject", Push, Must,
            "Pushing manifests with subject: a registry that supports referrers MUST answer OCI-Subject: <subject digest>",
            manifest_oci_subject),
    ]
}

/// Starts an upload: the session target and the `OCI-Chunk-Min-Length` the registry
/// asks for (1 when absent).
fn start(ctx: &mut Ctx) -> Result<(Target, usize), Failure> {
    let req = ctx
        .request("POST", &format!("/v2/{}/blobs/uploads/", ctx.repo()))
        .body(Vec::new());
    let resp = ctx.send(req)?;
    expect_status(&resp, &[202], "POST /blobs/uploads/")?;
    let min = match resp.header("OCI-Chunk-Min-Length") {
        None => 1,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| fail(format!("OCI-Chunk-Min-Length {v:?} is not a number")))?
            .max(1),
    };
    Ok((location(ctx, &resp, "POST /blobs/uploads/")?, min))
}

fn location(ctx: &Ctx, resp: &Response, what: &str) -> Result<Target, Failure> {
    let loc = expect_header(resp, "Location", what)?;
    ctx.resolve(loc)
}

/// PATCHes `data` as the bytes starting at `offset`.
fn patch(ctx: &mut Ctx, target: &Target, offset: usize, data: &[u8]) -> Result<Response, Failure> {
    let last = (offset + data.len()).saturating_sub(1);
    ctx.send(
        Request::new("PATCH", target.clone())
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", &format!("{offset}-{last}"))
            .body(data.to_vec()),
    )
}

/// PATCHes `data` at `offset`, expecting 202; returns the next location.
fn patch_ok(ctx: &mut Ctx, target: &Target, offset: usize, data: &[u8]) -> Result<Target, Failure> {
    let resp = patch(ctx, target, offset, data)?;
    let what = format!("PATCH {offset}-{}", offset + data.len() - 1);
    expect_status(&resp, &[202], &what)?;
    location(ctx, &resp, &what)
}

/// The closing PUT with `digest` and an optional last chunk.
fn close(
    ctx: &mut Ctx,
    target: &Target,
    digest: &str,
    last: Option<(usize, &[u8])>,
) -> Result<Response, Failure> {
    let mut req = Request::new("PUT", target.with_query("digest", digest));
    match last {
        Some((offset, data)) => {
            req = req
                .header("Content-Type", "application/octet-stream")
                .header(
                    "Content-Range",
                    &format!("{offset}-{}", offset + data.len() - 1),
                )
                .body(data.to_vec());
        }
        None => req = req.body(Vec::new()),
    }
    ctx.send(req)
}

/// PUT `<target>?digest=<digest of data>` carrying all of `data`.
fn put_whole(ctx: &mut Ctx, target: &Target, data: &[u8]) -> Result<Response, Failure> {
    ctx.send(
        Request::new("PUT", target.with_query("digest", &sha256(data)))
            .header("Content-Type", "application/octet-stream")
            .body(data.to_vec()),
    )
}

/// POST `?mount=<digest>[&from=<from>]` to the test's repository.
fn mount(ctx: &mut Ctx, digest: &str, from: Option<&str>) -> Result<Response, Failure> {
    let mut path = format!(
        "/v2/{}/blobs/uploads/?mount={}",
        ctx.repo(),
        crate::http::encode(digest)
    );
    if let Some(from) = from {
        path.push_str(&format!("&from={}", crate::http::encode(from)));
    }
    let req = ctx.request("POST", &path).body(Vec::new());
    ctx.send(req)
}

/// GETs the blob from the test's repository and compares it with `data`.
fn expect_blob(ctx: &mut Ctx, repo: &str, data: &[u8], what: &str) -> Result<(), Failure> {
    let digest = sha256(data);
    let resp = ctx.get(&format!("/v2/{repo}/blobs/{digest}"))?;
    expect_status(&resp, &[200], &format!("{what}: GET blob"))?;
    same_bytes(&resp.body, data, what)
}

fn post_starts_upload(ctx: &mut Ctx) -> Result<(), Failure> {
    start(ctx).map(|_| ())
}

fn post_put_monolithic(ctx: &mut Ctx) -> Result<(), Failure> {
    let data = random(70_001);
    let (target, _) = start(ctx)?;
    let resp = put_whole(ctx, &target, &data)?;
    expect_status(&resp, &[201], "PUT with the whole blob")?;
    expect_header(&resp, "Location", "PUT with the whole blob")?;
    let repo = ctx.repo().to_owned();
    expect_blob(ctx, &repo, &data, "monolithic upload")
}

fn blob_location_pullable(ctx: &mut Ctx) -> Result<(), Failure> {
    let data = random(5000);
    let (target, _) = start(ctx)?;
    let resp = put_whole(ctx, &target, &data)?;
    expect_status(&resp, &[201], "PUT with the whole blob")?;
    let blob = location(ctx, &resp, "PUT with the whole blob")?;
    let resp = ctx.send(Request::new("GET", blob.clone()))?;
    expect_status(&resp, &[200], &format!("GET of the blob Location {blob}"))?;
    same_bytes(&resp.body, &data, "blob at its Location")
}

fn single_post(ctx: &mut Ctx) -> Result<(), Failure> {
    let data = random(12_345);
    let digest = sha256(&data);
    let req = ctx
        .request(
            "POST",
            &format!(
                "/v2/{}/blobs/uploads/?digest={}",
                ctx.repo(),
                crate::http::encode(&digest)
            ),
        )
        .header("Content-Type", "application/octet-stream")
        .body(data.clone());
    let resp = ctx.send(req)?;
    expect_status(&resp, &[201, 202], "POST ?digest= with the blob")?;
    if resp.status == 202 {
        // Not supported: the 202 is an ordinary session, completed by a PUT.
        let target = location(ctx, &resp, "POST ?digest= answered 202")?;
        let resp = put_whole(ctx, &target, &data)?;
        expect_status(&resp, &[201], "PUT after a 202 to POST ?digest=")?;
    } else {
        let blob = location(ctx, &resp, "POST ?digest= answered 201")?;
        let resp = ctx.send(Request::new("GET", blob))?;
        expect_status(&resp, &[200], "GET of the Location of the single POST")?;
        same_bytes(&resp.body, &data, "blob at the single POST's Location")?;
    }
    let repo = ctx.repo().to_owned();
    expect_blob(ctx, &repo, &data, "single POST")
}

/// Uploads `data` in `chunks` (sizes) and closes with an empty PUT; checks the blob.
fn upload_chunks(ctx: &mut Ctx, data: &[u8], sizes: &[usize]) -> Result<(), Failure> {
    let (mut target, _) = start(ctx)?;
    let mut offset = 0;
    for &n in sizes {
        target = patch_ok(ctx, &target, offset, &data[offset..offset + n])?;
        offset += n;
    }
    assert_eq!(offset, data.len(), "chunk sizes add up to the blob");
    let resp = close(ctx, &target, &sha256(data), None)?;
    expect_status(&resp, &[201], "closing PUT")?;
    expect_header(&resp, "Location", "closing PUT")?;
    let repo = ctx.repo().to_owned();
    expect_blob(ctx, &repo, data, "chunked upload")
}

fn chunked(ctx: &mut Ctx) -> Result<(), Failure> {
    let data = random(3 * 100_000);
    upload_chunks(ctx, &data, &[100_000, 100_000, 100_000])
}

fn chunked_range_header(ctx: &mut Ctx) -> Result<(), Failure> {
    let data = random(150_000);
    let (mut target, _) = start(ctx)?;
    let mut offset = 0;
    for n in [50_000, 100_000] {
        let resp = patch(ctx, &target, offset, &data[offset..offset + n])?;
        expect_status(&resp, &[202], "PATCH")?;
        offset += n;
        let range = expect_header(&resp, "Range", "PATCH 202")?;
        check_upload_range(range, offset, "PATCH 202")?;
        target = location(ctx, &resp, "PATCH 202")?;
    }
    let resp = close(ctx, &target, &sha256(&data), None)?;
    expect_status(&resp, &[201], "closing PUT")
}

/// Checks an upload `Range` header (`0-<last>`, or distribution's older `bytes=0-<last>`)
/// against `received` bytes.
fn check_upload_range(range: &str, received: usize, what: &str) -> Result<(), Failure> {
    let want = format!("0-{}", received.saturating_sub(1));
    let got = range.strip_prefix("bytes=").unwrap_or(range);
    ensure(got == want, || {
        format!("{what}: Range {range:?} after {received} bytes, expected {want:?}")
    })
}

fn chunked_odd_sizes(ctx: &mut Ctx) -> Result<(), Failure> {
    let (_, min) = start(ctx)?;
    let mut sizes = vec![1, 65_537, 5 * 1024 * 1024 + 3];
    if min > 1 {
        // Chunks below the minimum may only come last.
        sizes.retain(|&s| s >= min);
        sizes.push(1);
    }
    let data = random(sizes.iter().sum());
    upload_chunks(ctx, &data, &sizes)
}

fn last_chunk_in_put(ctx: &mut Ctx) -> Result<(), Failure> {
    let data = random(200_000);
    let (target, _) = start(ctx)?;
    let target = patch_ok(ctx, &target, 0, &data[..120_000])?;
    let resp = close(
        ctx,
        &target,
        &sha256(&data),
        Some((120_000, &data[120_000..])),
    )?;
    expect_status(&resp, &[201], "closing PUT carrying the last chunk")?;
    let repo = ctx.repo().to_owned();
    expect_blob(
        ctx,
        &repo,
        &data,
        "upload finished by a PUT with the last chunk",
    )
}

fn streamed_patch(ctx: &mut Ctx) -> Result<(), Failure> {
    let data = random(300_000);
    let (target, _) = start(ctx)?;
    let pieces: Vec<Vec<u8>> = data.chunks(32 * 1024).map(<[u8]>::to_vec).collect();
    let resp = ctx.send(
        Request::new("PATCH", target)
            .header("Content-Type", "application/octet-stream")
            .chunked(pieces),
    )?;
    expect_status(&resp, &[202], "streamed PATCH")?;
    let target = location(ctx, &resp, "streamed PATCH")?;
    if let Some(range) = resp.header("Range") {
        check_upload_range(range, data.len(), "streamed PATCH")?;
    }
    let resp = close(ctx, &target, &sha256(&data), None)?;
    expect_status(&resp, &[201], "closing PUT after a streamed PATCH")?;
    let repo = ctx.repo().to_owned();
    expect_blob(ctx, &repo, &data, "streamed upload")
}

fn chunk_out_of_order(ctx: &mut Ctx) -> Result<(), Failure> {
    let data = random(30_000);
    let (target, _) = start(ctx)?;
    let target = patch_ok(ctx, &target, 0, &data[..10_000])?;
    // Skips 10 000..20 000.
    let resp = patch(ctx, &target, 20_000, &data[20_000..])?;
    expect_status(&resp, &[416], "PATCH leaving a gap")
}

fn chunk_repeated(ctx: &mut Ctx) -> Result<(), Failure> {
    let data = random(30_000);
    let (target, _) = start(ctx)?;
    let target = patch_ok(ctx, &target, 0, &data[..10_000])?;
    let resp = patch(ctx, &target, 0, &data[..10_000])?;
    expect_status(&resp, &[416], "PATCH repeating the first chunk")?;
    let resp = patch(ctx, &target, 5_000, &data[5_000..15_000])?;
    expect_status(&resp, &[416], "PATCH overlapping the received bytes")
}

fn chunk_resume_after_416(ctx: &mut Ctx) -> Result<(), Failure> {
    let data = random(30_000);
    let (target, _) = start(ctx)?;
    let target = patch_ok(ctx, &target, 0, &data[..10_000])?;
    let resp = patch(ctx, &target, 20_000, &data[20_000..])?;
    expect_status(&resp, &[416], "PATCH leaving a gap")?;
    let resp = ctx.send(Request::new("GET", target.clone()))?;
    expect_status(&resp, &[204], "upload status after a 416")?;
    check_upload_range(
        expect_header(&resp, "Range", "upload status")?,
        10_000,
        "upload status after a 416",
    )?;
    let target = patch_ok(ctx, &target, 10_000, &data[10_000..])?;
    let resp = close(ctx, &target, &sha256(&data), None)?;
    expect_status(&resp, &[201], "closing PUT after resuming")?;
    let repo = ctx.repo().to_owned();
    expect_blob(ctx, &repo, &data, "upload resumed after a 416")
}

fn upload_status(ctx: &mut Ctx) -> Result<(), Failure> {
    let data = random(40_000);
    let (target, _) = start(ctx)?;
    let resp = ctx.send(Request::new("GET", target.clone()))?;
    expect_status(&resp, &[204], "upload status of a new session")?;
    expect_header(&resp, "Location", "upload status")?;
    let target = patch_ok(ctx, &target, 0, &data[..25_000])?;
    let resp = ctx.send(Request::new("GET", target.clone()))?;
    expect_status(&resp, &[204], "upload status after a chunk")?;
    let status_location = location(ctx, &resp, "upload status")?;
    check_upload_range(
        expect_header(&resp, "Range", "upload status")?,
        25_000,
        "upload status",
    )?;
    // The location it gives continues the upload.
    let target = patch_ok(ctx, &status_location, 25_000, &data[25_000..])?;
    let resp = close(ctx, &target, &sha256(&data), None)?;
    expect_status(&resp, &[201], "closing PUT")
}

fn upload_cancel(ctx: &mut Ctx) -> Result<(), Failure> {
    let data = random(10_000);
    let (target, _) = start(ctx)?;
    let target = patch_ok(ctx, &target, 0, &data)?;
    let resp = ctx.send(Request::new("DELETE", target.clone()))?;
    expect_status(&resp, &[204], "DELETE of the upload session")?;
    let resp = ctx.send(Request::new("GET", target.clone()))?;
    expect_status(&resp, &[404], "upload status after cancel")?;
    let resp = close(ctx, &target, &sha256(&data), None)?;
    expect_status(&resp, &[404], "closing PUT after cancel")?;
    let resp = ctx.head(&format!("/v2/{}/blobs/{}", ctx.repo(), sha256(&data)))?;
    expect_status(&resp, &[404], "HEAD of the cancelled blob")
}

fn digest_mismatch(ctx: &mut Ctx) -> Result<(), Failure> {
    let data = random(10_000);
    let claimed = sha256(&random(10_000));
    let (target, _) = start(ctx)?;
    let resp = ctx.send(
        Request::new("PUT", target.with_query("digest", &claimed))
            .header("Content-Type", "application/octet-stream")
            .body(data.clone()),
    )?;
    expect_status(
        &resp,
        &[400],
        "PUT with a digest that does not match the body",
    )?;
    for digest in [&claimed, &sha256(&data)] {
        let resp = ctx.head(&format!("/v2/{}/blobs/{digest}", ctx.repo()))?;
        expect_status(
            &resp,
            &[404],
            &format!("HEAD {digest} after the refused PUT"),
        )?;
    }
    Ok(())
}

fn mount_from(ctx: &mut Ctx) -> Result<(), Failure> {
    let data = random(20_000);
    let source = ctx.source_repo().to_owned();
    let digest = push_blob(ctx, &source, &data)?;
    let resp = mount(ctx, &digest, Some(&source))?;
    expect_status(
        &resp,
        &[201],
        "POST ?mount=&from= of a blob in the source repository",
    )?;
    let blob = location(ctx, &resp, "mount")?;
    let got = ctx.send(Request::new("GET", blob))?;
    expect_status(&got, &[200], "GET of the mount's Location")?;
    same_bytes(&got.body, &data, "mounted blob at its Location")?;
    if let Some(d) = resp.header("Docker-Content-Digest") {
        ensure(d == digest, || {
            format!("mount: Docker-Content-Digest {d}, expected {digest}")
        })?;
    }
    let repo = ctx.repo().to_owned();
    expect_blob(ctx, &repo, &data, "mounted blob")
}

fn mount_unknown_blob(ctx: &mut Ctx) -> Result<(), Failure> {
    let source = ctx.source_repo().to_owned();
    push_blob(ctx, &source, &random(100))?;
    let data = random(3000);
    let digest = sha256(&data);
    let resp = mount(ctx, &digest, Some(&source))?;
    expect_status(&resp, &[202], "mount of a blob the source does not have")?;
    let target = location(ctx, &resp, "mount answered 202")?;
    let resp = put_whole(ctx, &target, &data)?;
    expect_status(&resp, &[201], "PUT into the session the mount started")?;
    let repo = ctx.repo().to_owned();
    expect_blob(ctx, &repo, &data, "blob uploaded after a failed mount")
}

fn mount_automatic(ctx: &mut Ctx) -> Result<(), Failure> {
    let data = random(7000);
    let source = ctx.source_repo().to_owned();
    let digest = push_blob(ctx, &source, &data)?;
    let resp = mount(ctx, &digest, None)?;
    let allowed: &[u16] = match ctx.automatic_crossmount {
        Some(true) => &[201],
        Some(false) => &[202],
        None => &[201, 202],
    };
    expect_status(&resp, allowed, "POST ?mount= without from")?;
    let repo = ctx.repo().to_owned();
    if resp.status == 201 {
        expect_blob(ctx, &repo, &data, "automatically mounted blob")
    } else {
        let target = location(ctx, &resp, "mount without from answered 202")?;
        let resp = put_whole(ctx, &target, &data)?;
        expect_status(
            &resp,
            &[201],
            "PUT into the session a mount without from started",
        )?;
        expect_blob(
            ctx,
            &repo,
            &data,
            "blob uploaded after a mount without from",
        )
    }
}

/// Pushes the blobs of `m` to the test's repository.
fn push_blobs(ctx: &mut Ctx, m: &Manifest) -> Result<(), Failure> {
    let repo = ctx.repo().to_owned();
    for b in &m.blobs {
        push_blob(ctx, &repo, b)?;
    }
    Ok(())
}

fn put(ctx: &mut Ctx, reference: &str, m: &Manifest) -> Result<Response, Failure> {
    let repo = ctx.repo().to_owned();
    let req = put_manifest(ctx, &repo, reference, m);
    ctx.send(req)
}

fn manifest_by_tag(ctx: &mut Ctx) -> Result<(), Failure> {
    let m = oci_image(1, 1000);
    push_blobs(ctx, &m)?;
    let resp = put(ctx, "v1", &m)?;
    expect_status(&resp, &[201], "PUT manifest by tag")?;
    expect_header(&resp, "Location", "PUT manifest by tag").map(|_| ())
}

fn manifest_by_digest(ctx: &mut Ctx) -> Result<(), Failure> {
    let m = oci_image(1, 1000);
    push_blobs(ctx, &m)?;
    let resp = put(ctx, &m.digest.clone(), &m)?;
    expect_status(&resp, &[201], "PUT manifest by digest")?;
    expect_header(&resp, "Location", "PUT manifest by digest").map(|_| ())
}

fn manifest_location_pullable(ctx: &mut Ctx) -> Result<(), Failure> {
    let m = oci_image(1, 1000);
    push_blobs(ctx, &m)?;
    for reference in ["v1", m.digest.as_str()] {
        let resp = put(ctx, reference, &m)?;
        expect_status(&resp, &[201], "PUT manifest")?;
        let target = location(ctx, &resp, "PUT manifest")?;
        let got = ctx.send(Request::new("GET", target.clone()).header("Accept", OCI_MANIFEST))?;
        expect_status(
            &got,
            &[200],
            &format!("GET of the manifest Location {target}"),
        )?;
        same_bytes(&got.body, &m.bytes, "manifest at its Location")?;
    }
    Ok(())
}

fn manifest_docker_content_digest(ctx: &mut Ctx) -> Result<(), Failure> {
    let m = oci_image(1, 1000);
    push_blobs(ctx, &m)?;
    let resp = put(ctx, "v1", &m)?;
    expect_status(&resp, &[201], "PUT manifest")?;
    let d = expect_header(&resp, "Docker-Content-Digest", "PUT manifest")?;
    ensure(d == m.digest, || {
        format!(
            "PUT manifest: Docker-Content-Digest {d}, the bytes' digest is {}",
            m.digest
        )
    })
}

/// An OCI manifest padded with an annotation to exactly `size` bytes.
fn padded_manifest(ctx: &mut Ctx, size: usize) -> Result<Manifest, Failure> {
    let base = oci_image(1, 100);
    push_blobs(ctx, &base)?;
    let mut value: serde_json::Value =
        serde_json::from_slice(&base.bytes).map_err(|e| fail(e.to_string()))?;
    value["annotations"]["org.example.padding"] = serde_json::json!("");
    let empty = Manifest::from_json(OCI_MANIFEST, &value, Vec::new()).size();
    value["annotations"]["org.example.padding"] =
        serde_json::json!("p".repeat(size.saturating_sub(empty)));
    let m = Manifest::from_json(OCI_MANIFEST, &value, Vec::new());
    assert_eq!(m.size(), size, "padding arithmetic");
    Ok(m)
}

fn manifest_4mib_accepted(ctx: &mut Ctx) -> Result<(), Failure> {
    let m = padded_manifest(ctx, 4 * 1024 * 1024)?;
    let resp = put(ctx, "big", &m)?;
    expect_status(&resp, &[201], "PUT of a 4 MiB manifest")?;
    let req = ctx
        .request("GET", &format!("/v2/{}/manifests/big", ctx.repo()))
        .header("Accept", OCI_MANIFEST);
    let got = ctx.send(req)?;
    expect_status(&got, &[200], "GET of the 4 MiB manifest")?;
    same_bytes(&got.body, &m.bytes, "4 MiB manifest")
}

fn manifest_too_large(ctx: &mut Ctx) -> Result<(), Failure> {
    let m = padded_manifest(ctx, 16 * 1024 * 1024 + 1)?;
    let resp = put(ctx, "huge", &m)?;
    expect_status(&resp, &[413], "PUT of a 16 MiB manifest")?;
    let req = ctx
        .request("HEAD", &format!("/v2/{}/manifests/huge", ctx.repo()))
        .header("Accept", OCI_MANIFEST);
    let got = ctx.send(req)?;
    expect_status(&got, &[404], "HEAD of the refused manifest's tag")
}

fn manifest_reference_invalid(ctx: &mut Ctx) -> Result<(), Failure> {
    const BAD: &str = ".INVALID_MANIFEST_NAME";
    let m = oci_image(1, 100);
    push_blobs(ctx, &m)?;
    let resp = put(ctx, BAD, &m)?;
    expect_status(&resp, &[400], &format!("PUT manifests/{BAD}"))?;
    // Refused means not stored: the manifest's digest names nothing.
    let req = ctx
        .request(
            "HEAD",
            &format!("/v2/{}/manifests/{}", ctx.repo(), m.digest),
        )
        .header("Accept", OCI_MANIFEST);
    let got = ctx.send(req)?;
    expect_status(&got, &[404], "HEAD of the refused manifest's digest")
}

/// A subject that is never pushed, and an artifact referring to it.
fn artifact_with_missing_subject(ctx: &mut Ctx) -> Result<(Manifest, Manifest), Failure> {
    let subject = oci_image(1, 100);
    let a = artifact(
        Some("application/vnd.example.sbom"),
        OCI_EMPTY,
        Some(&subject),
        &[],
    );
    push_blobs(ctx, &a)?;
    Ok((subject, a))
}

fn manifest_subject_missing(ctx: &mut Ctx) -> Result<(), Failure> {
    let (_, a) = artifact_with_missing_subject(ctx)?;
    let resp = put(ctx, &a.digest.clone(), &a)?;
    expect_status(
        &resp,
        &[201],
        "PUT of a manifest whose subject does not exist",
    )
}

fn manifest_oci_subject(ctx: &mut Ctx) -> Result<(), Failure> {
    let (subject, a) = artifact_with_missing_subject(ctx)?;
    let resp = put(ctx, &a.digest.clone(), &a)?;
    setup(expect_status(
        &resp,
        &[201],
        "PUT of a manifest with a subject",
    ))?;
    let got = expect_header(&resp, "OCI-Subject", "PUT of a manifest with a subject")?;
    ensure(got == subject.digest, || {
        format!("OCI-Subject {got}, the subject is {}", subject.digest)
    })?;
    // And not for a manifest without one.
    let plain = oci_image(1, 100);
    push_blobs(ctx, &plain)?;
    let resp = put(ctx, "plain", &plain)?;
    expect_status(&resp, &[201], "PUT of a manifest without subject")?;
    ensure(resp.header("OCI-Subject").is_none(), || {
        "a manifest without subject was answered with an OCI-Subject header".to_owned()
    })
}

/// Used by the errors module: PUT of a manifest to the test's repo.
pub(crate) fn put_in_repo(
    ctx: &mut Ctx,
    reference: &str,
    m: &Manifest,
) -> Result<Response, Failure> {
    put(ctx, reference, m)
}

/// Used by the errors module.
pub(crate) fn start_upload(ctx: &mut Ctx) -> Result<Target, Failure> {
    start(ctx).map(|(t, _)| t)
}
