//! The watcher's state machine, driven directly: a real [`Store`] over an in-memory
//! object store, whose KEK is a [`ScriptedKek`] answering each unwrap from a script.
//! Every test runs under paused tokio time, so grace periods and timeouts pass at once.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kms_client::{Kek, KeyDescription, KeyId, KmsError, SecretBytes, VersionedKeyId};
use object_store::memory::InMemory;
use object_store::ObjectStore;
use storage::keyring::LoadedKeyring;
use storage::{RotateOutcome, Store, StoreConfig, StoreError};
use tokio::time::Instant;

use super::state::{KeyState, KeyStatus, WatchSettings};
use super::watcher::{KeyringStore, Watcher};

const KEY: &str = "file:///keys/kek";

fn key_id() -> KeyId {
    KEY.parse().expect("key id")
}

/// Version `n` of the key (versions are 32 hex digits).
fn version(n: u32) -> VersionedKeyId {
    format!("{KEY}/{n:032x}").parse().expect("versioned key id")
}

/// How the scripted vault answers one unwrap.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Ok,
    Transient,
    /// The key is disabled (or access was revoked).
    Revoked,
    /// The unwrap succeeds, to bytes that are not the registry key.
    OtherBytes,
    /// The key is not one valv can use.
    Misconfigured,
    /// The vault accepts the call and never answers.
    Hang,
}

/// A KEK whose unwraps follow a script (then succeed), with versions that can be
/// disabled and a settable newest version. "Wrapping" is a reversible XOR: the
/// watcher cares what the vault answers, not about RSA.
#[derive(Debug)]
struct ScriptedKek {
    script: Mutex<VecDeque<Answer>>,
    disabled: Mutex<HashSet<String>>,
    newest: Mutex<u32>,
}

impl ScriptedKek {
    fn new() -> Arc<ScriptedKek> {
        Arc::new(ScriptedKek {
            script: Mutex::new(VecDeque::new()),
            disabled: Mutex::new(HashSet::new()),
            newest: Mutex::new(1),
        })
    }

    fn then(&self, answers: &[Answer]) {
        self.script
            .lock()
            .expect("script")
            .extend(answers.iter().copied());
    }

    fn disable(&self, v: &VersionedKeyId) {
        self.disabled
            .lock()
            .expect("disabled")
            .insert(v.to_string());
    }

    fn set_newest(&self, n: u32) {
        *self.newest.lock().expect("newest") = n;
    }
}

fn xor(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().map(|b| b ^ 0x5a).collect()
}

#[async_trait]
impl Kek for ScriptedKek {
    async fn describe(&self, id: &VersionedKeyId) -> Result<KeyDescription, KmsError> {
        Ok(KeyDescription {
            id: id.clone(),
            key_type: "RSA".into(),
            key_size_bits: 2048,
            enabled: true,
            created: None,
            expires: None,
            not_before: None,
        })
    }

    async fn latest_version(&self, id: &KeyId) -> Result<VersionedKeyId, KmsError> {
        match id.as_versioned() {
            Some(v) => Ok(v),
            None => Ok(version(*self.newest.lock().expect("newest"))),
        }
    }

    async fn wrap(&self, _id: &VersionedKeyId, plaintext: &[u8]) -> Result<Vec<u8>, KmsError> {
        Ok(xor(plaintext))
    }

    async fn unwrap(&self, id: &VersionedKeyId, wrapped: &[u8]) -> Result<SecretBytes, KmsError> {
        if self
            .disabled
            .lock()
            .expect("disabled")
            .contains(&id.to_string())
        {
            return Err(KmsError::revoked(id, "this version is disabled"));
        }
        let answer = self
            .script
            .lock()
            .expect("script")
            .pop_front()
            .unwrap_or(Answer::Ok);
        match answer {
            Answer::Ok => Ok(SecretBytes::new(xor(wrapped))),
            Answer::Transient => Err(KmsError::transient(id, "connection refused")),
            Answer::Revoked => Err(KmsError::revoked(id, "the key is disabled")),
            Answer::OtherBytes => {
                let mut other = xor(wrapped);
                other[0] ^= 1;
                Ok(SecretBytes::new(other))
            }
            Answer::Misconfigured => Err(KmsError::misconfigured(id, "key type EC is not RSA")),
            Answer::Hang => std::future::pending().await,
        }
    }
}

/// A store whose probe fails with an object-store error while `failing` is set.
#[derive(Debug)]
struct FlakyStore {
    inner: Store,
    failing: AtomicBool,
}

impl KeyringStore for FlakyStore {
    fn keyring(&self) -> Result<Arc<LoadedKeyring>, StoreError> {
        self.inner.keyring()
    }
    async fn probe(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Backend(object_store::Error::Generic {
                store: "test",
                source: "the object store is down".into(),
            }));
        }
        self.inner.probe().await
    }
    async fn latest_keyring_sequence(&self) -> Result<Option<u64>, StoreError> {
        self.inner.latest_keyring_sequence().await
    }
    async fn reload_keyring(&self) -> Result<u64, StoreError> {
        self.inner.reload_keyring().await
    }
    fn revoke_access(&self, why: KmsError) {
        KeyringStore::revoke_access(&self.inner, why)
    }
    async fn acquire_rotation_lease(
        &self,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.inner.acquire_rotation_lease(holder, ttl).await
    }
    async fn release_rotation_lease(&self, holder: &str) -> Result<(), StoreError> {
        self.inner.release_rotation_lease(holder).await
    }
    async fn rotate(
        &self,
        to: &VersionedKeyId,
        key_id: &KeyId,
    ) -> Result<RotateOutcome, StoreError> {
        self.inner.rotate(to, key_id).await
    }
}

/// One registry node: its store, its KEK and its key status.
struct Node<S = Store> {
    store: S,
    kek: Arc<ScriptedKek>,
    status: KeyStatus,
    settings: WatchSettings,
    key_id: KeyId,
}

fn settings(grace_secs: u64) -> WatchSettings {
    WatchSettings {
        key_check_interval: Duration::from_secs(1),
        rotation_poll_interval: Duration::from_secs(1),
        outage_grace: Duration::from_secs(grace_secs),
        probe_timeout: Duration::from_secs(5),
    }
}

async fn open(objects: Arc<dyn ObjectStore>, kek: Arc<ScriptedKek>) -> Store {
    Store::open_with(
        storage::backend::Backend::from_object_store(objects),
        kek,
        &key_id(),
        StoreConfig::default(),
    )
    .await
    .expect("open the store")
}

/// A node on its own object store, with the outage grace given.
async fn node(grace_secs: u64) -> Node {
    node_on(Arc::new(InMemory::new()), grace_secs).await
}

async fn node_on(objects: Arc<dyn ObjectStore>, grace_secs: u64) -> Node {
    let kek = ScriptedKek::new();
    Node {
        store: open(objects, kek.clone()).await,
        kek,
        status: KeyStatus::new(),
        settings: settings(grace_secs),
        key_id: key_id(),
    }
}

impl<S: KeyringStore> Node<S> {
    fn watcher(&self) -> Watcher<'_, S> {
        Watcher {
            store: &self.store,
            status: &self.status,
            settings: self.settings,
            kek: self.kek.as_ref(),
            key_id: &self.key_id,
        }
    }

    async fn check(&self) -> KeyState {
        self.watcher().check_once().await;
        self.status.get()
    }

    fn keys_loaded(&self) -> bool {
        self.store.keyring().is_ok()
    }
}

fn is_degraded(s: &KeyState) -> bool {
    matches!(s, KeyState::Degraded { .. })
}

fn revoked_because(s: &KeyState, why: &str) -> bool {
    matches!(s, KeyState::Revoked { key, reason } if key == KEY && reason.contains(why))
}

#[tokio::test(start_paused = true)]
async fn strict_mode_refuses_content_at_the_first_unreachable_probe() {
    let n = node(0).await;
    n.kek.then(&[Answer::Transient]);
    let s = n.check().await;
    assert!(
        matches!(&s, KeyState::Unavailable { key, reason } if key == KEY && reason.contains("connection refused")),
        "{s:?}"
    );
    assert!(!n.keys_loaded(), "the registry keys are dropped");
}

#[tokio::test(start_paused = true)]
async fn strict_mode_revokes_at_the_first_refusal() {
    let n = node(0).await;
    n.kek.then(&[Answer::Revoked]);
    let s = n.check().await;
    assert!(revoked_because(&s, "the key is disabled"), "{s:?}");
    assert!(!n.keys_loaded());
}

#[tokio::test(start_paused = true)]
async fn a_healthy_probe_stays_active() {
    let n = node(60).await;
    assert_eq!(n.check().await, KeyState::Active);
    assert!(n.keys_loaded());
}

#[tokio::test(start_paused = true)]
async fn degraded_comes_back_to_active_within_the_grace() {
    let n = node(60).await;
    n.kek.then(&[Answer::Transient, Answer::Transient]);
    let first = n.check().await;
    assert!(is_degraded(&first), "{first:?}");
    tokio::time::advance(Duration::from_secs(30)).await;
    let second = n.check().await;
    assert_eq!(second, first, "still degraded, since the first failure");
    assert!(n.keys_loaded(), "content is served within the grace");
    tokio::time::advance(Duration::from_secs(20)).await;
    assert_eq!(n.check().await, KeyState::Active);
    assert!(n.keys_loaded());
}

#[tokio::test(start_paused = true)]
async fn degraded_past_the_grace_is_unavailable_until_the_vault_answers() {
    let n = node(60).await;
    n.kek.then(&[Answer::Transient, Answer::Transient]);
    assert!(is_degraded(&n.check().await));
    tokio::time::advance(Duration::from_secs(61)).await;
    let s = n.check().await;
    assert!(matches!(s, KeyState::Unavailable { .. }), "{s:?}");
    assert!(!n.keys_loaded());
    // The vault answers again: the keyring is loaded back, without a restart.
    assert_eq!(n.check().await, KeyState::Active);
    assert!(n.keys_loaded());
}

#[tokio::test(start_paused = true)]
async fn degraded_to_revoked_when_the_vault_says_the_key_is_disabled() {
    let n = node(60).await;
    n.kek.then(&[Answer::Transient, Answer::Revoked]);
    assert!(is_degraded(&n.check().await));
    let s = n.check().await;
    assert!(revoked_because(&s, "the key is disabled"), "{s:?}");
    assert!(!n.keys_loaded());
}

#[tokio::test(start_paused = true)]
async fn unavailable_to_revoked_when_the_vault_says_the_key_is_disabled() {
    let n = node(0).await;
    n.kek.then(&[Answer::Transient]);
    assert!(matches!(n.check().await, KeyState::Unavailable { .. }));
    // Still unreachable: still unavailable.
    n.kek.then(&[Answer::Transient]);
    assert!(matches!(n.check().await, KeyState::Unavailable { .. }));
    n.kek.then(&[Answer::Revoked]);
    let s = n.check().await;
    assert!(revoked_because(&s, "the key is disabled"), "{s:?}");
}

#[tokio::test(start_paused = true)]
async fn revoked_stays_revoked_on_a_transient_error_and_recovers_when_the_key_works() {
    let n = node(60).await;
    n.kek.then(&[Answer::Revoked]);
    let revoked = n.check().await;
    assert!(
        revoked_because(&revoked, "the key is disabled"),
        "{revoked:?}"
    );
    n.kek.then(&[Answer::Transient]);
    assert_eq!(
        n.check().await,
        revoked,
        "an unreachable vault does not lift a revocation"
    );
    assert!(!n.keys_loaded());
    assert_eq!(n.check().await, KeyState::Active);
    assert!(n.keys_loaded());
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_unwraps_to_other_bytes_revokes() {
    let n = node(60).await;
    n.kek.then(&[Answer::OtherBytes]);
    let s = n.check().await;
    assert!(revoked_because(&s, "different bytes"), "{s:?}");
    assert!(!n.keys_loaded());
}

#[tokio::test(start_paused = true)]
async fn a_misconfigured_key_revokes() {
    let n = node(60).await;
    n.kek.then(&[Answer::Misconfigured]);
    let s = n.check().await;
    assert!(revoked_because(&s, "not RSA"), "{s:?}");
    assert!(!n.keys_loaded());
}

#[tokio::test(start_paused = true)]
async fn a_store_error_leaves_the_key_state_alone() {
    let inner = node(60).await;
    let n = Node {
        store: FlakyStore {
            inner: inner.store,
            failing: AtomicBool::new(true),
        },
        kek: inner.kek,
        status: inner.status,
        settings: inner.settings,
        key_id: inner.key_id,
    };
    assert_eq!(n.check().await, KeyState::Active, "active stays active");
    assert!(n.keys_loaded(), "and keeps its keys");

    n.store.failing.store(false, Ordering::SeqCst);
    n.kek.then(&[Answer::Transient]);
    let degraded = n.check().await;
    assert!(is_degraded(&degraded));
    n.store.failing.store(true, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(
        n.check().await,
        degraded,
        "degraded stays degraded, same since"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hanging_vault_is_an_outage_once_the_probe_times_out() {
    let n = node(60).await;
    n.kek.then(&[Answer::Hang]);
    let started = Instant::now();
    let s = n.check().await;
    assert_eq!(started.elapsed(), n.settings.probe_timeout);
    assert!(
        matches!(&s, KeyState::Degraded { reason, .. } if reason.contains("did not answer")),
        "{s:?}"
    );
    assert!(n.keys_loaded(), "served within the grace");
}

#[tokio::test(start_paused = true)]
async fn a_hanging_vault_keeps_a_revocation() {
    let n = node(60).await;
    n.kek.then(&[Answer::Revoked, Answer::Hang]);
    let revoked = n.check().await;
    assert_eq!(
        n.check().await,
        revoked,
        "a recovery attempt that hangs is transient"
    );
}

#[tokio::test(start_paused = true)]
async fn the_rotation_poll_rewraps_under_the_newest_version() {
    let n = node(60).await;
    let active_kek = |n: &Node| {
        n.store
            .keyring()
            .expect("keyring")
            .active_generation()
            .map(|g| g.kek.clone())
    };
    assert_eq!(active_kek(&n), Some(version(1).to_string()));
    n.watcher().rotate_once().await;
    assert_eq!(
        active_kek(&n),
        Some(version(1).to_string()),
        "nothing newer: nothing done"
    );

    n.kek.set_newest(2);
    // Not while the key is in trouble.
    n.status.set(KeyState::Degraded {
        since: Instant::now(),
        since_utc: chrono::Utc::now(),
        reason: "test".into(),
    });
    n.watcher().rotate_once().await;
    assert_eq!(active_kek(&n), Some(version(1).to_string()));

    n.status.set(KeyState::Active);
    n.watcher().rotate_once().await;
    assert_eq!(active_kek(&n), Some(version(2).to_string()));
    assert_eq!(n.store.keyring().expect("keyring").sequence, 2);
    assert!(
        n.store
            .acquire_rotation_lease("someone-else", Duration::from_secs(1))
            .await
            .expect("lease"),
        "the rotation lease was released"
    );
    // The old version can go: the probe uses the new one.
    n.kek.disable(&version(1));
    assert_eq!(n.check().await, KeyState::Active);
}

#[tokio::test(start_paused = true)]
async fn a_keyring_another_node_wrote_is_adopted_before_the_probe() {
    let objects: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let a = node_on(objects.clone(), 60).await;
    let b = node_on(objects, 60).await;
    b.kek.set_newest(2);
    b.watcher().rotate_once().await;
    assert_eq!(b.store.keyring().expect("keyring").sequence, 2);

    // The operator disables the old version right after the rotation: node A, still
    // holding the old keyring, must load B's before probing, or it calls itself revoked.
    a.kek.disable(&version(1));
    assert_eq!(a.check().await, KeyState::Active);
    let ring = a.store.keyring().expect("keyring");
    assert_eq!(ring.sequence, 2, "node A adopted node B's keyring");
    assert_eq!(
        ring.active_generation().map(|g| g.kek.clone()),
        Some(version(2).to_string())
    );
}

#[tokio::test(start_paused = true)]
async fn the_loop_checks_every_interval_until_shut_down() {
    let n = node(60).await;
    n.kek.then(&[Answer::Ok, Answer::Revoked]);
    // Two key checks (at 1 s and 2 s), then shutdown at 2.5 s.
    n.watcher()
        .run(tokio::time::sleep(Duration::from_millis(2500)))
        .await;
    assert!(revoked_because(&n.status.get(), "the key is disabled"));
}
