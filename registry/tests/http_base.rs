//! The API base, health endpoints, unknown paths and methods, start-up failures and
//! graceful shutdown, against the real binary.

#[path = "http_util.rs"]
mod util;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::{error_code, header, run_to_exit_with_env, Registry};

/// Issue 3 acceptance 1: `GET /v2/` answers 200 with the API version header.
#[tokio::test]
async fn api_base_answers_200_with_version_header() {
    let reg = Registry::start();
    let r = reg.get("/v2/").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        "registry/2.0"
    );
    let r = reg.get("/v2").await;
    assert_eq!(r.status(), 200);
    let r = reg.head("/v2/").await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn health_endpoints() {
    let reg = Registry::start();
    assert_eq!(reg.get("/healthz").await.status(), 200);
    assert_eq!(reg.get("/readyz").await.status(), 200);
}

#[tokio::test]
async fn unknown_path_is_404_with_an_oci_error_and_the_version_header() {
    let reg = Registry::start();
    for path in [
        "/",
        "/v1/",
        "/v2/repo",
        "/v2/repo/whatever/x",
        "/v2/repo/tags/all",
    ] {
        let r = reg.get(path).await;
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(
            header(&r, "docker-distribution-api-version"),
            "registry/2.0"
        );
        assert_eq!(error_code(r).await, "UNSUPPORTED", "{path}");
    }
}

/// Issue 3 acceptance 6: an unsupported method is a 405 with `Allow`, and changes nothing.
#[tokio::test]
async fn unsupported_method_is_405_with_allow_and_stores_nothing() {
    let reg = Registry::start();
    let data = b"not to be stored".to_vec();
    let digest = util::sha256(&data);
    // PUT straight onto a blob path is not an upload.
    let r = reg
        .http
        .put(reg.url(&format!("/v2/repo/blobs/{digest}")))
        .body(data)
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 405);
    assert_eq!(header(&r, "allow"), "GET, HEAD, DELETE");
    assert_eq!(error_code(r).await, "UNSUPPORTED");
    assert_eq!(reg.blob_status("repo", &digest).await, 404);
    assert!(reg.catalog().await.is_empty());

    let r = reg
        .http
        .post(reg.url("/v2/repo/manifests/latest"))
        .body("{}")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 405);
    assert_eq!(header(&r, "allow"), "GET, HEAD, PUT, DELETE");
    assert_eq!(error_code(r).await, "UNSUPPORTED");
    assert_eq!(reg.get("/v2/repo/manifests/latest").await.status(), 404);

    let r = reg
        .http
        .delete(reg.url("/v2/_catalog"))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status(), 405);
    assert_eq!(header(&r, "allow"), "GET");
}

/// SIGTERM with no request in flight: a clean, prompt exit.
#[tokio::test]
async fn sigterm_shuts_down_cleanly() {
    let mut reg = Registry::start();
    assert_eq!(reg.get("/v2/").await.status(), 200);
    let status = reg.valv.terminate();
    assert!(status.success(), "exit status {status:?}");
}

/// SIGTERM while an upload is in flight: the server stops accepting connections, the
/// request still finishes (within the grace period) and its blob is committed.
#[tokio::test]
async fn sigterm_lets_an_in_flight_upload_finish() {
    const PIECE: usize = 64 * 1024;
    // More than loopback socket buffers hold, so the server must be reading the body
    // by the time the client has written the first half.
    const HALF: usize = 24 * 1024 * 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut valv = util::Valv::start(dir.path(), &[]);
    let http = util::client();
    let data = bytes::Bytes::from(util::random_bytes(2 * HALF, 7));
    let digest = util::sha256(&data);

    let (first_half_sent_tx, first_half_sent) = tokio::sync::oneshot::channel::<()>();
    let (release_tx, release) = tokio::sync::oneshot::channel::<()>();
    let pieces: Vec<bytes::Bytes> = (0..data.len())
        .step_by(PIECE)
        .map(|i| data.slice(i..i + PIECE))
        .collect();
    let state = (
        pieces.into_iter(),
        0usize,
        Some(first_half_sent_tx),
        Some(release),
    );
    let body = futures::stream::unfold(state, |(mut it, n, mut sent_tx, mut release)| async move {
        if n * PIECE == HALF {
            // The first half has been handed over; hold the rest until told.
            if let Some(tx) = sent_tx.take() {
                let _ = tx.send(());
            }
            if let Some(rx) = release.take() {
                let _ = rx.await;
            }
        }
        let piece = it.next()?;
        Some((
            Ok::<_, std::io::Error>(piece),
            (it, n + 1, sent_tx, release),
        ))
    });
    let url = valv.url(&format!("/v2/repo/blobs/uploads/?digest={digest}"));
    let len = data.len();
    let upload = tokio::spawn({
        let http = http.clone();
        async move {
            http.post(url)
                .header("content-length", len.to_string())
                .body(reqwest::Body::wrap_stream(body))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    first_half_sent
        .await
        .expect("the body stream reached its middle");

    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(valv.pid().to_string())
        .status()
        .expect("kill");
    assert!(killed.success());
    // Shutdown has begun once new connections are refused.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(valv.host()).is_ok() {
        assert!(
            Instant::now() < deadline,
            "valv kept accepting after SIGTERM"
        );
        tokio::task::yield_now().await;
    }
    let _ = release_tx.send(());
    let status = upload.await.expect("join").expect("upload request");
    assert_eq!(status, 201, "the in-flight upload completes");
    let exit = valv.terminate();
    assert!(exit.success(), "exit status {exit:?}");

    // The blob is intact after a restart.
    let valv = util::Valv::start(dir.path(), &[]);
    let r = http
        .get(valv.url(&format!("/v2/repo/blobs/{digest}")))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
    assert_eq!(util::sha256(&r.bytes().await.expect("body")), digest);
}

/// Runs `valv serve` with `args` on a fresh data dir, expecting it to exit by itself;
/// returns the exit success and its stderr.
fn run_to_exit(args: &[&str]) -> (bool, String) {
    run_to_exit_with_env(args, &[])
}

#[test]
fn an_unreachable_key_vault_fails_the_start_with_a_clear_error() {
    // Every endpoint the provider could use points at a loopback port nothing listens
    // on, so no request leaves the machine.
    // A socket bound but never listening, held until the test ends: connects to it
    // are refused, and no other test can take the port meanwhile.
    let socket = util::common::closed_port();
    let closed = format!("http://{}", socket.local_addr().expect("addr"));
    let (ok, stderr) = run_to_exit_with_env(
        &["--key-id", "https://myvault.vault.azure.net/keys/valv-kek"],
        &[
            ("VALV_KEYVAULT_ENDPOINT", &closed),
            ("VALV_IMDS_ENDPOINT", &closed),
            ("AZURE_TENANT_ID", ""),
            ("AZURE_CLIENT_ID", ""),
            ("AZURE_CLIENT_SECRET", ""),
            ("AZURE_FEDERATED_TOKEN_FILE", ""),
        ],
    );
    assert!(!ok);
    assert!(
        stderr.contains("https://myvault.vault.azure.net/keys/valv-kek"),
        "the error names the key: {stderr}"
    );
}

#[test]
fn unknown_config_key_fails_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("valv.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_conections = 5\n",
    )
    .expect("write");
    let (ok, stderr) = run_to_exit(&["--config", file.to_str().expect("utf-8 path")]);
    assert!(!ok);
    assert!(stderr.contains("max_conections"), "{stderr}");
}

#[test]
fn unsupported_storage_url_fails_at_start() {
    let (ok, stderr) = run_to_exit(&["--storage", "gs://bucket/prefix"]);
    assert!(!ok);
    assert!(stderr.contains("not available yet"), "{stderr}");
}

/// `memory://` storage serves (and the default key is still created on disk).
#[tokio::test]
async fn memory_storage_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let valv = util::Valv::start(dir.path(), &["--storage", "memory://"]);
    let http = util::client();
    let data = b"in memory".to_vec();
    let digest = util::sha256(&data);
    let r = http
        .post(valv.url(&format!("/v2/m/blobs/uploads/?digest={digest}")))
        .body(data.clone())
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 201);
    let r = http
        .get(valv.url(&format!("/v2/m/blobs/{digest}")))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.bytes().await.expect("body").to_vec(), data);
    assert!(
        !dir.path().join("store").exists(),
        "memory storage writes no store directory"
    );
}

/// A `valv serve` started in `cwd` with no arguments and no `VALV_*` variable but
/// `env`; its stdout "listening on" line (if any) and its stderr.
struct Bare {
    child: std::process::Child,
    listening: std::sync::mpsc::Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Bare {
    fn start(cwd: &std::path::Path, env: &[(&str, &str)]) -> Bare {
        use std::io::BufRead;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_valv"));
        cmd.arg("serve").current_dir(cwd).env("RUST_LOG", "warn");
        for (k, _) in std::env::vars() {
            if k.starts_with("VALV_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn valv");
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let (tx, listening) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.to_owned());
                }
            }
            // Dropping `tx` here tells the waiter that stdout closed: the process ended.
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Bare {
            child,
            listening,
            stderr,
        }
    }

    /// The address it listens on, or `None` when it exited without listening. Bounded.
    fn address(&self) -> Option<String> {
        match self.listening.recv_timeout(Duration::from_secs(120)) {
            Ok(a) => Some(a),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("valv serve neither listened nor exited within 120 s")
            }
        }
    }

    /// Kills it (if still running) and returns whether it had exited successfully by
    /// itself, and its stderr.
    fn finish(mut self) -> (Option<bool>, String) {
        let exited = self
            .child
            .try_wait()
            .expect("try_wait")
            .map(|s| s.success());
        let _ = self.child.kill();
        let _ = self.child.wait();
        (exited, self.stderr.join().expect("stderr"))
    }

    /// After [`Bare::address`] said it exited (its stdout closed): its exit success
    /// and stderr. stderr reaching its end is the exit notification.
    fn exited(mut self) -> (bool, String) {
        let stderr = self.stderr.join().expect("stderr");
        let status = self.child.wait().expect("wait");
        (status.success(), stderr)
    }
}

/// Issue 3 acceptance 1, the defaults of `valv serve` with no arguments: it keeps its
/// data in `./valv-data` with a local development KEK created there, warns about that
/// key, and answers `GET /v2/`. The listen address is the one layer moved off its
/// default (by `VALV_LISTEN`, not an argument), so the test needs no fixed port; the
/// next test covers the default address.
#[tokio::test]
async fn serve_with_no_arguments_runs_the_embedded_default() {
    let cwd = tempfile::tempdir().expect("tempdir");
    let valv = Bare::start(cwd.path(), &[("VALV_LISTEN", "127.0.0.1:0")]);
    let Some(addr) = valv.address() else {
        let (_, stderr) = valv.finish();
        panic!("valv serve did not start: {stderr}");
    };
    let r = util::client()
        .get(format!("{addr}/v2/"))
        .send()
        .await
        .expect("GET /v2/");
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        "registry/2.0"
    );
    let data = cwd.path().join("valv-data");
    assert!(
        data.join("keys").is_dir(),
        "local KEK under ./valv-data/keys"
    );
    let keys = std::fs::read_dir(data.join("keys"))
        .expect("keys dir")
        .count();
    assert!(keys >= 1, "a key was created");
    assert!(data.join("store").is_dir(), "the store under ./valv-data");
    let (exited, stderr) = valv.finish();
    assert_eq!(exited, None, "still serving until killed: {stderr}");
    assert!(
        stderr.contains("development"),
        "a clear local-KEK notice: {stderr}"
    );
}

/// The default listen address is 127.0.0.1:5000, checked without needing that port
/// free: the test holds it (unless another process already does), so `valv serve`
/// with no arguments must fail naming 127.0.0.1:5000. Should the holder be a socket
/// that lets valv bind beside it, valv listening on 127.0.0.1:5000 proves the same.
#[test]
fn the_default_listen_address_is_loopback_port_5000() {
    // Held for the whole test; Err means someone else holds the port, which serves
    // the test just as well.
    let _held = std::net::TcpListener::bind("127.0.0.1:5000");
    let cwd = tempfile::tempdir().expect("tempdir");
    let valv = Bare::start(cwd.path(), &[]);
    match valv.address() {
        Some(addr) => {
            let (_, stderr) = valv.finish();
            assert_eq!(addr, "http://127.0.0.1:5000", "{stderr}");
        }
        None => {
            let (ok, stderr) = valv.exited();
            assert!(!ok, "a failed start exits non-zero: {stderr}");
            assert!(
                stderr.contains("cannot listen on 127.0.0.1:5000"),
                "the failure names the default address: {stderr}"
            );
        }
    }
}
