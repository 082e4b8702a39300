//! Content discovery: the referrers API (end-12a, end-12b).

use serde_json::Value;

use super::case;
use super::discovery::next_link;
use crate::ctx::{ensure, expect_header, expect_status, fail, json, Ctx, Failure};
use crate::digest::sha256;
use crate::fixtures::{
    artifact, index, oci_image, push_manifest, random, Manifest, OCI_CONFIG, OCI_EMPTY, OCI_INDEX,
};
use crate::http::{Request, Response};
use crate::TestCase;

pub fn cases() -> Vec<TestCase> {
    vec![
        case!("content-discovery/referrers-no-referrers", ContentDiscovery, Must,
            "end-12a, Listing referrers: a subject with no referrers (or that does not exist) MUST be answered 200 with an empty image index, never 404",
            no_referrers),
        case!("content-discovery/referrers-content-type", ContentDiscovery, Must,
            "end-12a, Listing referrers: the Content-Type MUST be application/vnd.oci.image.index.v1+json",
            content_type),
        case!("content-discovery/referrers-list", ContentDiscovery, Must,
            "end-12a, Listing referrers: every manifest whose subject is <digest> is listed with its mediaType, digest, size, artifactType and annotations",
            list),
        case!("content-discovery/referrers-artifact-type-from-config", ContentDiscovery, Must,
            "end-12a: if a manifest has no artifactType, the descriptor's artifactType MUST be its config's mediaType",
            artifact_type_from_config),
        case!("content-discovery/referrers-index", ContentDiscovery, Must,
            "end-12a: an index with a subject is listed; without artifactType its descriptor MUST omit artifactType",
            index_referrer),
        case!("content-discovery/referrers-filter", ContentDiscovery, Should,
            "end-12b: registries SHOULD support filtering by artifactType, and when they filter MUST answer OCI-Filters-Applied: artifactType",
            filter),
        case!("content-discovery/referrers-pagination", ContentDiscovery, Must,
            "end-12a: a paginated response carries Link: <url>; rel=\"next\"; following the links yields every referrer once",
            pagination),
        case!("content-discovery/referrers-other-repository", ContentDiscovery, Must,
            "end-12a: only manifests in the same <name> namespace are listed",
            other_repository),
        case!("content-discovery/referrers-invalid-digest", ContentDiscovery, Must,
            "end-12a: a request with an invalid <digest> MUST be answered 400",
            invalid_digest),
    ]
}

const SBOM: &str = "application/vnd.example.sbom.v1+json";
const SIG: &str = "application/vnd.example.signature.v1";

fn referrers(ctx: &mut Ctx, repo: &str, digest: &str, query: &str) -> Result<Response, Failure> {
    ctx.get(&format!("/v2/{repo}/referrers/{digest}{query}"))
}

/// The `manifests` of a referrers response, after checking status and shape.
fn manifests_of(resp: &Response, what: &str) -> Result<Vec<Value>, Failure> {
    expect_status(resp, &[200], what)?;
    let v = json(resp, what)?;
    ensure(v.get("schemaVersion") == Some(&Value::from(2)), || {
        format!(
            "{what}: the index has schemaVersion {:?}, expected 2",
            v.get("schemaVersion")
        )
    })?;
    match v.get("manifests") {
        Some(Value::Array(a)) => Ok(a.clone()),
        other => Err(fail(format!(
            "{what}: \"manifests\" is {other:?}, expected an array"
        ))),
    }
}

/// Pushes a subject image to the test's repository.
fn subject(ctx: &mut Ctx) -> Result<Manifest, Failure> {
    let s = oci_image(1, 100);
    let repo = ctx.repo().to_owned();
    push_manifest(ctx, &repo, &s, Some("subject"))?;
    Ok(s)
}

fn push(ctx: &mut Ctx, m: &Manifest) -> Result<(), Failure> {
    let repo = ctx.repo().to_owned();
    push_manifest(ctx, &repo, m, None)
}

/// Finds the descriptor of `m` in `list` and checks it against `m`.
fn find<'a>(list: &'a [Value], m: &Manifest, what: &str) -> Result<&'a Value, Failure> {
    let d = list
        .iter()
        .find(|d| d.get("digest").and_then(Value::as_str) == Some(m.digest.as_str()))
        .ok_or_else(|| fail(format!("{what}: {} is not listed", m.digest)))?;
    let media_type = d.get("mediaType").and_then(Value::as_str);
    ensure(media_type == Some(m.media_type.as_str()), || {
        format!(
            "{what}: mediaType {media_type:?}, expected {:?}",
            m.media_type
        )
    })?;
    let size = d.get("size").and_then(Value::as_u64);
    ensure(size == Some(m.size() as u64), || {
        format!("{what}: size {size:?}, expected {}", m.size())
    })?;
    Ok(d)
}

fn no_referrers(ctx: &mut Ctx) -> Result<(), Failure> {
    let s = subject(ctx)?;
    let repo = ctx.repo().to_owned();
    let resp = referrers(ctx, &repo, &s.digest, "")?;
    let list = manifests_of(&resp, "referrers of a subject without referrers")?;
    ensure(list.is_empty(), || {
        format!("expected no referrers, got {list:?}")
    })?;
    let missing = sha256(&random(16));
    let resp = referrers(ctx, &repo, &missing, "")?;
    let list = manifests_of(&resp, "referrers of a subject that does not exist")?;
    ensure(list.is_empty(), || {
        format!("expected no referrers, got {list:?}")
    })
}

fn content_type(ctx: &mut Ctx) -> Result<(), Failure> {
    let s = subject(ctx)?;
    let a = artifact(Some(SBOM), OCI_EMPTY, Some(&s), &[]);
    push(ctx, &a)?;
    let repo = ctx.repo().to_owned();
    let resp = referrers(ctx, &repo, &s.digest, "")?;
    expect_status(&resp, &[200], "GET referrers")?;
    let ct = expect_header(&resp, "Content-Type", "GET referrers")?;
    ensure(ct == OCI_INDEX, || {
        format!("GET referrers: Content-Type {ct:?}, expected {OCI_INDEX:?}")
    })
}

fn list(ctx: &mut Ctx) -> Result<(), Failure> {
    let s = subject(ctx)?;
    let sbom = artifact(
        Some(SBOM),
        OCI_EMPTY,
        Some(&s),
        &[
            ("org.example.kind", "sbom"),
            ("org.opencontainers.image.created", "2026-01-01T00:00:00Z"),
        ],
    );
    let sig = artifact(
        Some(SIG),
        OCI_EMPTY,
        Some(&s),
        &[("org.example.kind", "signature")],
    );
    let unrelated = artifact(Some(SBOM), OCI_EMPTY, None, &[]);
    for m in [&sbom, &sig, &unrelated] {
        push(ctx, m)?;
    }
    let repo = ctx.repo().to_owned();
    let resp = referrers(ctx, &repo, &s.digest, "")?;
    let list = manifests_of(&resp, "GET referrers")?;
    ensure(list.len() == 2, || {
        format!(
            "GET referrers: {} descriptors, expected 2: {list:?}",
            list.len()
        )
    })?;
    for (m, artifact_type, kind) in [(&sbom, SBOM, "sbom"), (&sig, SIG, "signature")] {
        let d = find(&list, m, "GET referrers")?;
        let at = d.get("artifactType").and_then(Value::as_str);
        ensure(at == Some(artifact_type), || {
            format!("artifactType {at:?}, expected {artifact_type:?}")
        })?;
        let k = d
            .pointer("/annotations/org.example.kind")
            .and_then(Value::as_str);
        ensure(k == Some(kind), || {
            format!("annotation org.example.kind is {k:?}, expected {kind:?}")
        })?;
    }
    let created = find(&list, &sbom, "GET referrers")?
        .pointer("/annotations/org.opencontainers.image.created")
        .and_then(Value::as_str);
    ensure(created == Some("2026-01-01T00:00:00Z"), || {
        format!("every annotation of the manifest is listed; org.opencontainers.image.created is {created:?}")
    })
}

fn artifact_type_from_config(ctx: &mut Ctx) -> Result<(), Failure> {
    let s = subject(ctx)?;
    let custom = "application/vnd.example.config.v1+json";
    let a = artifact(None, custom, Some(&s), &[]);
    let b = artifact(None, OCI_CONFIG, Some(&s), &[]);
    push(ctx, &a)?;
    push(ctx, &b)?;
    let repo = ctx.repo().to_owned();
    let resp = referrers(ctx, &repo, &s.digest, "")?;
    let list = manifests_of(&resp, "GET referrers")?;
    for (m, want) in [(&a, custom), (&b, OCI_CONFIG)] {
        let at = find(&list, m, "GET referrers")?
            .get("artifactType")
            .and_then(Value::as_str);
        ensure(at == Some(want), || {
            format!("artifactType {at:?}, expected the config's mediaType {want:?}")
        })?;
    }
    Ok(())
}

fn index_referrer(ctx: &mut Ctx) -> Result<(), Failure> {
    let s = subject(ctx)?;
    let child = oci_image(1, 50);
    push(ctx, &child)?;
    let mut idx = index(OCI_INDEX, &[(&child, "linux", "amd64")]);
    let mut value: Value = serde_json::from_slice(&idx.bytes).map_err(|e| fail(e.to_string()))?;
    value["subject"] = s.descriptor();
    idx = Manifest::from_json(OCI_INDEX, &value, Vec::new());
    push(ctx, &idx)?;
    let repo = ctx.repo().to_owned();
    let resp = referrers(ctx, &repo, &s.digest, "")?;
    let list = manifests_of(&resp, "GET referrers")?;
    let d = find(&list, &idx, "GET referrers")?;
    ensure(
        d.get("artifactType").is_none_or(|v| v.as_str() == Some("")),
        || {
            format!(
                "an index without artifactType is listed with artifactType {:?}",
                d.get("artifactType")
            )
        },
    )
}

fn filter(ctx: &mut Ctx) -> Result<(), Failure> {
    let s = subject(ctx)?;
    let sbom = artifact(Some(SBOM), OCI_EMPTY, Some(&s), &[]);
    let sig = artifact(Some(SIG), OCI_EMPTY, Some(&s), &[]);
    push(ctx, &sbom)?;
    push(ctx, &sig)?;
    let repo = ctx.repo().to_owned();
    let query = format!("?artifactType={}", crate::http::encode(SBOM));
    let resp = referrers(ctx, &repo, &s.digest, &query)?;
    let list = manifests_of(&resp, "GET referrers?artifactType=")?;
    let applied = resp.header("OCI-Filters-Applied");
    ensure(
        applied.is_some_and(|v| v.split(',').any(|f| f.trim() == "artifactType")),
        || {
            format!("GET referrers?artifactType=: OCI-Filters-Applied is {applied:?}; the registry did not filter")
        },
    )?;
    ensure(list.len() == 1, || {
        format!(
            "filtered list has {} entries, expected 1: {list:?}",
            list.len()
        )
    })?;
    find(&list, &sbom, "GET referrers?artifactType=").map(|_| ())
}

fn pagination(ctx: &mut Ctx) -> Result<(), Failure> {
    let s = subject(ctx)?;
    let mut pushed = Vec::new();
    for i in 0..12 {
        let a = artifact(
            Some(SBOM),
            OCI_EMPTY,
            Some(&s),
            &[("org.example.n", &i.to_string())],
        );
        push(ctx, &a)?;
        pushed.push(a);
    }
    let repo = ctx.repo().to_owned();
    let mut resp = referrers(ctx, &repo, &s.digest, "")?;
    let mut all = manifests_of(&resp, "GET referrers")?;
    let mut pages = 1;
    while let Some(next) = next_link(ctx, &resp)? {
        pages += 1;
        if pages > 20 {
            return Err(fail("the Link headers never end"));
        }
        resp = ctx.send(Request::new("GET", next.clone()))?;
        all.extend(manifests_of(&resp, &format!("GET {next}"))?);
    }
    ensure(all.len() == pushed.len(), || {
        format!(
            "{} descriptors over {pages} page(s), expected {} (each once)",
            all.len(),
            pushed.len()
        )
    })?;
    for a in &pushed {
        find(&all, a, "referrers over all pages")?;
    }
    Ok(())
}

fn other_repository(ctx: &mut Ctx) -> Result<(), Failure> {
    let s = subject(ctx)?;
    let other = ctx.repo_named("other");
    let elsewhere = artifact(Some(SBOM), OCI_EMPTY, Some(&s), &[]);
    push_manifest(ctx, &other, &elsewhere, None)?;
    let here = artifact(Some(SIG), OCI_EMPTY, Some(&s), &[]);
    push(ctx, &here)?;
    let repo = ctx.repo().to_owned();
    let resp = referrers(ctx, &repo, &s.digest, "")?;
    let list = manifests_of(&resp, "GET referrers")?;
    ensure(list.len() == 1, || {
        format!(
            "{} descriptors, expected only the one in this repository: {list:?}",
            list.len()
        )
    })?;
    find(&list, &here, "GET referrers").map(|_| ())
}

fn invalid_digest(ctx: &mut Ctx) -> Result<(), Failure> {
    subject(ctx)?;
    let repo = ctx.repo().to_owned();
    for bad in [
        "sha256:xyz",
        "sha256:ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789",
    ] {
        let resp = referrers(ctx, &repo, bad, "")?;
        expect_status(&resp, &[400], &format!("GET referrers/{bad}"))?;
    }
    Ok(())
}
