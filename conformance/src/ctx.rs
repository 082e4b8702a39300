//! What a test works with: the registry, a repository of its own, and checks that turn
//! a wrong answer into a [`Failure`] that says what was expected and what came back.

use std::time::Duration;

use crate::http::{Origin, Request, Response, Target};
use crate::Config;

/// Why a test did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The registry broke the requirement (or a step the test needs failed).
    Fail(String),
    /// The test does not apply: the registry declared the feature unsupported in a way
    /// the spec allows (for example deletes answered 405).
    Skip(String),
}

pub fn fail(msg: impl Into<String>) -> Failure {
    Failure::Fail(msg.into())
}

pub fn skip(msg: impl Into<String>) -> Failure {
    Failure::Skip(msg.into())
}

/// `Ok(())` when `cond` holds, otherwise a failure with `msg`.
pub fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), Failure> {
    if cond {
        Ok(())
    } else {
        Err(Failure::Fail(msg()))
    }
}

/// The error codes of the spec's table (code-1 … code-14).
pub const SPEC_ERROR_CODES: &[&str] = &[
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
];

/// One test's view of the registry.
#[derive(Debug)]
pub struct Ctx {
    origin: Origin,
    timeout: Duration,
    /// `<namespace>/<test id>`: the test's own repository.
    repo: String,
    /// `<crossmount namespace>/<test id>`: where a mount test puts its source blob.
    source_repo: String,
    pub automatic_crossmount: Option<bool>,
    /// `METHOD target -> status` for every request, for failure reports.
    pub requests: Vec<String>,
}

impl Ctx {
    pub fn new(origin: Origin, config: &Config, test_id: &str) -> Ctx {
        Ctx {
            origin,
            timeout: config.timeout,
            repo: format!("{}/{}", config.namespace, test_id),
            source_repo: format!("{}/{}", config.crossmount_namespace, test_id),
            automatic_crossmount: config.automatic_crossmount,
            requests: Vec::new(),
        }
    }

    /// The repository this test owns (created by its first push).
    pub fn repo(&self) -> &str {
        &self.repo
    }

    /// A second repository of this test's, `<repo>/<suffix>`.
    pub fn repo_named(&self, suffix: &str) -> String {
        format!("{}/{suffix}", self.repo)
    }

    /// The test's repository under the crossmount namespace.
    pub fn source_repo(&self) -> &str {
        &self.source_repo
    }

    /// A target on the registry (`path` starts with `/`).
    pub fn target(&self, path: &str) -> Target {
        Target {
            origin: self.origin.clone(),
            path_and_query: path.to_owned(),
        }
    }

    pub fn request(&self, method: &str, path: &str) -> Request {
        Request::new(method, self.target(path))
    }

    /// Resolves a `Location` header the registry sent.
    pub fn resolve(&self, location: &str) -> Result<Target, Failure> {
        Target::resolve(&self.origin, location).map_err(fail)
    }

    /// Sends a request; a connection or protocol error is a failure.
    pub fn send(&mut self, req: Request) -> Result<Response, Failure> {
        let line = format!("{} {}", req.method, req.target.path_and_query);
        match req.send(self.timeout) {
            Ok(resp) => {
                self.requests.push(format!("{line} -> {}", resp.status));
                Ok(resp)
            }
            Err(e) => {
                self.requests.push(format!("{line} -> error: {e}"));
                Err(fail(e))
            }
        }
    }

    pub fn get(&mut self, path: &str) -> Result<Response, Failure> {
        let req = self.request("GET", path);
        self.send(req)
    }

    pub fn head(&mut self, path: &str) -> Result<Response, Failure> {
        let req = self.request("HEAD", path);
        self.send(req)
    }

    pub fn delete(&mut self, path: &str) -> Result<Response, Failure> {
        let req = self.request("DELETE", path);
        self.send(req)
    }
}

/// Fails unless the response status is one of `want`.
pub fn expect_status(resp: &Response, want: &[u16], what: &str) -> Result<(), Failure> {
    ensure(want.contains(&resp.status), || {
        let want: Vec<String> = want.iter().map(u16::to_string).collect();
        format!(
            "{what}: expected status {}, got {} (body: {})",
            want.join(" or "),
            resp.status,
            resp.body_excerpt()
        )
    })
}

/// The value of a header the response must carry.
pub fn expect_header<'r>(resp: &'r Response, name: &str, what: &str) -> Result<&'r str, Failure> {
    resp.header(name)
        .ok_or_else(|| fail(format!("{what}: the response has no {name} header")))
}

/// Fails unless the response has the status and a JSON error body in the spec's
/// envelope whose codes include `code`.
pub fn expect_error(
    resp: &Response,
    status: &[u16],
    code: &str,
    what: &str,
) -> Result<(), Failure> {
    expect_status(resp, status, what)?;
    let codes = error_codes(resp).map_err(|e| fail(format!("{what}: {e}")))?;
    ensure(codes.iter().any(|c| c == code), || {
        format!("{what}: expected error code {code}, got {codes:?}")
    })
}

/// The codes of a spec error envelope, after checking its shape: a JSON object with an
/// `errors` array whose entries have a `code` from the spec's table, an optional string
/// `message` and an optional `detail`.
pub fn error_codes(resp: &Response) -> Result<Vec<String>, String> {
    let v: serde_json::Value = serde_json::from_slice(&resp.body).map_err(|e| {
        format!(
            "the {} response has no JSON error body ({e}): {}",
            resp.status,
            resp.body_excerpt()
        )
    })?;
    let errors = v
        .get("errors")
        .and_then(|e| e.as_array())
        .ok_or_else(|| format!("the error body has no \"errors\" array: {v}"))?;
    if errors.is_empty() {
        return Err("the error body's \"errors\" array is empty".to_owned());
    }
    let mut codes = Vec::new();
    for e in errors {
        let code = e
            .get("code")
            .and_then(|c| c.as_str())
            .ok_or_else(|| format!("an error has no string \"code\": {e}"))?;
        if !code.chars().all(|c| c.is_ascii_uppercase() || c == '_') || code.is_empty() {
            return Err(format!(
                "error code {code:?} is not uppercase letters and underscores"
            ));
        }
        if !SPEC_ERROR_CODES.contains(&code) {
            return Err(format!(
                "error code {code:?} is not one of the spec's codes"
            ));
        }
        if let Some(m) = e.get("message") {
            if !m.is_string() {
                return Err(format!("error \"message\" is not a string: {m}"));
            }
        }
        codes.push(code.to_owned());
    }
    Ok(codes)
}

/// Parses a JSON body, failing with context.
pub fn json(resp: &Response, what: &str) -> Result<serde_json::Value, Failure> {
    serde_json::from_slice(&resp.body).map_err(|e| {
        fail(format!(
            "{what}: body is not JSON ({e}): {}",
            resp.body_excerpt()
        ))
    })
}
