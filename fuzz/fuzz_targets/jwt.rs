//! `valv::auth::token::Verifier`: bearer JWTs (JWS compact form) against trusted
//! Ed25519, P-256 and RSA keys (`valv_fuzz::token`).
//!
//! Contract: never panics; a token that verifies was signed by the trusted Ed25519
//! key over exactly its header and payload (no fuzz input can sign for the other
//! two), and its claims name the trusted issuer, include this service in the audience
//! and are not expired at the verification time; changing any one character of a
//! signed token makes it fail.
//! Input: byte 0 even = the rest is a token; odd = the rest is `header 0xff payload`
//! (JSON), which the target signs, verifies, and then edits at a fuzzer-chosen place.
#![no_main]

use libfuzzer_sys::fuzz_target;
use valv::auth::token::split_jws;
use valv_fuzz::token::{sign, signer, verifier, ISSUER, NOW, SERVICE, SKEW};

/// The claims the check reads. A struct, not a `serde_json::Value`: like the
/// verifier's, it skips other members without validating them (a `Value` refuses, say,
/// a lone surrogate escape in a member nobody reads).
#[derive(serde::Deserialize)]
struct Claims {
    iss: Option<String>,
    aud: Option<serde_json::Value>,
    exp: Option<f64>,
}

#[derive(serde::Deserialize)]
struct Header {
    alg: String,
}

/// The claims of an accepted payload, checked independently of the verifier.
fn check_claims(payload: &[u8]) {
    let c: Claims = serde_json::from_slice(payload).expect("accepted claims are JSON");
    assert_eq!(c.iss.as_deref(), Some(ISSUER));
    let aud_ok = match &c.aud {
        Some(serde_json::Value::String(a)) => a == SERVICE,
        Some(serde_json::Value::Array(list)) => list.iter().any(|a| a == SERVICE),
        _ => false,
    };
    assert!(aud_ok, "accepted a token for another audience");
    let exp = c.exp.expect("accepted tokens have a numeric exp");
    assert!(exp.is_finite() && exp >= 0.0 && (exp as u64).saturating_add(SKEW) > NOW);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let v = verifier();
    if mode % 2 == 0 {
        let Ok(token) = std::str::from_utf8(rest) else {
            return;
        };
        if v.verify_at(token, NOW).is_ok() {
            let (header, payload, sig, signed) = split_jws(token).expect("a verified token splits");
            let h: Header = serde_json::from_slice(&header).expect("header JSON");
            assert_eq!(h.alg, "EdDSA", "a token verified without the Ed25519 key");
            assert_eq!(signer().sign(signed.as_bytes()).as_ref(), &sig[..]);
            check_claims(&payload);
            // The cached path answers the same.
            assert!(v.verify_at(token, NOW).is_ok());
        }
        return;
    }
    let (header, payload, edit) = {
        let mut parts = rest.splitn(3, |&b| b == 0xff);
        (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        )
    };
    let token = sign(header, payload);
    if v.verify_at(&token, NOW).is_ok() {
        check_claims(payload);
    }
    // One character changed, to another of the alphabet (or a dot): never accepted.
    if let [at, to, ..] = *edit {
        const ALPHABET: &[u8] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
        let mut t = token.into_bytes();
        let i = usize::from(u16::from_le_bytes([at, edit.get(2).copied().unwrap_or(0)])) % t.len();
        let c = ALPHABET[usize::from(to) % ALPHABET.len()];
        if t[i] != c {
            t[i] = c;
            let t = String::from_utf8(t).expect("ASCII");
            assert!(v.verify_at(&t, NOW).is_err(), "an edited token verified");
        }
    }
});
