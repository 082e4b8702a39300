//! Building responses: [`Reply`] (status, typed headers, a body) and the error
//! response for an [`ApiError`]. Handlers, the gate and the server all answer
//! through these; nothing here knows about routes or the store.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Response, StatusCode};
use serde::Serialize;

use super::body::{self, Body};
use super::errors::ApiError;

/// What a handler answers: a response, or the error to answer with.
pub type HandlerResult = Result<Response<Body>, ApiError>;

/// A response under construction. Header values come from typed names and numbers,
/// so they are always valid header text; one that is not is dropped and logged
/// rather than turned into a panic.
#[derive(Debug)]
pub struct Reply {
    resp: Response<Body>,
}

impl Reply {
    /// An empty response.
    pub fn new(status: StatusCode) -> Reply {
        let mut resp = Response::new(body::empty());
        *resp.status_mut() = status;
        Reply { resp }
    }

    pub fn header(mut self, name: HeaderName, value: impl AsRef<str>) -> Reply {
        match HeaderValue::from_str(value.as_ref()) {
            Ok(v) => {
                self.resp.headers_mut().insert(name, v);
            }
            Err(_) => tracing::warn!(header = %name, "dropping an invalid response header value"),
        }
        self
    }

    /// A JSON body.
    pub fn json(self, content_type: &str, value: &impl Serialize) -> Reply {
        // Serialising our own plain structs cannot fail.
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        self.bytes(content_type, Bytes::from(bytes))
    }

    /// A body held in memory (JSON, manifests).
    pub fn bytes(self, content_type: &str, bytes: Bytes) -> Reply {
        let len = bytes.len();
        let mut r = self
            .header(CONTENT_TYPE, content_type)
            .header(CONTENT_LENGTH, len.to_string());
        *r.resp.body_mut() = body::full(bytes);
        r
    }

    /// A streamed body of known length.
    pub fn stream(self, content_type: &str, len: u64, body: Body) -> Reply {
        let mut r = self
            .header(CONTENT_TYPE, content_type)
            .header(CONTENT_LENGTH, len.to_string());
        *r.resp.body_mut() = body;
        r
    }

    /// The headers of a GET without its body, for HEAD.
    pub fn head(self, content_type: &str, len: u64) -> Reply {
        self.header(CONTENT_TYPE, content_type)
            .header(CONTENT_LENGTH, len.to_string())
    }

    pub fn build(self) -> Response<Body> {
        self.resp
    }
}

/// The error response for `e`.
pub fn error_response(e: ApiError) -> Response<Body> {
    let json = e.body();
    let mut r = Reply::new(e.status).bytes("application/json; charset=utf-8", Bytes::from(json));
    // Appended, not inserted: a 401 may carry more than one challenge.
    for (name, value) in e.headers {
        r.resp.headers_mut().append(name, value);
    }
    r.build()
}
