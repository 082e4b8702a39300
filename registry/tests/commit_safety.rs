//! Issue 11 over HTTP, against the real binary on the filesystem backend: repeated and
//! re-sent commit PUTs never destroy an acknowledged blob, a broken blob answers 404 to
//! HEAD and is restored by a plain re-push, and what kills leave behind is swept. And
//! issue 16's bucket writer, over HTTP: a link copied between repositories on disk is
//! refused, and the admin API's seal-links reports it.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{client, location_path, sha256, Valv};
use reqwest::{Client, StatusCode};

const ADMIN_TOKEN: &str = "commit-safety-test-token";

fn start(data: &Path) -> Valv {
    Valv::start_with_env(data, &[], &[("VALV_ADMIN_TOKEN", ADMIN_TOKEN)])
}

/// Deterministic test content (xorshift), `len` bytes.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// POST a session and PATCH all of `data` into it; returns the upload path.
async fn staged(c: &Client, v: &Valv, repo: &str, data: &[u8]) -> String {
    let r = c
        .post(v.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = location_path(&r);
    if data.is_empty() {
        return loc;
    }
    let r = c
        .patch(v.url(&loc))
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("0-{}", data.len() - 1))
        .body(data.to_vec())
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status(), StatusCode::ACCEPTED, "PATCH");
    location_path(&r)
}

fn with_digest(loc: &str, digest: &str) -> String {
    let sep = if loc.contains('?') { '&' } else { '?' };
    format!("{loc}{sep}digest={digest}")
}

async fn get_blob(c: &Client, v: &Valv, repo: &str, digest: &str) -> (StatusCode, Vec<u8>) {
    let r = c
        .get(v.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .expect("GET");
    let status = r.status();
    let body = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
    (status, body)
}

async fn head_blob(c: &Client, v: &Valv, repo: &str, digest: &str) -> StatusCode {
    c.head(v.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .expect("HEAD")
        .status()
}

/// Every file below `dir`, relative to it.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.push(p.strip_prefix(dir).expect("below dir").to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// The store's view on disk: envelopes, the data objects they name, every data object,
/// and staging files (`…#<n>`) anywhere.
struct OnDisk {
    envelopes: Vec<PathBuf>,
    named: Vec<String>,
    data: Vec<String>,
    staging: Vec<PathBuf>,
}

fn on_disk(data_dir: &Path) -> OnDisk {
    let store = data_dir.join("store");
    let all = files(&store);
    let staging: Vec<PathBuf> = all
        .iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.rsplit_once('#'))
                .is_some_and(|(_, s)| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        })
        .cloned()
        .collect();
    let envelopes: Vec<PathBuf> = all
        .iter()
        .filter(|p| p.starts_with("blobs") && p.file_name().is_some_and(|n| n == "envelope"))
        .cloned()
        .collect();
    let mut named = Vec::new();
    for e in &envelopes {
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(store.join(e)).expect("read envelope"))
                .expect("envelope json");
        for p in json["parts"].as_array().expect("parts") {
            named.push(p["object"].as_str().expect("object").to_owned());
        }
    }
    named.sort();
    let data = all
        .iter()
        .filter(|p| p.starts_with("data") && !staging.contains(p))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    OnDisk {
        envelopes,
        named,
        data,
        staging,
    }
}

/// The data directories (`data/<blob>`) of upload sessions still open: their newest
/// state has no `phase`.
fn open_session_dirs(data_dir: &Path) -> std::collections::BTreeSet<String> {
    let uploads = data_dir.join("store/uploads");
    let mut newest: std::collections::BTreeMap<PathBuf, PathBuf> = Default::default();
    for f in files(&uploads) {
        if let Some(dir) = f.parent() {
            let e = newest.entry(dir.to_path_buf()).or_insert_with(|| f.clone());
            if f > *e {
                *e = f.clone();
            }
        }
    }
    newest
        .values()
        .filter_map(|f| std::fs::read(uploads.join(f)).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter(|state| state.get("phase").is_none())
        .filter_map(|state| state["blob"].as_str().map(|b| format!("data/{b}")))
        .collect()
}

async fn sweep(c: &Client, v: &Valv) -> serde_json::Value {
    let r = c
        .post(v.url("/admin/v1/storage/sweep"))
        .bearer_auth(ADMIN_TOKEN)
        .body(r#"{"graceSecs": 0}"#)
        .send()
        .await
        .expect("sweep");
    assert_eq!(r.status(), StatusCode::OK, "sweep");
    r.json().await.expect("sweep report")
}

/// Acceptance 1: 8 identical commit PUTs of one session at once, 50 times, sizes around
/// the 64 KiB segment boundaries and above 1 MiB. Every answer is 201 or 404, the blob
/// reads back byte-identical every time, and the store holds one envelope per blob and
/// exactly its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_identical_commits_at_once_keep_the_blob() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v = start(dir.path());
    let c = client();
    let sizes = [
        1usize, 65_535, 65_536, 65_537, 131_072, 131_073, 1_048_577, 1_500_000,
    ];
    let mut statuses = std::collections::BTreeMap::new();
    for round in 0..50u64 {
        let size = sizes[round as usize % sizes.len()];
        let data = content(round + 1, size);
        let digest = sha256(&data);
        let loc = staged(&c, &v, "race/one", &data).await;
        let url = v.url(&with_digest(&loc, &digest));
        let puts: Vec<_> = (0..8)
            .map(|_| {
                let (c, url) = (c.clone(), url.clone());
                tokio::spawn(async move { c.put(url).send().await.map(|r| r.status()) })
            })
            .collect();
        for p in puts {
            let status = p.await.expect("join").expect("PUT answered");
            assert!(
                status == StatusCode::CREATED || status == StatusCode::NOT_FOUND,
                "round {round} ({size} B): PUT answered {status}"
            );
            *statuses.entry(status.as_u16()).or_insert(0) += 1;
        }
        let (status, body) = get_blob(&c, &v, "race/one", &digest).await;
        assert_eq!(status, StatusCode::OK, "round {round}");
        assert!(body == data, "round {round} ({size} B): bytes differ");
        // The session is over: status and append are 404.
        let r = c.get(v.url(&loc)).send().await.expect("GET session");
        assert_eq!(
            r.status(),
            StatusCode::NOT_FOUND,
            "round {round}: session status"
        );
    }
    let disk = on_disk(dir.path());
    assert_eq!(disk.envelopes.len(), 50, "one envelope per blob");
    assert_eq!(disk.data, disk.named, "exactly the envelopes' data objects");
    assert!(disk.staging.is_empty(), "{:?}", disk.staging);
    let report = sweep(&c, &v).await;
    assert_eq!(report["dataObjectsRemoved"], 0, "{report}");
    assert!(
        files(&dir.path().join("store/uploads")).is_empty(),
        "sessions swept"
    );
    eprintln!("8 commits at once x 50: answers {statuses:?}");
}

/// Acceptance 3: data objects deleted behind valv's back make HEAD answer 404 and GET
/// fail before any header; a plain monolithic re-push restores the blob byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_whose_data_vanished_is_unknown_and_repaired_by_a_push() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v = start(dir.path());
    let c = client();
    let data = content(42, 300_000);
    let digest = sha256(&data);
    let push = || async {
        c.post(v.url(&format!("/v2/repair/me/blobs/uploads/?digest={digest}")))
            .body(data.clone())
            .send()
            .await
            .expect("push")
            .status()
    };
    assert_eq!(push().await, StatusCode::CREATED);
    assert_eq!(
        head_blob(&c, &v, "repair/me", &digest).await,
        StatusCode::OK
    );
    for f in on_disk(dir.path()).data {
        std::fs::remove_file(dir.path().join("store").join(f)).expect("remove data object");
    }
    assert_eq!(
        head_blob(&c, &v, "repair/me", &digest).await,
        StatusCode::NOT_FOUND
    );
    let (status, _) = get_blob(&c, &v, "repair/me", &digest).await;
    assert!(status.is_server_error(), "GET of a broken blob: {status}");
    assert_eq!(push().await, StatusCode::CREATED);
    assert_eq!(
        head_blob(&c, &v, "repair/me", &digest).await,
        StatusCode::OK
    );
    let (status, body) = get_blob(&c, &v, "repair/me", &digest).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data, "restored bytes differ");
    let disk = on_disk(dir.path());
    assert_eq!(disk.data, disk.named);
}

/// A blob link copied on disk from one repository into another makes HEAD and GET there
/// fail (500, never the blob's bytes); the original repository still serves it, and
/// `POST /admin/v1/storage/seal-links` verifies the genuine links and refuses the copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_copied_between_repositories_on_disk_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v = start(dir.path());
    let c = client();
    let push = |repo: &'static str, data: Vec<u8>| {
        let c = c.clone();
        let url = v.url(&format!(
            "/v2/{repo}/blobs/uploads/?digest={}",
            sha256(&data)
        ));
        async move { c.post(url).body(data).send().await.expect("push").status() }
    };
    let secret = content(7, 200_000);
    let digest = sha256(&secret);
    assert_eq!(
        push("team-a/app", secret.clone()).await,
        StatusCode::CREATED
    );
    assert_eq!(
        push("team-b/app", content(8, 1000)).await,
        StatusCode::CREATED
    );
    let hex = digest.trim_start_matches("sha256:");
    let link = |repo: &str| {
        dir.path()
            .join("store/repositories")
            .join(repo)
            .join("_layers/sha256")
            .join(hex)
    };
    std::fs::copy(link("team-a/app"), link("team-b/app")).expect("copy the link");
    let head = head_blob(&c, &v, "team-b/app", &digest).await;
    assert!(head.is_server_error(), "HEAD through a copied link: {head}");
    let (status, body) = get_blob(&c, &v, "team-b/app", &digest).await;
    assert!(
        status.is_server_error(),
        "GET through a copied link: {status}"
    );
    assert!(body != secret, "the blob's bytes were served");
    let (status, body) = get_blob(&c, &v, "team-a/app", &digest).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == secret);

    let r = c
        .post(v.url("/admin/v1/storage/seal-links"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("seal-links");
    assert_eq!(r.status(), StatusCode::OK, "seal-links");
    let report: serde_json::Value = r.json().await.expect("report");
    assert_eq!(
        report,
        serde_json::json!({"verified": 2, "sealed": 0, "refused": 1})
    );
    let r = c
        .post(v.url("/admin/v1/storage/seal-links"))
        .send()
        .await
        .expect("seal-links without the token");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// Acceptance 2: valv is killed with SIGKILL at varied points inside the commit PUT
/// (with and without a last chunk), restarted, and the client re-sends the PUT. It is
/// answered 201 and the blob reads back byte-identical, in 100 tries; a final sweep
/// leaves exactly the blobs' data and no staging file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_resent_after_kill_9_keeps_the_blob() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = client();
    let mut v = start(dir.path());
    let mut outcomes = std::collections::BTreeMap::<&str, u32>::new();
    for attempt in 0..100u64 {
        let size = [70_000usize, 200_000, 1_200_000][attempt as usize % 3];
        let data = content(1000 + attempt, size);
        let digest = sha256(&data);
        let with_body = attempt % 2 == 1;
        let split = if with_body { size / 2 } else { size };
        let loc = staged(&c, &v, "crash/commit", &data[..split]).await;
        let url = v.url(&with_digest(&loc, &digest));
        let last = data[split..].to_vec();
        // The commit PUT, carrying the last chunk when `with_body`.
        let commit = |url: String| {
            let req = c.put(url);
            if with_body {
                req.header("content-range", format!("{split}-{}", size - 1))
                    .body(last.clone())
            } else {
                req
            }
        };
        let put = {
            let req = commit(url);
            tokio::spawn(async move { req.send().await.map(|r| r.status()) })
        };
        // Kill points spread over the commit: a few hundred microseconds apart.
        let delay = Duration::from_micros((attempt * 7919) % 4000);
        tokio::time::sleep(delay).await;
        v.kill9();
        let first = put.await.expect("join");
        *outcomes
            .entry(match first {
                Ok(s) if s == StatusCode::CREATED => "answered 201 before the kill",
                Ok(_) => "answered other",
                Err(_) => "cut by the kill",
            })
            .or_insert(0) += 1;
        v = start(dir.path());
        let again = commit(v.url(&with_digest(&loc, &digest)))
            .send()
            .await
            .expect("re-sent PUT")
            .status();
        assert_eq!(
            again,
            StatusCode::CREATED,
            "attempt {attempt} (kill after {delay:?}, first {first:?})"
        );
        let (status, body) = get_blob(&c, &v, "crash/commit", &digest).await;
        assert_eq!(status, StatusCode::OK, "attempt {attempt}");
        assert!(body == data, "attempt {attempt}: bytes differ");
    }
    let report = sweep(&c, &v).await;
    let disk = on_disk(dir.path());
    assert_eq!(
        disk.data, disk.named,
        "after the sweep, only the blobs' data: {report}"
    );
    assert!(
        disk.staging.is_empty(),
        "staging files left: {:?}",
        disk.staging
    );
    assert_eq!(disk.envelopes.len(), 100);
    eprintln!("kill -9 inside the commit x 100: {outcomes:?}; sweep {report}");
}

/// How long the load test runs, and the kill interval.
const LOAD_DURATION: Duration = Duration::from_secs(60);

/// Acceptance 4: clients push (monolithic, chunked, the same content at once, retried
/// commits), pull, tag and delete while valv is killed with SIGKILL and restarted every
/// 15-25 s. At the end every acknowledged blob and tag reads back exactly, no 5xx was
/// answered, and after the sweep no staging file or orphan data object remains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_with_kills_loses_nothing_acknowledged() {
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().expect("tempdir");
    let v = start(dir.path());
    let base = Arc::new(Mutex::new(v.base.clone()));
    let valv = Arc::new(Mutex::new(v));
    let stop_at = Instant::now() + LOAD_DURATION;

    #[derive(Default)]
    struct Tally {
        ops: u64,
        cut: u64,
        server_errors: Vec<String>,
        blobs: Vec<(String, String, Vec<u8>)>,
        tags: std::collections::BTreeMap<(String, String), Option<String>>,
    }
    let tally = Arc::new(Mutex::new(Tally::default()));

    // The killer: SIGKILL and restart every 15-25 s.
    let killer = {
        let (valv, base, dir) = (valv.clone(), base.clone(), dir.path().to_owned());
        tokio::task::spawn_blocking(move || {
            let mut kills = 0u32;
            let mut next = Instant::now() + Duration::from_secs(15);
            while next < stop_at {
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
                let mut v = valv.lock().expect("valv");
                v.kill9();
                *v = start(&dir);
                *base.lock().expect("base") = v.base.clone();
                kills += 1;
                next = Instant::now() + Duration::from_secs(15 + u64::from(kills * 7 % 11));
            }
            kills
        })
    };

    let url = {
        let base = base.clone();
        move |path: &str| format!("{}{}", base.lock().expect("base"), path)
    };
    let mut workers = Vec::new();
    for w in 0..4u64 {
        let (tally, url) = (tally.clone(), url.clone());
        workers.push(tokio::spawn(async move {
            let c = client();
            let mut i = 0u64;
            while Instant::now() < stop_at {
                i += 1;
                let seed = w * 1_000_000 + i;
                let repo = format!("load/w{w}");
                // Shared content (worker-independent) every fourth op, so pushes race.
                let data = if i.is_multiple_of(4) { content(i / 4, 150_000) } else { content(seed, (seed as usize * 7717) % 600_000 + 1) };
                let digest = sha256(&data);
                let outcome: Result<Option<StatusCode>, reqwest::Error> = async {
                    match i % 5 {
                        // Monolithic.
                        0 | 1 => {
                            let r = c.post(url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}"))).body(data.clone()).send().await?;
                            Ok(Some(r.status()))
                        }
                        // Chunked, with a retried (doubled) commit.
                        2 | 3 => {
                            let r = c.post(url(&format!("/v2/{repo}/blobs/uploads/"))).send().await?;
                            if r.status() != StatusCode::ACCEPTED {
                                return Ok(Some(r.status()));
                            }
                            let loc = location_path(&r);
                            let mid = data.len() / 2;
                            let r = c.patch(url(&loc)).header("content-range", format!("0-{}", mid.max(1) - 1)).body(data[..mid.max(1)].to_vec()).send().await?;
                            if r.status() != StatusCode::ACCEPTED {
                                return Ok(Some(r.status()));
                            }
                            let loc = location_path(&r);
                            let rest = data[mid.max(1)..].to_vec();
                            let put = |body: Vec<u8>| {
                                let mut req = c.put(url(&with_digest(&loc, &digest)));
                                if !body.is_empty() {
                                    req = req.header("content-range", format!("{}-{}", mid.max(1), data.len() - 1)).body(body);
                                }
                                req.send()
                            };
                            let (a, b) = tokio::join!(put(rest.clone()), put(rest));
                            let statuses: Vec<StatusCode> = [a, b].into_iter().filter_map(|r| r.ok()).map(|r| r.status()).collect();
                            if statuses.iter().any(|s| s.is_server_error()) {
                                return Ok(statuses.into_iter().find(|s| s.is_server_error()));
                            }
                            Ok(statuses.into_iter().find(|s| *s == StatusCode::CREATED).or(Some(StatusCode::NOT_FOUND)))
                        }
                        // Tag a tiny manifest, then maybe delete the tag.
                        _ => {
                            let config = br#"{}"#;
                            let cd = sha256(config);
                            let r = c.post(url(&format!("/v2/{repo}/blobs/uploads/?digest={cd}"))).body(config.to_vec()).send().await?;
                            if r.status() != StatusCode::CREATED {
                                return Ok(Some(r.status()));
                            }
                            let manifest = format!(r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":2}},"layers":[],"annotations":{{"n":"{seed}"}}}}"#);
                            let md = sha256(manifest.as_bytes());
                            let tag = format!("t{}", i % 7);
                            let key = (repo.clone(), tag.clone());
                            // Until this write is answered, the tag's value is unknown.
                            tally.lock().expect("tally").tags.remove(&key);
                            let r = c.put(url(&format!("/v2/{repo}/manifests/{tag}"))).header("content-type", "application/vnd.oci.image.manifest.v1+json").body(manifest).send().await?;
                            let status = r.status();
                            if status == StatusCode::CREATED {
                                tally.lock().expect("tally").tags.insert(key.clone(), Some(md));
                                if i.is_multiple_of(3) {
                                    let r = c.delete(url(&format!("/v2/{repo}/manifests/{tag}"))).send().await;
                                    match r {
                                        Ok(r) if r.status() == StatusCode::ACCEPTED => {
                                            tally.lock().expect("tally").tags.insert(key, None);
                                        }
                                        Ok(r) => return Ok(Some(r.status())),
                                        Err(e) => {
                                            tally.lock().expect("tally").tags.remove(&key);
                                            return Err(e);
                                        }
                                    }
                                }
                            } else {
                                return Ok(Some(status));
                            }
                            Ok(None)
                        }
                    }
                }
                .await;
                {
                    let mut t = tally.lock().expect("tally");
                t.ops += 1;
                match outcome {
                    Ok(Some(s)) if s == StatusCode::CREATED => t.blobs.push((repo, digest, data)),
                    Ok(Some(s)) if s.is_server_error() => t.server_errors.push(format!("op {i} of worker {w}: {s}")),
                    Ok(_) => {}
                    // The kill cut the request: its outcome is unknown, nothing to check.
                    Err(_) => t.cut += 1,
                }
                }
                // Pull something already acknowledged, now and then.
                let sample = {
                    let t = tally.lock().expect("tally");
                    (i.is_multiple_of(3) && !t.blobs.is_empty()).then(|| t.blobs[(seed as usize) % t.blobs.len()].clone())
                };
                if let Some((repo, digest, data)) = sample {
                    if let Ok(r) = c.get(url(&format!("/v2/{repo}/blobs/{digest}"))).send().await {
                        let status = r.status();
                        if status.is_server_error() {
                            tally.lock().expect("tally").server_errors.push(format!("GET {digest}: {status}"));
                        } else if let Ok(body) = r.bytes().await {
                            assert_eq!(status, StatusCode::OK, "acknowledged blob {digest}");
                            assert!(body.as_ref() == data.as_slice(), "acknowledged blob {digest} differs");
                        }
                    }
                }
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let kills = killer.await.expect("killer");

    // Everything acknowledged reads back exactly.
    let c = client();
    // The killer and the workers are done: the process and the tally are ours alone.
    let Ok(v) = Arc::try_unwrap(valv) else {
        panic!("the killer still holds the process");
    };
    let v = v.into_inner().expect("valv");
    let t = std::mem::take(&mut *tally.lock().expect("tally"));
    let mut verified_bytes = 0u64;
    for (repo, digest, data) in &t.blobs {
        let (status, body) = get_blob(&c, &v, repo, digest).await;
        assert_eq!(status, StatusCode::OK, "{repo} {digest}");
        assert!(body == *data, "{repo} {digest}: bytes differ");
        verified_bytes += data.len() as u64;
    }
    for ((repo, tag), expected) in &t.tags {
        let r = c
            .get(v.url(&format!("/v2/{repo}/manifests/{tag}")))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .expect("GET tag");
        match expected {
            Some(md) => {
                assert_eq!(r.status(), StatusCode::OK, "{repo}:{tag}");
                let got = r
                    .headers()
                    .get("docker-content-digest")
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned);
                assert_eq!(got.as_deref(), Some(md.as_str()), "{repo}:{tag}");
            }
            None => assert_eq!(
                r.status(),
                StatusCode::NOT_FOUND,
                "{repo}:{tag} was deleted"
            ),
        }
    }
    assert!(
        t.server_errors.is_empty(),
        "5xx answered: {:?}",
        t.server_errors
    );
    let report = sweep(&c, &v).await;
    let disk = on_disk(&v.data_dir);
    assert!(
        disk.staging.is_empty(),
        "staging files left: {:?}",
        disk.staging
    );
    // Sessions a kill cut short stay open (their clients may resume them): their data
    // directories are in use, not orphaned.
    let open_dirs = open_session_dirs(&v.data_dir);
    let orphans: Vec<&String> = disk
        .data
        .iter()
        .filter(|d| !disk.named.contains(d))
        .filter(|d| {
            !d.rsplit_once('/')
                .is_some_and(|(dir, _)| open_dirs.contains(dir))
        })
        .collect();
    let missing: Vec<&String> = disk
        .named
        .iter()
        .filter(|n| !disk.data.contains(n))
        .collect();
    assert!(
        orphans.is_empty() && missing.is_empty(),
        "after the sweep ({report}): {} orphan data objects {:?}, {} named but missing {:?}",
        orphans.len(),
        orphans.iter().take(10).collect::<Vec<_>>(),
        missing.len(),
        missing.iter().take(10).collect::<Vec<_>>()
    );
    eprintln!(
        "load test: {} s, {} operations, {} kills, {} cut by a kill, {} blobs and {} tags acknowledged, {} bytes verified; sweep {report}",
        LOAD_DURATION.as_secs(),
        t.ops,
        kills,
        t.cut,
        t.blobs.len(),
        t.tags.len(),
        verified_bytes
    );
    assert!(kills >= 3, "killed {kills} times");
}
