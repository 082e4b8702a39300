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

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kms_client::{KeyId, KmsError};
use storage::{RotateOutcome, StoreError};

use crate::app::App;
use crate::config::Config;
use crate::errors::{ApiError, ErrorCode};

/// The watcher's settings.
#[derive(Debug, Clone, Copy)]
pub struct WatchSettings {
    pub key_check_interval: Duration,
    pub rotation_poll_interval: Duration,
    pub outage_grace: Duration,
}

impl WatchSettings {
    pub fn from_config(config: &Config) -> WatchSettings {
        WatchSettings {
            key_check_interval: Duration::from_secs(config.encryption.key_check_interval_secs),
            rotation_poll_interval: Duration::from_secs(
                config.encryption.rotation_poll_interval_secs,
            ),
            outage_grace: Duration::from_secs(config.encryption.outage_grace_secs),
        }
    }
}

/// Where the registry's keys stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    Active,
    /// The vault has been unreachable since `since`; content is still served until the
    /// outage grace runs out.
    Degraded {
        since: Instant,
        since_utc: DateTime<Utc>,
        reason: String,
    },
    /// The KEK refused: no content until it works again.
    Revoked {
        key: String,
        reason: String,
    },
    /// The vault stayed unreachable past the grace: no content until it answers.
    Unavailable {
        key: String,
        reason: String,
    },
}

impl KeyState {
    /// The lowercase name the admin API reports.
    pub fn name(&self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Degraded { .. } => "degraded",
            KeyState::Revoked { .. } => "revoked",
            KeyState::Unavailable { .. } => "unavailable",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            KeyState::Active => None,
            KeyState::Degraded { reason, .. }
            | KeyState::Revoked { reason, .. }
            | KeyState::Unavailable { reason, .. } => Some(reason),
        }
    }
}

/// The shared, current key state and what the watcher last did.
#[derive(Debug)]
pub struct KeyStatus {
    state: RwLock<KeyState>,
    pub settings: WatchSettings,
}

impl KeyStatus {
    pub fn new(settings: WatchSettings) -> KeyStatus {
        KeyStatus {
            state: RwLock::new(KeyState::Active),
            settings,
        }
    }

    pub fn get(&self) -> KeyState {
        match self.state.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set(&self, state: KeyState) {
        match self.state.write() {
            Ok(mut s) => *s = state,
            Err(p) => *p.into_inner() = state,
        }
    }

    /// Whether content may be served: `Ok` when Active or Degraded within the grace;
    /// otherwise the error every content request gets (403 `DENIED` naming the key
    /// for a revocation, 503 for an outage).
    pub fn gate(&self) -> Result<(), ApiError> {
        match self.get() {
            KeyState::Active | KeyState::Degraded { .. } => Ok(()),
            KeyState::Revoked { key, reason } => Err(ApiError::new(ErrorCode::Denied)
                .with_message(format!(
                    "the registry's encryption key {key} is revoked or unusable: {reason}"
                ))),
            KeyState::Unavailable { key, reason } => Err(ApiError::new(ErrorCode::Unavailable)
                .with_message(format!(
                    "the key vault holding {key} cannot be reached ({reason}); try again later"
                ))),
        }
    }

    /// Whether the node should receive traffic (`/readyz`).
    pub fn ready(&self) -> bool {
        self.gate().is_ok()
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

/// Runs the watcher until `shutdown` completes: the key checks and the rotation polls
/// run as two loops, so a slow vault answer in one never delays the other.
pub async fn run(app: Arc<App>, shutdown: impl std::future::Future<Output = ()>) {
    let settings = app.keys.settings;
    let checks = every(settings.key_check_interval, {
        let app = app.clone();
        move || {
            let app = app.clone();
            async move { check_once(&app).await }
        }
    });
    let rotations = every(settings.rotation_poll_interval, move || {
        let app = app.clone();
        async move { rotate_once(&app).await }
    });
    tokio::select! {
        _ = shutdown => {}
        _ = checks => {}
        _ = rotations => {}
    }
}

/// Runs `step` every `period` (the first time one period from now: the store was just
/// opened), never overlapping itself.
async fn every<F, Fut>(period: Duration, mut step: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        step().await;
    }
}

/// The key id the keyring records (authoritative after a rotate-key), for messages.
fn key_name(app: &App) -> String {
    match app.store.keyring() {
        Ok(ring) => ring.doc.key_id.clone(),
        Err(_) => app.key_id.to_string(),
    }
}

/// One key check: probe while serving, try to recover while not.
pub async fn check_once(app: &App) {
    let status = &app.keys;
    let state = status.get();
    match state {
        KeyState::Active | KeyState::Degraded { .. } => {
            // Adopt a keyring another node wrote before probing: after a rotation the
            // operator may disable the old version at once, and probing it first would
            // call a healthy node revoked.
            reload_if_changed(app).await;
            match app.store.probe().await {
                Ok(()) => {
                    if let KeyState::Degraded { .. } = state {
                        tracing::info!(key = %key_name(app), "the key vault answers again");
                    }
                    status.set(KeyState::Active);
                }
                Err(e) => on_probe_failure(app, state, e),
            }
        }
        KeyState::Revoked { .. } | KeyState::Unavailable { .. } => {
            match app.store.reload_keyring().await {
                Ok(sequence) => {
                    tracing::warn!(key = %key_name(app), sequence, "the encryption key works again: serving content");
                    status.set(KeyState::Active);
                }
                Err(e) => {
                    let key = key_name(app);
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

fn on_probe_failure(app: &App, state: KeyState, e: StoreError) {
    let status = &app.keys;
    let key = key_name(app);
    match e {
        StoreError::Key(KmsError::Transient { reason, .. }) => {
            let (since, since_utc) = match &state {
                KeyState::Degraded {
                    since, since_utc, ..
                } => (*since, *since_utc),
                _ => (Instant::now(), Utc::now()),
            };
            if since.elapsed() >= status.settings.outage_grace {
                tracing::error!(%key, %reason, "the key vault has been unreachable for longer than the outage grace: refusing content");
                app.store
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
            app.store.revoke_access(k);
            status.set(KeyState::Revoked { key, reason });
        }
        StoreError::Integrity => {
            let reason = "the key vault unwraps the registry key to different bytes".to_owned();
            tracing::error!(%key, %reason, "refusing content");
            app.store
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
async fn reload_if_changed(app: &App) {
    let Ok(current) = app.store.keyring() else {
        return;
    };
    match app.store.latest_keyring_sequence().await {
        Ok(Some(latest)) if latest > current.sequence => match app.store.reload_keyring().await {
            Ok(sequence) => tracing::info!(sequence, "loaded the keyring another node wrote"),
            Err(e) => tracing::warn!(error = %e, "cannot load the newer keyring"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot list the keyring"),
    }
}

/// One rotation poll: with a versionless key id, rotate to the vault's newest version.
pub async fn rotate_once(app: &App) {
    if app.keys.get() != KeyState::Active {
        return;
    }
    // Another node may have rotated already: adopt its keyring rather than rewrapping
    // (and racing it for the keyring write) again.
    reload_if_changed(app).await;
    let Ok(ring) = app.store.keyring() else {
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
    let newest = match app.store.kek().latest_version(&key).await {
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
    match app
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
    let outcome = app.store.rotate(&newest, &key).await;
    if let Err(e) = app.store.release_rotation_lease(holder).await {
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
