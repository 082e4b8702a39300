//! The per-blob envelope: a small JSON object at the blob's content address whose
//! create-only write is the commit point of the blob.

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::keys::{BlobKeys, Key32, WrappedKey};
use super::segment::segment_count;
use super::{IntegrityError, MAX_SEGMENT_SIZE, NONCE_PREFIX_LEN};
use crate::names::Digest;

/// Domain label the envelope AAD starts with, so it can never equal another AAD.
pub const AAD_LABEL: &[u8] = b"valv/v1 envelope";
/// The only envelope version this code reads and writes.
pub const ENVELOPE_VERSION: u32 = 1;

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

/// Appends `bytes` with a u32 BE length prefix. Lengths beyond u32 are saturated; `open`
/// rejects any envelope with such a field, so a saturated encoding is never accepted.
fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn fits_u32(len: usize) -> bool {
    u32::try_from(len).is_ok()
}

impl Envelope {
    /// Builds the envelope for a finished blob, wrapping `keys.dek` under `rk`.
    ///
    /// The result opens only if `parts` hold exactly `segment_count(size)` segments.
    pub fn seal(
        rk: &Key32,
        key_generation: u32,
        keys: &BlobKeys,
        digest: Digest,
        size: u64,
        parts: Vec<DataPart>,
    ) -> Envelope {
        let mut envelope = Envelope {
            version: ENVELOPE_VERSION,
            digest,
            size,
            segment_size: keys.segment_size,
            key_generation,
            salt: keys.salt.to_vec(),
            nonce_prefix: keys.nonce_prefix.to_vec(),
            commitment: keys.commitment().to_vec(),
            // Placeholder: the AAD covers every field except this one.
            dek: WrappedKey {
                salt: Vec::new(),
                nonce: Vec::new(),
                ciphertext: Vec::new(),
            },
            parts,
        };
        envelope.dek = WrappedKey::wrap(rk, &envelope.aad(), &keys.dek);
        envelope
    }

    /// Canonical binary AAD over every field except `dek` (see FORMAT.md).
    ///
    /// Fixed-width integers are big-endian; variable-length fields carry a u32 BE length,
    /// so no two distinct envelopes encode to the same bytes.
    pub fn aad(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            256 + self
                .parts
                .iter()
                .map(|p| 12 + p.object.len())
                .sum::<usize>(),
        );
        out.extend_from_slice(AAD_LABEL);
        out.extend_from_slice(&self.version.to_be_bytes());
        put_bytes(&mut out, self.digest.to_string().as_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.segment_size.to_be_bytes());
        out.extend_from_slice(&self.key_generation.to_be_bytes());
        put_bytes(&mut out, &self.salt);
        put_bytes(&mut out, &self.nonce_prefix);
        put_bytes(&mut out, &self.commitment);
        out.extend_from_slice(
            &u32::try_from(self.parts.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        for part in &self.parts {
            put_bytes(&mut out, part.object.as_bytes());
            out.extend_from_slice(&part.segments.to_be_bytes());
        }
        out
    }

    /// Unwraps the DEK, checks the key commitment in constant time and that the parts
    /// hold exactly `segment_count(size)` segments. Any failure is `IntegrityError`.
    ///
    /// Also fails on a version other than 1, a salt not 32 bytes, a nonce prefix not 7,
    /// a commitment not 32, a segment size outside `1..=MAX_SEGMENT_SIZE`, a blob of more
    /// than 2^32 segments, or a wrong registry key. Since the DEK is wrapped with
    /// [`Envelope::aad`] as AAD, editing any field but `dek` also fails.
    pub fn open(&self, rk: &Key32) -> Result<BlobKeys, IntegrityError> {
        self.check_shape()?;
        let dek = self.dek.unwrap(rk, &self.aad())?;
        let mut salt = [0u8; 32];
        salt.copy_from_slice(&self.salt);
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        nonce_prefix.copy_from_slice(&self.nonce_prefix);
        let keys = BlobKeys {
            dek,
            salt,
            nonce_prefix,
            segment_size: self.segment_size,
        };
        // The AAD already binds the commitment to the wrapped DEK; checking it against
        // the DEK too is what makes the blob key-committing for anyone holding the DEK
        // (AES-GCM alone is not), and it is cheap.
        if bool::from(keys.commitment().ct_eq(self.commitment.as_slice())) {
            Ok(keys)
        } else {
            Err(IntegrityError)
        }
    }

    /// Structural checks that need no key.
    fn check_shape(&self) -> Result<(), IntegrityError> {
        let ok = self.version == ENVELOPE_VERSION
            && self.salt.len() == 32
            && self.nonce_prefix.len() == NONCE_PREFIX_LEN
            && self.commitment.len() == 32
            && (1..=MAX_SEGMENT_SIZE).contains(&self.segment_size)
            && fits_u32(self.parts.len())
            && self.parts.iter().all(|p| fits_u32(p.object.len()));
        if !ok {
            return Err(IntegrityError);
        }
        let count = segment_count(self.size, self.segment_size);
        // Segment indices are u32 in the nonce.
        if count > 1 << 32 {
            return Err(IntegrityError);
        }
        let total = self
            .parts
            .iter()
            .try_fold(0u64, |acc, p| acc.checked_add(p.segments));
        if total != Some(count) {
            return Err(IntegrityError);
        }
        Ok(())
    }

    /// The sealed length of each data part, in order (see
    /// [`super::plan::sealed_part_lengths`]); `None` when the parts do not hold the
    /// blob's segments.
    pub fn sealed_part_lengths(&self) -> Option<Vec<u64>> {
        let segments: Vec<u64> = self.parts.iter().map(|p| p.segments).collect();
        super::plan::sealed_part_lengths(self.size, self.segment_size, &segments)
    }

    /// The envelope as compact JSON (field order as declared).
    pub fn to_json(&self) -> Vec<u8> {
        match serde_json::to_vec(self) {
            Ok(v) => v,
            // Every field is a string, number, or a sequence/struct of those: there is
            // no map key or fallible serializer that could fail.
            Err(_) => unreachable!("envelope serialization is infallible"),
        }
    }

    /// Fails on malformed JSON, unknown fields, or a version other than 1.
    pub fn from_json(bytes: &[u8]) -> Result<Envelope, String> {
        let envelope: Envelope = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if envelope.version != ENVELOPE_VERSION {
            return Err(format!("unsupported envelope version {}", envelope.version));
        }
        Ok(envelope)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use crate::crypto::segment::segment_count;

    fn digest() -> Digest {
        Digest::sha256_of(b"hello")
    }

    fn parts(segments: &[u64]) -> Vec<DataPart> {
        segments
            .iter()
            .enumerate()
            .map(|(i, &n)| DataPart {
                object: format!("data/part-{i}"),
                segments: n,
            })
            .collect()
    }

    fn sealed(size: u64) -> (Key32, BlobKeys, Envelope) {
        let rk = Key32::random();
        let keys = BlobKeys::generate(16);
        let n = segment_count(size, 16);
        let env = Envelope::seal(&rk, 3, &keys, digest(), size, parts(&[n - 1, 1]));
        (rk, keys, env)
    }

    #[test]
    fn seal_open_round_trip() {
        let (rk, keys, env) = sealed(40);
        assert_eq!(env.version, 1);
        assert_eq!(env.commitment, keys.commitment());
        let opened = env.open(&rk).unwrap();
        assert_eq!(opened.dek.expose(), keys.dek.expose());
        assert_eq!(opened.salt, keys.salt);
        assert_eq!(opened.nonce_prefix, keys.nonce_prefix);
        assert_eq!(opened.segment_size, 16);
        let s = opened.cipher().seal(0, true, b"x");
        assert_eq!(&keys.cipher().open(0, true, &s).unwrap()[..], b"x");
    }

    #[test]
    fn json_round_trip_and_rejections() {
        let (rk, _, env) = sealed(0);
        let json = env.to_json();
        let back = Envelope::from_json(&json).unwrap();
        assert_eq!(back, env);
        back.open(&rk).unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        v["version"] = 2.into();
        assert!(Envelope::from_json(v.to_string().as_bytes()).is_err());
        let mut v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        v["extra"] = 1.into();
        assert!(Envelope::from_json(v.to_string().as_bytes()).is_err());
        let mut v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        v["salt"] = "not base64!".into();
        assert!(Envelope::from_json(v.to_string().as_bytes()).is_err());
        assert!(Envelope::from_json(b"{").is_err());
    }

    #[test]
    fn wrong_registry_key() {
        let (_, _, env) = sealed(40);
        assert_eq!(env.open(&Key32::random()).unwrap_err(), IntegrityError);
    }

    #[test]
    fn bad_commitment() {
        // A commitment that does not match the DEK, even with a correctly re-wrapped DEK
        // (an attacker holding the RK), is refused.
        let (rk, keys, mut env) = sealed(40);
        env.commitment[0] ^= 1;
        env.dek = WrappedKey::wrap(&rk, &env.aad(), &keys.dek);
        assert_eq!(env.open(&rk).unwrap_err(), IntegrityError);
        let (rk, _, mut env) = sealed(40);
        env.commitment[31] ^= 1;
        assert_eq!(env.open(&rk).unwrap_err(), IntegrityError);
    }

    /// Every edit of a bound field makes `open` fail.
    #[test]
    fn edited_fields_fail() {
        type Edit = fn(&mut Envelope);
        let edits: [(&str, Edit); 12] = [
            ("size", |e| e.size += 1),
            ("size within same segment count", |e| e.size -= 1),
            ("digest", |e| e.digest = Digest::sha256_of(b"other")),
            ("key_generation", |e| e.key_generation += 1),
            ("segment_size", |e| e.segment_size = 32),
            ("salt", |e| e.salt[0] ^= 1),
            ("nonce_prefix", |e| e.nonce_prefix[6] ^= 1),
            ("parts: object", |e| e.parts[0].object.push('x')),
            ("parts: moved segment", |e| {
                e.parts[0].segments -= 1;
                e.parts[1].segments += 1;
            }),
            ("parts: reordered", |e| e.parts.swap(0, 1)),
            ("parts: extra empty part", |e| {
                e.parts.push(DataPart {
                    object: "data/x".into(),
                    segments: 0,
                })
            }),
            ("dek", |e| e.dek.ciphertext[0] ^= 1),
        ];
        for (name, edit) in edits {
            let (rk, _, mut env) = sealed(40);
            edit(&mut env);
            assert_eq!(env.open(&rk).unwrap_err(), IntegrityError, "{name}");
        }
    }

    #[test]
    fn shape_checks() {
        type Edit = fn(&mut Envelope);
        let edits: [(&str, Edit); 9] = [
            ("version", |e| e.version = 2),
            ("short salt", |e| {
                e.salt.pop();
            }),
            ("long prefix", |e| e.nonce_prefix.push(0)),
            ("short commitment", |e| {
                e.commitment.pop();
            }),
            ("zero segment size", |e| e.segment_size = 0),
            ("huge segment size", |e| {
                e.segment_size = MAX_SEGMENT_SIZE + 1
            }),
            ("too few segments", |e| e.parts[1].segments = 0),
            ("too many segments", |e| e.parts[1].segments = 2),
            ("overflowing segments", |e| e.parts[1].segments = u64::MAX),
        ];
        for (name, edit) in edits {
            let (rk, keys, mut env) = sealed(40);
            edit(&mut env);
            // Re-wrap so that only the shape check can refuse it.
            env.dek = WrappedKey::wrap(&rk, &env.aad(), &keys.dek);
            assert_eq!(env.open(&rk).unwrap_err(), IntegrityError, "{name}");
        }
        // More than 2^32 segments cannot be addressed by a u32 index.
        let (rk, keys, mut env) = sealed(40);
        env.size = (1u64 << 32) * 16 + 1;
        env.parts = parts(&[1 << 32, 1]);
        env.dek = WrappedKey::wrap(&rk, &env.aad(), &keys.dek);
        assert_eq!(env.open(&rk).unwrap_err(), IntegrityError);
    }

    #[test]
    fn aad_layout() {
        let (_, _, env) = sealed(0);
        let aad = env.aad();
        assert!(aad.starts_with(b"valv/v1 envelope\0\0\0\x01\0\0\0\x47sha256:"));
        let parts_tail = [&[0, 0, 0, 2][..], &[0, 0, 0, 11], b"data/part-0", &[0; 8]].concat();
        assert!(aad.windows(parts_tail.len()).any(|w| w == parts_tail));
    }
}
