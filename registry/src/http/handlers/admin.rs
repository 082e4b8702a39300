//! The admin API (DESIGN §7): what `az acr encryption show` and `rotate-key` do for an
//! Azure Container Registry, over HTTP.
//!
//! - `GET /admin/v1/encryption`: the key the registry is encrypted under, its state,
//!   and the registry-key generations. Answers also while the key is revoked (the
//!   keyring document is then read from the object store, nothing is unwrapped), so an
//!   operator can see what is wrong.
//! - `POST /admin/v1/encryption/rotate-key` `{"keyEncryptionKey": ID, "identity": ID?}`:
//!   rewraps the registry keys under `ID` (another version, another key or another
//!   vault of the same provider). A versionless id turns automatic rotation on, a
//!   versioned id pins that version. Nothing changes when it fails.
//!
//! - `POST /admin/v1/storage/sweep` `{"graceSecs": N}?`: removes now what interrupted
//!   writes left behind (see `storage::Store::sweep`): data objects nothing names,
//!   ended upload sessions and local staging files older than `N` seconds (default:
//!   `storage.orphan_grace_secs`). Answers the sweep's report.
//! - `POST /admin/v1/storage/seal-links`: seals, in place, the repository links of a
//!   store written before links were sealed (see `storage::Store::seal_links`), and
//!   verifies the sealed ones. Answers `{"verified": N, "sealed": N, "refused": N}`.
//!
//! Enabled when an admin token is configured (`[admin] token`, `VALV_ADMIN_TOKEN`;
//! requests carry it as `Authorization: Bearer <token>`, compared in constant time) or
//! access control has an admin role (`[auth.admin]`: those users, with their own
//! credentials). Otherwise `/admin/*` does not exist (404). The admin API is
//! not behind the key gate that refuses content while the key is revoked.
//!
//! Errors are JSON in the shape Azure Resource Manager uses,
//! `{"error": {"code": "...", "message": "..."}}`.
//!
//! valv authenticates to the vault with one identity (the `AZURE_*` environment): a
//! rotate-key naming another `identity` is refused (400 `IdentityNotSupported`);
//! naming the node's own is accepted. Per-request identities are not implemented.
//!
//! `status` is what ACR reports for its encryption, derived from the key state:
//! `enabled` while the key is active, otherwise the state's name (`degraded`,
//! `revoked`, `unavailable`).

use bytes::Bytes;
use http::header::WWW_AUTHENTICATE;
use http::{Request, Response, StatusCode};
use kms_client::{KeyId, KeyIdKind, KmsError, VersionedKeyId};
use serde::{Deserialize, Serialize};
use storage::keyring::{GenerationState, KeyringDoc};
use storage::{RotateOutcome, StoreError};

use crate::app::App;
use crate::auth::Principal;
use crate::http::body::{collect_limited, Body, CollectError, RequestBody};
use crate::http::reply::{HandlerResult, Reply};
use crate::keys::KeyState;

/// The largest rotate-key request body read.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// `az acr encryption show`'s body, plus valv's key state and generations.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionView {
    pub key_vault_properties: KeyVaultProperties,
    pub status: &'static str,
    pub state: &'static str,
    pub reason: Option<String>,
    pub registry_key_generations: Vec<GenerationView>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyVaultProperties {
    pub identity: Option<String>,
    pub key_identifier: String,
    pub versioned_key_identifier: Option<String>,
    pub key_rotation_enabled: bool,
    pub last_key_rotation_timestamp: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationView {
    pub generation: u32,
    pub versioned_key_identifier: String,
    pub created: String,
    pub state: GenerationState,
}

/// The rotate-key request body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RotateRequest {
    key_encryption_key: String,
    #[serde(default)]
    identity: Option<String>,
}

/// An admin API error: status, a stable code and a message for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl AdminError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> AdminError {
        AdminError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(code: &'static str, message: impl Into<String>) -> AdminError {
        AdminError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn response(&self) -> Response<Body> {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut reply = Reply::new(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            reply = reply.header(WWW_AUTHENTICATE, "Bearer realm=\"valv-admin\"");
        }
        reply.json("application/json", &body).build()
    }
}

/// What a failed KEK or store call means for the operator.
fn store_failure(e: StoreError) -> AdminError {
    match e {
        StoreError::Key(k) => kms_failure(k),
        StoreError::Integrity => AdminError::bad_request(
            "KeyIntegrity",
            "the key does not unwrap what it wrapped; nothing was changed",
        ),
        other => {
            tracing::error!(error = %other, "admin request failed in the store");
            AdminError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "StorageUnavailable",
                "the registry's storage could not be read or written; nothing was changed",
            )
        }
    }
}

fn kms_failure(e: KmsError) -> AdminError {
    let message = e.to_string();
    match e {
        KmsError::Misconfigured { .. } | KmsError::InvalidCiphertext { .. } => {
            AdminError::bad_request("KeyMisconfigured", message)
        }
        KmsError::Revoked { .. } => AdminError::new(StatusCode::FORBIDDEN, "KeyRevoked", message),
        KmsError::Transient { .. } => AdminError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "KeyVaultUnavailable",
            message,
        ),
    }
}

/// What an admin request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAction {
    Show,
    RotateKey,
    Sweep,
    SealLinks,
}

/// The admin routes' entry point: `Err` only for "no such endpoint" (the admin API
/// is disabled); every admin error is an `Ok` response in the admin error shape.
///
/// The gate has authenticated `principal`: the admin token (`Authorization: Bearer`,
/// compared in constant time), or a user with the admin role (Basic, a client
/// certificate, or a token of the built-in issuer).
pub async fn handle(
    app: &App,
    principal: &Principal,
    action: AdminAction,
    req: Request<RequestBody>,
) -> HandlerResult {
    if !app.auth.admin_api_enabled() {
        return Err(crate::http::errors::no_such_endpoint());
    }
    if !app.auth.is_admin(principal) {
        let authenticated = !matches!(principal, Principal::Open | Principal::Anonymous);
        let e = if authenticated {
            AdminError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "the admin API needs the admin role",
            )
        } else {
            AdminError::new(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "the admin API needs Authorization: Bearer <admin token> or an admin user's credentials",
            )
        };
        return Ok(e.response());
    }
    Ok(match action {
        AdminAction::Show => respond(show(app).await),
        AdminAction::RotateKey => respond(rotate_key(app, req).await),
        AdminAction::Sweep => respond(sweep(app, req).await),
        AdminAction::SealLinks => respond(app.store.seal_links().await.map_err(store_failure)),
    })
}

/// 200 with `value` as JSON, or the admin error.
fn respond<T: Serialize>(result: Result<T, AdminError>) -> Response<Body> {
    match result {
        Ok(value) => Reply::new(StatusCode::OK)
            .json("application/json", &value)
            .build(),
        Err(e) => e.response(),
    }
}

/// The body of a sweep request (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SweepRequest {
    grace_secs: Option<u64>,
}

/// `POST /admin/v1/storage/sweep`.
async fn sweep(app: &App, req: Request<RequestBody>) -> Result<storage::SweepReport, AdminError> {
    let body = read_body(req).await?;
    let request: SweepRequest = if body.is_empty() {
        SweepRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            AdminError::bad_request(
                "InvalidRequestContent",
                format!("expected {{\"graceSecs\": <seconds>}} or no body: {e}"),
            )
        })?
    };
    let grace = request
        .grace_secs
        .map(std::time::Duration::from_secs)
        .unwrap_or(app.settings.orphan_grace);
    app.store.sweep(grace).await.map_err(store_failure)
}

/// The request body, at most `MAX_REQUEST_BYTES`.
async fn read_body(req: Request<RequestBody>) -> Result<Bytes, AdminError> {
    match collect_limited(
        req.into_body(),
        MAX_REQUEST_BYTES,
        4 * MAX_REQUEST_BYTES as u64,
        false,
    )
    .await
    {
        Ok(b) => Ok(b),
        Err(CollectError::TooLarge) => Err(AdminError::bad_request(
            "InvalidRequestContent",
            format!("the request body is larger than {MAX_REQUEST_BYTES} bytes"),
        )),
        Err(CollectError::Body(e)) => Err(AdminError::bad_request(
            "InvalidRequestContent",
            format!("cannot read the request body: {e}"),
        )),
    }
}

/// `GET /admin/v1/encryption`.
pub async fn show(app: &App) -> Result<EncryptionView, AdminError> {
    let doc = match app.store.keyring() {
        Ok(ring) => ring.doc.clone(),
        // The registry keys are dropped (revoked or unavailable): the document is
        // still readable, and showing it needs no key.
        Err(_) => match app.store.keyring_doc().await {
            Ok(Some((_, doc))) => doc,
            Ok(None) => {
                return Err(AdminError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "KeyringMissing",
                    "the registry has no keyring in its object store",
                ))
            }
            Err(e) => return Err(store_failure(e)),
        },
    };
    Ok(view(
        &doc,
        app.admin.identity.clone(),
        &app.key_status.get(),
    ))
}

/// ACR's `status` for a key state: `enabled` while the key is active, otherwise the
/// state's own name, so an operator reading only `status` still sees the trouble.
pub fn encryption_status(state: &KeyState) -> &'static str {
    match state {
        KeyState::Active => "enabled",
        KeyState::Degraded { .. } | KeyState::Revoked { .. } | KeyState::Unavailable { .. } => {
            state.name()
        }
    }
}

/// The response body for a keyring document.
pub fn view(doc: &KeyringDoc, identity: Option<String>, state: &KeyState) -> EncryptionView {
    let rfc3339 =
        |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    EncryptionView {
        key_vault_properties: KeyVaultProperties {
            identity,
            key_identifier: doc.key_id.clone(),
            versioned_key_identifier: doc
                .generations
                .iter()
                .rev()
                .find(|g| g.state == GenerationState::Active)
                .map(|g| g.kek.clone()),
            key_rotation_enabled: doc.automatic_rotation,
            last_key_rotation_timestamp: doc.last_rotation.as_ref().map(rfc3339),
        },
        status: encryption_status(state),
        state: state.name(),
        reason: state.reason().map(str::to_owned),
        registry_key_generations: doc
            .generations
            .iter()
            .map(|g| GenerationView {
                generation: g.generation,
                versioned_key_identifier: g.kek.clone(),
                created: rfc3339(&g.created),
                state: g.state,
            })
            .collect(),
    }
}

/// `POST /admin/v1/encryption/rotate-key`.
async fn rotate_key(app: &App, req: Request<RequestBody>) -> Result<EncryptionView, AdminError> {
    let body = read_body(req).await?;
    let request: RotateRequest = serde_json::from_slice(&body).map_err(|e| {
        AdminError::bad_request(
            "InvalidRequestContent",
            format!("expected {{\"keyEncryptionKey\": \"<key id>\", \"identity\": \"<client id>\"?}}: {e}"),
        )
    })?;
    let key: KeyId = request
        .key_encryption_key
        .trim()
        .parse()
        .map_err(|e: KmsError| {
            AdminError::bad_request(
                "InvalidKeyIdentifier",
                format!("keyEncryptionKey {:?}: {e}", request.key_encryption_key),
            )
        })?;
    check_identity(app.admin.identity.as_deref(), request.identity.as_deref())?;
    check_same_provider(app, &key)?;
    let version: VersionedKeyId = match key.as_versioned() {
        Some(v) => v,
        None => app
            .store
            .kek()
            .latest_version(&key)
            .await
            .map_err(kms_failure)?,
    };
    match app
        .store
        .rotate(&version, &key)
        .await
        .map_err(store_failure)?
    {
        RotateOutcome::Rotated { from, to, sequence } => {
            tracing::warn!(%from, %to, key = %key, sequence, "rotate-key: the registry keys are now wrapped by the requested key");
        }
        RotateOutcome::AlreadyCurrent => {
            tracing::info!(key = %key, "rotate-key: already wrapped by that key");
        }
        RotateOutcome::LostRace { sequence } => {
            // Another node wrote the keyring first; its doc is now in use. Report it:
            // the response shows which key won.
            tracing::warn!(
                sequence,
                "rotate-key: another node changed the keyring first"
            );
        }
    }
    show(app).await
}

/// A rotate-key may name the identity the node authenticates to the vault with (or
/// none); another would have to be used for this key alone, which valv cannot do.
fn check_identity(node: Option<&str>, requested: Option<&str>) -> Result<(), AdminError> {
    let Some(requested) = requested.map(str::trim).filter(|i| !i.is_empty()) else {
        return Ok(());
    };
    if node == Some(requested) {
        return Ok(());
    }
    let runs_as = match node {
        Some(id) => format!("identity {id:?} (AZURE_CLIENT_ID)"),
        None => "no client id (a local key or the default managed identity)".to_owned(),
    };
    Err(AdminError::bad_request(
        "IdentityNotSupported",
        format!(
            "identity {requested:?} is not the one this registry uses: it authenticates to the key vault with {runs_as}, and per-request identities are not supported; leave identity out, or restart the registry with that identity; nothing was changed"
        ),
    ))
}

/// The registry's KEK provider serves one kind of key id; another kind would fail
/// deep in the provider with a less helpful message.
fn check_same_provider(app: &App, key: &KeyId) -> Result<(), AdminError> {
    let current: Option<KeyId> = app
        .store
        .keyring()
        .ok()
        .and_then(|ring| ring.doc.key_id.parse().ok());
    let current = current.unwrap_or_else(|| app.key_id.clone());
    let same = matches!(
        (current.kind(), key.kind()),
        (KeyIdKind::File { .. }, KeyIdKind::File { .. })
            | (
                KeyIdKind::AzureKeyVault { .. },
                KeyIdKind::AzureKeyVault { .. }
            )
    );
    if same {
        Ok(())
    } else {
        Err(AdminError::bad_request(
            "KeyProviderMismatch",
            format!(
                "the registry is encrypted under {current}; a rotate-key must stay with the same key provider (file:// or Key Vault)"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AdminSettings;

    #[test]
    fn debug_redacts_the_token() {
        let s = AdminSettings {
            token: Some("s3cret-token".into()),
            identity: None,
        };
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn kms_errors_map_to_statuses() {
        let k = "file:///k/a";
        assert_eq!(
            kms_failure(KmsError::misconfigured(k, "EC")).status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            kms_failure(KmsError::revoked(k, "disabled")).status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            kms_failure(KmsError::transient(k, "down")).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn only_the_nodes_own_identity_is_accepted() {
        assert!(check_identity(Some("valv-client"), None).is_ok());
        assert!(check_identity(Some("valv-client"), Some("")).is_ok());
        assert!(check_identity(Some("valv-client"), Some("valv-client")).is_ok());
        let e = check_identity(Some("valv-client"), Some("other-client")).expect_err("other");
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "IdentityNotSupported")
        );
        assert!(e.message.contains("other-client") && e.message.contains("valv-client"));
        assert!(check_identity(None, Some("any")).is_err());
        assert!(check_identity(None, None).is_ok());
    }

    #[test]
    fn status_follows_the_key_state() {
        let doc = KeyringDoc {
            version: 1,
            key_id: "file:///k/a".into(),
            automatic_rotation: true,
            last_rotation: None,
            generations: Vec::new(),
        };
        let status = |state: KeyState| {
            let v = view(&doc, None, &state);
            (v.status, v.state)
        };
        assert_eq!(status(KeyState::Active), ("enabled", "active"));
        assert_eq!(
            status(KeyState::Degraded {
                since: tokio::time::Instant::now(),
                since_utc: chrono::Utc::now(),
                reason: "down".into(),
            }),
            ("degraded", "degraded")
        );
        let (key, reason) = ("file:///k/a".to_owned(), "disabled".to_owned());
        assert_eq!(
            status(KeyState::Revoked {
                key: key.clone(),
                reason: reason.clone()
            }),
            ("revoked", "revoked")
        );
        assert_eq!(
            status(KeyState::Unavailable { key, reason }),
            ("unavailable", "unavailable")
        );
    }

    #[test]
    fn rotate_request_parses_and_refuses_unknown_fields() {
        let r: RotateRequest =
            serde_json::from_str(r#"{"keyEncryptionKey":"file:///k/a","identity":"c"}"#)
                .expect("parse");
        assert_eq!(r.key_encryption_key, "file:///k/a");
        assert_eq!(r.identity.as_deref(), Some("c"));
        assert!(serde_json::from_str::<RotateRequest>(r#"{"key":"x"}"#).is_err());
    }
}
