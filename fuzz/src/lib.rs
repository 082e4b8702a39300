//! Shared pieces of valv's fuzz targets: the fixed, public, test-only inputs of
//! docs/FORMAT.md §10, a test KEK for the keyring target, a fixed token signer for the
//! JWT target, and the renderers the round-trip checks use.
//!
//! Nothing here is for production: every key below is public.

use std::sync::OnceLock;

use storage::crypto::keys::{BlobKeys, Key32};

/// FORMAT.md §10 inputs.
pub const DEK: [u8; 32] = seq(0x00);
pub const SALT: [u8; 32] = seq(0x20);
pub const NONCE_PREFIX: [u8; 7] = [0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46];
pub const RK_1: [u8; 32] = seq(0xa0);

const fn seq(start: u8) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = start + i as u8;
        i += 1;
    }
    out
}

/// The vectors' blob keys with a chosen segment size.
pub fn vector_keys(segment_size: u32) -> BlobKeys {
    BlobKeys {
        dek: Key32::from_bytes(DEK),
        salt: SALT,
        nonce_prefix: NONCE_PREFIX,
        segment_size,
    }
}

/// The four envelopes of FORMAT.md §10, as committed (compact JSON). Each opens under
/// [`RK_1`] to the vectors' DEK.
pub const VECTOR_ENVELOPES: [&str; 4] = [
    r#"{"version":1,"digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0,"segment_size":65536,"key_generation":1,"salt":"ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=","nonce_prefix":"QEFCQ0RFRg==","commitment":"LxKJgmUsL85F2hwNsvbDGfeV5a9yuG1K8d0YPMsw9gI=","dek":{"salt":"wMHCw8TFxsfIycrLzM3Oz9DR0tPU1dbX2Nna29zd3t8=","nonce":"4OHi4+Tl5ufo6err","ciphertext":"O6aFkmpxzumK/wpeuIdFLVe+0Xn9LYxqiQ/P0psqH+D4kD4F71zD6EGxlo7ctE2A"},"parts":[{"object":"test-vectors/empty/data-0","segments":1}]}"#,
    r#"{"version":1,"digest":"sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824","size":5,"segment_size":65536,"key_generation":1,"salt":"ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=","nonce_prefix":"QEFCQ0RFRg==","commitment":"LxKJgmUsL85F2hwNsvbDGfeV5a9yuG1K8d0YPMsw9gI=","dek":{"salt":"wMHCw8TFxsfIycrLzM3Oz9DR0tPU1dbX2Nna29zd3t8=","nonce":"4OHi4+Tl5ufo6err","ciphertext":"O6aFkmpxzumK/wpeuIdFLVe+0Xn9LYxqiQ/P0psqH+CkhLy2zh7Cx/NRyvUz3qmV"},"parts":[{"object":"test-vectors/five-bytes/data-0","segments":1}]}"#,
    r#"{"version":1,"digest":"sha256:f12dd12340cb84e4d0d9958d62be7c59bb8f7243a7420fd043177ac542a26aaa","size":35,"segment_size":16,"key_generation":1,"salt":"ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=","nonce_prefix":"QEFCQ0RFRg==","commitment":"LxKJgmUsL85F2hwNsvbDGfeV5a9yuG1K8d0YPMsw9gI=","dek":{"salt":"wMHCw8TFxsfIycrLzM3Oz9DR0tPU1dbX2Nna29zd3t8=","nonce":"4OHi4+Tl5ufo6err","ciphertext":"O6aFkmpxzumK/wpeuIdFLVe+0Xn9LYxqiQ/P0psqH+C93KLOsIyyxpq+CxZGGpQg"},"parts":[{"object":"test-vectors/two-segments-and-three-bytes/data-0","segments":2},{"object":"test-vectors/two-segments-and-three-bytes/data-1","segments":1}]}"#,
    r#"{"version":1,"digest":"sha256:237356e18b503616912abb8ffaed3a72591e397d4ac294c4637917d48a3f529d","size":65537,"segment_size":65536,"key_generation":1,"salt":"ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=","nonce_prefix":"QEFCQ0RFRg==","commitment":"LxKJgmUsL85F2hwNsvbDGfeV5a9yuG1K8d0YPMsw9gI=","dek":{"salt":"wMHCw8TFxsfIycrLzM3Oz9DR0tPU1dbX2Nna29zd3t8=","nonce":"4OHi4+Tl5ufo6err","ciphertext":"O6aFkmpxzumK/wpeuIdFLVe+0Xn9LYxqiQ/P0psqH+DETIthJG+GppOllG/GKCk4"},"parts":[{"object":"test-vectors/one-segment-and-one-byte/data-0","segments":2}]}"#,
];

/// FORMAT.md §10's session-state sealed box: AAD, plaintext and the box's JSON.
pub const SESSION_AAD: &[u8] = b"valv/v1 test session";
pub const SESSION_PLAINTEXT: &[u8] = b"held-back tail";
pub const SESSION_BOX: &str =
    r#"{"nonce":"8PHy8/T19vf4+fr7","ciphertext":"WnfHr/wPhHZz5BR7lAeIDnAwBH9DDlUQKHXO1uvY"}"#;

/// FORMAT.md §11.4's link: the path and body of the vector tag (sealed under `RK_1`'s
/// link key, generation 1).
pub const LINK_PATH: &str = "repositories/team-a/app/_tags/v1";
pub const LINK_BODY: &str =
    r#"{"digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}"#;

/// A current-thread runtime for the targets that call async store code (all of
/// whose I/O is in memory).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    })
}

pub mod kek;
pub mod render;
pub mod token;

use arbitrary::{Result as ArbResult, Unstructured};

/// Applies up to eight fuzzer-chosen edits to `bytes`: flip a bit pattern, overwrite,
/// insert, delete a range, truncate, or copy a range of the original over another
/// place (a splice). Gives the fuzzer a valid object to start from, so mutations reach
/// the checks behind the parser.
pub fn mutate(bytes: &mut Vec<u8>, u: &mut Unstructured<'_>) -> ArbResult<()> {
    let original = bytes.clone();
    let ops = u.int_in_range(0..=8u8)?;
    for _ in 0..ops {
        let len = bytes.len();
        let pos = u.int_in_range(0..=len)?;
        match u.int_in_range(0..=5u8)? {
            0 if pos < len => bytes[pos] ^= u.int_in_range(1..=255u8)?,
            1 if pos < len => bytes[pos] = u.arbitrary()?,
            2 => {
                let n = u.int_in_range(1..=8usize)?;
                let ins = u.bytes(n.min(u.len()))?;
                bytes.splice(pos..pos, ins.iter().copied());
            }
            3 => {
                let end = u.int_in_range(pos..=len)?;
                bytes.drain(pos..end);
            }
            4 => bytes.truncate(pos),
            5 if !original.is_empty() => {
                let from = u.int_in_range(0..=original.len() - 1)?;
                let n = u.int_in_range(1..=original.len() - from)?;
                let end = (pos + n).min(len);
                bytes.splice(pos..end, original[from..from + n].iter().copied());
            }
            _ => {}
        }
    }
    Ok(())
}
