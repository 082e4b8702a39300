//! Sealed repository links (FORMAT.md §11): blob links, manifest links, tags and
//! referrers entries are stored as
//!
//! ```json
//! {"key_generation":1,"link":{…},"seal":"<base64 HMAC-SHA256>"}
//! ```
//!
//! where the seal is over the link's exact JSON bytes, its generation and the object
//! path it is stored at ([`crate::crypto::seal`]). A link that does not verify is an
//! integrity error: it is never followed, so a bucket writer cannot make a blob
//! readable in a repository it was never pushed to, point a tag at another manifest,
//! or move a tag, link or referrer to another path.
//!
//! Links written before sealing existed (the bare `{…}` object) are refused unless
//! `StoreConfig::accept_unsealed_links` is set; [`Store::seal_links`] rewrites them.

use std::sync::atomic::{AtomicBool, Ordering};

use object_store::path::Path;
use object_store::ObjectStoreExt as _;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::objects;
use super::{Descriptor, Store};
use crate::crypto::seal;
use crate::paths::{LinkKind, ObjectPath};
use crate::{Result, StoreError};

/// What a stored link object turned out to be.
enum Opened<T> {
    /// Sealed, and the seal verified.
    Sealed(T),
    /// A link from before sealing (the bare object), not authenticated.
    Unsealed(T),
}

/// What [`Store::seal_links`] found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SealReport {
    /// Links already sealed whose seal verified.
    pub verified: u64,
    /// Unsealed links that were sealed in place.
    pub sealed: u64,
    /// Objects that are neither: a seal that does not verify, or not a link. Left
    /// alone (and never followed); the log names each.
    pub refused: u64,
}

/// Logged once per process: the first unsealed link accepted.
static UNSEALED_WARNED: AtomicBool = AtomicBool::new(false);

impl Store {
    /// Reads and verifies the link at `path`; `None` when there is none.
    ///
    /// Fails with `Integrity` when the seal does not verify (or the link is unsealed and
    /// unsealed links are not accepted), `Corrupt` when the object is not a link, and
    /// with the revocation's error while access is revoked.
    pub(super) async fn get_link<T: DeserializeOwned>(&self, path: &Path) -> Result<Option<T>> {
        let Some(bytes) = objects::get(self.objects(), path).await? else {
            return Ok(None);
        };
        match self.open_link(path, &bytes)? {
            Opened::Sealed(link) => Ok(Some(link)),
            Opened::Unsealed(link) if self.inner.config.accept_unsealed_links => {
                if !UNSEALED_WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%path, "following an unsealed repository link (storage.accept_unsealed_links is on; POST /admin/v1/storage/seal-links)");
                }
                Ok(Some(link))
            }
            Opened::Unsealed(_) => Err(StoreError::Integrity),
        }
    }

    /// Seals `link` for `path` under the active generation and writes it, replacing
    /// any previous one.
    pub(super) async fn put_link<T: Serialize>(&self, path: &Path, link: &T) -> Result<()> {
        let bytes = self.seal_link(path, link)?;
        self.objects().put(path, bytes.into()).await?;
        Ok(())
    }

    fn seal_link<T: Serialize>(&self, path: &Path, link: &T) -> Result<Vec<u8>> {
        let corrupt = |e| objects::corrupt(path, e);
        let body = serde_json::to_string(link).map_err(corrupt)?;
        let ring = self.keyring()?;
        let (generation, key) = ring.active_link_key();
        seal::seal_object(key, generation, path.as_ref(), body).map_err(corrupt)
    }

    fn open_link<T: DeserializeOwned>(&self, path: &Path, bytes: &[u8]) -> Result<Opened<T>> {
        let corrupt = |e| objects::corrupt(path, e);
        let ring = self.keyring()?;
        let opened = seal::open_object(path.as_ref(), bytes, |g| ring.link_key(g).ok())
            .map_err(|_| StoreError::Integrity)?;
        match opened {
            seal::Opened::Sealed { body, .. } => serde_json::from_str(body)
                .map(Opened::Sealed)
                .map_err(corrupt),
            seal::Opened::Unsealed(bytes) => serde_json::from_slice(bytes)
                .map(Opened::Unsealed)
                .map_err(corrupt),
        }
    }

    /// Seals every unsealed link in the store in place (the upgrade from a store
    /// written before links were sealed) and verifies the sealed ones. Idempotent.
    ///
    /// Run it while the store is trusted: whatever unsealed links it finds become
    /// authentic. A blob link whose blob does not exist is not sealed (counted as
    /// refused).
    pub async fn seal_links(&self) -> Result<SealReport> {
        let mut report = SealReport::default();
        let root = ObjectPath::RepositoriesDir.to_path();
        for path in objects::list(self.objects(), &root).await? {
            let Some(kind) = LinkKind::of(&path) else {
                continue;
            };
            let Some(bytes) = objects::get(self.objects(), &path).await? else {
                continue;
            };
            let outcome = match kind {
                LinkKind::Layer => self.reseal::<super::blobs::LayerLink>(&path, &bytes).await,
                LinkKind::Manifest => {
                    self.reseal::<super::manifests::ManifestLink>(&path, &bytes)
                        .await
                }
                LinkKind::Tag => {
                    self.reseal::<super::manifests::TagLink>(&path, &bytes)
                        .await
                }
                LinkKind::Referrer => self.reseal::<Descriptor>(&path, &bytes).await,
            };
            match outcome {
                Ok(true) => report.sealed += 1,
                Ok(false) => report.verified += 1,
                Err(StoreError::Integrity | StoreError::Corrupt { .. }) => {
                    tracing::warn!(%path, "not a link that verifies; left alone and never followed");
                    report.refused += 1;
                }
                Err(e) => return Err(e),
            }
        }
        self.manifest_cache().forget_references();
        Ok(report)
    }

    /// `Ok(true)` when an unsealed link was sealed, `Ok(false)` when it was sealed
    /// already.
    async fn reseal<T: Serialize + DeserializeOwned + LinkTarget>(
        &self,
        path: &Path,
        bytes: &[u8],
    ) -> Result<bool> {
        match self.open_link::<T>(path, bytes)? {
            Opened::Sealed(_) => Ok(false),
            Opened::Unsealed(link) => {
                if let Some(digest) = link.blob() {
                    self.stat_blob(digest).await.map_err(|e| match e {
                        StoreError::BlobUnknown => StoreError::Integrity,
                        e => e,
                    })?;
                }
                self.put_link(path, &link).await?;
                Ok(true)
            }
        }
    }
}

/// The blob a link makes readable, if it is a blob link (checked before sealing an
/// unsealed one).
pub(super) trait LinkTarget {
    fn blob(&self) -> Option<&crate::names::Digest> {
        None
    }
}

impl LinkTarget for Descriptor {}
