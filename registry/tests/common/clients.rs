//! Helpers for the end-to-end tests that drive real registry clients (docker, skopeo)
//! against the real `valv` binary: e2e_docker.rs and e2e_clients.rs.
//!
//! - a valv on a fresh data directory ([`start_valv`]);
//! - running client tools, and the skip-or-fail rule: a tool or daemon that is missing
//!   skips the test, unless `VALV_E2E=1` (scripts/test.sh sets it), which makes it a
//!   failure;
//! - the docker CLI with a private client config ([`Docker`]), the images a test made
//!   ([`Images`]), skopeo with an accept-anything policy ([`Skopeo`]), podman with a
//!   private store ([`Podman`]);
//! - random content and `FROM scratch` build contexts;
//! - GETs of manifests and blobs, checked byte for byte against what was pushed.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::{client, sha256, Valv};
use reqwest::{Client, StatusCode};

pub const MIB: usize = 1024 * 1024;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// `Accept` for a single-platform manifest, Docker schema 2 or OCI.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.docker.distribution.manifest.v2+json, \
                                    application/vnd.oci.image.manifest.v1+json";

// ---------------------------------------------------------------------------------
// Client tools

/// A valv serving a fresh temporary data directory, and an HTTP client. Bind them in
/// this order (`let (data, valv, http) = start_valv();`) so that valv is killed before
/// its data directory is removed.
pub fn start_valv() -> (tempfile::TempDir, Valv, Client) {
    let data = tempfile::tempdir().expect("tempdir");
    let valv = Valv::start(data.path(), &[]);
    (data, valv, client())
}

pub fn e2e_required() -> bool {
    std::env::var("VALV_E2E").is_ok_and(|v| v == "1")
}

/// Ends the test: a failure under `VALV_E2E=1`, otherwise a skip (returns `None`).
pub fn unavailable<T>(what: &str) -> Option<T> {
    if e2e_required() {
        panic!("VALV_E2E=1 but {what}; run the suite with scripts/test.sh, which provides it");
    }
    eprintln!("skipping: {what} (scripts/test.sh runs this test with everything it needs)");
    None
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A client tool that runs: `Some(())`, or the skip/failure of [`unavailable`].
pub fn tool_available(program: &str, args: &[&str]) -> Option<()> {
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => Some(()),
        Ok(out) => unavailable(&format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => unavailable(&format!("{program} is not installed ({e})")),
    }
}

/// Keeps child tools off any proxy the environment names: everything here is loopback.
pub fn no_proxy(cmd: &mut Command) -> &mut Command {
    for var in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
}

/// A trust policy that accepts anything, so skopeo and podman do not depend on
/// /etc/containers/policy.json.
pub fn accept_anything_policy() -> tempfile::NamedTempFile {
    let policy = tempfile::NamedTempFile::new().expect("policy file");
    std::fs::write(
        policy.path(),
        br#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .expect("write policy");
    policy
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// The docker CLI, with a private client config (`docker manifest` keeps its lists
/// there) and the classic builder (a `FROM scratch` build of COPY steps runs nothing).
#[derive(Debug)]
pub struct Docker {
    bin: String,
    config: tempfile::TempDir,
}

impl Docker {
    /// The CLI `VALV_DOCKER` names (default: `docker` on `PATH`), talking to the daemon
    /// at `DOCKER_HOST`; `None` (a skip) or a panic (under `VALV_E2E=1`) when either is
    /// missing.
    pub fn connect() -> Option<Docker> {
        if std::env::var_os("DOCKER_HOST").is_none() {
            return unavailable("DOCKER_HOST is not set");
        }
        let bin = std::env::var("VALV_DOCKER").unwrap_or_else(|_| "docker".to_owned());
        let docker = Docker {
            bin,
            config: tempfile::tempdir().expect("tempdir"),
        };
        match docker
            .cmd(&["version", "--format", "{{.Server.Version}}"])
            .output()
        {
            Ok(out) if out.status.success() => Some(docker),
            Ok(out) => unavailable(&format!(
                "the docker daemon does not answer: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => unavailable(&format!("cannot run {}: {e}", docker.bin)),
        }
    }

    /// The CLI's path or name, for a script that runs docker itself.
    pub fn bin(&self) -> &str {
        &self.bin
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env("DOCKER_CONFIG", self.config.path())
            .env("DOCKER_BUILDKIT", "0")
            .stdin(Stdio::null());
        cmd
    }

    pub fn ok(&self, args: &[&str]) -> String {
        run_ok(&mut self.cmd(args))
    }

    /// `docker login host -u user --password-stdin`, the password written to its stdin;
    /// panics with docker's stderr if it fails.
    pub fn login(&self, host: &str, user: &str, password: &str) {
        let mut child = self
            .cmd(&["login", host, "-u", user, "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker login");
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(password.as_bytes()).expect("password");
        }
        let out = child.wait_with_output().expect("docker login");
        assert!(
            out.status.success(),
            "docker login {host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn image_exists(&self, image: &str) -> bool {
        run(&mut self.cmd(&["image", "inspect", image]))
            .status
            .success()
    }

    /// `os/architecture` of a local image.
    pub fn platform(&self, image: &str) -> String {
        self.ok(&[
            "image",
            "inspect",
            "--format",
            "{{.Os}}/{{.Architecture}}",
            image,
        ])
        .trim()
        .to_owned()
    }

    /// Copies `paths` out of `image` (through a container that is created, never started)
    /// and returns their contents.
    pub fn read_files(&self, image: &str, paths: &[&str]) -> BTreeMap<String, Vec<u8>> {
        let id = self.ok(&["create", image, "/not-run"]).trim().to_owned();
        let out = tempfile::tempdir().expect("tempdir");
        let mut files = BTreeMap::new();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for (i, path) in paths.iter().enumerate() {
                let dest = out.path().join(format!("f{i}"));
                self.ok(&["cp", &format!("{id}:{path}"), path_str(&dest)]);
                files.insert(
                    (*path).to_owned(),
                    std::fs::read(&dest).expect("read copied file"),
                );
            }
        }));
        let _ = run(&mut self.cmd(&["rm", "-f", &id]));
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
        files
    }

    /// Reads the files of `want` out of `image` and checks them ([`assert_files`]).
    pub fn assert_files(&self, image: &str, want: &[(&str, &[u8])], what: &str) {
        let paths: Vec<&str> = want.iter().map(|(p, _)| *p).collect();
        assert_files(&self.read_files(image, &paths), want, what);
    }
}

/// Removes the images a test made, also when it fails.
#[derive(Debug)]
pub struct Images<'a> {
    docker: &'a Docker,
    refs: Vec<String>,
}

impl<'a> Images<'a> {
    pub fn new(docker: &'a Docker) -> Self {
        Images {
            docker,
            refs: Vec::new(),
        }
    }

    pub fn track(&mut self, image: &str) {
        self.refs.push(image.to_owned());
    }

    /// `docker rmi` now (asserting it is gone), as the round trip needs.
    pub fn remove(&self, image: &str) {
        self.docker.ok(&["rmi", image]);
        assert!(
            !self.docker.image_exists(image),
            "{image} still present after docker rmi"
        );
    }
}

impl Drop for Images<'_> {
    fn drop(&mut self) {
        for image in &self.refs {
            let _ = run(&mut self.docker.cmd(&["rmi", "-f", image]));
        }
    }
}

/// The manifest digest `docker push` reports (`<tag>: digest: sha256:… size: N`).
pub fn push_digest(output: &str) -> String {
    output
        .lines()
        .find_map(|l| l.split_whitespace().skip_while(|w| *w != "digest:").nth(1))
        .unwrap_or_else(|| panic!("no digest in docker push output:\n{output}"))
        .to_owned()
}

/// skopeo with an accept-anything policy.
#[derive(Debug)]
pub struct Skopeo {
    policy: tempfile::NamedTempFile,
}

impl Skopeo {
    /// `None` (a skip) or a panic (under `VALV_E2E=1`) when skopeo does not run.
    pub fn find() -> Option<Skopeo> {
        tool_available("skopeo", &["--version"])?;
        Some(Skopeo {
            policy: accept_anything_policy(),
        })
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("skopeo");
        cmd.arg("--policy")
            .arg(self.policy.path())
            .args(args)
            .stdin(Stdio::null());
        run_ok(no_proxy(&mut cmd))
    }
}

// ---------------------------------------------------------------------------------
// podman

/// podman with a private store (vfs, under a temp dir that is removed on drop, with
/// every image in it) and an accept-anything policy.
#[derive(Debug)]
pub struct Podman {
    dir: tempfile::TempDir,
    policy: tempfile::NamedTempFile,
}

impl Podman {
    pub fn find() -> Option<Podman> {
        tool_available("podman", &["--version"])?;
        Some(Podman {
            dir: tempfile::tempdir().expect("tempdir"),
            policy: accept_anything_policy(),
        })
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let d = self.dir.path();
        let tmp = d.join("tmp");
        std::fs::create_dir_all(&tmp).expect("podman tmp dir");
        let auth = d.join("auth.json");
        if !auth.exists() {
            std::fs::write(&auth, b"{}").expect("write podman auth file");
        }
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(&tmp)
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .args(args)
            // Blob copies go to $TMPDIR (default /var/tmp): keep them in the store dir.
            .env("TMPDIR", &tmp)
            // podman fails when $DOCKER_CONFIG (which scripts/test.sh sets) holds no
            // config.json; an empty auth file of its own also keeps host logins out.
            .env_remove("DOCKER_CONFIG")
            .env("REGISTRY_AUTH_FILE", &auth)
            .stdin(Stdio::null());
        no_proxy(&mut cmd);
        cmd
    }

    pub fn ok(&self, args: &[&str]) -> String {
        run_ok(&mut self.cmd(args))
    }

    pub fn policy(&self) -> &str {
        path_str(self.policy.path())
    }

    pub fn image_exists(&self, image: &str) -> bool {
        run(&mut self.cmd(&["image", "exists", image]))
            .status
            .success()
    }

    /// Reads `paths` from `image`'s root filesystem (`podman image mount`).
    pub fn read_files(&self, image: &str, paths: &[&str]) -> BTreeMap<String, Vec<u8>> {
        let root = PathBuf::from(self.ok(&["image", "mount", image]).trim());
        let files = std::panic::catch_unwind(|| {
            paths
                .iter()
                .map(|p| {
                    let file = root.join(p.trim_start_matches('/'));
                    let data = std::fs::read(&file)
                        .unwrap_or_else(|e| panic!("read {} of {image}: {e}", file.display()));
                    ((*p).to_owned(), data)
                })
                .collect()
        });
        let _ = run(&mut self.cmd(&["image", "unmount", image]));
        files.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// Reads the files of `want` from `image` and checks them ([`assert_files`]).
    pub fn assert_files(&self, image: &str, want: &[(&str, &[u8])], what: &str) {
        let paths: Vec<&str> = want.iter().map(|(p, _)| *p).collect();
        assert_files(&self.read_files(image, &paths), want, what);
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Everything lives under `dir`, which the TempDir removes next; unmounting first
        // matters only for a storage driver that really mounts (vfs does not).
        let _ = run(&mut self.cmd(&["image", "unmount", "--all"]));
        let _ = run(&mut self.cmd(&["rmi", "--all", "--force"]));
    }
}

// ---------------------------------------------------------------------------------
// Content

/// Pseudo-random bytes (splitmix64), seeded per run so no two runs push the same layer.
pub fn random_bytes(tag: u64, len: usize) -> Vec<u8> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut state =
        nanos ^ (u64::from(std::process::id()) << 32) ^ tag.wrapping_mul(0xA076_1D64_78BD_642F);
    let mut out = vec![0u8; len];
    for chunk in out.chunks_mut(8) {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
    out
}

/// Writes a build context: the files, and a Dockerfile `FROM scratch` with one COPY (so
/// one layer) per file. podman reads the same Dockerfile.
pub fn build_context(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().expect("tempdir");
    let mut dockerfile = String::from("FROM scratch\n");
    for (i, (path, data)) in files.iter().enumerate() {
        let name = format!("file{i}");
        std::fs::write(ctx.path().join(&name), data).expect("write context file");
        dockerfile.push_str(&format!("COPY {name} {path}\n"));
    }
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).expect("write Dockerfile");
    ctx
}

/// Every file of `want` is in `got`, with the same size and bytes.
pub fn assert_files(got: &BTreeMap<String, Vec<u8>>, want: &[(&str, &[u8])], what: &str) {
    for (path, data) in want {
        let got = got
            .get(*path)
            .unwrap_or_else(|| panic!("{what}: {path} missing"));
        assert_eq!(got.len(), data.len(), "{what}: size of {path}");
        assert!(got.as_slice() == *data, "{what}: content of {path} differs");
    }
}

// ---------------------------------------------------------------------------------
// HTTP

#[derive(Debug)]
pub struct Fetched {
    pub status: StatusCode,
    pub content_type: Option<String>,
    /// `Docker-Content-Digest`
    pub digest: Option<String>,
    /// `OCI-Filters-Applied`
    pub filters_applied: Option<String>,
    pub body: Vec<u8>,
}

pub async fn fetch(http: &Client, url: &str, accept: &str) -> Fetched {
    let resp = http
        .get(url)
        .header("accept", accept)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (status, content_type, digest, filters_applied) = (
        resp.status(),
        header("content-type"),
        header("docker-content-digest"),
        header("oci-filters-applied"),
    );
    let body = resp
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("GET {url} body: {e}"))
        .to_vec();
    Fetched {
        status,
        content_type,
        digest,
        filters_applied,
        body,
    }
}

/// GETs a blob and checks it hashes to its digest (so it is byte for byte the blob).
pub async fn fetch_blob(http: &Client, valv: &Valv, repo: &str, digest: &str) -> Vec<u8> {
    let got = fetch(
        http,
        &valv.url(&format!("/v2/{repo}/blobs/{digest}")),
        "*/*",
    )
    .await;
    assert_eq!(got.status, StatusCode::OK, "GET blob {digest} in {repo}");
    assert_eq!(
        sha256(&got.body),
        digest,
        "blob {digest} in {repo} hashes to its digest"
    );
    got.body
}

/// GETs a manifest by tag or digest with [`ACCEPT_MANIFESTS`].
pub async fn get_manifest(http: &Client, valv: &Valv, repo: &str, reference: &str) -> Fetched {
    let url = valv.url(&format!("/v2/{repo}/manifests/{reference}"));
    fetch(http, &url, ACCEPT_MANIFESTS).await
}

/// [`get_manifest`], expecting 200; returns the manifest with its parsed JSON.
pub async fn fetch_manifest(
    http: &Client,
    valv: &Valv,
    repo: &str,
    reference: &str,
) -> (Fetched, serde_json::Value) {
    let got = get_manifest(http, valv, repo, reference).await;
    assert_eq!(
        got.status,
        StatusCode::OK,
        "GET manifest {repo}:{reference}"
    );
    let json = serde_json::from_slice(&got.body).expect("manifest is JSON");
    (got, json)
}

/// Checks that `got` is the manifest (or index) pushed as `digest`: 200, served as
/// `media_type`, and bytes that hash to `digest`.
pub fn assert_served(got: &Fetched, media_type: &str, digest: &str, what: &str) {
    assert_eq!(got.status, StatusCode::OK, "{what}: GET status");
    assert_eq!(
        got.content_type.as_deref(),
        Some(media_type),
        "{what}: media type"
    );
    assert_eq!(
        sha256(&got.body),
        digest,
        "{what}: served byte for byte as pushed"
    );
}

/// [`assert_served`], and valv names the digest in `Docker-Content-Digest`.
pub fn assert_pushed(got: &Fetched, media_type: &str, digest: &str, what: &str) {
    assert_served(got, media_type, digest, what);
    assert_eq!(
        got.digest.as_deref(),
        Some(digest),
        "{what}: Docker-Content-Digest"
    );
}

/// `(media type, digest, size)` of each `layers[]` entry.
pub fn layers(manifest: &serde_json::Value) -> Vec<(String, String, u64)> {
    manifest["layers"]
        .as_array()
        .expect("manifest has layers")
        .iter()
        .map(|l| {
            (
                l["mediaType"].as_str().expect("layer mediaType").to_owned(),
                l["digest"].as_str().expect("layer digest").to_owned(),
                l["size"].as_u64().expect("layer size"),
            )
        })
        .collect()
}

pub fn config_digest(manifest: &serde_json::Value) -> String {
    manifest["config"]["digest"]
        .as_str()
        .expect("config digest")
        .to_owned()
}
