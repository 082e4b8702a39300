//! `valv::http::range`: the `Range` header of blob reads and the upload
//! `Content-Range`, and the headers valv answers with.
//!
//! Contract: never panics (including the chunk length); a parsed range re-renders to a
//! header that parses to the same range; a parsed chunk has `end >= start`.
//! Input: a header value; its first 24 bytes also feed the response-header builders.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage::RangeSpec;
use valv::http::range::{
    content_range_header, parse_content_range, parse_range, upload_range_header,
};
use valv_fuzz::render;

fn u64_at(data: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    for (k, x) in b.iter_mut().enumerate() {
        *x = data.get(i * 8 + k).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    let (a, b, size) = (u64_at(data, 0), u64_at(data, 1), u64_at(data, 2));
    let _ = upload_range_header(a);
    let _ = content_range_header(&(a.min(b)..a.max(b)), size);

    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(spec) = parse_range(s) {
        if let RangeSpec::FromTo(a, b) = spec {
            assert!(b >= a);
        }
        assert_eq!(parse_range(&render::range(&spec)), Some(spec));
    }
    if let Ok(c) = parse_content_range(s) {
        assert!(c.end >= c.start);
        assert!(c.length() >= 1);
        let again = parse_content_range(&format!("{}-{}", c.start, c.end));
        assert_eq!(again, Ok(c));
    }
});
