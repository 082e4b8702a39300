//! Acceptance 4: range reads are exact. A property test over blob sizes 0, 1, 65535,
//! 65536, 65537 and several MiB with random ranges: every read returns exactly the
//! expected bytes and decrypts only the segments covering the range.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use storage::{Digest, RangeSpec, RepositoryName, StoreError};

const SEG: u64 = 65536;
const SIZES: [usize; 6] = [0, 1, 65535, 65536, 65537, 3 * 1024 * 1024 + 12345];

/// Plaintext range a spec selects, or None when unsatisfiable (RFC 9110).
fn expected(spec: RangeSpec, size: u64) -> Option<(u64, u64)> {
    match spec {
        RangeSpec::From(a) if a < size => Some((a, size)),
        RangeSpec::FromTo(a, b) if a <= b && a < size => Some((a, size.min(b + 1))),
        RangeSpec::Suffix(n) if n > 0 && size > 0 => Some((size.saturating_sub(n), size)),
        _ => None,
    }
}

fn covering_segments(start: u64, end: u64) -> u64 {
    (end - 1) / SEG - start / SEG + 1
}

fn spec_strategy() -> impl Strategy<Value = (usize, RangeSpec)> {
    (0..SIZES.len(), any::<u64>(), any::<u64>(), 0u8..4).prop_map(|(i, x, y, kind)| {
        let size = SIZES[i] as u64;
        // Mostly in range, sometimes just past the end.
        let bound = size + 2;
        let a = x % bound.max(1);
        let b = y % bound.max(1);
        let spec = match kind {
            0 => RangeSpec::From(a),
            1 => RangeSpec::FromTo(a.min(b), a.max(b)),
            2 => RangeSpec::Suffix(b),
            _ => RangeSpec::FromTo(a, a + (y % (3 * SEG))),
        };
        (i, spec)
    })
}

#[test]
fn range_reads_are_exact_and_decrypt_only_covering_segments() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (_b, objects) = Backend::memory();
    let key = key_fixture();
    let store = rt.block_on(open(&objects, &key));
    let repo: RepositoryName = "ranges/test".parse().expect("repo");
    let blobs: Vec<(Vec<u8>, Digest)> = SIZES
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let data = pseudo_random(100 + i as u64, size);
            let digest = Digest::sha256_of(&data);
            rt.block_on(store.put_blob(&repo, &digest, one(&data)))
                .expect("put");
            (data, digest)
        })
        .collect();

    let check = |(i, spec): (usize, RangeSpec)| -> Result<(), TestCaseError> {
        let (data, digest) = &blobs[i];
        let size = data.len() as u64;
        let before = store.metrics().segments_opened.load(Ordering::SeqCst);
        let result = rt.block_on(store.read_blob(digest, Some(spec)));
        match expected(spec, size) {
            None => {
                prop_assert!(
                    matches!(result, Err(StoreError::RangeNotSatisfiable { size: s }) if s == size),
                    "{spec:?} on {size}: {result:?}"
                );
                prop_assert_eq!(
                    store.metrics().segments_opened.load(Ordering::SeqCst),
                    before,
                    "nothing decrypted for a 416"
                );
            }
            Some((start, end)) => {
                let read =
                    result.map_err(|e| TestCaseError::fail(format!("{spec:?} on {size}: {e}")))?;
                prop_assert_eq!(read.range.clone(), start..end);
                prop_assert!(read.partial);
                let (bytes, err) = rt.block_on(drain(read.body));
                prop_assert!(err.is_none(), "{:?}", err);
                prop_assert_eq!(
                    &bytes[..],
                    &data[start as usize..end as usize],
                    "{:?} on {}",
                    spec,
                    size
                );
                let opened = store.metrics().segments_opened.load(Ordering::SeqCst) - before;
                prop_assert_eq!(
                    opened,
                    covering_segments(start, end),
                    "{:?} on {}: segments decrypted",
                    spec,
                    size
                );
            }
        }
        Ok(())
    };

    // Fixed edge cases first, then random ones.
    let mut fixed = Vec::new();
    for (i, &size) in SIZES.iter().enumerate() {
        let size = size as u64;
        for spec in [
            RangeSpec::From(0),
            RangeSpec::From(size.saturating_sub(1)),
            RangeSpec::FromTo(0, 0),
            RangeSpec::FromTo(SEG - 1, SEG),
            RangeSpec::FromTo(SEG, SEG),
            RangeSpec::Suffix(1),
            RangeSpec::Suffix(SEG + 1),
            RangeSpec::From(size),
        ] {
            fixed.push((i, spec));
        }
    }
    for case in fixed {
        check(case).unwrap_or_else(|e| panic!("{case:?}: {e}"));
    }
    let mut runner = TestRunner::new(Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    });
    runner.run(&spec_strategy(), check).expect("property holds");

    // Whole-blob reads decrypt every segment exactly once.
    for (data, digest) in &blobs {
        let before = store.metrics().segments_opened.load(Ordering::SeqCst);
        let read = rt.block_on(store.read_blob(digest, None)).expect("read");
        assert!(!read.partial);
        let (bytes, err) = rt.block_on(drain(read.body));
        assert!(err.is_none());
        assert_eq!(&bytes, data);
        let segments = (data.len() as u64).div_ceil(SEG).max(1);
        assert_eq!(
            store.metrics().segments_opened.load(Ordering::SeqCst) - before,
            segments
        );
    }
}

#[test]
fn range_reads_span_chunked_upload_parts() {
    // A blob pushed in uneven chunks is stored as several data objects; ranges that
    // cross their boundaries must still be exact.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (_b, objects) = Backend::memory();
    let key = key_fixture();
    let store = rt.block_on(open(&objects, &key));
    let repo: RepositoryName = "ranges/parts".parse().expect("repo");
    let data = pseudo_random(77, 5 * SEG as usize + 999);
    let digest = Digest::sha256_of(&data);
    rt.block_on(async {
        let s = store.create_upload(&repo).await.expect("create");
        let mut off = 0;
        for len in [1usize, 65535, 65537, 3, 100_000] {
            store
                .append_upload(&repo, &s.id, Some(off as u64), one(&data[off..off + len]))
                .await
                .expect("append");
            off += len;
        }
        store
            .finish_upload(
                &repo,
                &s.id,
                &digest,
                Some((Some(off as u64), one(&data[off..]))),
            )
            .await
            .expect("finish");
    });
    let parts = rt
        .block_on(all_objects(&objects))
        .into_iter()
        .filter(|p| p.starts_with("data/"))
        .count();
    assert!(parts >= 3, "several data objects: {parts}");
    let size = data.len() as u64;
    for start in (0..size).step_by(9973) {
        for len in [1u64, 17, SEG - 1, SEG, SEG + 1, 2 * SEG + 5] {
            let end = (start + len).min(size);
            let read = rt
                .block_on(store.read_blob(&digest, Some(RangeSpec::FromTo(start, end - 1))))
                .expect("read");
            let (bytes, err) = rt.block_on(drain(read.body));
            assert!(err.is_none(), "{err:?}");
            assert_eq!(
                &bytes[..],
                &data[start as usize..end as usize],
                "{start}..{end}"
            );
        }
    }
}
