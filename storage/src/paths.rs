//! The one mapping from what is stored to where (STYLE habit 2).
//!
//! Every object path valv reads or writes comes from [`ObjectPath::to_path`]. The
//! layout, relative to the store's root:
//!
//! | object | path | written |
//! |---|---|---|
//! | keyring, one object per version | `keyring/<seq:020>` | create-only; the highest sequence number is current |
//! | rotation lease (who may rewrap the registry keys now) | `leases/rotation` | create-only; deleted by its holder, or by anyone once expired |
//! | blob envelope (the commit point) | `blobs/<alg>/<hex[0..2]>/<hex>/envelope` | create-only |
//! | blob data (sealed segments) | `data/<blob-id>/<part>` with `<part>` = `<seq:06>-<random>` | by one upload request, never rewritten |
//! | upload session state, one object per version | `uploads/<upload-id>/<seq:020>` | create-only; the highest sequence number is current |
//! | repository blob link | `repositories/<repo>/_layers/<alg>/<hex>` | overwrite |
//! | repository manifest link (+ media type) | `repositories/<repo>/_manifests/<alg>/<hex>` | overwrite |
//! | tag | `repositories/<repo>/_tags/<tag>` | overwrite |
//! | referrers index entry | `repositories/<repo>/_referrers/<alg>/<subject hex>/<alg>-<referrer hex>` | overwrite |
//! | catalog entry | `catalog/<repo>/_repository` | overwrite |
//!
//! The four repository objects (blob link, manifest link, tag, referrers entry) are
//! sealed links (FORMAT.md §11): their seal binds them to exactly this path.
//!
//! Why this shape:
//! - Objects that must change atomically are never updated in place: a new version
//!   is created with a create-only put (`PutMode::Create`), which every backend
//!   supports (the local filesystem does not support `PutMode::Update`). A create that
//!   fails with AlreadyExists means another writer won the race.
//! - Nothing large is ever renamed or copied: an envelope points at the data objects
//!   an upload wrote, so committing a 50 GiB blob writes one small object.
//! - Repository path components match `[a-z0-9]+(…)*`, so a component never begins
//!   with `_`; `_layers`, `_manifests`, `_tags`, `_referrers` and `_repository` can
//!   therefore never collide with a nested repository name.
//! - Tags and digests are validated types, so no path component is ever `.` or `..`.

use object_store::path::Path;

use crate::names::{Digest, RepositoryName, Tag, UploadId};

/// Everything valv stores, by what it is.
#[derive(Debug, Clone, Copy)]
pub enum ObjectPath<'a> {
    /// All keyring versions.
    KeyringDir,
    KeyringVersion(u64),
    /// The lease a node holds while it rotates.
    RotationLease,
    Envelope(&'a Digest),
    /// All data objects of one blob (or of one upload session, before commit).
    DataDir {
        blob: &'a str,
    },
    /// One data object; `part` is the unique part name.
    DataPart {
        blob: &'a str,
        part: &'a str,
    },
    /// All state versions of one upload session.
    UploadDir(&'a UploadId),
    UploadState {
        id: &'a UploadId,
        seq: u64,
    },
    /// Every repository's links (below it: [`LinkKind`]s).
    RepositoriesDir,
    RepositoryDir(&'a RepositoryName),
    LayerLink {
        repo: &'a RepositoryName,
        digest: &'a Digest,
    },
    ManifestLink {
        repo: &'a RepositoryName,
        digest: &'a Digest,
    },
    TagsDir(&'a RepositoryName),
    Tag {
        repo: &'a RepositoryName,
        tag: &'a Tag,
    },
    ReferrersDir {
        repo: &'a RepositoryName,
        subject: &'a Digest,
    },
    Referrer {
        repo: &'a RepositoryName,
        subject: &'a Digest,
        referrer: &'a Digest,
    },
    CatalogDir,
    CatalogEntry(&'a RepositoryName),
}

/// Name of the object that marks a repository in the catalog.
pub const CATALOG_MARKER: &str = "_repository";

impl ObjectPath<'_> {
    pub fn to_path(&self) -> Path {
        Path::from(self.render())
    }

    fn render(self) -> String {
        match self {
            ObjectPath::KeyringDir => "keyring".to_owned(),
            ObjectPath::KeyringVersion(seq) => format!("keyring/{seq:020}"),
            ObjectPath::RotationLease => "leases/rotation".to_owned(),
            ObjectPath::Envelope(d) => {
                format!(
                    "blobs/{}/{}/{}/envelope",
                    d.algorithm().as_str(),
                    &d.hex()[..2],
                    d.hex()
                )
            }
            ObjectPath::DataDir { blob } => format!("data/{blob}"),
            ObjectPath::DataPart { blob, part } => format!("data/{blob}/{part}"),
            ObjectPath::UploadDir(id) => format!("uploads/{id}"),
            ObjectPath::UploadState { id, seq } => format!("uploads/{id}/{seq:020}"),
            ObjectPath::RepositoriesDir => "repositories".to_owned(),
            ObjectPath::RepositoryDir(repo) => format!("repositories/{repo}"),
            ObjectPath::LayerLink { repo, digest } => {
                format!(
                    "repositories/{repo}/_layers/{}/{}",
                    digest.algorithm().as_str(),
                    digest.hex()
                )
            }
            ObjectPath::ManifestLink { repo, digest } => {
                format!(
                    "repositories/{repo}/_manifests/{}/{}",
                    digest.algorithm().as_str(),
                    digest.hex()
                )
            }
            ObjectPath::TagsDir(repo) => format!("repositories/{repo}/_tags"),
            ObjectPath::Tag { repo, tag } => format!("repositories/{repo}/_tags/{tag}"),
            ObjectPath::ReferrersDir { repo, subject } => {
                format!(
                    "repositories/{repo}/_referrers/{}/{}",
                    subject.algorithm().as_str(),
                    subject.hex()
                )
            }
            ObjectPath::Referrer {
                repo,
                subject,
                referrer,
            } => format!(
                "repositories/{repo}/_referrers/{}/{}/{}-{}",
                subject.algorithm().as_str(),
                subject.hex(),
                referrer.algorithm().as_str(),
                referrer.hex()
            ),
            ObjectPath::CatalogDir => "catalog".to_owned(),
            ObjectPath::CatalogEntry(repo) => format!("catalog/{repo}/{CATALOG_MARKER}"),
        }
    }
}

/// The kinds of sealed link below `repositories/` (FORMAT.md §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    Layer,
    Manifest,
    Tag,
    Referrer,
}

impl LinkKind {
    /// The kind of link stored at `path`, by its first `_` component (repository
    /// components never begin with `_`); `None` for anything else.
    pub fn of(path: &Path) -> Option<LinkKind> {
        let mut parts = path.parts();
        if parts.next()?.as_ref() != "repositories" {
            return None;
        }
        match parts.find(|p| p.as_ref().starts_with('_'))?.as_ref() {
            "_layers" => Some(LinkKind::Layer),
            "_manifests" => Some(LinkKind::Manifest),
            "_tags" => Some(LinkKind::Tag),
            "_referrers" => Some(LinkKind::Referrer),
            _ => None,
        }
    }
}

/// The name of a data object in the form the store writes it, parsed from an envelope:
/// `data/<blob-id>/<part>`, the blob id 32 lowercase hex digits, the part 6 digits,
/// optionally followed by `-` and 16 lowercase hex digits. An envelope naming anything
/// else (another kind of object, a path outside `data/`) is not one the store wrote.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DataObject {
    blob: String,
    part: String,
}

impl DataObject {
    /// `None` when `name` is not of the form above.
    pub fn parse(name: &str) -> Option<DataObject> {
        let rest = name.strip_prefix("data/")?;
        let (blob, part) = rest.split_once('/')?;
        let hex = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        let (seq, random) = match part.split_once('-') {
            Some((seq, random)) => (seq, Some(random)),
            None => (part, None),
        };
        let seq_ok = seq.len() == 6 && seq.bytes().all(|b| b.is_ascii_digit());
        let ok = hex(blob, 32) && seq_ok && random.is_none_or(|r| hex(r, 16));
        ok.then(|| DataObject {
            blob: blob.to_owned(),
            part: part.to_owned(),
        })
    }

    /// The blob id (the data directory) the object lies in.
    pub fn blob(&self) -> &str {
        &self.blob
    }

    pub fn to_path(&self) -> Path {
        ObjectPath::DataPart {
            blob: &self.blob,
            part: &self.part,
        }
        .to_path()
    }
}

/// The sequence number at the end of a versioned object's path (`…/<seq:020>`).
pub fn sequence_of(path: &Path) -> Option<u64> {
    let last = path.filename()?;
    if last.len() == 20 && last.bytes().all(|b| b.is_ascii_digit()) {
        last.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_data_objects_the_store_writes_parse() {
        let blob = "00112233445566778899aabbccddeeff";
        for good in [
            format!("data/{blob}/000000"),
            format!("data/{blob}/000012-0011223344556677"),
        ] {
            let parsed = DataObject::parse(&good).unwrap_or_else(|| panic!("{good}"));
            assert_eq!(parsed.to_path().as_ref(), good);
            assert_eq!(parsed.blob(), blob);
        }
        for bad in [
            "test-vectors/empty/data-0".to_owned(),
            format!("blobs/{blob}/000000"),
            format!("data/{blob}"),
            format!("data/{blob}/00000"),
            format!("data/{blob}/000000-001122334455667"),
            format!("data/{blob}/000000-0011223344556677/x"),
            format!("data/{}/000000", blob.to_uppercase()),
            "data/../keyring/000000".to_owned(),
            format!("data/{blob}/000000-"),
            String::new(),
        ] {
            assert_eq!(DataObject::parse(&bad), None, "{bad}");
        }
    }

    #[test]
    fn layout_is_stable() {
        let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .unwrap();
        let repo: RepositoryName = "library/ubuntu".parse().unwrap();
        let tag: Tag = "v1.0".parse().unwrap();
        assert_eq!(
            ObjectPath::Envelope(&d).to_path().as_ref(),
            "blobs/sha256/e3/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/envelope"
        );
        assert_eq!(
            ObjectPath::Tag {
                repo: &repo,
                tag: &tag
            }
            .to_path()
            .as_ref(),
            "repositories/library/ubuntu/_tags/v1.0"
        );
        assert_eq!(
            ObjectPath::KeyringVersion(7).to_path().as_ref(),
            "keyring/00000000000000000007"
        );
        assert_eq!(
            sequence_of(&ObjectPath::KeyringVersion(7).to_path()),
            Some(7)
        );
        assert_eq!(
            ObjectPath::CatalogEntry(&repo).to_path().as_ref(),
            "catalog/library/ubuntu/_repository"
        );
    }
}
