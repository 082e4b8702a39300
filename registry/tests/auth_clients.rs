//! Real clients against access control, over plain HTTP on 127.0.0.1: `docker login`,
//! push and pull, `skopeo copy` with `--src-creds`/`--dest-creds`, `podman login`, push
//! and pull, each byte-identical, first with htpasswd Basic auth and then with the
//! built-in token endpoint (the clients follow the Bearer challenge themselves).
//!
//! `#[ignore]`d like the other end-to-end tests; scripts/test.sh runs them with
//! `VALV_E2E=1`, under which a missing daemon or tool is a failure. The htpasswd file
//! is made by the test with the bcrypt crate.

mod common;

use common::auth::{basic, htpasswd};
use common::clients::{
    build_context, fetch, path_str, random_bytes, run, Docker, Images, Podman, Skopeo,
    ACCEPT_MANIFESTS, MIB,
};
use common::{client, sha256, Valv};
use reqwest::StatusCode;

const USER: &str = "alice";
const PASSWORD: &str = "alice-e2e-pw";

fn start(dir: &std::path::Path, token: bool) -> Valv {
    let ht = htpasswd(dir, &[(USER, PASSWORD)], 5);
    let mut args = vec!["--htpasswd", path_str(&ht)];
    if token {
        args.push("--token-auth");
    }
    let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Valv::start(dir, &args)
}

/// The manifest `repo:tag` as valv serves it to the authenticated user.
async fn manifest(valv: &Valv, repo: &str, tag: &str, token: bool) -> Vec<u8> {
    let http = client();
    let url = valv.url(&format!("/v2/{repo}/manifests/{tag}"));
    let auth = if token {
        let r = http
            .get(valv.url(&format!(
                "/auth/token?service=valv&scope=repository:{repo}:pull"
            )))
            .header("authorization", basic(USER, PASSWORD))
            .send()
            .await
            .expect("token");
        let v: serde_json::Value = r.json().await.expect("json");
        format!("Bearer {}", v["token"].as_str().expect("token"))
    } else {
        basic(USER, PASSWORD)
    };
    let r = http
        .get(&url)
        .header("authorization", auth)
        .header("accept", ACCEPT_MANIFESTS)
        .send()
        .await
        .expect("GET manifest");
    assert_eq!(r.status(), StatusCode::OK, "GET {url}");
    r.bytes().await.expect("body").to_vec()
}

async fn round_trip(token: bool) {
    let Some(docker) = Docker::connect() else {
        return;
    };
    let Some(skopeo) = Skopeo::find() else { return };
    let Some(podman) = Podman::find() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let valv = start(dir.path(), token);
    let host = valv.host().to_owned();
    let mode = if token { "token" } else { "basic" };

    // Anonymous: refused, with the challenge.
    let r = fetch(&client(), &valv.url("/v2/"), "*/*").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // docker: login, push, remove, pull, the same bytes.
    let payload = random_bytes(if token { 71 } else { 70 }, MIB + 17);
    let files: [(&str, &[u8]); 1] = [("/data/payload.bin", &payload)];
    let ctx = build_context(&files);
    let image = format!("{host}/{mode}/docker:1");
    let mut images = Images::new(&docker);
    images.track(&image);
    docker.ok(&["build", "-q", "-t", &image, path_str(ctx.path())]);
    let denied = run(&mut docker.cmd(&["push", &image]));
    assert!(
        !denied.status.success(),
        "docker push without login is refused"
    );
    docker.login(&host, USER, PASSWORD);
    docker.ok(&["push", &image]);
    images.remove(&image);
    docker.ok(&["pull", &image]);
    docker.assert_files(&image, &files, &format!("docker {mode}"));

    // skopeo: copy with credentials on both sides, the manifest byte-identical.
    let creds = format!("{USER}:{PASSWORD}");
    skopeo.ok(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--src-creds",
        &creds,
        "--dest-creds",
        &creds,
        &format!("docker://{host}/{mode}/docker:1"),
        &format!("docker://{host}/{mode}/skopeo:1"),
    ]);
    let a = manifest(&valv, &format!("{mode}/docker"), "1", token).await;
    let b = manifest(&valv, &format!("{mode}/skopeo"), "1", token).await;
    assert_eq!(
        sha256(&a),
        sha256(&b),
        "skopeo copied the manifest byte for byte"
    );

    // podman: login, push, remove, pull, the same bytes.
    let pimage = format!("{host}/{mode}/podman:1");
    podman.ok(&[
        "build",
        "-q",
        "--signature-policy",
        podman.policy(),
        "-t",
        &pimage,
        path_str(ctx.path()),
    ]);
    podman.ok(&[
        "login",
        "--tls-verify=false",
        "-u",
        USER,
        "-p",
        PASSWORD,
        &host,
    ]);
    podman.ok(&[
        "push",
        "--tls-verify=false",
        "--signature-policy",
        podman.policy(),
        &pimage,
    ]);
    podman.ok(&["rmi", "--all", "--force"]);
    assert!(!podman.image_exists(&pimage));
    podman.ok(&[
        "pull",
        "--tls-verify=false",
        "--signature-policy",
        podman.policy(),
        &pimage,
    ]);
    podman.assert_files(&pimage, &files, &format!("podman {mode}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs dockerd, skopeo and podman: run by scripts/test.sh"]
async fn docker_skopeo_and_podman_with_htpasswd_basic_auth() {
    round_trip(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs dockerd, skopeo and podman: run by scripts/test.sh"]
async fn docker_skopeo_and_podman_with_the_built_in_token_endpoint() {
    round_trip(true).await;
}
