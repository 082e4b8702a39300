//! `valv::auth::htpasswd::parse`: htpasswd files of bcrypt entries.
//!
//! Contract: never panics; an accepted file has one entry per content line (not
//! blank, not a `#` comment), each user present; a refused file is refused with a
//! message naming a line that exists, and never quoting that line's hash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use valv::auth::htpasswd::parse;

/// The fixed text of htpasswd::parse's messages.
const FIXED: [&str; 10] = [
    "expected user:hash",
    "empty user name or one with whitespace",
    "an MD5 ($apr1$) hash",
    "a SHA-1 ({SHA}) hash",
    "an unsupported hash scheme",
    "a crypt or plain-text password",
    "; only bcrypt entries are accepted (htpasswd -B)",
    "appears twice",
    " has ",
    "user ",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let content: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .collect();
    match parse(text) {
        Ok(entries) => {
            assert_eq!(entries.len(), content.len());
            for line in content {
                let (user, _) = line.split_once(':').expect("accepted lines have a colon");
                assert!(entries.contains(user));
            }
        }
        Err(msg) => {
            let n: usize = msg
                .strip_prefix("line ")
                .and_then(|r| r.split_once(':'))
                .and_then(|(n, _)| n.parse().ok())
                .expect("the message names a line");
            let line = text.lines().nth(n - 1).expect("the named line exists");
            if let Some((user, hash)) = line.trim_end_matches('\r').split_once(':') {
                let hash = hash.trim();
                // The message less what it may say: the user name and the fixed text.
                let prefix = format!("line {n}: ");
                let mut without_user = msg
                    .strip_prefix(&prefix)
                    .unwrap_or(&msg)
                    .replace(&format!("{user:?}"), "");
                for fixed in FIXED {
                    without_user = without_user.replace(fixed, "");
                }
                assert!(
                    hash.len() < 16 || !without_user.contains(hash),
                    "the message quotes the hash: {msg}"
                );
            }
        }
    }
});
