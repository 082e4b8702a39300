//! Every `VALV_*` variable of registry/src/config.rs `mod env`, set on the real binary
//! and observed through what it changes. Those covered elsewhere: `VALV_LISTEN`
//! (http_base.rs, the no-argument serve), `VALV_MAX_CONNECTIONS`,
//! `VALV_HEADER_READ_TIMEOUT_SECS` and `VALV_SHUTDOWN_GRACE_SECS` (server_limits.rs),
//! `VALV_ADMIN_TOKEN` (admin_encryption.rs and others).
//!
//! Each test checks an effect the default value would not have, so a variable that
//! stopped being read fails it.

#[path = "http_util.rs"]
mod util;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use util::common::keyvault::{self, within};
use util::{client, sha256, Valv};

const TOKEN: &str = "test-only-admin-token";

/// Room for a loaded 2-core runner on top of a configured interval.
fn deadline(interval_secs: u64) -> Duration {
    Duration::from_secs(3 * interval_secs + 10)
}

/// `valv serve --listen 127.0.0.1:0` with no other flag, in `cwd`, with `env`.
fn serve_env(cwd: &Path, env: &[(&str, &str)]) -> Valv {
    // Valv::start passes --data-dir; for VALV_DATA_DIR this starts the binary itself.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_valv"));
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .stdin(Stdio::null());
    Valv::spawn(cmd, cwd)
}

/// Runs `valv kek …`; returns its stdout's last word (the id it printed).
fn kek(args: &[&str]) -> String {
    util::valv_ok(&[&["kek"], args].concat())
        .split_whitespace()
        .last()
        .expect("an id")
        .to_owned()
}

async fn admin_show(http: &reqwest::Client, valv: &Valv) -> serde_json::Value {
    let r = http
        .get(valv.url("/admin/v1/encryption"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET /admin/v1/encryption");
    assert_eq!(r.status(), StatusCode::OK, "admin show");
    r.json().await.expect("JSON")
}

async fn push(http: &reqwest::Client, valv: &Valv, repo: &str, data: &[u8]) -> String {
    keyvault::push_blob(http, valv, repo, data).await
}

/// `VALV_CONFIG` names the file read; `VALV_DATA_DIR` and `VALV_STORAGE` place the data.
#[tokio::test]
async fn config_file_data_dir_and_storage_from_the_environment() {
    let cwd = tempfile::tempdir().expect("tempdir");
    let data = cwd.path().join("elsewhere");
    let file = cwd.path().join("valv.toml");
    std::fs::write(&file, format!("[admin]\ntoken = \"{TOKEN}\"\n")).expect("write config");
    let file = file.to_str().expect("utf-8").to_owned();
    let data_str = data.to_str().expect("utf-8").to_owned();
    let valv = serve_env(
        cwd.path(),
        &[("VALV_CONFIG", &file), ("VALV_DATA_DIR", &data_str)],
    );
    let http = client();
    // The file's admin token is in force.
    admin_show(&http, &valv).await;
    push(&http, &valv, "r", b"on disk").await;
    assert!(
        data.join("keys").is_dir() && data.join("store").is_dir(),
        "the key and the store under VALV_DATA_DIR"
    );
    assert!(
        !cwd.path().join("valv-data").exists(),
        "nothing in the default ./valv-data"
    );
    drop(valv);

    // memory:// keeps the content off the disk: a restart has lost it.
    let mem = cwd.path().join("mem");
    let mem_str = mem.to_str().expect("utf-8").to_owned();
    let env = [
        ("VALV_DATA_DIR", mem_str.as_str()),
        ("VALV_STORAGE", "memory://"),
    ];
    let valv = serve_env(cwd.path(), &env);
    let digest2 = push(&http, &valv, "r", b"in memory").await;
    assert!(
        !mem.join("store").exists(),
        "memory storage writes no store"
    );
    drop(valv);
    let valv = serve_env(cwd.path(), &env);
    let r = http
        .head(valv.url(&format!("/v2/r/blobs/{digest2}")))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "memory is gone at exit");
}

/// A bad value is a start-up error naming the variable.
#[test]
fn an_unparsable_value_names_its_variable() {
    for var in [
        "VALV_MAX_CONNECTIONS",
        "VALV_SHUTDOWN_GRACE_SECS",
        "VALV_HEADER_READ_TIMEOUT_SECS",
        "VALV_MAX_MANIFEST_BYTES",
        "VALV_KEY_CHECK_INTERVAL",
        "VALV_ROTATION_POLL_INTERVAL",
        "VALV_OUTAGE_GRACE",
        "VALV_TAG_CACHE_TTL_MS",
        "VALV_ORPHAN_GRACE_SECS",
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new(env!("CARGO_BIN_EXE_valv"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env(var, "lots")
            .env("RUST_LOG", "warn")
            .output()
            .expect("run valv");
        assert!(!out.status.success(), "{var}=lots was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(var), "{var}: {err}");
    }
    // And a value that parses but is out of range is refused by validation.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_valv"))
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .env("VALV_LISTEN", "no-port")
        .env("VALV_KEY_ID", "ftp://not-a-key")
        .env("VALV_STORAGE", "gs://bucket/prefix")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run valv");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for complaint in ["server.listen", "encryption.key_id", "not available yet"] {
        assert!(err.contains(complaint), "{complaint}: {err}");
    }
}

/// `VALV_MAX_MANIFEST_BYTES` raises the limit above the 4 MiB default.
#[tokio::test]
async fn max_manifest_bytes_from_the_environment() {
    const LIMIT: usize = 5 * 1024 * 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    let valv = Valv::start_with_env(
        dir.path(),
        &[],
        &[("VALV_MAX_MANIFEST_BYTES", &LIMIT.to_string())],
    );
    let http = client();
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let cd = push(&http, &valv, "big", config).await;
    // A manifest padded by an annotation to `size` bytes.
    let manifest = |size: usize| {
        let head = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{cd}","size":{}}},"layers":[],"annotations":{{"pad":""#,
            util::OCI_MANIFEST,
            util::OCI_CONFIG,
            config.len()
        );
        let tail = r#""}}"#;
        let mut m = head.into_bytes();
        m.resize(size - tail.len(), b'x');
        m.extend_from_slice(tail.as_bytes());
        m
    };
    for (size, want) in [
        (4 * 1024 * 1024 + 1000, StatusCode::CREATED),
        (LIMIT + 1, StatusCode::PAYLOAD_TOO_LARGE),
    ] {
        let body = manifest(size);
        let r = http
            .put(valv.url(&format!("/v2/big/manifests/{}", sha256(&body))))
            .header("content-type", util::OCI_MANIFEST)
            .body(body)
            .send()
            .await
            .expect("PUT manifest");
        assert_eq!(r.status(), want, "a {size}-byte manifest");
    }
}

/// `VALV_KEY_ID` (a local key made with `valv kek`), `VALV_ROTATION_POLL_INTERVAL` (a
/// new version is adopted within it, not the 5 min default) and
/// `VALV_KEY_CHECK_INTERVAL` (a disabled key is noticed within it, not 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_id_and_watcher_intervals_from_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = format!("file://{}/kek/registry", dir.path().display());
    let first = kek(&["create", &key, "--bits", "2048"]);
    let valv = Valv::start_with_env(
        &dir.path().join("data"),
        &[],
        &[
            ("VALV_KEY_ID", &key),
            ("VALV_KEY_CHECK_INTERVAL", "1"),
            ("VALV_ROTATION_POLL_INTERVAL", "1"),
            ("VALV_ADMIN_TOKEN", TOKEN),
        ],
    );
    let http = client();
    let shown = admin_show(&http, &valv).await;
    assert_eq!(shown["keyVaultProperties"]["keyIdentifier"], key.as_str());
    assert_eq!(
        shown["keyVaultProperties"]["versionedKeyIdentifier"],
        first.as_str()
    );
    let digest = push(&http, &valv, "k", b"under the env key").await;

    let second = kek(&["add-version", &key, "--bits", "2048"]);
    within(deadline(1), "the new version adopted", || async {
        admin_show(&http, &valv).await["keyVaultProperties"]["versionedKeyIdentifier"]
            == second.as_str()
    })
    .await;

    // Every version disabled (with only the newest disabled, a versionless id may
    // rotate back to the older one, which is still enabled): the next check refuses.
    kek(&["disable", &second]);
    kek(&["disable", &first]);
    within(deadline(1), "the disabled key noticed", || async {
        http.get(valv.url(&format!("/v2/k/blobs/{digest}")))
            .send()
            .await
            .expect("GET")
            .status()
            == StatusCode::FORBIDDEN
    })
    .await;
}

/// `VALV_OUTAGE_GRACE=0`: strict, an unreachable vault is 503 at the first failed
/// check (the default grace would serve on for 15 minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_grace_from_the_environment() {
    let (v, _) = keyvault::vault().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let valv = keyvault::start_valv_with_env(
        &v,
        dir.path(),
        &keyvault::key_id(keyvault::KEY),
        &[],
        None,
        &[("VALV_KEY_CHECK_INTERVAL", "1"), ("VALV_OUTAGE_GRACE", "0")],
    );
    let http = client();
    let digest = push(&http, &valv, "o", b"strict").await;
    v.set_outage(fake_keyvault::Outage::Unavailable);
    let saw_degraded = std::sync::atomic::AtomicBool::new(false);
    within(deadline(1), "refused with 503", || async {
        let r = http.get(valv.url("/readyz")).send().await.expect("GET");
        if r.text().await.unwrap_or_default().contains("degraded") {
            saw_degraded.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        http.get(valv.url(&format!("/v2/o/blobs/{digest}")))
            .send()
            .await
            .expect("GET")
            .status()
            == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert!(
        !saw_degraded.into_inner(),
        "a zero grace never reports degraded"
    );
}

/// `VALV_TAG_CACHE_TTL_MS`: a node with 0 sees another node's tag move at once; a
/// node with a long TTL keeps serving the tag it looked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_cache_ttl_from_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = Valv::start(dir.path(), &[]);
    let fresh = Valv::start_with_env(dir.path(), &[], &[("VALV_TAG_CACHE_TTL_MS", "0")]);
    let cached = Valv::start_with_env(dir.path(), &[], &[("VALV_TAG_CACHE_TTL_MS", "600000")]);
    let http = client();
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let cd = push(&http, &writer, "t", config).await;
    let put = |annotation: &'static str| {
        let body = util::oci_manifest(
            (&cd, config.len()),
            &[],
            &format!(r#","annotations":{{"n":"{annotation}"}}"#),
        );
        let http = http.clone();
        let url = writer.url("/v2/t/manifests/latest");
        async move {
            let r = http
                .put(url)
                .header("content-type", util::OCI_MANIFEST)
                .body(body.clone())
                .send()
                .await
                .expect("PUT");
            assert_eq!(r.status(), StatusCode::CREATED);
            sha256(body.as_bytes())
        }
    };
    let tagged = |node: &Valv| {
        let http = http.clone();
        let url = node.url("/v2/t/manifests/latest");
        async move {
            let r = http
                .get(url)
                .header("accept", util::OCI_MANIFEST)
                .send()
                .await
                .expect("GET");
            assert_eq!(r.status(), StatusCode::OK);
            util::header(&r, "docker-content-digest")
        }
    };
    let one = put("one").await;
    assert_eq!(tagged(&fresh).await, one);
    assert_eq!(tagged(&cached).await, one);
    let two = put("two").await;
    let moved_at = Instant::now();
    assert_eq!(tagged(&fresh).await, two, "TTL 0: the move is seen at once");
    assert_eq!(
        tagged(&cached).await,
        one,
        "a 10 min TTL keeps the looked-up tag"
    );
    assert!(moved_at.elapsed() < Duration::from_secs(600));
}

/// `VALV_ORPHAN_GRACE_SECS`: the sweep's default grace. With 0, a body-less sweep
/// removes the state of an upload that just ended; with an explicit hour, not.
#[tokio::test]
async fn orphan_grace_from_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let valv = Valv::start_with_env(
        dir.path(),
        &[],
        &[("VALV_ORPHAN_GRACE_SECS", "0"), ("VALV_ADMIN_TOKEN", TOKEN)],
    );
    let http = client();
    // A two-step upload: a session, ended by its commit.
    let r = http
        .post(valv.url("/v2/s/blobs/uploads/"))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = util::common::location_path(&r);
    let data = b"a session that ends";
    let r = http
        .put(valv.url(&util::with_query(
            &location,
            &format!("digest={}", sha256(data)),
        )))
        .body(data.to_vec())
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), StatusCode::CREATED);
    let sweep = |body: Option<&'static str>| {
        let mut req = http
            .post(valv.url("/admin/v1/storage/sweep"))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        async move {
            let r = req.send().await.expect("POST sweep");
            assert_eq!(r.status(), StatusCode::OK);
            let report: serde_json::Value = r.json().await.expect("JSON");
            report["sessionsRemoved"].as_u64().expect("sessionsRemoved")
        }
    };
    assert_eq!(sweep(Some(r#"{"graceSecs":3600}"#)).await, 0);
    assert_eq!(sweep(None).await, 1, "the ended session goes at grace 0");
}
