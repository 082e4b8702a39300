//! Counts the requests the store makes of its object store, for `/metrics`: every
//! [`Backend`](super::Backend) wraps its `ObjectStore` in a [`Metered`] store, so every
//! backend is counted the same way and no call site has to remember to.
//!
//! Requests are counted as an S3 or Azure client sends them (as `tests/requests.rs`
//! does): a get one GET (`head` when it asks for metadata only), a put one PUT, a
//! multipart write one `put_multipart` to start it, one `part` per part and one
//! `complete` (or `abort`), a listing one `list` (one request per call: a listing long
//! enough to take several pages counts once), each deleted path one `delete`, a copy or
//! rename one `copy`.
//!
//! An error is a request that failed: the answers valv asks for and acts on (not found,
//! already exists, precondition failed, not modified) are not errors. Counting is two
//! relaxed atomic adds at most per request.
//!
//! Each request but a listing or a deletion (streams) is also a CLIENT span
//! (`object_store.get`, …) under [`TRACE_TARGET`] at TRACE, for the registry's traces:
//! a failed request marks it an error. With no trace exporter installed the span is
//! never created (a disabled callsite).

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::future::Future;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};
use tracing::Instrument as _;

/// The target of the spans of object-store requests (and of the registry's other
/// CLIENT spans): what the registry's trace exporter listens to.
pub const TRACE_TARGET: &str = "valv::trace";

/// The kinds of object-store request, as `/metrics` labels them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectOperation {
    Get,
    Head,
    Put,
    PutMultipart,
    Part,
    Complete,
    Abort,
    List,
    Delete,
    Copy,
}

impl ObjectOperation {
    /// Every kind, in the order `/metrics` lists them.
    pub const ALL: [ObjectOperation; 10] = [
        ObjectOperation::Get,
        ObjectOperation::Head,
        ObjectOperation::Put,
        ObjectOperation::PutMultipart,
        ObjectOperation::Part,
        ObjectOperation::Complete,
        ObjectOperation::Abort,
        ObjectOperation::List,
        ObjectOperation::Delete,
        ObjectOperation::Copy,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectOperation::Get => "get",
            ObjectOperation::Head => "head",
            ObjectOperation::Put => "put",
            ObjectOperation::PutMultipart => "put_multipart",
            ObjectOperation::Part => "part",
            ObjectOperation::Complete => "complete",
            ObjectOperation::Abort => "abort",
            ObjectOperation::List => "list",
            ObjectOperation::Delete => "delete",
            ObjectOperation::Copy => "copy",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The name of the request's span.
    fn span_name(self) -> &'static str {
        match self {
            ObjectOperation::Get => "object_store.get",
            ObjectOperation::Head => "object_store.head",
            ObjectOperation::Put => "object_store.put",
            ObjectOperation::PutMultipart => "object_store.put_multipart",
            ObjectOperation::Part => "object_store.part",
            ObjectOperation::Complete => "object_store.complete",
            ObjectOperation::Abort => "object_store.abort",
            ObjectOperation::List => "object_store.list",
            ObjectOperation::Delete => "object_store.delete",
            ObjectOperation::Copy => "object_store.copy",
        }
    }

    /// The span of one request of this kind (on `path`, when it has one).
    fn span(self, path: Option<&Path>) -> tracing::Span {
        tracing::trace_span!(
            target: TRACE_TARGET,
            "object_store",
            otel.name = self.span_name(),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            valv.object_store.operation = self.as_str(),
            valv.object_store.path = path.map(|p| p.as_ref()),
        )
    }
}

/// Requests and errors by [`ObjectOperation`], since the store was opened.
#[derive(Debug, Default)]
pub struct ObjectStoreMetrics {
    requests: [AtomicU64; 10],
    errors: [AtomicU64; 10],
}

impl ObjectStoreMetrics {
    pub fn requests(&self, op: ObjectOperation) -> u64 {
        self.requests[op.index()].load(Ordering::Relaxed)
    }

    pub fn errors(&self, op: ObjectOperation) -> u64 {
        self.errors[op.index()].load(Ordering::Relaxed)
    }

    fn request(&self, op: ObjectOperation, n: u64) {
        self.requests[op.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `result` as an error of `op` if it is one; passes it on.
    fn outcome<T>(
        &self,
        op: ObjectOperation,
        result: object_store::Result<T>,
    ) -> object_store::Result<T> {
        if let Err(e) = &result {
            if is_failure(e) {
                self.errors[op.index()].fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    /// Counts one request of `op` on `path`, makes `call` inside its span, and counts
    /// its outcome (a failure also marks the span).
    async fn measured<T>(
        &self,
        op: ObjectOperation,
        path: Option<&Path>,
        call: impl Future<Output = object_store::Result<T>>,
    ) -> object_store::Result<T> {
        self.request(op, 1);
        let span = op.span(path);
        let result = call.instrument(span.clone()).await;
        if result.as_ref().is_err_and(is_failure) {
            span.record("otel.status_code", "error");
        }
        self.outcome(op, result)
    }
}

/// Whether `e` is a failed request rather than an answer valv asked for.
fn is_failure(e: &object_store::Error) -> bool {
    !matches!(
        e,
        object_store::Error::NotFound { .. }
            | object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. }
            | object_store::Error::NotModified { .. }
    )
}

/// An object store that counts the requests made of it into [`ObjectStoreMetrics`].
#[derive(Debug)]
pub(crate) struct Metered {
    inner: Arc<dyn ObjectStore>,
    metrics: Arc<ObjectStoreMetrics>,
}

impl Metered {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>, metrics: Arc<ObjectStoreMetrics>) -> Metered {
        Metered { inner, metrics }
    }
}

impl fmt::Display for Metered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The store's own name: logs and errors name the object store, not the wrapper.
        self.inner.fmt(f)
    }
}

/// A multipart write whose parts, completion and abort are counted.
#[derive(Debug)]
struct MeteredUpload {
    inner: Box<dyn MultipartUpload>,
    metrics: Arc<ObjectStoreMetrics>,
}

#[async_trait]
impl MultipartUpload for MeteredUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let part = self.inner.put_part(data);
        let metrics = self.metrics.clone();
        Box::pin(async move { metrics.measured(ObjectOperation::Part, None, part).await })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let metrics = self.metrics.clone();
        metrics
            .measured(ObjectOperation::Complete, None, self.inner.complete())
            .await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        let metrics = self.metrics.clone();
        metrics
            .measured(ObjectOperation::Abort, None, self.inner.abort())
            .await
    }
}

#[async_trait]
impl ObjectStore for Metered {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let call = self.inner.put_opts(location, payload, opts);
        self.metrics
            .measured(ObjectOperation::Put, Some(location), call)
            .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let call = self.inner.put_multipart_opts(location, opts);
        let inner = self
            .metrics
            .measured(ObjectOperation::PutMultipart, Some(location), call)
            .await?;
        Ok(Box::new(MeteredUpload {
            inner,
            metrics: self.metrics.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let op = if options.head {
            ObjectOperation::Head
        } else {
            ObjectOperation::Get
        };
        let call = self.inner.get_opts(location, options);
        self.metrics.measured(op, Some(location), call).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        // The inner store may coalesce the ranges into fewer GETs; one is the floor.
        let call = self.inner.get_ranges(location, ranges);
        self.metrics
            .measured(ObjectOperation::Get, Some(location), call)
            .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let (asked, answered) = (self.metrics.clone(), self.metrics.clone());
        let locations = locations
            .inspect(move |l| {
                if l.is_ok() {
                    asked.request(ObjectOperation::Delete, 1);
                }
            })
            .boxed();
        self.inner
            .delete_stream(locations)
            .map(move |r| answered.outcome(ObjectOperation::Delete, r))
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.metrics.request(ObjectOperation::List, 1);
        let metrics = self.metrics.clone();
        self.inner
            .list(prefix)
            .map(move |r| metrics.outcome(ObjectOperation::List, r))
            .boxed()
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.metrics.request(ObjectOperation::List, 1);
        let metrics = self.metrics.clone();
        self.inner
            .list_with_offset(prefix, offset)
            .map(move |r| metrics.outcome(ObjectOperation::List, r))
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let call = self.inner.list_with_delimiter(prefix);
        self.metrics
            .measured(ObjectOperation::List, prefix, call)
            .await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let call = self.inner.copy_opts(from, to, options);
        self.metrics
            .measured(ObjectOperation::Copy, Some(to), call)
            .await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        let call = self.inner.rename_opts(from, to, options);
        self.metrics
            .measured(ObjectOperation::Copy, Some(to), call)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutMode};

    #[tokio::test]
    async fn counts_requests_and_failures_not_answers() {
        let metrics = Arc::new(ObjectStoreMetrics::default());
        let store = Metered::new(Arc::new(InMemory::new()), metrics.clone());
        let path = Path::from("a/b");
        store
            .put(&path, PutPayload::from_static(b"x"))
            .await
            .expect("put");
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let again = store
            .put_opts(&path, PutPayload::from_static(b"y"), create)
            .await;
        assert!(matches!(
            again,
            Err(object_store::Error::AlreadyExists { .. })
        ));
        store.get(&path).await.expect("get");
        assert!(store.head(&Path::from("missing")).await.is_err());
        let listed: Vec<_> = store.list(None).collect().await;
        assert_eq!(listed.len(), 1);
        let mut upload = store.put_multipart(&Path::from("m")).await.expect("start");
        upload
            .put_part(PutPayload::from_static(b"p1"))
            .await
            .expect("part");
        upload
            .put_part(PutPayload::from_static(b"p2"))
            .await
            .expect("part");
        upload.complete().await.expect("complete");
        store.delete(&path).await.expect("delete");

        let counted: Vec<(&str, u64, u64)> = ObjectOperation::ALL
            .iter()
            .map(|&op| (op.as_str(), metrics.requests(op), metrics.errors(op)))
            .collect();
        assert_eq!(
            counted,
            [
                ("get", 1, 0),
                ("head", 1, 0),
                ("put", 2, 0),
                ("put_multipart", 1, 0),
                ("part", 2, 0),
                ("complete", 1, 0),
                ("abort", 0, 0),
                ("list", 1, 0),
                ("delete", 1, 0),
                ("copy", 0, 0),
            ]
        );
    }
}
