//! The per-blob envelope: a small JSON object at the blob's content address whose
//! create-only write is the commit point of the blob.

use serde::{Deserialize, Serialize};

use super::keys::{BlobKeys, Key32, WrappedKey};
use super::IntegrityError;
use crate::names::Digest;

/// One data object holding consecutive sealed segments of a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataPart {
    /// Object-store path of the data object.
    pub object: String,
    /// Number of sealed segments in it (all full except possibly the blob's last).
    pub segments: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Format version, 1.
    pub version: u32,
    pub digest: Digest,
    /// Plaintext size in bytes.
    pub size: u64,
    pub segment_size: u32,
    /// Generation of the registry key that wraps the DEK.
    pub key_generation: u32,
    #[serde(with = "super::keys::b64")]
    pub salt: Vec<u8>,
    #[serde(with = "super::keys::b64")]
    pub nonce_prefix: Vec<u8>,
    #[serde(with = "super::keys::b64")]
    pub commitment: Vec<u8>,
    /// The DEK wrapped under the registry key, AAD = [`Envelope::aad`].
    pub dek: WrappedKey,
    /// The data objects, in order.
    pub parts: Vec<DataPart>,
}

impl Envelope {
    /// Builds the envelope for a finished blob, wrapping `keys.dek` under `rk`.
    pub fn seal(
        rk: &Key32,
        key_generation: u32,
        keys: &BlobKeys,
        digest: Digest,
        size: u64,
        parts: Vec<DataPart>,
    ) -> Envelope {
        let _ = (rk, key_generation, keys, digest, size, parts);
        todo!()
    }
    /// Canonical binary AAD over every field except `dek` (see FORMAT.md).
    pub fn aad(&self) -> Vec<u8> {
        todo!()
    }
    /// Unwraps the DEK, checks the key commitment in constant time and that the parts
    /// hold exactly `segment_count(size)` segments. Any failure is `IntegrityError`.
    pub fn open(&self, rk: &Key32) -> Result<BlobKeys, IntegrityError> {
        let _ = rk;
        todo!()
    }
    pub fn to_json(&self) -> Vec<u8> {
        todo!()
    }
    /// Fails on malformed JSON, unknown fields, or a version other than 1.
    pub fn from_json(bytes: &[u8]) -> Result<Envelope, String> {
        let _ = bytes;
        todo!()
    }
}
