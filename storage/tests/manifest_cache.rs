//! The manifest read caches (storage/src/store/cache.rs) as two nodes over one object
//! store see them: a node reads its own writes at once, another node's tag move or
//! manifest delete shows within the reference TTL, and a store whose access is
//! revoked serves nothing from memory.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use kms_client::KmsError;
use storage::{
    Clock, Digest, NewManifest, Reference, RepositoryName, Store, StoreConfig, StoreError, Tag,
};

const TTL: Duration = Duration::from_millis(300);

fn manifest(n: u32) -> NewManifest {
    let bytes = Bytes::from(format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[],\"annotations\":{{\"n\":\"{n}\"}}}}"
    ));
    NewManifest {
        digest: Digest::sha256_of(&bytes),
        bytes,
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        subject: None,
        artifact_type: None,
        annotations: None,
    }
}

async fn node(
    objects: &std::sync::Arc<dyn object_store::ObjectStore>,
    key: &KeyFixture,
    clock: &Clock,
) -> Store {
    let config = StoreConfig {
        reference_cache_ttl: TTL,
        clock: clock.clone(),
        ..StoreConfig::default()
    };
    open_with(objects, key, config).await
}

/// The digest `reference` resolves to through `store` (a GET, bytes verified), or `None`
/// for `ManifestUnknown`; any other error fails the test.
async fn resolved(store: &Store, repo: &RepositoryName, reference: &Reference) -> Option<Digest> {
    match store.get_manifest(repo, reference).await {
        Ok(got) => {
            assert_eq!(Digest::sha256_of(&got.bytes), got.info.digest);
            Some(got.info.digest)
        }
        Err(StoreError::ManifestUnknown) => None,
        Err(e) => panic!("{reference}: {e:?}"),
    }
}

/// Both nodes share one manual clock: the TTL is checked exactly, whatever the load.
#[tokio::test]
async fn another_nodes_changes_show_within_the_ttl_and_ours_at_once() {
    let (_dir, objects) = Backend::local();
    let key = key_fixture();
    let clock = Clock::manual();
    let a = node(&objects, &key, &clock).await;
    let b = node(&objects, &key, &clock).await;
    let repo: RepositoryName = "cache/test".parse().expect("repo");
    let tag: Tag = "latest".parse().expect("tag");
    let by_tag = Reference::Tag(tag.clone());
    let just_before = TTL - Duration::from_nanos(1);

    let (m1, m2) = (manifest(1), manifest(2));
    a.put_manifest(&repo, m1.clone(), Some(&tag))
        .await
        .expect("put 1");
    // Misses are not cached: b sees a's tag at once.
    assert_eq!(resolved(&b, &repo, &by_tag).await, Some(m1.digest.clone()));

    // a moves the tag: a reads its own write at once; b keeps the old answer until the
    // TTL is up, and not a moment longer.
    a.put_manifest(&repo, m2.clone(), Some(&tag))
        .await
        .expect("put 2");
    assert_eq!(resolved(&a, &repo, &by_tag).await, Some(m2.digest.clone()));
    clock.advance(just_before);
    assert_eq!(resolved(&b, &repo, &by_tag).await, Some(m1.digest.clone()));
    clock.advance(Duration::from_nanos(1));
    assert_eq!(resolved(&b, &repo, &by_tag).await, Some(m2.digest.clone()));

    // b moves it back: b at once, a once its answer (cached at the last advance) ages.
    assert_eq!(resolved(&a, &repo, &by_tag).await, Some(m2.digest.clone()));
    b.put_manifest(&repo, m1.clone(), Some(&tag))
        .await
        .expect("put 1 again");
    assert_eq!(resolved(&b, &repo, &by_tag).await, Some(m1.digest.clone()));
    clock.advance(just_before);
    assert_eq!(resolved(&a, &repo, &by_tag).await, Some(m2.digest.clone()));
    clock.advance(Duration::from_nanos(1));
    assert_eq!(resolved(&a, &repo, &by_tag).await, Some(m1.digest.clone()));

    // A delete through a is seen by a at once, by b within the TTL (by tag and digest).
    let by_digest = Reference::Digest(m1.digest.clone());
    assert_eq!(resolved(&b, &repo, &by_tag).await, Some(m1.digest.clone()));
    assert_eq!(
        resolved(&b, &repo, &by_digest).await,
        Some(m1.digest.clone())
    );
    a.delete_manifest(&repo, &m1.digest).await.expect("delete");
    assert_eq!(resolved(&a, &repo, &by_tag).await, None);
    clock.advance(TTL);
    assert_eq!(resolved(&b, &repo, &by_tag).await, None);
    assert_eq!(resolved(&b, &repo, &by_digest).await, None);
}

#[tokio::test]
async fn a_revoked_store_serves_no_cached_manifest_and_reopens_with_it() {
    let (_dir, objects) = Backend::local();
    let key = key_fixture();
    let store = node(&objects, &key, &Clock::system()).await;
    let repo: RepositoryName = "cache/revoked".parse().expect("repo");
    let tag: Tag = "v1".parse().expect("tag");
    let m = manifest(7);
    store
        .put_manifest(&repo, m.clone(), Some(&tag))
        .await
        .expect("put");
    for _ in 0..3 {
        assert_eq!(
            resolved(&store, &repo, &Reference::Tag(tag.clone())).await,
            Some(m.digest.clone())
        );
    }

    store.revoke_access(KmsError::revoked("test key", "revoked by the test"));
    for reference in [
        Reference::Tag(tag.clone()),
        Reference::Digest(m.digest.clone()),
    ] {
        match store.get_manifest(&repo, &reference).await {
            Err(StoreError::Key(e)) => {
                assert!(e.to_string().contains("revoked by the test"), "{e}")
            }
            other => panic!("revoked store answered {:?}", other.map(|m| m.info)),
        }
    }

    store.reload_keyring().await.expect("reload");
    assert_eq!(
        resolved(&store, &repo, &Reference::Tag(tag)).await,
        Some(m.digest)
    );
}
