//! htpasswd files of bcrypt entries (`htpasswd -B`), their verification off the async
//! workers, and a cache of successful verifications.
//!
//! Only bcrypt (`$2y$`, `$2a$`, `$2b$`) is accepted: the other htpasswd schemes (MD5
//! `$apr1$`, SHA-1 `{SHA}`, crypt, plain) are fast hashes an offline attacker breaks
//! easily. A file with any other line is refused as a whole, naming the line number
//! (never the line: it holds a hash).
//!
//! The cache remembers a successful verification for a short time under a keyed hash
//! (HMAC-SHA256 with a random per-process key) of user, password and the entry's hash,
//! so a password is never stored, a changed entry misses, and the table says nothing
//! to someone who reads the process memory without the key. A reload empties it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use ring::hmac;
use tokio::sync::Semaphore;

/// Cached verifications kept at most (the oldest go first when full).
const CACHE_CAP: usize = 4096;
/// bcrypt verifications running at once on the blocking pool; more wait their turn
/// (asynchronously), so a login flood cannot take every blocking thread.
const CONCURRENT_VERIFICATIONS: usize = 4;

/// A parsed htpasswd file: user → bcrypt hash.
#[derive(Clone, Default)]
pub struct Entries {
    users: HashMap<String, Arc<str>>,
}

impl Entries {
    /// Number of users. (With [`Entries::contains`], what the fuzz target checks a
    /// parse against; the hashes stay private.)
    pub fn len(&self) -> usize {
        self.users.len()
    }
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
    /// Whether `user` has an entry.
    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }
}

impl std::fmt::Debug for Entries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entries")
            .field("users", &self.users.len())
            .finish()
    }
}

/// Parses htpasswd text. Blank lines and `#` comments are skipped. Fails on the first
/// bad line with a message naming its number (1-based) and what is wrong, never its
/// content.
pub fn parse(text: &str) -> Result<Entries, String> {
    let mut users = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            return Err(format!("line {n}: expected user:hash"));
        };
        if user.is_empty() || user.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("line {n}: empty user name or one with whitespace"));
        }
        let hash = hash.trim();
        if !is_bcrypt(hash) {
            let scheme = if hash.starts_with("$apr1$") {
                "an MD5 ($apr1$) hash"
            } else if hash.starts_with("{SHA}") {
                "a SHA-1 ({SHA}) hash"
            } else if hash.starts_with('$') {
                "an unsupported hash scheme"
            } else {
                "a crypt or plain-text password"
            };
            return Err(format!(
                "line {n}: user {user:?} has {scheme}; only bcrypt entries are accepted (htpasswd -B)"
            ));
        }
        if users.insert(user.to_owned(), Arc::from(hash)).is_some() {
            return Err(format!("line {n}: user {user:?} appears twice"));
        }
    }
    Ok(Entries { users })
}

/// `$2y$`/`$2a$`/`$2b$`, a two-digit cost 04–31, then 53 characters of bcrypt's base64.
fn is_bcrypt(hash: &str) -> bool {
    let b = hash.as_bytes();
    let prefix_ok = b.len() == 60
        && b[0] == b'$'
        && b[1] == b'2'
        && matches!(b[2], b'a' | b'b' | b'y')
        && b[3] == b'$'
        && b[6] == b'$';
    if !prefix_ok {
        return false;
    }
    let cost = std::str::from_utf8(&b[4..6])
        .ok()
        .and_then(|c| c.parse::<u32>().ok());
    cost.is_some_and(|c| (4..=31).contains(&c))
        && b[7..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'/')
}

/// What a file looked like when it was read, to notice a change by metadata alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
    })
}

/// The htpasswd file in use, reloaded when it changes, with the verification cache.
pub struct Htpasswd {
    path: PathBuf,
    current: RwLock<(Arc<Entries>, Option<Stamp>)>,
    cache: Mutex<HashMap<[u8; 32], Instant>>,
    cache_key: hmac::Key,
    cache_ttl: Duration,
    /// A bcrypt hash of nothing anyone knows, verified for unknown users so that a
    /// wrong user name takes as long as a wrong password.
    decoy: Arc<str>,
    permits: Semaphore,
}

impl std::fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Htpasswd")
            .field("path", &self.path)
            .finish()
    }
}

/// Reads and parses `path`; the error names the file and the line.
fn load(path: &Path) -> Result<(Entries, Stamp), String> {
    let before = stamp(path).map_err(|e| format!("htpasswd file {}: {e}", path.display()))?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("htpasswd file {}: {e}", path.display()))?;
    let entries = parse(&text).map_err(|e| format!("htpasswd file {}: {e}", path.display()))?;
    Ok((entries, before))
}

impl Htpasswd {
    /// Loads `path`. Fails (naming the file and line) when it cannot be read or a line
    /// is not a bcrypt entry.
    pub fn open(path: &Path, cache_ttl: Duration) -> Result<Htpasswd, String> {
        let (entries, st) = load(path)?;
        let rng = ring::rand::SystemRandom::new();
        let cache_key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .map_err(|_| "cannot draw a random key".to_string())?;
        let mut secret = [0u8; 32];
        ring::rand::SecureRandom::fill(&rng, &mut secret)
            .map_err(|_| "cannot draw random bytes".to_string())?;
        // Cost 10 is htpasswd -B's default, so a miss costs what a hit does.
        let decoy = bcrypt::hash(secret, 10).map_err(|e| format!("bcrypt: {e}"))?;
        Ok(Htpasswd {
            path: path.to_owned(),
            current: RwLock::new((Arc::new(entries), Some(st))),
            cache: Mutex::new(HashMap::new()),
            cache_key,
            cache_ttl,
            decoy: Arc::from(decoy.as_str()),
            permits: Semaphore::new(CONCURRENT_VERIFICATIONS),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn entries(&self) -> Arc<Entries> {
        match self.current.read() {
            Ok(g) => g.0.clone(),
            Err(poisoned) => poisoned.into_inner().0.clone(),
        }
    }

    /// Whether `user` has an entry.
    pub fn has_user(&self, user: &str) -> bool {
        self.entries().users.contains_key(user)
    }

    /// Reloads the file if its metadata changed since the last load. A file that no
    /// longer parses (or cannot be read) keeps the entries in use and answers the
    /// error, for the caller to log; `Ok(true)` when new entries were loaded.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let now = stamp(&self.path).ok();
        let last = match self.current.read() {
            Ok(g) => g.1,
            Err(p) => p.into_inner().1,
        };
        if now.is_some() && now == last {
            return Ok(false);
        }
        let result = load(&self.path);
        let mut guard = match self.current.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match result {
            Ok((entries, st)) => {
                *guard = (Arc::new(entries), Some(st));
                drop(guard);
                self.clear_cache();
                Ok(true)
            }
            Err(e) => {
                // Remember the bad file's stamp so the error is logged once per change.
                guard.1 = now;
                Err(e)
            }
        }
    }

    fn clear_cache(&self) {
        match self.cache.lock() {
            Ok(mut c) => c.clear(),
            Err(p) => p.into_inner().clear(),
        }
    }

    fn cache_tag(&self, user: &str, password: &[u8], hash: &str) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.cache_key);
        // Length prefixes keep ("ab","c") and ("a","bc") apart.
        for part in [user.as_bytes(), password, hash.as_bytes()] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    fn cached(&self, tag: &[u8; 32]) -> bool {
        let mut cache = match self.cache.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        match cache.get(tag) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                cache.remove(tag);
                false
            }
            None => false,
        }
    }

    fn remember(&self, tag: [u8; 32]) {
        if self.cache_ttl.is_zero() {
            return;
        }
        let mut cache = match self.cache.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        let now = Instant::now();
        if cache.len() >= CACHE_CAP {
            cache.retain(|_, until| *until > now);
        }
        if cache.len() >= CACHE_CAP {
            // Still full of live entries: drop the one closest to expiry.
            if let Some(oldest) = cache.iter().min_by_key(|(_, u)| **u).map(|(k, _)| *k) {
                cache.remove(&oldest);
            }
        }
        cache.insert(tag, now + self.cache_ttl);
    }

    /// Whether `password` is `user`'s. bcrypt runs on the blocking pool (at most a few
    /// at once), never on an async worker; unknown users cost the same as known ones.
    pub async fn verify(&self, user: &str, password: &str) -> bool {
        let entries = self.entries();
        let (hash, known) = match entries.users.get(user) {
            Some(h) => (h.clone(), true),
            None => (self.decoy.clone(), false),
        };
        let tag = self.cache_tag(user, password.as_bytes(), &hash);
        if known && self.cached(&tag) {
            return true;
        }
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let password = zeroize::Zeroizing::new(password.to_owned());
        let ok = tokio::task::spawn_blocking(move || {
            bcrypt::verify(password.as_bytes(), &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        if ok && known {
            self.remember(tag);
        }
        ok && known
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A bcrypt hash of "secret" made by `htpasswd -nbB alice secret` (Apache's $2y$).
    const ALICE: &str = "alice:$2y$05$S8WpkRfasf9PTQ7ZL9dYGOwtv5TwKb2IynsHByI9qSH8pn7ockVYC";

    #[test]
    fn bcrypt_entries_parse() {
        let e = parse(&format!("# users\n\n{ALICE}\nbob:$2b$04$abcdefghijklmnopqrstuuJ0x4Wq0G1m1Ih1G7dhcX1l3Kw2Yq2rW\r\n"))
            .expect("parse");
        assert_eq!(e.users.len(), 2);
        assert!(e.users.contains_key("alice") && e.users.contains_key("bob"));
    }

    #[test]
    fn other_schemes_are_refused_by_line_number_without_the_hash() {
        let cases = [
            ("carol:$apr1$abc$0123456789abcdef012345", "MD5"),
            ("carol:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA-1"),
            ("carol:abJnggxhB/yWI", "crypt"),
            ("carol:$5$salt$hash", "unsupported"),
            ("carol", "user:hash"),
            (
                ":$2y$05$9/W2zq9UuvIPPkRu8ezVSOb3hS3Jq1f1DVlVCm.gCUzLZ3fPcxYfe",
                "empty user",
            ),
            (
                "carol:$2y$99$9/W2zq9UuvIPPkRu8ezVSOb3hS3Jq1f1DVlVCm.gCUzLZ3fPcxYfe",
                "bcrypt",
            ),
            ("carol:$2y$05$short", "bcrypt"),
        ];
        for (line, what) in cases {
            let e = parse(&format!("{ALICE}\n{line}\n")).expect_err(line);
            assert!(e.starts_with("line 2:"), "{e}");
            assert!(e.contains(what), "{line}: {e}");
            if let Some((_, hash)) = line.split_once(':') {
                if hash.len() > 4 {
                    assert!(!e.contains(hash), "the hash is not in the message: {e}");
                }
            }
        }
        let e = parse(&format!("{ALICE}\n{ALICE}\n")).expect_err("duplicate");
        assert!(e.contains("line 2") && e.contains("twice"), "{e}");
    }

    #[tokio::test]
    async fn verify_caches_and_reload_keeps_the_old_file_on_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("htpasswd");
        let bob = bcrypt::hash("hunter2", 4).expect("hash");
        std::fs::write(&path, format!("{ALICE}\nbob:{bob}\n")).expect("write");
        let h = Htpasswd::open(&path, Duration::from_secs(30)).expect("open");
        assert!(h.verify("alice", "secret").await);
        assert!(!h.verify("alice", "Secret").await);
        assert!(!h.verify("nobody", "secret").await);
        assert!(h.verify("bob", "hunter2").await);
        assert_eq!(
            h.cache.lock().expect("lock").len(),
            2,
            "two successes cached"
        );
        assert!(h.verify("bob", "hunter2").await, "a cache hit");
        assert_eq!(h.reload_if_changed(), Ok(false));

        // A bad new file keeps the old entries.
        std::fs::write(&path, "bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n").expect("write");
        let e = h.reload_if_changed().expect_err("bad file");
        assert!(e.contains("line 1"), "{e}");
        assert!(h.verify("alice", "secret").await);
        // A good one replaces them and empties the cache.
        let carol = bcrypt::hash("pw", 4).expect("hash");
        std::fs::write(&path, format!("carol:{carol}\n")).expect("write");
        assert_eq!(h.reload_if_changed(), Ok(true));
        assert!(h.cache.lock().expect("lock").is_empty());
        assert!(!h.verify("alice", "secret").await);
        assert!(h.verify("carol", "pw").await);
    }
}
