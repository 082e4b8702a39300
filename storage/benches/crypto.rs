//! Microbenchmarks of the per-byte work: sealing and opening 64 KiB segments with
//! AES-256-GCM, and SHA-256 as uploads hash. Compare with `openssl speed -bytes 65536
//! -evp aes-256-gcm` and `-evp sha256` on the same machine (bench/crypto-vs-openssl.sh
//! runs both and prints the ratios).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use storage::crypto::hash::ResumableHash;
use storage::crypto::keys::BlobKeys;
use storage::crypto::segment::Sealer;
use storage::crypto::SEGMENT_SIZE;
use storage::Algorithm;

const SEG: usize = SEGMENT_SIZE as usize;

fn segments(c: &mut Criterion) {
    let keys = BlobKeys::generate(SEGMENT_SIZE);
    let cipher = keys.cipher();
    let plaintext = vec![0x5au8; SEG];
    let sealed = cipher.seal(7, false, &plaintext);

    let mut g = c.benchmark_group("segment-64KiB");
    g.throughput(Throughput::Bytes(SEG as u64));
    g.bench_function("seal", |b| {
        b.iter(|| cipher.seal(black_box(7), false, black_box(&plaintext)))
    });
    g.bench_function("open", |b| {
        b.iter(|| cipher.open(black_box(7), false, black_box(&sealed)))
    });
    g.finish();

    // The upload path: 1 MiB body chunks through the streaming sealer.
    let chunk = vec![0xa5u8; 1024 * 1024];
    let mut g = c.benchmark_group("sealer-1MiB-chunks");
    g.throughput(Throughput::Bytes(chunk.len() as u64));
    g.bench_function("push", |b| {
        let mut sealer = Sealer::new(keys.cipher(), SEGMENT_SIZE, 0, &[]);
        let mut out = Vec::new();
        b.iter(|| {
            sealer.push(black_box(&chunk), &mut out);
            out.clear();
            if sealer.next_index() > 1 << 30 {
                sealer = Sealer::new(keys.cipher(), SEGMENT_SIZE, 0, &[]);
            }
        })
    });
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let data = vec![0x3cu8; SEG];
    let mut g = c.benchmark_group("hash-64KiB");
    g.throughput(Throughput::Bytes(SEG as u64));
    g.bench_function("sha256", |b| {
        let mut h = ResumableHash::new(Algorithm::Sha256);
        b.iter(|| h.update(black_box(&data)))
    });
    g.bench_function("sha512", |b| {
        let mut h = ResumableHash::new(Algorithm::Sha512);
        b.iter(|| h.update(black_box(&data)))
    });
    g.finish();
}

criterion_group!(benches, segments, hashing);
criterion_main!(benches);
