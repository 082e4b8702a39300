//! The suite catches breakage: a fault-injecting HTTP proxy sits in front of valv and
//! breaks one behaviour at a time; each fault must make the tests that check that
//! behaviour fail. Without a fault the proxy is transparent and everything passes, so
//! the failures are the faults' doing.

mod common;

use std::collections::BTreeSet;
use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use valv_conformance::http::{read_message, Body, Framing, Origin, Request, Target};
use valv_conformance::{run, Config, Outcome};

/// One broken behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Flips one byte of every blob body served.
    CorruptBlobByte,
    /// Removes `Docker-Content-Digest` from every response.
    DropDigestHeader,
    /// Drops the `n` parameter of tag-list requests.
    IgnoreN,
    /// Answers 202 where the registry answered 416.
    Accept416,
    /// Reverses the order of listed tags.
    TagsOutOfOrder,
    /// Answers 404 to every referrers request.
    Referrers404,
}

/// Starts the proxy on 127.0.0.1 in front of `upstream`; returns its URL. Its threads
/// live until the test process ends.
fn proxy(upstream: &str, fault: Fault) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let me = format!("http://{}", listener.local_addr().expect("proxy addr"));
    let upstream = Origin::parse_base(upstream).expect("upstream URL");
    let public = me.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let upstream = upstream.clone();
            let public = public.clone();
            std::thread::spawn(move || {
                let _ = serve(conn, &upstream, &public, fault);
            });
        }
    });
    me
}

/// Relays one request (the suite's client sends `Connection: close`, and so does the
/// proxy's answer).
fn serve(conn: TcpStream, upstream: &Origin, public: &str, fault: Fault) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut writer = conn;
    let Ok(req) = read_message(&mut reader, Framing::Request) else {
        return Ok(());
    };
    let mut parts = req.start_line.split(' ');
    let method = parts.next().unwrap_or("GET").to_owned();
    let mut target = parts.next().unwrap_or("/").to_owned();
    if fault == Fault::IgnoreN && target.contains("/tags/list") {
        target = drop_query_param(&target, "n");
    }
    let mut forward = Request::new(
        &method,
        Target {
            origin: upstream.clone(),
            path_and_query: target.clone(),
        },
    );
    for (k, v) in &req.headers {
        let skip = ["host", "connection", "content-length", "transfer-encoding"];
        if !skip.iter().any(|s| k.eq_ignore_ascii_case(s)) {
            forward = forward.header(k, v);
        }
    }
    let has_body =
        req.header("content-length").is_some() || req.header("transfer-encoding").is_some();
    if has_body {
        forward.body = Body::Bytes(req.body.clone());
    }
    let mut resp = if fault == Fault::Referrers404 && target.contains("/referrers/") {
        valv_conformance::http::Response {
            status: 404,
            headers: vec![("Content-Type".to_owned(), "application/json".to_owned())],
            body: br#"{"errors":[{"code":"NAME_UNKNOWN","message":"not found"}]}"#.to_vec(),
        }
    } else {
        match forward.send(Duration::from_secs(120)) {
            Ok(r) => r,
            Err(_) => return Ok(()),
        }
    };
    let is_blob = method == "GET" && target.contains("/blobs/") && !target.contains("/uploads/");
    match fault {
        Fault::CorruptBlobByte
            if is_blob && (200..300).contains(&resp.status) && !resp.body.is_empty() =>
        {
            let i = resp.body.len() / 2;
            resp.body[i] ^= 0x01;
        }
        Fault::DropDigestHeader => {
            resp.headers
                .retain(|(k, _)| !k.eq_ignore_ascii_case("docker-content-digest"));
        }
        Fault::Accept416 if resp.status == 416 => resp.status = 202,
        Fault::TagsOutOfOrder if target.contains("/tags/list") && resp.status == 200 => {
            if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&resp.body) {
                if let Some(tags) = v["tags"].as_array_mut() {
                    tags.reverse();
                }
                resp.body = serde_json::to_vec(&v).unwrap_or_default();
            }
        }
        _ => {}
    }
    // Locations and links must keep pointing at the proxy.
    let upstream_url = format!("http://{upstream}");
    let mut head = format!("HTTP/1.1 {} X\r\n", resp.status);
    for (k, v) in &resp.headers {
        let skip = ["content-length", "transfer-encoding", "connection"];
        if skip.iter().any(|s| k.eq_ignore_ascii_case(s)) {
            continue;
        }
        head.push_str(&format!("{k}: {}\r\n", v.replace(&upstream_url, public)));
    }
    let body_allowed = method != "HEAD" && resp.status != 204 && resp.status != 304;
    if body_allowed {
        head.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    } else if let Some(len) = resp
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        head.push_str(&format!("Content-Length: {}\r\n", len.1));
    }
    head.push_str("Connection: close\r\n\r\n");
    writer.write_all(head.as_bytes())?;
    if body_allowed {
        writer.write_all(&resp.body)?;
    }
    writer.flush()
}

fn drop_query_param(target: &str, name: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| kv.split('=').next() != Some(name))
        .collect();
    if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// Runs the whole suite through a proxy with `fault`; returns the ids that failed.
fn failures(valv: &common::Server, fault: Fault) -> BTreeSet<String> {
    let url = proxy(&valv.url, fault);
    let mut config = Config::new(&url);
    config.automatic_crossmount = Some(true);
    let results = run(&config).expect("suite runs");
    results
        .into_iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
        .map(|r| {
            if let Outcome::Failed(m) = &r.outcome {
                eprintln!("{fault:?}: {} failed: {m}", r.id);
            }
            r.id
        })
        .collect()
}

fn assert_caught(valv: &common::Server, fault: Fault, must_fail: &[&str]) {
    let failed = failures(valv, fault);
    assert!(!failed.is_empty(), "{fault:?}: no test failed");
    for id in must_fail {
        assert!(
            failed.contains(*id),
            "{fault:?}: {id} did not fail; failures: {failed:?}"
        );
    }
}

#[test]
fn the_proxy_alone_breaks_nothing() {
    let valv = common::start_valv();
    let failed = failures(&valv, Fault::None);
    assert!(
        failed.is_empty(),
        "failures through a transparent proxy: {failed:?}"
    );
}

#[test]
fn a_corrupted_blob_byte_is_caught() {
    let valv = common::start_valv();
    assert_caught(
        &valv,
        Fault::CorruptBlobByte,
        &[
            "pull/blob-get",
            "pull/blob-range",
            "push/post-put-monolithic",
        ],
    );
}

#[test]
fn a_missing_docker_content_digest_is_caught() {
    let valv = common::start_valv();
    assert_caught(
        &valv,
        Fault::DropDigestHeader,
        &[
            "pull/manifest-docker-content-digest",
            "pull/blob-docker-content-digest",
            "push/manifest-docker-content-digest",
        ],
    );
}

#[test]
fn ignoring_n_is_caught() {
    let valv = common::start_valv();
    assert_caught(
        &valv,
        Fault::IgnoreN,
        &[
            "content-discovery/tags-list-n",
            "content-discovery/tags-list-n-zero",
            "content-discovery/tags-list-n-last",
        ],
    );
}

#[test]
fn accepting_out_of_order_chunks_is_caught() {
    let valv = common::start_valv();
    assert_caught(
        &valv,
        Fault::Accept416,
        &["push/chunk-out-of-order", "push/chunk-repeated"],
    );
}

#[test]
fn tags_out_of_order_are_caught() {
    let valv = common::start_valv();
    assert_caught(
        &valv,
        Fault::TagsOutOfOrder,
        &["content-discovery/tags-list"],
    );
}

#[test]
fn a_missing_referrers_api_is_caught() {
    let valv = common::start_valv();
    assert_caught(
        &valv,
        Fault::Referrers404,
        &[
            "content-discovery/referrers-no-referrers",
            "content-discovery/referrers-list",
        ],
    );
}
