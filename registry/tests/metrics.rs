//! `/metrics` (issue 15) on a real `valv serve`: after a known sequence of requests the
//! counters hold exactly what was done; the output parses with the Prometheus
//! project's Python text parser (`prometheus_client`, installed by scripts/test.sh);
//! the separate metrics listener needs no credentials while the main listener's
//! `/metrics` needs the admin role under htpasswd auth; a local key disabled with
//! `valv kek disable` shows as `valv_key_state{state="revoked"}` and enabling it again
//! as active.
//!
//! Waits are bounded polls of `/metrics` itself, never sleeps.

#[path = "http_util.rs"]
mod util;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::common::auth::{basic, htpasswd};
use util::*;

/// One sample: its name and its labels (sorted), as the parser read them.
type Key = (String, BTreeMap<String, String>);

/// Samples of a scrape, parsed by Python's `prometheus_client` text parser.
#[derive(Debug)]
struct Scrape(BTreeMap<Key, f64>);

/// The parser, printing `name`, labels and value of every sample as JSON lines, and
/// failing on anything it does not accept.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
text = sys.stdin.read()
for family in text_string_to_metric_families(text):
    assert family.type in ("counter", "gauge", "histogram"), (family.name, family.type)
    assert family.documentation, family.name
    for s in family.samples:
        print(json.dumps([s.name, s.labels, s.value]))
"#;

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut python = Command::new("python3")
            .args(["-c", PARSE])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 (scripts/test.sh installs prometheus-client)");
        python
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write to the parser");
        let out = python.wait_with_output().expect("parser output");
        assert!(
            out.status.success(),
            "prometheus_client refused the output (pip install prometheus-client==0.23.1 if it is missing):\n{}\n--- output ---\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut samples = BTreeMap::new();
        for line in String::from_utf8(out.stdout).expect("utf-8").lines() {
            let (name, labels, value): (String, BTreeMap<String, String>, f64) =
                serde_json::from_str(line).expect("a sample");
            let old = samples.insert((name.clone(), labels.clone()), value);
            assert!(old.is_none(), "sample {name}{labels:?} appears twice");
        }
        Scrape(samples)
    }

    /// The value of `name{labels}`, 0 when absent (a counter never incremented).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.0
            .get(&(name.to_owned(), labels))
            .copied()
            .unwrap_or(0.0)
    }

    /// Every sample of `name` with a non-zero value, by its labels.
    fn nonzero(&self, name: &str) -> BTreeMap<BTreeMap<String, String>, f64> {
        self.0
            .iter()
            .filter(|((n, _), v)| n == name && **v != 0.0)
            .map(|((_, l), v)| (l.clone(), *v))
            .collect()
    }

    fn key_state(&self) -> Vec<(String, f64)> {
        let mut states: Vec<_> = self
            .0
            .iter()
            .filter(|((n, _), _)| n == "valv_key_state")
            .map(|((_, l), v)| (l["state"].clone(), *v))
            .collect();
        states.sort_by(|a, b| a.0.cmp(&b.0));
        states
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// `GET <base>/metrics`, asserting 200 and the text format's content type.
async fn scrape_at(http: &reqwest::Client, base: &str) -> Scrape {
    let r = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "content-type"),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    Scrape::parse(&r.text().await.expect("body"))
}

fn metrics_base(reg: &Registry) -> String {
    reg.valv
        .metrics_base
        .clone()
        .expect("valv printed its metrics listener")
}

#[tokio::test]
async fn a_known_sequence_is_counted_exactly() {
    let reg = Registry::start_with(&["--metrics-listen", "127.0.0.1:0"]);
    let base = metrics_base(&reg);
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let layer = random_bytes(200_000, 15);
    let config_digest = reg.push_blob("team/app", &config).await;
    let layer_digest = reg.push_blob("team/app", &layer).await;
    let pulled = reg.blob("team/app", &layer_digest).await;
    assert_eq!(pulled, layer);
    let missing = format!("sha256:{}", "0".repeat(64));
    let r = reg.get(&format!("/v2/team/app/blobs/{missing}")).await;
    assert_eq!(r.status(), 404);
    let not_found_body = r.bytes().await.expect("404 body").len();
    let manifest = oci_manifest(
        (&config_digest, config.len()),
        &[(&layer_digest, layer.len())],
        "",
    );
    let r = reg
        .put_manifest("team/app", "v1", OCI_MANIFEST, manifest.as_bytes())
        .await;
    assert_eq!(r.status(), 201);
    let put_body = r.bytes().await.expect("body").len();
    let r = reg.get("/v2/team/app/manifests/v1").await;
    assert_eq!(r.status(), 200);
    let got = r.bytes().await.expect("manifest");
    assert_eq!(got, manifest.as_bytes());

    let m = scrape_at(&reg.http, &base).await;
    // Exactly these requests, and nothing else (the metrics listener counts nothing).
    let expected: BTreeMap<_, f64> = [
        (
            labels(&[("route", "upload"), ("method", "POST"), ("status", "2xx")]),
            2.0,
        ),
        (
            labels(&[("route", "blob"), ("method", "GET"), ("status", "2xx")]),
            1.0,
        ),
        (
            labels(&[("route", "blob"), ("method", "GET"), ("status", "4xx")]),
            1.0,
        ),
        (
            labels(&[("route", "manifest"), ("method", "PUT"), ("status", "2xx")]),
            1.0,
        ),
        (
            labels(&[("route", "manifest"), ("method", "GET"), ("status", "2xx")]),
            1.0,
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(m.nonzero("valv_http_requests_total"), expected);
    let by_route: BTreeMap<_, f64> = [
        (labels(&[("route", "upload"), ("method", "POST")]), 2.0),
        (labels(&[("route", "blob"), ("method", "GET")]), 2.0),
        (labels(&[("route", "manifest"), ("method", "PUT")]), 1.0),
        (labels(&[("route", "manifest"), ("method", "GET")]), 1.0),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        m.nonzero("valv_http_request_duration_seconds_count"),
        by_route
    );
    for (l, n) in &by_route {
        let mut inf = l.clone();
        inf.insert("le".into(), "+Inf".into());
        let key = ("valv_http_request_duration_seconds_bucket".to_owned(), inf);
        assert_eq!(m.0.get(&key), Some(n), "+Inf bucket of {l:?}");
    }
    // Bodies: what the pushes sent, and what the responses carried.
    let request_bytes: BTreeMap<_, f64> = [
        (
            labels(&[("route", "upload"), ("method", "POST")]),
            (config.len() + layer.len()) as f64,
        ),
        (
            labels(&[("route", "manifest"), ("method", "PUT")]),
            manifest.len() as f64,
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(m.nonzero("valv_http_request_bytes_total"), request_bytes);
    let mut response_bytes: BTreeMap<_, f64> = [
        (
            labels(&[("route", "blob"), ("method", "GET")]),
            (layer.len() + not_found_body) as f64,
        ),
        (
            labels(&[("route", "manifest"), ("method", "GET")]),
            manifest.len() as f64,
        ),
    ]
    .into_iter()
    .collect();
    if put_body > 0 {
        response_bytes.insert(
            labels(&[("route", "manifest"), ("method", "PUT")]),
            put_body as f64,
        );
    }
    assert_eq!(m.nonzero("valv_http_response_bytes_total"), response_bytes);
    assert_eq!(m.get("valv_uploads_in_progress", &[]), 0.0);

    // The manifest GET resolved the tag and read the manifest: one miss each.
    for cache in ["reference", "content"] {
        assert_eq!(
            m.get("valv_manifest_cache_misses_total", &[("cache", cache)]),
            1.0,
            "{cache}"
        );
        assert_eq!(
            m.get("valv_manifest_cache_hits_total", &[("cache", cache)]),
            0.0,
            "{cache}"
        );
    }
    // 64 KiB segments: the config took one, the layer four, the manifest one; the
    // pull opened the layer's four and the manifest GET the manifest's one.
    assert_eq!(m.get("valv_segments_sealed_total", &[]), 6.0);
    assert_eq!(m.get("valv_segments_opened_total", &[]), 5.0);
    // The object store was used and nothing failed.
    for op in ["get", "put", "list"] {
        assert!(
            m.get("valv_object_store_requests_total", &[("operation", op)]) > 0.0,
            "{op}"
        );
    }
    assert_eq!(m.nonzero("valv_object_store_errors_total"), BTreeMap::new());
    // A first start with the development key: one wrap of the new registry key, all
    // vault operations succeeded.
    assert_eq!(
        m.get(
            "valv_kms_operations_total",
            &[
                ("provider", "local"),
                ("operation", "wrap"),
                ("outcome", "ok")
            ]
        ),
        1.0
    );
    assert!(m
        .nonzero("valv_kms_operations_total")
        .keys()
        .all(|l| l["outcome"] == "ok"));
    assert_eq!(
        m.key_state(),
        [
            ("active".to_owned(), 1.0),
            ("degraded".to_owned(), 0.0),
            ("revoked".to_owned(), 0.0),
            ("unavailable".to_owned(), 0.0)
        ]
    );
    assert!(m.get("valv_key_last_probe_success_timestamp_seconds", &[]) > 1.7e9);
    // No label carries a repository, a digest or a tag.
    for (name, l) in m.0.keys() {
        for v in l.values() {
            assert!(
                !v.contains("team") && !v.contains("sha256") && v != "v1",
                "{name}{l:?}"
            );
        }
    }

    // The main listener's /metrics is open while access control is off, and counts
    // itself.
    let main = scrape_at(&reg.http, &reg.valv.base).await;
    let again = scrape_at(&reg.http, &reg.valv.base).await;
    assert_eq!(
        again.get(
            "valv_http_requests_total",
            &[("route", "metrics"), ("method", "GET"), ("status", "2xx")]
        ),
        main.get(
            "valv_http_requests_total",
            &[("route", "metrics"), ("method", "GET"), ("status", "2xx")]
        ) + 1.0
    );
}

#[tokio::test]
async fn the_metrics_listener_needs_no_credentials_the_main_one_needs_the_admin_role() {
    let dir = tempfile::tempdir().expect("tempdir");
    let users = htpasswd(dir.path(), &[("bob", "builder")], 4);
    let data = dir.path().join("data");
    let valv = Valv::start_with_env(
        &data,
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--htpasswd",
            users.to_str().expect("utf-8 path"),
        ],
        &[("VALV_ADMIN_TOKEN", "metrics-test-admin-token")],
    );
    let http = client();
    let base = valv.metrics_base.clone().expect("metrics listener");
    let open = scrape_at(&http, &base).await;
    assert_eq!(open.key_state()[0], ("active".to_owned(), 1.0));
    // Only /metrics is there.
    let r = http.get(format!("{base}/v2/")).send().await.expect("GET");
    assert_eq!(r.status(), 404);

    let main = valv.url("/metrics");
    let r = http.get(&main).send().await.expect("GET");
    assert_eq!(r.status(), 401, "no credentials");
    assert!(r.headers().contains_key("www-authenticate"));
    let r = http
        .get(&main)
        .header("authorization", basic("bob", "builder"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 403, "a user without the admin role");
    let r = http
        .get(&main)
        .header("authorization", basic("bob", "wrong"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 401, "a wrong password");
    let r = http
        .get(&main)
        .header("authorization", "Bearer metrics-test-admin-token")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200, "the admin token");
    let m = Scrape::parse(&r.text().await.expect("body"));
    // The refusals were counted like any request.
    assert_eq!(
        m.get(
            "valv_http_requests_total",
            &[("route", "metrics"), ("method", "GET"), ("status", "4xx")]
        ),
        3.0
    );
}

/// `valv kek …` (the local key's CLI), asserting success; its stdout.
fn kek(args: &[&str]) -> String {
    util::valv_ok(&[&["kek"], args].concat())
}

/// Scrapes until `cond` holds, for at most `within`; the last scrape.
async fn scrape_until(
    http: &reqwest::Client,
    base: &str,
    within: Duration,
    what: &str,
    cond: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let deadline = Instant::now() + within;
    loop {
        let m = scrape_at(http, base).await;
        if cond(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not reported within {within:?}: {:?}",
            m.key_state()
        );
        // Pacing between polls (as common::keyvault::within), not a wait for the state.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_revocation_and_a_restore_show_in_the_key_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = format!("file://{}/keys/registry", dir.path().display());
    kek(&["create", &key, "--bits", "2048"]);
    let shown: serde_json::Value =
        serde_json::from_str(&kek(&["show", &key, "--json"])).expect("json");
    let version = shown["versions"][0]["versionedKeyIdentifier"]
        .as_str()
        .expect("the version's id")
        .to_owned();
    let valv = Valv::start(
        &dir.path().join("data"),
        &[
            "--key-id",
            &key,
            "--key-check-interval",
            "1",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let http = client();
    let base = valv.metrics_base.clone().expect("metrics listener");
    let state =
        |name: &'static str| move |m: &Scrape| m.get("valv_key_state", &[("state", name)]) == 1.0;
    let active = scrape_at(&http, &base).await;
    assert!(state("active")(&active));
    let probed = active.get("valv_key_last_probe_success_timestamp_seconds", &[]);

    kek(&["disable", &version]);
    let within = Duration::from_secs(30);
    let revoked = scrape_until(&http, &base, within, "revoked", state("revoked")).await;
    assert_eq!(
        revoked.key_state(),
        [
            ("active".to_owned(), 0.0),
            ("degraded".to_owned(), 0.0),
            ("revoked".to_owned(), 1.0),
            ("unavailable".to_owned(), 0.0)
        ]
    );
    // The probe that found it: an unwrap the local provider refused.
    assert!(
        revoked.get(
            "valv_kms_operations_total",
            &[
                ("provider", "local"),
                ("operation", "unwrap"),
                ("outcome", "revoked")
            ]
        ) >= 1.0
    );

    kek(&["enable", &version]);
    let restored = scrape_until(&http, &base, within, "active again", state("active")).await;
    assert!(restored.get("valv_key_last_probe_success_timestamp_seconds", &[]) >= probed);
    assert_eq!(restored.get("valv_key_state", &[("state", "revoked")]), 0.0);
}
