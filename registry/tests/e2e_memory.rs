//! Bounded memory (issue 3, acceptance 7): valv's peak RSS while pushing and then
//! pulling a 1 GiB blob stays under 64 MiB.
//!
//! The blob is generated on the fly (nothing holds it, on either side) and pushed the
//! way docker pushes: POST, one streamed PATCH without `Content-Range`, `PUT ?digest=`.
//! The pull streams it back through SHA-256. The figure is VmHWM of the valv process,
//! which covers its whole life (start-up and key creation included).
//!
//! Not ignored: it takes well under a minute in a debug build (about 17 s here).

mod common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::{client, hex_digest, location_path, Valv};
use futures::StreamExt;
use reqwest::StatusCode;
use sha2::Digest as _;

const MIB: u64 = 1024 * 1024;
const BLOB_SIZE: u64 = 1024 * MIB;
const RSS_LIMIT_KIB: u64 = 64 * 1024;

/// splitmix64 over a counter: fast, seekable, and good enough that no compression or
/// deduplication could shrink the work.
fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    debug_assert_eq!(offset % 8, 0);
    for (i, chunk) in buf.chunks_mut(8).enumerate() {
        let mut z =
            seed.wrapping_add((offset / 8 + i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_pull_1gib_blob_peak_rss_under_64mib() {
    let dir = tempfile::tempdir().expect("tempdir");
    let valv = Valv::start(dir.path(), &[]);
    let http = client();
    let repo = "e2e/memory";
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7);
    let rss_at_start = valv.peak_rss_kib();

    // Push: the body stream hashes what it produces, so the digest is known when the
    // PATCH completes.
    let started = std::time::Instant::now();
    let resp = http
        .post(valv.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .expect("POST upload");
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "POST /blobs/uploads/");
    let loc = location_path(&resp);
    let hasher = Arc::new(Mutex::new(sha2::Sha256::new()));
    let body = {
        let hasher = hasher.clone();
        futures::stream::unfold(0u64, move |sent| {
            let hasher = hasher.clone();
            async move {
                if sent >= BLOB_SIZE {
                    return None;
                }
                let n = (BLOB_SIZE - sent).min(MIB);
                let mut buf = vec![0u8; n as usize];
                fill(seed, sent, &mut buf);
                hasher.lock().expect("hasher").update(&buf);
                Some((Ok::<Bytes, std::io::Error>(Bytes::from(buf)), sent + n))
            }
        })
    };
    let resp = http
        .patch(valv.url(&loc))
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .expect("streamed PATCH");
    assert_eq!(
        resp.status(),
        StatusCode::ACCEPTED,
        "streamed PATCH of 1 GiB"
    );
    let loc = location_path(&resp);
    let digest = hex_digest(std::mem::take(&mut *hasher.lock().expect("hasher")));
    let sep = if loc.contains('?') { '&' } else { '?' };
    let resp = http
        .put(valv.url(&format!("{loc}{sep}digest={digest}")))
        .send()
        .await
        .expect("closing PUT");
    assert_eq!(resp.status(), StatusCode::CREATED, "closing PUT");
    let push_secs = started.elapsed().as_secs_f64();
    let rss_after_push = valv.peak_rss_kib();

    // Pull: stream, hash, count.
    let started = std::time::Instant::now();
    let resp = http
        .get(valv.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .expect("GET blob");
    assert_eq!(resp.status(), StatusCode::OK, "GET blob");
    let mut h = sha2::Sha256::new();
    let mut size = 0u64;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("blob chunk");
        size += chunk.len() as u64;
        h.update(&chunk);
    }
    let pull_secs = started.elapsed().as_secs_f64();
    assert_eq!(size, BLOB_SIZE, "pulled size");
    assert_eq!(hex_digest(h), digest, "pulled digest");

    let peak = valv.peak_rss_kib();
    eprintln!(
        "valv peak RSS (VmHWM): {peak} KiB = {:.1} MiB (after start {rss_at_start} KiB, after push {rss_after_push} KiB); \
         1 GiB push {push_secs:.1} s ({:.0} MiB/s), pull {pull_secs:.1} s ({:.0} MiB/s)",
        peak as f64 / 1024.0,
        1024.0 / push_secs,
        1024.0 / pull_secs,
    );
    assert!(
        peak < RSS_LIMIT_KIB,
        "valv peak RSS {peak} KiB is not under {RSS_LIMIT_KIB} KiB"
    );
}
