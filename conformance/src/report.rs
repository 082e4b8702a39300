//! Results and reports: a text summary, `report.json` and `junit.xml`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::expected::ExpectedFailures;
use crate::{Area, Level};

/// How a test ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed(String),
    Skipped(String),
}

/// One test's result.
#[derive(Debug, Clone)]
pub struct TestResult {
    pub id: String,
    pub area: Area,
    pub level: Level,
    pub requirement: String,
    pub outcome: Outcome,
    pub duration: Duration,
    /// The reason from the expected-failures file, when the test is listed there.
    pub expected_failure: Option<String>,
    /// `METHOD target -> status` of each request the test sent.
    pub requests: Vec<String>,
}

impl TestResult {
    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed(_))
    }

    /// A failure the expected-failures file does not excuse.
    pub fn unexpected_failure(&self) -> bool {
        self.failed() && self.expected_failure.is_none()
    }
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct Report {
    pub url: String,
    pub results: Vec<TestResult>,
    /// Entries of the expected-failures file whose test passed (stale entries).
    pub unexpected_passes: Vec<String>,
}

impl Report {
    /// Applies the expected-failures list to the results.
    pub fn new(url: &str, mut results: Vec<TestResult>, expected: &ExpectedFailures) -> Report {
        let mut unexpected_passes = Vec::new();
        for r in &mut results {
            if let Some(reason) = expected.get(&r.id) {
                r.expected_failure = Some(reason.clone());
                if r.outcome == Outcome::Passed {
                    unexpected_passes.push(r.id.clone());
                }
            }
        }
        Report {
            url: url.to_owned(),
            results,
            unexpected_passes,
        }
    }

    pub fn passed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Passed))
    }

    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Failed(_)))
    }

    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Skipped(_)))
    }

    pub fn unexpected_failures(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.unexpected_failure())
            .count()
    }

    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.results.iter().filter(|r| f(&r.outcome)).count()
    }

    /// The spec-mandated last line.
    pub fn summary_line(&self) -> String {
        format!(
            "conformance: {} passed, {} failed, {} skipped",
            self.passed(),
            self.failed(),
            self.skipped()
        )
    }

    /// One line a test, then the failures in detail, then the summary line.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for r in &self.results {
            let (tag, note) = match (&r.outcome, &r.expected_failure) {
                (Outcome::Passed, None) => ("pass", String::new()),
                (Outcome::Passed, Some(_)) => (
                    "PASS",
                    " (listed as an expected failure: remove the entry)".to_owned(),
                ),
                (Outcome::Failed(_), None) => ("FAIL", String::new()),
                (Outcome::Failed(_), Some(reason)) => ("xfail", format!(" (expected: {reason})")),
                (Outcome::Skipped(why), _) => ("skip", format!(" ({why})")),
            };
            let _ = writeln!(out, "{tag:5} {:<52} {:6?}{note}", r.id, r.level);
        }
        let failures: Vec<&TestResult> = self
            .results
            .iter()
            .filter(|r| r.unexpected_failure())
            .collect();
        if !failures.is_empty() {
            let _ = writeln!(out, "\nfailures:");
            for r in failures {
                if let Outcome::Failed(msg) = &r.outcome {
                    let _ = writeln!(out, "\n{} [{:?}] {}\n  {msg}", r.id, r.level, r.requirement);
                    for line in r.requests.iter().rev().take(8).rev() {
                        let _ = writeln!(out, "    {line}");
                    }
                }
            }
        }
        let expected = self
            .results
            .iter()
            .filter(|r| r.failed() && r.expected_failure.is_some())
            .count();
        let _ = writeln!(
            out,
            "\n{} of the failures are listed as expected; {} are not; {} expected failures passed",
            expected,
            self.unexpected_failures(),
            self.unexpected_passes.len()
        );
        let _ = writeln!(out, "{}", self.summary_line());
        out
    }

    pub fn json(&self) -> serde_json::Value {
        let tests: Vec<serde_json::Value> = self
            .results
            .iter()
            .map(|r| {
                let (outcome, message) = match &r.outcome {
                    Outcome::Passed => ("passed", None),
                    Outcome::Failed(m) => ("failed", Some(m.clone())),
                    Outcome::Skipped(m) => ("skipped", Some(m.clone())),
                };
                json!({
                    "id": r.id,
                    "area": r.area,
                    "level": r.level,
                    "requirement": r.requirement,
                    "outcome": outcome,
                    "message": message,
                    "expectedFailure": r.expected_failure,
                    "durationMs": r.duration.as_millis() as u64,
                    "requests": r.requests,
                })
            })
            .collect();
        json!({
            "registry": self.url,
            "summary": {
                "passed": self.passed(),
                "failed": self.failed(),
                "skipped": self.skipped(),
                "unexpectedFailures": self.unexpected_failures(),
                "unexpectedPasses": self.unexpected_passes,
            },
            "tests": tests,
        })
    }

    /// JUnit XML: one testsuite per area. An expected failure is reported as skipped
    /// (with the reason and the failure message), so CI dashboards show only real
    /// failures as failures.
    pub fn junit(&self) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let total_time: f64 = self.results.iter().map(|r| r.duration.as_secs_f64()).sum();
        let _ = writeln!(
            out,
            "<testsuites name=\"valv-conformance\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{total_time:.3}\">",
            self.results.len(),
            self.unexpected_failures(),
            self.results.len() - self.passed() - self.unexpected_failures(),
        );
        let mut areas: Vec<Area> = Vec::new();
        for r in &self.results {
            if !areas.contains(&r.area) {
                areas.push(r.area);
            }
        }
        for area in areas {
            let rs: Vec<&TestResult> = self.results.iter().filter(|r| r.area == area).collect();
            let failures = rs.iter().filter(|r| r.unexpected_failure()).count();
            let passed = rs.iter().filter(|r| r.outcome == Outcome::Passed).count();
            let _ = writeln!(
                out,
                "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{}\">",
                area.name(),
                rs.len(),
                rs.len() - passed - failures
            );
            for r in rs {
                let _ = write!(
                    out,
                    "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                    area.name(),
                    xml(&r.id),
                    r.duration.as_secs_f64()
                );
                match (&r.outcome, &r.expected_failure) {
                    (Outcome::Passed, _) => out.push_str("/>\n"),
                    (Outcome::Failed(m), None) => {
                        let _ = writeln!(
                            out,
                            ">\n      <failure message=\"{}\">{}\n{}</failure>\n    </testcase>",
                            xml(m),
                            xml(&r.requirement),
                            xml(&r.requests.join("\n"))
                        );
                    }
                    (Outcome::Failed(m), Some(reason)) => {
                        let _ = writeln!(
                            out,
                            ">\n      <skipped message=\"expected failure: {}\"/>\n      <system-out>{}</system-out>\n    </testcase>",
                            xml(reason),
                            xml(m)
                        );
                    }
                    (Outcome::Skipped(m), _) => {
                        let _ = writeln!(
                            out,
                            ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                            xml(m)
                        );
                    }
                }
            }
            out.push_str("  </testsuite>\n");
        }
        out.push_str("</testsuites>\n");
        out
    }

    /// Writes `report.json` and `junit.xml` into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_vec_pretty(&self.json()).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("report.json"), json)?;
        std::fs::write(dir.join("junit.xml"), self.junit())
    }
}

/// Escapes text for XML attributes and content; drops characters XML 1.0 cannot carry.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escapes() {
        assert_eq!(xml("a<b>&\"c'\u{1}"), "a&lt;b&gt;&amp;&quot;c&apos;");
    }
}
