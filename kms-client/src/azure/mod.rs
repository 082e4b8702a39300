//! The Azure Key Vault provider: `https://<vault>.vault.azure.net/keys/<name>[/<version>]`.
//!
//! REST calls (REFERENCE §5.1), all with `?api-version=` ([`AzureConfig::api_version`]):
//! `GET /keys/{name}/{version}`, `GET /keys/{name}/versions` (following `nextLink`),
//! `POST /keys/{name}/{version}/wrapkey` and `/unwrapkey` with `RSA-OAEP-256`.
//!
//! # What each operation costs (vault calls; token requests not counted)
//! - `describe(v)`: 1 GET. When Key Vault refuses GET because the version is disabled
//!   (403 `KeyDisabled`), `describe` lists the key's versions (1 list call per page)
//!   to read the version's attributes and reports `enabled: false`; the key type and
//!   size then come from this provider's memory of an earlier GET of that version
//!   (a version's key material never changes). Without such a memory the disabled
//!   version is reported as `Revoked`, since Key Vault will not reveal it.
//! - `latest_version(pinned)`: 1 GET; the version must be usable, else `Revoked`.
//! - `latest_version(versionless)`: 1 list call per page (needs the `keys/list`
//!   permission), then 1 GET of the chosen version to check its key type. The chosen
//!   version is the enabled one, inside its `nbf`/`exp` window, with the greatest
//!   `created`; versions created in the same second are ordered as the vault lists
//!   them (later in the list = newer).
//! - `wrap(v)`: 1 GET + 1 wrapKey. `unwrap(v)`: 1 GET + 1 unwrapKey.
//!
//! # Attribute checks: per call, no attribute cache (a decision)
//! Key Vault still performs unwrapKey after `exp` and wrapKey on a disabled key, so
//! the provider itself refuses a disabled, expired or not-yet-valid version as
//! `Revoked`. It reads the attributes with a GET **on every wrap and unwrap**, not
//! from a cache: wraps and unwraps are rare in valv (registry keys are unwrapped once
//! and then held; the watcher probes every check interval), and a revocation then
//! takes effect on the very next call. Only `kty` and modulus size are remembered.
//!
//! # Error classes (DESIGN §6)
//! - 401 after one retry with a freshly fetched token, 403 (`Forbidden`,
//!   `ForbiddenByPolicy`, `KeyDisabled`, …), 404 (`KeyNotFound`), a disabled,
//!   expired or not-yet-valid version: `Revoked`.
//! - 400 from unwrapKey (`BadParameter`, "Decryption failed"): `InvalidCiphertext`.
//!   The key type and algorithm are checked before, so a 400 there is about the bytes.
//! - Any other 400/4xx, a key that is not RSA/RSA-HSM of 2048/3072/4096 bits, a key
//!   whose `key_ops` exclude wrapKey/unwrapKey, a malformed vault answer, a `nextLink`
//!   to another host: `Misconfigured`.
//! - 429 (honouring `Retry-After` up to [`RetryPolicy::max_retry_after`]), 5xx,
//!   connection errors and timeouts are retried with exponential backoff and jitter
//!   up to [`RetryPolicy::max_attempts`] attempts in all, then `Transient`.
//! - Token failures: see [`credential`].
//!
//! Every `Kek` operation emits one `tracing` event with target `valv::kms::audit`:
//! `operation`, `key_id` (versioned when known), `outcome` and `latency_ms`, never key
//! material or tokens.

pub mod credential;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    Kek, KeyDescription, KeyId, KeyIdKind, KmsError, SecretBytes, VersionedKeyId, ALG_RSA_OAEP_256,
};
pub use credential::Credential;

/// Retry policy for vault and token calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (default 4). At least 1 is used.
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubled each time (default 200 ms).
    pub base_delay: Duration,
    /// Cap of one backoff delay (default 5 s).
    pub max_delay: Duration,
    /// A longer `Retry-After` is not waited for: the call fails `Transient` at once
    /// (default 30 s).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

/// Settings of the Key Vault provider.
#[derive(Debug, Clone)]
pub struct AzureConfig {
    /// `api-version` query parameter (default "7.4").
    pub api_version: String,
    /// Vault URL as in the key id (`https://myvault.vault.azure.net`) → the base URL
    /// actually used (e.g. `http://127.0.0.1:PORT` for a fake). Empty by default.
    pub endpoint_overrides: HashMap<String, String>,
    /// Timeout of one HTTP request (default 10 s).
    pub request_timeout: Duration,
    /// `maxresults` of version listing, 1..=25 (default 25).
    pub list_page_size: u32,
    pub retry: RetryPolicy,
}

impl Default for AzureConfig {
    fn default() -> Self {
        AzureConfig {
            api_version: "7.4".to_owned(),
            endpoint_overrides: HashMap::new(),
            request_timeout: Duration::from_secs(10),
            list_page_size: 25,
            retry: RetryPolicy::default(),
        }
    }
}

impl AzureConfig {
    /// Sends requests for key ids under `vault` (`https://<host>`) to `base_url`.
    pub fn with_endpoint(mut self, vault: impl Into<String>, base_url: impl Into<String>) -> Self {
        self.endpoint_overrides.insert(
            vault.into().trim_end_matches('/').to_owned(),
            base_url.into().trim_end_matches('/').to_owned(),
        );
        self
    }
}

/// The Key Vault KEK provider.
#[derive(Debug)]
pub struct AzureKek {
    config: AzureConfig,
    credential: Arc<Credential>,
    http: reqwest::Client,
    /// kty and modulus size per versioned id (immutable facts about a version).
    shapes: Mutex<HashMap<String, (String, u32)>>,
}

/// What went wrong with one vault call, before the operation gives it a class.
#[derive(Debug)]
enum Failure {
    /// The vault answered with a non-retryable error status.
    Status {
        status: u16,
        code: String,
        inner: Option<String>,
        message: String,
    },
    /// Already classified (token failure, retries exhausted, malformed answer).
    Kms(KmsError),
}

impl Failure {
    fn describe(&self) -> String {
        match self {
            Failure::Status {
                status,
                code,
                inner,
                message,
            } => {
                let inner = inner
                    .as_deref()
                    .map(|i| format!("/{i}"))
                    .unwrap_or_default();
                format!("Key Vault answered {status} {code}{inner}: {message}")
            }
            Failure::Kms(e) => e.to_string(),
        }
    }
}

impl AzureKek {
    /// A provider using `credential` for every vault.
    pub fn new(config: AzureConfig, credential: Credential) -> AzureKek {
        AzureKek::with_shared_credential(config, Arc::new(credential))
    }

    pub fn with_shared_credential(config: AzureConfig, credential: Arc<Credential>) -> AzureKek {
        AzureKek {
            config,
            credential,
            http: reqwest::Client::new(),
            shapes: Mutex::new(HashMap::new()),
        }
    }

    pub fn credential(&self) -> &Arc<Credential> {
        &self.credential
    }

    fn parts<'a>(&self, key: &'a KeyId) -> Result<(String, &'a str), KmsError> {
        match key.kind() {
            KeyIdKind::AzureKeyVault { vault, name } => {
                let base = self
                    .config
                    .endpoint_overrides
                    .get(vault.as_str())
                    .cloned()
                    .unwrap_or_else(|| vault.clone());
                Ok((base, name))
            }
            _ => Err(KmsError::misconfigured(
                key,
                "the Key Vault provider only serves https://<vault>/keys/<name>[/<version>] ids",
            )),
        }
    }

    fn version_url(&self, id: &VersionedKeyId, suffix: &str) -> Result<String, KmsError> {
        let (base, name) = self.parts(id.key())?;
        Ok(format!(
            "{base}/keys/{name}/{}{suffix}?api-version={}",
            id.version(),
            self.config.api_version
        ))
    }

    /// One vault call with token handling and retries.
    async fn call(
        &self,
        subject: &str,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let max = self.config.retry.max_attempts.max(1);
        let mut attempt = 0u32;
        let mut refreshed = false;
        loop {
            attempt += 1;
            let token = self
                .credential
                .token()
                .await
                .map_err(|e| Failure::Kms(rename_subject(e, subject)))?;
            let mut req = self
                .http
                .request(method.clone(), url)
                .bearer_auth(token.secret())
                .timeout(self.config.request_timeout);
            if let Some(b) = body {
                req = req.json(b);
            }
            let (why, wait) = match req.send().await {
                Err(e) => (credential::describe_reqwest_error(&e), None),
                Ok(resp) => {
                    let status = resp.status();
                    let wait = retry_after(resp.headers());
                    if status.is_success() {
                        return resp.json::<Value>().await.map_err(|e| {
                            Failure::Kms(KmsError::misconfigured(
                                subject,
                                format!("Key Vault answered {status} with a malformed body: {e}"),
                            ))
                        });
                    }
                    let text = resp.text().await.unwrap_or_default();
                    let failure = status_failure(status.as_u16(), &text);
                    if status.as_u16() == 401 && !refreshed {
                        // One retry with a fresh token; it does not use up an attempt.
                        refreshed = true;
                        attempt -= 1;
                        self.credential.invalidate(&token).await;
                        continue;
                    }
                    if status.as_u16() != 429 && !status.is_server_error() {
                        return Err(failure);
                    }
                    (failure.describe(), wait)
                }
            };
            if attempt >= max {
                return Err(Failure::Kms(KmsError::transient(
                    subject,
                    format!("gave up after {attempt} attempt(s): {why}"),
                )));
            }
            let delay = match wait {
                Some(w) if w > self.config.retry.max_retry_after => {
                    return Err(Failure::Kms(KmsError::transient(
                        subject,
                        format!(
                            "throttled with Retry-After of {} s, longer than the {} s this provider waits: {why}",
                            w.as_secs(),
                            self.config.retry.max_retry_after.as_secs()
                        ),
                    )))
                }
                Some(w) => w,
                None => backoff_delay(&self.config.retry, attempt),
            };
            tracing::debug!(target: "valv::kms", key_id = %subject, attempt, delay_ms = delay.as_millis() as u64, reason = %why, "retrying Key Vault call");
            tokio::time::sleep(delay).await;
        }
    }

    /// GET one version and check it is a supported RSA key.
    async fn get_version(&self, id: &VersionedKeyId) -> Result<KeyDescription, Failure> {
        let url = self.version_url(id, "").map_err(Failure::Kms)?;
        let bundle = self
            .call(&id.to_string(), reqwest::Method::GET, &url, None)
            .await?;
        let d = parse_bundle(id, &bundle).map_err(Failure::Kms)?;
        if let Ok(mut shapes) = self.shapes.lock() {
            shapes.insert(id.to_string(), (d.key_type.clone(), d.key_size_bits));
        }
        Ok(d)
    }

    async fn describe_inner(&self, id: &VersionedKeyId) -> Result<KeyDescription, KmsError> {
        match self.get_version(id).await {
            Ok(d) => Ok(d),
            Err(f) if is_key_disabled(&f) => self.describe_disabled(id, &f).await,
            Err(f) => Err(classify(id, "get", f)),
        }
    }

    /// Key Vault refuses GET on a disabled version: read its attributes from the
    /// version list and its shape from memory.
    async fn describe_disabled(
        &self,
        id: &VersionedKeyId,
        failure: &Failure,
    ) -> Result<KeyDescription, KmsError> {
        let revoked = |extra: &str| {
            KmsError::revoked(
                id,
                format!("the version is disabled ({}){extra}", failure.describe()),
            )
        };
        let shape = self
            .shapes
            .lock()
            .ok()
            .and_then(|s| s.get(&id.to_string()).cloned());
        let Some((key_type, key_size_bits)) = shape else {
            return Err(revoked(
                "; its key type is unknown to this process, so it cannot be described",
            ));
        };
        let items = self
            .list_versions(&id.versionless())
            .await
            .map_err(|_| revoked("; listing the versions to read its attributes failed"))?;
        let Some(item) = items.into_iter().find(|i| i.id == *id) else {
            return Err(revoked("; it is not in the version list"));
        };
        Ok(KeyDescription {
            id: id.clone(),
            key_type,
            key_size_bits,
            enabled: item.enabled,
            created: item.created,
            expires: item.expires,
            not_before: item.not_before,
        })
    }

    async fn list_versions(&self, key: &KeyId) -> Result<Vec<ListedVersion>, KmsError> {
        let (base, name) = self.parts(key)?;
        let vault = match key.kind() {
            KeyIdKind::AzureKeyVault { vault, .. } => vault.clone(),
            _ => base.clone(),
        };
        let mut url = Some(format!(
            "{base}/keys/{name}/versions?api-version={}&maxresults={}",
            self.config.api_version,
            self.config.list_page_size.clamp(1, 25)
        ));
        let mut out = Vec::new();
        let mut pages = 0u32;
        while let Some(u) = url.take() {
            pages += 1;
            if pages > 1000 {
                return Err(KmsError::misconfigured(
                    key,
                    "the version list has more than 1000 pages",
                ));
            }
            let page = self
                .call(&key.to_string(), reqwest::Method::GET, &u, None)
                .await
                .map_err(|f| classify(key, "list versions", f))?;
            let page: ListPage = serde_json::from_value(page).map_err(|e| {
                KmsError::misconfigured(key, format!("malformed version list from Key Vault: {e}"))
            })?;
            for item in page.value {
                out.push(item.into_listed(key)?);
            }
            if let Some(next) = page.next_link.filter(|n| !n.is_empty()) {
                // Follow the link as given, but only to this vault: the bearer token
                // must not go anywhere else.
                let next = if let Some(rest) = next.strip_prefix(&vault) {
                    format!("{base}{rest}")
                } else if next.starts_with(&format!("{base}/")) {
                    next
                } else {
                    return Err(KmsError::misconfigured(
                        key,
                        "Key Vault's nextLink points to another host; refusing to follow it",
                    ));
                };
                url = Some(next);
            }
        }
        Ok(out)
    }

    async fn latest_inner(&self, id: &KeyId) -> Result<VersionedKeyId, KmsError> {
        if let Some(v) = id.as_versioned() {
            let d = self.describe_inner(&v).await?;
            ensure_usable(&d)?;
            return Ok(v);
        }
        let items = self.list_versions(id).await?;
        let now = Utc::now();
        let newest = items
            .iter()
            .enumerate()
            .filter(|(_, i)| i.usable_at(now))
            .max_by_key(|(at, i)| (i.created, *at))
            .map(|(_, i)| i.id.clone());
        let Some(v) = newest else {
            return Err(KmsError::revoked(
                id,
                format!(
                    "no enabled, unexpired, valid version among {} listed",
                    items.len()
                ),
            ));
        };
        let d = self.describe_inner(&v).await?;
        ensure_usable(&d)?;
        Ok(v)
    }

    /// GET the version and refuse it unless usable now.
    async fn usable_version(&self, id: &VersionedKeyId) -> Result<KeyDescription, KmsError> {
        let d = self
            .get_version(id)
            .await
            .map_err(|f| classify(id, "get", f))?;
        ensure_usable(&d)?;
        Ok(d)
    }

    async fn crypto(
        &self,
        id: &VersionedKeyId,
        op: &str,
        value: &[u8],
    ) -> Result<Vec<u8>, KmsError> {
        let url = self.version_url(id, &format!("/{}", op.to_ascii_lowercase()))?;
        let body = json!({"alg": ALG_RSA_OAEP_256, "value": b64(value)});
        let resp = self
            .call(&id.to_string(), reqwest::Method::POST, &url, Some(&body))
            .await
            .map_err(|f| classify(id, op, f))?;
        let malformed =
            |why: &str| KmsError::misconfigured(id, format!("malformed {op} answer: {why}"));
        if let Some(kid) = resp.get("kid").and_then(Value::as_str) {
            if !kid.ends_with(&format!("/{}", id.version())) {
                return Err(malformed("it names another key version"));
            }
        }
        resp.get("value")
            .and_then(Value::as_str)
            .and_then(b64_decode)
            .ok_or_else(|| malformed("no base64url value"))
    }
}

#[async_trait]
impl Kek for AzureKek {
    async fn describe(&self, id: &VersionedKeyId) -> Result<KeyDescription, KmsError> {
        let started = Instant::now();
        let r = self.describe_inner(id).await;
        audit("describe", &id.to_string(), &r, started);
        r
    }

    async fn latest_version(&self, id: &KeyId) -> Result<VersionedKeyId, KmsError> {
        let started = Instant::now();
        let r = self.latest_inner(id).await;
        let key = match &r {
            Ok(v) => v.to_string(),
            Err(_) => id.to_string(),
        };
        audit("latest_version", &key, &r, started);
        r
    }

    async fn wrap(&self, id: &VersionedKeyId, plaintext: &[u8]) -> Result<Vec<u8>, KmsError> {
        let started = Instant::now();
        let r = async {
            self.usable_version(id).await?;
            self.crypto(id, "wrapKey", plaintext).await
        }
        .await;
        audit("wrap", &id.to_string(), &r, started);
        r
    }

    async fn unwrap(&self, id: &VersionedKeyId, wrapped: &[u8]) -> Result<SecretBytes, KmsError> {
        let started = Instant::now();
        let r = async {
            self.usable_version(id).await?;
            self.crypto(id, "unwrapKey", wrapped)
                .await
                .map(SecretBytes::new)
        }
        .await;
        audit("unwrap", &id.to_string(), &r, started);
        r
    }
}

fn audit<T>(operation: &str, key_id: &str, r: &Result<T, KmsError>, started: Instant) {
    let outcome = match r {
        Ok(_) => "ok",
        Err(KmsError::Revoked { .. }) => "revoked",
        Err(KmsError::Transient { .. }) => "transient",
        Err(KmsError::Misconfigured { .. }) => "misconfigured",
        Err(KmsError::InvalidCiphertext { .. }) => "invalid_ciphertext",
    };
    let latency_ms = started.elapsed().as_millis() as u64;
    match r {
        Ok(_) => {
            tracing::info!(target: "valv::kms::audit", provider = "azure", operation, key_id, outcome, latency_ms, "key vault operation")
        }
        Err(e) => {
            tracing::warn!(target: "valv::kms::audit", provider = "azure", operation, key_id, outcome, latency_ms, error = %e, "key vault operation")
        }
    }
}

fn ensure_usable(d: &KeyDescription) -> Result<(), KmsError> {
    let now = Utc::now();
    if !d.enabled {
        return Err(KmsError::revoked(&d.id, "the version is disabled"));
    }
    if let Some(exp) = d.expires.filter(|exp| now >= *exp) {
        return Err(KmsError::revoked(
            &d.id,
            format!("the version expired at {}", exp.to_rfc3339()),
        ));
    }
    if let Some(nbf) = d.not_before.filter(|nbf| now < *nbf) {
        return Err(KmsError::revoked(
            &d.id,
            format!("the version is not valid before {}", nbf.to_rfc3339()),
        ));
    }
    Ok(())
}

/// Replaces a token error's subject (the credential) with the key it was for,
/// keeping the credential in the reason.
fn rename_subject(e: KmsError, key: &str) -> KmsError {
    match e {
        KmsError::Revoked { key: who, reason } => {
            KmsError::revoked(key, format!("{who}: {reason}"))
        }
        KmsError::Transient { key: who, reason } => {
            KmsError::transient(key, format!("{who}: {reason}"))
        }
        KmsError::Misconfigured { key: who, reason } => {
            KmsError::misconfigured(key, format!("{who}: {reason}"))
        }
        other => other,
    }
}

fn is_key_disabled(f: &Failure) -> bool {
    matches!(f, Failure::Status { status: 403, inner: Some(i), .. } if i == "KeyDisabled")
        || matches!(f, Failure::Status { status: 403, message, .. } if message.contains("disabled key"))
}

/// Gives a failed vault call its class (DESIGN §6).
fn classify(subject: &dyn std::fmt::Display, op: &str, f: Failure) -> KmsError {
    let what = format!("{op}: {}", f.describe());
    match f {
        Failure::Kms(e) => e,
        Failure::Status { status, .. } => match status {
            401 => KmsError::revoked(
                subject,
                format!("{what} (the vault refused a freshly fetched token)"),
            ),
            403 | 404 => KmsError::revoked(subject, what),
            400 if op == "unwrapKey" => KmsError::InvalidCiphertext {
                key: subject.to_string(),
            },
            _ => KmsError::misconfigured(subject, what),
        },
    }
}

fn status_failure(status: u16, body: &str) -> Failure {
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
    Failure::Status {
        status,
        code: if e.code.is_empty() {
            "(no error code)".to_owned()
        } else {
            e.code
        },
        inner: e.innererror.map(|i| i.code).filter(|c| !c.is_empty()),
        message: e.message.chars().take(300).collect(),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by Key Vault).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Exponential backoff with "equal jitter": half the capped delay plus a random
/// part of the other half, before attempt `attempt + 1`.
pub(crate) fn backoff_delay(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exp = policy
        .base_delay
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(policy.max_delay);
    let half = capped / 2;
    half + half.mul_f64(rand::random::<f64>())
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
struct ListPage {
    #[serde(default)]
    value: Vec<ListItem>,
    #[serde(rename = "nextLink")]
    next_link: Option<String>,
}

#[derive(Deserialize)]
struct ListItem {
    kid: String,
    attributes: Attributes,
}

struct ListedVersion {
    id: VersionedKeyId,
    enabled: bool,
    created: Option<DateTime<Utc>>,
    expires: Option<DateTime<Utc>>,
    not_before: Option<DateTime<Utc>>,
}

impl ListedVersion {
    fn usable_at(&self, now: DateTime<Utc>) -> bool {
        self.enabled
            && self.expires.is_none_or(|exp| now < exp)
            && self.not_before.is_none_or(|nbf| now >= nbf)
    }
}

impl ListItem {
    fn into_listed(self, key: &KeyId) -> Result<ListedVersion, KmsError> {
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

fn version_of_kid<'a>(kid: &'a str, name: &str) -> Option<&'a str> {
    let (_, rest) = kid.split_once("/keys/")?;
    let (n, version) = rest.split_once('/')?;
    (n == name && !version.is_empty() && !version.contains('/')).then_some(version)
}

fn unix(secs: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(secs, 0).single()
}

/// Parses a KeyBundle and checks the key is RSA/RSA-HSM of a supported size.
fn parse_bundle(id: &VersionedKeyId, bundle: &Value) -> Result<KeyDescription, KmsError> {
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

fn modulus_bits(n: &[u8]) -> u32 {
    let n = match n.iter().position(|b| *b != 0) {
        Some(at) => &n[at..],
        None => return 0,
    };
    (n.len() as u32 - 1) * 8 + (8 - n[0].leading_zeros())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn b64_decode(s: &str) -> Option<Vec<u8>> {
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
    fn backoff_is_capped_and_jittered() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
            ..RetryPolicy::default()
        };
        for attempt in 1..10 {
            let d = backoff_delay(&p, attempt);
            assert!(d <= Duration::from_millis(300), "{d:?}");
        }
        let d = backoff_delay(&p, 1);
        assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(100));
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
    fn error_bodies_are_classified() {
        let id: VersionedKeyId =
            "https://v.vault.azure.net/keys/k/0123456789abcdef0123456789abcdef"
                .parse()
                .unwrap();
        let f = |status, body: &str| status_failure(status, body);
        let forbidden =
            r#"{"error":{"code":"Forbidden","message":"no","innererror":{"code":"KeyDisabled"}}}"#;
        assert!(is_key_disabled(&f(403, forbidden)));
        assert!(matches!(
            classify(&id, "get", f(403, forbidden)),
            KmsError::Revoked { .. }
        ));
        assert!(matches!(
            classify(
                &id,
                "get",
                f(404, r#"{"error":{"code":"KeyNotFound","message":"x"}}"#)
            ),
            KmsError::Revoked { .. }
        ));
        let bad = r#"{"error":{"code":"BadParameter","message":"Decryption failed."}}"#;
        assert!(matches!(
            classify(&id, "unwrapKey", f(400, bad)),
            KmsError::InvalidCiphertext { .. }
        ));
        assert!(matches!(
            classify(&id, "wrapKey", f(400, bad)),
            KmsError::Misconfigured { .. }
        ));
        let e = classify(&id, "get", f(401, "not json"));
        assert!(matches!(e, KmsError::Revoked { .. }));
        assert!(e.to_string().contains(&id.to_string()));
    }
}
