//! The expected-failures file: tests a registry is known to fail, each with the reason.
//!
//! ```text
//! # comments and blank lines are ignored
//! content-discovery/referrers-list    2.8.2 has no referrers API (404)
//! ```
//!
//! One entry a line: a test id, whitespace, and the reason (required). An id the suite
//! does not know, a repeated id or a missing reason is an error, so the file cannot
//! silently go stale.

use std::collections::BTreeMap;

/// Test id → reason.
pub type ExpectedFailures = BTreeMap<String, String>;

/// Parses the file's text; `known` are the suite's test ids.
pub fn parse(text: &str, known: &[&str]) -> Result<ExpectedFailures, String> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (id, reason) = match line.split_once(char::is_whitespace) {
            Some((id, reason)) if !reason.trim().is_empty() => (id, reason.trim()),
            _ => {
                return Err(format!(
                    "line {}: {line:?} has no reason; write `<test id> <reason>`",
                    n + 1
                ))
            }
        };
        if !known.contains(&id) {
            return Err(format!("line {}: no test is called {id:?}", n + 1));
        }
        if out.insert(id.to_owned(), reason.to_owned()).is_some() {
            return Err(format!("line {}: {id:?} is listed twice", n + 1));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let known = ["a/b", "c/d"];
        let e = parse("# x\n\na/b   lacks it\n", &known).expect("parses");
        assert_eq!(e.get("a/b").map(String::as_str), Some("lacks it"));
        assert!(parse("a/b\n", &known).unwrap_err().contains("no reason"));
        assert!(parse("a/b  \n", &known).unwrap_err().contains("no reason"));
        assert!(parse("x/y why\n", &known).unwrap_err().contains("no test"));
        assert!(parse("a/b why\na/b why\n", &known)
            .unwrap_err()
            .contains("twice"));
    }
}
