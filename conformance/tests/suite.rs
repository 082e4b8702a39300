//! The suite, run as its users run it (the `valv-conformance` binary), against valv and
//! against the reference registry:
//!
//! - valv: every test passes, with an empty expected-failures list, and nothing is
//!   skipped (valv supports every optional feature the suite probes);
//! - CNCF distribution 2.8.2: every failure is listed in
//!   `expected-failures/distribution-2.8.2.txt`, and every listed test does fail (no
//!   stale entries), so the list says exactly what 2.8.2 lacks.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

struct Run {
    status: std::process::ExitStatus,
    stdout: String,
    report: Value,
    junit: String,
}

/// How many cases the suite has: every one must run (and pass) against valv, so a
/// case that stops being registered, or a filter left on, fails here.
const SUITE_CASES: u64 = 87;

fn run_cli(url: &str, args: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_valv-conformance"))
        .args(["--url", url, "--report"])
        .arg(dir.path())
        .args(args)
        .output()
        .expect("run valv-conformance");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report = std::fs::read(dir.path().join("report.json")).expect("report.json written");
    let junit = std::fs::read_to_string(dir.path().join("junit.xml")).expect("junit.xml written");
    Run {
        status: out.status,
        stdout,
        report: serde_json::from_slice(&report).expect("report.json is JSON"),
        junit,
    }
}

fn last_line(stdout: &str) -> &str {
    stdout.lines().last().unwrap_or("")
}

fn count(report: &Value, key: &str) -> u64 {
    report["summary"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("summary.{key} in report.json"))
}

#[test]
fn valv_passes_every_test_with_no_expected_failures() {
    let valv = common::start_valv();
    let empty = Path::new(env!("CARGO_MANIFEST_DIR")).join("expected-failures/valv.txt");
    let text = std::fs::read_to_string(&empty).expect("expected-failures/valv.txt");
    assert!(
        text.lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')),
        "valv's expected-failures list must stay empty"
    );
    let run = run_cli(
        &valv.url,
        &[
            "--automatic-crossmount",
            "true",
            "--expected-failures",
            empty.to_str().expect("utf-8 path"),
        ],
    );
    let tests = run.report["tests"].as_array().expect("tests array");
    let total = tests.len() as u64;
    assert_eq!(
        total, SUITE_CASES,
        "the suite ran {total} tests; it has {SUITE_CASES} (a case added or removed changes SUITE_CASES too)"
    );
    assert_eq!(
        last_line(&run.stdout),
        format!("conformance: {total} passed, 0 failed, 0 skipped"),
        "every test passes against valv"
    );
    assert!(run.status.success(), "exit status {}", run.status);
    assert_eq!(count(&run.report, "failed"), 0);
    assert_eq!(count(&run.report, "skipped"), 0);
    // Every test names its requirement and strength.
    for t in tests {
        assert!(
            t["requirement"].as_str().is_some_and(|r| r.len() > 10),
            "requirement of {t}"
        );
        assert!(
            matches!(t["level"].as_str(), Some("MUST" | "SHOULD" | "MAY")),
            "level of {t}"
        );
    }
    assert!(
        run.junit
            .contains(&format!("tests=\"{total}\" failures=\"0\"")),
        "JUnit totals"
    );
    assert_eq!(
        run.junit.matches("<testcase ").count() as u64,
        total,
        "one JUnit testcase per test"
    );
}

#[test]
fn distribution_fails_only_the_listed_tests() {
    let Some(registry) = common::start_distribution() else {
        return;
    };
    let list =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("expected-failures/distribution-2.8.2.txt");
    let run = run_cli(
        &registry.url,
        &["--expected-failures", list.to_str().expect("utf-8 path")],
    );
    let tests = run.report["tests"].as_array().expect("tests array");
    let unexpected: Vec<&str> = tests
        .iter()
        .filter(|t| t["outcome"] == "failed" && t["expectedFailure"].is_null())
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert!(
        unexpected.is_empty(),
        "failures not in the expected list: {unexpected:?}"
    );
    let stale = run.report["summary"]["unexpectedPasses"]
        .as_array()
        .expect("unexpectedPasses");
    assert!(
        stale.is_empty(),
        "listed as expected failures but passed: {stale:?}"
    );
    assert!(run.status.success(), "exit status {}", run.status);
    let failed = count(&run.report, "failed");
    assert!(
        failed > 0,
        "2.8.2 lacks the referrers API, so some tests must fail"
    );
    assert!(
        last_line(&run.stdout).starts_with("conformance: ")
            && last_line(&run.stdout).contains(&format!(" {failed} failed")),
        "summary line: {}",
        last_line(&run.stdout)
    );
    // And the same run without the list fails.
    let strict = run_cli(&registry.url, &["--filter", "referrers-list"]);
    assert!(
        !strict.status.success(),
        "an unlisted failure makes the exit status non-zero"
    );
}

#[test]
fn bad_expected_failures_files_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text, complaint) in [
        ("no-reason.txt", "pull/blob-get\n", "no reason"),
        (
            "unknown.txt",
            "pull/no-such-test because\n",
            "no test is called",
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write list");
        let out = Command::new(env!("CARGO_BIN_EXE_valv-conformance"))
            .args(["--url", "http://127.0.0.1:9", "--expected-failures"])
            .arg(&path)
            .output()
            .expect("run valv-conformance");
        assert_eq!(out.status.code(), Some(2), "{name}: exit status");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(complaint),
            "{name}: stderr {err:?} names the problem"
        );
    }
}

#[test]
fn an_unreachable_registry_fails_every_test() {
    // A port we hold for the whole test, where every connection is closed as soon as
    // it is accepted: no request is ever answered, and no other process can take the
    // port meanwhile (as it could one that was bound and dropped).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    let run = run_cli(&format!("http://127.0.0.1:{port}"), &["--filter", "base/"]);
    assert!(!run.status.success());
    assert_eq!(
        last_line(&run.stdout),
        "conformance: 0 passed, 2 failed, 0 skipped"
    );
}
