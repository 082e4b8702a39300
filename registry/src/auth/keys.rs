//! Trusted public keys of token services: RSA (2048 bits or more), EC P-256 and
//! Ed25519, from PEM files (SubjectPublicKeyInfo, or PKCS#1 `RSA PUBLIC KEY`) and JWKS
//! documents, with the names a token's `kid` may give them: distribution's libtrust
//! fingerprint, the RFC 7638 thumbprint, a JWKS `kid` or the PEM file's stem.
//!
//! Parsing SubjectPublicKeyInfo takes a few DER TLVs; a minimal reader (and writer,
//! for fingerprints) here avoids pulling an ASN.1 stack in for it.

use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;
use sha2::Digest as _;

/// A signature algorithm, as the JWS header names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Es256,
    EdDsa,
}

impl Alg {
    /// The algorithms accepted; `none`, `HS*` and everything else are refused.
    pub fn parse(s: &str) -> Option<Alg> {
        match s {
            "RS256" => Some(Alg::Rs256),
            "ES256" => Some(Alg::Es256),
            "EdDSA" => Some(Alg::EdDsa),
            _ => None,
        }
    }
}

/// A trusted public key.
#[derive(Clone)]
pub enum PublicKey {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// The uncompressed P-256 point (0x04 ‖ x ‖ y).
    P256(Vec<u8>),
    Ed25519([u8; 32]),
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PublicKey::Rsa { .. } => "PublicKey::Rsa",
            PublicKey::P256(_) => "PublicKey::P256",
            PublicKey::Ed25519(_) => "PublicKey::Ed25519",
        })
    }
}

impl PublicKey {
    pub fn alg(&self) -> Alg {
        match self {
            PublicKey::Rsa { .. } => Alg::Rs256,
            PublicKey::P256(_) => Alg::Es256,
            PublicKey::Ed25519(_) => Alg::EdDsa,
        }
    }

    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        match self {
            PublicKey::Rsa { n, e } => RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
                .is_ok(),
            PublicKey::P256(point) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, sig)
                    .is_ok()
            }
            PublicKey::Ed25519(k) => UnparsedPublicKey::new(&signature::ED25519, k)
                .verify(message, sig)
                .is_ok(),
        }
    }

    /// The DER SubjectPublicKeyInfo (for fingerprints).
    pub fn spki_der(&self) -> Vec<u8> {
        match self {
            PublicKey::Rsa { n, e } => {
                let rsa = der_seq(&[der_uint(n), der_uint(e)].concat());
                der_seq(
                    &[
                        der_seq(&[OID_RSA_DER, &[0x05, 0x00]].concat()),
                        der_bitstring(&rsa),
                    ]
                    .concat(),
                )
            }
            PublicKey::P256(point) => der_seq(
                &[
                    der_seq(&[OID_EC_DER, OID_P256_DER].concat()),
                    der_bitstring(point),
                ]
                .concat(),
            ),
            PublicKey::Ed25519(k) => {
                der_seq(&[der_seq(OID_ED25519_DER), der_bitstring(k)].concat())
            }
        }
    }

    /// distribution's (libtrust's) key id: the SHA-256 of the DER SPKI, its first 240
    /// bits in base32, in twelve groups of four joined by `:`.
    pub fn libtrust_kid(&self) -> String {
        let hash = sha2::Sha256::digest(self.spki_der());
        let b32 = base32(&hash[..30]);
        b32.as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The RFC 7638 JWK thumbprint, base64url.
    pub fn thumbprint(&self) -> String {
        let b = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        let json = match self {
            PublicKey::Rsa { n, e } => {
                format!(
                    r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                    b(strip0(e)),
                    b(strip0(n))
                )
            }
            PublicKey::P256(p) => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                b(&p[1..33]),
                b(&p[33..65])
            ),
            PublicKey::Ed25519(k) => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b(k)),
        };
        URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(json.as_bytes()))
    }
}

fn strip0(v: &[u8]) -> &[u8] {
    let i = v.iter().position(|b| *b != 0).unwrap_or(v.len());
    &v[i..]
}

fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for byte in data {
        buf = (buf << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

// ---------------------------------------------------------------------------------
// A minimal DER reader and writer: just enough for SubjectPublicKeyInfo.

const OID_RSA_DER: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
const OID_EC_DER: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256_DER: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_ED25519_DER: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// One DER TLV: its tag, the whole encoding, its contents, and what follows it.
type Tlv<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

/// Reads one TLV.
fn der_next(input: &[u8]) -> Option<Tlv<'_>> {
    let (&tag, rest) = input.split_first()?;
    let (&len0, mut rest) = rest.split_first()?;
    let len = if len0 < 0x80 {
        usize::from(len0)
    } else {
        let n = usize::from(len0 & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for b in &rest[..n] {
            len = (len << 8) | usize::from(*b);
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    let header = input.len() - rest.len();
    Some((tag, &input[..header + len], &rest[..len], &rest[len..]))
}

fn der_len(len: usize) -> Vec<u8> {
    if len < 0x80 {
        vec![len as u8]
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        let mut out = vec![0x80 | bytes.len() as u8];
        out.extend(bytes);
        out
    }
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(der_len(content.len()));
    out.extend_from_slice(content);
    out
}

fn der_seq(content: &[u8]) -> Vec<u8> {
    der_tlv(0x30, content)
}

fn der_uint(v: &[u8]) -> Vec<u8> {
    let v = strip0(v);
    let mut content = Vec::new();
    if v.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(v);
    der_tlv(0x02, &content)
}

fn der_bitstring(v: &[u8]) -> Vec<u8> {
    let mut content = vec![0];
    content.extend_from_slice(v);
    der_tlv(0x03, &content)
}

/// `SEQUENCE { INTEGER n, INTEGER e }` (PKCS#1 RSAPublicKey).
fn parse_rsa_public_key(der: &[u8]) -> Result<PublicKey, String> {
    let bad = || "not a PKCS#1 RSA public key".to_string();
    let (tag, _, body, rest) = der_next(der).ok_or_else(bad)?;
    if tag != 0x30 || !rest.is_empty() {
        return Err(bad());
    }
    let (t1, _, n, body) = der_next(body).ok_or_else(bad)?;
    let (t2, _, e, body) = der_next(body).ok_or_else(bad)?;
    if t1 != 0x02 || t2 != 0x02 || !body.is_empty() {
        return Err(bad());
    }
    let n = strip0(n).to_vec();
    if n.len() < 256 {
        return Err("RSA keys shorter than 2048 bits are refused".into());
    }
    Ok(PublicKey::Rsa {
        n,
        e: strip0(e).to_vec(),
    })
}

/// A DER SubjectPublicKeyInfo of an RSA, EC P-256 or Ed25519 key.
pub fn parse_spki(der: &[u8]) -> Result<PublicKey, String> {
    let bad = || "not a SubjectPublicKeyInfo".to_string();
    let (tag, _, body, rest) = der_next(der).ok_or_else(bad)?;
    if tag != 0x30 || !rest.is_empty() {
        return Err(bad());
    }
    let (t_alg, _, alg, body) = der_next(body).ok_or_else(bad)?;
    let (t_bits, _, bits, body) = der_next(body).ok_or_else(bad)?;
    if t_alg != 0x30 || t_bits != 0x03 || !body.is_empty() {
        return Err(bad());
    }
    let (&unused, key) = bits.split_first().ok_or_else(bad)?;
    if unused != 0 {
        return Err(bad());
    }
    let (t_oid, oid, _, params) = der_next(alg).ok_or_else(bad)?;
    if t_oid != 0x06 {
        return Err(bad());
    }
    if oid == OID_RSA_DER {
        parse_rsa_public_key(key)
    } else if oid == OID_EC_DER {
        let (_, curve, _, _) = der_next(params).ok_or_else(bad)?;
        if curve != OID_P256_DER {
            return Err("only the P-256 curve is supported for EC keys".into());
        }
        if key.len() != 65 || key[0] != 0x04 {
            return Err("an EC public key must be an uncompressed P-256 point".into());
        }
        Ok(PublicKey::P256(key.to_vec()))
    } else if oid == OID_ED25519_DER {
        let k: [u8; 32] = key
            .try_into()
            .map_err(|_| "an Ed25519 public key is 32 bytes".to_string())?;
        Ok(PublicKey::Ed25519(k))
    } else {
        Err("unsupported key algorithm (RSA, EC P-256 and Ed25519 are)".into())
    }
}

/// The blocks of a PEM text: (label, DER).
pub fn pem_blocks(text: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line.trim();
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut b64 = String::new();
        let mut closed = false;
        for l in lines.by_ref() {
            let l = l.trim();
            if l == end {
                closed = true;
                break;
            }
            b64.push_str(l);
        }
        if !closed {
            return Err(format!("PEM block {label} has no END line"));
        }
        let der = STANDARD
            .decode(b64.as_bytes())
            .map_err(|_| format!("PEM block {label} is not valid base64"))?;
        out.push((label.to_owned(), der));
    }
    Ok(out)
}

/// The public keys of a PEM text (`PUBLIC KEY`, `RSA PUBLIC KEY`).
pub fn parse_pem_public_keys(text: &str) -> Result<Vec<PublicKey>, String> {
    let mut keys = Vec::new();
    for (label, der) in pem_blocks(text)? {
        match label.as_str() {
            "PUBLIC KEY" => keys.push(parse_spki(&der)?),
            "RSA PUBLIC KEY" => keys.push(parse_rsa_public_key(&der)?),
            "CERTIFICATE" => return Err(
                "certificates are not accepted; give the public key (openssl x509 -pubkey -noout)"
                    .into(),
            ),
            other if other.contains("PRIVATE") => {
                return Err("a private key: give the public key only".into())
            }
            _ => {}
        }
    }
    if keys.is_empty() {
        return Err("no PUBLIC KEY block".into());
    }
    Ok(keys)
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

fn b64url(field: &Option<String>, what: &str) -> Result<Vec<u8>, String> {
    let v = field.as_deref().ok_or_else(|| format!("missing {what}"))?;
    URL_SAFE_NO_PAD
        .decode(v.trim_end_matches('='))
        .map_err(|_| format!("{what} is not base64url"))
}

/// The signing keys of a JWKS document, with their `kid`s. Keys for other uses
/// (`use` other than `sig`) are skipped; a malformed key is an error.
pub fn parse_jwks(text: &str) -> Result<Vec<(Option<String>, PublicKey)>, String> {
    let jwks: Jwks = serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut out = Vec::new();
    for (i, k) in jwks.keys.iter().enumerate() {
        if k.use_.as_deref().is_some_and(|u| u != "sig") {
            continue;
        }
        let key = match (k.kty.as_str(), k.crv.as_deref()) {
            ("RSA", _) => {
                let n = strip0(&b64url(&k.n, "n")?).to_vec();
                if n.len() < 256 {
                    return Err(format!(
                        "key {i}: RSA keys shorter than 2048 bits are refused"
                    ));
                }
                PublicKey::Rsa {
                    n,
                    e: strip0(&b64url(&k.e, "e")?).to_vec(),
                }
            }
            ("EC", Some("P-256")) => {
                let (x, y) = (b64url(&k.x, "x")?, b64url(&k.y, "y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(format!("key {i}: P-256 coordinates are 32 bytes"));
                }
                PublicKey::P256([&[0x04][..], &x, &y].concat())
            }
            ("OKP", Some("Ed25519")) => PublicKey::Ed25519(
                b64url(&k.x, "x")?
                    .try_into()
                    .map_err(|_| format!("key {i}: an Ed25519 key is 32 bytes"))?,
            ),
            (kty, crv) => {
                return Err(format!(
                    "key {i}: unsupported key type {kty:?}{} (RSA, EC P-256 and OKP Ed25519 are)",
                    crv.map(|c| format!(" curve {c:?}")).unwrap_or_default()
                ))
            }
        };
        out.push((k.kid.clone(), key));
    }
    if out.is_empty() {
        return Err("the JWKS has no signing keys".into());
    }
    Ok(out)
}

/// A trusted key, with the names a `kid` may use for it and the issuer it signs for.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub kids: Vec<String>,
    pub issuer: String,
    pub key: PublicKey,
    /// Signed by the built-in issuer (its users' rights are the policy's).
    pub local: bool,
}

/// Loads the trusted keys of `[auth.token]`: every PEM file and the JWKS file, all
/// for `issuer`. Errors name the file.
pub fn load_keys(
    pems: &[std::path::PathBuf],
    jwks: Option<&Path>,
    issuer: &str,
) -> Result<Vec<TrustedKey>, Vec<String>> {
    let mut keys = Vec::new();
    let mut problems = Vec::new();
    for path in pems {
        match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| parse_pem_public_keys(&t))
        {
            Ok(found) => {
                let stem = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                for key in found {
                    keys.push(TrustedKey {
                        kids: vec![key.libtrust_kid(), key.thumbprint(), stem.clone()],
                        issuer: issuer.to_owned(),
                        key,
                        local: false,
                    });
                }
            }
            Err(e) => problems.push(format!("auth.token.public_keys {}: {e}", path.display())),
        }
    }
    if let Some(path) = jwks {
        match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| parse_jwks(&t))
        {
            Ok(found) => {
                for (kid, key) in found {
                    let kids = match kid {
                        Some(k) => vec![k],
                        None => vec![key.thumbprint()],
                    };
                    keys.push(TrustedKey {
                        kids,
                        issuer: issuer.to_owned(),
                        key,
                        local: false,
                    });
                }
            }
            Err(e) => problems.push(format!("auth.token.jwks {}: {e}", path.display())),
        }
    }
    if problems.is_empty() {
        Ok(keys)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair};

    fn b64(v: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    fn p256() -> PublicKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("generate");
        let pair = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .expect("pair");
        PublicKey::P256(pair.public_key().as_ref().to_vec())
    }

    #[test]
    fn pem_and_jwks_parse() {
        let key = p256();
        let der = key.spki_der();
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            STANDARD.encode(&der)
        );
        let keys = parse_pem_public_keys(&pem).expect("pem");
        assert!(matches!(&keys[..], [PublicKey::P256(_)]));
        assert!(parse_pem_public_keys(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        )
        .is_err());
        assert!(parse_pem_public_keys("-----BEGIN PUBLIC KEY-----\nAAAA\n").is_err());
        assert!(parse_pem_public_keys("nothing").is_err());
        assert!(parse_spki(&der[..der.len() - 1]).is_err());
        let PublicKey::P256(p) = key else {
            panic!("a P-256 key")
        };
        let jwks = format!(
            r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"a","x":"{}","y":"{}"}},{{"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"}}]}}"#,
            b64(&p[1..33]),
            b64(&p[33..])
        );
        let keys = parse_jwks(&jwks).expect("jwks");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].0.as_deref(), Some("a"));
        assert!(
            parse_jwks(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).is_err(),
            "symmetric keys refused"
        );
        assert!(
            parse_jwks(r#"{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}"#).is_err(),
            "short RSA"
        );
    }

    #[test]
    fn base32_matches_rfc4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
    }
}
