//! valv's encrypted content store.
//!
//! # Layout
//! Layers, bottom up (STYLE habit 1); no layer reaches past the one below it.
//! - object store: `object_store` (bytes at paths). Every path comes from [`paths::ObjectPath`].
//! - backends: [`backend`] — one module per object store (local, memory): opened from a
//!   [`backend::StorageUrl`], each decides its part size, its read path and its crash
//!   leftovers.
//! - crypto: [`crypto`] — segments, envelopes, key wrapping, resumable hashes.
//! - keyring: [`keyring`] — registry keys wrapped by the KEK (DESIGN §3).
//! - content services: [`Store`] — blobs, upload sessions, manifests, tags, links,
//!   referrers and the catalog.
//!
//! Names ([`Digest`], [`RepositoryName`], [`Tag`], [`Reference`], [`UploadId`]) are parsed
//! once at the edge ([`names`]) and never travel as strings.

pub mod backend;
pub mod crypto;
pub mod keyring;
pub mod names;
pub mod paths;

mod error;
mod store;

pub use error::{Result, StoreError};
pub use names::{Algorithm, Digest, NameError, Reference, RepositoryName, Tag, UploadId};
pub use store::*;
