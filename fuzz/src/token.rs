//! A fixed token signer and the verifier that trusts it, for the JWT target.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use valv::auth::keys::{PublicKey, TrustedKey};
use valv::auth::token::Verifier;

pub const ISSUER: &str = "fuzz-issuer";
pub const SERVICE: &str = "fuzz-registry";
/// The fixed "now" tokens are verified at, and the allowed clock skew.
pub const NOW: u64 = 1_700_000_000;
pub const SKEW: u64 = 60;

/// The public (test-only) Ed25519 seed whose key signs the target's tokens.
const ED25519_SEED: [u8; 32] = [0x5e; 32];

pub fn signer() -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&ED25519_SEED).expect("a 32-byte seed")
}

/// A verifier that trusts the Ed25519 signer (kid `ed`), the P-256 generator point
/// (kid `es`) and a made-up 2048-bit RSA modulus (kid `rs`); the last two let the
/// ES256 and RS256 paths run, though no fuzz input can sign for them.
pub fn verifier() -> Verifier {
    let ed: [u8; 32] = signer()
        .public_key()
        .as_ref()
        .try_into()
        .expect("32-byte Ed25519 public key");
    let mut p256 = vec![0x04];
    p256.extend_from_slice(&hex(
        "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296",
    ));
    p256.extend_from_slice(&hex(
        "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5",
    ));
    let mut n = vec![0xc5u8; 256];
    n[255] |= 1;
    let key = |kid: &str, key: PublicKey| TrustedKey {
        kids: vec![kid.to_owned()],
        issuer: ISSUER.to_owned(),
        key,
        local: false,
    };
    Verifier::new(
        vec![
            key("ed", PublicKey::Ed25519(ed)),
            key("es", PublicKey::P256(p256)),
            key(
                "rs",
                PublicKey::Rsa {
                    n,
                    e: vec![1, 0, 1],
                },
            ),
        ],
        SERVICE.to_owned(),
        SKEW,
    )
}

/// `b64url(header).b64url(payload).b64url(Ed25519 signature)`.
pub fn sign(header: &[u8], payload: &[u8]) -> String {
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let sig = signer().sign(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}
