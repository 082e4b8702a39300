//! Crash safety (issue 3, acceptance 5): `kill -9` valv in the middle of a large push,
//! restart it on the same data directory, and check that
//!
//! - every blob and manifest committed before the crash reads back intact,
//! - the interrupted upload is still there (its session state lives in the object
//!   store, DESIGN §5, and the start-up sweep leaves open sessions alone), reports an
//!   offset the server had recorded, and resumed from exactly that offset completes to
//!   the right digest,
//! - the unfinished blob is never visible.
//!
//! Blob bodies are generated on the fly from a seeded counter-mode generator, so a
//! 512 MiB upload needs no file and no buffer, and any suffix can be regenerated to resume.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{client, hex_digest, location_path, sha256, Valv};
use futures::StreamExt;
use reqwest::{Client, StatusCode};
use sha2::Digest as _;

const MIB: u64 = 1024 * 1024;

/// How long the streamed upload may take to reach the kill point.
const KILL_POINT_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------
// Generated content

/// A seekable stream of pseudo-random bytes: byte `i` is byte `i % 8` of
/// splitmix64(seed + (i / 8 + 1) · γ), so any range can be produced without the bytes
/// before it.
#[derive(Debug, Clone, Copy)]
struct Content {
    seed: u64,
    len: u64,
}

impl Content {
    fn new(tag: u64, len: u64) -> Content {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Content {
            seed: nanos
                ^ (u64::from(std::process::id()) << 32)
                ^ tag.wrapping_mul(0xA076_1D64_78BD_642F),
            len,
        }
    }

    fn word(&self, i: u64) -> u64 {
        let mut z = self
            .seed
            .wrapping_add(i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fills `buf` with the bytes at `offset..offset + buf.len()`.
    fn fill(&self, offset: u64, buf: &mut [u8]) {
        let mut pos = 0usize;
        let mut at = offset;
        while pos < buf.len() {
            let word = self.word(at / 8).to_le_bytes();
            let skip = (at % 8) as usize;
            let n = (8 - skip).min(buf.len() - pos);
            buf[pos..pos + n].copy_from_slice(&word[skip..skip + n]);
            pos += n;
            at += n as u64;
        }
    }

    fn bytes(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.fill(offset, &mut v);
        v
    }

    /// sha256 digest of the whole content.
    fn digest(&self) -> String {
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; MIB as usize];
        let mut at = 0;
        while at < self.len {
            let n = (self.len - at).min(MIB) as usize;
            self.fill(at, &mut buf[..n]);
            h.update(&buf[..n]);
            at += n as u64;
        }
        hex_digest(h)
    }

    /// A request body streaming `offset..offset + len` in 1 MiB chunks. `produced` counts
    /// the bytes handed to the HTTP client (an upper bound on what the server received);
    /// `kill_point` fires once that count reaches `at`.
    fn body(
        &self,
        offset: u64,
        len: u64,
        produced: Arc<AtomicU64>,
        kill_point: Option<(u64, tokio::sync::oneshot::Sender<()>)>,
    ) -> reqwest::Body {
        let content = *self;
        let stream = futures::stream::unfold((0u64, kill_point), move |(sent, mut kill_point)| {
            let produced = produced.clone();
            async move {
                if sent >= len {
                    return None;
                }
                let n = (len - sent).min(MIB);
                let chunk = Bytes::from(content.bytes(offset + sent, n as usize));
                let total = produced.fetch_add(n, Ordering::SeqCst) + n;
                if kill_point.as_ref().is_some_and(|(at, _)| total >= *at) {
                    if let Some((_, tx)) = kill_point.take() {
                        let _ = tx.send(());
                    }
                }
                Some((Ok::<Bytes, std::io::Error>(chunk), (sent + n, kill_point)))
            }
        });
        reqwest::Body::wrap_stream(stream)
    }
}

// ---------------------------------------------------------------------------------
// HTTP helpers

fn with_query(path: &str, query: &str) -> String {
    if path.contains('?') {
        format!("{path}&{query}")
    } else {
        format!("{path}?{query}")
    }
}

/// The upload offset a `Range: 0-<last>` header reports. `0-0` is read as "nothing
/// yet" (distribution's convention); the callers only ever hold offsets ≠ 1.
fn range_offset(resp: &reqwest::Response) -> u64 {
    let range = resp
        .headers()
        .get("range")
        .expect("Range header")
        .to_str()
        .expect("ascii Range");
    let last = range
        .strip_prefix("0-")
        .unwrap_or_else(|| panic!("Range {range:?} does not start at 0"));
    let last: u64 = last
        .parse()
        .unwrap_or_else(|_| panic!("Range {range:?} is not 0-<n>"));
    if last == 0 {
        0
    } else {
        last + 1
    }
}

async fn start_upload(http: &Client, valv: &Valv, repo: &str) -> String {
    let resp = http
        .post(valv.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .expect("POST upload");
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "POST /blobs/uploads/");
    location_path(&resp)
}

/// Monolithic push: POST, then PUT with the whole body and the digest.
async fn push_monolithic(http: &Client, valv: &Valv, repo: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    let loc = start_upload(http, valv, repo).await;
    let resp = http
        .put(valv.url(&with_query(&loc, &format!("digest={digest}"))))
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .expect("PUT blob");
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "monolithic PUT of {digest}"
    );
    digest
}

/// Chunked push: POST, a PATCH with `Content-Range` for the first half, and a closing
/// PUT that carries the second half.
async fn push_chunked(http: &Client, valv: &Valv, repo: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    let half = data.len() / 2;
    let loc = start_upload(http, valv, repo).await;
    let resp = http
        .patch(valv.url(&loc))
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("0-{}", half - 1))
        .body(data[..half].to_vec())
        .send()
        .await
        .expect("PATCH chunk");
    assert_eq!(
        resp.status(),
        StatusCode::ACCEPTED,
        "PATCH chunk of {digest}"
    );
    let loc = location_path(&resp);
    let resp = http
        .put(valv.url(&with_query(&loc, &format!("digest={digest}"))))
        .header("content-type", "application/octet-stream")
        .body(data[half..].to_vec())
        .send()
        .await
        .expect("closing PUT with the last chunk");
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "closing PUT of {digest}"
    );
    digest
}

/// Streams a blob back and returns (sha256 digest, size).
async fn fetch_digest(http: &Client, valv: &Valv, repo: &str, digest: &str) -> (String, u64) {
    let resp = http
        .get(valv.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .expect("GET blob");
    assert_eq!(resp.status(), StatusCode::OK, "GET blob {digest}");
    let mut h = sha2::Sha256::new();
    let mut size = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("blob body chunk");
        size += chunk.len() as u64;
        h.update(&chunk);
    }
    (hex_digest(h), size)
}

async fn assert_blob_absent(http: &Client, valv: &Valv, repo: &str, digest: &str) {
    let resp = http
        .head(valv.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .expect("HEAD blob");
    assert_eq!(
        resp.status(),
        StatusCode::NOT_FOUND,
        "unfinished blob {digest} must not be visible"
    );
    let resp = http
        .get(valv.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .expect("GET blob");
    assert_eq!(
        resp.status(),
        StatusCode::NOT_FOUND,
        "unfinished blob {digest} must not be readable"
    );
}

/// What was committed before the crash.
#[derive(Debug)]
struct Committed {
    repo: String,
    blobs: Vec<(String, Vec<u8>)>,
    manifest: Vec<u8>,
    manifest_digest: String,
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Pushes a config, two layers (monolithic and chunked) and an image manifest tagged `v1`.
async fn push_committed(http: &Client, valv: &Valv, repo: &str) -> Committed {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let layer1 = Content::new(1, 0).bytes(0, (MIB + 7) as usize);
    let layer2 = Content::new(2, 0).bytes(0, 100 * 1024 + 1);
    let config_digest = push_monolithic(http, valv, repo, &config).await;
    let layer1_digest = push_monolithic(http, valv, repo, &layer1).await;
    let layer2_digest = push_chunked(http, valv, repo, &layer2).await;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer1_digest, "size": layer1.len()},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer2_digest, "size": layer2.len()},
        ],
    }))
    .expect("manifest JSON");
    let manifest_digest = sha256(&manifest);
    let resp = http
        .put(valv.url(&format!("/v2/{repo}/manifests/v1")))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .expect("PUT manifest");
    assert_eq!(resp.status(), StatusCode::CREATED, "PUT manifest");
    Committed {
        repo: repo.to_owned(),
        blobs: vec![
            (config_digest, config),
            (layer1_digest, layer1),
            (layer2_digest, layer2),
        ],
        manifest,
        manifest_digest,
    }
}

/// Every committed blob and the manifest (by tag and by digest) read back intact.
async fn check_committed(http: &Client, valv: &Valv, c: &Committed) {
    for (digest, data) in &c.blobs {
        let resp = http
            .get(valv.url(&format!("/v2/{}/blobs/{digest}", c.repo)))
            .send()
            .await
            .expect("GET blob");
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "committed blob {digest} after restart"
        );
        let body = resp.bytes().await.expect("blob body");
        assert_eq!(body.len(), data.len(), "size of committed blob {digest}");
        assert!(
            body.as_ref() == data.as_slice(),
            "content of committed blob {digest}"
        );
    }
    for reference in ["v1", c.manifest_digest.as_str()] {
        let resp = http
            .get(valv.url(&format!("/v2/{}/manifests/{reference}", c.repo)))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .expect("GET manifest");
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "committed manifest {reference} after restart"
        );
        let digest_header = resp
            .headers()
            .get("docker-content-digest")
            .map(|v| v.to_str().unwrap_or("").to_owned());
        assert_eq!(
            digest_header.as_deref(),
            Some(c.manifest_digest.as_str()),
            "Docker-Content-Digest of {reference}"
        );
        let body = resp.bytes().await.expect("manifest body");
        assert!(
            body.as_ref() == c.manifest.as_slice(),
            "manifest {reference} is byte-identical after restart"
        );
    }
}

/// Streams a body into `path` (PATCH) in a task, and kills valv once `kill_at` bytes
/// were handed to the client. Returns the bytes produced by then.
async fn kill_during_patch(
    valv: &mut Valv,
    request: reqwest::RequestBuilder,
    body_for: impl FnOnce(Arc<AtomicU64>, tokio::sync::oneshot::Sender<()>) -> reqwest::Body,
) -> u64 {
    let produced = Arc::new(AtomicU64::new(0));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let body = body_for(produced.clone(), tx);
    let task = tokio::spawn(request.body(body).send());
    match tokio::time::timeout(KILL_POINT_TIMEOUT, rx).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => panic!("upload stream ended before the kill point"),
        Err(_) => panic!("upload did not reach the kill point within {KILL_POINT_TIMEOUT:?}"),
    }
    valv.kill9();
    let at_kill = produced.load(Ordering::SeqCst);
    match task.await.expect("upload task") {
        Ok(resp) => panic!("the interrupted PATCH got an answer: {}", resp.status()),
        Err(e) => eprintln!(
            "interrupted PATCH failed as expected after {} MiB produced: {e}",
            at_kill / MIB
        ),
    }
    at_kill
}

/// Resumes an upload at `offset` with the rest of `content` (one chunked PATCH with
/// `Content-Range`), closes it with `PUT ?digest=` and checks the blob reads back.
async fn resume_and_finish(
    http: &Client,
    valv: &Valv,
    repo: &str,
    loc: &str,
    content: &Content,
    offset: u64,
) {
    let digest = content.digest();
    let rest = content.len - offset;
    let mut loc = loc.to_owned();
    if rest > 0 {
        let resp = http
            .patch(valv.url(&loc))
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{}-{}", offset, content.len - 1))
            .header("content-length", rest.to_string())
            .body(content.body(offset, rest, Arc::new(AtomicU64::new(0)), None))
            .send()
            .await
            .expect("resume PATCH");
        assert_eq!(
            resp.status(),
            StatusCode::ACCEPTED,
            "resume PATCH at {offset}"
        );
        assert_eq!(
            range_offset(&resp),
            content.len,
            "Range after the resume PATCH"
        );
        loc = location_path(&resp);
    }
    let resp = http
        .put(valv.url(&with_query(&loc, &format!("digest={digest}"))))
        .send()
        .await
        .expect("closing PUT");
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "closing PUT after resume"
    );
    let (got, size) = fetch_digest(http, valv, repo, &digest).await;
    assert_eq!(size, content.len, "size of the resumed blob");
    assert_eq!(got, digest, "digest of the resumed blob");
}

async fn upload_status(http: &Client, valv: &Valv, loc: &str) -> reqwest::Response {
    http.get(valv.url(loc))
        .send()
        .await
        .expect("GET upload status")
}

// ---------------------------------------------------------------------------------

/// A streamed PATCH (no `Content-Range`, as docker sends it) of 512 MiB, killed after
/// more than 300 MiB went out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_streamed_push_keeps_committed_content_and_no_partial_blob() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut valv = Valv::start(dir.path(), &[]);
    let http = client();
    let repo = "e2e/crash";
    let committed = push_committed(&http, &valv, repo).await;

    let content = Content::new(3, 512 * MIB);
    let first = 2 * MIB + 5;
    let loc = start_upload(&http, &valv, repo).await;
    // A first streamed PATCH that completes, so the session has a recorded offset > 0.
    let resp = http
        .patch(valv.url(&loc))
        .header("content-type", "application/octet-stream")
        .body(content.body(0, first, Arc::new(AtomicU64::new(0)), None))
        .send()
        .await
        .expect("first PATCH");
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "first streamed PATCH");
    assert_eq!(range_offset(&resp), first, "Range after the first PATCH");
    let recorded = [0, first];
    let loc = location_path(&resp);

    let request = http
        .patch(valv.url(&loc))
        .header("content-type", "application/octet-stream");
    let produced = kill_during_patch(&mut valv, request, |produced, tx| {
        content.body(first, content.len - first, produced, Some((300 * MIB, tx)))
    })
    .await;
    let sent_upper_bound = first + produced;

    let valv = Valv::start(dir.path(), &[]);
    check_committed(&http, &valv, &committed).await;
    assert_blob_absent(&http, &valv, repo, &content.digest()).await;

    // The session survived the crash: it had a recorded offset (`first`) before the
    // killed PATCH began, its state is in the store, and nothing ended it. A 404 here
    // would be a lost upload.
    let resp = upload_status(&http, &valv, &loc).await;
    assert_eq!(
        resp.status(),
        StatusCode::NO_CONTENT,
        "the interrupted upload's status after the crash"
    );
    let offset = range_offset(&resp);
    // The offsets the client saw recorded are 0 and `first`. A server may also
    // checkpoint inside a streamed PATCH; such an offset is proven by resuming from
    // it (a Content-Range the server must accept as its own offset) and getting the
    // right digest, which resume_and_finish does.
    assert!(
        offset <= sent_upper_bound,
        "recorded offset {offset} is beyond the {sent_upper_bound} bytes sent"
    );
    if recorded.contains(&offset) {
        assert_eq!(offset, first, "the offset went back past the first PATCH");
        eprintln!("after the crash the upload resumes at recorded offset {offset}");
    } else {
        assert!(
            offset > first,
            "offset {offset} went backwards past a recorded one"
        );
        eprintln!("after the crash the upload resumes at a checkpoint inside the streamed PATCH: {offset}");
    }
    // Any other offset is refused with 416 and the session's own Range: the resume
    // can only continue from where the server says it stands.
    let wrong = offset + 1;
    let resp = http
        .patch(valv.url(&loc))
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("{wrong}-{}", wrong + 9))
        .header("content-length", "10")
        .body(content.bytes(wrong, 10))
        .send()
        .await
        .expect("PATCH at a wrong offset");
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        range_offset(&resp),
        offset,
        "the 416 reports the same offset"
    );
    resume_and_finish(&http, &valv, repo, &loc, &content, offset).await;
    // The committed content is still intact after the resumed upload.
    check_committed(&http, &valv, &committed).await;
}

/// A chunked upload (`Content-Range`): the first chunk completes, valv dies during the
/// second; after the restart the status is exactly the first chunk's end and the upload
/// can be finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_second_chunk_resumes_at_first_chunk_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut valv = Valv::start(dir.path(), &[]);
    let http = client();
    let repo = "e2e/crash-chunked";
    let committed = push_committed(&http, &valv, repo).await;

    // Not a multiple of the segment or part size, so a sealed partial tail is recorded.
    let first = 5 * MIB + 3;
    let content = Content::new(4, first + 160 * MIB);
    let loc = start_upload(&http, &valv, repo).await;
    let resp = http
        .patch(valv.url(&loc))
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("0-{}", first - 1))
        .header("content-length", first.to_string())
        .body(content.bytes(0, first as usize))
        .send()
        .await
        .expect("first chunk");
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "first chunk");
    assert_eq!(range_offset(&resp), first, "Range after the first chunk");
    let loc = location_path(&resp);

    let rest = content.len - first;
    let request = http
        .patch(valv.url(&loc))
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("{}-{}", first, content.len - 1))
        .header("content-length", rest.to_string());
    kill_during_patch(&mut valv, request, |produced, tx| {
        content.body(first, rest, produced, Some((96 * MIB, tx)))
    })
    .await;

    let valv = Valv::start(dir.path(), &[]);
    check_committed(&http, &valv, &committed).await;
    assert_blob_absent(&http, &valv, repo, &content.digest()).await;

    let resp = upload_status(&http, &valv, &loc).await;
    assert_eq!(
        resp.status(),
        StatusCode::NO_CONTENT,
        "status of the interrupted chunked upload"
    );
    assert_eq!(
        range_offset(&resp),
        first,
        "the interrupted upload stands at the first chunk's end"
    );
    resume_and_finish(&http, &valv, repo, &loc, &content, first).await;
    check_committed(&http, &valv, &committed).await;
}
