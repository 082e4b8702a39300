//! Key Vault data-plane behaviour over real HTTP: keys, versions, wrap/unwrap,
//! lifecycle, permissions, authentication and malformed requests.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

mod common;

use common::*;
use fake_keyvault::{Config, IdentitySpec, KeyKind, Permission, ValidityEnforcement};
use reqwest::StatusCode;
use rsa::{BigUint, Oaep, RsaPublicKey};
use serde_json::json;

#[tokio::test]
async fn create_get_wrap_unwrap_round_trip() {
    let env = Env::start().await;
    let created = env.vault.create_key("kek", RSA2048).await.unwrap();
    assert_eq!(created.version.len(), 32);

    for path in [
        "/keys/kek".to_owned(),
        format!("/keys/kek/{}", created.version),
    ] {
        let (status, body) = json_of(env.get(&format!("{path}?{API}")).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["key"]["kid"], created.kid);
        assert_eq!(body["key"]["kty"], "RSA");
        assert!(body["key"]["key_ops"]
            .as_array()
            .unwrap()
            .contains(&json!("unwrapKey")));
        assert_eq!(body["key"]["e"], "AQAB");
        assert_eq!(body["attributes"]["enabled"], true);
        assert_eq!(body["attributes"]["recoveryLevel"], "Recoverable+Purgeable");
        assert!(body["attributes"]["created"].as_i64().unwrap() > 1_600_000_000);
        assert!(body["attributes"].get("exp").is_none());
    }

    // Fake wraps, fake unwraps (versionless wrap answers with the versioned kid).
    let secret = [7u8; 32];
    let (kid, wrapped) = env.wrap("kek", &secret).await;
    assert_eq!(kid, created.kid);
    assert_eq!(wrapped.len(), 256);
    let (status, body) = env
        .unwrap_status(&format!("kek/{}", created.version), &wrapped)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["kid"], created.kid);
    assert_eq!(unb64(body["value"].as_str().unwrap()), secret);

    // Wrap locally with the public key from GET; the fake unwraps it.
    let (_, body) = json_of(env.get(&format!("/keys/kek?{API}")).await).await;
    let n = BigUint::from_bytes_be(&unb64(body["key"]["n"].as_str().unwrap()));
    let e = BigUint::from_bytes_be(&unb64(body["key"]["e"].as_str().unwrap()));
    let public = RsaPublicKey::new(n, e).unwrap();
    let local = public
        .encrypt(&mut rand::rngs::OsRng, Oaep::new::<sha2::Sha256>(), &secret)
        .unwrap();
    let (status, body) = env.unwrap_status("kek", &local).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(unb64(body["value"].as_str().unwrap()), secret);

    // RSA-OAEP (SHA-1) works too, and the SDK's casing of the path is accepted.
    let r = env
        .post(
            &format!("/keys/kek/wrapKey?{API}"),
            json!({"alg": "RSA-OAEP", "value": b64(b"abc")}),
        )
        .await;
    let (status, body) = json_of(r).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = env
        .post(
            &format!("/keys/kek/{}/unwrapKey?{API}", created.version),
            json!({"alg": "RSA-OAEP", "value": body["value"]}),
        )
        .await;
    let (status, body) = json_of(r).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(unb64(body["value"].as_str().unwrap()), b"abc");
}

#[tokio::test]
async fn versions_list_pages_with_next_link() {
    let env = Env::start().await;
    let mut kids = vec![env.vault.create_key("many", RSA2048).await.unwrap().kid];
    for _ in 1..30 {
        kids.push(env.vault.add_version("many").await.unwrap().kid);
    }

    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut next = Some(env.url(&format!("/keys/many/versions?{API}&maxresults=7")));
    while let Some(url) = next {
        let r = env
            .http
            .get(&url)
            .bearer_auth(&env.token)
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(r).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let value = body["value"].as_array().unwrap();
        pages.push(value.len());
        for item in value {
            assert_eq!(item["attributes"]["enabled"], true);
            assert!(item["tags"].is_object());
            seen.push(item["kid"].as_str().unwrap().to_owned());
        }
        next = body["nextLink"].as_str().map(str::to_owned);
        if let Some(link) = &next {
            assert!(
                link.starts_with(&format!("{}/keys/many/versions?", env.vault.url())),
                "{link}"
            );
            assert!(
                link.contains("api-version=7.4") && link.contains("maxresults=7"),
                "{link}"
            );
        } else {
            assert!(body["nextLink"].is_null());
        }
    }
    assert_eq!(pages, vec![7, 7, 7, 7, 2]);
    assert_eq!(seen, kids);

    // Default page size is 25.
    let (_, body) = json_of(env.get(&format!("/keys/many/versions?{API}")).await).await;
    assert_eq!(body["value"].as_array().unwrap().len(), 25);
    assert!(body["nextLink"].is_string());

    // The latest version is the newest one.
    let (_, body) = json_of(env.get(&format!("/keys/many?{API}")).await).await;
    assert_eq!(body["key"]["kid"], kids[29]);

    for bad in [
        "maxresults=0",
        "maxresults=26",
        "maxresults=x",
        "$skiptoken=nope",
    ] {
        let (status, body) =
            json_of(env.get(&format!("/keys/many/versions?{API}&{bad}")).await).await;
        assert_kv_error(status, &body, 400, "BadParameter", None);
    }
}

#[tokio::test]
async fn disabled_key_wraps_but_refuses_unwrap() {
    let env = Env::start().await;
    let v1 = env.vault.create_key("dis", RSA2048).await.unwrap();
    let (_, wrapped) = env.wrap("dis", b"0123456789abcdef0123456789abcdef").await;

    env.vault.set_enabled("dis", None, false).unwrap();
    let (kid, _) = env.wrap("dis", b"x").await;
    assert_eq!(kid, v1.kid, "wrapKey still works on a disabled key");
    let (status, body) = env
        .unwrap_status(&format!("dis/{}", v1.version), &wrapped)
        .await;
    let msg = assert_kv_error(status, &body, 403, "Forbidden", Some("KeyDisabled"));
    assert_eq!(msg, "Operation unwrapKey is not allowed on a disabled key.");
    let (status, body) = json_of(env.get(&format!("/keys/dis?{API}")).await).await;
    assert_kv_error(status, &body, 403, "Forbidden", Some("KeyDisabled"));
    let (_, body) = json_of(env.get(&format!("/keys/dis/versions?{API}")).await).await;
    assert_eq!(body["value"][0]["attributes"]["enabled"], false);

    env.vault
        .set_enabled("dis", Some(&v1.version), true)
        .unwrap();
    let (status, _) = env.unwrap_status("dis", &wrapped).await;
    assert_eq!(status, StatusCode::OK);

    // Versionless calls use the newest enabled version.
    let v2 = env.vault.add_version("dis").await.unwrap();
    assert_eq!(env.wrap("dis", b"x").await.0, v2.kid);
    env.vault
        .set_enabled("dis", Some(&v2.version), false)
        .unwrap();
    assert_eq!(env.wrap("dis", b"x").await.0, v1.kid);
}

#[tokio::test]
async fn validity_window_blocks_wrap_and_optionally_unwrap() {
    let now = chrono::Utc::now().timestamp();
    for (validity, unwrap_blocked) in [
        (ValidityEnforcement::KeyVault, false),
        (ValidityEnforcement::Strict, true),
    ] {
        let env = Env::with_config(Config {
            validity,
            ..Config::default()
        })
        .await;
        let v = env.vault.create_key("win", RSA2048).await.unwrap();
        let (_, wrapped) = env.wrap("win", b"secret").await;

        for (inner, set) in [
            ("KeyExpired", (Some(now - 10), None)),
            ("KeyNotYetValid", (None, Some(now + 3600))),
        ] {
            env.vault.set_expiry("win", None, set.0).unwrap();
            env.vault.set_not_before("win", None, set.1).unwrap();
            let r = env
                .post(
                    &format!("/keys/win/wrapkey?{API}"),
                    json!({"alg": "RSA-OAEP-256", "value": b64(b"x")}),
                )
                .await;
            let (status, body) = json_of(r).await;
            assert_kv_error(status, &body, 403, "Forbidden", Some(inner));
            let (status, body) = env
                .unwrap_status(&format!("win/{}", v.version), &wrapped)
                .await;
            if unwrap_blocked {
                assert_kv_error(status, &body, 403, "Forbidden", Some(inner));
            } else {
                assert_eq!(status, StatusCode::OK, "{body}");
            }
            let (_, body) = json_of(env.get(&format!("/keys/win?{API}")).await).await;
            assert_eq!(
                body["attributes"].get("exp").and_then(|v| v.as_i64()),
                set.0
            );
            assert_eq!(
                body["attributes"].get("nbf").and_then(|v| v.as_i64()),
                set.1
            );
        }
    }
}

#[tokio::test]
async fn soft_delete_then_recover() {
    let env = Env::start().await;
    let v = env.vault.create_key("gone", RSA2048).await.unwrap();
    let (_, wrapped) = env.wrap("gone", b"k").await;
    env.vault.delete_key("gone").unwrap();

    let (status, body) = json_of(env.get(&format!("/keys/gone?{API}")).await).await;
    let msg = assert_kv_error(status, &body, 404, "KeyNotFound", None);
    assert!(
        msg.starts_with("A key with (name/id) gone was not found in this key vault"),
        "{msg}"
    );
    let (status, body) = env
        .unwrap_status(&format!("gone/{}", v.version), &wrapped)
        .await;
    assert_kv_error(status, &body, 404, "KeyNotFound", None);
    let (status, body) = json_of(env.get(&format!("/keys/gone/versions?{API}")).await).await;
    assert_kv_error(status, &body, 404, "KeyNotFound", None);
    assert!(
        env.vault.create_key("gone", RSA2048).await.is_err(),
        "name is held while soft-deleted"
    );

    env.vault.recover_key("gone").unwrap();
    let (status, body) = env
        .unwrap_status(&format!("gone/{}", v.version), &wrapped)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn permissions_are_enforced_per_operation() {
    let env = Env::start().await;
    let v = env.vault.create_key("perm", RSA2048).await.unwrap();
    let (_, wrapped) = env.wrap("perm", b"k").await;
    env.vault
        .register_identity(IdentitySpec::new("oid-2", "client-2"))
        .unwrap();
    let token = env.vault.issue_token("oid-2").unwrap();
    let call = |perm: Permission| {
        let url = match perm {
            Permission::Get => env.url(&format!("/keys/perm?{API}")),
            Permission::List => env.url(&format!("/keys/perm/versions?{API}")),
            Permission::WrapKey => env.url(&format!("/keys/perm/wrapkey?{API}")),
            Permission::UnwrapKey => env.url(&format!("/keys/perm/{}/unwrapkey?{API}", v.version)),
        };
        let req = match perm {
            Permission::Get | Permission::List => env.http.get(url),
            Permission::WrapKey => env
                .http
                .post(url)
                .json(&json!({"alg": "RSA-OAEP-256", "value": b64(b"k")})),
            Permission::UnwrapKey => env
                .http
                .post(url)
                .json(&json!({"alg": "RSA-OAEP-256", "value": b64(&wrapped)})),
        };
        let req = req.bearer_auth(&token);
        async move { json_of(req.send().await.unwrap()).await }
    };
    for perm in Permission::ALL {
        let (status, body) = call(perm).await;
        let msg = assert_kv_error(status, &body, 403, "Forbidden", Some("ForbiddenByPolicy"));
        assert!(
            msg.contains(&format!(
                "does not have keys {} permission on key vault",
                perm.as_str()
            )),
            "{msg}"
        );
        assert!(msg.contains("oid=oid-2"), "{msg}");

        env.vault.grant("oid-2", &[perm]).unwrap();
        let (status, body) = call(perm).await;
        assert_eq!(status, StatusCode::OK, "{perm:?}: {body}");

        env.vault.revoke("oid-2", &[perm]).unwrap();
        let (status, _) = call(perm).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
}

#[tokio::test]
async fn missing_invalid_expired_or_orphaned_tokens_get_401() {
    let env = Env::start().await;
    env.vault.create_key("auth", RSA2048).await.unwrap();
    let url = env.url(&format!("/keys/auth?{API}"));

    let check = |r: reqwest::Response| async move {
        let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        let (status, body) = json_of(r).await;
        let msg = assert_kv_error(status, &body, 401, "Unauthorized", None);
        assert_eq!(msg, "AKV10000: Request is missing a Bearer or PoP token.");
        challenge
    };
    let challenge = check(env.http.get(&url).send().await.unwrap()).await;
    assert_eq!(
        challenge,
        format!(
            "Bearer authorization=\"{}/{}\", resource=\"https://vault.azure.net\"",
            env.vault.url(),
            env.vault.tenant_id()
        )
    );
    check(
        env.http
            .get(&url)
            .bearer_auth("made-up")
            .send()
            .await
            .unwrap(),
    )
    .await;
    check(
        env.http
            .get(&url)
            .basic_auth("a", Some("b"))
            .send()
            .await
            .unwrap(),
    )
    .await;

    // Expiry, injected rather than waited for.
    assert_eq!(
        env.get(&format!("/keys/auth?{API}")).await.status(),
        StatusCode::OK
    );
    env.vault.expire_all_tokens().unwrap();
    check(
        env.http
            .get(&url)
            .bearer_auth(&env.token)
            .send()
            .await
            .unwrap(),
    )
    .await;

    // A removed identity's fresh token stops working too.
    let token = env.vault.issue_token(OID).unwrap();
    assert_eq!(
        env.http
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    env.vault.remove_identity(OID).unwrap();
    check(env.http.get(&url).bearer_auth(&token).send().await.unwrap()).await;
}

#[tokio::test]
async fn malformed_requests_get_key_vault_shaped_400s() {
    let env = Env::start().await;
    let v = env.vault.create_key("bad", RSA2048).await.unwrap();
    let other = env.vault.add_version("bad").await.unwrap();
    let (_, wrapped_by_v) = env.wrap(&format!("bad/{}", v.version), b"k").await;

    let (status, body) = json_of(env.get("/keys/bad").await).await;
    let msg = assert_kv_error(status, &body, 400, "BadParameter", None);
    assert!(msg.contains("api-version"), "{msg}");

    let wrap_path = format!("/keys/bad/wrapkey?{API}");
    let wrap = |body: serde_json::Value| env.post(&wrap_path, body);
    for body in [
        json!({"alg": "RSA1_5", "value": b64(b"k")}),
        json!({"alg": "A256KW", "value": b64(b"k")}),
        json!({"value": b64(b"k")}),
        json!({"alg": "RSA-OAEP-256"}),
        json!({"alg": "RSA-OAEP-256", "value": "not base64!"}),
        json!({"alg": "RSA-OAEP-256", "value": b64(&[0u8; 300])}),
        json!([1, 2]),
    ] {
        let (status, resp) = json_of(wrap(body.clone()).await).await;
        assert_kv_error(status, &resp, 400, "BadParameter", None);
    }
    let r = env
        .http
        .post(env.url(&format!("/keys/bad/wrapkey?{API}")))
        .bearer_auth(&env.token)
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (status, resp) = json_of(r).await;
    assert_kv_error(status, &resp, 400, "BadParameter", None);
    let r = env
        .http
        .post(env.url(&format!("/keys/bad/wrapkey?{API}")))
        .bearer_auth(&env.token)
        .body(vec![b'x'; 200_000])
        .send()
        .await
        .unwrap();
    let (status, resp) = json_of(r).await;
    assert_kv_error(status, &resp, 400, "BadParameter", None);

    // Bytes not wrapped by this version, and garbage, fail the same way.
    for (path, bytes) in [
        (format!("bad/{}", other.version), wrapped_by_v.clone()),
        (format!("bad/{}", v.version), vec![1u8; 256]),
        (format!("bad/{}", v.version), vec![1u8; 3]),
    ] {
        let (status, resp) = env.unwrap_status(&path, &bytes).await;
        let msg = assert_kv_error(status, &resp, 400, "BadParameter", None);
        assert_eq!(msg, "Decryption failed.");
    }

    let (status, resp) = json_of(
        env.get(&format!("/keys/bad/{}?{API}", "0".repeat(32)))
            .await,
    )
    .await;
    let msg = assert_kv_error(status, &resp, 404, "KeyNotFound", None);
    assert!(msg.contains(&format!("bad/{}", "0".repeat(32))), "{msg}");
    let (status, resp) = json_of(env.get(&format!("/keys/nope?{API}")).await).await;
    assert_kv_error(status, &resp, 404, "KeyNotFound", None);
    for path in [
        format!("/keys/bad_name?{API}"),
        format!("/keys/a/b/c/d?{API}"),
        format!("/keys?{API}"),
    ] {
        let (status, resp) = json_of(env.get(&path).await).await;
        assert_kv_error(status, &resp, 400, "BadParameter", None);
    }
    let r = env
        .http
        .delete(env.url(&format!("/keys/bad?{API}")))
        .bearer_auth(&env.token)
        .send()
        .await
        .unwrap();
    let (status, resp) = json_of(r).await;
    assert_kv_error(status, &resp, 400, "BadParameter", None);
}

#[tokio::test]
async fn ec_keys_are_served_but_cannot_wrap() {
    let env = Env::start().await;
    let v = env.vault.create_key("ec", KeyKind::EcP256).await.unwrap();
    let (status, body) = json_of(env.get(&format!("/keys/ec?{API}")).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["key"]["kty"], "EC");
    assert_eq!(body["key"]["crv"], "P-256");
    assert_eq!(unb64(body["key"]["x"].as_str().unwrap()).len(), 32);
    assert!(body["key"].get("n").is_none());
    for op in ["wrapkey", "unwrapkey"] {
        let r = env
            .post(
                &format!("/keys/ec/{}/{op}?{API}", v.version),
                json!({"alg": "RSA-OAEP-256", "value": b64(&[1u8; 64])}),
            )
            .await;
        let (status, body) = json_of(r).await;
        let msg = assert_kv_error(status, &body, 400, "BadParameter", None);
        assert!(msg.contains("does not support"), "{msg}");
    }
}

#[tokio::test]
async fn control_api_over_http() {
    let env = Env::start().await;
    let ctl = |path: &str| env.url(&format!("/_fake{path}"));
    let (status, created) = json_of(
        env.http
            .post(ctl("/keys"))
            .json(&json!({"name": "c", "kty": "RSA", "key_size": 3072}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (_, body) = json_of(env.get(&format!("/keys/c?{API}")).await).await;
    assert_eq!(body["key"]["kid"], created["kid"]);
    assert_eq!(unb64(body["key"]["n"].as_str().unwrap()).len(), 384);

    let (status, added) =
        json_of(env.http.post(ctl("/keys/c/versions")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    let r = env
        .http
        .patch(ctl(&format!(
            "/keys/c/{}",
            added["version"].as_str().unwrap()
        )))
        .json(&json!({"enabled": false, "exp": 4_000_000_000i64}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (_, body) = json_of(env.get(&format!("/keys/c/versions?{API}")).await).await;
    assert_eq!(body["value"][1]["attributes"]["enabled"], false);
    assert_eq!(body["value"][1]["attributes"]["exp"], 4_000_000_000i64);
    assert_eq!(body["value"][0]["attributes"]["enabled"], true);
    let r = env
        .http
        .patch(ctl("/keys/c"))
        .json(&json!({"exp": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    assert_eq!(
        env.http
            .delete(ctl("/keys/c"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        env.get(&format!("/keys/c?{API}")).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        env.http
            .post(ctl("/keys/c/recover"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );

    let r = env
        .http
        .post(ctl("/identities"))
        .json(&json!({"object_id": "o9", "client_id": "c9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = env
        .http
        .post(ctl("/identities/o9/grant"))
        .json(&json!({"permissions": ["get"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (_, tok) = json_of(
        env.http
            .post(ctl("/identities/o9/token"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    // The newest version is disabled (403 KeyDisabled), so read the first one.
    let first = format!("/keys/c/{}?{API}", created["version"].as_str().unwrap());
    let token = tok["access_token"].as_str().unwrap();
    let r = env
        .http
        .get(env.url(&first))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = env
        .http
        .post(ctl("/identities/o9/revoke"))
        .json(&json!({"permissions": ["get"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = env
        .http
        .get(env.url(&first))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        env.http
            .post(ctl("/tokens/expire"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    let r = env
        .http
        .get(env.url(&first))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        env.http
            .delete(ctl("/identities/o9"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );

    // Control errors are Key-Vault-shaped too.
    for (req, want, code) in [
        (
            env.http
                .post(ctl("/keys"))
                .json(&json!({"name": "x", "key_size": 1024})),
            400,
            "BadParameter",
        ),
        (
            env.http
                .post(ctl("/keys"))
                .json(&json!({"name": "x", "kty": "oct"})),
            400,
            "BadParameter",
        ),
        (
            env.http.post(ctl("/keys")).json(&json!({"name": "c"})),
            409,
            "Conflict",
        ),
        (
            env.http.post(ctl("/keys")).body("nope"),
            400,
            "BadParameter",
        ),
        (
            env.http
                .patch(ctl("/keys/c"))
                .json(&json!({"enable": false})),
            400,
            "BadParameter",
        ),
        (env.http.post(ctl("/keys/zz/versions")), 404, "NotFound"),
        (
            env.http
                .post(ctl("/identities/none/grant"))
                .json(&json!({"permissions": ["purge"]})),
            400,
            "BadParameter",
        ),
        (
            env.http
                .post(ctl("/identities/none/grant"))
                .json(&json!({"permissions": ["get"]})),
            404,
            "NotFound",
        ),
        (env.http.get(ctl("/nothing")), 404, "NotFound"),
    ] {
        let (status, body) = json_of(req.send().await.unwrap()).await;
        assert_kv_error(status, &body, want, code, None);
    }
}

#[tokio::test]
async fn delete_one_version() {
    let env = Env::start().await;
    let v1 = env.vault.create_key("onev", RSA2048).await.unwrap();
    let v2 = env.vault.add_version("onev").await.unwrap();
    env.vault.delete_version("onev", &v2.version).unwrap();

    let (status, body) = json_of(env.get(&format!("/keys/onev/{}?{API}", v2.version)).await).await;
    assert_kv_error(status, &body, 404, "KeyNotFound", None);
    let (status, body) = json_of(env.get(&format!("/keys/onev/{}?{API}", v1.version)).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = json_of(env.get(&format!("/keys/onev/versions?{API}")).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let kids: Vec<&str> = body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [v1.kid.as_str()]);

    assert!(matches!(
        env.vault.delete_version("onev", &v2.version),
        Err(fake_keyvault::Error::NotFound(_))
    ));
    assert!(matches!(
        env.vault.delete_version("onev", &v1.version),
        Err(fake_keyvault::Error::Conflict(_))
    ));
}
