//! The key lifecycle end to end (issue 5): a real valv process whose KEK is a key in
//! the fake Azure Key Vault (in-process, on 127.0.0.1), reached through the real
//! provider with client-secret tokens.
//!
//! - revocation three ways (unwrapKey permission removed, key disabled, key deleted):
//!   after the next key check every content endpoint answers 403 `DENIED`
//!   naming the key, `/v2/` still answers, `/readyz` fails; restoring access brings
//!   every byte back, identical, without a restart;
//! - a pull in progress is cut when the key is revoked;
//! - an outage: reads go on through the grace period, then 503, then recover;
//! - automatic rotation: a new version is adopted within the poll interval, the old
//!   one can then be disabled, every blob still reads, and no envelope or data object
//!   was rewritten.
//!
//! Waits are bounded polls of the observable condition (the registry's own answers),
//! never sleeps. Their deadlines come from the configured intervals with room for a
//! loaded 2-core runner ([`key_check_deadline`]); a passing wait returns as soon as
//! its condition holds, so a generous deadline costs nothing.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::keyvault::{self, push_blob, show, within, ADMIN_TOKEN, KEY, OID};
use common::{client, sha256, Valv};
use fake_keyvault::{FakeVault, Outage, Permission};
use reqwest::{Client, StatusCode};

/// The fake vault with its key (the first version is not needed here).
async fn vault() -> FakeVault {
    keyvault::vault().await.0
}

fn key_id() -> String {
    keyvault::key_id(KEY)
}

/// The key-check and rotation-poll interval of most tests here, in seconds.
const INTERVAL: u64 = 1;

/// How long the effect of one key check (or rotation poll) every `interval_secs` may
/// take to show: up to one interval until the next check, the check itself (a failing
/// vault call spends 0.7-1.4 s in the Azure client's retries), once more in case the
/// change landed just after a check began, and slack for a starved scheduler.
fn key_check_deadline(interval_secs: u64) -> Duration {
    Duration::from_secs(3 * interval_secs + 10)
}

/// valv over the fake vault, with [`INTERVAL`] key checks and rotation polls.
fn start_valv(v: &FakeVault, data: &Path, grace_secs: u64) -> Valv {
    start_valv_with(v, data, grace_secs, INTERVAL)
}

/// valv over the fake vault, checking the key and polling for rotation every
/// `interval_secs`, with the admin API on.
fn start_valv_with(v: &FakeVault, data: &Path, grace_secs: u64, interval_secs: u64) -> Valv {
    let (grace, interval) = (grace_secs.to_string(), interval_secs.to_string());
    keyvault::start_valv(
        v,
        data,
        &key_id(),
        &[
            "--key-check-interval",
            &interval,
            "--rotation-poll-interval",
            &interval,
            "--outage-grace",
            &grace,
        ],
        Some(ADMIN_TOKEN),
    )
}

/// What a test pushed: a blob, a manifest (by tag), and a referrer of it.
struct Content {
    blob: Vec<u8>,
    blob_digest: String,
    manifest_digest: String,
}

async fn push_content(http: &Client, valv: &Valv) -> Content {
    let blob: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let blob_digest = push_blob(http, valv, "app", &blob).await;
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let config_digest = push_blob(http, valv, "app", &config).await;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blob_digest, "size": blob.len()}],
    });
    let bytes = serde_json::to_vec(&manifest).expect("json");
    let r = http
        .put(valv.url("/v2/app/manifests/v1"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(bytes.clone())
        .send()
        .await
        .expect("PUT manifest");
    assert_eq!(r.status(), StatusCode::CREATED, "push manifest");
    Content {
        blob,
        blob_digest,
        manifest_digest: sha256(&bytes),
    }
}

async fn status_of(http: &Client, valv: &Valv, path: &str) -> StatusCode {
    http.get(valv.url(path)).send().await.expect("GET").status()
}

/// Every content endpoint refuses with 403 DENIED naming the key; /v2/ answers; not ready.
async fn assert_refused(http: &Client, valv: &Valv, c: &Content) {
    let reads = [
        ("GET", format!("/v2/app/blobs/{}", c.blob_digest)),
        ("HEAD", format!("/v2/app/blobs/{}", c.blob_digest)),
        ("GET", "/v2/app/manifests/v1".to_owned()),
        ("HEAD", format!("/v2/app/manifests/{}", c.manifest_digest)),
        ("GET", "/v2/app/tags/list".to_owned()),
        ("GET", format!("/v2/app/referrers/{}", c.manifest_digest)),
        ("POST", "/v2/app/blobs/uploads/".to_owned()),
    ];
    for (method, path) in reads {
        let r = http
            .request(method.parse().expect("method"), valv.url(&path))
            .send()
            .await
            .expect("request");
        assert_eq!(
            r.status(),
            StatusCode::FORBIDDEN,
            "{method} {path} while revoked"
        );
        if method != "HEAD" {
            let body = r.text().await.expect("body");
            assert!(body.contains("\"DENIED\""), "{method} {path}: {body}");
            assert!(
                body.contains(&key_id()),
                "{method} {path} names the key: {body}"
            );
        }
    }
    assert_eq!(
        status_of(http, valv, "/v2/").await,
        StatusCode::OK,
        "/v2/ still answers"
    );
    assert_eq!(
        status_of(http, valv, "/readyz").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "/readyz fails while revoked"
    );
}

async fn assert_served(http: &Client, valv: &Valv, c: &Content) {
    let r = http
        .get(valv.url(&format!("/v2/app/blobs/{}", c.blob_digest)))
        .send()
        .await
        .expect("GET blob");
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.bytes().await.expect("body");
    assert!(
        body.as_ref() == c.blob.as_slice(),
        "the blob comes back identical"
    );
    assert_eq!(
        status_of(http, valv, "/v2/app/manifests/v1").await,
        StatusCode::OK
    );
    assert_eq!(status_of(http, valv, "/readyz").await, StatusCode::OK);
}

async fn blob_status(http: &Client, valv: &Valv, c: &Content) -> StatusCode {
    status_of(http, valv, &format!("/v2/app/blobs/{}", c.blob_digest)).await
}

/// Revokes with `revoke`, checks everything is refused in time, restores with
/// `restore`, checks everything comes back.
async fn revoke_and_restore(
    how: &str,
    v: &FakeVault,
    revoke: impl Fn(&FakeVault),
    restore: impl Fn(&FakeVault),
) {
    let data = tempfile::tempdir().expect("tempdir");
    let valv = start_valv(v, data.path(), 900);
    let http = client();
    let c = push_content(&http, &valv).await;
    assert_served(&http, &valv, &c).await;

    revoke(v);
    let took = within(
        key_check_deadline(INTERVAL),
        &format!("{how}: content refused"),
        || async { blob_status(&http, &valv, &c).await == StatusCode::FORBIDDEN },
    )
    .await;
    eprintln!("{how}: refused {took:?} after the revocation");
    assert_refused(&http, &valv, &c).await;

    restore(v);
    within(
        key_check_deadline(INTERVAL),
        &format!("{how}: content back"),
        || async { blob_status(&http, &valv, &c).await == StatusCode::OK },
    )
    .await;
    assert_served(&http, &valv, &c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_unwrap_permission_revokes_and_granting_it_restores() {
    let v = vault().await;
    revoke_and_restore(
        "permission removed",
        &v,
        |v| v.revoke(OID, &[Permission::UnwrapKey]).expect("revoke"),
        |v| v.grant(OID, &[Permission::UnwrapKey]).expect("grant"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_the_key_revokes_and_enabling_it_restores() {
    let v = vault().await;
    revoke_and_restore(
        "key disabled",
        &v,
        |v| v.set_enabled(KEY, None, false).expect("disable"),
        |v| v.set_enabled(KEY, None, true).expect("enable"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_key_revokes_and_recovering_it_restores() {
    let v = vault().await;
    revoke_and_restore(
        "key deleted",
        &v,
        |v| v.delete_key(KEY).expect("delete"),
        |v| v.recover_key(KEY).expect("recover"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_in_progress_is_cut_by_a_revocation() {
    let v = vault().await;
    let data = tempfile::tempdir().expect("tempdir");
    let valv = start_valv(&v, data.path(), 900);
    let http = client();
    let big: Vec<u8> = (0..64 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8)
        .collect();
    let digest = push_blob(&http, &valv, "big", &big).await;

    let mut resp = http
        .get(valv.url(&format!("/v2/big/blobs/{digest}")))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::OK);
    let first = resp
        .chunk()
        .await
        .expect("first chunk")
        .expect("some bytes");
    let mut received = first.len();

    v.revoke(OID, &[Permission::UnwrapKey]).expect("revoke");
    within(
        key_check_deadline(INTERVAL),
        "revocation noticed",
        || async { status_of(&http, &valv, "/readyz").await == StatusCode::SERVICE_UNAVAILABLE },
    )
    .await;
    // Whatever was already in socket buffers may still arrive; then the body ends
    // early, with an error, never with the whole blob.
    let outcome = loop {
        match resp.chunk().await {
            Ok(Some(c)) => received += c.len(),
            Ok(None) => break "ended",
            Err(_) => break "error",
        }
    };
    assert!(
        received < big.len(),
        "the pull was cut ({outcome}) after {received} of {} bytes",
        big.len()
    );
}

/// The key state `/readyz` reports: its status and whether its body says "degraded".
async fn readiness(http: &Client, valv: &Valv) -> (StatusCode, bool) {
    let r = http
        .get(valv.url("/readyz"))
        .send()
        .await
        .expect("GET /readyz");
    let status = r.status();
    (
        status,
        r.text().await.unwrap_or_default().contains("degraded"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_ridden_out_for_the_grace_period_then_refused_then_recovered() {
    // Long enough that the degraded window (the grace less the first failing check)
    // is seen by many polls even on a loaded runner.
    const GRACE: Duration = Duration::from_secs(6);
    let v = vault().await;
    let data = tempfile::tempdir().expect("tempdir");
    let valv = start_valv(&v, data.path(), GRACE.as_secs());
    let http = client();
    let c = push_content(&http, &valv).await;

    v.set_outage(Outage::Unavailable);
    let outage_start = Instant::now();
    // In order: reads served while degraded (the registry keys are in memory), then
    // 503 once the grace has run out. A blob read between two readiness answers that
    // both say "degraded" happened within the grace and must be served.
    let deadline = outage_start + GRACE + key_check_deadline(INTERVAL);
    let mut served_while_degraded = 0u32;
    let refused_after = loop {
        let before = readiness(&http, &valv).await;
        let blob = blob_status(&http, &valv, &c).await;
        let after = readiness(&http, &valv).await;
        let degraded = (StatusCode::OK, true);
        if before == degraded && after == degraded {
            assert_eq!(blob, StatusCode::OK, "a read within the grace is served");
            served_while_degraded += 1;
        }
        if blob == StatusCode::SERVICE_UNAVAILABLE {
            break outage_start.elapsed();
        }
        assert_eq!(blob, StatusCode::OK, "an outage answers 200 or 503");
        assert!(
            Instant::now() < deadline,
            "not refused within {:?} of the outage",
            deadline - outage_start
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        served_while_degraded > 0,
        "the degraded state, with reads served, was seen before the refusal"
    );
    assert!(
        refused_after >= GRACE,
        "refused {refused_after:?} into the outage, before the {GRACE:?} grace ran out"
    );
    assert_eq!(
        status_of(&http, &valv, "/readyz").await,
        StatusCode::SERVICE_UNAVAILABLE
    );

    v.set_outage(Outage::None);
    within(
        key_check_deadline(INTERVAL),
        "served again after the outage",
        || async { blob_status(&http, &valv, &c).await == StatusCode::OK },
    )
    .await;
    assert_served(&http, &valv, &c).await;
}

/// Every stored object except the keyring: path → sha256 of its bytes.
fn content_objects(store: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![store.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let entry = entry.expect("entry");
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(store)
                    .expect("under store")
                    .to_string_lossy()
                    .into_owned();
                if !rel.starts_with("keyring") {
                    out.insert(rel, sha256(&std::fs::read(&path).expect("read")));
                }
            }
        }
    }
    out
}

/// The versioned KEK ids wrapping the registry keys, from the newest keyring object.
fn keyring_keks(store: &Path) -> Vec<String> {
    let dir = store.join("keyring");
    // Only committed objects: names that are sequence numbers (a put in progress is a
    // staging file `<sequence>#<n>` beside them).
    let newest = dir.join(format!("{:020}", keyring_sequence(store)));
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(newest).expect("read keyring"))
            .expect("keyring JSON");
    doc["generations"]
        .as_array()
        .expect("generations")
        .iter()
        .map(|g| g["kek"].as_str().expect("kek").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_rotation_adopts_a_new_version_without_touching_blobs() {
    let v = vault().await;
    let data = tempfile::tempdir().expect("tempdir");
    let valv = start_valv(&v, data.path(), 900);
    let http = client();
    let c = push_content(&http, &valv).await;
    let store = data.path().join("store");
    let before = content_objects(&store);
    let old = keyring_keks(&store);
    assert_eq!(old.len(), 1);

    let new = v.add_version(KEY).await.expect("add version");
    let want = format!("{}/{}", key_id(), new.version);
    within(
        key_check_deadline(INTERVAL),
        "rotation to the new version",
        || async { keyring_keks(&store) == vec![want.clone()] },
    )
    .await;
    let shown = show(&http, &valv).await;
    let props = &shown["keyVaultProperties"];
    assert_eq!(
        props["versionedKeyIdentifier"],
        want.as_str(),
        "show reports the new version: {shown}"
    );
    assert_eq!(props["keyIdentifier"], key_id().as_str());
    assert_eq!(props["keyRotationEnabled"], true);
    assert!(
        props["lastKeyRotationTimestamp"].is_string(),
        "show reports the rotation time: {shown}"
    );
    assert_eq!(shown["state"], "active");

    // The old version can go; everything still reads (after a key check with it gone).
    let old_version = old[0].rsplit('/').next().expect("version").to_owned();
    v.set_enabled(KEY, Some(&old_version), false)
        .expect("disable old version");
    // Two more probes than before the disable: the second began after it (the first
    // may have been in flight), so it ran against the vault as it is now.
    let probes_before = v.counters().unwrap_key;
    within(
        key_check_deadline(INTERVAL),
        "a whole key check after disabling the old version",
        || async { v.counters().unwrap_key >= probes_before + 2 },
    )
    .await;
    assert_served(&http, &valv, &c).await;
    assert_eq!(
        content_objects(&store),
        before,
        "no envelope or data object was rewritten or added by the rotation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_calls_do_not_grow_with_content() {
    let v = vault().await;
    let data = tempfile::tempdir().expect("tempdir");
    // Checks and polls far apart, so only the requests themselves could call the vault.
    v.reset_counters();
    let valv = start_valv_with(&v, data.path(), 900, 3600);
    let at_start = v.counters();
    assert_eq!(
        at_start.unwrap_key, 0,
        "a fresh registry creates its registry key: it wraps, it does not unwrap"
    );
    assert_eq!(
        at_start.wrap_key, 1,
        "one wrap for the one registry-key generation"
    );
    let http = client();
    let mut blobs = Vec::new();
    for i in 0..1000u32 {
        let data = format!("blob number {i} of the O(1) test").into_bytes();
        let digest = push_blob(&http, &valv, "many", &data).await;
        blobs.push((digest, data));
    }
    drop(valv);

    // A restart unwraps the registry key once.
    v.reset_counters();
    let valv = start_valv_with(&v, data.path(), 900, 3600);
    let restart = v.counters();
    assert_eq!(
        restart.unwrap_key, 1,
        "start-up: one unwrap per registry-key generation"
    );
    assert_eq!(restart.wrap_key, 0);

    v.reset_counters();
    for (digest, data) in &blobs {
        let r = http
            .get(valv.url(&format!("/v2/many/blobs/{digest}")))
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.expect("body").as_ref(), data.as_slice());
    }
    assert_eq!(
        v.counters().vault_calls(),
        0,
        "pulling 1,000 blobs made no vault call: {:?}",
        v.counters()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pulls_under_three_rotations_never_fail() {
    let v = vault().await;
    let data = tempfile::tempdir().expect("tempdir");
    let valv = start_valv(&v, data.path(), 900);
    let http = client();
    let mut blobs = Vec::new();
    for i in 0..8u32 {
        let body: Vec<u8> = (0..(1_000_000 + i * 77_777))
            .map(|j| (j.wrapping_mul(i + 3) >> 5) as u8)
            .collect();
        let digest = push_blob(&http, &valv, "load", &body).await;
        blobs.push((digest, body));
    }
    let blobs = std::sync::Arc::new(blobs);
    let base = valv.base.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Pulls that came back whole, counted as they happen: each rotation must be
    // followed by pulls that see the new keyring.
    let pulled = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut pullers = Vec::new();
    for p in 0..4usize {
        let (blobs, base, stop, http) = (blobs.clone(), base.clone(), stop.clone(), http.clone());
        let pulled = pulled.clone();
        pullers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, Vec::new());
            let mut i = p;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (digest, body) = &blobs[i % blobs.len()];
                i += 1;
                match http
                    .get(format!("{base}/v2/load/blobs/{digest}"))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == StatusCode::OK => match r.bytes().await {
                        Ok(b) if b.as_ref() == body.as_slice() => {
                            ok += 1;
                            pulled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok(b) => failed.push(format!("{digest}: {} bytes, corrupted", b.len())),
                        Err(e) => failed.push(format!("{digest}: body: {e}")),
                    },
                    Ok(r) => failed.push(format!("{digest}: status {}", r.status())),
                    Err(e) => failed.push(format!("{digest}: {e}")),
                }
            }
            (ok, failed)
        }));
    }
    let store = data.path().join("store");
    let count = || pulled.load(std::sync::atomic::Ordering::Relaxed);
    // Enough whole pulls (of 1-1.5 MB blobs, four at a time) to span the moment a
    // rotation lands and some time after it.
    const PULLS_PER_STAGE: u64 = 40;
    let pulls_after = |stage: String| {
        let from = count();
        async move {
            within(Duration::from_secs(60), &stage, || async {
                count() >= from + PULLS_PER_STAGE
            })
            .await;
        }
    };
    pulls_after("pulls before the first rotation".into()).await;
    for round in 1..=3u32 {
        // The next rotation starts once pulls have run under the previous keyring; each
        // lands while the pullers keep going.
        let new = v.add_version(KEY).await.expect("add version");
        let want = format!("{}/{}", key_id(), new.version);
        within(
            key_check_deadline(INTERVAL),
            &format!("rotation {round}"),
            || async { keyring_keks(&store) == vec![want.clone()] },
        )
        .await;
        pulls_after(format!("pulls after rotation {round}")).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for p in pullers {
        let (ok, failed) = p.await.expect("puller");
        assert!(failed.is_empty(), "failed or corrupted pulls: {failed:?}");
        total += ok;
    }
    eprintln!("{total} pulls across 3 rotations, none failed");
    assert!(
        total >= 4 * PULLS_PER_STAGE,
        "the pullers kept pulling ({total})"
    );
}

/// The newest keyring object's sequence number.
fn keyring_sequence(store: &Path) -> u64 {
    std::fs::read_dir(store.join("keyring"))
        .expect("keyring dir")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .expect("a keyring object")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_store_rotate_once_and_are_revoked_together() {
    let v = vault().await;
    let data = tempfile::tempdir().expect("tempdir");
    let a = start_valv(&v, data.path(), 900);
    let b = start_valv(&v, data.path(), 900);
    let http = client();
    let c = push_content(&http, &a).await;
    assert_served(&http, &b, &c).await;
    let store = data.path().join("store");
    let seq_before = keyring_sequence(&store);
    let old = keyring_keks(&store);
    let old_version = old[0].rsplit('/').next().expect("version").to_owned();

    // One new version: exactly one rotation, by one node (one wrap of the one
    // registry-key generation; the other node holds back on the lease).
    v.reset_counters();
    let new = v.add_version(KEY).await.expect("add version");
    let want = format!("{}/{}", key_id(), new.version);
    within(key_check_deadline(INTERVAL), "rotation", || async {
        keyring_keks(&store) == vec![want.clone()]
    })
    .await;
    assert_eq!(
        keyring_sequence(&store),
        seq_before + 1,
        "the rotation was written once"
    );
    assert_eq!(
        v.counters().wrap_key,
        1,
        "one node rewrapped, once: {:?}",
        v.counters()
    );
    // The lease is released just after the keyring is written: wait for it, bounded.
    let lease = store.join("leases/rotation");
    within(
        key_check_deadline(INTERVAL),
        "the rotation lease released",
        || async { !lease.exists() },
    )
    .await;

    // Both nodes adopted it: with the old version disabled, a node still holding the
    // old keyring would fail its next probe and turn unready. Watch both until the
    // vault has answered three probes per node after the disable (and at least three
    // intervals have passed, so neither node can have been skipped).
    v.set_enabled(KEY, Some(&old_version), false)
        .expect("disable the old version");
    let probes_before = v.counters().unwrap_key;
    let window = Instant::now();
    within(
        key_check_deadline(3 * INTERVAL),
        "three key checks per node after disabling the old version",
        || async {
            for (name, node) in [("a", &a), ("b", &b)] {
                assert_eq!(
                    status_of(&http, node, "/readyz").await,
                    StatusCode::OK,
                    "node {name} is still ready with the old version disabled"
                );
            }
            v.counters().unwrap_key >= probes_before + 6
                && window.elapsed() >= Duration::from_secs(3 * INTERVAL)
        },
    )
    .await;
    assert_eq!(
        keyring_sequence(&store),
        seq_before + 1,
        "and nobody rotated again"
    );
    assert_served(&http, &a, &c).await;
    assert_served(&http, &b, &c).await;

    // A revocation stops both.
    v.revoke(OID, &[Permission::UnwrapKey]).expect("revoke");
    for (name, node) in [("a", &a), ("b", &b)] {
        within(
            key_check_deadline(INTERVAL),
            &format!("node {name} refuses"),
            || async { blob_status(&http, node, &c).await == StatusCode::FORBIDDEN },
        )
        .await;
    }
    v.grant(OID, &[Permission::UnwrapKey]).expect("grant");
    for (name, node) in [("a", &a), ("b", &b)] {
        within(
            key_check_deadline(INTERVAL),
            &format!("node {name} serves again"),
            || async { blob_status(&http, node, &c).await == StatusCode::OK },
        )
        .await;
    }
}
