//! `valv dev-keyvault`: the fake Key Vault as a process. It announces its address,
//! serves the Key Vault data plane and the token endpoint, keeps its keys in `--state`
//! across restarts, stops cleanly on SIGTERM, and refuses a non-loopback address.
//!
//! Only with the cargo feature `dev-keyvault`, which this crate's dev-dependency on
//! itself turns on for every test build.
#![cfg(feature = "dev-keyvault")]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

struct DevVault {
    child: Child,
    url: String,
}

impl Drop for DevVault {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(state: &Path) -> DevVault {
    let mut child = Command::new(env!("CARGO_BIN_EXE_valv"))
        .args(["dev-keyvault", "--listen", "127.0.0.1:0", "--state"])
        .arg(state)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn valv dev-keyvault");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(url) = line.strip_prefix("listening on ") {
                let _ = tx.send(url.trim().to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("dev-keyvault reports 'listening on' within 60 s");
    DevVault { child, url }
}

async fn post_json(http: &reqwest::Client, url: &str, body: Value) -> reqwest::Response {
    http.post(url).json(&body).send().await.expect("POST")
}

/// Registers an identity with every key permission and returns a client-credentials token.
async fn token(http: &reqwest::Client, vault: &DevVault) -> String {
    let r = post_json(
        http,
        &format!("{}/_fake/identities", vault.url),
        json!({"object_id": "oid-1", "client_id": "client-1", "client_secret": "s3cret"}),
    )
    .await;
    assert_eq!(r.status(), 201, "register identity: {:?}", r.text().await);
    let r = post_json(
        http,
        &format!("{}/_fake/identities/oid-1/grant", vault.url),
        json!({"permissions": ["get", "list", "wrapKey", "unwrapKey"]}),
    )
    .await;
    assert_eq!(r.status(), 204);
    let tenant = "00000000-0000-0000-0000-0000000fa4e0";
    let r = http
        .post(format!("{}/{tenant}/oauth2/v2.0/token", vault.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&client_id=client-1&client_secret=s3cret&scope=https%3A%2F%2Fvault.azure.net%2F.default")
        .send()
        .await
        .expect("token request");
    assert_eq!(r.status(), 200, "client credentials");
    let v: Value = r.json().await.expect("token JSON");
    v["access_token"].as_str().expect("access_token").to_owned()
}

#[tokio::test]
async fn dev_keyvault_serves_wraps_and_keeps_its_keys_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    kms_client::install_tls_provider();
    let http = reqwest::Client::new();
    let mut vault = start(dir.path());

    let r = post_json(
        &http,
        &format!("{}/_fake/keys", vault.url),
        json!({"name": "registry-kek", "kty": "RSA", "key_size": 2048}),
    )
    .await;
    assert_eq!(r.status(), 201, "create key");
    let created: Value = r.json().await.expect("JSON");
    let kid = created["kid"].as_str().expect("kid").to_owned();
    let bearer = format!("Bearer {}", token(&http, &vault).await);

    let wrap = http
        .post(format!("{kid}/wrapkey?api-version=7.4"))
        .header("authorization", &bearer)
        .json(
            &json!({"alg": "RSA-OAEP-256", "value": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"}),
        )
        .send()
        .await
        .expect("wrapkey");
    assert_eq!(wrap.status(), 200, "wrapkey");
    let wrapped: Value = wrap.json().await.expect("JSON");
    assert_eq!(wrapped["kid"], kid.as_str());

    // SIGTERM: a clean exit.
    let pid = vault.child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = vault.child.wait().expect("wait");
    assert!(exit.success(), "dev-keyvault exits 0 on SIGTERM: {exit}");

    // Same state directory: the key, the identity and the token survive, on a new port.
    vault = start(dir.path());
    let kid_now = kid.replace(
        kid.split('/').nth(2).expect("host in kid"),
        vault.url.trim_start_matches("http://"),
    );
    let unwrap = http
        .post(format!("{kid_now}/unwrapkey?api-version=7.4"))
        .header("authorization", &bearer)
        .json(&json!({"alg": "RSA-OAEP-256", "value": wrapped["value"]}))
        .send()
        .await
        .expect("unwrapkey");
    assert_eq!(unwrap.status(), 200, "unwrapkey after restart");
    let unwrapped: Value = unwrap.json().await.expect("JSON");
    assert_eq!(
        unwrapped["value"], "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
        "the same 32 bytes come back"
    );
}

#[test]
fn dev_keyvault_refuses_a_non_loopback_address() {
    let out = Command::new(env!("CARGO_BIN_EXE_valv"))
        .args(["dev-keyvault", "--listen", "0.0.0.0:0"])
        .output()
        .expect("run valv dev-keyvault");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("127.0.0.1"), "stderr says why: {err}");
}
