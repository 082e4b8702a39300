//! `Store::rotate` at the storage level: rotating to the key already in use, two
//! rotations at once, and a KEK whose rewrap does not give the registry keys back.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use common::*;
use kms_client::{Kek, KeyDescription, KeyId, KmsError, SecretBytes, VersionedKeyId};
use storage::{Digest, RepositoryName, RotateOutcome, Store, StoreError};

fn repo() -> RepositoryName {
    "rotate/test".parse().expect("repository name")
}

async fn push(store: &Store, seed: u64) -> (Digest, Vec<u8>) {
    let data = pseudo_random(seed, 100_000);
    let digest = Digest::sha256_of(&data);
    store
        .put_blob(&repo(), &digest, one(&data))
        .await
        .expect("push");
    (digest, data)
}

/// The keyring objects in the store, sorted.
async fn keyring_objects(objects: &impl Objects) -> Vec<String> {
    objects_under(objects, "keyring/").await
}

#[tokio::test]
async fn rotating_to_the_key_in_use_changes_nothing() {
    let (_b, objects) = Backend::memory();
    let key = key_fixture();
    let store = open(&objects, &key).await;
    let before = store.keyring_doc().await.expect("doc");
    let stored = keyring_objects(&objects).await;

    let outcome = store
        .rotate(&key.version, &key.key_id)
        .await
        .expect("rotate");
    assert_eq!(outcome, RotateOutcome::AlreadyCurrent);
    assert_eq!(store.keyring_doc().await.expect("doc"), before);
    assert_eq!(
        keyring_objects(&objects).await,
        stored,
        "no keyring written"
    );
    assert_eq!(store.keyring().expect("keyring").sequence, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_rotations_at_once_one_wins_and_the_other_adopts_its_keyring() {
    let (_b, objects) = Backend::memory();
    let key = key_fixture();
    let a = open(&objects, &key).await;
    let b = open(&objects, &key).await;
    let (da, data_a) = push(&a, 1).await;
    let (db, data_b) = push(&b, 2).await;
    let v2 = kms_client::local::add_version(&key.key_id, 2048).expect("new KEK version");

    let (ra, rb) = tokio::join!(a.rotate(&v2, &key.key_id), b.rotate(&v2, &key.key_id));
    let (ra, rb) = (ra.expect("a rotates"), rb.expect("b rotates"));
    let rotated = RotateOutcome::Rotated {
        from: key.version.to_string(),
        to: v2.clone(),
        sequence: 2,
    };
    let lost = RotateOutcome::LostRace { sequence: 2 };
    assert!(
        (ra == rotated && rb == lost) || (ra == lost && rb == rotated),
        "a: {ra:?}, b: {rb:?}"
    );

    // Both nodes now use the winner's keyring, and nothing is lost: every blob reads
    // back through both nodes and through a node opened afresh.
    for store in [&a, &b] {
        let ring = store.keyring().expect("keyring");
        assert_eq!(ring.sequence, 2);
        assert!(ring.doc.generations.iter().all(|g| g.kek == v2.to_string()));
    }
    let fresh = open(&objects, &key).await;
    for store in [&a, &b, &fresh] {
        assert_eq!(read_all(store, &da).await, data_a);
        assert_eq!(read_all(store, &db).await, data_b);
    }
    assert_eq!(
        keyring_objects(&objects).await,
        vec!["keyring/00000000000000000002".to_owned()]
    );
    // New content goes on under the rotated keyring.
    let (dc, data_c) = push(&b, 3).await;
    assert_eq!(read_all(&a, &dc).await, data_c);
}

/// How [`Lying`] answers an unwrap under the version it lies about.
#[derive(Debug, Clone, Copy)]
enum Lie {
    /// Other bytes than were wrapped.
    OtherBytes,
    /// "Not wrapped by this version" (authentication failed).
    InvalidCiphertext,
}

/// A KEK that answers unwraps under any version but `truthful` wrongly, and
/// everything else truly.
#[derive(Debug)]
struct Lying {
    inner: Arc<dyn Kek>,
    truthful: VersionedKeyId,
    lie: Lie,
}

#[async_trait]
impl Kek for Lying {
    async fn describe(&self, id: &VersionedKeyId) -> Result<KeyDescription, KmsError> {
        self.inner.describe(id).await
    }
    async fn latest_version(&self, id: &KeyId) -> Result<VersionedKeyId, KmsError> {
        self.inner.latest_version(id).await
    }
    async fn wrap(&self, id: &VersionedKeyId, plaintext: &[u8]) -> Result<Vec<u8>, KmsError> {
        self.inner.wrap(id, plaintext).await
    }
    async fn unwrap(&self, id: &VersionedKeyId, wrapped: &[u8]) -> Result<SecretBytes, KmsError> {
        let truth = self.inner.unwrap(id, wrapped).await?;
        if *id == self.truthful {
            return Ok(truth);
        }
        match self.lie {
            Lie::OtherBytes => {
                let mut other = truth.expose().to_vec();
                other[0] ^= 0x01;
                Ok(SecretBytes::new(other))
            }
            Lie::InvalidCiphertext => Err(KmsError::InvalidCiphertext {
                key: id.to_string(),
            }),
        }
    }
}

#[tokio::test]
async fn a_rewrap_that_does_not_give_the_keys_back_is_refused_and_changes_nothing() {
    for lie in [Lie::OtherBytes, Lie::InvalidCiphertext] {
        let (_b, objects) = Backend::memory();
        let key = key_fixture();
        // The keyring is created under v1, which the lying KEK answers truly.
        let kek: Arc<dyn Kek> = Arc::new(Lying {
            inner: key.kek.clone(),
            truthful: key.version.clone(),
            lie,
        });
        let store = Store::open(
            storage::backend::Backend::from_object_store(objects.clone()),
            kek,
            &key.key_id,
        )
        .await
        .expect("open");
        let (digest, data) = push(&store, 4).await;
        let v2 = kms_client::local::add_version(&key.key_id, 2048).expect("new KEK version");
        let before = store.keyring_doc().await.expect("doc");
        let stored = keyring_objects(&objects).await;

        let refused = store.rotate(&v2, &key.key_id).await;
        assert!(
            matches!(refused, Err(StoreError::Integrity)),
            "{lie:?}: {refused:?}"
        );
        assert_eq!(store.keyring_doc().await.expect("doc"), before, "{lie:?}");
        assert_eq!(keyring_objects(&objects).await, stored, "{lie:?}");
        let ring = store.keyring().expect("keyring");
        assert_eq!(ring.sequence, 1, "{lie:?}");
        assert_eq!(ring.doc, before.expect("a keyring").1, "{lie:?}");
        assert_eq!(read_all(&store, &digest).await, data, "{lie:?}");
    }
}
