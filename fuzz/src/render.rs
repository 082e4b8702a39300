//! The inverse of the parsers, for round trips: a value rendered the way a client
//! sends it must parse back to the same value.

use http::Method;
use storage::RangeSpec;
use valv::http::routes::Route;

/// The method and canonical path of a route.
pub fn route(r: &Route) -> (Method, String) {
    use Route::*;
    let m = |head: bool| if head { Method::HEAD } else { Method::GET };
    match r {
        Healthz => (Method::GET, "/healthz".into()),
        Readyz => (Method::GET, "/readyz".into()),
        Metrics => (Method::GET, "/metrics".into()),
        AdminEncryption => (Method::GET, "/admin/v1/encryption".into()),
        AdminRotateKey => (Method::POST, "/admin/v1/encryption/rotate-key".into()),
        AdminSweep => (Method::POST, "/admin/v1/storage/sweep".into()),
        AdminSealLinks => (Method::POST, "/admin/v1/storage/seal-links".into()),
        AuthToken { post } => (
            if *post { Method::POST } else { Method::GET },
            "/auth/token".into(),
        ),
        ApiBase => (Method::GET, "/v2/".into()),
        Catalog => (Method::GET, "/v2/_catalog".into()),
        ListTags { repo } => (Method::GET, format!("/v2/{repo}/tags/list")),
        GetManifest {
            repo,
            reference,
            head,
        } => (m(*head), format!("/v2/{repo}/manifests/{reference}")),
        PutManifest { repo, reference } => {
            (Method::PUT, format!("/v2/{repo}/manifests/{reference}"))
        }
        DeleteManifest { repo, reference } => {
            (Method::DELETE, format!("/v2/{repo}/manifests/{reference}"))
        }
        GetBlob { repo, digest, head } => (m(*head), format!("/v2/{repo}/blobs/{digest}")),
        DeleteBlob { repo, digest } => (Method::DELETE, format!("/v2/{repo}/blobs/{digest}")),
        StartUpload { repo } => (Method::POST, format!("/v2/{repo}/blobs/uploads/")),
        UploadStatus { repo, id } => (Method::GET, format!("/v2/{repo}/blobs/uploads/{id}")),
        PatchUpload { repo, id } => (Method::PATCH, format!("/v2/{repo}/blobs/uploads/{id}")),
        FinishUpload { repo, id } => (Method::PUT, format!("/v2/{repo}/blobs/uploads/{id}")),
        CancelUpload { repo, id } => (Method::DELETE, format!("/v2/{repo}/blobs/uploads/{id}")),
        Referrers { repo, digest } => (Method::GET, format!("/v2/{repo}/referrers/{digest}")),
    }
}

/// The repository a route names, if any.
pub fn repository(r: &Route) -> Option<&storage::RepositoryName> {
    use Route::*;
    match r {
        ListTags { repo }
        | GetManifest { repo, .. }
        | PutManifest { repo, .. }
        | DeleteManifest { repo, .. }
        | GetBlob { repo, .. }
        | DeleteBlob { repo, .. }
        | StartUpload { repo }
        | UploadStatus { repo, .. }
        | PatchUpload { repo, .. }
        | FinishUpload { repo, .. }
        | CancelUpload { repo, .. }
        | Referrers { repo, .. } => Some(repo),
        _ => None,
    }
}

/// A `Range` header for a parsed range.
pub fn range(r: &RangeSpec) -> String {
    match r {
        RangeSpec::From(a) => format!("bytes={a}-"),
        RangeSpec::FromTo(a, b) => format!("bytes={a}-{b}"),
        RangeSpec::Suffix(n) => format!("bytes=-{n}"),
    }
}

/// Every byte of `s` as `%XX`.
pub fn percent_encode_all(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}
