//! `valv kek create|add-version|disable|enable|show` on `file://` keys, run as the
//! binary, and a registry serving under a key made with it.

mod common;

use std::process::{Command, Output};

use serde_json::Value;

fn valv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_valv"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run valv")
}

fn ok(args: &[&str]) -> String {
    let out = valv(args);
    assert!(
        out.status.success(),
        "valv {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails with exit status 1 and a message on stderr containing `complaint`.
fn refused(args: &[&str], complaint: &str) {
    let out = valv(args);
    assert_eq!(out.status.code(), Some(1), "valv {args:?} exit status");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(complaint),
        "valv {args:?}: stderr {err:?} should say {complaint:?}"
    );
}

fn show(key: &str) -> Value {
    serde_json::from_str(&ok(&["kek", "show", key, "--json"])).expect("show --json prints JSON")
}

/// The id a line `created <id>` / `added <id>` names.
fn printed_id(stdout: &str, verb: &str) -> String {
    stdout
        .trim()
        .strip_prefix(&format!("{verb} "))
        .unwrap_or_else(|| panic!("expected `{verb} <id>`, got {stdout:?}"))
        .to_owned()
}

#[test]
fn a_key_goes_through_its_lifecycle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = format!("file://{}/lifecycle", dir.path().display());

    let first = printed_id(&ok(&["kek", "create", &key, "--bits", "2048"]), "created");
    assert!(
        first.starts_with(&format!("{key}/")),
        "{first} is a version of {key}"
    );
    let s = show(&key);
    assert_eq!(s["keyIdentifier"], key.as_str());
    assert_eq!(s["currentVersionedKeyIdentifier"], first.as_str());
    assert_eq!(s["versions"][0]["keySize"], 2048);
    assert_eq!(s["versions"][0]["state"], "enabled");

    // A new version becomes current for the versionless id.
    let second = printed_id(
        &ok(&["kek", "add-version", &key, "--bits", "2048"]),
        "added",
    );
    let s = show(&key);
    assert_eq!(s["versions"].as_array().map(Vec::len), Some(2));
    assert_eq!(s["currentVersionedKeyIdentifier"], second.as_str());

    // Disabling it falls back to the first; disabling both leaves none.
    assert_eq!(
        ok(&["kek", "disable", &second]).trim(),
        format!("disabled {second}")
    );
    let s = show(&key);
    assert_eq!(s["currentVersionedKeyIdentifier"], first.as_str());
    assert_eq!(s["versions"][1]["state"], "disabled");
    ok(&["kek", "disable", &first]);
    assert!(show(&key)["currentVersionedKeyIdentifier"].is_null());
    let text = ok(&["kek", "show", &key]);
    assert!(
        text.contains("current  none"),
        "the table says the key is revoked:\n{text}"
    );

    // Enabling brings the newest back.
    ok(&["kek", "enable", &first]);
    ok(&["kek", "enable", &second]);
    assert_eq!(show(&key)["currentVersionedKeyIdentifier"], second.as_str());
    let text = ok(&["kek", "show", &key]);
    let marked: Vec<&str> = text.lines().filter(|l| l.starts_with('*')).collect();
    assert_eq!(marked.len(), 1, "one version is marked current:\n{text}");
    assert!(marked[0].contains(second.rsplit('/').next().unwrap_or("?")));
}

#[test]
fn bad_requests_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = format!("file://{}/k", dir.path().display());
    ok(&["kek", "create", &key, "--bits", "2048"]);
    refused(&["kek", "create", &key, "--bits", "2048"], "already exists");
    refused(
        &[
            "kek",
            "create",
            &format!("file://{}/small", dir.path().display()),
            "--bits",
            "1024",
        ],
        "1024 bits",
    );
    refused(&["kek", "disable", &key], "name the version");
    refused(
        &[
            "kek",
            "enable",
            &format!("{key}/0123456789abcdef0123456789abcdef"),
        ],
        "",
    );
    refused(
        &[
            "kek",
            "show",
            &format!("file://{}/missing", dir.path().display()),
        ],
        "not found",
    );
    refused(
        &[
            "kek",
            "add-version",
            &format!("file://{}/missing", dir.path().display()),
        ],
        "not found",
    );
    refused(
        &["kek", "show", "https://example.vault.azure.net/keys/k"],
        "file://",
    );
    refused(&["kek", "show", "not-a-key-id"], "not-a-key-id");
    // Nothing above changed the key.
    assert_eq!(show(&key)["versions"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_registry_serves_under_a_key_made_with_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = format!("file://{}/keys/registry", dir.path().display());
    ok(&["kek", "create", &key, "--bits", "2048"]);
    let valv = common::Valv::start(&dir.path().join("data"), &["--key-id", &key]);
    let resp = common::client()
        .get(valv.url("/v2/"))
        .send()
        .await
        .expect("GET /v2/");
    assert_eq!(resp.status(), 200, "GET /v2/ under the CLI-made key");
}
