//! State directory persistence across restarts, and stopping the server.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

mod common;

use common::*;
use fake_keyvault::{Config, FakeVault, KeyKind, Permission};
use reqwest::StatusCode;

#[tokio::test]
async fn state_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::with_config(Config::persistent(dir.path())).await;
    let v1 = env.vault.create_key("p", RSA2048).await.unwrap();
    let v2 = env.vault.add_version("p").await.unwrap();
    env.vault.create_key("ec", KeyKind::EcP256).await.unwrap();
    env.vault.create_key("gone", RSA2048).await.unwrap();
    env.vault.delete_key("gone").unwrap();
    env.vault
        .set_enabled("p", Some(&v2.version), false)
        .unwrap();
    env.vault
        .set_expiry("p", Some(&v1.version), Some(4_000_000_000))
        .unwrap();
    env.vault.revoke(OID, &[Permission::List]).unwrap();
    let (_, wrapped) = env.wrap(&format!("p/{}", v1.version), b"persist me").await;
    let (_, before) = json_of(env.get(&format!("/keys/p/{}?{API}", v1.version)).await).await;
    let token = env.token.clone();
    env.vault.shutdown().await;

    let pem = std::fs::read_to_string(
        dir.path()
            .join("keys/p")
            .join(format!("{}.pem", v1.version)),
    )
    .unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));

    let vault = FakeVault::start(Config::persistent(dir.path()))
        .await
        .unwrap();
    let env2 = Env {
        vault,
        http: {
            let _ = rustls::crypto::ring::default_provider().install_default();
            reqwest::Client::new()
        },
        token,
    };
    let (status, after) = json_of(env2.get(&format!("/keys/p/{}?{API}", v1.version)).await).await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after["key"]["n"], before["key"]["n"]);
    assert_eq!(after["attributes"], before["attributes"]);
    assert_eq!(after["attributes"]["exp"], 4_000_000_000i64);
    let (status, body) = env2
        .unwrap_status(&format!("p/{}", v1.version), &wrapped)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(unb64(body["value"].as_str().unwrap()), b"persist me");
    let (status, body) = json_of(env2.get(&format!("/keys/p/{}?{API}", v2.version)).await).await;
    assert_kv_error(status, &body, 403, "Forbidden", Some("KeyDisabled"));
    let (status, body) = json_of(env2.get(&format!("/keys/gone?{API}")).await).await;
    assert_kv_error(status, &body, 404, "KeyNotFound", None);
    let (status, body) = json_of(env2.get(&format!("/keys/p/versions?{API}")).await).await;
    assert_kv_error(status, &body, 403, "Forbidden", Some("ForbiddenByPolicy"));
    let (_, body) = json_of(env2.get(&format!("/keys/ec?{API}")).await).await;
    assert_eq!(body["key"]["kty"], "EC");
    env2.vault.recover_key("gone").unwrap();
    assert_eq!(
        env2.get(&format!("/keys/gone?{API}")).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn corrupt_state_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("state.json"), b"{\"keys\": 5}").unwrap();
    let err = FakeVault::start(Config::persistent(dir.path()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
}

#[tokio::test]
async fn in_memory_state_is_gone_after_restart() {
    let env = Env::start().await;
    env.vault.create_key("m", RSA2048).await.unwrap();
    env.vault.shutdown().await;
    let env = Env::start().await;
    let (status, _) = json_of(env.get(&format!("/keys/m?{API}")).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn shutdown_and_drop_stop_listening() {
    let vault = FakeVault::start(Config::default()).await.unwrap();
    let addr = vault.addr();
    assert!(vault.url().starts_with("http://127.0.0.1:"));
    vault.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    let vault = FakeVault::start(Config::default()).await.unwrap();
    let addr = vault.addr();
    drop(vault);
    // Abort is asynchronous: re-check within a bounded deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "listener still open after drop"
        );
        tokio::task::yield_now().await;
    }
}
