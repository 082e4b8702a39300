//! Key-encryption-key (KEK) providers for valv.
//!
//! # Layout
//! - [`Kek`]: the one small async trait every provider implements (DESIGN §6).
//! - [`KmsError`]: the error classes a key watcher can act on (Revoked / Transient /
//!   Misconfigured, plus InvalidCiphertext for "this key did not wrap these bytes").
//! - [`KeyId`] / [`VersionedKeyId`]: key identifiers, parsed once; [`KeyIdKind`] names
//!   the provider.
//! - [`open`]: the provider for a key id, the one place that maps a [`KeyIdKind`] to a
//!   provider and reads its settings from the environment.
//! - [`azure`]: Azure Key Vault / Managed HSM over REST (reqwest), with Entra ID
//!   credentials (client secret, workload identity, managed identity).
//! - [`local`]: RSA keys on disk under `file://<dir>/<name>[/<version>]`.
//! - [`retry`]: the retry policy and loop every remote call goes through.
//! - [`SecretBytes`]: unwrapped key material in a zeroizing, redacted type.
//! - `testsuite` (cargo feature `testsuite`, for tests only): the generic provider
//!   suite every provider's test runs through.
//!
//! # Adding a provider
//! A new module (`pkcs11`, `aws`) with a type implementing [`Kek`] and a constructor
//! from the environment; a [`KeyIdKind`] variant and its parsing in `id.rs`; one arm
//! in [`open`]; a test that runs the generic suite over it.

pub mod azure;
pub mod local;
#[cfg(feature = "testsuite")]
pub mod testsuite;

mod error;
mod id;
pub mod retry;
mod secret;

pub use error::KmsError;
pub use id::{KeyId, KeyIdKind, VersionedKeyId};
pub use retry::RetryPolicy;
pub use secret::SecretBytes;

use std::sync::Arc;

/// Makes *ring* the process's rustls crypto provider, once. Every HTTPS client valv
/// builds takes the process's provider: reqwest's (Key Vault, the admin CLI) and
/// object_store's (S3, Azure Blob), whose TLS is built without one so that aws-lc is
/// never linked. Call it before building a client; a provider the embedding program
/// installed first stays.
pub fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err only when a provider is installed already, which is what we want.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// The provider for `key`, with its settings from the environment as `getenv`
/// returns it (the registry passes the process environment, tests a table).
///
/// `file://` ids get [`local::LocalKek`] (no settings). Key Vault ids get
/// [`azure::AzureKek`] with [`azure::AzureKek::from_lookup`]'s variables:
/// `VALV_KEYVAULT_ENDPOINT`, `VALV_KEYVAULT_API_VERSION`, `VALV_IMDS_ENDPOINT` and
/// the `AZURE_*` credential variables.
///
/// Nothing is contacted: a wrong key or credential shows at the first call.
///
/// Fails with `Misconfigured` when the settings are incomplete or refused (an
/// `http://` vault endpoint that is not loopback).
pub fn open(
    key: &KeyId,
    getenv: &dyn Fn(&str) -> Option<String>,
) -> Result<Arc<dyn Kek>, KmsError> {
    match key.kind() {
        KeyIdKind::File { .. } => Ok(Arc::new(local::LocalKek::new())),
        KeyIdKind::AzureKeyVault { .. } => Ok(Arc::new(azure::AzureKek::from_lookup(key, getenv)?)),
    }
}

/// The only wrapping algorithm valv uses with RSA KEKs.
pub const ALG_RSA_OAEP_256: &str = "RSA-OAEP-256";

/// What a provider reports about one key version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDescription {
    /// The exact version this description is about.
    pub id: VersionedKeyId,
    /// `kty` in Key Vault terms: "RSA" or "RSA-HSM". Anything else is refused before
    /// a description is returned (Misconfigured).
    pub key_type: String,
    /// Modulus size in bits (2048, 3072 or 4096).
    pub key_size_bits: u32,
    /// Whether the version may be used at all.
    pub enabled: bool,
    pub created: Option<DateTime<Utc>>,
    /// After this instant the version must not be used (Key Vault `exp`).
    pub expires: Option<DateTime<Utc>>,
    /// Before this instant the version must not be used (Key Vault `nbf`).
    pub not_before: Option<DateTime<Utc>>,
}

impl KeyDescription {
    /// Whether the version is usable at `now`: enabled, not expired, not before `nbf`.
    pub fn usable_at(&self, now: DateTime<Utc>) -> bool {
        self.enabled
            && self.expires.is_none_or(|exp| now < exp)
            && self.not_before.is_none_or(|nbf| now >= nbf)
    }
}

/// A key-encryption key held by some provider (a vault, an HSM, files on disk).
///
/// The registry only ever needs these four operations; a vault provider needs exactly
/// the get, wrapKey and unwrapKey permissions to serve them.
#[async_trait]
pub trait Kek: Send + Sync + std::fmt::Debug {
    /// Describes one exact version.
    ///
    /// Fails with `Revoked` when the version does not exist or access is refused,
    /// `Misconfigured` when the key is not an RSA key of a supported size.
    async fn describe(&self, id: &VersionedKeyId) -> Result<KeyDescription, KmsError>;

    /// Resolves a key id to a version: the id's own version if it has one, otherwise
    /// the newest enabled, unexpired version.
    ///
    /// Fails with `Revoked` when there is no usable version.
    async fn latest_version(&self, id: &KeyId) -> Result<VersionedKeyId, KmsError>;

    /// Wraps `plaintext` (a 32-byte registry key) with RSA-OAEP-256 under `id`.
    ///
    /// Refuses a disabled, expired or not-yet-valid version with `Revoked`.
    async fn wrap(&self, id: &VersionedKeyId, plaintext: &[u8]) -> Result<Vec<u8>, KmsError>;

    /// Unwraps bytes produced by [`Kek::wrap`] under the same version.
    ///
    /// Fails with `Revoked` for an unusable version and with `InvalidCiphertext` when
    /// the bytes were not wrapped by this version.
    async fn unwrap(&self, id: &VersionedKeyId, wrapped: &[u8]) -> Result<SecretBytes, KmsError>;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn open_picks_the_provider_by_key_id_kind() {
        let file: KeyId = "file:///var/lib/valv/keys/kek".parse().unwrap();
        let kek = open(&file, &env(&[])).unwrap();
        assert!(format!("{kek:?}").starts_with("LocalKek"), "{kek:?}");

        let vault: KeyId = "https://v.vault.azure.net/keys/kek".parse().unwrap();
        let kek = open(
            &vault,
            &env(&[
                ("VALV_KEYVAULT_ENDPOINT", "http://127.0.0.1:8443"),
                ("AZURE_TENANT_ID", "t"),
                ("AZURE_CLIENT_ID", "c"),
                ("AZURE_CLIENT_SECRET", "s"),
            ]),
        )
        .unwrap();
        let shown = format!("{kek:?}");
        assert!(shown.starts_with("AzureKek"), "{shown}");
        assert!(!shown.contains("\"s\""), "the secret is redacted: {shown}");
    }

    #[test]
    fn open_refuses_bad_provider_settings() {
        let vault: KeyId = "https://v.vault.azure.net/keys/kek".parse().unwrap();
        for bad in [
            &[("VALV_KEYVAULT_ENDPOINT", "http://vault.example.com")][..],
            &[("AZURE_CLIENT_SECRET", "s")][..],
        ] {
            let vars: &'static [(&'static str, &'static str)] = bad;
            assert!(
                matches!(
                    open(&vault, &env(vars)),
                    Err(KmsError::Misconfigured { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
