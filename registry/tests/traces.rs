//! Traces, exported by the real binary to a small OTLP/HTTP receiver in the test: a
//! blob pull is a SERVER span under the trace id and parent the client sent in
//! `traceparent`, with object-store CLIENT spans under it; a request without one is a
//! root; what is queued when valv stops is flushed; an unreachable collector holds up
//! neither requests nor shutdown.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{client, sha256, Valv};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use reqwest::StatusCode;

/// How long exported spans may take to reach the receiver once valv has stopped.
const EXPORT_WAIT: Duration = Duration::from_secs(30);

/// A span as the receiver got it, with its resource's `service.name`.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    span: Span,
}

/// The spans posted to the receiver, and the paths they were posted to.
#[derive(Debug, Default)]
struct Collected {
    spans: Vec<Received>,
    paths: Vec<String>,
}

/// An OTLP/HTTP trace receiver on 127.0.0.1: decodes each export request (protobuf)
/// and answers as a collector does.
#[derive(Clone, Default)]
struct Receiver(Arc<(Mutex<Collected>, Condvar)>);

impl Receiver {
    async fn start() -> (Receiver, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let receiver = Receiver::default();
        let shared = receiver.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(shared.export(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (receiver, addr)
    }

    async fn export(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = req.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(content_type, "application/x-protobuf", "OTLP/HTTP protobuf");
        let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
        let (collected, changed) = &*self.0;
        let mut collected = collected.lock().unwrap_or_else(|p| p.into_inner());
        collected.paths.push(path);
        for resource in request.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    AnyValue::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    collected.spans.push(Received {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
        changed.notify_all();
        let answer = ExportTraceServiceResponse::default().encode_to_vec();
        Response::builder()
            .header("content-type", "application/x-protobuf")
            .body(Full::new(Bytes::from(answer)))
            .expect("response")
    }

    /// Waits (bounded) until `done` holds of what was received; returns it.
    fn wait_until(&self, what: &str, done: impl Fn(&Collected) -> bool) -> Collected {
        let deadline = Instant::now() + EXPORT_WAIT;
        let (collected, changed) = &*self.0;
        let mut guard = collected.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if done(&guard) {
                return Collected {
                    spans: guard.spans.clone(),
                    paths: guard.paths.clone(),
                };
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "{what}: not received within {EXPORT_WAIT:?}; got {:#?}",
                guard.spans.iter().map(|r| &r.span.name).collect::<Vec<_>>()
            );
            guard = changed
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr(span: &Span, key: &str) -> Option<String> {
    let value = span.attributes.iter().find(|a| a.key == key)?;
    Some(match value.value.as_ref()?.value.as_ref()? {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::IntValue(i) => i.to_string(),
        other => format!("{other:?}"),
    })
}

/// `valv serve` on its filesystem storage with its development key, exporting to
/// `endpoint`, its access lines captured; spans are sent only when it stops (the batch
/// delay is an hour), so what a test receives was flushed at shutdown.
fn start(dir: &Path, endpoint: &str) -> Valv {
    start_with(dir, endpoint, &[])
}

/// [`start`] with more environment variables.
fn start_with(dir: &Path, endpoint: &str, env: &[(&str, &str)]) -> Valv {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_valv"));
    cmd.envs(env.iter().copied());
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--otlp-endpoint",
        endpoint,
    ])
    .arg("--data-dir")
    .arg(dir)
    .env("RUST_LOG", "info")
    .env("VALV_OTEL_SERVICE_NAME", "valv-under-test")
    .env("OTEL_BSP_SCHEDULE_DELAY", "3600000")
    .stdout(std::process::Stdio::piped())
    .stdin(std::process::Stdio::null());
    Valv::spawn_logged(cmd, dir)
}

/// Pushes `data` to `repo` as one monolithic upload; returns its digest.
async fn push_blob(valv: &Valv, repo: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    let r = client()
        .post(valv.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .expect("push");
    assert_eq!(r.status(), StatusCode::CREATED, "push");
    digest
}

// Multi-threaded: the receiver's tasks must run while the test blocks on valv's exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_pull_is_a_server_span_with_object_store_children_under_the_clients_trace() {
    let (receiver, addr) = Receiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut valv = start(dir.path(), &format!("http://{addr}"));

    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let digest = push_blob(&valv, "traced/app", &data).await;

    // The client's trace: W3C traceparent, sampled.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let r = client()
        .get(valv.url(&format!("/v2/traced/app/blobs/{digest}")))
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .send()
        .await
        .expect("pull");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.expect("body").as_ref(), &data[..]);
    let missing = client()
        .get(valv.url("/v2/traced/app/manifests/nope"))
        .send()
        .await
        .expect("404");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // Nothing is sent before valv stops (the batch delay is an hour): what arrives was
    // flushed at shutdown.
    let got = tokio::task::block_in_place(|| {
        assert!(valv.terminate().success(), "valv exits cleanly");
        receiver.wait_until("the pull's and the 404's server spans", |c| {
            let servers = c
                .spans
                .iter()
                .filter(|r| r.span.kind == SpanKind::Server as i32)
                .count();
            servers >= 3
        })
    });
    assert!(
        got.paths.iter().all(|p| p == "/v1/traces"),
        "posted to the default path: {:?}",
        got.paths
    );
    assert!(got.spans.iter().all(|r| r.service == "valv-under-test"));
    // The log is what it is without traces: the access line's span shows the request
    // id and nothing of the trace's SERVER span.
    let pulled = valv.logs().wait_for(
        &[
            "valv::access",
            "route=/v2/{name}/blobs/{digest}",
            "status=200",
        ],
        1,
        Duration::from_secs(5),
    );
    assert!(pulled[0].contains("request{request_id="), "{}", pulled[0]);
    assert_eq!(
        valv.logs().count(&["otel."]),
        0,
        "no trace fields in the log"
    );

    let in_trace: Vec<&Span> = got
        .spans
        .iter()
        .map(|r| &r.span)
        .filter(|s| hex(&s.trace_id) == trace_id)
        .collect();
    let server: Vec<&&Span> = in_trace
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(
        server.len(),
        1,
        "one server span in the client's trace: {in_trace:#?}"
    );
    let server = server[0];
    assert_eq!(server.name, "GET /v2/{name}/blobs/{digest}");
    assert_eq!(
        hex(&server.parent_span_id),
        client_span,
        "the client's span is the parent"
    );
    assert_eq!(
        attr(server, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attr(server, "http.route").as_deref(),
        Some("/v2/{name}/blobs/{digest}")
    );
    assert!(
        attr(server, "request_id").is_some_and(|id| id.len() == 32),
        "the request id is on the span"
    );
    // The body streamed after the response head; the span covers it.
    assert!(server.end_time_unix_nano > server.start_time_unix_nano);

    let children: Vec<&&Span> = in_trace
        .iter()
        .filter(|s| s.parent_span_id == server.span_id)
        .collect();
    assert!(
        children
            .iter()
            .any(|s| s.name == "object_store.get" && s.kind == SpanKind::Client as i32),
        "an object-store GET under the server span: {children:#?}"
    );
    for child in &children {
        assert_eq!(child.kind, SpanKind::Client as i32, "{child:#?}");
        assert!(
            child.start_time_unix_nano >= server.start_time_unix_nano
                && child.end_time_unix_nano <= server.end_time_unix_nano,
            "a child lies within its parent: {child:#?}"
        );
    }

    // The push and the 404 came without traceparent: roots of traces of their own.
    let roots: Vec<&Span> = got
        .spans
        .iter()
        .map(|r| &r.span)
        .filter(|s| s.kind == SpanKind::Server as i32 && s.parent_span_id.is_empty())
        .collect();
    let names: Vec<&str> = roots.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"POST /v2/{name}/blobs/uploads/")
            && names.contains(&"GET /v2/{name}/manifests/{reference}"),
        "{names:?}"
    );
    assert!(roots.iter().all(|s| hex(&s.trace_id) != trace_id));
    let not_found = roots
        .iter()
        .find(|s| s.name == "GET /v2/{name}/manifests/{reference}")
        .expect("the 404's span");
    assert_eq!(
        attr(not_found, "http.response.status_code").as_deref(),
        Some("404")
    );
    // The key's checks at start (and the wrap of the key the store seals under) are
    // key-vault CLIENT spans; no request is behind them, so they are roots.
    let kms: Vec<&Span> = got
        .spans
        .iter()
        .map(|r| &r.span)
        .filter(|s| s.name.starts_with("kms."))
        .collect();
    assert!(
        kms.iter().any(|s| s.name == "kms.wrap"),
        "a kms.wrap span: {kms:#?}"
    );
    for span in &kms {
        assert_eq!(span.kind, SpanKind::Client as i32, "{span:#?}");
        assert_eq!(attr(span, "valv.kms.provider").as_deref(), Some("local"));
        assert_eq!(attr(span, "valv.kms.outcome").as_deref(), Some("ok"));
    }
}

/// `telemetry.sample_ratio = 0`: a request is traced only when its client's
/// `traceparent` says sampled; the others make no span at all, not even the
/// object-store spans of a streamed blob (which would otherwise be roots of their own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_zero_sample_ratio_only_the_clients_sampled_requests_are_traced() {
    let (receiver, addr) = Receiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut valv = start_with(
        dir.path(),
        &format!("http://{addr}"),
        &[("VALV_OTLP_SAMPLE_RATIO", "0")],
    );
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let digest = push_blob(&valv, "sampled/app", &data).await;
    let len = data.len();
    let pull = |traceparent: Option<String>| {
        let mut req = client().get(valv.url(&format!("/v2/sampled/app/blobs/{digest}")));
        if let Some(t) = traceparent {
            req = req.header("traceparent", t);
        }
        async move {
            let r = req.send().await.expect("pull");
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.bytes().await.expect("body").len(), len);
        }
    };
    let sampled = "0af7651916cd43dd8448eb211c80319c";
    let declined = "5bf92f3577b34da6a3ce929d0e0e4737";
    pull(None).await;
    pull(Some(format!("00-{declined}-00f067aa0ba902b7-00"))).await;
    pull(Some(format!("00-{sampled}-b7ad6b7169203331-01"))).await;
    // A malformed traceparent leaves the decision to valv: not traced.
    pull(Some("00-zz-b7ad6b7169203331-01".into())).await;

    let got = tokio::task::block_in_place(|| {
        assert!(valv.terminate().success(), "valv exits cleanly");
        receiver.wait_until("the sampled pull's server span", |c| {
            c.spans
                .iter()
                .any(|r| r.span.kind == SpanKind::Server as i32)
        })
    });
    let spans: Vec<&Span> = got.spans.iter().map(|r| &r.span).collect();
    let servers: Vec<&&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(servers.len(), 1, "only the sampled request: {spans:#?}");
    assert_eq!(hex(&servers[0].trace_id), sampled);
    // Every object-store span about the repository's content is the sampled pull's;
    // the others are valv's own work outside requests (the storage probe, the keyring
    // written at first start, the key's checks), roots of their own.
    for span in &spans {
        let outside = span.parent_span_id.is_empty() && span.kind == SpanKind::Client as i32;
        let own = attr(span, "valv.object_store.path")
            .is_some_and(|p| p.starts_with("_valv/") || p.starts_with("keyring/"))
            || span.name.starts_with("kms.");
        assert!(
            hex(&span.trace_id) == sampled || (outside && own),
            "a span of a request not traced: {span:#?}"
        );
    }
    assert!(
        spans
            .iter()
            .any(|s| s.name == "object_store.get" && s.parent_span_id == servers[0].span_id),
        "the sampled pull's reads are under it: {spans:#?}"
    );
    assert!(spans.iter().all(|s| hex(&s.trace_id) != declined));
}

#[tokio::test]
async fn an_unreachable_collector_holds_up_neither_requests_nor_shutdown() {
    let closed = common::closed_port();
    let port = closed.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut valv = start(dir.path(), &format!("http://127.0.0.1:{port}/v1/traces"));
    let digest = push_blob(&valv, "untraced/app", b"still served").await;
    let r = client()
        .get(valv.url(&format!("/v2/untraced/app/blobs/{digest}")))
        .send()
        .await
        .expect("pull");
    assert_eq!(r.status(), StatusCode::OK);
    let started = Instant::now();
    assert!(valv.terminate().success(), "valv exits cleanly");
    // The exporter's shutdown is bounded (5 s) whatever the collector does.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stopped in {:?}",
        started.elapsed()
    );
}

#[test]
fn a_bad_endpoint_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_valv"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--otlp-endpoint",
            "collector:4318",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run valv");
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("telemetry.otlp_endpoint") && e.contains("collector:4318"),
        "{e}"
    );
}
