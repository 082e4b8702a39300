//! Real clients against the real `valv` binary (issue 3, acceptance 2):
//!
//! - `docker push` / `docker pull` of a `FROM scratch` image with a 64 MiB random layer,
//!   byte-identical after the round trip, and no 32-byte window of the layer's content
//!   (plaintext or compressed blob) anywhere in valv's data directory;
//! - a multi-architecture index made with `docker manifest`, pulled by tag, by platform
//!   and by each platform's digest, and served back byte for byte;
//! - `skopeo copy` from one repository to another.
//!
//! They need a docker daemon and skopeo, so a plain `cargo test` skips them (`#[ignore]`).
//! scripts/test.sh starts a private dockerd, sets `DOCKER_HOST` and `VALV_E2E=1`, and runs
//! them; with `VALV_E2E=1` a missing daemon or tool is a failure, never a skip. Docker
//! talks plain HTTP to registries on 127.0.0.0/8 without any configuration.
//!
//! `VALV_DOCKER` names the docker CLI to use (default: `docker` on `PATH`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{client, sha256, Valv};
use reqwest::{Client, StatusCode};

const MIB: usize = 1024 * 1024;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

// ---------------------------------------------------------------------------------
// Client tools

fn e2e_required() -> bool {
    std::env::var("VALV_E2E").is_ok_and(|v| v == "1")
}

/// Ends the test: a failure under `VALV_E2E=1`, otherwise a skip (returns `None`).
fn unavailable<T>(what: &str) -> Option<T> {
    if e2e_required() {
        panic!("VALV_E2E=1 but {what}; run the suite with scripts/test.sh, which provides it");
    }
    eprintln!("skipping: {what} (scripts/test.sh runs this test with a private dockerd)");
    None
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn run_ok(cmd: &mut Command) -> String {
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

/// The docker CLI, with a private client config (`docker manifest` keeps its lists
/// there) and the classic builder (a `FROM scratch` build of COPY steps runs nothing).
#[derive(Debug)]
struct Docker {
    bin: String,
    config: tempfile::TempDir,
}

impl Docker {
    fn connect() -> Option<Docker> {
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

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env("DOCKER_CONFIG", self.config.path())
            .env("DOCKER_BUILDKIT", "0")
            .stdin(std::process::Stdio::null());
        cmd
    }

    fn ok(&self, args: &[&str]) -> String {
        run_ok(&mut self.cmd(args))
    }

    fn image_exists(&self, image: &str) -> bool {
        run(&mut self.cmd(&["image", "inspect", image]))
            .status
            .success()
    }

    /// `os/architecture` of a local image.
    fn platform(&self, image: &str) -> String {
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
    fn read_files(&self, image: &str, paths: &[&str]) -> BTreeMap<String, Vec<u8>> {
        let id = self.ok(&["create", image, "/not-run"]).trim().to_owned();
        let out = tempfile::tempdir().expect("tempdir");
        let mut files = BTreeMap::new();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for (i, path) in paths.iter().enumerate() {
                let dest = out.path().join(format!("f{i}"));
                self.ok(&[
                    "cp",
                    &format!("{id}:{path}"),
                    dest.to_str().expect("utf-8 temp path"),
                ]);
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
}

/// Removes the images a test made, also when it fails.
#[derive(Debug)]
struct Images<'a> {
    docker: &'a Docker,
    refs: Vec<String>,
}

impl<'a> Images<'a> {
    fn new(docker: &'a Docker) -> Self {
        Images {
            docker,
            refs: Vec::new(),
        }
    }

    fn track(&mut self, image: &str) {
        self.refs.push(image.to_owned());
    }

    /// `docker rmi` now (asserting it is gone), as the round trip needs.
    fn remove(&self, image: &str) {
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

fn skopeo_available() -> Option<()> {
    match Command::new("skopeo").arg("--version").output() {
        Ok(out) if out.status.success() => Some(()),
        Ok(out) => unavailable(&format!(
            "skopeo --version failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => unavailable(&format!("skopeo is not installed ({e})")),
    }
}

/// The manifest digest `docker push` reports (`<tag>: digest: sha256:… size: N`).
fn push_digest(output: &str) -> String {
    output
        .lines()
        .find_map(|l| l.split_whitespace().skip_while(|w| *w != "digest:").nth(1))
        .unwrap_or_else(|| panic!("no digest in docker push output:\n{output}"))
        .to_owned()
}

// ---------------------------------------------------------------------------------
// Content

/// Pseudo-random bytes (splitmix64), seeded per run so no two runs push the same layer.
fn random_bytes(tag: u64, len: usize) -> Vec<u8> {
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

/// Writes a docker build context: the files, and a Dockerfile `FROM scratch` with one
/// COPY (so one layer) per file.
fn build_context(files: &[(&str, &[u8])]) -> tempfile::TempDir {
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

fn assert_files(got: &BTreeMap<String, Vec<u8>>, want: &[(&str, &[u8])], what: &str) {
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
struct Fetched {
    status: StatusCode,
    content_type: Option<String>,
    digest: Option<String>,
    body: Vec<u8>,
}

async fn fetch(http: &Client, url: &str, accept: &str) -> Fetched {
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
    let (status, content_type, digest) = (
        resp.status(),
        header("content-type"),
        header("docker-content-digest"),
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
        body,
    }
}

/// GETs a blob and checks it hashes to its digest.
async fn fetch_blob(http: &Client, valv: &Valv, repo: &str, digest: &str) -> Vec<u8> {
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

/// `(media type, digest, size)` of each `layers[]` entry.
fn layers(manifest: &serde_json::Value) -> Vec<(String, String, u64)> {
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

// ---------------------------------------------------------------------------------
// Plaintext leak scan

/// Finds stored copies of secret bytes.
///
/// Every 32-byte window of each secret that starts at a multiple of 16 is indexed; the
/// stored bytes are then scanned with a 32-byte window sliding one byte at a time. A
/// stored run of n contiguous secret bytes, starting at any secret offset, contains a
/// whole aligned window once n ≥ 32 + 15 = 47, so **every stored plaintext run of 47
/// bytes or more is caught**; shorter runs may or may not be. Windows with fewer than 16
/// distinct byte values are not indexed: they carry no secret (random content never has
/// them) and could match innocent structure such as zero padding.
///
/// The table is open addressing over a hash of the window's first 16 bytes; each slot
/// keeps a 15-bit tag so most probes never touch the secret's memory. In front of it, a
/// one-hash bitmap with 16 bits per indexed window turns away ~94% of the non-matching
/// positions without a probe.
struct LeakIndex<'a> {
    secrets: Vec<&'a [u8]>,
    slots: Vec<u64>,
    shift: u32,
    filter: Vec<u64>,
    indexed: usize,
}

#[derive(Debug)]
struct Leak {
    file: PathBuf,
    file_offset: u64,
    secret: usize,
    secret_offset: usize,
}

#[derive(Debug, Default)]
struct ScanReport {
    files: usize,
    bytes: u64,
    leaks: Vec<Leak>,
}

impl<'a> LeakIndex<'a> {
    const WINDOW: usize = 32;
    const STRIDE: usize = 16;
    const OCCUPIED: u64 = 1 << 63;

    fn new(secrets: &[&'a [u8]]) -> Self {
        assert!(secrets.len() < 256, "secret index is 8 bits");
        let windows: usize = secrets.iter().map(|s| s.len() / Self::STRIDE + 1).sum();
        let slots_len = (windows * 2).next_power_of_two().max(1024);
        let bits = slots_len.trailing_zeros();
        let mut index = LeakIndex {
            secrets: secrets.to_vec(),
            slots: vec![0; slots_len],
            shift: 64 - bits,
            filter: vec![0; (windows * 16).next_power_of_two().max(64) / 64],
            indexed: 0,
        };
        for (si, secret) in secrets.iter().enumerate() {
            let mut off = 0;
            while off + Self::WINDOW <= secret.len() {
                let w = &secret[off..off + Self::WINDOW];
                if distinct_bytes(w) >= 16 {
                    index.insert(w, si, off);
                }
                off += Self::STRIDE;
            }
        }
        index
    }

    #[inline(always)]
    fn hash(w: &[u8]) -> u64 {
        let a = u64::from_le_bytes(w[0..8].try_into().expect("8 bytes"));
        let b = u64::from_le_bytes(w[8..16].try_into().expect("8 bytes"));
        let h = (a ^ b.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^ (h >> 29)
    }

    #[inline(always)]
    fn tag(h: u64) -> u64 {
        (h >> 4) & 0x7fff
    }

    /// (word, bit) of `h` in the filter.
    #[inline(always)]
    fn filter_bit(&self, h: u64) -> (usize, u64) {
        let bit = (h >> 19) as usize & (self.filter.len() * 64 - 1);
        (bit / 64, 1 << (bit % 64))
    }

    fn insert(&mut self, w: &[u8], secret: usize, offset: usize) {
        let h = Self::hash(w);
        let mask = self.slots.len() - 1;
        let mut i = (h >> self.shift) as usize;
        while self.slots[i] != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] =
            Self::OCCUPIED | (Self::tag(h) << 48) | ((secret as u64) << 40) | offset as u64;
        let (word, bit) = self.filter_bit(h);
        self.filter[word] |= bit;
        self.indexed += 1;
    }

    /// The secret window equal to `w`, if any.
    #[inline(always)]
    fn find(&self, w: &[u8]) -> Option<(usize, usize)> {
        let h = Self::hash(w);
        let (word, bit) = self.filter_bit(h);
        if self.filter[word] & bit == 0 {
            return None;
        }
        let tag = Self::tag(h);
        let mask = self.slots.len() - 1;
        let mut i = (h >> self.shift) as usize;
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                return None;
            }
            if (slot >> 48) & 0x7fff == tag {
                let secret = ((slot >> 40) & 0xff) as usize;
                let offset = (slot & ((1 << 40) - 1)) as usize;
                if &self.secrets[secret][offset..offset + Self::WINDOW] == w {
                    return Some((secret, offset));
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// Secret windows found in `hay`: (position in hay, secret, secret offset).
    fn scan(&self, hay: &[u8], mut found: impl FnMut(usize, usize, usize)) {
        if hay.len() < Self::WINDOW {
            return;
        }
        for p in 0..=hay.len() - Self::WINDOW {
            if let Some((s, o)) = self.find(&hay[p..p + Self::WINDOW]) {
                found(p, s, o);
            }
        }
    }

    /// Scans every regular file under `dir`, in chunks that overlap by 31 bytes.
    fn scan_dir(&self, dir: &Path) -> ScanReport {
        use std::io::Read;
        let mut report = ScanReport::default();
        let mut stack = vec![dir.to_owned()];
        let mut buf = vec![0u8; 8 * MIB];
        while let Some(d) = stack.pop() {
            for entry in
                std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read_dir {}: {e}", d.display()))
            {
                let entry = entry.expect("dir entry");
                let kind = entry.file_type().expect("file type");
                if kind.is_dir() {
                    stack.push(entry.path());
                    continue;
                }
                if !kind.is_file() {
                    continue;
                }
                let path = entry.path();
                let mut file = std::fs::File::open(&path)
                    .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
                report.files += 1;
                // `carry` bytes at the front of buf are the previous chunk's last 31.
                let mut carry = 0usize;
                let mut base = 0u64; // file offset of buf[0]
                loop {
                    let n = file
                        .read(&mut buf[carry..])
                        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
                    if n == 0 {
                        break;
                    }
                    report.bytes += n as u64;
                    let len = carry + n;
                    self.scan(&buf[..len], |p, secret, secret_offset| {
                        if report.leaks.len() < 10 {
                            report.leaks.push(Leak {
                                file: path.clone(),
                                file_offset: base + p as u64,
                                secret,
                                secret_offset,
                            });
                        }
                    });
                    let keep = (Self::WINDOW - 1).min(len);
                    buf.copy_within(len - keep..len, 0);
                    base += (len - keep) as u64;
                    carry = keep;
                }
            }
        }
        report
    }
}

#[inline(always)]
fn distinct_bytes(w: &[u8]) -> u32 {
    let mut seen = [0u64; 4];
    for &b in w {
        seen[(b >> 6) as usize] |= 1 << (b & 63);
    }
    seen.iter().map(|s| s.count_ones()).sum()
}

// ---------------------------------------------------------------------------------
// Tests

/// docker push of a `FROM scratch` image with a 64 MiB random layer and three small
/// ones; rmi; pull; the files come back byte-identical; valv's data directory holds no
/// window of the big layer's plaintext nor of its compressed blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs dockerd: run by scripts/test.sh"]
async fn docker_push_pull_64mib_layer_round_trips_and_is_encrypted_at_rest() {
    let Some(docker) = Docker::connect() else {
        return;
    };
    let data = tempfile::tempdir().expect("tempdir");
    let valv = Valv::start(data.path(), &[]);
    let http = client();

    let big = random_bytes(1, 64 * MIB);
    let small = random_bytes(2, 4097);
    let conf = br#"{"greeting":"hello","encrypted":true}"#.to_vec();
    let files: [(&str, &[u8]); 4] = [
        ("/data/big.bin", &big),
        ("/etc/hello.txt", b"hello from valv\n"),
        ("/data/small.bin", &small),
        ("/etc/valv/conf.json", &conf),
    ];
    let ctx = build_context(&files);
    let image = format!("{}/e2e/app:v1", valv.host());
    let mut images = Images::new(&docker);
    images.track(&image);

    docker.ok(&[
        "build",
        "-q",
        "-t",
        &image,
        ctx.path().to_str().expect("utf-8 temp path"),
    ]);
    let pushed = push_digest(&docker.ok(&["push", &image]));
    images.remove(&image);
    docker.ok(&["pull", &image]);
    let paths: Vec<&str> = files.iter().map(|(p, _)| *p).collect();
    assert_files(
        &docker.read_files(&image, &paths),
        &files,
        "docker pull after push",
    );

    // The manifest as docker pushed it, and the big layer's blob as valv serves it.
    let got = fetch(
        &http,
        &valv.url("/v2/e2e/app/manifests/v1"),
        &format!("{DOCKER_MANIFEST}, {OCI_MANIFEST}"),
    )
    .await;
    assert_eq!(got.status, StatusCode::OK, "GET manifest");
    assert_eq!(
        got.content_type.as_deref(),
        Some(DOCKER_MANIFEST),
        "manifest media type"
    );
    assert_eq!(
        got.digest.as_deref(),
        Some(pushed.as_str()),
        "Docker-Content-Digest"
    );
    assert_eq!(
        sha256(&got.body),
        pushed,
        "manifest is served byte for byte as pushed"
    );
    let manifest: serde_json::Value = serde_json::from_slice(&got.body).expect("manifest JSON");
    let layers = layers(&manifest);
    assert_eq!(layers.len(), files.len(), "one layer per COPY");
    let (_, big_layer, big_layer_size) =
        layers.iter().max_by_key(|l| l.2).expect("a layer").clone();
    assert!(
        big_layer_size > big.len() as u64,
        "the big layer holds the 64 MiB file"
    );
    let layer_blob = fetch_blob(&http, &valv, "e2e/app", &big_layer).await;
    assert_eq!(layer_blob.len() as u64, big_layer_size, "layer blob size");

    // Nothing of either is stored in the clear.
    let started = std::time::Instant::now();
    let index = LeakIndex::new(&[&big, &layer_blob]);
    // The scan must be able to see a leak: 47 secret bytes at an odd place are found.
    for (i, secret) in [&big, &layer_blob].iter().enumerate() {
        let start = secret.len() / 3 + 5;
        let mut hay = random_bytes(10 + i as u64, 101);
        hay.extend_from_slice(&secret[start..start + 47]);
        hay.extend_from_slice(&random_bytes(20 + i as u64, 99));
        let mut hits = 0;
        index.scan(&hay, |_, _, _| hits += 1);
        assert!(
            hits >= 1,
            "leak scan self-check: a 47-byte run of secret {i} was not found"
        );
    }
    let report = index.scan_dir(data.path());
    eprintln!(
        "leak scan: {} windows indexed, {} files / {} bytes under the data dir scanned in {:.1} s, {} leaks",
        index.indexed,
        report.files,
        report.bytes,
        started.elapsed().as_secs_f64(),
        report.leaks.len()
    );
    assert!(
        report.bytes >= big.len() as u64,
        "the data directory holds less than the pushed layer: is valv storing elsewhere?"
    );
    let leaks: Vec<String> = report
        .leaks
        .iter()
        .map(|l| {
            let what = if l.secret == 0 {
                "the 64 MiB file"
            } else {
                "its compressed layer blob"
            };
            format!(
                "{} at offset {}: 32 bytes of {what} at offset {}",
                l.file.display(),
                l.file_offset,
                l.secret_offset
            )
        })
        .collect();
    assert!(
        leaks.is_empty(),
        "plaintext found at rest:\n{}",
        leaks.join("\n")
    );
}

/// A two-platform index made with `docker manifest`, pushed to valv, served back byte
/// for byte with its media type, and pulled by tag, by platform and by digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs dockerd: run by scripts/test.sh"]
async fn docker_multi_arch_index_push_and_pull_by_tag_platform_and_digest() {
    let Some(docker) = Docker::connect() else {
        return;
    };
    let data = tempfile::tempdir().expect("tempdir");
    let valv = Valv::start(data.path(), &[]);
    let http = client();
    let host = valv.host().to_owned();
    let native = docker
        .ok(&["version", "--format", "{{.Server.Os}}/{{.Server.Arch}}"])
        .trim()
        .to_owned();

    let platforms = ["linux/amd64", "linux/arm64"];
    let payloads: Vec<Vec<u8>> = (0..platforms.len())
        .map(|i| random_bytes(30 + i as u64, 256 * 1024 + i))
        .collect();
    let index_ref = format!("{host}/e2e/multi:v1");
    let mut images = Images::new(&docker);
    images.track(&index_ref);

    // Build and push one image per platform.
    let mut digests = BTreeMap::new();
    let mut contents = BTreeMap::new();
    for (platform, payload) in platforms.iter().zip(&payloads) {
        let arch = platform.rsplit('/').next().expect("arch");
        let image = format!("{host}/e2e/multi:{arch}");
        images.track(&image);
        let files: Vec<(&str, Vec<u8>)> = vec![
            ("/platform.txt", format!("{platform}\n").into_bytes()),
            ("/payload.bin", payload.clone()),
        ];
        let file_refs: Vec<(&str, &[u8])> = files.iter().map(|(p, d)| (*p, d.as_slice())).collect();
        let ctx = build_context(&file_refs);
        docker.ok(&[
            "build",
            "-q",
            "--platform",
            platform,
            "-t",
            &image,
            ctx.path().to_str().expect("utf-8 temp path"),
        ]);
        assert_eq!(docker.platform(&image), *platform, "built image platform");
        digests.insert(
            platform.to_string(),
            push_digest(&docker.ok(&["push", &image])),
        );
        contents.insert(platform.to_string(), files);
    }

    // The index.
    let mut create = vec!["manifest", "create", "--insecure", index_ref.as_str()];
    let platform_refs: Vec<String> = platforms
        .iter()
        .map(|p| format!("{host}/e2e/multi:{}", p.rsplit('/').next().expect("arch")))
        .collect();
    create.extend(platform_refs.iter().map(String::as_str));
    docker.ok(&create);
    let index_digest = docker
        .ok(&["manifest", "push", "--insecure", "--purge", &index_ref])
        .trim()
        .lines()
        .last()
        .expect("manifest push prints the digest")
        .trim()
        .to_owned();
    assert!(
        index_digest.starts_with("sha256:"),
        "docker manifest push printed {index_digest:?}"
    );

    // Served back byte for byte, with its media type, by tag and by digest.
    for reference in ["v1", index_digest.as_str()] {
        let got = fetch(
            &http,
            &valv.url(&format!("/v2/e2e/multi/manifests/{reference}")),
            &format!("{DOCKER_LIST}, {OCI_INDEX}, {DOCKER_MANIFEST}, {OCI_MANIFEST}"),
        )
        .await;
        assert_eq!(got.status, StatusCode::OK, "GET index by {reference}");
        assert_eq!(
            got.content_type.as_deref(),
            Some(DOCKER_LIST),
            "index media type by {reference}"
        );
        assert_eq!(
            got.digest.as_deref(),
            Some(index_digest.as_str()),
            "Docker-Content-Digest by {reference}"
        );
        assert_eq!(
            sha256(&got.body),
            index_digest,
            "index by {reference} is byte-identical to what was pushed"
        );
        let index: serde_json::Value = serde_json::from_slice(&got.body).expect("index JSON");
        let listed: BTreeMap<String, String> = index["manifests"]
            .as_array()
            .expect("index manifests")
            .iter()
            .map(|m| {
                let p = &m["platform"];
                (
                    format!(
                        "{}/{}",
                        p["os"].as_str().unwrap_or("?"),
                        p["architecture"].as_str().unwrap_or("?")
                    ),
                    m["digest"].as_str().unwrap_or("?").to_owned(),
                )
            })
            .collect();
        assert_eq!(listed, digests, "the index lists each platform's manifest");
    }

    for image in &platform_refs {
        images.remove(image);
    }

    // By tag: the daemon's own platform.
    if let Some(files) = contents.get(&native) {
        docker.ok(&["pull", &index_ref]);
        assert_eq!(
            docker.platform(&index_ref),
            native,
            "pull by tag picks the native platform"
        );
        let want: Vec<(&str, &[u8])> = files.iter().map(|(p, d)| (*p, d.as_slice())).collect();
        assert_files(
            &docker.read_files(&index_ref, &["/platform.txt", "/payload.bin"]),
            &want,
            "pull by tag",
        );
        images.remove(&index_ref);
    } else {
        eprintln!("daemon platform {native} is not in the index; skipping the pull by tag");
    }

    // By platform, and by each platform's digest.
    for platform in platforms {
        let want: Vec<(&str, &[u8])> = contents[platform]
            .iter()
            .map(|(p, d)| (*p, d.as_slice()))
            .collect();
        docker.ok(&["pull", "--platform", platform, &index_ref]);
        assert_eq!(
            docker.platform(&index_ref),
            platform,
            "pull --platform {platform}"
        );
        assert_files(
            &docker.read_files(&index_ref, &["/platform.txt", "/payload.bin"]),
            &want,
            &format!("pull --platform {platform}"),
        );
        images.remove(&index_ref);

        let by_digest = format!("{host}/e2e/multi@{}", digests[platform]);
        images.track(&by_digest);
        docker.ok(&["pull", &by_digest]);
        assert_eq!(docker.platform(&by_digest), platform, "pull by digest");
        assert_files(
            &docker.read_files(&by_digest, &["/platform.txt", "/payload.bin"]),
            &want,
            &format!("pull {platform} by digest"),
        );
        images.remove(&by_digest);
    }
}

/// skopeo copies an image from one repository to another of the same valv; the copy is
/// byte-identical (manifest and blobs) and docker pulls it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs dockerd: run by scripts/test.sh"]
async fn skopeo_copy_between_repositories() {
    let Some(docker) = Docker::connect() else {
        return;
    };
    let Some(()) = skopeo_available() else { return };
    let data = tempfile::tempdir().expect("tempdir");
    let valv = Valv::start(data.path(), &[]);
    let http = client();
    let host = valv.host().to_owned();

    let payload = random_bytes(40, 2 * MIB + 3);
    let files: [(&str, &[u8]); 2] = [
        ("/payload.bin", &payload),
        ("/README", b"copied by skopeo\n"),
    ];
    let ctx = build_context(&files);
    let src = format!("{host}/e2e/src:v1");
    let dst = format!("{host}/other/copy/dst:v1");
    let mut images = Images::new(&docker);
    images.track(&src);
    images.track(&dst);
    docker.ok(&[
        "build",
        "-q",
        "-t",
        &src,
        ctx.path().to_str().expect("utf-8 temp path"),
    ]);
    let pushed = push_digest(&docker.ok(&["push", &src]));

    let policy = tempfile::NamedTempFile::new().expect("policy file");
    std::fs::write(
        policy.path(),
        br#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .expect("write policy");
    let skopeo = |args: &[&str]| -> String {
        let mut cmd = Command::new("skopeo");
        cmd.arg("--policy")
            .arg(policy.path())
            .args(args)
            .stdin(std::process::Stdio::null());
        run_ok(&mut cmd)
    };
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{src}"),
        &format!("docker://{dst}"),
    ]);

    // Same manifest bytes, every blob present in the destination repository.
    let accept = format!("{DOCKER_MANIFEST}, {OCI_MANIFEST}");
    let src_manifest = fetch(&http, &valv.url("/v2/e2e/src/manifests/v1"), &accept).await;
    let dst_manifest = fetch(&http, &valv.url("/v2/other/copy/dst/manifests/v1"), &accept).await;
    assert_eq!(dst_manifest.status, StatusCode::OK, "GET copied manifest");
    assert_eq!(
        sha256(&src_manifest.body),
        pushed,
        "source manifest as docker pushed it"
    );
    assert_eq!(
        dst_manifest.digest.as_deref(),
        Some(pushed.as_str()),
        "copied manifest keeps its digest"
    );
    assert!(
        dst_manifest.body == src_manifest.body,
        "copied manifest is byte-identical"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&dst_manifest.body).expect("manifest JSON");
    let config = manifest["config"]["digest"]
        .as_str()
        .expect("config digest")
        .to_owned();
    fetch_blob(&http, &valv, "other/copy/dst", &config).await;
    for (_, digest, size) in layers(&manifest) {
        assert_eq!(
            fetch_blob(&http, &valv, "other/copy/dst", &digest)
                .await
                .len() as u64,
            size,
            "copied layer size"
        );
    }
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{dst}"),
    ]);
    assert_eq!(
        sha256(raw.as_bytes()),
        pushed,
        "skopeo inspect --raw of the copy"
    );
    let tags = skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{host}/other/copy/dst"),
    ]);
    let tags: serde_json::Value = serde_json::from_str(&tags).expect("list-tags JSON");
    assert_eq!(tags["Tags"], serde_json::json!(["v1"]), "tags of the copy");

    // And docker pulls the copy.
    images.remove(&src);
    docker.ok(&["pull", &dst]);
    assert_files(
        &docker.read_files(&dst, &["/payload.bin", "/README"]),
        &files,
        "docker pull of the skopeo copy",
    );
}
