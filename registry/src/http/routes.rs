//! Method + path → [`Route`], with typed names (STYLE habit 3: routing as data).
//!
//! Repository names have any number of `/`-separated components, so a path is read
//! from the right: the segment before the last decides the resource (`blobs`,
//! `manifests`, `referrers`, `uploads`, `tags`), and everything left of it is the name.
//! No two resources share that segment, so the parse is unambiguous even for names
//! whose components are themselves `blobs` or `manifests`.

use http::Method;
use storage::{Digest, NameError, Reference, RepositoryName, UploadId};

/// A request the registry understands, with its names already parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /healthz`: the process is up.
    Healthz,
    /// `GET /readyz`: the registry can serve content.
    Readyz,
    /// `GET /metrics`: Prometheus metrics (see [`crate::http::metrics`]).
    Metrics,
    /// `GET /admin/v1/encryption`: the admin API's key report (see [`crate::http::handlers::admin`]).
    AdminEncryption,
    /// `POST /admin/v1/encryption/rotate-key`.
    AdminRotateKey,
    /// `POST /admin/v1/storage/sweep`: crash cleanup now (see [`storage::Store::sweep`]).
    AdminSweep,
    /// `POST /admin/v1/storage/seal-links`: seal the links of a store written before
    /// links were sealed (see [`storage::Store::seal_links`]).
    AdminSealLinks,
    /// `GET|POST /auth/token`: the built-in token endpoint (distribution token spec;
    /// POST is the OAuth2 form). Served only while the built-in issuer is on.
    AuthToken { post: bool },
    /// `GET /v2/`: API version check (end-1).
    ApiBase,
    /// `GET /v2/_catalog`.
    Catalog,
    /// `GET /v2/<name>/tags/list` (end-8).
    ListTags { repo: RepositoryName },
    /// `GET|HEAD /v2/<name>/manifests/<reference>` (end-3).
    GetManifest {
        repo: RepositoryName,
        reference: Reference,
        head: bool,
    },
    /// `PUT /v2/<name>/manifests/<reference>` (end-7).
    PutManifest {
        repo: RepositoryName,
        reference: Reference,
    },
    /// `DELETE /v2/<name>/manifests/<reference>` (end-9).
    DeleteManifest {
        repo: RepositoryName,
        reference: Reference,
    },
    /// `GET|HEAD /v2/<name>/blobs/<digest>` (end-2).
    GetBlob {
        repo: RepositoryName,
        digest: Digest,
        head: bool,
    },
    /// `DELETE /v2/<name>/blobs/<digest>` (end-10).
    DeleteBlob {
        repo: RepositoryName,
        digest: Digest,
    },
    /// `POST /v2/<name>/blobs/uploads/` (end-4a, end-4b, end-11).
    StartUpload { repo: RepositoryName },
    /// `GET /v2/<name>/blobs/uploads/<id>` (end-13).
    UploadStatus { repo: RepositoryName, id: UploadId },
    /// `PATCH /v2/<name>/blobs/uploads/<id>` (end-5).
    PatchUpload { repo: RepositoryName, id: UploadId },
    /// `PUT /v2/<name>/blobs/uploads/<id>?digest=` (end-6).
    FinishUpload { repo: RepositoryName, id: UploadId },
    /// `DELETE /v2/<name>/blobs/uploads/<id>`.
    CancelUpload { repo: RepositoryName, id: UploadId },
    /// `GET /v2/<name>/referrers/<digest>` (end-12).
    Referrers {
        repo: RepositoryName,
        digest: Digest,
    },
}

/// Why a request matched no route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// No resource at this path.
    NotFound,
    /// The resource exists but not with this method; `allow` is the `Allow` header.
    MethodNotAllowed { allow: &'static str },
    /// The path has the resource's shape but a name in it is invalid.
    Name(NameError),
    /// A manifest read or delete by a reference that is neither a valid tag nor a
    /// digest: no manifest can have it, so it is not found (404 `MANIFEST_UNKNOWN`, as
    /// distribution and the conformance suite expect). A push to it is still invalid.
    ManifestUnknown,
}

impl From<NameError> for RouteError {
    fn from(e: NameError) -> Self {
        RouteError::Name(e)
    }
}

/// The resource a path names, before the method is considered.
enum Resource<'a> {
    Healthz,
    Readyz,
    Metrics,
    AdminEncryption,
    AdminRotateKey,
    AdminSweep,
    AdminSealLinks,
    AuthToken,
    ApiBase,
    Catalog,
    Tags(&'a str),
    Manifest(&'a str, &'a str),
    Blob(&'a str, &'a str),
    Uploads(&'a str),
    Upload(&'a str, &'a str),
    Referrers(&'a str, &'a str),
}

impl Resource<'_> {
    /// The path with its names as placeholders: what a log line or a metric groups
    /// requests by (a raw path has as many values as there are repositories).
    fn template(&self) -> &'static str {
        match self {
            Resource::Healthz => "/healthz",
            Resource::Readyz => "/readyz",
            Resource::Metrics => "/metrics",
            Resource::AdminEncryption => "/admin/v1/encryption",
            Resource::AdminRotateKey => "/admin/v1/encryption/rotate-key",
            Resource::AdminSweep => "/admin/v1/storage/sweep",
            Resource::AdminSealLinks => "/admin/v1/storage/seal-links",
            Resource::AuthToken => "/auth/token",
            Resource::ApiBase => "/v2/",
            Resource::Catalog => "/v2/_catalog",
            Resource::Tags(_) => "/v2/{name}/tags/list",
            Resource::Manifest(..) => "/v2/{name}/manifests/{reference}",
            Resource::Blob(..) => "/v2/{name}/blobs/{digest}",
            Resource::Uploads(_) => "/v2/{name}/blobs/uploads/",
            Resource::Upload(..) => "/v2/{name}/blobs/uploads/{id}",
            Resource::Referrers(..) => "/v2/{name}/referrers/{digest}",
        }
    }

    fn allow(&self) -> &'static str {
        match self {
            Resource::Healthz | Resource::Readyz | Resource::Metrics | Resource::ApiBase => {
                "GET, HEAD"
            }
            Resource::Catalog
            | Resource::AdminEncryption
            | Resource::Tags(_)
            | Resource::Referrers(..) => "GET",
            Resource::AdminRotateKey | Resource::AdminSweep | Resource::AdminSealLinks => "POST",
            Resource::AuthToken => "GET, POST",
            Resource::Manifest(..) => "GET, HEAD, PUT, DELETE",
            Resource::Blob(..) => "GET, HEAD, DELETE",
            Resource::Uploads(_) => "POST",
            Resource::Upload(..) => "GET, PATCH, PUT, DELETE",
        }
    }
}

/// Routes a request. `path` is the raw (still percent-encoded) path of the URI.
///
/// The method is checked before names are parsed, so an unsupported method on a
/// known resource is a 405 whatever the names; then a malformed name is reported
/// precisely (NAME_INVALID, DIGEST_INVALID, …) rather than as a 404.
pub fn route(method: &Method, path: &str) -> Result<Route, RouteError> {
    let decoded = percent_decode(path).ok_or(RouteError::NotFound)?;
    let resource = resource(&decoded).ok_or(RouteError::NotFound)?;
    let not_allowed = || RouteError::MethodNotAllowed {
        allow: resource.allow(),
    };
    let is_head = *method == Method::HEAD;
    let get_or_head = *method == Method::GET || is_head;
    let repo = |s: &str| s.parse::<RepositoryName>();
    Ok(match &resource {
        Resource::Healthz if get_or_head => Route::Healthz,
        Resource::Readyz if get_or_head => Route::Readyz,
        Resource::Metrics if get_or_head => Route::Metrics,
        Resource::AdminEncryption if *method == Method::GET => Route::AdminEncryption,
        Resource::AdminRotateKey if *method == Method::POST => Route::AdminRotateKey,
        Resource::AdminSweep if *method == Method::POST => Route::AdminSweep,
        Resource::AdminSealLinks if *method == Method::POST => Route::AdminSealLinks,
        Resource::AuthToken if *method == Method::GET || *method == Method::POST => {
            Route::AuthToken {
                post: *method == Method::POST,
            }
        }
        Resource::ApiBase if get_or_head => Route::ApiBase,
        Resource::Catalog if *method == Method::GET => Route::Catalog,
        Resource::Tags(name) if *method == Method::GET => Route::ListTags { repo: repo(name)? },
        Resource::Manifest(name, reference) => {
            if !matches!(
                *method,
                Method::GET | Method::HEAD | Method::PUT | Method::DELETE
            ) {
                return Err(not_allowed());
            }
            let repo = repo(name)?;
            let reference = match reference.parse::<Reference>() {
                Ok(r) => r,
                // A digest-shaped reference that does not parse stays DIGEST_INVALID.
                Err(NameError::Tag(_)) if *method != Method::PUT => {
                    return Err(RouteError::ManifestUnknown)
                }
                Err(e) => return Err(e.into()),
            };
            match *method {
                Method::PUT => Route::PutManifest { repo, reference },
                Method::DELETE => Route::DeleteManifest { repo, reference },
                _ => Route::GetManifest {
                    repo,
                    reference,
                    head: is_head,
                },
            }
        }
        Resource::Blob(name, digest) if get_or_head || *method == Method::DELETE => {
            let (repo, digest) = (repo(name)?, digest.parse::<Digest>()?);
            if *method == Method::DELETE {
                Route::DeleteBlob { repo, digest }
            } else {
                Route::GetBlob {
                    repo,
                    digest,
                    head: is_head,
                }
            }
        }
        Resource::Uploads(name) if *method == Method::POST => {
            Route::StartUpload { repo: repo(name)? }
        }
        Resource::Upload(name, id) => {
            if !matches!(
                *method,
                Method::GET | Method::PATCH | Method::PUT | Method::DELETE
            ) {
                return Err(not_allowed());
            }
            let (repo, id) = (repo(name)?, id.parse::<UploadId>()?);
            match *method {
                Method::GET => Route::UploadStatus { repo, id },
                Method::PATCH => Route::PatchUpload { repo, id },
                Method::PUT => Route::FinishUpload { repo, id },
                _ => Route::CancelUpload { repo, id },
            }
        }
        Resource::Referrers(name, digest) if *method == Method::GET => Route::Referrers {
            repo: repo(name)?,
            digest: digest.parse()?,
        },
        _ => return Err(not_allowed()),
    })
}

/// The route template `path` (raw, as [`route`] takes it) falls under, whatever the
/// method and whether or not its names are valid; `None` for a path no route has.
pub fn template(path: &str) -> Option<&'static str> {
    let decoded = percent_decode(path)?;
    resource(&decoded).map(|r| r.template())
}

fn resource(path: &str) -> Option<Resource<'_>> {
    match path {
        "/healthz" => return Some(Resource::Healthz),
        "/readyz" => return Some(Resource::Readyz),
        "/metrics" => return Some(Resource::Metrics),
        "/admin/v1/encryption" => return Some(Resource::AdminEncryption),
        "/admin/v1/encryption/rotate-key" => return Some(Resource::AdminRotateKey),
        "/admin/v1/storage/sweep" => return Some(Resource::AdminSweep),
        "/admin/v1/storage/seal-links" => return Some(Resource::AdminSealLinks),
        "/auth/token" => return Some(Resource::AuthToken),
        "/v2" | "/v2/" => return Some(Resource::ApiBase),
        "/v2/_catalog" => return Some(Resource::Catalog),
        _ => {}
    }
    let rest = path.strip_prefix("/v2/")?;
    // Split off the last two segments: `<name>/<kind>/<last>`.
    let (head, last) = rest.rsplit_once('/')?;
    let (name, kind) = head.rsplit_once('/').unwrap_or(("", head));
    match (kind, last) {
        ("tags", "list") => Some(Resource::Tags(name)),
        ("manifests", r) => Some(Resource::Manifest(name, r)),
        ("referrers", d) => Some(Resource::Referrers(name, d)),
        // `/blobs/uploads` without the trailing slash: "uploads" is never a digest.
        ("blobs", "uploads") => Some(Resource::Uploads(name)),
        ("blobs", d) => Some(Resource::Blob(name, d)),
        ("uploads", id) => {
            let (name, blobs) = name.rsplit_once('/').unwrap_or(("", name));
            if blobs != "blobs" {
                return None;
            }
            if id.is_empty() {
                Some(Resource::Uploads(name))
            } else {
                Some(Resource::Upload(name, id))
            }
        }
        _ => None,
    }
}

/// Decodes `%XX` escapes in a path. Some clients escape the `:` of a digest. `+` stays
/// `+` (that rule is for query strings only). A `%` not followed by two hex digits is
/// kept literally. `None` when the result is not UTF-8.
pub fn percent_decode(path: &str) -> Option<std::borrow::Cow<'_, str>> {
    if !path.contains('%') {
        return Some(std::borrow::Cow::Borrowed(path));
    }
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |x: u8| (x as char).to_digit(16);
            if let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                // Two hex digits make at most 255.
                out.push(u8::try_from(h * 16 + l).unwrap_or(0));
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).ok().map(std::borrow::Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const U: &str = "9f1c1c9e-3c7e-4d6b-8a4e-2b6f1d0c5a11";

    #[test]
    fn templates_hide_names_and_need_no_valid_ones() {
        for (path, want) in [
            ("/v2/", Some("/v2/")),
            ("/v2", Some("/v2/")),
            ("/healthz", Some("/healthz")),
            ("/auth/token", Some("/auth/token")),
            (
                "/v2/a/b/c/manifests/latest",
                Some("/v2/{name}/manifests/{reference}"),
            ),
            (
                "/v2/team/app/blobs/sha256%3Aabc",
                Some("/v2/{name}/blobs/{digest}"),
            ),
            (
                "/v2/Not_Valid!/blobs/uploads/",
                Some("/v2/{name}/blobs/uploads/"),
            ),
            ("/v2/x/blobs/uploads", Some("/v2/{name}/blobs/uploads/")),
            (
                "/v2/x/blobs/uploads/some-id",
                Some("/v2/{name}/blobs/uploads/{id}"),
            ),
            ("/v2/x/tags/list", Some("/v2/{name}/tags/list")),
            (
                "/v2/x/referrers/sha256:0",
                Some("/v2/{name}/referrers/{digest}"),
            ),
            ("/v2/x/unknown/thing", None),
            ("/favicon.ico", None),
        ] {
            assert_eq!(template(path), want, "{path}");
        }
    }

    fn ok(method: Method, path: &str) -> Route {
        route(&method, path).unwrap_or_else(|e| panic!("{method} {path}: {e:?}"))
    }
    fn repo(s: &str) -> RepositoryName {
        s.parse().expect("repo")
    }
    fn digest() -> Digest {
        D.parse().expect("digest")
    }

    #[test]
    fn fixed_paths() {
        assert_eq!(ok(Method::GET, "/v2/"), Route::ApiBase);
        assert_eq!(ok(Method::HEAD, "/v2"), Route::ApiBase);
        assert_eq!(ok(Method::GET, "/v2/_catalog"), Route::Catalog);
        assert_eq!(ok(Method::GET, "/healthz"), Route::Healthz);
        assert_eq!(ok(Method::GET, "/readyz"), Route::Readyz);
        assert_eq!(
            ok(Method::GET, "/auth/token"),
            Route::AuthToken { post: false }
        );
        assert_eq!(
            ok(Method::POST, "/auth/token"),
            Route::AuthToken { post: true }
        );
        assert!(matches!(
            route(&Method::DELETE, "/auth/token"),
            Err(RouteError::MethodNotAllowed { .. })
        ));
    }

    #[test]
    fn multi_component_names() {
        assert_eq!(
            ok(Method::GET, "/v2/a/b/c/tags/list"),
            Route::ListTags {
                repo: repo("a/b/c")
            }
        );
        assert_eq!(
            ok(Method::GET, &format!("/v2/org/team/app/blobs/{D}")),
            Route::GetBlob {
                repo: repo("org/team/app"),
                digest: digest(),
                head: false
            }
        );
    }

    #[test]
    fn names_that_look_like_resources() {
        // A repository called "blobs/uploads" with a manifest, and one called
        // "manifests" with a blob: the right-hand segments decide.
        assert_eq!(
            ok(Method::GET, "/v2/x/blobs/uploads/manifests/latest"),
            Route::GetManifest {
                repo: repo("x/blobs/uploads"),
                reference: Reference::Tag("latest".parse().expect("tag")),
                head: false
            }
        );
        assert_eq!(
            ok(Method::HEAD, &format!("/v2/manifests/blobs/{D}")),
            Route::GetBlob {
                repo: repo("manifests"),
                digest: digest(),
                head: true
            }
        );
        assert_eq!(
            ok(Method::GET, "/v2/tags/tags/list"),
            Route::ListTags { repo: repo("tags") }
        );
    }

    #[test]
    fn manifests_by_tag_and_digest() {
        assert_eq!(
            ok(Method::PUT, &format!("/v2/r/manifests/{D}")),
            Route::PutManifest {
                repo: repo("r"),
                reference: Reference::Digest(digest())
            }
        );
        assert_eq!(
            ok(Method::DELETE, "/v2/r/manifests/v1.0"),
            Route::DeleteManifest {
                repo: repo("r"),
                reference: Reference::Tag("v1.0".parse().expect("tag"))
            }
        );
    }

    #[test]
    fn uploads() {
        assert_eq!(
            ok(Method::POST, "/v2/a/b/blobs/uploads/"),
            Route::StartUpload { repo: repo("a/b") }
        );
        assert_eq!(
            ok(Method::POST, "/v2/a/b/blobs/uploads"),
            Route::StartUpload { repo: repo("a/b") }
        );
        let id: UploadId = U.parse().expect("upload id");
        let p = format!("/v2/a/blobs/uploads/{U}");
        assert_eq!(
            ok(Method::GET, &p),
            Route::UploadStatus {
                repo: repo("a"),
                id: id.clone()
            }
        );
        assert_eq!(
            ok(Method::PATCH, &p),
            Route::PatchUpload {
                repo: repo("a"),
                id: id.clone()
            }
        );
        assert_eq!(
            ok(Method::PUT, &p),
            Route::FinishUpload {
                repo: repo("a"),
                id: id.clone()
            }
        );
        assert_eq!(
            ok(Method::DELETE, &p),
            Route::CancelUpload {
                repo: repo("a"),
                id
            }
        );
    }

    #[test]
    fn referrers() {
        assert_eq!(
            ok(Method::GET, &format!("/v2/a/referrers/{D}")),
            Route::Referrers {
                repo: repo("a"),
                digest: digest()
            }
        );
    }

    #[test]
    fn percent_encoded_digest() {
        let p = format!("/v2/a/blobs/{}", D.replace(':', "%3A"));
        assert!(matches!(ok(Method::GET, &p), Route::GetBlob { .. }));
        let p = format!("/v2/a/blobs/{}", D.replace(':', "%3a"));
        assert!(matches!(ok(Method::GET, &p), Route::GetBlob { .. }));
    }

    #[test]
    fn not_found() {
        for p in [
            "/",
            "/v1/",
            "/v2/a",
            "/v2/a/b",
            "/v2/a/unknown/x",
            "/v2/a/tags/other",
            "/v2/a/uploads/x",
            "/v2/_catalogue",
            "/v2/a/b/x/uploads/",
            "/healthz/",
            "/v2/a/%ff%fe/blobs/x",
        ] {
            assert_eq!(route(&Method::GET, p), Err(RouteError::NotFound), "{p}");
        }
    }

    #[test]
    fn method_not_allowed() {
        let cases = [
            (Method::POST, "/v2/".to_string(), "GET, HEAD"),
            (Method::DELETE, "/v2/_catalog".to_string(), "GET"),
            (Method::PUT, "/v2/a/tags/list".to_string(), "GET"),
            (
                Method::POST,
                "/v2/a/manifests/latest".to_string(),
                "GET, HEAD, PUT, DELETE",
            ),
            (Method::PUT, format!("/v2/a/blobs/{D}"), "GET, HEAD, DELETE"),
            (Method::GET, "/v2/a/blobs/uploads/".to_string(), "POST"),
            (
                Method::POST,
                format!("/v2/a/blobs/uploads/{U}"),
                "GET, PATCH, PUT, DELETE",
            ),
            (Method::DELETE, format!("/v2/a/referrers/{D}"), "GET"),
            // The method is judged before the name.
            (
                Method::PATCH,
                "/v2/UPPER/manifests/latest".to_string(),
                "GET, HEAD, PUT, DELETE",
            ),
        ];
        for (m, p, allow) in cases {
            assert_eq!(
                route(&m, &p),
                Err(RouteError::MethodNotAllowed { allow }),
                "{m} {p}"
            );
        }
    }

    #[test]
    fn invalid_names() {
        let long = "a".repeat(256);
        for name in ["UPPER", "a//b", "a/../b", "..", "a..b", "-a", "a/", &long] {
            let p = format!("/v2/{name}/tags/list");
            assert!(
                matches!(
                    route(&Method::GET, &p),
                    Err(RouteError::Name(NameError::Repository(_)))
                ),
                "{p}"
            );
        }
        // The empty name.
        assert!(matches!(
            route(&Method::GET, "/v2//tags/list"),
            Err(RouteError::Name(NameError::Repository(_)))
        ));
        assert!(matches!(
            route(&Method::GET, "/v2/tags/list"),
            Err(RouteError::Name(NameError::Repository(_)))
        ));
    }

    #[test]
    fn invalid_digests_and_references() {
        for d in [
            "sha256:abc",
            "sha256:",
            "nocolon0123",
            "SHA256:00",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
        ] {
            let p = format!("/v2/a/blobs/{d}");
            assert!(
                matches!(route(&Method::GET, &p), Err(RouteError::Name(_))),
                "{p}"
            );
        }
        assert!(matches!(
            route(&Method::GET, "/v2/a/manifests/sha256:zz"),
            Err(RouteError::Name(NameError::Digest(_)))
        ));
        assert!(matches!(
            route(&Method::PUT, "/v2/a/manifests/.bad-tag"),
            Err(RouteError::Name(NameError::Tag(_)))
        ));
        assert!(matches!(
            route(&Method::GET, "/v2/a/referrers/nope"),
            Err(RouteError::Name(_))
        ));
        assert!(matches!(
            route(&Method::GET, "/v2/a/blobs/uploads/not-a-uuid"),
            Err(RouteError::Name(NameError::UploadId))
        ));
    }

    #[test]
    fn a_reference_that_cannot_exist_is_not_found_except_for_a_push() {
        let long = "t".repeat(129);
        for reference in [".INVALID_MANIFEST_NAME", "-dash", long.as_str()] {
            let path = format!("/v2/a/manifests/{reference}");
            for method in [Method::GET, Method::HEAD, Method::DELETE] {
                assert_eq!(
                    route(&method, &path),
                    Err(RouteError::ManifestUnknown),
                    "{method} {path}"
                );
            }
            assert!(
                matches!(
                    route(&Method::PUT, &path),
                    Err(RouteError::Name(NameError::Tag(_)))
                ),
                "PUT {path}"
            );
        }
        // The repository name is checked first; a bad digest stays a bad digest.
        assert!(matches!(
            route(&Method::GET, "/v2/A/manifests/.bad"),
            Err(RouteError::Name(NameError::Repository(_)))
        ));
        assert!(matches!(
            route(&Method::DELETE, "/v2/a/manifests/sha256:zz"),
            Err(RouteError::Name(NameError::Digest(_)))
        ));
    }

    #[test]
    fn decode() {
        assert_eq!(percent_decode("/a%3Ab").as_deref(), Some("/a:b"));
        assert_eq!(percent_decode("/a%zzb%").as_deref(), Some("/a%zzb%"));
        assert_eq!(percent_decode("/a+b").as_deref(), Some("/a+b"));
        assert_eq!(percent_decode("/%ff"), None);
    }
}
