//! Manifests (OCI and Docker types), tags with pagination, referrers, deletes and the
//! catalog, over HTTP against the real binary.

#[path = "http_util.rs"]
mod util;

use util::{
    error_code, header, random_bytes, sha256, simple_image, Registry, DOCKER_CONFIG, DOCKER_LAYER,
    DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST,
};

/// GET by `reference` returns exactly `body` with `media_type`; HEAD agrees.
async fn assert_manifest(
    reg: &Registry,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) {
    let digest = sha256(body);
    let r = reg
        .http
        .get(reg.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("accept", format!("{media_type}, {OCI_INDEX}"))
        .send()
        .await
        .expect("GET manifest");
    assert_eq!(r.status(), 200, "{repo}:{reference}");
    assert_eq!(header(&r, "content-type"), media_type);
    assert_eq!(header(&r, "docker-content-digest"), digest);
    assert_eq!(r.bytes().await.expect("body").as_ref(), body, "byte-exact");
    let r = reg.head(&format!("/v2/{repo}/manifests/{reference}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), media_type);
    assert_eq!(header(&r, "content-length"), body.len().to_string());
    assert_eq!(header(&r, "docker-content-digest"), digest);
}

#[tokio::test]
async fn oci_manifest_round_trips_by_tag_and_digest() {
    let reg = Registry::start();
    // Unusual but valid formatting must survive byte for byte.
    let m = simple_image(&reg, "app", 1)
        .await
        .replace(",\"layers\"", " ,\n  \"layers\"");
    let digest = sha256(m.as_bytes());
    let r = reg
        .put_manifest("app", "v1", OCI_MANIFEST, m.as_bytes())
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        header(&r, "location"),
        format!("/v2/app/manifests/{digest}")
    );
    assert_eq!(header(&r, "docker-content-digest"), digest);
    assert!(r.headers().get("oci-subject").is_none());
    assert_manifest(&reg, "app", "v1", OCI_MANIFEST, m.as_bytes()).await;
    assert_manifest(&reg, "app", &digest, OCI_MANIFEST, m.as_bytes()).await;
    assert_eq!(reg.tags("app").await, Some(vec!["v1".to_string()]));
}

#[tokio::test]
async fn push_by_digest_then_tag() {
    let reg = Registry::start();
    let m = simple_image(&reg, "app", 2).await;
    let digest = sha256(m.as_bytes());
    let r = reg
        .put_manifest("app", &digest, OCI_MANIFEST, m.as_bytes())
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "docker-content-digest"), digest);
    assert_eq!(reg.tags("app").await, Some(vec![]));
    let r = reg
        .put_manifest("app", "latest", OCI_MANIFEST, m.as_bytes())
        .await;
    assert_eq!(r.status(), 201);
    assert_manifest(&reg, "app", "latest", OCI_MANIFEST, m.as_bytes()).await;
}

/// The media type may come from the body alone when Content-Type is generic.
#[tokio::test]
async fn media_type_from_the_body_when_content_type_is_generic() {
    let reg = Registry::start();
    let m = simple_image(&reg, "app", 3).await;
    let r = reg
        .put_manifest("app", "v1", "application/json", m.as_bytes())
        .await;
    assert_eq!(r.status(), 201);
    assert_manifest(&reg, "app", "v1", OCI_MANIFEST, m.as_bytes()).await;
}

/// The stored type is returned even when Accept does not list it (no conversion).
#[tokio::test]
async fn accept_not_listing_the_type_still_gets_the_manifest() {
    let reg = Registry::start();
    let m = simple_image(&reg, "app", 4).await;
    assert_eq!(
        reg.put_manifest("app", "v1", OCI_MANIFEST, m.as_bytes())
            .await
            .status(),
        201
    );
    let r = reg
        .http
        .get(reg.url("/v2/app/manifests/v1"))
        .header("accept", DOCKER_MANIFEST)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), OCI_MANIFEST);
}

#[tokio::test]
async fn docker_manifest_and_manifest_list_round_trip() {
    let reg = Registry::start();
    let mut children = Vec::new();
    for (arch, seed) in [("amd64", 5u64), ("arm64", 6)] {
        let config = format!(r#"{{"architecture":"{arch}","os":"linux"}}"#);
        let layer = random_bytes(4096, seed);
        let cd = reg.push_blob("docker/app", config.as_bytes()).await;
        let ld = reg.push_blob("docker/app", &layer).await;
        let m = format!(
            r#"{{
   "schemaVersion": 2,
   "mediaType": "{DOCKER_MANIFEST}",
   "config": {{"mediaType": "{DOCKER_CONFIG}", "size": {}, "digest": "{cd}"}},
   "layers": [{{"mediaType": "{DOCKER_LAYER}", "size": {}, "digest": "{ld}"}}]
}}"#,
            config.len(),
            layer.len()
        );
        let digest = sha256(m.as_bytes());
        let r = reg
            .put_manifest("docker/app", &digest, DOCKER_MANIFEST, m.as_bytes())
            .await;
        assert_eq!(r.status(), 201, "{arch}");
        assert_manifest(&reg, "docker/app", &digest, DOCKER_MANIFEST, m.as_bytes()).await;
        children.push((arch, digest, m.len()));
    }
    let entries: Vec<String> = children
        .iter()
        .map(|(arch, d, size)| {
            format!(
                r#"{{"mediaType":"{DOCKER_MANIFEST}","size":{size},"digest":"{d}","platform":{{"architecture":"{arch}","os":"linux"}}}}"#
            )
        })
        .collect();
    let list = format!(
        r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[{}]}}"#,
        entries.join(",")
    );
    let r = reg
        .put_manifest("docker/app", "multi", DOCKER_LIST, list.as_bytes())
        .await;
    assert_eq!(r.status(), 201);
    assert_manifest(&reg, "docker/app", "multi", DOCKER_LIST, list.as_bytes()).await;
}

#[tokio::test]
async fn oci_index_round_trips() {
    let reg = Registry::start();
    let mut entries = Vec::new();
    for seed in [7u64, 8] {
        let m = simple_image(&reg, "multi", seed).await;
        let d = sha256(m.as_bytes());
        assert_eq!(
            reg.put_manifest("multi", &d, OCI_MANIFEST, m.as_bytes())
                .await
                .status(),
            201
        );
        entries.push(format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{d}","size":{}}}"#,
            m.len()
        ));
    }
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}],"annotations":{{"org.opencontainers.image.ref.name":"x"}}}}"#,
        entries.join(",")
    );
    let r = reg
        .put_manifest("multi", "latest", OCI_INDEX, index.as_bytes())
        .await;
    assert_eq!(r.status(), 201);
    assert_manifest(&reg, "multi", "latest", OCI_INDEX, index.as_bytes()).await;
    assert_manifest(
        &reg,
        "multi",
        &sha256(index.as_bytes()),
        OCI_INDEX,
        index.as_bytes(),
    )
    .await;
}

#[tokio::test]
async fn unknown_manifest_and_repository() {
    let reg = Registry::start();
    let r = reg.get("/v2/nothing/manifests/latest").await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    let r = reg
        .get(&format!("/v2/nothing/manifests/{}", sha256(b"x")))
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    let r = reg.head("/v2/nothing/manifests/latest").await;
    assert_eq!(r.status(), 404);
    let r = reg.get("/v2/nothing/tags/list").await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");
}

/// Follows `Link` headers from `first`, returning every page's items.
async fn paginate(reg: &Registry, first: &str, key: &str) -> (Vec<Vec<String>>, Vec<String>) {
    let mut pages = Vec::new();
    let mut links = Vec::new();
    let mut next = Some(first.to_string());
    while let Some(path) = next.take() {
        assert!(pages.len() < 50, "pagination does not end");
        let r = reg.get(&path).await;
        assert_eq!(r.status(), 200, "{path}");
        if let Some(link) = r.headers().get("link") {
            let link = link.to_str().expect("link text").to_string();
            let target = link
                .strip_prefix('<')
                .and_then(|l| l.split_once(">; rel=\"next\""))
                .map(|(t, _)| t.to_string())
                .unwrap_or_else(|| panic!("malformed Link {link:?}"));
            links.push(link);
            next = Some(target);
        }
        let v: serde_json::Value = util::json(r).await;
        let items = v[key]
            .as_array()
            .expect("items")
            .iter()
            .map(|t| t.as_str().expect("string").to_string())
            .collect();
        pages.push(items);
    }
    (pages, links)
}

#[tokio::test]
async fn tags_list_paginates_with_link() {
    let reg = Registry::start();
    let m = simple_image(&reg, "paged", 9).await;
    let mut tags: Vec<String> = (0..7).map(|i| format!("v{i}")).collect();
    tags.extend([
        "Latest".to_string(),
        "_under".to_string(),
        "a.b-c".to_string(),
    ]);
    for t in &tags {
        assert_eq!(
            reg.put_manifest("paged", t, OCI_MANIFEST, m.as_bytes())
                .await
                .status(),
            201,
            "{t}"
        );
    }
    tags.sort(); // lexical (byte) order
    let all = reg.tags("paged").await.expect("tags");
    assert_eq!(all, tags);

    let (pages, links) = paginate(&reg, "/v2/paged/tags/list?n=3", "tags").await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![3, 3, 3, 1]
    );
    assert_eq!(pages.concat(), tags);
    assert_eq!(links.len(), 3);
    assert_eq!(
        links[0],
        format!("</v2/paged/tags/list?n=3&last={}>; rel=\"next\"", tags[2])
    );

    // n=0: empty, no Link.
    let r = reg.get("/v2/paged/tags/list?n=0").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("link").is_none());
    let v: serde_json::Value = util::json(r).await;
    assert_eq!(v["name"], "paged");
    assert_eq!(v["tags"].as_array().map(Vec::len), Some(0));

    // `last` is exclusive; without `n`, everything after it.
    let r = reg
        .get(&format!("/v2/paged/tags/list?last={}", tags[7]))
        .await;
    assert!(r.headers().get("link").is_none());
    let v: serde_json::Value = util::json(r).await;
    assert_eq!(v["tags"], serde_json::json!(tags[8..]));

    // An exact final page has no Link.
    let r = reg
        .get(&format!("/v2/paged/tags/list?n=2&last={}", tags[7]))
        .await;
    assert!(r.headers().get("link").is_none());
}

/// An artifact manifest (empty config) referring to `subject`.
async fn artifact(
    reg: &Registry,
    repo: &str,
    subject: (&str, usize),
    artifact_type: &str,
    note: &str,
) -> String {
    let empty = reg.push_blob(repo, b"{}").await;
    let layer = reg.push_blob(repo, note.as_bytes()).await;
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"{artifact_type}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[{{"mediaType":"text/plain","digest":"{layer}","size":{}}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{}}},"annotations":{{"note":"{note}"}}}}"#,
        note.len(),
        subject.0,
        subject.1
    )
}

#[tokio::test]
async fn referrers_with_artifact_type_filter_and_oci_subject() {
    let reg = Registry::start();
    let image = simple_image(&reg, "app", 10).await;
    let subject = sha256(image.as_bytes());
    assert_eq!(
        reg.put_manifest("app", "v1", OCI_MANIFEST, image.as_bytes())
            .await
            .status(),
        201
    );

    // Nothing refers to it yet: 200 with an empty index, never 404.
    let r = reg.get(&format!("/v2/app/referrers/{subject}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    let v: serde_json::Value = util::json(r).await;
    assert_eq!(v["schemaVersion"], 2);
    assert_eq!(v["mediaType"], OCI_INDEX);
    assert_eq!(v["manifests"], serde_json::json!([]));

    let sig = artifact(
        &reg,
        "app",
        (&subject, image.len()),
        "application/vnd.example.signature",
        "sig",
    )
    .await;
    let sbom = artifact(
        &reg,
        "app",
        (&subject, image.len()),
        "application/vnd.example.sbom",
        "sbom",
    )
    .await;
    for m in [&sig, &sbom] {
        let d = sha256(m.as_bytes());
        let r = reg
            .put_manifest("app", &d, OCI_MANIFEST, m.as_bytes())
            .await;
        assert_eq!(r.status(), 201);
        assert_eq!(header(&r, "oci-subject"), subject);
    }

    let r = reg.get(&format!("/v2/app/referrers/{subject}")).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("oci-filters-applied").is_none());
    let v: serde_json::Value = util::json(r).await;
    let mut found: Vec<(String, String, String)> = v["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|d| {
            assert_eq!(d["mediaType"], OCI_MANIFEST);
            (
                d["digest"].as_str().expect("digest").to_string(),
                d["artifactType"]
                    .as_str()
                    .expect("artifactType")
                    .to_string(),
                d["annotations"]["note"]
                    .as_str()
                    .expect("annotation")
                    .to_string(),
            )
        })
        .collect();
    found.sort();
    let mut expected = vec![
        (
            sha256(sig.as_bytes()),
            "application/vnd.example.signature".to_string(),
            "sig".to_string(),
        ),
        (
            sha256(sbom.as_bytes()),
            "application/vnd.example.sbom".to_string(),
            "sbom".to_string(),
        ),
    ];
    expected.sort();
    assert_eq!(found, expected);
    for d in v["manifests"].as_array().expect("manifests") {
        let digest = d["digest"].as_str().expect("digest");
        let size = d["size"].as_u64().expect("size");
        let body = if digest == sha256(sig.as_bytes()) {
            &sig
        } else {
            &sbom
        };
        assert_eq!(size, body.len() as u64);
    }

    // Filtered (the media type percent-encoded, as clients send it).
    let r = reg
        .get(&format!(
            "/v2/app/referrers/{subject}?artifactType=application%2Fvnd.example.sbom"
        ))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "oci-filters-applied"), "artifactType");
    let v: serde_json::Value = util::json(r).await;
    let m = v["manifests"].as_array().expect("manifests");
    assert_eq!(m.len(), 1);
    assert_eq!(m[0]["digest"], sha256(sbom.as_bytes()));

    // Deleting a referrer removes it from the list.
    let r = reg
        .delete(&format!("/v2/app/manifests/{}", sha256(sig.as_bytes())))
        .await;
    assert_eq!(r.status(), 202);
    let r = reg.get(&format!("/v2/app/referrers/{subject}")).await;
    let v: serde_json::Value = util::json(r).await;
    assert_eq!(v["manifests"].as_array().map(Vec::len), Some(1));
}

/// A manifest whose subject does not exist (yet) must be accepted.
#[tokio::test]
async fn subject_need_not_exist() {
    let reg = Registry::start();
    let missing = sha256(b"image pushed later");
    let m = artifact(
        &reg,
        "app",
        (&missing, 123),
        "application/vnd.example.signature",
        "early",
    )
    .await;
    let r = reg
        .put_manifest("app", &sha256(m.as_bytes()), OCI_MANIFEST, m.as_bytes())
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "oci-subject"), missing);
    let r = reg.get(&format!("/v2/app/referrers/{missing}")).await;
    let v: serde_json::Value = util::json(r).await;
    assert_eq!(v["manifests"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn delete_tag_then_manifest() {
    let reg = Registry::start();
    let m = simple_image(&reg, "app", 11).await;
    let digest = sha256(m.as_bytes());
    for t in ["a", "b"] {
        assert_eq!(
            reg.put_manifest("app", t, OCI_MANIFEST, m.as_bytes())
                .await
                .status(),
            201
        );
    }
    // By tag: only that tag goes.
    let r = reg.delete("/v2/app/manifests/a").await;
    assert_eq!(r.status(), 202);
    assert_eq!(reg.get("/v2/app/manifests/a").await.status(), 404);
    assert_eq!(reg.tags("app").await, Some(vec!["b".to_string()]));
    assert_manifest(&reg, "app", &digest, OCI_MANIFEST, m.as_bytes()).await;
    let r = reg.delete("/v2/app/manifests/a").await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");

    // By digest: the manifest and every tag pointing at it.
    let r = reg.delete(&format!("/v2/app/manifests/{digest}")).await;
    assert_eq!(r.status(), 202);
    let r = reg.get(&format!("/v2/app/manifests/{digest}")).await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    assert_eq!(reg.get("/v2/app/manifests/b").await.status(), 404);
    assert_eq!(reg.tags("app").await, Some(vec![]));
    let r = reg.delete(&format!("/v2/app/manifests/{digest}")).await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn catalog_paginates_with_link() {
    let reg = Registry::start();
    let mut repos = vec!["zeta", "alpha", "org/team/app", "org/app", "beta", "m"];
    for r in &repos {
        reg.push_blob(r, r.as_bytes()).await;
    }
    repos.sort();
    let expected: Vec<String> = repos.iter().map(|s| s.to_string()).collect();
    assert_eq!(reg.catalog().await, expected);

    let (pages, links) = paginate(&reg, "/v2/_catalog?n=4", "repositories").await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 2]);
    assert_eq!(pages.concat(), expected);
    assert_eq!(links.len(), 1);
    // The `last` value is percent-encoded ('/' in names).
    assert!(
        links[0].starts_with("</v2/_catalog?n=4&last="),
        "{}",
        links[0]
    );

    let r = reg.get("/v2/_catalog?n=0").await;
    assert!(r.headers().get("link").is_none());
    let v: serde_json::Value = util::json(r).await;
    assert_eq!(v["repositories"], serde_json::json!([]));
}
