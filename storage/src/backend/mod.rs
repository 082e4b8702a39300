//! Object-store backends, one module per backend: opening one from a parsed storage
//! URL, and what differs between them behind one interface the store calls.
//!
//! - [`StorageUrl`]: `storage.url` parsed (`file:///<dir>`, `memory://`).
//! - [`open`]: the [`Backend`] a URL names. [`Backend::from_object_store`] wraps any
//!   other `ObjectStore` (tests: in-memory and fault-injecting stores).
//! - `local`: the local filesystem, with its own read path (page-cache reads) and the
//!   sweep of the staging files `object_store` hides from listings.
//! - `memory`: process memory.
//!
//! What a backend decides: the part size of multipart data-object writes, how data
//! objects are read (object_store ranged GETs unless the backend knows better, with its
//! own read-ahead), and what crash leftovers only it can see.
//!
//! Adding a backend (S3, say): a module `s3.rs` with `pub(super) fn open(..) ->
//! Result<Backend, OpenError>` that builds the object store and picks the part size
//! (S3 refuses parts under 5 MiB), a `StorageUrl` variant and its arm in
//! `StorageUrl::from_str` and [`open`]. Ranged GETs ([`ranged_read`]) serve reads; a
//! [`Driver`] of its own is needed only for something the generic one cannot do.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, GetResult, ObjectStore, ObjectStoreExt};

use crate::{Result, StoreError};

mod local;
mod memory;

/// Sealed bytes of a data object as they arrive. An `Err` item ends the stream.
pub(crate) type SealedStream = BoxStream<'static, Result<Bytes>>;

/// Where the object store lives, parsed from `storage.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageUrl {
    /// A directory on the local filesystem (absolute).
    File(PathBuf),
    /// Process memory: gone at exit. For tests and demonstrations.
    Memory,
}

impl FromStr for StorageUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "memory://" || s == "memory:" {
            return Ok(StorageUrl::Memory);
        }
        if let Some(path) = s.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(format!(
                    "storage url {s:?}: a file url needs an absolute path, file:///<dir>"
                ));
            }
            return Ok(StorageUrl::File(PathBuf::from(path)));
        }
        let scheme = s.split_once("://").map_or(s, |(scheme, _)| scheme);
        match scheme {
            "s3" | "az" | "gs" => Err(format!(
                "storage url {s:?}: the {scheme}:// backend is not available yet; use file:///<dir> or memory://"
            )),
            _ => Err(format!(
                "storage url {s:?}: expected file:///<dir> or memory://"
            )),
        }
    }
}

/// Why a backend could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The local storage directory could not be created.
    #[error("creating storage directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The object store refused to open.
    #[error("object storage at {url}: {source}")]
    ObjectStore {
        url: String,
        source: object_store::Error,
    },
}

/// Opens the backend `url` names.
///
/// Fails with `CreateDir` when a local directory cannot be created and `ObjectStore`
/// when the object store refuses to open.
pub fn open(url: &StorageUrl) -> Result<Backend, OpenError> {
    match url {
        StorageUrl::File(dir) => local::open(dir),
        StorageUrl::Memory => Ok(memory::open()),
    }
}

/// An opened object store and what the store needs to know about it. Cheap to clone.
#[derive(Clone)]
pub struct Backend {
    objects: Arc<dyn ObjectStore>,
    driver: Arc<dyn Driver>,
    part_size: usize,
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("objects", &self.objects.to_string())
            .field("driver", &self.driver)
            .field("part_size", &self.part_size)
            .finish()
    }
}

/// Part size when nothing is known about the object store: S3's minimum part (5 MiB),
/// which every object store accepts.
const ANY_STORE_PART_SIZE: usize = 5 * 1024 * 1024;

impl Backend {
    /// Any object store, read with ranged GETs, with parts any store accepts. For
    /// tests (in-memory or fault-injecting stores); a configured backend comes from
    /// [`open`].
    pub fn from_object_store(objects: Arc<dyn ObjectStore>) -> Backend {
        Backend::new(objects, Arc::new(Ranged), ANY_STORE_PART_SIZE)
    }

    fn new(objects: Arc<dyn ObjectStore>, driver: Arc<dyn Driver>, part_size: usize) -> Backend {
        Backend {
            objects,
            driver,
            part_size,
        }
    }

    /// The object store itself (bytes at paths).
    pub fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.objects
    }

    /// Bytes per part of a multipart data-object write.
    pub fn part_size(&self) -> usize {
        self.part_size
    }

    /// Streams bytes `range` of the data object at `path`, for a reader that consumes
    /// sealed segments of `stride` bytes. A missing data object, or one shorter than
    /// `range`, is `Integrity` (its envelope names it: it was tampered with).
    pub(crate) async fn read(
        &self,
        path: Path,
        range: Range<u64>,
        stride: u64,
    ) -> Result<SealedStream> {
        self.driver
            .read(self.objects.clone(), path, range, stride)
            .await
    }

    /// Removes what only this backend can see of writes a crash cut short, if last
    /// modified before `cutoff`.
    pub(crate) async fn remove_staging(&self, cutoff: SystemTime) -> Result<Removed> {
        self.driver.remove_staging(cutoff).await
    }
}

/// Crash leftovers a backend removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Removed {
    pub(crate) files: u64,
    pub(crate) bytes: u64,
}

/// What differs between backends, behind one interface the store calls for all.
pub(crate) trait Driver: Send + Sync + fmt::Debug {
    /// See [`Backend::read`].
    fn read(
        &self,
        objects: Arc<dyn ObjectStore>,
        path: Path,
        range: Range<u64>,
        stride: u64,
    ) -> BoxFuture<'static, Result<SealedStream>>;

    /// See [`Backend::remove_staging`]. Most backends leave nothing the object store
    /// does not list.
    fn remove_staging(&self, _cutoff: SystemTime) -> BoxFuture<'static, Result<Removed>> {
        futures::future::ready(Ok(Removed::default())).boxed()
    }
}

/// Reads with object_store ranged GETs: every backend without a read path of its own.
#[derive(Debug)]
pub(crate) struct Ranged;

impl Driver for Ranged {
    fn read(
        &self,
        objects: Arc<dyn ObjectStore>,
        path: Path,
        range: Range<u64>,
        _stride: u64,
    ) -> BoxFuture<'static, Result<SealedStream>> {
        ranged_read(objects, path, range).boxed()
    }
}

/// One ranged GET, streamed as object_store delivers it.
pub(crate) async fn ranged_read(
    objects: Arc<dyn ObjectStore>,
    path: Path,
    range: Range<u64>,
) -> Result<SealedStream> {
    let result = ranged_get(&objects, &path, range).await?;
    Ok(result.into_stream().map_err(map_read_error).boxed())
}

/// Starts a ranged GET of a data object.
pub(crate) async fn ranged_get(
    objects: &Arc<dyn ObjectStore>,
    path: &Path,
    range: Range<u64>,
) -> Result<GetResult> {
    let range_end = range.end;
    let opts = GetOptions {
        range: Some(GetRange::Bounded(range)),
        ..Default::default()
    };
    match objects.get_opts(path, opts).await {
        Ok(result) => Ok(result),
        Err(e) => {
            // A data object shorter than its envelope records (truncated behind valv's
            // back) makes some backends refuse the range itself rather than return less.
            if let Ok(meta) = objects.head(path).await {
                if meta.size < range_end {
                    return Err(StoreError::Integrity);
                }
            }
            Err(map_read_error(e))
        }
    }
}

/// A data object an envelope names is missing: it was tampered with.
pub(crate) fn map_read_error(e: object_store::Error) -> StoreError {
    match e {
        object_store::Error::NotFound { .. } => StoreError::Integrity,
        other => StoreError::Backend(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_urls() {
        assert_eq!("memory://".parse(), Ok(StorageUrl::Memory));
        assert_eq!(
            "file:///var/lib/valv".parse(),
            Ok(StorageUrl::File("/var/lib/valv".into()))
        );
        assert!("file://relative/dir".parse::<StorageUrl>().is_err());
        assert!("/just/a/path".parse::<StorageUrl>().is_err());
        assert!("s3://bucket/prefix"
            .parse::<StorageUrl>()
            .is_err_and(|e| e.contains("not available yet")));
    }
}
