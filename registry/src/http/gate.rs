//! What a routed request passes before its handler runs: authentication (not yet
//! implemented; its place is marked below) and then the key gate.
//!
//! The key gate refuses content while the registry's keys are unusable (DESIGN §7):
//! 403 `DENIED` naming the key after a revocation, 503 `UNAVAILABLE` once an outage has
//! outlasted the grace. The version check, the health endpoints and the admin API
//! (an operator must be able to see and fix a revoked key) keep answering.

use http::Request;

use crate::app::App;
use crate::http::body::RequestBody;
use crate::http::conn::Connection;
use crate::http::errors::{ApiError, ErrorCode};
use crate::http::routes::Route;
use crate::keys::KeyState;

/// Admits `req` for `route`, or answers the error to send instead.
pub fn admit(
    app: &App,
    _conn: &Connection,
    route: &Route,
    _req: &Request<RequestBody>,
) -> Result<(), ApiError> {
    // AUTHENTICATION GOES HERE. A registry authenticator (bearer tokens, basic auth)
    // runs first, before the key gate, so an unauthenticated client learns nothing
    // about the key state: it decides from `route` and the request's headers, answers
    // 401 `UNAUTHORIZED` with a `WWW-Authenticate` challenge (or 403 `DENIED`), and
    // leaves `/healthz` and `/readyz` open. It belongs in its own module beside this
    // one (`http/auth.rs`), configured from `App`. The admin API keeps its own token
    // (`handlers::admin`). Nothing authenticates today: every request is admitted.
    if needs_keys(route) {
        key_gate(&app.key_status.get())?;
    }
    Ok(())
}

/// Whether serving `route` needs the registry keys (and so passes the key gate).
pub fn needs_keys(route: &Route) -> bool {
    match route {
        Route::Healthz
        | Route::Readyz
        | Route::ApiBase
        | Route::AdminEncryption
        | Route::AdminRotateKey
        | Route::AdminSweep => false,
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
