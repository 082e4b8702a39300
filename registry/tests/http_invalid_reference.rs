//! A manifest reference that is neither a valid tag nor a digest (the OCI conformance
//! suite uses `.INVALID_MANIFEST_NAME`): reading or deleting it is 404
//! `MANIFEST_UNKNOWN`, as in distribution; pushing to it is 400 `MANIFEST_INVALID`.

#[path = "http_util.rs"]
mod util;

use util::{error_code, simple_image, Registry, OCI_MANIFEST};

const INVALID: &str = ".INVALID_MANIFEST_NAME";

#[tokio::test]
async fn reading_or_deleting_an_invalid_reference_is_manifest_unknown() {
    let reg = Registry::start();
    // An existing repository, so the 404 is about the reference, not the name.
    let m = simple_image(&reg, "r", 1).await;
    assert_eq!(
        reg.put_manifest("r", "v1", OCI_MANIFEST, m.as_bytes())
            .await
            .status(),
        201
    );
    let path = format!("/v2/r/manifests/{INVALID}");

    let r = reg.get(&path).await;
    assert_eq!(r.status(), 404, "GET {path}");
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");

    let r = reg.head(&path).await;
    assert_eq!(r.status(), 404, "HEAD {path}");

    let r = reg.delete(&path).await;
    assert_eq!(r.status(), 404, "DELETE {path}");
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");

    // The same in a repository that does not exist.
    let r = reg.get(&format!("/v2/nothing/manifests/{INVALID}")).await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn pushing_to_an_invalid_reference_is_still_manifest_invalid() {
    let reg = Registry::start();
    let m = simple_image(&reg, "r", 2).await;
    let r = reg
        .put_manifest("r", INVALID, OCI_MANIFEST, m.as_bytes())
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    assert_eq!(reg.tags("r").await, Some(vec![]));
}
