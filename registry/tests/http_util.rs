//! Helpers for the `http_*` integration tests, on top of the shared harness in
//! `common/`. Included by each test file with `#[path = "http_util.rs"] mod util;`
//! (cargo also builds it as an empty test target of its own).

#![allow(dead_code)]

#[path = "common/mod.rs"]
pub mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub use common::{client, sha256, Valv};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// A registry on a fresh temporary data directory (removed when dropped, after the
/// process, since fields drop in order).
#[derive(Debug)]
pub struct Registry {
    pub valv: Valv,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with(&[])
    }

    /// [`Registry::start`] with extra `valv serve` arguments.
    pub fn start_with(extra: &[&str]) -> Registry {
        Registry::start_in(tempfile::tempdir().expect("tempdir"), extra)
    }

    /// [`Registry::start_with`] on the data directory `dir` (removed when dropped).
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Registry {
        let valv = Valv::start(dir.path(), extra);
        Registry {
            valv,
            http: client(),
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        self.valv.url(path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn head(&self, path: &str) -> reqwest::Response {
        self.http.head(self.url(path)).send().await.expect("HEAD")
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.http
            .delete(self.url(path))
            .send()
            .await
            .expect("DELETE")
    }

    /// Monolithic push in one request (`POST ?digest=`). Returns the digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256(data);
        let r = self
            .http
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .expect("POST blob");
        assert_eq!(r.status(), 201, "push blob to {repo}");
        digest
    }

    /// The blob's bytes (asserting 200).
    pub async fn blob(&self, repo: &str, digest: &str) -> Vec<u8> {
        let r = self.get(&format!("/v2/{repo}/blobs/{digest}")).await;
        assert_eq!(r.status(), 200, "GET blob {digest} in {repo}");
        r.bytes().await.expect("body").to_vec()
    }

    /// Status of `GET /v2/<repo>/blobs/<digest>`.
    pub async fn blob_status(&self, repo: &str, digest: &str) -> u16 {
        self.head(&format!("/v2/{repo}/blobs/{digest}"))
            .await
            .status()
            .as_u16()
    }

    /// Starts an upload session; returns its `Location` (relative).
    pub async fn start_upload(&self, repo: &str) -> String {
        let r = self
            .http
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/")))
            .send()
            .await
            .expect("POST upload");
        assert_eq!(r.status(), 202);
        header(&r, "location")
    }

    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> reqwest::Response {
        self.http
            .put(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .expect("PUT manifest")
    }

    /// The repository's tags, or `None` when the repository is unknown (404).
    pub async fn tags(&self, repo: &str) -> Option<Vec<String>> {
        let r = self.get(&format!("/v2/{repo}/tags/list")).await;
        if r.status() == 404 {
            return None;
        }
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = json(r).await;
        Some(
            v["tags"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        )
    }

    /// Every repository in the catalog.
    pub async fn catalog(&self) -> Vec<String> {
        let r = self.get("/v2/_catalog").await;
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = json(r).await;
        v["repositories"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sends bytes as they are (for paths an HTTP client library would normalise, such
    /// as `..` segments) and returns the status and body.
    pub fn raw(&self, request_line_and_headers: &str) -> (u16, Vec<u8>) {
        raw_request(self.valv.host(), request_line_and_headers)
    }
}

/// `key` of a response header as a string (asserting it is there).
pub fn header(r: &reqwest::Response, key: &str) -> String {
    r.headers()
        .get(key)
        .unwrap_or_else(|| panic!("response has no {key} header"))
        .to_str()
        .expect("header text")
        .to_owned()
}

/// The OCI error code of an error response, asserting the envelope's shape.
pub async fn error_code(r: reqwest::Response) -> String {
    let body = r.bytes().await.expect("body");
    error_code_of(&body)
}

pub fn error_code_of(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "error body is not JSON ({e}): {}",
            String::from_utf8_lossy(body)
        )
    });
    let errors = v["errors"].as_array().expect("errors array");
    assert_eq!(errors.len(), 1);
    assert!(errors[0]["message"].is_string());
    errors[0]["code"].as_str().expect("code").to_owned()
}

/// Appends a query parameter to a (relative) upload location.
pub fn with_query(location: &str, kv: &str) -> String {
    if location.contains('?') {
        format!("{location}&{kv}")
    } else {
        format!("{location}?{kv}")
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), so failures reproduce.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An OCI image manifest over a config and layers `(digest, size)`.
pub fn oci_manifest(config: (&str, usize), layers: &[(&str, usize)], extra: &str) -> String {
    let layers: Vec<String> = layers
        .iter()
        .map(|(d, s)| format!(r#"{{"mediaType":"{OCI_LAYER}","digest":"{d}","size":{s}}}"#))
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":{}}},"layers":[{}]{extra}}}"#,
        config.0,
        config.1,
        layers.join(",")
    )
}

/// Pushes a config blob and one layer to `repo` and returns an OCI manifest over them.
pub async fn simple_image(reg: &Registry, repo: &str, seed: u64) -> String {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#);
    let layer = random_bytes(1000 + seed as usize, seed);
    let cd = reg.push_blob(repo, config.as_bytes()).await;
    let ld = reg.push_blob(repo, &layer).await;
    oci_manifest((&cd, config.len()), &[(&ld, layer.len())], "")
}

/// Writes a raw HTTP/1.1 request (a `Connection: close` header is added) and reads the
/// whole response. Bounded by socket timeouts, so a hung server fails the test.
pub fn raw_request(host: &str, head: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(host).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let req = format!(
        "{}\r\nHost: {host}\r\nConnection: close\r\n\r\n",
        head.trim_end()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("read");
    let text = String::from_utf8_lossy(&resp);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body_at = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(resp.len(), |p| p + 4);
    (status, resp[body_at..].to_vec())
}

/// The response body as JSON.
pub async fn json(r: reqwest::Response) -> serde_json::Value {
    let body = r.bytes().await.expect("body");
    serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body)))
}

/// Runs the valv binary with `args` (`kek create …`, say) to its end; returns its
/// stdout, panicking with its stderr when it fails.
pub fn valv_ok(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_valv"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run valv");
    assert!(
        out.status.success(),
        "valv {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `valv serve` with `args` and extra environment on a fresh data dir, expecting it
/// to exit by itself within 60 s; returns the exit success and its stderr.
pub fn run_to_exit_with_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_valv"))
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir.path())
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn valv");
    let mut stderr = child.stderr.take().expect("stderr");
    // Reading stderr to its end completes when the process exits: that is the exit
    // notification, waited for with a bound.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    let output = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(s) => s,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("valv {args:?} did not exit by itself");
        }
    };
    let status = child.wait().expect("wait");
    (status.success(), output)
}

/// `<base>/<fresh prefix>` of the object-store server `variable` names
/// (`VALV_TEST_S3_URL`, `VALV_TEST_AZURE_URL`: the test command, scripts/test.sh,
/// starts the servers and exports them), or a failure saying how to get one. Each
/// call names a prefix of its own, so tests on one bucket never see each other.
pub fn fresh_store_url(variable: &str) -> String {
    let base = std::env::var(variable).unwrap_or_else(|_| {
        panic!("{variable} is not set: run the test command (scripts/test.sh), which starts the object-store servers")
    });
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!(
        "{}/reg-{nonce:x}-{}",
        base.trim_end_matches('/'),
        std::process::id()
    )
}
