//! In-memory caches for the manifest read path (a pull starts with manifest GETs, and
//! each one otherwise costs four object reads and a decryption).
//!
//! - **Content**: decrypted, digest-verified manifest bytes by digest. Content is
//!   immutable, so an entry is never stale; it goes when its envelope is deleted on this
//!   node, and all of it when access is revoked — a revoked store serves nothing
//!   from here, because every read checks the keyring first.
//! - **References**: `<repository>@<tag or digest>` → the digest and its manifest link,
//!   for `ttl`. Every manifest or tag change made through this node clears them, so a
//!   single node always reads its own writes; another node's change to a tag or
//!   deletion of a manifest is seen within `ttl` (0 turns this cache off).
//!
//! Misses are not cached: a tag pushed through another node is visible at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Clock;
use crate::names::Digest;

/// Most reference entries held; past it the map is cleared (a registry with more hot
/// tags than this simply reads more from the object store).
const MAX_REFERENCES: usize = 16_384;

#[derive(Debug)]
pub(super) struct ManifestCache<L> {
    ttl: Duration,
    /// What reference entries age by (a manual clock in tests).
    clock: Clock,
    max_content_bytes: usize,
    state: Mutex<State<L>>,
    /// Lookups answered from memory and not, for `/metrics` ([`CacheStats`]).
    counts: Counts,
}

/// How often each part of the manifest cache answered a lookup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Tag or digest resolutions answered from memory (no object read).
    pub reference_hits: u64,
    /// Resolutions read from the object store (including every one while the reference
    /// cache is off, `reference_cache_ttl = 0`).
    pub reference_misses: u64,
    /// Manifest bytes served from memory (no object read, no decryption).
    pub content_hits: u64,
    pub content_misses: u64,
}

#[derive(Debug, Default)]
struct Counts {
    reference_hits: AtomicU64,
    reference_misses: AtomicU64,
    content_hits: AtomicU64,
    content_misses: AtomicU64,
}

/// Counts a lookup's outcome; passes it on.
fn count<T>(found: Option<T>, hits: &AtomicU64, misses: &AtomicU64) -> Option<T> {
    let counter = if found.is_some() { hits } else { misses };
    counter.fetch_add(1, Ordering::Relaxed);
    found
}

#[derive(Debug)]
struct State<L> {
    /// By `<repository>@<reference>`: one string, so a lookup borrows its key (and it is
    /// unambiguous, a repository name cannot contain `@`).
    references: HashMap<String, (Digest, L, Instant)>,
    content: HashMap<Digest, Bytes>,
    content_bytes: usize,
}

impl<L: Clone> ManifestCache<L> {
    pub(super) fn new(ttl: Duration, max_content_bytes: usize, clock: Clock) -> Self {
        ManifestCache {
            ttl,
            clock,
            max_content_bytes,
            state: Mutex::new(State {
                references: HashMap::new(),
                content: HashMap::new(),
                content_bytes: 0,
            }),
            counts: Counts::default(),
        }
    }

    pub(super) fn stats(&self) -> CacheStats {
        let c = &self.counts;
        CacheStats {
            reference_hits: c.reference_hits.load(Ordering::Relaxed),
            reference_misses: c.reference_misses.load(Ordering::Relaxed),
            content_hits: c.content_hits.load(Ordering::Relaxed),
            content_misses: c.content_misses.load(Ordering::Relaxed),
        }
    }

    fn state(&self) -> MutexGuard<'_, State<L>> {
        // The state is plain maps, consistent after every statement: a panic elsewhere
        // while holding the lock leaves nothing half-done.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn reference(&self, key: &str) -> Option<(Digest, L)> {
        let c = &self.counts;
        count(
            self.lookup_reference(key),
            &c.reference_hits,
            &c.reference_misses,
        )
    }

    fn lookup_reference(&self, key: &str) -> Option<(Digest, L)> {
        if self.ttl.is_zero() {
            return None;
        }
        let state = self.state();
        let (digest, link, at) = state.references.get(key)?;
        let age = self.clock.now().saturating_duration_since(*at);
        (age < self.ttl).then(|| (digest.clone(), link.clone()))
    }

    pub(super) fn put_reference(&self, key: String, digest: &Digest, link: &L) {
        if self.ttl.is_zero() {
            return;
        }
        let mut state = self.state();
        if state.references.len() >= MAX_REFERENCES {
            state.references.clear();
        }
        state
            .references
            .insert(key, (digest.clone(), link.clone(), self.clock.now()));
    }

    /// After any change to manifests or tags made through this node.
    pub(super) fn forget_references(&self) {
        self.state().references.clear();
    }

    pub(super) fn content(&self, digest: &Digest) -> Option<Bytes> {
        let found = self.state().content.get(digest).cloned();
        let c = &self.counts;
        count(found, &c.content_hits, &c.content_misses)
    }

    pub(super) fn put_content(&self, digest: &Digest, bytes: &Bytes) {
        if bytes.len() > self.max_content_bytes / 16 {
            return; // a few huge manifests must not push out all the others
        }
        let mut state = self.state();
        while state.content_bytes + bytes.len() > self.max_content_bytes {
            // Any entry will do: the hot set refills on its next reads.
            let Some(victim) = state.content.keys().next().cloned() else {
                break;
            };
            if let Some(old) = state.content.remove(&victim) {
                state.content_bytes -= old.len();
            }
        }
        if let Some(old) = state.content.insert(digest.clone(), bytes.clone()) {
            state.content_bytes -= old.len();
        }
        state.content_bytes += bytes.len();
    }

    pub(super) fn forget_content(&self, digest: &Digest) {
        let mut state = self.state();
        if let Some(old) = state.content.remove(digest) {
            state.content_bytes -= old.len();
        }
    }

    /// Drops everything (access was revoked: no plaintext stays in memory).
    pub(super) fn clear(&self) {
        let mut state = self.state();
        state.references.clear();
        state.content.clear();
        state.content_bytes = 0;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::compute(crate::Algorithm::Sha256, &[n])
    }

    #[test]
    fn references_expire_and_are_forgotten() {
        let clock = Clock::manual();
        let ttl = Duration::from_millis(200);
        let cache = ManifestCache::<u32>::new(ttl, 1024, clock.clone());
        cache.put_reference("r@latest".into(), &digest(1), &7);
        assert_eq!(cache.reference("r@latest"), Some((digest(1), 7)));
        assert_eq!(cache.reference("r@other"), None);
        assert_eq!(cache.reference("s@latest"), None);
        cache.forget_references();
        assert_eq!(cache.reference("r@latest"), None);

        cache.put_reference("r@latest".into(), &digest(1), &7);
        clock.advance(ttl - Duration::from_nanos(1));
        assert_eq!(
            cache.reference("r@latest"),
            Some((digest(1), 7)),
            "still fresh"
        );
        clock.advance(Duration::from_nanos(1));
        assert_eq!(
            cache.reference("r@latest"),
            None,
            "expired at exactly the TTL"
        );
    }

    #[test]
    fn zero_ttl_caches_no_references() {
        let cache = ManifestCache::<u32>::new(Duration::ZERO, 1024, Clock::system());
        cache.put_reference("r@latest".into(), &digest(1), &7);
        assert_eq!(cache.reference("r@latest"), None);
    }

    #[test]
    fn content_stays_within_its_budget() {
        let cache = ManifestCache::<u32>::new(Duration::from_secs(1), 1600, Clock::system());
        for n in 0..40u8 {
            cache.put_content(&digest(n), &Bytes::from(vec![n; 100]));
            let state = cache.state();
            let held: usize = state.content.values().map(Bytes::len).sum();
            assert_eq!(held, state.content_bytes);
            assert!(held <= 1600, "{held} bytes held");
        }
        assert_eq!(cache.content(&digest(39)), Some(Bytes::from(vec![39; 100])));
        // Larger than a sixteenth of the budget: not cached at all.
        cache.put_content(&digest(200), &Bytes::from(vec![0; 101]));
        assert_eq!(cache.content(&digest(200)), None);
        cache.forget_content(&digest(39));
        assert_eq!(cache.content(&digest(39)), None);
        cache.clear();
        assert_eq!(cache.state().content_bytes, 0);
        assert!(cache.state().content.is_empty());
    }
}
