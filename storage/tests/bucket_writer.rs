//! Issue 16, acceptance 3: an attacker with write access to the bucket. Objects are
//! copied between repositories, moved, swapped, truncated, forged, and replayed from an
//! older version of the store, straight in the object store; every read through the
//! store is refused (an integrity error, or unknown) and never serves other content
//! than what was pushed there. `tamper.rs` covers segment, data-object and envelope
//! edits.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use storage::{
    Digest, NewManifest, Reference, RepositoryName, SealReport, Store, StoreConfig, StoreError, Tag,
};

fn repo(name: &str) -> RepositoryName {
    name.parse().expect("repository name")
}

fn tag(name: &str) -> Reference {
    Reference::Tag(name.parse::<Tag>().expect("tag"))
}

async fn get(objects: &Arc<dyn ObjectStore>, path: &str) -> Bytes {
    objects
        .get(&Path::from(path))
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .bytes()
        .await
        .expect("bytes")
}

async fn put(objects: &Arc<dyn ObjectStore>, path: &str, bytes: impl Into<Bytes>) {
    objects
        .put(&Path::from(path), PutPayload::from(bytes.into()))
        .await
        .expect("put");
}

async fn copy(objects: &Arc<dyn ObjectStore>, from: &str, to: &str) {
    let bytes = get(objects, from).await;
    put(objects, to, bytes).await;
}

fn layer_link(repo: &str, digest: &Digest) -> String {
    format!("repositories/{repo}/_layers/sha256/{}", digest.hex())
}

fn manifest_link(repo: &str, digest: &Digest) -> String {
    format!("repositories/{repo}/_manifests/sha256/{}", digest.hex())
}

fn tag_path(repo: &str, tag: &str) -> String {
    format!("repositories/{repo}/_tags/{tag}")
}

fn envelope_path(digest: &Digest) -> String {
    format!(
        "blobs/sha256/{}/{}/envelope",
        &digest.hex()[..2],
        digest.hex()
    )
}

async fn push_blob(store: &Store, repo_name: &str, seed: u64) -> (Digest, Vec<u8>) {
    let data = pseudo_random(seed, 100_000);
    let digest = Digest::sha256_of(&data);
    store
        .put_blob(&repo(repo_name), &digest, one(&data))
        .await
        .expect("push blob");
    (digest, data)
}

/// An image index with a distinguishing annotation, pushed under `tag_name`.
async fn push_manifest(store: &Store, repo_name: &str, tag_name: &str, n: u32) -> Digest {
    push_manifest_with_subject(store, repo_name, Some(tag_name), n, None).await
}

async fn push_manifest_with_subject(
    store: &Store,
    repo_name: &str,
    tag_name: Option<&str>,
    n: u32,
    subject: Option<Digest>,
) -> Digest {
    let bytes = Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"annotations":{{"n":"{n}"}}}}"#
    ));
    let digest = Digest::sha256_of(&bytes);
    let tag = tag_name.map(|t| t.parse::<Tag>().expect("tag"));
    store
        .put_manifest(
            &repo(repo_name),
            NewManifest {
                bytes,
                media_type: "application/vnd.oci.image.index.v1+json".into(),
                digest: digest.clone(),
                subject,
                artifact_type: Some("application/example".into()),
                annotations: None,
            },
            tag.as_ref(),
        )
        .await
        .expect("push manifest");
    digest
}

fn assert_refused<T: std::fmt::Debug>(result: Result<T, StoreError>, case: &str) {
    match result {
        Err(StoreError::Integrity) => {}
        other => panic!("{case}: expected Integrity, got {other:?}"),
    }
}

/// Both a HEAD (stat) and a GET (read) of the blob in `repo_name` are refused.
async fn assert_blob_refused(store: &Store, repo_name: &str, digest: &Digest, case: &str) {
    let r = repo(repo_name);
    assert_refused(
        store.stat_repo_blob(&r, digest).await,
        &format!("HEAD: {case}"),
    );
    assert_refused(
        store.read_repo_blob(&r, digest, None).await.map(|_| ()),
        &format!("GET: {case}"),
    );
}

async fn read_repo(store: &Store, repo_name: &str, digest: &Digest) -> Vec<u8> {
    let read = store
        .read_repo_blob(&repo(repo_name), digest, None)
        .await
        .expect("read");
    let (bytes, err) = drain(read.body).await;
    assert!(err.is_none(), "{err:?}");
    bytes
}

#[tokio::test]
async fn a_blob_link_copied_into_another_repository_is_refused() {
    let (_b, objects) = Backend::memory();
    let key = key_fixture();
    let store = open(&objects, &key).await;
    let (secret, data) = push_blob(&store, "team-a/app", 1).await;
    push_blob(&store, "team-b/app", 2).await;
    // The blob exists in the store; team-b never had it. The attacker copies team-a's
    // link next to team-b's links.
    copy(
        &objects,
        &layer_link("team-a/app", &secret),
        &layer_link("team-b/app", &secret),
    )
    .await;
    assert_blob_refused(&store, "team-b/app", &secret, "a copied link").await;
    // The same link copied under another digest in the same repository.
    let (other, _) = push_blob(&store, "team-a/app", 3).await;
    copy(
        &objects,
        &layer_link("team-a/app", &secret),
        &layer_link("team-a/app", &other),
    )
    .await;
    assert_blob_refused(
        &store,
        "team-a/app",
        &other,
        "a link moved to another digest",
    )
    .await;
    // Where it was pushed, the blob is served as before.
    assert_eq!(read_repo(&store, "team-a/app", &secret).await, data);
}

#[tokio::test]
async fn a_forged_or_edited_link_is_refused() {
    let (_b, objects) = Backend::memory();
    let key = key_fixture();
    let store = open(&objects, &key).await;
    let (digest, _) = push_blob(&store, "team-a/app", 1).await;
    push_blob(&store, "team-b/app", 2).await;
    let path = layer_link("team-b/app", &digest);
    // A link in the shape valv wrote before links were sealed.
    put(&objects, &path, format!(r#"{{"digest":"{digest}"}}"#)).await;
    assert_blob_refused(&store, "team-b/app", &digest, "an unsealed link").await;
    // A sealed link from elsewhere with its body or its seal edited.
    let genuine = get(&objects, &layer_link("team-a/app", &digest)).await;
    let mut json: serde_json::Value = serde_json::from_slice(&genuine).expect("json");
    json["key_generation"] = 2.into();
    put(
        &objects,
        &layer_link("team-a/app", &digest),
        json.to_string(),
    )
    .await;
    assert_blob_refused(
        &store,
        "team-a/app",
        &digest,
        "a link naming another generation",
    )
    .await;
    let mut json: serde_json::Value = serde_json::from_slice(&genuine).expect("json");
    let seal = json["seal"].as_str().expect("seal").to_owned();
    let flipped = if seal.starts_with('A') { "B" } else { "A" };
    json["seal"] = format!("{flipped}{}", &seal[1..]).into();
    put(
        &objects,
        &layer_link("team-a/app", &digest),
        json.to_string(),
    )
    .await;
    assert_blob_refused(&store, "team-a/app", &digest, "an edited seal").await;
    // A truncated link is not a link at all.
    put(
        &objects,
        &layer_link("team-a/app", &digest),
        genuine.slice(..genuine.len() / 2),
    )
    .await;
    let err = store
        .stat_repo_blob(&repo("team-a/app"), &digest)
        .await
        .expect_err("truncated link");
    assert!(
        matches!(err, StoreError::Corrupt { .. }),
        "truncated link: {err:?}"
    );
    // Put back, it verifies again.
    put(&objects, &layer_link("team-a/app", &digest), genuine).await;
    store
        .stat_repo_blob(&repo("team-a/app"), &digest)
        .await
        .expect("the genuine link");
}

#[tokio::test]
async fn a_manifest_and_its_tag_copied_into_another_repository_are_refused() {
    let (_b, objects) = Backend::memory();
    let key = key_fixture();
    let store = open(&objects, &key).await;
    let digest = push_manifest(&store, "team-a/app", "v1", 1).await;
    push_manifest(&store, "team-b/app", "v1", 2).await;
    copy(
        &objects,
        &manifest_link("team-a/app", &digest),
        &manifest_link("team-b/app", &digest),
    )
    .await;
    copy(
        &objects,
        &tag_path("team-a/app", "v1"),
        &tag_path("team-b/app", "stolen"),
    )
    .await;
    let b = repo("team-b/app");
    assert_refused(
        store
            .get_manifest(&b, &Reference::Digest(digest.clone()))
            .await,
        "a copied manifest link",
    );
    assert_refused(store.get_manifest(&b, &tag("stolen")).await, "a copied tag");
    assert_refused(
        store
            .stat_manifest(&b, &Reference::Digest(digest.clone()))
            .await,
        "HEAD through a copied manifest link",
    );
    let a = store
        .get_manifest(&repo("team-a/app"), &tag("v1"))
        .await
        .expect("the original");
    assert_eq!(a.info.digest, digest);
}

#[tokio::test]
async fn tags_swapped_or_moved_within_a_repository_are_refused() {
    let (_b, objects) = Backend::memory();
    let key = key_fixture();
    // No reference cache: every read goes to the object store.
    let config = StoreConfig {
        reference_cache_ttl: std::time::Duration::ZERO,
        ..StoreConfig::default()
    };
    let store = open_with(&objects, &key, config).await;
    let stable = push_manifest(&store, "app", "stable", 1).await;
    let canary = push_manifest(&store, "app", "canary", 2).await;
    let r = repo("app");
    let stable_bytes = get(&objects, &tag_path("app", "stable")).await;
    let canary_bytes = get(&objects, &tag_path("app", "canary")).await;
    put(&objects, &tag_path("app", "stable"), canary_bytes.clone()).await;
    put(&objects, &tag_path("app", "canary"), stable_bytes.clone()).await;
    assert_refused(
        store.get_manifest(&r, &tag("stable")).await,
        "stable swapped",
    );
    assert_refused(
        store.get_manifest(&r, &tag("canary")).await,
        "canary swapped",
    );
    // A tag copied to a new name.
    put(&objects, &tag_path("app", "latest"), stable_bytes.clone()).await;
    assert_refused(store.get_manifest(&r, &tag("latest")).await, "a moved tag");
    // Deleting the manifest leaves tags that do not verify alone and still works.
    put(&objects, &tag_path("app", "stable"), stable_bytes).await;
    put(&objects, &tag_path("app", "canary"), canary_bytes).await;
    assert_eq!(
        store
            .get_manifest(&r, &tag("stable"))
            .await
            .expect("stable")
            .info
            .digest,
        stable
    );
    store.delete_manifest(&r, &stable).await.expect("delete");
    assert!(matches!(
        store.get_manifest(&r, &tag("stable")).await,
        Err(StoreError::ManifestUnknown)
    ));
    assert_eq!(
        store
            .get_manifest(&r, &tag("canary"))
            .await
            .expect("canary")
            .info
            .digest,
        canary
    );
}

#[tokio::test]
async fn a_referrers_entry_copied_to_another_subject_or_repository_is_not_listed() {
    let (_b, objects) = Backend::memory();
    let key = key_fixture();
    let store = open(&objects, &key).await;
    let subject = push_manifest(&store, "app", "v1", 1).await;
    let other = push_manifest(&store, "app", "v2", 2).await;
    let referrer = push_manifest_with_subject(&store, "app", None, 3, Some(subject.clone())).await;
    let listed = store
        .referrers(&repo("app"), &subject, None)
        .await
        .expect("referrers");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].digest, referrer);
    let entry = format!(
        "repositories/app/_referrers/sha256/{}/sha256-{}",
        subject.hex(),
        referrer.hex()
    );
    for target in [
        format!(
            "repositories/app/_referrers/sha256/{}/sha256-{}",
            other.hex(),
            referrer.hex()
        ),
        format!(
            "repositories/elsewhere/_referrers/sha256/{}/sha256-{}",
            subject.hex(),
            referrer.hex()
        ),
    ] {
        copy(&objects, &entry, &target).await;
    }
    assert!(store
        .referrers(&repo("app"), &other, None)
        .await
        .expect("referrers")
        .is_empty());
    assert!(store
        .referrers(&repo("elsewhere"), &subject, None)
        .await
        .expect("referrers")
        .is_empty());
}

#[tokio::test]
async fn a_blob_replayed_from_an_older_version_is_refused_or_is_the_pushed_bytes() {
    let (_b, objects) = Backend::memory();
    let key = key_fixture();
    let store = open(&objects, &key).await;
    let (digest, data) = push_blob(&store, "app", 1).await;
    // The attacker keeps the first version's envelope and data objects.
    let old_envelope = get(&objects, &envelope_path(&digest)).await;
    let old_data = data_objects(&objects).await;
    store.delete_blob(&digest).await.expect("delete");
    push_blob(&store, "app", 1).await;
    let new_data = data_objects(&objects).await;
    assert_eq!(old_data.len(), new_data.len());
    assert_ne!(
        old_data[0].0, new_data[0].0,
        "a push writes new data objects"
    );

    // 1. The old data objects under the new envelope's names: another DEK, refused.
    for ((_, bytes), (path, _)) in old_data.iter().zip(&new_data) {
        put(&objects, path, bytes.clone()).await;
    }
    let (bytes, err) = match store.read_repo_blob(&repo("app"), &digest, None).await {
        Ok(read) => drain(read.body).await,
        Err(e) => (Vec::new(), Some(e)),
    };
    assert!(
        matches!(err, Some(StoreError::Integrity)),
        "old data under the new envelope: {err:?}"
    );
    assert!(bytes.is_empty(), "nothing of the old data is yielded");

    // 2. The old envelope back, its data objects gone: the blob is unknown, not served.
    put(&objects, &envelope_path(&digest), old_envelope).await;
    let err = store
        .read_repo_blob(&repo("app"), &digest, None)
        .await
        .map(|_| ())
        .expect_err("old envelope without its data");
    assert!(
        matches!(err, StoreError::BlobUnknown | StoreError::Integrity),
        "{err:?}"
    );

    // 3. The whole old version back: it is authentic, and it is the same content (the
    //    digest names it), so what is served is exactly what was pushed.
    for (path, bytes) in &old_data {
        put(&objects, path, bytes.clone()).await;
    }
    assert_eq!(read_repo(&store, "app", &digest).await, data);
}

#[tokio::test]
async fn a_keyring_replayed_from_before_a_rotation_is_refused_by_a_running_node() {
    let (_b, objects) = Backend::memory();
    let key = key_fixture();
    let store = open(&objects, &key).await;
    let (digest, data) = push_blob(&store, "app", 1).await;
    let before = get(&objects, "keyring/00000000000000000001").await;
    let v2 = kms_client::local::add_version(&key.key_id, 2048).expect("new KEK version");
    store.rotate(&v2, &key.key_id).await.expect("rotate");
    assert_eq!(store.keyring().expect("keyring").sequence, 2);

    // Replayed as the newest version (sequence 3): the node refuses to go back.
    put(&objects, "keyring/00000000000000000003", before.clone()).await;
    assert_refused(
        store.reload_keyring().await,
        "an older keyring as sequence 3",
    );
    assert_eq!(store.keyring().expect("keyring").sequence, 2, "kept");
    assert_eq!(read_repo(&store, "app", &digest).await, data);

    // The newer versions deleted, the old one left: refused too.
    objects
        .delete(&Path::from("keyring/00000000000000000003"))
        .await
        .expect("delete");
    objects
        .delete(&Path::from("keyring/00000000000000000002"))
        .await
        .expect("delete");
    put(&objects, "keyring/00000000000000000001", before).await;
    assert_refused(store.reload_keyring().await, "the newer keyrings deleted");
    assert_eq!(read_repo(&store, "app", &digest).await, data);

    // A node that starts on the replayed keyring has no memory of the newer one. With
    // the old KEK version disabled (what an operator does after rotating away from
    // it), it cannot open the store: the replay buys the attacker nothing.
    kms_client::local::set_enabled(&key.version, false).expect("disable v1");
    let err = Store::open(
        storage::backend::Backend::from_object_store(objects.clone()),
        key.kek.clone(),
        &key.key_id,
    )
    .await
    .expect_err("the old KEK version is disabled");
    assert!(matches!(err, StoreError::Key(_)), "{err:?}");
}

#[tokio::test]
async fn unsealed_links_from_an_older_store_are_sealed_in_place() {
    let (_b, objects) = Backend::memory();
    let key = key_fixture();
    let store = open(&objects, &key).await;
    let (digest, data) = push_blob(&store, "app", 1).await;
    let manifest = push_manifest(&store, "app", "v1", 1).await;
    // Rewrite the links in the shape an older valv wrote them (the bare body).
    let unseal = |bytes: Bytes| {
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        json["link"].to_string()
    };
    for path in [
        layer_link("app", &digest),
        manifest_link("app", &manifest),
        tag_path("app", "v1"),
    ] {
        let bytes = get(&objects, &path).await;
        put(&objects, &path, unseal(bytes)).await;
    }
    // A link an older valv never wrote: the blob does not exist.
    let ghost = Digest::sha256_of(b"ghost");
    put(
        &objects,
        &layer_link("app", &ghost),
        format!(r#"{{"digest":"{ghost}"}}"#),
    )
    .await;
    let strict = open(&objects, &key).await;
    assert_refused(
        strict.stat_repo_blob(&repo("app"), &digest).await,
        "unsealed, not accepted",
    );
    assert_refused(strict.get_manifest(&repo("app"), &tag("v1")).await, "tag");

    let upgrading = open_with(
        &objects,
        &key,
        StoreConfig {
            accept_unsealed_links: true,
            ..StoreConfig::default()
        },
    )
    .await;
    assert_eq!(read_repo(&upgrading, "app", &digest).await, data);
    let report = upgrading.seal_links().await.expect("seal");
    assert_eq!(
        report,
        SealReport {
            verified: 0,
            sealed: 3,
            refused: 1
        }
    );
    assert_eq!(
        upgrading.seal_links().await.expect("again"),
        SealReport {
            verified: 3,
            sealed: 0,
            refused: 1
        }
    );
    assert_eq!(read_repo(&strict, "app", &digest).await, data);
    assert_eq!(
        strict
            .get_manifest(&repo("app"), &tag("v1"))
            .await
            .expect("tag")
            .info
            .digest,
        manifest
    );
    assert_refused(
        strict.stat_repo_blob(&repo("app"), &ghost).await,
        "the ghost link stays unsealed",
    );
}

/// Every data object in the store, sorted by name, with its bytes.
async fn data_objects(objects: &Arc<dyn ObjectStore>) -> Vec<(String, Bytes)> {
    let mut out = Vec::new();
    for path in objects_under(objects, "data/").await {
        let bytes = get(objects, &path).await;
        out.push((path, bytes));
    }
    out
}
