//! valv on object storage, over HTTP: S3 on moto's server and Azure Blob on Azurite,
//! both started once by the test command (scripts/test.sh), which exports
//! `VALV_TEST_S3_URL` and `VALV_TEST_AZURE_URL` with the standard `AWS_*` and
//! `AZURE_*` variables for them. Each test stores under a prefix of its own.

#[path = "http_util.rs"]
mod util;

use util::*;

/// Pushes an image through one node and reads it back, byte for byte, through a
/// second node with another data directory on the same bucket and prefix (and the
/// same KEK, as nodes share one), while the first still runs and after it stopped:
/// everything a node needs is in the object store.
async fn serves_and_restarts_on(url: &str) {
    let data = random_bytes(7 * 1024 * 1024 + 13, 14);
    let first_dir = tempfile::tempdir().expect("tempdir");
    // The first node's development key, which the second node is configured with.
    let key_id = format!("file://{}/keys/valv-dev-kek", first_dir.path().display());
    let first = Registry::start_in(first_dir, &["--storage", url]);
    let digest = first.push_blob("team/app", &data).await;
    let manifest = simple_image(&first, "team/app", 3).await;
    let r = first
        .put_manifest("team/app", "latest", OCI_MANIFEST, manifest.as_bytes())
        .await;
    assert_eq!(r.status(), 201);

    let second = Registry::start_with(&["--storage", url, "--key-id", &key_id]);
    assert_eq!(second.blob("team/app", &digest).await, data);
    assert_eq!(
        second.tags("team/app").await,
        Some(vec!["latest".to_string()])
    );
    assert_eq!(second.catalog().await, vec!["team/app".to_string()]);
    let r = second.get("/v2/team/app/manifests/latest").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.expect("body"), manifest.as_bytes());
    // The second node's pushes are the first node's reads.
    let more = random_bytes(1024 * 1024, 15);
    let more_digest = second.push_blob("team/app", &more).await;
    assert_eq!(first.blob("team/app", &more_digest).await, more);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto's S3 server: the test command (scripts/test.sh) starts it"]
async fn serves_from_s3_and_restarts_on_it() {
    serves_and_restarts_on(&fresh_store_url("VALV_TEST_S3_URL")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Azurite: the test command (scripts/test.sh) starts it"]
async fn serves_from_azure_blob_and_restarts_on_it() {
    serves_and_restarts_on(&fresh_store_url("VALV_TEST_AZURE_URL")).await;
}

#[test]
#[ignore = "needs moto's S3 server: the test command (scripts/test.sh) starts it"]
fn an_unknown_bucket_fails_at_start_with_its_name() {
    let (ok, stderr) = run_to_exit_with_env(&["--storage", "s3://no-such-bucket-for-valv/x"], &[]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("s3://no-such-bucket-for-valv/x"),
        "{stderr}"
    );
    assert!(stderr.contains("NoSuchBucket"), "{stderr}");
}

#[test]
#[ignore = "needs Azurite: the test command (scripts/test.sh) starts it"]
fn wrong_credentials_fail_at_start() {
    // moto accepts any signature; Azurite checks its account key.
    let url = fresh_store_url("VALV_TEST_AZURE_URL");
    let (ok, stderr) = run_to_exit_with_env(
        &["--storage", &url],
        &[
            ("AZURE_STORAGE_USE_EMULATOR", "false"),
            ("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1"),
            // A well-formed key that is not Azurite's (test-only).
            (
                "AZURE_STORAGE_ACCOUNT_KEY",
                "d3JvbmcgdGVzdCBrZXkgZm9yIHZhbHYncyB0ZXN0cw==",
            ),
            (
                "AZURE_STORAGE_ENDPOINT",
                &format!(
                    "{}/devstoreaccount1",
                    std::env::var("AZURITE_BLOB_STORAGE_URL").expect("AZURITE_BLOB_STORAGE_URL")
                ),
            ),
            ("AZURE_ALLOW_HTTP", "true"),
        ],
    );
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("writing a first object failed"), "{stderr}");
    assert!(stderr.contains("403 Forbidden"), "{stderr}");
}

#[test]
#[ignore = "needs moto's S3 server: the test command (scripts/test.sh) starts it"]
fn an_endpoint_that_does_not_answer_fails_at_start() {
    // Bound, never listening: connections are refused while it lives.
    let closed = common::closed_port();
    let port = closed.local_addr().expect("addr").port().to_string();
    let endpoint = format!("http://127.0.0.1:{port}");
    let url = fresh_store_url("VALV_TEST_S3_URL");
    let (ok, stderr) =
        run_to_exit_with_env(&["--storage", &url], &[("AWS_ENDPOINT_URL", &endpoint)]);
    assert!(!ok, "{stderr}");
    assert!(stderr.contains(&endpoint), "{stderr}");
}
