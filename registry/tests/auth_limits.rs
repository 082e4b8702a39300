//! Abuse and operations: a brute force ends in 429 with `Retry-After` and the right
//! password works again after the window; bcrypt runs off the async workers (other
//! requests stay prompt while 20 logins run); the htpasswd file is reloaded when it
//! changes and a bad one is refused at start by line number or kept out at reload;
//! the access log names the subject and never a secret.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::auth::{basic, htpasswd, shared_kek};
use common::{client, Valv};
use reqwest::StatusCode;

fn config(dir: &Path, auth: &str) -> String {
    let path = dir.join("valv.toml");
    std::fs::write(
        &path,
        format!("[storage]\nurl = \"memory://\"\n[auth]\n{auth}"),
    )
    .expect("write config");
    path.display().to_string()
}

fn start(dir: &Path, auth: &str) -> Valv {
    let cfg = config(dir, auth);
    Valv::start(dir, &["--config", &cfg, "--key-id", &shared_kek()])
}

async fn get(valv: &Valv, path: &str, auth: Option<&str>) -> reqwest::Response {
    let mut req = client().get(valv.url(path));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    req.send().await.expect("request")
}

#[tokio::test]
async fn a_brute_force_ends_in_429_and_the_window_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ht = htpasswd(dir.path(), &[("alice", "right")], 4);
    let valv = start(
        dir.path(),
        &format!(
            "htpasswd = \"{}\"\n[auth.limits]\nmax_failures = 10\nwindow_secs = 3\n",
            ht.display()
        ),
    );
    let mut statuses = Vec::new();
    for i in 0..50 {
        let r = get(&valv, "/v2/", Some(&basic("alice", &format!("wrong{i}")))).await;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            let after: u64 = r.headers()["retry-after"]
                .to_str()
                .expect("ascii")
                .parse()
                .expect("seconds");
            assert!((1..=3).contains(&after), "Retry-After {after}");
            let body = r.bytes().await.expect("body");
            assert_eq!(
                common::auth::error_code(&body).as_deref(),
                Some("TOOMANYREQUESTS")
            );
            statuses.push(429);
        } else {
            statuses.push(r.status().as_u16());
        }
    }
    assert_eq!(&statuses[..10], &[401; 10], "{statuses:?}");
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");
    // While blocked, even the right password is refused without being checked.
    let r = get(&valv, "/v2/", Some(&basic("alice", "right"))).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // After the window it works again: a bounded poll, not a sleep.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = get(&valv, "/v2/", Some(&basic("alice", "right"))).await;
        if r.status() == StatusCode::OK {
            break;
        }
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            Instant::now() < deadline,
            "still blocked 15 s after a 3 s window"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// 20 logins at bcrypt cost 12 (a quarter second of CPU each) run while anonymous
/// pulls and cached logins keep being answered promptly. Were bcrypt on the async
/// workers (two on this machine), those requests would queue behind the hashes for
/// seconds.
#[tokio::test]
async fn bcrypt_runs_off_the_async_workers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ht = htpasswd(dir.path(), &[("alice", "pw"), ("bob", "bob-pw")], 12);
    let valv = start(
        dir.path(),
        &format!(
            "htpasswd = \"{}\"\n[[auth.anonymous]]\nrepositories = [\"public/**\"]\nactions = [\"pull\"]\n",
            ht.display()
        ),
    );
    // Bob's login is verified once and then served from the cache.
    assert_eq!(
        get(&valv, "/v2/", Some(&basic("bob", "bob-pw")))
            .await
            .status(),
        StatusCode::OK
    );
    let started = Instant::now();
    let logins: Vec<_> = (0..20)
        .map(|_| {
            let url = valv.url("/v2/");
            tokio::spawn(async move {
                // Distinct connections, so each login is its own request in flight.
                client()
                    .get(url)
                    .header("authorization", basic("alice", "pw"))
                    .send()
                    .await
                    .map(|r| r.status())
            })
        })
        .collect();
    let mut worst = Duration::ZERO;
    let mut probes = 0;
    while !logins.iter().all(|h| h.is_finished()) {
        for (path, auth) in [
            ("/v2/public/base/tags/list", None),
            ("/v2/", Some(basic("bob", "bob-pw"))),
        ] {
            let t = Instant::now();
            let r = get(&valv, path, auth.as_deref()).await;
            assert_ne!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
            worst = worst.max(t.elapsed());
            probes += 1;
        }
    }
    let load = started.elapsed();
    for h in logins {
        assert_eq!(h.await.expect("join").expect("login"), StatusCode::OK);
    }
    assert!(
        load > Duration::from_millis(600),
        "the logins took {load:?}: too little load to show anything"
    );
    assert!(probes >= 4, "{probes} probes during {load:?}");
    assert!(
        worst < Duration::from_millis(400),
        "a request took {worst:?} while {load:?} of logins ran"
    );
}

#[tokio::test]
async fn the_htpasswd_file_reloads_and_a_bad_one_is_kept_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ht = htpasswd(dir.path(), &[("alice", "a")], 4);
    let valv = start(
        dir.path(),
        &format!(
            "htpasswd = \"{}\"\nhtpasswd_reload_secs = 1\n",
            ht.display()
        ),
    );
    assert_eq!(
        get(&valv, "/v2/", Some(&basic("alice", "a")))
            .await
            .status(),
        StatusCode::OK
    );
    // A new user appears within the reload interval.
    let bob = bcrypt::hash("b", 4).expect("hash");
    let alice = std::fs::read_to_string(&ht).expect("read");
    std::fs::write(&ht, format!("{alice}bob:{bob}\n")).expect("write");
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&valv, "/v2/", Some(&basic("bob", "b"))).await.status() != StatusCode::OK {
        assert!(Instant::now() < deadline, "bob not loaded within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A broken file keeps the entries in use.
    std::fs::write(&ht, "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n").expect("write");
    // Give the watcher two reload intervals to see it (bounded), then both still work.
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        assert_eq!(
            get(&valv, "/v2/", Some(&basic("bob", "b"))).await.status(),
            StatusCode::OK
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        get(&valv, "/v2/", Some(&basic("alice", "a")))
            .await
            .status(),
        StatusCode::OK
    );
}

#[test]
fn a_bad_htpasswd_file_stops_the_start_naming_the_line_not_the_hash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ht = dir.path().join("htpasswd");
    let good = bcrypt::hash("x", 4).expect("hash");
    std::fs::write(
        &ht,
        format!("alice:{good}\nbob:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/\n"),
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_valv"))
        .args(["serve", "--listen", "127.0.0.1:0", "--storage", "memory://"])
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--htpasswd")
        .arg(&ht)
        .stdin(Stdio::null())
        .output()
        .expect("run valv");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains("bcrypt"), "{err}");
    assert!(
        !err.contains("HqJZimcKQFAMYayBlzkrA"),
        "the hash is not shown: {err}"
    );
    assert!(out.stdout.is_empty(), "never listened");
}

#[tokio::test]
async fn the_access_log_names_the_subject_and_no_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ht = htpasswd(dir.path(), &[("alice", "s3cret-pass")], 4);
    let cfg = config(
        dir.path(),
        &format!(
            "htpasswd = \"{}\"\n[auth.token]\nenabled = true\n[auth.issuer]\nenabled = true\n",
            ht.display()
        ),
    );
    let log = dir.path().join("stderr.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_valv"));
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--config",
        &cfg,
        "--key-id",
        &shared_kek(),
    ])
    .arg("--data-dir")
    .arg(dir.path())
    .env("RUST_LOG", "info")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(std::fs::File::create(&log).expect("log file"));
    let mut valv = Valv::spawn(cmd, dir.path());
    let http = client();
    let r = http
        .get(valv.url("/auth/token?service=valv&scope=repository:a/b:pull"))
        .header("authorization", basic("alice", "s3cret-pass"))
        .send()
        .await
        .expect("token");
    let token = r.json::<serde_json::Value>().await.expect("json")["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let r = http
        .get(valv.url("/v2/a/b/tags/list"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("tags");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = get(&valv, "/v2/", Some(&basic("alice", "s3cret-pass"))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = get(&valv, "/v2/", Some(&basic("alice", "wrong-s3cret"))).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    valv.terminate();
    let text = strip_ansi(&std::fs::read_to_string(&log).expect("read log"));
    let access: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("valv::access"))
        .collect();
    assert!(
        access.iter().any(|l| l.contains("subject=token:alice")),
        "{text}"
    );
    assert!(access.iter().any(|l| l.contains("subject=alice")), "{text}");
    for secret in [
        "s3cret-pass",
        "wrong-s3cret",
        &token,
        &token[token.len() - 20..],
    ] {
        assert!(!text.contains(secret), "a secret in the log:\n{text}");
    }
}

/// The log without terminal colour sequences (`ESC [ … m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
