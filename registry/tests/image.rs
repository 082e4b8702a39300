//! The container image (issue 15): the top-level Dockerfile built and run for real.
//!
//! One test, because the build is the expensive part (a cold release build takes many
//! minutes on a small machine); it builds the image once and then checks, against the
//! running container, what the image promises:
//!
//! - `valv serve` answers 200 on `/readyz` at the address `VALV_LISTEN` gives it, with
//!   a host directory as `/data` and traces on (`VALV_OTLP_ENDPOINT`: the image is
//!   built with the `otlp` feature);
//! - `docker push` of a `FROM scratch` image with random content, and `docker pull` of
//!   it back, byte for byte (files and manifest digest);
//! - the process runs as uid/gid 10001, not root, and owns `/data` (mode 0750);
//! - docker's health status, from the image's `HEALTHCHECK` (`valv healthcheck`),
//!   becomes `healthy`;
//! - `docker stop` ends it with exit code 0, and its log has valv's shutdown line;
//! - a second container on the same directory uses the same development key (it does not
//!   create one) and serves the same content, pulled again byte for byte.
//!
//! No image registry is reachable here, so the two base images are local stand-ins
//! made by scripts/image-standins.sh (debootstrap and the host's Rust toolchain); the
//! build runs with `--network host` because the test dockerd has no bridge
//! (`--bridge=none --iptables=false`), and so does the container: it listens on a free
//! port of 127.0.0.1, where port publishing (`-p`) is not needed.
//!
//! Like e2e_docker.rs it needs a docker daemon, so a plain `cargo test` skips it
//! (`#[ignore]`); scripts/test.sh runs it with `VALV_E2E=1`, under which a missing
//! daemon (or, without cached stand-ins, root or debootstrap) is a failure, never a
//! skip. Containers, volumes and the images it tags are removed at the end, also on
//! failure; the build cache (the untagged intermediate layers) stays, as after any
//! `docker build`, so a second run on the same daemon reuses it.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::clients::{
    build_context, fetch, layers, path_str, push_digest, random_bytes, run, unavailable, Docker,
    ACCEPT_MANIFESTS, MIB,
};
use common::{client, sha256};
use reqwest::StatusCode;

/// A cold release build of the workspace on two busy cores, with vfs copying every
/// layer: tens of minutes.
const BUILD_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// From `docker run` to "listening on": the first start creates an RSA key.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// The HEALTHCHECK runs every second here (`--health-interval 1s`).
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(60);
/// `docker stop -t`: above server.shutdown_grace_secs (30 s by default), as
/// docs/OPERATIONS.md advises.
const STOP_TIMEOUT_SECS: &str = "40";

/// The uid and gid the image runs valv as.
const VALV_UID: &str = "10001";

// ---------------------------------------------------------------------------------
// What the test made, removed whatever happens

/// Containers, volumes and image tags to remove on drop (in that order).
struct Created<'a> {
    docker: &'a Docker,
    containers: Vec<String>,
    volumes: Vec<String>,
    images: Vec<String>,
}

impl<'a> Created<'a> {
    fn new(docker: &'a Docker) -> Self {
        Created {
            docker,
            containers: Vec::new(),
            volumes: Vec::new(),
            images: Vec::new(),
        }
    }
}

impl Drop for Created<'_> {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = run(&mut self.docker.cmd(&["rm", "-f", c]));
        }
        for v in &self.volumes {
            let _ = run(&mut self.docker.cmd(&["volume", "rm", "-f", v]));
        }
        // --no-prune keeps the untagged parents: the build cache of the next run.
        for i in &self.images {
            let _ = run(&mut self.docker.cmd(&["rmi", "-f", "--no-prune", i]));
        }
    }
}

/// The stdout lines of a long-running command (`docker logs -f`, `docker events`),
/// read by a thread; waiting for one is a bounded wait on a channel, not a poll.
/// The command is killed on drop.
struct Lines {
    child: Child,
    rx: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn spawn(mut cmd: Command) -> Lines {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            child,
            rx,
            seen: Vec::new(),
        }
    }

    /// The first line (from now on) that `found` accepts; `Err` with every line seen
    /// when `fatal` accepts one first, the stream ends, or `timeout` passes.
    fn wait(
        &mut self,
        found: impl Fn(&str) -> bool,
        fatal: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let why = match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if found(&line) {
                        return Ok(line);
                    }
                    if !fatal(&line) {
                        continue;
                    }
                    "a fatal line"
                }
                Err(mpsc::RecvTimeoutError::Timeout) => "timed out",
                Err(mpsc::RecvTimeoutError::Disconnected) => "the stream ended",
            };
            return Err(format!(
                "{why} after {:?}; lines seen:\n{}",
                timeout.saturating_sub(left),
                self.seen.join("\n")
            ));
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------
// Helpers

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("registry/ sits in the workspace")
        .to_owned()
}

/// A port of 127.0.0.1 that was free a moment ago (the container binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// The last `n` lines of a log file, for a failure message.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `cmd` with stdout and stderr into `log`, for at most `timeout`; `Err` with the
/// log's tail when it fails or takes too long (then it is killed).
fn run_logged(mut cmd: Command, log: &Path, timeout: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let file = std::fs::File::create(log).expect("create log file");
    let mut child = cmd
        .stdout(file.try_clone().expect("log file handle"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    // `wait` blocks until the process exits: a notification, not a poll.
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let result = match rx.recv_timeout(timeout) {
        Ok(Ok(status)) if status.success() => Ok(started.elapsed()),
        Ok(Ok(status)) => Err(format!("{cmd:?} failed ({status})")),
        Ok(Err(e)) => Err(format!("{cmd:?}: wait: {e}")),
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            Err(format!("{cmd:?} did not finish within {timeout:?}"))
        }
    };
    let _ = waiter.join();
    result.map_err(|e| {
        format!(
            "{e}; the last lines of {}:\n{}",
            log.display(),
            tail(log, 60)
        )
    })
}

/// One `docker run` of the image: valv on `127.0.0.1:port` in the host's network,
/// `/data` on `volume`, the HEALTHCHECK every second.
struct Container<'a> {
    docker: &'a Docker,
    name: String,
    port: u16,
    /// `docker events` for this container, from before its start.
    events: Lines,
}

impl<'a> Container<'a> {
    fn run(
        docker: &'a Docker,
        created: &mut Created,
        image: &str,
        name: &str,
        volume: &str,
    ) -> Self {
        let port = free_port();
        // --since replays the daemon's events from this second on, so none is missed
        // between `docker run` and this stream's start.
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs()
            - 1;
        created.containers.push(name.to_owned());
        docker.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "host",
            "-e",
            &format!("VALV_LISTEN=127.0.0.1:{port}"),
            // Traces are built in: a build without them would refuse to start with an
            // endpoint. No collector listens there; export fails quietly.
            "-e",
            "VALV_OTLP_ENDPOINT=http://127.0.0.1:9",
            "-v",
            &format!("{volume}:/data"),
            "--health-interval",
            "1s",
            image,
        ]);
        let events = Lines::spawn(docker.cmd(&[
            "events",
            "--since",
            &since.to_string(),
            "--filter",
            &format!("container={name}"),
            "--format",
            "{{.Action}}",
        ]));
        Container {
            docker,
            name: name.to_owned(),
            port,
            events,
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `docker logs`: (stdout, stderr) so far.
    fn logs(&self) -> (String, String) {
        let out = run(&mut self.docker.cmd(&["logs", &self.name]));
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn fail(&self, what: &str) -> ! {
        let (stdout, stderr) = self.logs();
        panic!(
            "{what}\n--- {} stdout:\n{stdout}\n--- stderr:\n{stderr}",
            self.name
        );
    }

    /// Waits for valv's "listening on" line (stdout, through `docker logs -f`), then
    /// polls `/readyz` (bounded) until it answers 200.
    async fn wait_ready(&self, http: &reqwest::Client) {
        let mut out = Lines::spawn(self.docker.cmd(&["logs", "-f", &self.name]));
        let want = format!("listening on http://{}", self.host());
        if let Err(e) = out.wait(|l| l.trim() == want, |_| false, START_TIMEOUT) {
            self.fail(&format!("no {want:?} line: {e}"));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = http.get(self.url("/readyz")).send().await;
            match answer {
                Ok(resp) if resp.status() == StatusCode::OK => return,
                _ if Instant::now() >= deadline => {
                    self.fail(&format!("/readyz is not 200 within 30 s: {answer:?}"))
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Waits for docker's `health_status: healthy` event, and checks `docker inspect`
    /// says so too.
    fn wait_healthy(&mut self) {
        let healthy = self.events.wait(
            |a| a == "health_status: healthy",
            |a| a == "die" || a == "health_status: unhealthy",
            HEALTHY_TIMEOUT,
        );
        if let Err(e) = healthy {
            let health = self.inspect("{{json .State.Health}}");
            self.fail(&format!("not healthy: {e}\nhealth: {health}"));
        }
        assert_eq!(self.inspect("{{.State.Health.Status}}"), "healthy");
    }

    fn inspect(&self, format: &str) -> String {
        self.docker
            .ok(&["inspect", "--format", format, &self.name])
            .trim()
            .to_owned()
    }

    fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["exec", self.name.as_str()];
        all.extend_from_slice(args);
        self.docker.ok(&all).trim().to_owned()
    }

    /// `docker stop` (SIGTERM, then SIGKILL after the timeout); the exit code and
    /// valv's stderr.
    fn stop(&self) -> (String, String) {
        self.docker
            .ok(&["stop", "-t", STOP_TIMEOUT_SECS, &self.name]);
        (self.inspect("{{.State.ExitCode}}"), self.logs().1)
    }
}

/// The files of a test image, for `build_context`.
struct TestImage {
    big: Vec<u8>,
    small: Vec<u8>,
}

impl TestImage {
    fn files(&self) -> [(&str, &[u8]); 2] {
        [
            ("/data/big.bin", &self.big),
            ("/etc/small.txt", &self.small),
        ]
    }
}

/// GETs the manifest `repo:reference` and every layer blob from `valv`; each must hash
/// to its digest, the manifest to `digest`.
async fn assert_served(http: &reqwest::Client, valv: &Container<'_>, repo: &str, digest: &str) {
    let got = fetch(
        http,
        &valv.url(&format!("/v2/{repo}/manifests/v1")),
        ACCEPT_MANIFESTS,
    )
    .await;
    assert_eq!(got.status, StatusCode::OK, "GET manifest {repo}:v1");
    assert_eq!(sha256(&got.body), digest, "the manifest as pushed");
    let manifest: serde_json::Value = serde_json::from_slice(&got.body).expect("manifest JSON");
    for (_, layer, size) in layers(&manifest) {
        let blob = fetch(http, &valv.url(&format!("/v2/{repo}/blobs/{layer}")), "*/*").await;
        assert_eq!(blob.status, StatusCode::OK, "GET blob {layer}");
        assert_eq!(blob.body.len() as u64, size, "size of blob {layer}");
        assert_eq!(sha256(&blob.body), layer, "blob {layer} as pushed");
    }
}

/// Whether the base images are in the daemon or scripts/image-standins.sh can make
/// them (it needs root and debootstrap, unless its root filesystems are cached).
fn standins_possible(docker: &Docker) -> Option<()> {
    if docker.image_exists("debian:bookworm-slim") && docker.image_exists("rust:1.95-bookworm") {
        return Some(());
    }
    let root = run(Command::new("id").arg("-u"));
    if String::from_utf8_lossy(&root.stdout).trim() != "0" {
        return unavailable("the base images are missing and their stand-ins need root");
    }
    if run(Command::new("sh").args(["-c", "command -v debootstrap"]))
        .status
        .success()
    {
        Some(())
    } else {
        unavailable("the base images are missing and their stand-ins need debootstrap")
    }
}

// ---------------------------------------------------------------------------------
// The test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs dockerd: run by scripts/test.sh"]
async fn image_builds_runs_as_10001_and_keeps_its_content_on_the_volume() {
    let Some(docker) = Docker::connect() else {
        return;
    };
    let Some(()) = standins_possible(&docker) else {
        return;
    };
    let started = Instant::now();
    let root = workspace_root();
    let logs = tempfile::tempdir().expect("tempdir");
    let unique = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    let mut created = Created::new(&docker);
    let http = client();

    // The base images: stand-ins unless already there (the script leaves real ones).
    let mut standins = Command::new("bash");
    standins
        .arg(root.join("scripts/image-standins.sh"))
        .env("VALV_DOCKER", docker.bin())
        .stdin(Stdio::null());
    let log = logs.path().join("image-standins.log");
    let took = run_logged(standins, &log, Duration::from_secs(30 * 60))
        .unwrap_or_else(|e| panic!("scripts/image-standins.sh: {e}"));
    eprintln!(
        "image-standins.sh: {:.0} s\n{}",
        took.as_secs_f64(),
        tail(&log, 6)
    );

    // The image, from the top-level Dockerfile as a user builds it.
    let image = format!("valv-image-test:{unique}");
    created.images.push(image.clone());
    let revision = format!("image-test-{unique}");
    let build = docker.cmd(&[
        "build",
        "--network",
        "host",
        "--build-arg",
        &format!("VALV_REVISION={revision}"),
        "-t",
        &image,
        path_str(&root),
    ]);
    let log = logs.path().join("docker-build.log");
    let took = run_logged(build, &log, BUILD_TIMEOUT)
        .unwrap_or_else(|e| panic!("docker build of the Dockerfile: {e}"));
    eprintln!("docker build: {:.0} s", took.as_secs_f64());
    let inspect = |format: &str| {
        docker
            .ok(&["image", "inspect", "--format", format, &image])
            .trim()
            .to_owned()
    };
    assert_eq!(inspect("{{.Config.User}}"), "10001:10001");
    assert_eq!(
        inspect("{{index .Config.Labels \"org.opencontainers.image.revision\"}}"),
        revision,
        "--build-arg VALV_REVISION labels the image"
    );

    // The first container, with a host directory as /data, owned by the image's user
    // as an operator would prepare it.
    let data = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::chown(data.path(), Some(10001), Some(10001)).expect("chown /data");
    std::fs::set_permissions(
        data.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .expect("chmod /data");
    let volume = path_str(data.path()).to_owned();
    let mut first = Container::run(
        &docker,
        &mut created,
        &image,
        &format!("valv-image-test-1-{unique}"),
        &volume,
    );
    first.wait_ready(&http).await;
    eprintln!(
        "first container ready after {:.0} s",
        started.elapsed().as_secs_f64()
    );

    // Not root: the process, what `id` says inside, and who owns /data.
    let top = docker.ok(&["top", &first.name, "-eo", "pid,uid,gid,comm"]);
    let rows: Vec<Vec<&str>> = top
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        rows.iter().any(|r| r.get(3) == Some(&"valv")),
        "valv runs in the container:\n{top}"
    );
    for row in &rows {
        assert_eq!(
            (row.get(1), row.get(2)),
            (Some(&VALV_UID), Some(&VALV_UID)),
            "every process runs as 10001:10001:\n{top}"
        );
    }
    assert_eq!(first.exec(&["id", "-u"]), VALV_UID);
    assert_eq!(
        first.exec(&["stat", "-c", "%u:%g %a", "/data"]),
        "10001:10001 750"
    );

    // The HEALTHCHECK (valv healthcheck, with the address from VALV_LISTEN).
    first.wait_healthy();

    // docker push of random content, pulled back byte for byte.
    let content = TestImage {
        big: random_bytes(1, 3 * MIB),
        small: random_bytes(2, 4097),
    };
    let files = content.files();
    let ctx = build_context(&files);
    let repo = "image-test/app";
    let tag = format!("{}/{repo}:v1", first.host());
    created.images.push(tag.clone());
    docker.ok(&["build", "-q", "-t", &tag, path_str(ctx.path())]);
    let pushed = push_digest(&docker.ok(&["push", &tag]));
    assert_served(&http, &first, repo, &pushed).await;
    docker.ok(&["rmi", &tag]);
    docker.ok(&["pull", &tag]);
    docker.assert_files(&tag, &files, "pulled from the first container");
    docker.ok(&["rmi", &tag]);
    let key_files = first.exec(&["ls", "-ln", "/data/keys/valv-dev-kek"]);
    let (_, first_stderr) = first.logs();
    assert!(
        first_stderr.contains("created a new local development key-encryption key"),
        "the first start creates the dev key under /data/keys:\n{first_stderr}"
    );
    assert!(
        first_stderr.contains("file:///data/keys/valv-dev-kek"),
        "the dev key lives on the volume:\n{first_stderr}"
    );
    assert!(
        first_stderr.contains("traces: exporting spans by OTLP/HTTP"),
        "the image exports traces:\n{first_stderr}"
    );
    assert!(
        data.path().join("keys/valv-dev-kek").exists(),
        "the key is in the host directory"
    );

    // docker stop: SIGTERM, a graceful stop, exit code 0.
    let (code, stderr) = first.stop();
    assert_eq!(code, "0", "exit code after docker stop; stderr:\n{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("INFO") && l.trim_end().ends_with(": stopped")),
        "valv logs its graceful stop:\n{stderr}"
    );

    // A second container on the same volume: the same key, the same content.
    let second = Container::run(
        &docker,
        &mut created,
        &image,
        &format!("valv-image-test-2-{unique}"),
        &volume,
    );
    second.wait_ready(&http).await;
    let (_, second_stderr) = second.logs();
    assert!(
        second_stderr.contains("using the local development key-encryption key")
            && !second_stderr.contains("created a new local development key-encryption key"),
        "the second container finds the first one's key:\n{second_stderr}"
    );
    assert_eq!(
        second.exec(&["ls", "-ln", "/data/keys/valv-dev-kek"]),
        key_files,
        "the same key versions under /data/keys"
    );
    assert_served(&http, &second, repo, &pushed).await;
    let again = format!("{}/{repo}@{pushed}", second.host());
    created.images.push(again.clone());
    docker.ok(&["pull", &again]);
    docker.assert_files(&again, &files, "pulled from the second container");
    let (code, stderr) = second.stop();
    assert_eq!(code, "0", "second container's exit code; stderr:\n{stderr}");

    drop(second);
    drop(first);
    drop(created);
    eprintln!(
        "image test: {:.0} s in all",
        started.elapsed().as_secs_f64()
    );
}
