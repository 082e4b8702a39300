//! `valv encryption show|rotate-key`: one HTTP/1.1 request to a running valv's admin
//! API. A deliberately tiny client (plain `http://`, one request, `Connection: close`)
//! so the binary needs no HTTP client dependency for two admin calls.

use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cli::{AdminArgs, EncryptionCommand};

/// The whole exchange may take this long (a rotation is a few vault calls).
const TIMEOUT: Duration = Duration::from_secs(60);
/// Admin responses are small; anything larger is not our server.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("admin url {0:?}: expected http://host:port (https is not supported by this client)")]
    Url(String),
    #[error("cannot reach {url}: {source}")]
    Io { url: String, source: std::io::Error },
    #[error("{url} did not answer within {TIMEOUT:?}")]
    Timeout { url: String },
    #[error("{url} sent a malformed HTTP response: {reason}")]
    Malformed { url: String, reason: String },
    /// The server answered with an error status; `message` is its explanation.
    #[error("{status}: {message}")]
    Status { status: u16, message: String },
}

/// A parsed `http://host:port[/prefix]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// `host:port` to connect to and send as `Host`.
    authority: String,
    /// Path prefix without a trailing slash (usually empty).
    prefix: String,
}

fn parse_url(url: &str) -> Result<Target, ClientError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ClientError::Url(url.to_owned()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(ClientError::Url(url.to_owned()));
    }
    let authority = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok(Target {
        authority,
        prefix: path.trim_end_matches('/').to_owned(),
    })
}

/// A response: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Sends one request and reads the whole response.
async fn request(
    url: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> Result<Answer, ClientError> {
    let target = parse_url(url)?;
    let io = |source| ClientError::Io {
        url: url.to_owned(),
        source,
    };
    let exchange = async {
        let mut stream = TcpStream::connect(&target.authority).await.map_err(io)?;
        let mut head = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nConnection: close\r\nUser-Agent: valv/{}\r\n",
            target.prefix,
            target.authority,
            env!("CARGO_PKG_VERSION")
        );
        if let Some(token) = token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        let body = body.unwrap_or_default();
        if method != "GET" {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.map_err(io)?;
        stream.write_all(body).await.map_err(io)?;
        stream.flush().await.map_err(io)?;
        let mut raw = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE_BYTES as u64 + 1)
            .read_to_end(&mut raw)
            .await
            .map_err(io)?;
        Ok::<_, ClientError>(raw)
    };
    let raw = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| ClientError::Timeout {
            url: url.to_owned(),
        })??;
    parse_response(&raw).map_err(|reason| ClientError::Malformed {
        url: url.to_owned(),
        reason,
    })
}

/// Parses a complete HTTP/1.1 response read to the end of the connection.
fn parse_response(raw: &[u8]) -> Result<Answer, String> {
    if raw.len() > MAX_RESPONSE_BYTES {
        return Err(format!("larger than {MAX_RESPONSE_BYTES} bytes"));
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "headers are not UTF-8")?;
    let rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("no status line")?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        }
    }
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or("body shorter than Content-Length")?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Answer { status, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = std::str::from_utf8(&data[..eol]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).ok_or("truncated chunk")?);
        data = data.get(size + 2..).ok_or("truncated chunk")?;
    }
}

/// The message of an admin error body, or the body itself.
fn error_message(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.pointer("/errors/0/message"))
            .and_then(|m| m.as_str())
            .map(str::to_owned)
    });
    message.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned())
}

/// Runs a `valv encryption …` command: the pretty JSON on success.
pub async fn run(command: &EncryptionCommand) -> Result<String, ClientError> {
    let (args, method, path, body): (&AdminArgs, _, _, Option<Vec<u8>>) = match command {
        EncryptionCommand::Show { admin } => (admin, "GET", "/admin/v1/encryption", None),
        EncryptionCommand::RotateKey {
            key_encryption_key,
            identity,
            admin,
        } => {
            let mut req = serde_json::json!({ "keyEncryptionKey": key_encryption_key });
            if let Some(identity) = identity {
                req["identity"] = serde_json::Value::String(identity.clone());
            }
            (
                admin,
                "POST",
                "/admin/v1/encryption/rotate-key",
                Some(serde_json::to_vec(&req).unwrap_or_default()),
            )
        }
    };
    let token = args.token.as_deref().filter(|t| !t.is_empty());
    let answer = request(&args.url, method, path, token, body.as_deref()).await?;
    if !(200..300).contains(&answer.status) {
        return Err(ClientError::Status {
            status: answer.status,
            message: error_message(&answer.body),
        });
    }
    let value: serde_json::Value =
        serde_json::from_slice(&answer.body).map_err(|e| ClientError::Malformed {
            url: args.url.clone(),
            reason: format!("the body is not JSON: {e}"),
        })?;
    Ok(serde_json::to_string_pretty(&value).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:5000").expect("url"),
            Target {
                authority: "127.0.0.1:5000".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            parse_url("http://localhost/x/").expect("url"),
            Target {
                authority: "localhost:80".into(),
                prefix: "/x".into()
            }
        );
        assert!(parse_url("https://127.0.0.1:5000").is_err());
        assert!(parse_url("http://").is_err());
        assert!(parse_url("http://u:p@h:1").is_err());
    }

    #[test]
    fn responses() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").expect("ok");
        assert_eq!((r.status, r.body.as_slice()), (200, b"{}".as_slice()));
        let r = parse_response(
            b"HTTP/1.1 401 Unauthorized\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .expect("chunked");
        assert_eq!((r.status, r.body.as_slice()), (401, b"abcde".as_slice()));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            error_message(br#"{"error":{"code":"X","message":"nope"}}"#),
            "nope"
        );
        assert_eq!(
            error_message(br#"{"errors":[{"code":"X","message":"oci"}]}"#),
            "oci"
        );
        assert_eq!(error_message(b"plain\n"), "plain");
    }
}
