//! Shared helpers for the fake's black-box tests: a started fake, an HTTP client,
//! and one identity holding every permission.
#![allow(dead_code)] // each test binary uses a different subset
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use base64::Engine as _;
use fake_keyvault::{Config, FakeVault, IdentitySpec, KeyKind, Permission};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

pub const API: &str = "api-version=7.4";
pub const OID: &str = "11111111-0000-0000-0000-000000000001";
pub const CLIENT: &str = "22222222-0000-0000-0000-000000000002";
pub const SECRET: &str = "s3cret";
pub const RSA2048: KeyKind = KeyKind::Rsa { bits: 2048 };

pub struct Env {
    pub vault: FakeVault,
    pub http: reqwest::Client,
    pub token: String,
}

impl Env {
    pub async fn start() -> Env {
        Env::with_config(Config::default()).await
    }

    pub async fn with_config(config: Config) -> Env {
        let vault = FakeVault::start(config).await.expect("start fake");
        let mut spec = IdentitySpec::new(OID, CLIENT);
        spec.client_secret = Some(SECRET.into());
        vault.register_identity(spec).unwrap();
        vault.grant(OID, &Permission::ALL).unwrap();
        let token = vault.issue_token(OID).unwrap();
        Env {
            vault,
            http: {
                // reqwest's rustls (enabled by the workspace) needs a provider.
                let _ = rustls::crypto::ring::default_provider().install_default();
                reqwest::Client::new()
            },
            token,
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.vault.url())
    }

    pub async fn get(&self, path_and_query: &str) -> Response {
        self.http
            .get(self.url(path_and_query))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, path_and_query: &str, body: Value) -> Response {
        self.http
            .post(self.url(path_and_query))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Wraps via the fake; returns (kid, wrapped bytes).
    pub async fn wrap(&self, key_path: &str, plaintext: &[u8]) -> (String, Vec<u8>) {
        let r = self
            .post(
                &format!("/keys/{key_path}/wrapkey?{API}"),
                json!({"alg": "RSA-OAEP-256", "value": b64(plaintext)}),
            )
            .await;
        let (status, body) = json_of(r).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        (
            body["kid"].as_str().unwrap().to_owned(),
            unb64(body["value"].as_str().unwrap()),
        )
    }

    pub async fn unwrap_status(&self, key_path: &str, wrapped: &[u8]) -> (StatusCode, Value) {
        let r = self
            .post(
                &format!("/keys/{key_path}/unwrapkey?{API}"),
                json!({"alg": "RSA-OAEP-256", "value": b64(wrapped)}),
            )
            .await;
        json_of(r).await
    }
}

pub async fn json_of(r: Response) -> (StatusCode, Value) {
    let status = r.status();
    let text = r.text().await.unwrap();
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, v)
}

/// Asserts a Key Vault error body and returns its message.
pub fn assert_kv_error(
    status: StatusCode,
    body: &Value,
    want_status: u16,
    code: &str,
    inner: Option<&str>,
) -> String {
    assert_eq!(status.as_u16(), want_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    match inner {
        Some(i) => assert_eq!(body["error"]["innererror"]["code"], i, "{body}"),
        None => assert!(body["error"].get("innererror").is_none(), "{body}"),
    }
    body["error"]["message"].as_str().unwrap().to_owned()
}

pub fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

pub fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}
