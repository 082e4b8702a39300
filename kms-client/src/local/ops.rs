//! Operator functions: create keys and versions, enable, disable, expire, list.
//! They back `valv kek …` and `valv serve`'s development key; see "Operator
//! functions" in the [module docs](super).

use std::fs;
use std::io;
use std::path::Path;

use chrono::{DateTime, Utc};
use rand::rngs::OsRng;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::RsaPrivateKey;

use super::files::{
    check_bits, create_dir_private, files_in, io_error, key_dir, list_versions, random_version,
    read_metadata, version_files, write_metadata, write_private_file, Metadata,
};
use super::DEV_KEY_BITS;
use crate::id::is_valid_key_name;
use crate::{KeyDescription, KeyId, KmsError, VersionedKeyId};

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
/// the one [`crate::Kek::latest_version`] returns.
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
/// `Revoked` and is skipped by [`crate::Kek::latest_version`]; this is how an operator
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

#[cfg(test)]
// In tests a panic is the failure report.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use crate::id::is_version_string;

    #[test]
    fn versions_are_32_lowercase_hex() {
        let v = random_version();
        assert!(is_version_string(&v), "{v}");
        assert_ne!(v, random_version());
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
