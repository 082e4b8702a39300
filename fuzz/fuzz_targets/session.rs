//! Upload-session state read back from the store: the sealed box of the held-back
//! tail and hash state (`BlobKeys::open_aux`, FORMAT.md §7), and the resumable hash
//! state inside it (`ResumableHash::import`, §7.1).
//!
//! Contract: never panics; a box that opens under the vectors' keys and AAD is the
//! vector box and yields exactly its plaintext (an edited box never opens); an
//! imported hash state exports back to exactly the bytes imported, and can go on
//! hashing.
//! Input: byte 0 % 3 = 0: the rest is a sealed box's JSON; 1: edits of the vector
//! box; 2: the rest is an exported hash state.
#![no_main]

use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use storage::crypto::hash::ResumableHash;
use storage::crypto::keys::SealedBox;
use valv_fuzz::{mutate, vector_keys, SESSION_AAD, SESSION_BOX, SESSION_PLAINTEXT};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        2 => {
            if let Ok(mut h) = ResumableHash::import(rest) {
                assert_eq!(h.export(), rest, "hash state does not round-trip");
                assert_eq!(h.len(), {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&rest[2..10]);
                    u64::from_be_bytes(b)
                });
                let _ = h.digest();
                if h.len() < u64::MAX / 16 {
                    h.update(b"more");
                    let _ = h.digest();
                    assert!(ResumableHash::import(&h.export()).is_ok());
                }
            }
        }
        m => {
            let bytes = if m == 0 {
                rest.to_vec()
            } else {
                let mut b = SESSION_BOX.as_bytes().to_vec();
                let _ = mutate(&mut b, &mut Unstructured::new(rest));
                b
            };
            let Ok(sealed) = serde_json::from_slice::<SealedBox>(&bytes) else {
                return;
            };
            let keys = vector_keys(65536);
            if let Ok(plain) = keys.open_aux(SESSION_AAD, &sealed) {
                let vector: SealedBox = serde_json::from_str(SESSION_BOX).expect("vector box");
                assert_eq!(sealed, vector, "an edited box opened");
                assert_eq!(plain, SESSION_PLAINTEXT);
            }
        }
    }
});
