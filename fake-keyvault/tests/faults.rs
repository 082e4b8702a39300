//! Fault injection (throttling, outage, latency, corrupt unwraps) and operation counters.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

mod common;

use std::time::{Duration, Instant};

use common::*;
use fake_keyvault::{Counters, Outage};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn throttling_answers_429_with_retry_after_then_recovers() {
    let env = Env::start().await;
    env.vault.create_key("t", RSA2048).await.unwrap();
    let r = env
        .http
        .post(env.url("/_fake/faults/throttle"))
        .json(&json!({"count": 2, "retry_after_secs": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    for _ in 0..2 {
        let r = env.get(&format!("/keys/t?{API}")).await;
        assert_eq!(r.headers()["retry-after"], "7");
        let (status, body) = json_of(r).await;
        assert_kv_error(status, &body, 429, "Throttled", None);
    }
    assert_eq!(
        env.get(&format!("/keys/t?{API}")).await.status(),
        StatusCode::OK
    );

    // Throttling applies before authentication, to every vault operation.
    env.vault.throttle(1, 1);
    let r = env
        .http
        .post(env.url(&format!("/keys/t/wrapkey?{API}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(!env.wrap("t", b"x").await.0.is_empty());
}

#[tokio::test]
async fn outage_unavailable_and_hang() {
    let env = Env::start().await;
    env.vault.create_key("o", RSA2048).await.unwrap();
    let r = env
        .http
        .put(env.url("/_fake/faults/outage"))
        .json(&json!({"mode": "unavailable"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (status, body) = json_of(env.get(&format!("/keys/o?{API}")).await).await;
    assert_kv_error(status, &body, 503, "ServiceUnavailable", None);
    let r = env
        .post(
            &format!("/keys/o/wrapkey?{API}"),
            json!({"alg": "RSA-OAEP-256", "value": "AA"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The token endpoint models Entra ID, not the vault: still up.
    let r = env
        .http
        .get(env.url(&format!("/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net&client_id={CLIENT}")))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Hang: a client with a timeout gives up.
    env.vault.set_outage(Outage::Hang);
    let err = env
        .http
        .get(env.url(&format!("/keys/o?{API}")))
        .bearer_auth(&env.token)
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");

    // A hung request is released (with 503) when the outage mode changes.
    env.vault.reset_counters();
    let url = env.url(&format!("/keys/o?{API}"));
    let req = env.http.get(url).bearer_auth(&env.token).send();
    let pending = tokio::spawn(req);
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.vault.counters().get == 0 {
        assert!(Instant::now() < deadline, "request never reached the fake");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!pending.is_finished());
    env.vault.set_outage(Outage::None);
    let r = pending.await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        env.get(&format!("/keys/o?{API}")).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn latency_is_added_to_vault_calls() {
    let env = Env::start().await;
    env.vault.create_key("l", RSA2048).await.unwrap();
    let r = env
        .http
        .put(env.url("/_fake/faults/latency"))
        .json(&json!({"millis": 250}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let start = Instant::now();
    assert_eq!(
        env.get(&format!("/keys/l?{API}")).await.status(),
        StatusCode::OK
    );
    assert!(start.elapsed() >= Duration::from_millis(250));
    env.vault.set_latency(Duration::ZERO);
}

#[tokio::test]
async fn counters_count_every_vault_and_token_request() {
    let env = Env::start().await;
    let v = env.vault.create_key("c", RSA2048).await.unwrap();
    env.vault.reset_counters();

    // Control calls and unknown routes are not vault calls.
    env.http
        .get(env.url("/_fake/counters"))
        .send()
        .await
        .unwrap();
    env.http
        .post(env.url("/_fake/keys/c/versions"))
        .send()
        .await
        .unwrap();
    env.http.get(env.url("/nothing")).send().await.unwrap();
    assert_eq!(env.vault.counters(), Counters::default());
    assert_eq!(
        env.vault.counters().vault_calls(),
        0,
        "no vault calls happened"
    );

    env.get(&format!("/keys/c?{API}")).await;
    env.get(&format!("/keys/c/versions?{API}")).await;
    let (_, wrapped) = env.wrap(&format!("c/{}", v.version), b"k").await;
    env.unwrap_status(&format!("c/{}", v.version), &wrapped)
        .await;
    env.unwrap_status(&format!("c/{}", v.version), &wrapped)
        .await;
    // Failed calls count too: this one has no token.
    env.http
        .get(env.url(&format!("/keys/c?{API}")))
        .send()
        .await
        .unwrap();
    env.http
        .post(env.url(&format!("/{}/oauth2/v2.0/token", env.vault.tenant_id())))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let want = Counters {
        get: 2,
        list: 1,
        wrap_key: 1,
        unwrap_key: 2,
        token: 1,
    };
    assert_eq!(env.vault.counters(), want);

    let (status, body) = json_of(
        env.http
            .get(env.url("/_fake/counters"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"get": 2, "list": 1, "wrapKey": 1, "unwrapKey": 2, "token": 1})
    );
    let r = env
        .http
        .delete(env.url("/_fake/counters"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(env.vault.counters(), Counters::default());
}

#[tokio::test]
async fn corrupt_unwrap_answers_other_bytes_of_the_same_length() {
    let env = Env::start().await;
    env.vault.create_key("u", RSA2048).await.unwrap();
    let plain = [0x11u8; 32];
    let (_, wrapped) = env.wrap("u", &plain).await;
    let unwrapped = |body: &serde_json::Value| unb64(body["value"].as_str().unwrap());

    let r = env
        .http
        .put(env.url("/_fake/faults/corrupt-unwrap"))
        .json(&json!({"enabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (status, body) = env.unwrap_status("u", &wrapped).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let got = unwrapped(&body);
    assert_eq!(got.len(), plain.len());
    assert_ne!(got, plain);

    env.vault.set_corrupt_unwrap(false);
    let (status, body) = env.unwrap_status("u", &wrapped).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(unwrapped(&body), plain);

    let r = env
        .http
        .put(env.url("/_fake/faults/corrupt-unwrap"))
        .json(&json!({"enabled": "yes"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}
