//! Where the store reads the time for what expires in memory (the reference cache), so
//! that tests can move time by hand instead of waiting for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The store's monotonic clock: the system's in production ([`Clock::system`], the
/// default), or one that moves only when a test says so ([`Clock::manual`]).
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<Manual>>,
}

#[derive(Debug)]
struct Manual {
    start: Instant,
    /// Nanoseconds advanced since `start`.
    offset: AtomicU64,
}

impl Clock {
    /// `Instant::now()`.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock that stands still until [`Clock::advance`]; clones share its time.
    pub fn manual() -> Clock {
        Clock {
            manual: Some(Arc::new(Manual {
                start: Instant::now(),
                offset: AtomicU64::new(0),
            })),
        }
    }

    pub fn now(&self) -> Instant {
        match &self.manual {
            None => Instant::now(),
            Some(m) => m.start + Duration::from_nanos(m.offset.load(Ordering::SeqCst)),
        }
    }

    /// Moves a manual clock forward by `by`. Does nothing to the system clock.
    pub fn advance(&self, by: Duration) {
        if let Some(m) = &self.manual {
            let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
            m.offset.fetch_add(nanos, Ordering::SeqCst);
        }
    }
}
