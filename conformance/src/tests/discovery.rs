//! Content discovery: listing tags (end-8a, end-8b).

use super::case;
use crate::ctx::{ensure, expect_status, fail, json, Ctx, Failure};
use crate::fixtures::{oci_image, push_blob, put_manifest, setup};
use crate::http::{Request, Response, Target};
use crate::TestCase;

pub fn cases() -> Vec<TestCase> {
    vec![
        case!("content-discovery/tags-list", ContentDiscovery, Must,
            "end-8a, Listing tags: GET /v2/<name>/tags/list MUST answer 200 with {name, tags}, every tag, in lexical order",
            tags_list),
        case!("content-discovery/tags-list-n", ContentDiscovery, Must,
            "end-8b, Listing tags: with n, the response MUST include n results (fewer only at the end of the list) from the start, in lexical order",
            tags_list_n),
        case!("content-discovery/tags-list-n-last", ContentDiscovery, Must,
            "end-8b, Listing tags: with n and last, up to n tags after last (not including it), in lexical order",
            tags_list_n_last),
        case!("content-discovery/tags-list-last-only", ContentDiscovery, Must,
            "end-8b, Listing tags: with last, n is OPTIONAL; the tags after last are returned in lexical order",
            tags_list_last_only),
        case!("content-discovery/tags-list-n-zero", ContentDiscovery, Must,
            "end-8b, Listing tags: when n is zero the response MUST be an empty list and MUST NOT include a Link header",
            tags_list_n_zero),
        case!("content-discovery/tags-list-n-exceeds", ContentDiscovery, Must,
            "end-8b, Listing tags: an n larger than the number of tags returns them all",
            tags_list_n_exceeds),
        case!("content-discovery/tags-list-link", ContentDiscovery, Should,
            "end-8b, Listing tags: a partial page carries Link: <url>; rel=\"next\", and following the links yields every tag once, in order",
            tags_list_link),
        case!("content-discovery/tags-list-unknown-repository", ContentDiscovery, Must,
            "end-8a: the tags of a repository that does not exist are answered 404",
            tags_list_unknown_repository),
    ]
}

/// Tags pushed in this (non-lexical) order; lowercase letters and digits only, where
/// byte order and case-insensitive order agree.
const TAGS: &[&str] = &[
    "v2", "a", "v10", "b1", "latest", "b", "c3po", "v1", "z9", "0start",
];

fn sorted_tags() -> Vec<String> {
    let mut t: Vec<String> = TAGS.iter().map(|s| (*s).to_owned()).collect();
    t.sort();
    t
}

/// Pushes one image under every tag of [`TAGS`].
fn tagged(ctx: &mut Ctx) -> Result<(), Failure> {
    let m = oci_image(1, 200);
    let repo = ctx.repo().to_owned();
    for b in &m.blobs {
        push_blob(ctx, &repo, b)?;
    }
    for tag in TAGS {
        let req = put_manifest(ctx, &repo, tag, &m);
        let resp = ctx.send(req)?;
        setup(expect_status(
            &resp,
            &[201],
            &format!("PUT manifest as {tag}"),
        ))?;
    }
    Ok(())
}

/// The `tags` of a tags-list response, after checking status, shape and `name`.
fn tags_of(ctx: &Ctx, resp: &Response, what: &str) -> Result<Vec<String>, Failure> {
    expect_status(resp, &[200], what)?;
    let v = json(resp, what)?;
    let name = v.get("name").and_then(|n| n.as_str());
    ensure(name == Some(ctx.repo()), || {
        format!("{what}: \"name\" is {name:?}, expected {:?}", ctx.repo())
    })?;
    match v.get("tags") {
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| fail(format!("{what}: a tag is not a string: {t}")))
            })
            .collect(),
        // An empty list may be written as null.
        Some(serde_json::Value::Null) => Ok(Vec::new()),
        other => Err(fail(format!(
            "{what}: \"tags\" is {other:?}, expected an array"
        ))),
    }
}

fn list(ctx: &mut Ctx, query: &str) -> Result<Response, Failure> {
    ctx.get(&format!("/v2/{}/tags/list{query}", ctx.repo()))
}

fn expect_tags(got: &[String], want: &[String], what: &str) -> Result<(), Failure> {
    ensure(got == want, || {
        format!("{what}: tags {got:?}, expected {want:?}")
    })
}

fn tags_list(ctx: &mut Ctx) -> Result<(), Failure> {
    tagged(ctx)?;
    let resp = list(ctx, "")?;
    let got = tags_of(ctx, &resp, "GET tags/list")?;
    let mut as_set = got.clone();
    as_set.sort();
    expect_tags(&as_set, &sorted_tags(), "GET tags/list (as a set)")?;
    expect_tags(&got, &sorted_tags(), "GET tags/list (order)")
}

fn tags_list_n(ctx: &mut Ctx) -> Result<(), Failure> {
    tagged(ctx)?;
    let all = sorted_tags();
    for n in [1, 3, 5] {
        let resp = list(ctx, &format!("?n={n}"))?;
        let got = tags_of(ctx, &resp, &format!("GET tags/list?n={n}"))?;
        expect_tags(&got, &all[..n], &format!("GET tags/list?n={n}"))?;
    }
    Ok(())
}

fn tags_list_n_last(ctx: &mut Ctx) -> Result<(), Failure> {
    tagged(ctx)?;
    let all = sorted_tags();
    // After the third tag, and after the second-to-last (fewer than n remain).
    for (last_index, n) in [(2usize, 3usize), (all.len() - 2, 5)] {
        let last = &all[last_index];
        let resp = list(ctx, &format!("?n={n}&last={last}"))?;
        let what = format!("GET tags/list?n={n}&last={last}");
        let got = tags_of(ctx, &resp, &what)?;
        let end = (last_index + 1 + n).min(all.len());
        expect_tags(&got, &all[last_index + 1..end], &what)?;
    }
    // A `last` that is not itself a tag still positions the list.
    let resp = list(ctx, "?n=2&last=b0")?;
    let got = tags_of(ctx, &resp, "GET tags/list?n=2&last=b0")?;
    let want: Vec<String> = all
        .iter()
        .filter(|t| t.as_str() > "b0")
        .take(2)
        .cloned()
        .collect();
    expect_tags(&got, &want, "GET tags/list?n=2&last=b0")
}

fn tags_list_last_only(ctx: &mut Ctx) -> Result<(), Failure> {
    tagged(ctx)?;
    let all = sorted_tags();
    let last = &all[4];
    let resp = list(ctx, &format!("?last={last}"))?;
    let what = format!("GET tags/list?last={last}");
    let got = tags_of(ctx, &resp, &what)?;
    expect_tags(&got, &all[5..], &what)
}

fn tags_list_n_zero(ctx: &mut Ctx) -> Result<(), Failure> {
    tagged(ctx)?;
    let resp = list(ctx, "?n=0")?;
    let got = tags_of(ctx, &resp, "GET tags/list?n=0")?;
    expect_tags(&got, &[], "GET tags/list?n=0")?;
    ensure(resp.header("Link").is_none(), || {
        format!(
            "GET tags/list?n=0 carries a Link header: {:?}",
            resp.header("Link")
        )
    })
}

fn tags_list_n_exceeds(ctx: &mut Ctx) -> Result<(), Failure> {
    tagged(ctx)?;
    let resp = list(ctx, "?n=1000")?;
    let got = tags_of(ctx, &resp, "GET tags/list?n=1000")?;
    expect_tags(&got, &sorted_tags(), "GET tags/list?n=1000")
}

/// The target of a `Link: <url>; rel="next"` header.
pub(crate) fn next_link(ctx: &Ctx, resp: &Response) -> Result<Option<Target>, Failure> {
    for value in resp.header_all("Link") {
        for link in value.split(',') {
            let link = link.trim();
            let Some(rest) = link.strip_prefix('<') else {
                continue;
            };
            let Some((url, params)) = rest.split_once('>') else {
                continue;
            };
            let is_next = params
                .split(';')
                .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"));
            if is_next {
                return ctx.resolve(url).map(Some);
            }
        }
    }
    Ok(None)
}

fn tags_list_link(ctx: &mut Ctx) -> Result<(), Failure> {
    tagged(ctx)?;
    let mut collected = Vec::new();
    let first = list(ctx, "?n=3")?;
    collected.extend(tags_of(ctx, &first, "GET tags/list?n=3")?);
    ensure(first.header("Link").is_some(), || {
        "GET tags/list?n=3 returned a partial list without a Link header".to_owned()
    })?;
    let mut resp = first;
    let mut pages = 1;
    while let Some(next) = next_link(ctx, &resp)? {
        pages += 1;
        if pages > TAGS.len() + 2 {
            return Err(fail("the Link headers never end"));
        }
        resp = ctx.send(Request::new("GET", next.clone()))?;
        collected.extend(tags_of(ctx, &resp, &format!("GET {next}"))?);
    }
    expect_tags(
        &collected,
        &sorted_tags(),
        "tags collected by following Link headers",
    )
}

fn tags_list_unknown_repository(ctx: &mut Ctx) -> Result<(), Failure> {
    let repo = ctx.repo_named("never-pushed");
    let resp = ctx.get(&format!("/v2/{repo}/tags/list"))?;
    expect_status(&resp, &[404], "GET tags/list of a repository never pushed")
}
