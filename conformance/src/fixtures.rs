//! Content the suite pushes: random blobs, images, indexes and artifacts built here
//! (never read from the registry under test), and the push steps tests use to set up.
//!
//! Setup pushes use the plainest method (POST, then PUT with the whole blob); a
//! registry that cannot do that fails every test that needs content, which is honest.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};

use crate::ctx::{ensure, expect_header, expect_status, fail, Ctx, Failure};
use crate::digest::sha256;
use crate::http::Request;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Every manifest media type the suite pushes, for `Accept` headers.
pub const ACCEPT_ALL: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

static SEED: AtomicU64 = AtomicU64::new(0);

fn next_u64() -> u64 {
    // splitmix64 over a counter seeded from the clock and pid on first use.
    if SEED.load(Ordering::Relaxed) == 0 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let _ = SEED.compare_exchange(
            0,
            nanos ^ (u64::from(std::process::id()) << 32) | 1,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
    let mut z = SEED.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `len` random bytes (not cryptographic; unique per run).
pub fn random(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Eight hex digits, fresh per call: run ids and unique tags.
pub fn run_id() -> String {
    format!("{:08x}", next_u64() as u32)
}

/// A descriptor as JSON.
pub fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": sha256(data), "size": data.len() })
}

/// A manifest (or index) the suite pushes: its exact bytes and what they stand for.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub digest: String,
    /// Blobs it references, to push first.
    pub blobs: Vec<Vec<u8>>,
}

impl Manifest {
    /// Serialises `value` in a deliberately non-canonical layout (pretty, trailing
    /// newline) so that a registry that re-serialises manifests is caught.
    pub fn from_json(media_type: &str, value: &Value, blobs: Vec<Vec<u8>>) -> Manifest {
        let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
        bytes.push(b'\n');
        Manifest {
            media_type: media_type.to_owned(),
            digest: sha256(&bytes),
            bytes,
            blobs,
        }
    }

    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// This manifest as a descriptor.
    pub fn descriptor(&self) -> Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len() })
    }
}

/// An OCI image manifest with a random config and `layers` random layers of `size`.
pub fn oci_image(layers: usize, size: usize) -> Manifest {
    let config = image_config("linux", "amd64");
    let layer_blobs: Vec<Vec<u8>> = (0..layers).map(|_| random(size)).collect();
    let value = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": layer_blobs.iter().map(|l| descriptor(OCI_LAYER, l)).collect::<Vec<_>>(),
        "annotations": { "org.example.conformance": run_id() },
    });
    let mut blobs = vec![config];
    blobs.extend(layer_blobs);
    Manifest::from_json(OCI_MANIFEST, &value, blobs)
}

/// A Docker schema 2 image manifest for `os/arch`.
pub fn docker_image(os: &str, arch: &str, layer_size: usize) -> Manifest {
    let config = image_config(os, arch);
    let layer = random(layer_size);
    let value = json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor(DOCKER_CONFIG, &config),
        "layers": [descriptor(DOCKER_LAYER, &layer)],
    });
    Manifest::from_json(DOCKER_MANIFEST, &value, vec![config, layer])
}

fn image_config(os: &str, arch: &str) -> Vec<u8> {
    let value = json!({
        "architecture": arch,
        "os": os,
        "config": { "Labels": { "org.example.nonce": run_id() } },
        "rootfs": { "type": "layers", "diff_ids": [] },
    });
    serde_json::to_vec(&value).unwrap_or_default()
}

/// An index (OCI or Docker list) over `children`, each with its platform.
pub fn index(media_type: &str, children: &[(&Manifest, &str, &str)]) -> Manifest {
    let manifests: Vec<Value> = children
        .iter()
        .map(|(m, os, arch)| {
            let mut d = m.descriptor();
            d["platform"] = json!({ "os": os, "architecture": arch });
            d
        })
        .collect();
    let value = json!({ "schemaVersion": 2, "mediaType": media_type, "manifests": manifests });
    Manifest::from_json(media_type, &value, Vec::new())
}

/// The empty JSON object blob `{}` (the spec's empty descriptor content).
pub const EMPTY_JSON: &[u8] = b"{}";

/// An artifact manifest: `artifactType` (or, when `None`, a config of media type
/// `config_type`), one random layer, optional `subject` and annotations.
pub fn artifact(
    artifact_type: Option<&str>,
    config_type: &str,
    subject: Option<&Manifest>,
    annotations: &[(&str, &str)],
) -> Manifest {
    let layer = random(512);
    let config = if config_type == OCI_EMPTY {
        EMPTY_JSON.to_vec()
    } else {
        format!("{{\"nonce\":\"{}\"}}", run_id()).into_bytes()
    };
    let mut value = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(config_type, &config),
        "layers": [descriptor("application/vnd.example.conformance.layer", &layer)],
    });
    if let Some(t) = artifact_type {
        value["artifactType"] = json!(t);
    }
    if let Some(s) = subject {
        value["subject"] = s.descriptor();
    }
    if !annotations.is_empty() {
        let map: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        value["annotations"] = Value::Object(map);
    }
    Manifest::from_json(OCI_MANIFEST, &value, vec![config, layer])
}

/// Pushes a blob with POST then PUT; returns its digest.
pub fn push_blob(ctx: &mut Ctx, repo: &str, data: &[u8]) -> Result<String, Failure> {
    let digest = sha256(data);
    let resp = ctx.send(
        ctx.request("POST", &format!("/v2/{repo}/blobs/uploads/"))
            .body(Vec::new()),
    )?;
    setup(expect_status(&resp, &[202], "POST /blobs/uploads/"))?;
    let location = setup(expect_header(&resp, "Location", "POST /blobs/uploads/"))?.to_owned();
    let target = ctx.resolve(&location)?.with_query("digest", &digest);
    let resp = ctx.send(
        Request::new("PUT", target)
            .header("Content-Type", "application/octet-stream")
            .body(data.to_vec()),
    )?;
    setup(expect_status(
        &resp,
        &[201],
        &format!("PUT of blob {digest}"),
    ))?;
    Ok(digest)
}

/// Pushes `m`'s blobs, then `m` under `reference` (a tag, or its digest when `None`).
pub fn push_manifest(
    ctx: &mut Ctx,
    repo: &str,
    m: &Manifest,
    reference: Option<&str>,
) -> Result<(), Failure> {
    for blob in &m.blobs {
        push_blob(ctx, repo, blob)?;
    }
    let reference = reference.unwrap_or(&m.digest).to_owned();
    let resp = ctx.send(put_manifest(ctx, repo, &reference, m))?;
    setup(expect_status(
        &resp,
        &[201],
        &format!("PUT manifest {repo}:{reference}"),
    ))
}

/// The PUT request for a manifest (not sent).
pub fn put_manifest(ctx: &Ctx, repo: &str, reference: &str, m: &Manifest) -> Request {
    ctx.request("PUT", &format!("/v2/{repo}/manifests/{reference}"))
        .header("Content-Type", &m.media_type)
        .body(m.bytes.clone())
}

/// Marks a failure in a setup step as such, so the report does not blame the
/// requirement under test.
pub fn setup<T>(r: Result<T, Failure>) -> Result<T, Failure> {
    r.map_err(|f| match f {
        Failure::Fail(m) => fail(format!("setup failed: {m}")),
        skip => skip,
    })
}

/// Fails unless `got` is byte for byte `want`, with the first difference in the message.
pub fn same_bytes(got: &[u8], want: &[u8], what: &str) -> Result<(), Failure> {
    ensure(got == want, || {
        let first = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        format!(
            "{what}: {} bytes received, {} expected; first difference at offset {first}",
            got.len(),
            want.len()
        )
    })
}
