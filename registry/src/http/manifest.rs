//! Manifest parsing by media type: what a pushed manifest references (blobs, child
//! manifests, subject) and what the referrers API needs to know about it.
//!
//! valv stores the exact bytes it was given; parsing only validates and extracts. The
//! structs below therefore name only the fields valv reads and ignore the others
//! (image-spec allows extension fields), but a body that lacks a required field or has
//! one of the wrong type for its media type is refused.

use std::collections::BTreeMap;

use serde::Deserialize;
use storage::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The four manifest schemas valv accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    OciManifest,
    OciIndex,
    DockerManifest,
    DockerManifestList,
}

impl Kind {
    pub fn from_media_type(media_type: &str) -> Option<Kind> {
        match media_type {
            OCI_MANIFEST => Some(Kind::OciManifest),
            OCI_INDEX => Some(Kind::OciIndex),
            DOCKER_MANIFEST => Some(Kind::DockerManifest),
            DOCKER_MANIFEST_LIST => Some(Kind::DockerManifestList),
            _ => None,
        }
    }
    pub fn media_type(self) -> &'static str {
        match self {
            Kind::OciManifest => OCI_MANIFEST,
            Kind::OciIndex => OCI_INDEX,
            Kind::DockerManifest => DOCKER_MANIFEST,
            Kind::DockerManifestList => DOCKER_MANIFEST_LIST,
        }
    }
    fn is_index(self) -> bool {
        matches!(self, Kind::OciIndex | Kind::DockerManifestList)
    }
}

/// What valv needs from a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub kind: Kind,
    /// Blobs that must already be in the repository: config and layers (minus foreign
    /// layers, which live at their `urls`).
    pub blobs: Vec<Digest>,
    /// Manifests an index lists, which must already be in the repository.
    pub manifests: Vec<Digest>,
    pub subject: Option<Digest>,
    /// `artifactType`, else (image manifests only) the config's media type.
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Why a manifest was refused; the message is safe to show the client (it quotes
/// the parser's complaint, never the body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("the manifest has no media type: send Content-Type or a mediaType field")]
    NoMediaType,
    #[error("Content-Type {header:?} does not match the manifest's mediaType {body:?}")]
    MediaTypeMismatch { header: String, body: String },
    #[error("manifest is not valid JSON for {media_type}: {reason}")]
    Schema {
        media_type: &'static str,
        reason: String,
    },
    #[error("unsupported schemaVersion {0}: expected 2")]
    SchemaVersion(u64),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: Digest,
    // Required by the schema; valv does not use it beyond that.
    #[allow(dead_code)]
    size: u64,
    #[serde(default)]
    urls: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImageManifest {
    schema_version: u64,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    artifact_type: Option<String>,
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    subject: Option<Descriptor>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u64,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    artifact_type: Option<String>,
    manifests: Vec<Descriptor>,
    #[serde(default)]
    subject: Option<Descriptor>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

/// Only the `mediaType` field, to pick a schema when the client sent no Content-Type.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MediaTypeOnly {
    #[serde(default)]
    media_type: Option<String>,
}

/// The media type from a `Content-Type` header: parameters dropped, lowercased.
/// `None` for a missing or generic type, which then defers to the body's `mediaType`.
pub fn content_type_media_type(header: Option<&str>) -> Option<String> {
    let mt = header?.split(';').next()?.trim().to_ascii_lowercase();
    match mt.as_str() {
        "" | "application/json" | "application/octet-stream" => None,
        _ => Some(mt),
    }
}

/// Parses `bytes` as the manifest type named by `content_type` (or, absent, by the
/// body's own `mediaType`).
///
/// Fails when the media type is unknown, the JSON is malformed or does not fit the
/// schema, or the body's `mediaType` contradicts the Content-Type.
pub fn parse(content_type: Option<&str>, bytes: &[u8]) -> Result<Parsed, ManifestError> {
    let media_type = match content_type {
        Some(mt) => mt.to_owned(),
        None => {
            let only: MediaTypeOnly =
                serde_json::from_slice(bytes).map_err(|e| ManifestError::Schema {
                    media_type: "a manifest",
                    reason: e.to_string(),
                })?;
            only.media_type.ok_or(ManifestError::NoMediaType)?
        }
    };
    let kind = Kind::from_media_type(&media_type)
        .ok_or(ManifestError::UnsupportedMediaType(media_type))?;
    let schema_err = |e: serde_json::Error| ManifestError::Schema {
        media_type: kind.media_type(),
        reason: e.to_string(),
    };
    let check_body_type = |body: Option<String>| match body {
        Some(b) if b != kind.media_type() => Err(ManifestError::MediaTypeMismatch {
            header: kind.media_type().to_owned(),
            body: b,
        }),
        _ => Ok(()),
    };
    let check_version = |v: u64| {
        if v == 2 {
            Ok(())
        } else {
            Err(ManifestError::SchemaVersion(v))
        }
    };

    if kind.is_index() {
        let index: Index = serde_json::from_slice(bytes).map_err(schema_err)?;
        check_version(index.schema_version)?;
        check_body_type(index.media_type)?;
        Ok(Parsed {
            kind,
            blobs: Vec::new(),
            manifests: index.manifests.into_iter().map(|d| d.digest).collect(),
            subject: index.subject.map(|d| d.digest),
            artifact_type: index.artifact_type,
            annotations: index.annotations,
        })
    } else {
        let m: ImageManifest = serde_json::from_slice(bytes).map_err(schema_err)?;
        check_version(m.schema_version)?;
        check_body_type(m.media_type)?;
        let mut blobs = vec![m.config.digest];
        // Foreign (non-distributable) layers are fetched from their `urls`, so a
        // registry never holds them: checking for them would refuse valid images.
        blobs.extend(
            m.layers
                .into_iter()
                .filter(|l| l.urls.as_ref().is_none_or(|u| u.is_empty()))
                .map(|l| l.digest),
        );
        Ok(Parsed {
            kind,
            blobs,
            manifests: Vec::new(),
            subject: m.subject.map(|d| d.digest),
            artifact_type: m.artifact_type.or(Some(m.config.media_type)),
            annotations: m.annotations,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    fn oci_manifest() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":3}},
                      {{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip","digest":"{}","size":4,"urls":["https://example.invalid/l"]}}],
            "annotations":{{"a":"b"}},
            "x-extension":true}}"#,
            d(1),
            d(2),
            d(3)
        )
    }

    #[test]
    fn oci_image_manifest() {
        let p = parse(Some(OCI_MANIFEST), oci_manifest().as_bytes()).expect("parse");
        assert_eq!(p.kind, Kind::OciManifest);
        // The foreign layer is skipped.
        assert_eq!(
            p.blobs,
            vec![d(1).parse().expect("d"), d(2).parse().expect("d")]
        );
        assert!(p.manifests.is_empty());
        assert_eq!(
            p.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        assert_eq!(
            p.annotations.and_then(|a| a.get("a").cloned()).as_deref(),
            Some("b")
        );
        assert_eq!(p.subject, None);
    }

    #[test]
    fn artifact_with_subject() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/vnd.example.sig",
            "config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{}","size":2}},
            "layers":[],
            "subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":9}}}}"#,
            d(1),
            d(9)
        );
        let p = parse(Some(OCI_MANIFEST), body.as_bytes()).expect("parse");
        assert_eq!(
            p.artifact_type.as_deref(),
            Some("application/vnd.example.sig")
        );
        assert_eq!(p.subject, Some(d(9).parse().expect("d")));
    }

    #[test]
    fn indexes_list_child_manifests() {
        for (mt, child) in [
            (OCI_INDEX, OCI_MANIFEST),
            (DOCKER_MANIFEST_LIST, DOCKER_MANIFEST),
        ] {
            let body = format!(
                r#"{{"schemaVersion":2,"mediaType":"{mt}","manifests":[
                {{"mediaType":"{child}","digest":"{}","size":5,"platform":{{"architecture":"amd64","os":"linux"}}}},
                {{"mediaType":"{child}","digest":"{}","size":6}}]}}"#,
                d(4),
                d(5)
            );
            let p = parse(Some(mt), body.as_bytes()).expect("parse");
            assert!(p.blobs.is_empty());
            assert_eq!(p.manifests.len(), 2);
            assert_eq!(p.artifact_type, None);
        }
    }

    #[test]
    fn docker_manifest_with_foreign_layer() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
            "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{}","size":7}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{}","size":8,"urls":["https://example.invalid/x"]}},
                      {{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{}","size":8}}]}}"#,
            d(6),
            d(7),
            d(8)
        );
        let p = parse(Some(DOCKER_MANIFEST), body.as_bytes()).expect("parse");
        assert_eq!(
            p.blobs,
            vec![d(6).parse().expect("d"), d(8).parse().expect("d")]
        );
    }

    #[test]
    fn media_type_from_body_when_no_content_type() {
        let p = parse(None, oci_manifest().as_bytes()).expect("parse");
        assert_eq!(p.kind, Kind::OciManifest);
        assert_eq!(
            parse(None, br#"{"schemaVersion":2}"#),
            Err(ManifestError::NoMediaType)
        );
    }

    #[test]
    fn rejections() {
        let m = oci_manifest();
        assert!(matches!(
            parse(Some(OCI_MANIFEST), b"{not json"),
            Err(ManifestError::Schema { .. })
        ));
        assert!(matches!(
            parse(Some(OCI_MANIFEST), b""),
            Err(ManifestError::Schema { .. })
        ));
        assert!(matches!(
            parse(Some(OCI_MANIFEST), b"[]"),
            Err(ManifestError::Schema { .. })
        ));
        // An image manifest sent as an index.
        assert!(matches!(
            parse(Some(OCI_INDEX), m.as_bytes()),
            Err(ManifestError::Schema { .. })
        ));
        // Content-Type and mediaType disagree.
        assert!(matches!(
            parse(Some(DOCKER_MANIFEST), m.as_bytes()),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        assert!(matches!(
            parse(
                Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
                m.as_bytes()
            ),
            Err(ManifestError::UnsupportedMediaType(_))
        ));
        let v1 = m.replace("\"schemaVersion\":2", "\"schemaVersion\":1");
        assert_eq!(
            parse(Some(OCI_MANIFEST), v1.as_bytes()),
            Err(ManifestError::SchemaVersion(1))
        );
        let bad_digest = m.replace(&d(2), "sha256:nothex");
        assert!(matches!(
            parse(Some(OCI_MANIFEST), bad_digest.as_bytes()),
            Err(ManifestError::Schema { .. })
        ));
        let no_config =
            format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","layers":[]}}"#);
        assert!(matches!(
            parse(Some(OCI_MANIFEST), no_config.as_bytes()),
            Err(ManifestError::Schema { .. })
        ));
    }

    #[test]
    fn content_type_header() {
        assert_eq!(
            content_type_media_type(Some(
                "application/vnd.oci.image.manifest.v1+json; charset=utf-8"
            ))
            .as_deref(),
            Some(OCI_MANIFEST)
        );
        assert_eq!(content_type_media_type(Some("application/json")), None);
        assert_eq!(content_type_media_type(None), None);
    }
}
