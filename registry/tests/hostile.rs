//! Hostile clients against the real binary, over real TCP on loopback (issue 16): in
//! each case the other clients' pushes and pulls go on at their normal speed (at most
//! twice their median latency measured just before, plus 5 ms for a loaded 2-core
//! runner), valv's memory stays bounded, and nothing stored is damaged.
//!
//! - 2,000 connections from one client, left idle: the client gets
//!   `server.max_connections_per_client` of them; the rest are answered 429 and closed.
//! - Slow-loris request heads and a body trickled at 1 byte/s; a stalled body is ended
//!   after `server.body_idle_timeout_secs` (408) and its session keeps its offset.
//! - Blobs past `storage.max_blob_bytes`: refused up front when declared, cut when
//!   streamed, by one push or across a session's chunks; nothing of them is kept.
//! - A manifest with 100,000 references: refused by size, and by count under a raised
//!   size limit (`server.max_manifest_references`), before any reference is looked up.
//! - Request heads past `server.max_headers` or `server.max_header_bytes`: 431, closed.
//! - 10,000 upload sessions asked for by one client: it gets
//!   `server.max_upload_sessions_per_client`, and a repository takes no more than
//!   `server.max_upload_sessions_per_repository`; 429 for the rest.
//!
//! The attackers connect from other loopback addresses (127.0.0.2, …): one host, as
//! valv counts clients, distinct from the well-behaved client on 127.0.0.1.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{client, location_path, sha256, Valv};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Room on top of a configured timeout for a loaded 2-core runner.
const SLACK: Duration = Duration::from_secs(10);

fn start(dir: &Path, config: &str) -> Valv {
    let path = dir.join("valv.toml");
    std::fs::write(&path, config).expect("write config");
    let data = dir.join("data");
    Valv::start(&data, &["--config", path.to_str().expect("utf-8")])
}

fn addr(valv: &Valv) -> SocketAddr {
    valv.host().parse().expect("host:port")
}

/// A TCP connection to valv from `source` (a loopback address).
async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::V4(source), 0))
        .expect("bind a loopback source address");
    socket.connect(to).await.expect("connect")
}

/// The median of `f`'s durations over `n` runs.
async fn median<F, Fut>(n: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        f().await;
        times.push(started.elapsed());
    }
    times.sort();
    times[n / 2]
}

/// A well-behaved client's round: a small monolithic push and its pull.
struct Honest {
    http: reqwest::Client,
    base: String,
    round: std::sync::atomic::AtomicU64,
}

impl Honest {
    fn new(valv: &Valv) -> Honest {
        Honest {
            http: client(),
            base: valv.url(""),
            round: Default::default(),
        }
    }

    /// Pushes a fresh 16 KiB blob and pulls it back, byte-identical.
    async fn push_and_pull(&self) {
        let n = self
            .round
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let data: Vec<u8> = (0..16 * 1024u32)
            .map(|i| (i as u64 * 31 + n) as u8)
            .chain(n.to_le_bytes())
            .collect();
        let digest = sha256(&data);
        let r = self
            .http
            .post(format!(
                "{}/v2/honest/app/blobs/uploads/?digest={digest}",
                self.base
            ))
            .body(data.clone())
            .send()
            .await
            .expect("push");
        assert_eq!(r.status(), StatusCode::CREATED, "the honest push");
        let r = self
            .http
            .get(format!("{}/v2/honest/app/blobs/{digest}", self.base))
            .send()
            .await
            .expect("pull");
        assert_eq!(r.status(), StatusCode::OK, "the honest pull");
        assert_eq!(r.bytes().await.expect("body").as_ref(), &data[..]);
    }

    /// The median round now.
    async fn latency(&self) -> Duration {
        median(21, || self.push_and_pull()).await
    }
}

fn assert_normal(before: Duration, during: Duration, what: &str) {
    assert!(
        during <= before * 2 + Duration::from_millis(5),
        "{what}: an honest push+pull took {during:?} (median), against {before:?} before"
    );
}

/// A metric's value from `/metrics` (the first sample of `name`).
async fn metric(valv: &Valv, name: &str) -> f64 {
    let text = client()
        .get(valv.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections_from_one_client_leave_the_others_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The defaults: 4,096 connections, 256 per client.
    let valv = start(dir.path(), "");
    let honest = Honest::new(&valv);
    honest.push_and_pull().await;
    let before = honest.latency().await;
    let rss_before = valv.peak_rss_kib();

    let to = addr(&valv);
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    let mut idle = Vec::with_capacity(2000);
    for _ in 0..2000 {
        idle.push(connect_from(attacker, to).await);
    }
    // valv keeps 256 and refuses the others; wait (bounded) until it has seen them all.
    let deadline = Instant::now() + SLACK;
    while metric(&valv, "valv_http_connections_refused_total").await < 1744.0 {
        assert!(
            Instant::now() < deadline,
            "the 1,744 refusals within {SLACK:?}"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(
        metric(&valv, "valv_http_connections_refused_total").await,
        1744.0
    );

    let during = honest.latency().await;
    assert_normal(before, during, "with 2,000 idle connections open");
    // A refused connection was told why, in a whole response, and closed.
    let mut refused = 0;
    for conn in idle.iter_mut().rev().take(20) {
        let mut got = Vec::new();
        if tokio::time::timeout(SLACK, conn.read_to_end(&mut got))
            .await
            .is_ok_and(|r| r.is_ok())
            && got.starts_with(b"HTTP/1.1 429 Too Many Requests")
        {
            refused += 1;
        }
    }
    assert_eq!(refused, 20, "the last connections were refused with 429");
    let rss = valv.peak_rss_kib();
    eprintln!("2,000 idle connections: peak RSS {rss_before} KiB before, {rss} KiB after");
    assert!(
        rss < rss_before + 64 * 1024,
        "2,000 idle connections grew valv from {rss_before} KiB to {rss} KiB"
    );
    // Freed: the client's connections closed, it may connect again.
    drop(idle);
    let deadline = Instant::now() + SLACK;
    loop {
        let mut conn = connect_from(attacker, to).await;
        conn.write_all(b"GET /v2/ HTTP/1.1\r\nHost: valv\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut got = Vec::new();
        let _ = tokio::time::timeout(SLACK, conn.read_to_end(&mut got)).await;
        if got.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the client served again once its connections closed"
        );
    }
}

/// A streamed chunk's request head, its body to follow.
fn patch_head(path: &str, len: usize) -> String {
    format!(
        "PATCH {path} HTTP/1.1\r\nHost: valv\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {len}\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_and_trickled_or_stalled_bodies_hold_only_themselves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let valv = start(
        dir.path(),
        "[server]\nheader_read_timeout_secs = 2\nbody_idle_timeout_secs = 2\n",
    );
    let honest = Honest::new(&valv);
    honest.push_and_pull().await;
    let before = honest.latency().await;
    let to = addr(&valv);

    // 100 slow-loris heads from one client, a byte now and then.
    let mut lorises = Vec::new();
    for _ in 0..100 {
        let mut c = connect_from(Ipv4Addr::new(127, 0, 0, 3), to).await;
        c.write_all(b"GET /v2/ HTTP/1.1\r\nHo")
            .await
            .expect("write");
        lorises.push(c);
    }
    // An upload body trickled at 1 byte/s, and one that stalls.
    let http = client();
    let session = |repo: &'static str| {
        let http = http.clone();
        let url = valv.url(&format!("/v2/{repo}/blobs/uploads/"));
        async move {
            let r = http.post(url).send().await.expect("start");
            assert_eq!(r.status(), StatusCode::ACCEPTED);
            location_path(&r)
        }
    };
    let trickle_at = session("slow/trickle").await;
    let stall_at = session("slow/stall").await;
    let mut trickle = connect_from(Ipv4Addr::new(127, 0, 0, 4), to).await;
    trickle
        .write_all(patch_head(&trickle_at, 5).as_bytes())
        .await
        .expect("write head");
    let mut stall = connect_from(Ipv4Addr::new(127, 0, 0, 5), to).await;
    stall
        .write_all(patch_head(&stall_at, 1000).as_bytes())
        .await
        .expect("write head");
    stall.write_all(b"abc").await.expect("write 3 bytes");
    let stalled = Instant::now();

    let trickler = tokio::spawn(async move {
        for b in b"hello" {
            trickle.write_all(&[*b]).await.expect("trickle a byte");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let mut got = vec![0u8; 12];
        trickle.read_exact(&mut got).await.expect("answer");
        got
    });
    let during = honest.latency().await;
    assert_normal(before, during, "with slow heads and bodies in flight");

    // The trickle is slow but never idle for 2 s: it is accepted.
    let answer = tokio::time::timeout(SLACK, trickler)
        .await
        .expect("the trickle answered")
        .expect("trickler");
    assert_eq!(
        &answer,
        b"HTTP/1.1 202",
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // The stalled body ends with 408 after the idle timeout; its session is untouched.
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(2) + SLACK, stall.read_to_end(&mut got))
        .await
        .expect("the stalled request ended")
        .expect("read");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("BLOB_UPLOAD_INVALID"), "{text}");
    assert!(stalled.elapsed() >= Duration::from_secs(2));
    let r = http.get(valv.url(&stall_at)).send().await.expect("status");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        r.headers()["range"],
        "0-0",
        "nothing of the stalled chunk kept"
    );
    let r = http
        .get(valv.url(&trickle_at))
        .send()
        .await
        .expect("status");
    assert_eq!(r.headers()["range"], "0-4", "the trickled chunk kept");

    // The slow heads were cut by the header-read timeout, never answered.
    for mut c in lorises {
        let mut got = Vec::new();
        let read = tokio::time::timeout(SLACK, c.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "a slow head cut within the timeout");
        assert!(
            !got.starts_with(b"HTTP/1.1 200"),
            "a slow head was never served"
        );
    }
}

/// `data` as a body of 64 KiB chunks with no declared length (chunked transfer).
fn streamed(data: &[u8]) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

/// A raw answer is the blob limit's 413 `SIZE_INVALID`.
fn assert_too_large(answer: &str) {
    assert!(
        answer.starts_with("HTTP/1.1 413") && answer.contains("SIZE_INVALID"),
        "{answer}"
    );
}

/// Starts a session in `repo` with `data` as its first chunk; returns its path.
async fn session_with(valv: &Valv, repo: &str, data: &[u8]) -> String {
    let http = client();
    let r = http
        .post(valv.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .expect("start");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = http
        .patch(valv.url(&location_path(&r)))
        .header("content-range", format!("0-{}", data.len() - 1))
        .body(data.to_vec())
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    location_path(&r)
}

/// Sends only a request head (`request_line` plus `headers`, each ending in CRLF) and
/// reads the whole answer: what a server that answers before reading the body says.
async fn head_only(valv: &Valv, request_line: &str, headers: &str) -> String {
    let mut c = TcpStream::connect(addr(valv)).await.expect("connect");
    let head = format!("{request_line} HTTP/1.1\r\nHost: valv\r\n{headers}\r\n");
    c.write_all(head.as_bytes()).await.expect("write head");
    let mut got = Vec::new();
    tokio::time::timeout(SLACK, c.read_to_end(&mut got))
        .await
        .expect("answered and closed")
        .expect("read");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_past_the_size_limit_are_refused_and_nothing_of_them_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let valv = start(dir.path(), "[storage]\nmax_blob_bytes = 1048576\n");
    let http = client();
    let big: Vec<u8> = (0..1_048_577u32).map(|i| (i % 253) as u8).collect();
    let digest = sha256(&big);
    let head = |digest: String| {
        let http = http.clone();
        let url = valv.url(&format!("/v2/big/app/blobs/{digest}"));
        async move { http.head(url).send().await.expect("head").status() }
    };
    let is_too_large = |status: StatusCode, body: &str| {
        status == StatusCode::PAYLOAD_TOO_LARGE && body.contains("SIZE_INVALID")
    };

    // Declared: refused before the body is read (the head alone is answered).
    let answer = head_only(
        &valv,
        &format!("POST /v2/big/app/blobs/uploads/?digest={digest}"),
        "Content-Length: 1048577\r\n",
    )
    .await;
    assert_too_large(&answer);
    // Streamed without a length (chunked transfer): cut at the limit.
    let r = http
        .post(valv.url(&format!("/v2/big/app/blobs/uploads/?digest={digest}")))
        .body(streamed(&big))
        .send()
        .await
        .expect("streamed push");
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    assert!(is_too_large(status, &body), "{status} {body}");
    assert_eq!(head(digest.clone()).await, StatusCode::NOT_FOUND);

    // Across a session's chunks: the chunk that passes the limit is refused, the
    // session stays where it was, and what it holds still commits.
    let at = session_with(&valv, "big/app", &big[..600_000]).await;
    let answer = head_only(
        &valv,
        &format!("PATCH {at}"),
        "Content-Range: 600000-1048576\r\nContent-Length: 448577\r\n",
    )
    .await;
    assert_too_large(&answer);
    // A streamed chunk (no declared length) that passes it is cut by the store.
    let r = http
        .patch(valv.url(&at))
        .body(streamed(&big[600_000..]))
        .send()
        .await
        .expect("streamed patch");
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    assert!(is_too_large(status, &body), "{status} {body}");
    let r = http.get(valv.url(&at)).send().await.expect("status");
    assert_eq!(r.headers()["range"], "0-599999");
    let first = &big[..600_000];
    let r = http
        .put(valv.url(&format!("{at}?digest={}", sha256(first))))
        .send()
        .await
        .expect("commit");
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(head(sha256(first)).await, StatusCode::OK);
    // Exactly at the limit is accepted.
    let exact = &big[..1_048_576];
    let r = http
        .post(valv.url(&format!(
            "/v2/big/app/blobs/uploads/?digest={}",
            sha256(exact)
        )))
        .body(exact.to_vec())
        .send()
        .await
        .expect("push at the limit");
    assert_eq!(r.status(), StatusCode::CREATED);
}

/// An image manifest naming `n` layers (all the same blob, which exists).
fn manifest_with(n: usize, config: &str, layer: &str) -> Vec<u8> {
    let layer = format!(
        r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":1}}"#
    );
    let layers = vec![layer.as_str(); n].join(",");
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{layers}]}}"#
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_with_100000_references_is_refused_before_any_is_looked_up() {
    for (config, status) in [
        // By size: 100,000 references are over the default 4 MiB.
        ("", StatusCode::PAYLOAD_TOO_LARGE),
        // By count, under a raised size limit: 10,000 references at most.
        (
            "[server]\nmax_manifest_bytes = 67108864\n",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let valv = start(dir.path(), config);
        let http = client();
        let mut digests = Vec::new();
        for blob in [&b"{}"[..], b"x"] {
            let d = sha256(blob);
            let r = http
                .post(valv.url(&format!("/v2/fan/out/blobs/uploads/?digest={d}")))
                .body(blob.to_vec())
                .send()
                .await
                .expect("push");
            assert_eq!(r.status(), StatusCode::CREATED);
            digests.push(d);
        }
        let manifest = manifest_with(100_000, &digests[0], &digests[1]);
        let started = Instant::now();
        let r = http
            .put(valv.url("/v2/fan/out/manifests/v1"))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest)
            .send()
            .await
            .expect("put");
        let got = r.status();
        let body = r.text().await.unwrap_or_default();
        assert_eq!(got, status, "{config:?}: {body}");
        assert!(body.contains("MANIFEST_INVALID"), "{body}");
        assert!(
            started.elapsed() < SLACK,
            "answered in {:?}",
            started.elapsed()
        );
        let r = http
            .get(valv.url("/v2/fan/out/manifests/v1"))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "nothing stored");
        // At the limit, with one layer named 10,000 times, it is accepted.
        if status == StatusCode::BAD_REQUEST {
            let r = http
                .put(valv.url("/v2/fan/out/manifests/v2"))
                .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                .body(manifest_with(9_999, &digests[0], &digests[1]))
                .send()
                .await
                .expect("put");
            assert_eq!(r.status(), StatusCode::CREATED);
        }
    }
}

/// A client on its own loopback address (127.0.0.x), as valv counts clients.
fn client_from(source: Ipv4Addr) -> reqwest::Client {
    kms_client::install_tls_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(IpAddr::V4(source))
        .build()
        .expect("reqwest client")
}

/// Tries to open `attempts` sessions in `repo`, two at a time; returns how many were
/// opened (202) and the Location of one. Every refusal is the limit's 429.
async fn hoard(http: &reqwest::Client, url: &str, attempts: usize) -> (usize, Option<String>) {
    let tried = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let (http, url, tried) = (http.clone(), url.to_owned(), tried.clone());
            tokio::spawn(async move {
                let (mut opened, mut one) = (0, None);
                while tried.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < attempts {
                    let r = http.post(&url).send().await.expect("start");
                    match r.status() {
                        StatusCode::ACCEPTED => {
                            opened += 1;
                            one = one.or_else(|| Some(location_path(&r)));
                        }
                        StatusCode::TOO_MANY_REQUESTS => {
                            assert!(r.headers().contains_key("retry-after"), "{r:?}");
                            let body = r.text().await.expect("error body");
                            assert!(body.contains("TOOMANYREQUESTS"), "{body}");
                        }
                        other => panic!("opening a session: {other}"),
                    }
                }
                (opened, one)
            })
        })
        .collect();
    let (mut opened, mut one) = (0, None);
    for t in tasks {
        let (n, l) = t.await.expect("hoarder");
        opened += n;
        one = one.or(l);
    }
    (opened, one)
}

/// A session opened and committed by `http` in `repo`: the status of the POST, and of
/// the PUT when the POST opened one.
async fn session_push(valv: &Valv, http: &reqwest::Client, repo: &str) -> StatusCode {
    let r = http
        .post(valv.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .expect("start");
    if r.status() != StatusCode::ACCEPTED {
        return r.status();
    }
    let data = format!("a blob for {repo} at {:?}", Instant::now()).into_bytes();
    let r = http
        .put(valv.url(&format!("{}?digest={}", location_path(&r), sha256(&data))))
        .body(data)
        .send()
        .await
        .expect("commit");
    r.status()
}

/// 10,000 sessions asked for by one client: it gets `server.max_upload_sessions_per_client`
/// (1,000 by default) and 429 for the rest, while the others go on at their normal
/// speed; a second hoarder in the same repository gets what is left of
/// `server.max_upload_sessions_per_repository` (lowered to 1,500 here), after which
/// the repository takes no new session from anyone until one ends, and other
/// repositories take them as ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_upload_sessions_from_one_client_leave_the_others_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let valv = start(
        dir.path(),
        "[server]\nmax_upload_sessions_per_repository = 1500\n",
    );
    let honest = Honest::new(&valv);
    honest.push_and_pull().await;
    let before = honest.latency().await;
    let rss_before = valv.peak_rss_kib();

    let url = valv.url("/v2/hoarder/app/blobs/uploads/");
    let first = client_from(Ipv4Addr::new(127, 0, 0, 2));
    let hoarding = tokio::spawn({
        let (first, url) = (first.clone(), url.clone());
        async move { hoard(&first, &url, 10_000).await }
    });
    let during = honest.latency().await;
    let (opened, one) = hoarding.await.expect("hoarder");
    assert_eq!(opened, 1_000, "the per-client limit");
    assert_normal(before, during, "while one client asks for 10,000 sessions");

    let second = client_from(Ipv4Addr::new(127, 0, 0, 3));
    let (opened, _) = hoard(&second, &url, 1_000).await;
    assert_eq!(opened, 500, "what is left of the repository's 1,500");
    // The repository is full for everyone, the honest client too; others are not.
    let http = client();
    assert_eq!(
        session_push(&valv, &http, "hoarder/app").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        session_push(&valv, &http, "honest/app").await,
        StatusCode::CREATED
    );
    // A session that ends frees its place.
    let r = first
        .delete(valv.url(&one.expect("a session")))
        .send()
        .await
        .expect("cancel");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        session_push(&valv, &http, "hoarder/app").await,
        StatusCode::CREATED
    );

    let after = honest.latency().await;
    assert_normal(before, after, "with 1,500 sessions open");
    let rss = valv.peak_rss_kib();
    eprintln!("10,000 sessions asked for: peak RSS {rss_before} KiB before, {rss} KiB after");
    assert!(
        rss < rss_before + 64 * 1024,
        "hoarded sessions grew valv from {rss_before} KiB to {rss} KiB"
    );
}

/// Sends `head` (a whole request head) and reads the answer until valv closes: a
/// reset after the answer (valv closing with part of a refused head unread) ends it
/// too.
async fn answer_to(valv: &Valv, head: &str) -> String {
    let mut c = TcpStream::connect(addr(valv)).await.expect("connect");
    c.write_all(head.as_bytes()).await.expect("write head");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match c.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("read: {e}"),
            }
        }
    };
    tokio::time::timeout(SLACK, read_all)
        .await
        .expect("answered and closed");
    String::from_utf8_lossy(&got).into_owned()
}

/// Request heads with more headers than `server.max_headers`, or more bytes than
/// `server.max_header_bytes`, are answered 431 and closed; heads within both limits
/// are served. Under the defaults (100 headers: valv leaves hyper's own limit of 100
/// in place rather than set it) and under lowered limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_heads_past_the_header_limits_are_refused() {
    // `n` headers in all, Host and Connection among them, and `extra` bytes of one more.
    let head = |n: usize, big: usize| {
        let mut h = String::from("GET /v2/ HTTP/1.1\r\nHost: valv\r\nConnection: close\r\n");
        for i in 0..n - 2 {
            h.push_str(&format!("x-h{i}: v\r\n"));
        }
        if big > 0 {
            h.push_str(&format!("x-big: {}\r\n", "a".repeat(big)));
        }
        h + "\r\n"
    };
    for (config, count, bytes) in [
        ("", 100, 8 * 1024 + 400 * 1024),
        (
            "[server]\nmax_headers = 20\nmax_header_bytes = 8192\n",
            20,
            8192,
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let valv = start(dir.path(), config);
        let within = answer_to(&valv, &head(count, 0)).await;
        assert!(
            within.starts_with("HTTP/1.1 200"),
            "{count} headers: {within}"
        );
        let over = answer_to(&valv, &head(count + 1, 0)).await;
        assert!(
            over.starts_with("HTTP/1.1 431"),
            "{} headers: {over}",
            count + 1
        );
        let within = answer_to(&valv, &head(3, bytes / 2)).await;
        assert!(
            within.starts_with("HTTP/1.1 200"),
            "a head of {} bytes: {within}",
            bytes / 2
        );
        // hyper checks the limit between reads: a head that ends in the read crossing
        // it passes. Twice the limit is past it under any read size.
        let over = answer_to(&valv, &head(3, 2 * bytes)).await;
        assert!(
            over.starts_with("HTTP/1.1 431"),
            "a head of {} bytes: {over}",
            2 * bytes
        );
        // Nothing of it stuck: the next request is served.
        let r = client()
            .get(valv.url("/v2/"))
            .send()
            .await
            .expect("GET /v2/");
        assert_eq!(r.status(), StatusCode::OK);
    }
}
