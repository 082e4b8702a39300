//! `storage::names`: `Digest`, `Reference`, `Tag`, `RepositoryName`, `UploadId`.
//!
//! Contract: never panics; whatever parses displays back to exactly the input (and a
//! digest survives its JSON form); error messages stay short whatever the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage::{Digest, Reference, RepositoryName, Tag, UploadId};

fn check<T>(s: &str)
where
    T: std::str::FromStr + std::fmt::Display,
    T::Err: std::fmt::Display,
{
    match s.parse::<T>() {
        Ok(v) => assert_eq!(v.to_string(), s),
        // Errors echo at most 80 characters of the input (names::truncate), some
        // `{:?}`-escaped (at most 10 characters each: `\u{10ffff}`).
        Err(e) => assert!(e.to_string().chars().count() < 1024, "long error for {s:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    check::<Digest>(s);
    check::<Reference>(s);
    check::<Tag>(s);
    check::<RepositoryName>(s);
    check::<UploadId>(s);
    if let Ok(d) = s.parse::<Digest>() {
        assert_eq!(d.hex().len(), d.algorithm().hex_len());
        let json = serde_json::to_string(&d).expect("a digest serializes");
        assert_eq!(serde_json::from_str::<Digest>(&json).ok(), Some(d.clone()));
        assert_eq!(s.parse::<Reference>().ok(), Some(Reference::Digest(d)));
    }
    if let Ok(r) = s.parse::<RepositoryName>() {
        assert!(r.as_str().len() <= storage::names::MAX_REPOSITORY_LEN);
        assert_eq!(r.components().collect::<Vec<_>>().join("/"), s);
    }
});
