//! The key watcher (DESIGN §7): keeps every node's view of the KEK current.
//!
//! States: **Active** (serving), **Degraded** (the vault cannot be reached, still
//! serving within the outage grace), **Revoked** (the KEK refused: the registry keys
//! are dropped and every content request is answered 403 `DENIED` naming the key),
//! **Unavailable** (the outage outlasted the grace: keys dropped, 503).
//!
//! Every key-check interval the watcher probes the KEK (one unwrap of the active
//! registry key) and reloads the keyring if another node changed it; while Revoked or
//! Unavailable it tries to load the keyring again, and success brings the registry
//! back without a restart. Every rotation-poll interval, with a versionless key id, it
//! asks the vault for the newest version and, if it is newer than the one wrapping the
//! registry keys, rewraps them: the node that takes the rotation lease (a create-only
//! object) does it, and the others load its keyring (the create-only keyring write
//! would settle a race anyway). Blob envelopes and data objects are never touched.
//!
//! A probe or recovery attempt the vault does not answer within
//! [`WatchSettings::probe_timeout`] counts as an unreachable vault. The watcher sees
//! the store through [`KeyringStore`] and keeps time with `tokio::time`, so its state
//! machine runs in tests under paused time (`keys/watcher_tests.rs`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kms_client::{Kek, KeyId, KmsError, VersionedKeyId};
use storage::keyring::LoadedKeyring;
use storage::{RotateOutcome, Store, StoreError};
use tokio::time::Instant;

use super::state::{KeyState, KeyStatus, WatchSettings};

/// What the watcher needs of the store: the keyring in memory and in the object store,
/// the probe, dropping the registry keys, and a leased rotation. [`Store`] implements
/// it; tests wrap a store to make it fail.
pub trait KeyringStore: Send + Sync {
    /// The keyring in use; `Err` while the registry keys are dropped.
    fn keyring(&self) -> Result<Arc<LoadedKeyring>, StoreError>;
    /// One unwrap of the active registry key, compared with the key in memory.
    fn probe(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The sequence number of the newest keyring in the object store.
    fn latest_keyring_sequence(
        &self,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;
    /// Reads the newest keyring and unwraps every registry key, putting it in use.
    fn reload_keyring(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Drops the registry keys: every keyed operation fails with `why` until a reload.
    fn revoke_access(&self, why: KmsError);
    fn acquire_rotation_lease(
        &self,
        holder: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    fn release_rotation_lease(
        &self,
        holder: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Rewraps the registry keys under `to`, recording `key_id` as the configured key.
    fn rotate(
        &self,
        to: &VersionedKeyId,
        key_id: &KeyId,
    ) -> impl Future<Output = Result<RotateOutcome, StoreError>> + Send;
}

impl KeyringStore for Store {
    fn keyring(&self) -> Result<Arc<LoadedKeyring>, StoreError> {
        Store::keyring(self)
    }
    async fn probe(&self) -> Result<(), StoreError> {
        Store::probe(self).await
    }
    async fn latest_keyring_sequence(&self) -> Result<Option<u64>, StoreError> {
        Store::latest_keyring_sequence(self).await
    }
    async fn reload_keyring(&self) -> Result<u64, StoreError> {
        Store::reload_keyring(self).await
    }
    fn revoke_access(&self, why: KmsError) {
        Store::revoke_access(self, why)
    }
    async fn acquire_rotation_lease(
        &self,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        Store::acquire_rotation_lease(self, holder, ttl).await
    }
    async fn release_rotation_lease(&self, holder: &str) -> Result<(), StoreError> {
        Store::release_rotation_lease(self, holder).await
    }
    async fn rotate(
        &self,
        to: &VersionedKeyId,
        key_id: &KeyId,
    ) -> Result<RotateOutcome, StoreError> {
        Store::rotate(self, to, key_id).await
    }
}

/// How long a rotation lease is good for: far longer than a rewrap of a few registry
/// keys takes, short enough that a node dying mid-rotation delays the next one little.
const ROTATION_LEASE_TTL: Duration = Duration::from_secs(120);

/// This process's name as a lease holder.
fn node_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("node-{}-{nanos:x}", std::process::id())
    })
}

/// The key watcher over one store: what it reads and writes, nothing more.
#[derive(Debug)]
pub struct Watcher<'a, S> {
    /// The store whose registry keys are watched (and dropped or reloaded).
    pub store: &'a S,
    /// The state every request reads; only the watcher writes it.
    pub status: &'a KeyStatus,
    pub settings: WatchSettings,
    /// The KEK provider, asked for the newest version by the rotation poll.
    pub kek: &'a dyn Kek,
    /// The key id the registry was started with, named in messages when the keyring
    /// (which records the one in use) cannot be read.
    pub key_id: &'a KeyId,
}

impl<S: KeyringStore> Watcher<'_, S> {
    /// Runs the watcher until `shutdown` completes: the key checks and the rotation
    /// polls run as two loops, so a slow vault answer in one never delays the other.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        let checks = every(self.settings.key_check_interval, || self.check_once());
        let rotations = every(self.settings.rotation_poll_interval, || self.rotate_once());
        tokio::select! {
            _ = shutdown => {}
            _ = checks => {}
            _ = rotations => {}
        }
    }

    /// The key id the keyring records (authoritative after a rotate-key), for messages.
    fn key_name(&self) -> String {
        match self.store.keyring() {
            Ok(ring) => ring.doc.key_id.clone(),
            Err(_) => self.key_id.to_string(),
        }
    }

    /// `call`, or a transient key error when the vault does not answer within the
    /// probe timeout: a hung vault is an outage, not a stuck watcher.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.settings.probe_timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Key(KmsError::transient(
                self.key_name(),
                format!(
                    "the key vault did not answer within {:?}",
                    self.settings.probe_timeout
                ),
            ))),
        }
    }

    /// One key check: probe while serving, try to recover while not.
    pub async fn check_once(&self) {
        let status = self.status;
        let state = status.get();
        match state {
            KeyState::Active | KeyState::Degraded { .. } => {
                // Adopt a keyring another node wrote before probing: after a rotation the
                // operator may disable the old version at once, and probing it first would
                // call a healthy node revoked.
                self.reload_if_changed().await;
                match self.bounded(self.store.probe()).await {
                    Ok(()) => {
                        status.record_probe_success();
                        if let KeyState::Degraded { .. } = state {
                            tracing::info!(key = %self.key_name(), "the key vault answers again");
                        }
                        status.set(KeyState::Active);
                    }
                    Err(e) => self.on_probe_failure(state, e),
                }
            }
            KeyState::Revoked { .. } | KeyState::Unavailable { .. } => {
                match self.bounded(self.store.reload_keyring()).await {
                    Ok(sequence) => {
                        status.record_probe_success();
                        tracing::warn!(key = %self.key_name(), sequence, "the encryption key works again: serving content");
                        status.set(KeyState::Active);
                    }
                    Err(e) => {
                        let key = self.key_name();
                        let reason = e.to_string();
                        tracing::debug!(%key, %reason, "the encryption key is still unusable");
                        let next = match (&state, &e) {
                            (
                                KeyState::Unavailable { .. },
                                StoreError::Key(KmsError::Transient { .. }),
                            ) => KeyState::Unavailable { key, reason },
                            (_, StoreError::Key(KmsError::Transient { .. })) => state.clone(),
                            _ => KeyState::Revoked { key, reason },
                        };
                        status.set(next);
                    }
                }
            }
        }
    }

    fn on_probe_failure(&self, state: KeyState, e: StoreError) {
        let status = self.status;
        let key = self.key_name();
        match e {
            StoreError::Key(KmsError::Transient { reason, .. }) => {
                let (since, since_utc) = match &state {
                    KeyState::Degraded {
                        since, since_utc, ..
                    } => (*since, *since_utc),
                    _ => (Instant::now(), Utc::now()),
                };
                if since.elapsed() >= self.settings.outage_grace {
                    tracing::error!(%key, %reason, "the key vault has been unreachable for longer than the outage grace: refusing content");
                    self.store
                        .revoke_access(KmsError::transient(&key, reason.clone()));
                    status.set(KeyState::Unavailable { key, reason });
                } else {
                    tracing::warn!(%key, %reason, "the key vault cannot be reached; serving within the outage grace");
                    status.set(KeyState::Degraded {
                        since,
                        since_utc,
                        reason,
                    });
                }
            }
            StoreError::Key(k) => {
                let reason = match &k {
                    KmsError::Revoked { reason, .. } | KmsError::Misconfigured { reason, .. } => {
                        reason.clone()
                    }
                    other => other.to_string(),
                };
                tracing::error!(%key, %reason, "the encryption key was revoked: dropping the registry keys and refusing content");
                self.store.revoke_access(k);
                status.set(KeyState::Revoked { key, reason });
            }
            StoreError::Integrity => {
                let reason = "the key vault unwraps the registry key to different bytes".to_owned();
                tracing::error!(%key, %reason, "refusing content");
                self.store
                    .revoke_access(KmsError::revoked(&key, reason.clone()));
                status.set(KeyState::Revoked { key, reason });
            }
            other => {
                // The object store or a corrupt keyring object, not the key: leave the key
                // state alone; requests report the storage problem themselves.
                tracing::error!(%key, error = %other, "key check could not read the keyring");
            }
        }
    }

    /// Another node rotated: pick up its keyring.
    async fn reload_if_changed(&self) {
        let Ok(current) = self.store.keyring() else {
            return;
        };
        match self.store.latest_keyring_sequence().await {
            Ok(Some(latest)) if latest > current.sequence => {
                match self.store.reload_keyring().await {
                    Ok(sequence) => {
                        tracing::info!(sequence, "loaded the keyring another node wrote")
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot load the newer keyring"),
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot list the keyring"),
        }
    }

    /// One rotation poll: with a versionless key id, rotate to the vault's newest version.
    pub async fn rotate_once(&self) {
        if self.status.get() != KeyState::Active {
            return;
        }
        // Another node may have rotated already: adopt its keyring rather than rewrapping
        // (and racing it for the keyring write) again.
        self.reload_if_changed().await;
        let Ok(ring) = self.store.keyring() else {
            return;
        };
        if !ring.doc.automatic_rotation {
            return;
        }
        let key: KeyId = match ring.doc.key_id.parse() {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, "the keyring's key id does not parse");
                return;
            }
        };
        let newest = match self.kek.latest_version(&key).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(%key, error = %e, "cannot ask the vault for the newest key version");
                return;
            }
        };
        let current = ring.active_generation().map(|g| g.kek.clone());
        if current.as_deref() == Some(newest.to_string().as_str()) {
            return;
        }
        // One node rewraps; the others see the lease and adopt its keyring at their next
        // key check.
        let holder = node_id();
        match self
            .store
            .acquire_rotation_lease(holder, ROTATION_LEASE_TTL)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(to = %newest, "another node holds the rotation lease");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot take the rotation lease; not rotating now");
                return;
            }
        }
        // The lease may have been released by a node that has just rotated: read the
        // keyring again under the lease, so that rotate sees it already current instead
        // of rewrapping (a wasted vault call, and a lost race at the keyring write).
        self.reload_if_changed().await;
        let outcome = self.store.rotate(&newest, &key).await;
        if let Err(e) = self.store.release_rotation_lease(holder).await {
            tracing::warn!(error = %e, "cannot release the rotation lease; it expires by itself");
        }
        match outcome {
            Ok(RotateOutcome::Rotated { from, to, sequence }) => {
                tracing::warn!(%from, %to, sequence, "automatic rotation: the registry keys are now wrapped by the newest key version");
            }
            Ok(RotateOutcome::LostRace { sequence }) => {
                tracing::info!(sequence, "another node rotated first; loaded its keyring");
            }
            Ok(RotateOutcome::AlreadyCurrent) => {}
            Err(e) => {
                tracing::error!(%key, to = %newest, error = %e, "automatic rotation failed; still using the current version")
            }
        }
    }
}

/// Runs `step` every `period` (the first time one period from now: the store was just
/// opened), never overlapping itself.
async fn every<F, Fut>(period: Duration, mut step: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        step().await;
    }
}
