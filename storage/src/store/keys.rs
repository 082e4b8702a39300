//! The registry keys' lifecycle in a running store (DESIGN §7): probing the KEK,
//! revoking access (dropping the keys) and reloading the keyring, and rewrapping the
//! registry keys under a new KEK version (rotation). Rotation rewraps the few registry
//! keys only; no blob envelope or data object is touched.

use std::sync::Arc;

use base64::Engine as _;
use chrono::Utc;
use kms_client::{KeyId, KmsError, VersionedKeyId};
use object_store::ObjectStore;
use subtle::ConstantTimeEq;

use super::{objects, KeySlot, Store};
use crate::keyring::{self, LoadedKeyring};
use crate::paths::ObjectPath;
use crate::{Result, StoreError};

/// The rotation lease's content: who holds it and until when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationLease {
    pub holder: String,
    pub expires: chrono::DateTime<Utc>,
}

/// What [`Store::rotate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateOutcome {
    /// Every registry key is now wrapped by `to`; the keyring is at `sequence`.
    Rotated {
        from: String,
        to: VersionedKeyId,
        sequence: u64,
    },
    /// The keyring is already wrapped by that version: nothing to do.
    AlreadyCurrent,
    /// Another node wrote a newer keyring first; this store reloaded it.
    LostRace { sequence: u64 },
}

impl Store {
    /// Asks the KEK to unwrap the active registry key and checks it is the key in
    /// memory: the liveness probe. One vault call.
    ///
    /// Fails with `Key(Revoked)` when the KEK refuses, `Key(Transient)` when it cannot
    /// be reached, `Integrity` when it unwraps to something else, and with the
    /// revocation's error while access is revoked.
    pub async fn probe(&self) -> Result<()> {
        let ring = self.keyring()?;
        let g = ring.active_generation().ok_or(StoreError::Integrity)?;
        let secret = keyring::unwrap_generation(self.kek(), g, ring.sequence).await?;
        let (_, rk) = ring.active();
        if bool::from(secret.expose().ct_eq(rk.expose().as_slice())) {
            Ok(())
        } else {
            Err(StoreError::Integrity)
        }
    }

    /// The sequence number of the newest keyring in the object store (one listing).
    pub async fn latest_keyring_sequence(&self) -> Result<Option<u64>> {
        Ok(keyring::read_latest(self.objects())
            .await?
            .map(|(seq, _)| seq))
    }

    /// The newest keyring document in the object store, read without unwrapping
    /// anything: what the admin API reports, also while access is revoked. `None`
    /// before the first keyring was written.
    pub async fn keyring_doc(&self) -> Result<Option<(u64, keyring::KeyringDoc)>> {
        keyring::read_latest(self.objects()).await
    }

    /// Reads the newest keyring, unwraps every registry key and puts it in use: after
    /// a revocation ends, or when another node rotated. Returns its sequence number.
    ///
    /// Fails like [`Store::open`]; on failure the store keeps its current state.
    pub async fn reload_keyring(&self) -> Result<u64> {
        let objects: &Arc<dyn ObjectStore> = self.objects();
        let (sequence, doc) =
            keyring::read_latest(objects)
                .await?
                .ok_or_else(|| StoreError::Corrupt {
                    path: "keyring".into(),
                    reason: "the keyring has disappeared from the object store".into(),
                })?;
        let loaded = keyring::unwrap_all(self.kek(), doc, sequence).await?;
        self.check_succession(&loaded)?;
        self.set_slot(KeySlot::Loaded(Arc::new(loaded)));
        Ok(sequence)
    }

    /// Refuses (`Integrity`) a keyring that would take this store backwards: an older
    /// sequence number or rotation than one it has already used, or one that drops a
    /// generation it holds or gives it another key. What a bucket writer who puts back
    /// an older keyring (or deletes the newer versions) meets on a running node.
    fn check_succession(&self, next: &LoadedKeyring) -> Result<()> {
        let mark = self.keyring_mark();
        let backwards =
            next.sequence < mark.sequence || next.doc.last_rotation < mark.last_rotation;
        let keys_changed = match self.keyring() {
            Ok(current) => !current.same_keys_in(next),
            // Revoked: the keys are gone, only the mark is left to compare.
            Err(_) => false,
        };
        if backwards || keys_changed {
            tracing::error!(
                sequence = next.sequence,
                last_sequence = mark.sequence,
                "refused a keyring older than the one in use, or with other registry keys: the keyring in the object store was replaced"
            );
            return Err(StoreError::Integrity);
        }
        Ok(())
    }

    /// Rewraps every registry key under `to` and writes the next keyring version with
    /// a create-only put, recording `key_id` as the configured key (versionless means
    /// automatic rotation) and the rotation time. Each key is unwrapped again with `to`
    /// before the new keyring is written, so a version that cannot unwrap what it
    /// wrapped is never recorded.
    ///
    /// Fails with `Key(Misconfigured)` when `to` is not an RSA key, `Key(..)` when the
    /// KEK refuses, and with the revocation's error while access is revoked. Nothing
    /// changes on failure.
    pub async fn rotate(&self, to: &VersionedKeyId, key_id: &KeyId) -> Result<RotateOutcome> {
        let ring = self.keyring()?;
        let from = ring
            .active_generation()
            .map(|g| g.kek.clone())
            .unwrap_or_default();
        if ring.all_wrapped_by(to) && ring.key_id() == key_id {
            return Ok(RotateOutcome::AlreadyCurrent);
        }
        let description = self.kek().describe(to).await?;
        if !description.key_type.starts_with("RSA") {
            return Err(KmsError::misconfigured(
                to,
                format!(
                    "key type {} is not RSA; valv wraps its registry keys with RSA-OAEP-256",
                    description.key_type
                ),
            )
            .into());
        }
        let mut doc = ring.doc.clone();
        for g in &mut doc.generations {
            let rk = ring.key(g.generation)?;
            let wrapped = self.kek().wrap(to, rk.expose()).await?;
            let back = keyring::unwrap_with(self.kek(), to, &wrapped).await?;
            if !bool::from(back.expose().ct_eq(rk.expose().as_slice())) {
                return Err(StoreError::Integrity);
            }
            g.kek = to.to_string();
            g.wrapped = base64::engine::general_purpose::STANDARD.encode(&wrapped);
        }
        doc.key_id = key_id.to_string();
        doc.automatic_rotation = key_id.version().is_none();
        doc.last_rotation = Some(Utc::now());
        let sequence = ring.sequence + 1;
        match keyring::write_version(self.objects(), sequence, &doc).await {
            Ok(()) => {
                let loaded: LoadedKeyring = ring.with_doc(doc, sequence)?;
                self.set_slot(KeySlot::Loaded(Arc::new(loaded)));
                tracing::info!(%from, to = %to, sequence, "rewrapped the registry keys under a new KEK version");
                Ok(RotateOutcome::Rotated {
                    from,
                    to: to.clone(),
                    sequence,
                })
            }
            Err(StoreError::Backend(object_store::Error::AlreadyExists { .. })) => {
                let sequence = self.reload_keyring().await?;
                Ok(RotateOutcome::LostRace { sequence })
            }
            Err(e) => Err(e),
        }
    }

    /// Takes the rotation lease for `holder` for `ttl`, so that when several nodes
    /// notice a new key version at once only one rewraps (the others reload its
    /// keyring). `Ok(false)` when another holder has an unexpired lease. An expired
    /// lease (its holder died mid-rotation) is removed and taken over.
    pub async fn acquire_rotation_lease(
        &self,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool> {
        let path = ObjectPath::RotationLease.to_path();
        let lease = RotationLease {
            holder: holder.to_owned(),
            expires: Utc::now()
                + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::minutes(1)),
        };
        // Bounded: one round to clear an expired lease, one to take it.
        for _ in 0..2 {
            if objects::create_json(self.objects(), &path, &lease).await? {
                return Ok(true);
            }
            match objects::get_json::<RotationLease>(self.objects(), &path).await {
                Ok(Some(current)) if current.expires > Utc::now() => return Ok(false),
                // Expired: clear it and try again, but only if it is still the lease
                // read (another node may have cleared it and taken a fresh one since;
                // deleting that would admit two holders). Object stores have no
                // conditional delete, so this narrows the window, it cannot close it.
                Ok(Some(expired)) => {
                    let again = objects::get_json::<RotationLease>(self.objects(), &path).await;
                    if matches!(again, Ok(Some(ref now)) if *now == expired) {
                        objects::delete(self.objects(), &path).await?;
                    }
                }
                // Unreadable (a torn write cannot happen with create-only puts, but a
                // hand-edited object can): clear it and try again.
                Err(StoreError::Corrupt { .. }) => {
                    objects::delete(self.objects(), &path).await?;
                }
                // Released between our create and our read.
                Ok(None) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Releases the rotation lease if `holder` still holds it.
    pub async fn release_rotation_lease(&self, holder: &str) -> Result<()> {
        let path = ObjectPath::RotationLease.to_path();
        if let Some(current) = objects::get_json::<RotationLease>(self.objects(), &path).await? {
            if current.holder == holder {
                objects::delete(self.objects(), &path).await?;
            }
        }
        Ok(())
    }
}
