//! Secrets and the derivations over them.
//!
//! Contract (normative text in docs/FORMAT.md):
//! - `Key32`: 32 secret bytes, `Zeroizing`, `Debug` prints `Key32([redacted])`.
//! - `BlobKeys`: the per-blob parameters (DEK, salt, nonce prefix, segment size).
//! - `WrappedKey`: a 32-byte key sealed under another 32-byte key with AAD.

use rand::rngs::OsRng;
use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::hkdf::{KeyType, Salt, HKDF_SHA256};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::segment::SegmentCipher;
use super::{IntegrityError, MAX_SEGMENT_SIZE, NONCE_PREFIX_LEN, TAG_LEN};

/// HKDF info label of the segment key.
pub const INFO_SEGMENT_KEY: &[u8] = b"valv/v1 segment key";
/// HKDF info label of the key commitment.
pub const INFO_KEY_COMMITMENT: &[u8] = b"valv/v1 key commitment";
/// HKDF info label of the key that wraps a DEK (or any 32-byte key).
pub const INFO_KEY_WRAP: &[u8] = b"valv/v1 key wrap";
/// HKDF info label of the key that seals upload-session state.
pub const INFO_SESSION_STATE: &[u8] = b"valv/v1 session state";

/// Length of the AES-GCM nonce of wrapped keys and sealed boxes.
const NONCE_LEN: usize = 12;
/// Length of the HKDF salt of a wrapped key.
const WRAP_SALT_LEN: usize = 32;

pub struct Key32(zeroize::Zeroizing<[u8; 32]>);

impl Key32 {
    /// 32 bytes from the OS random source.
    pub fn random() -> Key32 {
        let mut k = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(k.as_mut());
        Key32(k)
    }
    pub fn from_bytes(bytes: [u8; 32]) -> Key32 {
        Key32(zeroize::Zeroizing::new(bytes))
    }
    /// Fails when `bytes` is not exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Key32, IntegrityError> {
        let mut k = Zeroizing::new([0u8; 32]);
        if bytes.len() != k.len() {
            return Err(IntegrityError);
        }
        k.copy_from_slice(bytes);
        Ok(Key32(k))
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

/// The output length of every HKDF expansion in the format.
struct Len32;

impl KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// HKDF-SHA256 (RFC 5869) with a 32-byte output: the one derivation every key in the
/// format goes through, so that each label gives an independent key.
pub fn hkdf32(ikm: &Key32, salt: &[u8], info: &[u8]) -> Key32 {
    let mut out = Zeroizing::new([0u8; 32]);
    let prk = Salt::new(HKDF_SHA256, salt).extract(ikm.expose());
    // Expansion fails only when the output is longer than 255 hash lengths; 32 bytes
    // never is.
    let filled = prk
        .expand(&[info], Len32)
        .and_then(|okm| okm.fill(out.as_mut()));
    if filled.is_err() {
        unreachable!("HKDF-SHA256 can always produce 32 bytes");
    }
    Key32(out)
}

fn random_array<const N: usize>() -> [u8; N] {
    let mut a = [0u8; N];
    OsRng.fill_bytes(&mut a);
    a
}

fn aead(key: &Key32) -> LessSafeKey {
    match UnboundKey::new(&AES_256_GCM, key.expose()) {
        Ok(k) => LessSafeKey::new(k),
        // ring refuses only a key of the wrong length, and a `Key32` is 32 bytes.
        Err(_) => unreachable!("AES-256-GCM takes a 32-byte key"),
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
    ///
    /// # Panics
    /// When `segment_size` is 0 or above [`MAX_SEGMENT_SIZE`]: such a blob could never be
    /// opened (configuration is validated long before this, so it is a programming error).
    pub fn generate(segment_size: u32) -> BlobKeys {
        assert!(
            (1..=MAX_SEGMENT_SIZE).contains(&segment_size),
            "segment size must be in 1..=MAX_SEGMENT_SIZE"
        );
        BlobKeys {
            dek: Key32::random(),
            salt: random_array(),
            nonce_prefix: random_array::<NONCE_PREFIX_LEN>(),
            segment_size,
        }
    }
    /// The segment cipher: key = HKDF-SHA256(ikm = DEK, salt, info = "valv/v1 segment key").
    pub fn cipher(&self) -> SegmentCipher {
        SegmentCipher::new(&self.segment_key(), self.nonce_prefix)
    }
    /// The raw segment key behind [`BlobKeys::cipher`]. Exposed for the format's test
    /// vectors; content code uses `cipher()`.
    pub fn segment_key(&self) -> Key32 {
        hkdf32(&self.dek, &self.salt, INFO_SEGMENT_KEY)
    }
    /// The key commitment: HKDF-SHA256(ikm = DEK, salt, info = "valv/v1 key commitment").
    pub fn commitment(&self) -> [u8; 32] {
        // Not secret: it is stored in the clear in the envelope. It binds the envelope
        // to one DEK so that a ciphertext cannot be opened under two different keys.
        *hkdf32(&self.dek, &self.salt, INFO_KEY_COMMITMENT).expose()
    }
    fn aux_key(&self) -> Key32 {
        hkdf32(&self.dek, &self.salt, INFO_SESSION_STATE)
    }
    /// Seals small auxiliary data (an upload session's partial tail and hash state)
    /// under a key derived with info "valv/v1 session state", a fresh random nonce,
    /// and `aad`.
    pub fn seal_aux(&self, aad: &[u8], plaintext: &[u8]) -> SealedBox {
        self.seal_aux_with_nonce(aad, plaintext, random_array())
    }
    /// [`BlobKeys::seal_aux`] with a caller-chosen nonce, for the fixed test vectors only:
    /// reusing a nonce under one DEK destroys confidentiality.
    #[doc(hidden)]
    pub fn seal_aux_with_nonce(&self, aad: &[u8], plaintext: &[u8], nonce: [u8; 12]) -> SealedBox {
        let ciphertext = seal(&self.aux_key(), &nonce, aad, plaintext);
        SealedBox {
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }
    /// Opens what [`BlobKeys::seal_aux`] sealed with the same `aad`.
    ///
    /// Fails on a wrong key or AAD, any modification, or a malformed box.
    pub fn open_aux(&self, aad: &[u8], sealed: &SealedBox) -> Result<Vec<u8>, IntegrityError> {
        open(&self.aux_key(), &sealed.nonce, aad, &sealed.ciphertext)
    }
}

/// AES-256-GCM, plaintext ‖ tag. The same implementation as the segments (ring).
fn seal(key: &Key32, nonce: &[u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plaintext.len() + TAG_LEN);
    out.extend_from_slice(plaintext);
    let nonce = Nonce::assume_unique_for_key(*nonce);
    match aead(key).seal_in_place_append_tag(nonce, Aad::from(aad), &mut out) {
        Ok(()) => out,
        // AES-GCM refuses only inputs beyond 2^36 bytes; every caller here seals a
        // key or a session tail of at most one segment.
        Err(_) => panic!("AES-GCM input too long"),
    }
}

fn open(
    key: &Key32,
    nonce: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, IntegrityError> {
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| IntegrityError)?;
    if ciphertext.len() < TAG_LEN {
        return Err(IntegrityError);
    }
    // On failure ring leaves unauthenticated plaintext in the buffer: it is wiped on drop.
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    let plain_len = aead(key)
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut buf,
        )
        .map_err(|_| IntegrityError)?
        .len();
    buf.truncate(plain_len);
    Ok(std::mem::take(&mut *buf))
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
        // A fresh salt per wrap gives every wrap its own AES key, so the random 96-bit
        // nonce never has to carry the birthday bound across many wraps under one RK.
        Self::wrap_with(wrapping_key, aad, key, random_array(), random_array())
    }
    /// [`WrappedKey::wrap`] with caller-chosen salt and nonce, for the fixed test vectors
    /// only: production wraps must use fresh random values.
    #[doc(hidden)]
    pub fn wrap_with(
        wrapping_key: &Key32,
        aad: &[u8],
        key: &Key32,
        salt: [u8; WRAP_SALT_LEN],
        nonce: [u8; NONCE_LEN],
    ) -> WrappedKey {
        let wrap_key = hkdf32(wrapping_key, &salt, INFO_KEY_WRAP);
        WrappedKey {
            salt: salt.to_vec(),
            nonce: nonce.to_vec(),
            ciphertext: seal(&wrap_key, &nonce, aad, key.expose()),
        }
    }
    /// Fails on a wrong wrapping key or AAD, any modification, or wrong field lengths.
    pub fn unwrap(&self, wrapping_key: &Key32, aad: &[u8]) -> Result<Key32, IntegrityError> {
        if self.salt.len() != WRAP_SALT_LEN || self.ciphertext.len() != 32 + TAG_LEN {
            return Err(IntegrityError);
        }
        let wrap_key = hkdf32(wrapping_key, &self.salt, INFO_KEY_WRAP);
        let plain = Zeroizing::new(open(&wrap_key, &self.nonce, aad, &self.ciphertext)?);
        Key32::from_slice(&plain)
    }
}

/// Standard base64 (with padding) for byte fields in JSON objects.
pub mod b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::Deserialize as _;

    pub fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        STANDARD
            .decode(s.as_bytes())
            .map_err(|_| serde::de::Error::custom("invalid standard base64"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    fn keys() -> BlobKeys {
        BlobKeys::generate(16)
    }

    #[test]
    fn key32_debug_is_redacted() {
        let k = Key32::from_bytes([0x41; 32]);
        assert_eq!(format!("{k:?}"), "Key32([redacted])");
        let dbg = format!("{:?}", keys());
        assert!(dbg.contains("Key32([redacted])"), "{dbg}");
    }

    #[test]
    fn key32_from_slice_checks_length() {
        assert!(Key32::from_slice(&[0; 31]).is_err());
        assert!(Key32::from_slice(&[0; 33]).is_err());
        assert_eq!(Key32::from_slice(&[7; 32]).unwrap().expose(), &[7; 32]);
    }

    #[test]
    fn random_keys_differ() {
        assert_ne!(Key32::random().expose(), Key32::random().expose());
        let (a, b) = (keys(), keys());
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.nonce_prefix, b.nonce_prefix);
    }

    #[test]
    fn labels_give_independent_keys() {
        let k = keys();
        let seg = k.segment_key();
        assert_ne!(seg.expose(), &k.commitment());
        assert_ne!(seg.expose(), k.aux_key().expose());
        assert_ne!(seg.expose(), k.dek.expose());
    }

    #[test]
    fn wrap_round_trip_and_failures() {
        let rk = Key32::random();
        let dek = Key32::random();
        let w = WrappedKey::wrap(&rk, b"aad", &dek);
        assert_eq!(w.ciphertext.len(), 48);
        assert_eq!(w.unwrap(&rk, b"aad").unwrap().expose(), dek.expose());
        assert_eq!(
            w.unwrap(&Key32::random(), b"aad").unwrap_err(),
            IntegrityError
        );
        assert_eq!(w.unwrap(&rk, b"aae").unwrap_err(), IntegrityError);
        for field in 0..3 {
            let mut bad = w.clone();
            let v = match field {
                0 => &mut bad.salt,
                1 => &mut bad.nonce,
                _ => &mut bad.ciphertext,
            };
            v[0] ^= 1;
            assert!(bad.unwrap(&rk, b"aad").is_err(), "field {field}");
            let mut short = w.clone();
            match field {
                0 => short.salt.pop(),
                1 => short.nonce.pop(),
                _ => short.ciphertext.pop(),
            };
            assert!(short.unwrap(&rk, b"aad").is_err(), "field {field}");
        }
        assert_ne!(
            WrappedKey::wrap(&rk, b"aad", &dek),
            w,
            "fresh salt and nonce"
        );
    }

    #[test]
    fn aux_round_trip_and_failures() {
        let k = keys();
        let b = k.seal_aux(b"session", b"tail bytes");
        assert_eq!(k.open_aux(b"session", &b).unwrap(), b"tail bytes");
        assert!(k.open_aux(b"other", &b).is_err());
        assert!(keys().open_aux(b"session", &b).is_err());
        let mut bad = b.clone();
        bad.ciphertext[0] ^= 1;
        assert!(k.open_aux(b"session", &bad).is_err());
        let mut bad = b.clone();
        bad.nonce.push(0);
        assert!(k.open_aux(b"session", &bad).is_err());
        let empty = SealedBox {
            nonce: vec![0; 12],
            ciphertext: vec![0; 3],
        };
        assert!(k.open_aux(b"session", &empty).is_err());
        let e = k.seal_aux(b"", b"");
        assert_eq!(k.open_aux(b"", &e).unwrap(), b"");
    }

    #[test]
    fn b64_fields_in_json() {
        let b = SealedBox {
            nonce: vec![0xfb, 0xff],
            ciphertext: vec![],
        };
        let j = serde_json::to_string(&b).unwrap();
        assert_eq!(j, r#"{"nonce":"+/8=","ciphertext":""}"#);
        assert_eq!(serde_json::from_str::<SealedBox>(&j).unwrap(), b);
        assert!(serde_json::from_str::<SealedBox>(r#"{"nonce":"-_8","ciphertext":""}"#).is_err());
        // Missing padding is not standard base64 either.
        assert!(serde_json::from_str::<SealedBox>(r#"{"nonce":"+/8","ciphertext":""}"#).is_err());
        assert!(
            serde_json::from_str::<SealedBox>(r#"{"nonce":"","ciphertext":"","x":1}"#).is_err()
        );
    }
}
