//! Upload sessions (DESIGN §5) and the commit of a blob.
//!
//! A session is a chain of state objects `uploads/<id>/<seq>`; each append writes its
//! sealed segments to a new data object of its own and then creates state `seq + 1`
//! with a create-only put. That put is the append's commit point: if two appends race,
//! exactly one creates `seq + 1` and the other deletes its data object and reports the
//! offset mismatch. A crash before the put leaves an unreferenced data object under the
//! session's data directory, which finish and cancel remove.
//!
//! The plaintext tail (< one segment, held back because it is not yet known whether it
//! ends the blob) and the running hash state are stored sealed in the state object,
//! never in the clear.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};

use super::objects;
use super::{BlobInfo, BodyStream, Store, UploadStatus};
use crate::crypto::envelope::{DataPart, Envelope};
use crate::crypto::hash::ResumableHash;
use crate::crypto::keys::{b64, BlobKeys, Key32, SealedBox, WrappedKey};
use crate::crypto::segment::Sealer;
use crate::names::{Algorithm, Digest, RepositoryName, UploadId};
use crate::paths::{sequence_of, ObjectPath};
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

/// The hashing thread panicked (a bug): the append fails and commits nothing.
fn hasher_lost() -> StoreError {
    StoreError::Backend(object_store::Error::Generic {
        store: "valv",
        source: "the upload's hashing thread stopped".into(),
    })
}

/// The stored state of an upload session (one version of it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionState {
    version: u32,
    repository: String,
    /// Names the data directory `data/<blob>/` this session writes to.
    blob: String,
    /// Plaintext bytes received.
    offset: u64,
    /// Non-final segments sealed into data objects so far.
    segments: u64,
    parts: Vec<DataPart>,
    segment_size: u32,
    /// Registry-key generation that wraps `dek`.
    key_generation: u32,
    /// The session's DEK, wrapped under the registry key; AAD binds the upload id and
    /// data directory.
    dek: WrappedKey,
    #[serde(with = "b64")]
    salt: Vec<u8>,
    #[serde(with = "b64")]
    nonce_prefix: Vec<u8>,
    /// Tail and hash state, sealed; AAD binds upload id, offset and segment count.
    sealed: SealedBox,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
}

/// What is sealed inside a session state: the held-back tail and the hash state.
struct SessionSecrets {
    tail: Vec<u8>,
    hash: ResumableHash,
}

impl SessionSecrets {
    fn encode(&self) -> Vec<u8> {
        let hash = self.hash.export();
        let mut out = Vec::with_capacity(4 + self.tail.len() + hash.len());
        // The tail is at most one segment, far below u32::MAX.
        out.extend_from_slice(
            &u32::try_from(self.tail.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        out.extend_from_slice(&self.tail);
        out.extend_from_slice(&hash);
        out
    }

    fn decode(bytes: &[u8]) -> Result<SessionSecrets> {
        let len = bytes.get(..4).ok_or(StoreError::Integrity)?;
        let len = usize::try_from(u32::from_be_bytes([len[0], len[1], len[2], len[3]]))
            .map_err(|_| StoreError::Integrity)?;
        let tail = bytes.get(4..4 + len).ok_or(StoreError::Integrity)?.to_vec();
        let hash = ResumableHash::import(bytes.get(4 + len..).ok_or(StoreError::Integrity)?)
            .map_err(|_| StoreError::Integrity)?;
        Ok(SessionSecrets { tail, hash })
    }
}

fn dek_aad(id: &UploadId, blob: &str) -> Vec<u8> {
    format!("valv/v1 upload dek\0{id}\0{blob}").into_bytes()
}

fn secrets_aad(id: &UploadId, offset: u64, segments: u64) -> Vec<u8> {
    format!("valv/v1 upload state\0{id}\0{offset}\0{segments}").into_bytes()
}

/// A loaded session: its state, which version it is, and its unwrapped keys.
struct Session {
    seq: u64,
    state: SessionState,
    keys: BlobKeys,
    secrets: SessionSecrets,
}

impl SessionState {
    fn status(&self, id: &UploadId, repo: &RepositoryName) -> UploadStatus {
        UploadStatus {
            id: id.clone(),
            repository: repo.clone(),
            offset: self.offset,
        }
    }
}

impl Store {
    /// Starts an upload session in `repo`.
    pub async fn create_upload(&self, repo: &RepositoryName) -> Result<UploadStatus> {
        self.create_session(repo, Algorithm::Sha256).await
    }

    async fn create_session(
        &self,
        repo: &RepositoryName,
        algorithm: Algorithm,
    ) -> Result<UploadStatus> {
        let id = UploadId::random();
        let blob = objects::random_hex(16);
        let keys = BlobKeys::generate(self.inner.config.segment_size);
        let (generation, rk) = self.keyring()?.active();
        let secrets = SessionSecrets {
            tail: Vec::new(),
            hash: ResumableHash::new(algorithm),
        };
        let now = Utc::now();
        let state = SessionState {
            version: 1,
            repository: repo.to_string(),
            dek: WrappedKey::wrap(&rk, &dek_aad(&id, &blob), &keys.dek),
            sealed: keys.seal_aux(&secrets_aad(&id, 0, 0), &secrets.encode()),
            blob,
            offset: 0,
            segments: 0,
            parts: Vec::new(),
            segment_size: keys.segment_size,
            key_generation: generation,
            salt: keys.salt.to_vec(),
            nonce_prefix: keys.nonce_prefix.to_vec(),
            created: now,
            updated: now,
        };
        // Upload ids are random (122 bits), so a collision is not a case to handle;
        // still, never overwrite an existing session.
        if !objects::create_json(
            self.objects(),
            &ObjectPath::UploadState { id: &id, seq: 1 }.to_path(),
            &state,
        )
        .await?
        {
            return Err(StoreError::Corrupt {
                path: format!("uploads/{id}"),
                reason: "upload id collision".into(),
            });
        }
        Ok(state.status(&id, repo))
    }

    /// The newest state of session `id`, checked to belong to `repo`.
    async fn load_session(&self, repo: &RepositoryName, id: &UploadId) -> Result<Session> {
        // A state version can vanish between list and get when a concurrent append
        // cleans up the version before its own; retry against the newer one.
        for _ in 0..5 {
            let paths = objects::list(self.objects(), &ObjectPath::UploadDir(id).to_path()).await?;
            let Some(seq) = paths.iter().filter_map(sequence_of).max() else {
                return Err(StoreError::UploadUnknown);
            };
            let path = ObjectPath::UploadState { id, seq }.to_path();
            let Some(state) = objects::get_json::<SessionState>(self.objects(), &path).await?
            else {
                continue;
            };
            if state.repository != repo.as_str() || state.version != 1 {
                return Err(StoreError::UploadUnknown);
            }
            let rk = self.keyring()?.key(state.key_generation)?;
            let dek: Key32 = state
                .dek
                .unwrap(&rk, &dek_aad(id, &state.blob))
                .map_err(|_| StoreError::Integrity)?;
            let keys = BlobKeys {
                dek,
                salt: state
                    .salt
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Integrity)?,
                nonce_prefix: state
                    .nonce_prefix
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Integrity)?,
                segment_size: state.segment_size,
            };
            let plain = keys
                .open_aux(
                    &secrets_aad(id, state.offset, state.segments),
                    &state.sealed,
                )
                .map_err(|_| StoreError::Integrity)?;
            let secrets = SessionSecrets::decode(&plain)?;
            return Ok(Session {
                seq,
                state,
                keys,
                secrets,
            });
        }
        Err(StoreError::UploadUnknown)
    }

    /// Fails with `UploadUnknown` for an unknown session or one of another repository.
    pub async fn upload_status(
        &self,
        repo: &RepositoryName,
        id: &UploadId,
    ) -> Result<UploadStatus> {
        Ok(self.load_session(repo, id).await?.state.status(id, repo))
    }

    /// Appends `body` to the session. `start`, when given, must equal the session's
    /// offset (else `OffsetMismatch`, nothing written). On a body error the append is
    /// discarded and the session stays at its previous offset.
    pub async fn append_upload(
        &self,
        repo: &RepositoryName,
        id: &UploadId,
        start: Option<u64>,
        body: BodyStream<'_>,
    ) -> Result<UploadStatus> {
        let session = self.load_session(repo, id).await?;
        let session = self.append(id, session, start, body).await?;
        Ok(session.state.status(id, repo))
    }

    async fn append(
        &self,
        id: &UploadId,
        mut session: Session,
        start: Option<u64>,
        mut body: BodyStream<'_>,
    ) -> Result<Session> {
        if let Some(start) = start {
            if start != session.state.offset {
                return Err(StoreError::OffsetMismatch {
                    current: session.state.offset,
                });
            }
        }
        let segment_size = session.state.segment_size;
        let next_index =
            u32::try_from(session.state.segments).map_err(|_| StoreError::SizeMismatch)?;
        let mut sealer = Sealer::try_new(
            session.keys.cipher(),
            segment_size,
            next_index,
            &session.secrets.tail,
        )
        .map_err(|_| StoreError::Integrity)?;
        let hash = BackgroundHash::start(session.secrets.hash.clone());
        let part_name = format!(
            "{:06}-{}",
            session.state.parts.len(),
            objects::random_hex(8)
        );
        let part_path = ObjectPath::DataPart {
            blob: &session.state.blob,
            part: &part_name,
        }
        .to_path();
        let mut writer: Option<WriteMultipart> = None;
        let mut received = 0u64;
        let mut sealed_here = 0u64;
        let mut sealed = Vec::new();

        let outcome: Result<()> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(StoreError::Body)?;
                received += chunk.len() as u64;
                // Hashed on another core while this task seals and writes.
                hash.update(chunk.clone()).await?;
                sealer.push(&chunk, &mut sealed);
                if sealed.is_empty() {
                    continue;
                }
                if writer.is_none() {
                    let upload = self.objects().put_multipart(&part_path).await?;
                    writer = Some(WriteMultipart::new_with_chunk_size(
                        upload,
                        self.inner.config.part_size,
                    ));
                }
                if let Some(w) = writer.as_mut() {
                    for segment in sealed.drain(..) {
                        sealed_here += 1;
                        w.put(segment);
                    }
                    // Backpressure: do not read more of the body while the object
                    // store is behind.
                    w.wait_for_capacity(self.inner.config.max_parts_in_flight)
                        .await?;
                }
            }
            Ok(())
        }
        .await;

        // The hash of everything received (waits for the hashing thread to catch up).
        let outcome = match outcome {
            Ok(()) => hash.finish().await,
            Err(e) => Err(e),
        };
        let (written, hash) = match (outcome, writer) {
            (Ok(hash), Some(w)) => match w.finish().await {
                Ok(_) => (true, hash),
                Err(e) => return Err(e.into()),
            },
            (Ok(hash), None) => (false, hash),
            (Err(e), Some(w)) => {
                let _ = w.abort().await;
                return Err(e);
            }
            (Err(e), None) => return Err(e),
        };
        self.metrics()
            .segments_sealed
            .fetch_add(sealed_here, std::sync::atomic::Ordering::Relaxed);

        let mut state = session.state.clone();
        state.offset += received;
        state.segments += sealed_here;
        if written {
            state.parts.push(DataPart {
                object: part_path.to_string(),
                segments: sealed_here,
            });
        }
        let secrets = SessionSecrets {
            tail: sealer.tail().to_vec(),
            hash,
        };
        state.sealed = session.keys.seal_aux(
            &secrets_aad(id, state.offset, state.segments),
            &secrets.encode(),
        );
        state.updated = Utc::now();

        let next = session.seq + 1;
        if !objects::create_json(
            self.objects(),
            &ObjectPath::UploadState { id, seq: next }.to_path(),
            &state,
        )
        .await?
        {
            // Another append committed first: ours never happened.
            if written {
                objects::delete(self.objects(), &part_path).await?;
            }
            let current = self
                .objects_session_offset(id, &session.state.repository)
                .await;
            return Err(StoreError::OffsetMismatch { current });
        }
        // The old version is superseded; leaving it would be harmless but untidy.
        objects::delete(
            self.objects(),
            &ObjectPath::UploadState {
                id,
                seq: session.seq,
            }
            .to_path(),
        )
        .await?;
        session.seq = next;
        session.state = state;
        session.secrets = secrets;
        Ok(session)
    }

    async fn objects_session_offset(&self, id: &UploadId, repo: &str) -> u64 {
        match repo.parse::<RepositoryName>() {
            Ok(repo) => self
                .upload_status(&repo, id)
                .await
                .map(|s| s.offset)
                .unwrap_or(0),
            Err(_) => 0,
        }
    }

    /// Finishes the session: appends `last` if given, verifies `digest`, commits the blob
    /// and links it into `repo`. On `DigestMismatch` nothing is stored and the session
    /// is removed. Idempotent when the blob already exists.
    pub async fn finish_upload(
        &self,
        repo: &RepositoryName,
        id: &UploadId,
        digest: &Digest,
        last: Option<(Option<u64>, BodyStream<'_>)>,
    ) -> Result<BlobInfo> {
        let mut session = self.load_session(repo, id).await?;
        if let Some((start, body)) = last {
            session = self.append(id, session, start, body).await?;
        }
        let Session {
            state,
            keys,
            secrets,
            ..
        } = session;
        let size = state.offset;

        if secrets.hash.algorithm() == digest.algorithm() && &secrets.hash.digest() != digest {
            self.discard_session(id, &state).await?;
            return Err(StoreError::DigestMismatch);
        }

        // Seal the tail as the final segment, into a data object of its own.
        let next_index = u32::try_from(state.segments).map_err(|_| StoreError::SizeMismatch)?;
        let final_segment =
            Sealer::try_new(keys.cipher(), state.segment_size, next_index, &secrets.tail)
                .map_err(|_| StoreError::Integrity)?
                .finish();
        let part_name = format!("{:06}-{}", state.parts.len(), objects::random_hex(8));
        let part_path = ObjectPath::DataPart {
            blob: &state.blob,
            part: &part_name,
        }
        .to_path();
        self.objects()
            .put(&part_path, PutPayload::from(final_segment))
            .await?;
        let mut parts = state.parts.clone();
        parts.push(DataPart {
            object: part_path.to_string(),
            segments: 1,
        });

        let (generation, rk) = self.keyring()?.active();
        let envelope = Envelope::seal(&rk, generation, &keys, digest.clone(), size, parts);

        // A digest of another algorithm than the one hashed while streaming (sha512 on
        // a chunked upload) is verified by reading the sealed data back.
        if secrets.hash.algorithm() != digest.algorithm()
            && !self.verify_by_reading(&envelope, digest).await?
        {
            self.discard_session(id, &state).await?;
            return Err(StoreError::DigestMismatch);
        }

        let created = objects::create(
            self.objects(),
            &ObjectPath::Envelope(digest).to_path(),
            PutPayload::from(envelope.to_json()),
        )
        .await?;
        if created {
            self.remove_unreferenced_parts(&state.blob, &envelope)
                .await?;
        } else {
            // The blob was committed by someone else (a concurrent or earlier push of the
            // same content): keep theirs, remove ours, so no orphan remains.
            objects::delete_all(
                self.objects(),
                &ObjectPath::DataDir { blob: &state.blob }.to_path(),
            )
            .await?;
        }
        self.write_link(repo, digest).await?;
        objects::delete_all(self.objects(), &ObjectPath::UploadDir(id).to_path()).await?;
        Ok(BlobInfo {
            digest: digest.clone(),
            size,
        })
    }

    /// Reads a sealed-but-uncommitted blob back and checks its digest.
    async fn verify_by_reading(&self, envelope: &Envelope, digest: &Digest) -> Result<bool> {
        let mut hash = ResumableHash::new(digest.algorithm());
        let mut stream = self.read_envelope(envelope, 0..envelope.size)?;
        while let Some(chunk) = stream.next().await {
            hash.update(&chunk?);
        }
        Ok(&hash.digest() == digest)
    }

    /// Data objects in the blob's directory that the envelope does not reference were
    /// left by appends that crashed before their state commit.
    async fn remove_unreferenced_parts(&self, blob: &str, envelope: &Envelope) -> Result<()> {
        for path in objects::list(self.objects(), &ObjectPath::DataDir { blob }.to_path()).await? {
            if !envelope.parts.iter().any(|p| p.object == path.as_ref()) {
                objects::delete(self.objects(), &path).await?;
            }
        }
        Ok(())
    }

    async fn discard_session(&self, id: &UploadId, state: &SessionState) -> Result<()> {
        // Session state first: once it is gone the session is unknown, and whatever
        // data remains is unreachable garbage rather than a half-cancelled session.
        objects::delete_all(self.objects(), &ObjectPath::UploadDir(id).to_path()).await?;
        objects::delete_all(
            self.objects(),
            &ObjectPath::DataDir { blob: &state.blob }.to_path(),
        )
        .await
    }

    /// Cancels the session and deletes everything it wrote. Fails with `UploadUnknown`.
    pub async fn cancel_upload(&self, repo: &RepositoryName, id: &UploadId) -> Result<()> {
        let session = self.load_session(repo, id).await?;
        self.discard_session(id, &session.state).await
    }

    /// A whole blob in one call (monolithic push): create, append, finish.
    pub async fn put_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        body: BodyStream<'_>,
    ) -> Result<BlobInfo> {
        let status = self.create_session(repo, digest.algorithm()).await?;
        match self
            .finish_upload(repo, &status.id, digest, Some((Some(0), body)))
            .await
        {
            Ok(info) => Ok(info),
            Err(e) => {
                // The session is private to this call: nothing may survive a failure.
                if let Ok(session) = self.load_session(repo, &status.id).await {
                    self.discard_session(&status.id, &session.state).await?;
                }
                Err(e)
            }
        }
    }

    /// Stores small content (a manifest) as a blob, unless it already exists.
    pub(super) async fn put_small_blob(&self, digest: &Digest, bytes: Bytes) -> Result<()> {
        if objects::exists(self.objects(), &ObjectPath::Envelope(digest).to_path()).await? {
            return Ok(());
        }
        let keys = BlobKeys::generate(self.inner.config.segment_size);
        let blob = objects::random_hex(16);
        let mut sealer = Sealer::new(keys.cipher(), keys.segment_size, 0, &[]);
        let mut segments = Vec::new();
        sealer.push(&bytes, &mut segments);
        segments.push(sealer.finish());
        let count = segments.len() as u64;
        let mut sealed = Vec::with_capacity(bytes.len() + 16 * segments.len());
        for s in segments {
            sealed.extend_from_slice(&s);
        }
        let part_path = ObjectPath::DataPart {
            blob: &blob,
            part: "000000",
        }
        .to_path();
        self.objects()
            .put(&part_path, PutPayload::from(sealed))
            .await?;
        let (generation, rk) = self.keyring()?.active();
        let envelope = Envelope::seal(
            &rk,
            generation,
            &keys,
            digest.clone(),
            bytes.len() as u64,
            vec![DataPart {
                object: part_path.to_string(),
                segments: count,
            }],
        );
        if !objects::create(
            self.objects(),
            &ObjectPath::Envelope(digest).to_path(),
            PutPayload::from(envelope.to_json()),
        )
        .await?
        {
            objects::delete(self.objects(), &part_path).await?;
        }
        Ok(())
    }
}
