//! Sealing a body into one new data object: the part of every write that touches the
//! bytes (a monolithic push, an append to an upload session, the append that ends
//! one, a manifest).
//!
//! The body is sealed segment by segment as it arrives and written with as few
//! requests as the size allows: one PUT when the sealed bytes fit in one part,
//! otherwise a multipart write of the backend's part size with at most
//! `max_parts_in_flight` parts uploading at once, the body read no faster than they
//! go out.
//!
//! Memory is bounded store-wide, not only per write: every part buffer beyond the
//! first `UNBUDGETED_BYTES` of a write holds a part-sized share of the store's write
//! budget (`StoreConfig::write_buffer_bytes`) from its first byte until its upload
//! ends. A write that finds the budget spent waits before reading more of its body
//! (the client is slowed by TCP, nothing fails). It cannot deadlock: a write waits
//! only while it holds no share of its own for the next part, and every share held is
//! either a part being uploaded (on a task of its own, so it ends) or a part being
//! filled from a body. A write that ends the blob puts its final segment into the same object, so
//! a blob pushed in one request is one data object. SHA-256 (or the digest's
//! algorithm) is computed on a blocking thread of its own while the request task
//! seals and writes.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStoreExt, PutPayload};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::{BodyStream, Store};
use crate::crypto::hash::ResumableHash;
use crate::crypto::segment::Sealer;
use crate::{Result, StoreError};

/// Bytes of body a hashing thread may lag behind its upload (memory bound per upload).
const HASH_LAG_BYTES: usize = 1024 * 1024;

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

/// Bytes of a write buffered without a share of the write budget: what a manifest or
/// an image config needs, so small writes never wait behind large ones.
const UNBUDGETED_BYTES: usize = 256 * 1024;

/// The store-wide bound on bytes buffered for data-object writes (module docs).
#[derive(Debug)]
pub(super) struct WriteBudget {
    permits: Arc<Semaphore>,
    /// Permits one part buffer takes: the part size, as a semaphore count.
    part: u32,
}

impl WriteBudget {
    /// A budget of `bytes` for parts of `part_size`; never less than one part, so a
    /// write can always make progress.
    pub(super) fn new(bytes: usize, part_size: usize) -> WriteBudget {
        let part = u32::try_from(part_size.max(1)).unwrap_or(u32::MAX);
        WriteBudget {
            permits: Arc::new(Semaphore::new(bytes.max(part as usize))),
            part,
        }
    }

    /// A share for one part buffer; waits while the budget is spent.
    async fn part_share(&self) -> Result<OwnedSemaphorePermit> {
        self.permits
            .clone()
            .acquire_many_owned(self.part)
            .await
            .map_err(|_| StoreError::Internal("the write budget was closed".into()))
    }
}

/// A part being filled: its segments, their length, and its share of the budget.
#[derive(Default)]
struct PartBuffer {
    segments: Vec<Bytes>,
    len: usize,
    share: Option<OwnedSemaphorePermit>,
}

impl PartBuffer {
    fn take_payload(&mut self) -> (PutPayload, Option<OwnedSemaphorePermit>) {
        self.len = 0;
        (
            self.segments.drain(..).collect::<PutPayload>(),
            self.share.take(),
        )
    }
}

/// One data object being written: held in memory until it outgrows one part, then a
/// multipart write whose parts upload on tasks of their own, each holding its buffer's
/// share of the budget until it is done.
enum DataWriter {
    Buffered(PartBuffer),
    Multipart {
        upload: Box<dyn MultipartUpload>,
        filling: PartBuffer,
        uploading: JoinSet<Result<()>>,
    },
}

impl DataWriter {
    /// Stops a write that failed: parts in flight are cancelled, a multipart upload
    /// aborted (best effort: an upload left behind is invisible, see OPERATIONS.md).
    async fn abort(self) {
        if let DataWriter::Multipart {
            mut upload,
            mut uploading,
            ..
        } = self
        {
            uploading.abort_all();
            while uploading.join_next().await.is_some() {}
            let _ = upload.abort().await;
        }
    }
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
        let mut writer = DataWriter::Buffered(PartBuffer::default());
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
                writer.abort().await;
                return Err(e);
            }
        };
        self.finish_writer(writer, path).await?;
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
    /// part, else into the multipart write, waiting while too many parts of this write
    /// are in flight or the store's write budget is spent (so the body is read no
    /// faster than the object store takes it).
    async fn write_segment(
        &self,
        writer: &mut DataWriter,
        path: &Path,
        segment: Bytes,
    ) -> Result<()> {
        let part_size = self.backend().part_size();
        let budget = &self.inner.write_budget;
        match writer {
            DataWriter::Buffered(buffer) if buffer.len + segment.len() <= part_size => {
                if buffer.share.is_none() && buffer.len + segment.len() > UNBUDGETED_BYTES {
                    buffer.share = Some(budget.part_share().await?);
                }
                buffer.len += segment.len();
                buffer.segments.push(segment);
            }
            DataWriter::Buffered(buffer) => {
                // More than one part: the buffer and this segment become the first
                // part (every part but the last at least the part size, as S3 needs).
                let mut upload = self.objects().put_multipart(path).await?;
                let mut first = std::mem::take(buffer);
                if first.share.is_none() {
                    first.share = Some(budget.part_share().await?);
                }
                first.len += segment.len();
                first.segments.push(segment);
                let mut uploading = JoinSet::new();
                send_part(&mut upload, &mut first, &mut uploading);
                *writer = DataWriter::Multipart {
                    upload,
                    filling: PartBuffer::default(),
                    uploading,
                };
            }
            DataWriter::Multipart {
                upload,
                filling,
                uploading,
            } => {
                if filling.share.is_none() {
                    filling.share = Some(budget.part_share().await?);
                }
                filling.len += segment.len();
                filling.segments.push(segment);
                if filling.len >= part_size {
                    send_part(upload, filling, uploading);
                    while uploading.len() >= self.inner.config.max_parts_in_flight.max(1) {
                        joined(uploading.join_next().await)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Ends the object: one PUT of what is buffered, or the last part and the
    /// completion of the multipart write once every part is in.
    async fn finish_writer(&self, writer: DataWriter, path: &Path) -> Result<()> {
        match writer {
            DataWriter::Buffered(buffer) if buffer.segments.is_empty() => Ok(()),
            DataWriter::Buffered(mut buffer) => {
                let (payload, _share) = buffer.take_payload();
                self.objects().put(path, payload).await?;
                Ok(())
            }
            DataWriter::Multipart {
                mut upload,
                mut filling,
                mut uploading,
            } => {
                if !filling.segments.is_empty() {
                    send_part(&mut upload, &mut filling, &mut uploading);
                }
                let mut failed = None;
                while let Some(done) = uploading.join_next().await {
                    if let Err(e) = joined(Some(done)) {
                        failed.get_or_insert(e);
                    }
                }
                if let Some(e) = failed {
                    let _ = upload.abort().await;
                    return Err(e);
                }
                upload.complete().await?;
                Ok(())
            }
        }
    }
}

/// Starts uploading what `buffer` holds as the next part, on a task of its own that
/// holds the buffer's share of the budget until the part is stored.
fn send_part(
    upload: &mut Box<dyn MultipartUpload>,
    buffer: &mut PartBuffer,
    uploading: &mut JoinSet<Result<()>>,
) {
    let (payload, share) = buffer.take_payload();
    let part = upload.put_part(payload);
    uploading.spawn(async move {
        let stored = part.await.map_err(StoreError::from);
        drop(share);
        stored
    });
}

/// The outcome of a part's task: its own error, or `Internal` if the task panicked.
fn joined(done: Option<std::result::Result<Result<()>, tokio::task::JoinError>>) -> Result<()> {
    match done {
        None | Some(Ok(Ok(()))) => Ok(()),
        Some(Ok(Err(e))) => Err(e),
        Some(Err(_)) => Err(StoreError::Internal("a part upload stopped".into())),
    }
}
