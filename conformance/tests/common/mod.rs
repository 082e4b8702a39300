//! Starts the registries the suite is run against: valv (the binary of this workspace)
//! and the reference registry (Debian's `docker-registry`, CNCF distribution 2.8.2),
//! each on 127.0.0.1 with an ephemeral port and its own temporary storage.
//!
//! Readiness is the "listening on" line each prints once its listener is bound, read
//! with a bounded wait.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A registry process, killed on drop.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the end-to-end environment is promised (scripts/test.sh sets VALV_E2E=1):
/// then a missing tool is a failure, not a skip.
pub fn e2e_required() -> bool {
    std::env::var("VALV_E2E").is_ok_and(|v| v == "1")
}

/// Reads lines from `stream` on a thread until one contains `marker`; returns the text
/// after it. The thread keeps draining so the child never blocks on a full pipe.
fn wait_for(
    stream: impl Read + Send + 'static,
    marker: &'static str,
    what: &str,
    child: &mut Child,
) -> String {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if !sent {
                if let Some(i) = line.find(marker) {
                    let _ = tx.send(line[i + marker.len()..].to_owned());
                    sent = true;
                }
            }
        }
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(rest) => rest,
        Err(_) => {
            let _ = child.kill();
            let status = child.wait();
            panic!("{what} did not report {marker:?} within {START_TIMEOUT:?} (exit: {status:?})");
        }
    }
}

/// The workspace's target directory for the current profile (this test binary lives
/// in `<it>/deps/`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test binary in <target>/<profile>/deps")
        .to_owned()
}

/// The valv binary: `VALV_BIN`, or the workspace's, built now if needed. The
/// conformance crate does not depend on valv (on purpose), so cargo does not build
/// valv for it; a `cargo build -p valv` here is a no-op when it is up to date.
pub fn valv_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("VALV_BIN") {
        return PathBuf::from(bin);
    }
    let dir = profile_dir();
    let target_dir = dir.parent().expect("profile dir has a parent").to_owned();
    let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "valv",
        "--bin",
        "valv",
        "--target-dir",
    ])
    .arg(&target_dir)
    .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile == "release" {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build -p valv");
    assert!(status.success(), "cargo build -p valv failed: {status}");
    let bin = dir.join("valv");
    assert!(bin.exists(), "{} missing after cargo build", bin.display());
    bin
}

/// Starts valv with filesystem storage and a local KEK in a temp dir.
pub fn start_valv() -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(valv_bin());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .stdin(Stdio::null());
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "warn");
    }
    let mut child = cmd.spawn().expect("spawn valv");
    let stdout = child.stdout.take().expect("piped stdout");
    let url = wait_for(stdout, "listening on ", "valv", &mut child)
        .trim()
        .to_owned();
    Server {
        child,
        url,
        _dir: dir,
    }
}

/// Starts the reference registry with filesystem storage and deletes enabled, or
/// `None` when it is not installed (and the environment does not promise it).
pub fn start_distribution() -> Option<Server> {
    let bin = "docker-registry";
    if Command::new(bin).arg("--version").output().is_err() {
        if e2e_required() {
            panic!("VALV_E2E=1 but {bin} is not installed (Debian package docker-registry; scripts/test.sh installs it)");
        }
        eprintln!("skipping: {bin} is not installed (scripts/test.sh installs it)");
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n",
            dir.path().join("data").display()
        ),
    )
    .expect("write registry config");
    let mut child = Command::new(bin)
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn docker-registry");
    let stderr = child.stderr.take().expect("piped stderr");
    let rest = wait_for(stderr, "msg=\"listening on ", "docker-registry", &mut child);
    let addr = rest.split('"').next().unwrap_or("").to_owned();
    Some(Server {
        child,
        url: format!("http://{addr}"),
        _dir: dir,
    })
}
