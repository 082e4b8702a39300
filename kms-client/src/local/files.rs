//! The key files: where a version's files live, the metadata format, reading and
//! checking private keys, and writing files durably and atomically (see the layout
//! in the [module docs](super)).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rand::rngs::OsRng;
use rand::RngCore;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{ObjectIdentifier, PrivateKeyInfo, SecretDocument};
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{KEY_TYPE_RSA, SUPPORTED_KEY_SIZES};
use crate::id::{is_version_string, KeyIdKind};
use crate::{KeyId, KmsError, VersionedKeyId};

/// id-ecPublicKey (RFC 5480), the algorithm of every PKCS#8 EC private key.
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

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

pub(super) fn files_in(dir: &Path, version: &str) -> VersionFiles {
    VersionFiles {
        pem: dir.join(format!("{version}.pem")),
        metadata: dir.join(format!("{version}.json")),
    }
}

/// The metadata file of one version (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Metadata {
    pub enabled: bool,
    pub created: DateTime<Utc>,
    pub expires: Option<DateTime<Utc>>,
    pub not_before: Option<DateTime<Utc>>,
    pub key_type: String,
    pub key_size: u32,
}

impl Metadata {
    pub fn new(key_size: u32, created: DateTime<Utc>) -> Self {
        Metadata {
            enabled: true,
            created,
            expires: None,
            not_before: None,
            key_type: KEY_TYPE_RSA.to_owned(),
            key_size,
        }
    }

    pub fn usable_at(&self, now: DateTime<Utc>) -> bool {
        self.unusable_reason(now).is_none()
    }

    /// Why the version may not be used at `now`, if it may not.
    pub fn unusable_reason(&self, now: DateTime<Utc>) -> Option<String> {
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

/// Every complete version of a key (both files present) with its metadata.
///
/// Fails with `Revoked` when the key directory does not exist, and with
/// `Misconfigured` when any version's metadata is malformed: a broken file next to
/// the keys is something an operator must see, not something to skip.
pub(super) fn list_versions(key: &KeyId, dir: &Path) -> Result<Vec<(String, Metadata)>, KmsError> {
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

pub(super) fn read_metadata(
    id: &impl std::fmt::Display,
    path: &Path,
) -> Result<Metadata, KmsError> {
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

pub(super) fn version_not_found(id: &impl std::fmt::Display, path: &Path) -> KmsError {
    KmsError::revoked(
        id,
        format!("version not found: {} does not exist", path.display()),
    )
}

/// Maps an I/O error that is not "not found" onto an error class.
pub(super) fn io_error(
    id: &impl std::fmt::Display,
    path: &Path,
    action: &str,
    e: &io::Error,
) -> KmsError {
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

pub(super) fn read_private_key(
    id: &VersionedKeyId,
    path: &Path,
) -> Result<RsaPrivateKey, KmsError> {
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
pub(super) fn parse_private_key(pem: &[u8]) -> Result<RsaPrivateKey, String> {
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
pub(super) fn check_pkcs1_size(pkcs1_der: &[u8]) -> Result<(), String> {
    let key = rsa::pkcs1::RsaPrivateKey::try_from(pkcs1_der)
        .map_err(|e| format!("malformed RSA private key: {e}"))?;
    let bits = big_endian_bits(key.modulus.as_bytes());
    check_bits(bits)
}

pub(super) fn check_bits(bits: u32) -> Result<(), String> {
    if SUPPORTED_KEY_SIZES.contains(&bits) {
        Ok(())
    } else {
        Err(format!(
            "an RSA key of {bits} bits is not supported; valv needs 2048, 3072 or 4096 bits"
        ))
    }
}

pub(super) fn big_endian_bits(bytes: &[u8]) -> u32 {
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

pub(super) fn modulus_bits(key: &RsaPrivateKey) -> u32 {
    u32::try_from(key.n().bits()).unwrap_or(u32::MAX)
}

/// A new version string: 128 random bits as 32 lowercase hex characters.
pub(super) fn random_version() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Replaces `path` atomically: readers see the old file or the new one, never a part.
pub(super) fn write_metadata(
    id: &VersionedKeyId,
    path: &Path,
    metadata: &Metadata,
) -> Result<(), KmsError> {
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
pub(super) fn write_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
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
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

pub(super) fn create_dir_private(path: &Path, recursive: bool) -> io::Result<()> {
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
}
