//! `storage::keyring`: the keyring document as `load_or_create` reads it back from a
//! store an attacker may have written to, unwrapped by a test KEK
//! (`valv_fuzz::kek`).
//!
//! Contract: never panics; the legitimate document loads to its two registry keys;
//! a document that loads has version 1, unique generation numbers and exactly one
//! active generation, every key it yields is one the KEK really wrapped (malformed
//! bytes are refused, never accepted with other keys), and each generation's key is
//! the one its own wrapped bytes hold.
//! Input: byte 0 even = the rest is the keyring object; odd = edits of the legitimate
//! one.
#![no_main]

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use kms_client::{Kek, KeyId, VersionedKeyId};
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use storage::keyring::{load_or_create, GenerationState};
use storage::paths::ObjectPath;
use valv_fuzz::kek::{legit_keyring, TestKek, KEY_ID, RKS};
use valv_fuzz::{mutate, runtime};

fn legit() -> &'static [u8] {
    static L: OnceLock<Vec<u8>> = OnceLock::new();
    L.get_or_init(legit_keyring)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let mut b = legit().to_vec();
        let _ = mutate(&mut b, &mut Unstructured::new(rest));
        b
    };
    let objects: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let kek: Arc<dyn Kek> = Arc::new(TestKek);
    let key_id: KeyId = KEY_ID.parse().expect("key id");
    let loaded = runtime().block_on(async {
        objects
            .put(
                &ObjectPath::KeyringVersion(1).to_path(),
                PutPayload::from(bytes.clone()),
            )
            .await
            .expect("in-memory put");
        load_or_create(&objects, &kek, &key_id).await
    });
    if bytes == legit() {
        let k = loaded.as_ref().expect("the legitimate keyring loads");
        assert_eq!(k.key(1).expect("generation 1").expose(), &RKS[0]);
        assert_eq!(k.key(2).expect("generation 2").expose(), &RKS[1]);
        assert_eq!(k.active().0, 2);
    }
    let Ok(k) = loaded else {
        return;
    };
    assert_eq!(k.doc.version, 1);
    let gens: BTreeSet<u32> = k.doc.generations.iter().map(|g| g.generation).collect();
    assert_eq!(
        gens.len(),
        k.doc.generations.len(),
        "duplicate generations accepted"
    );
    let active: Vec<_> = k
        .doc
        .generations
        .iter()
        .filter(|g| g.state == GenerationState::Active)
        .collect();
    assert_eq!(active.len(), 1, "not exactly one active generation");
    let (n, key) = k.active();
    assert_eq!(n, active[0].generation);
    assert_eq!(k.active_generation().map(|g| g.generation), Some(n));
    assert!(RKS.contains(key.expose()));
    for g in &k.doc.generations {
        let key = k.key(g.generation).expect("every generation has a key");
        assert!(RKS.contains(key.expose()), "a key the KEK never wrapped");
        use base64::Engine as _;
        let wrapped = base64::engine::general_purpose::STANDARD
            .decode(&g.wrapped)
            .expect("accepted wrapped bytes are base64");
        assert_eq!(
            &wrapped[..32],
            key.expose(),
            "generation {} has another's key",
            g.generation
        );
        let kek: Option<VersionedKeyId> = g.kek.parse().ok();
        assert_eq!(k.kek_of(g.generation), kek.as_ref());
    }
});
