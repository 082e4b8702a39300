//! `valv::http::manifest`: manifests by media type (`Content-Type` or the body's own
//! `mediaType`).
//!
//! Contract: never panics; an accepted manifest is of the media type the header named,
//! or, without one, parses the same when that type is named; an index references no
//! blobs and an image references no manifests but at least its config.
//! Input: the first line is the `Content-Type` header (absent when the input has no
//! newline), the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use valv::http::manifest::{content_type_media_type, parse, Kind};

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (std::str::from_utf8(&data[..i]).ok(), &data[i + 1..]),
        None => (None, data),
    };
    let ct = content_type_media_type(header);
    if let Some(ct) = &ct {
        assert!(!ct.contains(';') && ct.trim() == ct && ct.to_ascii_lowercase() == *ct);
    }
    let Ok(p) = parse(ct.as_deref(), body) else {
        return;
    };
    assert_eq!(Kind::from_media_type(p.kind.media_type()), Some(p.kind));
    match &ct {
        Some(ct) => assert_eq!(p.kind.media_type(), ct),
        None => assert_eq!(parse(Some(p.kind.media_type()), body).as_ref(), Ok(&p)),
    }
    match p.kind {
        Kind::OciIndex | Kind::DockerManifestList => assert!(p.blobs.is_empty()),
        Kind::OciManifest | Kind::DockerManifest => {
            assert!(p.manifests.is_empty() && !p.blobs.is_empty())
        }
    }
    for d in p.blobs.iter().chain(&p.manifests).chain(&p.subject) {
        assert_eq!(d.to_string().parse().ok(), Some(d.clone()));
    }
});
