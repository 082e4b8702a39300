//! `/v2/`, `/v2/_catalog`, `/healthz`, `/readyz`.

use http::header::LINK;
use http::{Response, StatusCode};
use serde::Serialize;

use super::{HandlerResult, Reply};
use crate::app::App;
use crate::auth::Principal;
use crate::http::body::Body;
use crate::http::query::{encode_value, Query};

/// end-1: the API version check. The `Docker-Distribution-API-Version` header is added
/// to every response by the server.
pub fn api_base() -> Response<Body> {
    Reply::new(StatusCode::OK)
        .bytes("application/json", bytes::Bytes::from_static(b"{}"))
        .build()
}

pub fn healthz() -> Response<Body> {
    Reply::new(StatusCode::OK)
        .bytes(
            "text/plain; charset=utf-8",
            bytes::Bytes::from_static(b"ok\n"),
        )
        .build()
}

/// Ready while content can be served: the key is active, or the vault has been
/// unreachable for less than the outage grace. 503 otherwise, with the key state.
pub fn readyz(app: &App) -> Response<Body> {
    let state = app.key_status.get();
    if app.key_status.ready() {
        Reply::new(StatusCode::OK)
            .bytes(
                "text/plain; charset=utf-8",
                bytes::Bytes::from(format!("ready: key {}\n", state.name())),
            )
            .build()
    } else {
        Reply::new(StatusCode::SERVICE_UNAVAILABLE)
            .bytes(
                "text/plain; charset=utf-8",
                bytes::Bytes::from(format!(
                    "not ready: key {}: {}\n",
                    state.name(),
                    state.reason().unwrap_or("")
                )),
            )
            .build()
    }
}

#[derive(Serialize)]
struct Catalog<'a> {
    repositories: Vec<&'a str>,
}

/// `GET /v2/_catalog?n=&last=`: repositories in lexical order, only those the caller
/// may pull (with access control on), so a page is filled from what it may see and
/// `Link` says whether more of that follows.
pub async fn catalog(app: &App, principal: &Principal, query: &Query) -> HandlerResult {
    let n = query.page_size()?;
    let page = if matches!(principal, Principal::Open) {
        app.store.catalog(n, query.last()).await?
    } else {
        // The store lists names only (never content), so reading them all to filter
        // costs what an unfiltered page does.
        let all = app.store.catalog(None, query.last()).await?;
        let mut items: Vec<_> = all
            .items
            .into_iter()
            .filter(|r| app.auth.lists(principal, r))
            .collect();
        let more = n.is_some_and(|n| items.len() > n);
        if let Some(n) = n {
            items.truncate(n);
        }
        storage::Page { items, more }
    };
    let repositories: Vec<&str> = page.items.iter().map(|r| r.as_str()).collect();
    let mut reply = Reply::new(StatusCode::OK);
    if let (true, Some(n), Some(last)) = (page.more, n, repositories.last()) {
        if n > 0 {
            reply = reply.header(
                LINK,
                format!(
                    "</v2/_catalog?n={n}&last={}>; rel=\"next\"",
                    encode_value(last)
                ),
            );
        }
    }
    Ok(reply
        .json("application/json", &Catalog { repositories })
        .build())
}
