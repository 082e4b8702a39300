//! What a routed request passes before its handler runs: access control (who the
//! request is, through `crate::auth`, and whether it may do what its route needs),
//! then the key gate.
//!
//! Access control runs first, so an unauthenticated client learns nothing about the
//! key state. A refusal is the spec's: 401 `UNAUTHORIZED` with a `WWW-Authenticate`
//! challenge (Basic, or Bearer naming the token service, the service and the scope the
//! route needs), 403 `DENIED` for an authenticated caller without the right, 429
//! `TOOMANYREQUESTS` with `Retry-After` while failed authentications from the address
//! or for the user are over the limit. `/healthz`, `/readyz` and the token endpoint are
//! open; `/metrics` needs the admin role while access control is on.
//!
//! The key gate refuses content while the registry's keys are unusable (DESIGN §7):
//! 403 `DENIED` naming the key after a revocation, 503 `UNAVAILABLE` once an outage has
//! outlasted the grace. The version check, the health endpoints and the admin API
//! (an operator must be able to see and fix a revoked key) keep answering.

use http::header::{AUTHORIZATION, HOST, RETRY_AFTER, WWW_AUTHENTICATE};
use http::Request;

use crate::app::App;
use crate::auth::policy::Action;
use crate::auth::{Need, Principal, Refusal};
use crate::http::body::RequestBody;
use crate::http::conn::Connection;
use crate::http::errors::{ApiError, ErrorCode};
use crate::http::routes::Route;
use crate::keys::KeyState;

/// Admits `req` for `route`: answers who it is, or the error to send instead.
pub async fn admit(
    app: &App,
    conn: &Connection,
    route: &Route,
    req: &Request<RequestBody>,
) -> Result<Principal, ApiError> {
    let need = need(route);
    let principal = if need == Need::Nothing {
        Principal::Open
    } else {
        let authorization = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
        let principal = app
            .auth
            .authenticate(conn, authorization, need == Need::Admin)
            .await
            .map_err(|r| refusal(app, conn, req, r))?;
        app.auth
            .authorize(&principal, &need)
            .map_err(|r| refusal(app, conn, req, r))?;
        principal
    };
    if needs_keys(route) {
        key_gate(&app.key_status.get())?;
    }
    Ok(principal)
}

/// What `route` needs of its caller. Reads are pull; uploads and manifest pushes are
/// push (a mount's `from` is checked by its handler); deletes are delete.
pub fn need(route: &Route) -> Need<'_> {
    match route {
        Route::Healthz | Route::Readyz | Route::AuthToken { .. } => Need::Nothing,
        // The handler decides: open without access control, the admin role with it.
        Route::AdminEncryption
        | Route::AdminRotateKey
        | Route::AdminSweep
        | Route::AdminSealLinks
        | Route::Metrics => Need::Admin,
        Route::ApiBase => Need::Authenticated,
        Route::Catalog => Need::Catalog,
        Route::ListTags { repo }
        | Route::Referrers { repo, .. }
        | Route::GetManifest { repo, .. }
        | Route::GetBlob { repo, .. } => Need::Repository(repo, Action::Pull),
        Route::PutManifest { repo, .. }
        | Route::StartUpload { repo }
        | Route::UploadStatus { repo, .. }
        | Route::PatchUpload { repo, .. }
        | Route::FinishUpload { repo, .. }
        | Route::CancelUpload { repo, .. } => Need::Repository(repo, Action::Push),
        Route::DeleteManifest { repo, .. } | Route::DeleteBlob { repo, .. } => {
            Need::Repository(repo, Action::Delete)
        }
    }
}

/// The error response for a refusal.
pub fn refusal(app: &App, conn: &Connection, req: &Request<RequestBody>, r: Refusal) -> ApiError {
    match r {
        Refusal::Unauthenticated {
            message,
            scope,
            insufficient,
        } => {
            let host = req.headers().get(HOST).and_then(|h| h.to_str().ok());
            let challenge = app
                .auth
                .challenge(scope.as_deref(), insufficient, host, conn.tls);
            ApiError::new(ErrorCode::Unauthorized)
                .with_message(message)
                .with_header(WWW_AUTHENTICATE, challenge)
        }
        Refusal::Denied => ApiError::new(ErrorCode::Denied),
        Refusal::TooMany(wait) => ApiError::new(ErrorCode::TooManyRequests)
            .with_message("too many failed authentications; try again later")
            .with_header(RETRY_AFTER, retry_after(wait)),
    }
}

/// `Retry-After` seconds for `wait`, rounded up (at least 1).
pub fn retry_after(wait: std::time::Duration) -> String {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
        .max(1)
        .to_string()
}

/// Whether serving `route` needs the registry keys (and so passes the key gate).
pub fn needs_keys(route: &Route) -> bool {
    match route {
        Route::Healthz
        | Route::Readyz
        | Route::Metrics
        | Route::AuthToken { .. }
        | Route::ApiBase
        | Route::AdminEncryption
        | Route::AdminRotateKey
        | Route::AdminSweep
        | Route::AdminSealLinks => false,
        Route::Catalog
        | Route::ListTags { .. }
        | Route::Referrers { .. }
        | Route::GetManifest { .. }
        | Route::PutManifest { .. }
        | Route::DeleteManifest { .. }
        | Route::GetBlob { .. }
        | Route::DeleteBlob { .. }
        | Route::StartUpload { .. }
        | Route::UploadStatus { .. }
        | Route::PatchUpload { .. }
        | Route::FinishUpload { .. }
        | Route::CancelUpload { .. } => true,
    }
}

/// `Ok` when content may be served in `state`; otherwise the error every content
/// request gets.
pub fn key_gate(state: &KeyState) -> Result<(), ApiError> {
    match state {
        KeyState::Active | KeyState::Degraded { .. } => Ok(()),
        KeyState::Revoked { key, reason } => Err(ApiError::new(ErrorCode::Denied).with_message(
            format!("the registry's encryption key {key} is revoked or unusable: {reason}"),
        )),
        KeyState::Unavailable { key, reason } => Err(ApiError::new(ErrorCode::Unavailable)
            .with_message(format!(
                "the key vault holding {key} cannot be reached ({reason}); try again later"
            ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn the_gate_refuses_by_state() {
        assert!(key_gate(&KeyState::Active).is_ok());
        let revoked = key_gate(&KeyState::Revoked {
            key: "file:///k/a".into(),
            reason: "disabled".into(),
        })
        .expect_err("revoked");
        assert_eq!(revoked.status, StatusCode::FORBIDDEN);
        assert!(revoked.message.contains("file:///k/a"));
        let unavailable = key_gate(&KeyState::Unavailable {
            key: "file:///k/a".into(),
            reason: "503".into(),
        })
        .expect_err("unavailable");
        assert_eq!(unavailable.status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn admin_and_health_pass_content_does_not() {
        assert!(!needs_keys(&Route::AdminEncryption));
        assert!(!needs_keys(&Route::Readyz));
        assert!(needs_keys(&Route::Catalog));
    }
}
