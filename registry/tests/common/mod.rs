//! Test harness shared by the registry's integration tests: starts the real `valv`
//! binary on 127.0.0.1 with an ephemeral port and talks HTTP to it.
//!
//! Readiness is the `listening on http://ADDR` line valv prints on stdout once its
//! listener is bound, read with a bounded wait (no sleeps).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running valv process. Killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct Valv {
    pub child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub data_dir: PathBuf,
    /// The stdout lines after the readiness line keep being drained by this thread, so
    /// the child never blocks on a full pipe.
    _drain: Option<std::thread::JoinHandle<()>>,
}

/// How long a fresh valv may take to start (first start creates an RSA key).
pub const START_TIMEOUT: Duration = Duration::from_secs(120);

impl Valv {
    /// Starts `valv serve --listen 127.0.0.1:0 --data-dir <data_dir> <extra args>`.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Valv {
        Self::start_with_env(data_dir, extra, &[])
    }

    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Valv {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_valv"));
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().expect("spawn valv");
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        let drain = std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    if let Some(addr) = line.trim().strip_prefix("listening on ") {
                        let _ = tx.send(addr.to_owned());
                        sent = true;
                    }
                }
            }
        });
        let base = match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("valv did not report 'listening on' within {START_TIMEOUT:?} (exit: {status:?})");
            }
        };
        Valv {
            child,
            base,
            data_dir: data_dir.to_owned(),
            _drain: Some(drain),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `host:port`, as docker and skopeo want it.
    pub fn host(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait (bounded) for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").arg("-TERM").arg(&pid).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if std::time::Instant::now() > deadline {
                self.kill9();
                panic!("valv did not exit within 30 s of SIGTERM");
            }
            // Polling a child's exit status has no notification primitive in std;
            // this is a bounded wait on process exit, not synchronisation by sleep.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Peak resident set size (VmHWM) of the valv process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc status")
    }
}

impl Drop for Valv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking-free async HTTP client that does not follow redirects (tests assert on
/// `Location` headers themselves).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("reqwest client")
}

/// sha256 digest string of `data`.
pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(data);
    let mut s = String::from("sha256:");
    for b in h {
        s.push_str(&format!("{b:02x}"));
    }
    s
}
