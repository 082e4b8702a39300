//! Token requests (Entra ID and IMDS) go through the same retries as vault calls:
//! against a scripted HTTP server on 127.0.0.1, under paused tokio time, so waits
//! cost nothing and are measured exactly.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kms_client::azure::{Credential, RetryPolicy};
use kms_client::KmsError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// An HTTP server answering each request with the next scripted response (status,
/// extra header lines, body), then 500s. Counts the requests it read.
struct Scripted {
    url: String,
    requests: Arc<Mutex<u32>>,
}

const TOKEN: &str =
    r#"{"access_token":"scripted-token","expires_in":"3600","token_type":"Bearer"}"#;

impl Scripted {
    async fn start(script: Vec<(u16, &'static str, &'static str)>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = Arc::new(Mutex::new(0u32));
        let count = requests.clone();
        tokio::spawn(async move {
            let mut script = script.into_iter();
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                // The whole request (a GET, or a small form) arrives before the answer
                // is written; reading until the blank line is enough for a GET and the
                // form body is ignored.
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                *count.lock().expect("count") += 1;
                let (status, headers, body) = script.next().unwrap_or((500, "", ""));
                let answer = format!(
                    "HTTP/1.1 {status} Scripted\r\ncontent-type: application/json\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
                let _ = conn.shutdown().await;
            }
        });
        Scripted { url, requests }
    }

    fn requests(&self) -> u32 {
        *self.requests.lock().expect("count")
    }

    /// A managed-identity credential whose IMDS is this server.
    fn imds(&self, max_attempts: u32) -> Credential {
        Credential::managed_identity(None)
            .with_imds_endpoint(&self.url)
            .with_timeout(Duration::from_secs(3600 * 24))
            .with_retry(RetryPolicy {
                max_attempts,
                ..RetryPolicy::default()
            })
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_of_an_hour_is_not_waited_for() {
    let s = Scripted::start(vec![(429, "retry-after: 3600\r\n", ""), (200, "", TOKEN)]).await;
    let started = Instant::now();
    let err = s.imds(4).token().await.expect_err("a capped Retry-After");
    assert!(matches!(err, KmsError::Transient { .. }), "{err:?}");
    assert!(err.to_string().contains("Retry-After of 3600 s"), "{err}");
    assert_eq!(s.requests(), 1);
    assert!(
        started.elapsed() <= RetryPolicy::default().max_retry_after,
        "waited {:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn throttled_and_unavailable_token_requests_are_retried() {
    let s = Scripted::start(vec![
        (429, "retry-after: 2\r\n", ""),
        (503, "", ""),
        (200, "", TOKEN),
    ])
    .await;
    let started = Instant::now();
    let token = s
        .imds(4)
        .token()
        .await
        .expect("a token on the third request");
    assert_eq!(token.secret(), "scripted-token");
    assert_eq!(s.requests(), 3);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After honoured: waited {:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn refused_token_requests_are_not_retried() {
    let identity_not_found =
        r#"{"error":"invalid_request","error_description":"Identity not found"}"#;
    let s = Scripted::start(vec![(400, "", identity_not_found)]).await;
    let err = s.imds(4).token().await.expect_err("refused");
    assert!(matches!(err, KmsError::Revoked { .. }), "{err:?}");
    assert_eq!(s.requests(), 1);

    let s = Scripted::start(vec![(403, "", r#"{"error":"forbidden"}"#)]).await;
    let err = s.imds(4).token().await.expect_err("refused");
    assert!(matches!(err, KmsError::Misconfigured { .. }), "{err:?}");
    assert_eq!(s.requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn token_attempts_are_bounded() {
    let s = Scripted::start(vec![(503, "", ""); 10]).await;
    let err = s.imds(3).token().await.expect_err("an outage");
    assert!(matches!(err, KmsError::Transient { .. }), "{err:?}");
    assert!(err.to_string().contains("3 attempt(s)"), "{err}");
    assert_eq!(s.requests(), 3);
}

#[tokio::test(start_paused = true)]
async fn client_secret_token_requests_share_the_retries() {
    let s = Scripted::start(vec![(503, "", ""), (200, "", TOKEN)]).await;
    let credential = Credential::client_secret("tenant", "client", "secret")
        .with_authority(&s.url)
        .with_timeout(Duration::from_secs(3600 * 24));
    credential
        .token()
        .await
        .expect("a token on the second request");
    assert_eq!(s.requests(), 2);
}
