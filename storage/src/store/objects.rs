//! Small typed helpers over the object store, shared by the content services.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Result, StoreError};

/// `Corrupt` for the object at `path`: it is not what it should be (not JSON, unknown
/// fields).
pub(super) fn corrupt(path: &Path, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

/// Reads an object whole; `None` when it does not exist.
pub(super) async fn get(objects: &Arc<dyn ObjectStore>, path: &Path) -> Result<Option<Bytes>> {
    match objects.get(path).await {
        Ok(r) => Ok(Some(r.bytes().await?)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Reads a JSON object; `None` when it does not exist.
pub(super) async fn get_json<T: DeserializeOwned>(
    objects: &Arc<dyn ObjectStore>,
    path: &Path,
) -> Result<Option<T>> {
    match get(objects, path).await? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| corrupt(path, e)),
        None => Ok(None),
    }
}

fn to_json<T: Serialize>(path: &Path, value: &T) -> Result<PutPayload> {
    serde_json::to_vec(value)
        .map(PutPayload::from)
        .map_err(|e| corrupt(path, e))
}

/// Writes a JSON object, replacing any previous one (atomic on every backend).
pub(super) async fn put_json<T: Serialize>(
    objects: &Arc<dyn ObjectStore>,
    path: &Path,
    value: &T,
) -> Result<()> {
    objects.put(path, to_json(path, value)?).await?;
    Ok(())
}

/// Creates an object only if none exists. `Ok(false)` when one already did: another
/// writer won.
pub(super) async fn create(
    objects: &Arc<dyn ObjectStore>,
    path: &Path,
    payload: PutPayload,
) -> Result<bool> {
    let opts = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    match objects.put_opts(path, payload, opts).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// [`create`] for a JSON value.
pub(super) async fn create_json<T: Serialize>(
    objects: &Arc<dyn ObjectStore>,
    path: &Path,
    value: &T,
) -> Result<bool> {
    create(objects, path, to_json(path, value)?).await
}

pub(super) async fn exists(objects: &Arc<dyn ObjectStore>, path: &Path) -> Result<bool> {
    match objects.head(path).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Deletes an object; a missing object is not an error (deletes are retried after
/// crashes, so they must be idempotent).
pub(super) async fn delete(objects: &Arc<dyn ObjectStore>, path: &Path) -> Result<()> {
    match objects.delete(path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Every object below `prefix` (recursively), with its size and modification time.
pub(super) async fn list_meta(
    objects: &Arc<dyn ObjectStore>,
    prefix: &Path,
) -> Result<Vec<ObjectMeta>> {
    Ok(objects.list(Some(prefix)).try_collect().await?)
}

/// Every object below `prefix` (recursively).
pub(super) async fn list(objects: &Arc<dyn ObjectStore>, prefix: &Path) -> Result<Vec<Path>> {
    let metas = list_meta(objects, prefix).await?;
    Ok(metas.into_iter().map(|m| m.location).collect())
}

/// Deletes every object below `prefix`.
pub(super) async fn delete_all(objects: &Arc<dyn ObjectStore>, prefix: &Path) -> Result<()> {
    for path in list(objects, prefix).await? {
        delete(objects, &path).await?;
    }
    Ok(())
}

/// `n` random bytes as lowercase hex, for object names that must never collide.
pub(super) fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}
