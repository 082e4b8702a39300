//! Query strings, percent-decoded (`application/x-www-form-urlencoded` rules, which is
//! what clients produce: `%3A` for `:` in a digest, `+` for a space).

use crate::http::errors::{ApiError, ErrorCode};

/// The decoded `key=value` pairs of a query string, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses the part after `?` (or nothing). Never fails: malformed escapes are kept
    /// literally, as the form-urlencoded rules say.
    pub fn parse(query: Option<&str>) -> Query {
        let pairs = query
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Query { pairs }
    }

    /// The first value of `key`. A key given without `=` has the value "".
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order (`scope` may repeat).
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Pagination `n`: a non-negative integer. Fails with PAGINATION_NUMBER_INVALID.
    pub fn page_size(&self) -> Result<Option<usize>, ApiError> {
        match self.get("n") {
            None => Ok(None),
            Some(v) => v.parse::<usize>().map(Some).map_err(|_| {
                ApiError::new(ErrorCode::PaginationNumberInvalid)
                    .with_message(format!("n={v:?} is not a non-negative integer"))
            }),
        }
    }

    /// Pagination `last`: exclusive lower bound; an empty value means "from the start".
    pub fn last(&self) -> Option<&str> {
        self.get("last").filter(|v| !v.is_empty())
    }
}

/// Percent-encodes a query value for a `Link` header we build.
pub fn encode_value(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_escapes_and_plus() {
        let q = Query::parse(Some(
            "digest=sha256%3Aabc&from=a%2Fb&artifactType=application%2Fvnd.x%2Bjson&x=a+b",
        ));
        assert_eq!(q.get("digest"), Some("sha256:abc"));
        assert_eq!(q.get("from"), Some("a/b"));
        assert_eq!(q.get("artifactType"), Some("application/vnd.x+json"));
        assert_eq!(q.get("x"), Some("a b"));
        assert_eq!(q.get("missing"), None);
    }

    #[test]
    fn first_value_wins_and_bare_keys_are_empty() {
        let q = Query::parse(Some("n=1&n=2&flag"));
        assert_eq!(q.get("n"), Some("1"));
        assert_eq!(q.get("flag"), Some(""));
    }

    #[test]
    fn no_query() {
        assert_eq!(Query::parse(None).get("n"), None);
        assert_eq!(Query::parse(Some("")).get("n"), None);
    }

    #[test]
    fn page_size() {
        assert_eq!(Query::parse(Some("n=0")).page_size().ok(), Some(Some(0)));
        assert_eq!(Query::parse(Some("n=25")).page_size().ok(), Some(Some(25)));
        assert_eq!(Query::parse(None).page_size().ok(), Some(None));
        for bad in ["n=-1", "n=x", "n=", "n=1.5"] {
            let e = Query::parse(Some(bad)).page_size().expect_err(bad);
            assert_eq!(e.code, ErrorCode::PaginationNumberInvalid);
        }
    }

    #[test]
    fn last_empty_is_none() {
        assert_eq!(Query::parse(Some("last=")).last(), None);
        assert_eq!(Query::parse(Some("last=v1")).last(), Some("v1"));
    }

    #[test]
    fn encode_round_trips() {
        let v = "a/b c:d+e";
        let q = Query::parse(Some(&format!("k={}", encode_value(v))));
        assert_eq!(q.get("k"), Some(v));
    }
}
