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
//!   connection errors and timeouts are retried as [`crate::retry`] describes, up
//!   to [`RetryPolicy::max_attempts`] attempts in all, then `Transient`.
//! - Token failures: see [`credential`].
//!
//! Every `Kek` operation emits one `tracing` event with target `valv::kms::audit`:
//! `operation`, `key_id` (versioned when known), `outcome` and `latency_ms`, never key
//! material or tokens.

//!
//! # Layout
//! - this file: [`AzureKek`], the four operations and what each costs.
//! - [`config`]: [`AzureConfig`] and the `VALV_KEYVAULT_*` environment settings,
//!   including the refusal of plain `http://` to a vault that is not on loopback.
//! - `client`: one REST call (token, request, retries) and its failure before the
//!   operation classifies it.
//! - `wire`: Key Vault's JSON (KeyBundle, version list, error body) and base64url.
//! - [`credential`]: Entra ID tokens (client secret, workload identity, IMDS).

mod client;
pub mod config;
pub mod credential;
mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::{json, Value};

pub use crate::retry::RetryPolicy;
use crate::{
    Kek, KeyDescription, KeyId, KeyIdKind, KmsError, SecretBytes, VersionedKeyId, ALG_RSA_OAEP_256,
};
use client::{Failure, VaultClient};
pub use config::AzureConfig;
pub use credential::Credential;
use wire::{b64, b64_decode, parse_bundle, ListPage, ListedVersion};

/// The Key Vault KEK provider.
#[derive(Debug)]
pub struct AzureKek {
    config: AzureConfig,
    client: VaultClient,
    /// kty and modulus size per versioned id (immutable facts about a version).
    shapes: Mutex<HashMap<String, (String, u32)>>,
}

impl AzureKek {
    /// A provider using `credential` for every vault.
    ///
    /// Fails with `Misconfigured` when `config` does not validate
    /// ([`AzureConfig::validate`]: plain `http://` to a host that is not loopback).
    pub fn new(config: AzureConfig, credential: Credential) -> Result<AzureKek, KmsError> {
        AzureKek::with_shared_credential(config, Arc::new(credential))
    }

    /// Like [`AzureKek::new`], sharing a credential (and its token cache).
    pub fn with_shared_credential(
        config: AzureConfig,
        credential: Arc<Credential>,
    ) -> Result<AzureKek, KmsError> {
        config.validate()?;
        let http = config.http_client()?;
        Ok(AzureKek {
            client: VaultClient::new(
                credential,
                http,
                config.request_timeout,
                config.retry.clone(),
            ),
            config,
            shapes: Mutex::new(HashMap::new()),
        })
    }

    /// The provider for `key`'s vault with settings and credential from the
    /// environment as `getenv` returns it: [`AzureConfig::from_lookup`]
    /// (`VALV_KEYVAULT_ENDPOINT`, `VALV_KEYVAULT_API_VERSION`, `VALV_KEYVAULT_CA_FILE`),
    /// [`Credential::from_lookup`] (the `AZURE_*` variables) and
    /// `VALV_IMDS_ENDPOINT`.
    ///
    /// Fails with `Misconfigured` when `key` is not a Key Vault id, the endpoint is
    /// refused, or the credential variables are incomplete.
    pub fn from_lookup(
        key: &KeyId,
        getenv: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AzureKek, KmsError> {
        let KeyIdKind::AzureKeyVault { vault, .. } = key.kind() else {
            return Err(KmsError::misconfigured(key, "not a Key Vault key id"));
        };
        let config = AzureConfig::from_lookup(vault, getenv)?;
        // Token requests trust the same roots as vault requests.
        let mut credential =
            Credential::from_lookup(getenv)?.with_http_client(config.http_client()?);
        if let Some(imds) = getenv(config::ENV_IMDS_ENDPOINT) {
            credential = credential.with_imds_endpoint(imds);
        }
        tracing::info!(key = %key, credential = credential.kind(), "using Azure Key Vault");
        AzureKek::new(config, credential)
    }

    pub fn credential(&self) -> &Arc<Credential> {
        &self.client.credential
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

    /// GET one version and check it is a supported RSA key.
    async fn get_version(&self, id: &VersionedKeyId) -> Result<KeyDescription, Failure> {
        let url = self.version_url(id, "").map_err(Failure::Kms)?;
        let bundle = self
            .client
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
            Err(f) if f.is_key_disabled() => self.describe_disabled(id, &f).await,
            Err(f) => Err(f.classify(id, "get")),
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
                .client
                .call(&key.to_string(), reqwest::Method::GET, &u, None)
                .await
                .map_err(|f| f.classify(key, "list versions"))?;
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
            .map_err(|f| f.classify(id, "get"))?;
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
            .client
            .call(&id.to_string(), reqwest::Method::POST, &url, Some(&body))
            .await
            .map_err(|f| f.classify(id, op))?;
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
