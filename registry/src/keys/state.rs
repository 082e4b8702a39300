//! Where the registry's keys stand: the key state the watcher keeps and every request
//! reads, and the watcher's settings. Nothing here calls the vault or the store.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::config::Config;

/// The watcher's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchSettings {
    /// How often the KEK is probed (and, while refused, how often recovery is tried).
    pub key_check_interval: Duration,
    /// How often a versionless key id is checked for a newer version.
    pub rotation_poll_interval: Duration,
    /// How long an unreachable vault is ridden out before content is refused; zero
    /// refuses at the first failed probe.
    pub outage_grace: Duration,
    /// How long one probe (or recovery attempt) may wait for the vault before it counts
    /// as an outage.
    pub probe_timeout: Duration,
}

/// Longer than the Key Vault provider's own budget (four attempts of 10 s with
/// backoff), so the provider's answer normally arrives first; this bounds a vault that
/// accepts the connection and never answers.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(120);

impl WatchSettings {
    pub fn from_config(config: &Config) -> WatchSettings {
        WatchSettings {
            key_check_interval: Duration::from_secs(config.encryption.key_check_interval_secs),
            rotation_poll_interval: Duration::from_secs(
                config.encryption.rotation_poll_interval_secs,
            ),
            outage_grace: Duration::from_secs(config.encryption.outage_grace_secs),
            probe_timeout: PROBE_TIMEOUT,
        }
    }
}

/// Where the registry's keys stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    Active,
    /// The vault has been unreachable since `since` (tokio time, so paused-time tests
    /// can run the grace out); content is still served until the outage grace runs out.
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
    /// The lowercase name the admin API and `/readyz` report.
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

    /// Whether content may be served: Active, or Degraded within the grace.
    pub fn serving(&self) -> bool {
        matches!(self, KeyState::Active | KeyState::Degraded { .. })
    }
}

/// The shared, current key state: written by the watcher, read by every request.
#[derive(Debug)]
pub struct KeyStatus {
    state: RwLock<KeyState>,
    /// Unix seconds of the last time the KEK unwrapped the registry keys (a probe, a
    /// recovery, the store's opening); 0 = never. For `/metrics`.
    last_probe_success: AtomicI64,
}

impl Default for KeyStatus {
    fn default() -> Self {
        KeyStatus::new()
    }
}

impl KeyStatus {
    /// Active: the store was just opened with the key.
    pub fn new() -> KeyStatus {
        KeyStatus {
            state: RwLock::new(KeyState::Active),
            last_probe_success: AtomicI64::new(0),
        }
    }

    /// The KEK just unwrapped the registry keys.
    pub fn record_probe_success(&self) {
        self.last_probe_success
            .store(Utc::now().timestamp(), Ordering::Relaxed);
    }

    /// Unix seconds of the last [`KeyStatus::record_probe_success`], if any.
    pub fn last_probe_success(&self) -> Option<i64> {
        let at = self.last_probe_success.load(Ordering::Relaxed);
        (at != 0).then_some(at)
    }

    pub fn get(&self) -> KeyState {
        match self.state.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Only the watcher changes the state (and tests set up the one they need).
    pub(crate) fn set(&self, state: KeyState) {
        match self.state.write() {
            Ok(mut s) => *s = state,
            Err(p) => *p.into_inner() = state,
        }
    }

    /// Whether the node should receive traffic (`/readyz`).
    pub fn ready(&self) -> bool {
        self.get().serving()
    }
}
