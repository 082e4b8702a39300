//! `valv::http::routes`: method + raw path → `Route`, `template`, `percent_decode`.
//!
//! Contract: never panics; a path has a template exactly when it names a resource;
//! a route rendered back to its canonical path routes to itself under the same
//! template; the repository a route names is the decoded path's name; percent
//! decoding is the identity without `%` and inverts full percent encoding.
//! Input: the first byte picks the method, the rest is the path.
#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use valv::http::routes::{percent_decode, route, template, RouteError};
use valv_fuzz::render;

const METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::PUT,
    Method::POST,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let Ok(path) = std::str::from_utf8(rest) else {
        return;
    };
    let method = &METHODS[usize::from(m) % METHODS.len()];

    let decoded = percent_decode(path);
    if let Some(d) = &decoded {
        if !path.contains('%') {
            assert_eq!(d, path);
        }
        assert!(d.len() <= path.len());
        let encoded = render::percent_encode_all(d);
        assert_eq!(percent_decode(&encoded).as_deref(), Some(&**d));
    }

    let routed = route(method, path);
    let tmpl = template(path);
    match &routed {
        Err(RouteError::NotFound) => assert!(tmpl.is_none(), "{path:?} not found but has {tmpl:?}"),
        _ => assert!(
            tmpl.is_some(),
            "{path:?} routed ({routed:?}) without a template"
        ),
    }
    if let Ok(r) = &routed {
        let (m2, p2) = render::route(r);
        assert_eq!(
            route(&m2, &p2).as_ref(),
            Ok(r),
            "{p2:?} does not route back"
        );
        assert_eq!(template(&p2), tmpl);
        if let Some(repo) = render::repository(r) {
            let d = decoded.as_deref().unwrap_or_default();
            let name = d.strip_prefix("/v2/").unwrap_or_default();
            assert!(
                name.starts_with(&format!("{repo}/")),
                "{repo} is not the name of {d:?}"
            );
        }
    }
});
