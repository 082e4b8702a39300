use thiserror::Error;

use kms_client::KmsError;

/// Every way a storage operation can fail, as variants a caller can act on.
///
/// The registry maps each variant to an OCI error code with an exhaustive `match`.
/// Messages are safe to show to a client: no key material, no object paths of
/// other tenants, no cause details of integrity failures.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The blob does not exist (no envelope), or is not linked into the repository.
    #[error("blob unknown to registry")]
    BlobUnknown,
    /// No such manifest in the repository (by digest), or the tag does not exist.
    #[error("manifest unknown to registry")]
    ManifestUnknown,
    /// The repository has no content at all.
    #[error("repository name not known to registry")]
    NameUnknown,
    /// No such upload session (never created, cancelled, finished, or another repository's).
    #[error("blob upload unknown to registry")]
    UploadUnknown,
    /// An append did not start at the session's current offset (or lost a race with a
    /// concurrent append). `current` is the session's offset now.
    #[error("upload offset mismatch: the session is at offset {current}")]
    OffsetMismatch { current: u64 },
    /// The content's digest is not the digest the client declared. Nothing was stored.
    #[error("provided digest did not match uploaded content")]
    DigestMismatch,
    /// The declared size does not match the content.
    #[error("provided length did not match content length")]
    SizeMismatch,
    /// The blob grew past the largest one accepted ([`crate::StoreConfig::max_blob_bytes`]).
    /// Nothing of the request's body was kept; an upload session stays where it was.
    #[error("blob exceeds the {limit}-byte limit")]
    BlobTooLarge { limit: u64 },
    /// The requested byte range lies outside the blob. `size` is the blob's size.
    #[error("requested range not satisfiable (blob size {size})")]
    RangeNotSatisfiable { size: u64 },
    /// Stored content failed authentication: tampered, truncated, reordered, spliced or
    /// read with the wrong key. Deliberately carries no detail.
    #[error("stored content failed its integrity check")]
    Integrity,
    /// The key-encryption key refused (revoked, transient, misconfigured). See DESIGN §7.
    #[error(transparent)]
    Key(#[from] KmsError),
    /// The upload body could not be read (client went away, body error).
    #[error("reading the request body failed: {0}")]
    Body(std::io::Error),
    /// The object store failed (I/O, network, permissions).
    #[error("object store failure: {0}")]
    Backend(#[source] object_store::Error),
    /// A bug or a broken invariant inside valv (a worker thread died, a commit that
    /// could not settle), or a failure of valv's own I/O beside the object store (a
    /// local data file read directly). Never caused by the client; logged with its
    /// reason.
    #[error("internal error in the store: {0}")]
    Internal(String),
    /// A stored metadata object (envelope, keyring, session, link) could not be parsed.
    /// Distinct from `Integrity`: the object is not valid JSON or has unknown fields.
    #[error("stored metadata object {path} is malformed: {reason}")]
    Corrupt { path: String, reason: String },
}

impl From<object_store::Error> for StoreError {
    fn from(e: object_store::Error) -> Self {
        StoreError::Backend(e)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
