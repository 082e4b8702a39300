//! Issue 3 acceptance 6: bad input, one test per case. Each asserts the spec's error
//! code and that nothing was stored (the blob or manifest is still unknown, the tag
//! list and the catalog unchanged).

#[path = "http_util.rs"]
mod util;

use util::{
    error_code, error_code_of, header, random_bytes, sha256, simple_image, with_query, Registry,
    OCI_MANIFEST,
};

/// Pushes `data` monolithically to `repo_path` (a raw path segment, possibly invalid)
/// and returns the response.
async fn post_blob(reg: &Registry, repo_path: &str, data: &[u8]) -> reqwest::Response {
    reg.http
        .post(reg.url(&format!(
            "/v2/{repo_path}/blobs/uploads/?digest={}",
            sha256(data)
        )))
        .body(data.to_vec())
        .send()
        .await
        .expect("POST")
}

async fn assert_nothing_stored(reg: &Registry, data: &[u8]) {
    assert!(reg.catalog().await.is_empty(), "the catalog is still empty");
    // Under any spelling of the name that would have been valid.
    for repo in ["upper", "a/b", "a", "b", "ab"] {
        assert_eq!(reg.blob_status(repo, &sha256(data)).await, 404);
    }
}

#[tokio::test]
async fn repository_name_with_upper_case() {
    let reg = Registry::start();
    let data = b"upper".to_vec();
    let r = post_blob(&reg, "Upper", &data).await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "NAME_INVALID");
    let r = reg.get("/v2/Upper/tags/list").await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "NAME_INVALID");
    assert_nothing_stored(&reg, &data).await;
}

#[tokio::test]
async fn repository_name_with_dot_dot() {
    let reg = Registry::start();
    let data = b"dotdot".to_vec();
    let digest = sha256(&data);
    // A `..` segment, sent raw: HTTP client libraries resolve it before sending.
    let (status, body) = reg.raw(&format!(
        "POST /v2/a/../b/blobs/uploads/?digest={digest} HTTP/1.1\r\nContent-Length: 0"
    ));
    assert_eq!(status, 400);
    assert_eq!(error_code_of(&body), "NAME_INVALID");
    let (status, body) = reg.raw("GET /v2/../tags/list HTTP/1.1");
    assert_eq!(status, 400);
    assert_eq!(error_code_of(&body), "NAME_INVALID");
    // `..` inside a component.
    let r = post_blob(&reg, "a..b", &data).await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "NAME_INVALID");
    assert_nothing_stored(&reg, &data).await;
}

#[tokio::test]
async fn repository_name_with_empty_components() {
    let reg = Registry::start();
    let data = b"empty components".to_vec();
    let digest = sha256(&data);
    for path in ["a//b", "a/", "/a"] {
        let (status, body) = reg.raw(&format!(
            "POST /v2/{path}/blobs/uploads/?digest={digest} HTTP/1.1\r\nContent-Length: 0\r\n"
        ));
        assert_eq!(status, 400, "{path}");
        assert_eq!(error_code_of(&body), "NAME_INVALID", "{path}");
    }
    let (status, body) = reg.raw("GET /v2//tags/list HTTP/1.1");
    assert_eq!(status, 400);
    assert_eq!(error_code_of(&body), "NAME_INVALID");
    assert_nothing_stored(&reg, &data).await;
}

#[tokio::test]
async fn repository_name_over_255_characters() {
    let reg = Registry::start();
    let data = b"long name".to_vec();
    // 256 characters of otherwise valid components.
    let long = format!("{}/{}", "a".repeat(200), "b".repeat(55));
    assert_eq!(long.len(), 256);
    let r = post_blob(&reg, &long, &data).await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "NAME_INVALID");
    // 255 is fine.
    let ok = &long[..255];
    let r = reg.get(&format!("/v2/{ok}/tags/list")).await;
    assert_eq!(r.status(), 404, "a valid but unknown name");
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");
    assert_nothing_stored(&reg, &data).await;
}

#[tokio::test]
async fn malformed_digests() {
    let reg = Registry::start();
    let data = b"malformed digest".to_vec();
    let bad = [
        "sha256:abc",
        "sha256:",
        "sha256",
        "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        "sha256:zzb0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
    ];
    for d in bad {
        // In a path: 400, never 500.
        for path in [format!("/v2/r/blobs/{d}"), format!("/v2/r/referrers/{d}")] {
            let r = reg.get(&path).await;
            assert_eq!(r.status(), 400, "{path}");
            assert_eq!(error_code(r).await, "DIGEST_INVALID", "{path}");
        }
        // As a monolithic push's digest.
        let r = reg
            .http
            .post(reg.url(&format!("/v2/r/blobs/uploads/?digest={d}")))
            .body(data.clone())
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status(), 400, "{d}");
        assert_eq!(error_code(r).await, "DIGEST_INVALID");
        // As a mount digest.
        let r = reg
            .http
            .post(reg.url(&format!("/v2/r/blobs/uploads/?mount={d}&from=x")))
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status(), 400, "{d}");
        assert_eq!(error_code(r).await, "DIGEST_INVALID");
    }
    // A manifest reference with a colon must be a digest.
    let r = reg.get("/v2/r/manifests/sha256:nothex").await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    assert_nothing_stored(&reg, &data).await;
}

#[tokio::test]
async fn digest_not_matching_the_body_monolithic() {
    let reg = Registry::start();
    let data = random_bytes(10_000, 1);
    let claimed = sha256(b"something else");
    let r = reg
        .http
        .post(reg.url(&format!("/v2/r/blobs/uploads/?digest={claimed}")))
        .body(data.clone())
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    assert_eq!(reg.blob_status("r", &claimed).await, 404);
    assert_eq!(reg.blob_status("r", &sha256(&data)).await, 404);
}

#[tokio::test]
async fn digest_not_matching_the_body_chunked() {
    let reg = Registry::start();
    let data = random_bytes(10_000, 2);
    let claimed = sha256(b"something else");
    let location = reg.start_upload("r").await;
    let r = reg
        .http
        .patch(reg.url(&location))
        .body(data.clone())
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status(), 202);
    let location = header(&r, "location");
    let r = reg
        .http
        .put(reg.url(&with_query(&location, &format!("digest={claimed}"))))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    assert_eq!(reg.blob_status("r", &claimed).await, 404);
    assert_eq!(reg.blob_status("r", &sha256(&data)).await, 404);
}

#[tokio::test]
async fn put_without_digest_is_digest_invalid() {
    let reg = Registry::start();
    let location = reg.start_upload("r").await;
    let r = reg
        .http
        .put(reg.url(&location))
        .body(b"abc".to_vec())
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    assert_eq!(reg.blob_status("r", &sha256(b"abc")).await, 404);
}

/// PATCHes `data[start..=end]` with a Content-Range.
async fn patch_range(
    reg: &Registry,
    location: &str,
    data: &[u8],
    start: usize,
    end: usize,
) -> reqwest::Response {
    reg.http
        .patch(reg.url(location))
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("{start}-{end}"))
        .body(data[start..=end].to_vec())
        .send()
        .await
        .expect("PATCH")
}

/// After a refused chunk the session is where it was: completing it correctly yields
/// exactly the good bytes, so nothing of the refused chunk was stored.
async fn assert_session_intact(reg: &Registry, location: &str, data: &[u8], good: usize) {
    let s = reg.get(location).await;
    assert_eq!(s.status(), 204);
    assert_eq!(header(&s, "range"), format!("0-{}", good - 1));
    let r = patch_range(reg, location, data, good, data.len() - 1).await;
    assert_eq!(r.status(), 202);
    let location = header(&r, "location");
    let r = reg
        .http
        .put(reg.url(&with_query(&location, &format!("digest={}", sha256(data)))))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 201);
    assert_eq!(
        reg.blob(&location_repo(&location), &sha256(data)).await,
        data
    );
}

fn location_repo(location: &str) -> String {
    let path = location.trim_start_matches("/v2/");
    path[..path.find("/blobs/").expect("upload location")].to_owned()
}

#[tokio::test]
async fn content_range_gap() {
    let reg = Registry::start();
    let data = random_bytes(30, 3);
    let location = reg.start_upload("r").await;
    assert_eq!(
        patch_range(&reg, &location, &data, 0, 9).await.status(),
        202
    );
    let r = patch_range(&reg, &location, &data, 20, 29).await;
    assert_eq!(r.status(), 416);
    assert_eq!(header(&r, "range"), "0-9");
    assert!(header(&r, "location").contains("/blobs/uploads/"));
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_INVALID");
    assert_session_intact(&reg, &location, &data, 10).await;
}

#[tokio::test]
async fn content_range_overlap() {
    let reg = Registry::start();
    let data = random_bytes(30, 4);
    let location = reg.start_upload("r").await;
    assert_eq!(
        patch_range(&reg, &location, &data, 0, 9).await.status(),
        202
    );
    let r = patch_range(&reg, &location, &data, 5, 14).await;
    assert_eq!(r.status(), 416);
    assert_eq!(header(&r, "range"), "0-9");
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_INVALID");
    // Re-sending the same chunk is an overlap too.
    let r = patch_range(&reg, &location, &data, 0, 9).await;
    assert_eq!(r.status(), 416);
    assert_session_intact(&reg, &location, &data, 10).await;
}

#[tokio::test]
async fn content_range_length_differs_from_the_body() {
    let reg = Registry::start();
    let data = random_bytes(30, 5);
    let location = reg.start_upload("r").await;
    assert_eq!(
        patch_range(&reg, &location, &data, 0, 9).await.status(),
        202
    );
    // The range says 10 bytes, the body has 5.
    let r = reg
        .http
        .patch(reg.url(&location))
        .header("content-range", "10-19")
        .body(data[10..15].to_vec())
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status(), 416);
    assert_eq!(header(&r, "range"), "0-9");
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_INVALID");
    // Malformed Content-Range: 400.
    let r = reg
        .http
        .patch(reg.url(&location))
        .header("content-range", "ten-twenty")
        .body(data[10..20].to_vec())
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_INVALID");
    assert_session_intact(&reg, &location, &data, 10).await;
}

/// A body streamed without Content-Length (chunked transfer coding), so only its
/// Content-Range says how long it should be.
fn streamed(bytes: &[u8]) -> reqwest::Body {
    let chunk = bytes::Bytes::copy_from_slice(bytes);
    reqwest::Body::wrap_stream(futures::stream::once(async move {
        Ok::<_, std::io::Error>(chunk)
    }))
}

/// A chunk whose body, streamed with no Content-Length, is longer or shorter than its
/// Content-Range says is refused with 400 `SIZE_INVALID` (the declared length
/// disagrees with the body), in a PATCH and in the closing PUT; nothing of it is
/// stored.
#[tokio::test]
async fn streamed_chunk_not_matching_its_content_range_is_size_invalid() {
    let reg = Registry::start();
    let data = random_bytes(30, 6);
    let location = reg.start_upload("r").await;
    assert_eq!(
        patch_range(&reg, &location, &data, 0, 9).await.status(),
        202
    );
    for (what, body) in [
        ("a PATCH body longer than its range", &data[10..25]),
        ("a PATCH body shorter than its range", &data[10..15]),
    ] {
        let r = reg
            .http
            .patch(reg.url(&location))
            .header("content-type", "application/octet-stream")
            .header("content-range", "10-19")
            .body(streamed(body))
            .send()
            .await
            .expect("PATCH");
        assert_eq!(r.status(), 400, "{what}");
        assert_eq!(error_code(r).await, "SIZE_INVALID", "{what}");
    }
    let r = reg
        .http
        .put(reg.url(&with_query(&location, &format!("digest={}", sha256(&data)))))
        .header("content-type", "application/octet-stream")
        .header("content-range", "10-29")
        .body(streamed(&data[10..22]))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 400, "a closing PUT body shorter than its range");
    assert_eq!(error_code(r).await, "SIZE_INVALID");
    assert_eq!(reg.blob_status("r", &sha256(&data)).await, 404);
    assert_session_intact(&reg, &location, &data, 10).await;
}

#[tokio::test]
async fn unknown_upload_id() {
    let reg = Registry::start();
    let unknown = "/v2/r/blobs/uploads/0b6a4c1e-8d8e-4d3f-9a59-3f1f7c2b9e10";
    let r = reg.get(unknown).await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    let r = reg
        .http
        .patch(reg.url(unknown))
        .body(b"data".to_vec())
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    let r = reg
        .http
        .put(reg.url(&format!("{unknown}?digest={}", sha256(b"data"))))
        .body(b"data".to_vec())
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    let r = reg.delete(unknown).await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    // Not even a UUID.
    let r = reg.get("/v2/r/blobs/uploads/not-an-id").await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(reg.blob_status("r", &sha256(b"data")).await, 404);
    assert!(reg.catalog().await.is_empty());
}

#[tokio::test]
async fn manifest_over_4_mib() {
    let reg = Registry::start();
    let manifest = simple_image(&reg, "r", 1).await;
    // Valid JSON, padded with an annotation to just over the limit.
    let pad = 4 * 1024 * 1024 + 1 - manifest.len() - r#","annotations":{"pad":""}"#.len();
    let big = format!(
        "{},\"annotations\":{{\"pad\":\"{}\"}}}}",
        &manifest[..manifest.len() - 1],
        "x".repeat(pad)
    );
    assert_eq!(big.len(), 4 * 1024 * 1024 + 1);
    let r = reg
        .put_manifest("r", "big", OCI_MANIFEST, big.as_bytes())
        .await;
    assert_eq!(r.status(), 413);
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    assert_eq!(reg.get("/v2/r/manifests/big").await.status(), 404);
    assert_eq!(
        reg.get(&format!("/v2/r/manifests/{}", sha256(big.as_bytes())))
            .await
            .status(),
        404
    );
    assert_eq!(reg.tags("r").await, Some(vec![]));

    // Exactly 4 MiB is accepted.
    let ok = format!("{}{}", &big[..big.len() - 4], "\"}}");
    assert_eq!(ok.len(), 4 * 1024 * 1024);
    let r = reg
        .put_manifest("r", "fits", OCI_MANIFEST, ok.as_bytes())
        .await;
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn manifest_over_4_mib_streamed_without_content_length() {
    let reg = Registry::start();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..5).map(|_| Ok(vec![b' '; 1024 * 1024])).collect();
    let r = reg
        .http
        .put(reg.url("/v2/r/manifests/big"))
        .header("content-type", OCI_MANIFEST)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 413);
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    assert_eq!(reg.get("/v2/r/manifests/big").await.status(), 404);
    assert!(reg.catalog().await.is_empty());
}

#[tokio::test]
async fn manifest_referencing_an_unknown_blob() {
    let reg = Registry::start();
    let config = b"{}";
    let cd = reg.push_blob("r", config).await;
    let missing = sha256(b"layer never pushed");
    let m = util::oci_manifest((&cd, config.len()), &[(&missing, 18)], "");
    let r = reg
        .put_manifest("r", "v1", OCI_MANIFEST, m.as_bytes())
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(reg.get("/v2/r/manifests/v1").await.status(), 404);
    assert_eq!(
        reg.get(&format!("/v2/r/manifests/{}", sha256(m.as_bytes())))
            .await
            .status(),
        404
    );
    assert_eq!(reg.tags("r").await, Some(vec![]));

    // A blob that exists, but in another repository, is unknown here too.
    let elsewhere = reg.push_blob("other", b"layer elsewhere").await;
    let m = util::oci_manifest((&cd, config.len()), &[(&elsewhere, 15)], "");
    let r = reg
        .put_manifest("r", "v1", OCI_MANIFEST, m.as_bytes())
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(reg.tags("r").await, Some(vec![]));
}

#[tokio::test]
async fn index_referencing_an_unknown_manifest() {
    let reg = Registry::start();
    reg.push_blob("r", b"x").await; // the repository exists
    let missing = sha256(b"no such manifest");
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{missing}","size":10}}]}}"#,
        util::OCI_INDEX
    );
    let r = reg
        .put_manifest("r", "multi", util::OCI_INDEX, index.as_bytes())
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(reg.get("/v2/r/manifests/multi").await.status(), 404);
    assert_eq!(reg.tags("r").await, Some(vec![]));
}

#[tokio::test]
async fn malformed_manifest_json() {
    let reg = Registry::start();
    let good = simple_image(&reg, "r", 2).await;
    let cases: Vec<(&str, String)> = vec![
        (OCI_MANIFEST, "{\"schemaVersion\":2,".to_string()),
        (OCI_MANIFEST, "not json at all".to_string()),
        (OCI_MANIFEST, String::new()),
        // Valid JSON, wrong schema: an image manifest without config.
        (
            OCI_MANIFEST,
            format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","layers":[]}}"#),
        ),
        // An image manifest sent as an index.
        (util::OCI_INDEX, good.clone()),
        // Content-Type and mediaType disagree.
        (util::DOCKER_MANIFEST, good.clone()),
        // An unsupported manifest type.
        (
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            good.clone(),
        ),
    ];
    for (i, (media_type, body)) in cases.iter().enumerate() {
        let r = reg
            .put_manifest("r", "bad", media_type, body.as_bytes())
            .await;
        assert_eq!(r.status(), 400, "case {i}");
        assert_eq!(error_code(r).await, "MANIFEST_INVALID", "case {i}");
    }
    assert_eq!(reg.get("/v2/r/manifests/bad").await.status(), 404);
    assert_eq!(reg.tags("r").await, Some(vec![]));
}

#[tokio::test]
async fn manifest_digest_not_matching_the_body() {
    let reg = Registry::start();
    let m = simple_image(&reg, "r", 3).await;
    let wrong = sha256(b"another manifest");
    let r = reg
        .put_manifest("r", &wrong, OCI_MANIFEST, m.as_bytes())
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    assert_eq!(
        reg.get(&format!("/v2/r/manifests/{wrong}")).await.status(),
        404
    );
    assert_eq!(
        reg.get(&format!("/v2/r/manifests/{}", sha256(m.as_bytes())))
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn invalid_tag() {
    let reg = Registry::start();
    let m = simple_image(&reg, "r", 4).await;
    let long = "t".repeat(129);
    for tag in [".hidden", "-dash", long.as_str()] {
        let r = reg.put_manifest("r", tag, OCI_MANIFEST, m.as_bytes()).await;
        assert_eq!(r.status(), 400, "{tag}");
        assert_eq!(error_code(r).await, "MANIFEST_INVALID", "{tag}");
    }
    assert_eq!(reg.tags("r").await, Some(vec![]));
}

#[tokio::test]
async fn invalid_pagination_number() {
    let reg = Registry::start();
    reg.push_blob("r", b"x").await;
    for q in ["n=-1", "n=abc"] {
        let r = reg.get(&format!("/v2/r/tags/list?{q}")).await;
        assert_eq!(r.status(), 400, "{q}");
        assert_eq!(error_code(r).await, "PAGINATION_NUMBER_INVALID");
        let r = reg.get(&format!("/v2/_catalog?{q}")).await;
        assert_eq!(r.status(), 400, "{q}");
    }
}
