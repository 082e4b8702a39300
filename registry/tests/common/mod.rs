//! Test harness shared by the registry's integration tests: starts the real `valv`
//! binary on 127.0.0.1 with an ephemeral port and talks HTTP to it.
//!
//! Readiness is the `listening on http://ADDR` (or `https://ADDR`) line valv prints on
//! stdout once its listener is bound, read with a bounded wait (no sleeps).
//!
//! [`clients`] holds what the end-to-end tests with real client tools (docker, skopeo)
//! share; [`tls`] the test certificate authorities, valv with TLS, and clients that
//! trust a test CA.

#![allow(dead_code)]

pub mod auth;
pub mod clients;
pub mod keyvault;
pub mod tls;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A running valv process. Killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct Valv {
    pub child: Child,
    /// `http://127.0.0.1:PORT`, or `https://…` with TLS
    pub base: String,
    /// `http://127.0.0.1:PORT` of the metrics listener, when `--metrics-listen` was given
    /// (its line comes before the main one).
    pub metrics_base: Option<String>,
    pub data_dir: PathBuf,
    /// valv's stderr, when the test asked to read it ([`Valv::spawn_logged`]).
    pub logs: Option<Logs>,
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
        Self::spawn(cmd, data_dir)
    }

    /// [`Valv::spawn`] with valv's stderr captured into [`Valv::logs`] (and echoed to
    /// the test's stderr), so a test can wait for a log line.
    pub fn spawn_logged(mut cmd: Command, data_dir: &Path) -> Valv {
        cmd.stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn valv");
        let stderr = child.stderr.take().expect("stderr piped");
        let logs = Logs::default();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("{line}");
                sink.push(&line);
            }
        });
        let mut valv = Self::ready(child, data_dir);
        valv.logs = Some(logs);
        valv
    }

    /// Spawns `cmd` (a `valv serve` with stdout piped) and waits, bounded, for its
    /// "listening on" line.
    pub fn spawn(mut cmd: Command, data_dir: &Path) -> Valv {
        let child = cmd.spawn().expect("spawn valv");
        Self::ready(child, data_dir)
    }

    fn ready(mut child: Child, data_dir: &Path) -> Valv {
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        let drain = std::thread::spawn(move || {
            let mut sent = false;
            let mut metrics = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    if let Some(addr) = line.trim().strip_prefix("metrics listening on ") {
                        metrics = Some(addr.to_owned());
                    } else if let Some(addr) = line.trim().strip_prefix("listening on ") {
                        let _ = tx.send((addr.to_owned(), metrics.take()));
                        sent = true;
                    }
                }
            }
        });
        let (base, metrics_base) = match rx.recv_timeout(START_TIMEOUT) {
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
            metrics_base,
            data_dir: data_dir.to_owned(),
            logs: None,
            _drain: Some(drain),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `host:port`, as docker and skopeo want it.
    pub fn host(&self) -> &str {
        self.base
            .strip_prefix("https://")
            .unwrap_or_else(|| self.base.trim_start_matches("http://"))
    }

    /// The captured stderr ([`Valv::spawn_logged`]).
    pub fn logs(&self) -> &Logs {
        self.logs
            .as_ref()
            .expect("valv was started with its stderr captured (spawn_logged)")
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
        let child = &mut self.child;
        std::thread::scope(|scope| {
            let (tx, rx) = mpsc::channel();
            // `wait` blocks until the process exits: a notification, not a poll.
            scope.spawn(move || {
                let _ = tx.send(child.wait());
            });
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(status) => status.expect("wait for valv"),
                Err(_) => {
                    let _ = Command::new("kill").arg("-KILL").arg(&pid).status();
                    panic!("valv did not exit within 30 s of SIGTERM");
                }
            }
        })
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

/// Lines a process wrote, shared with the thread that reads them; waiting for a line
/// blocks on a condition variable (woken by each new line) with a deadline.
#[derive(Debug, Clone, Default)]
pub struct Logs(Arc<(Mutex<Vec<String>>, Condvar)>);

impl Logs {
    /// Keeps `line` without its ANSI colour codes (valv's log colours its field names),
    /// so tests match what a reader sees.
    fn push(&self, line: &str) {
        let mut plain = String::with_capacity(line.len());
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                // ESC [ parameters... final byte (a letter)
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                plain.push(c);
            }
        }
        let (lines, changed) = &*self.0;
        lines.lock().unwrap_or_else(|p| p.into_inner()).push(plain);
        changed.notify_all();
    }

    /// How many lines so far contain every one of `needles`.
    pub fn count(&self, needles: &[&str]) -> usize {
        let lines = self.0 .0.lock().unwrap_or_else(|p| p.into_inner());
        lines
            .iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    /// Waits until at least `n` lines contain every one of `needles`, for at most
    /// `timeout`; panics naming them otherwise. Returns the matching lines.
    pub fn wait_for(&self, needles: &[&str], n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let (lines, changed) = &*self.0;
        let mut guard = lines.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let found: Vec<String> = guard
                .iter()
                .filter(|l| needles.iter().all(|k| l.contains(k)))
                .cloned()
                .collect();
            if found.len() >= n {
                return found;
            }
            let now = Instant::now();
            if now >= deadline {
                panic!("no {n} log lines with {needles:?} within {timeout:?}");
            }
            guard = changed
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
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
    kms_client::install_tls_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("reqwest client")
}

/// A loopback socket bound to a fresh port but never listening: while it is held,
/// every connect to its port is refused, and no other process can take the port (as it
/// could one bound and dropped). Needs no runtime.
pub fn closed_port() -> tokio::net::TcpSocket {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind 127.0.0.1:0");
    socket
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

/// The `sha256:<hex>` digest a finished hasher stands for.
pub fn hex_digest(h: sha2::Sha256) -> String {
    use sha2::Digest as _;
    let mut s = String::from("sha256:");
    for b in h.finalize() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// An upload URL as valv returned it, kept as a path so it survives a restart on a new
/// port (`Location` may be absolute or relative).
pub fn location_path(resp: &reqwest::Response) -> String {
    let loc = resp
        .headers()
        .get("location")
        .expect("Location header")
        .to_str()
        .expect("ascii Location");
    match loc.find("://") {
        Some(i) => {
            let rest = &loc[i + 3..];
            rest.find('/')
                .map(|j| rest[j..].to_owned())
                .unwrap_or_else(|| "/".to_owned())
        }
        None => loc.to_owned(),
    }
}
