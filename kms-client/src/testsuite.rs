//! The generic provider test suite (DESIGN §10: one KMS suite, every provider).
//!
//! Compiled only with the cargo feature `testsuite`, which nothing but tests turns
//! on (this crate's own tests through a dev-dependency on itself).
//!
//! A provider's integration test implements [`KeyFixture`], which creates keys and
//! changes their state by the provider's own means (files on disk, the fake Key
//! Vault's management API, SoftHSM, moto), and then calls
//! [`provider_suite!`](crate::provider_suite) once, which makes every check its own
//! `#[tokio::test]`; [`run_all`] runs them in one test instead. The checks only
//! observe keys through [`Kek`], so they pin down what the rest of valv may rely on:
//!
//! - wrapping is RSA-OAEP (randomized) and round-trips a 32-byte registry key;
//! - bytes that a version did not wrap, altered or not, are `InvalidCiphertext`;
//! - a disabled, expired or missing version is `Revoked` for unwrap, and a
//!   re-enabled one works again: this is what the key watcher's probe relies on;
//! - `latest_version` of a versionless id is the most recently created usable
//!   version;
//! - an EC key is `Misconfigured`, never "revoked" and never used.
//!
//! The checks never sleep: expiry is tested by the fixture setting an expiry in the
//! past. They panic with the check's name and what was expected, and are written for
//! tests, so they use `expect` freely.
//!
//! The suite uses 2048-bit keys only, to keep key generation cheap; providers test
//! their larger sizes separately.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;

use crate::{Kek, KeyId, KmsError, VersionedKeyId};

/// The key size every check uses.
pub const SUITE_KEY_BITS: u32 = 2048;

/// What a provider's test supplies: a [`Kek`] and ways to manage its keys.
///
/// Methods panic when the provider cannot do what is asked; that is a broken test
/// environment, not a result a check could assert on.
#[async_trait]
pub trait KeyFixture: Send + Sync {
    /// The provider under test.
    fn kek(&self) -> Arc<dyn Kek>;

    /// Creates a new RSA key of `bits` bits with one enabled version, and returns its
    /// versionless id. Every call creates a different key.
    async fn create_key(&self, bits: u32) -> KeyId;

    /// Adds an enabled version to `key`. It must become the version that
    /// `latest_version(key)` returns while it is usable, even when it is created
    /// within the same second as the previous one.
    async fn add_version(&self, key: &KeyId) -> VersionedKeyId;

    /// Enables or disables one version, as an operator would in the vault.
    async fn set_enabled(&self, id: &VersionedKeyId, enabled: bool);

    /// Sets the version's expiry to an instant in the past.
    async fn set_expired(&self, id: &VersionedKeyId);

    /// Deletes the version (for a vault: delete and purge, or whatever makes it 404).
    async fn delete_version(&self, id: &VersionedKeyId);

    /// Creates an EC key (P-256) with one enabled version and returns an id that pins
    /// that version; `versionless()` of it names the key.
    async fn create_ec_key(&self) -> KeyId;

    /// An id of the same provider for a key that was never created.
    ///
    /// The default appends to the key name, which suits ids ending in `/<name>`
    /// (`file://` and Key Vault); providers with other id forms override it.
    fn unknown_key(&self, existing: &KeyId) -> KeyId {
        let existing = existing.versionless().to_string();
        format!("{existing}-never-created")
            .parse()
            .expect("the default unknown_key only suits ids ending in /<name>; override it")
    }
}

/// Makes every check of the suite a `#[tokio::test]` in a module `provider_suite`,
/// each over a fresh fixture made by `$fixture` (an expression, evaluated inside the
/// async test, so it may `.await`). The calling crate needs `tokio` with the
/// `macros` and `rt` features.
///
/// ```ignore
/// kms_client::provider_suite!(LocalFixture::new());
/// kms_client::provider_suite!(AzureFixture::new().await);
/// ```
///
/// A new check is added here and to [`run_all`]; no provider test changes.
#[macro_export]
macro_rules! provider_suite {
    ($fixture:expr) => {
        $crate::provider_suite!(@checks $fixture;
            wrap_unwrap_round_trip,
            wrapped_bytes_differ_each_time,
            unwrap_with_another_version_or_key_is_invalid_ciphertext,
            tampered_wrapped_bytes_are_invalid_ciphertext,
            latest_version_picks_newest_usable_version,
            disabled_version_is_revoked,
            re_enabled_version_works_again,
            expired_version_is_revoked,
            missing_version_or_key_is_revoked,
            no_usable_version_is_revoked,
            ec_key_is_misconfigured,
            describe_reports_rsa_key_type_and_size,
        );
    };
    (@checks $fixture:expr; $($check:ident),* $(,)?) => {
        mod provider_suite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test]
                async fn $check() {
                    $crate::testsuite::$check(&$fixture).await;
                }
            )*
        }
    };
}

/// Runs every check in turn, in one test. [`provider_suite!`](crate::provider_suite)
/// gives one `#[tokio::test]` per check instead (clearer reports, run in parallel).
pub async fn run_all(fixture: &impl KeyFixture) {
    wrap_unwrap_round_trip(fixture).await;
    wrapped_bytes_differ_each_time(fixture).await;
    unwrap_with_another_version_or_key_is_invalid_ciphertext(fixture).await;
    tampered_wrapped_bytes_are_invalid_ciphertext(fixture).await;
    latest_version_picks_newest_usable_version(fixture).await;
    disabled_version_is_revoked(fixture).await;
    re_enabled_version_works_again(fixture).await;
    expired_version_is_revoked(fixture).await;
    missing_version_or_key_is_revoked(fixture).await;
    no_usable_version_is_revoked(fixture).await;
    ec_key_is_misconfigured(fixture).await;
    describe_reports_rsa_key_type_and_size(fixture).await;
}

/// A 32-byte registry key wraps and unwraps to itself, for the initial version and
/// for an added one.
pub async fn wrap_unwrap_round_trip(f: &impl KeyFixture) {
    const CHECK: &str = "wrap_unwrap_round_trip";
    let kek = f.kek();
    let (key, v1) = new_key(CHECK, f).await;
    let v2 = f.add_version(&key).await;
    for v in [&v1, &v2] {
        let rk = registry_key();
        let wrapped = ok(CHECK, "wrap", kek.wrap(v, &rk).await);
        assert!(
            wrapped.len() >= 256 && !contains(&wrapped, &rk),
            "{CHECK}: wrap under {v} returned {} bytes that are not an RSA-2048 ciphertext",
            wrapped.len()
        );
        let unwrapped = ok(CHECK, "unwrap", kek.unwrap(v, &wrapped).await);
        assert_eq!(
            unwrapped.expose(),
            rk.as_slice(),
            "{CHECK}: unwrap under {v} did not return the wrapped key"
        );
    }
}

/// OAEP is randomized: wrapping the same key twice gives different bytes, and both
/// unwrap.
pub async fn wrapped_bytes_differ_each_time(f: &impl KeyFixture) {
    const CHECK: &str = "wrapped_bytes_differ_each_time";
    let kek = f.kek();
    let (_, v) = new_key(CHECK, f).await;
    let rk = registry_key();
    let first = ok(CHECK, "first wrap", kek.wrap(&v, &rk).await);
    let second = ok(CHECK, "second wrap", kek.wrap(&v, &rk).await);
    assert_ne!(
        first, second,
        "{CHECK}: two wraps of the same key under {v} gave the same bytes; is the padding OAEP?"
    );
    for wrapped in [first, second] {
        let unwrapped = ok(CHECK, "unwrap", kek.unwrap(&v, &wrapped).await);
        assert_eq!(
            unwrapped.expose(),
            rk.as_slice(),
            "{CHECK}: round trip failed"
        );
    }
}

/// Bytes wrapped under one version do not unwrap under another version of the same
/// key, nor under another key.
pub async fn unwrap_with_another_version_or_key_is_invalid_ciphertext(f: &impl KeyFixture) {
    const CHECK: &str = "unwrap_with_another_version_or_key_is_invalid_ciphertext";
    let kek = f.kek();
    let (key, v1) = new_key(CHECK, f).await;
    let v2 = f.add_version(&key).await;
    let (_, other) = new_key(CHECK, f).await;
    let rk = registry_key();
    let wrapped = ok(CHECK, "wrap", kek.wrap(&v1, &rk).await);
    expect_class(
        CHECK,
        "unwrap under another version of the key",
        kek.unwrap(&v2, &wrapped).await,
        Class::InvalidCiphertext,
    );
    expect_class(
        CHECK,
        "unwrap under another key",
        kek.unwrap(&other, &wrapped).await,
        Class::InvalidCiphertext,
    );
    let unwrapped = ok(
        CHECK,
        "unwrap under the wrapping version",
        kek.unwrap(&v1, &wrapped).await,
    );
    assert_eq!(
        unwrapped.expose(),
        rk.as_slice(),
        "{CHECK}: round trip failed"
    );
}

/// Altered, truncated, extended or empty wrapped bytes are `InvalidCiphertext` (a
/// vault's "bad parameter" answer included), never a success or another class.
pub async fn tampered_wrapped_bytes_are_invalid_ciphertext(f: &impl KeyFixture) {
    const CHECK: &str = "tampered_wrapped_bytes_are_invalid_ciphertext";
    let kek = f.kek();
    let (_, v) = new_key(CHECK, f).await;
    let rk = registry_key();
    let wrapped = ok(CHECK, "wrap", kek.wrap(&v, &rk).await);
    let n = wrapped.len();
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for (at, bit) in [(0, 0x80), (0, 0x01), (n / 2, 0x10), (n - 1, 0x01)] {
        let mut t = wrapped.clone();
        t[at] ^= bit;
        cases.push((format!("bit {bit:#04x} of byte {at} flipped"), t));
    }
    cases.push(("last byte removed".into(), wrapped[..n - 1].to_vec()));
    cases.push((
        "a byte appended".into(),
        [wrapped.as_slice(), &[0]].concat(),
    ));
    cases.push(("all zero".into(), vec![0; n]));
    cases.push(("empty".into(), Vec::new()));
    for (what, tampered) in cases {
        expect_class(
            CHECK,
            &format!("unwrap of wrapped bytes with {what}"),
            kek.unwrap(&v, &tampered).await,
            Class::InvalidCiphertext,
        );
    }
    let unwrapped = ok(
        CHECK,
        "unwrap of the original",
        kek.unwrap(&v, &wrapped).await,
    );
    assert_eq!(
        unwrapped.expose(),
        rk.as_slice(),
        "{CHECK}: round trip failed"
    );
}

/// `latest_version` of a versionless id is the newest version that is enabled and
/// unexpired; a pinned id resolves to itself.
pub async fn latest_version_picks_newest_usable_version(f: &impl KeyFixture) {
    const CHECK: &str = "latest_version_picks_newest_usable_version";
    let kek = f.kek();
    let (key, v1) = new_key(CHECK, f).await;
    let v2 = f.add_version(&key).await;
    let v3 = f.add_version(&key).await;
    let latest = |what: &'static str| {
        let kek = kek.clone();
        let key = key.clone();
        async move { ok(CHECK, what, kek.latest_version(&key).await) }
    };
    assert_eq!(
        latest("latest of three").await,
        v3,
        "{CHECK}: newest version"
    );
    f.set_enabled(&v3, false).await;
    assert_eq!(
        latest("latest with the newest disabled").await,
        v2,
        "{CHECK}: a disabled version must be skipped"
    );
    f.set_expired(&v2).await;
    assert_eq!(
        latest("latest with the newest disabled and the next expired").await,
        v1,
        "{CHECK}: an expired version must be skipped"
    );
    f.set_enabled(&v3, true).await;
    assert_eq!(
        latest("latest after re-enabling the newest").await,
        v3,
        "{CHECK}: a re-enabled version must be picked again"
    );
    let pinned = ok(
        CHECK,
        "latest of a pinned id",
        kek.latest_version(v1.key()).await,
    );
    assert_eq!(pinned, v1, "{CHECK}: a pinned id must resolve to itself");
}

/// A disabled version refuses unwrap with `Revoked`, and `describe` still answers,
/// with `enabled: false`.
///
/// Wrap is not checked: Key Vault still allows wrapKey on a disabled key, which is
/// why the key watcher probes with unwrap.
pub async fn disabled_version_is_revoked(f: &impl KeyFixture) {
    const CHECK: &str = "disabled_version_is_revoked";
    let kek = f.kek();
    let (_, v) = new_key(CHECK, f).await;
    let wrapped = ok(CHECK, "wrap", kek.wrap(&v, &registry_key()).await);
    f.set_enabled(&v, false).await;
    expect_class(
        CHECK,
        "unwrap under a disabled version",
        kek.unwrap(&v, &wrapped).await,
        Class::Revoked,
    );
    let d = ok(
        CHECK,
        "describe of a disabled version",
        kek.describe(&v).await,
    );
    assert!(
        !d.enabled,
        "{CHECK}: describe must report enabled=false: {d:?}"
    );
    assert!(
        !d.usable_at(Utc::now()),
        "{CHECK}: {d:?} must not be usable"
    );
}

/// Re-enabling a disabled version makes it work again (revocation is reversible,
/// DESIGN §7).
pub async fn re_enabled_version_works_again(f: &impl KeyFixture) {
    const CHECK: &str = "re_enabled_version_works_again";
    let kek = f.kek();
    let (_, v) = new_key(CHECK, f).await;
    let rk = registry_key();
    let wrapped = ok(CHECK, "wrap", kek.wrap(&v, &rk).await);
    f.set_enabled(&v, false).await;
    expect_class(
        CHECK,
        "unwrap while disabled",
        kek.unwrap(&v, &wrapped).await,
        Class::Revoked,
    );
    f.set_enabled(&v, true).await;
    let unwrapped = ok(
        CHECK,
        "unwrap after re-enabling",
        kek.unwrap(&v, &wrapped).await,
    );
    assert_eq!(
        unwrapped.expose(),
        rk.as_slice(),
        "{CHECK}: round trip failed"
    );
    let d = ok(CHECK, "describe after re-enabling", kek.describe(&v).await);
    assert!(
        d.enabled,
        "{CHECK}: describe must report enabled=true: {d:?}"
    );
    ok(CHECK, "wrap after re-enabling", kek.wrap(&v, &rk).await);
}

/// A version past its expiry refuses unwrap with `Revoked`; `describe` reports the
/// expiry.
pub async fn expired_version_is_revoked(f: &impl KeyFixture) {
    const CHECK: &str = "expired_version_is_revoked";
    let kek = f.kek();
    let (_, v) = new_key(CHECK, f).await;
    let wrapped = ok(CHECK, "wrap", kek.wrap(&v, &registry_key()).await);
    f.set_expired(&v).await;
    expect_class(
        CHECK,
        "unwrap under an expired version",
        kek.unwrap(&v, &wrapped).await,
        Class::Revoked,
    );
    let d = ok(
        CHECK,
        "describe of an expired version",
        kek.describe(&v).await,
    );
    let now = Utc::now();
    assert!(
        d.expires.is_some_and(|exp| exp <= now),
        "{CHECK}: describe must report an expiry in the past: {d:?}"
    );
    assert!(!d.usable_at(now), "{CHECK}: {d:?} must not be usable");
}

/// A deleted version, a version that never existed, and a key that never existed
/// are all `Revoked`, for every operation.
pub async fn missing_version_or_key_is_revoked(f: &impl KeyFixture) {
    const CHECK: &str = "missing_version_or_key_is_revoked";
    let kek = f.kek();
    let (key, v1) = new_key(CHECK, f).await;
    let v2 = f.add_version(&key).await;
    let rk = registry_key();
    let wrapped = ok(CHECK, "wrap", kek.wrap(&v2, &rk).await);
    f.delete_version(&v2).await;
    let never = key
        .with_version(&random_version())
        .expect("a random 32-hex version is a valid version");
    for (what, v) in [("deleted", &v2), ("never created", &never)] {
        expect_class(
            CHECK,
            &format!("describe of a {what} version"),
            kek.describe(v).await,
            Class::Revoked,
        );
        expect_class(
            CHECK,
            &format!("unwrap under a {what} version"),
            kek.unwrap(v, &wrapped).await,
            Class::Revoked,
        );
        expect_class(
            CHECK,
            &format!("wrap under a {what} version"),
            kek.wrap(v, &rk).await,
            Class::Revoked,
        );
        expect_class(
            CHECK,
            &format!("latest_version of a pinned {what} version"),
            kek.latest_version(v.key()).await,
            Class::Revoked,
        );
    }
    let after = ok(
        CHECK,
        "latest after deleting the newest",
        kek.latest_version(&key).await,
    );
    assert_eq!(after, v1, "{CHECK}: a deleted version must not be picked");
    let unknown = f.unknown_key(&key);
    expect_class(
        CHECK,
        "latest_version of a key that was never created",
        kek.latest_version(&unknown).await,
        Class::Revoked,
    );
}

/// With every version disabled or expired, `latest_version` is `Revoked`; enabling
/// one brings it back.
pub async fn no_usable_version_is_revoked(f: &impl KeyFixture) {
    const CHECK: &str = "no_usable_version_is_revoked";
    let kek = f.kek();
    let (key, v1) = new_key(CHECK, f).await;
    let v2 = f.add_version(&key).await;
    f.set_enabled(&v1, false).await;
    f.set_expired(&v2).await;
    expect_class(
        CHECK,
        "latest_version with one version disabled and the other expired",
        kek.latest_version(&key).await,
        Class::Revoked,
    );
    f.set_enabled(&v1, true).await;
    let latest = ok(
        CHECK,
        "latest after re-enabling",
        kek.latest_version(&key).await,
    );
    assert_eq!(
        latest, v1,
        "{CHECK}: the only usable version must be picked"
    );
}

/// An EC key is a configuration error, reported as such by every operation: it must
/// never be mistaken for a revoked key (which would look recoverable) or be used.
pub async fn ec_key_is_misconfigured(f: &impl KeyFixture) {
    const CHECK: &str = "ec_key_is_misconfigured";
    let kek = f.kek();
    let ec = f.create_ec_key().await;
    let v = ec
        .as_versioned()
        .expect("KeyFixture::create_ec_key must return an id that pins a version");
    expect_class(
        CHECK,
        "latest_version of a versionless EC key",
        kek.latest_version(&ec.versionless()).await,
        Class::Misconfigured,
    );
    expect_class(
        CHECK,
        "latest_version of a pinned EC key",
        kek.latest_version(&ec).await,
        Class::Misconfigured,
    );
    expect_class(
        CHECK,
        "describe of an EC key",
        kek.describe(&v).await,
        Class::Misconfigured,
    );
    expect_class(
        CHECK,
        "wrap under an EC key",
        kek.wrap(&v, &registry_key()).await,
        Class::Misconfigured,
    );
    let unwrapped = kek.unwrap(&v, &[0x42; 256]).await;
    assert!(
        matches!(
            unwrapped,
            Err(KmsError::Misconfigured { .. }
                | KmsError::InvalidCiphertext { .. }
                | KmsError::Revoked { .. })
        ),
        "{CHECK}: unwrap under an EC key must fail, not {unwrapped:?}"
    );
}

/// `describe` reports an RSA key of the size it was created with, enabled.
pub async fn describe_reports_rsa_key_type_and_size(f: &impl KeyFixture) {
    const CHECK: &str = "describe_reports_rsa_key_type_and_size";
    let kek = f.kek();
    let (_, v) = new_key(CHECK, f).await;
    let d = ok(CHECK, "describe", kek.describe(&v).await);
    assert_eq!(
        d.id, v,
        "{CHECK}: describe must name the version it describes"
    );
    assert!(
        d.key_type == "RSA" || d.key_type == "RSA-HSM",
        "{CHECK}: key_type must be RSA or RSA-HSM: {d:?}"
    );
    assert_eq!(d.key_size_bits, SUITE_KEY_BITS, "{CHECK}: key size: {d:?}");
    assert!(d.enabled, "{CHECK}: a new version must be enabled: {d:?}");
    assert!(
        d.usable_at(Utc::now()),
        "{CHECK}: a new version must be usable: {d:?}"
    );
}

// ---------------------------------------------------------------------------------

/// Creates a suite-sized key and resolves its first version.
async fn new_key(check: &str, f: &impl KeyFixture) -> (KeyId, VersionedKeyId) {
    let key = f.create_key(SUITE_KEY_BITS).await;
    assert!(
        key.version().is_none(),
        "{check}: KeyFixture::create_key must return a versionless id, got {key}"
    );
    let v = ok(
        check,
        "latest_version of a new key",
        f.kek().latest_version(&key).await,
    );
    assert_eq!(
        v.versionless(),
        key,
        "{check}: latest_version returned a version of another key"
    );
    (key, v)
}

fn registry_key() -> [u8; 32] {
    rand::random()
}

fn random_version() -> String {
    rand::random::<[u8; 16]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Revoked,
    Transient,
    Misconfigured,
    InvalidCiphertext,
}

fn class_of(e: &KmsError) -> Class {
    match e {
        KmsError::Revoked { .. } => Class::Revoked,
        KmsError::Transient { .. } => Class::Transient,
        KmsError::Misconfigured { .. } => Class::Misconfigured,
        KmsError::InvalidCiphertext { .. } => Class::InvalidCiphertext,
    }
}

fn ok<T>(check: &str, what: &str, result: Result<T, KmsError>) -> T {
    result.unwrap_or_else(|e| panic!("{check}: {what} failed: {e} ({e:?})"))
}

fn expect_class<T: Debug>(check: &str, what: &str, result: Result<T, KmsError>, class: Class) {
    match result {
        Err(e) if class_of(&e) == class => {}
        Err(e) => panic!(
            "{check}: {what}: expected {class:?}, got {:?}: {e}",
            class_of(&e)
        ),
        Ok(v) => panic!("{check}: {what}: expected {class:?}, got success: {v:?}"),
    }
}
