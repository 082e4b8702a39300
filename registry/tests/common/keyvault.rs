//! valv over the fake Azure Key Vault, for the key-lifecycle and admin tests: a vault
//! (in-process, on 127.0.0.1) with one RSA key and a service principal allowed
//! everything, and valv started against it with client-secret credentials.

#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use fake_keyvault::{Config, FakeVault, IdentitySpec, KeyKind, Permission};
use reqwest::{Client, StatusCode};

use super::Valv;

/// The vault URL key ids name; `VALV_KEYVAULT_ENDPOINT` sends it to the fake.
pub const VAULT: &str = "https://fakevault.vault.azure.net";
pub const KEY: &str = "registry-kek";
pub const OID: &str = "valv-identity";
pub const CLIENT_ID: &str = "valv-client";
/// Test-only credentials: the fake accepts them, nothing else does.
pub const SECRET: &str = "test-only-secret";
pub const ADMIN_TOKEN: &str = "test-only-admin-token";

/// A fake vault with [`KEY`] (RSA 2048) and [`OID`] granted every permission; returns
/// the vault and the key's first version.
pub async fn vault() -> (FakeVault, String) {
    let v = FakeVault::start(Config::default())
        .await
        .expect("fake vault starts");
    let first = v
        .create_key(KEY, KeyKind::Rsa { bits: 2048 })
        .await
        .expect("create key");
    let mut id = IdentitySpec::new(OID, CLIENT_ID);
    id.client_secret = Some(SECRET.to_owned());
    v.register_identity(id).expect("register identity");
    v.grant(OID, &Permission::ALL).expect("grant");
    (v, first.version)
}

pub fn key_id(name: &str) -> String {
    format!("{VAULT}/keys/{name}")
}

pub fn versioned(name: &str, version: &str) -> String {
    format!("{VAULT}/keys/{name}/{version}")
}

/// Starts valv with `--key-id key` and `args`, authenticating to the fake vault with
/// a client secret, and the admin API enabled with `admin_token` (off when `None`).
pub fn start_valv(
    v: &FakeVault,
    data: &Path,
    key: &str,
    args: &[&str],
    admin_token: Option<&str>,
) -> Valv {
    start_valv_with_env(v, data, key, args, admin_token, &[])
}

/// [`start_valv`] with more environment variables (`extra` wins over the defaults).
pub fn start_valv_with_env(
    v: &FakeVault,
    data: &Path,
    key: &str,
    args: &[&str],
    admin_token: Option<&str>,
    extra: &[(&str, &str)],
) -> Valv {
    let url = v.url();
    let tenant = v.tenant_id().to_owned();
    let mut all = vec!["--key-id", key];
    all.extend_from_slice(args);
    let mut env = vec![
        ("VALV_KEYVAULT_ENDPOINT", url.as_str()),
        ("AZURE_AUTHORITY_HOST", url.as_str()),
        ("VALV_IMDS_ENDPOINT", url.as_str()),
        ("AZURE_TENANT_ID", tenant.as_str()),
        ("AZURE_CLIENT_ID", CLIENT_ID),
        ("AZURE_CLIENT_SECRET", SECRET),
        ("AZURE_FEDERATED_TOKEN_FILE", ""),
        ("VALV_ADMIN_TOKEN", admin_token.unwrap_or("")),
    ];
    env.extend_from_slice(extra);
    Valv::start_with_env(data, &all, &env)
}

/// `GET /admin/v1/encryption` with [`ADMIN_TOKEN`].
pub async fn show(http: &Client, valv: &Valv) -> serde_json::Value {
    let r = http
        .get(valv.url("/admin/v1/encryption"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("GET /admin/v1/encryption");
    assert_eq!(r.status(), StatusCode::OK, "admin show");
    r.json().await.expect("admin JSON")
}

/// Pushes `data` to `repo` with one POST; returns its digest.
pub async fn push_blob(http: &Client, valv: &Valv, repo: &str, data: &[u8]) -> String {
    let digest = super::sha256(data);
    let r = http
        .post(valv.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
        .body(data.to_vec())
        .send()
        .await
        .expect("POST blob");
    assert_eq!(r.status(), StatusCode::CREATED, "push blob");
    digest
}

/// Polls `probe` every 100 ms until it returns true or `limit` passes; returns the
/// time it took, or panics with `what`. A bounded wait on observable state.
pub async fn within<F, Fut>(limit: Duration, what: &str, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if probe().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
