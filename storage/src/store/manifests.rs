//! Manifests, tags, the referrers index and the catalog.
//!
//! A manifest's bytes are stored as an encrypted blob (same format, same content
//! address); the repository's manifest link records its media type and subject.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::objects;
use super::{Descriptor, Manifest, ManifestInfo, NewManifest, Page, Store};
use crate::names::{Digest, Reference, RepositoryName, Tag};
use crate::paths::{ObjectPath, CATALOG_MARKER};
use crate::{Result, StoreError};

/// A repository's manifest link.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ManifestLink {
    media_type: String,
    size: u64,
    subject: Option<Digest>,
}

impl super::links::LinkTarget for ManifestLink {}

/// A tag: which manifest it points at.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TagLink {
    digest: Digest,
}

impl super::links::LinkTarget for TagLink {}

/// Lexical pagination shared by tags and the catalog: items after `last`
/// (exclusive), at most `n`.
fn paginate<T: Ord + Clone>(mut all: Vec<T>, n: Option<usize>, last: Option<&T>) -> Page<T> {
    all.sort();
    all.dedup();
    let start = match last {
        Some(last) => all.partition_point(|x| x <= last),
        None => 0,
    };
    let rest = &all[start..];
    match n {
        Some(n) if n < rest.len() => Page {
            items: rest[..n].to_vec(),
            more: n > 0,
        },
        _ => Page {
            items: rest.to_vec(),
            more: false,
        },
    }
}

impl Store {
    /// Stores a manifest (encrypted, exact bytes), links it into `repo`, records it in
    /// the referrers index of its subject, and points `tag` at it if given.
    /// Fails with `DigestMismatch` when `manifest.digest` is not the bytes' digest.
    pub async fn put_manifest(
        &self,
        repo: &RepositoryName,
        manifest: NewManifest,
        tag: Option<&Tag>,
    ) -> Result<ManifestInfo> {
        let result = self.write_manifest(repo, manifest, tag).await;
        // Also after a failure: some of the links may have been written.
        self.manifest_cache().forget_references();
        result
    }

    async fn write_manifest(
        &self,
        repo: &RepositoryName,
        manifest: NewManifest,
        tag: Option<&Tag>,
    ) -> Result<ManifestInfo> {
        let digest = manifest.digest.clone();
        if Digest::compute(digest.algorithm(), &manifest.bytes) != digest {
            return Err(StoreError::DigestMismatch);
        }
        let size = manifest.bytes.len() as u64;
        // Content first, then the link, then the index entries: a crash between steps
        // leaves unlinked content (garbage), never a link to missing content.
        self.put_small_blob(&digest, manifest.bytes.clone()).await?;
        let link = ManifestLink {
            media_type: manifest.media_type.clone(),
            size,
            subject: manifest.subject.clone(),
        };
        self.put_link(
            &ObjectPath::ManifestLink {
                repo,
                digest: &digest,
            }
            .to_path(),
            &link,
        )
        .await?;
        if let Some(subject) = &manifest.subject {
            let descriptor = Descriptor {
                media_type: manifest.media_type.clone(),
                digest: digest.clone(),
                size,
                artifact_type: manifest.artifact_type.clone(),
                annotations: manifest.annotations.clone(),
            };
            let path = ObjectPath::Referrer {
                repo,
                subject,
                referrer: &digest,
            }
            .to_path();
            self.put_link(&path, &descriptor).await?;
        }
        if let Some(tag) = tag {
            self.put_link(
                &ObjectPath::Tag { repo, tag }.to_path(),
                &TagLink {
                    digest: digest.clone(),
                },
            )
            .await?;
        }
        self.mark_repository(repo).await?;
        Ok(ManifestInfo {
            digest,
            media_type: manifest.media_type,
            size,
        })
    }

    /// [`Store::resolve`] through the reference cache (reads only).
    async fn resolve_cached(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<(Digest, ManifestLink)> {
        let key = format!("{repo}@{reference}");
        if let Some(hit) = self.manifest_cache().reference(&key) {
            return Ok(hit);
        }
        let (digest, link) = self.resolve(repo, reference).await?;
        self.manifest_cache().put_reference(key, &digest, &link);
        Ok((digest, link))
    }

    async fn resolve(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<(Digest, ManifestLink)> {
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(tag) => {
                let path = ObjectPath::Tag { repo, tag }.to_path();
                let link: TagLink = self
                    .get_link(&path)
                    .await?
                    .ok_or(StoreError::ManifestUnknown)?;
                link.digest
            }
        };
        let path = ObjectPath::ManifestLink {
            repo,
            digest: &digest,
        }
        .to_path();
        let link: ManifestLink = self
            .get_link(&path)
            .await?
            .ok_or(StoreError::ManifestUnknown)?;
        Ok((digest, link))
    }

    /// Fails with `ManifestUnknown` (unknown tag or digest in `repo`).
    pub async fn stat_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<ManifestInfo> {
        let (digest, link) = self.resolve_cached(repo, reference).await?;
        Ok(ManifestInfo {
            digest,
            media_type: link.media_type,
            size: link.size,
        })
    }

    /// Fails with `ManifestUnknown`, or `Integrity` if the stored bytes do not verify.
    pub async fn get_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<Manifest> {
        let (digest, link) = self.resolve_cached(repo, reference).await?;
        // Nothing is served from memory while access is revoked.
        self.keyring()?;
        if let Some(bytes) = self.manifest_cache().content(&digest) {
            if bytes.len() as u64 == link.size {
                return Ok(Manifest {
                    info: ManifestInfo {
                        digest,
                        media_type: link.media_type,
                        size: link.size,
                    },
                    bytes,
                });
            }
        }
        let envelope = match self.load_envelope(&digest).await {
            Ok(e) => e,
            // A link without content means the content was removed underneath it.
            Err(StoreError::BlobUnknown) => return Err(StoreError::Integrity),
            Err(e) => return Err(e),
        };
        if envelope.size != link.size {
            return Err(StoreError::Integrity);
        }
        let mut stream = self.read_envelope(&envelope, 0..envelope.size)?;
        let mut bytes = BytesMut::with_capacity(usize::try_from(envelope.size).unwrap_or(0));
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        let bytes: Bytes = bytes.freeze();
        // The envelope binds the digest; checking the bytes again costs little for a
        // manifest and makes the guarantee independent of the format layer.
        if Digest::compute(digest.algorithm(), &bytes) != digest {
            return Err(StoreError::Integrity);
        }
        self.manifest_cache().put_content(&digest, &bytes);
        Ok(Manifest {
            info: ManifestInfo {
                digest,
                media_type: link.media_type,
                size: link.size,
            },
            bytes,
        })
    }

    /// Deletes the manifest from `repo`: its revision link, every tag pointing at it,
    /// and its referrers-index entry. Fails with `ManifestUnknown`.
    pub async fn delete_manifest(&self, repo: &RepositoryName, digest: &Digest) -> Result<()> {
        let result = self.remove_manifest(repo, digest).await;
        self.manifest_cache().forget_references();
        result
    }

    async fn remove_manifest(&self, repo: &RepositoryName, digest: &Digest) -> Result<()> {
        let (_, link) = self
            .resolve(repo, &Reference::Digest(digest.clone()))
            .await?;
        for path in objects::list(self.objects(), &ObjectPath::TagsDir(repo).to_path()).await? {
            // A tag that does not verify is not this manifest's: left alone.
            match self.get_link::<TagLink>(&path).await {
                Ok(Some(tag)) if &tag.digest == digest => {
                    objects::delete(self.objects(), &path).await?;
                }
                Ok(_) | Err(StoreError::Integrity | StoreError::Corrupt { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(subject) = &link.subject {
            objects::delete(
                self.objects(),
                &ObjectPath::Referrer {
                    repo,
                    subject,
                    referrer: digest,
                }
                .to_path(),
            )
            .await?;
        }
        objects::delete(
            self.objects(),
            &ObjectPath::ManifestLink { repo, digest }.to_path(),
        )
        .await
    }

    /// Fails with `ManifestUnknown` when the tag does not exist.
    pub async fn delete_tag(&self, repo: &RepositoryName, tag: &Tag) -> Result<()> {
        let path = ObjectPath::Tag { repo, tag }.to_path();
        if !objects::exists(self.objects(), &path).await? {
            return Err(StoreError::ManifestUnknown);
        }
        let result = objects::delete(self.objects(), &path).await;
        self.manifest_cache().forget_references();
        result
    }

    /// Tags in lexical order, after `last` (exclusive), at most `n`.
    /// Fails with `NameUnknown` when the repository does not exist.
    pub async fn list_tags(
        &self,
        repo: &RepositoryName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page<Tag>> {
        if !self.repository_exists(repo).await? {
            return Err(StoreError::NameUnknown);
        }
        let dir = ObjectPath::TagsDir(repo).to_path();
        let tags: Vec<String> = objects::list(self.objects(), &dir)
            .await?
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect();
        let page = paginate(tags, n, last.map(str::to_owned).as_ref());
        let items = page
            .items
            .iter()
            .filter_map(|t| t.parse::<Tag>().ok())
            .collect();
        Ok(Page {
            items,
            more: page.more,
        })
    }

    /// Manifests in `repo` whose subject is `subject`, optionally only those of
    /// `artifact_type`. Empty (not an error) when there are none.
    pub async fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>> {
        let dir = ObjectPath::ReferrersDir { repo, subject }.to_path();
        let mut out = BTreeMap::new();
        for path in objects::list(self.objects(), &dir).await? {
            // An entry that does not verify is never listed (the log names it).
            let d = match self.get_link::<Descriptor>(&path).await {
                Ok(Some(d)) => d,
                Ok(None) => continue,
                Err(StoreError::Integrity | StoreError::Corrupt { .. }) => {
                    tracing::warn!(%path, "a referrers entry that does not verify; not listed");
                    continue;
                }
                Err(e) => return Err(e),
            };
            if artifact_type.is_none_or(|t| d.artifact_type.as_deref() == Some(t)) {
                out.insert(d.digest.clone(), d);
            }
        }
        Ok(out.into_values().collect())
    }

    /// Repositories in lexical order, after `last` (exclusive), at most `n`.
    pub async fn catalog(
        &self,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page<RepositoryName>> {
        let dir = ObjectPath::CatalogDir.to_path();
        let names: Vec<String> = objects::list(self.objects(), &dir)
            .await?
            .iter()
            .filter_map(|p| {
                let s = p
                    .as_ref()
                    .strip_prefix("catalog/")?
                    .strip_suffix(CATALOG_MARKER)?
                    .strip_suffix('/')?;
                Some(s.to_owned())
            })
            .collect();
        let page = paginate(names, n, last.map(str::to_owned).as_ref());
        let items = page
            .items
            .iter()
            .filter_map(|r| r.parse::<RepositoryName>().ok())
            .collect();
        Ok(Page {
            items,
            more: page.more,
        })
    }

    /// Whether `repo` holds anything (a blob link, a manifest or a tag ever written).
    pub async fn repository_exists(&self, repo: &RepositoryName) -> Result<bool> {
        objects::exists(self.objects(), &ObjectPath::CatalogEntry(repo).to_path()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination_is_lexical_and_exclusive() {
        let all: Vec<String> = ["b", "a", "c", "d"].iter().map(|s| s.to_string()).collect();
        let p = paginate(all.clone(), Some(2), None);
        assert_eq!(p.items, ["a", "b"]);
        assert!(p.more);
        let p = paginate(all.clone(), Some(2), Some(&"b".to_string()));
        assert_eq!(p.items, ["c", "d"]);
        assert!(!p.more);
        let p = paginate(all.clone(), Some(0), None);
        assert!(p.items.is_empty() && !p.more);
        let p = paginate(all, None, Some(&"bb".to_string()));
        assert_eq!(p.items, ["c", "d"]);
    }
}
