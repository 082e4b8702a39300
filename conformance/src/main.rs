//! `valv-conformance --url URL`: runs the suite and reports.
//!
//! Exit status: 0 when every failure is listed in the expected-failures file, 1 when
//! some failure is not, 2 when the run could not be set up (bad arguments or file).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use valv_conformance::{all_tests, expected, run, Config, Report};

#[derive(Debug, Parser)]
#[command(
    name = "valv-conformance",
    version,
    about = "OCI distribution-spec v1.1 conformance suite, runnable against any registry"
)]
struct Args {
    /// Root URL of the registry under test, e.g. http://127.0.0.1:5000.
    #[arg(long)]
    url: String,
    /// Repository prefix for everything the suite pushes (default: conformance/<random>).
    #[arg(long)]
    namespace: Option<String>,
    /// Repository prefix for cross-repository mount sources (default: <namespace>-source).
    #[arg(long)]
    crossmount_namespace: Option<String>,
    /// Whether a mount without `from` must succeed (true) or start an upload (false);
    /// by default either is accepted, as the spec allows.
    #[arg(long)]
    automatic_crossmount: Option<bool>,
    /// File of tests the registry is known to fail: `<test id> <reason>` per line.
    #[arg(long)]
    expected_failures: Option<PathBuf>,
    /// Directory for report.json and junit.xml.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Run only tests whose id contains this text (repeatable).
    #[arg(long = "filter")]
    filter: Vec<String>,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// List the tests with their requirements and exit.
    #[arg(long)]
    list: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list {
        for t in all_tests() {
            println!(
                "{:<56} {:<6} {}",
                t.id,
                format!("{:?}", t.level).to_uppercase(),
                t.requirement
            );
        }
        return ExitCode::SUCCESS;
    }
    let ids: Vec<&str> = all_tests().iter().map(|t| t.id).collect();
    let expected = match &args.expected_failures {
        None => expected::ExpectedFailures::new(),
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => match expected::parse(&text, &ids) {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("valv-conformance: {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            },
            Err(e) => {
                eprintln!("valv-conformance: cannot read {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let mut config = Config::new(&args.url);
    if let Some(ns) = args.namespace {
        config.crossmount_namespace = format!("{ns}-source");
        config.namespace = ns;
    }
    if let Some(ns) = args.crossmount_namespace {
        config.crossmount_namespace = ns;
    }
    config.automatic_crossmount = args.automatic_crossmount;
    config.timeout = Duration::from_secs(args.timeout.max(1));
    config.filter = args.filter;
    eprintln!(
        "valv-conformance: {} (namespace {}, crossmount namespace {})",
        config.url, config.namespace, config.crossmount_namespace
    );
    let results = match run(&config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("valv-conformance: {e}");
            return ExitCode::from(2);
        }
    };
    let report = Report::new(&config.url, results, &expected);
    if let Some(dir) = &args.report {
        if let Err(e) = report.write(dir) {
            eprintln!(
                "valv-conformance: cannot write the report to {}: {e}",
                dir.display()
            );
            return ExitCode::from(2);
        }
    }
    print!("{}", report.text());
    if report.unexpected_failures() > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
