//! Committed blobs: stat, ranged streaming reads, deletes, repository links.

use std::ops::Range;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use super::objects;
use super::{BlobInfo, BlobRead, ByteStream, RangeSpec, Store};
use crate::crypto::envelope::Envelope;
use crate::crypto::keys::BlobKeys;
use crate::crypto::plan::{sealed_segment_len, ReadPlan};
use crate::crypto::segment::decrypt_stream;
use crate::names::{Digest, RepositoryName};
use crate::paths::{DataObject, ObjectPath};
use crate::{Result, StoreError};

/// Resolves a client's range against a blob of `size` bytes (RFC 9110 §14.1.2).
/// Fails with `RangeNotSatisfiable` when no byte of the blob is selected.
pub(super) fn resolve_range(spec: RangeSpec, size: u64) -> Result<Range<u64>> {
    let unsatisfiable = StoreError::RangeNotSatisfiable { size };
    match spec {
        RangeSpec::From(start) if start < size => Ok(start..size),
        RangeSpec::FromTo(start, end) if start <= end && start < size => {
            Ok(start..size.min(end.saturating_add(1)))
        }
        RangeSpec::Suffix(len) if len > 0 && size > 0 => Ok(size.saturating_sub(len)..size),
        _ => Err(unsatisfiable),
    }
}

impl Store {
    /// The envelope of `digest`; `BlobUnknown` when there is none, `Integrity` when it
    /// claims to be another blob's (a swapped envelope).
    pub(super) async fn load_envelope(&self, digest: &Digest) -> Result<Envelope> {
        match self.load_envelope_raw(digest).await? {
            Some((_, parsed)) => parsed,
            None => Err(StoreError::BlobUnknown),
        }
    }

    /// The stored bytes of `digest`'s envelope (`None` when there is none) and what
    /// they parse to: `Corrupt` when they are not an envelope, `Integrity` when the
    /// envelope is another blob's.
    async fn load_envelope_raw(
        &self,
        digest: &Digest,
    ) -> Result<Option<(bytes::Bytes, Result<Envelope>)>> {
        let path = ObjectPath::Envelope(digest).to_path();
        let Some(bytes) = objects::get(self.objects(), &path).await? else {
            return Ok(None);
        };
        let parsed = match Envelope::from_json(&bytes) {
            Ok(envelope) if &envelope.digest == digest => Ok(envelope),
            Ok(_) => Err(StoreError::Integrity),
            Err(reason) => Err(StoreError::Corrupt {
                path: path.to_string(),
                reason,
            }),
        };
        Ok(Some((bytes, parsed)))
    }

    /// What is stored at `digest`'s content address, judged without reading the body:
    /// an intact blob is an envelope that opens under the keyring and whose every data
    /// object is there, at least as long as the envelope says.
    ///
    /// Fails (rather than calling a blob broken) when access is revoked or the
    /// object store cannot answer: only what was positively seen damaged is `Broken`.
    pub(super) async fn examine(&self, digest: &Digest) -> Result<Stored> {
        match self.examine_envelope(digest).await? {
            Stored::Intact(intact) if !self.data_present(&intact.envelope).await? => {
                Ok(Stored::Broken(intact.raw))
            }
            other => Ok(other),
        }
    }

    /// [`Store::examine`] without looking at the data objects: `Intact` here means
    /// only that the envelope opens. A read checks the data objects as it opens them.
    async fn examine_envelope(&self, digest: &Digest) -> Result<Stored> {
        let Some((bytes, parsed)) = self.load_envelope_raw(digest).await? else {
            return Ok(Stored::Absent);
        };
        let envelope = match parsed {
            Ok(envelope) => envelope,
            Err(StoreError::Corrupt { .. } | StoreError::Integrity) => {
                return Ok(Stored::Broken(bytes));
            }
            Err(e) => return Err(e),
        };
        let Some(opened) = self.open_envelope(&envelope)? else {
            return Ok(Stored::Broken(bytes));
        };
        Ok(Stored::Intact(Box::new(Intact {
            envelope,
            opened,
            raw: bytes,
        })))
    }

    /// The blob's keys and data objects if `envelope` authenticates under the keyring
    /// (its generation is known, the wrapped DEK and key commitment open) and names
    /// only data objects of the form the store writes; `None` if not. Fails only while
    /// access is revoked.
    fn open_envelope(&self, envelope: &Envelope) -> Result<Option<Opened>> {
        let ring = self.keyring()?;
        let Some(keys) = ring
            .key(envelope.key_generation)
            .ok()
            .and_then(|rk| envelope.open(&rk).ok())
        else {
            return Ok(None);
        };
        let data: Option<Vec<DataObject>> = envelope
            .parts
            .iter()
            .map(|part| DataObject::parse(&part.object))
            .collect();
        Ok(data.map(|data| Opened {
            keys,
            data: AuthenticData(data),
        }))
    }

    /// Whether every data object `envelope` names exists and holds at least the sealed
    /// bytes the envelope records for it (bytes past them are never read).
    pub(super) async fn data_present(&self, envelope: &Envelope) -> Result<bool> {
        self.parts_present(envelope, None).await
    }

    /// [`Store::data_present`] for every data object but the one at `except` (a read
    /// whose GET of it answers for it).
    async fn parts_present(&self, envelope: &Envelope, except: Option<usize>) -> Result<bool> {
        let lengths = envelope
            .sealed_part_lengths()
            .ok_or(StoreError::Integrity)?;
        let Some(names) = envelope
            .parts
            .iter()
            .map(|part| DataObject::parse(&part.object))
            .collect::<Option<Vec<_>>>()
        else {
            return Ok(false); // not data objects the store wrote
        };
        let checks: Vec<(Path, u64)> = names
            .iter()
            .map(DataObject::to_path)
            .zip(lengths)
            .enumerate()
            .filter(|(index, _)| Some(*index) != except)
            .map(|(_, check)| check)
            .collect();
        let present = futures::future::try_join_all(
            checks
                .into_iter()
                .map(|(path, len)| holds_at_least(self.objects().clone(), path, len)),
        )
        .await?;
        Ok(present.into_iter().all(|p| p))
    }

    /// The envelope of an intact blob: `BlobUnknown` when there is none or when what is
    /// there is broken (logged, so that tampering or a lost data object is seen).
    async fn intact_envelope(&self, digest: &Digest) -> Result<Envelope> {
        match self.examine(digest).await? {
            Stored::Intact(intact) => Ok(intact.envelope),
            Stored::Absent => Err(StoreError::BlobUnknown),
            Stored::Broken(_) => {
                tracing::warn!(%digest, "the blob's envelope or data objects are damaged or missing; it answers as unknown until it is pushed again");
                Err(StoreError::BlobUnknown)
            }
        }
    }

    /// Fails with `BlobUnknown` when no intact blob exists (no envelope, or one whose
    /// data objects are missing or that does not open: a re-push repairs it).
    pub async fn stat_blob(&self, digest: &Digest) -> Result<BlobInfo> {
        let envelope = self.intact_envelope(digest).await?;
        Ok(BlobInfo {
            digest: digest.clone(),
            size: envelope.size,
        })
    }

    /// Opens a blob for reading, optionally a range of it.
    ///
    /// Fails with `BlobUnknown`, `RangeNotSatisfiable`, or `Integrity` when the envelope
    /// does not open or a data object is missing or short. Integrity failures inside
    /// segments surface in the stream.
    pub async fn read_blob(&self, digest: &Digest, range: Option<RangeSpec>) -> Result<BlobRead> {
        // Missing or short data objects are found here, before the caller sends any
        // header, rather than as a cut body: the first one the read needs is opened now
        // (its GET answers for it), the others are looked at meanwhile.
        let damaged = || {
            tracing::warn!(%digest, "the blob's envelope or data objects are damaged or missing");
            StoreError::Integrity
        };
        let Intact {
            envelope, opened, ..
        } = match self.examine_envelope(digest).await? {
            Stored::Intact(intact) => *intact,
            Stored::Absent => return Err(StoreError::BlobUnknown),
            Stored::Broken(_) => return Err(damaged()),
        };
        let byte_range = match range {
            Some(spec) => resolve_range(spec, envelope.size)?,
            None => 0..envelope.size,
        };
        let mut requests = self.part_requests(&envelope, &opened, byte_range.clone())?;
        let stride = sealed_segment_len(envelope.segment_size);
        let first = if requests.is_empty() {
            None
        } else {
            let (index, path, range) = requests.remove(0);
            let (first, rest_present) = futures::future::join(
                self.backend().read(path, range, stride),
                self.parts_present(&envelope, Some(index)),
            )
            .await;
            match (first, rest_present) {
                (Err(StoreError::Integrity), _) | (_, Ok(false)) => return Err(damaged()),
                (Err(e), _) | (_, Err(e)) => return Err(e),
                (Ok(first), Ok(true)) => Some(first),
            }
        };
        let body = self.read_requests(&envelope, opened, byte_range.clone(), first, requests);
        Ok(BlobRead {
            info: BlobInfo {
                digest: digest.clone(),
                size: envelope.size,
            },
            range: byte_range,
            partial: range.is_some(),
            body,
        })
    }

    /// Streams plaintext bytes `range` of a committed blob. Only the segments covering
    /// the range are fetched and decrypted.
    pub(super) fn read_envelope(
        &self,
        envelope: &Envelope,
        range: Range<u64>,
    ) -> Result<ByteStream> {
        let opened = self.open_envelope(envelope)?.ok_or(StoreError::Integrity)?;
        self.read_opened(envelope, opened, range)
    }

    /// [`Store::read_envelope`] with the envelope already opened.
    fn read_opened(
        &self,
        envelope: &Envelope,
        opened: Opened,
        range: Range<u64>,
    ) -> Result<ByteStream> {
        let requests = self.part_requests(envelope, &opened, range.clone())?;
        Ok(self.read_requests(envelope, opened, range, None, requests))
    }

    /// The ranged reads of data objects that plaintext bytes `range` needs, in order.
    fn part_requests(
        &self,
        envelope: &Envelope,
        opened: &Opened,
        range: Range<u64>,
    ) -> Result<Vec<(usize, Path, Range<u64>)>> {
        let plan =
            ReadPlan::for_range(envelope.segment_size, envelope.size, range.start, range.end);
        let lengths = envelope
            .sealed_part_lengths()
            .ok_or(StoreError::Integrity)?;
        Ok(plan
            .part_ranges(&lengths)
            .into_iter()
            .filter_map(|(index, range)| Some((index, opened.data.0.get(index)?.to_path(), range)))
            .collect())
    }

    /// Decrypts the sealed bytes of `requests` (after `first`, already opened, when
    /// given) as plaintext bytes `range`.
    fn read_requests(
        &self,
        envelope: &Envelope,
        opened: Opened,
        range: Range<u64>,
        first: Option<crate::backend::SealedStream>,
        requests: Vec<(usize, Path, Range<u64>)>,
    ) -> ByteStream {
        let Opened { keys, .. } = opened;
        let plan =
            ReadPlan::for_range(envelope.segment_size, envelope.size, range.start, range.end);
        let backend = self.backend().clone();
        let stride = sealed_segment_len(envelope.segment_size);
        let rest = futures::stream::iter(requests)
            .then(move |(_, path, range)| {
                let backend = backend.clone();
                async move { backend.read(path, range, stride).await }
            })
            .try_flatten();
        let sealed = match first {
            Some(first) => first.chain(rest).boxed(),
            None => rest.boxed(),
        };
        let plaintext = decrypt_stream(
            keys.cipher(),
            plan,
            sealed,
            self.metrics().segments_opened.clone(),
        );
        let plaintext = if plan.segments() > PREFETCH_MIN_SEGMENTS {
            prefetch(plaintext, PREFETCH_SEGMENTS)
        } else {
            plaintext
        };
        // After the prefetch: segments decrypted ahead are not yielded once access is revoked.
        self.cut_on_revocation(plaintext)
    }

    /// Deletes the blob everywhere (envelope first, so it stops existing at once, then
    /// its data objects). Fails with `BlobUnknown`.
    ///
    /// Data objects are deleted only as named by an envelope that authenticated: an
    /// envelope someone edited in the bucket could name another blob's data. A damaged
    /// envelope is removed alone; its data, if any, is left to [`Store::sweep`].
    pub async fn delete_blob(&self, digest: &Digest) -> Result<()> {
        let Some((_, parsed)) = self.load_envelope_raw(digest).await? else {
            return Err(StoreError::BlobUnknown);
        };
        let authentic = match parsed {
            Ok(envelope) => self.open_envelope(&envelope)?.map(|opened| opened.data),
            Err(StoreError::Corrupt { .. } | StoreError::Integrity) => None,
            Err(e) => return Err(e),
        };
        // A manifest is stored as a blob: its cached plaintext goes with it.
        self.manifest_cache().forget_content(digest);
        objects::delete(self.objects(), &ObjectPath::Envelope(digest).to_path()).await?;
        if let Some(data) = authentic {
            self.delete_data(&data).await?;
        }
        Ok(())
    }

    /// Deletes the data objects of an envelope that authenticated: the one way the
    /// store deletes data objects by the names an envelope gives.
    async fn delete_data(&self, data: &AuthenticData) -> Result<()> {
        for object in &data.0 {
            objects::delete(self.objects(), &object.to_path()).await?;
        }
        Ok(())
    }

    /// Like [`Store::stat_blob`], but only if the blob is linked into `repo`.
    pub async fn stat_repo_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<BlobInfo> {
        self.require_link(repo, digest).await?;
        self.stat_blob(digest).await
    }

    /// Like [`Store::read_blob`], but only if the blob is linked into `repo`.
    pub async fn read_repo_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        range: Option<RangeSpec>,
    ) -> Result<BlobRead> {
        self.require_link(repo, digest).await?;
        self.read_blob(digest, range).await
    }

    /// Fails with `BlobUnknown` when `repo` has no link to the blob, `Integrity` when
    /// its link is not sealed for this repository and digest (links.rs).
    async fn require_link(&self, repo: &RepositoryName, digest: &Digest) -> Result<()> {
        let path = ObjectPath::LayerLink { repo, digest }.to_path();
        match self.get_link::<LayerLink>(&path).await? {
            Some(link) if &link.digest == digest => Ok(()),
            Some(_) => Err(StoreError::Integrity),
            None => Err(StoreError::BlobUnknown),
        }
    }

    /// Links an existing blob into `repo` (cross-repository mount). Idempotent.
    /// Fails with `BlobUnknown` when the blob does not exist.
    pub async fn link_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<BlobInfo> {
        let info = self.stat_blob(digest).await?;
        self.write_link(repo, digest).await?;
        Ok(info)
    }

    pub(super) async fn write_link(&self, repo: &RepositoryName, digest: &Digest) -> Result<()> {
        let link = LayerLink {
            digest: digest.clone(),
        };
        self.put_link(&ObjectPath::LayerLink { repo, digest }.to_path(), &link)
            .await?;
        self.mark_repository(repo).await
    }

    /// Removes the blob from `repo` (the content stays for other repositories until
    /// garbage collection). Fails with `BlobUnknown` when it is not linked.
    pub async fn unlink_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<()> {
        self.require_link(repo, digest).await?;
        objects::delete(
            self.objects(),
            &ObjectPath::LayerLink { repo, digest }.to_path(),
        )
        .await
    }

    /// Records `repo` in the catalog. Catalog entries are never deleted, so one this
    /// process has seen is not looked up again: a push costs the lookup once per
    /// repository and process, not once per blob.
    pub(super) async fn mark_repository(&self, repo: &RepositoryName) -> Result<()> {
        if self.inner.known_repositories.contains(repo.as_str()) {
            return Ok(());
        }
        let path = ObjectPath::CatalogEntry(repo).to_path();
        if !objects::exists(self.objects(), &path).await? {
            objects::put_json(
                self.objects(),
                &path,
                &serde_json::json!({ "repository": repo.as_str() }),
            )
            .await?;
        }
        self.inner.known_repositories.insert(repo.as_str());
        Ok(())
    }
}

/// What a repository's blob link holds (sealed, see links.rs).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LayerLink {
    digest: Digest,
}

impl super::links::LinkTarget for LayerLink {
    fn blob(&self) -> Option<&Digest> {
        Some(&self.digest)
    }
}

/// Whether the object at `path` exists with at least `len` bytes.
async fn holds_at_least(
    objects: std::sync::Arc<dyn ObjectStore>,
    path: Path,
    len: u64,
) -> Result<bool> {
    match objects.head(&path).await {
        Ok(meta) => Ok(meta.size >= len),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(StoreError::Backend(e)),
    }
}

/// The data objects of an envelope that authenticated under the keyring, in order.
/// Only [`Store::open_envelope`] makes one (the field is private to this module), so
/// the compiler sees to it that data objects are deleted only by names an authentic
/// envelope gave: an envelope edited in the bucket could name another blob's data.
#[derive(Debug)]
pub(super) struct AuthenticData(Vec<DataObject>);

/// An envelope that authenticated: the blob's keys and its data objects.
#[derive(Debug)]
pub(super) struct Opened {
    keys: BlobKeys,
    data: AuthenticData,
}

/// What a content address holds, as [`Store::examine`] sees it.
#[derive(Debug)]
pub(super) enum Stored {
    /// No envelope: the blob does not exist.
    Absent,
    /// An envelope that opens, with every data object present.
    Intact(Box<Intact>),
    /// An envelope that does not parse or open, or whose data objects are missing or
    /// short: not a blob, and a new push of the digest replaces it. Holds the stored
    /// bytes, so a replacement can check they did not change meanwhile.
    Broken(bytes::Bytes),
}

/// An intact blob as [`Store::examine`] found it.
#[derive(Debug)]
pub(super) struct Intact {
    pub(super) envelope: Envelope,
    /// The blob's keys and data objects, opened once by the examination.
    opened: Opened,
    /// The envelope's stored bytes.
    pub(super) raw: bytes::Bytes,
}

/// Reads longer than this many segments are decrypted ahead on their own task.
const PREFETCH_MIN_SEGMENTS: u64 = 16;
/// Most plaintext segments handed over at once (256 KiB at 64 KiB segments). At most one
/// batch waits in the channel while the consumer holds another and the task builds a
/// third: under 1 MiB ahead per read. Measured: +10 % for a single-stream pull; 8 per
/// batch doubled the peak RSS of 8 parallel pulls (glibc arenas), docs/PERFORMANCE.md.
const PREFETCH_SEGMENTS: usize = 4;

/// Drives `stream` on a task of its own, up to `depth` items ahead of the consumer, so
/// reading and decrypting overlap writing the previous segments to the client's socket
/// (on the other core). The task ends with the stream, or at its next item once the
/// consumer is gone. Without a runtime (a caller polling by hand) it is a no-op.
fn prefetch(stream: ByteStream, depth: usize) -> ByteStream {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return stream;
    };
    // Items travel in batches of whatever is ready at once (up to `depth`): one wake-up
    // of the consumer per batch rather than per segment (+11 % on a single-stream pull).
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<Result<bytes::Bytes>>>(1);
    runtime.spawn(async move {
        let mut stream = stream;
        while let Some(item) = stream.next().await {
            let mut failed = item.is_err();
            let mut batch = vec![item];
            while !failed && batch.len() < depth {
                match futures::FutureExt::now_or_never(stream.next()) {
                    Some(Some(item)) => {
                        failed = item.is_err();
                        batch.push(item);
                    }
                    Some(None) | None => break,
                }
            }
            if tx.send(batch).await.is_err() || failed {
                break;
            }
        }
    });
    futures::stream::unfold(
        (rx, std::collections::VecDeque::new()),
        |(mut rx, mut ready)| async move {
            if ready.is_empty() {
                ready.extend(rx.recv().await?);
            }
            let item = ready.pop_front()?;
            Some((item, (rx, ready)))
        },
    )
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_like_rfc9110() {
        assert_eq!(resolve_range(RangeSpec::From(0), 10).unwrap(), 0..10);
        assert_eq!(resolve_range(RangeSpec::FromTo(2, 4), 10).unwrap(), 2..5);
        assert_eq!(resolve_range(RangeSpec::FromTo(2, 400), 10).unwrap(), 2..10);
        assert_eq!(resolve_range(RangeSpec::Suffix(3), 10).unwrap(), 7..10);
        assert_eq!(resolve_range(RangeSpec::Suffix(30), 10).unwrap(), 0..10);
        for bad in [
            RangeSpec::From(10),
            RangeSpec::FromTo(5, 4),
            RangeSpec::FromTo(10, 12),
            RangeSpec::Suffix(0),
        ] {
            assert!(
                matches!(
                    resolve_range(bad, 10),
                    Err(StoreError::RangeNotSatisfiable { size: 10 })
                ),
                "{bad:?}"
            );
        }
        assert!(resolve_range(RangeSpec::Suffix(1), 0).is_err());
        assert!(resolve_range(RangeSpec::From(0), 0).is_err());
    }
}
