//! The storage test suite, run on every object-store backend (in-memory and local
//! filesystem). Each backend run ends by checking that deletes and cancels left
//! nothing behind.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use object_store::ObjectStore;
use storage::{
    Algorithm, Digest, NewManifest, Reference, RepositoryName, Store, StoreError, Tag, UploadId,
};

fn repo(s: &str) -> RepositoryName {
    s.parse().expect("repository name")
}

fn tag(s: &str) -> Tag {
    s.parse().expect("tag")
}

/// Everything the suite touched that is meant to stay after all deletes: the keyring
/// and the catalog entries of the repositories used.
fn expected_leftovers(all: &[String]) -> Vec<String> {
    all.iter()
        .filter(|p| !(p.starts_with("keyring/") || p.starts_with("catalog/")))
        .cloned()
        .collect()
}

/// Whether the store's create-if-absent is atomic under concurrent requests. moto's
/// S3 server checks and writes in two steps, so the create race is run on the
/// filesystem, memory and Azurite, not there.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Creates {
    Atomic,
    NotAtomicUnderRaces,
}

async fn run_suite(objects: impl Objects) {
    run_suite_with(objects, Creates::Atomic).await
}

async fn run_suite_with(objects: impl Objects, creates: Creates) {
    let key = key_fixture();
    let mut digests = Vec::new();

    digests.extend(blobs_round_trip(&objects, &key).await);
    digests.extend(uploads_resume_across_reopen(&objects, &key).await);
    wrong_offset_and_digest_and_cancel(&objects, &key).await;
    digests.extend(manifests_tags_referrers_catalog(&objects, &key).await);
    if creates == Creates::Atomic {
        digests.extend(concurrent_identical_uploads(&objects, &key).await);
    }

    // Nothing left behind: delete every blob the suite stored.
    let store = open(&objects, &key).await;
    for d in &digests {
        match store.delete_blob(d).await {
            Ok(()) | Err(StoreError::BlobUnknown) => {}
            Err(e) => panic!("delete {d}: {e}"),
        }
    }
    // Committed sessions leave a commit record until the sweep; after it, nothing.
    store.sweep(std::time::Duration::ZERO).await.expect("sweep");
    let all = all_objects(&objects).await;
    assert_eq!(
        expected_leftovers(&all),
        Vec::<String>::new(),
        "objects left behind: {all:#?}"
    );
    assert_eq!(
        objects_under(&objects, "keyring/").await.len(),
        1,
        "exactly one keyring version"
    );
}

async fn blobs_round_trip(objects: &impl Objects, key: &KeyFixture) -> Vec<Digest> {
    let store = open(objects, key).await;
    let r = repo("suite/blobs");
    let mut out = Vec::new();
    for (i, size) in [0usize, 1, 65535, 65536, 65537, 3 * 65536 + 5]
        .into_iter()
        .enumerate()
    {
        let data = pseudo_random(i as u64 + 1, size);
        let d = Digest::sha256_of(&data);
        let info = store.put_blob(&r, &d, one(&data)).await.expect("put_blob");
        assert_eq!((info.digest.clone(), info.size), (d.clone(), size as u64));
        assert_eq!(store.stat_blob(&d).await.expect("stat").size, size as u64);
        assert_eq!(
            store
                .stat_repo_blob(&r, &d)
                .await
                .expect("stat in repo")
                .size,
            size as u64
        );
        assert_eq!(read_all(&store, &d).await, data, "size {size}");
        // Idempotent: pushing the same content again is fine and changes nothing.
        store
            .put_blob(&r, &d, one(&data))
            .await
            .expect("second put_blob");
        assert_eq!(read_all(&store, &d).await, data);
        out.push(d);
    }
    // sha512 is accepted, monolithic and chunked.
    let data = pseudo_random(99, 70_000);
    let d512 = Digest::compute(Algorithm::Sha512, &data);
    store
        .put_blob(&r, &d512, one(&data))
        .await
        .expect("sha512 put");
    assert_eq!(read_all(&store, &d512).await, data);
    let data2 = pseudo_random(98, 70_001);
    let d512b = Digest::compute(Algorithm::Sha512, &data2);
    let s = store.create_upload(&r).await.expect("create");
    store
        .append_upload(&r, &s.id, Some(0), one(&data2[..40_000]))
        .await
        .expect("append");
    store
        .finish_upload(
            &r,
            &s.id,
            &d512b,
            Some((Some(40_000), one(&data2[40_000..]))),
        )
        .await
        .expect("finish sha512");
    assert_eq!(read_all(&store, &d512b).await, data2);
    out.extend([d512, d512b]);

    // Links: another repository does not see the blob until it is mounted.
    let other = repo("suite/other");
    let d = out[2].clone();
    assert!(matches!(
        store.stat_repo_blob(&other, &d).await,
        Err(StoreError::BlobUnknown)
    ));
    store.link_blob(&other, &d).await.expect("mount");
    assert_eq!(
        store
            .stat_repo_blob(&other, &d)
            .await
            .expect("mounted")
            .size,
        65535
    );
    store.unlink_blob(&other, &d).await.expect("unlink");
    assert!(matches!(
        store.unlink_blob(&other, &d).await,
        Err(StoreError::BlobUnknown)
    ));
    let unknown = Digest::sha256_of(b"never stored");
    assert!(matches!(
        store.link_blob(&other, &unknown).await,
        Err(StoreError::BlobUnknown)
    ));
    assert!(matches!(
        store.stat_blob(&unknown).await,
        Err(StoreError::BlobUnknown)
    ));
    assert!(matches!(
        store.read_blob(&unknown, None).await,
        Err(StoreError::BlobUnknown)
    ));
    for d in &out {
        store.unlink_blob(&r, d).await.expect("unlink");
    }
    out
}

/// Acceptance 6: chunks of 1, 65535, 65537 and 5 MiB + 3 bytes, with the store closed
/// and reopened (a restart) between every step.
async fn uploads_resume_across_reopen(objects: &impl Objects, key: &KeyFixture) -> Vec<Digest> {
    let r = repo("suite/resume");
    let sizes = [1usize, 65535, 65537, 5 * 1024 * 1024 + 3];
    let total: usize = sizes.iter().sum();
    let data = pseudo_random(7, total);
    let digest = Digest::sha256_of(&data);

    let id: UploadId = open(objects, key)
        .await
        .create_upload(&r)
        .await
        .expect("create")
        .id;
    let mut offset = 0usize;
    for size in sizes {
        let store = open(objects, key).await;
        assert_eq!(
            store.upload_status(&r, &id).await.expect("status").offset,
            offset as u64
        );
        // Feed each chunk as several body pieces, as HTTP frames arrive.
        let piece = &data[offset..offset + size];
        let chunks: Vec<Bytes> = piece.chunks(40_000).map(Bytes::copy_from_slice).collect();
        let st = store
            .append_upload(&r, &id, Some(offset as u64), body(chunks))
            .await
            .expect("append");
        offset += size;
        assert_eq!(st.offset, offset as u64);
        drop(store);
    }
    let store = open(objects, key).await;
    let info = store
        .finish_upload(&r, &id, &digest, None)
        .await
        .expect("finish");
    assert_eq!(info.size, total as u64);
    assert_eq!(read_all(&store, &digest).await, data);
    // The session is over: one commit record remains until the sweep.
    let records = objects_under(objects, &format!("uploads/{id}")).await;
    assert_eq!(
        records.len(),
        1,
        "only the commit record remains: {records:?}"
    );
    assert!(
        !open_sessions(objects)
            .await
            .iter()
            .any(|d| d.ends_with(id.as_str())),
        "the session is no longer open"
    );
    assert!(matches!(
        store.upload_status(&r, &id).await,
        Err(StoreError::UploadUnknown)
    ));

    // A closing PUT that carries the last chunk.
    let data2 = pseudo_random(8, 200_000);
    let d2 = Digest::sha256_of(&data2);
    let s = store.create_upload(&r).await.expect("create");
    store
        .append_upload(&r, &s.id, None, one(&data2[..150_000]))
        .await
        .expect("append");
    let store = open(objects, key).await;
    store
        .finish_upload(
            &r,
            &s.id,
            &d2,
            Some((Some(150_000), one(&data2[150_000..]))),
        )
        .await
        .expect("finish with last chunk");
    assert_eq!(read_all(&store, &d2).await, data2);
    store.unlink_blob(&r, &digest).await.expect("unlink");
    store.unlink_blob(&r, &d2).await.expect("unlink");
    vec![digest, d2]
}

async fn wrong_offset_and_digest_and_cancel(objects: &impl Objects, key: &KeyFixture) {
    let store = open(objects, key).await;
    let r = repo("suite/bad");
    let data = pseudo_random(11, 100_000);
    let digest = Digest::sha256_of(&data);

    // Data of blobs committed earlier in the suite; a failed or cancelled upload must
    // leave exactly this.
    let committed = objects_under(objects, "data/").await;

    // Appends at the wrong offset are refused with their own error and write nothing.
    let s = store.create_upload(&r).await.expect("create");
    store
        .append_upload(&r, &s.id, Some(0), one(&data[..70_000]))
        .await
        .expect("append");
    let before = all_objects(objects).await;
    for wrong in [0u64, 69_999, 70_001, 1 << 40] {
        match store
            .append_upload(&r, &s.id, Some(wrong), one(&data[70_000..]))
            .await
        {
            Err(StoreError::OffsetMismatch { current: 70_000 }) => {}
            other => panic!("offset {wrong}: {other:?}"),
        }
    }
    assert_eq!(
        all_objects(objects).await,
        before,
        "a refused append wrote nothing"
    );

    // A session is private to its repository.
    assert!(matches!(
        store.upload_status(&repo("suite/elsewhere"), &s.id).await,
        Err(StoreError::UploadUnknown)
    ));
    assert_upload_unknown(&store, &r, &UploadId::random()).await;

    // A body error discards the append; the session stays where it was.
    let failing = futures::StreamExt::boxed(futures::stream::iter(vec![
        Ok(Bytes::from(vec![1u8; 100_000])),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ]));
    assert!(matches!(
        store.append_upload(&r, &s.id, Some(70_000), failing).await,
        Err(StoreError::Body(_))
    ));
    assert_eq!(
        store.upload_status(&r, &s.id).await.expect("status").offset,
        70_000
    );
    assert_eq!(
        all_objects(objects).await,
        before,
        "a failed append left nothing"
    );

    // A wrong digest at finish stores nothing and ends the session.
    let wrong = Digest::sha256_of(b"something else");
    let r2 = store
        .finish_upload(
            &r,
            &s.id,
            &wrong,
            Some((Some(70_000), one(&data[70_000..]))),
        )
        .await;
    assert!(matches!(r2, Err(StoreError::DigestMismatch)), "{r2:?}");
    assert!(matches!(
        store.stat_blob(&wrong).await,
        Err(StoreError::BlobUnknown)
    ));
    assert!(matches!(
        store.stat_blob(&digest).await,
        Err(StoreError::BlobUnknown)
    ));
    assert_eq!(
        objects_under(objects, "data/").await,
        committed,
        "no data objects after a digest mismatch"
    );
    assert!(
        open_sessions(objects).await.is_empty(),
        "no session after a digest mismatch"
    );
    // Monolithic with a wrong digest: same.
    assert!(matches!(
        store.put_blob(&r, &wrong, one(&data)).await,
        Err(StoreError::DigestMismatch)
    ));
    assert_eq!(objects_under(objects, "data/").await, committed);
    assert!(open_sessions(objects).await.is_empty());

    // Cancel leaves nothing.
    let s = store.create_upload(&r).await.expect("create");
    store
        .append_upload(&r, &s.id, None, one(&data))
        .await
        .expect("append");
    store.cancel_upload(&r, &s.id).await.expect("cancel");
    assert!(matches!(
        store.upload_status(&r, &s.id).await,
        Err(StoreError::UploadUnknown)
    ));
    assert_eq!(
        objects_under(objects, "data/").await,
        committed,
        "cancel removed the data"
    );
    assert!(
        open_sessions(objects).await.is_empty(),
        "cancel removed the session"
    );
}

async fn manifests_tags_referrers_catalog(objects: &impl Objects, key: &KeyFixture) -> Vec<Digest> {
    let store = open(objects, key).await;
    let r = repo("suite/app");
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let config_digest = Digest::sha256_of(config);
    store
        .put_blob(&r, &config_digest, one(config))
        .await
        .expect("config blob");
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[]}}"#,
        config.len()
    );
    let bytes = Bytes::from(body);
    let digest = Digest::sha256_of(&bytes);
    let media = "application/vnd.oci.image.manifest.v1+json";
    let m = NewManifest {
        bytes: bytes.clone(),
        media_type: media.into(),
        digest: digest.clone(),
        subject: None,
        artifact_type: None,
        annotations: None,
    };
    let info = store
        .put_manifest(&r, m.clone(), Some(&tag("v1")))
        .await
        .expect("put manifest");
    assert_eq!(info.size, bytes.len() as u64);
    for reference in [Reference::Tag(tag("v1")), Reference::Digest(digest.clone())] {
        let got = store
            .get_manifest(&r, &reference)
            .await
            .expect("get manifest");
        assert_eq!(got.bytes, bytes, "exact bytes");
        assert_eq!(got.info.media_type, media);
        assert_eq!(got.info.digest, digest);
        assert_eq!(
            store
                .stat_manifest(&r, &reference)
                .await
                .expect("stat")
                .size,
            bytes.len() as u64
        );
    }
    // A digest that does not match the bytes is refused.
    let mut bad = m.clone();
    bad.digest = Digest::sha256_of(b"nope");
    assert!(matches!(
        store.put_manifest(&r, bad, None).await,
        Err(StoreError::DigestMismatch)
    ));
    assert!(matches!(
        store
            .get_manifest(&r, &Reference::Digest(Digest::sha256_of(b"nope")))
            .await,
        Err(StoreError::ManifestUnknown)
    ));
    assert!(matches!(
        store
            .get_manifest(&r, &Reference::Tag(tag("missing")))
            .await,
        Err(StoreError::ManifestUnknown)
    ));
    assert!(matches!(
        store
            .get_manifest(&repo("suite/unrelated"), &Reference::Digest(digest.clone()))
            .await,
        Err(StoreError::ManifestUnknown)
    ));

    // Tags: lexical, n/last exclusive.
    for t in ["v3", "v2", "a", "latest"] {
        store
            .put_manifest(&r, m.clone(), Some(&tag(t)))
            .await
            .expect("tag");
    }
    let all = store.list_tags(&r, None, None).await.expect("tags");
    let names: Vec<&str> = all.items.iter().map(Tag::as_str).collect();
    assert_eq!(names, ["a", "latest", "v1", "v2", "v3"]);
    assert!(!all.more);
    let page = store
        .list_tags(&r, Some(2), Some("latest"))
        .await
        .expect("page");
    assert_eq!(
        page.items.iter().map(Tag::as_str).collect::<Vec<_>>(),
        ["v1", "v2"]
    );
    assert!(page.more);
    let zero = store.list_tags(&r, Some(0), None).await.expect("n=0");
    assert!(zero.items.is_empty() && !zero.more);
    assert!(matches!(
        store
            .list_tags(&repo("suite/nothing-here"), None, None)
            .await,
        Err(StoreError::NameUnknown)
    ));
    store.delete_tag(&r, &tag("a")).await.expect("delete tag");
    assert!(matches!(
        store.delete_tag(&r, &tag("a")).await,
        Err(StoreError::ManifestUnknown)
    ));

    // Referrers: a signature-like artifact whose subject is the image.
    let mut referrer_digests = Vec::new();
    for (i, artifact_type) in [
        "application/vnd.example.sig",
        "application/vnd.example.sbom",
    ]
    .into_iter()
    .enumerate()
    {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"{artifact_type}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{config_digest}","size":2}},"layers":[],"subject":{{"mediaType":"{media}","digest":"{digest}","size":{}}},"annotations":{{"n":"{i}"}}}}"#,
            bytes.len()
        );
        let b = Bytes::from(body);
        let d = Digest::sha256_of(&b);
        let annotations: BTreeMap<String, String> = [("n".to_string(), i.to_string())].into();
        store
            .put_manifest(
                &r,
                NewManifest {
                    bytes: b,
                    media_type: media.into(),
                    digest: d.clone(),
                    subject: Some(digest.clone()),
                    artifact_type: Some(artifact_type.into()),
                    annotations: Some(annotations),
                },
                None,
            )
            .await
            .expect("referrer");
        referrer_digests.push(d);
    }
    let refs = store.referrers(&r, &digest, None).await.expect("referrers");
    assert_eq!(refs.len(), 2);
    let sigs = store
        .referrers(&r, &digest, Some("application/vnd.example.sig"))
        .await
        .expect("filtered");
    assert_eq!(sigs.len(), 1);
    assert_eq!(sigs[0].digest, referrer_digests[0]);
    assert_eq!(
        sigs[0]
            .annotations
            .as_ref()
            .and_then(|a| a.get("n"))
            .map(String::as_str),
        Some("0")
    );
    assert!(store
        .referrers(&r, &Digest::sha256_of(b"no subject"), None)
        .await
        .expect("empty")
        .is_empty());

    // Catalog: lexical with pagination.
    for name in ["suite/zeta", "suite/alpha/deep/er"] {
        store
            .put_manifest(&repo(name), m.clone(), None)
            .await
            .expect("manifest in another repo");
    }
    let catalog = store.catalog(None, None).await.expect("catalog");
    let names: Vec<&str> = catalog.items.iter().map(RepositoryName::as_str).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert!(
        names.contains(&"suite/alpha/deep/er")
            && names.contains(&"suite/app")
            && names.contains(&"suite/zeta")
    );
    let page = store
        .catalog(Some(1), Some("suite/app"))
        .await
        .expect("catalog page");
    assert_eq!(page.items.len(), 1);
    assert!(page.items[0].as_str() > "suite/app");

    // Deleting a manifest removes its link, the tags pointing at it and its referrer entry.
    store
        .delete_manifest(&r, &referrer_digests[0])
        .await
        .expect("delete referrer");
    assert_eq!(
        store
            .referrers(&r, &digest, None)
            .await
            .expect("referrers")
            .len(),
        1
    );
    store
        .delete_manifest(&r, &referrer_digests[1])
        .await
        .expect("delete referrer");
    store
        .delete_manifest(&r, &digest)
        .await
        .expect("delete manifest");
    assert!(matches!(
        store.delete_manifest(&r, &digest).await,
        Err(StoreError::ManifestUnknown)
    ));
    assert!(store
        .list_tags(&r, None, None)
        .await
        .expect("tags")
        .items
        .is_empty());
    for name in ["suite/zeta", "suite/alpha/deep/er"] {
        store
            .delete_manifest(&repo(name), &digest)
            .await
            .expect("delete");
    }
    store
        .unlink_blob(&r, &config_digest)
        .await
        .expect("unlink config");
    let mut out = vec![config_digest, digest];
    out.extend(referrer_digests);
    out
}

/// Acceptance 7: 16 concurrent uploads of identical content all succeed and end with
/// exactly one envelope and no orphaned data object.
async fn concurrent_identical_uploads(objects: &impl Objects, key: &KeyFixture) -> Vec<Digest> {
    let store = open(objects, key).await;
    let r = repo("suite/race");
    let data = Bytes::from(pseudo_random(21, 300_000));
    let digest = Digest::sha256_of(&data);
    let envelopes_before = objects_under(objects, "blobs/").await;
    let data_before = objects_under(objects, "data/").await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (store, r, data, digest) = (store.clone(), r.clone(), data.clone(), digest.clone());
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                store.put_blob(&r, &digest, one(&data)).await
            } else {
                let s = store.create_upload(&r).await?;
                store
                    .append_upload(&r, &s.id, Some(0), one(&data[..100_000]))
                    .await?;
                store
                    .finish_upload(
                        &r,
                        &s.id,
                        &digest,
                        Some((Some(100_000), one(&data[100_000..]))),
                    )
                    .await
            }
        }));
    }
    for t in tasks {
        let info = t.await.expect("join").expect("concurrent upload");
        assert_eq!(info.digest, digest);
    }
    let new_envelopes: Vec<String> = objects_under(objects, "blobs/")
        .await
        .into_iter()
        .filter(|p| !envelopes_before.contains(p))
        .collect();
    assert_eq!(new_envelopes.len(), 1, "one envelope: {new_envelopes:?}");
    assert!(new_envelopes[0].contains(digest.hex()));
    let new_data: Vec<String> = objects_under(objects, "data/")
        .await
        .into_iter()
        .filter(|p| !data_before.contains(p))
        .collect();
    let dirs: std::collections::BTreeSet<&str> = new_data
        .iter()
        .filter_map(|p| p.rsplit_once('/').map(|x| x.0))
        .collect();
    assert_eq!(
        dirs.len(),
        1,
        "only the winner's data remains: {new_data:?}"
    );
    assert!(open_sessions(objects).await.is_empty(), "no session left");
    assert_eq!(read_all(&store, &digest).await, data.to_vec());
    store.unlink_blob(&r, &digest).await.expect("unlink");
    vec![digest]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_in_memory() {
    let (_b, backend) = url_backend("memory://");
    run_suite(backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_local_filesystem() {
    let (_dir, backend) = url_backend("file://");
    run_suite(backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto's S3 server: the test command (scripts/test.sh) starts it"]
async fn suite_on_s3() {
    run_suite_with(
        cloud_backend("VALV_TEST_S3_URL").await,
        Creates::NotAtomicUnderRaces,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Azurite: the test command (scripts/test.sh) starts it"]
async fn suite_on_azure_blob() {
    run_suite(cloud_backend("VALV_TEST_AZURE_URL").await).await;
}

/// Any object store, as tests and fault injection wrap one (ranged GETs, whatever the
/// store): here the local filesystem without its own read path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_on_a_bare_object_store() {
    let (_b, objects) = Backend::local();
    run_suite(objects).await;
}

// ---- keyring (acceptance 8) -----------------------------------------------------

#[tokio::test]
async fn keyring_is_created_wrapped_and_reopened() {
    let (_b, objects) = Backend::memory();
    let key = key_fixture();
    let store = open(&objects, &key).await;
    let ring = store.keyring().expect("keyring loaded");
    assert_eq!(ring.doc.generations.len(), 1);
    assert_eq!(
        ring.doc.generations[0].kek,
        key.version.to_string(),
        "wrapped by the newest version"
    );
    assert!(ring.doc.automatic_rotation);
    let stored = all_objects(&objects).await;
    assert_eq!(stored, ["keyring/00000000000000000001"]);
    let raw = storage_get(&objects, &stored[0]).await;
    let wrapped = &ring.doc.generations[0].wrapped;
    assert!(String::from_utf8_lossy(&raw).contains(wrapped.as_str()));
    assert!(wrapped.len() > 300, "an RSA-2048 wrap is 256 bytes");

    let data = pseudo_random(5, 1000);
    let d = Digest::sha256_of(&data);
    store
        .put_blob(&repo("k/r"), &d, one(&data))
        .await
        .expect("put");
    drop(store);
    // Reopening unwraps the same registry key: the blob reads back.
    let store = open(&objects, &key).await;
    assert_eq!(read_all(&store, &d).await, data);
    assert_eq!(
        all_objects(&objects)
            .await
            .iter()
            .filter(|p| p.starts_with("keyring/"))
            .count(),
        1
    );
}

#[tokio::test]
async fn keyring_with_disabled_kek_version_fails_as_revoked() {
    let (_b, objects) = Backend::memory();
    let key = key_fixture();
    drop(open(&objects, &key).await);
    kms_client::local::set_enabled(&key.version, false).expect("disable");
    let err = Store::open(
        storage::backend::Backend::from_object_store(objects.clone()),
        key.kek.clone(),
        &key.key_id,
    )
    .await
    .expect_err("must fail");
    assert!(
        matches!(err, StoreError::Key(kms_client::KmsError::Revoked { .. })),
        "{err:?}"
    );
    kms_client::local::set_enabled(&key.version, true).expect("enable");
    open(&objects, &key).await;
}

#[tokio::test]
async fn keyring_on_a_fresh_store_with_disabled_key_fails_as_revoked() {
    let (_b, objects) = Backend::memory();
    let key = key_fixture();
    kms_client::local::set_enabled(&key.version, false).expect("disable");
    let err = Store::open(
        storage::backend::Backend::from_object_store(objects.clone()),
        key.kek.clone(),
        &key.key_id,
    )
    .await
    .expect_err("must fail");
    assert!(
        matches!(err, StoreError::Key(kms_client::KmsError::Revoked { .. })),
        "{err:?}"
    );
    assert!(all_objects(&objects).await.is_empty(), "nothing written");
}

#[tokio::test]
async fn keyring_with_ec_kek_fails_as_misconfigured() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let key_dir = dir.path().join("ec-kek");
    std::fs::create_dir_all(&key_dir).expect("mkdir");
    let version = "0123456789abcdef0123456789abcdef";
    let pem = key_dir.join(format!("{version}.pem"));
    let status = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&pem)
        .status()
        .expect("openssl must be installed (scripts/test.sh installs it)");
    assert!(status.success());
    let meta = serde_json::json!({"enabled": true, "created": "2026-01-01T00:00:00Z", "expires": null, "not_before": null, "key_type": "RSA", "key_size": 2048});
    std::fs::write(key_dir.join(format!("{version}.json")), meta.to_string()).expect("meta");
    let key_id: kms_client::KeyId = format!("file://{}/ec-kek", dir.path().display())
        .parse()
        .expect("key id");
    let (_b, objects) = Backend::memory();
    let kek: Arc<dyn kms_client::Kek> = Arc::new(kms_client::local::LocalKek::new());
    let err = Store::open(
        storage::backend::Backend::from_object_store(objects),
        kek,
        &key_id,
    )
    .await
    .expect_err("must fail");
    match err {
        StoreError::Key(kms_client::KmsError::Misconfigured { reason, .. }) => {
            assert!(reason.contains("EC"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

/// The keyring is authoritative (a rotate-key may have moved the registry to another
/// key): a different configured key of the same provider is logged and the keyring's
/// key is used; the configured one is never silently adopted.
#[tokio::test]
async fn a_different_key_id_defers_to_the_keyring() {
    let (_b, objects) = Backend::memory();
    let key = key_fixture();
    drop(open(&objects, &key).await);
    let other = key_fixture();
    let store = Store::open(
        storage::backend::Backend::from_object_store(objects.clone()),
        other.kek.clone(),
        &other.key_id,
    )
    .await
    .expect("a same-provider key defers to the keyring");
    let ring = store.keyring().expect("keyring");
    assert_eq!(ring.doc.key_id, key.key_id.to_string());
    assert_eq!(
        ring.active_generation().map(|g| g.kek.clone()),
        Some(key.version.to_string()),
        "still wrapped by the keyring's key, not the configured one"
    );
}

/// A configured key of another provider cannot serve the keyring's key: refused.
#[tokio::test]
async fn a_key_id_of_another_provider_is_refused() {
    let (_b, objects) = Backend::memory();
    let key = key_fixture();
    drop(open(&objects, &key).await);
    let azure: kms_client::KeyId = "https://other.vault.azure.net/keys/kek"
        .parse()
        .expect("key id");
    let err = Store::open(
        storage::backend::Backend::from_object_store(objects.clone()),
        key.kek.clone(),
        &azure,
    )
    .await
    .expect_err("must fail");
    match err {
        StoreError::Key(kms_client::KmsError::Misconfigured { reason, .. }) => {
            assert!(reason.contains(&key.key_id.to_string()), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

async fn storage_get(objects: &Arc<dyn ObjectStore>, path: &str) -> Vec<u8> {
    use object_store::ObjectStoreExt;
    objects
        .get(&object_store::path::Path::from(path))
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes")
        .to_vec()
}

// ---- nothing in the clear (acceptance 2) ----------------------------------------

/// An exact index of every 32-byte window of some plaintexts: windows are located by
/// their first 8 bytes (sorted), then compared in full.
struct WindowIndex<'a> {
    texts: Vec<&'a [u8]>,
    keys: Vec<(u64, u32, u32)>,
}

/// Spans of `text` that are digest references (`"digest":"sha256:<hex>","size":<n>`)
/// or media types. These are metadata by design (DESIGN §1: names, tags, digests and
/// sizes stay readable):
/// a manifest's reference to a blob necessarily matches that blob's envelope and
/// links. Windows lying wholly inside such a span are therefore not content.
fn metadata_spans(text: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut spans = Vec::new();
    let needle = b"sha256:";
    for i in 0..text.len().saturating_sub(needle.len() + 64) {
        if &text[i..i + needle.len()] == needle
            && text[i + 7..i + 71].iter().all(u8::is_ascii_hexdigit)
        {
            // `,"digest":"` before, and `","size":<n>,` after (the referenced blob's
            // size, also metadata), belong to the reference too.
            let mut end = i + 71;
            if text[end..].starts_with(b"\",\"size\":") {
                end += 9;
                while end < text.len() && text[end].is_ascii_digit() {
                    end += 1;
                }
            }
            spans.push(i.saturating_sub(12)..(end + 3).min(text.len()));
        }
    }
    // Media types are metadata as well: the repository's manifest link records the
    // manifest's media type so that HEAD needs no decryption.
    let key = b"\"mediaType\":\"";
    for i in 0..text.len().saturating_sub(key.len()) {
        if &text[i..i + key.len()] == key {
            let value_end = text[i + key.len()..]
                .iter()
                .position(|&b| b == b'"')
                .map_or(text.len(), |p| i + key.len() + p);
            spans.push(i.saturating_sub(1)..(value_end + 3).min(text.len()));
        }
    }
    spans
}

impl<'a> WindowIndex<'a> {
    fn new(texts: Vec<&'a [u8]>) -> Self {
        let mut keys = Vec::new();
        for (t, text) in texts.iter().enumerate() {
            let spans = metadata_spans(text);
            for i in 0..text.len().saturating_sub(31) {
                if spans.iter().any(|s| s.start <= i && i + 32 <= s.end) {
                    continue;
                }
                keys.push((prefix(&text[i..]), t as u32, i as u32));
            }
        }
        keys.sort_unstable();
        WindowIndex { texts, keys }
    }

    /// Whether `data` contains any 32-byte window of any of the texts.
    fn find_in(&self, data: &[u8]) -> Option<(usize, usize)> {
        for off in 0..data.len().saturating_sub(31) {
            let k = prefix(&data[off..]);
            let start = self.keys.partition_point(|e| e.0 < k);
            for &(key, t, i) in &self.keys[start..] {
                if key != k {
                    break;
                }
                let (t, i) = (t as usize, i as usize);
                if self.texts[t][i..i + 32] == data[off..off + 32] {
                    return Some((t, off));
                }
            }
        }
        None
    }
}

fn prefix(b: &[u8]) -> u64 {
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_stored_in_the_clear() {
    let (backend, objects) = Backend::local();
    let Backend::LocalFs(dir) = &backend else {
        unreachable!()
    };
    let key = key_fixture();
    let store = open(&objects, &key).await;
    let r = repo("clear/test");
    // ≥ 8 MiB of random data: one monolithic blob and one chunked upload.
    let big = pseudo_random(0xC1EA4, 7 * 1024 * 1024 + 11);
    let big_digest = Digest::sha256_of(&big);
    store
        .put_blob(&r, &big_digest, one(&big))
        .await
        .expect("put big");
    let chunked = pseudo_random(0xC1EA5, 2 * 1024 * 1024 + 77);
    let chunked_digest = Digest::sha256_of(&chunked);
    let s = store.create_upload(&r).await.expect("create");
    store
        .append_upload(&r, &s.id, Some(0), one(&chunked[..1_200_003]))
        .await
        .expect("append");
    // An open session with a partial tail is also at rest: check it too, then finish.
    let tail_probe = chunked[..1_200_003].to_vec();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{big_digest}","size":{}}},"layers":[],"annotations":{{"secret":"this manifest text must never be stored in the clear 0123456789"}}}}"#,
        big.len()
    );
    let manifest = Bytes::from(manifest);
    let md = Digest::sha256_of(&manifest);
    store
        .put_manifest(
            &r,
            NewManifest {
                bytes: manifest.clone(),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                digest: md,
                subject: None,
                artifact_type: None,
                annotations: None,
            },
            None,
        )
        .await
        .expect("manifest");

    // Scan once with the session still open (its tail is sealed in the session
    // state), then again after it committed.
    let (files, bytes) = scan_dir(
        dir.path(),
        &WindowIndex::new(vec![&big, &tail_probe, &manifest]),
    );
    assert!(
        bytes >= 8 * 1024 * 1024,
        "scanned {bytes} bytes in {files} files"
    );

    store
        .finish_upload(
            &r,
            &s.id,
            &chunked_digest,
            Some((Some(1_200_003), one(&chunked[1_200_003..]))),
        )
        .await
        .expect("finish");
    let full = WindowIndex::new(vec![&big, &chunked, &manifest]);
    let (_, scanned) = scan_dir(dir.path(), &full);
    assert!(
        scanned >= big.len() + chunked.len(),
        "scanned {scanned} bytes"
    );
    // The check can fail: the index does find plaintext where it is.
    assert!(full.find_in(&big[1000..1100]).is_some());
    assert!(full.find_in(&manifest[10..60]).is_some());
    assert_eq!(read_all(&store, &chunked_digest).await, chunked);
}

/// Reads every file under `root`; panics on any plaintext window. Returns (files, bytes).
fn scan_dir(root: &std::path::Path, index: &WindowIndex<'_>) -> (usize, usize) {
    let (mut files, mut bytes) = (0, 0);
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        for entry in std::fs::read_dir(&p).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let data = std::fs::read(&path).expect("read");
                bytes += data.len();
                files += 1;
                if let Some((t, off)) = index.find_in(&data) {
                    panic!("plaintext {t} found in {} at offset {off}", path.display());
                }
            }
        }
    }
    (files, bytes)
}

#[tokio::test]
async fn the_rotation_lease_admits_one_holder_and_expires() {
    let (_b, objects) = Backend::memory();
    let key = key_fixture();
    let store = open(&objects, &key).await;
    let long = std::time::Duration::from_secs(60);
    assert!(
        store
            .acquire_rotation_lease("a", long)
            .await
            .expect("lease"),
        "a takes it"
    );
    assert!(
        !store
            .acquire_rotation_lease("b", long)
            .await
            .expect("lease"),
        "b is refused while a holds it"
    );
    // Releasing someone else's lease does nothing.
    store.release_rotation_lease("b").await.expect("release");
    assert!(!store
        .acquire_rotation_lease("b", long)
        .await
        .expect("lease"));
    store.release_rotation_lease("a").await.expect("release");
    assert!(
        store
            .acquire_rotation_lease("b", std::time::Duration::ZERO)
            .await
            .expect("lease"),
        "free again"
    );
    // b's lease expired at once (a holder that died): c takes it over.
    assert!(
        store
            .acquire_rotation_lease("c", long)
            .await
            .expect("lease"),
        "an expired lease is taken over"
    );
    store.release_rotation_lease("c").await.expect("release");
    let left: Vec<String> = all_objects(&objects)
        .await
        .into_iter()
        .filter(|p| p.starts_with("leases/"))
        .collect();
    assert!(left.is_empty(), "no lease left behind: {left:?}");
}
