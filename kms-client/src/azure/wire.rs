//! Key Vault's JSON: the KeyBundle, the version list, error bodies, base64url.
//!
//! Parsing only; nothing here makes a request.

use base64::Engine as _;
use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::{KeyDescription, KeyId, KmsError, VersionedKeyId};

/// A Key Vault error body `{"error":{"code","message","innererror":{"code"}}}`,
/// with defaults for whatever is missing.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct ErrorBody {
    pub code: String,
    pub inner: Option<String>,
    /// At most 300 characters.
    pub message: String,
}

impl ErrorBody {
    pub fn parse(body: &str) -> ErrorBody {
        #[derive(Deserialize, Default)]
        struct Inner {
            #[serde(default)]
            code: String,
        }
        #[derive(Deserialize, Default)]
        struct Err {
            #[serde(default)]
            code: String,
            #[serde(default)]
            message: String,
            innererror: Option<Inner>,
        }
        #[derive(Deserialize)]
        struct Body {
            error: Err,
        }
        let e = serde_json::from_str::<Body>(body)
            .map(|b| b.error)
            .unwrap_or_default();
        ErrorBody {
            code: e.code,
            inner: e.innererror.map(|i| i.code).filter(|c| !c.is_empty()),
            message: e.message.chars().take(300).collect(),
        }
    }
}

#[derive(Deserialize)]
struct Attributes {
    #[serde(default = "yes")]
    enabled: bool,
    nbf: Option<i64>,
    exp: Option<i64>,
    created: Option<i64>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
pub(super) struct ListPage {
    #[serde(default)]
    pub value: Vec<ListItem>,
    #[serde(rename = "nextLink")]
    pub next_link: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct ListItem {
    kid: String,
    attributes: Attributes,
}

/// One entry of the version list, checked to be a version of the listed key.
pub(super) struct ListedVersion {
    pub id: VersionedKeyId,
    pub enabled: bool,
    pub created: Option<DateTime<Utc>>,
    pub expires: Option<DateTime<Utc>>,
    pub not_before: Option<DateTime<Utc>>,
}

impl ListedVersion {
    pub fn usable_at(&self, now: DateTime<Utc>) -> bool {
        self.enabled
            && self.expires.is_none_or(|exp| now < exp)
            && self.not_before.is_none_or(|nbf| now >= nbf)
    }
}

impl ListItem {
    pub fn into_listed(self, key: &KeyId) -> Result<ListedVersion, KmsError> {
        let version = version_of_kid(&self.kid, key.name()).ok_or_else(|| {
            KmsError::misconfigured(
                key,
                format!(
                    "Key Vault listed {:?}, not a version of this key",
                    self.kid.chars().take(200).collect::<String>()
                ),
            )
        })?;
        let id: VersionedKeyId = format!("{}/{version}", key.versionless()).parse()?;
        Ok(ListedVersion {
            id,
            enabled: self.attributes.enabled,
            created: self.attributes.created.and_then(unix),
            expires: self.attributes.exp.and_then(unix),
            not_before: self.attributes.nbf.and_then(unix),
        })
    }
}

pub(super) fn version_of_kid<'a>(kid: &'a str, name: &str) -> Option<&'a str> {
    let (_, rest) = kid.split_once("/keys/")?;
    let (n, version) = rest.split_once('/')?;
    (n == name && !version.is_empty() && !version.contains('/')).then_some(version)
}

fn unix(secs: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(secs, 0).single()
}

/// Parses a KeyBundle and checks the key is RSA/RSA-HSM of a supported size.
pub(super) fn parse_bundle(
    id: &VersionedKeyId,
    bundle: &Value,
) -> Result<KeyDescription, KmsError> {
    let bad = |why: String| KmsError::misconfigured(id, why);
    let key = bundle
        .get("key")
        .ok_or_else(|| bad("Key Vault's answer has no \"key\"".into()))?;
    let kty = key.get("kty").and_then(Value::as_str).unwrap_or_default();
    if let Some(kid) = key.get("kid").and_then(Value::as_str) {
        if version_of_kid(kid, id.key().name()) != Some(id.version()) {
            let why = "Key Vault answered about another key version";
            return Err(bad(why.to_owned()));
        }
    }
    const NEED: &str = "valv needs an RSA key of 2048, 3072 or 4096 bits";
    match kty {
        "RSA" | "RSA-HSM" => {}
        "EC" | "EC-HSM" => return Err(bad(format!("{kty} keys are not supported; {NEED}"))),
        other => return Err(bad(format!("key type {other:?} is not supported; {NEED}"))),
    }
    let n = key
        .get("n")
        .and_then(Value::as_str)
        .and_then(b64_decode)
        .ok_or_else(|| bad("the RSA key has no valid modulus \"n\"".into()))?;
    let bits = modulus_bits(&n);
    if ![2048, 3072, 4096].contains(&bits) {
        return Err(bad(format!(
            "the RSA key has {bits} bits; valv needs 2048, 3072 or 4096"
        )));
    }
    if let Some(ops) = key.get("key_ops").and_then(Value::as_array) {
        for need in ["wrapKey", "unwrapKey"] {
            if !ops.iter().any(|o| o.as_str() == Some(need)) {
                return Err(bad(format!("the key's key_ops do not permit {need}")));
            }
        }
    }
    let attrs: Attributes = bundle
        .get("attributes")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| bad(format!("malformed key attributes: {e}")))?
        .unwrap_or(Attributes {
            enabled: true,
            nbf: None,
            exp: None,
            created: None,
        });
    Ok(KeyDescription {
        id: id.clone(),
        key_type: kty.to_owned(),
        key_size_bits: bits,
        enabled: attrs.enabled,
        created: attrs.created.and_then(unix),
        expires: attrs.exp.and_then(unix),
        not_before: attrs.nbf.and_then(unix),
    })
}

pub(super) fn modulus_bits(n: &[u8]) -> u32 {
    let n = match n.iter().position(|b| *b != 0) {
        Some(at) => &n[at..],
        None => return 0,
    };
    (n.len() as u32 - 1) * 8 + (8 - n[0].leading_zeros())
}

pub(super) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(super) fn b64_decode(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn modulus_sizes() {
        let mut n = vec![0u8; 256];
        n[0] = 0x80;
        assert_eq!(modulus_bits(&n), 2048);
        assert_eq!(modulus_bits(&[&[0u8][..], &n].concat()), 2048);
        n[0] = 0x40;
        assert_eq!(modulus_bits(&n), 2047);
    }

    #[test]
    fn kid_versions() {
        assert_eq!(
            version_of_kid("https://v.vault.azure.net/keys/k/abc", "k"),
            Some("abc")
        );
        assert_eq!(
            version_of_kid("http://127.0.0.1:1/keys/k/abc", "other"),
            None
        );
        assert_eq!(version_of_kid("https://v/keys/k", "k"), None);
    }

    #[test]
    fn error_bodies_parse() {
        let e = ErrorBody::parse(
            r#"{"error":{"code":"Forbidden","message":"no","innererror":{"code":"KeyDisabled"}}}"#,
        );
        assert_eq!(
            (e.code.as_str(), e.inner.as_deref()),
            ("Forbidden", Some("KeyDisabled"))
        );
        assert_eq!(ErrorBody::parse("not json"), ErrorBody::default());
    }
}
