//! The fake's whole state (keys, identities, tokens, faults, counters) and the
//! rules that decide what each Key Vault call answers. No HTTP here: `http.rs`
//! parses requests into calls on [`Shared`] and turns the outcomes into responses.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand::rngs::OsRng;
use rand::RngCore;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, RsaPrivateKey};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{
    Config, Counters, Error, IdentitySpec, KeyKind, Outage, Permission, ValidityEnforcement,
};

/// `recoveryLevel` every key reports: soft delete with purge allowed, the default
/// of a vault created today.
pub(crate) const RECOVERY_LEVEL: &str = "Recoverable+Purgeable";
pub(crate) const RECOVERABLE_DAYS: u32 = 90;

/// Private key material. `Debug` is redacted so the state can be debug-printed
/// without leaking a key.
#[derive(Clone)]
pub(crate) enum Material {
    Rsa(Box<RsaPrivateKey>),
    EcP256(p256::SecretKey),
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Material::Rsa(k) => write!(f, "Rsa({} bits, <redacted>)", k.size() * 8),
            Material::EcP256(_) => f.write_str("EcP256(<redacted>)"),
        }
    }
}

impl Material {
    fn generate(kind: KeyKind) -> Result<Material, Error> {
        match kind {
            KeyKind::Rsa { bits } => {
                check_rsa_bits(bits)?;
                let key = RsaPrivateKey::new(&mut OsRng, bits as usize)
                    .map_err(|e| Error::Internal(format!("RSA key generation failed: {e}")))?;
                Ok(Material::Rsa(Box::new(key)))
            }
            KeyKind::EcP256 => Ok(Material::EcP256(p256::SecretKey::random(&mut OsRng))),
        }
    }

    pub(crate) fn kind(&self) -> KeyKind {
        match self {
            Material::Rsa(k) => KeyKind::Rsa {
                bits: (k.size() * 8) as u32,
            },
            Material::EcP256(_) => KeyKind::EcP256,
        }
    }

    fn to_pem(&self) -> Result<String, Error> {
        let pem = match self {
            Material::Rsa(k) => k.to_pkcs8_pem(LineEnding::LF),
            Material::EcP256(k) => k.to_pkcs8_pem(LineEnding::LF),
        }
        .map_err(|e| Error::Internal(format!("PKCS#8 encoding failed: {e}")))?;
        Ok(pem.as_str().to_owned())
    }

    fn from_pem(kind: KeyKind, pem: &str) -> Result<Material, String> {
        match kind {
            KeyKind::Rsa { .. } => RsaPrivateKey::from_pkcs8_pem(pem)
                .map(|k| Material::Rsa(Box::new(k)))
                .map_err(|e| e.to_string()),
            KeyKind::EcP256 => p256::SecretKey::from_pkcs8_pem(pem)
                .map(Material::EcP256)
                .map_err(|e| e.to_string()),
        }
    }

    /// The public half as a JSON Web Key, minus `kid` (added by the caller).
    pub(crate) fn public_jwk(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        match self {
            Material::Rsa(k) => {
                m.insert("kty".into(), "RSA".into());
                m.insert(
                    "key_ops".into(),
                    serde_json::json!([
                        "encrypt",
                        "decrypt",
                        "sign",
                        "verify",
                        "wrapKey",
                        "unwrapKey"
                    ]),
                );
                m.insert("n".into(), crate::b64(&k.n().to_bytes_be()).into());
                m.insert("e".into(), crate::b64(&k.e().to_bytes_be()).into());
            }
            Material::EcP256(k) => {
                let point = k.public_key().to_encoded_point(false);
                m.insert("kty".into(), "EC".into());
                m.insert("key_ops".into(), serde_json::json!(["sign", "verify"]));
                m.insert("crv".into(), "P-256".into());
                m.insert(
                    "x".into(),
                    crate::b64(point.x().map(|x| x.as_slice()).unwrap_or_default()).into(),
                );
                m.insert(
                    "y".into(),
                    crate::b64(point.y().map(|y| y.as_slice()).unwrap_or_default()).into(),
                );
            }
        }
        m
    }
}

pub(crate) fn check_rsa_bits(bits: u32) -> Result<(), Error> {
    if [2048, 3072, 4096].contains(&bits) {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "RSA key size {bits} is not supported (2048, 3072 or 4096)"
        )))
    }
}

/// One key version: material plus the attributes Key Vault reports.
#[derive(Debug, Clone)]
pub(crate) struct Version {
    pub(crate) id: String,
    pub(crate) material: Material,
    pub(crate) enabled: bool,
    pub(crate) nbf: Option<i64>,
    pub(crate) exp: Option<i64>,
    pub(crate) created: i64,
    pub(crate) updated: i64,
}

impl Version {
    pub(crate) fn attributes_json(&self) -> serde_json::Value {
        let mut a = serde_json::Map::new();
        a.insert("enabled".into(), self.enabled.into());
        if let Some(nbf) = self.nbf {
            a.insert("nbf".into(), nbf.into());
        }
        if let Some(exp) = self.exp {
            a.insert("exp".into(), exp.into());
        }
        a.insert("created".into(), self.created.into());
        a.insert("updated".into(), self.updated.into());
        a.insert("recoveryLevel".into(), RECOVERY_LEVEL.into());
        a.insert("recoverableDays".into(), RECOVERABLE_DAYS.into());
        serde_json::Value::Object(a)
    }

    /// Why a cryptographic operation may not use this version at `now` because of
    /// its validity window: `(innererror code, message)`.
    pub(crate) fn window_violation(&self, op: &str, now: i64) -> Option<(&'static str, String)> {
        if let Some(exp) = self.exp.filter(|exp| now >= *exp) {
            return Some((
                "KeyExpired",
                format!("Operation {op} is not allowed on an expired key (exp {exp})."),
            ));
        }
        if let Some(nbf) = self.nbf.filter(|nbf| now < *nbf) {
            return Some((
                "KeyNotYetValid",
                format!(
                    "Operation {op} is not allowed on a key that is not yet valid (nbf {nbf})."
                ),
            ));
        }
        None
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Key {
    pub(crate) deleted: bool,
    /// Creation order; the last one is the "current" version.
    pub(crate) versions: Vec<Version>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Identity {
    pub(crate) spec: IdentitySpec,
    pub(crate) permissions: BTreeSet<Permission>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Token {
    pub(crate) object_id: String,
    pub(crate) expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy)]
struct Throttle {
    remaining: u32,
    retry_after_secs: u64,
}

/// A key that exists and is not soft-deleted, for changing it.
fn live_key_mut<'a>(inner: &'a mut Inner, name: &str) -> Result<&'a mut Key, Error> {
    inner
        .keys
        .get_mut(name)
        .filter(|k| !k.deleted)
        .ok_or_else(|| Error::NotFound(format!("key {name}")))
}

#[derive(Debug, Default)]
struct Inner {
    keys: BTreeMap<String, Key>,
    identities: BTreeMap<String, Identity>,
    /// access token -> who and until when. Tokens are opaque random strings, not JWTs.
    tokens: BTreeMap<String, Token>,
    token_lifetime_secs: u64,
    throttle: Option<Throttle>,
    latency: Duration,
    /// Whether unwrapKey answers bytes other than those wrapped (a broken HSM or a
    /// vault that is not the one the key id names).
    corrupt_unwrap: bool,
    counters: Counters,
}

/// Everything the server task and the [`crate::FakeVault`] handle share.
#[derive(Debug)]
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    pub(crate) config: Config,
    /// Outage mode lives in a watch channel so hung requests wake when it changes.
    pub(crate) outage: watch::Sender<Outage>,
}

/// What a fault check decided for one vault request.
#[derive(Debug)]
pub(crate) enum FaultDecision {
    Proceed,
    Throttled { retry_after_secs: u64 },
    Unavailable,
    Hang,
}

/// The token a caller presented, resolved to an identity.
#[derive(Debug)]
pub(crate) enum AuthOutcome {
    Ok(Identity),
    Unauthorized,
}

/// Which counter a request bumps.
#[derive(Debug, Clone, Copy)]
pub(crate) enum OpKind {
    Get,
    List,
    WrapKey,
    UnwrapKey,
    Token,
}

pub(crate) fn now_secs() -> i64 {
    Utc::now().timestamp()
}

pub(crate) fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 127
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl Shared {
    /// Builds the state, loading it from `config.state_dir` when that holds one.
    pub(crate) fn load(config: Config) -> Result<Shared, Error> {
        let mut inner = Inner {
            token_lifetime_secs: config.token_lifetime.as_secs().max(1),
            ..Inner::default()
        };
        if let Some(dir) = &config.state_dir {
            fs::create_dir_all(dir.join("keys"))?;
            load_from_dir(dir, &mut inner)?;
        }
        let (outage, _) = watch::channel(Outage::None);
        Ok(Shared {
            inner: Mutex::new(inner),
            config,
            outage,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way
        // that matters to a test double, so a poisoned lock is simply reused.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(&self, inner: &Inner) -> Result<(), Error> {
        match &self.config.state_dir {
            Some(dir) => save_state(dir, inner),
            None => Ok(()),
        }
    }

    // ----- faults, latency, counters -----

    pub(crate) fn count(&self, op: OpKind) {
        let mut g = self.lock();
        let c = &mut g.counters;
        match op {
            OpKind::Get => c.get += 1,
            OpKind::List => c.list += 1,
            OpKind::WrapKey => c.wrap_key += 1,
            OpKind::UnwrapKey => c.unwrap_key += 1,
            OpKind::Token => c.token += 1,
        }
    }

    pub(crate) fn counters(&self) -> Counters {
        self.lock().counters
    }

    pub(crate) fn reset_counters(&self) {
        self.lock().counters = Counters::default();
    }

    pub(crate) fn latency(&self) -> Duration {
        self.lock().latency
    }

    pub(crate) fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    pub(crate) fn corrupt_unwrap(&self) -> bool {
        self.lock().corrupt_unwrap
    }

    pub(crate) fn set_corrupt_unwrap(&self, on: bool) {
        self.lock().corrupt_unwrap = on;
    }

    pub(crate) fn throttle(&self, count: u32, retry_after_secs: u64) {
        self.lock().throttle = (count > 0).then_some(Throttle {
            remaining: count,
            retry_after_secs,
        });
    }

    pub(crate) fn set_outage(&self, outage: Outage) {
        self.outage.send_replace(outage);
    }

    /// Outage first (an outage answers everything), then throttling, which uses up
    /// one of its N requests.
    pub(crate) fn fault_decision(&self) -> FaultDecision {
        match *self.outage.borrow() {
            Outage::Unavailable => return FaultDecision::Unavailable,
            Outage::Hang => return FaultDecision::Hang,
            Outage::None => {}
        }
        let mut g = self.lock();
        if let Some(t) = g.throttle.as_mut() {
            t.remaining -= 1;
            let retry_after_secs = t.retry_after_secs;
            if t.remaining == 0 {
                g.throttle = None;
            }
            return FaultDecision::Throttled { retry_after_secs };
        }
        FaultDecision::Proceed
    }

    // ----- identities and tokens -----

    pub(crate) fn register_identity(&self, spec: IdentitySpec) -> Result<(), Error> {
        if spec.object_id.is_empty() || spec.client_id.is_empty() {
            return Err(Error::BadRequest(
                "object_id and client_id must not be empty".into(),
            ));
        }
        let mut g = self.lock();
        if g.identities.contains_key(&spec.object_id) {
            return Err(Error::Conflict(format!(
                "identity {} already exists",
                spec.object_id
            )));
        }
        if g.identities
            .values()
            .any(|i| i.spec.client_id == spec.client_id)
        {
            return Err(Error::Conflict(format!(
                "client id {} is already registered",
                spec.client_id
            )));
        }
        if spec.system_assigned && g.identities.values().any(|i| i.spec.system_assigned) {
            return Err(Error::Conflict(
                "a system-assigned identity is already registered".into(),
            ));
        }
        g.identities.insert(
            spec.object_id.clone(),
            Identity {
                spec,
                permissions: BTreeSet::new(),
            },
        );
        self.persist(&g)
    }

    /// Removes an identity; its tokens stop working at once because every token is
    /// resolved to a live identity on use.
    pub(crate) fn remove_identity(&self, object_id: &str) -> Result<(), Error> {
        let mut g = self.lock();
        if g.identities.remove(object_id).is_none() {
            return Err(Error::NotFound(format!("identity {object_id}")));
        }
        g.tokens.retain(|_, t| t.object_id != object_id);
        self.persist(&g)
    }

    pub(crate) fn set_permissions(
        &self,
        object_id: &str,
        perms: &[Permission],
        grant: bool,
    ) -> Result<(), Error> {
        let mut g = self.lock();
        let id = g
            .identities
            .get_mut(object_id)
            .ok_or_else(|| Error::NotFound(format!("identity {object_id}")))?;
        for p in perms {
            if grant {
                id.permissions.insert(*p);
            } else {
                id.permissions.remove(p);
            }
        }
        self.persist(&g)
    }

    pub(crate) fn set_token_lifetime(&self, lifetime: Duration) {
        self.lock().token_lifetime_secs = lifetime.as_secs().max(1);
    }

    /// Marks every issued token expired, so tests can exercise expiry without waiting.
    pub(crate) fn expire_all_tokens(&self) -> Result<(), Error> {
        let mut g = self.lock();
        let past = Utc::now() - chrono::Duration::seconds(1);
        for t in g.tokens.values_mut() {
            t.expires_at = past;
        }
        self.persist(&g)
    }

    /// Issues a token for `object_id`: `(token, lifetime in seconds, expiry)`.
    pub(crate) fn issue_token(
        &self,
        object_id: &str,
    ) -> Result<(String, u64, DateTime<Utc>), Error> {
        let mut g = self.lock();
        if !g.identities.contains_key(object_id) {
            return Err(Error::NotFound(format!("identity {object_id}")));
        }
        let lifetime = g.token_lifetime_secs;
        let expires_at = Utc::now() + chrono::Duration::seconds(lifetime as i64);
        let token = format!("fakekv.{}", random_hex(32));
        // Drop long-dead tokens so a long demo does not grow the map forever.
        let cutoff = Utc::now() - chrono::Duration::hours(24);
        g.tokens.retain(|_, t| t.expires_at > cutoff);
        g.tokens.insert(
            token.clone(),
            Token {
                object_id: object_id.to_owned(),
                expires_at,
            },
        );
        self.persist(&g)?;
        Ok((token, lifetime, expires_at))
    }

    pub(crate) fn identity_by_client_id(&self, client_id: &str) -> Option<Identity> {
        self.lock()
            .identities
            .values()
            .find(|i| i.spec.client_id == client_id)
            .cloned()
    }

    pub(crate) fn identity_by_object_id(&self, object_id: &str) -> Option<Identity> {
        self.lock().identities.get(object_id).cloned()
    }

    pub(crate) fn system_assigned_identity(&self) -> Option<Identity> {
        self.lock()
            .identities
            .values()
            .find(|i| i.spec.system_assigned)
            .cloned()
    }

    pub(crate) fn authenticate(&self, token: &str) -> AuthOutcome {
        let g = self.lock();
        let Some(t) = g.tokens.get(token) else {
            return AuthOutcome::Unauthorized;
        };
        if Utc::now() >= t.expires_at {
            return AuthOutcome::Unauthorized;
        }
        match g.identities.get(&t.object_id) {
            Some(i) => AuthOutcome::Ok(i.clone()),
            None => AuthOutcome::Unauthorized,
        }
    }

    // ----- keys -----

    pub(crate) fn key_exists(&self, name: &str) -> bool {
        self.lock().keys.get(name).is_some_and(|k| !k.deleted)
    }

    /// Adds a generated version to `name` (creating the key when `create`), and
    /// returns the new version id. Generation happens outside the lock.
    pub(crate) fn insert_version(
        &self,
        name: &str,
        material: Material,
        create: bool,
    ) -> Result<String, Error> {
        let now = now_secs();
        let version = Version {
            id: random_hex(16),
            material,
            enabled: true,
            nbf: None,
            exp: None,
            created: now,
            updated: now,
        };
        let mut g = self.lock();
        match (g.keys.get(name), create) {
            (Some(k), true) if k.deleted => {
                return Err(Error::Conflict(format!(
                    "key {name} is currently in a deleted but recoverable state"
                )))
            }
            (Some(k), false) if k.deleted => return Err(Error::NotFound(format!("key {name}"))),
            (None, false) => return Err(Error::NotFound(format!("key {name}"))),
            _ => {}
        }
        if let Some(dir) = &self.config.state_dir {
            let key_dir = dir.join("keys").join(name);
            fs::create_dir_all(&key_dir)?;
            write_atomic(
                &key_dir.join(format!("{}.pem", version.id)),
                version.material.to_pem()?.as_bytes(),
            )?;
        }
        let id = version.id.clone();
        g.keys
            .entry(name.to_owned())
            .or_insert_with(|| Key {
                deleted: false,
                versions: Vec::new(),
            })
            .versions
            .push(version);
        self.persist(&g)?;
        Ok(id)
    }

    /// Kind of the newest version, used when adding a version without naming one.
    pub(crate) fn current_kind(&self, name: &str) -> Result<KeyKind, Error> {
        let g = self.lock();
        g.keys
            .get(name)
            .filter(|k| !k.deleted)
            .and_then(|k| k.versions.last())
            .map(|v| v.material.kind())
            .ok_or_else(|| Error::NotFound(format!("key {name}")))
    }

    /// Applies `f` to one version or, with `version == None`, to all of them.
    pub(crate) fn update_versions(
        &self,
        name: &str,
        version: Option<&str>,
        f: impl Fn(&mut Version),
    ) -> Result<(), Error> {
        let mut g = self.lock();
        let key = live_key_mut(&mut g, name)?;
        let now = now_secs();
        let mut touched = false;
        for v in key.versions.iter_mut() {
            if version.is_none_or(|want| want == v.id) {
                f(v);
                v.updated = now;
                touched = true;
            }
        }
        if !touched {
            return Err(Error::NotFound(format!(
                "version {} of key {name}",
                version.unwrap_or_default()
            )));
        }
        self.persist(&g)
    }

    /// Removes one version for good (delete + purge of that version): the data plane
    /// answers 404 KeyNotFound for it and lists no longer show it. The last version
    /// cannot be removed this way (`Conflict`); delete the key instead.
    pub(crate) fn remove_version(&self, name: &str, version: &str) -> Result<(), Error> {
        let mut g = self.lock();
        let key = live_key_mut(&mut g, name)?;
        let Some(at) = key.versions.iter().position(|v| v.id == version) else {
            return Err(Error::NotFound(format!("version {version} of key {name}")));
        };
        if key.versions.len() == 1 {
            return Err(Error::Conflict(format!(
                "version {version} is the only version of key {name}; delete the key instead"
            )));
        }
        key.versions.remove(at);
        self.persist(&g)?;
        if let Some(dir) = &self.config.state_dir {
            let _ = fs::remove_file(pem_path(dir, name, version));
        }
        Ok(())
    }

    pub(crate) fn set_deleted(&self, name: &str, deleted: bool) -> Result<(), Error> {
        let mut g = self.lock();
        let key = g
            .keys
            .get_mut(name)
            .filter(|k| k.deleted != deleted)
            .ok_or_else(|| {
                Error::NotFound(if deleted {
                    format!("key {name}")
                } else {
                    format!("deleted key {name}")
                })
            })?;
        key.deleted = deleted;
        self.persist(&g)
    }

    /// A clone of one version (or the current one), `None` when the key is unknown
    /// or deleted, or the version unknown.
    pub(crate) fn version(&self, name: &str, version: Option<&str>) -> Option<Version> {
        let g = self.lock();
        let key = g.keys.get(name).filter(|k| !k.deleted)?;
        match version {
            Some(want) => key.versions.iter().find(|v| v.id == want).cloned(),
            None => key.versions.last().cloned(),
        }
    }

    /// For versionless wrap/unwrap: the newest enabled version, or the newest one
    /// when none is enabled (so a disabled key still wraps and refuses unwrap).
    pub(crate) fn version_for_crypto(&self, name: &str, version: Option<&str>) -> Option<Version> {
        if version.is_some() {
            return self.version(name, version);
        }
        let g = self.lock();
        let key = g.keys.get(name).filter(|k| !k.deleted)?;
        key.versions
            .iter()
            .rev()
            .find(|v| v.enabled)
            .or_else(|| key.versions.last())
            .cloned()
    }

    pub(crate) fn all_versions(&self, name: &str) -> Option<Vec<Version>> {
        let g = self.lock();
        g.keys
            .get(name)
            .filter(|k| !k.deleted)
            .map(|k| k.versions.clone())
    }

    pub(crate) fn validity(&self) -> ValidityEnforcement {
        self.config.validity
    }
}

/// `RSA-OAEP-256` or `RSA-OAEP`; anything else is refused before this is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WrapAlg {
    RsaOaep256,
    RsaOaep,
}

impl WrapAlg {
    pub(crate) fn parse(s: &str) -> Option<WrapAlg> {
        match s {
            "RSA-OAEP-256" => Some(WrapAlg::RsaOaep256),
            "RSA-OAEP" => Some(WrapAlg::RsaOaep),
            _ => None,
        }
    }

    fn padding(self) -> Oaep {
        match self {
            WrapAlg::RsaOaep256 => Oaep::new::<sha2::Sha256>(),
            WrapAlg::RsaOaep => Oaep::new::<sha1::Sha1>(),
        }
    }
}

/// RSA-OAEP encryption under the version's public key; `Err` carries a safe message.
pub(crate) fn rsa_wrap(
    key: &RsaPrivateKey,
    alg: WrapAlg,
    plaintext: &[u8],
) -> Result<Vec<u8>, String> {
    key.to_public_key()
        .encrypt(&mut OsRng, alg.padding(), plaintext)
        .map_err(|_| "The value is too long to be wrapped by this key.".to_owned())
}

/// RSA-OAEP decryption; every failure is the same "Decryption failed" so callers
/// learn nothing about why.
pub(crate) fn rsa_unwrap(key: &RsaPrivateKey, alg: WrapAlg, wrapped: &[u8]) -> Result<Vec<u8>, ()> {
    key.decrypt_blinded(&mut OsRng, alg.padding(), wrapped)
        .map_err(|_| ())
}

// ----- persistence -----

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PersistedVersion {
    version: String,
    kind: KeyKind,
    enabled: bool,
    nbf: Option<i64>,
    exp: Option<i64>,
    created: i64,
    updated: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PersistedKey {
    deleted: bool,
    versions: Vec<PersistedVersion>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PersistedState {
    keys: BTreeMap<String, PersistedKey>,
    identities: BTreeMap<String, Identity>,
    tokens: BTreeMap<String, Token>,
    token_lifetime_secs: u64,
}

const STATE_FILE: &str = "state.json";

fn save_state(dir: &Path, inner: &Inner) -> Result<(), Error> {
    let state = PersistedState {
        keys: inner
            .keys
            .iter()
            .map(|(name, k)| {
                (
                    name.clone(),
                    PersistedKey {
                        deleted: k.deleted,
                        versions: k
                            .versions
                            .iter()
                            .map(|v| PersistedVersion {
                                version: v.id.clone(),
                                kind: v.material.kind(),
                                enabled: v.enabled,
                                nbf: v.nbf,
                                exp: v.exp,
                                created: v.created,
                                updated: v.updated,
                            })
                            .collect(),
                    },
                )
            })
            .collect(),
        identities: inner.identities.clone(),
        tokens: inner.tokens.clone(),
        token_lifetime_secs: inner.token_lifetime_secs,
    };
    let json = serde_json::to_vec_pretty(&state)
        .map_err(|e| Error::Internal(format!("cannot serialise state: {e}")))?;
    write_atomic(&dir.join(STATE_FILE), &json)?;
    Ok(())
}

fn load_from_dir(dir: &Path, inner: &mut Inner) -> Result<(), Error> {
    let path = dir.join(STATE_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let state: PersistedState = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Corrupt(format!("{}: {e}", path.display())))?;
    for (name, pk) in state.keys {
        if !is_valid_key_name(&name) {
            return Err(Error::Corrupt(format!(
                "invalid key name {name:?} in state"
            )));
        }
        let mut versions = Vec::with_capacity(pk.versions.len());
        for pv in pk.versions {
            if pv.version.len() != 32 || !pv.version.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::Corrupt(format!("invalid version {:?}", pv.version)));
            }
            let pem_path = pem_path(dir, &name, &pv.version);
            let pem = fs::read_to_string(&pem_path)?;
            let material = Material::from_pem(pv.kind, &pem)
                .map_err(|e| Error::Corrupt(format!("{}: {e}", pem_path.display())))?;
            versions.push(Version {
                id: pv.version,
                material,
                enabled: pv.enabled,
                nbf: pv.nbf,
                exp: pv.exp,
                created: pv.created,
                updated: pv.updated,
            });
        }
        inner.keys.insert(
            name,
            Key {
                deleted: pk.deleted,
                versions,
            },
        );
    }
    inner.identities = state.identities;
    inner.tokens = state.tokens;
    inner.token_lifetime_secs = state.token_lifetime_secs.max(1);
    Ok(())
}

fn pem_path(dir: &Path, name: &str, version: &str) -> PathBuf {
    dir.join("keys").join(name).join(format!("{version}.pem"))
}

/// Temporary file then rename, so a crash never leaves a half-written file. Mode
/// 0600 on Unix: these files hold private keys, client secrets and tokens.
fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

/// Generates key material on the blocking pool (RSA-4096 takes seconds).
pub(crate) async fn generate(kind: KeyKind) -> Result<Material, Error> {
    tokio::task::spawn_blocking(move || Material::generate(kind))
        .await
        .map_err(|e| Error::Internal(format!("key generation task failed: {e}")))?
}
