//! `valv encryption show|rotate-key`: one request to a running valv's admin API, over
//! `http://` or `https://` (reqwest with rustls, the client kms-client already links).

use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, Url};
use thiserror::Error;

use super::causes;
use crate::cli::{AdminArgs, EncryptionCommand};

/// The whole exchange may take this long (a rotation is a few vault calls).
const TIMEOUT: Duration = Duration::from_secs(60);
/// Admin responses are small; anything larger is not our server.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error(
        "admin url {0:?}: expected http://host[:port] or https://host[:port], without credentials"
    )]
    Url(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("--ca-file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("cannot reach {url}: {}", causes(.source))]
    Unreachable { url: String, source: reqwest::Error },
    #[error("{url} did not answer within {TIMEOUT:?}")]
    Timeout { url: String },
    #[error("{url} sent a malformed HTTP response: {reason}")]
    Malformed { url: String, reason: String },
    /// The server answered with an error status; `message` is its explanation.
    #[error("{status}: {message}")]
    Status { status: u16, message: String },
}

/// `base` (an http(s) URL, perhaps with a path prefix) joined with `path`.
fn endpoint(base: &str, path: &str) -> Result<Url, ClientError> {
    let bad = || ClientError::Url(base.to_owned());
    let url = Url::parse(base).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none_or(str::is_empty)
        || !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
    {
        return Err(bad());
    }
    let prefix = url.path().trim_end_matches('/');
    let mut joined = url.clone();
    joined.set_path(&format!("{prefix}{path}"));
    Ok(joined)
}

/// The CA certificates of the PEM file `path`; at least one.
fn trusted_cas(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let bad = |reason: String| ClientError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| bad(format!("not a PEM certificate bundle: {e}")))?;
    if certs.is_empty() {
        return Err(bad("holds no PEM certificate".to_owned()));
    }
    Ok(certs)
}

/// A response: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Sends one request and reads the whole response (at most `MAX_RESPONSE_BYTES`).
async fn request(
    base: &str,
    ca_file: Option<&std::path::Path>,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> Result<Answer, ClientError> {
    let url = endpoint(base, path)?;
    kms_client::install_tls_provider();
    let mut builder = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .user_agent(concat!("valv/", env!("CARGO_PKG_VERSION")));
    if let Some(file) = ca_file {
        for cert in trusted_cas(file)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder.build().map_err(ClientError::Client)?;
    let failed = |source: reqwest::Error| {
        if source.is_timeout() {
            ClientError::Timeout {
                url: base.to_owned(),
            }
        } else {
            ClientError::Unreachable {
                url: base.to_owned(),
                source,
            }
        }
    };
    let mut req = client
        .request(method, url)
        .header(ACCEPT, "application/json");
    if let Some(token) = token {
        req = req.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    if let Some(body) = body {
        req = req.header(CONTENT_TYPE, "application/json").body(body);
    }
    let mut resp = req.send().await.map_err(failed)?;
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(failed)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(ClientError::Malformed {
                url: base.to_owned(),
                reason: format!("larger than {MAX_RESPONSE_BYTES} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer { status, body })
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
///
/// Fails with the server's status and message when it answers an error, and with
/// `Url`, `Unreachable`, `Timeout` or `Malformed` when there is no usable answer.
pub async fn run(command: &EncryptionCommand) -> Result<String, ClientError> {
    let (args, method, path, body): (&AdminArgs, _, _, Option<Vec<u8>>) = match command {
        EncryptionCommand::Show { admin } => (admin, Method::GET, "/admin/v1/encryption", None),
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
                Method::POST,
                "/admin/v1/encryption/rotate-key",
                Some(serde_json::to_vec(&req).unwrap_or_default()),
            )
        }
    };
    let token = args.token.as_deref().filter(|t| !t.is_empty());
    let answer = request(
        &args.url,
        args.ca_file.as_deref(),
        method,
        path,
        token,
        body,
    )
    .await?;
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
        let e = |base| endpoint(base, "/admin/v1/encryption").map(|u| u.to_string());
        assert_eq!(
            e("http://127.0.0.1:5000").expect("url"),
            "http://127.0.0.1:5000/admin/v1/encryption"
        );
        assert_eq!(
            e("https://registry.example/x/").expect("url"),
            "https://registry.example/x/admin/v1/encryption"
        );
        for bad in [
            "ftp://h/",
            "http://",
            "http://u:p@h:1",
            "127.0.0.1:5000",
            "http://h/?q=1",
        ] {
            assert!(e(bad).is_err(), "{bad}");
        }
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
