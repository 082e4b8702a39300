//! Microsoft Entra ID access tokens for Key Vault (audience `https://vault.azure.net`).
//!
//! Three sources, as REFERENCE §5.1 describes them:
//! - **client secret**: `POST {authority}/{tenant}/oauth2/v2.0/token` with
//!   `grant_type=client_credentials`, `client_id`, `client_secret`,
//!   `scope=https://vault.azure.net/.default`;
//! - **workload identity**: the same endpoint with `client_assertion_type=…jwt-bearer`
//!   and `client_assertion` = the contents of the federated token file, read afresh
//!   on every token request (the kubelet rotates it);
//! - **managed identity** (IMDS): `GET {imds}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net[&client_id=…]`
//!   with `Metadata: true`.
//!
//! [`Credential::from_env`] picks workload identity (`AZURE_FEDERATED_TOKEN_FILE` +
//! `AZURE_TENANT_ID` + `AZURE_CLIENT_ID`), then client secret (`AZURE_CLIENT_SECRET` +
//! tenant + client id), then managed identity (optional `AZURE_CLIENT_ID`);
//! `AZURE_AUTHORITY_HOST` overrides the authority.
//!
//! Tokens are cached and refreshed before they expire: when less than
//! min(5 minutes, 10 % of the token's lifetime) remains (see [`needs_refresh`]).
//! Concurrent callers share one refresh (the cache is an async mutex held across the
//! fetch). A vault 401 makes the provider call [`Credential::invalidate`] and fetch a
//! fresh token once.
//!
//! # Error classes of token failures (a decision, documented here)
//! - Entra answers 400/401 with `invalid_client`, `unauthorized_client` or
//!   `invalid_grant` (wrong or expired secret, removed app or federated credential),
//!   or IMDS answers "Identity not found": **Revoked**. The credential was
//!   authoritatively refused; access can come back when an operator fixes the
//!   identity, and the key watcher's probe will then succeed.
//! - Any other 4xx (`invalid_request`, `invalid_scope`, `unsupported_grant_type`, a
//!   missing header), a malformed token response, an unreadable federated token file,
//!   or incomplete environment variables: **Misconfigured**.
//! - 429, 5xx, connection errors and timeouts after the retry policy's attempts,
//!   or a `Retry-After` longer than the policy waits ([`crate::retry`]): **Transient**.
//!
//! Secrets, assertions and tokens are never logged; every `Debug` here redacts them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

use crate::retry::{self, retry_after, transient_status, Attempt, RetryPolicy};
use crate::KmsError;

/// The token audience for Key Vault.
pub const VAULT_RESOURCE: &str = "https://vault.azure.net";
/// The client-credentials scope for Key Vault.
pub const VAULT_SCOPE: &str = "https://vault.azure.net/.default";
/// Default Entra ID authority.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// Default IMDS endpoint.
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An access token. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    secret: Arc<str>,
    expires_at: Instant,
    lifetime: Duration,
}

impl AccessToken {
    /// The bearer value, for the `Authorization` header only.
    pub fn secret(&self) -> &str {
        &self.secret
    }
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("secret", &"[redacted]")
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

/// Whether a token fetched with `lifetime` and expiring at `expires_at` must be
/// refreshed at `now`: less than min(5 min, 10 % of its lifetime) remains.
pub fn needs_refresh(expires_at: Instant, lifetime: Duration, now: Instant) -> bool {
    let margin = Duration::from_secs(300).min(lifetime / 10);
    expires_at.checked_duration_since(now).unwrap_or_default() <= margin
}

/// A string that must never be printed.
#[derive(Clone)]
struct Hidden(String);

impl std::fmt::Debug for Hidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where tokens come from.
#[derive(Clone, Debug)]
enum Source {
    ClientSecret {
        tenant: String,
        client_id: String,
        secret: Hidden,
    },
    WorkloadIdentity {
        tenant: String,
        client_id: String,
        token_file: PathBuf,
    },
    ManagedIdentity {
        client_id: Option<String>,
    },
}

/// A token source with its cache. Cheap to share behind an `Arc`.
pub struct Credential {
    source: Source,
    authority: String,
    imds_endpoint: String,
    timeout: Duration,
    retry: RetryPolicy,
    http: reqwest::Client,
    cache: Mutex<Option<AccessToken>>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("source", &self.source)
            .field("authority", &self.authority)
            .field("imds_endpoint", &self.imds_endpoint)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Credential {
    fn new(source: Source) -> Credential {
        Credential {
            source,
            authority: DEFAULT_AUTHORITY.to_owned(),
            imds_endpoint: DEFAULT_IMDS_ENDPOINT.to_owned(),
            timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            http: {
                crate::install_tls_provider();
                reqwest::Client::new()
            },
            cache: Mutex::new(None),
        }
    }

    /// A service principal with a client secret.
    pub fn client_secret(
        tenant: impl Into<String>,
        client_id: impl Into<String>,
        secret: impl Into<String>,
    ) -> Credential {
        Credential::new(Source::ClientSecret {
            tenant: tenant.into(),
            client_id: client_id.into(),
            secret: Hidden(secret.into()),
        })
    }

    /// Workload identity: a federated token in `token_file`, read on every request.
    pub fn workload_identity(
        tenant: impl Into<String>,
        client_id: impl Into<String>,
        token_file: impl Into<PathBuf>,
    ) -> Credential {
        Credential::new(Source::WorkloadIdentity {
            tenant: tenant.into(),
            client_id: client_id.into(),
            token_file: token_file.into(),
        })
    }

    /// A managed identity through IMDS: system-assigned with `None`, else the
    /// user-assigned identity with that client id.
    pub fn managed_identity(client_id: Option<String>) -> Credential {
        Credential::new(Source::ManagedIdentity { client_id })
    }

    /// From the process environment; see [`Credential::from_lookup`].
    pub fn from_env() -> Result<Credential, KmsError> {
        Credential::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Picks workload identity, then client secret, then managed identity from the
    /// variables `lookup` returns (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
    /// `AZURE_CLIENT_SECRET`, `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_AUTHORITY_HOST`).
    ///
    /// Fails with `Misconfigured` when a token file or secret is set without the
    /// tenant and client id it needs, or `AZURE_AUTHORITY_HOST` is plain `http://` to a
    /// host that is not loopback (it would carry client secrets in clear).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Credential, KmsError> {
        let tenant = lookup("AZURE_TENANT_ID");
        let client_id = lookup("AZURE_CLIENT_ID");
        let need = |what: &str| {
            KmsError::misconfigured(
                "azure credential",
                format!("{what} is set but AZURE_TENANT_ID and AZURE_CLIENT_ID are both required with it"),
            )
        };
        let cred = if let Some(file) = lookup("AZURE_FEDERATED_TOKEN_FILE") {
            match (tenant, client_id) {
                (Some(t), Some(c)) => Credential::workload_identity(t, c, file),
                _ => return Err(need("AZURE_FEDERATED_TOKEN_FILE")),
            }
        } else if let Some(secret) = lookup("AZURE_CLIENT_SECRET") {
            match (tenant, client_id) {
                (Some(t), Some(c)) => Credential::client_secret(t, c, secret),
                _ => return Err(need("AZURE_CLIENT_SECRET")),
            }
        } else {
            Credential::managed_identity(client_id)
        };
        Ok(match lookup("AZURE_AUTHORITY_HOST") {
            Some(a) => {
                super::config::check_endpoint(&a).map_err(|why| {
                    KmsError::misconfigured(
                        "azure credential",
                        format!("AZURE_AUTHORITY_HOST {a:?}: {why}"),
                    )
                })?;
                cred.with_authority(a)
            }
            None => cred,
        })
    }

    /// The Entra ID authority (default `https://login.microsoftonline.com`).
    pub fn with_authority(mut self, authority: impl Into<String>) -> Credential {
        self.authority = authority.into().trim_end_matches('/').to_owned();
        self
    }

    /// The IMDS endpoint (default `http://169.254.169.254`).
    pub fn with_imds_endpoint(mut self, endpoint: impl Into<String>) -> Credential {
        self.imds_endpoint = endpoint.into().trim_end_matches('/').to_owned();
        self
    }

    /// The HTTP client token requests use (default: built-in roots only).
    pub fn with_http_client(mut self, http: reqwest::Client) -> Credential {
        self.http = http;
        self
    }

    /// Timeout of one token request (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Credential {
        self.timeout = timeout;
        self
    }

    /// Retries of token requests on 429/5xx/connection errors.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Credential {
        self.retry = retry;
        self
    }

    /// Which flow this is: "client secret", "workload identity" or "managed identity".
    pub fn kind(&self) -> &'static str {
        match self.source {
            Source::ClientSecret { .. } => "client secret",
            Source::WorkloadIdentity { .. } => "workload identity",
            Source::ManagedIdentity { .. } => "managed identity",
        }
    }

    /// A valid token, from the cache or freshly fetched.
    pub async fn token(&self) -> Result<AccessToken, KmsError> {
        let mut cache = self.cache.lock().await;
        if let Some(t) = cache.as_ref() {
            if !needs_refresh(t.expires_at, t.lifetime, Instant::now()) {
                return Ok(t.clone());
            }
        }
        let fresh = self.fetch().await?;
        *cache = Some(fresh.clone());
        Ok(fresh)
    }

    /// Drops `stale` from the cache (the vault refused it), unless another caller
    /// already replaced it.
    pub async fn invalidate(&self, stale: &AccessToken) {
        let mut cache = self.cache.lock().await;
        if cache.as_ref().is_some_and(|t| t.secret == stale.secret) {
            *cache = None;
        }
    }

    fn who(&self) -> String {
        match &self.source {
            Source::ClientSecret {
                tenant, client_id, ..
            } => format!("client secret credential of client {client_id} in tenant {tenant}"),
            Source::WorkloadIdentity {
                tenant, client_id, ..
            } => format!("workload identity of client {client_id} in tenant {tenant}"),
            Source::ManagedIdentity { client_id: Some(c) } => {
                format!("managed identity with client id {c}")
            }
            Source::ManagedIdentity { client_id: None } => {
                "system-assigned managed identity".to_owned()
            }
        }
    }

    /// One token request, retried as [`crate::retry`] describes.
    async fn fetch(&self) -> Result<AccessToken, KmsError> {
        let who = self.who();
        match retry::run(&self.retry, &who, |_| self.fetch_once(&who)).await {
            Ok(result) => result,
            Err(gave_up) => Err(KmsError::transient(
                &who,
                format!("cannot get a token: {gave_up}"),
            )),
        }
    }

    async fn fetch_once(&self, who: &str) -> Attempt<Result<AccessToken, KmsError>> {
        let started = Instant::now();
        let request = match self.build_request() {
            Ok(r) => r,
            Err(e) => return Attempt::Done(Err(e)),
        };
        let resp = match request.timeout(self.timeout).send().await {
            Ok(resp) => resp,
            Err(e) => {
                return Attempt::Transient {
                    why: retry::describe_transport_error(&e),
                    retry_after: None,
                }
            }
        };
        let status = resp.status();
        if status.is_success() {
            let token = match resp.json::<TokenResponse>().await {
                Ok(body) => body.into_token(started, who),
                Err(e) => Err(KmsError::misconfigured(
                    who,
                    format!("the token endpoint answered with a malformed token: {e}"),
                )),
            };
            return Attempt::Done(token);
        }
        let wait = retry_after(resp.headers());
        let text = resp.text().await.unwrap_or_default();
        if transient_status(status.as_u16()) {
            return Attempt::Transient {
                why: format!("token endpoint answered {status}"),
                retry_after: wait,
            };
        }
        Attempt::Done(Err(classify_token_refusal(who, status.as_u16(), &text)))
    }

    fn build_request(&self) -> Result<reqwest::RequestBuilder, KmsError> {
        Ok(match &self.source {
            Source::ClientSecret {
                tenant,
                client_id,
                secret,
            } => self.http.post(self.token_url(tenant)).form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", &secret.0),
                ("scope", VAULT_SCOPE),
            ]),
            Source::WorkloadIdentity {
                tenant,
                client_id,
                token_file,
            } => {
                let assertion = std::fs::read_to_string(token_file).map_err(|e| {
                    KmsError::misconfigured(
                        self.who(),
                        format!(
                            "cannot read the federated token file {}: {e}",
                            token_file.display()
                        ),
                    )
                })?;
                self.http.post(self.token_url(tenant)).form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id),
                    ("client_assertion_type", JWT_BEARER),
                    ("client_assertion", assertion.trim()),
                    ("scope", VAULT_SCOPE),
                ])
            }
            Source::ManagedIdentity { client_id } => {
                let mut query = vec![("api-version", "2018-02-01"), ("resource", VAULT_RESOURCE)];
                if let Some(c) = client_id {
                    query.push(("client_id", c));
                }
                self.http
                    .get(format!(
                        "{}/metadata/identity/oauth2/token",
                        self.imds_endpoint
                    ))
                    .query(&query)
                    .header("Metadata", "true")
            }
        })
    }

    fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.authority)
    }
}

fn classify_token_refusal(who: &str, status: u16, body: &str) -> KmsError {
    #[derive(Deserialize)]
    struct AadError {
        #[serde(default)]
        error: String,
        #[serde(default)]
        error_description: String,
    }
    let parsed: Option<AadError> = serde_json::from_str(body).ok();
    let (code, desc) = parsed
        .map(|e| (e.error, e.error_description))
        .unwrap_or_default();
    // Descriptions from Entra never echo secrets; keep them short anyway.
    let desc: String = desc.chars().take(300).collect();
    let reason = format!("the token endpoint refused the credential ({status} {code}: {desc})");
    let refused = matches!(
        code.as_str(),
        "invalid_client" | "unauthorized_client" | "invalid_grant"
    ) || desc.contains("Identity not found");
    if refused {
        KmsError::revoked(who, reason)
    } else {
        KmsError::misconfigured(who, reason)
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    /// Entra sends a number, IMDS a string.
    expires_in: Option<serde_json::Value>,
}

impl TokenResponse {
    fn into_token(self, requested: Instant, who: &str) -> Result<AccessToken, KmsError> {
        let bad = |why: &str| {
            KmsError::misconfigured(who, format!("the token endpoint answered without {why}"))
        };
        let secret = self
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("an access_token"))?;
        let secs = match self.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            _ => None,
        }
        .ok_or_else(|| bad("a valid expires_in"))?;
        let lifetime = Duration::from_secs(secs);
        Ok(AccessToken {
            secret: secret.into(),
            expires_at: requested + lifetime,
            lifetime,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn refresh_margin_is_five_minutes_or_ten_percent() {
        let now = Instant::now();
        let hour = Duration::from_secs(3600);
        assert!(!needs_refresh(now + Duration::from_secs(301), hour, now));
        assert!(needs_refresh(now + Duration::from_secs(300), hour, now));
        let minute = Duration::from_secs(60);
        assert!(!needs_refresh(now + Duration::from_secs(7), minute, now));
        assert!(needs_refresh(now + Duration::from_secs(6), minute, now));
        assert!(needs_refresh(now, minute, now + Duration::from_secs(1)));
    }

    #[test]
    fn plain_http_authority_is_refused_off_loopback() {
        let with_authority =
            |a: &'static str| move |k: &str| (k == "AZURE_AUTHORITY_HOST").then(|| a.to_owned());
        let e = Credential::from_lookup(with_authority("http://login.example")).unwrap_err();
        assert!(matches!(e, KmsError::Misconfigured { .. }), "{e}");
        assert!(e.to_string().contains("AZURE_AUTHORITY_HOST"), "{e}");
        for ok in ["http://127.0.0.1:8443", "https://login.example"] {
            assert!(Credential::from_lookup(with_authority(ok)).is_ok(), "{ok}");
        }
    }

    #[test]
    fn env_picks_workload_then_secret_then_managed() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let all = env(&[
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "very-secret"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
            ("AZURE_AUTHORITY_HOST", "https://login.example/"),
        ]);
        let c = Credential::from_lookup(all).unwrap();
        assert_eq!(c.kind(), "workload identity");
        assert_eq!(c.authority, "https://login.example");
        let c = Credential::from_lookup(env(&[
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "very-secret"),
        ]))
        .unwrap();
        assert_eq!(c.kind(), "client secret");
        assert_eq!(c.authority, DEFAULT_AUTHORITY);
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("very-secret"), "{dbg}");
        assert!(dbg.contains("[redacted]"), "{dbg}");
        let c = Credential::from_lookup(env(&[("AZURE_CLIENT_ID", "c")])).unwrap();
        assert_eq!(c.kind(), "managed identity");
        assert!(
            matches!(c.source, Source::ManagedIdentity { client_id: Some(ref id) } if id == "c")
        );
        let c = Credential::from_lookup(env(&[])).unwrap();
        assert!(matches!(
            c.source,
            Source::ManagedIdentity { client_id: None }
        ));
        assert!(matches!(
            Credential::from_lookup(env(&[("AZURE_CLIENT_SECRET", "s")])),
            Err(KmsError::Misconfigured { .. })
        ));
    }

    #[test]
    fn token_debug_is_redacted() {
        let t = AccessToken {
            secret: "eyJ-secret-token".into(),
            expires_at: Instant::now(),
            lifetime: Duration::from_secs(1),
        };
        assert!(!format!("{t:?}").contains("eyJ"));
    }
}
