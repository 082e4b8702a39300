//! Key-encryption-key (KEK) providers for valv.
//!
//! # Layout
//! - [`Kek`]: the one small async trait every provider implements (DESIGN §6).
//! - [`KmsError`]: the error classes a key watcher can act on (Revoked / Transient /
//!   Misconfigured, plus InvalidCiphertext for "this key did not wrap these bytes").
//! - [`KeyId`] / [`VersionedKeyId`]: key identifiers, parsed once.
//! - [`azure`]: Azure Key Vault / Managed HSM over REST (reqwest), with Entra ID
//!   credentials (client secret, workload identity, managed identity).
//! - [`local`]: RSA keys on disk under `file://<dir>/<name>[/<version>]`.
//! - [`SecretBytes`]: unwrapped key material in a zeroizing, redacted type.
//! - `testsuite` (feature-free, public): the generic provider test suite that every
//!   provider runs through.

pub mod azure;
pub mod local;
pub mod testsuite;

mod error;
mod id;
mod secret;

pub use error::KmsError;
pub use id::{KeyId, KeyIdKind, VersionedKeyId};
pub use secret::SecretBytes;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

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
