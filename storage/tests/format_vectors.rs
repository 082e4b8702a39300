//! The fixed test vectors of the valv/v1 blob format (docs/FORMAT.md §"Test vectors").
//!
//! `vectors/format-v1.json` is derived from fixed, public, test-only keys. These tests
//! 1. re-derive every value through the crate's API and require the committed file to be
//!    byte-for-byte what that produces,
//! 2. re-derive the keys, segments and AAD a second time straight from the primitives
//!    (HKDF, AES-GCM, the byte layout in FORMAT.md), so the API and the document agree,
//! 3. open the committed envelopes and decrypt the committed ciphertexts.
//!
//! To regenerate after a deliberate format change (which also needs a new format version):
//! `VALV_REGENERATE_VECTORS=1 cargo test -p valv-storage --test format_vectors -- --ignored regenerate_vectors`

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use bytes::Bytes;
use futures::{FutureExt as _, StreamExt as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use storage::crypto::envelope::{DataPart, Envelope};
use storage::crypto::keys::{
    hkdf32, BlobKeys, Key32, SealedBox, WrappedKey, INFO_KEY_WRAP, INFO_SESSION_STATE,
};
use storage::crypto::segment::{decrypt_stream, segment_count, ReadPlan, Sealer};
use storage::crypto::IntegrityError;
use storage::{Digest, StoreError};

// ---- the fixed, test-only inputs (never use these anywhere else) ----------------------

/// `start, start+1, …` as an array.
fn counting<const N: usize>(start: u8) -> [u8; N] {
    std::array::from_fn(|i| start + i as u8)
}
fn dek() -> [u8; 32] {
    counting(0x00)
}
fn salt() -> [u8; 32] {
    counting(0x20)
}
fn nonce_prefix() -> [u8; 7] {
    counting(0x40)
}
fn registry_key() -> [u8; 32] {
    counting(0xa0)
}
fn wrap_salt() -> [u8; 32] {
    counting(0xc0)
}
fn wrap_nonce() -> [u8; 12] {
    counting(0xe0)
}
fn aux_nonce() -> [u8; 12] {
    counting(0xf0)
}
const KEY_GENERATION: u32 = 1;
const SESSION_AAD: &[u8] = b"valv/v1 test session";
const SESSION_PLAINTEXT: &[u8] = b"held-back tail";

/// The blobs of the vectors: name, segment size, plaintext, and how many segments each
/// data part holds.
struct BlobSpec {
    name: &'static str,
    segment_size: u32,
    plaintext: Vec<u8>,
    /// Whether the sealed segments are listed in full (else only their SHA-256).
    full: bool,
    parts: Vec<u64>,
}

/// The deterministic filler: byte i is `i mod 251` (251 is prime, so the pattern does
/// not line up with any power-of-two segment size).
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn specs() -> Vec<BlobSpec> {
    vec![
        BlobSpec {
            name: "empty",
            segment_size: 65536,
            plaintext: Vec::new(),
            full: true,
            parts: vec![1],
        },
        BlobSpec {
            name: "five-bytes",
            segment_size: 65536,
            plaintext: b"hello".to_vec(),
            full: true,
            parts: vec![1],
        },
        BlobSpec {
            name: "two-segments-and-three-bytes",
            segment_size: 16,
            plaintext: pattern(2 * 16 + 3),
            full: true,
            parts: vec![2, 1],
        },
        BlobSpec {
            name: "one-segment-and-one-byte",
            segment_size: 65536,
            plaintext: pattern(65536 + 1),
            full: false,
            parts: vec![2],
        },
    ]
}

// ---- the file's shape (structs, so field order never depends on serde_json features) ----

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vectors {
    format: String,
    comment: String,
    inputs: Inputs,
    derived: Derived,
    blobs: Vec<BlobVector>,
    session_state: SessionVector,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Inputs {
    dek: String,
    salt: String,
    nonce_prefix: String,
    registry_key: String,
    key_generation: u32,
    wrap_salt: String,
    wrap_nonce: String,
    session_nonce: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Derived {
    segment_key: String,
    commitment: String,
    wrap_key: String,
    session_state_key: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BlobVector {
    name: String,
    segment_size: u32,
    size: u64,
    /// The plaintext in hex, or the pattern's description for the large blob.
    plaintext: String,
    digest: String,
    /// Segment i's nonce, in hex.
    nonces: Vec<String>,
    /// Sealed segments in hex (empty for the large blob).
    segments: Vec<String>,
    sealed_len: u64,
    sealed_sha256: String,
    envelope_aad: String,
    envelope_json: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionVector {
    aad: String,
    plaintext: String,
    sealed_box_json: String,
}

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/format-v1.json")
}

fn keys_for(segment_size: u32) -> BlobKeys {
    BlobKeys {
        dek: Key32::from_bytes(dek()),
        salt: salt(),
        nonce_prefix: nonce_prefix(),
        segment_size,
    }
}

fn part_objects(spec: &BlobSpec) -> Vec<DataPart> {
    spec.parts
        .iter()
        .enumerate()
        .map(|(i, &segments)| DataPart {
            object: format!("test-vectors/{}/data-{i}", spec.name),
            segments,
        })
        .collect()
}

/// The envelope with its DEK wrapped under the fixed wrap salt and nonce.
fn envelope_for(spec: &BlobSpec, keys: &BlobKeys) -> Envelope {
    let rk = Key32::from_bytes(registry_key());
    let mut env = Envelope::seal(
        &rk,
        KEY_GENERATION,
        keys,
        Digest::sha256_of(&spec.plaintext),
        spec.plaintext.len() as u64,
        part_objects(spec),
    );
    env.dek = WrappedKey::wrap_with(&rk, &env.aad(), &keys.dek, wrap_salt(), wrap_nonce());
    env
}

fn seal_all(keys: &BlobKeys, plaintext: &[u8]) -> Vec<Bytes> {
    let mut sealer = Sealer::new(keys.cipher(), keys.segment_size, 0, &[]);
    let mut out = Vec::new();
    sealer.push(plaintext, &mut out);
    out.push(sealer.finish());
    out
}

fn nonce(index: u32, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..7].copy_from_slice(&nonce_prefix());
    n[7..11].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    n
}

/// Everything in the vectors file, derived through the crate's API.
fn build_vectors() -> Vectors {
    let keys = keys_for(65536);
    let rk = Key32::from_bytes(registry_key());
    let blobs = specs()
        .iter()
        .map(|spec| {
            let keys = keys_for(spec.segment_size);
            let segments = seal_all(&keys, &spec.plaintext);
            let sealed: Vec<u8> = segments.concat();
            let env = envelope_for(spec, &keys);
            let n = segments.len();
            BlobVector {
                name: spec.name.to_owned(),
                segment_size: spec.segment_size,
                size: spec.plaintext.len() as u64,
                plaintext: if spec.full {
                    hex::encode(&spec.plaintext)
                } else {
                    format!(
                        "pattern: byte i = i mod 251, {} bytes",
                        spec.plaintext.len()
                    )
                },
                digest: env.digest.to_string(),
                nonces: (0..n)
                    .map(|i| hex::encode(nonce(i as u32, i + 1 == n)))
                    .collect(),
                segments: if spec.full {
                    segments.iter().map(hex::encode).collect()
                } else {
                    Vec::new()
                },
                sealed_len: sealed.len() as u64,
                sealed_sha256: hex::encode(Sha256::digest(&sealed)),
                envelope_aad: hex::encode(env.aad()),
                envelope_json: String::from_utf8(env.to_json()).unwrap(),
            }
        })
        .collect();
    let sealed_box = keys.seal_aux_with_nonce(SESSION_AAD, SESSION_PLAINTEXT, aux_nonce());
    Vectors {
        format: "valv/v1".to_owned(),
        comment: "Test-only keys: every input below is public. Regenerate with \
                  VALV_REGENERATE_VECTORS=1 cargo test -p valv-storage --test format_vectors \
                  -- --ignored regenerate_vectors"
            .to_owned(),
        inputs: Inputs {
            dek: hex::encode(dek()),
            salt: hex::encode(salt()),
            nonce_prefix: hex::encode(nonce_prefix()),
            registry_key: hex::encode(registry_key()),
            key_generation: KEY_GENERATION,
            wrap_salt: hex::encode(wrap_salt()),
            wrap_nonce: hex::encode(wrap_nonce()),
            session_nonce: hex::encode(aux_nonce()),
        },
        derived: Derived {
            segment_key: hex::encode(keys.segment_key().expose()),
            commitment: hex::encode(keys.commitment()),
            wrap_key: hex::encode(hkdf32(&rk, &wrap_salt(), INFO_KEY_WRAP).expose()),
            session_state_key: hex::encode(hkdf32(&keys.dek, &salt(), INFO_SESSION_STATE).expose()),
        },
        blobs,
        session_state: SessionVector {
            aad: String::from_utf8(SESSION_AAD.to_vec()).unwrap(),
            plaintext: String::from_utf8(SESSION_PLAINTEXT.to_vec()).unwrap(),
            sealed_box_json: serde_json::to_string(&sealed_box).unwrap(),
        },
    }
}

fn render(v: &Vectors) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap();
    s.push('\n');
    s
}

fn committed() -> (String, Vectors) {
    let text = std::fs::read_to_string(vectors_path()).expect(
        "tests/vectors/format-v1.json is missing; see the header of this file to regenerate",
    );
    let v = serde_json::from_str(&text).unwrap();
    (text, v)
}

#[test]
fn committed_file_matches_derivation() {
    let (text, file) = committed();
    let built = build_vectors();
    // Field by field first, for a readable failure.
    assert_eq!(file.inputs, built.inputs);
    assert_eq!(file.derived, built.derived);
    for (f, b) in file.blobs.iter().zip(&built.blobs) {
        assert_eq!(f, b, "blob {}", b.name);
    }
    assert_eq!(file, built);
    assert_eq!(text, render(&built), "byte-for-byte");
}

// ---- a second derivation, from the primitives and FORMAT.md alone -----------------------

fn hkdf(ikm: &[u8], salt: &[u8], info: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    hkdf::Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info.as_bytes(), &mut out)
        .unwrap();
    out
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The envelope AAD exactly as FORMAT.md lays it out.
fn aad_by_hand(env: &Envelope) -> Vec<u8> {
    let mut a = b"valv/v1 envelope".to_vec();
    a.extend_from_slice(&1u32.to_be_bytes());
    put(&mut a, env.digest.to_string().as_bytes());
    a.extend_from_slice(&env.size.to_be_bytes());
    a.extend_from_slice(&env.segment_size.to_be_bytes());
    a.extend_from_slice(&env.key_generation.to_be_bytes());
    put(&mut a, &salt());
    put(&mut a, &nonce_prefix());
    put(&mut a, &hkdf(&dek(), &salt(), "valv/v1 key commitment"));
    a.extend_from_slice(&(env.parts.len() as u32).to_be_bytes());
    for p in &env.parts {
        put(&mut a, p.object.as_bytes());
        a.extend_from_slice(&p.segments.to_be_bytes());
    }
    a
}

#[test]
fn primitives_agree_with_the_api() {
    let (_, file) = committed();
    let segment_key = hkdf(&dek(), &salt(), "valv/v1 segment key");
    assert_eq!(file.derived.segment_key, hex::encode(segment_key));
    assert_eq!(
        file.derived.commitment,
        hex::encode(hkdf(&dek(), &salt(), "valv/v1 key commitment"))
    );
    let wrap_key = hkdf(&registry_key(), &wrap_salt(), "valv/v1 key wrap");
    assert_eq!(file.derived.wrap_key, hex::encode(wrap_key));
    let aux_key = hkdf(&dek(), &salt(), "valv/v1 session state");
    assert_eq!(file.derived.session_state_key, hex::encode(aux_key));

    let aes = Aes256Gcm::new(&segment_key.into());
    for (spec, blob) in specs().iter().zip(&file.blobs) {
        let seg = spec.segment_size as usize;
        let chunks: Vec<&[u8]> = if spec.plaintext.is_empty() {
            vec![&[]]
        } else {
            spec.plaintext.chunks(seg).collect()
        };
        let mut sealed = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let n = nonce(i as u32, i + 1 == chunks.len());
            assert_eq!(blob.nonces[i], hex::encode(n));
            let ct = aes.encrypt(Nonce::from_slice(&n), *chunk).unwrap();
            if spec.full {
                assert_eq!(
                    blob.segments[i],
                    hex::encode(&ct),
                    "{} segment {i}",
                    spec.name
                );
            }
            sealed.extend_from_slice(&ct);
        }
        assert_eq!(blob.sealed_sha256, hex::encode(Sha256::digest(&sealed)));
        assert_eq!(blob.sealed_len, sealed.len() as u64);

        let env = Envelope::from_json(blob.envelope_json.as_bytes()).unwrap();
        let aad = aad_by_hand(&env);
        assert_eq!(blob.envelope_aad, hex::encode(&aad), "{}", spec.name);
        // The wrapped DEK, by hand: AES-256-GCM under the wrap key, AAD = envelope AAD.
        let wrapped = Aes256Gcm::new(&wrap_key.into())
            .encrypt(
                Nonce::from_slice(&wrap_nonce()),
                Payload {
                    msg: &dek(),
                    aad: &aad,
                },
            )
            .unwrap();
        assert_eq!(env.dek.ciphertext, wrapped);
        assert_eq!(env.dek.salt, wrap_salt());
        assert_eq!(env.dek.nonce, wrap_nonce());
    }

    let sealed_box: SealedBox = serde_json::from_str(&file.session_state.sealed_box_json).unwrap();
    let by_hand = Aes256Gcm::new(&aux_key.into())
        .encrypt(
            Nonce::from_slice(&aux_nonce()),
            Payload {
                msg: SESSION_PLAINTEXT,
                aad: SESSION_AAD,
            },
        )
        .unwrap();
    assert_eq!(sealed_box.ciphertext, by_hand);
    assert_eq!(sealed_box.nonce, aux_nonce());
}

// ---- the committed bytes decrypt ----------------------------------------------------------

fn decrypt(keys: &BlobKeys, size: u64, sealed: Vec<u8>) -> (Result<Vec<u8>, StoreError>, u64) {
    let plan = ReadPlan::for_range(keys.segment_size, size, 0, size);
    let opened = Arc::new(AtomicU64::new(0));
    // Odd-sized input chunks, so segment boundaries never line up with them.
    let input: Vec<Result<Bytes, StoreError>> = sealed
        .chunks(13)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let items = decrypt_stream(
        keys.cipher(),
        plan,
        futures::stream::iter(input).boxed(),
        opened.clone(),
    )
    .collect::<Vec<_>>()
    .now_or_never()
    .expect("input is always ready");
    let mut out = Vec::new();
    for item in items {
        match item {
            Ok(b) => out.extend_from_slice(&b),
            Err(e) => return (Err(e), opened.load(Ordering::Relaxed)),
        }
    }
    (Ok(out), opened.load(Ordering::Relaxed))
}

#[test]
fn committed_ciphertexts_decrypt() {
    let (_, file) = committed();
    let rk = Key32::from_bytes(registry_key());
    for (spec, blob) in specs().iter().zip(&file.blobs) {
        let env = Envelope::from_json(blob.envelope_json.as_bytes()).unwrap();
        assert_eq!(env.digest, Digest::sha256_of(&spec.plaintext));
        let keys = env.open(&rk).unwrap();
        let sealed: Vec<u8> = if spec.full {
            blob.segments
                .iter()
                .flat_map(|s| hex::decode(s).unwrap())
                .collect()
        } else {
            // Only its hash is committed: re-seal, check the hash, then decrypt.
            let s = seal_all(&keys, &spec.plaintext).concat();
            assert_eq!(hex::encode(Sha256::digest(&s)), blob.sealed_sha256);
            s
        };
        let (plain, opened) = decrypt(&keys, env.size, sealed);
        let plain = plain.unwrap();
        assert_eq!(plain, spec.plaintext, "{}", spec.name);
        assert_eq!(Digest::sha256_of(&plain), env.digest);
        assert_eq!(opened, segment_count(env.size, env.segment_size));
    }
    let keys = keys_for(65536);
    let sealed_box: SealedBox = serde_json::from_str(&file.session_state.sealed_box_json).unwrap();
    assert_eq!(
        keys.open_aux(SESSION_AAD, &sealed_box).unwrap(),
        SESSION_PLAINTEXT
    );
}

/// Named bad inputs over the committed vectors: each must fail as one `IntegrityError`.
#[test]
fn committed_vectors_refuse_tampering() {
    let (_, file) = committed();
    let rk = Key32::from_bytes(registry_key());
    let blob = &file.blobs[2];
    let env = Envelope::from_json(blob.envelope_json.as_bytes()).unwrap();
    let segments: Vec<Vec<u8>> = blob
        .segments
        .iter()
        .map(|s| hex::decode(s).unwrap())
        .collect();

    let wrong_rk = Key32::from_bytes(counting(0xa1));
    assert_eq!(
        env.open(&wrong_rk).unwrap_err(),
        IntegrityError,
        "wrong registry key"
    );
    type Edit = fn(&mut Envelope);
    let edits: [(&str, Edit); 5] = [
        ("size", |e| e.size = 34),
        ("digest", |e| e.digest = Digest::sha256_of(b"")),
        ("key_generation", |e| e.key_generation = 2),
        ("parts", |e| e.parts[0].object = "test-vectors/other".into()),
        ("commitment", |e| e.commitment[0] ^= 1),
    ];
    for (name, edit) in edits {
        let mut bad = env.clone();
        edit(&mut bad);
        assert_eq!(bad.open(&rk).unwrap_err(), IntegrityError, "edited {name}");
    }

    let keys = env.open(&rk).unwrap();
    let cases: [(&str, Vec<Vec<u8>>); 4] = [
        ("flipped byte in segment 1", {
            let mut s = segments.clone();
            s[1][3] ^= 1;
            s
        }),
        ("final segment dropped", segments[..2].to_vec()),
        ("segments 0 and 1 swapped", {
            let mut s = segments.clone();
            s.swap(0, 1);
            s
        }),
        ("final segment from another blob", {
            let mut s = segments.clone();
            s[2] = hex::decode(&file.blobs[1].segments[0]).unwrap();
            s
        }),
    ];
    for (name, segs) in cases {
        let (res, _) = decrypt(&keys, env.size, segs.concat());
        assert!(matches!(res, Err(StoreError::Integrity)), "{name}");
    }
    let wrong_dek = BlobKeys {
        dek: Key32::from_bytes(counting(0x01)),
        ..keys_for(16)
    };
    let (res, opened) = decrypt(&wrong_dek, env.size, segments.concat());
    assert!(matches!(res, Err(StoreError::Integrity)), "wrong DEK");
    assert_eq!(opened, 1, "stops at the first segment");
}

/// docs/FORMAT.md quotes the vectors; it must quote the committed ones.
#[test]
fn format_md_quotes_the_committed_vectors() {
    let (_, file) = committed();
    let doc_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/FORMAT.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let mut quoted = vec![
        &file.inputs.dek,
        &file.derived.segment_key,
        &file.derived.commitment,
        &file.derived.wrap_key,
        &file.derived.session_state_key,
        &file.session_state.sealed_box_json,
    ];
    for blob in &file.blobs {
        quoted.extend(&blob.segments);
        quoted.extend([&blob.envelope_aad, &blob.envelope_json, &blob.sealed_sha256]);
    }
    for q in quoted {
        assert!(
            doc.contains(q.as_str()),
            "docs/FORMAT.md does not quote {q}"
        );
    }
}

/// With `VALV_REGENERATE_VECTORS=1`, rewrites `tests/vectors/format-v1.json` from the
/// derivation (after a deliberate format change; review the file's diff before
/// committing it). Without it (CI runs ignored tests too) it checks, as
/// `committed_file_matches_derivation` does, that the file needs no rewrite.
#[test]
#[ignore = "writes the vectors file; run with VALV_REGENERATE_VECTORS=1"]
fn regenerate_vectors() {
    let rendered = render(&build_vectors());
    let path = vectors_path();
    if std::env::var("VALV_REGENERATE_VECTORS").as_deref() != Ok("1") {
        let (text, _) = committed();
        assert!(
            text == rendered,
            "{} is not what the derivation gives: regenerate it (see the header of this file)",
            path.display()
        );
        return;
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, rendered).unwrap();
    eprintln!("wrote {}", path.display());
}

/// FORMAT.md §11.4: the link key and the seal of one tag, through the crate and again
/// from HKDF and HMAC (RustCrypto) with the byte layout of §11.2.
#[test]
fn link_seal_vector() {
    use hmac::Mac as _;
    use storage::crypto::seal::{message, LinkKey, INFO_LINK_SEAL};

    let path = "repositories/team-a/app/_tags/v1";
    let body =
        br#"{"digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}"#;
    let lk = hkdf(&registry_key(), &[], "valv/v1 link seal");
    assert_eq!(INFO_LINK_SEAL, b"valv/v1 link seal");
    let mut by_hand = b"valv/v1 link".to_vec();
    put(&mut by_hand, path.as_bytes());
    by_hand.extend_from_slice(&1u32.to_be_bytes());
    put(&mut by_hand, body);
    assert_eq!(message(path, 1, body), by_hand);
    let mut mac = <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(&lk).unwrap();
    mac.update(&by_hand);
    let seal = mac.finalize().into_bytes();

    let key = LinkKey::derive(&Key32::from_bytes(registry_key()));
    assert_eq!(key.seal(path, 1, body).as_slice(), seal.as_slice());
    assert!(key.verify(path, 1, body, &seal).is_ok());
    assert_eq!(hex::encode(lk), LINK_KEY_1);
    assert_eq!(hex::encode(seal), LINK_SEAL);
}

/// The values FORMAT.md §11.4 prints.
const LINK_KEY_1: &str = "c1f6fef5fb45738efad37a34a5361f46da5ad31a983e94b79b11aad48b56bebb";
const LINK_SEAL: &str = "a59de6d5534b3f4b5c7b7dcd06b8fb8319ee03c403b243a0614cb9b3fe62538f";
