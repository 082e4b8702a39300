//! The content services over the crypto layer: blobs, upload sessions, manifests,
//! tags, repository links, referrers and the catalog.
//!
//! - `blobs`: reading, deleting and linking committed blobs.
//! - `uploads`: upload sessions and the commit of a blob.
//! - `sealing`: a request body sealed into one new data object, hashed on the side.
//! - `manifests`: manifests, tags, referrers, the catalog.
//! - `links`: sealed repository links (blob and manifest links, tags, referrers).
//! - `objects`: small typed helpers over the object store (JSON objects, create-only
//!   puts, listing) shared by the others.
//! - `sweep`: crash cleanup, removing what nothing names.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use futures::stream::BoxStream;
use kms_client::{Kek, KeyId, KmsError};
use object_store::ObjectStore;

use crate::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::crypto::SEGMENT_SIZE;
use crate::keyring::LoadedKeyring;
use crate::names::{Digest, RepositoryName, UploadId};
use crate::Result;

mod blobs;
mod cache;
mod clock;
mod keys;
mod links;
mod manifests;
mod objects;
mod sealing;
mod sweep;
mod uploads;

pub use cache::CacheStats;
pub use clock::Clock;
pub use keys::{RotateOutcome, RotationLease};
pub use links::SealReport;
pub use sweep::SweepReport;

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
    /// Parts in flight per data-object write. Memory per upload is about
    /// `part size × (max_parts_in_flight + 1)`; the part size is the backend's
    /// ([`crate::backend::Backend::part_size`]).
    pub max_parts_in_flight: usize,
    /// Bytes of part buffers all writes together may hold (`sealing` module docs):
    /// each buffer of a write beyond its first 256 KiB takes one part size of it
    /// until its part is stored, and a write waits for its share. At least one part.
    pub write_buffer_bytes: usize,
    /// How long a manifest GET may reuse a tag or digest resolution read before (a
    /// change made through another node is seen within it; 0 = always read).
    pub reference_cache_ttl: std::time::Duration,
    /// Memory for decrypted manifests kept by digest (dropped on revocation).
    pub manifest_cache_bytes: usize,
    /// Largest blob accepted, whole or by a session's appends together
    /// ([`StoreError::BlobTooLarge`] above it); `None` = no limit.
    pub max_blob_bytes: Option<u64>,
    /// What in-memory expiry (the reference cache) reads the time from: the system's,
    /// or a manual clock a test advances.
    pub clock: Clock,
    /// Follow repository links written before links were sealed (FORMAT.md §11).
    /// Off by default: an unsealed link is then an integrity error. On only while
    /// upgrading a store, until [`Store::seal_links`] has run.
    pub accept_unsealed_links: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            segment_size: SEGMENT_SIZE,
            max_parts_in_flight: 2,
            write_buffer_bytes: 24 * 1024 * 1024,
            reference_cache_ttl: std::time::Duration::from_secs(1),
            manifest_cache_bytes: 4 * 1024 * 1024,
            max_blob_bytes: None,
            clock: Clock::system(),
            accept_unsealed_links: false,
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
    backend: Backend,
    kek: Arc<dyn Kek>,
    config: StoreConfig,
    metrics: StoreMetrics,
    /// Replaced wholesale when the keyring changes or access is revoked; never held across an
    /// await.
    keyring: RwLock<KeySlot>,
    /// Bumped by every [`Store::revoke_access`]: a read stream that sees it change stops before
    /// its next segment.
    revocation_epoch: Arc<AtomicU64>,
    /// The newest keyring sequence and rotation this store has used: a reload never
    /// goes back behind it (`keys::check_succession`).
    keyring_mark: std::sync::Mutex<KeyringMark>,
    manifest_cache: cache::ManifestCache<manifests::ManifestLink>,
    /// Repositories whose catalog entry is known to exist.
    known_repositories: KnownRepositories,
    /// The bound on bytes buffered by all data-object writes.
    write_budget: sealing::WriteBudget,
}

/// A bounded set of repository names (a catalog entry, once written, stays; forgetting
/// one only costs a lookup).
#[derive(Debug, Default)]
struct KnownRepositories(std::sync::Mutex<std::collections::HashSet<String>>);

impl KnownRepositories {
    /// Names remembered before the set starts over.
    const LIMIT: usize = 16 * 1024;

    fn contains(&self, name: &str) -> bool {
        self.0.lock().is_ok_and(|set| set.contains(name))
    }

    fn insert(&self, name: &str) {
        if let Ok(mut set) = self.0.lock() {
            if set.len() >= Self::LIMIT {
                set.clear();
            }
            set.insert(name.to_owned());
        }
    }
}

/// How far the keyring in use has come (no key material).
#[derive(Debug, Clone, Copy)]
struct KeyringMark {
    sequence: u64,
    last_rotation: Option<chrono::DateTime<chrono::Utc>>,
}

impl KeyringMark {
    fn of(ring: &LoadedKeyring) -> KeyringMark {
        KeyringMark {
            sequence: ring.sequence,
            last_rotation: ring.doc.last_rotation,
        }
    }

    /// Moves the mark up to `ring` (never back).
    fn advance(&mut self, ring: &LoadedKeyring) {
        self.sequence = self.sequence.max(ring.sequence);
        self.last_rotation = self.last_rotation.max(ring.doc.last_rotation);
    }
}

/// The registry keys, or why there are none.
#[derive(Debug, Clone)]
enum KeySlot {
    Loaded(Arc<LoadedKeyring>),
    /// The keys were dropped (zeroized) because the KEK refused: every operation that
    /// needs a key fails with this error until the keyring is loaded again.
    Revoked(KmsError),
}

impl Store {
    /// Opens the store: loads the keyring (creating it with one registry key wrapped
    /// by `key_id` on first open) and unwraps the registry keys.
    ///
    /// Fails with `Key(Revoked)` when the KEK version is unusable, `Key(Misconfigured)`
    /// for a non-RSA key, `Integrity` when the KEK cannot unwrap the registry keys.
    pub async fn open(backend: Backend, kek: Arc<dyn Kek>, key_id: &KeyId) -> Result<Store> {
        Self::open_with(backend, kek, key_id, StoreConfig::default()).await
    }

    /// [`Store::open`] with explicit tunables.
    pub async fn open_with(
        backend: Backend,
        kek: Arc<dyn Kek>,
        key_id: &KeyId,
        config: StoreConfig,
    ) -> Result<Store> {
        let keyring = crate::keyring::load_or_create(backend.objects(), &kek, key_id).await?;
        let manifest_cache = cache::ManifestCache::new(
            config.reference_cache_ttl,
            config.manifest_cache_bytes,
            config.clock.clone(),
        );
        let write_budget =
            sealing::WriteBudget::new(config.write_buffer_bytes, backend.part_size());
        Ok(Store {
            inner: Arc::new(Inner {
                manifest_cache,
                kek,
                config,
                metrics: StoreMetrics::default(),
                keyring_mark: std::sync::Mutex::new(KeyringMark::of(&keyring)),
                keyring: RwLock::new(KeySlot::Loaded(Arc::new(keyring))),
                revocation_epoch: Arc::new(AtomicU64::new(0)),
                known_repositories: KnownRepositories::default(),
                write_budget,
                backend,
            }),
        })
    }

    pub fn metrics(&self) -> &StoreMetrics {
        &self.inner.metrics
    }

    /// The requests this store has made of its object store.
    pub fn object_store_metrics(&self) -> &crate::backend::ObjectStoreMetrics {
        self.inner.backend.metrics()
    }

    /// How often the manifest cache answered from memory.
    pub fn manifest_cache_stats(&self) -> CacheStats {
        self.inner.manifest_cache.stats()
    }

    /// The keyring currently in use.
    ///
    /// Fails with `Key(..)` (the reason access was revoked) while it is revoked.
    pub fn keyring(&self) -> Result<Arc<LoadedKeyring>> {
        match self.slot() {
            KeySlot::Loaded(k) => Ok(k),
            KeySlot::Revoked(why) => Err(why.into()),
        }
    }

    /// Why access to the content is revoked, if it is.
    pub fn access_revoked(&self) -> Option<KmsError> {
        match self.slot() {
            KeySlot::Loaded(_) => None,
            KeySlot::Revoked(why) => Some(why),
        }
    }

    /// Drops the registry keys (they zeroize when the last reference goes) and refuses
    /// every keyed operation with `why` from now on. Reads in flight stop before their
    /// next segment. [`Store::reload_keyring`] undoes it when the KEK works again.
    ///
    /// Named for what it does to callers, not for encryption: "seal" in this crate
    /// means AES-GCM sealing (`Sealer`, `Envelope::seal`).
    pub fn revoke_access(&self, why: KmsError) {
        self.inner.revocation_epoch.fetch_add(1, Ordering::SeqCst);
        self.set_slot(KeySlot::Revoked(why));
        self.inner.manifest_cache.clear();
    }

    fn manifest_cache(&self) -> &cache::ManifestCache<manifests::ManifestLink> {
        &self.inner.manifest_cache
    }

    /// Ends `stream` with the revocation's error as soon as access is revoked: no segment
    /// is yielded after a revocation, whatever was in flight.
    fn cut_on_revocation(&self, stream: ByteStream) -> ByteStream {
        use futures::StreamExt;
        let epoch = self.inner.revocation_epoch.clone();
        let opened_at = epoch.load(Ordering::SeqCst);
        let store = self.clone();
        futures::stream::unfold(Some(stream), move |state| {
            let epoch = epoch.clone();
            let store = store.clone();
            async move {
                let mut stream = state?;
                let item = stream.next().await?;
                if epoch.load(Ordering::SeqCst) != opened_at {
                    let why = store.access_revoked().unwrap_or_else(|| {
                        KmsError::revoked("registry key", "access was revoked during the read")
                    });
                    return Some((Err(why.into()), None));
                }
                Some((item, Some(stream)))
            }
        })
        .boxed()
    }

    fn slot(&self) -> KeySlot {
        match self.inner.keyring.read() {
            Ok(k) => k.clone(),
            // A panic while holding the lock cannot leave a half-written value behind.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_slot(&self, slot: KeySlot) {
        if let KeySlot::Loaded(ring) = &slot {
            match self.inner.keyring_mark.lock() {
                Ok(mut mark) => mark.advance(ring),
                Err(poisoned) => poisoned.into_inner().advance(ring),
            }
        }
        match self.inner.keyring.write() {
            Ok(mut k) => *k = slot,
            Err(poisoned) => *poisoned.into_inner() = slot,
        }
    }

    /// The newest keyring this store has used (kept through a revocation).
    fn keyring_mark(&self) -> KeyringMark {
        match self.inner.keyring_mark.lock() {
            Ok(m) => *m,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    /// The KEK provider this store was opened with.
    pub fn kek(&self) -> &Arc<dyn Kek> {
        &self.inner.kek
    }

    fn objects(&self) -> &Arc<dyn ObjectStore> {
        self.inner.backend.objects()
    }

    fn backend(&self) -> &Backend {
        &self.inner.backend
    }
}
