//! A fake Azure Key Vault (keys data plane), fake Entra ID token endpoint and fake
//! IMDS on one local HTTP listener, for valv's tests and demos.
//!
//! No Azure endpoint is reachable from our build and test machines, so this fake is
//! how the Key Vault KEK provider is tested. It implements exactly the calls that
//! provider makes (REFERENCE.md §5.1), with Key Vault's status codes and error
//! bodies, plus a control API to shape the vault (keys, versions, identities,
//! permissions) and to inject faults.
//!
//! # Layout
//! - this file: [`Config`], the [`FakeVault`] handle (start/stop plus direct control
//!   methods for in-process tests) and the small public types.
//! - `state`: keys, identities, tokens, faults and counters behind one mutex, the
//!   rules for what each call answers, and persistence to a state directory.
//! - `http`: the listener, a hand-written router (`enum Route`), the data-plane,
//!   token, IMDS and `/_fake` control handlers, and the error bodies.
//!
//! # Wire API served
//!
//! Data plane (every call needs `?api-version=…`, any value, and `Authorization:
//! Bearer <token>`; order of checks: faults → api-version → token → permission →
//! body → key → key state):
//!
//! | call | permission | counter |
//! |---|---|---|
//! | `GET /keys/{name}` and `GET /keys/{name}/{version}` | `get` | `get` |
//! | `GET /keys/{name}/versions[?maxresults=1..25][&$skiptoken=…]` | `list` | `list` |
//! | `POST /keys/{name}[/{version}]/wrapkey` | `wrapKey` | `wrapKey` |
//! | `POST /keys/{name}[/{version}]/unwrapkey` | `unwrapKey` | `unwrapKey` |
//!
//! The last path segment `wrapkey`/`unwrapkey` is matched case-insensitively (SDKs
//! send `wrapKey`). Tokens:
//!
//! - `POST /{tenant}/oauth2/v2.0/token` (form): `grant_type=client_credentials`,
//!   `client_id`, `scope=https://vault.azure.net/.default` and either
//!   `client_secret`, or `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`
//!   with `client_assertion`. The assertion is **not** validated as a JWT: it is
//!   accepted when it equals the `federated_token` registered for that client id.
//! - `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net[&client_id=…|&object_id=…]`
//!   with header `Metadata: true`; without an id, the identity registered with
//!   `system_assigned: true` is used.
//!
//! Both count as `token` and are subject to added latency, but not to throttling or
//! outage (those model the vault, not Entra ID).
//!
//! # Control API (`/_fake/…`, JSON in and out, no auth, not counted, no faults)
//!
//! | route | body | effect |
//! |---|---|---|
//! | `POST /_fake/keys` | `{"name":"k","kty":"RSA","key_size":2048}` or `{"name":"k","kty":"EC"}` | create key; 201 `{"name","version","kid"}` |
//! | `POST /_fake/keys/{name}/versions` | none, or `{"kty":…,"key_size":…}` | add a version (default: same kind as the current one); 201 `{"name","version","kid"}` |
//! | `PATCH /_fake/keys/{name}` | `{"enabled"?:bool,"exp"?:int\|null,"nbf"?:int\|null}` | update every version; 204 |
//! | `PATCH /_fake/keys/{name}/{version}` | same | update one version; 204 |
//! | `DELETE /_fake/keys/{name}` | none | soft delete (data plane then answers 404 KeyNotFound); 204 |
//! | `POST /_fake/keys/{name}/recover` | none | undo a soft delete; 204 |
//! | `POST /_fake/identities` | `{"object_id","client_id","client_secret"?,"federated_token"?,"system_assigned"?}` | register; 201 |
//! | `DELETE /_fake/identities/{object_id}` | none | remove it and its tokens; 204 |
//! | `POST /_fake/identities/{object_id}/grant` | `{"permissions":["get","list","wrapKey","unwrapKey"]}` | 204 |
//! | `POST /_fake/identities/{object_id}/revoke` | same | 204 |
//! | `POST /_fake/identities/{object_id}/token` | none | issue a token directly; 200 `{"access_token","expires_in"}` |
//! | `POST /_fake/tokens/expire` | none | every issued token is expired from now on; 204 |
//! | `PUT /_fake/tokens/lifetime` | `{"secs":N}` | lifetime of tokens issued from now on; 204 |
//! | `POST /_fake/faults/throttle` | `{"count":N,"retry_after_secs":S}` | next N vault calls answer 429 + `Retry-After: S` (count 0 clears); 204 |
//! | `PUT /_fake/faults/outage` | `{"mode":"none"\|"unavailable"\|"hang"}` | 503 for every vault call, or hang until the mode changes (then 503) or the server stops; 204 |
//! | `PUT /_fake/faults/latency` | `{"millis":N}` | delay before every vault and token call; 204 |
//! | `PUT /_fake/faults/corrupt-unwrap` | `{"enabled":bool}` | unwrapKey answers other bytes of the same length (every byte XOR 0x5a); 204 |
//! | `GET /_fake/counters` | none | 200 `{"get","list","wrapKey","unwrapKey","token"}` |
//! | `DELETE /_fake/counters` | none | reset counters; 204 |
//!
//! In-process only (no route): [`FakeVault::delete_version`] removes one version for
//! good, so that version answers 404 KeyNotFound while the others keep working.
//!
//! Control errors use the same `{"error":{"code","message"}}` shape with codes
//! `BadParameter` (400), `NotFound` (404), `Conflict` (409), `InternalError` (500).
//!
//! # Counters
//!
//! A counter is bumped for every request routed to that operation, *before* any
//! fault, auth or validation check, so a zero proves no such call reached the fake.
//!
//! # Deliberate differences from real Key Vault (the fake's choices)
//!
//! - `nbf`/`exp` follow Key Vault's documented rule by default
//!   ([`ValidityEnforcement::KeyVault`]): outside the window `wrapKey` is refused
//!   with 403 Forbidden, innererror `KeyExpired` / `KeyNotYetValid` (codes chosen by
//!   the fake), while `unwrapKey` still works so old data stays recoverable.
//!   [`ValidityEnforcement::Strict`] refuses `unwrapKey` too.
//! - `GET` of a disabled version answers 403 `KeyDisabled` ("Operation get is not
//!   allowed on a disabled key."), as Key Vault does for disabled keys and secrets;
//!   `list` still shows it.
//! - Versionless wrap/unwrap use the newest *enabled* version (falling back to the
//!   newest when none is enabled); versionless `GET` uses the newest version.
//! - Key names are case-sensitive (Key Vault's are not); version listing is in
//!   creation order; `$skiptoken` is an opaque offset.
//! - `kid`, `nextLink` and the `WWW-Authenticate` authority are built from the
//!   request's `Host` header with scheme `http`.
//! - Tokens are opaque random strings, not JWTs; any `api-version` value is accepted.
//! - Malformed `/keys/…` paths, unsupported methods there (e.g. `DELETE`, which
//!   the fake only offers on the control API) and bad bodies (including bodies over
//!   64 KiB) all get 400 `BadParameter` (Key Vault sometimes uses 404/405/413).
//!   Paths outside `/keys`, the token endpoints and `/_fake` get 404 `NotFound`.
//! - Persistence: keys (PKCS#8 PEM), versions, attributes, identities, permissions
//!   and tokens persist; faults, latency and counters are per process.
//!
//! Only 127.0.0.1 should be given as the listen address: the control API has no
//! authentication.

mod http;
mod state;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use state::Shared;

/// The resource (audience) every token is for.
pub const VAULT_RESOURCE: &str = "https://vault.azure.net";
/// The client-credentials scope a client must ask for.
pub const VAULT_SCOPE: &str = "https://vault.azure.net/.default";
/// The assertion type of the workload-identity (federated credential) flow.
pub const JWT_BEARER_ASSERTION_TYPE: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Errors of the control API and of starting the fake.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("state directory is corrupt: {0}")]
    Corrupt(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

/// How `nbf`/`exp` restrict operations (see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValidityEnforcement {
    /// Key Vault's rule: wrapKey refused outside the window, unwrapKey allowed.
    #[default]
    KeyVault,
    /// Both wrapKey and unwrapKey refused outside the window.
    Strict,
}

/// How to start a [`FakeVault`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen; port 0 picks a free port. Keep it on 127.0.0.1.
    pub addr: SocketAddr,
    /// Directory for persistent state; `None` keeps everything in memory.
    pub state_dir: Option<PathBuf>,
    /// The one tenant the token endpoint serves (and names in `WWW-Authenticate`).
    pub tenant_id: String,
    /// The vault name used in error messages.
    pub vault_name: String,
    /// Lifetime of tokens issued; short values let tests reach expiry.
    pub token_lifetime: Duration,
    /// See [`ValidityEnforcement`].
    pub validity: ValidityEnforcement,
    /// Serve https with this certificate instead of plain http.
    pub tls: Option<TlsIdentity>,
}

/// The certificate an https fake serves: PEM text, generated by the test.
#[derive(Clone)]
pub struct TlsIdentity {
    /// The certificate chain, leaf first.
    pub cert_chain_pem: String,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: String,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir: None,
            tenant_id: "00000000-0000-0000-0000-0000000fa4e0".to_owned(),
            vault_name: "fakevault".to_owned(),
            token_lifetime: Duration::from_secs(3600),
            validity: ValidityEnforcement::KeyVault,
            tls: None,
        }
    }
}

impl Config {
    /// Default config whose state lives in `dir`.
    pub fn persistent(dir: impl Into<PathBuf>) -> Config {
        Config {
            state_dir: Some(dir.into()),
            ..Config::default()
        }
    }
}

/// Kind and size of a key version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kty", deny_unknown_fields)]
pub enum KeyKind {
    /// RSA of 2048, 3072 or 4096 bits.
    #[serde(rename = "RSA")]
    Rsa {
        #[serde(rename = "key_size")]
        bits: u32,
    },
    /// EC P-256: exists so tests can check that wrap/unwrap refuse non-RSA keys.
    #[serde(rename = "EC")]
    EcP256,
}

/// A Key Vault key permission (access-policy style).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    #[serde(rename = "get")]
    Get,
    #[serde(rename = "list")]
    List,
    #[serde(rename = "wrapKey")]
    WrapKey,
    #[serde(rename = "unwrapKey")]
    UnwrapKey,
}

impl Permission {
    pub const ALL: [Permission; 4] = [
        Permission::Get,
        Permission::List,
        Permission::WrapKey,
        Permission::UnwrapKey,
    ];

    /// The name Key Vault uses in messages ("does not have keys get permission").
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Get => "get",
            Permission::List => "list",
            Permission::WrapKey => "wrapKey",
            Permission::UnwrapKey => "unwrapKey",
        }
    }
}

/// An Entra ID identity (service principal or managed identity).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySpec {
    /// Object id: what permissions are granted to.
    pub object_id: String,
    /// Client (application) id: what token requests name.
    pub client_id: String,
    /// Enables the client-credentials flow with this secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// Enables the workload-identity flow: the exact assertion string to accept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federated_token: Option<String>,
    /// The VM's system-assigned managed identity (IMDS without `client_id`).
    #[serde(default)]
    pub system_assigned: bool,
}

impl IdentitySpec {
    /// An identity with neither secret nor federated token (IMDS only).
    pub fn new(object_id: impl Into<String>, client_id: impl Into<String>) -> IdentitySpec {
        IdentitySpec {
            object_id: object_id.into(),
            client_id: client_id.into(),
            client_secret: None,
            federated_token: None,
            system_assigned: false,
        }
    }
}

/// Outage modes for the vault data plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outage {
    #[default]
    None,
    /// Every vault call answers 503.
    Unavailable,
    /// Every vault call hangs until the mode changes or the server stops.
    Hang,
}

/// Requests received per operation kind (see the crate docs for when they count).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub get: u64,
    pub list: u64,
    #[serde(rename = "wrapKey")]
    pub wrap_key: u64,
    #[serde(rename = "unwrapKey")]
    pub unwrap_key: u64,
    pub token: u64,
}

impl Counters {
    /// Vault data-plane calls (token requests excluded).
    pub fn vault_calls(&self) -> u64 {
        self.get + self.list + self.wrap_key + self.unwrap_key
    }
}

/// A created key or version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedVersion {
    pub name: String,
    pub version: String,
    /// Versioned key id under [`FakeVault::url`].
    pub kid: String,
}

/// A running fake. Dropping it (or [`FakeVault::shutdown`]) stops the listener and
/// every open connection, including hung ones.
#[derive(Debug)]
pub struct FakeVault {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FakeVault {
    /// Binds `config.addr`, loads `config.state_dir` if given, and serves on a
    /// background task.
    ///
    /// Fails when the address cannot be bound or the state directory cannot be read
    /// or holds invalid state.
    pub async fn start(config: Config) -> Result<FakeVault, Error> {
        let tls = config.tls.as_ref().map(http::tls_acceptor).transpose()?;
        let shared = Arc::new(Shared::load(config)?);
        let listener = tokio::net::TcpListener::bind(shared.config.addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(http::serve(listener, tls, shared.clone(), stopped));
        tracing::debug!(%addr, "fake key vault listening");
        Ok(FakeVault {
            shared,
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT` (`https://` when serving TLS): the vault URL, the token
    /// authority and the IMDS endpoint all at once.
    pub fn url(&self) -> String {
        let scheme = if self.shared.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn tenant_id(&self) -> &str {
        &self.shared.config.tenant_id
    }

    /// The versioned key id of `name`/`version` as this fake reports it.
    pub fn kid(&self, name: &str, version: &str) -> String {
        format!("{}/keys/{name}/{version}", self.url())
    }

    /// Stops serving and waits for the server task to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Creates a key with one version.
    ///
    /// Fails with `BadRequest` for an invalid name or size, `Conflict` when the key
    /// exists (even soft-deleted).
    pub async fn create_key(&self, name: &str, kind: KeyKind) -> Result<CreatedVersion, Error> {
        check_name(name)?;
        if self.shared.key_exists(name) {
            return Err(Error::Conflict(format!("key {name} already exists")));
        }
        let material = state::generate(kind).await?;
        let version = self.shared.insert_version(name, material, true)?;
        Ok(self.created(name, version))
    }

    /// Adds a version of the same kind as the current one; it becomes current.
    pub async fn add_version(&self, name: &str) -> Result<CreatedVersion, Error> {
        let kind = self.shared.current_kind(name)?;
        self.add_version_of(name, kind).await
    }

    /// Adds a version of the given kind; it becomes current.
    pub async fn add_version_of(&self, name: &str, kind: KeyKind) -> Result<CreatedVersion, Error> {
        check_name(name)?;
        let material = state::generate(kind).await?;
        let version = self.shared.insert_version(name, material, false)?;
        Ok(self.created(name, version))
    }

    fn created(&self, name: &str, version: String) -> CreatedVersion {
        CreatedVersion {
            name: name.to_owned(),
            kid: self.kid(name, &version),
            version,
        }
    }

    /// Enables or disables one version, or all versions when `version` is `None`.
    pub fn set_enabled(
        &self,
        name: &str,
        version: Option<&str>,
        enabled: bool,
    ) -> Result<(), Error> {
        self.shared
            .update_versions(name, version, |v| v.enabled = enabled)
    }

    /// Sets or clears `exp` (unix seconds).
    pub fn set_expiry(
        &self,
        name: &str,
        version: Option<&str>,
        exp: Option<i64>,
    ) -> Result<(), Error> {
        self.shared.update_versions(name, version, |v| v.exp = exp)
    }

    /// Sets or clears `nbf` (unix seconds).
    pub fn set_not_before(
        &self,
        name: &str,
        version: Option<&str>,
        nbf: Option<i64>,
    ) -> Result<(), Error> {
        self.shared.update_versions(name, version, |v| v.nbf = nbf)
    }

    /// Soft-deletes a key: the data plane answers 404 KeyNotFound until recovered.
    pub fn delete_key(&self, name: &str) -> Result<(), Error> {
        self.shared.set_deleted(name, true)
    }

    /// Removes one version for good, as deleting and purging it would: the data plane
    /// answers 404 KeyNotFound for that version and `list` omits it; the other
    /// versions are untouched.
    ///
    /// Fails with `NotFound` for an unknown key or version and `Conflict` for the
    /// key's only version (use [`FakeVault::delete_key`]). Control API only in-process.
    pub fn delete_version(&self, name: &str, version: &str) -> Result<(), Error> {
        self.shared.remove_version(name, version)
    }

    /// Recovers a soft-deleted key with all its versions.
    pub fn recover_key(&self, name: &str) -> Result<(), Error> {
        self.shared.set_deleted(name, false)
    }

    /// Registers an identity with no permissions.
    pub fn register_identity(&self, spec: IdentitySpec) -> Result<(), Error> {
        self.shared.register_identity(spec)
    }

    /// Removes an identity; its tokens stop working immediately (401).
    pub fn remove_identity(&self, object_id: &str) -> Result<(), Error> {
        self.shared.remove_identity(object_id)
    }

    pub fn grant(&self, object_id: &str, perms: &[Permission]) -> Result<(), Error> {
        self.shared.set_permissions(object_id, perms, true)
    }

    pub fn revoke(&self, object_id: &str, perms: &[Permission]) -> Result<(), Error> {
        self.shared.set_permissions(object_id, perms, false)
    }

    /// Permissions currently granted to `object_id`.
    pub fn permissions(&self, object_id: &str) -> Option<BTreeSet<Permission>> {
        self.shared
            .identity_by_object_id(object_id)
            .map(|i| i.permissions)
    }

    /// Issues a token directly, skipping the OAuth flows.
    pub fn issue_token(&self, object_id: &str) -> Result<String, Error> {
        self.shared.issue_token(object_id).map(|(t, _, _)| t)
    }

    /// Every token issued so far is expired from now on.
    pub fn expire_all_tokens(&self) -> Result<(), Error> {
        self.shared.expire_all_tokens()
    }

    /// Lifetime of tokens issued from now on (at least one second).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.shared.set_token_lifetime(lifetime)
    }

    /// The next `count` vault calls answer 429 with `Retry-After: retry_after_secs`.
    pub fn throttle(&self, count: u32, retry_after_secs: u64) {
        self.shared.throttle(count, retry_after_secs)
    }

    pub fn set_outage(&self, outage: Outage) {
        self.shared.set_outage(outage)
    }

    /// Delay added before answering each vault and token call.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.set_latency(latency)
    }

    /// While on, unwrapKey answers bytes other than those wrapped.
    pub fn set_corrupt_unwrap(&self, on: bool) {
        self.shared.set_corrupt_unwrap(on)
    }

    pub fn counters(&self) -> Counters {
        self.shared.counters()
    }

    pub fn reset_counters(&self) {
        self.shared.reset_counters()
    }
}

impl Drop for FakeVault {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub(crate) fn check_name(name: &str) -> Result<(), Error> {
    if state::is_valid_key_name(name) {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "key name {name:?} must match ^[0-9a-zA-Z-]{{1,127}}$"
        )))
    }
}

/// base64url without padding, Key Vault's encoding for every binary field.
pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url with or without padding; `None` on anything else.
pub(crate) fn b64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::engine::{
        general_purpose::GeneralPurpose, DecodePaddingMode, GeneralPurposeConfig,
    };
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    LENIENT.decode(s).ok()
}
