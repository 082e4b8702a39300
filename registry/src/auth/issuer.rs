//! The built-in token issuer behind `/auth/token`: ES256 JWTs of the distribution token
//! spec for the htpasswd users, granting what the policy allows them of what they
//! asked for. Its key signs with *ring*; the verifier trusts its public half
//! automatically (`TrustedKey::local`).
//!
//! The signing key is a PKCS#8 PEM of an EC P-256 key: the configured file, or one
//! generated on first start under `<data_dir>/auth/token-signing-key.pem` (created
//! with mode 0600, never overwritten). Every node of a cluster needs the same key, so
//! a shared configuration names the file.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::Serialize;

use super::keys::{pem_blocks, PublicKey, TrustedKey};
use super::token::AccessEntry;
use crate::config::auth::IssuerConfig;

/// The generated key's file name under `<data_dir>/auth/`.
pub const GENERATED_KEY_FILE: &str = "token-signing-key.pem";

pub struct Issuer {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
    public: PublicKey,
    kid: String,
    issuer: String,
    service: String,
    lifetime: u64,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

/// A minted token and what the endpoint answers about it.
#[derive(Debug, Serialize)]
pub struct Issued {
    pub token: String,
    pub access_token: String,
    pub expires_in: u64,
    pub issued_at: String,
}

#[derive(Serialize)]
struct Header<'a> {
    typ: &'static str,
    alg: &'static str,
    kid: &'a str,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    access: &'a [AccessEntry],
}

fn read_key(path: &Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let blocks = pem_blocks(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    blocks
        .into_iter()
        .find(|(label, _)| label == "PRIVATE KEY")
        .map(|(_, der)| der)
        .ok_or_else(|| {
            format!(
                "{}: no PKCS#8 PRIVATE KEY block (make one with: openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256)",
                path.display()
            )
        })
}

/// Writes a fresh key to `path` (create-only, mode 0600).
fn generate(path: &Path, rng: &SystemRandom) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, rng)
        .map_err(|_| "cannot generate the token signing key".to_string())?;
    let b64 = STANDARD.encode(pkcs8.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(pem.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(pkcs8.as_ref().to_vec())
}

impl Issuer {
    /// Loads the configured signing key, or the generated one under `data_dir/auth`
    /// (generating it on first start). Fails with a message naming the file.
    pub fn open(config: &IssuerConfig, data_dir: &Path, service: &str) -> Result<Issuer, String> {
        let rng = SystemRandom::new();
        let der = match &config.signing_key {
            Some(path) => read_key(path)?,
            None => {
                let path: PathBuf = data_dir.join("auth").join(GENERATED_KEY_FILE);
                if path.exists() {
                    read_key(&path)?
                } else {
                    tracing::info!(path = %path.display(), "generated the token signing key");
                    generate(&path, &rng)?
                }
            }
        };
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng).map_err(
            |_| "auth.issuer.signing_key: not a PKCS#8 EC P-256 private key".to_string(),
        )?;
        let public = PublicKey::P256(pair.public_key().as_ref().to_vec());
        let kid = public.libtrust_kid();
        Ok(Issuer {
            pair,
            rng,
            public,
            kid,
            issuer: config.issuer.clone(),
            service: service.to_owned(),
            lifetime: config.lifetime_secs,
        })
    }

    /// Its public key, for the verifier.
    pub fn trusted_key(&self) -> TrustedKey {
        TrustedKey {
            kids: vec![self.kid.clone()],
            issuer: self.issuer.clone(),
            key: self.public.clone(),
            local: true,
        }
    }

    /// Mints a token for `subject` (empty: anonymous) granting `access`, valid from
    /// `now` for the configured lifetime.
    pub fn mint(&self, subject: &str, access: &[AccessEntry], now: u64) -> Result<Issued, String> {
        let mut jti = [0u8; 16];
        self.rng
            .fill(&mut jti)
            .map_err(|_| "cannot draw random bytes".to_string())?;
        let header = serde_json::to_vec(&Header {
            typ: "JWT",
            alg: "ES256",
            kid: &self.kid,
        })
        .map_err(|e| e.to_string())?;
        let claims = serde_json::to_vec(&Claims {
            iss: &self.issuer,
            sub: subject,
            aud: &self.service,
            exp: now + self.lifetime,
            nbf: now,
            iat: now,
            jti: URL_SAFE_NO_PAD.encode(jti),
            access,
        })
        .map_err(|e| e.to_string())?;
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let sig = self
            .pair
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| "signing failed".to_string())?;
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
        let issued_at = chrono::DateTime::<chrono::Utc>::from_timestamp(now as i64, 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        Ok(Issued {
            access_token: token.clone(),
            token,
            expires_in: self.lifetime,
            issued_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token::Verifier;

    #[test]
    fn generated_once_and_verified_by_its_own_verifier() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = IssuerConfig::default();
        let a = Issuer::open(&config, dir.path(), "svc").expect("generate");
        let path = dir.path().join("auth").join(GENERATED_KEY_FILE);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = Issuer::open(&config, dir.path(), "svc").expect("load");
        assert_eq!(a.kid, b.kid, "the second start reuses the key");
        let access = vec![AccessEntry {
            kind: "repository".into(),
            name: "a/b".into(),
            actions: vec!["pull".into()],
        }];
        let now = crate::auth::token::now_secs();
        let issued = a.mint("alice", &access, now).expect("mint");
        assert_eq!(issued.token, issued.access_token);
        let v = Verifier::new(vec![b.trusted_key()], "svc".into(), 0);
        let ok = v.verify(&issued.token).expect("verifies");
        assert!(ok.local);
        assert_eq!(ok.subject.as_deref(), Some("alice"));
        let other = Verifier::new(vec![b.trusted_key()], "other-svc".into(), 0);
        assert!(other.verify(&issued.token).is_err(), "aud is the service");
    }

    #[test]
    fn a_bad_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.pem");
        std::fs::write(
            &path,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");
        let config = IssuerConfig {
            signing_key: Some(path),
            ..IssuerConfig::default()
        };
        let e = Issuer::open(&config, dir.path(), "svc").expect_err("bad key");
        assert!(e.contains("PKCS#8"), "{e}");
    }
}
