//! One Key Vault REST call: the bearer token, the request, retries through
//! [`crate::retry`], and what a failed call was before an operation classifies it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::credential::Credential;
use super::wire::ErrorBody;
use crate::retry::{self, retry_after, transient_status, Attempt, RetryPolicy};
use crate::KmsError;

/// What went wrong with one vault call, before the operation gives it a class.
#[derive(Debug)]
pub(super) enum Failure {
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
    pub fn describe(&self) -> String {
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

    /// Key Vault refused the call because the version is disabled (403 `KeyDisabled`).
    pub fn is_key_disabled(&self) -> bool {
        matches!(self, Failure::Status { status: 403, inner: Some(i), .. } if i == "KeyDisabled")
            || matches!(self, Failure::Status { status: 403, message, .. } if message.contains("disabled key"))
    }

    /// Gives a failed vault call its class (DESIGN §6).
    pub fn classify(self, subject: &dyn std::fmt::Display, op: &str) -> KmsError {
        let what = format!("{op}: {}", self.describe());
        match self {
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

    fn from_status(status: u16, body: &str) -> Failure {
        let e = ErrorBody::parse(body);
        Failure::Status {
            status,
            code: if e.code.is_empty() {
                "(no error code)".to_owned()
            } else {
                e.code
            },
            inner: e.inner,
            message: e.message,
        }
    }
}

/// The HTTP side of the provider: one client, one credential, one retry policy.
#[derive(Debug)]
pub(super) struct VaultClient {
    pub credential: Arc<Credential>,
    http: reqwest::Client,
    request_timeout: Duration,
    retry: RetryPolicy,
}

impl VaultClient {
    pub fn new(
        credential: Arc<Credential>,
        http: reqwest::Client,
        request_timeout: Duration,
        retry: RetryPolicy,
    ) -> Self {
        VaultClient {
            credential,
            http,
            request_timeout,
            retry,
        }
    }

    /// One vault call with token handling and retries. `subject` names the key in
    /// errors.
    pub async fn call(
        &self,
        subject: &str,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        // A 401 gets one retry with a fresh token per call; it uses up no attempt.
        let refreshed = AtomicBool::new(false);
        let attempt = |_| self.attempt(subject, &method, url, body, &refreshed);
        match retry::run(&self.retry, subject, attempt).await {
            Ok(result) => result,
            Err(gave_up) => Err(Failure::Kms(KmsError::transient(
                subject,
                gave_up.to_string(),
            ))),
        }
    }

    async fn attempt(
        &self,
        subject: &str,
        method: &reqwest::Method,
        url: &str,
        body: Option<&Value>,
        refreshed: &AtomicBool,
    ) -> Attempt<Result<Value, Failure>> {
        loop {
            let token = match self.credential.token().await {
                Ok(t) => t,
                // The token request has had its own retries.
                Err(e) => return Attempt::Done(Err(Failure::Kms(rename_subject(e, subject)))),
            };
            let mut req = self
                .http
                .request(method.clone(), url)
                .bearer_auth(token.secret())
                .timeout(self.request_timeout);
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = match req.send().await {
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
                return Attempt::Done(resp.json::<Value>().await.map_err(|e| {
                    Failure::Kms(KmsError::misconfigured(
                        subject,
                        format!("Key Vault answered {status} with a malformed body: {e}"),
                    ))
                }));
            }
            let wait = retry_after(resp.headers());
            let text = resp.text().await.unwrap_or_default();
            let failure = Failure::from_status(status.as_u16(), &text);
            if status.as_u16() == 401 && !refreshed.swap(true, Ordering::Relaxed) {
                self.credential.invalidate(&token).await;
                continue;
            }
            if transient_status(status.as_u16()) {
                return Attempt::Transient {
                    why: failure.describe(),
                    retry_after: wait,
                };
            }
            return Attempt::Done(Err(failure));
        }
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::VersionedKeyId;

    #[test]
    fn error_bodies_are_classified() {
        let id: VersionedKeyId =
            "https://v.vault.azure.net/keys/k/0123456789abcdef0123456789abcdef"
                .parse()
                .unwrap();
        let f = |status, body: &str| Failure::from_status(status, body);
        let forbidden =
            r#"{"error":{"code":"Forbidden","message":"no","innererror":{"code":"KeyDisabled"}}}"#;
        assert!(f(403, forbidden).is_key_disabled());
        assert!(matches!(
            f(403, forbidden).classify(&id, "get"),
            KmsError::Revoked { .. }
        ));
        assert!(matches!(
            f(404, r#"{"error":{"code":"KeyNotFound","message":"x"}}"#).classify(&id, "get"),
            KmsError::Revoked { .. }
        ));
        let bad = r#"{"error":{"code":"BadParameter","message":"Decryption failed."}}"#;
        assert!(matches!(
            f(400, bad).classify(&id, "unwrapKey"),
            KmsError::InvalidCiphertext { .. }
        ));
        assert!(matches!(
            f(400, bad).classify(&id, "wrapKey"),
            KmsError::Misconfigured { .. }
        ));
        let e = f(401, "not json").classify(&id, "get");
        assert!(matches!(e, KmsError::Revoked { .. }));
        assert!(e.to_string().contains(&id.to_string()));
    }
}
