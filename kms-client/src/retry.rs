//! Retries of remote calls: one policy and one loop for every call a provider makes
//! over the network (Key Vault data plane, Entra ID token requests, IMDS).
//!
//! - **What is transient** (`transient_status`): 429 and 5xx answers, and requests
//!   that got no answer (connection refused or reset, timeout). Anything else is the
//!   caller's to classify and is never retried here.
//! - **How often**: at most [`RetryPolicy::max_attempts`] attempts in all.
//! - **How long between attempts**: the server's `Retry-After` when it sent one,
//!   otherwise exponential backoff with "equal jitter" (`backoff_delay`).
//! - **Retry-After is capped**: an answer asking for a longer wait than
//!   [`RetryPolicy::max_retry_after`] ends the retries at once. Waiting an hour inside
//!   one call (Entra and Key Vault may ask for that) would stall start-up and the key
//!   watcher; failing `Transient` lets the watcher's own schedule try again later.
//!
//! The loop is `run`; a caller says what each attempt came to with `Attempt`.

use std::future::Future;
use std::time::Duration;

/// Retry policy of remote calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (default 4). At least 1 is used.
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubled each time (default 200 ms).
    pub base_delay: Duration,
    /// Cap of one backoff delay (default 5 s).
    pub max_delay: Duration,
    /// A longer `Retry-After` is not waited for: the call fails `Transient` at once
    /// (default 30 s).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

/// What one attempt of a remote call came to.
#[derive(Debug)]
pub(crate) enum Attempt<T> {
    /// Finished, successfully or with a failure that retrying will not change.
    Done(T),
    /// Failed in a way that may pass (see [`transient_status`]); `why` ends up in the
    /// error when the retries run out.
    Transient {
        why: String,
        retry_after: Option<Duration>,
    },
}

/// Why [`run`] stopped retrying. Its `Display` is the reason for a `Transient` error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GaveUp {
    /// Every attempt failed transiently.
    Exhausted { attempts: u32, why: String },
    /// The server asked to wait longer than the policy allows.
    RetryAfterTooLong {
        asked: Duration,
        cap: Duration,
        why: String,
    },
}

impl std::fmt::Display for GaveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GaveUp::Exhausted { attempts, why } => {
                write!(f, "gave up after {attempts} attempt(s): {why}")
            }
            GaveUp::RetryAfterTooLong { asked, cap, why } => write!(
                f,
                "throttled with Retry-After of {} s, longer than the {} s this provider waits: {why}",
                asked.as_secs(),
                cap.as_secs()
            ),
        }
    }
}

/// Whether an HTTP answer with `status` is worth another attempt: 429 (throttled)
/// and 5xx (the service is failing). Every other status is final.
pub(crate) fn transient_status(status: u16) -> bool {
    status == 429 || (500..=599).contains(&status)
}

/// Why a request got no answer: a connection error, a timeout, or something else.
/// Every such failure is transient. Our URLs carry no secrets (secrets and
/// assertions travel in form bodies, tokens in headers), so the error may be shown.
pub(crate) fn describe_transport_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "the request timed out".to_owned()
    } else if e.is_connect() {
        format!("cannot connect: {e}")
    } else {
        format!("request failed: {e}")
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by Key Vault or Entra).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Calls `attempt` (with the attempt number, from 1) until it is `Done`, waiting
/// between transient failures as the module docs describe.
///
/// Fails with [`GaveUp`] when the attempts run out or a `Retry-After` is too long.
pub(crate) async fn run<T, F, Fut>(
    policy: &RetryPolicy,
    subject: &str,
    mut attempt: F,
) -> Result<T, GaveUp>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    let max = policy.max_attempts.max(1);
    let mut n = 0u32;
    loop {
        n += 1;
        let (why, retry_after) = match attempt(n).await {
            Attempt::Done(t) => return Ok(t),
            Attempt::Transient { why, retry_after } => (why, retry_after),
        };
        if n >= max {
            return Err(GaveUp::Exhausted { attempts: n, why });
        }
        let delay = match retry_after {
            Some(asked) if asked > policy.max_retry_after => {
                return Err(GaveUp::RetryAfterTooLong {
                    asked,
                    cap: policy.max_retry_after,
                    why,
                })
            }
            Some(asked) => asked,
            None => backoff_delay(policy, n),
        };
        tracing::debug!(target: "valv::kms", subject, attempt = n, delay_ms = delay.as_millis() as u64, reason = %why, "retrying");
        tokio::time::sleep(delay).await;
    }
}

/// Exponential backoff with "equal jitter": half the capped delay plus a random
/// part of the other half, before attempt `attempt + 1`.
pub(crate) fn backoff_delay(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exp = policy
        .base_delay
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(policy.max_delay);
    let half = capped / 2;
    half + half.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use tokio::time::Instant;

    /// An attempt that answers with the next status of `script` (200 once it runs
    /// out), classified the way the providers classify answers.
    struct Scripted {
        script: Mutex<Vec<(u16, Option<u64>)>>,
        calls: Mutex<u32>,
    }

    impl Scripted {
        fn new(script: &[(u16, Option<u64>)]) -> Self {
            Scripted {
                script: Mutex::new(script.iter().rev().copied().collect()),
                calls: Mutex::new(0),
            }
        }

        async fn attempt(&self) -> Attempt<Result<(), u16>> {
            *self.calls.lock().unwrap() += 1;
            let next = self.script.lock().unwrap().pop();
            match next {
                None => Attempt::Done(Ok(())),
                Some((status, _)) if !transient_status(status) => Attempt::Done(Err(status)),
                Some((status, retry_after)) => Attempt::Transient {
                    why: format!("answered {status}"),
                    retry_after: retry_after.map(Duration::from_secs),
                },
            }
        }

        fn calls(&self) -> u32 {
            *self.calls.lock().unwrap()
        }
    }

    async fn run_script(policy: &RetryPolicy, s: &Scripted) -> Result<Result<(), u16>, GaveUp> {
        run(policy, "test", |_| s.attempt()).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_retry_after_is_capped() {
        let s = Scripted::new(&[(429, Some(3600))]);
        let started = Instant::now();
        let policy = RetryPolicy::default();
        let err = run_script(&policy, &s).await.unwrap_err();
        assert!(
            matches!(err, GaveUp::RetryAfterTooLong { asked, .. } if asked == Duration::from_secs(3600)),
            "{err:?}"
        );
        assert!(err.to_string().contains("Retry-After of 3600 s"), "{err}");
        assert_eq!(s.calls(), 1);
        assert!(
            started.elapsed() <= policy.max_retry_after,
            "waited {:?}",
            started.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_and_unavailability_are_retried_until_success() {
        let s = Scripted::new(&[(429, Some(7)), (503, None), (500, None)]);
        let started = Instant::now();
        assert_eq!(run_script(&RetryPolicy::default(), &s).await, Ok(Ok(())));
        assert_eq!(s.calls(), 4);
        // Retry-After honoured, then backoffs of at least half of 400 ms and 800 ms.
        let least = Duration::from_secs(7) + Duration::from_millis(200 + 400);
        assert!(
            started.elapsed() >= least,
            "waited only {:?}",
            started.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn client_errors_are_not_retried() {
        for status in [400, 401, 403, 404] {
            let s = Scripted::new(&[(status, None)]);
            let started = Instant::now();
            assert_eq!(
                run_script(&RetryPolicy::default(), &s).await,
                Ok(Err(status))
            );
            assert_eq!(s.calls(), 1, "{status}");
            assert_eq!(started.elapsed(), Duration::ZERO, "{status}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_bounded() {
        let s = Scripted::new(&[(503, None); 10]);
        let policy = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        let err = run_script(&policy, &s).await.unwrap_err();
        assert_eq!(
            err,
            GaveUp::Exhausted {
                attempts: 3,
                why: "answered 503".into()
            }
        );
        assert_eq!(s.calls(), 3);
        let s = Scripted::new(&[(503, None); 10]);
        let once = RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        };
        run_script(&once, &s).await.unwrap_err();
        assert_eq!(s.calls(), 1, "max_attempts 0 still makes one attempt");
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
            ..RetryPolicy::default()
        };
        for attempt in 1..40 {
            let d = backoff_delay(&p, attempt);
            assert!(d <= Duration::from_millis(300), "{d:?}");
        }
        let d = backoff_delay(&p, 1);
        assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(100));
    }
}
