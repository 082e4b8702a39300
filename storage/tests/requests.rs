//! Issue 14: what each registry operation costs in object-store requests, counted by a
//! wrapper around the object store (on S3 and Azure every request is latency and
//! money). The counts are exact on the in-memory store, so a change that adds a
//! request fails here and has to say why; docs/PERFORMANCE.md has the same table.
//!
//! How requests are counted, as an S3 or Azure client would send them: a get (whole
//! or ranged) is one GET, a head one HEAD, a put one PUT, a listing one LIST (one page:
//! every listing here fits in one), each deleted path one DELETE, and a multipart write
//! one POST to start it, one PUT per part and one POST to complete it.

mod common;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use common::*;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};
use storage::{Digest, NewManifest, Reference, RepositoryName, Store, StoreConfig, Tag};

/// Requests by kind (`GET`, `HEAD`, `PUT`, `POST`, `LIST`, `DELETE`, `COPY`).
type Counts = Arc<Mutex<BTreeMap<&'static str, u64>>>;

fn count(counts: &Counts, kind: &'static str, n: u64) {
    *counts.lock().expect("counts lock").entry(kind).or_default() += n;
}

/// An object store that counts the requests made of it.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn ObjectStore>,
    counts: Counts,
    parts: Arc<Gauge>,
}

impl fmt::Display for Counting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

/// Part uploads running now, and the most there ever were at once.
#[derive(Debug, Default)]
struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

/// A multipart write that counts its parts and its completion, and gauges how many
/// part uploads run at once. Each part takes 20 ms, an object store's latency (not a
/// wait for anything: so that part uploads outlast the sealing of the next part, as
/// they do on S3).
///
/// Like S3, it refuses to complete an upload whose parts but the last are under
/// 5 MiB (`EntityTooSmall`), which the in-memory store would accept.
#[derive(Debug)]
struct CountingUpload {
    inner: Box<dyn MultipartUpload>,
    counts: Counts,
    parts: Arc<Gauge>,
    sizes: Vec<usize>,
}

/// S3's smallest part but the last.
const S3_MIN_PART: usize = 5 * 1024 * 1024;

#[async_trait]
impl MultipartUpload for CountingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        count(&self.counts, "PUT", 1);
        self.sizes.push(data.content_length());
        let part = self.inner.put_part(data);
        let gauge = self.parts.clone();
        let now = gauge.now.fetch_add(1, Ordering::SeqCst) + 1;
        gauge.peak.fetch_max(now, Ordering::SeqCst);
        Box::pin(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let stored = part.await;
            gauge.now.fetch_sub(1, Ordering::SeqCst);
            stored
        })
    }
    async fn complete(&mut self) -> object_store::Result<PutResult> {
        count(&self.counts, "POST", 1);
        let (_last, others) = self.sizes.split_last().unwrap_or((&0, &[]));
        if let Some(small) = others.iter().find(|&&n| n < S3_MIN_PART) {
            return Err(object_store::Error::Generic {
                store: "Counting",
                source: format!("EntityTooSmall: a part of {small} bytes is not the last").into(),
            });
        }
        self.inner.complete().await
    }
    async fn abort(&mut self) -> object_store::Result<()> {
        count(&self.counts, "DELETE", 1);
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for Counting {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        count(&self.counts, "PUT", 1);
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        count(&self.counts, "POST", 1);
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(CountingUpload {
            inner,
            counts: self.counts.clone(),
            parts: self.parts.clone(),
            sizes: Vec::new(),
        }))
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        count(&self.counts, if options.head { "HEAD" } else { "GET" }, 1);
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let counts = self.counts.clone();
        self.inner.delete_stream(
            locations
                .inspect(move |_| count(&counts, "DELETE", 1))
                .boxed(),
        )
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        count(&self.counts, "LIST", 1);
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        count(&self.counts, "LIST", 1);
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        count(&self.counts, "COPY", 1);
        self.inner.copy_opts(from, to, options).await
    }
    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        count(&self.counts, "COPY", 1);
        self.inner.rename_opts(from, to, options).await
    }
}

/// One operation's name, the requests it made and the requests it should make.
type Row = (
    &'static str,
    BTreeMap<&'static str, u64>,
    BTreeMap<&'static str, u64>,
);

/// Two stores over one counting in-memory object store (two nodes: the second has
/// nothing cached of what the first wrote), and the counter.
async fn counted() -> (Store, Store, Counts, KeyFixture) {
    let counts: Counts = Arc::default();
    let objects: Arc<dyn ObjectStore> = Arc::new(Counting {
        inner: Arc::new(InMemory::new()),
        counts: counts.clone(),
        parts: Arc::default(),
    });
    let key = key_fixture();
    let store = open(&objects, &key).await;
    let other = open(&objects, &key).await;
    (store, other, counts, key)
}

/// The requests `op` makes, by kind, with their total under `"total"`.
async fn cost<F: std::future::Future<Output = ()>>(
    counts: &Counts,
    op: F,
) -> BTreeMap<&'static str, u64> {
    counts.lock().expect("counts lock").clear();
    op.await;
    let mut c = counts.lock().expect("counts lock").clone();
    let total = c.values().sum();
    c.insert("total", total);
    c
}

fn repo(s: &str) -> RepositoryName {
    s.parse().expect("repository name")
}

const MIB: usize = 1024 * 1024;

/// Expected counts as `[("GET", 1), ...]`, with the total added.
fn expect(kinds: &[(&'static str, u64)]) -> BTreeMap<&'static str, u64> {
    let mut c: BTreeMap<_, _> = kinds.iter().copied().collect();
    let total = c.values().sum();
    c.insert("total", total);
    c
}

#[tokio::test]
async fn what_each_operation_costs_in_requests() {
    let (store, other, counts, _key) = counted().await;
    let r = repo("team/app");
    // A first blob makes the repository known (a catalog entry); the costs below are
    // for a repository that already has content, the common case.
    let first = pseudo_random(1, 1000);
    store
        .put_blob(&r, &Digest::sha256_of(&first), one(&first))
        .await
        .expect("first blob");

    let mut table: Vec<Row> = Vec::new();

    // Monolithic push (POST ?digest= with the body) of a small blob and of 12 MiB.
    let small = pseudo_random(2, 1000);
    let small_digest = Digest::sha256_of(&small);
    let c = cost(&counts, async {
        store
            .put_blob(&r, &small_digest, one(&small))
            .await
            .expect("small blob");
    })
    .await;
    table.push((
        "monolithic push, 1 kB",
        c,
        expect(&[("GET", 1), ("PUT", 3)]),
    ));

    let big = pseudo_random(3, 12 * MIB);
    let big_digest = Digest::sha256_of(&big);
    let c = cost(&counts, async {
        store
            .put_blob(&r, &big_digest, one(&big))
            .await
            .expect("big blob");
    })
    .await;
    // 12 MiB sealed is three 5 MiB parts (the last one short).
    table.push((
        "monolithic push, 12 MiB",
        c,
        expect(&[("GET", 1), ("POST", 2), ("PUT", 5)]),
    ));

    // Single-PUT upload: POST opens the session, PUT ?digest= carries the body.
    let single = pseudo_random(41, 12 * MIB);
    let single_digest = Digest::sha256_of(&single);
    let c = cost(&counts, async {
        let s = store.create_upload(&r).await.expect("create");
        store
            .finish_upload(&r, &s.id, &single_digest, Some((Some(0), one(&single))))
            .await
            .expect("single put");
    })
    .await;
    table.push((
        "POST + single PUT, 12 MiB",
        c,
        expect(&[
            ("DELETE", 1),
            ("GET", 2),
            ("LIST", 1),
            ("POST", 2),
            ("PUT", 7),
        ]),
    ));

    // Chunked: POST, two 6 MiB PATCHes, PUT ?digest= without a body (docker's way).
    let chunked = pseudo_random(52, 12 * MIB);
    let chunked_digest = Digest::sha256_of(&chunked);
    let c = cost(&counts, async {
        let s = store.create_upload(&r).await.expect("create");
        for half in chunked.chunks(6 * MIB) {
            store
                .append_upload(&r, &s.id, None, one(half))
                .await
                .expect("patch");
        }
        store
            .finish_upload(&r, &s.id, &chunked_digest, None)
            .await
            .expect("commit");
    })
    .await;
    table.push((
        "POST + 2 PATCH + PUT, 12 MiB",
        c,
        expect(&[
            ("DELETE", 3),
            ("GET", 4),
            ("LIST", 3),
            ("POST", 4),
            ("PUT", 11),
        ]),
    ));

    // From the other node: a blob HEAD (what a client asks before pushing it), and a
    // pull (GET) of the whole blob. Each reads the repository's sealed link (a GET: the
    // seal is verified, docs/FORMAT.md §11) before the envelope.
    let c = cost(&counts, async {
        other.stat_repo_blob(&r, &big_digest).await.expect("head");
    })
    .await;
    table.push(("blob HEAD", c, expect(&[("GET", 2), ("HEAD", 1)])));
    let c = cost(&counts, async {
        let read = other
            .read_repo_blob(&r, &big_digest, None)
            .await
            .expect("get");
        let (bytes, err) = drain(read.body).await;
        assert!(err.is_none() && bytes == big);
    })
    .await;
    table.push(("pull (GET), 12 MiB monolithic", c, expect(&[("GET", 3)])));
    let c = cost(&counts, async {
        let read = other
            .read_repo_blob(&r, &chunked_digest, None)
            .await
            .expect("get");
        let (bytes, err) = drain(read.body).await;
        assert!(err.is_none() && bytes == chunked);
    })
    .await;
    table.push((
        "pull (GET), 12 MiB chunked",
        c,
        expect(&[("GET", 5), ("HEAD", 2)]),
    ));

    // A manifest by tag, and the tags list.
    let manifest = Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{small_digest}","size":1000}},"layers":[]}}"#
    ));
    let manifest_digest = Digest::sha256_of(&manifest);
    let tag: Tag = "v1".parse().expect("tag");
    let c = cost(&counts, async {
        store
            .put_manifest(
                &r,
                NewManifest {
                    bytes: manifest.clone(),
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    digest: manifest_digest.clone(),
                    subject: None,
                    artifact_type: None,
                    annotations: None,
                },
                Some(&tag),
            )
            .await
            .expect("put manifest");
    })
    .await;
    table.push(("manifest PUT by tag", c, expect(&[("GET", 1), ("PUT", 4)])));

    // Reads from the other node, which has nothing cached.
    let c = cost(&counts, async {
        let got = other
            .get_manifest(&r, &Reference::Tag(tag.clone()))
            .await
            .expect("get manifest");
        assert_eq!(got.bytes, manifest);
    })
    .await;
    table.push(("manifest GET by tag", c, expect(&[("GET", 4)])));

    let c = cost(&counts, async {
        let tags = other.list_tags(&r, None, None).await.expect("tags");
        assert_eq!(tags.items, vec![tag.clone()]);
    })
    .await;
    table.push(("tags list", c, expect(&[("HEAD", 1), ("LIST", 1)])));

    // The table, for docs/PERFORMANCE.md; then every row against what it should be.
    eprintln!("| operation | requests | by kind |\n|---|---|---|");
    for (op, got, _) in &table {
        let kinds: Vec<String> = got
            .iter()
            .filter(|(k, _)| **k != "total")
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        eprintln!("| {op} | {} | {} |", got["total"], kinds.join(", "));
    }
    let wrong: Vec<String> = table
        .iter()
        .filter(|(_, got, want)| got != want)
        .map(|(op, got, want)| format!("{op}: made {got:?}, expected {want:?}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "request counts changed:\n{}",
        wrong.join("\n")
    );
}

/// The write budget bounds part buffers across all writes: four 12 MiB pushes at once
/// with a budget of two 5 MiB parts never have more than two parts uploading, and all
/// four complete (no write starves or deadlocks). The same pushes with a budget of
/// many parts do overlap more, so the bound is the budget's doing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_write_budget_bounds_part_buffers_across_writes() {
    async fn peak_parts(budget_parts: usize) -> usize {
        let parts: Arc<Gauge> = Arc::default();
        let objects: Arc<dyn ObjectStore> = Arc::new(Counting {
            inner: Arc::new(InMemory::new()),
            counts: Arc::default(),
            parts: parts.clone(),
        });
        let key = key_fixture();
        let config = StoreConfig {
            write_buffer_bytes: budget_parts * 5 * MIB,
            max_parts_in_flight: 2,
            ..StoreConfig::default()
        };
        let store = open_with(&objects, &key, config).await;
        let r = repo("budget/app");
        let pushes = (0..4u64).map(|i| {
            let store = store.clone();
            let r = r.clone();
            tokio::spawn(async move {
                let data = pseudo_random(900 + i, 12 * MIB);
                let digest = Digest::sha256_of(&data);
                // Body chunks of 256 KiB, as a socket delivers them.
                let chunks: Vec<Bytes> = data
                    .chunks(256 * 1024)
                    .map(Bytes::copy_from_slice)
                    .collect();
                store
                    .put_blob(&r, &digest, body(chunks))
                    .await
                    .expect("push");
                assert_eq!(read_all(&store, &digest).await, data);
            })
        });
        for push in futures::future::join_all(pushes).await {
            push.expect("push task");
        }
        parts.peak.load(Ordering::SeqCst)
    }
    let bounded = peak_parts(2).await;
    assert!(
        (1..=2).contains(&bounded),
        "a budget of two parts had {bounded} uploading at once"
    );
    let unbounded = peak_parts(64).await;
    assert!(
        unbounded > 2,
        "without the bound the pushes should overlap more ({unbounded} at once)"
    );
}
