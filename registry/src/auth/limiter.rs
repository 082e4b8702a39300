//! Failed-authentication rate limits, per client address and per user name.
//!
//! Each key (an address, a user) counts its failures in a fixed window that starts at
//! its first failure. Once a key has `max_failures` in its window, every attempt with
//! credentials from that address (or for that user) is answered 429 until the window
//! ends, without verifying anything, so a brute force costs us nothing. A success
//! resets nothing: otherwise an attacker with one valid account could clear the
//! counters of the addresses it guesses from. The tables are capped; when one is full,
//! expired windows go first, then the window closest to its end.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::auth::LimitsConfig;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

#[derive(Debug)]
struct Table<K> {
    windows: HashMap<K, Window>,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new() -> Self {
        Table {
            windows: HashMap::new(),
        }
    }

    /// How long `key` stays blocked, if it is.
    fn blocked(&mut self, key: &K, now: Instant, limits: &Limits) -> Option<Duration> {
        let w = self.windows.get(key)?;
        let ends = w.started + limits.window;
        if ends <= now {
            self.windows.remove(key);
            return None;
        }
        (w.failures >= limits.max_failures).then(|| ends - now)
    }

    fn fail(&mut self, key: K, now: Instant, limits: &Limits) {
        if !self.windows.contains_key(&key) && self.windows.len() >= limits.max_tracked {
            let window = limits.window;
            self.windows.retain(|_, w| w.started + window > now);
            if self.windows.len() >= limits.max_tracked {
                if let Some(k) = self
                    .windows
                    .iter()
                    .min_by_key(|(_, w)| w.started)
                    .map(|(k, _)| k.clone())
                {
                    self.windows.remove(&k);
                }
            }
        }
        let w = self.windows.entry(key).or_insert(Window {
            started: now,
            failures: 0,
        });
        if w.started + limits.window <= now {
            *w = Window {
                started: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
    }
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    max_failures: u32,
    window: Duration,
    max_tracked: usize,
}

/// The failure counters.
#[derive(Debug)]
pub struct Limiter {
    limits: Limits,
    addresses: Mutex<Table<IpAddr>>,
    users: Mutex<Table<String>>,
}

impl Limiter {
    pub fn new(config: &LimitsConfig) -> Limiter {
        Limiter {
            limits: Limits {
                max_failures: config.max_failures.max(1),
                window: Duration::from_secs(config.window_secs.max(1)),
                max_tracked: config.max_tracked.max(1),
            },
            addresses: Mutex::new(Table::new()),
            users: Mutex::new(Table::new()),
        }
    }

    /// `Some(retry_after)` when attempts from `addr` or for `user` are blocked.
    pub fn check(&self, addr: IpAddr, user: Option<&str>) -> Option<Duration> {
        self.check_at(addr, user, Instant::now())
    }

    /// Counts a failed authentication from `addr` (and for `user`, when one was named).
    pub fn fail(&self, addr: IpAddr, user: Option<&str>) {
        self.fail_at(addr, user, Instant::now())
    }

    fn check_at(&self, addr: IpAddr, user: Option<&str>, now: Instant) -> Option<Duration> {
        let a = lock(&self.addresses).blocked(&addr, now, &self.limits);
        let u = user.and_then(|u| lock(&self.users).blocked(&u.to_owned(), now, &self.limits));
        a.max(u)
    }

    fn fail_at(&self, addr: IpAddr, user: Option<&str>, now: Instant) {
        lock(&self.addresses).fail(addr, now, &self.limits);
        if let Some(u) = user {
            lock(&self.users).fail(u.to_owned(), now, &self.limits);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max: u32, window: u64, tracked: usize) -> Limiter {
        Limiter::new(&LimitsConfig {
            max_failures: max,
            window_secs: window,
            max_tracked: tracked,
        })
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    #[test]
    fn blocks_after_max_failures_until_the_window_ends() {
        let l = limiter(3, 60, 100);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check_at(A, Some("u"), t0), None);
            l.fail_at(A, Some("u"), t0);
        }
        let left = l
            .check_at(A, None, t0 + Duration::from_secs(10))
            .expect("blocked");
        assert_eq!(left, Duration::from_secs(50));
        assert!(
            l.check_at(B, Some("u"), t0).is_some(),
            "the user is blocked from anywhere"
        );
        assert_eq!(
            l.check_at(B, Some("v"), t0),
            None,
            "another address and user are not"
        );
        assert_eq!(l.check_at(A, None, t0 + Duration::from_secs(60)), None);
        assert_eq!(l.check_at(B, Some("u"), t0 + Duration::from_secs(60)), None);
    }

    #[test]
    fn tables_are_bounded() {
        let l = limiter(1, 60, 2);
        let t0 = Instant::now();
        for i in 0..10u8 {
            l.fail_at(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, i)), None, t0);
        }
        assert!(lock(&l.addresses).windows.len() <= 2);
        assert!(l
            .check_at(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 9)), None, t0)
            .is_some());
    }
}
