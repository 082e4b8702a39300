//! Acceptance 3: tampering is always caught. Each named case damages stored objects
//! directly in the object store, then reads through the store: the read fails with
//! the single integrity error, and no byte of the damaged segment or of anything after
//! it is ever yielded (authentic segments before the damage may be).

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use storage::{Digest, RangeSpec, RepositoryName, Store, StoreError};

const SEG: usize = 65536;
const SEALED: usize = storage::crypto::plan::sealed_segment_len(SEG as u32) as usize;

struct Blob {
    data: Vec<u8>,
    digest: Digest,
}

async fn setup(segments: usize) -> (Arc<dyn ObjectStore>, KeyFixture, Store, Blob, Blob) {
    let (_b, objects) = Backend::memory();
    setup_on(objects, segments).await
}

async fn setup_on(
    objects: Arc<dyn ObjectStore>,
    segments: usize,
) -> (Arc<dyn ObjectStore>, KeyFixture, Store, Blob, Blob) {
    let key = key_fixture();
    let store = open(&objects, &key).await;
    let repo: RepositoryName = "tamper/test".parse().expect("repo");
    let mut blobs = Vec::new();
    for seed in [1u64, 2] {
        // `segments` full segments plus a short final one.
        let data = pseudo_random(seed, segments * SEG + 1000);
        let digest = Digest::sha256_of(&data);
        store
            .put_blob(&repo, &digest, one(&data))
            .await
            .expect("put");
        blobs.push(Blob { data, digest });
    }
    let b = blobs.pop().expect("b");
    let a = blobs.pop().expect("a");
    (objects, key, store, a, b)
}

async fn envelope_json(
    objects: &Arc<dyn ObjectStore>,
    digest: &Digest,
) -> (Path, serde_json::Value) {
    let path = Path::from(format!(
        "blobs/sha256/{}/{}/envelope",
        &digest.hex()[..2],
        digest.hex()
    ));
    let bytes = objects
        .get(&path)
        .await
        .expect("envelope")
        .bytes()
        .await
        .expect("bytes");
    (path, serde_json::from_slice(&bytes).expect("json"))
}

/// The single data object of a monolithically pushed blob.
async fn data_object(objects: &Arc<dyn ObjectStore>, digest: &Digest) -> (Path, Vec<u8>) {
    let (_, env) = envelope_json(objects, digest).await;
    let parts = env["parts"].as_array().expect("parts");
    // A monolithic push writes the non-final segments and the final segment separately.
    let path = Path::from(parts[0]["object"].as_str().expect("object"));
    let bytes = objects
        .get(&path)
        .await
        .expect("data")
        .bytes()
        .await
        .expect("bytes")
        .to_vec();
    (path, bytes)
}

async fn put(objects: &Arc<dyn ObjectStore>, path: &Path, bytes: Vec<u8>) {
    objects
        .put(path, PutPayload::from(bytes))
        .await
        .expect("put");
}

/// Reads the whole blob (or a range); returns what was yielded and the error.
async fn read(
    store: &Store,
    digest: &Digest,
    range: Option<RangeSpec>,
) -> (Vec<u8>, Option<StoreError>) {
    match store.read_blob(digest, range).await {
        Ok(r) => drain(r.body).await,
        Err(e) => (Vec::new(), Some(e)),
    }
}

/// Asserts the read failed with `Integrity` after yielding exactly the authentic prefix
/// `expected` (whole segments before the damage).
fn assert_integrity(got: (Vec<u8>, Option<StoreError>), expected: &[u8], case: &str) {
    let (bytes, err) = got;
    assert!(
        matches!(err, Some(StoreError::Integrity)),
        "{case}: expected Integrity, got {err:?}"
    );
    assert!(
        bytes.len() <= expected.len(),
        "{case}: yielded {} bytes, more than the {} authentic ones",
        bytes.len(),
        expected.len()
    );
    assert_eq!(
        bytes,
        expected[..bytes.len()],
        "{case}: yielded bytes must be an authentic prefix"
    );
}

#[tokio::test]
async fn flipped_byte_in_a_segment() {
    let (objects, _key, store, a, _b) = setup(5).await;
    let (path, mut bytes) = data_object(&objects, &a.digest).await;
    bytes[2 * SEALED + 100] ^= 0x01;
    put(&objects, &path, bytes).await;
    assert_integrity(
        read(&store, &a.digest, None).await,
        &a.data[..2 * SEG],
        "flipped byte",
    );
    // A range inside the damaged segment yields nothing at all.
    let r = read(
        &store,
        &a.digest,
        Some(RangeSpec::FromTo(2 * SEG as u64 + 10, 2 * SEG as u64 + 20)),
    )
    .await;
    assert_integrity(r, &[], "flipped byte, range");
    // A range before it still reads.
    let (ok, err) = read(
        &store,
        &a.digest,
        Some(RangeSpec::FromTo(0, SEG as u64 - 1)),
    )
    .await;
    assert!(err.is_none());
    assert_eq!(ok, a.data[..SEG]);
}

#[tokio::test]
async fn flipped_tag_byte_in_the_final_segment() {
    let (objects, _key, store, a, _b) = setup(2).await;
    let (_, env) = envelope_json(&objects, &a.digest).await;
    let parts = env["parts"].as_array().expect("parts");
    let last = Path::from(parts[parts.len() - 1]["object"].as_str().expect("object"));
    let mut bytes = objects
        .get(&last)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes")
        .to_vec();
    let n = bytes.len();
    bytes[n - 1] ^= 0x80;
    put(&objects, &last, bytes).await;
    assert_integrity(
        read(&store, &a.digest, None).await,
        &a.data[..2 * SEG],
        "final tag",
    );
}

#[tokio::test]
async fn data_object_truncated_at_a_segment_boundary() {
    let (objects, _key, store, a, _b) = setup(5).await;
    let (path, bytes) = data_object(&objects, &a.digest).await;
    put(&objects, &path, bytes[..3 * SEALED].to_vec()).await;
    assert_integrity(
        read(&store, &a.digest, None).await,
        &a.data[..3 * SEG],
        "truncated",
    );
    // The final segment's object removed entirely.
    let (_, env) = envelope_json(&objects, &a.digest).await;
    let parts = env["parts"].as_array().expect("parts");
    let last = Path::from(parts[parts.len() - 1]["object"].as_str().expect("object"));
    objects.delete(&last).await.expect("delete");
    let r = read(&store, &a.digest, Some(RangeSpec::Suffix(10))).await;
    assert_integrity(r, &[], "final part deleted");
}

#[tokio::test]
async fn two_segments_swapped() {
    let (objects, _key, store, a, _b) = setup(5).await;
    let (path, mut bytes) = data_object(&objects, &a.digest).await;
    let s1 = bytes[SEALED..2 * SEALED].to_vec();
    let s2 = bytes[2 * SEALED..3 * SEALED].to_vec();
    bytes[SEALED..2 * SEALED].copy_from_slice(&s2);
    bytes[2 * SEALED..3 * SEALED].copy_from_slice(&s1);
    put(&objects, &path, bytes).await;
    assert_integrity(
        read(&store, &a.digest, None).await,
        &a.data[..SEG],
        "swapped segments",
    );
}

#[tokio::test]
async fn two_blobs_data_objects_swapped() {
    let (objects, _key, store, a, b) = setup(3).await;
    let (pa, da) = data_object(&objects, &a.digest).await;
    let (pb, db) = data_object(&objects, &b.digest).await;
    put(&objects, &pa, db).await;
    put(&objects, &pb, da).await;
    assert_integrity(read(&store, &a.digest, None).await, &[], "swapped blobs a");
    assert_integrity(read(&store, &b.digest, None).await, &[], "swapped blobs b");
}

#[tokio::test]
async fn two_blobs_envelopes_swapped() {
    let (objects, _key, store, a, b) = setup(1).await;
    let (pa, ea) = envelope_json(&objects, &a.digest).await;
    let (pb, eb) = envelope_json(&objects, &b.digest).await;
    put(&objects, &pa, serde_json::to_vec(&eb).expect("json")).await;
    put(&objects, &pb, serde_json::to_vec(&ea).expect("json")).await;
    assert_integrity(
        read(&store, &a.digest, None).await,
        &[],
        "swapped envelopes",
    );
    // Re-labelling the swapped envelope with the right digest still fails (AAD binds it).
    let mut relabelled = eb.clone();
    relabelled["digest"] = serde_json::Value::String(a.digest.to_string());
    put(
        &objects,
        &pa,
        serde_json::to_vec(&relabelled).expect("json"),
    )
    .await;
    assert_integrity(
        read(&store, &a.digest, None).await,
        &[],
        "relabelled envelope",
    );
}

#[tokio::test]
async fn edited_envelope_fields() {
    let (objects, _key, store, a, _b) = setup(2).await;
    let (path, original) = envelope_json(&objects, &a.digest).await;
    let size = original["size"].as_u64().expect("size");
    let generation = original["key_generation"].as_u64().expect("generation");
    let edits: Vec<(&str, serde_json::Value)> = vec![
        ("size - 1", serde_json::json!(size - 1)),
        ("size + 1", serde_json::json!(size + 1)),
        ("size - segment", serde_json::json!(size - SEG as u64)),
        (
            "key generation (unknown)",
            serde_json::json!(generation + 1),
        ),
        ("key generation (zero)", serde_json::json!(0)),
    ];
    for (case, value) in edits {
        let mut env = original.clone();
        let field = if case.starts_with("size") {
            "size"
        } else {
            "key_generation"
        };
        env[field] = value;
        put(&objects, &path, serde_json::to_vec(&env).expect("json")).await;
        assert_integrity(read(&store, &a.digest, None).await, &[], case);
        assert_integrity(
            read(&store, &a.digest, Some(RangeSpec::FromTo(0, 0))).await,
            &[],
            case,
        );
    }
    // The digest edited to another (well-formed) digest: found under its own path only
    // if moved there; in place, the envelope no longer matches its address.
    let mut env = original.clone();
    env["digest"] = serde_json::Value::String(Digest::sha256_of(b"other").to_string());
    put(&objects, &path, serde_json::to_vec(&env).expect("json")).await;
    assert_integrity(
        read(&store, &a.digest, None).await,
        &[],
        "digest edited in place",
    );
    let other = Digest::sha256_of(b"other");
    let other_path = Path::from(format!(
        "blobs/sha256/{}/{}/envelope",
        &other.hex()[..2],
        other.hex()
    ));
    put(
        &objects,
        &other_path,
        serde_json::to_vec(&env).expect("json"),
    )
    .await;
    assert_integrity(
        read(&store, &other, None).await,
        &[],
        "envelope moved to another digest",
    );
    // Restored, it reads again: the failures above were the edits, not the fixture.
    put(
        &objects,
        &path,
        serde_json::to_vec(&original).expect("json"),
    )
    .await;
    let (bytes, err) = read(&store, &a.digest, None).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(bytes, a.data);
}

#[tokio::test]
async fn wrong_kek_cannot_open_the_keyring() {
    let (objects, key, store, a, _b) = setup(1).await;
    drop(store);
    // The operator's key file is replaced by another RSA key under the same version:
    // the registry keys no longer unwrap, and nothing is readable.
    let other = key_fixture();
    let src = kms_client::local::version_files(&other.version).expect("files");
    let dst = kms_client::local::version_files(&key.version).expect("files");
    std::fs::copy(&src.pem, &dst.pem).expect("swap key");
    let err = Store::open(
        storage::backend::Backend::from_object_store(objects.clone()),
        key.kek.clone(),
        &key.key_id,
    )
    .await
    .expect_err("must fail");
    assert!(matches!(err, StoreError::Integrity), "{err:?}");
    let _ = a;
}

#[tokio::test]
async fn blob_copied_from_another_registry_does_not_open() {
    let (objects_a, _ka, store_a, a, _b) = setup(1).await;
    let (objects_b, _kb, store_b, _c, _d) = setup(1).await;
    // Copy blob a's envelope and data from registry A into registry B (another KEK,
    // other registry keys).
    for path in all_objects(&objects_a)
        .await
        .into_iter()
        .filter(|p| p.starts_with("blobs/") || p.starts_with("data/"))
    {
        let p = Path::from(path.as_str());
        let bytes = objects_a
            .get(&p)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        objects_b
            .put(&p, PutPayload::from(Bytes::from(bytes.to_vec())))
            .await
            .expect("put");
    }
    assert_integrity(read(&store_b, &a.digest, None).await, &[], "foreign blob");
    let (bytes, err) = read(&store_a, &a.digest, None).await;
    assert!(err.is_none());
    assert_eq!(bytes, a.data);
}

#[tokio::test]
async fn tampered_manifest_is_refused() {
    let (objects, key, _store, _a, _b) = setup(0).await;
    let store = open(&objects, &key).await;
    let repo: RepositoryName = "tamper/manifests".parse().expect("repo");
    let bytes = Bytes::from_static(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#);
    let digest = Digest::sha256_of(&bytes);
    store
        .put_manifest(
            &repo,
            storage::NewManifest {
                bytes,
                media_type: "application/vnd.oci.image.index.v1+json".into(),
                digest: digest.clone(),
                subject: None,
                artifact_type: None,
                annotations: None,
            },
            None,
        )
        .await
        .expect("put");
    let (path, bytes) = data_object(&objects, &digest).await;
    let mut bytes = bytes;
    bytes[3] ^= 1;
    put(&objects, &path, bytes).await;
    let err = store
        .get_manifest(&repo, &storage::Reference::Digest(digest))
        .await
        .expect_err("must fail");
    assert!(matches!(err, StoreError::Integrity), "{err:?}");
}

/// Local data files are read by valv itself (page-cache reads on the runtime, the rest
/// on a blocking thread), not through object_store: the same damage must be caught there.
#[tokio::test]
async fn local_files_flipped_truncated_or_extended() {
    let (_guard, objects) = Backend::local();
    let (objects, _key, store, a, _b) = setup_on(objects, 40).await;
    let (path, original) = data_object(&objects, &a.digest).await;

    let mut flipped = original.clone();
    flipped[30 * SEALED + 7] ^= 0x80;
    put(&objects, &path, flipped).await;
    assert_integrity(
        read(&store, &a.digest, None).await,
        &a.data[..30 * SEG],
        "local: flipped byte",
    );

    // Cut inside segment 20: the read that reaches past the end fails, whatever path
    // (cached or blocking) it took.
    put(&objects, &path, original[..20 * SEALED + 5].to_vec()).await;
    assert_integrity(
        read(&store, &a.digest, None).await,
        &a.data[..20 * SEG],
        "local: truncated",
    );
    let range = Some(RangeSpec::FromTo(25 * SEG as u64, 26 * SEG as u64));
    assert_integrity(
        read(&store, &a.digest, range).await,
        &[],
        "local: range past the cut",
    );

    let mut longer = original.clone();
    longer.extend_from_slice(&[0u8; 100]);
    put(&objects, &path, longer).await;
    let (bytes, err) = read(&store, &a.digest, None).await;
    // Bytes after the recorded segments are never read: the blob reads back whole.
    assert!(err.is_none(), "{err:?}");
    assert_eq!(bytes, a.data, "local: extended file");

    put(&objects, &path, original).await;
    let (bytes, err) = read(&store, &a.digest, None).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(bytes, a.data, "local: restored file");
}

/// An envelope that authenticates (sealed under the registry key, as only someone
/// holding it could) but names data objects outside `data/`, where the store never
/// writes them: the blob is broken (unknown to stat, integrity to a read), and deleting
/// it removes the envelope alone, never the objects it names.
#[tokio::test]
async fn an_authentic_envelope_naming_objects_the_store_never_writes_is_broken() {
    use storage::crypto::envelope::{DataPart, Envelope};
    let (objects, key, store, a, _b) = setup(2).await;
    let (env_path, env) = envelope_json(&objects, &a.digest).await;
    let envelope = Envelope::from_json(&serde_json::to_vec(&env).expect("json")).expect("parse");
    let ring = store.keyring().expect("keyring");
    let rk = ring.key(envelope.key_generation).expect("registry key");
    let keys = envelope.open(&rk).expect("the stored envelope opens");

    // The same sealed bytes, moved to a path outside `data/`.
    let mut parts = Vec::new();
    for (i, part) in envelope.parts.iter().enumerate() {
        let bytes = objects
            .get(&Path::from(part.object.as_str()))
            .await
            .expect("data")
            .bytes()
            .await
            .expect("bytes");
        let victim = format!("victims/{i}");
        put(&objects, &Path::from(victim.as_str()), bytes.to_vec()).await;
        parts.push(DataPart {
            object: victim,
            segments: part.segments,
        });
    }
    let forged = Envelope::seal(
        &rk,
        envelope.key_generation,
        &keys,
        a.digest.clone(),
        envelope.size,
        parts,
    );
    assert!(
        forged.open(&rk).is_ok(),
        "the forged envelope authenticates"
    );
    put(&objects, &env_path, forged.to_json()).await;
    let fresh = open(&objects, &key).await; // no cached plaintext

    assert!(matches!(
        fresh.stat_blob(&a.digest).await,
        Err(StoreError::BlobUnknown)
    ));
    let (got, err) = read(&fresh, &a.digest, None).await;
    assert!(matches!(err, Some(StoreError::Integrity)), "{err:?}");
    assert!(got.is_empty());
    let victims: Vec<String> = (0..envelope.parts.len())
        .map(|i| format!("victims/{i}"))
        .collect();
    fresh.delete_blob(&a.digest).await.expect("delete");
    assert_eq!(
        objects_under(&objects, "victims/").await,
        victims,
        "the named objects survive the delete"
    );
}
