//! The start-up probe of an object store (`Backend::probe`): a store that answers and
//! refuses a create-only put of an existing object passes and keeps nothing of the
//! probe; one that ignores the condition is refused, naming why.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use storage::backend::{Backend, OpenError, StorageUrl};

use common::url_backend;

/// An object store that takes every put as an overwrite: what a store without
/// conditional puts does with `If-None-Match: *`.
#[derive(Debug)]
struct IgnoresCreate(Arc<dyn ObjectStore>);

impl std::fmt::Display for IgnoresCreate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IgnoresCreate({})", self.0)
    }
}

#[async_trait]
impl ObjectStore for IgnoresCreate {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        mut opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        opts.mode = PutMode::Overwrite;
        self.0.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.0.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.0.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.0.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.0.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.0.copy_opts(from, to, options).await
    }
    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.0.rename_opts(from, to, options).await
    }
}

async fn all_objects(objects: &Arc<dyn ObjectStore>) -> Vec<ObjectMeta> {
    objects.list(None).try_collect().await.expect("list")
}

#[tokio::test]
async fn stores_with_create_only_puts_pass_and_keep_nothing() {
    for url in ["memory://", "file://"] {
        let (_dir, backend) = url_backend(url);
        backend
            .probe(&StorageUrl::Memory)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(all_objects(backend.objects()).await.is_empty(), "{url}");
    }
}

#[tokio::test]
async fn a_store_that_ignores_create_only_puts_is_refused() {
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let backend = Backend::from_object_store(Arc::new(IgnoresCreate(inner.clone())));
    let url: StorageUrl = "s3://no-conditions/valv".parse().expect("url");
    match backend.probe(&url).await {
        Err(e @ OpenError::Unusable { .. }) => {
            let message = e.to_string();
            assert!(message.contains("s3://no-conditions/valv"), "{message}");
            assert!(message.contains("create-only put"), "{message}");
        }
        other => panic!("expected Unusable, got {other:?}"),
    }
    assert!(
        all_objects(&inner).await.is_empty(),
        "the probe object is deleted"
    );
}
