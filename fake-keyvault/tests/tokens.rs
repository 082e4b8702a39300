//! The fake Entra ID token endpoint (client credentials, workload identity) and
//! the fake IMDS, and that the tokens they issue work on the data plane.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

mod common;

use std::time::Duration;

use common::*;
use fake_keyvault::{Config, IdentitySpec, Permission};
use reqwest::StatusCode;
use serde_json::Value;

fn token_url(env: &Env) -> String {
    env.url(&format!("/{}/oauth2/v2.0/token", env.vault.tenant_id()))
}

async fn client_token(env: &Env, form: &[(&str, &str)]) -> (StatusCode, Value) {
    json_of(
        env.http
            .post(token_url(env))
            .form(form)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn can_get_key(env: &Env, token: &str) -> StatusCode {
    env.http
        .get(env.url(&format!("/keys/tk?{API}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

const SCOPE: &str = "https://vault.azure.net/.default";

#[tokio::test]
async fn client_credentials_flow() {
    let env = Env::start().await;
    env.vault.create_key("tk", RSA2048).await.unwrap();
    let (status, body) = client_token(
        &env,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT),
            ("client_secret", SECRET),
            ("scope", SCOPE),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(
        can_get_key(&env, body["access_token"].as_str().unwrap()).await,
        StatusCode::OK
    );

    let (status, body) = client_token(
        &env,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT),
            ("client_secret", "wrong"),
            ("scope", SCOPE),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_client");
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .starts_with("AADSTS7000215"));

    for (form, code) in [
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "nobody"),
                ("client_secret", SECRET),
                ("scope", SCOPE),
            ],
            "unauthorized_client",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT),
                ("client_secret", SECRET),
                ("scope", "https://storage.azure.com/.default"),
            ],
            "invalid_scope",
        ),
        (
            vec![
                ("grant_type", "password"),
                ("client_id", CLIENT),
                ("client_secret", SECRET),
                ("scope", SCOPE),
            ],
            "unsupported_grant_type",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT),
                ("scope", SCOPE),
            ],
            "invalid_request",
        ),
        (
            vec![("grant_type", "client_credentials"), ("scope", SCOPE)],
            "invalid_request",
        ),
    ] {
        let (status, body) = client_token(&env, &form).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"], code, "{body}");
    }
    let r = env
        .http
        .post(env.url("/other-tenant/oauth2/v2.0/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT),
            ("client_secret", SECRET),
            ("scope", SCOPE),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = env
        .http
        .post(token_url(&env))
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "form content type is required"
    );
}

#[tokio::test]
async fn workload_identity_flow() {
    let env = Env::start().await;
    env.vault.create_key("tk", RSA2048).await.unwrap();
    let mut spec = IdentitySpec::new("wi-oid", "wi-client");
    spec.federated_token = Some("eyJ.projected.sa-token".into());
    env.vault.register_identity(spec).unwrap();
    env.vault.grant("wi-oid", &[Permission::Get]).unwrap();
    let form = |assertion: &'static str| {
        vec![
            ("grant_type", "client_credentials"),
            ("client_id", "wi-client"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
            ("scope", SCOPE),
        ]
    };
    let (status, body) = client_token(&env, &form("eyJ.projected.sa-token")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        can_get_key(&env, body["access_token"].as_str().unwrap()).await,
        StatusCode::OK
    );

    let (status, body) = client_token(&env, &form("eyJ.other")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_client");
    // A client secret is not accepted for an identity that has none.
    let (status, _) = client_token(
        &env,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "wi-client"),
            ("client_secret", "x"),
            ("scope", SCOPE),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn imds_flow() {
    let env = Env::start().await;
    env.vault.create_key("tk", RSA2048).await.unwrap();
    let mut system = IdentitySpec::new("sys-oid", "sys-client");
    system.system_assigned = true;
    env.vault.register_identity(system).unwrap();
    env.vault
        .register_identity(IdentitySpec::new("ua-oid", "ua-client"))
        .unwrap();
    env.vault.grant("ua-oid", &[Permission::Get]).unwrap();
    let imds = |q: &str| {
        env.http.get(env.url(&format!(
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net{q}"
        )))
    };

    let (status, body) = json_of(imds("").send().await.unwrap()).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "Metadata header is required"
    );
    assert_eq!(body["error"], "invalid_request");

    let (status, body) = json_of(imds("").header("Metadata", "true").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["resource"], "https://vault.azure.net");
    assert_eq!(
        body["expires_in"], "3600",
        "IMDS returns numbers as strings"
    );
    let expires_on: i64 = body["expires_on"].as_str().unwrap().parse().unwrap();
    assert!(expires_on > chrono::Utc::now().timestamp());
    // System-assigned identity has no permissions: authenticated but forbidden.
    assert_eq!(
        can_get_key(&env, body["access_token"].as_str().unwrap()).await,
        StatusCode::FORBIDDEN
    );

    let (status, body) = json_of(
        imds("&client_id=ua-client")
            .header("Metadata", "true")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        can_get_key(&env, body["access_token"].as_str().unwrap()).await,
        StatusCode::OK
    );
    let (status, _) = json_of(
        imds("&object_id=ua-oid")
            .header("Metadata", "true")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = json_of(
        imds("&client_id=nobody")
            .header("Metadata", "true")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let r = env
        .http
        .get(env.url("/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com"))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn token_lifetime_is_configurable_and_expiry_injectable() {
    let env = Env::with_config(Config {
        token_lifetime: Duration::from_secs(5),
        ..Config::default()
    })
    .await;
    env.vault.create_key("tk", RSA2048).await.unwrap();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", CLIENT),
        ("client_secret", SECRET),
        ("scope", SCOPE),
    ];
    let (_, body) = client_token(&env, &form).await;
    assert_eq!(body["expires_in"], 5);
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(can_get_key(&env, &token).await, StatusCode::OK);

    env.vault.set_token_lifetime(Duration::from_secs(120));
    let (_, body) = client_token(&env, &form).await;
    assert_eq!(body["expires_in"], 120);

    let r = env
        .http
        .post(env.url("/_fake/tokens/expire"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(can_get_key(&env, &token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        can_get_key(&env, body["access_token"].as_str().unwrap()).await,
        StatusCode::UNAUTHORIZED
    );
    // New tokens after the expiry work again.
    let (_, body) = client_token(&env, &form).await;
    assert_eq!(
        can_get_key(&env, body["access_token"].as_str().unwrap()).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn one_second_tokens_really_expire() {
    let env = Env::with_config(Config {
        token_lifetime: Duration::from_secs(1),
        ..Config::default()
    })
    .await;
    env.vault.create_key("tk", RSA2048).await.unwrap();
    let token = env.vault.issue_token(OID).unwrap();
    // Bounded re-check instead of a fixed sleep: the token must stop working
    // within a few seconds of its one-second lifetime.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = can_get_key(&env, &token).await;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            tokio::time::Instant::now() < deadline,
            "token did not expire"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
