//! Sealing a body into one new data object: the part of every write that touches the
//! bytes (a monolithic push, an append to an upload session, the append that ends
//! one, a manifest).
//!
//! The body is sealed segment by segment as it arrives and written with as few
//! requests as the size allows: one PUT when the sealed bytes fit in one part,
//! otherwise a multipart write of the backend's part size with at most
//! `max_parts_in_flight` parts uploading at once, the body read no faster than they
//! go out. A write that ends the blob puts its final segment into the same object, so
//! a blob pushed in one request is one data object. SHA-256 (or the digest's
//! algorithm) is computed on a blocking thread of its own while the request task
//! seals and writes.

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};

use super::{BodyStream, Store};
use crate::crypto::hash::ResumableHash;
use crate::crypto::segment::Sealer;
use crate::{Result, StoreError};

/// Bytes of body a hashing thread may lag behind its upload (memory bound per upload).
const HASH_LAG_BYTES: usize = 2 * 1024 * 1024;

/// SHA-256 of an upload on a blocking thread of its own, so the costliest per-byte step
/// runs on one core while the request task receives, seals and writes on the other.
/// Body chunks are handed over by reference count, never copied; the thread may lag at
/// most `HASH_LAG_BYTES` behind. Dropping it (an append that failed) ends the thread.
struct BackgroundHash {
    tx: tokio::sync::mpsc::UnboundedSender<(Bytes, tokio::sync::OwnedSemaphorePermit)>,
    lag: std::sync::Arc<tokio::sync::Semaphore>,
    thread: tokio::task::JoinHandle<ResumableHash>,
}

impl BackgroundHash {
    fn start(mut hash: ResumableHash) -> BackgroundHash {
        let (tx, mut rx) =
            tokio::sync::mpsc::unbounded_channel::<(Bytes, tokio::sync::OwnedSemaphorePermit)>();
        let thread = tokio::task::spawn_blocking(move || {
            while let Some((chunk, _permit)) = rx.blocking_recv() {
                hash.update(&chunk);
            }
            hash
        });
        BackgroundHash {
            tx,
            lag: std::sync::Arc::new(tokio::sync::Semaphore::new(HASH_LAG_BYTES)),
            thread,
        }
    }

    /// Queues `chunk`; waits while the thread is `HASH_LAG_BYTES` behind.
    async fn update(&self, chunk: Bytes) -> Result<()> {
        let cost = u32::try_from(chunk.len().clamp(1, HASH_LAG_BYTES)).unwrap_or(u32::MAX);
        let permit = self
            .lag
            .clone()
            .acquire_many_owned(cost)
            .await
            .map_err(|_| hasher_lost())?;
        self.tx.send((chunk, permit)).map_err(|_| hasher_lost())
    }

    /// The state after every queued chunk.
    async fn finish(self) -> Result<ResumableHash> {
        drop(self.tx);
        self.thread.await.map_err(|_| hasher_lost())
    }
}

/// The hashing thread panicked (a bug): the write fails and commits nothing.
fn hasher_lost() -> StoreError {
    StoreError::Internal("the upload's hashing thread stopped".into())
}

/// Whether a write ends the blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// More may follow: the last partial segment is held back (returned as the tail).
    HoldTail,
    /// The body ends the blob: the final segment is sealed into the same object.
    Final,
}

/// What [`Store::seal_into`] wrote.
pub(super) struct Sealed {
    /// Plaintext bytes received from the body.
    pub(super) received: u64,
    /// Segments in the data object (the final one included when it ended the blob);
    /// 0 when nothing was written.
    pub(super) segments: u64,
    /// The plaintext held back, not yet sealed ([`Ending::HoldTail`]), or the plaintext
    /// of the final segment ([`Ending::Final`]).
    pub(super) tail: Vec<u8>,
    /// The hash after the body, when one was given.
    pub(super) hash: Option<ResumableHash>,
}

impl Sealed {
    pub(super) fn written(&self) -> bool {
        self.segments > 0
    }
}

/// One data object being written: held in memory until it outgrows one part, then a
/// multipart write.
enum DataWriter {
    Buffered { parts: Vec<Bytes>, len: usize },
    Multipart(WriteMultipart),
}

impl Store {
    /// Seals `body` after the plaintext `sealer` holds back into a new data object at
    /// `path` (module docs), hashing it on another thread from `hash` when given.
    ///
    /// On an error nothing is left written: a multipart write is aborted, and a
    /// single PUT happens only after the whole body arrived.
    pub(super) async fn seal_into(
        &self,
        path: &Path,
        mut sealer: Sealer,
        hash: Option<ResumableHash>,
        mut body: BodyStream<'_>,
        ending: Ending,
    ) -> Result<Sealed> {
        let hasher = hash.map(BackgroundHash::start);
        let mut writer = DataWriter::Buffered {
            parts: Vec::new(),
            len: 0,
        };
        let mut received = 0u64;
        let mut segments = 0u64;
        let mut sealed = Vec::new();

        let outcome: Result<Vec<u8>> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(StoreError::Body)?;
                received += chunk.len() as u64;
                if let Some(h) = &hasher {
                    h.update(chunk.clone()).await?;
                }
                sealer.push(&chunk, &mut sealed);
                for segment in sealed.drain(..) {
                    segments += 1;
                    self.write_segment(&mut writer, path, segment).await?;
                }
            }
            let tail = sealer.tail().to_vec();
            if ending == Ending::Final {
                segments += 1;
                let last = sealer.finish();
                self.write_segment(&mut writer, path, last).await?;
            }
            Ok(tail)
        }
        .await;
        let outcome = match (outcome, hasher) {
            (Ok(tail), Some(h)) => h.finish().await.map(|hash| (tail, Some(hash))),
            (Ok(tail), None) => Ok((tail, None)),
            (Err(e), _) => Err(e),
        };
        let (tail, hash) = match outcome {
            Ok(done) => done,
            Err(e) => {
                if let DataWriter::Multipart(w) = writer {
                    let _ = w.abort().await;
                }
                return Err(e);
            }
        };
        match writer {
            DataWriter::Buffered { parts, .. } if parts.is_empty() => {}
            DataWriter::Buffered { parts, .. } => {
                self.objects()
                    .put(path, parts.into_iter().collect::<PutPayload>())
                    .await?;
            }
            DataWriter::Multipart(w) => {
                w.finish().await?;
            }
        }
        self.metrics()
            .segments_sealed
            .fetch_add(segments, std::sync::atomic::Ordering::Relaxed);
        Ok(Sealed {
            received,
            segments,
            tail,
            hash,
        })
    }

    /// Adds one sealed segment to the object: buffered while the object fits in one
    /// part, else into the multipart write, waiting while too many parts are in flight
    /// (so the body is read no faster than the object store takes it).
    async fn write_segment(
        &self,
        writer: &mut DataWriter,
        path: &Path,
        segment: Bytes,
    ) -> Result<()> {
        let part_size = self.backend().part_size();
        match writer {
            DataWriter::Buffered { parts, len } if *len + segment.len() <= part_size => {
                *len += segment.len();
                parts.push(segment);
            }
            DataWriter::Buffered { parts, .. } => {
                let upload = self.objects().put_multipart(path).await?;
                let mut w = WriteMultipart::new_with_chunk_size(upload, part_size);
                for p in parts.drain(..) {
                    w.put(p);
                }
                w.put(segment);
                *writer = DataWriter::Multipart(w);
            }
            DataWriter::Multipart(w) => {
                w.put(segment);
                w.wait_for_capacity(self.inner.config.max_parts_in_flight)
                    .await?;
            }
        }
        Ok(())
    }
}
