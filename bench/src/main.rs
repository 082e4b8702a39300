//! `valv-bench`: a load generator for OCI registries (valv or any other) that prints one
//! JSON object per run.
//!
//! The point is to measure the *server*, so the client is built to stay out of the way:
//! - all content is generated (and its digests computed) before the clock starts, from a
//!   fast PRNG on all cores;
//! - every concurrency slot owns one persistent HTTP/1.1 connection (keep-alive, reconnected
//!   only after an error), driven by hyper's low-level connection API with `TCP_NODELAY`;
//! - request bodies are `bytes::Bytes` slices of the pre-generated buffers, so hyper hands
//!   them to `writev` without copying;
//! - response bodies are dropped frame by frame (they are slices of hyper's read buffer);
//!   SHA-256 or byte comparison happens only with `--verify`;
//! - the client's own CPU seconds over the timed part are reported, so a reader can see
//!   whether the client was the bottleneck (CPU ≈ elapsed × cores means it was).
//!
//! Errors never abort a run: they are counted and the first few messages are kept.
//!
//! `https://` targets are reached over TLS (HTTP/1.1 by ALPN) trusting the CA of
//! `--ca-file`; `--user` (Basic) or `--token` (Bearer) adds an `Authorization` header to
//! every request, so authenticated and anonymous runs differ in nothing else.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// How many error messages are kept verbatim (the rest are only counted).
const KEPT_ERRORS: usize = 5;

#[derive(Debug, Parser)]
#[command(
    name = "valv-bench",
    about = "Benchmark an OCI registry over HTTP/1.1 (plain or TLS)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Push COUNT distinct random blobs of SIZE bytes with CONCURRENCY in flight.
    Push {
        #[command(flatten)]
        common: Common,
        /// Repository to push into.
        #[arg(long)]
        repo: String,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        size: usize,
        /// Push in PATCH chunks of this many bytes instead of one monolithic PUT.
        #[arg(long)]
        chunk: Option<usize>,
    },
    /// Push COUNT blobs (untimed), then pull them whole, or READS random Range reads.
    Pull {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        repo: String,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        size: usize,
        /// Read ranges of this many bytes instead of whole blobs (needs --reads).
        #[arg(long, requires = "reads")]
        range: Option<usize>,
        /// Number of Range reads, spread at random over the blobs.
        #[arg(long, requires = "range")]
        reads: Option<usize>,
        /// Hash (whole blobs) or compare (ranges) every byte received.
        #[arg(long)]
        verify: bool,
    },
    /// Push one small image per repository with TAGS tags (untimed), then GET random
    /// manifests by tag for DURATION seconds.
    Manifests {
        #[command(flatten)]
        common: Common,
        /// Number of repositories.
        #[arg(long)]
        repos: usize,
        /// Tags per repository.
        #[arg(long)]
        tags: usize,
        /// Seconds to run for.
        #[arg(long)]
        duration: f64,
        /// Repository names are `<prefix>-<i>`.
        #[arg(long, default_value = "bench/manifests")]
        repo_prefix: String,
    },
    /// Exactly one registry operation, untimed setup excluded, so that what it costs
    /// *behind* the registry (object-store requests, counted elsewhere) can be read
    /// before and after it. Content comes from --seed (required) and --size, so a
    /// later `pull` or `manifest-put` with the same seed and size names the same blob.
    Op {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_enum)]
        kind: OpKind,
        #[arg(long)]
        repo: String,
        /// Blob size in bytes: the blob pushed or pulled, or manifest-put's layer.
        #[arg(long, default_value_t = 0)]
        size: usize,
        /// PATCH size for push-chunked.
        #[arg(long, required_if_eq("kind", "push-chunked"))]
        chunk: Option<usize>,
        /// Tag for manifest-put and manifest-get.
        #[arg(long, default_value = "latest")]
        tag: String,
    },
}

/// What `op` does: one client-visible operation each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OpKind {
    /// POST a session, then one PUT `?digest=` with the whole blob (the spec's
    /// monolithic push in two requests, which every registry supports).
    Push,
    /// One POST `?digest=` with the whole blob (the spec's single-request push, which
    /// a registry may answer with a session instead: reported as an error).
    PushPost,
    /// POST a session, PATCHes of --chunk bytes, a closing empty PUT `?digest=`.
    PushChunked,
    /// Push (monolithically) the small JSON config blob that manifest-put names.
    PushConfig,
    /// PUT an image manifest under --tag: the seed's config and blob, which must
    /// have been pushed already (push-config, and push of the same seed and size).
    ManifestPut,
    /// GET the seed's blob whole, verifying its digest.
    Pull,
    /// GET the manifest under --tag.
    ManifestGet,
    /// GET the repository's tag list.
    TagsList,
}

impl Command {
    fn common(&self) -> &Common {
        match self {
            Command::Push { common, .. }
            | Command::Pull { common, .. }
            | Command::Manifests { common, .. }
            | Command::Op { common, .. } => common,
        }
    }
}

#[derive(Debug, clap::Args)]
struct Common {
    /// Registry base URL, `http://host:port` or `https://host:port` (needs --ca-file).
    #[arg(long)]
    url: String,
    /// PEM file of the CA certificates an `https://` target's certificate chains to.
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,
    /// `USER:PASSWORD` sent as Basic authentication on every request.
    #[arg(long, conflicts_with = "token")]
    user: Option<String>,
    /// A bearer token sent on every request (e.g. one from the registry's token
    /// endpoint, fetched before the run).
    #[arg(long)]
    token: Option<String>,
    /// Requests in flight (one persistent connection each).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// PRNG seed for content and choices; defaults to the clock so repeated runs push
    /// new content.
    #[arg(long)]
    seed: Option<u64>,
    /// PID of the registry process (same machine): its CPU seconds over the timed part
    /// and its peak RSS are reported too (from /proc), so setup work is excluded.
    #[arg(long)]
    server_pid: Option<u32>,
}

impl Common {
    fn seed(&self) -> u64 {
        self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x5eed)
        })
    }
}

/// SplitMix64: fast enough that generating content is never what a run waits on, and
/// deterministic per seed so runs are reproducible.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` (n > 0); the modulo bias is irrelevant for load shaping.
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// A pre-generated blob and its digest.
#[derive(Debug, Clone)]
struct Blob {
    data: Bytes,
    digest: String,
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

/// Generates `count` distinct random blobs on all cores (content and digests are the
/// untimed part of every scenario).
fn generate(count: usize, size: usize, seed: u64) -> Vec<Blob> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(count.max(1));
    let next = AtomicUsize::new(0);
    let mut out: Vec<(usize, Blob)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            break mine;
                        }
                        let mut rng =
                            Rng(seed ^ (i as u64 + 1).wrapping_mul(0xd1b5_4a32_d192_ed03));
                        let mut data = vec![0u8; size];
                        let mut words = data.chunks_exact_mut(8);
                        for w in &mut words {
                            w.copy_from_slice(&rng.next_u64().to_le_bytes());
                        }
                        let rest = words.into_remainder();
                        let last = rng.next_u64().to_le_bytes();
                        rest.copy_from_slice(&last[..rest.len()]);
                        let digest = sha256_digest(&data);
                        mine.push((
                            i,
                            Blob {
                                data: Bytes::from(data),
                                digest,
                            },
                        ));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, b)| b).collect()
}

/// Where requests go: the socket address to connect to, the `Host` header to send,
/// TLS for `https://`, and the `Authorization` header, if any.
struct Target {
    addr: SocketAddr,
    host: String,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
    authorization: Option<http::HeaderValue>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials.
        f.debug_struct("Target")
            .field("addr", &self.addr)
            .field("host", &self.host)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Target {
    /// The target `common` names: its URL, `--ca-file` and credentials.
    fn from_common(common: &Common) -> Result<Self, String> {
        let url = common.url.as_str();
        let (tls, rest, default_port) = if let Some(rest) = url.strip_prefix("http://") {
            (false, rest, 80)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (true, rest, 443)
        } else {
            return Err(format!(
                "{url}: only http:// and https:// URLs are supported"
            ));
        };
        let host = rest.split('/').next().unwrap_or("").to_owned();
        if host.is_empty() {
            return Err(format!("{url}: no host"));
        }
        let (name, with_port) = match host.rsplit_once(':') {
            Some((name, p)) if p.parse::<u16>().is_ok() => (name.to_owned(), host.clone()),
            _ => (host.clone(), format!("{host}:{default_port}")),
        };
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&with_port)
            .map_err(|e| format!("{url}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: no address"))?;
        let tls = match (tls, &common.ca_file) {
            (false, _) => None,
            (true, None) => return Err(format!("{url}: an https:// URL needs --ca-file")),
            (true, Some(ca_file)) => {
                let name = name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned();
                let server_name = rustls_pki_types::ServerName::try_from(name)
                    .map_err(|e| format!("{url}: {e}"))?;
                Some((tls_connector(ca_file)?, server_name))
            }
        };
        let authorization = match (&common.user, &common.token) {
            (Some(user), _) => {
                use base64::Engine as _;
                let basic = base64::engine::general_purpose::STANDARD.encode(user);
                Some(format!("Basic {basic}"))
            }
            (None, Some(token)) => Some(format!("Bearer {token}")),
            (None, None) => None,
        }
        .map(|v| http::HeaderValue::try_from(v).map_err(|_| "credentials: not a header value"))
        .transpose()?
        .map(|mut v| {
            v.set_sensitive(true);
            v
        });
        Ok(Self {
            addr,
            host,
            tls,
            authorization,
        })
    }
}

/// A TLS client trusting only the CAs of `ca_file`, offering HTTP/1.1 by ALPN.
fn tls_connector(ca_file: &std::path::Path) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls_pki_types::pem::PemObject as _;
    let what = |e: &dyn std::fmt::Display| format!("--ca-file {}: {e}", ca_file.display());
    let pem = std::fs::read(ca_file).map_err(|e| what(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(cert.map_err(|e| what(&e))?)
            .map_err(|e| what(&e))?;
    }
    if roots.is_empty() {
        return Err(what(&"no certificate in the file"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| what(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// One concurrency slot's persistent HTTP/1.1 connection, re-established lazily after
/// an error (so a failed request costs one reconnect, not the run).
#[derive(Debug)]
struct Client {
    target: Arc<Target>,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// HTTP requests sent (an operation such as a chunked push is several).
    http_requests: u64,
}

impl Client {
    fn new(target: Arc<Target>) -> Self {
        Self {
            target,
            sender: None,
            http_requests: 0,
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = tokio::net::TcpStream::connect(self.target.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.target.addr))?;
        // Small requests (PATCH/PUT headers, GETs) must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let mut builder = hyper::client::conn::http1::Builder::new();
        // Larger reads for large pulls: fewer syscalls per GiB.
        builder.max_buf_size(1 << 20);
        let Some((connector, name)) = &self.target.tls else {
            return handshake(&builder, stream).await;
        };
        let stream = connector
            .connect(name.clone(), stream)
            .await
            .map_err(|e| format!("TLS handshake with {}: {e}", self.target.addr))?;
        handshake(&builder, stream).await
    }

    /// Sends one request; `path` is origin-form (`/v2/...`).
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, String)],
        body: Bytes,
    ) -> Result<Response<Incoming>, String> {
        let mut sender = match self.sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, &self.target.host);
        if let Some(auth) = &self.target.authorization {
            req = req.header(header::AUTHORIZATION, auth.clone());
        }
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| format!("{method} {path}: {e}"))?;
        sender
            .ready()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        self.http_requests += 1;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        // Kept only once the request got a response; the caller drains the body so
        // the connection is reusable.
        self.sender = Some(sender);
        Ok(resp)
    }
}

/// The HTTP/1.1 handshake over `io`, its connection driven on a task of its own.
async fn handshake<T>(
    builder: &hyper::client::conn::http1::Builder,
    io: T,
) -> Result<SendRequest<Full<Bytes>>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = builder
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Reads a response body to the end, passing each frame to `sink`; returns its length.
/// Frames are slices of hyper's read buffer, so nothing is allocated per chunk here.
async fn drain(resp: Response<Incoming>, mut sink: impl FnMut(&[u8])) -> Result<u64, String> {
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading body: {e}"))?;
        if let Ok(data) = frame.into_data() {
            n += data.len() as u64;
            sink(&data);
        }
    }
    Ok(n)
}

/// Turns an unexpected status into an error message with the start of the body.
async fn expect(
    resp: Response<Incoming>,
    want: StatusCode,
    what: &str,
) -> Result<Response<Incoming>, String> {
    if resp.status() == want {
        return Ok(resp);
    }
    let status = resp.status();
    let mut text = Vec::new();
    let _ = drain(resp, |d| {
        if text.len() < 200 {
            text.extend_from_slice(&d[..d.len().min(200 - text.len())]);
        }
    })
    .await;
    Err(format!(
        "{what}: {status} (wanted {want}): {}",
        String::from_utf8_lossy(&text)
    ))
}

/// The origin-form path of an upload `Location` (absolute or path-only).
fn location(resp: &Response<Incoming>, what: &str) -> Result<String, String> {
    let loc = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| format!("{what}: no Location"))?;
    if let Some(rest) = loc
        .strip_prefix("http://")
        .or_else(|| loc.strip_prefix("https://"))
    {
        Ok(rest
            .find('/')
            .map_or("/".to_owned(), |i| rest[i..].to_owned()))
    } else if loc.starts_with('/') {
        Ok(loc.to_owned())
    } else {
        Err(format!("{what}: unsupported Location {loc:?}"))
    }
}

fn with_digest(loc: &str, digest: &str) -> String {
    let sep = if loc.contains('?') { '&' } else { '?' };
    format!("{loc}{sep}digest={digest}")
}

const OCTETS: &str = "application/octet-stream";

/// Pushes one blob: POST, then one PUT with the whole body, or PATCHes of `chunk` bytes
/// and a closing empty PUT. Returns the bytes uploaded.
async fn push_blob(
    client: &mut Client,
    repo: &str,
    blob: &Blob,
    chunk: Option<usize>,
) -> Result<u64, String> {
    let start = format!("/v2/{repo}/blobs/uploads/");
    let resp = client.send(Method::POST, &start, &[], Bytes::new()).await?;
    let resp = expect(resp, StatusCode::ACCEPTED, "POST upload").await?;
    let mut loc = location(&resp, "POST upload")?;
    drain(resp, |_| {}).await?;
    let ctype = (header::CONTENT_TYPE, OCTETS.to_owned());
    let len = blob.data.len();
    let last = match chunk {
        None => blob.data.clone(),
        Some(chunk) => {
            let chunk = chunk.max(1);
            let mut off = 0;
            while off < len {
                let end = (off + chunk).min(len);
                let range = (header::CONTENT_RANGE, format!("{off}-{}", end - 1));
                let resp = client
                    .send(
                        Method::PATCH,
                        &loc,
                        &[ctype.clone(), range],
                        blob.data.slice(off..end),
                    )
                    .await?;
                let resp = expect(resp, StatusCode::ACCEPTED, "PATCH chunk").await?;
                loc = location(&resp, "PATCH chunk")?;
                drain(resp, |_| {}).await?;
                off = end;
            }
            Bytes::new()
        }
    };
    let put = with_digest(&loc, &blob.digest);
    let resp = client.send(Method::PUT, &put, &[ctype], last).await?;
    let resp = expect(resp, StatusCode::CREATED, "PUT upload").await?;
    drain(resp, |_| {}).await?;
    Ok(len as u64)
}

/// Pulls one whole blob; with `verify`, hashes every byte and checks the digest.
async fn pull_blob(
    client: &mut Client,
    repo: &str,
    blob: &Blob,
    verify: bool,
) -> Result<u64, String> {
    let path = format!("/v2/{repo}/blobs/{}", blob.digest);
    let resp = client.send(Method::GET, &path, &[], Bytes::new()).await?;
    let resp = expect(resp, StatusCode::OK, "GET blob").await?;
    let n = if verify {
        let mut h = Sha256::new();
        let n = drain(resp, |d| h.update(d)).await?;
        let got = format!("sha256:{}", hex(&h.finalize()));
        if got != blob.digest {
            return Err(format!("GET blob {}: content hashes to {got}", blob.digest));
        }
        n
    } else {
        drain(resp, |_| {}).await?
    };
    if n != blob.data.len() as u64 {
        return Err(format!(
            "GET blob {}: {n} bytes, wanted {}",
            blob.digest,
            blob.data.len()
        ));
    }
    Ok(n)
}

/// One Range read of `len` bytes at `off`; with `verify`, compares every byte.
async fn read_range(
    client: &mut Client,
    repo: &str,
    blob: &Blob,
    off: usize,
    len: usize,
    verify: bool,
) -> Result<u64, String> {
    let path = format!("/v2/{repo}/blobs/{}", blob.digest);
    let range = (header::RANGE, format!("bytes={off}-{}", off + len - 1));
    let resp = client
        .send(Method::GET, &path, &[range], Bytes::new())
        .await?;
    let resp = expect(resp, StatusCode::PARTIAL_CONTENT, "GET range").await?;
    let want = &blob.data[off..off + len];
    let mut pos = 0usize;
    let mut same = true;
    let n = drain(resp, |d| {
        if verify {
            let end = (pos + d.len()).min(want.len());
            same &= d.len() == end - pos && d == &want[pos..end];
        }
        pos += d.len();
    })
    .await?;
    if n != len as u64 {
        return Err(format!("GET range {off}+{len}: {n} bytes"));
    }
    if !same {
        return Err(format!("GET range {off}+{len}: content differs"));
    }
    Ok(n)
}

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

async fn get_manifest(client: &mut Client, repo: &str, tag: &str) -> Result<u64, String> {
    let path = format!("/v2/{repo}/manifests/{tag}");
    let accept = (header::ACCEPT, MANIFEST_TYPE.to_owned());
    let resp = client
        .send(Method::GET, &path, &[accept], Bytes::new())
        .await?;
    let resp = expect(resp, StatusCode::OK, "GET manifest").await?;
    drain(resp, |_| {}).await
}

/// The spec's single-request push: POST `?digest=` with the whole blob. Fails (as
/// unsupported) if the registry opens a session instead.
async fn push_single_post(client: &mut Client, repo: &str, blob: &Blob) -> Result<u64, String> {
    let path = format!("/v2/{repo}/blobs/uploads/?digest={}", blob.digest);
    let ctype = (header::CONTENT_TYPE, OCTETS.to_owned());
    let resp = client
        .send(Method::POST, &path, &[ctype], blob.data.clone())
        .await?;
    if resp.status() == StatusCode::ACCEPTED {
        drain(resp, |_| {}).await?;
        return Err(
            "POST ?digest=: 202 Accepted, a session: single-request push unsupported".to_owned(),
        );
    }
    let resp = expect(resp, StatusCode::CREATED, "POST ?digest=").await?;
    drain(resp, |_| {}).await?;
    Ok(blob.data.len() as u64)
}

async fn list_tags(client: &mut Client, repo: &str) -> Result<u64, String> {
    let path = format!("/v2/{repo}/tags/list");
    let resp = client.send(Method::GET, &path, &[], Bytes::new()).await?;
    let resp = expect(resp, StatusCode::OK, "GET tags/list").await?;
    drain(resp, |_| {}).await
}

/// Runs one `op`: generates what it names (untimed), then does it once.
async fn run_op(
    target: Arc<Target>,
    kind: OpKind,
    repo: &str,
    size: usize,
    chunk: Option<usize>,
    tag: &str,
    seed: u64,
) -> (Result<u64, String>, u64, f64) {
    let make_blob = || generate(1, size, seed).remove(0);
    let config = config_blob(seed, 0);
    let mut client = Client::new(target);
    let (blob, manifest) = match kind {
        OpKind::Push | OpKind::PushPost | OpKind::PushChunked | OpKind::Pull => {
            (Some(make_blob()), None)
        }
        OpKind::ManifestPut => (None, Some(image_manifest(&config, &make_blob()))),
        OpKind::PushConfig | OpKind::ManifestGet | OpKind::TagsList => (None, None),
    };
    let t0 = Instant::now();
    let result = match (kind, &blob) {
        (OpKind::Push, Some(b)) => push_blob(&mut client, repo, b, None).await,
        (OpKind::PushPost, Some(b)) => push_single_post(&mut client, repo, b).await,
        (OpKind::PushChunked, Some(b)) => push_blob(&mut client, repo, b, chunk).await,
        (OpKind::Pull, Some(b)) => pull_blob(&mut client, repo, b, true).await,
        (OpKind::PushConfig, _) => push_blob(&mut client, repo, &config, None).await,
        (OpKind::ManifestPut, _) => match manifest {
            Some(m) => put_manifest(&mut client, repo, tag, m).await,
            None => Err("no manifest".to_owned()),
        },
        (OpKind::ManifestGet, _) => get_manifest(&mut client, repo, tag).await,
        (OpKind::TagsList, _) => list_tags(&mut client, repo).await,
        (_, None) => Err("no blob".to_owned()),
    };
    (result, client.http_requests, t0.elapsed().as_secs_f64())
}

/// What a timed run does.
#[derive(Debug)]
enum Plan {
    Push {
        repo: String,
        blobs: Vec<Blob>,
        chunk: Option<usize>,
    },
    Pull {
        repo: String,
        blobs: Vec<Blob>,
        verify: bool,
    },
    Ranges {
        repo: String,
        blobs: Vec<Blob>,
        /// (blob index, offset), chosen before timing.
        reads: Vec<(usize, usize)>,
        len: usize,
        verify: bool,
    },
    Manifests {
        repos: Vec<String>,
        tags: usize,
        duration: Duration,
        seed: u64,
    },
}

impl Plan {
    /// Operations for count-based plans; `None` for the timed manifest plan.
    fn total(&self) -> Option<usize> {
        match self {
            Plan::Push { blobs, .. } | Plan::Pull { blobs, .. } => Some(blobs.len()),
            Plan::Ranges { reads, .. } => Some(reads.len()),
            Plan::Manifests { .. } => None,
        }
    }
}

/// What one slot (or, merged, the whole run) observed.
#[derive(Debug, Default)]
struct Tally {
    latencies: Vec<Duration>,
    bytes: u64,
    ops: u64,
    http_requests: u64,
    errors: u64,
    messages: Vec<String>,
}

impl Tally {
    fn error(&mut self, msg: String) {
        self.errors += 1;
        if self.messages.len() < KEPT_ERRORS {
            self.messages.push(msg);
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.bytes += other.bytes;
        self.ops += other.ops;
        self.http_requests += other.http_requests;
        self.errors += other.errors;
        for m in other.messages {
            if self.messages.len() < KEPT_ERRORS {
                self.messages.push(m);
            }
        }
    }
}

/// One concurrency slot: takes operations until the plan is exhausted (or the duration
/// has passed), timing each.
async fn slot(plan: Arc<Plan>, target: Arc<Target>, next: Arc<AtomicUsize>, id: u64) -> Tally {
    let mut client = Client::new(target);
    let mut tally = Tally::default();
    let total = plan.total();
    let started = Instant::now();
    let mut rng = match &*plan {
        Plan::Manifests { seed, .. } => Rng(seed ^ id.wrapping_mul(0xa076_1d64_78bd_642f)),
        _ => Rng(id),
    };
    loop {
        let i = match total {
            Some(total) => {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                i
            }
            None => 0,
        };
        let t0 = Instant::now();
        let result = match &*plan {
            Plan::Push { repo, blobs, chunk } => {
                push_blob(&mut client, repo, &blobs[i], *chunk).await
            }
            Plan::Pull {
                repo,
                blobs,
                verify,
            } => pull_blob(&mut client, repo, &blobs[i], *verify).await,
            Plan::Ranges {
                repo,
                blobs,
                reads,
                len,
                verify,
            } => {
                let (b, off) = reads[i];
                read_range(&mut client, repo, &blobs[b], off, *len, *verify).await
            }
            Plan::Manifests {
                repos,
                tags,
                duration,
                ..
            } => {
                if started.elapsed() >= *duration {
                    break;
                }
                let repo = &repos[rng.below(repos.len())];
                let tag = format!("t{}", rng.below(*tags));
                get_manifest(&mut client, repo, &tag).await
            }
        };
        tally.latencies.push(t0.elapsed());
        tally.ops += 1;
        match result {
            Ok(n) => tally.bytes += n,
            Err(e) => tally.error(e),
        }
    }
    tally.http_requests = client.http_requests;
    tally
}

/// Runs `plan` with `concurrency` slots; returns the merged tally, wall time and the
/// client's CPU seconds over the run.
async fn run(plan: Plan, target: &Arc<Target>, concurrency: usize) -> Timed {
    let plan = Arc::new(plan);
    let next = Arc::new(AtomicUsize::new(0));
    let cpu0 = cpu_seconds();
    let server0 = server_cpu_seconds();
    let t0 = Instant::now();
    let handles: Vec<_> = (0..concurrency.max(1) as u64)
        .map(|id| tokio::spawn(slot(plan.clone(), target.clone(), next.clone(), id)))
        .collect();
    let mut tally = Tally::default();
    for h in handles {
        match h.await {
            Ok(t) => tally.merge(t),
            Err(e) => tally.error(format!("slot panicked: {e}")),
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let server_cpu = server0.and_then(|a| server_cpu_seconds().map(|b| b - a));
    (tally, elapsed, cpu_seconds() - cpu0, server_cpu)
}

/// What [`run`] measured: tally, wall seconds, client CPU seconds, server CPU seconds.
type Timed = (Tally, f64, f64, Option<f64>);

/// The registry's PID, from `--server-pid`.
static SERVER_PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// The registry's user+system CPU seconds, when its PID was given.
fn server_cpu_seconds() -> Option<f64> {
    SERVER_PID
        .get()
        .map(|pid| proc_cpu_seconds(&format!("/proc/{pid}/stat")))
}

/// The registry's peak resident set size (VmHWM) in KiB, when its PID was given.
fn server_peak_rss_kib() -> Option<u64> {
    let pid = SERVER_PID.get()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// This process's user+system CPU seconds (all threads), from /proc/self/stat.
/// USER_HZ is 100 on every Linux architecture the kernel exports to user space.
fn cpu_seconds() -> f64 {
    proc_cpu_seconds("/proc/self/stat")
}

/// User+system CPU seconds of the process whose `stat` file is `path`.
fn proc_cpu_seconds(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return f64::NAN;
    };
    // Fields after the parenthesised command name start at field 3 (state).
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Nearest-rank percentile in milliseconds of sorted durations.
fn percentile_ms(sorted: &[Duration], p: f64) -> Value {
    if sorted.is_empty() {
        return Value::Null;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let d = sorted[rank.clamp(1, sorted.len()) - 1];
    json!(d.as_secs_f64() * 1e3)
}

fn report(scenario: &str, params: Value, setup: Option<Tally>, run: Timed) -> Value {
    let (mut tally, elapsed, cpu, server_cpu) = run;
    tally.latencies.sort_unstable();
    let per_sec = |x: f64| if elapsed > 0.0 { x / elapsed } else { 0.0 };
    let mut out = json!({
        "scenario": scenario,
        "parameters": params,
        "bytes": tally.bytes,
        "requests": tally.ops,
        "http_requests": tally.http_requests,
        "errors": { "count": tally.errors, "first": tally.messages },
        "elapsed_secs": elapsed,
        "throughput": {
            "mb_per_sec": per_sec(tally.bytes as f64 / 1e6),
            "mib_per_sec": per_sec(tally.bytes as f64 / (1u64 << 20) as f64),
            "requests_per_sec": per_sec(tally.ops as f64),
        },
        "latency_ms": {
            "p50": percentile_ms(&tally.latencies, 50.0),
            "p99": percentile_ms(&tally.latencies, 99.0),
            "p99_9": percentile_ms(&tally.latencies, 99.9),
            "max": tally.latencies.last().map(|d| d.as_secs_f64() * 1e3),
        },
        "client_cpu_secs": cpu,
        "client_cpu_per_wall": if elapsed > 0.0 { cpu / elapsed } else { 0.0 },
        "server_cpu_secs": server_cpu,
        "server_cpu_secs_per_gib": server_cpu.map(|c| {
            if tally.bytes > 0 { c / (tally.bytes as f64 / (1u64 << 30) as f64) } else { 0.0 }
        }),
        "server_peak_rss_kib": server_peak_rss_kib(),
    });
    if let Some(s) = setup {
        out["setup"] = json!({
            "requests": s.ops,
            "errors": { "count": s.errors, "first": s.messages },
        });
    }
    out
}

/// The small JSON image config of repository `r` in a run with `seed`.
fn config_blob(seed: u64, r: usize) -> Blob {
    let config = Bytes::from(format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"comment":"valv-bench {seed} {r}"}}"#
    ));
    Blob {
        digest: sha256_digest(&config),
        data: config,
    }
}

/// An OCI image manifest with `config` and one `layer`.
fn image_manifest(config: &Blob, layer: &Blob) -> Bytes {
    Bytes::from(
        json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config.digest,
                "size": config.data.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer.digest,
                "size": layer.data.len(),
            }],
        })
        .to_string(),
    )
}

/// PUTs `manifest` under `tag`; returns its length.
async fn put_manifest(
    client: &mut Client,
    repo: &str,
    tag: &str,
    manifest: Bytes,
) -> Result<u64, String> {
    let len = manifest.len() as u64;
    let path = format!("/v2/{repo}/manifests/{tag}");
    let ctype = (header::CONTENT_TYPE, MANIFEST_TYPE.to_owned());
    let resp = client.send(Method::PUT, &path, &[ctype], manifest).await?;
    let resp = expect(resp, StatusCode::CREATED, "PUT manifest").await?;
    drain(resp, |_| {}).await?;
    Ok(len)
}

/// Untimed setup for `manifests`: per repository one config and one layer blob, then
/// the same manifest under each tag.
async fn setup_manifests(target: &Arc<Target>, repos: &[String], tags: usize, seed: u64) -> Tally {
    let mut client = Client::new(target.clone());
    let mut tally = Tally::default();
    for (r, repo) in repos.iter().enumerate() {
        let config = config_blob(seed, r);
        let layer = generate(1, 1024, seed ^ r as u64).remove(0);
        for blob in [&config, &layer] {
            tally.ops += 1;
            if let Err(e) = push_blob(&mut client, repo, blob, None).await {
                tally.error(e);
            }
        }
        let manifest = image_manifest(&config, &layer);
        for t in 0..tags {
            tally.ops += 1;
            let tag = format!("t{t}");
            if let Err(e) = put_manifest(&mut client, repo, &tag, manifest.clone()).await {
                tally.error(e);
            }
        }
    }
    tally
}

async fn main_async(cli: Cli) -> Result<Value, String> {
    match cli.command {
        Command::Push {
            common,
            repo,
            count,
            size,
            chunk,
        } => {
            let target = Arc::new(Target::from_common(&common)?);
            let seed = common.seed();
            let blobs = generate(count, size, seed);
            let params = json!({
                "url": common.url, "repo": repo, "count": count, "size": size,
                "concurrency": common.concurrency, "chunk": chunk, "seed": seed,
            });
            let scenario = if chunk.is_some() {
                "push-chunked"
            } else {
                "push"
            };
            let result = run(
                Plan::Push { repo, blobs, chunk },
                &target,
                common.concurrency,
            )
            .await;
            Ok(report(scenario, params, None, result))
        }
        Command::Pull {
            common,
            repo,
            count,
            size,
            range,
            reads,
            verify,
        } => {
            let target = Arc::new(Target::from_common(&common)?);
            let seed = common.seed();
            let blobs = generate(count, size, seed);
            let params = json!({
                "url": common.url, "repo": repo, "count": count, "size": size,
                "concurrency": common.concurrency, "range": range, "reads": reads,
                "verify": verify, "seed": seed,
            });
            let (setup, _, _, _) = run(
                Plan::Push {
                    repo: repo.clone(),
                    blobs: blobs.clone(),
                    chunk: None,
                },
                &target,
                common.concurrency,
            )
            .await;
            let (scenario, plan) = match (range, reads) {
                (Some(len), Some(k)) => {
                    if len == 0 || len > size || blobs.is_empty() {
                        return Err(format!("--range must be in 1..={size} and --count > 0"));
                    }
                    let mut rng = Rng(seed ^ 0x7261_6e67_6573);
                    let reads = (0..k)
                        .map(|_| (rng.below(blobs.len()), rng.below(size - len + 1)))
                        .collect();
                    let plan = Plan::Ranges {
                        repo,
                        blobs,
                        reads,
                        len,
                        verify,
                    };
                    ("pull-range", plan)
                }
                _ => (
                    "pull",
                    Plan::Pull {
                        repo,
                        blobs,
                        verify,
                    },
                ),
            };
            let result = run(plan, &target, common.concurrency).await;
            Ok(report(scenario, params, Some(setup), result))
        }
        Command::Op {
            common,
            kind,
            repo,
            size,
            chunk,
            tag,
        } => {
            let target = Arc::new(Target::from_common(&common)?);
            let seed = common
                .seed
                .ok_or("op needs --seed (later ops find the same content by it)")?;
            let name = kind
                .to_possible_value()
                .map(|v| v.get_name().to_owned())
                .unwrap_or_default();
            let params = json!({
                "url": common.url, "kind": name, "repo": repo, "size": size,
                "chunk": chunk, "tag": tag, "seed": seed,
            });
            let (result, http_requests, elapsed) =
                run_op(target, kind, &repo, size, chunk, &tag, seed).await;
            let (bytes, errors) = match result {
                Ok(n) => (n, vec![]),
                Err(e) => (0, vec![e]),
            };
            Ok(json!({
                "scenario": "op",
                "parameters": params,
                "bytes": bytes,
                "http_requests": http_requests,
                "errors": { "count": errors.len(), "first": errors },
                "elapsed_secs": elapsed,
            }))
        }
        Command::Manifests {
            common,
            repos,
            tags,
            duration,
            repo_prefix,
        } => {
            let target = Arc::new(Target::from_common(&common)?);
            let seed = common.seed();
            if repos == 0 || tags == 0 || !(duration.is_finite() && duration >= 0.0) {
                return Err("--repos and --tags must be > 0 and --duration >= 0".to_owned());
            }
            let names: Vec<String> = (0..repos).map(|i| format!("{repo_prefix}-{i}")).collect();
            let params = json!({
                "url": common.url, "repos": repos, "tags": tags, "duration": duration,
                "concurrency": common.concurrency, "repo_prefix": repo_prefix, "seed": seed,
            });
            let setup = setup_manifests(&target, &names, tags, seed).await;
            let plan = Plan::Manifests {
                repos: names,
                tags,
                duration: Duration::from_secs_f64(duration),
                seed,
            };
            let result = run(plan, &target, common.concurrency).await;
            Ok(report("manifests", params, Some(setup), result))
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(pid) = cli.command.common().server_pid {
        let _ = SERVER_PID.set(pid);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("valv-bench: tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main_async(cli)) {
        Ok(out) => {
            println!("{out}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("valv-bench: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
