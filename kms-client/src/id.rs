use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::KmsError;

/// A key identifier as an operator writes it, with or without a version.
///
/// The form picks the provider (DESIGN §6). Only `file://` is implemented so far;
/// the other forms parse so that configuration errors are reported precisely.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyId {
    kind: KeyIdKind,
    version: Option<String>,
}

/// Which provider a key id belongs to, with its provider-specific location.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyIdKind {
    /// `file://<dir>/<name>[/<version>]`: local RSA keys on disk.
    File { dir: PathBuf, name: String },
    /// `https://<vault host>/keys/<name>[/<version>]`: Azure Key Vault or Managed HSM.
    AzureKeyVault { vault: String, name: String },
}

/// A key id that names one exact version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VersionedKeyId {
    key: KeyId,
}

/// Local key versions are 32 lowercase hex characters, like Key Vault's. A key name
/// may never look like a version, so `file://<dir>/<name>/<version>` is unambiguous.
pub fn is_version_string(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Key names follow Key Vault's rule `^[0-9a-zA-Z-]+$` (at most 127 characters).
pub fn is_valid_key_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 127
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !is_version_string(s)
}

impl KeyId {
    pub fn kind(&self) -> &KeyIdKind {
        &self.kind
    }
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }
    pub fn name(&self) -> &str {
        match &self.kind {
            KeyIdKind::File { name, .. } | KeyIdKind::AzureKeyVault { name, .. } => name,
        }
    }
    /// The same key without a version (automatic rotation).
    pub fn versionless(&self) -> KeyId {
        KeyId {
            kind: self.kind.clone(),
            version: None,
        }
    }
    /// This key at `version`.
    ///
    /// Fails with `Misconfigured` when `version` is not a valid version string.
    pub fn with_version(&self, version: &str) -> Result<VersionedKeyId, KmsError> {
        if !is_version_string(version) {
            return Err(KmsError::misconfigured(
                self,
                format!("{version:?} is not a key version"),
            ));
        }
        Ok(VersionedKeyId {
            key: KeyId {
                kind: self.kind.clone(),
                version: Some(version.to_owned()),
            },
        })
    }
    /// `Some` when the id pins a version.
    pub fn as_versioned(&self) -> Option<VersionedKeyId> {
        self.version
            .as_ref()
            .map(|_| VersionedKeyId { key: self.clone() })
    }
}

impl VersionedKeyId {
    pub fn key(&self) -> &KeyId {
        &self.key
    }
    pub fn version(&self) -> &str {
        self.key.version.as_deref().unwrap_or_default()
    }
    pub fn versionless(&self) -> KeyId {
        self.key.versionless()
    }
}

impl FromStr for KeyId {
    type Err = KmsError;

    /// Fails with `Misconfigured`, naming what is wrong with the id.
    fn from_str(s: &str) -> Result<Self, KmsError> {
        let bad = |why: &str| KmsError::misconfigured(s, why.to_owned());
        if let Some(rest) = s.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(bad(
                    "a file key id needs an absolute path: file:///<dir>/<name>[/<version>]",
                ));
            }
            let mut parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
            let version = match parts.last() {
                Some(last) if is_version_string(last) => {
                    let v = (*last).to_owned();
                    parts.pop();
                    Some(v)
                }
                _ => None,
            };
            let name = parts.pop().unwrap_or_default();
            if !is_valid_key_name(name) {
                return Err(bad(
                    "the key name must match [0-9a-zA-Z-]+ (at most 127 characters)",
                ));
            }
            let dir = parts.join("/");
            if dir.is_empty() {
                return Err(bad(
                    "a file key id needs a directory: file:///<dir>/<name>[/<version>]",
                ));
            }
            return Ok(KeyId {
                kind: KeyIdKind::File {
                    dir: PathBuf::from(dir),
                    name: name.to_owned(),
                },
                version,
            });
        }
        if let Some(rest) = s.strip_prefix("https://") {
            let mut parts = rest.trim_end_matches('/').split('/');
            let host = parts.next().unwrap_or_default();
            let (Some("keys"), Some(name)) = (parts.next(), parts.next()) else {
                return Err(bad("a Key Vault key id looks like https://<vault>.vault.azure.net/keys/<name>[/<version>]"));
            };
            let version = parts.next().map(str::to_owned);
            if parts.next().is_some() || host.is_empty() {
                return Err(bad("a Key Vault key id looks like https://<vault>.vault.azure.net/keys/<name>[/<version>]"));
            }
            if !is_valid_key_name(name) {
                return Err(bad("the key name must match [0-9a-zA-Z-]+"));
            }
            if let Some(v) = &version {
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(bad("the key version must be alphanumeric"));
                }
            }
            return Ok(KeyId {
                kind: KeyIdKind::AzureKeyVault {
                    vault: format!("https://{host}"),
                    name: name.to_owned(),
                },
                version,
            });
        }
        Err(bad("unsupported key id: expected file:///<dir>/<name>[/<version>] or https://<vault>/keys/<name>[/<version>]"))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            KeyIdKind::File { dir, name } => write!(f, "file://{}/{name}", dir.display())?,
            KeyIdKind::AzureKeyVault { vault, name } => write!(f, "{vault}/keys/{name}")?,
        }
        if let Some(v) = &self.version {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl fmt::Display for VersionedKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.key.fmt(f)
    }
}

impl FromStr for VersionedKeyId {
    type Err = KmsError;
    fn from_str(s: &str) -> Result<Self, KmsError> {
        let key: KeyId = s.parse()?;
        key.as_versioned()
            .ok_or_else(|| KmsError::misconfigured(s, "a versioned key id is required here"))
    }
}

#[cfg(test)]
// In tests a panic is the failure report.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn file_ids_parse_with_and_without_version() {
        let k: KeyId = "file:///var/lib/valv/keys/kek".parse().unwrap();
        assert_eq!(k.name(), "kek");
        assert_eq!(k.version(), None);
        assert_eq!(k.to_string(), "file:///var/lib/valv/keys/kek");
        let v = "0123456789abcdef0123456789abcdef";
        let k: KeyId = format!("file:///keys/kek/{v}").parse().unwrap();
        assert_eq!(k.version(), Some(v));
        assert_eq!(k.as_versioned().unwrap().version(), v);
    }

    #[test]
    fn malformed_ids_are_misconfigured() {
        for bad in [
            "",
            "file://relative/kek",
            "file:///",
            "file:///k_e_y",
            "ftp://x/keys/a",
            "https://v/keys/",
        ] {
            assert!(
                matches!(bad.parse::<KeyId>(), Err(KmsError::Misconfigured { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn azure_ids_parse() {
        let k: KeyId = "https://myvault.vault.azure.net/keys/kek/78deebed173b48e48f55abf87ed4cf71"
            .parse()
            .unwrap();
        assert_eq!(k.name(), "kek");
        assert_eq!(k.version(), Some("78deebed173b48e48f55abf87ed4cf71"));
        assert_eq!(
            k.to_string(),
            "https://myvault.vault.azure.net/keys/kek/78deebed173b48e48f55abf87ed4cf71"
        );
    }
}
