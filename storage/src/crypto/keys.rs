//! Secrets and the derivations over them.
//!
//! Contract (implemented by the crypto helper, see docs/FORMAT.md):
//! - `Key32`: 32 secret bytes, `Zeroizing`, `Debug` prints `Key32([redacted])`.
//! - `BlobKeys`: the per-blob parameters (DEK, salt, nonce prefix, segment size).
//! - `WrappedKey`: a 32-byte key sealed under another 32-byte key with AAD.

use serde::{Deserialize, Serialize};

use super::segment::SegmentCipher;
use super::IntegrityError;

pub struct Key32(zeroize::Zeroizing<[u8; 32]>);

impl Key32 {
    /// 32 bytes from the OS random source.
    pub fn random() -> Key32 {
        todo!()
    }
    pub fn from_bytes(bytes: [u8; 32]) -> Key32 {
        Key32(zeroize::Zeroizing::new(bytes))
    }
    /// Fails when `bytes` is not exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Key32, IntegrityError> {
        let _ = bytes;
        todo!()
    }
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for Key32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key32([redacted])")
    }
}

/// Everything needed to seal or open one blob's segments.
#[derive(Debug)]
pub struct BlobKeys {
    pub dek: Key32,
    /// HKDF salt for the segment key and the key commitment.
    pub salt: [u8; 32],
    /// First 7 bytes of every segment nonce.
    pub nonce_prefix: [u8; 7],
    /// Plaintext bytes per segment.
    pub segment_size: u32,
}

impl BlobKeys {
    /// Fresh random DEK, salt and nonce prefix.
    pub fn generate(segment_size: u32) -> BlobKeys {
        let _ = segment_size;
        todo!()
    }
    /// The segment cipher: key = HKDF-SHA256(ikm = DEK, salt, info = "valv/v1 segment key").
    pub fn cipher(&self) -> SegmentCipher {
        todo!()
    }
    /// The key commitment: HKDF-SHA256(ikm = DEK, salt, info = "valv/v1 key commitment").
    pub fn commitment(&self) -> [u8; 32] {
        todo!()
    }
    /// Seals small auxiliary data (an upload session's partial tail and hash state)
    /// under a key derived with info "valv/v1 session state", a fresh random nonce,
    /// and `aad`.
    pub fn seal_aux(&self, aad: &[u8], plaintext: &[u8]) -> SealedBox {
        let _ = (aad, plaintext);
        todo!()
    }
    /// Opens what [`BlobKeys::seal_aux`] sealed with the same `aad`.
    pub fn open_aux(&self, aad: &[u8], sealed: &SealedBox) -> Result<Vec<u8>, IntegrityError> {
        let _ = (aad, sealed);
        todo!()
    }
}

/// AES-256-GCM output with its nonce. Serialized with base64 fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedBox {
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
    #[serde(with = "b64")]
    pub ciphertext: Vec<u8>,
}

/// A 32-byte key sealed under a wrapping key: AES-256-GCM with
/// key = HKDF-SHA256(ikm = wrapping key, salt = `salt`, info = "valv/v1 key wrap"),
/// a random 12-byte nonce, and caller-supplied AAD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrappedKey {
    #[serde(with = "b64")]
    pub salt: Vec<u8>,
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
    #[serde(with = "b64")]
    pub ciphertext: Vec<u8>,
}

impl WrappedKey {
    pub fn wrap(wrapping_key: &Key32, aad: &[u8], key: &Key32) -> WrappedKey {
        let _ = (wrapping_key, aad, key);
        todo!()
    }
    pub fn unwrap(&self, wrapping_key: &Key32, aad: &[u8]) -> Result<Key32, IntegrityError> {
        let _ = (wrapping_key, aad);
        todo!()
    }
}

/// Standard base64 (with padding) for byte fields in JSON objects.
pub mod b64 {
    pub fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let _ = bytes;
        let _ = s;
        todo!()
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let _ = d;
        todo!()
    }
}
