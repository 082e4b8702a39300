//! Tokens in the official format, made outside valv: RS256 and EdDSA tokens signed by
//! `openssl` run from the test, ES256 ones by the test's own *ring* code through a
//! JWKS; another key's token, `alg: none` and HS256 (keyed with the public key, the
//! classic confusion) refused. Then the built-in `/auth/token` endpoint as docker
//! drives it: challenge, GET with Basic and scopes, the OAuth2 POST form, the subset
//! rule, a wrong password.

mod common;

use std::path::Path;
use std::process::Command;

use common::auth::{b64url, basic, error_code, htpasswd, now, shared_kek, TestIssuer};
use common::{client, Valv};
use reqwest::StatusCode;

const SERVICE: &str = "valv-tokens";

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// An openssl key pair of `kind` ("RSA" or "ED25519"): (private PEM path, public PEM path).
fn openssl_key(dir: &Path, name: &str, kind: &str) -> (String, String) {
    let private = dir.join(format!("{name}.key")).display().to_string();
    let public = dir.join(format!("{name}.pem")).display().to_string();
    let mut args = vec!["genpkey", "-algorithm", kind, "-out", &private];
    if kind == "RSA" {
        args.extend(["-pkeyopt", "rsa_keygen_bits:2048"]);
    }
    openssl(&args);
    openssl(&["pkey", "-in", &private, "-pubout", "-out", &public]);
    (private, public)
}

/// Signs `header.claims` with openssl: RS256 with `dgst -sha256 -sign`, EdDSA with
/// `pkeyutl -sign -rawin`.
fn openssl_jwt(dir: &Path, key: &str, alg: &str, claims: &str) -> String {
    let input = format!(
        "{}.{}",
        b64url(format!(r#"{{"typ":"JWT","alg":"{alg}"}}"#).as_bytes()),
        b64url(claims.as_bytes())
    );
    let msg = dir.join("signing-input");
    std::fs::write(&msg, &input).expect("write input");
    let msg = msg.display().to_string();
    let sig = match alg {
        "RS256" => openssl(&["dgst", "-sha256", "-sign", key, &msg]),
        _ => openssl(&["pkeyutl", "-sign", "-inkey", key, "-rawin", "-in", &msg]),
    };
    format!("{input}.{}", b64url(&sig))
}

fn claims(iss: &str, repo: &str) -> String {
    let t = now();
    format!(
        r#"{{"iss":"{iss}","sub":"ci","aud":"{SERVICE}","exp":{},"nbf":{},"access":[{{"type":"repository","name":"{repo}","actions":["pull","push"]}}]}}"#,
        t + 300,
        t - 5
    )
}

fn start(dir: &Path, auth: &str) -> Valv {
    let path = dir.join("valv.toml");
    std::fs::write(
        &path,
        format!("[storage]\nurl = \"memory://\"\n[auth]\n{auth}"),
    )
    .expect("write config");
    Valv::start(
        dir,
        &[
            "--config",
            path.to_str().expect("utf-8"),
            "--key-id",
            &shared_kek(),
        ],
    )
}

async fn status_with(valv: &Valv, token: &str) -> (StatusCode, Vec<u8>) {
    let r = client()
        .get(valv.url("/v2/team/app/tags/list"))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET tags");
    let st = r.status();
    (st, r.bytes().await.expect("body").to_vec())
}

/// Authorized to read team/app: the repository is empty, so 404 NAME_UNKNOWN (not 401).
fn authorized((st, body): &(StatusCode, Vec<u8>)) -> bool {
    *st == StatusCode::NOT_FOUND && error_code(body).as_deref() == Some("NAME_UNKNOWN")
}

fn refused((st, body): &(StatusCode, Vec<u8>)) -> bool {
    *st == StatusCode::UNAUTHORIZED && error_code(body).as_deref() == Some("UNAUTHORIZED")
}

#[tokio::test]
async fn openssl_signed_rs256_and_eddsa_tokens_verify_and_others_do_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (rsa, rsa_pub) = openssl_key(d, "rsa", "RSA");
    let (ed, ed_pub) = openssl_key(d, "ed", "ED25519");
    let (stranger, _) = openssl_key(d, "stranger", "RSA");
    let valv = start(
        d,
        &format!(
            "[auth.token]\nenabled = true\nrealm = \"http://127.0.0.1:9/token\"\nservice = \"{SERVICE}\"\nissuer = \"openssl\"\npublic_keys = [\"{rsa_pub}\", \"{ed_pub}\"]\n"
        ),
    );
    let good_rs = openssl_jwt(d, &rsa, "RS256", &claims("openssl", "team/app"));
    assert!(
        authorized(&status_with(&valv, &good_rs).await),
        "RS256 from openssl"
    );
    let good_ed = openssl_jwt(d, &ed, "EdDSA", &claims("openssl", "team/app"));
    assert!(
        authorized(&status_with(&valv, &good_ed).await),
        "EdDSA from openssl"
    );

    let other_key = openssl_jwt(d, &stranger, "RS256", &claims("openssl", "team/app"));
    assert!(
        refused(&status_with(&valv, &other_key).await),
        "another key"
    );
    let wrong_iss = openssl_jwt(d, &rsa, "RS256", &claims("someone-else", "team/app"));
    assert!(
        refused(&status_with(&valv, &wrong_iss).await),
        "another issuer"
    );
    // The signature of one algorithm presented as another.
    let relabelled = good_ed.replacen(
        &b64url(br#"{"typ":"JWT","alg":"EdDSA"}"#),
        &b64url(br#"{"typ":"JWT","alg":"RS256"}"#),
        1,
    );
    assert!(
        refused(&status_with(&valv, &relabelled).await),
        "alg swapped"
    );

    // alg none: no signature at all.
    let none = format!(
        "{}.{}.",
        b64url(br#"{"typ":"JWT","alg":"none"}"#),
        b64url(claims("openssl", "team/app").as_bytes())
    );
    assert!(refused(&status_with(&valv, &none).await), "alg none");
    // HS256 keyed with the trusted public key's PEM bytes.
    let input = format!(
        "{}.{}",
        b64url(br#"{"typ":"JWT","alg":"HS256"}"#),
        b64url(claims("openssl", "team/app").as_bytes())
    );
    let pem = std::fs::read(&rsa_pub).expect("read pem");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &pem);
    let hs = format!(
        "{input}.{}",
        b64url(ring::hmac::sign(&key, input.as_bytes()).as_ref())
    );
    assert!(
        refused(&status_with(&valv, &hs).await),
        "HS256 with the public key"
    );
    // A token for another repository authenticates but does not authorize.
    let elsewhere = openssl_jwt(d, &rsa, "RS256", &claims("openssl", "team/other"));
    let r = status_with(&valv, &elsewhere).await;
    assert_eq!(r.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn es256_tokens_verify_through_a_jwks_with_kid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let issuer = TestIssuer::new("jwks-issuer");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, issuer.jwks("key-1")).expect("write jwks");
    let valv = start(
        dir.path(),
        &format!(
            "[auth.token]\nenabled = true\nrealm = \"http://127.0.0.1:9/token\"\nservice = \"{SERVICE}\"\nissuer = \"jwks-issuer\"\njwks = \"{}\"\n",
            jwks.display()
        ),
    );
    let c = claims("jwks-issuer", "team/app");
    let with_kid = issuer.sign(r#"{"typ":"JWT","alg":"ES256","kid":"key-1"}"#, &c);
    assert!(authorized(&status_with(&valv, &with_kid).await));
    let wrong_kid = issuer.sign(r#"{"typ":"JWT","alg":"ES256","kid":"key-2"}"#, &c);
    assert!(refused(&status_with(&valv, &wrong_kid).await));
}

fn decode_claims(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("claims json")
}

#[tokio::test]
async fn the_built_in_endpoint_issues_what_the_policy_allows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ht = htpasswd(dir.path(), &[("alice", "alice-pw")], 4);
    let valv = start(
        dir.path(),
        &format!(
            "htpasswd = \"{}\"\n[auth.token]\nenabled = true\n[auth.issuer]\nenabled = true\n[[auth.rules]]\nrepositories = [\"team/**\"]\nusers = [\"alice\"]\nactions = [\"pull\"]\n",
            ht.display()
        ),
    );
    let http = client();
    // The challenge points at the endpoint itself.
    let r = http.get(valv.url("/v2/")).send().await.expect("GET /v2/");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let c = r.headers()["www-authenticate"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let realm = format!("{}/auth/token", valv.base);
    assert_eq!(c, format!("Bearer realm=\"{realm}\",service=\"valv\""));

    // GET with Basic and two scopes: pull on team/app is granted, push is not, and
    // the other repository not at all.
    let r = http
        .get(format!(
            "{realm}?service=valv&scope=repository:team/app:pull,push&scope=repository:other/x:pull"
        ))
        .header("authorization", basic("alice", "alice-pw"))
        .send()
        .await
        .expect("GET token");
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json().await.expect("json");
    let token = body["token"].as_str().expect("token").to_owned();
    assert_eq!(body["access_token"], body["token"]);
    assert_eq!(body["expires_in"], 300);
    assert!(body["issued_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    let claims = decode_claims(&token);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], "valv");
    assert_eq!(
        claims["access"],
        serde_json::json!([{"type": "repository", "name": "team/app", "actions": ["pull"]}])
    );
    assert!(authorized(&status_with(&valv, &token).await));
    // Push with that token: 401 insufficient_scope, naming the scope to ask for.
    let r = http
        .post(valv.url("/v2/team/app/blobs/uploads/"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("POST upload");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let c = r.headers()["www-authenticate"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        c.contains("scope=\"repository:team/app:pull,push\"") && c.contains("insufficient_scope"),
        "{c}"
    );

    // The OAuth2 form.
    let r = http
        .post(&realm)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=password&username=alice&password=alice-pw&service=valv&scope=repository%3Ateam%2Fapp%3Apull&client_id=test")
        .send()
        .await
        .expect("POST token");
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json().await.expect("json");
    assert!(authorized(
        &status_with(&valv, body["access_token"].as_str().expect("token")).await
    ));
    let r = http
        .post(&realm)
        .body("grant_type=refresh_token&refresh_token=x")
        .send()
        .await
        .expect("POST refresh");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // A wrong password and an unknown user: 401 with a Basic challenge.
    for (u, p) in [("alice", "nope"), ("mallory", "alice-pw")] {
        let r = http
            .get(format!(
                "{realm}?service=valv&scope=repository:team/app:pull"
            ))
            .header("authorization", basic(u, p))
            .send()
            .await
            .expect("GET token");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{u}");
        assert!(r.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .starts_with("Basic realm="));
    }
    // Anonymous: a token with nothing granted (no anonymous rules).
    let r = http
        .get(format!(
            "{realm}?service=valv&scope=repository:team/app:pull"
        ))
        .send()
        .await
        .expect("GET token");
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json().await.expect("json");
    let claims = decode_claims(body["token"].as_str().expect("token"));
    assert_eq!(claims["access"], serde_json::json!([]));
    // The generated signing key is private to valv.
    use std::os::unix::fs::PermissionsExt;
    let key = dir.path().join("auth/token-signing-key.pem");
    let mode = std::fs::metadata(&key).expect("key").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}
