//! Local RSA key-encryption keys on disk, for development and the embedded default
//! (DESIGN §9). Anyone who can read these files can unwrap every registry key, so a
//! local KEK gives none of the separation a vault or HSM gives; it exists so that
//! `valv serve` works with no vault at all, and so that key lifecycle (disable,
//! expire, delete, rotate) can be tested without one.
//!
//! # On-disk layout
//!
//! A key id `file:///<dir>/<name>[/<version>]` maps to the directory `<dir>/<name>/`
//! (created with mode 0700), which holds one pair of files per version:
//!
//! ```text
//! <dir>/<name>/<version>.pem    private key, PKCS#8 PEM ("BEGIN PRIVATE KEY"), mode 0600
//! <dir>/<name>/<version>.json   metadata, see below
//! ```
//!
//! `<version>` is 32 random lowercase hex characters, like a Key Vault version. The
//! metadata file is:
//!
//! ```json
//! {"enabled": true, "created": "2025-01-31T12:00:00.123456789Z", "expires": null,
//!  "not_before": null, "key_type": "RSA", "key_size": 2048}
//! ```
//!
//! `created`, `expires` and `not_before` are RFC 3339; `expires` and `not_before` may
//! be `null`. Unknown fields are an error, so a typo such as `"enable": false` is
//! reported instead of silently leaving the version enabled. `key_type` must be `RSA`
//! and `key_size` must match the key's modulus.
//!
//! A version exists once both of its files exist. Writers create the private key
//! first and the metadata last, so a crash in between leaves an invisible,
//! harmless `.pem`. Metadata is always replaced atomically (temporary file in the
//! same directory, then rename), so a reader never sees a half-written file; files
//! whose names are not `<version>.json` / `<version>.pem` are ignored.
//!
//! An operator may hand-place a key made elsewhere: PKCS#8 (`openssl genpkey
//! -algorithm RSA`) or PKCS#1 (`BEGIN RSA PRIVATE KEY`) PEM of 2048, 3072 or 4096
//! bits, next to a metadata file written by hand. Encrypted PEM is not supported.
//!
//! # Reading
//!
//! [`LocalKek`] reads both files on every call, so disabling, expiring or deleting a
//! version on disk takes effect on the very next operation; that is what revocation
//! tests rely on. File I/O and RSA private-key operations run on tokio's blocking
//! pool because they take milliseconds.
//!
//! # Operator functions
//!
//! [`create_key`], [`add_version`], [`set_enabled`], [`set_expiry`],
//! [`set_not_before`], [`describe_versions`] and [`ensure_dev_key`] back the key
//! subcommands (`valv kek …`) and `valv serve`'s embedded default. They are
//! synchronous and may take seconds (RSA key generation); async callers run them
//! with `tokio::task::spawn_blocking`.
//!
//! # Errors
//!
//! - a missing key directory, version, or private key file, or a file we may not
//!   read: `Revoked` (the local equivalents of Key Vault's 404 and 403);
//! - malformed metadata or PEM, an EC key, an RSA key of another size, a non-`file://`
//!   id: `Misconfigured`, naming the file and what is wrong with it;
//! - any other I/O error (e.g. EMFILE, EIO): `Transient`.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::rngs::OsRng;
use rand::RngCore;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding, ObjectIdentifier, PrivateKeyInfo, SecretDocument};
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::id::{is_valid_key_name, is_version_string, KeyIdKind};
use crate::{Kek, KeyDescription, KeyId, KmsError, SecretBytes, VersionedKeyId};

/// RSA modulus sizes valv accepts, the sizes Key Vault offers.
pub const SUPPORTED_KEY_SIZES: [u32; 3] = [2048, 3072, 4096];

/// Size of the key [`ensure_dev_key`] creates: NIST's 128-bit-security size, and
/// still quick to generate at first start.
pub const DEV_KEY_BITS: u32 = 3072;

const KEY_TYPE_RSA: &str = "RSA";

/// id-ecPublicKey (RFC 5480), the algorithm of every PKCS#8 EC private key.
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

/// A [`crate::Kek`] over RSA keys in local files (see the module docs for the layout).
///
/// Holds no state: every call reads the files again, so changes an operator makes on
/// disk are seen at once.
#[derive(Debug, Clone, Default)]
pub struct LocalKek {
    _private: (),
}

impl LocalKek {
    pub fn new() -> Self {
        LocalKek { _private: () }
    }
}

/// The two files that make up one key version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionFiles {
    /// PKCS#8 PEM private key.
    pub pem: PathBuf,
    /// JSON metadata.
    pub metadata: PathBuf,
}

/// The directory holding every version of a `file://` key.
///
/// Fails with `Misconfigured` when `key` is not a `file://` id.
pub fn key_dir(key: &KeyId) -> Result<PathBuf, KmsError> {
    match key.kind() {
        KeyIdKind::File { dir, name } => Ok(dir.join(name)),
        KeyIdKind::AzureKeyVault { .. } => Err(KmsError::misconfigured(
            key,
            "the local key provider only serves file:// key ids",
        )),
    }
}

/// Where the files of one version live (whether or not they exist).
///
/// Fails with `Misconfigured` when `id` is not a `file://` id.
pub fn version_files(id: &VersionedKeyId) -> Result<VersionFiles, KmsError> {
    let dir = key_dir(id.key())?;
    Ok(files_in(&dir, id.version()))
}

fn files_in(dir: &Path, version: &str) -> VersionFiles {
    VersionFiles {
        pem: dir.join(format!("{version}.pem")),
        metadata: dir.join(format!("{version}.json")),
    }
}

/// The metadata file of one version (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    enabled: bool,
    created: DateTime<Utc>,
    expires: Option<DateTime<Utc>>,
    not_before: Option<DateTime<Utc>>,
    key_type: String,
    key_size: u32,
}

impl Metadata {
    fn new(key_size: u32, created: DateTime<Utc>) -> Self {
        Metadata {
            enabled: true,
            created,
            expires: None,
            not_before: None,
            key_type: KEY_TYPE_RSA.to_owned(),
            key_size,
        }
    }

    fn usable_at(&self, now: DateTime<Utc>) -> bool {
        self.unusable_reason(now).is_none()
    }

    /// Why the version may not be used at `now`, if it may not.
    fn unusable_reason(&self, now: DateTime<Utc>) -> Option<String> {
        if !self.enabled {
            return Some("the version is disabled".to_owned());
        }
        if let Some(exp) = self.expires.filter(|exp| now >= *exp) {
            return Some(format!("the version expired at {}", exp.to_rfc3339()));
        }
        if let Some(nbf) = self.not_before.filter(|nbf| now < *nbf) {
            return Some(format!(
                "the version is not valid before {}",
                nbf.to_rfc3339()
            ));
        }
        None
    }
}

/// One version read from disk and checked: metadata plus an RSA key of a supported
/// size that agrees with it.
struct LoadedVersion {
    metadata: Metadata,
    key: RsaPrivateKey,
}

#[async_trait]
impl Kek for LocalKek {
    async fn describe(&self, id: &VersionedKeyId) -> Result<KeyDescription, KmsError> {
        let owned = id.clone();
        let loaded = blocking(id, move || load_version(&owned)).await?;
        Ok(KeyDescription {
            id: id.clone(),
            key_type: loaded.metadata.key_type.clone(),
            key_size_bits: modulus_bits(&loaded.key),
            enabled: loaded.metadata.enabled,
            created: Some(loaded.metadata.created),
            expires: loaded.metadata.expires,
            not_before: loaded.metadata.not_before,
        })
    }

    async fn latest_version(&self, id: &KeyId) -> Result<VersionedKeyId, KmsError> {
        let owned = id.clone();
        blocking(id, move || resolve_version(&owned)).await
    }

    async fn wrap(&self, id: &VersionedKeyId, plaintext: &[u8]) -> Result<Vec<u8>, KmsError> {
        let owned = id.clone();
        let plaintext = Zeroizing::new(plaintext.to_vec());
        blocking(id, move || {
            // Stricter than Key Vault, which still allows wrapKey on a disabled key:
            // refusing here means a rotation can never wrap a registry key under a
            // version that could not unwrap it again.
            let loaded = load_usable_version(&owned)?;
            let public = RsaPublicKey::from(&loaded.key);
            public.encrypt(&mut OsRng, oaep(), &plaintext).map_err(|e| {
                KmsError::misconfigured(
                    &owned,
                    format!("cannot wrap {} bytes with this key: {e}", plaintext.len()),
                )
            })
        })
        .await
    }

    async fn unwrap(&self, id: &VersionedKeyId, wrapped: &[u8]) -> Result<SecretBytes, KmsError> {
        let owned = id.clone();
        let wrapped = wrapped.to_vec();
        blocking(id, move || {
            let loaded = load_usable_version(&owned)?;
            // Blinded, so the time a decryption takes does not depend on the private
            // exponent. Every failure is the same error: the caller must not learn
            // why an OAEP decryption failed (Manger's attack). The rsa crate's
            // residual timing leak (RUSTSEC-2023-0071) is tolerable here: unwrap
            // inputs come from the keyring, not from registry clients, and this
            // provider is for development.
            loaded
                .key
                .decrypt_blinded(&mut OsRng, oaep(), &wrapped)
                .map(SecretBytes::new)
                .map_err(|_| KmsError::InvalidCiphertext {
                    key: owned.to_string(),
                })
        })
        .await
    }
}

/// RSA-OAEP with SHA-256 for both the label hash and MGF1, Key Vault's `RSA-OAEP-256`.
fn oaep() -> Oaep {
    Oaep::new::<sha2::Sha256>()
}

/// Runs file I/O and RSA work on the blocking pool.
async fn blocking<T, F>(id: &impl std::fmt::Display, f: F) -> Result<T, KmsError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, KmsError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        // A panic in key code is a bug; surface it rather than disguise it as an
        // error class the watcher would act on.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(KmsError::transient(
            id,
            format!("local key operation was cancelled: {e}"),
        )),
    }
}

fn load_usable_version(id: &VersionedKeyId) -> Result<LoadedVersion, KmsError> {
    let loaded = load_version(id)?;
    if let Some(reason) = loaded.metadata.unusable_reason(Utc::now()) {
        return Err(KmsError::revoked(id, reason));
    }
    Ok(loaded)
}

fn load_version(id: &VersionedKeyId) -> Result<LoadedVersion, KmsError> {
    let files = version_files(id)?;
    let metadata = read_metadata(id, &files.metadata)?;
    let key = read_private_key(id, &files.pem)?;
    check_metadata_matches_key(id, &files.metadata, &metadata, &key)?;
    Ok(LoadedVersion { metadata, key })
}

fn check_metadata_matches_key(
    id: &VersionedKeyId,
    path: &Path,
    metadata: &Metadata,
    key: &RsaPrivateKey,
) -> Result<(), KmsError> {
    if metadata.key_type != KEY_TYPE_RSA {
        return Err(KmsError::misconfigured(
            id,
            format!(
                "{}: key_type is {:?}, but only \"RSA\" is supported",
                path.display(),
                metadata.key_type
            ),
        ));
    }
    let bits = modulus_bits(key);
    if metadata.key_size != bits {
        return Err(KmsError::misconfigured(
            id,
            format!(
                "{}: key_size is {}, but the private key has {bits} bits",
                path.display(),
                metadata.key_size
            ),
        ));
    }
    Ok(())
}

fn resolve_version(key: &KeyId) -> Result<VersionedKeyId, KmsError> {
    if let Some(pinned) = key.as_versioned() {
        load_version(&pinned)?;
        return Ok(pinned);
    }
    let dir = key_dir(key)?;
    let now = Utc::now();
    let newest = list_versions(key, &dir)?
        .into_iter()
        .filter(|(_, metadata)| metadata.usable_at(now))
        .max_by(|(va, ma), (vb, mb)| ma.created.cmp(&mb.created).then_with(|| va.cmp(vb)))
        .ok_or_else(|| KmsError::revoked(key, format!("no enabled version of key {key}")))?;
    let chosen = key.with_version(&newest.0)?;
    // The chosen version must be usable as a key too, not just have good metadata:
    // an EC key or a broken PEM is reported here rather than at the first wrap.
    load_version(&chosen)?;
    Ok(chosen)
}

/// Every complete version of a key (both files present) with its metadata.
///
/// Fails with `Revoked` when the key directory does not exist, and with
/// `Misconfigured` when any version's metadata is malformed: a broken file next to
/// the keys is something an operator must see, not something to skip.
fn list_versions(key: &KeyId, dir: &Path) -> Result<Vec<(String, Metadata)>, KmsError> {
    let entries = fs::read_dir(dir).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => KmsError::revoked(
            key,
            format!("key not found: {} does not exist", dir.display()),
        ),
        _ => io_error(key, dir, "list", &e),
    })?;
    let mut versions = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(key, dir, "list", &e))?;
        let file_name = entry.file_name();
        let Some(version) = file_name
            .to_str()
            .and_then(|n| n.strip_suffix(".json"))
            .filter(|v| is_version_string(v))
        else {
            continue;
        };
        let files = files_in(dir, version);
        // Without its private key a version is deleted (or half-deleted): skip it,
        // as Key Vault no longer lists a deleted version.
        if !files.pem.exists() {
            continue;
        }
        let metadata = match read_metadata(key, &files.metadata) {
            Ok(m) => m,
            // Deleted between listing and reading.
            Err(KmsError::Revoked { .. }) => continue,
            Err(e) => return Err(e),
        };
        versions.push((version.to_owned(), metadata));
    }
    Ok(versions)
}

fn read_metadata(id: &impl std::fmt::Display, path: &Path) -> Result<Metadata, KmsError> {
    let text = fs::read_to_string(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => version_not_found(id, path),
        io::ErrorKind::InvalidData => KmsError::misconfigured(
            id,
            format!("{}: metadata is not UTF-8 text", path.display()),
        ),
        _ => io_error(id, path, "read", &e),
    })?;
    serde_json::from_str(&text).map_err(|e| {
        KmsError::misconfigured(
            id,
            format!("{}: malformed key metadata: {e}", path.display()),
        )
    })
}

fn version_not_found(id: &impl std::fmt::Display, path: &Path) -> KmsError {
    KmsError::revoked(
        id,
        format!("version not found: {} does not exist", path.display()),
    )
}

/// Maps an I/O error that is not "not found" onto an error class.
fn io_error(id: &impl std::fmt::Display, path: &Path, action: &str, e: &io::Error) -> KmsError {
    let reason = format!("cannot {action} {}: {e}", path.display());
    match e.kind() {
        // Losing access to the key is the local form of a vault's 403.
        io::ErrorKind::PermissionDenied => KmsError::revoked(id, reason),
        io::ErrorKind::NotADirectory | io::ErrorKind::IsADirectory => {
            KmsError::misconfigured(id, reason)
        }
        _ => KmsError::transient(id, reason),
    }
}

fn read_private_key(id: &VersionedKeyId, path: &Path) -> Result<RsaPrivateKey, KmsError> {
    let bytes = Zeroizing::new(fs::read(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => KmsError::revoked(
            id,
            format!(
                "version not found: private key {} does not exist",
                path.display()
            ),
        ),
        _ => io_error(id, path, "read", &e),
    })?);
    parse_private_key(&bytes)
        .map_err(|why| KmsError::misconfigured(id, format!("{}: {why}", path.display())))
}

const EC_NOT_SUPPORTED: &str =
    "EC keys are not supported; valv needs an RSA key of 2048, 3072 or 4096 bits";

/// Parses a PEM private key, accepting only RSA keys of a supported size.
///
/// The error is a reason without the path, which the caller adds.
fn parse_private_key(pem: &[u8]) -> Result<RsaPrivateKey, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "not a PEM file (not UTF-8 text)")?;
    // `openssl ecparam -genkey` writes an "EC PARAMETERS" block before the key, which
    // the PEM decoder would reject as malformed; name the real problem instead.
    if text.contains("-----BEGIN EC ") {
        return Err(EC_NOT_SUPPORTED.to_owned());
    }
    let (label, doc) =
        SecretDocument::from_pem(text).map_err(|e| format!("not a valid PEM private key: {e}"))?;
    match label {
        "PRIVATE KEY" => {
            let info = PrivateKeyInfo::try_from(doc.as_bytes())
                .map_err(|e| format!("malformed PKCS#8 private key: {e}"))?;
            let oid = info.algorithm.oid;
            if oid == OID_EC_PUBLIC_KEY {
                return Err(EC_NOT_SUPPORTED.to_owned());
            }
            if oid != rsa::pkcs1::ALGORITHM_OID {
                return Err(format!(
                    "unsupported key algorithm (OID {oid}); valv needs an RSA key of 2048, 3072 or 4096 bits"
                ));
            }
            check_pkcs1_size(info.private_key)?;
            RsaPrivateKey::try_from(info).map_err(|e| format!("malformed RSA private key: {e}"))
        }
        "RSA PRIVATE KEY" => {
            check_pkcs1_size(doc.as_bytes())?;
            RsaPrivateKey::from_pkcs1_der(doc.as_bytes())
                .map_err(|e| format!("malformed RSA private key: {e}"))
        }
        "ENCRYPTED PRIVATE KEY" => {
            Err("encrypted (password-protected) private keys are not supported".to_owned())
        }
        other => Err(format!(
            "expected a \"PRIVATE KEY\" PEM block, found {other:?}"
        )),
    }
}

/// Checks the modulus size before the key is built, so that a key too large for the
/// RSA library is reported as the wrong size rather than as malformed.
fn check_pkcs1_size(pkcs1_der: &[u8]) -> Result<(), String> {
    let key = rsa::pkcs1::RsaPrivateKey::try_from(pkcs1_der)
        .map_err(|e| format!("malformed RSA private key: {e}"))?;
    let bits = big_endian_bits(key.modulus.as_bytes());
    check_bits(bits)
}

fn check_bits(bits: u32) -> Result<(), String> {
    if SUPPORTED_KEY_SIZES.contains(&bits) {
        Ok(())
    } else {
        Err(format!(
            "an RSA key of {bits} bits is not supported; valv needs 2048, 3072 or 4096 bits"
        ))
    }
}

fn big_endian_bits(bytes: &[u8]) -> u32 {
    let significant: &[u8] = match bytes.iter().position(|b| *b != 0) {
        Some(first) => &bytes[first..],
        None => &[],
    };
    match significant.first() {
        Some(top) => {
            let len = u32::try_from(significant.len()).unwrap_or(u32::MAX / 8);
            len * 8 - top.leading_zeros()
        }
        None => 0,
    }
}

fn modulus_bits(key: &RsaPrivateKey) -> u32 {
    u32::try_from(key.n().bits()).unwrap_or(u32::MAX)
}

// --- operator functions (see "Operator functions" in the module docs) -------------

/// Creates the key `file://<dir>/<name>` with one enabled version of `bits` bits and
/// returns that version. `dir` is created if needed.
///
/// Fails with `Misconfigured` when `bits` is not 2048, 3072 or 4096, `name` is not a
/// valid key name, `dir` is not an absolute UTF-8 path, or the key already exists;
/// with `Revoked`/`Transient` when the files cannot be written (see the module docs).
pub fn create_key(dir: &Path, name: &str, bits: u32) -> Result<VersionedKeyId, KmsError> {
    let key = file_key_id(dir, name)?;
    check_bits(bits).map_err(|why| KmsError::misconfigured(&key, why))?;
    // Generate before touching the disk, so a failure or interruption during the
    // slow part leaves nothing behind.
    let private = generate(&key, bits)?;
    create_dir_private(dir, true).map_err(|e| io_error(&key, dir, "create", &e))?;
    let path = dir.join(name);
    create_dir_private(&path, false).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => {
            KmsError::misconfigured(&key, format!("key already exists at {}", path.display()))
        }
        _ => io_error(&key, &path, "create", &e),
    })?;
    write_new_version(&key, &path, &private, bits)
}

/// Adds a new enabled version of `bits` bits to an existing key and returns it. A
/// version in `key` is ignored. With a versionless id in use, the new version becomes
/// the one [`Kek::latest_version`] returns.
///
/// Fails with `Misconfigured` for unsupported `bits` or a non-`file://` id, with
/// `Revoked` when the key does not exist, and with `Revoked`/`Transient` when the
/// files cannot be written.
pub fn add_version(key: &KeyId, bits: u32) -> Result<VersionedKeyId, KmsError> {
    let key = key.versionless();
    let dir = key_dir(&key)?;
    check_bits(bits).map_err(|why| KmsError::misconfigured(&key, why))?;
    match fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(KmsError::misconfigured(
                &key,
                format!("{} is not a directory", dir.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(KmsError::revoked(
                &key,
                format!("key not found: {} does not exist", dir.display()),
            ))
        }
        Err(e) => return Err(io_error(&key, &dir, "read", &e)),
    }
    let private = generate(&key, bits)?;
    write_new_version(&key, &dir, &private, bits)
}

/// Enables or disables one version. A disabled version refuses wrap and unwrap with
/// `Revoked` and is skipped by [`Kek::latest_version`]; this is how an operator
/// revokes a local key.
///
/// Fails with `Revoked` when the version does not exist, `Misconfigured` when its
/// metadata is malformed, and `Revoked`/`Transient` when it cannot be rewritten.
pub fn set_enabled(id: &VersionedKeyId, enabled: bool) -> Result<(), KmsError> {
    update_metadata(id, |m| m.enabled = enabled)
}

/// Sets or clears the instant after which a version may not be used.
///
/// Fails like [`set_enabled`].
pub fn set_expiry(id: &VersionedKeyId, expires: Option<DateTime<Utc>>) -> Result<(), KmsError> {
    update_metadata(id, |m| m.expires = expires)
}

/// Sets or clears the instant before which a version may not be used.
///
/// Fails like [`set_enabled`].
pub fn set_not_before(
    id: &VersionedKeyId,
    not_before: Option<DateTime<Utc>>,
) -> Result<(), KmsError> {
    update_metadata(id, |m| m.not_before = not_before)
}

/// Makes sure `file://<dir>/<name>` has at least one version, creating a
/// [`DEV_KEY_BITS`]-bit key if it has none. Returns the versionless id and whether a
/// version was created. Used by `valv serve` for the embedded default.
///
/// A key that has versions, all of them disabled or expired, is left alone: an
/// operator revoked it, and a fresh key would not decrypt the existing content.
///
/// Fails like [`create_key`].
pub fn ensure_dev_key(dir: &Path, name: &str) -> Result<(KeyId, bool), KmsError> {
    let key = file_key_id(dir, name)?;
    let path = dir.join(name);
    if path.exists() {
        if list_versions(&key, &path)?.is_empty() {
            // An earlier start was interrupted between creating the directory and
            // writing the first version.
            add_version(&key, DEV_KEY_BITS)?;
            return Ok((key, true));
        }
        return Ok((key, false));
    }
    match create_key(dir, name, DEV_KEY_BITS) {
        Ok(_) => Ok((key, true)),
        // Another process created it first.
        Err(e) if path.exists() && !list_versions(&key, &path)?.is_empty() => {
            tracing::debug!(error = %e, "development key was created concurrently");
            Ok((key, false))
        }
        Err(e) => Err(e),
    }
}

/// Every version of a key with its metadata, oldest first (by creation time, then
/// version string). A version in `key` is ignored. Reads metadata only, so it is
/// fast and works on versions whose private key has been damaged.
///
/// Fails with `Revoked` when the key does not exist, `Misconfigured` for a
/// non-`file://` id or malformed metadata (naming the file).
pub fn describe_versions(key: &KeyId) -> Result<Vec<KeyDescription>, KmsError> {
    let key = key.versionless();
    let dir = key_dir(&key)?;
    let mut versions = list_versions(&key, &dir)?;
    versions.sort_by(|(va, ma), (vb, mb)| ma.created.cmp(&mb.created).then_with(|| va.cmp(vb)));
    versions
        .into_iter()
        .map(|(version, m)| {
            Ok(KeyDescription {
                id: key.with_version(&version)?,
                key_type: m.key_type,
                key_size_bits: m.key_size,
                enabled: m.enabled,
                created: Some(m.created),
                expires: m.expires,
                not_before: m.not_before,
            })
        })
        .collect()
}

/// Builds `file://<dir>/<name>` from parts, checking what parsing would check.
fn file_key_id(dir: &Path, name: &str) -> Result<KeyId, KmsError> {
    let shown = format!("file://{}/{name}", dir.display());
    let Some(dir_str) = dir.to_str() else {
        return Err(KmsError::misconfigured(
            shown,
            "the key directory must be a UTF-8 path",
        ));
    };
    if !dir.is_absolute() {
        return Err(KmsError::misconfigured(
            shown,
            "the key directory must be an absolute path",
        ));
    }
    if !is_valid_key_name(name) {
        return Err(KmsError::misconfigured(
            shown,
            "the key name must match [0-9a-zA-Z-]+ (at most 127 characters, not 32 hex digits)",
        ));
    }
    let id: KeyId = format!("file://{}/{name}", dir_str.trim_end_matches('/')).parse()?;
    // The id must lead back to the same directory, or the key would be created in one
    // place and looked up in another.
    if key_dir(&id)? != dir.join(name) {
        return Err(KmsError::misconfigured(
            &id,
            format!("{} cannot be expressed as a key id", dir.display()),
        ));
    }
    Ok(id)
}

fn generate(key: &KeyId, bits: u32) -> Result<RsaPrivateKey, KmsError> {
    let bits_usize = usize::try_from(bits).unwrap_or(usize::MAX);
    RsaPrivateKey::new(&mut OsRng, bits_usize)
        .map_err(|e| KmsError::transient(key, format!("RSA key generation failed: {e}")))
}

fn random_version() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_new_version(
    key: &KeyId,
    dir: &Path,
    private: &RsaPrivateKey,
    bits: u32,
) -> Result<VersionedKeyId, KmsError> {
    let pem = private
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KmsError::transient(key, format!("cannot encode the private key: {e}")))?;
    // A collision of 128 random bits is not going to happen, but `create_new` makes
    // sure an existing version could never be overwritten if it did.
    let (version, files) = loop {
        let version = random_version();
        let files = files_in(dir, &version);
        match write_private_file(&files.pem, pem.as_bytes()) {
            Ok(()) => break (version, files),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_error(key, &files.pem, "write", &e)),
        }
    };
    let id = key.with_version(&version)?;
    // The metadata is written last: it is what makes the version exist.
    let metadata = Metadata::new(bits, Utc::now());
    write_metadata(&id, &files.metadata, &metadata)?;
    Ok(id)
}

fn update_metadata(
    id: &VersionedKeyId,
    change: impl FnOnce(&mut Metadata),
) -> Result<(), KmsError> {
    let files = version_files(id)?;
    // Concurrent updates of the same version are last-writer-wins; these are rare,
    // manual operator actions.
    let mut metadata = read_metadata(id, &files.metadata)?;
    change(&mut metadata);
    write_metadata(id, &files.metadata, &metadata)
}

/// Replaces `path` atomically: readers see the old file or the new one, never a part.
fn write_metadata(id: &VersionedKeyId, path: &Path, metadata: &Metadata) -> Result<(), KmsError> {
    let mut json = serde_json::to_vec_pretty(metadata)
        .map_err(|e| KmsError::transient(id, format!("cannot encode key metadata: {e}")))?;
    json.push(b'\n');
    let dir = path.parent().unwrap_or(Path::new("."));
    // A dot-name that is not `<version>.json`, so a reader listing the directory
    // never mistakes it for a version.
    let tmp = dir.join(format!(".{}.json.tmp-{}", id.version(), random_version()));
    let result = write_private_file(&tmp, &json)
        .and_then(|()| fs::rename(&tmp, path))
        .and_then(|()| sync_dir(dir));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io_error(id, path, "write", &e));
    }
    Ok(())
}

/// Creates a new file readable only by its owner, writes it and flushes it to disk:
/// losing a KEK to a crash would lose every blob encrypted under it.
///
/// The directory entry is made durable by the `sync_dir` after the metadata rename,
/// which covers every entry of the same directory.
fn write_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Makes a new or renamed directory entry durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn create_dir_private(path: &Path, recursive: bool) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(recursive);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path)?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

#[cfg(test)]
// In tests a panic is the failure report.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_32_lowercase_hex() {
        let v = random_version();
        assert!(is_version_string(&v), "{v}");
        assert_ne!(v, random_version());
    }

    #[test]
    fn metadata_round_trips_and_rejects_unknown_fields() {
        let m = Metadata::new(2048, Utc::now());
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Metadata>(&json).unwrap(), m);
        let typo = json.replace("\"enabled\"", "\"enable\"");
        assert!(serde_json::from_str::<Metadata>(&typo).is_err());
        let extra = json.replace('{', "{\"colour\":1,");
        assert!(serde_json::from_str::<Metadata>(&extra).is_err());
    }

    #[test]
    fn validity_window() {
        let now = Utc::now();
        let hour = chrono::Duration::hours(1);
        let mut m = Metadata::new(2048, now);
        assert!(m.usable_at(now));
        m.expires = Some(now);
        assert!(!m.usable_at(now), "expiry is exclusive");
        m.expires = Some(now + hour);
        m.not_before = Some(now + hour);
        assert!(!m.usable_at(now));
        m.not_before = Some(now);
        assert!(m.usable_at(now), "not_before is inclusive");
        m.enabled = false;
        assert!(!m.usable_at(now));
    }

    #[test]
    fn modulus_bit_counting() {
        assert_eq!(big_endian_bits(&[]), 0);
        assert_eq!(big_endian_bits(&[0, 0]), 0);
        assert_eq!(big_endian_bits(&[1]), 1);
        assert_eq!(big_endian_bits(&[0, 0x80, 0]), 16);
        assert_eq!(big_endian_bits(&[0xff; 256]), 2048);
    }

    #[test]
    fn garbage_is_not_a_key() {
        assert!(parse_private_key(b"hello").is_err());
        assert!(parse_private_key(&[0xff, 0xfe]).is_err());
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(parse_private_key(cert.as_bytes()).is_err());
    }

    #[test]
    fn non_file_ids_are_misconfigured() {
        let id: KeyId = "https://v.vault.azure.net/keys/k".parse().unwrap();
        assert!(matches!(key_dir(&id), Err(KmsError::Misconfigured { .. })));
    }

    #[test]
    fn key_ids_from_parts() {
        let id = file_key_id(Path::new("/var/lib/valv/keys/"), "kek").unwrap();
        assert_eq!(id.to_string(), "file:///var/lib/valv/keys/kek");
        assert!(file_key_id(Path::new("relative"), "kek").is_err());
        assert!(file_key_id(Path::new("/k"), "bad_name").is_err());
        assert!(file_key_id(Path::new("/k"), "0123456789abcdef0123456789abcdef").is_err());
    }
}
