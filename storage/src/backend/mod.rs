//! Object-store backends, one module per backend: opening one from a parsed storage
//! URL, and what differs between them behind one interface the store calls.
//!
//! - [`StorageUrl`]: `storage.url` parsed (`file:///<dir>`, `memory://`,
//!   `s3://<bucket>/<prefix>`, `az://<container>/<prefix>`).
//! - [`open`]: the [`Backend`] a URL names. [`Backend::from_object_store`] wraps any
//!   other `ObjectStore` (tests: in-memory and fault-injecting stores).
//! - `local`: the local filesystem, with its own read path (page-cache reads) and the
//!   sweep of the staging files `object_store` hides from listings.
//! - `memory`: process memory.
//! - `cloud`: S3 and Azure Blob Storage, configured by [`OpenOptions`] over the
//!   standard environment.
//! - `metered`: the request counters every backend's object store is wrapped in
//!   ([`ObjectStoreMetrics`], for `/metrics`).
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
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, GetResult, ObjectStore, ObjectStoreExt};

use crate::{Result, StoreError};

mod cloud;
mod local;
mod memory;
mod metered;

pub use metered::{ObjectOperation, ObjectStoreMetrics, TRACE_TARGET};

/// Sealed bytes of a data object as they arrive. An `Err` item ends the stream.
pub(crate) type SealedStream = BoxStream<'static, Result<Bytes>>;

/// Where the object store lives, parsed from `storage.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageUrl {
    /// A directory on the local filesystem (absolute).
    File(PathBuf),
    /// Process memory: gone at exit. For tests and demonstrations.
    Memory,
    /// An S3 bucket (AWS or S3-compatible), objects under `prefix` (no leading or
    /// trailing `/`; empty for the whole bucket).
    S3 { bucket: String, prefix: String },
    /// An Azure Blob Storage container, objects under `prefix`.
    Azure { container: String, prefix: String },
}

impl fmt::Display for StorageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageUrl::File(dir) => write!(f, "file://{}", dir.display()),
            StorageUrl::Memory => f.write_str("memory://"),
            StorageUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            StorageUrl::Azure { container, prefix } => write!(f, "az://{container}/{prefix}"),
        }
    }
}

/// `<name>[/<prefix>]` of an object-store url: the bucket or container and the prefix,
/// with empty path segments refused (they would name other objects than meant).
fn bucket_and_prefix(url: &str, rest: &str, what: &str) -> Result<(String, String), String> {
    let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid_name = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !valid_name {
        return Err(format!(
            "storage url {url:?}: {what} names are 1 to 63 lowercase letters, digits, '-' and '.'"
        ));
    }
    let prefix = prefix.trim_end_matches('/');
    if prefix
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
        && !prefix.is_empty()
    {
        return Err(format!(
            "storage url {url:?}: the prefix has an empty, '.' or '..' segment"
        ));
    }
    if url.contains(['?', '#']) {
        return Err(format!(
            "storage url {url:?}: no query or fragment; settings go in [storage.s3] or [storage.azure]"
        ));
    }
    Ok((name.to_owned(), prefix.to_owned()))
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
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = bucket_and_prefix(s, rest, "bucket")?;
            return Ok(StorageUrl::S3 { bucket, prefix });
        }
        if let Some(rest) = s.strip_prefix("az://") {
            let (container, prefix) = bucket_and_prefix(s, rest, "container")?;
            return Ok(StorageUrl::Azure { container, prefix });
        }
        let scheme = s.split_once("://").map_or(s, |(scheme, _)| scheme);
        match scheme {
            "gs" => Err(format!(
                "storage url {s:?}: the gs:// backend is not available yet; use file:///<dir>, s3://<bucket>/<prefix>, az://<container>/<prefix> or memory://"
            )),
            _ => Err(format!(
                "storage url {s:?}: expected file:///<dir>, s3://<bucket>/<prefix>, az://<container>/<prefix> or memory://"
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
    /// The object store opened but cannot serve as valv's store (see [`Backend::probe`]).
    #[error("object storage at {url}: {reason}")]
    Unusable { url: String, reason: String },
}

/// How to open an object store beyond what its URL names: the S3 and Azure clients'
/// settings. `file://` and `memory://` ignore all of it.
///
/// An `Option` left `None` leaves the client's own source in charge: object_store's
/// standard environment variable (`AWS_ENDPOINT_URL`, `AZURE_STORAGE_ACCOUNT_NAME`, ...)
/// if set, else object_store's default. A value given here wins over the variable.
/// Credentials are never here: they come from the environment or the identity chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenOptions {
    /// Bytes per part of a multipart data-object write on S3 and Azure (at least
    /// [`MIN_CLOUD_PART_SIZE`]). Local and in-memory stores keep their own small parts.
    pub part_size: usize,
    /// How the HTTP client retries and times out (S3 and Azure).
    pub retry: RetryOptions,
    pub s3: S3Options,
    pub azure: AzureOptions,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            part_size: MIN_CLOUD_PART_SIZE,
            retry: RetryOptions::default(),
            s3: S3Options::default(),
            azure: AzureOptions::default(),
        }
    }
}

/// Retries and timeouts of the object-store HTTP client. The defaults are
/// object_store's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryOptions {
    /// Retries of a failed request (5xx, connection errors, timeouts of idempotent
    /// requests), with exponential backoff; 0 = none.
    pub max_retries: usize,
    /// No retry starts later than this after a request's first attempt.
    pub retry_timeout: Duration,
    /// One attempt, from connecting until its response body has been read.
    pub request_timeout: Duration,
    /// Establishing a connection.
    pub connect_timeout: Duration,
}

impl Default for RetryOptions {
    fn default() -> Self {
        RetryOptions {
            max_retries: 10,
            retry_timeout: Duration::from_secs(180),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// `s3://` settings that are not secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    /// An S3-compatible endpoint URL (`AWS_ENDPOINT_URL`); unset = AWS for the region.
    pub endpoint: Option<String>,
    /// The region requests are signed for (`AWS_REGION`); object_store's default is
    /// `us-east-1`.
    pub region: Option<String>,
    /// Path-style addressing (`<endpoint>/<bucket>/<key>`) rather than virtual-hosted
    /// (`AWS_VIRTUAL_HOSTED_STYLE_REQUEST`, its inverse); object_store's default is
    /// path-style. Virtual-hosted with an endpoint expects the bucket in the endpoint.
    pub path_style: Option<bool>,
    /// Allow a plain-http endpoint (`AWS_ALLOW_HTTP`).
    pub allow_http: Option<bool>,
}

/// `az://` settings that are not secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AzureOptions {
    /// The storage account name (`AZURE_STORAGE_ACCOUNT_NAME`).
    pub account: Option<String>,
    /// The blob service URL (`AZURE_STORAGE_ENDPOINT`); unset =
    /// `https://<account>.blob.core.windows.net`. Not with `use_emulator`, whose
    /// address is object_store's `AZURITE_BLOB_STORAGE_URL`.
    pub endpoint: Option<String>,
    /// Azurite (`AZURE_STORAGE_USE_EMULATOR`): its account and key unless given, and
    /// plain http.
    pub use_emulator: Option<bool>,
    /// Allow a plain-http endpoint (`AZURE_ALLOW_HTTP`).
    pub allow_http: Option<bool>,
}

/// S3's smallest part but the last; Azure blocks may be as small, so it is the floor
/// for both.
pub const MIN_CLOUD_PART_SIZE: usize = 5 * 1024 * 1024;

/// Opens the backend `url` names, with `options` for an S3 or Azure store.
///
/// Fails with `CreateDir` when a local directory cannot be created, `ObjectStore`
/// when the object store refuses to open (a malformed endpoint, say) and `Unusable`
/// when `options` cannot work (parts under [`MIN_CLOUD_PART_SIZE`]).
pub fn open(url: &StorageUrl, options: &OpenOptions) -> Result<Backend, OpenError> {
    match url {
        StorageUrl::File(dir) => local::open(dir),
        StorageUrl::Memory => Ok(memory::open()),
        StorageUrl::S3 { bucket, prefix } => cloud::open_s3(bucket, prefix, options),
        StorageUrl::Azure { container, prefix } => cloud::open_azure(container, prefix, options),
    }
}

/// An opened object store and what the store needs to know about it. Cheap to clone.
#[derive(Clone)]
pub struct Backend {
    /// The object store, counted ([`metered`]): every request the store makes.
    objects: Arc<dyn ObjectStore>,
    metrics: Arc<ObjectStoreMetrics>,
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
const ANY_STORE_PART_SIZE: usize = MIN_CLOUD_PART_SIZE;

impl Backend {
    /// Any object store, read with ranged GETs, with parts any store accepts. For
    /// tests (in-memory or fault-injecting stores); a configured backend comes from
    /// [`open`].
    pub fn from_object_store(objects: Arc<dyn ObjectStore>) -> Backend {
        Backend::new(objects, Arc::new(Ranged), ANY_STORE_PART_SIZE)
    }

    fn new(objects: Arc<dyn ObjectStore>, driver: Arc<dyn Driver>, part_size: usize) -> Backend {
        let metrics = Arc::new(ObjectStoreMetrics::default());
        Backend {
            objects: Arc::new(metered::Metered::new(objects, metrics.clone())),
            metrics,
            driver,
            part_size,
        }
    }

    /// The requests made of the object store through this backend (and its clones).
    pub fn metrics(&self) -> &Arc<ObjectStoreMetrics> {
        &self.metrics
    }

    /// Proves the object store usable before anything is stored: an object can be
    /// written, read back and deleted, and a create-only put of an existing object is
    /// refused. That last one is valv's commit point (an envelope, a link, a lease is
    /// created only if absent); a store that ignores the condition would let two
    /// uploads both "win", so it is refused here rather than trusted.
    ///
    /// Fails with `Unusable`, naming what failed: a bucket that does not exist, wrong
    /// credentials, an endpoint that does not answer, no conditional puts.
    pub async fn probe(&self, url: &StorageUrl) -> Result<(), OpenError> {
        use object_store::{PutMode, PutOptions, PutPayload};
        let unusable = |reason: String| OpenError::Unusable {
            url: url.to_string(),
            reason,
        };
        let nonce: [u8; 8] = rand::random();
        let path = Path::from(format!(
            "_valv/probe/{}",
            nonce.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ));
        let create = || PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let body = PutPayload::from_static(b"valv probe: safe to delete");
        self.objects
            .put_opts(&path, body.clone(), create())
            .await
            .map_err(|e| unusable(format!("writing a first object failed: {e}")))?;
        let second = self.objects.put_opts(&path, body, create()).await;
        let read = self.objects.get(&path).await;
        let deleted = self.objects.delete(&path).await;
        match second {
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Ok(_) => {
                return Err(unusable(
                    "it accepted a create-only put (If-None-Match: *) of an object that exists; \
                     valv commits with create-only puts and cannot run on a store without them"
                        .into(),
                ))
            }
            Err(e) => {
                return Err(unusable(format!(
                    "a create-only put of an existing object did not answer \"already exists\": {e}"
                )))
            }
        }
        read.map_err(|e| unusable(format!("reading back the object it wrote failed: {e}")))?;
        deleted.map_err(|e| unusable(format!("deleting the object it wrote failed: {e}")))?;
        Ok(())
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
        // A store may answer a range past the end with what there is.
        Ok(result) if result.range.end < range_end => Err(StoreError::Integrity),
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
        assert_eq!(
            "s3://bucket/team/valv/".parse(),
            Ok(StorageUrl::S3 {
                bucket: "bucket".into(),
                prefix: "team/valv".into()
            })
        );
        assert_eq!(
            "s3://bucket".parse(),
            Ok(StorageUrl::S3 {
                bucket: "bucket".into(),
                prefix: String::new()
            })
        );
        assert_eq!(
            "az://registry/valv".parse(),
            Ok(StorageUrl::Azure {
                container: "registry".into(),
                prefix: "valv".into()
            })
        );
        for bad in [
            "s3://",
            "s3:///prefix",
            "s3://Bucket/x",
            "s3://b/a//b",
            "s3://b/../x",
            "s3://b/x?region=eu",
            "az://c_d/x",
        ] {
            assert!(bad.parse::<StorageUrl>().is_err(), "{bad}");
        }
        assert!("gs://bucket/prefix"
            .parse::<StorageUrl>()
            .is_err_and(|e| e.contains("not available yet")));
    }
}
