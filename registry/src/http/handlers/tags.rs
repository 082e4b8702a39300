//! Tag listing (end-8) and the referrers API (end-12).

use http::header::LINK;
use http::StatusCode;
use serde::Serialize;
use storage::{Descriptor, Digest, RepositoryName};

use super::header_names::OCI_FILTERS_APPLIED;
use super::{HandlerResult, Reply};
use crate::app::App;
use crate::http::manifest::OCI_INDEX;
use crate::http::query::{encode_value, Query};

#[derive(Serialize)]
struct TagList<'a> {
    name: &'a str,
    tags: Vec<&'a str>,
}

/// `GET /v2/<name>/tags/list?n=&last=`. `n=0` is an empty list without `Link`; a
/// `Link` is sent only when more tags follow the page.
pub async fn list(app: &App, repo: &RepositoryName, query: &Query) -> HandlerResult {
    let n = query.page_size()?;
    let page = app.store.list_tags(repo, n, query.last()).await?;
    let tags: Vec<&str> = page.items.iter().map(|t| t.as_str()).collect();
    let mut reply = Reply::new(StatusCode::OK);
    if let (true, Some(n), Some(last)) = (page.more, n, tags.last()) {
        if n > 0 {
            reply = reply.header(
                LINK,
                format!(
                    "</v2/{repo}/tags/list?n={n}&last={}>; rel=\"next\"",
                    encode_value(last)
                ),
            );
        }
    }
    let body = TagList {
        name: repo.as_str(),
        tags,
    };
    Ok(reply.json("application/json", &body).build())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReferrersIndex {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<Descriptor>,
}

/// `GET /v2/<name>/referrers/<digest>?artifactType=`: always 200 with an image index
/// (the spec forbids 404 here), empty when nothing refers to the digest.
pub async fn referrers(
    app: &App,
    repo: &RepositoryName,
    subject: &Digest,
    query: &Query,
) -> HandlerResult {
    let artifact_type = query.get("artifactType").filter(|v| !v.is_empty());
    let manifests = app.store.referrers(repo, subject, artifact_type).await?;
    let mut reply = Reply::new(StatusCode::OK);
    if artifact_type.is_some() {
        reply = reply.header(OCI_FILTERS_APPLIED, "artifactType");
    }
    let index = ReferrersIndex {
        schema_version: 2,
        media_type: OCI_INDEX,
        manifests,
    };
    Ok(reply.json(OCI_INDEX, &index).build())
}
