//! The local `file://` provider: the generic provider suite, then what only a local
//! key can get wrong (file formats, permissions, the development key).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{Duration, Utc};
use kms_client::local::{self, LocalKek};
use kms_client::testsuite::{self, KeyFixture};
use kms_client::{Kek, KeyId, KmsError, VersionedKeyId};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use tempfile::TempDir;

/// Keys in a fresh temporary directory, managed through the operator functions of
/// `kms_client::local`, or by editing the files as an operator could.
struct LocalFixture {
    dir: TempDir,
    kek: Arc<LocalKek>,
    next: AtomicU32,
}

impl LocalFixture {
    fn new() -> Self {
        LocalFixture {
            dir: TempDir::new().expect("create a temporary directory"),
            kek: Arc::new(LocalKek::new()),
            next: AtomicU32::new(1),
        }
    }

    fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn fresh_name(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.next.fetch_add(1, Ordering::Relaxed))
    }

    async fn new_key(&self, bits: u32) -> VersionedKeyId {
        let (dir, name) = (self.dir(), self.fresh_name("key"));
        blocking(move || local::create_key(&dir, &name, bits)).await
    }

    /// Writes a version's files by hand, as an operator dropping in a key would.
    fn place_version(&self, pem: &[u8], metadata: &str) -> VersionedKeyId {
        let name = self.fresh_name("placed");
        let key: KeyId = format!("file://{}/{name}", self.dir.path().display())
            .parse()
            .expect("valid key id");
        std::fs::create_dir(self.dir.path().join(&name)).expect("create key directory");
        let id = key.with_version(&random_version()).expect("valid version");
        let files = local::version_files(&id).expect("file id");
        std::fs::write(&files.pem, pem).expect("write pem");
        std::fs::write(&files.metadata, metadata).expect("write metadata");
        id
    }
}

#[async_trait]
impl KeyFixture for LocalFixture {
    fn kek(&self) -> Arc<dyn Kek> {
        self.kek.clone()
    }

    async fn create_key(&self, bits: u32) -> KeyId {
        self.new_key(bits).await.versionless()
    }

    async fn add_version(&self, key: &KeyId) -> VersionedKeyId {
        let key = key.clone();
        blocking(move || local::add_version(&key, testsuite::SUITE_KEY_BITS)).await
    }

    async fn set_enabled(&self, id: &VersionedKeyId, enabled: bool) {
        local::set_enabled(id, enabled).expect("set_enabled");
    }

    async fn set_expired(&self, id: &VersionedKeyId) {
        local::set_expiry(id, Some(Utc::now() - Duration::minutes(1))).expect("set_expiry");
    }

    async fn delete_version(&self, id: &VersionedKeyId) {
        let files = local::version_files(id).expect("file id");
        std::fs::remove_file(files.pem).expect("remove pem");
        std::fs::remove_file(files.metadata).expect("remove metadata");
    }

    async fn create_ec_key(&self) -> KeyId {
        let pem = openssl_ec_key(false);
        let metadata = metadata_json("EC", 256);
        self.place_version(&pem, &metadata).key().clone()
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KmsError> + Send + 'static,
) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking task")
        .expect("local key operation")
}

fn random_version() -> String {
    rand::random::<[u8; 16]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn metadata_json(key_type: &str, key_size: u32) -> String {
    serde_json::json!({
        "enabled": true,
        "created": Utc::now(),
        "expires": null,
        "not_before": null,
        "key_type": key_type,
        "key_size": key_size,
    })
    .to_string()
}

/// Runs `openssl` with `input` on stdin and returns its stdout.
fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "this test needs `openssl` on PATH (for EC keys and an independent RSA-OAEP); \
                 install the openssl package: {e}"
            )
        });
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input).expect("write to openssl");
    drop(stdin);
    let out = child.wait_with_output().expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A P-256 private key from openssl: PKCS#8 ("BEGIN PRIVATE KEY"), or SEC1
/// ("BEGIN EC PRIVATE KEY") when `sec1`.
fn openssl_ec_key(sec1: bool) -> Vec<u8> {
    let pkcs8 = openssl(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ],
        &[],
    );
    assert!(pkcs8.starts_with(b"-----BEGIN PRIVATE KEY-----"));
    if !sec1 {
        return pkcs8;
    }
    let sec1 = openssl(&["ec", "-outform", "PEM"], &pkcs8);
    assert!(sec1.starts_with(b"-----BEGIN EC PRIVATE KEY-----"));
    sec1
}

fn expect_misconfigured<T: std::fmt::Debug>(result: Result<T, KmsError>, mentions: &[&str]) {
    match result {
        Err(e @ KmsError::Misconfigured { .. }) => {
            let msg = e.to_string();
            for m in mentions {
                assert!(msg.contains(m), "{msg:?} should mention {m:?}");
            }
        }
        other => panic!("expected Misconfigured, got {other:?}"),
    }
}

fn expect_revoked<T: std::fmt::Debug>(result: Result<T, KmsError>) {
    assert!(
        matches!(result, Err(KmsError::Revoked { .. })),
        "expected Revoked, got {result:?}"
    );
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temporary path")
}

// --- the generic suite ------------------------------------------------------------

kms_client::provider_suite!(LocalFixture::new());

// --- local only ---------------------------------------------------------------------

#[tokio::test]
async fn malformed_metadata_is_misconfigured_naming_the_file() {
    let f = LocalFixture::new();
    let v = f.new_key(2048).await;
    let files = local::version_files(&v).expect("file id");
    let json = path_str(&files.metadata);

    std::fs::write(&files.metadata, "{\"enabled\": tru").expect("write");
    expect_misconfigured(f.kek.describe(&v).await, &[json, "malformed key metadata"]);
    expect_misconfigured(f.kek.latest_version(&v.versionless()).await, &[json]);
    expect_misconfigured(f.kek.unwrap(&v, &[0; 256]).await, &[json]);

    // A typo must not silently leave a version enabled.
    let typo = metadata_json("RSA", 2048).replace("\"enabled\"", "\"enable\"");
    std::fs::write(&files.metadata, typo).expect("write");
    expect_misconfigured(f.kek.describe(&v).await, &[json, "unknown field `enable`"]);

    std::fs::write(&files.metadata, metadata_json("RSA", 3072)).expect("write");
    expect_misconfigured(f.kek.describe(&v).await, &[json, "key_size is 3072"]);

    std::fs::write(&files.metadata, metadata_json("oct", 2048)).expect("write");
    expect_misconfigured(f.kek.describe(&v).await, &[json, "key_type"]);

    std::fs::write(&files.metadata, metadata_json("RSA", 2048)).expect("write");
    f.kek.describe(&v).await.expect("repaired metadata");
}

#[tokio::test]
async fn malformed_pem_is_misconfigured_naming_the_file() {
    let f = LocalFixture::new();
    let v = f.new_key(2048).await;
    let files = local::version_files(&v).expect("file id");
    let pem = path_str(&files.pem);
    let good = std::fs::read(&files.pem).expect("read pem");

    for bad in [
        b"not a key".to_vec(),
        good[..good.len() / 2].to_vec(),
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_vec(),
        String::from_utf8_lossy(&good)
            .replace("PRIVATE KEY", "CERTIFICATE")
            .into_bytes(),
    ] {
        std::fs::write(&files.pem, &bad).expect("write");
        expect_misconfigured(f.kek.describe(&v).await, &[pem]);
        expect_misconfigured(f.kek.wrap(&v, &[1; 32]).await, &[pem]);
        expect_misconfigured(f.kek.latest_version(&v.versionless()).await, &[pem]);
    }
}

#[tokio::test]
async fn ec_keys_are_refused_with_a_clear_message() {
    let f = LocalFixture::new();
    let expected = "EC keys are not supported; valv needs an RSA key of 2048, 3072 or 4096 bits";
    // Metadata that claims RSA: the key file itself is what counts.
    for sec1 in [false, true] {
        let v = f.place_version(&openssl_ec_key(sec1), &metadata_json("RSA", 2048));
        let pem = local::version_files(&v).expect("file id").pem;
        expect_misconfigured(f.kek.describe(&v).await, &[expected, path_str(&pem)]);
    }
}

#[tokio::test]
async fn rsa_keys_of_unsupported_sizes_are_misconfigured() {
    let f = LocalFixture::new();
    let small = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024).expect("keygen");
    let pem = small.to_pkcs8_pem(LineEnding::LF).expect("encode");
    let v = f.place_version(pem.as_bytes(), &metadata_json("RSA", 1024));
    expect_misconfigured(f.kek.describe(&v).await, &["1024 bits"]);
    expect_misconfigured(f.kek.latest_version(&v.versionless()).await, &["1024 bits"]);
    expect_misconfigured(f.kek.wrap(&v, &[1; 32]).await, &["1024 bits"]);

    // PKCS#1 is read too, and held to the same rule.
    let pkcs1 =
        rsa::pkcs1::EncodeRsaPrivateKey::to_pkcs1_pem(&small, LineEnding::LF).expect("encode");
    let v = f.place_version(pkcs1.as_bytes(), &metadata_json("RSA", 1024));
    expect_misconfigured(f.kek.describe(&v).await, &["1024 bits"]);

    for bits in [1024, 2047, 8192] {
        expect_misconfigured(local::create_key(&f.dir(), "small", bits), &["bits"]);
    }
    assert!(
        !f.dir.path().join("small").exists(),
        "nothing is left behind"
    );
}

/// The 3072-bit size is covered by `ensure_dev_key_creates_a_key_once`, which makes
/// one anyway; RSA key generation is too slow to make two.
#[tokio::test]
async fn rsa_4096_bit_key_works() {
    let f = LocalFixture::new();
    let v = f.new_key(4096).await;
    let d = f.kek.describe(&v).await.expect("describe");
    assert_eq!((d.key_type.as_str(), d.key_size_bits), ("RSA", 4096));
    let rk = [7u8; 32];
    let wrapped = f.kek.wrap(&v, &rk).await.expect("wrap");
    assert_eq!(wrapped.len(), 512);
    let unwrapped = f.kek.unwrap(&v, &wrapped).await.expect("unwrap");
    assert_eq!(unwrapped.expose(), rk.as_slice());
}

#[tokio::test]
async fn ensure_dev_key_creates_a_key_once() {
    let f = LocalFixture::new();
    let dir = f.dir().join("keys");
    let ensure = |dir: PathBuf| blocking(move || local::ensure_dev_key(&dir, "kek"));

    let (key, created) = ensure(dir.clone()).await;
    assert!(created);
    assert_eq!(key.to_string(), format!("file://{}/kek", dir.display()));
    assert_eq!(key.version(), None);
    let v = f.kek.latest_version(&key).await.expect("latest");
    let d = f.kek.describe(&v).await.expect("describe");
    assert_eq!((d.key_type.as_str(), d.key_size_bits), ("RSA", 3072));
    let wrapped = f.kek.wrap(&v, &[9; 32]).await.expect("wrap");
    assert_eq!(wrapped.len(), 384);
    let unwrapped = f.kek.unwrap(&v, &wrapped).await.expect("unwrap");
    assert_eq!(unwrapped.expose(), [9; 32].as_slice());

    let (again, created) = ensure(dir.clone()).await;
    assert!(!created, "a second start must reuse the key");
    assert_eq!(again, key);
    assert_eq!(f.kek.latest_version(&key).await.expect("latest"), v);

    // A revoked development key stays revoked: a fresh key could not decrypt the
    // content written under the old one.
    local::set_enabled(&v, false).expect("disable");
    let (_, created) = ensure(dir.clone()).await;
    assert!(!created);
    expect_revoked(f.kek.latest_version(&key).await);
    assert_eq!(std::fs::read_dir(dir.join("kek")).expect("list").count(), 2);
}

#[tokio::test]
async fn key_files_are_private_to_the_owner() {
    use std::os::unix::fs::PermissionsExt;
    let f = LocalFixture::new();
    let v = f.new_key(2048).await;
    let files = local::version_files(&v).expect("file id");
    local::set_enabled(&v, true).expect("rewrite metadata");
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&files.pem), 0o600, "private key file mode");
    assert_eq!(mode(&files.metadata), 0o600, "metadata file mode");
    assert_eq!(
        mode(&local::key_dir(v.key()).expect("dir")),
        0o700,
        "key directory mode"
    );
}

#[tokio::test]
async fn on_disk_metadata_has_the_documented_fields() {
    let f = LocalFixture::new();
    let v = f.new_key(2048).await;
    let files = local::version_files(&v).expect("file id");
    let expires = Utc::now() + Duration::days(30);
    local::set_expiry(&v, Some(expires)).expect("set_expiry");
    let text = std::fs::read_to_string(&files.metadata).expect("read");
    let json: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let mut fields: Vec<&str> = json
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "created",
            "enabled",
            "expires",
            "key_size",
            "key_type",
            "not_before"
        ]
    );
    assert_eq!(json["enabled"], true);
    assert_eq!(json["key_type"], "RSA");
    assert_eq!(json["key_size"], 2048);
    assert_eq!(json["not_before"], serde_json::Value::Null);
    let parsed = chrono::DateTime::parse_from_rfc3339(json["expires"].as_str().expect("a string"))
        .expect("RFC 3339");
    assert_eq!(parsed, expires);
    let pem = std::fs::read_to_string(&files.pem).expect("read");
    assert!(
        pem.starts_with("-----BEGIN PRIVATE KEY-----\n"),
        "PKCS#8 PEM"
    );

    // Atomic rewrites leave nothing else in the directory.
    let mut names: Vec<String> = std::fs::read_dir(local::key_dir(v.key()).expect("dir"))
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            format!("{}.json", v.version()),
            format!("{}.pem", v.version())
        ]
    );
}

/// Key Vault still allows wrapKey on a disabled key; the local provider does not.
#[tokio::test]
async fn wrap_is_refused_outside_the_validity_window() {
    let f = LocalFixture::new();
    let v = f.new_key(2048).await;
    let key = v.versionless();
    let wrapped = f.kek.wrap(&v, &[3; 32]).await.expect("wrap");

    local::set_enabled(&v, false).expect("disable");
    expect_revoked(f.kek.wrap(&v, &[3; 32]).await);
    local::set_enabled(&v, true).expect("enable");

    local::set_not_before(&v, Some(Utc::now() + Duration::hours(1))).expect("nbf");
    expect_revoked(f.kek.wrap(&v, &[3; 32]).await);
    expect_revoked(f.kek.unwrap(&v, &wrapped).await);
    expect_revoked(f.kek.latest_version(&key).await);
    let d = f.kek.describe(&v).await.expect("describe");
    assert!(d.enabled && d.not_before.is_some() && !d.usable_at(Utc::now()));

    local::set_not_before(&v, None).expect("clear nbf");
    local::set_expiry(&v, Some(Utc::now() - Duration::seconds(1))).expect("expire");
    expect_revoked(f.kek.wrap(&v, &[3; 32]).await);
    local::set_expiry(&v, None).expect("clear expiry");
    assert_eq!(
        f.kek.unwrap(&v, &wrapped).await.expect("unwrap").expose(),
        [3; 32].as_slice()
    );
}

#[tokio::test]
async fn half_present_versions() {
    let f = LocalFixture::new();
    let v1 = f.new_key(2048).await;
    let key = v1.versionless();
    let v2 = f.add_version(&key).await;
    let files = local::version_files(&v2).expect("file id");

    // Private key gone (crypto-shredded): the version no longer exists.
    let pem = std::fs::read(&files.pem).expect("read");
    std::fs::remove_file(&files.pem).expect("remove");
    expect_revoked(f.kek.describe(&v2).await);
    assert_eq!(f.kek.latest_version(&key).await.expect("latest"), v1);

    // Metadata not yet written (a creation in progress): not a version either.
    std::fs::write(&files.pem, &pem).expect("restore");
    std::fs::remove_file(&files.metadata).expect("remove");
    expect_revoked(f.kek.describe(&v2).await);
    assert_eq!(f.kek.latest_version(&key).await.expect("latest"), v1);
}

#[tokio::test]
async fn operator_functions_fail_clearly() {
    let f = LocalFixture::new();
    let v = f.new_key(2048).await;
    let key = v.versionless();
    let name = key.name().to_owned();

    expect_misconfigured(
        local::create_key(&f.dir(), &name, 2048),
        &["already exists"],
    );
    expect_misconfigured(
        local::create_key(Path::new("relative"), "k", 2048),
        &["absolute"],
    );
    expect_misconfigured(
        local::create_key(&f.dir(), "no_underscores", 2048),
        &["key name"],
    );
    expect_misconfigured(local::add_version(&key, 1024), &["1024"]);

    let missing: KeyId = format!("file://{}/missing", f.dir.path().display())
        .parse()
        .expect("valid id");
    expect_revoked(local::add_version(&missing, 2048));
    expect_revoked(f.kek.latest_version(&missing).await);
    let never = key.with_version(&random_version()).expect("version");
    expect_revoked(local::set_enabled(&never, false));

    let azure: VersionedKeyId = "https://v.vault.azure.net/keys/k/0123456789abcdef0123456789abcdef"
        .parse()
        .expect("valid id");
    expect_misconfigured(f.kek.describe(&azure).await, &["file://"]);
    expect_misconfigured(local::set_enabled(&azure, false), &["file://"]);
}

/// The wrapped bytes are standard RSA-OAEP-256 (SHA-256 for the label hash and MGF1),
/// the algorithm a vault uses, so an independent implementation reads them both ways.
#[tokio::test]
async fn wrapping_is_rsa_oaep_256_as_openssl_does_it() {
    let f = LocalFixture::new();
    let v = f.new_key(2048).await;
    let pem = local::version_files(&v).expect("file id").pem;
    let oaep_256 = [
        "-pkeyopt",
        "rsa_padding_mode:oaep",
        "-pkeyopt",
        "rsa_oaep_md:sha256",
        "-pkeyopt",
        "rsa_mgf1_md:sha256",
    ];
    let rk: [u8; 32] = rand::random();

    let wrapped = f.kek.wrap(&v, &rk).await.expect("wrap");
    let mut args = vec!["pkeyutl", "-decrypt", "-inkey", path_str(&pem)];
    args.extend(oaep_256);
    assert_eq!(
        openssl(&args, &wrapped),
        rk,
        "openssl unwraps what valv wrapped"
    );

    let mut args = vec!["pkeyutl", "-encrypt", "-inkey", path_str(&pem)];
    args.extend(oaep_256);
    let by_openssl = openssl(&args, &rk);
    let unwrapped = f.kek.unwrap(&v, &by_openssl).await.expect("unwrap");
    assert_eq!(
        unwrapped.expose(),
        rk.as_slice(),
        "valv unwraps what openssl wrapped"
    );
}
