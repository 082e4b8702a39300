//! Segments: AES-256-GCM over fixed-size plaintext pieces, nonce =
//! prefix(7) ‖ index (u32 BE) ‖ last-flag (1 byte), no AAD, 16-byte tag.
//!
//! The index in the nonce stops reordering, the last-flag stops truncation at a segment
//! boundary and extension, and the per-blob key and prefix stop splicing (the STREAM
//! construction of Hoang, Reyhanitabar, Rogaway and Vizár).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, StreamExt};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

use super::keys::Key32;
use super::{IntegrityError, MAX_SEGMENT_SIZE, NONCE_PREFIX_LEN, TAG_LEN};
use crate::StoreError;

/// Number of segments for a blob of `size` plaintext bytes: ceil(size / segment_size),
/// and 1 for the empty blob (one empty final segment).
///
/// # Panics
/// When `segment_size` is 0 (validate envelopes with [`super::envelope::Envelope::open`]).
pub fn segment_count(size: u64, segment_size: u32) -> u64 {
    size.div_ceil(u64::from(segment_size)).max(1)
}

/// Total sealed length of a blob of `size` bytes: size + 16 × segment_count.
///
/// # Panics
/// When `segment_size` is 0.
pub fn sealed_len(size: u64, segment_size: u32) -> u64 {
    size + TAG_LEN as u64 * segment_count(size, segment_size)
}

/// Plaintext length of segment `index` of a blob of `size` bytes (`index` < count).
fn plain_len(size: u64, segment_size: u32, index: u64) -> u64 {
    let seg = u64::from(segment_size);
    if index + 1 >= segment_count(size, segment_size) {
        size.saturating_sub(index * seg)
    } else {
        seg
    }
}

/// Seals and opens the segments of one blob. Cheap to clone.
#[derive(Clone)]
pub struct SegmentCipher {
    // The expanded key schedule is shared: a read or upload clones the cipher into its
    // stream, and re-expanding the key per clone would be wasted work.
    //
    // Segments use ring's AES-256-GCM (the same construction as everywhere else in the
    // format) because it runs at the speed of `openssl speed` on this hardware, about
    // four times RustCrypto's. ring does not zeroize its expanded key schedule when it
    // is dropped; the segment key itself (`Key32`) is zeroized, and a schedule lives
    // only as long as one read or upload request (docs/ARCHITECTURE.md, "Key material").
    aead: Arc<LessSafeKey>,
    prefix: [u8; NONCE_PREFIX_LEN],
}

impl std::fmt::Debug for SegmentCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SegmentCipher([redacted])")
    }
}

impl SegmentCipher {
    /// A cipher from an already derived segment key (see `BlobKeys::cipher`).
    pub(crate) fn new(key: &Key32, prefix: [u8; NONCE_PREFIX_LEN]) -> SegmentCipher {
        let key = match UnboundKey::new(&AES_256_GCM, key.expose()) {
            Ok(key) => key,
            // Only a key of the wrong length is refused, and `Key32` is 32 bytes.
            Err(_) => unreachable!("AES-256-GCM takes a 32-byte key"),
        };
        SegmentCipher {
            aead: Arc::new(LessSafeKey::new(key)),
            prefix,
        }
    }

    fn nonce(&self, index: u32, last: bool) -> Nonce {
        let mut n = [0u8; 12];
        n[..NONCE_PREFIX_LEN].copy_from_slice(&self.prefix);
        n[NONCE_PREFIX_LEN..11].copy_from_slice(&index.to_be_bytes());
        n[11] = u8::from(last);
        // Unique per (key, index, last-flag): every blob and upload session has its own
        // key and prefix, and the sealer never reuses an index.
        Nonce::assume_unique_for_key(n)
    }

    /// Returns plaintext.len() + 16 bytes.
    ///
    /// # Panics
    /// When `plaintext` is longer than AES-GCM allows (64 GiB); segments are at most
    /// [`MAX_SEGMENT_SIZE`].
    pub fn seal(&self, index: u32, last: bool, plaintext: &[u8]) -> Bytes {
        let mut buf = Vec::with_capacity(plaintext.len() + TAG_LEN);
        buf.extend_from_slice(plaintext);
        match self
            .aead
            .seal_in_place_separate_tag(self.nonce(index, last), Aad::empty(), &mut buf)
        {
            Ok(tag) => buf.extend_from_slice(tag.as_ref()),
            Err(_) => panic!("segment longer than AES-GCM allows"),
        }
        Bytes::from(buf)
    }

    /// Opens one sealed segment. Fails when the tag does not verify for this key,
    /// index and last-flag, or when `sealed` is shorter than a tag.
    pub fn open(&self, index: u32, last: bool, sealed: &[u8]) -> Result<Bytes, IntegrityError> {
        self.open_in_place(index, last, BytesMut::from(sealed))
    }

    /// Decrypts in the buffer the ciphertext arrived in, so a read copies each byte once.
    fn open_in_place(
        &self,
        index: u32,
        last: bool,
        mut sealed: BytesMut,
    ) -> Result<Bytes, IntegrityError> {
        if sealed.len() < TAG_LEN {
            return Err(IntegrityError);
        }
        let plain = sealed.len() - TAG_LEN;
        // ring decrypts and authenticates in one pass. On a tag mismatch the buffer may
        // hold unauthenticated plaintext: it is wiped and dropped, never yielded.
        if self
            .aead
            .open_in_place(self.nonce(index, last), Aad::empty(), &mut sealed)
            .is_err()
        {
            sealed.fill(0);
            return Err(IntegrityError);
        }
        sealed.truncate(plain);
        Ok(sealed.freeze())
    }
}

/// Streaming sealer for uploads. It never seals a segment until it knows whether the
/// segment is the last one, so it always holds back between 0 and `segment_size`
/// plaintext bytes (the *tail*). Whole segments are sealed as non-final only once at
/// least one more byte has arrived after them.
pub struct Sealer {
    cipher: SegmentCipher,
    segment_size: usize,
    next_index: u32,
    /// Capacity `segment_size`, allocated once: bytes are copied into it at most once.
    tail: Vec<u8>,
}

impl std::fmt::Debug for Sealer {
    // The tail is blob plaintext: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("segment_size", &self.segment_size)
            .field("next_index", &self.next_index)
            .field("tail_len", &self.tail.len())
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// Resumes sealing at segment `next_index` with a held-back `tail`
    /// (`tail.len() <= segment_size`). A new upload is `Sealer::new(c, size, 0, &[])`.
    ///
    /// # Panics
    /// When `segment_size` is 0 or above [`MAX_SEGMENT_SIZE`], or the tail is longer than a
    /// segment. Use [`Sealer::try_new`] for parameters read back from storage.
    pub fn new(cipher: SegmentCipher, segment_size: u32, next_index: u32, tail: &[u8]) -> Sealer {
        match Sealer::try_new(cipher, segment_size, next_index, tail) {
            Ok(s) => s,
            Err(_) => panic!("invalid sealer parameters"),
        }
    }

    /// [`Sealer::new`] that fails instead of panicking on a segment size outside
    /// `1..=MAX_SEGMENT_SIZE` or a tail longer than one segment (a corrupt session state).
    pub fn try_new(
        cipher: SegmentCipher,
        segment_size: u32,
        next_index: u32,
        tail: &[u8],
    ) -> Result<Sealer, IntegrityError> {
        if !(1..=MAX_SEGMENT_SIZE).contains(&segment_size) || tail.len() > segment_size as usize {
            return Err(IntegrityError);
        }
        let segment_size = segment_size as usize;
        let mut buf = Vec::with_capacity(segment_size);
        buf.extend_from_slice(tail);
        Ok(Sealer {
            cipher,
            segment_size,
            next_index,
            tail: buf,
        })
    }

    /// Seals `plaintext` (exactly one segment) as non-final and advances the index.
    fn seal_full(&mut self, plaintext: &[u8], out: &mut Vec<Bytes>) {
        out.push(self.cipher.seal(self.next_index, false, plaintext));
        // Wrapping would reuse a nonce; a blob of 2^32 segments (256 TiB at 64 KiB) is
        // far beyond anything a registry stores, so stopping hard is the safe answer.
        self.next_index = match self.next_index.checked_add(1) {
            Some(i) => i,
            None => panic!("blob exceeds 2^32 segments"),
        };
    }

    /// Feeds plaintext; appends any segments that became sealable (non-final) to `out`.
    ///
    /// # Panics
    /// When the blob would exceed 2^32 segments (the nonce's index would wrap).
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<Bytes>) {
        let seg = self.segment_size;
        while !data.is_empty() {
            if self.tail.len() == seg {
                // More bytes follow, so the held-back full segment is not the last.
                let tail = std::mem::take(&mut self.tail);
                self.seal_full(&tail, out);
                self.tail = tail;
                self.tail.clear();
            }
            if self.tail.is_empty() && data.len() > seg {
                // Whole segments with more data after them are sealed straight from the
                // input, without passing through the tail buffer.
                let (segment, rest) = data.split_at(seg);
                self.seal_full(segment, out);
                data = rest;
                continue;
            }
            let n = (seg - self.tail.len()).min(data.len());
            self.tail.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
    }

    /// The held-back plaintext (to be stored sealed in the session state).
    pub fn tail(&self) -> &[u8] {
        &self.tail
    }

    /// Index the next sealed segment will get (= number of segments sealed so far).
    pub fn next_index(&self) -> u32 {
        self.next_index
    }

    /// Seals the tail as the final segment (possibly empty).
    pub fn finish(self) -> Bytes {
        self.cipher.seal(self.next_index, true, &self.tail)
    }
}

pub use super::plan::ReadPlan;

/// State of [`decrypt_stream`] between yields.
struct Opener {
    cipher: SegmentCipher,
    plan: ReadPlan,
    input: BoxStream<'static, Result<Bytes, StoreError>>,
    /// Received ciphertext not yet opened; at most one segment plus one input chunk.
    buf: BytesMut,
    /// Next segment to open.
    index: u64,
    end: u64,
    count: u64,
    /// Plaintext still to drop from the next segment (non-zero only for the first).
    skip: u64,
    /// Plaintext still to yield.
    take: u64,
    opened: Arc<AtomicU64>,
    done: bool,
}

impl Opener {
    /// Reads input until `buf` holds `want` bytes. `Ok(false)` when the input ended first.
    async fn fill(&mut self, want: usize) -> Result<bool, StoreError> {
        while self.buf.len() < want {
            match self.input.next().await {
                // A chunk that starts a segment is taken over without a copy when nobody
                // else holds it (local reads arrive as whole segments).
                Some(Ok(chunk)) if self.buf.is_empty() => {
                    self.buf = chunk
                        .try_into_mut()
                        .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
                }
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(e),
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    /// The next item to yield, or `None` at the end. Sets `done` on every error.
    async fn next_item(&mut self) -> Option<Result<Bytes, StoreError>> {
        while !self.done {
            if self.index >= self.end {
                // Every planned segment is out: anything left over is not ours.
                self.done = true;
                if !self.buf.is_empty() {
                    return Some(Err(StoreError::Integrity));
                }
                loop {
                    match self.input.next().await {
                        None => return None,
                        Some(Ok(chunk)) if chunk.is_empty() => continue,
                        Some(Ok(_)) => return Some(Err(StoreError::Integrity)),
                        Some(Err(e)) => return Some(Err(e)),
                    }
                }
            }
            let (Ok(index), true) = (u32::try_from(self.index), self.index < self.count) else {
                // A plan beyond the blob, or an index the nonce cannot hold.
                self.done = true;
                return Some(Err(StoreError::Integrity));
            };
            let plain = plain_len(self.plan.blob_size, self.plan.segment_size, self.index);
            let want = plain as usize + TAG_LEN;
            match self.fill(want).await {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    return Some(Err(StoreError::Integrity));
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
            let sealed = self.buf.split_to(want);
            let last = self.index + 1 == self.count;
            // Counted before the result is known: a failed open still cost a decryption.
            self.opened.fetch_add(1, Ordering::Relaxed);
            let Ok(plaintext) = self.cipher.open_in_place(index, last, sealed) else {
                self.done = true;
                return Some(Err(StoreError::Integrity));
            };
            self.index += 1;
            let from = (self.skip as usize).min(plaintext.len());
            let to = from + (self.take.min((plaintext.len() - from) as u64) as usize);
            self.skip = 0;
            self.take -= (to - from) as u64;
            if to > from {
                return Some(Ok(plaintext.slice(from..to)));
            }
        }
        None
    }
}

/// Decrypts `sealed` (the ciphertext of segments `plan.first_segment..plan.end_segment()`,
/// in any chunking) into plaintext chunks, yielding exactly `plan.take` bytes.
///
/// Each segment is authenticated before any of its bytes is yielded. On the first
/// failure (bad tag, short input, extra input) the stream yields `StoreError::Integrity`
/// once and ends. Input errors are passed through and end the stream. Every segment
/// opened increments `opened` (tests assert only the covering segments are decrypted).
///
/// `opened` counts attempts: a segment whose tag fails is counted too. Segments of the
/// plan whose bytes are all skipped (the one segment of an empty range) are still opened
/// and yield no chunk; empty chunks are never yielded. Memory is one segment plus one
/// input chunk: the input is never collected.
pub fn decrypt_stream(
    cipher: SegmentCipher,
    plan: ReadPlan,
    sealed: BoxStream<'static, Result<Bytes, StoreError>>,
    opened: Arc<AtomicU64>,
) -> BoxStream<'static, Result<Bytes, StoreError>> {
    let (count, end) = if plan.segment_size == 0 {
        // Cannot come from a validated envelope; fail closed rather than divide by zero.
        (0, 1)
    } else {
        (
            segment_count(plan.blob_size, plan.segment_size),
            plan.end_segment(),
        )
    };
    let capacity = (plan.segment_size as usize).min(MAX_SEGMENT_SIZE as usize) + TAG_LEN;
    let opener = Opener {
        cipher,
        plan,
        input: sealed,
        buf: BytesMut::with_capacity(capacity),
        index: plan.first_segment,
        end,
        count,
        skip: plan.skip,
        take: plan.take,
        opened,
        done: false,
    };
    futures::stream::unfold(opener, |mut o| async move {
        let item = o.next_item().await?;
        Some((item, o))
    })
    // Polling an ended `unfold` panics; a body consumer may poll once more.
    .fuse()
    .boxed()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use crate::crypto::keys::BlobKeys;
    use futures::FutureExt as _;
    use proptest::prelude::*;

    const SEG: u32 = 16;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    /// Seals `data` pushed in `chunks` (sizes cycled) and returns the sealed segments.
    fn seal_chunked(keys: &BlobKeys, data: &[u8], chunks: &[usize]) -> Vec<Bytes> {
        let mut sealer = Sealer::new(keys.cipher(), keys.segment_size, 0, &[]);
        let mut out = Vec::new();
        let mut rest = data;
        let mut i = 0;
        while !rest.is_empty() {
            let n = chunks[i % chunks.len()].clamp(1, rest.len());
            sealer.push(&rest[..n], &mut out);
            assert!(sealer.tail().len() <= keys.segment_size as usize);
            rest = &rest[n..];
            i += 1;
        }
        assert_eq!(sealer.next_index() as usize, out.len());
        out.push(sealer.finish());
        out
    }

    fn concat(segments: &[Bytes]) -> Vec<u8> {
        segments.iter().flat_map(|s| s.iter().copied()).collect()
    }

    /// Runs `decrypt_stream` over `sealed` cut into `chunk`-byte pieces; all input is ready,
    /// so the stream completes without an executor.
    fn run(
        keys: &BlobKeys,
        plan: ReadPlan,
        sealed: Vec<u8>,
        chunk: usize,
    ) -> (Vec<Result<Bytes, StoreError>>, u64) {
        let pieces: Vec<Result<Bytes, StoreError>> = sealed
            .chunks(chunk.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let opened = Arc::new(AtomicU64::new(0));
        let out = decrypt_stream(
            keys.cipher(),
            plan,
            futures::stream::iter(pieces).boxed(),
            opened.clone(),
        )
        .collect::<Vec<_>>()
        .now_or_never()
        .expect("input is always ready");
        (out, opened.load(Ordering::Relaxed))
    }

    fn read_all(keys: &BlobKeys, size: u64, sealed: Vec<u8>) -> Result<Vec<u8>, Vec<u8>> {
        let plan = ReadPlan::for_range(keys.segment_size, size, 0, size);
        let (items, _) = run(keys, plan, sealed, 7);
        let mut ok = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item {
                Ok(b) => {
                    assert!(!b.is_empty(), "no empty chunks");
                    ok.extend_from_slice(b);
                }
                Err(StoreError::Integrity) => {
                    assert_eq!(i + 1, items.len(), "the error is the last item");
                    return Err(ok);
                }
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        Ok(ok)
    }

    #[test]
    fn segment_count_and_sealed_len() {
        assert_eq!(segment_count(0, 16), 1);
        assert_eq!(segment_count(1, 16), 1);
        assert_eq!(segment_count(16, 16), 1);
        assert_eq!(segment_count(17, 16), 2);
        assert_eq!(segment_count(48, 16), 3);
        assert_eq!(sealed_len(0, 16), 16);
        assert_eq!(sealed_len(35, 16), 35 + 48);
        assert_eq!(segment_count(u64::MAX, 16), u64::MAX / 16 + 1);
    }

    #[test]
    fn seal_open_binds_index_and_last_flag() {
        let k = BlobKeys::generate(SEG);
        let c = k.cipher();
        let s = c.seal(3, false, b"abc");
        assert_eq!(s.len(), 3 + TAG_LEN);
        assert_eq!(&c.open(3, false, &s).unwrap()[..], b"abc");
        assert!(c.open(3, true, &s).is_err());
        assert!(c.open(2, false, &s).is_err());
        assert!(c.open(3, false, &s[..TAG_LEN - 1]).is_err());
        assert!(BlobKeys::generate(SEG).cipher().open(3, false, &s).is_err());
        assert_eq!(format!("{c:?}"), "SegmentCipher([redacted])");
    }

    #[test]
    fn sealer_segment_shapes() {
        let k = BlobKeys::generate(SEG);
        for (size, shapes) in [
            (0usize, vec![0usize]),
            (1, vec![1]),
            (15, vec![15]),
            (16, vec![16]),
            (17, vec![16, 1]),
            (48, vec![16, 16, 16]),
        ] {
            let segs = seal_chunked(&k, &pattern(size), &[5]);
            let lens: Vec<usize> = segs.iter().map(|s| s.len() - TAG_LEN).collect();
            assert_eq!(lens, shapes, "size {size}");
            assert_eq!(segs.len() as u64, segment_count(size as u64, SEG));
            assert_eq!(concat(&segs).len() as u64, sealed_len(size as u64, SEG));
        }
    }

    #[test]
    fn sealer_resumes_from_tail() {
        let k = BlobKeys::generate(SEG);
        let data = pattern(50);
        let whole = concat(&seal_chunked(&k, &data, &[50]));
        let mut a = Sealer::new(k.cipher(), SEG, 0, &[]);
        let mut out = Vec::new();
        a.push(&data[..21], &mut out);
        let (idx, tail) = (a.next_index(), a.tail().to_vec());
        drop(a);
        let mut b = Sealer::new(k.cipher(), SEG, idx, &tail);
        b.push(&data[21..], &mut out);
        out.push(b.finish());
        assert_eq!(concat(&out), whole);
        assert!(Sealer::try_new(k.cipher(), SEG, 0, &[0; 17]).is_err());
        assert!(Sealer::try_new(k.cipher(), 0, 0, &[]).is_err());
        assert!(Sealer::try_new(k.cipher(), MAX_SEGMENT_SIZE + 1, 0, &[]).is_err());
        let dbg = format!("{:?}", Sealer::new(k.cipher(), SEG, 0, b"secret"));
        assert!(
            !dbg.contains("115"),
            "tail bytes must not be printed: {dbg}"
        );
    }

    #[test]
    fn read_plan_edges() {
        // Empty blob: segment 0 is always covered.
        let p = ReadPlan::for_range(SEG, 0, 0, 0);
        assert_eq!(
            (p.first_segment, p.end_segment(), p.skip, p.take),
            (0, 1, 0, 0)
        );
        assert_eq!(p.sealed_range(), 0..16);
        // Empty range at the very end of a blob of whole segments: the last segment.
        let p = ReadPlan::for_range(SEG, 32, 32, 32);
        assert_eq!((p.first_segment, p.end_segment(), p.skip), (1, 2, 16));
        assert_eq!(p.sealed_range(), 32..64);
        // A range ending exactly on a boundary does not pull in the next segment.
        let p = ReadPlan::for_range(SEG, 40, 16, 32);
        assert_eq!(
            (p.first_segment, p.end_segment(), p.skip, p.take),
            (1, 2, 0, 16)
        );
        assert_eq!(p.sealed_range(), 32..64);
        // The final, short segment's sealed range stops at the end of the stream.
        let p = ReadPlan::for_range(SEG, 40, 39, 40);
        assert_eq!((p.first_segment, p.end_segment(), p.skip), (2, 3, 7));
        assert_eq!(p.sealed_range(), 64..sealed_len(40, SEG));
    }

    #[test]
    fn empty_blob_round_trip() {
        let k = BlobKeys::generate(SEG);
        let segs = seal_chunked(&k, &[], &[1]);
        let (items, opened) = run(&k, ReadPlan::for_range(SEG, 0, 0, 0), concat(&segs), 3);
        assert!(items.is_empty());
        assert_eq!(opened, 1);
        // Polling past the end is harmless (body consumers may do it).
        let mut stream = decrypt_stream(
            k.cipher(),
            ReadPlan::for_range(SEG, 0, 0, 0),
            futures::stream::iter(vec![Ok(segs[0].clone())]).boxed(),
            Arc::new(AtomicU64::new(0)),
        );
        assert!(stream.next().now_or_never().unwrap().is_none());
        assert!(stream.next().now_or_never().unwrap().is_none());
        // An empty blob whose one segment is gone (or not final) must not read as empty.
        assert_eq!(read_all(&k, 0, Vec::new()), Err(Vec::new()));
        let nonfinal = k.cipher().seal(0, false, b"");
        assert_eq!(read_all(&k, 0, nonfinal.to_vec()), Err(Vec::new()));
    }

    #[test]
    fn input_errors_pass_through() {
        let k = BlobKeys::generate(SEG);
        let sealed = concat(&seal_chunked(&k, &pattern(40), &[40]));
        let input = futures::stream::iter(vec![
            Ok(Bytes::copy_from_slice(&sealed[..32])),
            Err(StoreError::BlobUnknown),
            Ok(Bytes::copy_from_slice(&sealed[32..])),
        ]);
        let items = decrypt_stream(
            k.cipher(),
            ReadPlan::for_range(SEG, 40, 0, 40),
            input.boxed(),
            Arc::new(AtomicU64::new(0)),
        )
        .collect::<Vec<_>>()
        .now_or_never()
        .unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(&items[0].as_ref().unwrap()[..], &pattern(16)[..]);
        assert!(matches!(items[1], Err(StoreError::BlobUnknown)));
    }

    // ---- named negative cases -------------------------------------------------------

    /// A 4-segment blob (16+16+16+5 bytes) and its sealed segments.
    fn blob() -> (BlobKeys, Vec<u8>, Vec<Bytes>) {
        let k = BlobKeys::generate(SEG);
        let data = pattern(53);
        let segs = seal_chunked(&k, &data, &[9]);
        assert_eq!(segs.len(), 4);
        (k, data, segs)
    }

    /// Asserts the read fails with Integrity after yielding exactly the first `good`
    /// segments' plaintext, nothing of the damaged segment or later.
    fn assert_fails_after(keys: &BlobKeys, data: &[u8], sealed: Vec<u8>, good: usize) {
        for chunk in [1, 7, 16, 32, 1000] {
            let plan = ReadPlan::for_range(SEG, data.len() as u64, 0, data.len() as u64);
            let (items, _) = run(keys, plan, sealed.clone(), chunk);
            let (last, oks) = items.split_last().expect("at least the error");
            assert!(matches!(last, Err(StoreError::Integrity)), "chunk {chunk}");
            let got: Vec<u8> = oks
                .iter()
                .flat_map(|r| r.as_ref().expect("only the last item fails").to_vec())
                .collect();
            assert_eq!(got, data[..good * SEG as usize], "chunk {chunk}");
        }
    }

    #[test]
    fn flipped_byte_in_segment_k() {
        let (k, data, segs) = blob();
        for seg in 0..segs.len() {
            for at in [0, 5, segs[seg].len() - 1] {
                let mut s = segs.clone();
                let mut v = s[seg].to_vec();
                v[at] ^= 0x80;
                s[seg] = v.into();
                assert_fails_after(&k, &data, concat(&s), seg);
            }
        }
    }

    #[test]
    fn truncated_at_segment_boundary() {
        let (k, data, segs) = blob();
        // Dropping the final segment: segment 2 (sealed non-final) cannot pass as last,
        // so even with the size adjusted to match, it fails.
        let truncated = concat(&segs[..3]);
        assert_fails_after(&k, &data, truncated.clone(), 3);
        let short = &data[..48];
        assert_eq!(read_all(&k, 48, truncated), Err(short[..32].to_vec()));
        // Truncated inside the final segment.
        let all = concat(&segs);
        assert_fails_after(&k, &data, all[..all.len() - 1].to_vec(), 3);
    }

    #[test]
    fn extra_bytes_after_the_blob() {
        let (k, data, segs) = blob();
        let mut s = concat(&segs);
        s.push(0);
        let (items, opened) = run(&k, ReadPlan::for_range(SEG, 53, 0, 53), s, 1000);
        assert_eq!(opened, 4);
        assert!(matches!(items.last(), Some(Err(StoreError::Integrity))));
        // Every segment authenticated, so their bytes were yielded; the error still ends
        // the read so the caller does not report success.
        let got: Vec<u8> = items[..items.len() - 1]
            .iter()
            .flat_map(|r| r.as_ref().unwrap().to_vec())
            .collect();
        assert_eq!(got, data);
    }

    #[test]
    fn two_segments_swapped() {
        let (k, data, mut segs) = blob();
        segs.swap(1, 2);
        assert_fails_after(&k, &data, concat(&segs), 1);
    }

    #[test]
    fn segments_spliced_from_another_blob() {
        let (k, data, segs) = blob();
        let (_, _, other) = blob();
        let mut spliced = segs.clone();
        spliced[2] = other[2].clone();
        assert_fails_after(&k, &data, concat(&spliced), 2);
        // Even under the same DEK and salt (a reused DEK), another blob's nonce prefix
        // makes its segments fail: the prefix is part of every nonce.
        let k2 = BlobKeys {
            dek: crate::crypto::keys::Key32::from_bytes(*k.dek.expose()),
            salt: k.salt,
            nonce_prefix: [0xee; 7],
            segment_size: SEG,
        };
        let mut spliced = segs.clone();
        spliced[1] = seal_chunked(&k2, &data, &[53])[1].clone();
        assert_fails_after(&k, &data, concat(&spliced), 1);
    }

    #[test]
    fn wrong_dek() {
        let (_, data, segs) = blob();
        let other = BlobKeys::generate(SEG);
        assert_fails_after(&other, &data, concat(&segs), 0);
    }

    // ---- property tests -------------------------------------------------------------

    fn sizes() -> impl Strategy<Value = usize> {
        let s = SEG as usize;
        prop_oneof![
            Just(0),
            Just(1),
            Just(s - 1),
            Just(s),
            Just(s + 1),
            Just(3 * s),
            Just(3 * s - 1),
            Just(3 * s + 1),
            0..(6 * s),
        ]
    }

    proptest! {
        #[test]
        fn sealer_round_trips_any_chunking(
            size in sizes(),
            chunks in proptest::collection::vec(1usize..40, 1..8),
            read_chunk in 1usize..60,
        ) {
            let k = BlobKeys::generate(SEG);
            let data = pattern(size);
            let segs = seal_chunked(&k, &data, &chunks);
            prop_assert_eq!(segs.len() as u64, segment_count(size as u64, SEG));
            let sealed = concat(&segs);
            prop_assert_eq!(sealed.len() as u64, sealed_len(size as u64, SEG));
            let plan = ReadPlan::for_range(SEG, size as u64, 0, size as u64);
            let (items, opened) = run(&k, plan, sealed, read_chunk);
            let got: Vec<u8> = items.into_iter().flat_map(|r| r.unwrap().to_vec()).collect();
            prop_assert_eq!(got, data);
            prop_assert_eq!(opened, segs.len() as u64);
        }

        #[test]
        fn ranges_yield_exact_bytes_and_open_only_covering_segments(
            size in sizes(),
            a in 0.0f64..=1.0,
            b in 0.0f64..=1.0,
            read_chunk in 1usize..60,
        ) {
            let k = BlobKeys::generate(SEG);
            let data = pattern(size);
            let sealed = concat(&seal_chunked(&k, &data, &[size.max(1)]));
            let (x, y) = ((a * size as f64) as u64, (b * size as f64) as u64);
            let (start, end) = (x.min(y), x.max(y));
            let plan = ReadPlan::for_range(SEG, size as u64, start, end);
            let r = plan.sealed_range();
            let (items, opened) =
                run(&k, plan, sealed[r.start as usize..r.end as usize].to_vec(), read_chunk);
            let got: Vec<u8> = items.into_iter().flat_map(|r| r.unwrap().to_vec()).collect();
            prop_assert_eq!(&got[..], &data[start as usize..end as usize]);
            let seg = u64::from(SEG);
            let covering = if start == end {
                1
            } else {
                (end - 1) / seg - start / seg + 1
            };
            prop_assert_eq!(opened, covering);
            prop_assert_eq!(plan.segments(), covering);
        }

        #[test]
        fn large_segment_size_round_trips(
            size in prop_oneof![Just(0usize), Just(1), Just(4095), Just(4096), Just(4097), 0usize..20_000],
            chunk in 1usize..9000,
        ) {
            let k = BlobKeys::generate(4096);
            let data = pattern(size);
            let segs = seal_chunked(&k, &data, &[chunk]);
            let plan = ReadPlan::for_range(4096, size as u64, 0, size as u64);
            let (items, _) = run(&k, plan, concat(&segs), chunk);
            let got: Vec<u8> = items.into_iter().flat_map(|r| r.unwrap().to_vec()).collect();
            prop_assert_eq!(got, data);
        }
    }
}
