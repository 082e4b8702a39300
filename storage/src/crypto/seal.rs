//! Link seals (FORMAT.md §11): an HMAC-SHA256 that binds a small metadata object — a
//! repository's blob link, manifest link, tag or referrers entry — to the object path
//! it is stored at, under a key derived from a registry key.
//!
//! Blobs are content-addressed and shared by every repository, so what makes a blob
//! readable in a repository is the link. Sealing the link with the path in the MAC
//! means a bucket writer cannot forge one, copy one into another repository, or move a
//! tag to another name: the seal verifies only at the path it was made for.

use ring::hmac;
use serde_json::value::RawValue;

use super::keys::{b64, hkdf32, Key32};
use super::IntegrityError;

/// HKDF `info` of the link-seal key (FORMAT.md §1.1); the salt is empty.
pub const INFO_LINK_SEAL: &[u8] = b"valv/v1 link seal";
/// Domain label at the start of every sealed message.
const LABEL: &[u8] = b"valv/v1 link";
/// Length of a seal (HMAC-SHA256).
pub const SEAL_LEN: usize = 32;

/// The key that seals links under one registry-key generation.
pub struct LinkKey(hmac::Key);

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey([redacted])")
    }
}

impl LinkKey {
    /// `HKDF(RK_g, salt = "", info = "valv/v1 link seal")`, as an HMAC-SHA256 key.
    pub fn derive(registry_key: &Key32) -> LinkKey {
        let key = hkdf32(registry_key, &[], INFO_LINK_SEAL);
        LinkKey(hmac::Key::new(hmac::HMAC_SHA256, key.expose()))
    }

    /// The seal of `body` stored at `path` under generation `generation`.
    pub fn seal(&self, path: &str, generation: u32, body: &[u8]) -> [u8; SEAL_LEN] {
        let tag = hmac::sign(&self.0, &message(path, generation, body));
        let mut out = [0u8; SEAL_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Checks `seal` in constant time.
    pub fn verify(
        &self,
        path: &str,
        generation: u32,
        body: &[u8],
        seal: &[u8],
    ) -> Result<(), IntegrityError> {
        hmac::verify(&self.0, &message(path, generation, body), seal).map_err(|_| IntegrityError)
    }
}

/// The stored shape of a sealed link (FORMAT.md §11.3).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedObject<'a> {
    key_generation: u32,
    #[serde(borrow)]
    link: &'a RawValue,
    #[serde(with = "b64")]
    seal: Vec<u8>,
}

/// A stored link object, opened.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened<'a> {
    /// Sealed, and its seal verified for the path it was read from: the link's body.
    Sealed { generation: u32, body: &'a str },
    /// Not in the sealed shape: the whole object, unauthenticated (a link written
    /// before sealing, or anything else; the caller decides what to make of it).
    Unsealed(&'a [u8]),
}

/// The stored object for `body` (a JSON value) at `path`, sealed under `key` of
/// `generation`. Fails only when `body` is not JSON.
pub fn seal_object(
    key: &LinkKey,
    generation: u32,
    path: &str,
    body: String,
) -> Result<Vec<u8>, serde_json::Error> {
    // The seal covers the body as it will be stored: `RawValue` drops whitespace around
    // the value, so sealing `body` itself would seal bytes a reader never sees.
    let link = RawValue::from_string(body)?;
    let seal = key.seal(path, generation, link.get().as_bytes());
    serde_json::to_vec(&SealedObject {
        key_generation: generation,
        link: &link,
        seal: seal.to_vec(),
    })
}

/// Opens the object `bytes` read from `path`: verifies its seal with the key `keys`
/// gives for its generation. An object in the sealed shape whose generation has no key
/// or whose seal does not verify is an [`IntegrityError`].
pub fn open_object<'a, 'k>(
    path: &str,
    bytes: &'a [u8],
    keys: impl FnOnce(u32) -> Option<&'k LinkKey>,
) -> Result<Opened<'a>, IntegrityError> {
    let Ok(sealed) = serde_json::from_slice::<SealedObject<'a>>(bytes) else {
        return Ok(Opened::Unsealed(bytes));
    };
    let body = sealed.link.get();
    keys(sealed.key_generation).ok_or(IntegrityError)?.verify(
        path,
        sealed.key_generation,
        body.as_bytes(),
        &sealed.seal,
    )?;
    Ok(Opened::Sealed {
        generation: sealed.key_generation,
        body,
    })
}

/// `"valv/v1 link" ‖ len32(path) ‖ u32(generation) ‖ len32(body)` (FORMAT.md §11.2).
pub fn message(path: &str, generation: u32, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(LABEL.len() + 12 + path.len() + body.len());
    m.extend_from_slice(LABEL);
    push_len32(&mut m, path.as_bytes());
    m.extend_from_slice(&generation.to_be_bytes());
    push_len32(&mut m, body);
    m
}

fn push_len32(out: &mut Vec<u8>, bytes: &[u8]) {
    // Paths and link bodies are a few hundred bytes; a caller never gets near 4 GiB.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seal_verifies_only_for_its_path_generation_and_body() {
        let key = LinkKey::derive(&Key32::from_bytes([7; 32]));
        let seal = key.seal("repositories/a/_tags/v1", 1, b"{\"digest\":\"x\"}");
        assert!(key
            .verify("repositories/a/_tags/v1", 1, b"{\"digest\":\"x\"}", &seal)
            .is_ok());
        for (path, generation, body) in [
            ("repositories/b/_tags/v1", 1, &b"{\"digest\":\"x\"}"[..]),
            ("repositories/a/_tags/v2", 1, b"{\"digest\":\"x\"}"),
            ("repositories/a/_tags/v1", 2, b"{\"digest\":\"x\"}"),
            ("repositories/a/_tags/v1", 1, b"{\"digest\":\"y\"}"),
        ] {
            assert!(
                key.verify(path, generation, body, &seal).is_err(),
                "{path} {generation}"
            );
        }
        let other = LinkKey::derive(&Key32::from_bytes([8; 32]));
        assert!(other
            .verify("repositories/a/_tags/v1", 1, b"{\"digest\":\"x\"}", &seal)
            .is_err());
        assert!(key
            .verify(
                "repositories/a/_tags/v1",
                1,
                b"{\"digest\":\"x\"}",
                &seal[..31]
            )
            .is_err());
    }

    #[test]
    fn objects_open_only_at_their_path_and_unsealed_ones_are_told_apart() {
        let key = LinkKey::derive(&Key32::from_bytes([7; 32]));
        let object = seal_object(
            &key,
            3,
            "repositories/a/_tags/v1",
            r#"{"digest":"x"}"#.into(),
        )
        .expect("seal");
        let text = std::str::from_utf8(&object).expect("utf-8");
        assert!(text.starts_with(r#"{"key_generation":3,"link":{"digest":"x"},"seal":""#));
        let keys = |g: u32| (g == 3).then_some(&key);
        assert_eq!(
            open_object("repositories/a/_tags/v1", &object, keys),
            Ok(Opened::Sealed {
                generation: 3,
                body: r#"{"digest":"x"}"#
            })
        );
        assert!(open_object("repositories/b/_tags/v1", &object, keys).is_err());
        assert!(open_object("repositories/a/_tags/v1", &object, |_| None).is_err());
        let edited = text.replace(r#""x""#, r#""y""#);
        assert!(open_object("repositories/a/_tags/v1", edited.as_bytes(), keys).is_err());
        // Whitespace around a body is not stored, and not sealed (found by fuzzing).
        let padded = seal_object(&key, 3, "p", " 3\t".into()).expect("seal");
        assert_eq!(
            open_object("p", &padded, keys),
            Ok(Opened::Sealed {
                generation: 3,
                body: "3"
            })
        );
        let legacy = br#"{"digest":"x"}"#;
        assert_eq!(
            open_object("repositories/a/_tags/v1", legacy, keys),
            Ok(Opened::Unsealed(&legacy[..]))
        );
    }

    #[test]
    fn the_message_is_length_prefixed() {
        // Moving a byte between the path and the body changes the message.
        assert_ne!(message("ab", 1, b"c"), message("a", 1, b"bc"));
        assert_eq!(
            message("p", 258, b"b"),
            b"valv/v1 link\x00\x00\x00\x01p\x00\x00\x01\x02\x00\x00\x00\x01b".to_vec()
        );
    }
}
