//! Issue 11: a blob that has been acknowledged is never lost to a repeated commit, a
//! commit re-sent after a crash, a cancel or append after the commit, or a broken blob
//! at the same digest; what crashes leave behind is swept. Each test runs on memory and
//! on the local filesystem.

mod common;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use common::*;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use storage::{Digest, RepositoryName, Store, StoreError};

fn repo(s: &str) -> RepositoryName {
    s.parse().expect("repository name")
}

fn backends() -> Vec<(Backend, Arc<dyn ObjectStore>)> {
    vec![Backend::memory(), Backend::local()]
}

/// Sizes around the 64 KiB segment boundaries, and above 1 MiB.
const SIZES: [usize; 7] = [0, 1, 65_535, 65_536, 65_537, 3 * 65_536, 1_300_000];

/// Opens a session and appends all of `data` but nothing else: what a client has done
/// before its commit PUT.
async fn staged(store: &Store, r: &RepositoryName, data: &[u8]) -> storage::UploadId {
    let s = store.create_upload(r).await.expect("create upload");
    if !data.is_empty() {
        let half = data.len() / 2;
        store
            .append_upload(r, &s.id, Some(0), one(&data[..half]))
            .await
            .expect("append");
        store
            .append_upload(r, &s.id, Some(half as u64), one(&data[half..]))
            .await
            .expect("append");
    }
    s.id
}

/// The objects under `blobs/`, `data/` and `uploads/`.
async fn content_objects(
    objects: &Arc<dyn ObjectStore>,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    (
        objects_under(objects, "blobs/").await,
        objects_under(objects, "data/").await,
        objects_under(objects, "uploads/").await,
    )
}

/// Asserts the store holds exactly the blob `digest` once swept: its envelope, the
/// data objects it names and nothing else, and no upload session. Before the sweep
/// every object the envelope names is there; what a crashed request wrote may be
/// too (a commit does not look for it: the sweep removes it).
async fn assert_exactly_one_blob(
    objects: &Arc<dyn ObjectStore>,
    store: &Store,
    digest: &Digest,
    case: &str,
) {
    let (envelopes, data, _) = content_objects(objects).await;
    assert_eq!(envelopes.len(), 1, "{case}: one envelope: {envelopes:?}");
    assert!(envelopes[0].contains(digest.hex()), "{case}");
    let env: serde_json::Value =
        serde_json::from_slice(&storage_bytes(objects, &envelopes[0]).await).expect("json");
    let mut named: Vec<String> = env["parts"]
        .as_array()
        .expect("parts")
        .iter()
        .map(|p| p["object"].as_str().expect("object").to_owned())
        .collect();
    named.sort();
    let missing: Vec<&String> = named.iter().filter(|n| !data.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "{case}: the envelope's data objects are there, missing {missing:?}"
    );
    store.sweep(Duration::ZERO).await.expect("sweep");
    let (envelopes_after, data_after, sessions) = content_objects(objects).await;
    assert_eq!(
        (envelopes_after, data_after),
        (envelopes, named),
        "{case}: the sweep kept the blob and nothing else"
    );
    assert!(
        sessions.is_empty(),
        "{case}: sessions left after the sweep: {sessions:?}"
    );
}

async fn storage_bytes(objects: &Arc<dyn ObjectStore>, path: &str) -> Vec<u8> {
    use object_store::ObjectStoreExt as _;
    objects
        .get(&Path::from(path))
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes")
        .to_vec()
}

/// Acceptance 1 at the storage level: 8 identical commits of one session at once, for
/// every size, each answer Ok or UploadUnknown, the blob byte-identical, one envelope.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_of_one_session_keep_the_blob() {
    for (_guard, objects) in backends() {
        let key = key_fixture();
        let store = open(&objects, &key).await;
        let r = repo("commit/race");
        for (round, size) in SIZES.iter().enumerate() {
            let data = Bytes::from(pseudo_random(round as u64 + 1, *size));
            let digest = Digest::sha256_of(&data);
            let id = staged(&store, &r, &data).await;
            let mut tasks = Vec::new();
            for _ in 0..8 {
                let (store, r, id, digest) = (store.clone(), r.clone(), id.clone(), digest.clone());
                tasks.push(tokio::spawn(async move {
                    store.finish_upload(&r, &id, &digest, None).await
                }));
            }
            let mut created = 0;
            for t in tasks {
                match t.await.expect("join") {
                    Ok(info) => {
                        assert_eq!(info.digest, digest);
                        assert_eq!(info.size, *size as u64);
                        created += 1;
                    }
                    Err(StoreError::UploadUnknown) => {}
                    Err(e) => panic!("size {size}: unexpected {e:?}"),
                }
            }
            assert!(created >= 1, "size {size}: some commit succeeded");
            assert_eq!(
                read_all(&store, &digest).await,
                data.to_vec(),
                "size {size}"
            );
            // The session is over for everything but a repeat of the same commit.
            assert_upload_unknown(&store, &r, &id).await;
            match store.finish_upload(&r, &id, &digest, None).await {
                Ok(info) => assert_eq!(info.digest, digest),
                Err(e) => panic!("size {size}: a repeated commit: {e:?}"),
            }
            assert_eq!(
                read_all(&store, &digest).await,
                data.to_vec(),
                "size {size} after all that"
            );
            assert_exactly_one_blob(&objects, &store, &digest, &format!("size {size}")).await;
            store.delete_blob(&digest).await.expect("delete");
        }
    }
}

/// Sessions of other uploads committing the same digest at once as repeated commits of
/// one session: one envelope, and no upload's data but the winner's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeated_and_rival_commits_at_once() {
    for (_guard, objects) in backends() {
        let key = key_fixture();
        let store = open(&objects, &key).await;
        let r = repo("commit/rivals");
        let data = Bytes::from(pseudo_random(77, 200_000));
        let digest = Digest::sha256_of(&data);
        let ids = [
            staged(&store, &r, &data).await,
            staged(&store, &r, &data).await,
        ];
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (store, r, id, digest) =
                (store.clone(), r.clone(), ids[i % 2].clone(), digest.clone());
            tasks.push(tokio::spawn(async move {
                store.finish_upload(&r, &id, &digest, None).await
            }));
        }
        for t in tasks {
            match t.await.expect("join") {
                Ok(_) | Err(StoreError::UploadUnknown) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!(read_all(&store, &digest).await, data.to_vec());
        assert_exactly_one_blob(&objects, &store, &digest, "rivals").await;
    }
}

// ---- crash points -----------------------------------------------------------------

/// An object store that "dies" after a set number of writes: every call after that
/// fails, as if the process had been killed there. A fresh `Store` over the inner
/// store is the restarted process.
#[derive(Debug)]
struct DiesAfter {
    inner: Arc<dyn ObjectStore>,
    /// Writes (puts, multipart starts, deletes) still allowed; below zero: dead.
    budget: AtomicI64,
}

impl DiesAfter {
    fn alive(&self) -> object_store::Result<()> {
        if self.budget.load(Ordering::SeqCst) < 0 {
            Err(dead())
        } else {
            Ok(())
        }
    }
    fn write(&self) -> object_store::Result<()> {
        if self.budget.fetch_sub(1, Ordering::SeqCst) <= 0 {
            Err(dead())
        } else {
            Ok(())
        }
    }
}

fn dead() -> object_store::Error {
    object_store::Error::Generic {
        store: "DiesAfter",
        source: "the process was killed here".into(),
    }
}

impl std::fmt::Display for DiesAfter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DiesAfter({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for DiesAfter {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.write()?;
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.write()?;
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.alive()?;
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        if let Err(e) = self.write() {
            return futures::stream::once(async move { Err(e) }).boxed();
        }
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if let Err(e) = self.alive() {
            return futures::stream::once(async move { Err(e) }).boxed();
        }
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.alive()?;
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.write()?;
        self.inner.copy_opts(from, to, options).await
    }
    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.write()?;
        self.inner.rename_opts(from, to, options).await
    }
}

/// Acceptance 2 at the storage level: the process dies after every possible number of
/// writes inside the commit PUT (the last chunk's append, the final segment, the
/// Committing state, the envelope, the link, the session's tidy-up), is restarted, and
/// the client re-sends the same PUT, as clients do after a lost answer. The blob reads
/// back byte-identical every time, and after the sweep nothing but the blob remains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_resent_after_a_crash_at_every_write() {
    for (_guard, objects) in backends() {
        let key = key_fixture();
        let r = repo("commit/crash");
        let mut tried = 0;
        for budget in 0.. {
            let store = open(&objects, &key).await;
            let data = Bytes::from(pseudo_random(1000 + budget as u64, 150_000));
            let digest = Digest::sha256_of(&data);
            let s = store.create_upload(&r).await.expect("create");
            store
                .append_upload(&r, &s.id, Some(0), one(&data[..70_000]))
                .await
                .expect("append");

            // The commit PUT carries the last chunk; the process dies inside it.
            let dying: Arc<dyn ObjectStore> = Arc::new(DiesAfter {
                inner: objects.clone(),
                budget: AtomicI64::new(budget),
            });
            let commit = |store: Store| {
                let (r, id, digest, last) = (
                    r.clone(),
                    s.id.clone(),
                    digest.clone(),
                    data.slice(70_000..),
                );
                async move {
                    store
                        .finish_upload(&r, &id, &digest, Some((Some(70_000), one(&last))))
                        .await
                }
            };
            let first = commit(open(&dying, &key).await).await;
            tried += 1;

            // Restart; the client re-sends the PUT with its body.
            let restarted = open(&objects, &key).await;
            let again = commit(restarted.clone()).await;
            match (&first, &again) {
                (_, Ok(info)) => assert_eq!(info.digest, digest, "budget {budget}"),
                (first, Err(e)) => panic!("budget {budget}: first {first:?}, re-sent {e:?}"),
            }
            assert_eq!(
                read_all(&restarted, &digest).await,
                data.to_vec(),
                "budget {budget}"
            );
            assert!(
                restarted.stat_repo_blob(&r, &digest).await.is_ok(),
                "budget {budget}: linked"
            );
            assert_exactly_one_blob(&objects, &restarted, &digest, &format!("budget {budget}"))
                .await;
            restarted.unlink_blob(&r, &digest).await.expect("unlink");
            restarted.delete_blob(&digest).await.expect("delete");
            if first.is_ok() {
                // The whole commit fit in the budget: every crash point was tried.
                break;
            }
        }
        assert!(
            tried >= 6,
            "the commit has at least six writes, tried {tried}"
        );
    }
}

// ---- broken blobs ------------------------------------------------------------------

/// Acceptance 3 at the storage level: a blob whose data objects were deleted behind
/// the store's back is unknown to stat (a client then uploads it), refused before any
/// byte by a read, and restored by a plain re-push, monolithic or chunked; a manifest
/// likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_blob_is_unknown_and_repaired_by_a_push() {
    for (_guard, objects) in backends() {
        let key = key_fixture();
        let store = open(&objects, &key).await;
        let r = repo("commit/repair");
        for (i, chunked) in [(0u64, false), (1, true)] {
            let data = Bytes::from(pseudo_random(500 + i, 300_000));
            let digest = Digest::sha256_of(&data);
            store.put_blob(&r, &digest, one(&data)).await.expect("push");
            for path in objects_under(&objects, "data/").await {
                use object_store::ObjectStoreExt as _;
                objects
                    .delete(&Path::from(path))
                    .await
                    .expect("delete behind valv's back");
            }
            assert!(matches!(
                store.stat_blob(&digest).await,
                Err(StoreError::BlobUnknown)
            ));
            assert!(matches!(
                store.stat_repo_blob(&r, &digest).await,
                Err(StoreError::BlobUnknown)
            ));
            assert!(matches!(
                store.read_blob(&digest, None).await,
                Err(StoreError::Integrity)
            ));
            assert!(matches!(
                store.link_blob(&repo("commit/other"), &digest).await,
                Err(StoreError::BlobUnknown)
            ));
            if chunked {
                let id = staged(&store, &r, &data).await;
                store
                    .finish_upload(&r, &id, &digest, None)
                    .await
                    .expect("re-push");
            } else {
                store
                    .put_blob(&r, &digest, one(&data))
                    .await
                    .expect("re-push");
            }
            assert_eq!(read_all(&store, &digest).await, data.to_vec(), "repaired");
            assert_exactly_one_blob(&objects, &store, &digest, "repaired").await;
            store.delete_blob(&digest).await.expect("delete");
        }

        // A damaged envelope (not JSON) is replaced the same way.
        let data = Bytes::from(pseudo_random(600, 70_000));
        let digest = Digest::sha256_of(&data);
        store.put_blob(&r, &digest, one(&data)).await.expect("push");
        let envelope = objects_under(&objects, "blobs/").await.remove(0);
        {
            use object_store::ObjectStoreExt as _;
            objects
                .put(
                    &Path::from(envelope),
                    PutPayload::from_static(b"{not an envelope"),
                )
                .await
                .expect("damage the envelope");
        }
        assert!(matches!(
            store.stat_blob(&digest).await,
            Err(StoreError::BlobUnknown)
        ));
        store
            .put_blob(&r, &digest, one(&data))
            .await
            .expect("re-push");
        assert_eq!(read_all(&store, &digest).await, data.to_vec());
        store.delete_blob(&digest).await.expect("delete");
        store.sweep(Duration::ZERO).await.expect("sweep");
        assert!(
            objects_under(&objects, "data/").await.is_empty(),
            "the damaged blob's data was swept"
        );

        // A manifest whose data object vanished is stored again by the next PUT.
        let bytes = Bytes::from_static(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#);
        let mdigest = Digest::sha256_of(&bytes);
        let manifest = storage::NewManifest {
            bytes: bytes.clone(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: mdigest.clone(),
            subject: None,
            artifact_type: None,
            annotations: None,
        };
        store
            .put_manifest(&r, manifest.clone(), None)
            .await
            .expect("put manifest");
        for path in objects_under(&objects, "data/").await {
            use object_store::ObjectStoreExt as _;
            objects.delete(&Path::from(path)).await.expect("delete");
        }
        let fresh = open(&objects, &key).await; // no cached plaintext
        let reference = storage::Reference::Digest(mdigest.clone());
        assert!(fresh.get_manifest(&r, &reference).await.is_err());
        fresh
            .put_manifest(&r, manifest, None)
            .await
            .expect("put again");
        assert_eq!(
            fresh.get_manifest(&r, &reference).await.expect("get").bytes,
            bytes
        );
    }
}

/// An envelope edited to name another blob's data objects: deleting it must not delete
/// that data (a path read from an envelope that does not authenticate is never deleted).
#[tokio::test]
async fn deleting_a_forged_envelope_spares_the_data_it_names() {
    let (_guard, objects) = Backend::memory();
    let key = key_fixture();
    let store = open(&objects, &key).await;
    let r = repo("commit/forged");
    let a = Bytes::from(pseudo_random(1, 100_000));
    let b = Bytes::from(pseudo_random(2, 100_000));
    let (da, db) = (Digest::sha256_of(&a), Digest::sha256_of(&b));
    store.put_blob(&r, &da, one(&a)).await.expect("a");
    store.put_blob(&r, &db, one(&b)).await.expect("b");
    let paths = objects_under(&objects, "blobs/").await;
    let pa = paths
        .iter()
        .find(|p| p.contains(da.hex()))
        .expect("a's envelope")
        .clone();
    let pb = paths
        .iter()
        .find(|p| p.contains(db.hex()))
        .expect("b's envelope")
        .clone();
    let mut forged: serde_json::Value =
        serde_json::from_slice(&storage_bytes(&objects, &pa).await).expect("json");
    let eb: serde_json::Value =
        serde_json::from_slice(&storage_bytes(&objects, &pb).await).expect("json");
    forged["parts"] = eb["parts"].clone();
    {
        use object_store::ObjectStoreExt as _;
        objects
            .put(
                &Path::from(pa),
                PutPayload::from(serde_json::to_vec(&forged).expect("json")),
            )
            .await
            .expect("forge");
    }
    store
        .delete_blob(&da)
        .await
        .expect("delete the forged blob");
    assert_eq!(read_all(&store, &db).await, b.to_vec(), "b's data survived");
}

// ---- the sweep ----------------------------------------------------------------------

/// Data objects nobody names and local staging files are removed, but only once older
/// than the grace period; live sessions and blobs are never touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_removes_only_what_nothing_names() {
    // The local backend as a `file://` URL opens it: it knows its staging files.
    let (dir, backend) = url_backend("file://");
    let dir = dir.expect("a local directory");
    let objects = backend.objects().clone();
    let key = key_fixture();
    let store = open(&backend, &key).await;
    let r = repo("commit/sweep");
    let data = Bytes::from(pseudo_random(9, 200_000));
    let digest = Digest::sha256_of(&data);
    store.put_blob(&r, &digest, one(&data)).await.expect("push");
    let live = store.create_upload(&r).await.expect("session");
    store
        .append_upload(&r, &live.id, Some(0), one(&data[..100_000]))
        .await
        .expect("append");
    let live_dir = format!("uploads/{}/", live.id);
    let kept = (
        objects_under(&objects, "data/").await,
        objects_under(&objects, &live_dir).await,
    );

    // Garbage as a crash leaves it: an orphan data directory, and a staging file.
    {
        use object_store::ObjectStoreExt as _;
        objects
            .put(
                &Path::from("data/00112233445566778899aabbccddeeff/000000-0011223344556677"),
                PutPayload::from_static(b"orphan"),
            )
            .await
            .expect("orphan");
    }
    let staging = dir
        .path()
        .join("data/00112233445566778899aabbccddeeff/000001-8899aabbccddeeff#1");
    std::fs::write(&staging, b"half written").expect("staging file");

    // Within the grace period nothing goes.
    let report = store.sweep(Duration::from_secs(3600)).await.expect("sweep");
    assert_eq!(
        (report.data_objects_removed, report.staging_files_removed),
        (0, 0),
        "{report:?}"
    );
    assert!(staging.exists());

    let report = store.sweep(Duration::ZERO).await.expect("sweep");
    assert_eq!(report.data_objects_removed, 1, "{report:?}");
    assert_eq!(report.staging_files_removed, 1, "{report:?}");
    assert!(!staging.exists());
    assert_eq!(
        (
            objects_under(&objects, "data/").await,
            objects_under(&objects, "uploads/").await
        ),
        kept,
        "the blob and the live session are untouched; the pushed blob's ended session is gone"
    );
    assert_eq!(read_all(&store, &digest).await, data.to_vec());
    let done = store
        .finish_upload(&r, &live.id, &Digest::sha256_of(&data[..100_000]), None)
        .await
        .expect("the live session still commits");
    assert_eq!(
        read_all(&store, &done.digest).await,
        data[..100_000].to_vec()
    );
}
