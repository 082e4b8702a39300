//! The Azure Key Vault provider against the in-process fake Key Vault
//! (`fake-keyvault`): the generic provider suite, then tokens, retries, error
//! classes and the number of vault calls each operation makes.
//!
//! Everything listens on 127.0.0.1. Key ids name `https://fakevault.vault.azure.net`
//! and are routed to the fake through `AzureConfig::endpoint_overrides`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use fake_keyvault::{Config, Counters, FakeVault, IdentitySpec, KeyKind, Outage, Permission};
use kms_client::azure::{AzureConfig, AzureKek, Credential, RetryPolicy};
use kms_client::testsuite::KeyFixture;
use kms_client::{Kek, KeyId, KmsError, VersionedKeyId};

const VAULT: &str = "https://fakevault.vault.azure.net";
const OID: &str = "11111111-0000-0000-0000-000000000001";
const CLIENT: &str = "22222222-0000-0000-0000-000000000002";
const SECRET: &str = "fixture-client-secret";

/// A fast retry policy so fault tests finish quickly.
fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
        max_retry_after: Duration::from_secs(5),
    }
}

fn config_for(vault: &FakeVault) -> AzureConfig {
    AzureConfig {
        retry: fast_retry(3),
        request_timeout: Duration::from_secs(10),
        ..AzureConfig::default()
    }
    .with_endpoint(VAULT, vault.url())
}

/// One fake vault with a service principal holding every permission, and a provider
/// authenticating as it with a client secret.
struct AzureFixture {
    vault: FakeVault,
    kek: Arc<AzureKek>,
    next: AtomicU32,
}

impl AzureFixture {
    async fn new() -> Self {
        Self::with(|c| c).await
    }

    async fn with(tweak: impl FnOnce(AzureConfig) -> AzureConfig) -> Self {
        let vault = FakeVault::start(Config::default())
            .await
            .expect("start the fake vault");
        let mut spec = IdentitySpec::new(OID, CLIENT);
        spec.client_secret = Some(SECRET.into());
        vault.register_identity(spec).expect("register identity");
        vault.grant(OID, &Permission::ALL).expect("grant");
        let credential = Credential::client_secret(vault.tenant_id(), CLIENT, SECRET)
            .with_authority(vault.url())
            .with_retry(fast_retry(3));
        let kek = Arc::new(
            AzureKek::new(tweak(config_for(&vault)), credential).expect("a loopback endpoint"),
        );
        AzureFixture {
            vault,
            kek,
            next: AtomicU32::new(1),
        }
    }

    fn fresh_name(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.next.fetch_add(1, Ordering::Relaxed))
    }

    fn versioned(name: &str, version: &str) -> VersionedKeyId {
        format!("{VAULT}/keys/{name}/{version}")
            .parse()
            .expect("valid versioned key id")
    }

    async fn new_key(&self, bits: u32) -> VersionedKeyId {
        let name = self.fresh_name("key");
        let created = self
            .vault
            .create_key(&name, KeyKind::Rsa { bits })
            .await
            .expect("create key");
        Self::versioned(&name, &created.version)
    }

    /// Counters since the last call.
    fn take_counters(&self) -> Counters {
        let c = self.vault.counters();
        self.vault.reset_counters();
        c
    }
}

#[async_trait]
impl KeyFixture for AzureFixture {
    fn kek(&self) -> Arc<dyn Kek> {
        self.kek.clone()
    }

    async fn create_key(&self, bits: u32) -> KeyId {
        self.new_key(bits).await.versionless()
    }

    async fn add_version(&self, key: &KeyId) -> VersionedKeyId {
        let created = self
            .vault
            .add_version(key.name())
            .await
            .expect("add version");
        Self::versioned(key.name(), &created.version)
    }

    async fn set_enabled(&self, id: &VersionedKeyId, enabled: bool) {
        self.vault
            .set_enabled(id.key().name(), Some(id.version()), enabled)
            .expect("set_enabled");
    }

    async fn set_expired(&self, id: &VersionedKeyId) {
        let past = Utc::now().timestamp() - 60;
        self.vault
            .set_expiry(id.key().name(), Some(id.version()), Some(past))
            .expect("set_expiry");
    }

    async fn delete_version(&self, id: &VersionedKeyId) {
        self.vault
            .delete_version(id.key().name(), id.version())
            .expect("delete_version");
    }

    async fn create_ec_key(&self) -> KeyId {
        let name = self.fresh_name("ec");
        let created = self
            .vault
            .create_key(&name, KeyKind::EcP256)
            .await
            .expect("create EC key");
        Self::versioned(&name, &created.version).key().clone()
    }
}

fn expect_revoked<T: std::fmt::Debug>(result: Result<T, KmsError>, mentions: &[&str]) {
    match result {
        Err(e @ KmsError::Revoked { .. }) => {
            let msg = e.to_string();
            for m in mentions {
                assert!(msg.contains(m), "{msg:?} should mention {m:?}");
            }
        }
        other => panic!("expected Revoked, got {other:?}"),
    }
}

fn expect_transient<T: std::fmt::Debug>(result: Result<T, KmsError>) -> String {
    match result {
        Err(e @ KmsError::Transient { .. }) => e.to_string(),
        other => panic!("expected Transient, got {other:?}"),
    }
}

// --- the generic suite ------------------------------------------------------------

kms_client::provider_suite!(AzureFixture::new().await);

// --- vault calls per operation ----------------------------------------------------

#[tokio::test]
async fn each_operation_makes_the_documented_vault_calls() {
    let f = AzureFixture::new().await;
    let v = f.new_key(2048).await;
    f.take_counters();

    let wrapped = f.kek.wrap(&v, &[5; 32]).await.expect("wrap");
    let c = f.take_counters();
    assert_eq!(
        (c.get, c.list, c.wrap_key, c.unwrap_key, c.token),
        (1, 0, 1, 0, 1),
        "first wrap: one token, one GET, one wrapKey: {c:?}"
    );

    let rk = f.kek.unwrap(&v, &wrapped).await.expect("unwrap");
    assert_eq!(rk.expose(), [5; 32].as_slice());
    let c = f.take_counters();
    assert_eq!(
        (c.get, c.list, c.wrap_key, c.unwrap_key, c.token),
        (1, 0, 0, 1, 0),
        "unwrap: one GET, one unwrapKey, the token is cached: {c:?}"
    );

    f.kek.describe(&v).await.expect("describe");
    let c = f.take_counters();
    assert_eq!((c.get, c.vault_calls(), c.token), (1, 1, 0), "{c:?}");

    assert_eq!(f.kek.latest_version(v.key()).await.expect("pinned"), v);
    let c = f.take_counters();
    assert_eq!((c.get, c.vault_calls()), (1, 1), "pinned latest: {c:?}");

    assert_eq!(
        f.kek
            .latest_version(&v.versionless())
            .await
            .expect("latest"),
        v
    );
    let c = f.take_counters();
    assert_eq!(
        (c.list, c.get, c.vault_calls()),
        (1, 1, 2),
        "versionless latest: one list page, one GET: {c:?}"
    );
}

#[tokio::test]
async fn version_listing_follows_next_link() {
    let f = AzureFixture::with(|c| AzureConfig {
        list_page_size: 1,
        ..c
    })
    .await;
    let v1 = f.new_key(2048).await;
    let key = v1.versionless();
    f.add_version(&key).await;
    let v3 = f.add_version(&key).await;
    f.take_counters();
    assert_eq!(f.kek.latest_version(&key).await.expect("latest"), v3);
    let c = f.take_counters();
    assert_eq!((c.list, c.get), (3, 1), "three one-item pages: {c:?}");

    // The oldest version, on the first page, is found when the others are unusable.
    f.vault
        .set_enabled(key.name(), None, false)
        .expect("disable all");
    f.vault
        .set_enabled(key.name(), Some(v1.version()), true)
        .expect("enable v1");
    assert_eq!(f.kek.latest_version(&key).await.expect("latest"), v1);
}

/// Key Vault still unwraps after `exp` and wraps with a disabled key; the provider
/// refuses both without asking the vault to do the operation.
#[tokio::test]
async fn unusable_versions_are_refused_before_the_crypto_call() {
    let f = AzureFixture::new().await;
    let v = f.new_key(2048).await;
    let name = v.key().name().to_owned();
    let wrapped = f.kek.wrap(&v, &[1; 32]).await.expect("wrap");

    f.set_expired(&v).await;
    f.take_counters();
    expect_revoked(
        f.kek.unwrap(&v, &wrapped).await,
        &[&v.to_string(), "expired"],
    );
    expect_revoked(f.kek.wrap(&v, &[1; 32]).await, &["expired"]);
    let c = f.take_counters();
    assert_eq!((c.get, c.wrap_key, c.unwrap_key), (2, 0, 0), "{c:?}");

    f.vault.set_expiry(&name, None, None).expect("clear exp");
    let nbf = Utc::now().timestamp() + 3600;
    f.vault
        .set_not_before(&name, None, Some(nbf))
        .expect("set nbf");
    expect_revoked(f.kek.unwrap(&v, &wrapped).await, &["not valid before"]);
    expect_revoked(f.kek.wrap(&v, &[1; 32]).await, &["not valid before"]);
    expect_revoked(f.kek.latest_version(&v.versionless()).await, &[]);

    f.vault
        .set_not_before(&name, None, None)
        .expect("clear nbf");
    f.set_enabled(&v, false).await;
    f.take_counters();
    expect_revoked(f.kek.wrap(&v, &[1; 32]).await, &["KeyDisabled"]);
    assert_eq!(f.take_counters().wrap_key, 0);

    f.set_enabled(&v, true).await;
    let rk = f.kek.unwrap(&v, &wrapped).await.expect("unwrap");
    assert_eq!(rk.expose(), [1; 32].as_slice());
}

#[tokio::test]
async fn rsa_3072_bit_key_is_described_and_works() {
    let f = AzureFixture::new().await;
    let v = f.new_key(3072).await;
    let d = f.kek.describe(&v).await.expect("describe");
    assert_eq!((d.key_type.as_str(), d.key_size_bits), ("RSA", 3072));
    let wrapped = f.kek.wrap(&v, &[8; 32]).await.expect("wrap");
    assert_eq!(wrapped.len(), 384);
    let rk = f.kek.unwrap(&v, &wrapped).await.expect("unwrap");
    assert_eq!(rk.expose(), [8; 32].as_slice());
}

// --- credentials ------------------------------------------------------------------

fn kek_with(vault: &FakeVault, credential: Credential) -> AzureKek {
    AzureKek::new(config_for(vault), credential.with_retry(fast_retry(2)))
        .expect("a loopback endpoint")
}

async fn started() -> FakeVault {
    FakeVault::start(Config::default())
        .await
        .expect("start the fake vault")
}

async fn rsa_key(vault: &FakeVault, name: &str) -> VersionedKeyId {
    let created = vault
        .create_key(name, KeyKind::Rsa { bits: 2048 })
        .await
        .expect("create key");
    AzureFixture::versioned(name, &created.version)
}

#[tokio::test]
async fn client_secret_credential() {
    let vault = started().await;
    let mut spec = IdentitySpec::new(OID, CLIENT);
    spec.client_secret = Some(SECRET.into());
    vault.register_identity(spec).expect("register");
    vault.grant(OID, &Permission::ALL).expect("grant");
    let v = rsa_key(&vault, "cs").await;

    let kek = kek_with(
        &vault,
        Credential::client_secret(vault.tenant_id(), CLIENT, SECRET).with_authority(vault.url()),
    );
    let debug = format!("{kek:?}");
    assert!(!debug.contains(SECRET), "Debug leaks the secret: {debug}");
    kek.describe(&v).await.expect("describe");
    kek.describe(&v).await.expect("describe again");
    assert_eq!(vault.counters().token, 1, "the token is cached");

    let wrong = kek_with(
        &vault,
        Credential::client_secret(vault.tenant_id(), CLIENT, "not-the-secret")
            .with_authority(vault.url()),
    );
    let e = wrong.describe(&v).await;
    expect_revoked(e.clone(), &[&v.to_string(), "invalid_client"]);
    assert!(!format!("{e:?}").contains("not-the-secret"));
}

#[tokio::test]
async fn workload_identity_reads_the_token_file_on_each_request() {
    let vault = started().await;
    let mut spec = IdentitySpec::new(OID, CLIENT);
    spec.federated_token = Some("federated-token-1".into());
    vault.register_identity(spec).expect("register");
    vault.grant(OID, &Permission::ALL).expect("grant");
    let v = rsa_key(&vault, "wi").await;
    let dir = tempfile::TempDir::new().expect("temp dir");
    let file = dir.path().join("token");

    let kek = kek_with(
        &vault,
        Credential::workload_identity(vault.tenant_id(), CLIENT, &file).with_authority(vault.url()),
    );
    match kek.describe(&v).await {
        Err(KmsError::Misconfigured { reason, .. }) => {
            assert!(reason.contains("federated token file"), "{reason}")
        }
        other => panic!("a missing token file is Misconfigured, got {other:?}"),
    }
    std::fs::write(&file, "stale-token\n").expect("write");
    expect_revoked(kek.describe(&v).await, &["invalid_client"]);
    std::fs::write(&file, "federated-token-1\n").expect("write");
    kek.describe(&v).await.expect("the rotated file is read");
}

#[tokio::test]
async fn managed_identity_system_assigned_and_user_assigned() {
    let vault = started().await;
    let mut system = IdentitySpec::new("system-oid", "system-client");
    system.system_assigned = true;
    vault.register_identity(system).expect("register");
    vault
        .register_identity(IdentitySpec::new("user-oid", "user-client"))
        .expect("register");
    vault.grant("system-oid", &Permission::ALL).expect("grant");
    vault.grant("user-oid", &[Permission::Get]).expect("grant");
    let v = rsa_key(&vault, "mi").await;

    let system = kek_with(
        &vault,
        Credential::managed_identity(None).with_imds_endpoint(vault.url()),
    );
    let wrapped = system.wrap(&v, &[4; 32]).await.expect("wrap as system");

    let user = kek_with(
        &vault,
        Credential::managed_identity(Some("user-client".into())).with_imds_endpoint(vault.url()),
    );
    user.describe(&v).await.expect("describe as user-assigned");
    // The user-assigned identity may get but not unwrap: it really is another identity.
    expect_revoked(user.unwrap(&v, &wrapped).await, &["unwrapKey"]);

    let unknown = kek_with(
        &vault,
        Credential::managed_identity(Some("nobody".into())).with_imds_endpoint(vault.url()),
    );
    expect_revoked(unknown.describe(&v).await, &["Identity not found"]);
}

#[tokio::test]
async fn credential_from_environment_variables() {
    let vault = started().await;
    let mut spec = IdentitySpec::new(OID, CLIENT);
    spec.client_secret = Some(SECRET.into());
    vault.register_identity(spec).expect("register");
    vault.grant(OID, &Permission::ALL).expect("grant");
    let v = rsa_key(&vault, "env").await;
    let url = vault.url();
    let tenant = vault.tenant_id().to_owned();
    let credential = Credential::from_lookup(|k| match k {
        "AZURE_TENANT_ID" => Some(tenant.clone()),
        "AZURE_CLIENT_ID" => Some(CLIENT.to_owned()),
        "AZURE_CLIENT_SECRET" => Some(SECRET.to_owned()),
        "AZURE_AUTHORITY_HOST" => Some(url.clone()),
        _ => None,
    })
    .expect("credential");
    assert_eq!(credential.kind(), "client secret");
    kek_with(&vault, credential)
        .describe(&v)
        .await
        .expect("describe");
}

#[tokio::test]
async fn expired_token_is_replaced_after_a_401_and_the_call_retried() {
    let f = AzureFixture::new().await;
    let v = f.new_key(2048).await;
    f.kek.describe(&v).await.expect("describe");
    f.take_counters();

    f.vault.expire_all_tokens().expect("expire tokens");
    f.kek
        .describe(&v)
        .await
        .expect("describe with a fresh token");
    let c = f.take_counters();
    assert_eq!(
        (c.token, c.get),
        (1, 2),
        "one 401, one new token, one retried GET: {c:?}"
    );
}

#[tokio::test]
async fn a_token_near_its_expiry_is_refreshed_before_use() {
    let f = AzureFixture::new().await;
    // Tokens live 4 s: the provider refreshes once less than 10 % (0.4 s) remains.
    f.vault
        .set_token_lifetime(std::time::Duration::from_secs(4));
    let v = f.new_key(2048).await;
    f.kek.describe(&v).await.expect("describe");
    let first = f.take_counters();
    assert_eq!(first.token, 1, "the first call fetched a token: {first:?}");
    // 3.7 s later the token is still valid for the vault (it would be accepted), but
    // inside the refresh margin: a provider that refreshes before expiry fetches a new
    // one, with no 401 first (one GET only). The wait is the behaviour under test.
    tokio::time::sleep(std::time::Duration::from_millis(3700)).await;
    f.kek.describe(&v).await.expect("describe near expiry");
    let c = f.take_counters();
    assert_eq!(
        (c.token, c.get),
        (1, 1),
        "one proactive token refresh and one GET, no 401 retry: {c:?}"
    );
    // And right after, the fresh token is reused.
    f.kek.describe(&v).await.expect("describe again");
    let c = f.take_counters();
    assert_eq!((c.token, c.get), (0, 1), "the new token is cached: {c:?}");
}

#[tokio::test]
async fn concurrent_callers_share_one_token_request() {
    let f = AzureFixture::new().await;
    let v = f.new_key(2048).await;
    f.vault.set_latency(Duration::from_millis(100));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (kek, v) = (f.kek.clone(), v.clone());
        tasks.spawn(async move { kek.describe(&v).await.map(|_| ()) });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("task").expect("describe");
    }
    let c = f.vault.counters();
    assert_eq!((c.token, c.get), (1, 8), "{c:?}");
}

// --- faults -------------------------------------------------------------------------

#[tokio::test]
async fn throttling_honours_retry_after_then_succeeds() {
    let f = AzureFixture::new().await;
    let v = f.new_key(2048).await;
    f.kek.describe(&v).await.expect("warm the token cache");
    f.take_counters();

    f.vault.throttle(1, 1);
    let started = Instant::now();
    let wrapped = f.kek.wrap(&v, &[2; 32]).await.expect("wrap after a 429");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited {:?}, less than Retry-After: 1",
        started.elapsed()
    );
    let c = f.take_counters();
    assert_eq!((c.get, c.wrap_key), (2, 1), "one throttled GET: {c:?}");
    assert_eq!(
        f.kek.unwrap(&v, &wrapped).await.expect("unwrap").expose(),
        [2; 32].as_slice()
    );
}

#[tokio::test]
async fn too_long_retry_after_is_transient_at_once() {
    let f = AzureFixture::new().await;
    let v = f.new_key(2048).await;
    f.take_counters();
    f.vault.throttle(5, 3600);
    let msg = expect_transient(f.kek.describe(&v).await);
    assert!(msg.contains("Retry-After"), "{msg}");
    assert_eq!(f.take_counters().get, 1);
    f.vault.throttle(0, 0);
}

#[tokio::test]
async fn outage_is_transient_after_bounded_retries() {
    let f = AzureFixture::new().await;
    let v = f.new_key(2048).await;
    let wrapped = f.kek.wrap(&v, &[6; 32]).await.expect("wrap");
    f.take_counters();

    f.vault.set_outage(Outage::Unavailable);
    let msg = expect_transient(f.kek.unwrap(&v, &wrapped).await);
    assert!(msg.contains(&v.to_string()) && msg.contains("503"), "{msg}");
    let c = f.take_counters();
    assert_eq!(
        (c.get, c.unwrap_key),
        (3, 0),
        "max_attempts = 3 GETs: {c:?}"
    );

    f.vault.set_outage(Outage::None);
    let rk = f
        .kek
        .unwrap(&v, &wrapped)
        .await
        .expect("unwrap after outage");
    assert_eq!(rk.expose(), [6; 32].as_slice());
}

#[tokio::test]
async fn hung_vault_times_out_as_transient() {
    let f = AzureFixture::with(|c| AzureConfig {
        request_timeout: Duration::from_millis(200),
        retry: fast_retry(2),
        ..c
    })
    .await;
    let v = f.new_key(2048).await;
    f.kek.describe(&v).await.expect("describe");
    f.take_counters();
    f.vault.set_outage(Outage::Hang);
    let msg = expect_transient(f.kek.describe(&v).await);
    assert!(msg.contains("timed out"), "{msg}");
    assert_eq!(f.take_counters().get, 2);
    f.vault.set_outage(Outage::None);
    f.kek.describe(&v).await.expect("describe after the hang");
}

#[tokio::test]
async fn removed_permissions_and_identity_are_revoked() {
    let f = AzureFixture::new().await;
    let v = f.new_key(2048).await;
    let wrapped = f.kek.wrap(&v, &[7; 32]).await.expect("wrap");

    f.vault
        .revoke(OID, &[Permission::UnwrapKey])
        .expect("revoke unwrapKey");
    expect_revoked(
        f.kek.unwrap(&v, &wrapped).await,
        &[&v.to_string(), "403", "unwrapKey"],
    );
    f.vault.revoke(OID, &[Permission::Get]).expect("revoke get");
    expect_revoked(f.kek.wrap(&v, &[7; 32]).await, &["403", "get"]);
    f.vault.grant(OID, &Permission::ALL).expect("grant again");
    f.kek
        .unwrap(&v, &wrapped)
        .await
        .expect("unwrap after grant");

    f.vault.remove_identity(OID).expect("remove identity");
    f.take_counters();
    expect_revoked(f.kek.describe(&v).await, &[&v.to_string()]);
    let c = f.take_counters();
    assert_eq!(
        (c.get, c.token),
        (1, 1),
        "a 401, then the token endpoint refuses the removed identity: {c:?}"
    );
}

#[tokio::test]
async fn deleted_key_is_revoked_and_recovered_key_works() {
    let f = AzureFixture::new().await;
    let v = f.new_key(2048).await;
    let wrapped = f.kek.wrap(&v, &[9; 32]).await.expect("wrap");
    f.vault.delete_key(v.key().name()).expect("delete");
    expect_revoked(f.kek.unwrap(&v, &wrapped).await, &["KeyNotFound"]);
    expect_revoked(
        f.kek.latest_version(&v.versionless()).await,
        &["KeyNotFound"],
    );
    f.vault.recover_key(v.key().name()).expect("recover");
    let rk = f.kek.unwrap(&v, &wrapped).await.expect("unwrap");
    assert_eq!(rk.expose(), [9; 32].as_slice());
}

#[tokio::test]
async fn file_ids_are_misconfigured_for_this_provider() {
    let f = AzureFixture::new().await;
    let id: VersionedKeyId = "file:///keys/kek/0123456789abcdef0123456789abcdef"
        .parse()
        .expect("valid id");
    assert!(matches!(
        f.kek.describe(&id).await,
        Err(KmsError::Misconfigured { .. })
    ));
    assert_eq!(f.vault.counters().vault_calls(), 0);
}

// --- audit ---------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One `valv::kms::audit` event per operation, naming the operation, the versioned
/// key id, the outcome and the latency, and never the key or the token.
#[tokio::test]
async fn every_operation_emits_one_audit_event_without_secrets() {
    let f = AzureFixture::new().await;
    let v = f.new_key(2048).await;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("valv::kms::audit=info")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let rk = [0xA5u8; 32];
    let wrapped = f.kek.wrap(&v, &rk).await.expect("wrap");
    f.kek.unwrap(&v, &wrapped).await.expect("unwrap");
    f.kek.describe(&v).await.expect("describe");
    f.kek
        .latest_version(&v.versionless())
        .await
        .expect("latest");
    f.set_enabled(&v, false).await;
    expect_revoked(f.kek.unwrap(&v, &wrapped).await, &[]);

    let text = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("UTF-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    for (line, (op, outcome)) in lines.iter().zip([
        ("wrap", "ok"),
        ("unwrap", "ok"),
        ("describe", "ok"),
        ("latest_version", "ok"),
        ("unwrap", "revoked"),
    ]) {
        assert!(line.contains("valv::kms::audit"), "{line}");
        assert!(line.contains(&format!("operation=\"{op}\"")), "{line}");
        assert!(line.contains(&format!("outcome=\"{outcome}\"")), "{line}");
        assert!(line.contains(&format!("key_id=\"{v}\"")), "{line}");
        assert!(line.contains("latency_ms="), "{line}");
    }
    use base64::Engine as _;
    for secret in [
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rk),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&wrapped),
        SECRET.to_owned(),
    ] {
        assert!(!text.contains(&secret), "the audit log leaks key material");
    }
}
