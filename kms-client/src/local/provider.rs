//! [`LocalKek`]: the [`Kek`] operations over the key files.

use std::path::Path;

use async_trait::async_trait;
use chrono::Utc;
use rand::rngs::OsRng;
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use zeroize::Zeroizing;

use super::files::{
    key_dir, list_versions, modulus_bits, read_metadata, read_private_key, version_files, Metadata,
};
use super::KEY_TYPE_RSA;
use crate::{Kek, KeyDescription, KeyId, KmsError, SecretBytes, VersionedKeyId};

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
