//! The admin API and `valv encryption …` end to end: real valv processes whose KEK is
//! a key in the fake Azure Key Vault (in-process, on 127.0.0.1), as in key_lifecycle.rs.
//!
//! - `GET /admin/v1/encryption` reports the `az acr encryption show` fields, the key
//!   state and the registry-key generations; 401 without or with a wrong token, 404
//!   when no admin token is configured;
//! - manual rotation: with a versioned key id a new vault version is not adopted;
//!   rotate-key to it, to the versionless id (automatic rotation on), to another key
//!   (content reads back identical, also after a restart with the old key configured);
//!   an EC key is refused with 400 and nothing changes;
//! - the CLI subcommands against a running valv, with their exit codes.
//!
//! Waits are bounded polls of observable state, never sleeps as synchronisation.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::keyvault::{
    self, key_id, show, vault, versioned, within, ADMIN_TOKEN, CLIENT_ID, KEY, OID,
};
use common::{client, Valv};
use fake_keyvault::{FakeVault, KeyKind, Permission};
use reqwest::{Client, StatusCode};
use serde_json::Value;

const TOKEN: &str = ADMIN_TOKEN;

/// valv over the fake vault with 1 s key checks and rotation polls, and the admin API
/// enabled with `token` (off when `None`).
fn start_valv(v: &FakeVault, data: &Path, key: &str, token: Option<&str>) -> Valv {
    keyvault::start_valv(
        v,
        data,
        key,
        &["--key-check-interval", "1", "--rotation-poll-interval", "1"],
        token,
    )
}

async fn rotate(http: &Client, valv: &Valv, body: Value) -> (StatusCode, Value) {
    let r = http
        .post(valv.url("/admin/v1/encryption/rotate-key"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("POST rotate-key");
    let status = r.status();
    (status, r.json().await.expect("rotate-key JSON"))
}

fn kv(doc: &Value, field: &str) -> Value {
    doc["keyVaultProperties"][field].clone()
}

/// A 2 MB blob pushed to `app`; returns its bytes and digest.
async fn push_blob(http: &Client, valv: &Valv) -> (Vec<u8>, String) {
    let data: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let digest = keyvault::push_blob(http, valv, "app", &data).await;
    (data, digest)
}

async fn read_blob(http: &Client, valv: &Valv, digest: &str) -> Vec<u8> {
    let r = http
        .get(valv.url(&format!("/v2/app/blobs/{digest}")))
        .send()
        .await
        .expect("GET blob");
    assert_eq!(r.status(), StatusCode::OK, "GET blob");
    r.bytes().await.expect("body").to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_reports_the_key_and_needs_the_token() {
    let (v, first) = vault().await;
    let data = tempfile::tempdir().expect("tempdir");
    let valv = start_valv(&v, data.path(), &key_id(KEY), Some(TOKEN));
    let http = client();

    let doc = show(&http, &valv).await;
    assert_eq!(kv(&doc, "identity"), CLIENT_ID);
    assert_eq!(kv(&doc, "keyIdentifier"), key_id(KEY));
    assert_eq!(kv(&doc, "versionedKeyIdentifier"), versioned(KEY, &first));
    assert_eq!(kv(&doc, "keyRotationEnabled"), true);
    assert_eq!(kv(&doc, "lastKeyRotationTimestamp"), Value::Null);
    assert_eq!(doc["status"], "enabled");
    assert_eq!(doc["state"], "active");
    assert_eq!(doc["reason"], Value::Null);
    let generations = doc["registryKeyGenerations"]
        .as_array()
        .expect("generations");
    assert_eq!(generations.len(), 1);
    assert_eq!(generations[0]["generation"], 1);
    assert_eq!(
        generations[0]["versionedKeyIdentifier"],
        versioned(KEY, &first)
    );
    assert_eq!(generations[0]["state"], "active");
    assert!(generations[0]["created"].as_str().is_some());

    // No token, a wrong token, another scheme: 401 with the challenge.
    for auth in [None, Some("Bearer wrong-token"), Some("Basic YWRtaW46eA==")] {
        let mut req = http.get(valv.url("/admin/v1/encryption"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.expect("GET");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(
            r.headers()
                .get("www-authenticate")
                .and_then(|h| h.to_str().ok()),
            Some("Bearer realm=\"valv-admin\""),
            "{auth:?}"
        );
    }
    let r = http
        .post(valv.url("/admin/v1/encryption/rotate-key"))
        .bearer_auth("wrong-token")
        .json(&serde_json::json!({"keyEncryptionKey": key_id(KEY)}))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Malformed bodies and ids: 400 with a message, nothing changes.
    for body in [
        "not json".to_owned(),
        r#"{"key":"x"}"#.to_owned(),
        r#"{"keyEncryptionKey":"ftp://nope"}"#.to_owned(),
    ] {
        let r = http
            .post(valv.url("/admin/v1/encryption/rotate-key"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        let err: Value = r.json().await.expect("error JSON");
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{err}"
        );
    }
    assert_eq!(show(&http, &valv).await, doc, "nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_admin_api_does_not_exist() {
    let (v, _) = vault().await;
    let data = tempfile::tempdir().expect("tempdir");
    let valv = start_valv(&v, data.path(), &key_id(KEY), None);
    let http = client();
    for token in [None, Some(TOKEN)] {
        let mut req = http.get(valv.url("/admin/v1/encryption"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        assert_eq!(
            req.send().await.expect("GET").status(),
            StatusCode::NOT_FOUND
        );
    }
    let r = http
        .post(valv.url("/admin/v1/encryption/rotate-key"))
        .json(&serde_json::json!({"keyEncryptionKey": key_id(KEY)}))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_rotation_versions_keys_and_refusals() {
    let (v, first) = vault().await;
    let data = tempfile::tempdir().expect("tempdir");
    let pinned = versioned(KEY, &first);
    let mut valv = start_valv(&v, data.path(), &pinned, Some(TOKEN));
    let http = client();
    let (blob, digest) = push_blob(&http, &valv).await;

    let doc = show(&http, &valv).await;
    assert_eq!(kv(&doc, "keyIdentifier"), pinned);
    assert_eq!(kv(&doc, "keyRotationEnabled"), false);

    // A new vault version is not adopted under a versioned id: watch for three key
    // checks (1 s each, the same period as the rotation polls) and more than 3 s.
    let second = v.add_version(KEY).await.expect("add version").version;
    let checks_before = v.counters().unwrap_key;
    let started = Instant::now();
    within(
        Duration::from_secs(10),
        "three key checks after the new version",
        || async {
            let doc = show(&http, &valv).await;
            assert_eq!(
                kv(&doc, "versionedKeyIdentifier"),
                pinned,
                "a pinned version is never rotated automatically"
            );
            v.counters().unwrap_key >= checks_before + 3 && started.elapsed().as_secs() >= 3
        },
    )
    .await;

    // rotate-key to the new version.
    let (status, doc) = rotate(
        &http,
        &valv,
        serde_json::json!({"keyEncryptionKey": versioned(KEY, &second)}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(kv(&doc, "versionedKeyIdentifier"), versioned(KEY, &second));
    assert_eq!(kv(&doc, "keyIdentifier"), versioned(KEY, &second));
    assert_eq!(kv(&doc, "keyRotationEnabled"), false);
    assert!(kv(&doc, "lastKeyRotationTimestamp").as_str().is_some());
    assert_eq!(show(&http, &valv).await, doc, "show reports the rotation");

    // rotate-key to the versionless id: automatic rotation on, newest version in use.
    // Another identity than the node's is refused, and nothing changes.
    let third = v.add_version(KEY).await.expect("add version").version;
    let (status, err) = rotate(
        &http,
        &valv,
        serde_json::json!({"keyEncryptionKey": key_id(KEY), "identity": "other-client"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["code"], "IdentityNotSupported", "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("other-client") && m.contains(CLIENT_ID)),
        "{err}"
    );
    assert_eq!(
        kv(&show(&http, &valv).await, "versionedKeyIdentifier"),
        versioned(KEY, &second)
    );
    // The node's own identity is accepted.
    let (status, doc) = rotate(
        &http,
        &valv,
        serde_json::json!({"keyEncryptionKey": key_id(KEY), "identity": CLIENT_ID}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(kv(&doc, "keyIdentifier"), key_id(KEY));
    assert_eq!(kv(&doc, "keyRotationEnabled"), true);
    assert_eq!(kv(&doc, "versionedKeyIdentifier"), versioned(KEY, &third));
    assert_eq!(kv(&doc, "identity"), CLIENT_ID);

    // rotate-key to another key in the vault: content reads back identical.
    let other = v
        .create_key("second-kek", KeyKind::Rsa { bits: 2048 })
        .await
        .expect("create second key")
        .version;
    let (status, doc) = rotate(
        &http,
        &valv,
        serde_json::json!({"keyEncryptionKey": key_id("second-kek")}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(kv(&doc, "keyIdentifier"), key_id("second-kek"));
    assert_eq!(
        kv(&doc, "versionedKeyIdentifier"),
        versioned("second-kek", &other)
    );
    assert!(read_blob(&http, &valv, &digest).await == blob, "identical");

    // An EC key is refused with a clear message and nothing changes.
    let ec = v
        .create_key("ec-kek", KeyKind::EcP256)
        .await
        .expect("create EC key")
        .version;
    let before = show(&http, &valv).await;
    for id in [key_id("ec-kek"), versioned("ec-kek", &ec)] {
        let (status, err) = rotate(&http, &valv, serde_json::json!({"keyEncryptionKey": id})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{id}: {err}");
        let message = err["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("EC") && message.contains("RSA"),
            "{id}: {message}"
        );
    }
    assert_eq!(
        show(&http, &valv).await,
        before,
        "an EC key changes nothing"
    );

    // A restart still configured with the first key uses the keyring's key.
    valv.terminate();
    let valv = start_valv(&v, data.path(), &pinned, Some(TOKEN));
    let doc = show(&http, &valv).await;
    assert_eq!(kv(&doc, "keyIdentifier"), key_id("second-kek"));
    assert!(read_blob(&http, &valv, &digest).await == blob, "identical");
}

/// Runs `valv encryption <args>`; returns (exit code, stdout, stderr).
fn cli(args: &[&str], token: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_valv"));
    cmd.arg("encryption")
        .args(args)
        .env_remove("VALV_ADMIN_URL")
        .env_remove("VALV_ADMIN_TOKEN");
    if let Some(t) = token {
        cmd.env("VALV_ADMIN_TOKEN", t);
    }
    let out = cmd.output().expect("run valv encryption");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_shows_and_rotates() {
    let (v, first) = vault().await;
    let data = tempfile::tempdir().expect("tempdir");
    let valv = start_valv(&v, data.path(), &key_id(KEY), Some(TOKEN));
    let url = valv.base.clone();

    // show, token from the environment.
    let (code, out, err) =
        tokio::task::block_in_place(|| cli(&["show", "--url", &url], Some(TOKEN)));
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).expect("show prints JSON");
    assert_eq!(kv(&doc, "versionedKeyIdentifier"), versioned(KEY, &first));

    // A wrong token: the server's message, exit 1.
    let (code, _, err) = tokio::task::block_in_place(|| {
        cli(&["show", "--url", &url, "--token", "wrong-token"], None)
    });
    assert_eq!(code, 1);
    assert!(err.contains("401") && err.contains("Bearer"), "{err}");

    // rotate-key to a pinned new version, token from the flag.
    let second = v.add_version(KEY).await.expect("add version").version;
    let target = versioned(KEY, &second);
    let (code, out, err) = tokio::task::block_in_place(|| {
        cli(
            &[
                "rotate-key",
                "--key-encryption-key",
                &target,
                "--url",
                &url,
                "--token",
                TOKEN,
            ],
            None,
        )
    });
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).expect("rotate-key prints JSON");
    assert_eq!(kv(&doc, "versionedKeyIdentifier"), target);
    assert_eq!(kv(&doc, "keyRotationEnabled"), false);

    // A malformed key id: the server's 400 message, exit 1.
    let (code, _, err) = tokio::task::block_in_place(|| {
        cli(
            &[
                "rotate-key",
                "--key-encryption-key",
                "ftp://nope",
                "--url",
                &url,
            ],
            Some(TOKEN),
        )
    });
    assert_eq!(code, 1);
    assert!(err.contains("400") && err.contains("ftp://nope"), "{err}");

    // Nothing listening: exit 1 with a message.
    let (code, _, err) =
        tokio::task::block_in_place(|| cli(&["show", "--url", "http://127.0.0.1:1"], Some(TOKEN)));
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_answers_while_the_key_is_revoked() {
    let (v, first) = vault().await;
    let data = tempfile::tempdir().expect("tempdir");
    let valv = start_valv(&v, data.path(), &key_id(KEY), Some(TOKEN));
    let http = client();
    let (_, digest) = push_blob(&http, &valv).await;

    v.revoke(OID, &[Permission::UnwrapKey]).expect("revoke");
    within(
        Duration::from_secs(15),
        "revoked state reported",
        || async { show(&http, &valv).await["state"] == "revoked" },
    )
    .await;
    let doc = show(&http, &valv).await;
    assert_eq!(kv(&doc, "keyIdentifier"), key_id(KEY));
    assert_eq!(kv(&doc, "versionedKeyIdentifier"), versioned(KEY, &first));
    assert_eq!(
        doc["status"], "revoked",
        "status follows the key state: {doc}"
    );
    assert!(
        doc["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{doc}"
    );
    let r = http
        .get(valv.url(&format!("/v2/app/blobs/{digest}")))
        .send()
        .await
        .expect("GET blob");
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "content is refused");

    // Rotating needs the registry keys, which are gone while revoked: 403.
    let (status, err) = rotate(
        &http,
        &valv,
        serde_json::json!({"keyEncryptionKey": key_id(KEY)}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    assert_eq!(err["error"]["code"], "KeyRevoked", "{err}");

    v.grant(OID, &[Permission::UnwrapKey]).expect("grant");
    within(Duration::from_secs(15), "active again", || async {
        show(&http, &valv).await["state"] == "active"
    })
    .await;
    assert_eq!(show(&http, &valv).await["status"], "enabled");
}

/// The admin error's status and code.
async fn admin_error(r: reqwest::Response) -> (StatusCode, String) {
    let status = r.status();
    let body: Value = r.json().await.expect("admin error JSON");
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    (status, code)
}

/// Every admin error code of registry/src/admin.rs a client can cause, with its
/// status, and nothing changed by any of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_error_code_over_http() {
    let (v, _) = vault().await;
    let data = tempfile::tempdir().expect("tempdir");
    let valv = start_valv(&v, data.path(), &key_id(KEY), Some(TOKEN));
    let http = client();
    let before = show(&http, &valv).await;
    let post = |path: &str, body: Vec<u8>| {
        http.post(valv.url(path))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let rotate_to = |id: String| {
        post(
            "/admin/v1/encryption/rotate-key",
            serde_json::to_vec(&serde_json::json!({ "keyEncryptionKey": id })).expect("json"),
        )
    };

    let ec = v
        .create_key("ec-kek", KeyKind::EcP256)
        .await
        .expect("create EC key")
        .version;
    let too_large = {
        let mut b = br#"{"keyEncryptionKey":""#.to_vec();
        b.resize(64 * 1024 + 1, b'a');
        b
    };
    let cases: Vec<(&str, reqwest::Response, StatusCode, &str)> = vec![
        (
            "a file:// key for a Key Vault registry",
            rotate_to(format!("file://{}/keys/k", data.path().display()))
                .await
                .expect("POST"),
            StatusCode::BAD_REQUEST,
            "KeyProviderMismatch",
        ),
        (
            "a body over 64 KiB",
            post("/admin/v1/encryption/rotate-key", too_large)
                .await
                .expect("POST"),
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
        ),
        (
            "a body that is not the request",
            post("/admin/v1/encryption/rotate-key", b"{\"key\":1}".to_vec())
                .await
                .expect("POST"),
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
        ),
        (
            "a sweep body that is not the request",
            post("/admin/v1/storage/sweep", b"not json".to_vec())
                .await
                .expect("POST"),
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
        ),
        (
            "a malformed key id",
            rotate_to("ftp://nope".to_owned()).await.expect("POST"),
            StatusCode::BAD_REQUEST,
            "InvalidKeyIdentifier",
        ),
        (
            "an EC key",
            rotate_to(versioned("ec-kek", &ec)).await.expect("POST"),
            StatusCode::BAD_REQUEST,
            "KeyMisconfigured",
        ),
        (
            "no token",
            http.get(valv.url("/admin/v1/encryption"))
                .send()
                .await
                .expect("GET"),
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
        ),
    ];
    for (what, r, status, code) in cases {
        assert_eq!(admin_error(r).await, (status, code.to_owned()), "{what}");
    }

    // The vault down: a versionless rotate-key cannot learn the newest version.
    v.set_outage(fake_keyvault::Outage::Unavailable);
    let r = rotate_to(key_id(KEY)).await.expect("POST");
    assert_eq!(
        admin_error(r).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "KeyVaultUnavailable".to_owned()
        ),
        "rotate-key while the vault is unreachable"
    );
    v.set_outage(fake_keyvault::Outage::None);
    assert_eq!(
        show(&http, &valv).await["keyVaultProperties"],
        before["keyVaultProperties"],
        "no refusal changed anything"
    );
}

/// While the key is revoked `show` reads the keyring from the store: with its newest
/// object unreadable it answers 503 StorageUnavailable, with no keyring 503
/// KeyringMissing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_while_revoked_reports_a_missing_or_unreadable_keyring() {
    let (v, _) = vault().await;
    let data = tempfile::tempdir().expect("tempdir");
    let valv = start_valv(&v, data.path(), &key_id(KEY), Some(TOKEN));
    let http = client();
    v.revoke(OID, &[Permission::UnwrapKey]).expect("revoke");
    within(Duration::from_secs(15), "revoked", || async {
        show(&http, &valv).await["state"] == "revoked"
    })
    .await;
    let keyring = data.path().join("store").join("keyring");
    let get = || async {
        http.get(valv.url("/admin/v1/encryption"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET")
    };

    // A newer keyring object that is not a keyring document.
    let newest = std::fs::read_dir(&keyring)
        .expect("keyring dir")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .expect("a keyring object");
    let bogus = keyring.join(format!("{:020}", newest + 1));
    std::fs::write(&bogus, b"not a keyring").expect("write");
    assert_eq!(
        admin_error(get().await).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "StorageUnavailable".to_owned()
        )
    );
    std::fs::remove_file(&bogus).expect("remove");

    // No keyring at all.
    let moved = data.path().join("keyring.moved");
    std::fs::rename(&keyring, &moved).expect("move the keyring away");
    assert_eq!(
        admin_error(get().await).await,
        (StatusCode::SERVICE_UNAVAILABLE, "KeyringMissing".to_owned())
    );
    // Put back, it answers again.
    std::fs::rename(&moved, &keyring).expect("move the keyring back");
    assert_eq!(show(&http, &valv).await["state"], "revoked");
}

/// rotate-key to a version whose unwrap answers other bytes than it wrapped (the
/// fake's corrupt-unwrap fault): 400 `KeyIntegrity`, nothing changed, content still
/// readable; the same rotation succeeds once the vault answers correctly again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_unwraps_other_bytes_is_refused_with_key_integrity() {
    let (v, first) = vault().await;
    let data = tempfile::tempdir().expect("tempdir");
    // A versioned key (no rotation polling) and no key check during the test: only
    // the rotation meets the fault.
    let valv = keyvault::start_valv(
        &v,
        data.path(),
        &versioned(KEY, &first),
        &["--key-check-interval", "3600"],
        Some(TOKEN),
    );
    let http = client();
    let (bytes, digest) = push_blob(&http, &valv).await;
    let before = show(&http, &valv).await;
    let second = v.add_version(KEY).await.expect("add version").version;

    v.set_corrupt_unwrap(true);
    let (status, body) = rotate(
        &http,
        &valv,
        serde_json::json!({ "keyEncryptionKey": versioned(KEY, &second) }),
    )
    .await;
    v.set_corrupt_unwrap(false);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "KeyIntegrity", "{body}");
    let after = show(&http, &valv).await;
    assert_eq!(
        after["keyVaultProperties"], before["keyVaultProperties"],
        "a refused rotation changed the key"
    );
    assert_eq!(
        after["registryKeyGenerations"],
        before["registryKeyGenerations"]
    );
    assert_eq!(after["state"], "active");
    assert_eq!(read_blob(&http, &valv, &digest).await, bytes);

    let (status, body) = rotate(
        &http,
        &valv,
        serde_json::json!({ "keyEncryptionKey": versioned(KEY, &second) }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        kv(&show(&http, &valv).await, "keyIdentifier"),
        versioned(KEY, &second)
    );
    assert_eq!(read_blob(&http, &valv, &digest).await, bytes);
}
