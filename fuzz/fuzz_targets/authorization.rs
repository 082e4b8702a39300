//! `valv::auth::parse_authorization` (Basic and Bearer credentials) and the token
//! endpoint's `scope` parser (`Scope::parse_all`).
//!
//! Contract: never panics; Basic credentials have a non-empty user without `:` and
//! re-encode to a header that parses to the same; a Bearer token is a non-empty
//! token68 taken verbatim from the header and parses the same on its own; every
//! parsed scope has a non-empty type without `:` and a non-empty name.
#![no_main]

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use valv::auth::token::Scope;
use valv::auth::{parse_authorization, Credentials};

fuzz_target!(|data: &[u8]| {
    match parse_authorization(data) {
        Ok(Credentials::Basic { user, password }) => {
            assert!(!user.is_empty() && !user.contains(':'));
            let header = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
            assert_eq!(
                parse_authorization(header.as_bytes()),
                Ok(Credentials::Basic { user, password })
            );
        }
        Ok(Credentials::Bearer(token)) => {
            assert!(!token.is_empty());
            assert!(!token.bytes().any(|b| b.is_ascii_whitespace()));
            let header = format!("Bearer {token}");
            assert_eq!(
                parse_authorization(header.as_bytes()),
                Ok(Credentials::Bearer(token))
            );
        }
        Err(e) => assert!(!e.message().is_empty()),
    }
    if let Ok(s) = std::str::from_utf8(data) {
        for scope in Scope::parse_all(s.split('&')) {
            assert!(
                !scope.kind.is_empty() && !scope.kind.contains(':') && !scope.kind.contains('(')
            );
            assert!(!scope.name.is_empty());
            assert!(scope
                .actions
                .iter()
                .all(|a| !a.is_empty() && !a.contains(',')));
        }
    }
});
