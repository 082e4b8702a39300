//! Real registry clients against the real `valv` binary, content compared byte for byte:
//!
//! - docker: a push to a second repository mounts the layers from the first (cross-repo
//!   mount), and a pull whose layer download is cut off resumes with a `Range` request
//!   (through a small forwarding proxy written here);
//! - skopeo: copy from an OCI layout written by hand to valv and back, `inspect`,
//!   `list-tags` and `delete`;
//! - podman: push and pull in Docker schema 2 (`--format v2s2`) and OCI formats;
//! - oras-py: an artifact with custom media types, and referrers (`subject`) listed and
//!   filtered by the referrers API.
//!
//! Like e2e_docker.rs they need tools a plain `cargo test` does not have, so they are
//! `#[ignore]`d; scripts/test.sh runs them with `VALV_E2E=1`, under which a missing
//! daemon or tool is a failure, never a skip. Docker, skopeo and podman talk plain HTTP
//! to registries on 127.0.0.0/8 (skopeo and podman with `--tls-verify=false`).
//!
//! What they need (Debian 12, as root):
//! - Debian packages: `docker.io` (dockerd and a docker CLI), `skopeo`, `podman` (its
//!   dependencies conmon, golang-github-containers-common and runc or crun come with
//!   it; nothing else is needed: podman runs with vfs storage under a temp dir, builds
//!   only `FROM scratch` + `COPY`, and never starts a container), `python3`, `python3-pip`;
//! - pip: `oras==0.2.43` (brings `requests` and `jsonschema`), importable by the
//!   `python3` on `PATH` (Debian 12's own python3 needs `pip install
//!   --break-system-packages`, or a venv first on `PATH`).
//!
//! `VALV_DOCKER` names the docker CLI to use (default: `docker` on `PATH`); `DOCKER_HOST`
//! must point at a daemon (scripts/test.sh starts a private one). The docker, skopeo and
//! podman wrappers and the fetch helpers are shared with e2e_docker.rs and e2e_tls.rs:
//! common/clients.rs.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use common::clients::{
    assert_pushed, assert_served, build_context, config_digest, fetch, fetch_blob, fetch_manifest,
    get_manifest, layers, no_proxy, path_str, push_digest, random_bytes, run_ok, start_valv,
    tool_available, Docker, Images, Podman, Skopeo, DOCKER_MANIFEST, MIB, OCI_INDEX, OCI_MANIFEST,
};
use common::{sha256, Valv};
use reqwest::{Client, StatusCode};

const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

// ---------------------------------------------------------------------------------
// ---------------------------------------------------------------------------------
// Content

/// A ustar archive holding `files` (regular files, mode 0644, owned by root).
fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        assert!(name.len() < 100, "tar name {name:?} fits the header");
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let octal = |h: &mut [u8; 512], at: usize, width: usize, v: u64| {
            let s = format!("{v:0w$o}\0", w = width - 1);
            h[at..at + width].copy_from_slice(s.as_bytes());
        };
        octal(&mut h, 100, 8, 0o644);
        octal(&mut h, 108, 8, 0);
        octal(&mut h, 116, 8, 0);
        octal(&mut h, 124, 12, data.len() as u64);
        octal(&mut h, 136, 12, 1_700_000_000);
        h[148..156].fill(b' ');
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// IEEE CRC-32, as gzip's trailer wants it.
fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, entry) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *entry = c;
    }
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

/// A valid gzip stream of `data` made of stored (uncompressed) deflate blocks: real
/// gzip framing, which is what tools sniff, without a compression library.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut chunks = data.chunks(0xffff).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none()));
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// Every file under `blobs/` of an OCI layout: `sha256/<hex>` → content.
fn layout_blobs(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut blobs = BTreeMap::new();
    let root = dir.join("blobs");
    for alg in std::fs::read_dir(&root).expect("read blobs/") {
        let alg = alg.expect("blobs/ entry").path();
        for blob in std::fs::read_dir(&alg).expect("read blobs/<alg>") {
            let blob = blob.expect("blob entry").path();
            let name = blob
                .strip_prefix(&root)
                .expect("under blobs/")
                .to_string_lossy()
                .into_owned();
            blobs.insert(name, std::fs::read(&blob).expect("read blob"));
        }
    }
    blobs
}

// ---------------------------------------------------------------------------------
// HTTP

/// Checks the config of `manifest` (in `repo`): its media type is `config_type` and
/// valv serves the blob ([`fetch_blob`]), which is returned.
async fn fetch_config(
    http: &Client,
    valv: &Valv,
    repo: &str,
    manifest: &serde_json::Value,
    config_type: &str,
    what: &str,
) -> Vec<u8> {
    assert_eq!(
        manifest["config"]["mediaType"].as_str(),
        Some(config_type),
        "{what}: config media type"
    );
    fetch_blob(http, valv, repo, &config_digest(manifest)).await
}

// ---------------------------------------------------------------------------------
// A forwarding proxy that cuts one download short

/// One request the proxy forwarded.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// The request target as sent (path and query).
    target: String,
    range: Option<String>,
    /// valv's status code.
    status: u16,
    /// The body was cut off after `CutProxy::cut_after` bytes and the connection closed.
    cut: bool,
}

#[derive(Debug)]
struct ProxyState {
    upstream: SocketAddr,
    /// Request target whose first successful GET is cut short.
    cut_target: String,
    cut_after: u64,
    cut_done: AtomicBool,
    stop: AtomicBool,
    seen: Mutex<Vec<Seen>>,
    /// Client connections, shut down when the proxy is dropped.
    clients: Mutex<Vec<TcpStream>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking connection thread must not hide what the others recorded.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An HTTP/1.1 forwarding proxy on 127.0.0.1 in front of valv.
///
/// Each request read from a client connection (which stays open for the next one:
/// clients reuse connections) is sent upstream on a fresh connection with `Connection:
/// close`, and the response is relayed back, framed by its `Content-Length` or chunked
/// encoding, or read to EOF (which then closes the client connection too). The first
/// 200 response to a GET of `cut_target` is relayed only up to `cut_after` body bytes,
/// then the client connection is closed: a download interrupted mid-layer.
/// `Expect: 100-continue` is not supported; the clients here do not send it.
#[derive(Debug)]
struct CutProxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    accept: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Clone, Copy)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    ToEof,
}

type Head = (String, Vec<(String, String)>);

const MAX_HEAD: usize = 64 * 1024;

impl CutProxy {
    fn start(upstream: &str, cut_target: String, cut_after: u64) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy on 127.0.0.1");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(ProxyState {
            upstream: upstream.parse().expect("valv's host is ip:port"),
            cut_target,
            cut_after,
            cut_done: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            seen: Mutex::new(Vec::new()),
            clients: Mutex::new(Vec::new()),
        });
        let accept_state = Arc::clone(&state);
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if accept_state.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                if let Ok(clone) = conn.try_clone() {
                    lock(&accept_state.clients).push(clone);
                }
                let state = Arc::clone(&accept_state);
                std::thread::spawn(move || {
                    if let Err(e) = serve_connection(conn, &state) {
                        eprintln!("proxy: connection ended with {e}");
                    }
                });
            }
        });
        CutProxy {
            addr,
            state,
            accept: Some(accept),
        }
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }

    fn seen(&self) -> Vec<Seen> {
        lock(&self.state.seen).clone()
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees `stop`.
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        // Ends the connection threads: their next read or write fails.
        for conn in lock(&self.state.clients).drain(..) {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Connection-scoped headers, which the proxy sets itself on each hop.
fn hop_by_hop(name: &str) -> bool {
    ["connection", "keep-alive", "proxy-connection"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Reads a request or status line and its header fields, up to the blank line. `None`
/// at EOF before the first byte (the peer closed an idle connection).
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut lines: Vec<String> = Vec::new();
    let mut total = 0;
    loop {
        let mut line = Vec::new();
        let n = r
            .by_ref()
            .take((MAX_HEAD - total) as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return if lines.is_empty() && total == 0 {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        total += n;
        if total > MAX_HEAD {
            return Err(invalid("message head over 64 KiB"));
        }
        let line = String::from_utf8(line).map_err(|_| invalid("non-UTF-8 message head"))?;
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        lines.push(line.to_owned());
    }
    let mut lines = lines.into_iter();
    let first = lines.next().ok_or_else(|| invalid("empty message head"))?;
    let headers = lines
        .map(|l| {
            l.split_once(':')
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| invalid(format!("malformed header line {l:?}")))
        })
        .collect::<io::Result<_>>()?;
    Ok(Some((first, headers)))
}

/// How a message's body is delimited (RFC 9112 §6.3); `no_length` is the framing when
/// neither chunked encoding nor a length is given.
fn framing(headers: &[(String, String)], no_length: Framing) -> io::Result<Framing> {
    if header(headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        return Ok(Framing::Chunked);
    }
    match header(headers, "content-length") {
        Some(v) => v
            .parse()
            .map(Framing::Length)
            .map_err(|_| invalid(format!("bad Content-Length {v:?}"))),
        None => Ok(no_length),
    }
}

/// Copies exactly `n` bytes.
fn copy_exact(from: &mut impl Read, to: &mut impl Write, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut from.take(n), to)?;
    if copied < n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("body ended after {copied} of {n} bytes"),
        ));
    }
    Ok(())
}

/// Relays one message body as it is on the wire (chunk framing included).
fn relay_body(from: &mut impl BufRead, to: &mut impl Write, framing: Framing) -> io::Result<()> {
    match framing {
        Framing::Empty => Ok(()),
        Framing::Length(n) => copy_exact(from, to, n),
        Framing::ToEof => io::copy(from, to).map(drop),
        Framing::Chunked => loop {
            let mut line = Vec::new();
            from.by_ref().take(4096).read_until(b'\n', &mut line)?;
            to.write_all(&line)?;
            let text = std::str::from_utf8(&line).map_err(|_| invalid("bad chunk size line"))?;
            let size = text.split(';').next().unwrap_or_default().trim();
            let size = u64::from_str_radix(size, 16)
                .map_err(|_| invalid(format!("bad chunk size {size:?}")))?;
            if size == 0 {
                // Trailer fields, up to the blank line.
                loop {
                    let mut trailer = Vec::new();
                    if from.by_ref().take(4096).read_until(b'\n', &mut trailer)? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    to.write_all(&trailer)?;
                    if trailer == b"\r\n" || trailer == b"\n" {
                        return Ok(());
                    }
                }
            }
            // The chunk and its CRLF.
            copy_exact(from, to, size + 2)?;
        },
    }
}

fn serve_connection(client: TcpStream, state: &ProxyState) -> io::Result<()> {
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    loop {
        // Anything that does not start like an HTTP request (docker's TLS ClientHello
        // when it probes https first) is answered by closing, as a plain HTTP server
        // would, so the client falls back to http.
        match from_client.fill_buf()? {
            [] => return Ok(()),
            [first, ..] if !first.is_ascii_uppercase() => return Ok(()),
            _ => {}
        }
        let Some((request_line, headers)) = read_head(&mut from_client)? else {
            return Ok(());
        };
        let mut parts = request_line.split(' ');
        let (method, target, version) = match (parts.next(), parts.next(), parts.next()) {
            (Some(m), Some(t), Some(v)) => (m.to_owned(), t.to_owned(), v.to_owned()),
            _ => return Err(invalid(format!("bad request line {request_line:?}"))),
        };
        let client_closes = version == "HTTP/1.0"
            || header(&headers, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));

        let upstream = TcpStream::connect(state.upstream)?;
        let mut to_upstream = io::BufWriter::new(upstream.try_clone()?);
        let mut head = format!("{request_line}\r\n");
        for (name, value) in headers.iter().filter(|(n, _)| !hop_by_hop(n)) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("Connection: close\r\n\r\n");
        to_upstream.write_all(head.as_bytes())?;
        relay_body(
            &mut from_client,
            &mut to_upstream,
            framing(&headers, Framing::Empty)?,
        )?;
        to_upstream.flush()?;
        drop(to_upstream);

        let mut from_upstream = BufReader::new(upstream);
        let (status_line, resp_headers) = read_head(&mut from_upstream)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "valv closed without answering",
            )
        })?;
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
        let body = if method == "HEAD" || status == 204 || status == 304 {
            Framing::Empty
        } else {
            framing(&resp_headers, Framing::ToEof)?
        };
        let cut = method == "GET"
            && target == state.cut_target
            && status == 200
            && matches!(body, Framing::Length(n) if n > state.cut_after)
            && !state.cut_done.swap(true, Ordering::SeqCst);
        lock(&state.seen).push(Seen {
            method: method.clone(),
            target: target.clone(),
            range: header(&headers, "range").map(str::to_owned),
            status,
            cut,
        });

        let close = cut || client_closes || matches!(body, Framing::ToEof);
        let mut head = format!("{status_line}\r\n");
        for (name, value) in resp_headers.iter().filter(|(n, _)| !hop_by_hop(n)) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        to_client.write_all(head.as_bytes())?;
        if cut {
            copy_exact(&mut from_upstream, &mut to_client, state.cut_after)?;
            to_client.flush()?;
            // Only part of the promised Content-Length has been sent: close now.
            return to_client.shutdown(Shutdown::Both);
        }
        relay_body(&mut from_upstream, &mut to_client, body)?;
        to_client.flush()?;
        if close {
            return to_client.shutdown(Shutdown::Write);
        }
    }
}

// ---------------------------------------------------------------------------------
// oras-py

/// Runs one oras-py operation described by a JSON spec (`op`: `push` or `pull`) and
/// writes its result as JSON. oras-py 0.2.43 has no way to set a manifest's
/// `artifactType`, so the subclass adds it just before the manifest is uploaded; the
/// push itself is oras-py's.
const ORAS_SCRIPT: &str = r#"
import hashlib, json, os, sys
import oras.oci, oras.provider

class Registry(oras.provider.Registry):
    artifact_type = None

    def upload_manifest(self, manifest, container):
        if self.artifact_type:
            manifest["artifactType"] = self.artifact_type
        return super().upload_manifest(manifest, container)

with open(sys.argv[1]) as f:
    spec = json.load(f)
reg = Registry(hostname=spec["host"], insecure=True)
if spec["op"] == "push":
    reg.artifact_type = spec.get("artifact_type")
    subject = oras.oci.Subject(**spec["subject"]) if spec.get("subject") else None
    # oras-py wants the files relative to the working directory.
    os.chdir(spec["dir"])
    resp = reg.push(
        target=spec["target"],
        files=spec["files"],
        manifest_config=spec.get("config"),
        manifest_annotations=spec.get("annotations"),
        subject=subject,
        quiet=True,
    )
    body = resp.request.body
    if isinstance(body, str):
        body = body.encode()
    result = {
        "status": resp.status_code,
        "digest": resp.headers.get("Docker-Content-Digest"),
        "oci_subject": resp.headers.get("OCI-Subject"),
        "sent_digest": "sha256:" + hashlib.sha256(body).hexdigest(),
        "sent_size": len(body),
    }
elif spec["op"] == "pull":
    files = reg.pull(target=spec["target"], outdir=spec["outdir"])
    result = {"files": sorted(os.path.relpath(f, spec["outdir"]) for f in files)}
else:
    raise SystemExit("unknown op " + spec["op"])
with open(sys.argv[2], "w") as f:
    json.dump(result, f)
"#;

fn oras(spec: serde_json::Value) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spec_file, result_file) = (dir.path().join("spec.json"), dir.path().join("out.json"));
    std::fs::write(&spec_file, spec.to_string()).expect("write oras spec");
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(ORAS_SCRIPT)
        .arg(&spec_file)
        .arg(&result_file)
        .stdin(Stdio::null());
    run_ok(no_proxy(&mut cmd));
    let out = std::fs::read(&result_file).expect("the oras script writes its result");
    serde_json::from_slice(&out).expect("oras result is JSON")
}

// ---------------------------------------------------------------------------------
// Tests

/// docker pushes an image to `a/img`, then the same image as `b/img`: every layer is
/// "Mounted from a/img" (valv answered the mount POST with 201), none is uploaded
/// again, `b/img` serves each blob byte for byte, and a pull of `b/img` after `docker
/// rmi` gives back the same files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs dockerd: run by scripts/test.sh"]
async fn docker_push_to_a_second_repository_mounts_the_layers_of_the_first() {
    let Some(docker) = Docker::connect() else {
        return;
    };
    let (_data, valv, http) = start_valv();
    let host = valv.host().to_owned();

    let one = random_bytes(101, 3 * MIB + 7);
    let two = random_bytes(102, 2 * MIB);
    let files: [(&str, &[u8]); 3] = [
        ("/data/one.bin", &one),
        ("/data/two.bin", &two),
        ("/etc/mount.txt", b"mounted across repositories\n"),
    ];
    let ctx = build_context(&files);
    let (a, b) = (format!("{host}/a/img:1"), format!("{host}/b/img:1"));
    let mut images = Images::new(&docker);
    images.track(&a);
    images.track(&b);

    docker.ok(&["build", "-q", "-t", &a, path_str(ctx.path())]);
    let pushed_a = push_digest(&docker.ok(&["push", &a]));
    docker.ok(&["tag", &a, &b]);
    let out_b = docker.ok(&["push", &b]);
    let pushed_b = push_digest(&out_b);
    assert_eq!(pushed_b, pushed_a, "the same manifest is pushed to both");

    let (got, manifest) = fetch_manifest(&http, &valv, "b/img", "1").await;
    assert_eq!(
        sha256(&got.body),
        pushed_b,
        "b/img:1 is the pushed manifest"
    );
    let layers = layers(&manifest);
    assert_eq!(layers.len(), files.len(), "one layer per COPY");
    let mounted = out_b
        .lines()
        .filter(|l| l.trim_end().ends_with(": Mounted from a/img"))
        .count();
    assert_eq!(
        mounted,
        layers.len(),
        "every layer of b/img is mounted from a/img:\n{out_b}"
    );
    assert!(
        !out_b.lines().any(|l| l.trim_end().ends_with(": Pushed")),
        "no layer is uploaded again to b/img:\n{out_b}"
    );

    let config = config_digest(&manifest);
    let mut blobs = vec![config];
    blobs.extend(layers.iter().map(|(_, d, _)| d.clone()));
    for digest in &blobs {
        let in_b = fetch_blob(&http, &valv, "b/img", digest).await;
        let in_a = fetch_blob(&http, &valv, "a/img", digest).await;
        assert!(
            in_a == in_b,
            "blob {digest} is the same bytes in b/img as in a/img"
        );
    }

    images.remove(&a);
    images.remove(&b);
    docker.ok(&["pull", &b]);
    docker.assert_files(&b, &files, "docker pull of b/img after the mount");
}

/// docker pulls through a proxy that cuts the first download of a 32 MiB layer after
/// 8 MiB; docker retries and asks for the rest with `Range: bytes=8388608-`, valv
/// answers 206, and the pulled files are byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs dockerd: run by scripts/test.sh"]
async fn docker_pull_resumes_an_interrupted_layer_download_with_a_range_request() {
    let Some(docker) = Docker::connect() else {
        return;
    };
    let (_data, valv, http) = start_valv();
    let host = valv.host().to_owned();

    let big = random_bytes(201, 32 * MIB);
    let files: [(&str, &[u8]); 2] = [
        ("/data/big.bin", &big),
        ("/etc/resume.txt", b"resumed with a range request\n"),
    ];
    let ctx = build_context(&files);
    let direct = format!("{host}/r/resume:1");
    let mut images = Images::new(&docker);
    images.track(&direct);
    docker.ok(&["build", "-q", "-t", &direct, path_str(ctx.path())]);
    push_digest(&docker.ok(&["push", &direct]));

    let (_, manifest) = fetch_manifest(&http, &valv, "r/resume", "1").await;
    let (_, big_layer, big_size) = layers(&manifest)
        .into_iter()
        .max_by_key(|l| l.2)
        .expect("the manifest has layers");
    assert!(
        big_size > big.len() as u64,
        "the biggest layer holds the 32 MiB file"
    );
    let blob_target = format!("/v2/r/resume/blobs/{big_layer}");
    let cut_after = 8 * MIB as u64;
    let proxy = CutProxy::start(&host, blob_target.clone(), cut_after);
    let via_proxy = format!("{}/r/resume:1", proxy.host());
    images.track(&via_proxy);

    images.remove(&direct);
    docker.ok(&["pull", &via_proxy]);

    let seen = proxy.seen();
    let blob_gets: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.method == "GET" && s.target == blob_target)
        .collect();
    let log = seen
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!("proxy saw:\n{log}");
    assert!(
        blob_gets.len() >= 2,
        "docker fetched the cut layer again after the interruption; proxy saw:\n{log}"
    );
    let (first, retry) = (blob_gets[0], blob_gets[1]);
    assert!(
        first.cut && first.status == 200 && first.range.is_none(),
        "the first GET of the layer is a whole-blob 200, cut after {cut_after} bytes: {first:?}"
    );
    assert_eq!(
        retry.range.as_deref(),
        Some(format!("bytes={cut_after}-").as_str()),
        "docker resumes where the cut download ended; proxy saw:\n{log}"
    );
    assert_eq!(
        retry.status, 206,
        "valv answers the resumed download with 206 Partial Content"
    );
    assert_eq!(
        blob_gets.len(),
        2,
        "one resumed request completes the layer; proxy saw:\n{log}"
    );

    docker.assert_files(&via_proxy, &files, "docker pull resumed with Range");
}

/// skopeo copies an OCI layout written here (two gzip layers of random data) to valv
/// under three tags and back to a second layout: the manifest and every blob come back
/// byte for byte; `inspect` reports the digest and layers; `list-tags` the three tags;
/// after `delete` by digest the manifest is gone (404).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs skopeo: run by scripts/test.sh"]
async fn skopeo_copies_an_oci_layout_both_ways_and_inspects_lists_and_deletes() {
    let Some(skopeo) = Skopeo::find() else { return };
    let (_data, valv, http) = start_valv();
    let host = valv.host().to_owned();

    // The source layout.
    let src = tempfile::tempdir().expect("tempdir");
    let blob_dir = src.path().join("blobs/sha256");
    std::fs::create_dir_all(&blob_dir).expect("create blobs/sha256");
    let write_blob = |bytes: &[u8]| -> (String, u64) {
        let digest = sha256(bytes);
        let hex = digest.trim_start_matches("sha256:");
        std::fs::write(blob_dir.join(hex), bytes).expect("write blob");
        (digest, bytes.len() as u64)
    };
    let layer_files = [
        vec![("data/first.bin", random_bytes(301, MIB + 123))],
        vec![
            ("data/second.bin", random_bytes(302, 300 * 1024)),
            ("etc/skopeo.txt", b"copied by skopeo\n".to_vec()),
        ],
    ];
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    for files in &layer_files {
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (*n, d.as_slice())).collect();
        let tar = tar(&refs);
        diff_ids.push(sha256(&tar));
        let (digest, size) = write_blob(&gzip_stored(&tar));
        layer_descs
            .push(serde_json::json!({"mediaType": OCI_LAYER_GZIP, "digest": digest, "size": size}));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "created": "2024-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("config JSON");
    let (config_digest, config_size) = write_blob(&config);
    let manifest = serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": layer_descs,
        "annotations": {"org.valv.test": "skopeo"},
    }))
    .expect("manifest JSON");
    let (manifest_digest, manifest_size) = write_blob(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": "v1"},
        }],
    });
    std::fs::write(src.path().join("index.json"), index.to_string()).expect("write index.json");
    std::fs::write(
        src.path().join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("write oci-layout");
    let src_blobs = layout_blobs(src.path());

    // Up to valv, under three tags.
    let repo = format!("{host}/sk/img");
    let tags = ["v1", "v2", "v3"];
    for tag in tags {
        skopeo.ok(&[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", path_str(src.path())),
            &format!("docker://{repo}:{tag}"),
        ]);
    }
    for tag in tags {
        let (got, _) = fetch_manifest(&http, &valv, "sk/img", tag).await;
        assert_pushed(
            &got,
            OCI_MANIFEST,
            &manifest_digest,
            &format!("sk/img:{tag}"),
        );
        assert!(
            got.body == manifest,
            "sk/img:{tag} is the layout's manifest byte for byte"
        );
    }
    for (name, bytes) in &src_blobs {
        let digest = format!("sha256:{}", name.trim_start_matches("sha256/"));
        if digest == manifest_digest {
            continue;
        }
        let served = fetch_blob(&http, &valv, "sk/img", &digest).await;
        assert!(
            served == *bytes,
            "blob {digest} is served as written in the layout"
        );
    }

    // And back down to a fresh layout.
    let dst = tempfile::tempdir().expect("tempdir");
    let dst_layout = dst.path().join("layout");
    skopeo.ok(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{repo}:v1"),
        &format!("oci:{}:v1", path_str(&dst_layout)),
    ]);
    let dst_index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dst_layout.join("index.json")).expect("read copied index.json"),
    )
    .expect("copied index.json is JSON");
    assert_eq!(
        dst_index["manifests"][0]["digest"].as_str(),
        Some(manifest_digest.as_str()),
        "the copied layout's index points at the same manifest"
    );
    let dst_blobs = layout_blobs(&dst_layout);
    assert_eq!(
        dst_blobs.keys().collect::<Vec<_>>(),
        src_blobs.keys().collect::<Vec<_>>(),
        "the copied layout holds the same blobs"
    );
    for (name, bytes) in &src_blobs {
        assert!(
            dst_blobs[name] == *bytes,
            "blob {name} is byte-identical after the round trip"
        );
    }

    let inspect: serde_json::Value = serde_json::from_str(&skopeo.ok(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{repo}:v1"),
    ]))
    .expect("skopeo inspect prints JSON");
    assert_eq!(
        inspect["Digest"].as_str(),
        Some(manifest_digest.as_str()),
        "skopeo inspect: Digest"
    );
    let want_layers: Vec<&str> = layer_descs
        .iter()
        .map(|l| l["digest"].as_str().expect("digest"))
        .collect();
    assert_eq!(
        inspect["Layers"],
        serde_json::json!(want_layers),
        "skopeo inspect: Layers"
    );
    assert_eq!(
        (inspect["Os"].as_str(), inspect["Architecture"].as_str()),
        (Some("linux"), Some("amd64")),
        "skopeo inspect reads the config"
    );

    let listed: serde_json::Value = serde_json::from_str(&skopeo.ok(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{repo}"),
    ]))
    .expect("skopeo list-tags prints JSON");
    let listed: BTreeSet<&str> = listed["Tags"]
        .as_array()
        .expect("list-tags: Tags")
        .iter()
        .map(|t| t.as_str().expect("tag is a string"))
        .collect();
    assert_eq!(listed, BTreeSet::from(tags), "skopeo list-tags");

    skopeo.ok(&[
        "delete",
        "--tls-verify=false",
        &format!("docker://{repo}@{manifest_digest}"),
    ]);
    for reference in [manifest_digest.as_str(), "v1"] {
        let got = get_manifest(&http, &valv, "sk/img", reference).await;
        assert_eq!(
            got.status,
            StatusCode::NOT_FOUND,
            "GET sk/img manifest {reference} after skopeo delete"
        );
    }
}

/// podman pushes one image as Docker schema 2 (`--format v2s2`) and another as OCI;
/// valv serves each manifest with that media type and the pushed digest; after
/// removing everything locally, podman pulls each back and the files are the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs podman: run by scripts/test.sh"]
async fn podman_pushes_and_pulls_docker_v2s2_and_oci_images() {
    let Some(podman) = Podman::find() else { return };
    let (_data, valv, http) = start_valv();
    let host = valv.host().to_owned();

    let formats = [
        ("v2s2", DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER),
        ("oci", OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP),
    ];
    for (i, (format, manifest_type, config_type, layer_type)) in formats.into_iter().enumerate() {
        let payload = random_bytes(400 + i as u64, 2 * MIB + i);
        let label = format!("pushed by podman as {format}\n");
        let files: [(&str, &[u8]); 2] = [
            ("/data/payload.bin", &payload),
            ("/etc/format.txt", label.as_bytes()),
        ];
        let ctx = build_context(&files);
        let repo = format!("pm/{format}");
        let image = format!("{host}/{repo}:1");
        podman.ok(&[
            "build",
            "-q",
            "--signature-policy",
            podman.policy(),
            "-t",
            &image,
            path_str(ctx.path()),
        ]);
        let digest_file = ctx.path().join("pushed.digest");
        podman.ok(&[
            "push",
            "--tls-verify=false",
            "--signature-policy",
            podman.policy(),
            "--format",
            format,
            "--digestfile",
            path_str(&digest_file),
            &image,
        ]);
        let pushed = std::fs::read_to_string(&digest_file).expect("podman writes the digest file");
        let pushed = pushed.trim();

        let (got, manifest) = fetch_manifest(&http, &valv, &repo, "1").await;
        assert_pushed(
            &got,
            manifest_type,
            pushed,
            &format!("podman --format {format}"),
        );
        fetch_config(&http, &valv, &repo, &manifest, config_type, format).await;
        let layers = layers(&manifest);
        assert_eq!(layers.len(), files.len(), "{format}: one layer per COPY");
        for (media_type, digest, size) in &layers {
            assert_eq!(media_type, layer_type, "{format}: layer media type");
            let blob = fetch_blob(&http, &valv, &repo, digest).await;
            assert_eq!(blob.len() as u64, *size, "{format}: layer {digest} size");
        }

        podman.ok(&["rmi", "--all", "--force"]);
        assert!(
            !podman.image_exists(&image),
            "{image} is gone after podman rmi"
        );
        podman.ok(&[
            "pull",
            "--tls-verify=false",
            "--signature-policy",
            podman.policy(),
            &image,
        ]);
        podman.assert_files(
            &image,
            &files,
            &format!("podman pull of the {format} image"),
        );
        podman.ok(&["rmi", "--all", "--force"]);
    }
}

/// oras-py pushes an artifact with custom layer and config media types and pulls it
/// back byte for byte; then two artifacts whose `subject` is the first: the referrers
/// API lists both with their artifactType and annotations, and `?artifactType=` keeps
/// only the matching one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3 with oras 0.2.43: run by scripts/test.sh"]
async fn oras_py_pushes_custom_artifacts_and_referrers() {
    let Some(()) = tool_available("python3", &["-c", "import oras.provider"]) else {
        return;
    };
    let (_data, valv, http) = start_valv();
    let host = valv.host().to_owned();
    let repo = "or/art";
    let target = |tag: &str| format!("{host}/{repo}:{tag}");

    const LAYER_TYPE: &str = "application/vnd.valv.test.layer.v1+tar";
    const NOTES_TYPE: &str = "application/vnd.valv.test.notes.v1+txt";
    const CONFIG_TYPE: &str = "application/vnd.valv.test.config.v1+json";
    const SIGNATURE: &str = "application/vnd.valv.test.signature.v1";
    const SBOM: &str = "application/vnd.valv.test.sbom.v1";

    // The artifact.
    let work = tempfile::tempdir().expect("tempdir");
    let model = random_bytes(501, 3 * MIB / 2 + 5);
    let notes = b"an artifact pushed by oras-py\n".to_vec();
    let config = br#"{"valv":"oras test config"}"#.to_vec();
    std::fs::write(work.path().join("model.bin"), &model).expect("write model.bin");
    std::fs::write(work.path().join("notes.txt"), &notes).expect("write notes.txt");
    std::fs::write(work.path().join("config.json"), &config).expect("write config.json");
    let pushed = oras(serde_json::json!({
        "op": "push",
        "host": host,
        "target": target("v1"),
        "dir": path_str(work.path()),
        "files": [format!("model.bin:{LAYER_TYPE}"), format!("notes.txt:{NOTES_TYPE}")],
        "config": format!("config.json:{CONFIG_TYPE}"),
        "annotations": {"org.valv.test": "artifact"},
    }));
    assert_eq!(pushed["status"], 201, "oras push: manifest PUT status");
    let subject_digest = pushed["digest"]
        .as_str()
        .expect("Docker-Content-Digest on the manifest PUT")
        .to_owned();
    assert_eq!(
        pushed["sent_digest"].as_str(),
        Some(subject_digest.as_str()),
        "valv's digest is that of the bytes oras-py sent"
    );

    let (got, manifest) = fetch_manifest(&http, &valv, repo, "v1").await;
    assert_served(&got, OCI_MANIFEST, &subject_digest, "or/art:v1");
    let served_config = fetch_config(&http, &valv, repo, &manifest, CONFIG_TYPE, "oras").await;
    assert!(served_config == config, "the config blob is config.json");
    let layer_types: Vec<(String, Option<&str>)> = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            (
                l["mediaType"].as_str().expect("mediaType").to_owned(),
                l["annotations"]["org.opencontainers.image.title"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        layer_types,
        vec![
            (LAYER_TYPE.to_owned(), Some("model.bin")),
            (NOTES_TYPE.to_owned(), Some("notes.txt")),
        ],
        "custom layer media types and file names"
    );
    assert_eq!(
        manifest["annotations"]["org.valv.test"].as_str(),
        Some("artifact"),
        "manifest annotation"
    );

    let out = tempfile::tempdir().expect("tempdir");
    let pulled = oras(serde_json::json!({
        "op": "pull",
        "host": host,
        "target": target("v1"),
        "outdir": path_str(out.path()),
    }));
    assert_eq!(
        pulled["files"],
        serde_json::json!(["model.bin", "notes.txt"]),
        "oras pull writes both files"
    );
    for (name, want) in [("model.bin", &model), ("notes.txt", &notes)] {
        let got = std::fs::read(out.path().join(name)).expect("read pulled file");
        assert!(got == *want, "pulled {name} is byte-identical");
    }

    // Two referrers of it.
    let subject = serde_json::json!({
        "mediaType": OCI_MANIFEST,
        "digest": subject_digest,
        "size": got.body.len(),
    });
    let mut referrers = BTreeMap::new();
    for (tag, artifact_type, kind) in [("sig", SIGNATURE, "signature"), ("sbom", SBOM, "sbom")] {
        let file = format!("{kind}.json");
        std::fs::write(
            work.path().join(&file),
            format!(r#"{{"kind":"{kind}","of":"{subject_digest}"}}"#),
        )
        .expect("write referrer file");
        let pushed = oras(serde_json::json!({
            "op": "push",
            "host": host,
            "target": target(tag),
            "dir": path_str(work.path()),
            "files": [format!("{file}:{artifact_type}+json")],
            "config": format!(":{OCI_EMPTY}"),
            "artifact_type": artifact_type,
            "annotations": {"org.valv.kind": kind},
            "subject": subject,
        }));
        assert_eq!(
            pushed["status"], 201,
            "oras push {kind}: manifest PUT status"
        );
        assert_eq!(
            pushed["oci_subject"].as_str(),
            Some(subject_digest.as_str()),
            "OCI-Subject header on the {kind} push"
        );
        let digest = pushed["digest"]
            .as_str()
            .expect("referrer digest")
            .to_owned();
        let size = pushed["sent_size"].as_u64().expect("referrer size");
        referrers.insert(artifact_type, (digest, size, kind));
    }

    let referrers_url = valv.url(&format!("/v2/{repo}/referrers/{subject_digest}"));
    let got = fetch(&http, &referrers_url, OCI_INDEX).await;
    assert_eq!(got.status, StatusCode::OK, "GET referrers");
    assert_eq!(
        got.content_type.as_deref(),
        Some(OCI_INDEX),
        "referrers media type"
    );
    let index: serde_json::Value = serde_json::from_slice(&got.body).expect("referrers JSON");
    let listed: BTreeMap<&str, &serde_json::Value> = index["manifests"]
        .as_array()
        .expect("referrers manifests")
        .iter()
        .map(|m| (m["artifactType"].as_str().unwrap_or("(none)"), m))
        .collect();
    assert_eq!(
        listed.keys().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([SIGNATURE, SBOM]),
        "both referrers are listed by artifactType: {index}"
    );
    for (artifact_type, (digest, size, kind)) in &referrers {
        let entry = listed[artifact_type];
        assert_eq!(
            entry["digest"].as_str(),
            Some(digest.as_str()),
            "{kind}: digest"
        );
        assert_eq!(entry["size"].as_u64(), Some(*size), "{kind}: size");
        assert_eq!(
            entry["mediaType"].as_str(),
            Some(OCI_MANIFEST),
            "{kind}: mediaType"
        );
        assert_eq!(
            entry["annotations"]["org.valv.kind"].as_str(),
            Some(*kind),
            "{kind}: annotations"
        );
    }

    let filtered = fetch(
        &http,
        &format!("{referrers_url}?artifactType={SBOM}"),
        OCI_INDEX,
    )
    .await;
    assert_eq!(filtered.status, StatusCode::OK, "GET referrers filtered");
    assert_eq!(
        filtered.filters_applied.as_deref(),
        Some("artifactType"),
        "OCI-Filters-Applied on a filtered referrers list"
    );
    let filtered: serde_json::Value =
        serde_json::from_slice(&filtered.body).expect("filtered referrers JSON");
    let only: Vec<(&str, &str)> = filtered["manifests"]
        .as_array()
        .expect("filtered manifests")
        .iter()
        .map(|m| {
            (
                m["artifactType"].as_str().unwrap_or("(none)"),
                m["digest"].as_str().unwrap_or("(none)"),
            )
        })
        .collect();
    assert_eq!(
        only,
        vec![(SBOM, referrers[SBOM].0.as_str())],
        "?artifactType={SBOM} keeps only the SBOM"
    );
}
