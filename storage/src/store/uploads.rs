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
//!
//! # Commit
//! Every step that ends a session is itself a new state version, created with the
//! same create-only put, so exactly one ending wins and nothing acts on data another
//! step owns:
//!
//! 1. A commit verifies the digest, seals the last segment into a data object of its
//!    own, and creates state `seq + 1` in phase `Committing { digest }` naming every
//!    data object. A commit that loses this put deletes only the object it just wrote
//!    and looks again: a `Committing` state of the same digest is a repeated commit.
//! 2. Whoever holds a `Committing` state (the first commit, a concurrent duplicate,
//!    a retry after a crash) finishes the same commit: it creates the envelope over
//!    exactly those data objects unless an intact blob is already there, links the
//!    blob, and removes the older state versions. Finishing is idempotent.
//! 3. The `Committing` version is kept as the session's tombstone: appends, status and
//!    cancel see it and answer `UploadUnknown`, and a stale request that loaded an
//!    older version cannot create a version above it. [`Store::sweep`] removes it once
//!    it is older than the grace period.
//!
//! Cancelling (or a digest mismatch) creates a `Cancelled` version the same way before
//! deleting anything, so it can never delete data a commit has claimed.
//!
//! An envelope already at the digest decides by what it points to: the session's own
//! data (a repeated commit) is kept as it is; another upload's intact blob makes this
//! session's data garbage, deleted at once; a broken blob (damaged envelope, missing
//! or short data objects) is replaced by this one.
//!
//! The commit that writes the `Committing` state tidies only what it knows of: the
//! one state version below its own. Data objects and state versions a killed request
//! left in the session are removed by the sweep once the tombstone goes; a resumed
//! commit (a retry, a duplicate) lists the session and removes them at once.
//!
//! # One-request pushes
//! The append that ends a session (a `PUT ?digest=` with a body, or without one)
//! seals its body and the final segment into one data object and creates the
//! `Committing` state directly: a blob pushed with `POST` + one `PUT` is one data
//! object. A monolithic push (`POST ?digest=` with the body, [`Store::put_blob`])
//! needs no session at all: its body is sealed into one data object of a fresh blob
//! directory, and creating the envelope is its commit point, as for a manifest. A
//! crash before that leaves a data object nothing names, which the sweep removes.
//! docs/PERFORMANCE.md lists the object-store requests of each operation.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use object_store::PutPayload;
use serde::{Deserialize, Serialize};

use super::blobs::Stored;
use super::objects;
use super::sealing::{Ending, Sealed};
use super::{BlobInfo, BodyStream, Store, UploadStatus};
use crate::crypto::envelope::{DataPart, Envelope};
use crate::crypto::hash::ResumableHash;
use crate::crypto::keys::{b64, BlobKeys, Key32, SealedBox, WrappedKey};
use crate::crypto::segment::Sealer;
use crate::names::{Algorithm, Digest, RepositoryName, UploadId};
use crate::paths::{sequence_of, ObjectPath};
use crate::{Result, StoreError};

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
    /// Where the session stands. States written before phases existed have none: open.
    #[serde(default, skip_serializing_if = "Phase::is_open")]
    phase: Phase,
}

/// How far a session is. Only an `Open` session takes appends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
enum Phase {
    #[default]
    Open,
    /// The digest is verified and `parts` is final: the envelope of `digest` over
    /// exactly those parts is being (or has been) created.
    Committing { digest: Digest },
    /// Cancelled or refused: its data is being deleted.
    Cancelled,
}

impl Phase {
    fn is_open(&self) -> bool {
        matches!(self, Phase::Open)
    }
}

/// Rounds a commit retries after losing a state put to a concurrent request.
const COMMIT_ROUNDS: usize = 4;

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

/// The mark a body stream's `io::Error` carries when the blob passed
/// [`crate::StoreConfig::max_blob_bytes`] ([`Store::limited`]).
#[derive(Debug)]
struct PastLimit;

impl std::fmt::Display for PastLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the blob exceeds the size limit")
    }
}

impl std::error::Error for PastLimit {}

impl Store {
    /// `body`, cut with an error (which discards the write, as any body error does)
    /// once `offset` plus what it has yielded passes the largest blob accepted.
    fn limited<'a>(&self, body: BodyStream<'a>, offset: u64) -> BodyStream<'a> {
        let Some(limit) = self.inner.config.max_blob_bytes else {
            return body;
        };
        let mut total = offset;
        body.map(move |chunk| {
            let chunk = chunk?;
            total = total.saturating_add(chunk.len() as u64);
            if total > limit {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    PastLimit,
                ));
            }
            Ok(chunk)
        })
        .boxed()
    }

    /// [`StoreError::BlobTooLarge`] for the body error [`Store::limited`] made.
    fn too_large(&self, e: StoreError) -> StoreError {
        match (e, self.inner.config.max_blob_bytes) {
            (StoreError::Body(io), Some(limit))
                if io.get_ref().is_some_and(|inner| inner.is::<PastLimit>()) =>
            {
                StoreError::BlobTooLarge { limit }
            }
            (e, _) => e,
        }
    }

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
            phase: Phase::Open,
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
        Ok(self
            .load_open_session(repo, id)
            .await?
            .state
            .status(id, repo))
    }

    /// [`Store::load_session`] for a session that still takes data: a committed or
    /// cancelled one is `UploadUnknown`.
    async fn load_open_session(&self, repo: &RepositoryName, id: &UploadId) -> Result<Session> {
        let session = self.load_session(repo, id).await?;
        if session.state.phase.is_open() {
            Ok(session)
        } else {
            Err(StoreError::UploadUnknown)
        }
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
        let session = self.load_open_session(repo, id).await?;
        let session = self.append(id, session, start, body).await?;
        Ok(session.state.status(id, repo))
    }

    async fn append(
        &self,
        id: &UploadId,
        mut session: Session,
        start: Option<u64>,
        body: BodyStream<'_>,
    ) -> Result<Session> {
        let (part_path, state, secrets) = self
            .seal_next(id, &session, start, body, Ending::HoldTail)
            .await?;

        let next = session.seq + 1;
        if !objects::create_json(
            self.objects(),
            &ObjectPath::UploadState { id, seq: next }.to_path(),
            &state,
        )
        .await?
        {
            // Another append committed first: ours never happened.
            if state.parts.len() > session.state.parts.len() {
                objects::delete(self.objects(), &part_path).await?;
            }
            return Err(self.lost_append(id, &session.state.repository).await);
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

    /// Seals `body` into the session's next data object (with the final segment when
    /// `ending` says so) and returns its path with the session's next state, not yet
    /// written, and secrets.
    async fn seal_next(
        &self,
        id: &UploadId,
        session: &Session,
        start: Option<u64>,
        body: BodyStream<'_>,
        ending: Ending,
    ) -> Result<(object_store::path::Path, SessionState, SessionSecrets)> {
        let part_path = next_part_path(&session.state);
        let body = self.limited(body, session.state.offset);
        let sealed = self
            .seal_into(
                &part_path,
                session_sealer(session, start)?,
                Some(session.secrets.hash.clone()),
                body,
                ending,
            )
            .await
            .map_err(|e| self.too_large(e))?;
        let (state, secrets) = advanced(id, session, &part_path, sealed, ending)?;
        Ok((part_path, state, secrets))
    }

    /// Why an append lost its state put: the session moved on (`OffsetMismatch` with
    /// where it is now) or ended (`UploadUnknown`).
    async fn lost_append(&self, id: &UploadId, repo: &str) -> StoreError {
        let Ok(repo) = repo.parse::<RepositoryName>() else {
            return StoreError::UploadUnknown;
        };
        match self.load_open_session(&repo, id).await {
            Ok(s) => StoreError::OffsetMismatch {
                current: s.state.offset,
            },
            Err(e) => e,
        }
    }

    /// Finishes the session: appends `last` if given, verifies `digest`, commits the blob
    /// and links it into `repo`. On `DigestMismatch` nothing is stored and the session
    /// is removed.
    ///
    /// Idempotent: a repeated commit of the same session and digest (concurrent, or
    /// re-sent after a crash) answers as the first did and never touches the committed
    /// data; a commit of another digest after the first is `UploadUnknown`.
    pub async fn finish_upload(
        &self,
        repo: &RepositoryName,
        id: &UploadId,
        digest: &Digest,
        last: Option<(Option<u64>, BodyStream<'_>)>,
    ) -> Result<BlobInfo> {
        let mut session = self.load_session(repo, id).await?;
        let mut last = last;
        for _ in 0..COMMIT_ROUNDS {
            match &session.state.phase {
                Phase::Committing { digest: committed } => {
                    let info = self.complete_commit(repo, id, &session, true).await?;
                    return if committed == digest {
                        Ok(info)
                    } else {
                        Err(StoreError::UploadUnknown)
                    };
                }
                Phase::Cancelled => return Err(StoreError::UploadUnknown),
                Phase::Open => {}
            }
            // The body goes with the first attempt only; a later round commits what
            // the session holds.
            let with_body = last.is_some();
            let (start, body) = last
                .take()
                .unwrap_or_else(|| (None, futures::stream::empty().boxed()));
            let lost = match self.begin_commit(id, session, start, body, digest).await {
                Ok(Some(committing)) => {
                    return self.complete_commit(repo, id, &committing, false).await;
                }
                // Another request created the next state first.
                Ok(None) => None,
                Err(e @ (StoreError::OffsetMismatch { .. } | StoreError::UploadUnknown)) => Some(e),
                Err(e) => return Err(e),
            };
            let again = self.load_session(repo, id).await?;
            // A duplicate of this request may have appended the same last chunk first:
            // then the session already holds exactly `digest`'s bytes, or has committed
            // them, and the commit goes on without this body.
            if with_body && !holds(&again, digest) {
                return Err(lost.unwrap_or(match again.state.phase {
                    Phase::Open => StoreError::OffsetMismatch {
                        current: again.state.offset,
                    },
                    _ => StoreError::UploadUnknown,
                }));
            }
            session = again;
        }
        Err(StoreError::OffsetMismatch {
            current: session.state.offset,
        })
    }

    /// Step 1 of a commit (module docs): seals the last of the body (possibly nothing)
    /// and the final segment into one data object, verifies `digest`, and creates the
    /// `Committing` state naming every data object. `None` when another request
    /// created the next state version first (this call's data object is deleted
    /// again). `OffsetMismatch` before anything is written when `start` is not the
    /// session's offset.
    async fn begin_commit(
        &self,
        id: &UploadId,
        session: Session,
        start: Option<u64>,
        body: BodyStream<'_>,
        digest: &Digest,
    ) -> Result<Option<Session>> {
        let (part_path, mut next, secrets) = self
            .seal_next(id, &session, start, body, Ending::Final)
            .await?;
        next.phase = Phase::Committing {
            digest: digest.clone(),
        };
        // A digest of another algorithm than the one hashed while streaming (sha512 on
        // a chunked upload) is verified by reading the sealed data back.
        let matches = if secrets.hash.algorithm() == digest.algorithm() {
            &secrets.hash.digest() == digest
        } else {
            self.verify_by_reading(
                &self.session_envelope(&next, &session.keys, digest)?,
                digest,
            )
            .await?
        };
        if !matches {
            objects::delete(self.objects(), &part_path).await?;
            self.discard_session(id, &session).await?;
            return Err(StoreError::DigestMismatch);
        }

        let seq = session.seq + 1;
        let created = objects::create_json(
            self.objects(),
            &ObjectPath::UploadState { id, seq }.to_path(),
            &next,
        )
        .await;
        match created {
            Ok(true) => Ok(Some(Session {
                seq,
                state: next,
                keys: session.keys,
                secrets,
            })),
            // Nothing references the object this call wrote: it alone may delete it.
            Ok(false) => {
                objects::delete(self.objects(), &part_path).await?;
                Ok(None)
            }
            Err(e) => {
                let _ = objects::delete(self.objects(), &part_path).await;
                Err(e)
            }
        }
    }

    /// The envelope of a `Committing` session's blob, sealed under the active key.
    fn session_envelope(
        &self,
        state: &SessionState,
        keys: &BlobKeys,
        digest: &Digest,
    ) -> Result<Envelope> {
        self.active_envelope(keys, digest, state.offset, state.parts.clone())
    }

    /// The envelope of blob `digest` (`size` plaintext bytes in `parts`), its keys
    /// wrapped under the active registry key.
    fn active_envelope(
        &self,
        keys: &BlobKeys,
        digest: &Digest,
        size: u64,
        parts: Vec<DataPart>,
    ) -> Result<Envelope> {
        let (generation, rk) = self.keyring()?.active();
        Ok(Envelope::seal(
            &rk,
            generation,
            keys,
            digest.clone(),
            size,
            parts,
        ))
    }

    /// Step 2 of a commit (module docs), for a session in `Committing`: makes sure an
    /// intact blob is at the digest, links it, and tidies the session. `resumed` when
    /// this call did not write the `Committing` state itself (its data may be gone).
    ///
    /// Fails with `UploadUnknown` when the session's data is gone and no blob is there
    /// (the blob was deleted after the first commit answered).
    async fn complete_commit(
        &self,
        repo: &RepositoryName,
        id: &UploadId,
        session: &Session,
        resumed: bool,
    ) -> Result<BlobInfo> {
        let state = &session.state;
        let Phase::Committing { digest } = &state.phase else {
            return Err(StoreError::UploadUnknown);
        };
        let ours = self.session_envelope(state, &session.keys, digest)?;
        let mut committed = false;
        for _ in 0..COMMIT_ROUNDS {
            match self.examine_whole(digest, Some(&state.blob)).await? {
                Stored::Intact(existing) => {
                    if names_only(&existing.envelope, &state.blob) {
                        self.remove_unnamed_parts(&state.blob, &existing.envelope)
                            .await?;
                    } else {
                        // Another upload's blob: this session's data is garbage, and
                        // no envelope names it.
                        objects::delete_all(
                            self.objects(),
                            &ObjectPath::DataDir { blob: &state.blob }.to_path(),
                        )
                        .await?;
                    }
                    committed = true;
                    break;
                }
                Stored::Absent => {
                    if resumed && !self.data_present(&ours).await? {
                        self.forget_session(id).await?;
                        return Err(StoreError::UploadUnknown);
                    }
                    if objects::create(
                        self.objects(),
                        &ObjectPath::Envelope(digest).to_path(),
                        PutPayload::from(ours.to_json()),
                    )
                    .await?
                    {
                        if resumed {
                            self.remove_unnamed_parts(&state.blob, &ours).await?;
                        }
                        committed = true;
                        break;
                    }
                }
                Stored::Broken(old) => {
                    if !self.data_present(&ours).await? {
                        self.forget_session(id).await?;
                        return Err(StoreError::UploadUnknown);
                    }
                    if self.replace_broken(digest, &old, &ours).await? {
                        self.remove_unnamed_parts(&state.blob, &ours).await?;
                        committed = true;
                        break;
                    }
                }
            }
        }
        if !committed {
            return Err(StoreError::Internal(
                "the blob's envelope kept changing during the commit".into(),
            ));
        }
        self.write_link(repo, digest).await?;
        // Everything below the Committing version is superseded; the version itself
        // stays as the tombstone (module docs). The commit that wrote it knows the one
        // version below (every append deletes the one before its own); a resumed
        // commit looks. Versions a killed append left are removed with the tombstone.
        if resumed {
            for path in objects::list(self.objects(), &ObjectPath::UploadDir(id).to_path()).await? {
                if sequence_of(&path).is_some_and(|s| s < session.seq) {
                    objects::delete(self.objects(), &path).await?;
                }
            }
        } else if let Some(previous) = session.seq.checked_sub(1) {
            objects::delete(
                self.objects(),
                &ObjectPath::UploadState { id, seq: previous }.to_path(),
            )
            .await?;
        }
        Ok(BlobInfo {
            digest: digest.clone(),
            size: state.offset,
        })
    }

    /// Replaces the broken envelope `old` (its exact stored bytes) at `digest` with
    /// `new`. `false` when the stored envelope is no longer `old` (someone else
    /// replaced or deleted it: look again). Object stores offer no conditional delete,
    /// so the check before the delete narrows, not closes, the window in which two
    /// repairs race; the loser's blob then replaces the winner's, equally intact.
    async fn replace_broken(&self, digest: &Digest, old: &Bytes, new: &Envelope) -> Result<bool> {
        match self.examine(digest).await? {
            Stored::Broken(now) if now == *old => {}
            _ => return Ok(false),
        }
        tracing::warn!(%digest, "replacing a damaged blob with a new push of the same content");
        self.manifest_cache().forget_content(digest);
        let path = ObjectPath::Envelope(digest).to_path();
        objects::delete(self.objects(), &path).await?;
        objects::create(self.objects(), &path, PutPayload::from(new.to_json())).await
    }

    /// Deletes the data objects in `blob`'s directory that `envelope` (this session's
    /// own commit) does not name: left by appends or duplicate commits that lost their
    /// state put, or were killed before deleting what they wrote. Safe because the
    /// directory belongs to this session alone and the session has ended: no later
    /// version can name them (module docs). The names deleted come from listing the
    /// session's own directory; `envelope` (which may be another node's commit of the
    /// same session, judged intact) only decides what to keep.
    async fn remove_unnamed_parts(&self, blob: &str, envelope: &Envelope) -> Result<()> {
        for path in objects::list(self.objects(), &ObjectPath::DataDir { blob }.to_path()).await? {
            if !envelope.parts.iter().any(|p| p.object == path.as_ref()) {
                objects::delete(self.objects(), &path).await?;
            }
        }
        Ok(())
    }

    /// [`Store::examine`], with an intact-looking blob read back whole before a writer
    /// defers to it: still `Intact` when every segment authenticates and the plaintext
    /// hashes to `digest`, else `Broken`. A blob whose data objects all lie in
    /// `own_blob`'s directory is this session's own commit and needs no second look.
    async fn examine_whole(&self, digest: &Digest, own_blob: Option<&str>) -> Result<Stored> {
        match self.examine(digest).await? {
            Stored::Intact(intact)
                if !own_blob.is_some_and(|blob| names_only(&intact.envelope, blob)) =>
            {
                Ok(if self.verify_by_reading(&intact.envelope, digest).await? {
                    Stored::Intact(intact)
                } else {
                    Stored::Broken(intact.raw)
                })
            }
            other => Ok(other),
        }
    }

    /// Reads a sealed blob back and checks its digest: `false` on a mismatch or when a
    /// segment fails authentication.
    async fn verify_by_reading(&self, envelope: &Envelope, digest: &Digest) -> Result<bool> {
        let mut hash = ResumableHash::new(digest.algorithm());
        let mut stream = self.read_envelope(envelope, 0..envelope.size)?;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => hash.update(&chunk),
                Err(StoreError::Integrity) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(&hash.digest() == digest)
    }

    /// Ends an `Open` session and deletes its data: creates a `Cancelled` version first,
    /// so that a concurrent commit either wins that put (and keeps its data) or sees
    /// the session cancelled. Returns whether this call cancelled it.
    async fn discard_session(&self, id: &UploadId, session: &Session) -> Result<bool> {
        if !session.state.phase.is_open() {
            return Ok(false);
        }
        let mut cancelled = session.state.clone();
        cancelled.phase = Phase::Cancelled;
        cancelled.updated = Utc::now();
        if !objects::create_json(
            self.objects(),
            &ObjectPath::UploadState {
                id,
                seq: session.seq + 1,
            }
            .to_path(),
            &cancelled,
        )
        .await?
        {
            return Ok(false);
        }
        objects::delete_all(
            self.objects(),
            &ObjectPath::DataDir {
                blob: &session.state.blob,
            }
            .to_path(),
        )
        .await?;
        self.forget_session(id).await?;
        Ok(true)
    }

    /// Removes every state version of a session whose data is gone or owned elsewhere.
    async fn forget_session(&self, id: &UploadId) -> Result<()> {
        objects::delete_all(self.objects(), &ObjectPath::UploadDir(id).to_path()).await
    }

    /// Cancels the session and deletes everything it wrote. Fails with `UploadUnknown`
    /// for an unknown, committed or already cancelled session.
    pub async fn cancel_upload(&self, repo: &RepositoryName, id: &UploadId) -> Result<()> {
        for _ in 0..COMMIT_ROUNDS {
            let session = self.load_open_session(repo, id).await?;
            if self.discard_session(id, &session).await? {
                return Ok(());
            }
        }
        Err(StoreError::UploadUnknown)
    }

    /// A whole blob in one call (monolithic push, `POST ?digest=` with the body):
    /// sealed straight into one data object of a fresh blob directory, committed by
    /// creating its envelope (module docs, "One-request pushes") and linked into
    /// `repo`. No upload session is written. On `DigestMismatch` nothing is stored.
    pub async fn put_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        body: BodyStream<'_>,
    ) -> Result<BlobInfo> {
        let body = self.limited(body, 0);
        let (part_path, envelope, sealed) = self
            .seal_fresh(digest, body, Some(ResumableHash::new(digest.algorithm())))
            .await
            .map_err(|e| self.too_large(e))?;
        if sealed.hash.as_ref().map(ResumableHash::digest).as_ref() != Some(digest) {
            objects::delete(self.objects(), &part_path).await?;
            return Err(StoreError::DigestMismatch);
        }
        self.commit_sealed(digest, &part_path, &envelope, None)
            .await?;
        self.write_link(repo, digest).await?;
        Ok(BlobInfo {
            digest: digest.clone(),
            size: sealed.received,
        })
    }

    /// Stores small content (a manifest) as a blob, unless an intact blob of the same
    /// digest already exists (a broken one is replaced). The caller has verified that
    /// `bytes` hash to `digest`.
    pub(super) async fn put_small_blob(&self, digest: &Digest, bytes: Bytes) -> Result<()> {
        let stored = self.examine_whole(digest, None).await?;
        if let Stored::Intact(..) = stored {
            return Ok(());
        }
        let body = futures::stream::once(async move { Ok(bytes) }).boxed();
        let (part_path, envelope, _) = self.seal_fresh(digest, body, None).await?;
        self.commit_sealed(digest, &part_path, &envelope, Some(stored))
            .await
    }

    /// Seals `body` into the one data object of a fresh blob directory, outside any
    /// session, hashing it from `hash` when given: the object's path, the envelope
    /// that would commit it as `digest` (not yet written), and what was sealed.
    async fn seal_fresh(
        &self,
        digest: &Digest,
        body: BodyStream<'_>,
        hash: Option<ResumableHash>,
    ) -> Result<(object_store::path::Path, Envelope, Sealed)> {
        let keys = BlobKeys::generate(self.inner.config.segment_size);
        let part_path = ObjectPath::DataPart {
            blob: &objects::random_hex(16),
            part: "000000",
        }
        .to_path();
        let sealer = Sealer::new(keys.cipher(), keys.segment_size, 0, &[]);
        let sealed = self
            .seal_into(&part_path, sealer, hash, body, Ending::Final)
            .await?;
        let part = DataPart {
            object: part_path.to_string(),
            segments: sealed.segments,
        };
        let envelope = self.active_envelope(&keys, digest, sealed.received, vec![part])?;
        Ok((part_path, envelope, sealed))
    }

    /// Commits a blob written without a session, whose only data object is
    /// `part_path` (nothing else names it): creates `envelope` at `digest`, unless an
    /// intact blob is already there (then `part_path` is deleted, the content being
    /// stored already) or replaces a broken one. `stored` is what a look at the digest
    /// just before found, if the caller looked.
    async fn commit_sealed(
        &self,
        digest: &Digest,
        part_path: &object_store::path::Path,
        envelope: &Envelope,
        mut stored: Option<Stored>,
    ) -> Result<()> {
        for _ in 0..COMMIT_ROUNDS {
            let now = match stored.take() {
                Some(s) => s,
                None => self.examine_whole(digest, None).await?,
            };
            let done = match now {
                Stored::Intact(..) => {
                    objects::delete(self.objects(), part_path).await?;
                    return Ok(());
                }
                Stored::Broken(old) => self.replace_broken(digest, &old, envelope).await?,
                Stored::Absent => {
                    objects::create(
                        self.objects(),
                        &ObjectPath::Envelope(digest).to_path(),
                        PutPayload::from(envelope.to_json()),
                    )
                    .await?
                }
            };
            if done {
                return Ok(());
            }
        }
        Err(StoreError::Internal(
            "the blob's envelope kept changing while storing it".into(),
        ))
    }
}

/// Where the next append of `state` writes: a data object of its own in the session's
/// data directory, numbered and randomised (two racing appends never share one).
fn next_part_path(state: &SessionState) -> object_store::path::Path {
    let part = format!("{:06}-{}", state.parts.len(), objects::random_hex(8));
    ObjectPath::DataPart {
        blob: &state.blob,
        part: &part,
    }
    .to_path()
}

/// A sealer that continues `session` after the tail it holds back. `UploadUnknown`
/// unless the session is open, `OffsetMismatch` when `start` is given and is not
/// where the session stands.
fn session_sealer(session: &Session, start: Option<u64>) -> Result<Sealer> {
    let state = &session.state;
    if !state.phase.is_open() {
        return Err(StoreError::UploadUnknown);
    }
    if start.is_some_and(|start| start != state.offset) {
        return Err(StoreError::OffsetMismatch {
            current: state.offset,
        });
    }
    let next_index = u32::try_from(state.segments).map_err(|_| StoreError::SizeMismatch)?;
    Sealer::try_new(
        session.keys.cipher(),
        state.segment_size,
        next_index,
        &session.secrets.tail,
    )
    .map_err(|_| StoreError::Integrity)
}

/// The state (next version, not yet written) and secrets of `session` after an
/// append wrote `sealed` to `part_path`. `segments` counts the non-final segments
/// only (the sealer's next index); the part names every segment it holds.
fn advanced(
    id: &UploadId,
    session: &Session,
    part_path: &object_store::path::Path,
    sealed: Sealed,
    ending: Ending,
) -> Result<(SessionState, SessionSecrets)> {
    let written = sealed.written();
    let Sealed {
        received,
        segments,
        tail,
        hash,
    } = sealed;
    let hash =
        hash.ok_or_else(|| StoreError::Internal("an upload was sealed without its hash".into()))?;
    let mut state = session.state.clone();
    state.offset += received;
    state.segments += match ending {
        Ending::HoldTail => segments,
        Ending::Final => segments.saturating_sub(1),
    };
    if written {
        state.parts.push(DataPart {
            object: part_path.to_string(),
            segments,
        });
    }
    let secrets = SessionSecrets { tail, hash };
    state.sealed = session.keys.seal_aux(
        &secrets_aad(id, state.offset, state.segments),
        &secrets.encode(),
    );
    state.updated = Utc::now();
    Ok((state, secrets))
}

/// Whether `session` already holds exactly `digest`'s content: committing it, or open
/// with everything received hashing to it.
fn holds(session: &Session, digest: &Digest) -> bool {
    match &session.state.phase {
        Phase::Committing { digest: d } => d == digest,
        Phase::Open => {
            session.secrets.hash.algorithm() == digest.algorithm()
                && &session.secrets.hash.digest() == digest
        }
        Phase::Cancelled => false,
    }
}

/// Whether every data object `envelope` names lies in the data directory of `blob`:
/// then it is the envelope of that session's own commit.
fn names_only(envelope: &Envelope, blob: &str) -> bool {
    let dir = format!("{}/", ObjectPath::DataDir { blob }.to_path());
    !envelope.parts.is_empty() && envelope.parts.iter().all(|p| p.object.starts_with(&dir))
}

/// The data directory a stored session state writes to, and what the sweep does with
/// the session: ended (`Committing`, `Cancelled`) before `cutoff` means remove.
/// `None` when the bytes are not a session state.
pub(super) fn session_fate(
    bytes: &[u8],
    cutoff: DateTime<Utc>,
) -> Option<(String, super::sweep::Fate)> {
    use super::sweep::Fate;
    let state: SessionState = serde_json::from_slice(bytes).ok()?;
    let fate = match state.phase {
        Phase::Open => Fate::Keep,
        Phase::Committing { .. } | Phase::Cancelled if state.updated < cutoff => Fate::Remove,
        Phase::Committing { .. } | Phase::Cancelled => Fate::Keep,
    };
    Some((state.blob, fate))
}
