//! `valv-conformance`: a black-box test suite for the OCI distribution spec v1.1, run
//! against any registry URL.
//!
//! It depends on none of valv's crates: the HTTP client ([`http`]), the digests
//! ([`digest`]) and the manifests it builds ([`fixtures`]) are its own, so that a bug
//! shared by the server and its tests cannot pass both.
//!
//! # Layout
//! - [`http`]: a small blocking HTTP/1.1 client (and message parser).
//! - [`digest`]: sha256 / sha512 content digests.
//! - [`ctx`]: what a test gets: the registry client, a repository of its own, checks.
//! - [`fixtures`]: random content, images, indexes and artifacts, and the push helpers.
//! - `tests/*`: the tests, one module per area of the spec, each test naming the
//!   requirement it checks and whether the spec says MUST or SHOULD.
//! - [`expected`]: the expected-failures file (test id → reason).
//! - [`report`]: the run's outcome as text, JSON and JUnit XML.
//!
//! A test fails when the registry does something the spec forbids (MUST) or does not do
//! what it recommends (SHOULD); the report says which. Optional features (MAY) are
//! tested for correctness when the registry offers them, and skipped with a reason when
//! it declares it does not (for example deletes answered 405).

pub mod ctx;
pub mod digest;
pub mod expected;
pub mod fixtures;
pub mod http;
pub mod report;
mod tests;

use std::time::{Duration, Instant};

pub use ctx::{Ctx, Failure};
pub use report::{Outcome, Report, TestResult};

/// How strongly the spec states the requirement a test checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Level {
    #[serde(rename = "MUST")]
    Must,
    #[serde(rename = "SHOULD")]
    Should,
    /// An optional feature, checked for correctness where offered.
    #[serde(rename = "MAY")]
    May,
}

/// The spec's workflow categories (plus the error envelope).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Area {
    Base,
    Pull,
    Push,
    ContentDiscovery,
    ContentManagement,
    Errors,
}

impl Area {
    pub fn name(self) -> &'static str {
        match self {
            Area::Base => "base",
            Area::Pull => "pull",
            Area::Push => "push",
            Area::ContentDiscovery => "content-discovery",
            Area::ContentManagement => "content-management",
            Area::Errors => "errors",
        }
    }
}

/// One test: an id that names it in reports and expected-failures files, the
/// requirement it checks, and the check.
#[derive(Debug, Clone, Copy)]
pub struct TestCase {
    pub id: &'static str,
    pub area: Area,
    pub level: Level,
    /// Where the requirement is stated and what it says, e.g.
    /// `end-2: a GET of an existing blob MUST return 200 and the blob`.
    pub requirement: &'static str,
    pub run: fn(&mut Ctx) -> Result<(), Failure>,
}

/// Every test of the suite, in the order they run.
pub fn all_tests() -> Vec<TestCase> {
    tests::all()
}

/// What to run against.
#[derive(Debug, Clone)]
pub struct Config {
    /// `http://host:port` of the registry.
    pub url: String,
    /// Repository prefix for everything the suite pushes.
    pub namespace: String,
    /// Repository prefix for the source repositories of cross-repository mounts.
    pub crossmount_namespace: String,
    /// `Some(true)`: a mount without `from` MUST succeed (201); `Some(false)`: it MUST
    /// start an upload (202); `None`: either is accepted, as the spec allows.
    pub automatic_crossmount: Option<bool>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Run only the tests whose id contains one of these substrings (all when empty).
    pub filter: Vec<String>,
}

impl Config {
    /// A config with a fresh random namespace, so runs never see each other's content.
    pub fn new(url: &str) -> Config {
        let run = fixtures::run_id();
        Config {
            url: url.to_owned(),
            namespace: format!("conformance/{run}"),
            crossmount_namespace: format!("conformance/{run}-source"),
            automatic_crossmount: None,
            timeout: Duration::from_secs(60),
            filter: Vec::new(),
        }
    }
}

/// Runs the (selected) tests against the registry and returns the results, in order.
///
/// Fails only when the configuration is unusable (for example a malformed URL); a
/// registry that does not answer makes every test fail, which the report shows.
pub fn run(config: &Config) -> Result<Vec<TestResult>, String> {
    let origin = http::Origin::parse_base(&config.url)?;
    if config.namespace == config.crossmount_namespace {
        return Err("the namespace and the crossmount namespace must differ".to_owned());
    }
    let mut results = Vec::new();
    for case in all_tests() {
        if !config.filter.is_empty() && !config.filter.iter().any(|f| case.id.contains(f.as_str()))
        {
            continue;
        }
        let mut ctx = Ctx::new(origin.clone(), config, case.id);
        let started = Instant::now();
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (case.run)(&mut ctx)));
        let outcome = match outcome {
            Ok(Ok(())) => Outcome::Passed,
            Ok(Err(Failure::Fail(msg))) => Outcome::Failed(msg),
            Ok(Err(Failure::Skip(msg))) => Outcome::Skipped(msg),
            Err(panic) => Outcome::Failed(format!(
                "the test panicked (a bug in the suite): {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("?")
            )),
        };
        results.push(TestResult {
            id: case.id.to_owned(),
            area: case.area,
            level: case.level,
            requirement: case.requirement.to_owned(),
            outcome,
            duration: started.elapsed(),
            expected_failure: None,
            requests: ctx.requests,
        });
    }
    Ok(results)
}
