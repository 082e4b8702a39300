//! The content services over the crypto layer: blobs, upload sessions, manifests,
//! tags, repository links, referrers and the catalog.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use kms_client::{Kek, KeyId};
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};

use crate::crypto::SEGMENT_SIZE;
use crate::names::{Digest, Reference, RepositoryName, Tag, UploadId};
use crate::Result;

/// Plaintext coming out of the store: chunks of at most one segment, each yielded only
/// after its segment authenticated. An `Err` item ends the stream.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// A request body going into the store.
pub type BodyStream<'a> = BoxStream<'a, std::result::Result<Bytes, std::io::Error>>;

/// Tunables with production defaults.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Plaintext bytes per segment for new blobs.
    pub segment_size: u32,
    /// Size of each part of a multipart data-object write (S3 needs ≥ 5 MiB).
    pub part_size: usize,
    /// Parts in flight per data-object write. Memory per upload is about
    /// `part_size × (max_parts_in_flight + 1)`.
    pub max_parts_in_flight: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            segment_size: SEGMENT_SIZE,
            part_size: 5 * 1024 * 1024,
            max_parts_in_flight: 2,
        }
    }
}

/// Counters for tests and `/metrics`.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    /// Segments decrypted (authenticated) by reads.
    pub segments_opened: Arc<AtomicU64>,
    /// Segments sealed by uploads.
    pub segments_sealed: AtomicU64,
}

/// A committed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub digest: Digest,
    /// Plaintext size in bytes.
    pub size: u64,
}

/// A byte range as a client asks for it (RFC 9110 `bytes=` forms, one range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// `bytes=start-` : from `start` to the end.
    From(u64),
    /// `bytes=start-end` : inclusive end, clamped to the blob's last byte.
    FromTo(u64, u64),
    /// `bytes=-len` : the last `len` bytes.
    Suffix(u64),
}

/// An open blob read.
pub struct BlobRead {
    pub info: BlobInfo,
    /// The plaintext byte range served, `start..end` (end exclusive). The whole blob
    /// when no range was asked for.
    pub range: std::ops::Range<u64>,
    /// Whether a range was asked for (the response is then 206).
    pub partial: bool,
    pub body: ByteStream,
}

impl std::fmt::Debug for BlobRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobRead")
            .field("info", &self.info)
            .field("range", &self.range)
            .field("partial", &self.partial)
            .finish_non_exhaustive()
    }
}

/// Where an upload session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadStatus {
    pub id: UploadId,
    pub repository: RepositoryName,
    /// Plaintext bytes received so far (the next append must start here).
    pub offset: u64,
}

/// A manifest to store.
#[derive(Debug, Clone)]
pub struct NewManifest {
    /// The exact bytes as pushed.
    pub bytes: Bytes,
    pub media_type: String,
    /// The digest the client addressed it by (or sha256 of the bytes). Verified.
    pub digest: Digest,
    /// The manifest's `subject`, for the referrers index.
    pub subject: Option<Digest>,
    /// `artifactType`, or the config media type for image manifests.
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A stored manifest's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestInfo {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// A stored manifest with its exact bytes.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub info: ManifestInfo,
    pub bytes: Bytes,
}

/// An OCI descriptor as the referrers API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub artifact_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// One page of a lexically ordered listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// True when items after the last one returned exist (the caller sends `Link`).
    pub more: bool,
}

/// The encrypted content store. Cheap to clone; all state lives in the object store.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    objects: Arc<dyn ObjectStore>,
    kek: Arc<dyn Kek>,
    config: StoreConfig,
    metrics: StoreMetrics,
}

#[allow(unused_variables)]
impl Store {
    /// Opens the store: loads the keyring (creating it with one registry key wrapped
    /// by `key_id` on first open) and unwraps the registry keys.
    ///
    /// Fails with `Key(Revoked)` when the KEK version is unusable, `Key(Misconfigured)`
    /// for a non-RSA key, `Integrity` when the KEK cannot unwrap the registry keys.
    pub async fn open(
        objects: Arc<dyn ObjectStore>,
        kek: Arc<dyn Kek>,
        key_id: &KeyId,
    ) -> Result<Store> {
        Self::open_with(objects, kek, key_id, StoreConfig::default()).await
    }

    pub async fn open_with(
        objects: Arc<dyn ObjectStore>,
        kek: Arc<dyn Kek>,
        key_id: &KeyId,
        config: StoreConfig,
    ) -> Result<Store> {
        todo!()
    }

    pub fn metrics(&self) -> &StoreMetrics {
        &self.inner.metrics
    }

    // ---- blobs -------------------------------------------------------------

    /// Fails with `BlobUnknown` when no envelope exists.
    pub async fn stat_blob(&self, digest: &Digest) -> Result<BlobInfo> {
        todo!()
    }

    /// Opens a blob for reading, optionally a range of it.
    ///
    /// Fails with `BlobUnknown`, `RangeNotSatisfiable`, or `Integrity` when the envelope
    /// does not open. Integrity failures in segments surface in the stream.
    pub async fn read_blob(&self, digest: &Digest, range: Option<RangeSpec>) -> Result<BlobRead> {
        todo!()
    }

    /// Deletes the blob everywhere (envelope first, so it stops existing at once, then
    /// its data objects). Fails with `BlobUnknown`.
    pub async fn delete_blob(&self, digest: &Digest) -> Result<()> {
        todo!()
    }

    /// Like [`Store::stat_blob`], but only if the blob is linked into `repo`.
    pub async fn stat_repo_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<BlobInfo> {
        todo!()
    }

    /// Like [`Store::read_blob`], but only if the blob is linked into `repo`.
    pub async fn read_repo_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        range: Option<RangeSpec>,
    ) -> Result<BlobRead> {
        todo!()
    }

    /// Links an existing blob into `repo` (cross-repository mount). Idempotent.
    /// Fails with `BlobUnknown` when the blob does not exist.
    pub async fn link_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<BlobInfo> {
        todo!()
    }

    /// Removes the blob from `repo` (the content stays for other repositories until
    /// garbage collection). Fails with `BlobUnknown` when it is not linked.
    pub async fn unlink_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<()> {
        todo!()
    }

    // ---- uploads -----------------------------------------------------------

    /// Starts an upload session in `repo`.
    pub async fn create_upload(&self, repo: &RepositoryName) -> Result<UploadStatus> {
        todo!()
    }

    /// Fails with `UploadUnknown` for an unknown session or one of another repository.
    pub async fn upload_status(
        &self,
        repo: &RepositoryName,
        id: &UploadId,
    ) -> Result<UploadStatus> {
        todo!()
    }

    /// Appends `body` to the session. `start`, when given, must equal the session's
    /// offset (else `OffsetMismatch`, nothing written). On a body error the append is
    /// discarded and the session stays at its previous offset.
    pub async fn append_upload(
        &self,
        repo: &RepositoryName,
        id: &UploadId,
        start: Option<u64>,
        body: BodyStream<'_>,
    ) -> Result<UploadStatus> {
        todo!()
    }

    /// Finishes the session: appends `last` if given, verifies `digest`, commits the blob
    /// and links it into `repo`. On `DigestMismatch` nothing is stored and the session
    /// is removed. Idempotent when the blob already exists.
    pub async fn finish_upload(
        &self,
        repo: &RepositoryName,
        id: &UploadId,
        digest: &Digest,
        last: Option<(Option<u64>, BodyStream<'_>)>,
    ) -> Result<BlobInfo> {
        todo!()
    }

    /// Cancels the session and deletes everything it wrote. Fails with `UploadUnknown`.
    pub async fn cancel_upload(&self, repo: &RepositoryName, id: &UploadId) -> Result<()> {
        todo!()
    }

    /// A whole blob in one call (monolithic push): create, append, finish.
    pub async fn put_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        body: BodyStream<'_>,
    ) -> Result<BlobInfo> {
        todo!()
    }

    // ---- manifests, tags, referrers, catalog -------------------------------

    /// Stores a manifest (encrypted, exact bytes), links it into `repo`, records it in
    /// the referrers index of its subject, and points `tag` at it if given.
    /// Fails with `DigestMismatch` when `manifest.digest` is not the bytes' digest.
    pub async fn put_manifest(
        &self,
        repo: &RepositoryName,
        manifest: NewManifest,
        tag: Option<&Tag>,
    ) -> Result<ManifestInfo> {
        todo!()
    }

    /// Fails with `ManifestUnknown` (unknown tag or digest in `repo`).
    pub async fn stat_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<ManifestInfo> {
        todo!()
    }

    /// Fails with `ManifestUnknown`, or `Integrity` if the stored bytes do not verify.
    pub async fn get_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<Manifest> {
        todo!()
    }

    /// Deletes the manifest from `repo`: its revision link, every tag pointing at it,
    /// and its referrers-index entry. Fails with `ManifestUnknown`.
    pub async fn delete_manifest(&self, repo: &RepositoryName, digest: &Digest) -> Result<()> {
        todo!()
    }

    /// Fails with `ManifestUnknown` when the tag does not exist.
    pub async fn delete_tag(&self, repo: &RepositoryName, tag: &Tag) -> Result<()> {
        todo!()
    }

    /// Tags in lexical order, after `last` (exclusive), at most `n`.
    /// Fails with `NameUnknown` when the repository does not exist.
    pub async fn list_tags(
        &self,
        repo: &RepositoryName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page<Tag>> {
        todo!()
    }

    /// Manifests in `repo` whose subject is `subject`, optionally only those of
    /// `artifact_type`. Empty (not an error) when there are none.
    pub async fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>> {
        todo!()
    }

    /// Repositories in lexical order, after `last` (exclusive), at most `n`.
    pub async fn catalog(
        &self,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page<RepositoryName>> {
        todo!()
    }

    /// Whether `repo` holds anything (a blob link, a manifest or an open upload).
    pub async fn repository_exists(&self, repo: &RepositoryName) -> Result<bool> {
        todo!()
    }
}
