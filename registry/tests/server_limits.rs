//! The accept loop's limits, against the real binary (registry/src/server.rs):
//!
//! - `server.max_connections` (`VALV_MAX_CONNECTIONS`): with N connections held, the
//!   N+1th is not served (it waits in the kernel's accept queue), and is served once
//!   one of the N closes;
//! - `server.header_read_timeout_secs` (`VALV_HEADER_READ_TIMEOUT_SECS`): a client that
//!   sends half a request head is cut after the timeout, never answered;
//! - `server.shutdown_grace_secs` (`VALV_SHUTDOWN_GRACE_SECS`): after SIGTERM a request
//!   still streaming is cut when the grace runs out, the process exits, and the cut
//!   upload left nothing visible.
//!
//! Waits are bounded reads or polls of the observable condition; the one negative
//! check ("not served while the limit is reached") is a read with a timeout, the only
//! way to see that nothing arrives.

#[path = "http_util.rs"]
mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use util::Valv;

/// Room for a loaded 2-core runner on top of a configured duration.
const SLACK: Duration = Duration::from_secs(10);

fn start(dir: &std::path::Path, env: &[(&str, &str)]) -> Valv {
    Valv::start_with_env(dir, &[], env)
}

/// Connects and sends `GET /v2/` on a keep-alive connection.
fn send_request(valv: &Valv) -> TcpStream {
    let mut s = TcpStream::connect(valv.host()).expect("connect");
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: valv\r\n\r\n")
        .expect("write request");
    s
}

/// Reads one response head (up to the blank line) with a deadline; `None` when the
/// deadline passes first.
fn read_head(s: &mut TcpStream, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        s.set_read_timeout(Some(left)).expect("set_read_timeout");
        match s.read(&mut buf) {
            Ok(0) => panic!(
                "connection closed before a response head: {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None
            }
            Err(e) => panic!("read: {e}"),
        }
    }
    Some(String::from_utf8_lossy(&got).into_owned())
}

#[test]
fn the_connection_past_max_connections_waits_until_one_closes() {
    const MAX: usize = 2;
    let dir = tempfile::tempdir().expect("tempdir");
    let valv = start(dir.path(), &[("VALV_MAX_CONNECTIONS", &MAX.to_string())]);
    // N connections, each served once (so each holds its slot) and kept open.
    let mut held: Vec<TcpStream> = (0..MAX)
        .map(|i| {
            let mut s = send_request(&valv);
            let head = read_head(&mut s, SLACK)
                .unwrap_or_else(|| panic!("held connection {i} was not served"));
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            s
        })
        .collect();
    // The N+1th connects (the kernel queues it) but is not served while N are held.
    let mut extra = send_request(&valv);
    assert_eq!(
        read_head(&mut extra, Duration::from_secs(2)),
        None,
        "connection {} was served while {MAX} were held",
        MAX + 1
    );
    // A held connection still works: the limit counts connections, not requests.
    held[0]
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: valv\r\n\r\n")
        .expect("write");
    assert!(read_head(&mut held[0], SLACK).is_some_and(|h| h.starts_with("HTTP/1.1 200")));
    // One closes: the waiting one is served.
    drop(held.remove(0));
    let head = read_head(&mut extra, SLACK).expect("served once a slot was free");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[test]
fn a_half_sent_request_head_is_cut_after_the_header_read_timeout() {
    const TIMEOUT: Duration = Duration::from_secs(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let valv = start(
        dir.path(),
        &[(
            "VALV_HEADER_READ_TIMEOUT_SECS",
            &TIMEOUT.as_secs().to_string(),
        )],
    );
    // A whole head is answered (the timeout is not a limit on prompt clients).
    let mut prompt = send_request(&valv);
    assert!(read_head(&mut prompt, SLACK).is_some_and(|h| h.starts_with("HTTP/1.1 200")));

    let started = Instant::now();
    let mut slow = TcpStream::connect(valv.host()).expect("connect");
    slow.write_all(b"GET /v2/ HTTP/1.1\r\nHost: valv\r\n")
        .expect("write half a head");
    // The server closes the connection (possibly after a 408): read to the end.
    slow.set_read_timeout(Some(TIMEOUT + SLACK))
        .expect("set_read_timeout");
    let mut got = Vec::new();
    match slow.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!(
                "the half-sent head was not cut within {:?}",
                TIMEOUT + SLACK
            )
        }
        Err(e) => panic!("read: {e}"),
    }
    let cut_after = started.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(
        got.is_empty() || text.starts_with("HTTP/1.1 408"),
        "a half-sent head is never answered: {text:?}"
    );
    assert!(
        cut_after >= TIMEOUT,
        "cut {cut_after:?} after connecting, before the {TIMEOUT:?} timeout"
    );
}

/// A zero header timeout or connection limit would make every connection fail; both
/// are refused at start, each named.
#[test]
fn zero_connection_limits_are_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_valv"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("VALV_HEADER_READ_TIMEOUT_SECS", "0")
        .env("VALV_MAX_CONNECTIONS", "0")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run valv");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.header_read_timeout_secs must be at least 1")
            && err.contains("server.max_connections must be at least 1"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_cuts_a_request_still_streaming_when_the_grace_runs_out() {
    const PIECE: usize = 64 * 1024;
    // More than loopback socket buffers hold: once it is written, the server is
    // reading the body, so the request is in flight when the signal comes.
    const SENT: usize = 24 * 1024 * 1024;
    const GRACE: Duration = Duration::from_secs(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut valv = start(
        dir.path(),
        &[("VALV_SHUTDOWN_GRACE_SECS", &GRACE.as_secs().to_string())],
    );
    let http = util::client();
    let data = bytes::Bytes::from(util::random_bytes(2 * SENT, 11));
    let digest = util::sha256(&data);

    let (sent_tx, sent) = tokio::sync::oneshot::channel::<()>();
    let pieces: Vec<bytes::Bytes> = (0..SENT)
        .step_by(PIECE)
        .map(|i| data.slice(i..i + PIECE))
        .collect();
    // The first half, then a body that never continues (nor ends).
    let body = futures::stream::unfold(
        (pieces.into_iter(), Some(sent_tx)),
        |(mut it, mut sent_tx)| async move {
            match it.next() {
                Some(piece) => Some((Ok::<_, std::io::Error>(piece), (it, sent_tx))),
                None => {
                    if let Some(tx) = sent_tx.take() {
                        let _ = tx.send(());
                    }
                    std::future::pending::<()>().await;
                    None
                }
            }
        },
    );
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
    sent.await.expect("the body stream sent its first half");

    let signalled = Instant::now();
    let exit = tokio::task::block_in_place(|| valv.terminate());
    let exited_after = signalled.elapsed();
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        exited_after >= GRACE,
        "exited {exited_after:?} after SIGTERM, before the {GRACE:?} grace ran out"
    );
    let outcome = tokio::time::timeout(SLACK, upload)
        .await
        .expect("the cut upload's client returns")
        .expect("join");
    assert!(
        outcome.is_err(),
        "the stalled upload was cut, not answered: {outcome:?}"
    );

    // Nothing half-visible: the blob does not exist after a restart.
    let valv = util::Valv::start(dir.path(), &[]);
    let r = http
        .head(valv.url(&format!("/v2/repo/blobs/{digest}")))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(r.status(), 404, "the cut upload committed nothing");
}
