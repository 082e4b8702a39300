//! `storage::crypto::segment`: the streaming sealer and the decrypt path
//! (`decrypt_stream` over a `ReadPlan`), reading sealed bytes an attacker may have
//! edited.
//!
//! A blob of fuzzer-chosen size and segment size is sealed under the vectors' fixed
//! keys (pushed in fuzzer-chosen pieces), a fuzzer-chosen range of it is planned, and
//! the sealed bytes of that range are edited (bit flips, truncation, insertion, splices
//! from elsewhere in the blob or from another blob, segment swaps, extra bytes) and
//! fed to the opener in fuzzer-chosen chunks.
//!
//! Contract: the sealer's output does not depend on how the input was pushed and
//! equals sealing each segment directly; unedited input decrypts to exactly the
//! range's plaintext; edited input always ends in the one integrity error, and every
//! byte yielded before it is the original plaintext (a prefix of the range): the
//! decrypt path never yields an unauthenticated byte.
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::{FutureExt as _, StreamExt as _};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use storage::crypto::plan::ReadPlan;
use storage::crypto::segment::{decrypt_stream, sealed_len, segment_count, Sealer};
use storage::StoreError;
use valv_fuzz::vector_keys;

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});

fn seal(
    keys: &storage::crypto::keys::BlobKeys,
    plain: &[u8],
    u: &mut Unstructured<'_>,
) -> Result<Vec<u8>> {
    let mut sealer = Sealer::new(keys.cipher(), keys.segment_size, 0, &[]);
    let mut out = Vec::new();
    let mut rest = plain;
    while !rest.is_empty() {
        let n = u.int_in_range(1..=rest.len().min(97))?;
        sealer.push(&rest[..n], &mut out);
        rest = &rest[n..];
    }
    out.push(sealer.finish());
    Ok(out.iter().flat_map(|b| b.iter().copied()).collect())
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let seg: u32 = u.int_in_range(1..=48)?;
    let size: usize = u.int_in_range(0..=400)?;
    let plain: Vec<u8> = (0..size)
        .map(|i| (i as u8).wrapping_mul(31) ^ 0x5a)
        .collect();
    let keys = vector_keys(seg);
    let sealed = seal(&keys, &plain, u)?;
    assert_eq!(sealed.len() as u64, sealed_len(size as u64, seg));

    // The reference: every segment sealed on its own, with its index and last-flag.
    let cipher = keys.cipher();
    let n = segment_count(size as u64, seg) as usize;
    let mut reference = Vec::new();
    for i in 0..n {
        let lo = (i * seg as usize).min(size);
        let hi = ((i + 1) * seg as usize).min(size);
        reference.extend_from_slice(&cipher.seal(i as u32, i + 1 == n, &plain[lo..hi]));
    }
    assert_eq!(
        sealed, reference,
        "the sealer depends on how its input was pushed"
    );

    // Another blob's sealed stream (other nonce prefix), to splice from.
    let mut other_keys = vector_keys(seg);
    other_keys.nonce_prefix[0] ^= 0x80;
    let other = seal(&other_keys, &plain, u)?;

    let start = u.int_in_range(0..=size)?;
    let end = u.int_in_range(start..=size)?;
    let plan = ReadPlan::for_range(seg, size as u64, start as u64, end as u64);
    let r = plan.sealed_range();
    let original = sealed[r.start as usize..r.end as usize].to_vec();
    let mut input = original.clone();

    let stride = seg as usize + 16;
    for _ in 0..u.int_in_range(0..=6u8)? {
        let len = input.len();
        let pos = u.int_in_range(0..=len)?;
        match u.int_in_range(0..=6u8)? {
            0 if pos < len => input[pos] ^= u.int_in_range(1..=255u8)?,
            1 => input.truncate(pos),
            2 => {
                let b: Vec<u8> = (0..u.int_in_range(1..=4usize)?)
                    .map(|_| u.arbitrary())
                    .collect::<Result<_>>()?;
                input.splice(pos..pos, b);
            }
            3 | 4 => {
                let src = if u.arbitrary()? { &sealed } else { &other };
                let from = u.int_in_range(0..=src.len() - 1)?;
                let k = u.int_in_range(1..=src.len() - from)?;
                let to = (pos + k).min(len);
                input.splice(pos..to, src[from..from + k].iter().copied());
            }
            5 if len >= 2 * stride => {
                let segs = len / stride;
                let (a, b) = (u.int_in_range(0..=segs - 1)?, u.int_in_range(0..=segs - 1)?);
                if a != b {
                    let (a, b) = (a.min(b) * stride, a.max(b) * stride);
                    let (head, tail) = input.split_at_mut(b);
                    head[a..a + stride].swap_with_slice(&mut tail[..stride]);
                }
            }
            6 => {
                let from = u.int_in_range(0..=sealed.len() - 1)?;
                input.extend_from_slice(&sealed[from..]);
            }
            _ => {}
        }
    }

    // Chunk sizes cycled over the input; 0 sends an empty chunk.
    let sizes: Vec<usize> = (0..u.int_in_range(1..=4usize)?)
        .map(|_| u.int_in_range(0..=2 * stride))
        .collect::<Result<_>>()?;
    let mut chunks = Vec::new();
    let mut rest = &input[..];
    let mut i = 0;
    while !rest.is_empty() || i == 0 {
        let k = sizes[i % sizes.len()].min(rest.len());
        chunks.push(Ok(Bytes::copy_from_slice(&rest[..k])));
        rest = &rest[k..];
        i += 1;
        if i > 4 * input.len() + 4 {
            // All-zero sizes: finish in one piece.
            chunks.push(Ok(Bytes::copy_from_slice(rest)));
            break;
        }
    }

    let opened = Arc::new(AtomicU64::new(0));
    let items = decrypt_stream(
        keys.cipher(),
        plan,
        futures::stream::iter(chunks).boxed(),
        opened.clone(),
    )
    .collect::<Vec<_>>()
    .now_or_never()
    .expect("all input is ready");

    let expected = &plain[start..end];
    let mut out = Vec::new();
    let mut failed = false;
    for (k, item) in items.iter().enumerate() {
        match item {
            Ok(b) => {
                assert!(!failed && !b.is_empty());
                out.extend_from_slice(b);
            }
            Err(StoreError::Integrity) => {
                assert_eq!(k + 1, items.len(), "the integrity error ends the stream");
                failed = true;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
        assert!(
            expected.starts_with(&out),
            "yielded bytes that are not the plaintext"
        );
    }
    if input == original {
        assert!(!failed, "unedited input failed");
        assert_eq!(out, expected);
        assert_eq!(opened.load(Ordering::Relaxed), plan.segments());
    } else {
        assert!(failed, "edited input was accepted");
    }
    Ok(())
}
