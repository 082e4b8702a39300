//! Content management: deleting tags, manifests and blobs (end-9, end-10).
//!
//! Deletion is optional: a registry that answers 400 or 405 has it disabled, and the
//! test is skipped with that reason. Anything else must behave as the spec says.

use super::case;
use crate::ctx::{ensure, expect_status, skip, Ctx, Failure};
use crate::digest::sha256;
use crate::fixtures::{
    artifact, oci_image, push_blob, push_manifest, random, same_bytes, Manifest, ACCEPT_ALL,
    OCI_EMPTY,
};
use crate::http::Response;
use crate::TestCase;

pub fn cases() -> Vec<TestCase> {
    vec![
        case!("content-management/delete-tag", ContentManagement, Must,
            "end-9, Deleting tags: DELETE /v2/<name>/manifests/<tag> MUST answer 202 (400/405 when disabled); the tag is gone, the manifest stays",
            delete_tag),
        case!("content-management/delete-manifest", ContentManagement, Must,
            "end-9, Deleting manifests: DELETE /v2/<name>/manifests/<digest> MUST answer 202; then the digest and every tag pointing to it answer 404",
            delete_manifest),
        case!("content-management/delete-manifest-unknown", ContentManagement, Must,
            "end-9, Deleting manifests: a manifest that does not exist is answered 404",
            delete_manifest_unknown),
        case!("content-management/delete-manifest-removes-referrer", ContentManagement, Should,
            "end-9 with end-12a: a deleted manifest with a subject is no longer listed as a referrer",
            delete_manifest_removes_referrer),
        case!("content-management/delete-blob", ContentManagement, Must,
            "end-10, Deleting blobs: DELETE /v2/<name>/blobs/<digest> MUST answer 202, after which the blob is not found",
            delete_blob),
        case!("content-management/delete-blob-unknown", ContentManagement, Must,
            "end-10, Deleting blobs: if the blob is not found, 404 MUST be returned",
            delete_blob_unknown),
    ]
}

/// 400 or 405: deletion disabled, which the spec allows.
fn disabled(resp: &Response, what: &str) -> Result<(), Failure> {
    if matches!(resp.status, 400 | 405) {
        return Err(skip(format!(
            "{what} answered {}: deletion is disabled",
            resp.status
        )));
    }
    Ok(())
}

fn get_manifest(ctx: &mut Ctx, reference: &str) -> Result<Response, Failure> {
    let req = ctx
        .request("GET", &format!("/v2/{}/manifests/{reference}", ctx.repo()))
        .header("Accept", ACCEPT_ALL);
    ctx.send(req)
}

fn pushed(ctx: &mut Ctx, tags: &[&str]) -> Result<Manifest, Failure> {
    let m = oci_image(1, 500);
    let repo = ctx.repo().to_owned();
    push_manifest(ctx, &repo, &m, Some(tags[0]))?;
    for t in &tags[1..] {
        push_manifest(ctx, &repo, &m, Some(t))?;
    }
    Ok(m)
}

fn delete_tag(ctx: &mut Ctx) -> Result<(), Failure> {
    let m = pushed(ctx, &["doomed", "kept"])?;
    let resp = ctx.delete(&format!("/v2/{}/manifests/doomed", ctx.repo()))?;
    disabled(&resp, "DELETE of a tag")?;
    expect_status(&resp, &[202], "DELETE of a tag")?;
    let resp = get_manifest(ctx, "doomed")?;
    expect_status(&resp, &[404], "GET of the deleted tag")?;
    let resp = get_manifest(ctx, "kept")?;
    expect_status(&resp, &[200], "GET of another tag of the same manifest")?;
    let resp = get_manifest(ctx, &m.digest)?;
    expect_status(
        &resp,
        &[200],
        "GET of the manifest by digest after deleting a tag",
    )?;
    same_bytes(
        &resp.body,
        &m.bytes,
        "manifest after deleting one of its tags",
    )
}

fn delete_manifest(ctx: &mut Ctx) -> Result<(), Failure> {
    let m = pushed(ctx, &["v1"])?;
    let resp = ctx.delete(&format!("/v2/{}/manifests/{}", ctx.repo(), m.digest))?;
    disabled(&resp, "DELETE of a manifest")?;
    expect_status(&resp, &[202], "DELETE of a manifest")?;
    let resp = get_manifest(ctx, &m.digest)?;
    expect_status(&resp, &[404], "GET of the deleted manifest by digest")?;
    let resp = ctx.head(&format!("/v2/{}/manifests/{}", ctx.repo(), m.digest))?;
    expect_status(&resp, &[404], "HEAD of the deleted manifest by digest")?;
    let resp = get_manifest(ctx, "v1")?;
    expect_status(
        &resp,
        &[404],
        "GET of a tag that pointed to the deleted manifest",
    )
}

fn delete_manifest_unknown(ctx: &mut Ctx) -> Result<(), Failure> {
    pushed(ctx, &["v1"])?;
    let missing = sha256(&random(16));
    let resp = ctx.delete(&format!("/v2/{}/manifests/{missing}", ctx.repo()))?;
    disabled(&resp, "DELETE of an unknown manifest")?;
    expect_status(&resp, &[404], "DELETE of an unknown manifest")
}

fn delete_manifest_removes_referrer(ctx: &mut Ctx) -> Result<(), Failure> {
    let s = pushed(ctx, &["subject"])?;
    let a = artifact(
        Some("application/vnd.example.sbom"),
        OCI_EMPTY,
        Some(&s),
        &[],
    );
    let repo = ctx.repo().to_owned();
    push_manifest(ctx, &repo, &a, None)?;
    let resp = ctx.delete(&format!("/v2/{repo}/manifests/{}", a.digest))?;
    disabled(&resp, "DELETE of a manifest")?;
    expect_status(&resp, &[202], "DELETE of the referrer")?;
    let resp = ctx.get(&format!("/v2/{repo}/referrers/{}", s.digest))?;
    expect_status(&resp, &[200], "GET referrers after the delete")?;
    let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
    let listed = v["manifests"].as_array().is_some_and(|l| {
        l.iter()
            .any(|d| d["digest"].as_str() == Some(a.digest.as_str()))
    });
    ensure(!listed, || {
        "the deleted manifest is still listed as a referrer".to_owned()
    })
}

fn delete_blob(ctx: &mut Ctx) -> Result<(), Failure> {
    let data = random(3000);
    let repo = ctx.repo().to_owned();
    let digest = push_blob(ctx, &repo, &data)?;
    let resp = ctx.delete(&format!("/v2/{repo}/blobs/{digest}"))?;
    disabled(&resp, "DELETE of a blob")?;
    expect_status(&resp, &[202], "DELETE of a blob")?;
    let resp = ctx.get(&format!("/v2/{repo}/blobs/{digest}"))?;
    expect_status(&resp, &[404], "GET of the deleted blob")?;
    let resp = ctx.head(&format!("/v2/{repo}/blobs/{digest}"))?;
    expect_status(&resp, &[404], "HEAD of the deleted blob")
}

fn delete_blob_unknown(ctx: &mut Ctx) -> Result<(), Failure> {
    let repo = ctx.repo().to_owned();
    push_blob(ctx, &repo, &random(10))?;
    let missing = sha256(&random(16));
    let resp = ctx.delete(&format!("/v2/{repo}/blobs/{missing}"))?;
    disabled(&resp, "DELETE of an unknown blob")?;
    expect_status(&resp, &[404], "DELETE of an unknown blob")
}
