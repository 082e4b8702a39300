//! Open upload sessions, counted per client and per repository so that one client (or
//! everyone, in one repository) cannot open sessions without bound: a session's state
//! is an object in the store and an entry here, and nothing ends one that its client
//! abandons.
//!
//! A session counts from the `POST` that opens it until its commit or cancel succeeds,
//! or until it has gone [`SessionLimits::idle`] without a request (it can still be
//! resumed after that; it just no longer holds a place). Past
//! `server.max_upload_sessions_per_client` or
//! `server.max_upload_sessions_per_repository` a new session is refused with 429
//! `TOOMANYREQUESTS` and `Retry-After`; sessions already open go on.
//!
//! The counts are this node's: behind a load balancer each node admits its own share,
//! and a restart forgets them (the sessions stay in the store, and resume).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use storage::names::{RepositoryName, UploadId};

use crate::http::admission::ClientKey;

/// Which limit refused a new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Client(usize),
    Repository(usize),
}

/// The open sessions of this node, and the limits they are held to.
#[derive(Debug)]
pub struct SessionLimits {
    per_client: usize,
    per_repository: usize,
    idle: Duration,
    inner: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    sessions: HashMap<UploadId, Tracked>,
    by_client: HashMap<ClientKey, usize>,
    by_repository: HashMap<String, usize>,
    /// When idle sessions were last let go (a scan of them all, at most once per
    /// [`SCAN_EVERY`]).
    scanned: Option<Instant>,
}

#[derive(Debug)]
struct Tracked {
    client: ClientKey,
    repository: String,
    touched: Instant,
}

/// How often idle sessions are looked for: a scan is linear in the open sessions.
const SCAN_EVERY: Duration = Duration::from_secs(10);

impl SessionLimits {
    /// Limits of `per_client` and `per_repository` open sessions, a session counting
    /// until it has been `idle` that long.
    pub fn new(per_client: usize, per_repository: usize, idle: Duration) -> SessionLimits {
        SessionLimits {
            per_client,
            per_repository,
            idle,
            inner: Mutex::new(Open::default()),
        }
    }

    /// How long a session may go without a request and still count.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    fn open(&self) -> std::sync::MutexGuard<'_, Open> {
        // The counts stay consistent under a panic elsewhere: every update is whole.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for one more session of `client` in `repo`, if both have room: held
    /// (counted) from now, so that concurrent requests cannot both take the last one.
    /// [`Reservation::opened`] records the session; dropped without it, the place is
    /// given back.
    pub fn admit(&self, client: IpAddr, repo: &RepositoryName) -> Result<Reservation<'_>, Refused> {
        let mut open = self.open();
        open.let_idle_go(Instant::now(), self.idle);
        let key = ClientKey::of(client);
        if open.by_client.get(&key).copied().unwrap_or(0) >= self.per_client {
            return Err(Refused::Client(self.per_client));
        }
        if open.by_repository.get(repo.as_str()).copied().unwrap_or(0) >= self.per_repository {
            return Err(Refused::Repository(self.per_repository));
        }
        *open.by_client.entry(key).or_default() += 1;
        *open.by_repository.entry(repo.to_string()).or_default() += 1;
        Ok(Reservation {
            limits: self,
            held: Some(Tracked {
                client: key,
                repository: repo.to_string(),
                touched: Instant::now(),
            }),
        })
    }

    /// A request used session `id`: it counts for another idle period.
    pub fn touched(&self, id: &UploadId) {
        if let Some(t) = self.open().sessions.get_mut(id) {
            t.touched = Instant::now();
        }
    }

    /// Session `id` ended (committed or cancelled): it no longer counts.
    pub fn ended(&self, id: &UploadId) {
        let mut open = self.open();
        if let Some(t) = open.sessions.remove(id) {
            open.release(t);
        }
    }

    /// Open sessions counted now, for tests and metrics.
    pub fn counted(&self) -> usize {
        self.open().sessions.len()
    }
}

/// A place held for a session being opened ([`SessionLimits::admit`]).
#[derive(Debug)]
pub struct Reservation<'a> {
    limits: &'a SessionLimits,
    held: Option<Tracked>,
}

impl Reservation<'_> {
    /// The session `id` was opened in the place held.
    pub fn opened(mut self, id: &UploadId) {
        if let Some(mut tracked) = self.held.take() {
            tracked.touched = Instant::now();
            let mut open = self.limits.open();
            if let Some(old) = open.sessions.insert(id.clone(), tracked) {
                // Ids are 128 random bits: a repeat is not expected, but it must not
                // leave a count behind.
                open.release(old);
            }
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(tracked) = self.held.take() {
            self.limits.open().release(tracked);
        }
    }
}

impl Open {
    fn release(&mut self, t: Tracked) {
        count_down(&mut self.by_client, &t.client);
        count_down(&mut self.by_repository, &t.repository);
    }

    fn let_idle_go(&mut self, now: Instant, idle: Duration) {
        if self
            .scanned
            .is_some_and(|at| now.duration_since(at) < SCAN_EVERY)
        {
            return;
        }
        self.scanned = Some(now);
        let (by_client, by_repository) = (&mut self.by_client, &mut self.by_repository);
        self.sessions.retain(|_, t| {
            let counts = now.duration_since(t.touched) < idle;
            if !counts {
                count_down(by_client, &t.client);
                count_down(by_repository, &t.repository);
            }
            counts
        });
    }
}

/// One fewer under `key`; a count that reaches 0 is removed, so the maps hold only
/// clients and repositories with sessions open.
fn count_down<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> RepositoryName {
        s.parse().expect("repository name")
    }

    #[test]
    fn each_limit_refuses_the_next_session_until_one_ends() {
        let limits = SessionLimits::new(2, 3, Duration::from_secs(3600));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let ids: Vec<UploadId> = (0..4).map(|_| UploadId::random()).collect();
        for id in &ids[..2] {
            limits.admit(a, &repo("r")).expect("room").opened(id);
        }
        assert_eq!(limits.admit(a, &repo("r")).err(), Some(Refused::Client(2)));
        assert_eq!(
            limits.admit(a, &repo("other")).err(),
            Some(Refused::Client(2))
        );
        // Another client, same repository: up to the repository's limit. A place held
        // counts at once, and is given back when no session comes of it.
        let held = limits.admit(b, &repo("r")).expect("room");
        assert_eq!(
            limits.admit(b, &repo("r")).err(),
            Some(Refused::Repository(3))
        );
        drop(held);
        limits
            .admit(b, &repo("r"))
            .expect("given back")
            .opened(&ids[2]);
        assert_eq!(
            limits.admit(b, &repo("r")).err(),
            Some(Refused::Repository(3))
        );
        assert!(limits.admit(b, &repo("elsewhere")).is_ok());
        // A commit or cancel frees a place in both counts; a repeat frees nothing.
        limits.ended(&ids[0]);
        limits.ended(&ids[0]);
        assert!(limits.admit(a, &repo("r")).is_ok());
        assert_eq!(limits.counted(), 2);
    }

    #[test]
    fn an_idle_session_stops_counting_and_a_touched_one_does_not() {
        let limits = SessionLimits::new(1, 10, Duration::from_secs(3600));
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8::ffff".parse().unwrap();
        let id = UploadId::random();
        limits.admit(a, &repo("r")).expect("room").opened(&id);
        assert_eq!(
            limits.admit(same_64, &repo("r")).err(),
            Some(Refused::Client(1)),
            "one /64"
        );
        // As if an hour and more had passed since its last use (and the last scan).
        {
            let mut open = limits.open();
            let past = Instant::now() - Duration::from_secs(3601);
            open.sessions.get_mut(&id).expect("tracked").touched = past;
            open.scanned = None;
        }
        let id = UploadId::random();
        limits
            .admit(a, &repo("r"))
            .expect("the idle one let go")
            .opened(&id);
        assert_eq!(limits.counted(), 1);
        // A session used within the period keeps its place.
        limits.touched(&id);
        limits.open().scanned = None;
        assert_eq!(limits.admit(a, &repo("r")).err(), Some(Refused::Client(1)));
    }
}
