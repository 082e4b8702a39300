//! OCI error codes as data, the spec's JSON error envelope, and the mapping from
//! storage errors to codes.
//!
//! The mapping from [`StoreError`] is an exhaustive `match` with no catch-all arm: a new
//! storage error cannot ship without someone deciding what a client sees for it. The
//! client gets the code and a safe message; causes that could leak internals
//! (integrity failures, backend errors) are logged server-side and answered generically.

use http::{HeaderName, HeaderValue, StatusCode};
use kms_client::KmsError;
use serde::Serialize;
use storage::{NameError, StoreError};

use crate::http::body::BodyError;

/// Every error code valv sends. The first fourteen are the spec's (code-1 … code-14);
/// the rest are distribution's extras, used only where no spec code fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    // distribution extras
    RangeInvalid,
    PaginationNumberInvalid,
    Unavailable,
    Unknown,
}

impl ErrorCode {
    /// Every code, for tests and documentation; [`ErrorCode::info`] is the table.
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::BlobUnknown,
        ErrorCode::BlobUploadInvalid,
        ErrorCode::BlobUploadUnknown,
        ErrorCode::DigestInvalid,
        ErrorCode::ManifestBlobUnknown,
        ErrorCode::ManifestInvalid,
        ErrorCode::ManifestUnknown,
        ErrorCode::NameInvalid,
        ErrorCode::NameUnknown,
        ErrorCode::SizeInvalid,
        ErrorCode::Unauthorized,
        ErrorCode::Denied,
        ErrorCode::Unsupported,
        ErrorCode::TooManyRequests,
        ErrorCode::RangeInvalid,
        ErrorCode::PaginationNumberInvalid,
        ErrorCode::Unavailable,
        ErrorCode::Unknown,
    ];

    /// The table (statuses as distribution pairs them; REFERENCE §6.1): the wire
    /// string, the status sent unless a handler has a more specific one (e.g. 416,
    /// 413), and the spec's description, used when there is nothing more specific to
    /// say. An exhaustive match: a new code does not compile without its row.
    pub const fn info(self) -> (&'static str, StatusCode, &'static str) {
        use ErrorCode::*;
        match self {
            BlobUnknown => (
                "BLOB_UNKNOWN",
                StatusCode::NOT_FOUND,
                "blob unknown to registry",
            ),
            BlobUploadInvalid => (
                "BLOB_UPLOAD_INVALID",
                StatusCode::BAD_REQUEST,
                "blob upload invalid",
            ),
            BlobUploadUnknown => (
                "BLOB_UPLOAD_UNKNOWN",
                StatusCode::NOT_FOUND,
                "blob upload unknown to registry",
            ),
            DigestInvalid => (
                "DIGEST_INVALID",
                StatusCode::BAD_REQUEST,
                "provided digest did not match uploaded content",
            ),
            ManifestBlobUnknown => (
                "MANIFEST_BLOB_UNKNOWN",
                StatusCode::BAD_REQUEST,
                "manifest references a manifest or blob unknown to registry",
            ),
            ManifestInvalid => (
                "MANIFEST_INVALID",
                StatusCode::BAD_REQUEST,
                "manifest invalid",
            ),
            ManifestUnknown => (
                "MANIFEST_UNKNOWN",
                StatusCode::NOT_FOUND,
                "manifest unknown to registry",
            ),
            NameInvalid => (
                "NAME_INVALID",
                StatusCode::BAD_REQUEST,
                "invalid repository name",
            ),
            NameUnknown => (
                "NAME_UNKNOWN",
                StatusCode::NOT_FOUND,
                "repository name not known to registry",
            ),
            SizeInvalid => (
                "SIZE_INVALID",
                StatusCode::BAD_REQUEST,
                "provided length did not match content length",
            ),
            Unauthorized => (
                "UNAUTHORIZED",
                StatusCode::UNAUTHORIZED,
                "authentication required",
            ),
            Denied => (
                "DENIED",
                StatusCode::FORBIDDEN,
                "requested access to the resource is denied",
            ),
            Unsupported => (
                "UNSUPPORTED",
                StatusCode::METHOD_NOT_ALLOWED,
                "the operation is unsupported",
            ),
            TooManyRequests => (
                "TOOMANYREQUESTS",
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests",
            ),
            RangeInvalid => (
                "RANGE_INVALID",
                StatusCode::RANGE_NOT_SATISFIABLE,
                "invalid content range",
            ),
            PaginationNumberInvalid => (
                "PAGINATION_NUMBER_INVALID",
                StatusCode::BAD_REQUEST,
                "invalid number of results requested",
            ),
            Unavailable => (
                "UNAVAILABLE",
                StatusCode::SERVICE_UNAVAILABLE,
                "service unavailable",
            ),
            Unknown => (
                "UNKNOWN",
                StatusCode::INTERNAL_SERVER_ERROR,
                "unknown error",
            ),
        }
    }

    /// The wire string.
    pub const fn name(self) -> &'static str {
        self.info().0
    }

    /// The status sent unless a handler has a more specific one.
    pub const fn status(self) -> StatusCode {
        self.info().1
    }

    /// The spec's description.
    pub const fn description(self) -> &'static str {
        self.info().2
    }
}

/// An error response: one OCI error, its status, and any headers the spec asks for
/// alongside (e.g. `Range` on a 416 upload, `Allow` on a 405).
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub status: StatusCode,
    pub message: String,
    pub detail: Option<serde_json::Value>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    /// The code with its table status and its description as the message.
    pub fn new(code: ErrorCode) -> ApiError {
        ApiError {
            code,
            status: code.status(),
            message: code.description().to_owned(),
            detail: None,
            headers: Vec::new(),
        }
    }
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }
    /// Adds a header; values that are not valid header text are dropped (they are
    /// always built by us from typed values, so this does not happen).
    pub fn with_header(mut self, name: HeaderName, value: impl AsRef<str>) -> Self {
        if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
            self.headers.push((name, v));
        }
        self
    }

    /// The JSON envelope `{"errors":[{"code","message","detail"}]}`.
    pub fn body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Envelope<'a> {
            errors: [Entry<'a>; 1],
        }
        #[derive(Serialize)]
        struct Entry<'a> {
            code: &'a str,
            message: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            detail: Option<&'a serde_json::Value>,
        }
        let envelope = Envelope {
            errors: [Entry {
                code: self.code.name(),
                message: &self.message,
                detail: self.detail.as_ref(),
            }],
        };
        // Serialising plain strings and a Value cannot fail.
        serde_json::to_vec(&envelope).unwrap_or_default()
    }
}

/// The answer for a path no route serves (and for the admin API while it is disabled,
/// so that a disabled admin API is indistinguishable from none).
pub fn no_such_endpoint() -> ApiError {
    // No spec code means "no such endpoint"; UNSUPPORTED with a 404 says it best.
    ApiError::new(ErrorCode::Unsupported)
        .with_status(StatusCode::NOT_FOUND)
        .with_message("no such endpoint")
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        store_error(e)
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> ApiError {
        name_error(e)
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> ApiError {
        body_error(&e)
    }
}

/// Maps a storage error to what the client sees. No catch-all arm, on purpose.
pub fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::BlobUnknown => ApiError::new(ErrorCode::BlobUnknown),
        StoreError::ManifestUnknown => ApiError::new(ErrorCode::ManifestUnknown),
        StoreError::NameUnknown => ApiError::new(ErrorCode::NameUnknown),
        StoreError::UploadUnknown => ApiError::new(ErrorCode::BlobUploadUnknown),
        // The upload handlers add `Location` and `Range` (they know the session).
        StoreError::OffsetMismatch { current } => ApiError::new(ErrorCode::BlobUploadInvalid)
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
            .with_message(format!(
                "chunk does not start at the upload's current offset {current}"
            ))
            .with_detail(serde_json::json!({ "offset": current })),
        StoreError::DigestMismatch => ApiError::new(ErrorCode::DigestInvalid),
        StoreError::SizeMismatch => ApiError::new(ErrorCode::SizeInvalid),
        StoreError::BlobTooLarge { limit } => blob_too_large(limit),
        // No spec code covers an unsatisfiable read range; RANGE_INVALID is the one
        // distribution sends, so clients already know it.
        StoreError::RangeNotSatisfiable { size } => ApiError::new(ErrorCode::RangeInvalid)
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
            .with_message(format!(
                "requested range not satisfiable (blob size {size})"
            ))
            .with_header(http::header::CONTENT_RANGE, format!("bytes */{size}")),
        StoreError::Integrity => {
            tracing::error!("stored content failed its integrity check");
            internal()
        }
        StoreError::Key(k) => key_error(k),
        // The store reads request bodies only; their errors are ours (see BodyError).
        StoreError::Body(io) => match BodyError::in_io(&io) {
            Some(e) => body_error(e),
            None => {
                tracing::debug!(error = %io, "request body failed");
                body_read_failed()
            }
        },
        StoreError::Backend(err) => {
            tracing::error!(error = %err, "object store failure");
            ApiError::new(ErrorCode::Unavailable)
                .with_message("the registry's storage is unavailable; try again later")
        }
        StoreError::Corrupt { path, reason } => {
            tracing::error!(%path, %reason, "stored metadata object is malformed");
            internal()
        }
        StoreError::Internal(reason) => {
            tracing::error!(%reason, "internal error in the store");
            internal()
        }
    }
}

/// 413 `SIZE_INVALID` for a blob larger than `storage.max_blob_bytes`, whether it is
/// declared so up front or grows so while streamed.
pub fn blob_too_large(limit: u64) -> ApiError {
    ApiError::new(ErrorCode::SizeInvalid)
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        .with_message(format!("blob exceeds the {limit}-byte limit"))
        .with_detail(serde_json::json!({ "limit": limit }))
}

/// The generic 500: the cause is logged, never sent.
fn internal() -> ApiError {
    ApiError::new(ErrorCode::Unknown)
        .with_message("internal error; the cause is in the registry's log")
}

/// DESIGN §7: revoked → 403 naming the key; transient → 503.
fn key_error(e: KmsError) -> ApiError {
    match e {
        KmsError::Revoked { key, reason } => {
            tracing::warn!(%key, %reason, "content refused: encryption key revoked");
            ApiError::new(ErrorCode::Denied).with_message(format!(
                "the registry's encryption key {key} is revoked or unusable: {reason}"
            ))
        }
        KmsError::Transient { key, reason } => {
            tracing::warn!(%key, %reason, "content refused: key provider unavailable");
            ApiError::new(ErrorCode::Unavailable).with_message(format!(
                "the key provider for {key} is temporarily unavailable; try again later"
            ))
        }
        // An operator must fix the configuration; to the client it is an outage.
        KmsError::Misconfigured { key, reason } => {
            tracing::error!(%key, %reason, "encryption key misconfigured");
            ApiError::new(ErrorCode::Unavailable).with_message(format!(
                "the registry's encryption key {key} is misconfigured"
            ))
        }
        // The KEK could not unwrap what it should have: stored key material was altered.
        KmsError::InvalidCiphertext { key } => {
            tracing::error!(%key, "wrapped key material did not unwrap");
            internal()
        }
    }
}

fn body_error(e: &BodyError) -> ApiError {
    match e {
        BodyError::LengthMismatch { .. } => {
            ApiError::new(ErrorCode::SizeInvalid).with_message(e.to_string())
        }
        BodyError::Read(cause) => {
            // Usually the client went away; it will not read this.
            tracing::debug!(error = %cause, "request body failed");
            body_read_failed()
        }
        BodyError::Idle(_) => ApiError::new(ErrorCode::BlobUploadInvalid)
            .with_status(StatusCode::REQUEST_TIMEOUT)
            .with_message(e.to_string()),
    }
}

fn body_read_failed() -> ApiError {
    ApiError::new(ErrorCode::BlobUploadInvalid).with_message("reading the request body failed")
}

/// Maps a name that did not parse. Tags appear only as manifest references, where the
/// spec's closest code is MANIFEST_INVALID (distribution's TAG_INVALID is not a spec code).
pub fn name_error(e: NameError) -> ApiError {
    let msg = e.to_string();
    match e {
        NameError::Digest(_) | NameError::UnsupportedAlgorithm(_) => {
            ApiError::new(ErrorCode::DigestInvalid).with_message(msg)
        }
        NameError::Repository(_) => ApiError::new(ErrorCode::NameInvalid).with_message(msg),
        NameError::Tag(_) => ApiError::new(ErrorCode::ManifestInvalid).with_message(msg),
        // A malformed id can never name a session.
        NameError::UploadId => ApiError::new(ErrorCode::BlobUploadUnknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_strings_are_distinct_upper_case_and_statuses_are_errors() {
        let names: std::collections::BTreeSet<_> =
            ErrorCode::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        for c in ErrorCode::ALL {
            assert!(
                c.name()
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{c:?}"
            );
            assert!(
                c.status().is_client_error() || c.status().is_server_error(),
                "{c:?}"
            );
        }
        assert_eq!(ErrorCode::ManifestUnknown.status(), StatusCode::NOT_FOUND);
        assert_eq!(ErrorCode::Unsupported.name(), "UNSUPPORTED");
    }

    #[test]
    fn envelope_shape() {
        let e =
            ApiError::new(ErrorCode::BlobUnknown).with_detail(serde_json::json!({"digest": "x"}));
        let v: serde_json::Value = serde_json::from_slice(&e.body()).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry","detail":{"digest":"x"}}]})
        );
    }

    #[test]
    fn store_errors_map_to_spec_codes() {
        let cases: Vec<(StoreError, &str, u16)> = vec![
            (StoreError::BlobUnknown, "BLOB_UNKNOWN", 404),
            (StoreError::ManifestUnknown, "MANIFEST_UNKNOWN", 404),
            (StoreError::NameUnknown, "NAME_UNKNOWN", 404),
            (StoreError::UploadUnknown, "BLOB_UPLOAD_UNKNOWN", 404),
            (
                StoreError::OffsetMismatch { current: 3 },
                "BLOB_UPLOAD_INVALID",
                416,
            ),
            (StoreError::DigestMismatch, "DIGEST_INVALID", 400),
            (StoreError::SizeMismatch, "SIZE_INVALID", 400),
            (StoreError::BlobTooLarge { limit: 9 }, "SIZE_INVALID", 413),
            (
                StoreError::RangeNotSatisfiable { size: 9 },
                "RANGE_INVALID",
                416,
            ),
            (StoreError::Integrity, "UNKNOWN", 500),
            (
                StoreError::Key(KmsError::revoked("file:///k/a", "disabled")),
                "DENIED",
                403,
            ),
            (
                StoreError::Key(KmsError::transient("file:///k/a", "503")),
                "UNAVAILABLE",
                503,
            ),
            (
                StoreError::Key(KmsError::misconfigured("file:///k/a", "no such key")),
                "UNAVAILABLE",
                503,
            ),
            (
                StoreError::Key(KmsError::InvalidCiphertext {
                    key: "file:///k/a".into(),
                }),
                "UNKNOWN",
                500,
            ),
            (
                StoreError::Backend(object_store::Error::Generic {
                    store: "test",
                    source: "down".into(),
                }),
                "UNAVAILABLE",
                503,
            ),
            (
                StoreError::Corrupt {
                    path: "p".into(),
                    reason: "r".into(),
                },
                "UNKNOWN",
                500,
            ),
        ];
        for (err, code, status) in cases {
            let a = store_error(err);
            assert_eq!((a.code.name(), a.status.as_u16()), (code, status));
        }
    }

    #[test]
    fn revoked_names_the_key_and_integrity_says_nothing() {
        let a = store_error(StoreError::Key(KmsError::revoked(
            "file:///keys/k",
            "disabled",
        )));
        assert!(a.message.contains("file:///keys/k"));
        let a = store_error(StoreError::Integrity);
        assert!(!a.message.contains("integrity"));
        // A misconfigured key is named (the operator must act); a wrapped key that
        // did not unwrap says nothing of the key material.
        let a = store_error(StoreError::Key(KmsError::misconfigured(
            "file:///keys/k",
            "no such key",
        )));
        assert!(a.message.contains("file:///keys/k"));
        let a = store_error(StoreError::Key(KmsError::InvalidCiphertext {
            key: "file:///keys/k".into(),
        }));
        assert!(!a.message.contains("file:///keys/k"));
    }

    #[test]
    fn range_not_satisfiable_carries_content_range() {
        let a = store_error(StoreError::RangeNotSatisfiable { size: 42 });
        assert!(a
            .headers
            .iter()
            .any(|(n, v)| n == http::header::CONTENT_RANGE && v == "bytes */42"));
    }

    #[test]
    fn length_mismatch_is_size_invalid() {
        let io = BodyError::LengthMismatch {
            declared: 10,
            received_at_least: 11,
        }
        .into_io();
        assert_eq!(
            store_error(StoreError::Body(io)).code,
            ErrorCode::SizeInvalid
        );
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "gone");
        assert_eq!(
            store_error(StoreError::Body(io)).code,
            ErrorCode::BlobUploadInvalid
        );
    }

    #[test]
    fn name_errors() {
        assert_eq!(
            name_error(NameError::Repository("x".into())).code,
            ErrorCode::NameInvalid
        );
        assert_eq!(
            name_error(NameError::Digest("x".into())).code,
            ErrorCode::DigestInvalid
        );
        assert_eq!(
            name_error(NameError::UploadId).status,
            StatusCode::NOT_FOUND
        );
    }
}
