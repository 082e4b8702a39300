//! Structured logs and request ids, read from the real binary's stderr: with
//! `--log-format json` every line is a JSON object, each request leaves one access line
//! naming its id, method, route, status and duration, `X-Request-Id` comes back on
//! every response (the client's when sane, a new one otherwise), and no line holds the
//! password, the token, the KEK or a pushed manifest.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::auth::{basic, htpasswd, shared_kek};
use common::{client, sha256, Valv};
use reqwest::StatusCode;
use serde_json::Value;

const PASSWORD: &str = "pw-Q7x9-never-logged";
/// How long an access line may take to reach the test after its response.
const LOG_WAIT: Duration = Duration::from_secs(30);
const ACCESS: &str = r#""target":"valv::access""#;

/// `valv serve` on memory storage under the shared KEK, stderr captured, with `extra`
/// flags and `env`.
fn start(dir: &Path, config: &str, extra: &[&str], env: &[(&str, &str)]) -> Valv {
    let path = dir.join("valv.toml");
    std::fs::write(&path, format!("[storage]\nurl = \"memory://\"\n{config}")).expect("config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_valv"));
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0", "--key-id", &shared_kek()])
        .arg("--data-dir")
        .arg(dir)
        .arg("--config")
        .arg(&path)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Valv::spawn_logged(cmd, dir)
}

fn request_id(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-request-id")
        .expect("every response carries X-Request-Id")
        .to_str()
        .expect("ascii id")
        .to_owned()
}

fn is_generated(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Every base64 line of the PEM files under the shared KEK's directory.
fn kek_lines() -> Vec<String> {
    let id = shared_kek();
    let dir = Path::new(id.strip_prefix("file://").expect("file key id"));
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).expect("kek dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "pem") {
            let text = std::fs::read_to_string(&path).expect("read pem");
            lines.extend(
                text.lines()
                    .filter(|l| !l.starts_with("-----") && l.len() >= 32)
                    .map(str::to_owned),
            );
        }
    }
    assert!(!lines.is_empty(), "the KEK has PEM lines to look for");
    lines
}

#[tokio::test]
async fn json_logs_carry_request_ids_and_no_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ht = htpasswd(dir.path(), &[("alice", PASSWORD)], 4);
    let valv = start(
        dir.path(),
        &format!(
            "[auth]\nhtpasswd = \"{}\"\n[auth.token]\nenabled = true\n[auth.issuer]\nenabled = true\n\
             [[auth.rules]]\nrepositories = [\"team/**\"]\nusers = [\"alice\"]\nactions = [\"pull\", \"push\"]\n",
            ht.display()
        ),
        &["--log-format", "json"],
        &[],
    );
    let http = client();
    let mut requests = 0;
    let mut send = |b: reqwest::RequestBuilder| {
        requests += 1;
        b.send()
    };

    // Anonymous: 401 with a generated id.
    let r = send(http.get(valv.url("/v2/"))).await.expect("GET /v2/");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let anonymous_id = request_id(&r);
    assert!(is_generated(&anonymous_id), "{anonymous_id}");

    // A wrong password, with the client's own id: echoed on the 401.
    let r = send(
        http.get(valv.url("/v2/"))
            .header("authorization", basic("alice", "wrong-password"))
            .header("x-request-id", "client-req-1"),
    )
    .await
    .expect("GET /v2/");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(request_id(&r), "client-req-1");

    // An id that is not sane is replaced.
    let r = send(
        http.get(valv.url("/v2/"))
            .header("x-request-id", format!("no spaces {}", "x".repeat(200))),
    )
    .await
    .expect("GET /v2/");
    let replaced_id = request_id(&r);
    assert!(is_generated(&replaced_id), "{replaced_id}");

    // A token, with the password in Basic and (for the test) in the query too: the
    // query is never logged.
    let r = send(
        http.get(valv.url(&format!(
            "/auth/token?service=valv&scope=repository:team/app:pull,push&hint={PASSWORD}"
        )))
        .header("authorization", basic("alice", PASSWORD)),
    )
    .await
    .expect("GET token");
    assert_eq!(r.status(), StatusCode::OK);
    let token_id = request_id(&r);
    let body: Value = r.json().await.expect("token json");
    let token = body["token"].as_str().expect("token").to_owned();

    // Push a config, a layer and a manifest whose body holds a marker; pull them.
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let layer = b"layer bytes for the log test".to_vec();
    for blob in [&config, &layer] {
        let r = send(
            http.post(valv.url(&format!(
                "/v2/team/app/blobs/uploads/?digest={}",
                sha256(blob)
            )))
            .bearer_auth(&token)
            .body(blob.clone()),
        )
        .await
        .expect("push blob");
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let marker = "manifest-marker-5c1e0f";
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{}}}],"annotations":{{"note":"{marker}"}}}}"#,
        sha256(&config),
        config.len(),
        sha256(&layer),
        layer.len()
    );
    let r = send(
        http.put(valv.url("/v2/team/app/manifests/v1"))
            .bearer_auth(&token)
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .header("x-request-id", "push-manifest-7")
            .body(manifest.clone()),
    )
    .await
    .expect("PUT manifest");
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(request_id(&r), "push-manifest-7");
    let r = send(
        http.get(valv.url("/v2/team/app/manifests/v1"))
            .bearer_auth(&token)
            .header("accept", "application/vnd.oci.image.manifest.v1+json"),
    )
    .await
    .expect("GET manifest");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.expect("manifest"), manifest);
    let r = send(
        http.get(valv.url(&format!("/v2/team/app/blobs/{}", sha256(&layer))))
            .bearer_auth(&token),
    )
    .await
    .expect("GET blob");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.expect("blob").as_ref(), &layer[..]);
    // A 404, with its id.
    let r = send(
        http.get(valv.url("/v2/team/app/manifests/missing"))
            .bearer_auth(&token)
            .header("x-request-id", "missing-1"),
    )
    .await
    .expect("GET missing");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(request_id(&r), "missing-1");

    // One access line per request (a bounded wait on the captured stderr).
    let access = valv.logs().wait_for(&[ACCESS], requests, LOG_WAIT);
    assert_eq!(access.len(), requests, "{access:#?}");

    let lines = valv.logs().wait_for(&[], 1, LOG_WAIT);
    let mut parsed = Vec::new();
    for line in &lines {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {line}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(v[key].is_string(), "no {key:?} in {line}");
        }
        let ts = v["timestamp"].as_str().expect("timestamp");
        let t = chrono::DateTime::parse_from_rfc3339(ts)
            .unwrap_or_else(|e| panic!("timestamp {ts:?} is not RFC 3339: {e}"));
        assert_eq!(t.offset().local_minus_utc(), 0, "UTC: {ts}");
        parsed.push(v);
    }
    let access: Vec<&Value> = parsed
        .iter()
        .filter(|v| v["target"] == "valv::access")
        .collect();
    for v in &access {
        assert_eq!(v["level"], "INFO", "{v}");
        for key in ["request_id", "method", "route", "path", "subject"] {
            assert!(v[key].is_string(), "access line without {key:?}: {v}");
        }
        assert!(v["status"].is_u64() && v["duration_ms"].is_f64(), "{v}");
        // The span names the same id, as it does on any event inside the request.
        assert_eq!(v["span"]["request_id"], v["request_id"], "{v}");
        assert!(
            !v["path"].as_str().expect("path").contains('?'),
            "no query: {v}"
        );
    }
    let line_for = |id: &str| -> &Value {
        let found: Vec<&&Value> = access.iter().filter(|v| v["request_id"] == id).collect();
        assert_eq!(found.len(), 1, "one access line for {id}: {access:#?}");
        found[0]
    };
    let v = line_for(&anonymous_id);
    assert_eq!(
        (v["method"].as_str(), v["status"].as_u64()),
        (Some("GET"), Some(401))
    );
    assert_eq!(v["route"], "/v2/");
    let v = line_for("client-req-1");
    assert_eq!(v["status"], 401);
    assert_eq!(v["subject"], "-", "a refused login names no one");
    line_for(&replaced_id);
    let v = line_for(&token_id);
    assert_eq!(
        (v["route"].as_str(), v["path"].as_str()),
        (Some("/auth/token"), Some("/auth/token"))
    );
    let v = line_for("push-manifest-7");
    assert_eq!(
        (
            v["method"].as_str(),
            v["status"].as_u64(),
            v["subject"].as_str()
        ),
        (Some("PUT"), Some(201), Some("token:alice"))
    );
    assert_eq!(v["route"], "/v2/{name}/manifests/{reference}");
    assert_eq!(v["path"], "/v2/team/app/manifests/v1");
    let v = line_for("missing-1");
    assert_eq!(v["status"], 404);
    // The failed login's own event is inside its request's span.
    assert!(
        parsed
            .iter()
            .any(|v| v["target"] == "valv::auth" && v["span"]["request_id"] == "client-req-1"),
        "the auth event names its request: {lines:#?}"
    );

    // Nothing secret, in any line.
    let basic_header = basic("alice", PASSWORD);
    let signature = token.rsplit('.').next().expect("jws signature");
    let mut secrets = vec![
        PASSWORD,
        basic_header.trim_start_matches("Basic "),
        token.as_str(),
        signature,
        marker,
        manifest.as_str(),
    ];
    let kek = kek_lines();
    secrets.extend(kek.iter().map(String::as_str));
    for line in &lines {
        for secret in &secrets {
            assert!(
                !line.contains(secret),
                "a log line holds a secret ({secret}): {line}"
            );
        }
    }
}

#[tokio::test]
async fn text_is_the_default_and_names_the_request_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let valv = start(dir.path(), "", &[], &[]);
    let r = client()
        .get(valv.url("/v2/nothing/here/manifests/latest"))
        .header("x-request-id", "text-404")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(request_id(&r), "text-404");
    let line = valv
        .logs()
        .wait_for(&["valv::access", "request_id=text-404"], 1, LOG_WAIT)
        .remove(0);
    assert!(
        serde_json::from_str::<Value>(&line).is_err(),
        "text: {line}"
    );
    for field in [
        "method=GET",
        "route=/v2/{name}/manifests/{reference}",
        "status=404",
        "duration_ms=",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
}

#[test]
fn the_format_layers_and_a_bad_value_names_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("valv.toml");
    std::fs::write(&config, "[log]\nformat = \"xml\"\n").expect("config");
    let run = |extra: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_valv"));
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path())
            .args(extra)
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run valv");
        assert!(!out.status.success(), "valv refuses the configuration");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let cfg = config.display().to_string();
    let e = run(&["--config", &cfg], &[]);
    assert!(e.contains("log.format") && e.contains("\"xml\""), "{e}");
    let e = run(&[], &[("VALV_LOG_FORMAT", "yaml")]);
    assert!(
        e.contains("log.format (VALV_LOG_FORMAT)") && e.contains("yaml"),
        "{e}"
    );
    let e = run(&["--log-format", "logfmt"], &[]);
    assert!(
        e.contains("log.format (--log-format)") && e.contains("logfmt"),
        "{e}"
    );
}

/// `RUST_LOG` chooses which lines are written, whether it names targets (a static
/// filter) or the request span (`[request]`, matched inside each request's span): the
/// access line is written under both, and a span directive enables nothing outside
/// requests (the startup line is on under `info` only).
#[tokio::test]
async fn rust_log_by_target_or_by_request_span() {
    for (filter, startup) in [
        ("info", 1),
        ("warn,valv::access=info", 0),
        ("warn,[request]=info", 0),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let valv = start(dir.path(), "", &[], &[("RUST_LOG", filter)]);
        let r = client()
            .get(valv.url("/v2/"))
            .header("x-request-id", "filtered-1")
            .send()
            .await
            .expect("GET /v2/");
        assert_eq!(r.status(), StatusCode::OK);
        valv.logs()
            .wait_for(&["valv::access", "request_id=filtered-1"], 1, LOG_WAIT);
        // Written before the request was served, so it would be here by now.
        assert_eq!(
            valv.logs().count(&["encrypting under the configured key"]),
            startup,
            "{filter}: the startup line"
        );
    }
}
