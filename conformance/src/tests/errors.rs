//! Error responses: the JSON envelope (Error Codes) and the code for each failure.

use super::case;
use super::push::{put_in_repo, start_upload};
use crate::ctx::{ensure, error_codes, expect_error, expect_status, fail, Ctx, Failure};
use crate::digest::sha256;
use crate::fixtures::{
    descriptor, oci_image, push_blob, random, Manifest, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST,
};
use crate::http::Request;
use crate::TestCase;

pub fn cases() -> Vec<TestCase> {
    vec![
        case!("errors/envelope", Errors, Must,
            "Error Codes: a JSON error body MUST be {\"errors\":[{\"code\",\"message\",\"detail\"}]} with codes from the spec's table",
            envelope),
        case!("errors/blob-upload-unknown", Errors, Must,
            "end-5, end-6, end-13: an upload session the registry does not know is answered 404",
            blob_upload_unknown),
        case!("errors/blob-upload-unknown-code", Errors, Should,
            "Error codes (code-3): an upload that was cancelled is reported as BLOB_UPLOAD_UNKNOWN",
            blob_upload_unknown_code),
        case!("errors/digest-invalid", Errors, Should,
            "end-6, Error codes (code-4): a digest that does not match the content is reported as DIGEST_INVALID (400)",
            digest_invalid),
        case!("errors/digest-malformed", Errors, Must,
            "end-6: a closing PUT whose digest parameter is malformed fails with 400",
            digest_malformed),
        case!("errors/manifest-invalid", Errors, Should,
            "end-7, Error codes (code-6): a manifest that is not valid JSON is refused as MANIFEST_INVALID (400)",
            manifest_invalid),
        case!("errors/manifest-blob-unknown", Errors, May,
            "end-7, Error codes (code-5): a registry MAY refuse a manifest referencing unknown blobs; if it does, with MANIFEST_BLOB_UNKNOWN (400)",
            manifest_blob_unknown),
        case!("errors/name-invalid", Errors, Should,
            "Error codes (code-8): a repository name outside the <name> grammar is refused as NAME_INVALID (400)",
            name_invalid),
        case!("errors/name-unknown", Errors, Should,
            "end-8a, Error codes (code-9): the tags of an unknown repository are answered 404 NAME_UNKNOWN",
            name_unknown),
        case!("errors/manifest-unknown-reference-invalid", Errors, Must,
            "end-3: <reference> MUST be a tag or a digest; anything else is not a manifest (4xx, never a server error)",
            reference_invalid),
    ]
}

/// Fails with "server error" on a 5xx, so malformed input can never pass as handled.
fn client_error(status: u16, what: &str) -> Result<(), Failure> {
    ensure((400..500).contains(&status), || {
        format!("{what}: expected a 4xx status, got {status}")
    })
}

fn envelope(ctx: &mut Ctx) -> Result<(), Failure> {
    let repo = ctx.repo().to_owned();
    push_blob(ctx, &repo, &random(10))?;
    let missing = sha256(&random(16));
    let probes = [
        (
            format!("/v2/{repo}/manifests/no-such-tag"),
            "GET of an unknown manifest",
        ),
        (
            format!("/v2/{repo}/blobs/{missing}"),
            "GET of an unknown blob",
        ),
        (
            format!("/v2/{repo}/blobs/uploads/no-such-session"),
            "GET of an unknown upload",
        ),
    ];
    for (path, what) in probes {
        let resp = ctx.get(&path)?;
        client_error(resp.status, what)?;
        error_codes(&resp).map_err(|e| fail(format!("{what}: {e}")))?;
    }
    Ok(())
}

/// A session URL the registry never handed out, in the shape of a real one.
fn unknown_session(ctx: &mut Ctx) -> Result<crate::http::Target, Failure> {
    let real = start_upload(ctx)?;
    // Replace the last path segment (the session id) with one the registry never made.
    let path = real.path().to_owned();
    let (prefix, _) = path
        .rsplit_once('/')
        .ok_or_else(|| fail("upload Location has no path segments"))?;
    Ok(ctx.target(&format!(
        "{prefix}/{}",
        crate::fixtures::run_id() + "-never-issued"
    )))
}

fn blob_upload_unknown(ctx: &mut Ctx) -> Result<(), Failure> {
    let target = unknown_session(ctx)?;
    let resp = ctx.send(Request::new("GET", target.clone()))?;
    expect_status(&resp, &[404], "GET status of an unknown upload")?;
    let resp = ctx.send(
        Request::new("PATCH", target.clone())
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", "0-9")
            .body(random(10)),
    )?;
    expect_status(&resp, &[404], "PATCH to an unknown upload")?;
    let data = random(10);
    let resp = ctx.send(
        Request::new("PUT", target.with_query("digest", &sha256(&data)))
            .header("Content-Type", "application/octet-stream")
            .body(data),
    )?;
    expect_status(&resp, &[404], "PUT to an unknown upload")
}

fn blob_upload_unknown_code(ctx: &mut Ctx) -> Result<(), Failure> {
    // A session that existed and was cancelled: the URL is exactly one the registry
    // issued, so only the session's state can make it unknown.
    let target = start_upload(ctx)?;
    let resp = ctx.send(Request::new("DELETE", target.clone()))?;
    expect_status(&resp, &[200, 202, 204], "DELETE of the upload session")?;
    let resp = ctx.send(Request::new("GET", target.clone()))?;
    expect_error(
        &resp,
        &[404],
        "BLOB_UPLOAD_UNKNOWN",
        "GET status of a cancelled upload",
    )?;
    let resp = ctx.send(
        Request::new("PATCH", target)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", "0-9")
            .body(random(10)),
    )?;
    expect_error(
        &resp,
        &[404],
        "BLOB_UPLOAD_UNKNOWN",
        "PATCH to a cancelled upload",
    )
}

fn digest_invalid(ctx: &mut Ctx) -> Result<(), Failure> {
    let target = start_upload(ctx)?;
    let data = random(1000);
    let resp = ctx.send(
        Request::new("PUT", target.with_query("digest", &sha256(&random(8))))
            .header("Content-Type", "application/octet-stream")
            .body(data),
    )?;
    expect_error(
        &resp,
        &[400],
        "DIGEST_INVALID",
        "PUT with a digest that does not match",
    )
}

fn digest_malformed(ctx: &mut Ctx) -> Result<(), Failure> {
    for bad in ["sha256:not-hex", "sha256:abc", "nodigest", "sha256:"] {
        let target = start_upload(ctx)?;
        let resp = ctx.send(
            Request::new("PUT", target.with_query("digest", bad))
                .header("Content-Type", "application/octet-stream")
                .body(random(100)),
        )?;
        expect_status(&resp, &[400], &format!("PUT with digest={bad:?}"))?;
    }
    Ok(())
}

fn manifest_invalid(ctx: &mut Ctx) -> Result<(), Failure> {
    let m = Manifest {
        media_type: OCI_MANIFEST.to_owned(),
        bytes: b"{\"schemaVersion\": 2, \"config\": ".to_vec(),
        digest: String::new(),
        blobs: Vec::new(),
    };
    let resp = put_in_repo(ctx, "broken", &m)?;
    expect_error(
        &resp,
        &[400],
        "MANIFEST_INVALID",
        "PUT of a truncated JSON manifest",
    )?;
    let req = ctx
        .request("HEAD", &format!("/v2/{}/manifests/broken", ctx.repo()))
        .header("Accept", OCI_MANIFEST);
    let resp = ctx.send(req)?;
    expect_status(&resp, &[404], "HEAD of the refused manifest's tag")
}

fn manifest_blob_unknown(ctx: &mut Ctx) -> Result<(), Failure> {
    let config = random(100);
    let layer = random(100);
    let repo = ctx.repo().to_owned();
    // The config is pushed, the layer is not.
    push_blob(ctx, &repo, &config)?;
    let value = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": [descriptor(OCI_LAYER, &layer)],
    });
    let m = Manifest::from_json(OCI_MANIFEST, &value, Vec::new());
    let resp = put_in_repo(ctx, "dangling", &m)?;
    if resp.status == 201 {
        return Ok(());
    }
    expect_error(
        &resp,
        &[400],
        "MANIFEST_BLOB_UNKNOWN",
        "PUT of a manifest referencing an unknown layer",
    )
}

fn name_invalid(ctx: &mut Ctx) -> Result<(), Failure> {
    let base = ctx.repo().to_owned();
    for bad in [
        format!("{base}/UPPER"),
        format!("{base}//empty"),
        format!("{base}/-dash"),
    ] {
        let req = ctx
            .request("POST", &format!("/v2/{bad}/blobs/uploads/"))
            .body(Vec::new());
        let resp = ctx.send(req)?;
        expect_error(
            &resp,
            &[400],
            "NAME_INVALID",
            &format!("POST upload to {bad:?}"),
        )?;
    }
    Ok(())
}

fn name_unknown(ctx: &mut Ctx) -> Result<(), Failure> {
    let repo = ctx.repo_named("never-pushed");
    let resp = ctx.get(&format!("/v2/{repo}/tags/list"))?;
    expect_error(
        &resp,
        &[404],
        "NAME_UNKNOWN",
        "GET tags/list of an unknown repository",
    )
}

fn reference_invalid(ctx: &mut Ctx) -> Result<(), Failure> {
    let m = oci_image(1, 10);
    let repo = ctx.repo().to_owned();
    crate::fixtures::push_manifest(ctx, &repo, &m, Some("v1"))?;
    for bad in [
        "-leading-dash",
        "sha256:zz",
        &"t".repeat(129),
        "has%20space",
    ] {
        let resp = ctx.get(&format!("/v2/{repo}/manifests/{bad}"))?;
        client_error(resp.status, &format!("GET manifests/{bad}"))?;
    }
    Ok(())
}
