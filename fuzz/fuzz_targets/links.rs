//! Repository links read back from the store (`crypto::seal::open_object`, FORMAT.md
//! §11): blob links, manifest links, tags and referrers entries a bucket writer may
//! have written.
//!
//! Contract: never panics; an object that opens as sealed at the vector path under the
//! vectors' link key carries exactly the one body ever sealed there (edits, forgeries
//! and splices never open), and never opens at another path or under another key; an
//! unsealed object is handed back whole. Any JSON body seals and opens back to itself
//! (without the whitespace around it, which is not stored).
//! Input: byte 0 % 3 = 0: the rest is the stored object; 1: edits of the sealed vector
//! tag; 2: the rest (as UTF-8) is a body to seal and open again.
#![no_main]

use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use storage::crypto::keys::Key32;
use storage::crypto::seal::{open_object, seal_object, LinkKey, Opened};
use valv_fuzz::{mutate, LINK_BODY, LINK_PATH, RK_1};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = LinkKey::derive(&Key32::from_bytes(RK_1));
    let other = LinkKey::derive(&Key32::from_bytes([0x55; 32]));
    let keys = |g: u32| (g == 1).then_some(&key);
    match mode % 3 {
        2 => {
            let Ok(body) = std::str::from_utf8(rest) else {
                return;
            };
            let Ok(object) = seal_object(&key, 1, LINK_PATH, body.to_owned()) else {
                return;
            };
            let opened = open_object(LINK_PATH, &object, keys).expect("a fresh seal opens");
            // What is stored (and sealed) is the value without the JSON whitespace
            // around it.
            let stored = body.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'));
            assert_eq!(
                opened,
                Opened::Sealed {
                    generation: 1,
                    body: stored
                }
            );
            assert!(open_object("repositories/other/_tags/v1", &object, keys).is_err());
        }
        m => {
            let bytes = if m == 0 {
                rest.to_vec()
            } else {
                let mut b =
                    seal_object(&key, 1, LINK_PATH, LINK_BODY.to_owned()).expect("vector seals");
                let _ = mutate(&mut b, &mut Unstructured::new(rest));
                b
            };
            match open_object(LINK_PATH, &bytes, keys) {
                Ok(Opened::Sealed { generation, body }) => {
                    // The only body ever sealed at this path under this key.
                    assert_eq!((generation, body), (1, LINK_BODY), "a forged link opened");
                    assert!(open_object("repositories/other/_tags/v1", &bytes, keys).is_err());
                    assert!(open_object(LINK_PATH, &bytes, |_| Some(&other)).is_err());
                }
                Ok(Opened::Unsealed(whole)) => assert_eq!(whole, &bytes[..]),
                Err(_) => {}
            }
        }
    }
});
