//! Three valv nodes on one bucket (issue 14, acceptance 2): DESIGN §1.7's promise that
//! every node is stateless, so any of them can serve any request, kept on S3 (moto's
//! server) and on Azure Blob (Azurite).
//!
//! Each test starts three `valv serve` processes on one fresh prefix of the test
//! bucket (or container), with data directories of their own and one shared KEK (a
//! `file://` key made with `valv kek create`), and puts a round-robin proxy
//! (multi_node/round_robin.rs) in front of them that sends each request, not each
//! connection, to the next node:
//!
//! - docker pushes an image through the proxy, so one upload's POST, PATCH and PUT
//!   land on different nodes; every node then serves it byte for byte, and podman
//!   pulls it straight from a node other than the one that took the manifest;
//! - the proxy SIGKILLs the node serving docker's PATCH of the big layer 4 MiB into
//!   its body; docker retries the layer (a fresh upload, through the proxy, which
//!   skips the dead node when it refuses), the push completes, and the two survivors
//!   serve everything byte for byte and take new uploads;
//! - a rotate-key on one node is adopted by all three (the old KEK version can then
//!   be disabled), an upload begun before the rotation finishes after it on other
//!   nodes, and disabling the new version (revocation) stops all three within the key
//!   check interval; enabling it brings them back.
//!
//! The object-store servers come from the test command (scripts/test.sh), as for
//! object_stores.rs: a missing `VALV_TEST_S3_URL`/`VALV_TEST_AZURE_URL` fails the test,
//! and a plain `cargo test` skips them all (`#[ignore]`). The docker tests also need
//! dockerd and podman, with e2e_docker.rs's rule: missing, they skip, unless
//! `VALV_E2E=1` (set by scripts/test.sh) makes that a failure.
//!
//! Waits are bounded polls of what the nodes answer, never sleeps.

#[path = "http_util.rs"]
mod util;

#[path = "multi_node/round_robin.rs"]
mod round_robin;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt as _;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use round_robin::{Node, RoundRobin, Served};
use util::common::clients::{
    assert_pushed, build_context, config_digest, fetch_blob, fetch_manifest, layers, path_str,
    push_digest, random_bytes, Docker, Images, Podman, DOCKER_MANIFEST, MIB,
};
use util::common::keyvault::{show, within, ADMIN_TOKEN};
use util::common::{client, sha256, Valv};
use util::{fresh_store_url, valv_ok};

const NODES: usize = 3;

// ---------------------------------------------------------------------------------
// Three nodes

/// Three valv processes on one store and one KEK.
struct Cluster {
    /// Killed before their data directories and the KEK go (fields drop in order).
    nodes: Vec<Valv>,
    _dirs: Vec<tempfile::TempDir>,
    /// `file://<dir>/kek`, versionless: a new version can be rotated to.
    key_id: String,
    _keys: tempfile::TempDir,
}

impl Cluster {
    /// Makes a KEK and starts [`NODES`] nodes on `url` with it and `extra` flags, all
    /// at once (the first open of a fresh prefix is a race for the keyring, which the
    /// create-only keyring write settles), with the admin API on.
    fn start(url: &str, extra: &[&str]) -> Cluster {
        let keys = tempfile::tempdir().expect("tempdir");
        let key_id = format!("file://{}/kek", keys.path().display());
        valv_ok(&["kek", "create", &key_id, "--bits", "2048"]);
        let dirs: Vec<tempfile::TempDir> = (0..NODES)
            .map(|_| tempfile::tempdir().expect("tempdir"))
            .collect();
        let mut args = vec!["--storage", url, "--key-id", &key_id];
        args.extend_from_slice(extra);
        let nodes = std::thread::scope(|scope| {
            let starting: Vec<_> = dirs
                .iter()
                .map(|dir| {
                    let args = &args;
                    scope.spawn(move || {
                        Valv::start_with_env(dir.path(), args, &[("VALV_ADMIN_TOKEN", ADMIN_TOKEN)])
                    })
                })
                .collect();
            starting
                .into_iter()
                .map(|node| node.join().expect("a node failed to start"))
                .collect()
        });
        Cluster {
            nodes,
            _dirs: dirs,
            key_id,
            _keys: keys,
        }
    }

    /// The nodes as the proxy sees them.
    fn proxied(&self) -> Vec<Node> {
        self.nodes
            .iter()
            .map(|v| Node {
                addr: v.host().parse().expect("a node's host is ip:port"),
                pid: v.pid(),
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------
// What the proxy saw

/// One upload session, from the requests the proxy forwarded for it.
#[derive(Debug, Default)]
struct Upload {
    /// `(sequence, method, node)` of each of its requests.
    requests: Vec<(usize, String, usize)>,
    /// The digest it was committed as (a PUT answered 201).
    committed: Option<String>,
}

impl Upload {
    fn nodes(&self) -> BTreeSet<usize> {
        self.requests.iter().map(|r| r.2).collect()
    }
}

/// The path of a `Location` or request target (no scheme and host, no query).
fn path_of(url: &str) -> &str {
    let rest = match url.find("://") {
        Some(i) => url[i + 3..].find('/').map_or("/", |j| &url[i + 3 + j..]),
        None => url,
    };
    rest.split('?').next().unwrap_or(rest)
}

/// The `digest` query parameter of a request target.
fn digest_param(target: &str) -> Option<String> {
    let query = target.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "digest")
        .map(|(_, v)| v.into_owned())
}

/// The upload sessions the proxy saw, by their path: each one a POST answered 202
/// with its `Location`, and the requests sent to that location since.
fn uploads(served: &[Served]) -> BTreeMap<String, Upload> {
    let mut served: Vec<&Served> = served.iter().collect();
    served.sort_by_key(|s| s.seq);
    let mut sessions: BTreeMap<String, Upload> = BTreeMap::new();
    for s in served {
        let Some(node) = s.node else { continue };
        let session = if s.method == "POST" && s.status == Some(202) {
            s.location.as_deref().map(path_of)
        } else {
            Some(path_of(&s.target)).filter(|p| sessions.contains_key(*p))
        };
        let Some(session) = session else { continue };
        let upload = sessions.entry(session.to_owned()).or_default();
        upload.requests.push((s.seq, s.method.clone(), node));
        if s.method == "PUT" && s.status == Some(201) {
            upload.committed = digest_param(&s.target);
        }
    }
    sessions
}

/// The proxy's log, one request a line, for failure messages and the test output.
fn log(served: &[Served]) -> String {
    let mut served: Vec<&Served> = served.iter().collect();
    served.sort_by_key(|s| s.seq);
    served
        .iter()
        .map(|s| {
            format!(
                "#{:<3} {:<6} {:<100} node {:?} refused {:?} -> {}",
                s.seq,
                s.method,
                s.target,
                s.node,
                s.refused,
                s.status
                    .map_or_else(|| format!("broken off: {:?}", s.error), |c| c.to_string())
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The node that answered the last successful PUT of `repo:tag`'s manifest.
fn manifest_node(served: &[Served], repo: &str, tag: &str) -> usize {
    let target = format!("/v2/{repo}/manifests/{tag}");
    served
        .iter()
        .filter(|s| s.method == "PUT" && s.target == target && s.status == Some(201))
        .max_by_key(|s| s.seq)
        .and_then(|s| s.node)
        .unwrap_or_else(|| {
            panic!(
                "no manifest PUT of {repo}:{tag} answered 201:\n{}",
                log(served)
            )
        })
}

// ---------------------------------------------------------------------------------
// Checks

/// `node` serves `repo:tag` as docker pushed it (`pushed` is the digest docker
/// printed) and every blob of it hashes to its digest; returns the layers'
/// `(digest, size)`.
async fn assert_node_serves(
    http: &Client,
    node: &Valv,
    repo: &str,
    tag: &str,
    pushed: &str,
    what: &str,
) -> Vec<(String, u64)> {
    let (got, manifest) = fetch_manifest(http, node, repo, tag).await;
    assert_pushed(&got, DOCKER_MANIFEST, pushed, &format!("{what}: manifest"));
    fetch_blob(http, node, repo, &config_digest(&manifest)).await;
    let mut out = Vec::new();
    for (_, digest, size) in layers(&manifest) {
        let blob = fetch_blob(http, node, repo, &digest).await;
        assert_eq!(blob.len() as u64, size, "{what}: size of layer {digest}");
        out.push((digest, size));
    }
    out
}

/// podman pulls `repo:tag` straight from `node` and finds `files` in it.
fn podman_pulls(podman: &Podman, node: &Valv, repo: &str, tag: &str, files: &[(&str, &[u8])]) {
    let image = format!("{}/{repo}:{tag}", node.host());
    podman.ok(&[
        "pull",
        "--tls-verify=false",
        "--signature-policy",
        podman.policy(),
        &image,
    ]);
    podman.assert_files(&image, files, &format!("podman pull of {image}"));
}

/// An OCI chunked upload driven by hand through the proxy, one request at a time.
struct ChunkedUpload<'a> {
    http: &'a Client,
    proxy: &'a RoundRobin,
    location: String,
    offset: usize,
}

impl<'a> ChunkedUpload<'a> {
    async fn start(http: &'a Client, proxy: &'a RoundRobin, repo: &str) -> ChunkedUpload<'a> {
        let r = http
            .post(proxy.url(&format!("/v2/{repo}/blobs/uploads/")))
            .send()
            .await
            .expect("POST upload");
        assert_eq!(r.status(), StatusCode::ACCEPTED, "start an upload");
        ChunkedUpload {
            http,
            proxy,
            location: util::header(&r, "location"),
            offset: 0,
        }
    }

    async fn patch(&mut self, chunk: &[u8]) {
        let end = self.offset + chunk.len();
        let r = self
            .http
            .patch(self.proxy.url(&self.location))
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{}-{}", self.offset, end - 1))
            .body(chunk.to_vec())
            .send()
            .await
            .expect("PATCH");
        assert_eq!(r.status(), StatusCode::ACCEPTED, "chunk at {}", self.offset);
        assert_eq!(util::header(&r, "range"), format!("0-{}", end - 1));
        self.location = util::header(&r, "location");
        self.offset = end;
    }

    async fn finish(self, digest: &str) {
        let r = self
            .http
            .put(self.proxy.url(&util::with_query(
                &self.location,
                &format!("digest={digest}"),
            )))
            .send()
            .await
            .expect("PUT");
        assert_eq!(r.status(), StatusCode::CREATED, "commit {digest}");
    }
}

// ---------------------------------------------------------------------------------
// docker push through the proxy, podman pull from one node

async fn a_push_spans_the_nodes_and_any_node_serves_it(url: &str) {
    let Some(docker) = Docker::connect() else {
        return;
    };
    let Some(podman) = Podman::find() else {
        return;
    };
    let cluster = Cluster::start(url, &[]);
    let proxy = RoundRobin::start(cluster.proxied()).await;
    let http = client();

    let big = random_bytes(1, 6 * MIB + 5);
    let small = random_bytes(2, 300 * 1024);
    let files: [(&str, &[u8]); 3] = [
        ("/data/big.bin", &big),
        ("/data/small.bin", &small),
        ("/etc/nodes.txt", b"three nodes, one bucket\n"),
    ];
    let ctx = build_context(&files);
    let repo = "nodes/app";
    let image = format!("{}/{repo}:v1", proxy.host());
    let mut images = Images::new(&docker);
    images.track(&image);
    docker.ok(&["build", "-q", "-t", &image, path_str(ctx.path())]);
    let pushed = push_digest(&docker.ok(&["push", &image]));

    let served = proxy.served();
    eprintln!("proxy:\n{}", log(&served));
    assert!(
        served.iter().all(|s| s.status.is_some()),
        "every request was answered:\n{}",
        log(&served)
    );
    let uploads = uploads(&served);
    let committed: Vec<&Upload> = uploads.values().filter(|u| u.committed.is_some()).collect();
    assert!(
        committed.iter().any(|u| u.nodes().len() >= 2),
        "the requests of at least one upload went to more than one node:\n{}",
        log(&served)
    );
    let spanning = committed.iter().filter(|u| u.nodes().len() >= 2).count();
    eprintln!(
        "{spanning} of {} uploads were served by more than one node",
        committed.len()
    );

    // Every node serves the image byte for byte, whichever node took which part.
    let mut pushed_layers = BTreeSet::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let layers =
            assert_node_serves(&http, node, repo, "v1", &pushed, &format!("node {i}")).await;
        pushed_layers = layers.into_iter().map(|(d, _)| d).collect();
    }
    assert_eq!(pushed_layers.len(), files.len(), "one layer per COPY");
    for layer in &pushed_layers {
        assert!(
            committed
                .iter()
                .any(|u| u.committed.as_ref() == Some(layer)),
            "layer {layer} was uploaded through the proxy:\n{}",
            log(&served)
        );
    }

    // podman pulls straight from a node that did not take the manifest.
    let puller = (manifest_node(&served, repo, "v1") + 1) % NODES;
    podman_pulls(&podman, &cluster.nodes[puller], repo, "v1", &files);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto's S3 server and dockerd: run by scripts/test.sh"]
async fn s3_a_push_through_three_nodes_is_served_by_each() {
    a_push_spans_the_nodes_and_any_node_serves_it(&fresh_store_url("VALV_TEST_S3_URL")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Azurite and dockerd: run by scripts/test.sh"]
async fn azure_a_push_through_three_nodes_is_served_by_each() {
    a_push_spans_the_nodes_and_any_node_serves_it(&fresh_store_url("VALV_TEST_AZURE_URL")).await;
}

// ---------------------------------------------------------------------------------
// A node killed mid-upload

/// Body bytes of docker's PATCH of the big layer after which its node is killed.
const KILL_AFTER: u64 = 4 * MIB as u64;

async fn a_node_killed_mid_upload_leaves_the_push_to_the_others(url: &str) {
    let Some(docker) = Docker::connect() else {
        return;
    };
    let Some(podman) = Podman::find() else {
        return;
    };
    let mut cluster = Cluster::start(url, &[]);
    let proxy = RoundRobin::start(cluster.proxied()).await;
    let http = client();

    // Only the big layer's PATCH is longer than KILL_AFTER.
    let big = random_bytes(11, 16 * MIB + 3);
    let small = random_bytes(12, MIB);
    let files: [(&str, &[u8]); 3] = [
        ("/data/big.bin", &big),
        ("/data/small.bin", &small),
        ("/etc/killed.txt", b"one node was killed mid-push\n"),
    ];
    let ctx = build_context(&files);
    let repo = "nodes/killed";
    let image = format!("{}/{repo}:v1", proxy.host());
    let mut images = Images::new(&docker);
    images.track(&image);
    docker.ok(&["build", "-q", "-t", &image, path_str(ctx.path())]);
    proxy.kill_during_patch(KILL_AFTER);
    // docker retries a layer whose upload failed on a network error, after 5 s.
    let started = Instant::now();
    let pushed = push_digest(&docker.ok(&["push", &image]));
    eprintln!("docker push took {:?}", started.elapsed());

    let served = proxy.served();
    eprintln!("proxy:\n{}", log(&served));
    let kill = proxy.killed().unwrap_or_else(|| {
        panic!(
            "no PATCH passed {KILL_AFTER} bytes, so no node was killed:\n{}",
            log(&served)
        )
    });
    let dead = kill.node;
    assert!(kill.after >= KILL_AFTER);
    let exit = cluster.nodes[dead]
        .child
        .try_wait()
        .expect("try_wait")
        .unwrap_or_else(|| panic!("node {dead} is still running after its kill"));
    assert_eq!(exit.signal(), Some(9), "node {dead} died of SIGKILL");

    // The cut PATCH got no answer, and its session was never committed.
    let cut = served
        .iter()
        .find(|s| s.method == "PATCH" && s.target == kill.target)
        .expect("the cut PATCH is in the log");
    assert_eq!(
        cut.status,
        None,
        "the PATCH cut by the kill was not answered:\n{}",
        log(&served)
    );
    let uploads = uploads(&served);
    let cut_session = &uploads[path_of(&kill.target)];
    assert!(
        cut_session.committed.is_none(),
        "the cut session was not committed"
    );
    // The dead node refused a later request, which the next node took.
    assert!(
        served
            .iter()
            .any(|s| s.seq > cut.seq && s.refused.contains(&dead) && s.status.is_some()),
        "a request after the kill was refused by node {dead} and served by another:\n{}",
        log(&served)
    );

    // The survivors serve everything byte for byte; the big layer was committed by a
    // later upload, on a surviving node.
    let survivors: Vec<usize> = (0..NODES).filter(|&i| i != dead).collect();
    let mut big_layer = None;
    for &i in &survivors {
        let layers = assert_node_serves(
            &http,
            &cluster.nodes[i],
            repo,
            "v1",
            &pushed,
            &format!("surviving node {i}"),
        )
        .await;
        big_layer = layers.into_iter().max_by_key(|l| l.1).map(|l| l.0);
    }
    let big_layer = big_layer.expect("the image has layers");
    let retry = uploads
        .values()
        .find(|u| u.committed.as_ref() == Some(&big_layer))
        .unwrap_or_else(|| panic!("no upload committed {big_layer}:\n{}", log(&served)));
    let (commit_seq, _, commit_node) = retry.requests.last().expect("requests").clone();
    assert!(
        commit_seq > cut.seq && commit_node != dead,
        "the big layer was committed after the kill, by a surviving node:\n{}",
        log(&served)
    );

    // podman pulls from a survivor, the other one than the manifest's if it can.
    let manifest = manifest_node(&served, repo, "v1");
    let puller = survivors
        .iter()
        .copied()
        .find(|&i| i != manifest)
        .unwrap_or(survivors[0]);
    podman_pulls(&podman, &cluster.nodes[puller], repo, "v1", &files);

    // The two take new uploads too: one pushed in chunks through the proxy, past the
    // dead node, reads back from each.
    let after = random_bytes(13, MIB + 1);
    let mut upload = ChunkedUpload::start(&http, &proxy, repo).await;
    upload.patch(&after[..MIB / 2]).await;
    upload.patch(&after[MIB / 2..]).await;
    upload.finish(&sha256(&after)).await;
    for &i in &survivors {
        let got = fetch_blob(&http, &cluster.nodes[i], repo, &sha256(&after)).await;
        assert!(
            got == after,
            "node {i} reads the upload made after the kill"
        );
    }

    // And the proxy goes on serving through the two, past the dead one.
    for round in 0..NODES {
        let r = http
            .get(proxy.url(&format!("/v2/{repo}/blobs/{big_layer}")))
            .send()
            .await
            .expect("GET through the proxy");
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "round {round} through the proxy"
        );
        let body = r.bytes().await.expect("body");
        assert_eq!(sha256(&body), big_layer, "round {round} through the proxy");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto's S3 server and dockerd: run by scripts/test.sh"]
async fn s3_a_node_killed_mid_push_leaves_it_to_the_others() {
    a_node_killed_mid_upload_leaves_the_push_to_the_others(&fresh_store_url("VALV_TEST_S3_URL"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Azurite and dockerd: run by scripts/test.sh"]
async fn azure_a_node_killed_mid_push_leaves_it_to_the_others() {
    a_node_killed_mid_upload_leaves_the_push_to_the_others(&fresh_store_url("VALV_TEST_AZURE_URL"))
        .await;
}

// ---------------------------------------------------------------------------------
// Rotation and revocation across the nodes

/// Seconds between key checks on every node in the key tests.
const INTERVAL: u64 = 1;

/// How long one key check's effect may take to show on a node: up to one interval to
/// the next check, the check itself, once more in case the change landed just after
/// a check began, and slack for a loaded 2-core runner (as in key_lifecycle.rs).
fn key_check_deadline() -> Duration {
    Duration::from_secs(3 * INTERVAL + 10)
}

/// How long every node is watched staying ready after the old KEK version is
/// disabled: five key checks. A node still on the old keyring would fail one of them;
/// the revocation below shows that a disabled version is noticed well within it.
const ADOPTION_WINDOW: Duration = Duration::from_secs(5 * INTERVAL);

/// The KEK version a node's registry keys are wrapped under, as it reports it.
async fn kek_in_use(http: &Client, node: &Valv) -> String {
    show(http, node).await["keyVaultProperties"]["versionedKeyIdentifier"]
        .as_str()
        .expect("versionedKeyIdentifier")
        .to_owned()
}

async fn status_of(http: &Client, node: &Valv, path: &str) -> StatusCode {
    http.get(node.url(path)).send().await.expect("GET").status()
}

/// Each node's answer to a GET of the blob, and whether its bytes are `data`.
async fn reads(
    http: &Client,
    cluster: &Cluster,
    repo: &str,
    data: &[u8],
) -> Vec<(StatusCode, bool)> {
    let digest = sha256(data);
    let mut out = Vec::new();
    for node in &cluster.nodes {
        let r = http
            .get(node.url(&format!("/v2/{repo}/blobs/{digest}")))
            .send()
            .await
            .expect("GET blob");
        let status = r.status();
        let body = r.bytes().await.expect("body");
        out.push((status, body.as_ref() == data));
    }
    out
}

async fn rotation_and_revocation_reach_every_node(url: &str) {
    let interval = INTERVAL.to_string();
    // Rotation polls far apart: only the rotate-key below rotates.
    let cluster = Cluster::start(
        url,
        &[
            "--key-check-interval",
            &interval,
            "--rotation-poll-interval",
            "3600",
            "--outage-grace",
            "900",
        ],
    );
    let proxy = RoundRobin::start(cluster.proxied()).await;
    let http = client();
    let repo = "nodes/keys";

    // A blob pushed in two chunks through the proxy: with nobody else talking to it,
    // its four requests go to the three nodes in turn.
    let whole = random_bytes(21, 3 * MIB + 11);
    let mut upload = ChunkedUpload::start(&http, &proxy, repo).await;
    upload.patch(&whole[..MIB]).await;
    upload.patch(&whole[MIB..]).await;
    upload.finish(&sha256(&whole)).await;
    let served = proxy.served();
    let sessions = uploads(&served);
    assert_eq!(sessions.len(), 1);
    let nodes = sessions.values().next().expect("the upload").nodes();
    assert_eq!(
        nodes.len(),
        NODES,
        "one upload, every node:\n{}",
        log(&served)
    );
    // And one begun now, to be finished after the rotation.
    let spanning = random_bytes(22, 2 * MIB + 7);
    let mut open = ChunkedUpload::start(&http, &proxy, repo).await;
    open.patch(&spanning[..MIB]).await;

    let first = kek_in_use(&http, &cluster.nodes[0]).await;
    for node in &cluster.nodes {
        assert_eq!(kek_in_use(&http, node).await, first, "one keyring for all");
    }

    // A new version, and a rotate-key to it on one node.
    let second = valv_ok(&["kek", "add-version", &cluster.key_id, "--bits", "2048"])
        .trim()
        .strip_prefix("added ")
        .expect("`added <id>`")
        .to_owned();
    let r = http
        .post(cluster.nodes[1].url("/admin/v1/encryption/rotate-key"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({ "keyEncryptionKey": cluster.key_id }))
        .send()
        .await
        .expect("POST rotate-key");
    assert_eq!(r.status(), StatusCode::OK, "rotate-key on node 1");
    let doc: serde_json::Value = r.json().await.expect("rotate-key JSON");
    assert_eq!(
        doc["keyVaultProperties"]["versionedKeyIdentifier"],
        second.as_str(),
        "{doc}"
    );

    // Every node adopts the rotated keyring at its next key check.
    let took = within(
        key_check_deadline(),
        "every node on the new KEK version",
        || async {
            for node in &cluster.nodes {
                if kek_in_use(&http, node).await != second {
                    return false;
                }
            }
            true
        },
    )
    .await;
    eprintln!("every node used {second} {took:?} after the rotate-key");

    // The old version disabled: a node still needing it would fail a key check and
    // turn unready. None does, over several checks.
    valv_ok(&["kek", "disable", &first]);
    let disabled = Instant::now();
    within(
        ADOPTION_WINDOW + key_check_deadline(),
        "the adoption window",
        || async {
            for (i, node) in cluster.nodes.iter().enumerate() {
                assert_eq!(
                    status_of(&http, node, "/readyz").await,
                    StatusCode::OK,
                    "node {i} is still ready with the old KEK version disabled"
                );
            }
            disabled.elapsed() >= ADOPTION_WINDOW
        },
    )
    .await;

    // The upload begun before the rotation finishes after it, on other nodes, and
    // every node reads both blobs.
    open.patch(&spanning[MIB..]).await;
    open.finish(&sha256(&spanning)).await;
    for data in [&whole, &spanning] {
        assert!(
            reads(&http, &cluster, repo, data)
                .await
                .iter()
                .all(|r| *r == (StatusCode::OK, true)),
            "every node reads every blob after the rotation"
        );
    }

    // Revocation: the version in use disabled. Every node refuses content within the
    // key-check deadline, and within the adoption window above.
    valv_ok(&["kek", "disable", &second]);
    let revoked = Instant::now();
    let digest = sha256(&whole);
    for (i, node) in cluster.nodes.iter().enumerate() {
        within(
            key_check_deadline(),
            &format!("node {i} refuses content"),
            || async {
                status_of(&http, node, &format!("/v2/{repo}/blobs/{digest}")).await
                    == StatusCode::FORBIDDEN
            },
        )
        .await;
        let after = revoked.elapsed();
        eprintln!("node {i} refused {after:?} after the revocation");
        assert!(
            after < ADOPTION_WINDOW,
            "node {i} took {after:?} to notice a disabled version: the adoption window \
             ({ADOPTION_WINDOW:?}) would not have caught a node on the old keyring"
        );
    }
    for (i, node) in cluster.nodes.iter().enumerate() {
        let r = http
            .get(node.url(&format!("/v2/{repo}/blobs/{digest}")))
            .send()
            .await
            .expect("GET blob");
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "node {i}");
        let body = r.text().await.expect("body");
        assert!(
            body.contains("\"DENIED\"") && body.contains(&cluster.key_id),
            "node {i}: DENIED naming the key: {body}"
        );
        assert_eq!(
            status_of(&http, node, "/readyz").await,
            StatusCode::SERVICE_UNAVAILABLE,
            "node {i} is not ready while revoked"
        );
    }
    let r = http
        .post(proxy.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .expect("POST through the proxy");
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "no upload while revoked");

    // Enabled again: every node serves the same bytes, without a restart.
    valv_ok(&["kek", "enable", &second]);
    within(key_check_deadline(), "every node serves again", || async {
        reads(&http, &cluster, repo, &whole)
            .await
            .iter()
            .all(|r| *r == (StatusCode::OK, true))
    })
    .await;
    assert!(reads(&http, &cluster, repo, &spanning)
        .await
        .iter()
        .all(|r| *r == (StatusCode::OK, true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto's S3 server: the test command (scripts/test.sh) starts it"]
async fn s3_rotation_and_revocation_reach_every_node() {
    rotation_and_revocation_reach_every_node(&fresh_store_url("VALV_TEST_S3_URL")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Azurite: the test command (scripts/test.sh) starts it"]
async fn azure_rotation_and_revocation_reach_every_node() {
    rotation_and_revocation_reach_every_node(&fresh_store_url("VALV_TEST_AZURE_URL")).await;
}
