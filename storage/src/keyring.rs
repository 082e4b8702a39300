//! The keyring (DESIGN §3): registry keys (RKs), each wrapped by a version of the KEK.
//!
//! The keyring is one small JSON object, versioned by sequence number
//! (`keyring/<seq:020>`, see [`crate::paths`]). A new version is written with a
//! create-only put, so two nodes creating or changing it at once cannot both win; the
//! loser re-reads. Older versions are deleted after a successful write.
//!
//! Only wrapped RKs are stored. Unwrapped RKs live in memory in zeroizing [`Key32`]s.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use kms_client::{Kek, KeyId, KeyIdKind, KmsError, SecretBytes, VersionedKeyId, ALG_RSA_OAEP_256};
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::crypto::keys::Key32;
use crate::crypto::seal::LinkKey;
use crate::paths::{sequence_of, ObjectPath};
use crate::{Result, StoreError};

/// The stored keyring document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyringDoc {
    /// Format version, 1.
    pub version: u32,
    /// The key id the operator configured; without a version it means automatic rotation.
    pub key_id: String,
    pub automatic_rotation: bool,
    pub last_rotation: Option<DateTime<Utc>>,
    /// Registry-key generations, oldest first.
    pub generations: Vec<Generation>,
}

/// Whether new blobs are sealed under a generation or it is only kept to read old ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GenerationState {
    Active,
    ReadOnly,
}

/// One registry key, wrapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generation {
    pub generation: u32,
    /// The exact KEK version that wrapped it (always unwrap with this one).
    pub kek: String,
    pub algorithm: String,
    /// Standard base64 of the KEK's output.
    pub wrapped: String,
    pub created: DateTime<Utc>,
    pub state: GenerationState,
}

/// The keyring as loaded: the document, its key ids parsed, and its unwrapped keys.
#[derive(Debug)]
pub struct LoadedKeyring {
    pub doc: KeyringDoc,
    /// Sequence number of the keyring object this was read from.
    pub sequence: u64,
    ids: KeyringIds,
    keys: BTreeMap<u32, Arc<Key32>>,
    /// Each generation's link-seal key, derived from its registry key.
    link_keys: Arc<BTreeMap<u32, LinkKey>>,
    active: u32,
}

/// The link-seal key of every generation (FORMAT.md §11.1).
fn link_keys(keys: &BTreeMap<u32, Arc<Key32>>) -> Arc<BTreeMap<u32, LinkKey>> {
    Arc::new(
        keys.iter()
            .map(|(g, rk)| (*g, LinkKey::derive(rk)))
            .collect(),
    )
}

/// The key ids of a keyring document, parsed: the configured key and the exact KEK
/// version of each generation. A document whose ids do not parse is not loaded.
#[derive(Debug, Clone)]
struct KeyringIds {
    key_id: KeyId,
    keks: BTreeMap<u32, VersionedKeyId>,
}

impl KeyringIds {
    fn parse(doc: &KeyringDoc, sequence: u64) -> Result<KeyringIds> {
        let corrupt = |e: KmsError| StoreError::Corrupt {
            path: format!("keyring/{sequence:020}"),
            reason: e.to_string(),
        };
        let key_id: KeyId = doc.key_id.parse().map_err(corrupt)?;
        let keks = doc
            .generations
            .iter()
            .map(|g| Ok((g.generation, g.kek.parse().map_err(corrupt)?)))
            .collect::<Result<_>>()?;
        Ok(KeyringIds { key_id, keks })
    }
}

impl LoadedKeyring {
    /// The generation new content is sealed under, and its key.
    pub fn active(&self) -> (u32, Arc<Key32>) {
        let key = self.keys.get(&self.active).cloned();
        // `load` only builds a LoadedKeyring whose active generation has a key.
        (
            self.active,
            key.unwrap_or_else(|| unreachable!("active generation has a key")),
        )
    }

    /// The same registry keys under a new document (after a rewrap). Fails with
    /// `Corrupt` when the document's key ids do not parse.
    pub(crate) fn with_doc(&self, doc: KeyringDoc, sequence: u64) -> Result<LoadedKeyring> {
        Ok(LoadedKeyring {
            ids: KeyringIds::parse(&doc, sequence)?,
            doc,
            sequence,
            keys: self.keys.clone(),
            link_keys: self.link_keys.clone(),
            active: self.active,
        })
    }

    /// The key the operator configured (versionless: automatic rotation).
    pub fn key_id(&self) -> &KeyId {
        &self.ids.key_id
    }

    /// The exact KEK version that wraps `generation`, if the keyring has it.
    pub fn kek_of(&self, generation: u32) -> Option<&VersionedKeyId> {
        self.ids.keks.get(&generation)
    }

    /// Whether every generation is wrapped by `version`.
    pub fn all_wrapped_by(&self, version: &VersionedKeyId) -> bool {
        self.ids.keks.values().all(|k| k == version)
    }

    /// The document entry of the active generation.
    pub fn active_generation(&self) -> Option<&Generation> {
        self.doc
            .generations
            .iter()
            .find(|g| g.generation == self.active)
    }

    /// The key of `generation`; `Integrity` when the keyring has no such generation
    /// (an envelope naming an unknown generation was edited or belongs elsewhere).
    pub fn key(&self, generation: u32) -> Result<Arc<Key32>> {
        self.keys
            .get(&generation)
            .cloned()
            .ok_or(StoreError::Integrity)
    }

    /// Whether every generation of this keyring is in `next` with the same key.
    pub(crate) fn same_keys_in(&self, next: &LoadedKeyring) -> bool {
        self.keys.iter().all(|(g, rk)| {
            next.keys
                .get(g)
                .is_some_and(|other| bool::from(rk.expose().ct_eq(other.expose())))
        })
    }

    /// The link-seal key of the active generation (new links are sealed with it).
    pub(crate) fn active_link_key(&self) -> (u32, &LinkKey) {
        match self.link_keys.get(&self.active) {
            Some(key) => (self.active, key),
            None => unreachable!("every generation with a key has a link key"),
        }
    }

    /// The link-seal key of `generation`; `Integrity` for a generation not in the keyring.
    pub(crate) fn link_key(&self, generation: u32) -> Result<&LinkKey> {
        self.link_keys.get(&generation).ok_or(StoreError::Integrity)
    }
}

/// Loads the keyring, creating it on first open with one registry key wrapped by the
/// newest usable version of `key_id`.
///
/// When a keyring exists it is authoritative: a `key_id` naming a different key than
/// the keyring records (after a rotate-key to another key or vault) is logged and the
/// keyring's key is used (see [`reconcile_key`]).
///
/// Fails with `Key(Revoked)` when the KEK version that wrapped a registry key is
/// unusable, `Key(Misconfigured)` for a non-RSA KEK or when `key_id` belongs to another
/// key provider than the keyring's key (the configured provider could not serve it),
/// and `Integrity` when the KEK does not unwrap the stored registry keys.
pub async fn load_or_create(
    objects: &Arc<dyn ObjectStore>,
    kek: &Arc<dyn Kek>,
    key_id: &KeyId,
) -> Result<LoadedKeyring> {
    // Bounded: each round either reads an existing keyring or creates one; losing the
    // creation race to another node means the next round reads theirs.
    for _ in 0..5 {
        if let Some((sequence, doc)) = read_latest(objects).await? {
            reconcile_key(&doc, key_id)?;
            return unwrap_all(kek, doc, sequence).await;
        }
        let kek_version = kek.latest_version(key_id).await?;
        let description = kek.describe(&kek_version).await?;
        if !description.key_type.starts_with("RSA") {
            return Err(KmsError::misconfigured(
                &kek_version,
                format!("key type {} is not RSA", description.key_type),
            )
            .into());
        }
        let rk = Key32::random();
        let wrapped = kek.wrap(&kek_version, rk.expose()).await?;
        let doc = KeyringDoc {
            version: 1,
            key_id: key_id.to_string(),
            automatic_rotation: key_id.version().is_none(),
            last_rotation: None,
            generations: vec![Generation {
                generation: 1,
                kek: kek_version.to_string(),
                algorithm: ALG_RSA_OAEP_256.to_owned(),
                wrapped: base64::engine::general_purpose::STANDARD.encode(&wrapped),
                created: Utc::now(),
                state: GenerationState::Active,
            }],
        };
        match write_version(objects, 1, &doc).await {
            Ok(()) => {
                tracing::info!(kek = %kek_version, "created the keyring with registry key generation 1");
                let mut keys = BTreeMap::new();
                keys.insert(1, Arc::new(rk));
                return Ok(LoadedKeyring {
                    ids: KeyringIds::parse(&doc, 1)?,
                    doc,
                    sequence: 1,
                    link_keys: link_keys(&keys),
                    keys,
                    active: 1,
                });
            }
            Err(StoreError::Backend(object_store::Error::AlreadyExists { .. })) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Corrupt {
        path: "keyring".into(),
        reason: "could not settle on a keyring version".into(),
    })
}

/// Checks the configured key against the keyring's. The keyring is authoritative:
/// a rotate-key may have moved the registry to another key (another name or vault), so
/// a configured key that differs is not an error; it is logged and the keyring's key
/// (and the exact versions it records) is used. Refused with `Misconfigured` only when
/// the two belong to different key providers (`file://` against a Key Vault), since
/// the provider built for the configured key could not serve the keyring's.
pub(crate) fn reconcile_key(doc: &KeyringDoc, configured: &KeyId) -> Result<()> {
    let stored: KeyId = doc
        .key_id
        .parse()
        .map_err(|e: KmsError| StoreError::Corrupt {
            path: "keyring".into(),
            reason: e.to_string(),
        })?;
    if stored.versionless() == configured.versionless() {
        return Ok(());
    }
    let same_provider = matches!(
        (stored.kind(), configured.kind()),
        (KeyIdKind::File { .. }, KeyIdKind::File { .. })
            | (
                KeyIdKind::AzureKeyVault { .. },
                KeyIdKind::AzureKeyVault { .. }
            )
    );
    if !same_provider {
        return Err(KmsError::misconfigured(
            configured,
            format!(
                "this registry is encrypted under {stored}, which another key provider serves; \
                 configure that key (the keyring records it since the last rotate-key)"
            ),
        )
        .into());
    }
    tracing::warn!(
        configured = %configured,
        keyring = %stored,
        "the configured key differs from the key the keyring records (a rotate-key moved the registry); using the keyring's key"
    );
    Ok(())
}

pub(crate) async fn unwrap_all(
    kek: &Arc<dyn Kek>,
    doc: KeyringDoc,
    sequence: u64,
) -> Result<LoadedKeyring> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: format!("keyring/{sequence:020}"),
        reason,
    };
    if doc.version != 1 {
        return Err(corrupt(format!(
            "unsupported keyring version {}",
            doc.version
        )));
    }
    let active = check_generations(&doc, sequence)?;
    let mut keys = BTreeMap::new();
    for g in &doc.generations {
        if g.algorithm != ALG_RSA_OAEP_256 {
            return Err(corrupt(format!(
                "generation {} uses unsupported algorithm {}",
                g.generation, g.algorithm
            )));
        }
        let secret = unwrap_generation(kek, g, sequence).await?;
        let key = Key32::from_slice(secret.expose()).map_err(|_| StoreError::Integrity)?;
        keys.insert(g.generation, Arc::new(key));
    }
    Ok(LoadedKeyring {
        ids: KeyringIds::parse(&doc, sequence)?,
        doc,
        sequence,
        link_keys: link_keys(&keys),
        keys,
        active,
    })
}

/// The active generation of a keyring document, after checking that its generation
/// numbers are unique and exactly one is active.
///
/// Fails with `Corrupt` otherwise. Without this a document listing one generation twice
/// loaded with the later entry's key under that number (the earlier one silently
/// dropped), and of several active generations the last won; the `keyring` fuzz target
/// found the first.
fn check_generations(doc: &KeyringDoc, sequence: u64) -> Result<u32> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: format!("keyring/{sequence:020}"),
        reason,
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut active = None;
    for g in &doc.generations {
        if !seen.insert(g.generation) {
            return Err(corrupt(format!(
                "registry-key generation {} is listed twice",
                g.generation
            )));
        }
        if g.state == GenerationState::Active {
            if let Some(first) = active {
                return Err(corrupt(format!(
                    "generations {first} and {} are both active",
                    g.generation
                )));
            }
            active = Some(g.generation);
        }
    }
    active.ok_or_else(|| corrupt("no active registry-key generation".into()))
}

/// Unwraps one generation's registry key with the exact KEK version that wrapped it.
///
/// Fails with `Corrupt` when the generation's KEK id or wrapped bytes do not parse,
/// `Integrity` when the KEK does not unwrap them, `Key(..)` when the KEK refuses.
pub(crate) async fn unwrap_generation(
    kek: &Arc<dyn Kek>,
    g: &Generation,
    sequence: u64,
) -> Result<SecretBytes> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: format!("keyring/{sequence:020}"),
        reason,
    };
    let version: VersionedKeyId = g
        .kek
        .parse()
        .map_err(|e: KmsError| corrupt(e.to_string()))?;
    let wrapped = base64::engine::general_purpose::STANDARD
        .decode(&g.wrapped)
        .map_err(|_| {
            corrupt(format!(
                "generation {} wrapped key is not base64",
                g.generation
            ))
        })?;
    unwrap_with(kek, &version, &wrapped).await
}

/// `kek.unwrap`, with bytes the version did not wrap reported as `Integrity`.
pub(crate) async fn unwrap_with(
    kek: &Arc<dyn Kek>,
    version: &VersionedKeyId,
    wrapped: &[u8],
) -> Result<SecretBytes> {
    match kek.unwrap(version, wrapped).await {
        Ok(s) => Ok(s),
        Err(KmsError::InvalidCiphertext { .. }) => Err(StoreError::Integrity),
        Err(e) => Err(e.into()),
    }
}

/// The newest keyring version, if any.
pub async fn read_latest(objects: &Arc<dyn ObjectStore>) -> Result<Option<(u64, KeyringDoc)>> {
    // A version can disappear between list and get when a writer cleans up older
    // versions; a few rounds always settle because a newer one then exists.
    for _ in 0..5 {
        let prefix = ObjectPath::KeyringDir.to_path();
        let metas: Vec<_> = objects.list(Some(&prefix)).try_collect().await?;
        let Some(seq) = metas.iter().filter_map(|m| sequence_of(&m.location)).max() else {
            return Ok(None);
        };
        let path = ObjectPath::KeyringVersion(seq).to_path();
        match objects.get(&path).await {
            Ok(r) => {
                let bytes = r.bytes().await?;
                let doc: KeyringDoc =
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                        path: path.to_string(),
                        reason: e.to_string(),
                    })?;
                return Ok(Some((seq, doc)));
            }
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Corrupt {
        path: "keyring".into(),
        reason: "keyring versions kept changing while being read".into(),
    })
}

/// Writes keyring version `seq` with a create-only put. AlreadyExists means another
/// writer got there first.
pub async fn write_version(
    objects: &Arc<dyn ObjectStore>,
    seq: u64,
    doc: &KeyringDoc,
) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(doc).map_err(|e| StoreError::Corrupt {
        path: "keyring".into(),
        reason: e.to_string(),
    })?;
    let opts = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    objects
        .put_opts(
            &ObjectPath::KeyringVersion(seq).to_path(),
            PutPayload::from(bytes),
            opts,
        )
        .await?;
    if seq > 1 {
        // Best effort: an old version left behind is harmless, the newest wins.
        let _ = objects
            .delete(&ObjectPath::KeyringVersion(seq - 1).to_path())
            .await;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    fn generation(generation: u32, state: GenerationState) -> Generation {
        Generation {
            generation,
            kek: "file:///keys/kek/00000000000000000000000000000001".into(),
            algorithm: ALG_RSA_OAEP_256.into(),
            wrapped: String::new(),
            created: DateTime::<Utc>::UNIX_EPOCH,
            state,
        }
    }

    fn doc(generations: Vec<Generation>) -> KeyringDoc {
        KeyringDoc {
            version: 1,
            key_id: "file:///keys/kek".into(),
            automatic_rotation: true,
            last_rotation: None,
            generations,
        }
    }

    #[test]
    fn one_active_generation_among_unique_ones_is_accepted() {
        let d = doc(vec![
            generation(1, GenerationState::ReadOnly),
            generation(2, GenerationState::Active),
        ]);
        assert_eq!(check_generations(&d, 1).unwrap(), 2);
    }

    /// fuzz/corpus/keyring/crash-duplicate-generation: the legitimate keyring with
    /// generation 2 renumbered 1 loaded, with generation 1's key replaced by 2's.
    #[test]
    fn a_generation_listed_twice_is_corrupt() {
        let d = doc(vec![
            generation(1, GenerationState::ReadOnly),
            generation(1, GenerationState::Active),
        ]);
        assert!(matches!(
            check_generations(&d, 1),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn two_active_generations_or_none_are_corrupt() {
        let two = doc(vec![
            generation(1, GenerationState::Active),
            generation(2, GenerationState::Active),
        ]);
        assert!(matches!(
            check_generations(&two, 1),
            Err(StoreError::Corrupt { .. })
        ));
        let none = doc(vec![generation(1, GenerationState::ReadOnly)]);
        assert!(matches!(
            check_generations(&none, 1),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
