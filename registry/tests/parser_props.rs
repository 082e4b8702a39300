//! Property tests for the edge parsers (STYLE habit 9): on any input they return a
//! value or a typed error, never panic, and well-formed input parses to what it says.
//! They stand in for fuzz targets until cargo-fuzz runs in CI.

use http::Method;
use proptest::prelude::*;
use storage::{RangeSpec, Reference};
use valv::http::range::{parse_content_range, parse_range, ContentRangeError};
use valv::http::routes::{route, Route};

const METHODS: [&str; 7] = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"];

fn component() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,6}((\\.|_|__|-+)[a-z0-9]{1,4}){0,2}"
}

fn repository() -> impl Strategy<Value = String> {
    proptest::collection::vec(component(), 1..5).prop_map(|c| c.join("/"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn route_never_panics(m in 0usize..7, path in "(/v2/)?[\\PC/%._:a-z0-9-]{0,300}") {
        let method = Method::from_bytes(METHODS[m].as_bytes()).expect("method");
        let _ = route(&method, &path);
    }

    #[test]
    fn range_parsers_never_panic(s in "\\PC{0,60}") {
        let _ = parse_range(&s);
        let _ = parse_content_range(&s);
    }

    #[test]
    fn manifest_parser_never_panics(ct in prop::option::of("[a-z./+0-9-]{0,60}"), body in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = valv::http::manifest::parse(ct.as_deref(), &body);
    }

    #[test]
    fn well_formed_repository_paths_route_to_their_names(repo in repository(), tag in "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,20}") {
        match route(&Method::GET, &format!("/v2/{repo}/manifests/{tag}")) {
            Ok(Route::GetManifest { repo: r, reference: Reference::Tag(t), head: false }) => {
                prop_assert_eq!(r.as_str(), repo.as_str());
                prop_assert_eq!(t.as_str(), tag.as_str());
            }
            other => prop_assert!(false, "{repo}:{tag} routed to {other:?}"),
        }
        match route(&Method::GET, &format!("/v2/{repo}/tags/list")) {
            Ok(Route::ListTags { repo: r }) => prop_assert_eq!(r.as_str(), repo.as_str()),
            other => prop_assert!(false, "{repo} tags routed to {other:?}"),
        }
    }

    #[test]
    fn byte_ranges_parse_to_what_they_say(a in 0u64..u64::MAX / 2, len in 0u64..1 << 40) {
        prop_assert_eq!(parse_range(&format!("bytes={a}-")), Some(RangeSpec::From(a)));
        prop_assert_eq!(parse_range(&format!("bytes={a}-{}", a + len)), Some(RangeSpec::FromTo(a, a + len)));
        prop_assert_eq!(parse_range(&format!("bytes=-{len}")), Some(RangeSpec::Suffix(len)));
        let chunk = parse_content_range(&format!("{a}-{}", a + len)).expect("content range");
        prop_assert_eq!((chunk.start, chunk.end, chunk.length()), (a, a + len, len + 1));
        if len > 0 {
            prop_assert_eq!(parse_content_range(&format!("{}-{a}", a + len)), Err(ContentRangeError::Inverted));
        }
    }
}
