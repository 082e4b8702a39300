//! Acceptance 5: memory does not grow with size. Storing and reading back a 1 GiB blob
//! (generated on the fly, never held in memory) raises this process's peak RSS
//! (VmHWM) by less than 64 MiB. This file holds a single test so that no other test
//! shares the process and its peak.

mod common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use futures::StreamExt;
use sha2::Digest as _;
use storage::{Algorithm, Digest, RepositoryName};

const GIB: u64 = 1 << 30;
const CHUNK: usize = 1 << 20;

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// 1 GiB of pseudo-random bytes as a stream of 1 MiB chunks, hashed as it is produced.
fn generated(hasher: Arc<Mutex<sha2::Sha256>>) -> storage::BodyStream<'static> {
    futures::stream::iter(0..GIB / CHUNK as u64)
        .map(move |i| {
            let chunk = pseudo_random(0x6D656D + i, CHUNK);
            hasher.lock().expect("hasher").update(&chunk);
            Ok(Bytes::from(chunk))
        })
        .boxed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_blob_round_trip_in_bounded_memory() {
    // The local backend as a `file://` URL opens it, with its own read path.
    let (_dir, backend) = url_backend("file://");
    let key = key_fixture();
    let store = open(&backend, &key).await;
    let repo: RepositoryName = "memory/big".parse().expect("repo");
    let baseline = vm_hwm_kib();

    let hasher = Arc::new(Mutex::new(sha2::Sha256::new()));
    let session = store.create_upload(&repo).await.expect("create");
    let status = store
        .append_upload(&repo, &session.id, Some(0), generated(hasher.clone()))
        .await
        .expect("append 1 GiB");
    assert_eq!(status.offset, GIB);
    let sum = hasher.lock().expect("hasher").clone().finalize();
    let digest = Digest::from_bytes(Algorithm::Sha256, &sum);
    let info = store
        .finish_upload(&repo, &session.id, &digest, None)
        .await
        .expect("finish");
    assert_eq!(info.size, GIB);
    let after_write = vm_hwm_kib();

    let read = store.read_blob(&digest, None).await.expect("open");
    let mut body = read.body;
    let mut check = sha2::Sha256::new();
    let mut total = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("chunk");
        total += chunk.len() as u64;
        check.update(&chunk);
    }
    assert_eq!(total, GIB);
    assert_eq!(check.finalize(), sum, "read back what was written");
    let after_read = vm_hwm_kib();

    eprintln!(
        "VmHWM: baseline {baseline} KiB, after 1 GiB write {after_write} KiB (+{}), after 1 GiB read {after_read} KiB (+{})",
        after_write - baseline,
        after_read - baseline
    );
    assert!(
        after_read - baseline < 64 * 1024,
        "peak RSS grew by {} KiB",
        after_read - baseline
    );
}
