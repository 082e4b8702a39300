//! `storage::crypto::envelope`: the per-blob envelope, as read back from a store an
//! attacker may have written to.
//!
//! Contract: never panics; what parses survives its own JSON form; an envelope that
//! opens under the vectors' registry key is, field for field (all but the wrapped
//! DEK's encoding), one of the committed vector envelopes, and yields exactly their
//! DEK, salt, nonce prefix and segment size: an edited envelope never opens, and never
//! to other keys. The sealed-length and read-plan arithmetic of any opened envelope
//! runs without overflow.
//! Input: byte 0 even = the rest is the envelope JSON; odd = byte 1 picks a vector
//! envelope and the rest drives `valv_fuzz::mutate` over it.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use storage::crypto::envelope::Envelope;
use storage::crypto::keys::Key32;
use storage::crypto::plan::ReadPlan;
use storage::crypto::segment::sealed_len;
use valv_fuzz::{mutate, DEK, NONCE_PREFIX, RK_1, SALT, VECTOR_ENVELOPES};

fn vectors() -> &'static Vec<Envelope> {
    static V: OnceLock<Vec<Envelope>> = OnceLock::new();
    V.get_or_init(|| {
        VECTOR_ENVELOPES
            .iter()
            .map(|j| Envelope::from_json(j.as_bytes()).expect("vector envelope"))
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let Some((&v, rest)) = rest.split_first() else {
            return;
        };
        let mut bytes = VECTOR_ENVELOPES[usize::from(v) % 4].as_bytes().to_vec();
        let _ = mutate(&mut bytes, &mut Unstructured::new(rest));
        bytes
    };
    let Ok(env) = Envelope::from_json(&bytes) else {
        return;
    };
    assert_eq!(Envelope::from_json(&env.to_json()).as_ref(), Ok(&env));
    let _ = env.aad();
    let lengths = env.sealed_part_lengths();

    let rk = Key32::from_bytes(RK_1);
    let Ok(keys) = env.open(&rk) else {
        return;
    };
    let aad = env.aad();
    let vector = vectors()
        .iter()
        .find(|v| v.aad() == aad)
        .unwrap_or_else(|| panic!("an envelope that is no vector opened: {env:?}"));
    assert_eq!(vector, &env, "an opened envelope differs from its vector");
    assert_eq!(keys.dek.expose(), &DEK);
    assert_eq!((keys.salt, keys.nonce_prefix), (SALT, NONCE_PREFIX));
    assert_eq!(keys.segment_size, vector.segment_size);

    let lengths = lengths.expect("an opened envelope's parts add up");
    let total = sealed_len(env.size, env.segment_size);
    assert_eq!(lengths.iter().sum::<u64>(), total);
    let plan = ReadPlan::for_range(env.segment_size, env.size, 0, env.size);
    assert_eq!(plan.sealed_range(), 0..total);
    let covered: u64 = plan
        .part_ranges(&lengths)
        .iter()
        .map(|(_, r)| r.end - r.start)
        .sum();
    assert_eq!(covered, total);
});
