//! Runs every `valv-bench` subcommand with tiny parameters against a fresh valv, so the
//! client's protocol handling (uploads, chunked uploads, Range reads, manifests) and its
//! JSON report are checked end to end. The valv binary is found the way the conformance
//! suite finds it: `VALV_BIN`, else `cargo build -p valv` into this target directory
//! (valv-bench does not depend on valv on purpose, so cargo would not build it for us).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A valv process on 127.0.0.1 with its own data dir, killed on drop.
struct Valv {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Valv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The workspace's target directory for the current profile (this test binary lives
/// in `<it>/deps/`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test binary in <target>/<profile>/deps")
        .to_owned()
}

fn valv_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("VALV_BIN") {
        return PathBuf::from(bin);
    }
    let dir = profile_dir();
    let target_dir = dir.parent().expect("profile dir has a parent").to_owned();
    let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "valv",
        "--bin",
        "valv",
        "--target-dir",
    ])
    .arg(&target_dir)
    .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile == "release" {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build -p valv");
    assert!(status.success(), "cargo build -p valv failed: {status}");
    let bin = dir.join("valv");
    assert!(bin.exists(), "{} missing after cargo build", bin.display());
    bin
}

/// Starts valv; readiness is its "listening on http://ADDR" stdout line.
fn start_valv() -> Valv {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(valv_bin());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .stdin(Stdio::null());
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "warn");
    }
    let mut child = cmd.spawn().expect("spawn valv");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    // Keeps draining stdout after the marker so valv never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent {
                if let Some(i) = line.find("listening on ") {
                    let _ = tx.send(line[i + "listening on ".len()..].trim().to_owned());
                    sent = true;
                }
            }
        }
    });
    let url = match rx.recv_timeout(START_TIMEOUT) {
        Ok(url) => url,
        Err(_) => {
            let _ = child.kill();
            let status = child.wait();
            panic!("valv did not report \"listening on\" within {START_TIMEOUT:?} ({status:?})");
        }
    };
    Valv {
        child,
        url,
        _dir: dir,
    }
}

/// Runs `valv-bench ARGS --url URL` and parses its JSON report.
fn bench(url: &str, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_valv-bench"))
        .args(args)
        .args(["--url", url])
        .output()
        .expect("run valv-bench");
    assert!(
        out.status.success(),
        "valv-bench {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "valv-bench {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Asserts a clean run of `requests` operations moving `bytes` bytes (when given).
fn assert_clean(report: &Value, scenario: &str, requests: Option<u64>, bytes: Option<u64>) {
    assert_eq!(report["scenario"], scenario, "{report}");
    assert_eq!(report["errors"]["count"], 0, "{report}");
    if let Some(setup) = report.get("setup") {
        assert_eq!(setup["errors"]["count"], 0, "{report}");
    }
    if let Some(n) = requests {
        assert_eq!(report["requests"], n, "{report}");
    }
    if let Some(n) = bytes {
        assert_eq!(report["bytes"], n, "{report}");
    }
    for key in ["p50", "p99", "p99_9"] {
        assert!(report["latency_ms"][key].is_number(), "{report}");
    }
    assert!(report["throughput"]["mb_per_sec"].is_number(), "{report}");
    assert!(report["client_cpu_secs"].is_number(), "{report}");
    assert!(
        report["elapsed_secs"].as_f64().is_some_and(|s| s > 0.0),
        "{report}"
    );
}

const SIZE: u64 = 100 * 1024;

#[test]
fn every_subcommand_runs_cleanly_against_valv() {
    let valv = start_valv();
    let url = valv.url.as_str();
    let size = SIZE.to_string();
    let common = ["--count", "4", "--size", &size, "--concurrency", "2"];

    let mut args = vec!["push", "--repo", "bench/push"];
    args.extend(common);
    assert_clean(&bench(url, &args), "push", Some(4), Some(4 * SIZE));

    // 30000 does not divide 100 KiB, so the last PATCH is short.
    args.extend(["--chunk", "30000"]);
    let report = bench(url, &args);
    assert_clean(&report, "push-chunked", Some(4), Some(4 * SIZE));
    // Per blob: POST, 4 PATCHes, PUT.
    assert_eq!(report["http_requests"], 4 * 6, "{report}");

    let mut args = vec!["pull", "--repo", "bench/pull", "--verify"];
    args.extend(common);
    assert_clean(&bench(url, &args), "pull", Some(4), Some(4 * SIZE));

    args.extend(["--range", "4096", "--reads", "16"]);
    assert_clean(&bench(url, &args), "pull-range", Some(16), Some(16 * 4096));

    let args = [
        "manifests",
        "--repos",
        "2",
        "--tags",
        "3",
        "--concurrency",
        "4",
        "--duration",
        "1",
    ];
    let report = bench(url, &args);
    assert_clean(&report, "manifests", None, None);
    assert!(
        report["requests"].as_u64().is_some_and(|n| n > 0),
        "{report}"
    );
    // Setup: per repository two blobs and three tags.
    assert_eq!(report["setup"]["requests"], 2 * (2 + 3), "{report}");
}

#[test]
fn op_does_each_kind_once_and_later_ops_find_the_content_by_seed() {
    let valv = start_valv();
    let size = SIZE.to_string();
    // (arguments, HTTP requests the one operation takes), in the order a script runs
    // them: the reads name what the pushes before them wrote, by seed and size.
    let ops: [(&[&str], u64); 8] = [
        (&["--kind", "push", "--size", &size], 2),
        (&["--kind", "push-post", "--size", &size], 1),
        // POST, 4 PATCHes (30000 does not divide 100 KiB), PUT.
        (
            &[
                "--kind",
                "push-chunked",
                "--size",
                &size,
                "--chunk",
                "30000",
            ],
            6,
        ),
        (&["--kind", "push-config"], 2),
        (
            &["--kind", "manifest-put", "--size", &size, "--tag", "v1"],
            1,
        ),
        (&["--kind", "pull", "--size", &size], 1),
        (&["--kind", "manifest-get", "--tag", "v1"], 1),
        (&["--kind", "tags-list"], 1),
    ];
    for (args, http_requests) in ops {
        let mut all = vec!["op", "--repo", "bench/op", "--seed", "7"];
        all.extend(args);
        let report = bench(&valv.url, &all);
        assert_eq!(report["scenario"], "op", "{report}");
        assert_eq!(report["errors"]["count"], 0, "{args:?}: {report}");
        assert_eq!(report["http_requests"], http_requests, "{args:?}: {report}");
    }
    // The same pull with another seed names a blob nobody pushed.
    let report = bench(
        &valv.url,
        &[
            "op", "--repo", "bench/op", "--seed", "8", "--kind", "pull", "--size", &size,
        ],
    );
    assert_eq!(report["errors"]["count"], 1, "{report}");
}

#[test]
fn errors_are_counted_not_fatal() {
    // A socket bound but never listening, held for the whole test: every connect to
    // its port is refused, and no other process can take the port meanwhile.
    let closed = tokio::net::TcpSocket::new_v4().expect("socket");
    closed
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let addr = closed.local_addr().expect("addr");
    let url = format!("http://{addr}");
    let report = bench(
        &url,
        &[
            "push",
            "--repo",
            "r",
            "--count",
            "3",
            "--size",
            "10",
            "--concurrency",
            "2",
        ],
    );
    assert_eq!(report["errors"]["count"], 3, "{report}");
    assert_eq!(report["requests"], 3, "{report}");
    assert!(report["errors"]["first"][0].is_string(), "{report}");
}

/// A stand-in registry that accepts every upload and answers every blob GET with
/// `size` zero bytes: right length, wrong content.
fn start_lying_registry(size: usize) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { break };
            std::thread::spawn(move || {
                let mut writer = conn.try_clone().expect("clone stream");
                let mut reader = BufReader::new(conn);
                loop {
                    let mut head = Vec::new();
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        head.push(line.to_ascii_lowercase());
                    }
                    let len: u64 = head
                        .iter()
                        .find_map(|h| h.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    std::io::copy(&mut (&mut reader).take(len), &mut std::io::sink())
                        .expect("read body");
                    let reply = match head.first().map(|l| l.split(' ').next().unwrap_or("")) {
                        Some("post") => "HTTP/1.1 202 Accepted\r\nLocation: /v2/r/blobs/uploads/u\r\nContent-Length: 0\r\n\r\n".to_owned(),
                        Some("get") => format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n"),
                        _ => "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n".to_owned(),
                    };
                    let mut out = reply.into_bytes();
                    if head.first().is_some_and(|l| l.starts_with("get")) {
                        out.resize(out.len() + size, 0);
                    }
                    if writer.write_all(&out).is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

#[test]
fn verify_catches_wrong_content() {
    let url = start_lying_registry(1000);
    let args = [
        "pull",
        "--repo",
        "r",
        "--count",
        "2",
        "--size",
        "1000",
        "--concurrency",
        "1",
    ];
    // Without --verify the lie (right length) goes unnoticed...
    let report = bench(&url, &args);
    assert_eq!(report["errors"]["count"], 0, "{report}");
    // ...with it, every pull is an error.
    let mut args = args.to_vec();
    args.push("--verify");
    let report = bench(&url, &args);
    assert_eq!(report["errors"]["count"], 2, "{report}");
    assert_eq!(report["setup"]["errors"]["count"], 0, "{report}");
}
