//! Every upload style, blob reads with and without Range, deletes and cross-repository
//! mounts, over HTTP against the real binary (issue 3 acceptance 3 and 4).

#[path = "http_util.rs"]
mod util;

use util::{error_code, header, random_bytes, sha256, with_query, Registry};

/// GET, HEAD and the headers every blob response carries.
async fn assert_blob(reg: &Registry, repo: &str, data: &[u8]) {
    let digest = sha256(data);
    let r = reg.get(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest"), digest);
    assert_eq!(header(&r, "content-type"), "application/octet-stream");
    assert_eq!(header(&r, "accept-ranges"), "bytes");
    assert_eq!(header(&r, "content-length"), data.len().to_string());
    let body = r.bytes().await.expect("body");
    assert!(
        body.as_ref() == data,
        "blob read back differs ({} vs {} bytes)",
        body.len(),
        data.len()
    );

    let r = reg.head(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest"), digest);
    assert_eq!(header(&r, "content-length"), data.len().to_string());
}

#[tokio::test]
async fn monolithic_post_then_put() {
    let reg = Registry::start();
    let data = random_bytes(200_000, 1);
    let digest = sha256(&data);
    let r = reg
        .http
        .post(reg.url("/v2/app/blobs/uploads/"))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 202);
    let location = header(&r, "location");
    let uuid = header(&r, "docker-upload-uuid");
    assert!(location.starts_with("/v2/app/blobs/uploads/"), "{location}");
    assert!(location.ends_with(&uuid));
    assert_eq!(header(&r, "range"), "0-0");

    let r = reg
        .http
        .put(reg.url(&with_query(&location, &format!("digest={digest}"))))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "location"), format!("/v2/app/blobs/{digest}"));
    assert_eq!(header(&r, "docker-content-digest"), digest);
    assert_blob(&reg, "app", &data).await;

    // The session is gone once finished.
    let r = reg.get(&location).await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn single_post_with_digest() {
    let reg = Registry::start();
    let data = random_bytes(300_001, 2);
    let digest = sha256(&data);
    let r = reg
        .http
        .post(reg.url(&format!("/v2/org/team/app/blobs/uploads/?digest={digest}")))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 201);
    assert_eq!(
        header(&r, "location"),
        format!("/v2/org/team/app/blobs/{digest}")
    );
    assert_eq!(header(&r, "docker-content-digest"), digest);
    assert_blob(&reg, "org/team/app", &data).await;

    // Pushing the same blob again is idempotent.
    assert_eq!(reg.push_blob("org/team/app", &data).await, digest);
    assert_blob(&reg, "org/team/app", &data).await;
}

#[tokio::test]
async fn empty_blob() {
    let reg = Registry::start();
    reg.push_blob("r", b"").await;
    assert_blob(&reg, "r", b"").await;
}

#[tokio::test]
async fn percent_encoded_digest_in_query_and_path() {
    let reg = Registry::start();
    let data = random_bytes(1000, 3);
    let digest = sha256(&data);
    let encoded = digest.replace(':', "%3A");
    let r = reg
        .http
        .post(reg.url(&format!("/v2/r/blobs/uploads/?digest={encoded}")))
        .body(data.clone())
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 201);
    let r = reg.get(&format!("/v2/r/blobs/{encoded}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.expect("body").as_ref(), &data[..]);
}

/// Chunked upload with `Content-Range`, all chunks of `chunk` bytes except a shorter
/// last one, checking `Range` after each chunk and the status endpoint in between.
async fn chunked_upload(chunk: usize, total: usize, seed: u64) {
    let reg = Registry::start();
    let data = random_bytes(total, seed);
    let digest = sha256(&data);
    let mut location = reg.start_upload("chunked").await;
    let mut offset = 0;
    while offset < data.len() {
        let end = (offset + chunk).min(data.len());
        let r = reg
            .http
            .patch(reg.url(&location))
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{}-{}", offset, end - 1))
            .header("content-length", (end - offset).to_string())
            .body(data[offset..end].to_vec())
            .send()
            .await
            .expect("PATCH");
        assert_eq!(r.status(), 202, "chunk at {offset}");
        assert_eq!(header(&r, "range"), format!("0-{}", end - 1));
        assert!(!header(&r, "docker-upload-uuid").is_empty());
        location = header(&r, "location");
        offset = end;

        let s = reg.get(&location).await;
        assert_eq!(s.status(), 204);
        assert_eq!(header(&s, "range"), format!("0-{}", end - 1));
        assert_eq!(header(&s, "location"), location);
    }
    let r = reg
        .http
        .put(reg.url(&with_query(&location, &format!("digest={digest}"))))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "docker-content-digest"), digest);
    assert_blob(&reg, "chunked", &data).await;
}

#[tokio::test]
async fn chunked_with_content_range_1_byte_chunks() {
    chunked_upload(1, 7, 4).await;
}

#[tokio::test]
async fn chunked_with_content_range_65537_byte_chunks() {
    chunked_upload(65537, 2 * 65537 + 100, 5).await;
}

#[tokio::test]
async fn chunked_with_content_range_5mib_plus_3_byte_chunks() {
    let chunk = 5 * 1024 * 1024 + 3;
    chunked_upload(chunk, 2 * chunk + 7, 6).await;
}

/// What docker sends: PATCH with a streamed (chunked transfer) body, no Content-Range
/// and no Content-Length, then a closing PUT without a body.
#[tokio::test]
async fn streamed_patch_without_content_range() {
    let reg = Registry::start();
    let data = random_bytes(3 * 1024 * 1024 + 17, 8);
    let digest = sha256(&data);
    let mut location = reg.start_upload("docker/style").await;
    for (i, part) in [&data[..1_000_000], &data[1_000_000..]]
        .into_iter()
        .enumerate()
    {
        let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
            part.chunks(40_000).map(|c| Ok(c.to_vec())).collect();
        let r = reg
            .http
            .patch(reg.url(&location))
            .header("content-type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(futures::stream::iter(pieces)))
            .send()
            .await
            .expect("PATCH");
        assert_eq!(r.status(), 202, "part {i}");
        location = header(&r, "location");
        let end = if i == 0 { 1_000_000 } else { data.len() };
        assert_eq!(header(&r, "range"), format!("0-{}", end - 1));
    }
    let r = reg
        .http
        .put(reg.url(&with_query(&location, &format!("digest={digest}"))))
        .header("content-length", "0")
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 201);
    assert_blob(&reg, "docker/style", &data).await;
}

/// The closing PUT carries the last chunk, with and without a Content-Range.
#[tokio::test]
async fn closing_put_carries_the_last_chunk() {
    let reg = Registry::start();
    for (with_range, seed) in [(true, 9), (false, 10)] {
        let data = random_bytes(150_000, seed);
        let digest = sha256(&data);
        let split = 100_000;
        let location = reg.start_upload("lastchunk").await;
        let r = reg
            .http
            .patch(reg.url(&location))
            .header("content-range", format!("0-{}", split - 1))
            .body(data[..split].to_vec())
            .send()
            .await
            .expect("PATCH");
        assert_eq!(r.status(), 202);
        let location = header(&r, "location");
        let mut put = reg
            .http
            .put(reg.url(&with_query(&location, &format!("digest={digest}"))))
            .header("content-type", "application/octet-stream")
            .body(data[split..].to_vec());
        if with_range {
            put = put.header("content-range", format!("{}-{}", split, data.len() - 1));
        }
        let r = put.send().await.expect("PUT");
        assert_eq!(r.status(), 201, "with Content-Range: {with_range}");
        assert_eq!(
            header(&r, "location"),
            format!("/v2/lastchunk/blobs/{digest}")
        );
        assert_blob(&reg, "lastchunk", &data).await;
    }
}

/// Issue 3 acceptance 4: an interrupted pull resumes with a Range request.
#[tokio::test]
async fn range_reads_return_206_with_the_exact_bytes() {
    let reg = Registry::start();
    // Several 64 KiB segments, with a short last one.
    let data = random_bytes(3 * 65536 + 1234, 11);
    let digest = sha256(&data);
    reg.push_blob("r", &data).await;
    let n = data.len();
    let cases: Vec<(String, usize, usize)> = vec![
        ("bytes=0-0".into(), 0, 0),
        ("bytes=10-70000".into(), 10, 70000),
        ("bytes=65536-131071".into(), 65536, 131071),
        (format!("bytes={}-", n - 1000), n - 1000, n - 1),
        ("bytes=100000-".into(), 100000, n - 1),
        ("bytes=-5".into(), n - 5, n - 1),
        // An end past the blob is clamped (RFC 9110).
        (format!("bytes=5-{}", n + 100), 5, n - 1),
    ];
    for (range, start, end) in cases {
        let r = reg
            .http
            .get(reg.url(&format!("/v2/r/blobs/{digest}")))
            .header("range", &range)
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(
            header(&r, "content-range"),
            format!("bytes {start}-{end}/{n}"),
            "{range}"
        );
        assert_eq!(header(&r, "content-length"), (end - start + 1).to_string());
        assert_eq!(header(&r, "docker-content-digest"), digest);
        let body = r.bytes().await.expect("body");
        assert!(body.as_ref() == &data[start..=end], "{range}: wrong bytes");
    }

    // Resuming an interrupted pull: the first part plus the rest is the blob.
    let first = &data[..50_000];
    let r = reg
        .http
        .get(reg.url(&format!("/v2/r/blobs/{digest}")))
        .header("range", format!("bytes={}-", first.len()))
        .send()
        .await
        .expect("GET");
    let mut whole = first.to_vec();
    whole.extend_from_slice(&r.bytes().await.expect("body"));
    assert_eq!(sha256(&whole), digest);

    // An unparsable or multi-range Range is ignored: the whole blob with 200.
    for range in ["bytes=5-2", "items=0-1", "bytes=0-1,4-5"] {
        let r = reg
            .http
            .get(reg.url(&format!("/v2/r/blobs/{digest}")))
            .header("range", range)
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 200, "{range}");
        assert_eq!(r.bytes().await.expect("body").len(), n);
    }
}

#[tokio::test]
async fn unsatisfiable_range_is_416_with_the_size() {
    let reg = Registry::start();
    let data = random_bytes(1000, 12);
    let digest = sha256(&data);
    reg.push_blob("r", &data).await;
    for range in ["bytes=1000-", "bytes=5000-6000", "bytes=-0"] {
        let r = reg
            .http
            .get(reg.url(&format!("/v2/r/blobs/{digest}")))
            .header("range", range)
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 416, "{range}");
        assert_eq!(header(&r, "content-range"), "bytes */1000");
        assert_eq!(error_code(r).await, "RANGE_INVALID");
    }
}

#[tokio::test]
async fn unknown_blob_is_404_blob_unknown() {
    let reg = Registry::start();
    let digest = sha256(b"never pushed");
    let r = reg.get(&format!("/v2/r/blobs/{digest}")).await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
    assert_eq!(reg.blob_status("r", &digest).await, 404);
}

#[tokio::test]
async fn cancel_upload() {
    let reg = Registry::start();
    let location = reg.start_upload("r").await;
    let r = reg
        .http
        .patch(reg.url(&location))
        .body(b"partial".to_vec())
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status(), 202);
    let location = header(&r, "location");
    let r = reg.delete(&location).await;
    assert_eq!(r.status(), 204);
    let r = reg.get(&location).await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    let r = reg.delete(&location).await;
    assert_eq!(r.status(), 404);
    assert_eq!(reg.blob_status("r", &sha256(b"partial")).await, 404);
}

#[tokio::test]
async fn upload_sessions_belong_to_their_repository() {
    let reg = Registry::start();
    let location = reg.start_upload("a").await;
    let id = location.rsplit('/').next().expect("id");
    let r = reg.get(&format!("/v2/b/blobs/uploads/{id}")).await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn delete_blob_unlinks_it_from_the_repository() {
    let reg = Registry::start();
    let data = random_bytes(5000, 13);
    let digest = reg.push_blob("a", &data).await;
    reg.push_blob("b", &data).await;
    let r = reg.delete(&format!("/v2/a/blobs/{digest}")).await;
    assert_eq!(r.status(), 202);
    assert_eq!(reg.blob_status("a", &digest).await, 404);
    let r = reg.get(&format!("/v2/a/blobs/{digest}")).await;
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
    // Still there for the other repository.
    assert_blob(&reg, "b", &data).await;
    // Deleting again: unknown.
    let r = reg.delete(&format!("/v2/a/blobs/{digest}")).await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn blobs_are_per_repository() {
    let reg = Registry::start();
    let data = random_bytes(100, 14);
    let digest = reg.push_blob("a", &data).await;
    assert_eq!(reg.blob_status("b", &digest).await, 404);
}

#[tokio::test]
async fn cross_repository_mount_with_from() {
    let reg = Registry::start();
    let data = random_bytes(70_000, 15);
    let digest = reg.push_blob("source/repo", &data).await;
    let r = reg
        .http
        .post(reg.url(&format!(
            "/v2/target/blobs/uploads/?mount={digest}&from=source/repo"
        )))
        .send()
        .await
        .expect("POST mount");
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "location"), format!("/v2/target/blobs/{digest}"));
    assert_eq!(header(&r, "docker-content-digest"), digest);
    assert_blob(&reg, "target", &data).await;

    // `from` percent-encoded, as clients that escape '/' send it.
    let r = reg
        .http
        .post(reg.url(&format!(
            "/v2/target2/blobs/uploads/?mount={}&from=source%2Frepo",
            digest.replace(':', "%3A")
        )))
        .send()
        .await
        .expect("POST mount");
    assert_eq!(r.status(), 201);
    assert_blob(&reg, "target2", &data).await;
}

#[tokio::test]
async fn mount_falls_back_to_an_upload_session() {
    let reg = Registry::start();
    let data = random_bytes(1000, 16);
    let digest = reg.push_blob("has", &data).await;
    reg.push_blob("other", b"something else").await;
    // The blob exists, but not in `from`: a normal session (202).
    let r = reg
        .http
        .post(reg.url(&format!(
            "/v2/target/blobs/uploads/?mount={digest}&from=other"
        )))
        .send()
        .await
        .expect("POST mount");
    assert_eq!(r.status(), 202);
    let location = header(&r, "location");
    assert!(location.starts_with("/v2/target/blobs/uploads/"));
    assert_eq!(reg.blob_status("target", &digest).await, 404);
    // The session works.
    let r = reg
        .http
        .put(reg.url(&with_query(&location, &format!("digest={digest}"))))
        .body(data.clone())
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 201);

    // A blob that exists nowhere: 202 as well.
    let missing = sha256(b"nowhere");
    let r = reg
        .http
        .post(reg.url(&format!("/v2/target/blobs/uploads/?mount={missing}")))
        .send()
        .await
        .expect("POST mount");
    assert_eq!(r.status(), 202);
    assert_eq!(reg.blob_status("target", &missing).await, 404);
}

/// Without `from`, a blob that exists in any repository is mounted (single tenant:
/// every client may read every repository).
#[tokio::test]
async fn automatic_mount_without_from() {
    let reg = Registry::start();
    let data = random_bytes(2000, 17);
    let digest = reg.push_blob("somewhere/else", &data).await;
    let r = reg
        .http
        .post(reg.url(&format!("/v2/target/blobs/uploads/?mount={digest}")))
        .send()
        .await
        .expect("POST mount");
    assert_eq!(r.status(), 201);
    assert_blob(&reg, "target", &data).await;
}

/// One response read off a keep-alive connection: status, the lower-cased headers,
/// and whether the server then closed the connection. Bounded by socket timeouts.
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    closed_after: bool,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `head` (request line and headers, without the blank line) and then `body`,
/// which may be shorter than the `Content-Length` the head declares, and reads one
/// response; then whether the connection is closed is seen by reading on.
fn exchange(s: &mut std::net::TcpStream, head: &str, body: &[u8]) -> RawResponse {
    use std::io::{Read, Write};
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(format!("{}\r\n\r\n", head.trim_end()).as_bytes())
        .expect("write head");
    s.write_all(body).expect("write body");
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).expect("read head");
        assert!(n == 1, "connection closed before a response: {buf:?}");
        buf.push(byte[0]);
    }
    let text = String::from_utf8(buf).expect("ascii head");
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().expect("content-length"));
    let mut rest = vec![0u8; length];
    s.read_exact(&mut rest).expect("read body");
    // With the response read whole, a closed connection reads as end of file; an open
    // one times out (briefly: a server that keeps the connection sends nothing more).
    s.set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .expect("timeout");
    let closed_after = matches!(s.read(&mut byte), Ok(0));
    RawResponse {
        status,
        headers,
        closed_after,
    }
}

/// A response sent before the request body was read (an unknown session, a commit
/// repeated after it landed) says `Connection: close` and closes: a client that
/// reused the connection would otherwise send its next request into a socket the
/// server is closing (seen as a cut GET after a re-sent commit). A request whose body
/// was read keeps the connection.
#[tokio::test]
async fn an_answer_that_leaves_the_body_unread_closes_the_connection() {
    let reg = Registry::start();
    let host = reg.valv.host().to_owned();
    let data = random_bytes(4096, 11);
    let digest = sha256(&data);
    let sent = data.clone();
    tokio::task::spawn_blocking(move || {
        let data = sent;
        let mut s = std::net::TcpStream::connect(&host).expect("connect");
        let r = exchange(
            &mut s,
            &format!(
                "PUT /v2/keep/blobs/uploads/0b6cbc7e-5a0f-4f43-9d0a-3a0c5bb1d7f2?digest={digest} \
                 HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100000"
            ),
            &data[..10],
        );
        assert_eq!(r.status, 404);
        assert_eq!(r.header("connection"), Some("close"));
        assert!(r.closed_after, "the connection is closed after the answer");

        // A commit whose body is read: the connection stays.
        let mut s = std::net::TcpStream::connect(&host).expect("connect");
        let r = exchange(
            &mut s,
            &format!("POST /v2/keep/blobs/uploads/ HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0"),
            b"",
        );
        assert_eq!(r.status, 202);
        let location = r.header("location").expect("location").to_owned();
        let sep = if location.contains('?') { '&' } else { '?' };
        let commit = format!(
            "PUT {location}{sep}digest={digest} HTTP/1.1\r\nHost: {host}\r\n\
             Content-Range: 0-4095\r\nContent-Length: 4096"
        );
        let r = exchange(&mut s, &commit, &data);
        assert_eq!(r.status, 201);
        assert_eq!(r.header("connection"), None);
        assert!(!r.closed_after, "a request read whole keeps the connection");

        // The same commit again, its body not yet sent: answered 201 at once, closed.
        let r = exchange(&mut s, &commit, &data[..10]);
        assert_eq!(r.status, 201);
        assert_eq!(r.header("connection"), Some("close"));
        assert!(r.closed_after, "the connection is closed after the answer");
    })
    .await
    .expect("join");
    assert_blob(&reg, "keep", &data).await;
}
