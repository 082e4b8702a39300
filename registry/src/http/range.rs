//! The two range headers: `Range: bytes=…` on blob reads (RFC 9110 §14.2) and the
//! upload `Content-Range: <start>-<end>` on chunked pushes (distribution-spec).

use storage::RangeSpec;

/// Parses a `Range` header into the one range valv serves.
///
/// `None` means "serve the whole blob with 200": RFC 9110 lets a server ignore a Range
/// it does not understand or support, which covers other units, syntax errors, an end
/// before the start, and multi-range requests (which would need multipart responses).
/// Whether a well-formed range is *satisfiable* is the store's call (it knows the size).
pub fn parse_range(value: &str) -> Option<RangeSpec> {
    let (unit, set) = value.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let set = set.trim();
    if set.contains(',') {
        return None;
    }
    let (first, last) = set.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    match (first.is_empty(), last.is_empty()) {
        (false, true) => Some(RangeSpec::From(digits(first)?)),
        (false, false) => {
            let (a, b) = (digits(first)?, digits(last)?);
            (b >= a).then_some(RangeSpec::FromTo(a, b))
        }
        (true, false) => Some(RangeSpec::Suffix(digits(last)?)),
        (true, true) => None,
    }
}

/// Only ASCII digits: `str::parse::<u64>` would also accept a leading `+`.
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Why an upload `Content-Range` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentRangeError {
    /// Not `<start>-<end>` at all.
    Malformed,
    /// `end < start`: a chunk of negative length.
    Inverted,
}

/// An upload chunk's position: `start..=end` (inclusive, as on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    pub start: u64,
    pub end: u64,
}

impl ChunkRange {
    /// Bytes in the chunk (never zero: the form cannot express an empty chunk).
    pub fn length(&self) -> u64 {
        self.end - self.start + 1
    }
}

/// Parses an upload `Content-Range`. The spec's form is `^[0-9]+-[0-9]+$`; the RFC form
/// some clients send (`bytes 0-9/*`, `bytes 0-9/10`) is accepted too, since the
/// positions mean the same.
pub fn parse_content_range(value: &str) -> Result<ChunkRange, ContentRangeError> {
    let mut v = value.trim();
    if let Some(rest) = v
        .strip_prefix("bytes ")
        .or_else(|| v.strip_prefix("bytes="))
    {
        v = rest.trim_start();
        if let Some((range, _total)) = v.split_once('/') {
            v = range;
        }
    }
    let (a, b) = v.split_once('-').ok_or(ContentRangeError::Malformed)?;
    let start = digits(a).ok_or(ContentRangeError::Malformed)?;
    let end = digits(b).ok_or(ContentRangeError::Malformed)?;
    if end < start {
        return Err(ContentRangeError::Inverted);
    }
    // `0-18446744073709551615` is 2^64 bytes: its length does not fit a u64 (found by
    // the `range` fuzz target; `length()` overflowed). No client can send such a
    // chunk, so it is as malformed as a range that does not parse.
    if start == 0 && end == u64::MAX {
        return Err(ContentRangeError::Malformed);
    }
    Ok(ChunkRange { start, end })
}

/// The upload `Range` response header for `offset` bytes received: `0-<offset-1>`.
/// With nothing received the spec's form has no answer; like distribution, valv sends
/// `0-0` then (clients read the offset from the end only after a chunk was sent).
pub fn upload_range_header(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

/// `Content-Range` of a 206 response for `start..end` (exclusive end) of `size` bytes.
pub fn content_range_header(range: &std::ops::Range<u64>, size: u64) -> String {
    format!(
        "bytes {}-{}/{}",
        range.start,
        range.end.saturating_sub(1),
        size
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_forms() {
        assert_eq!(parse_range("bytes=0-99"), Some(RangeSpec::FromTo(0, 99)));
        assert_eq!(parse_range("bytes=100-"), Some(RangeSpec::From(100)));
        assert_eq!(parse_range("bytes=-5"), Some(RangeSpec::Suffix(5)));
        assert_eq!(parse_range("bytes=-0"), Some(RangeSpec::Suffix(0)));
        assert_eq!(
            parse_range(" Bytes = 3 - 4 "),
            Some(RangeSpec::FromTo(3, 4))
        );
        assert_eq!(parse_range("bytes=7-7"), Some(RangeSpec::FromTo(7, 7)));
    }

    #[test]
    fn ignored_ranges() {
        for v in [
            "",
            "bytes",
            "bytes=",
            "bytes=-",
            "items=0-1",
            "bytes=5-2",
            "bytes=0-1,3-4",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes=1-+2",
            "0-1",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(parse_range(v), None, "{v:?}");
        }
    }

    #[test]
    fn content_range_forms() {
        assert_eq!(
            parse_content_range("0-0"),
            Ok(ChunkRange { start: 0, end: 0 })
        );
        assert_eq!(
            parse_content_range("10-19"),
            Ok(ChunkRange { start: 10, end: 19 })
        );
        assert_eq!(
            parse_content_range("bytes 10-19/*"),
            Ok(ChunkRange { start: 10, end: 19 })
        );
        assert_eq!(
            parse_content_range("bytes=10-19"),
            Ok(ChunkRange { start: 10, end: 19 })
        );
        assert_eq!(parse_content_range("10-19").map(|r| r.length()), Ok(10));
    }

    #[test]
    fn content_range_errors() {
        assert_eq!(parse_content_range("5-4"), Err(ContentRangeError::Inverted));
        for v in [
            "",
            "-",
            "5-",
            "-5",
            "a-b",
            "1-2-3",
            "+1-2",
            "1 - 2x",
            "bytes */10",
            // 2^64 bytes: the length would overflow (fuzz/corpus/range/crash-length-overflow).
            "0-18446744073709551615",
            "bytes=0-18446744073709551615",
        ] {
            assert_eq!(
                parse_content_range(v),
                Err(ContentRangeError::Malformed),
                "{v:?}"
            );
        }
    }

    #[test]
    fn content_range_lengths_never_overflow() {
        let r = parse_content_range("1-18446744073709551615").expect("parses");
        assert_eq!(r.length(), u64::MAX);
        let r = parse_content_range("18446744073709551615-18446744073709551615").expect("parses");
        assert_eq!(r.length(), 1);
    }

    #[test]
    fn response_headers() {
        assert_eq!(upload_range_header(0), "0-0");
        assert_eq!(upload_range_header(1), "0-0");
        assert_eq!(upload_range_header(10), "0-9");
        assert_eq!(content_range_header(&(5..10), 20), "bytes 5-9/20");
    }
}
