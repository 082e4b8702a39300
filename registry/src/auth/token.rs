//! Bearer tokens of the distribution token spec: JWS compact serialisation with RS256,
//! ES256 or EdDSA signatures, verified with *ring* against trusted public keys.
//!
//! Why no JWT crate: verification is a few checks that must each be right (the `alg`
//! must fit the key that verifies it; `none` and the HMAC algorithms are never
//! accepted, since a public key must not double as an HMAC secret), and writing them
//! on ring keeps them in view, adds no dependency and uses the crypto already in the
//! tree.
//!
//! Keys (`keys.rs`) come from PEM files (SubjectPublicKeyInfo, or PKCS#1 `RSA PUBLIC KEY`) and from
//! a JWKS document. A token's `kid` selects the key: a JWKS key by its `kid`, a PEM key
//! by its libtrust fingerprint (what distribution's token servers put in `kid`), its
//! RFC 7638 thumbprint, or its file stem. A token without `kid` is tried against every
//! key of its algorithm.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::keys::{Alg, TrustedKey};
use super::policy::Action;

/// Longest token accepted (distribution's tokens are well under 4 KiB).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Verified tokens cached at most, and the token bytes they may hold together.
const CACHE_CAP: usize = 4096;
const CACHE_BYTES: usize = 4 << 20;

// ---------------------------------------------------------------------------------
// Claims

/// One entry of the `access` claim: a resource and the actions granted on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub actions: Vec<String>,
}

/// A requested scope: `repository:team-a/app:pull,push`, `registry:catalog:*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Scope {
    /// Parses one scope. The type may carry a class (`repository(plugin)`, dropped);
    /// the name may contain `:` (a registry host with a port), so the type ends at the
    /// first `:` and the actions start after the last.
    pub fn parse(s: &str) -> Option<Scope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        let kind = kind.split_once('(').map(|(k, _)| k).unwrap_or(kind);
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        let actions = actions
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        Some(Scope {
            kind: kind.to_owned(),
            name: name.to_owned(),
            actions,
        })
    }

    /// Every scope of a list of `scope` values, each possibly space-separated (the
    /// OAuth2 form); the ones that do not parse are ignored, as the spec has it.
    pub fn parse_all<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Scope> {
        values
            .into_iter()
            .flat_map(|v| v.split(' '))
            .filter_map(Scope::parse)
            .collect()
    }
}

/// What a verified token grants.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    repositories: HashMap<String, BTreeSet<Action>>,
    catalog: bool,
}

impl Grants {
    pub fn from_access(access: &[AccessEntry]) -> Grants {
        let mut g = Grants::default();
        for e in access {
            match e.kind.as_str() {
                "repository" => {
                    let set = g.repositories.entry(e.name.clone()).or_default();
                    for a in &e.actions {
                        if a == "*" {
                            set.extend(Action::ALL);
                        } else if let Some(a) = Action::parse(a) {
                            set.insert(a);
                        }
                    }
                }
                "registry" if e.name == "catalog" => {
                    g.catalog |= e.actions.iter().any(|a| a == "*");
                }
                _ => {}
            }
        }
        g
    }

    pub fn allows(&self, action: Action, repo: &str) -> bool {
        self.repositories
            .get(repo)
            .is_some_and(|s| s.contains(&action))
    }

    pub fn catalog(&self) -> bool {
        self.catalog
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    exp: Option<f64>,
    nbf: Option<f64>,
    #[serde(default)]
    access: Vec<AccessEntry>,
}

/// Why a token was refused. The client is told only that it was; the reason is for
/// the log (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("algorithm {0:?} is not accepted")]
    Algorithm(String),
    #[error("no trusted key matches the token")]
    UnknownKey,
    #[error("bad signature")]
    Signature,
    #[error("wrong issuer")]
    Issuer,
    #[error("wrong audience")]
    Audience,
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
}

/// A token that verified.
#[derive(Debug, Clone)]
pub struct Verified {
    pub subject: Option<std::sync::Arc<str>>,
    pub grants: std::sync::Arc<Grants>,
    pub local: bool,
    pub expires: u64,
}

/// Verifies tokens against the trusted keys, caching the ones that verified.
#[derive(Debug)]
pub struct Verifier {
    keys: Vec<TrustedKey>,
    service: String,
    skew: u64,
    cache: Mutex<Cache>,
}

/// Tokens that verified, found by a SHA-256 of their signature segment and then
/// compared whole, in constant time, with the token presented: a hit is always the
/// very token that verified, and a lookup hashes ~100 bytes instead of the whole
/// kilobyte-long token (the cached path runs on every request).
#[derive(Debug, Default)]
struct Cache {
    entries: HashMap<[u8; 32], (Box<str>, Verified)>,
    bytes: usize,
}

impl Cache {
    fn key(token: &str) -> [u8; 32] {
        let signature = token.rsplit_once('.').map_or(token, |(_, s)| s);
        sha2::Sha256::digest(signature.as_bytes()).into()
    }

    fn get(&mut self, token: &str, now: u64, skew: u64) -> Option<Verified> {
        let key = Cache::key(token);
        let (stored, v) = self.entries.get(&key)?;
        if !same_bytes(stored.as_bytes(), token.as_bytes()) {
            return None;
        }
        if v.expires + skew > now {
            return Some(v.clone());
        }
        if let Some((t, _)) = self.entries.remove(&key) {
            self.bytes -= t.len();
        }
        None
    }

    fn insert(&mut self, token: &str, v: Verified, now: u64, skew: u64) {
        if self.entries.len() >= CACHE_CAP || self.bytes + token.len() > CACHE_BYTES {
            self.entries.retain(|_, (_, v)| v.expires + skew > now);
            self.bytes = self.entries.values().map(|(t, _)| t.len()).sum();
            if self.entries.len() >= CACHE_CAP || self.bytes + token.len() > CACHE_BYTES {
                self.entries.clear();
                self.bytes = 0;
            }
        }
        if let Some((old, _)) = self.entries.insert(Cache::key(token), (token.into(), v)) {
            self.bytes -= old.len();
        }
        self.bytes += token.len();
    }
}

/// `a == b`, in time that depends only on the lengths.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A compact JWS's decoded header, payload and signature, and the signed input.
pub type Jws<'a> = (Vec<u8>, Vec<u8>, Vec<u8>, &'a str);

/// Splits a compact JWS into its decoded header, payload, signature and the signed
/// input (`header.payload`).
pub fn split_jws(token: &str) -> Result<Jws<'_>, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed("too long"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("not three dot-separated segments"));
    };
    let dec = |seg: &str, what: &'static str| {
        URL_SAFE_NO_PAD
            .decode(seg.as_bytes())
            .map_err(|_| TokenError::Malformed(what))
    };
    let header = dec(h, "header is not base64url")?;
    let payload = dec(p, "payload is not base64url")?;
    let sig = dec(s, "signature is not base64url")?;
    Ok((header, payload, sig, &token[..h.len() + 1 + p.len()]))
}

impl Verifier {
    pub fn new(keys: Vec<TrustedKey>, service: String, skew: u64) -> Verifier {
        Verifier {
            keys,
            service,
            skew,
            cache: Mutex::new(Cache::default()),
        }
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// Verifies `token` now.
    pub fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        self.verify_at(token, now_secs())
    }

    pub fn verify_at(&self, token: &str, now: u64) -> Result<Verified, TokenError> {
        if let Some(v) = self.lock_cache().get(token, now, self.skew) {
            return Ok(v);
        }
        let v = self.verify_uncached(token, now)?;
        self.lock_cache().insert(token, v.clone(), now, self.skew);
        Ok(v)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn verify_uncached(&self, token: &str, now: u64) -> Result<Verified, TokenError> {
        let (header, payload, sig, signed) = split_jws(token)?;
        let header: Header = serde_json::from_slice(&header)
            .map_err(|_| TokenError::Malformed("header is not a JWS header"))?;
        if header.crit.is_some() {
            return Err(TokenError::Malformed(
                "critical header extensions are not understood",
            ));
        }
        let alg =
            Alg::parse(&header.alg).ok_or_else(|| TokenError::Algorithm(header.alg.clone()))?;
        // The key decides the algorithm: only keys of the header's type are candidates,
        // so an RSA key can never be used to check an HS256 or ES256 signature.
        let candidates: Vec<&TrustedKey> = self
            .keys
            .iter()
            .filter(|k| k.key.alg() == alg)
            .filter(|k| match &header.kid {
                Some(kid) => k.kids.iter().any(|n| n == kid),
                None => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err(TokenError::UnknownKey);
        }
        let key = candidates
            .into_iter()
            .find(|k| k.key.verify(signed.as_bytes(), &sig))
            .ok_or(TokenError::Signature)?;
        let claims: Claims = serde_json::from_slice(&payload)
            .map_err(|_| TokenError::Malformed("payload is not a claims set"))?;
        if claims.iss.as_deref() != Some(key.issuer.as_str()) {
            return Err(TokenError::Issuer);
        }
        let aud_ok = match &claims.aud {
            Some(Audience::One(a)) => *a == self.service,
            Some(Audience::Many(list)) => list.contains(&self.service),
            None => false,
        };
        if !aud_ok {
            return Err(TokenError::Audience);
        }
        let exp = claims
            .exp
            .filter(|e| e.is_finite() && *e >= 0.0)
            .ok_or(TokenError::Malformed("exp is required"))? as u64;
        if exp.saturating_add(self.skew) <= now {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = claims.nbf {
            if !nbf.is_finite() || nbf as u64 > now.saturating_add(self.skew) {
                return Err(TokenError::NotYetValid);
            }
        }
        Ok(Verified {
            subject: claims.sub.filter(|s| !s.is_empty()).map(Into::into),
            grants: std::sync::Arc::new(Grants::from_access(&claims.access)),
            local: key.local,
            expires: exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::{parse_spki, PublicKey};
    use ring::rand::SystemRandom;
    use ring::signature;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair};

    fn b64(v: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    struct Signer {
        pair: EcdsaKeyPair,
        rng: SystemRandom,
    }

    impl Signer {
        fn new() -> Signer {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .expect("generate");
            let pair = EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                pkcs8.as_ref(),
                &rng,
            )
            .expect("pair");
            Signer { pair, rng }
        }
        fn public(&self) -> PublicKey {
            PublicKey::P256(self.pair.public_key().as_ref().to_vec())
        }
        fn sign(&self, header: &str, claims: &str) -> String {
            let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
            let sig = self.pair.sign(&self.rng, input.as_bytes()).expect("sign");
            format!("{input}.{}", b64(sig.as_ref()))
        }
    }

    fn verifier(keys: Vec<PublicKey>) -> Verifier {
        Verifier::new(
            keys.into_iter()
                .map(|key| TrustedKey {
                    kids: vec!["k1".into()],
                    issuer: "iss".into(),
                    key,
                    local: false,
                })
                .collect(),
            "svc".into(),
            60,
        )
    }

    const NOW: u64 = 1_800_000_000;

    fn claims(extra: &str) -> String {
        format!(
            r#"{{"iss":"iss","sub":"alice","aud":"svc","exp":{},"nbf":{},"access":[{{"type":"repository","name":"a/b","actions":["pull"]}}]{extra}}}"#,
            NOW + 300,
            NOW - 10
        )
    }

    #[test]
    fn a_good_token_verifies_and_grants_its_access() {
        let s = Signer::new();
        let v = verifier(vec![s.public()]);
        let t = s.sign(r#"{"alg":"ES256","kid":"k1"}"#, &claims(""));
        let ok = v.verify_at(&t, NOW).expect("verifies");
        assert_eq!(ok.subject.as_deref(), Some("alice"));
        assert!(ok.grants.allows(Action::Pull, "a/b"));
        assert!(!ok.grants.allows(Action::Push, "a/b"));
        assert!(!ok.grants.allows(Action::Pull, "a/c"));
        // No kid: tried against every ES256 key.
        let t = s.sign(r#"{"alg":"ES256"}"#, &claims(""));
        assert!(v.verify_at(&t, NOW).is_ok());
    }

    #[test]
    fn the_cache_serves_only_the_token_that_verified() {
        let s = Signer::new();
        let v = verifier(vec![s.public()]);
        let h = r#"{"alg":"ES256","kid":"k1"}"#;
        let t = s.sign(h, &claims(""));
        assert!(v.verify_at(&t, NOW).is_ok());
        assert_eq!(v.lock_cache().entries.len(), 1);
        // The cached token's signature under another payload is looked up under the
        // same key, and refused: the whole token must match, then the signature.
        let (_, signature) = t.rsplit_once('.').expect("three segments");
        let forged = format!(
            "{}.{}.{signature}",
            b64(h.as_bytes()),
            b64(claims("").replace("pull", "push").as_bytes())
        );
        assert_eq!(
            v.verify_at(&forged, NOW).map(|_| ()),
            Err(TokenError::Signature)
        );
        assert!(v.verify_at(&t, NOW).is_ok(), "still cached");
        // Expired in the cache: refused by the full check, and dropped.
        assert_eq!(
            v.verify_at(&t, NOW + 300 + 60).map(|_| ()),
            Err(TokenError::Expired)
        );
        assert!(v.lock_cache().entries.is_empty());
    }

    #[test]
    fn the_cache_holds_a_bounded_number_of_bytes() {
        let s = Signer::new();
        let v = verifier(vec![s.public()]);
        let h = r#"{"alg":"ES256","kid":"k1"}"#;
        // Tokens of ~16 KiB (a long subject): the byte budget, not the entry count,
        // bounds the cache.
        let long = "x".repeat(11 * 1024);
        for i in 0..(CACHE_BYTES / (12 * 1024) + 50) {
            let t = s.sign(h, &claims(&format!(r#","n":"{long}{i}""#)));
            assert!(t.len() <= MAX_TOKEN_LEN);
            assert!(v.verify_at(&t, NOW).is_ok());
            let c = v.lock_cache();
            assert!(c.bytes <= CACHE_BYTES, "{} bytes cached", c.bytes);
            assert_eq!(
                c.bytes,
                c.entries.values().map(|(t, _)| t.len()).sum::<usize>()
            );
        }
    }

    #[test]
    fn every_refusal() {
        let s = Signer::new();
        let other = Signer::new();
        let v = verifier(vec![s.public()]);
        let h = r#"{"alg":"ES256","kid":"k1"}"#;
        let at = |t: &str, now| v.verify_at(t, now).map(|_| ()).expect_err(t);
        assert_eq!(at(&other.sign(h, &claims("")), NOW), TokenError::Signature);
        assert_eq!(
            at(&s.sign(r#"{"alg":"ES256","kid":"k2"}"#, &claims("")), NOW),
            TokenError::UnknownKey
        );
        assert_eq!(
            at(&s.sign(r#"{"alg":"RS256","kid":"k1"}"#, &claims("")), NOW),
            TokenError::UnknownKey
        );
        assert!(matches!(
            at(&s.sign(r#"{"alg":"none"}"#, &claims("")), NOW),
            TokenError::Algorithm(_)
        ));
        assert!(matches!(
            at(&s.sign(r#"{"alg":"HS256"}"#, &claims("")), NOW),
            TokenError::Algorithm(_)
        ));
        assert_eq!(
            at(&s.sign(h, &claims("")), NOW + 300 + 60),
            TokenError::Expired
        );
        assert!(
            v.verify_at(&s.sign(h, &claims("")), NOW + 300 + 59).is_ok(),
            "within the skew"
        );
        assert_eq!(
            at(&s.sign(h, &claims("")), NOW - 10 - 61),
            TokenError::NotYetValid
        );
        let wrong_iss = claims("").replace(r#""iss":"iss""#, r#""iss":"evil""#);
        assert_eq!(at(&s.sign(h, &wrong_iss), NOW), TokenError::Issuer);
        let wrong_aud = claims("").replace(r#""aud":"svc""#, r#""aud":"other""#);
        assert_eq!(at(&s.sign(h, &wrong_aud), NOW), TokenError::Audience);
        let many_aud = claims("").replace(r#""aud":"svc""#, r#""aud":["x","svc"]"#);
        assert!(v.verify_at(&s.sign(h, &many_aud), NOW).is_ok());
        let no_exp = claims("").replace(&format!(r#""exp":{},"#, NOW + 300), "");
        assert!(matches!(
            at(&s.sign(h, &no_exp), NOW),
            TokenError::Malformed(_)
        ));
        let crit = r#"{"alg":"ES256","kid":"k1","crit":["x"]}"#;
        assert!(matches!(
            at(&s.sign(crit, &claims("")), NOW),
            TokenError::Malformed(_)
        ));
        // A tampered payload.
        let t = s.sign(h, &claims(""));
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = b64(claims("").replace("pull", "push").as_bytes());
        parts[1] = &forged;
        assert_eq!(at(&parts.join("."), NOW), TokenError::Signature);
    }

    #[test]
    fn malformed_segments() {
        let v = verifier(vec![]);
        for bad in [
            "",
            "a",
            "a.b",
            "a.b.c.d",
            "!!.e30.e30",
            "e30.!!.e30",
            "e30.e30.!!",
            "e30.e30.e30",
        ] {
            assert!(v.verify_at(bad, NOW).is_err(), "{bad:?}");
        }
        assert!(matches!(
            split_jws(&"a".repeat(MAX_TOKEN_LEN + 1)),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn ed25519_and_kids() {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("gen");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("pair");
        let key = PublicKey::Ed25519(pair.public_key().as_ref().try_into().expect("32"));
        // The SPKI round-trips through the parser.
        let spki = key.spki_der();
        assert!(matches!(parse_spki(&spki), Ok(PublicKey::Ed25519(_))));
        let kid = key.libtrust_kid();
        assert_eq!(kid.len(), 12 * 4 + 11, "{kid}");
        let v = Verifier::new(
            vec![TrustedKey {
                kids: vec![kid.clone()],
                issuer: "iss".into(),
                key,
                local: false,
            }],
            "svc".into(),
            0,
        );
        let input = format!(
            "{}.{}",
            b64(format!(r#"{{"alg":"EdDSA","kid":"{kid}"}}"#).as_bytes()),
            b64(claims("").as_bytes())
        );
        let t = format!("{input}.{}", b64(pair.sign(input.as_bytes()).as_ref()));
        assert!(v.verify_at(&t, NOW).is_ok());
    }

    #[test]
    fn scopes_parse() {
        assert_eq!(
            Scope::parse("repository:team-a/app:pull,push"),
            Some(Scope {
                kind: "repository".into(),
                name: "team-a/app".into(),
                actions: vec!["pull".into(), "push".into()]
            })
        );
        let s = Scope::parse("repository(plugin):host:5000/x:pull").expect("scope");
        assert_eq!(
            (s.kind.as_str(), s.name.as_str()),
            ("repository", "host:5000/x")
        );
        assert_eq!(
            Scope::parse("registry:catalog:*").expect("catalog").actions,
            vec!["*"]
        );
        assert_eq!(
            Scope::parse("repository:x:").expect("no actions").actions,
            Vec::<String>::new()
        );
        for bad in [
            "",
            "repository",
            "repository:x",
            ":x:pull",
            "repository::pull",
        ] {
            assert_eq!(Scope::parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            Scope::parse_all(["repository:a:pull repository:b:push", "bad"]).len(),
            2
        );
    }
}
