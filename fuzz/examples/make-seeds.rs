//! Writes the seed corpora, `fuzz/corpus/<target>/<name>`: the format's test vectors
//! (docs/FORMAT.md §10) and what real clients send (docker, containerd, oras, skopeo:
//! paths, headers and manifests as the distribution and image specs give them).
//!
//! `cargo run --example make-seeds` in fuzz/ (any toolchain). Existing seeds of the
//! same name are overwritten; seeds kept for a fixed crash (`crash-*`) are left alone.

use std::fs;
use std::path::PathBuf;

use storage::crypto::hash::ResumableHash;
use storage::crypto::keys::Key32;
use storage::crypto::seal::{seal_object, LinkKey};
use storage::Algorithm;
use valv_fuzz::kek::legit_keyring;
use valv_fuzz::token::{sign, NOW};
use valv_fuzz::{LINK_BODY, LINK_PATH, RK_1, SESSION_BOX, VECTOR_ENVELOPES};

const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const HELLO: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
const EMPTY512: &str = "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e";
const UPLOAD: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
const BCRYPT: &str = "$2y$05$abcdefghijklmnopqrstuuJ0x4Wq0G1m1Ih1G7dhcX1l3Kw2Yq2rW";

struct Out {
    dir: PathBuf,
}

impl Out {
    fn target(&self, name: &str) -> Target {
        let dir = self.dir.join(name);
        fs::create_dir_all(&dir).expect("corpus dir");
        Target { dir }
    }
}

struct Target {
    dir: PathBuf,
}

impl Target {
    fn put(&self, name: &str, bytes: impl AsRef<[u8]>) -> &Self {
        fs::write(self.dir.join(name), bytes).expect("write seed");
        self
    }
    /// A seed behind a one-byte mode selector.
    fn mode(&self, name: &str, mode: u8, bytes: impl AsRef<[u8]>) -> &Self {
        let mut v = vec![mode];
        v.extend_from_slice(bytes.as_ref());
        self.put(name, v)
    }
}

fn main() {
    let out = Out {
        dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus"),
    };

    // Method index: GET 0, HEAD 1, PUT 2, POST 3, PATCH 4, DELETE 5, OPTIONS 6.
    let routes = out.target("routes");
    for (name, m, path) in [
        ("api-base", 0, "/v2/".to_owned()),
        ("api-base-noslash", 1, "/v2".to_owned()),
        ("catalog", 0, "/v2/_catalog".to_owned()),
        ("tags", 0, "/v2/library/ubuntu/tags/list".to_owned()),
        (
            "manifest-tag",
            0,
            "/v2/library/ubuntu/manifests/latest".to_owned(),
        ),
        (
            "manifest-head",
            1,
            format!("/v2/library/ubuntu/manifests/{EMPTY}"),
        ),
        (
            "manifest-put",
            2,
            "/v2/team-a/app/web/manifests/v1.2.3".to_owned(),
        ),
        ("manifest-delete", 5, format!("/v2/a/manifests/{HELLO}")),
        ("blob", 0, format!("/v2/library/ubuntu/blobs/{EMPTY}")),
        (
            "blob-escaped",
            1,
            format!("/v2/x/blobs/{}", EMPTY.replace(':', "%3A")),
        ),
        ("blob-512", 5, format!("/v2/x/y/blobs/{EMPTY512}")),
        (
            "upload-start",
            3,
            "/v2/library/ubuntu/blobs/uploads/".to_owned(),
        ),
        (
            "upload-start-noslash",
            3,
            "/v2/ns/repo/blobs/uploads".to_owned(),
        ),
        (
            "upload-patch",
            4,
            format!("/v2/library/ubuntu/blobs/uploads/{UPLOAD}"),
        ),
        (
            "upload-put",
            2,
            format!("/v2/library/ubuntu/blobs/uploads/{UPLOAD}"),
        ),
        ("upload-status", 0, format!("/v2/r/blobs/uploads/{UPLOAD}")),
        (
            "referrers",
            0,
            format!("/v2/library/ubuntu/referrers/{HELLO}"),
        ),
        (
            "tricky-names",
            0,
            "/v2/blobs/manifests/manifests/blobs/manifests/x".to_owned(),
        ),
        ("bad-name", 0, "/v2/UPPER/tags/list".to_owned()),
        (
            "options",
            6,
            "/v2/library/ubuntu/manifests/latest".to_owned(),
        ),
        ("percent-bad", 0, "/v2/a%2/manifests/%ff".to_owned()),
        ("healthz", 0, "/healthz".to_owned()),
        ("admin", 0, "/admin/v1/encryption".to_owned()),
        ("rotate", 3, "/admin/v1/encryption/rotate-key".to_owned()),
        ("token", 0, "/auth/token".to_owned()),
    ] {
        routes.mode(name, m, path);
    }

    let names = out.target("names");
    for (name, s) in [
        ("sha256", EMPTY),
        ("sha512", EMPTY512),
        (
            "upper-hex",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        ),
        (
            "other-alg",
            "sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564",
        ),
        ("md5", "md5:d41d8cd98f00b204e9800998ecf8427e"),
        ("tag", "latest"),
        ("tag-version", "v1.2.3-rc.1_build"),
        ("repo", "library/ubuntu"),
        ("repo-deep", "a/b--c/d__e/f.g"),
        ("upload-id", UPLOAD),
    ] {
        names.put(name, s);
    }

    let range = out.target("range");
    for (name, s) in [
        ("from-to", "bytes=0-1023"),
        ("from", "bytes=1024-"),
        ("suffix", "bytes=-500"),
        ("multi", "bytes=0-0,5-9"),
        ("spaces", " bytes = 10 - 20 "),
        ("upload", "0-1048575"),
        ("upload-rfc", "bytes 0-1023/*"),
        ("upload-rfc-total", "bytes=1024-2047/4096"),
        ("max", "bytes=0-18446744073709551615"),
        ("plus", "bytes=+1-2"),
    ] {
        range.put(name, s);
    }

    let manifest = out.target("manifest");
    let desc = |mt: &str, d: &str, size: u32| {
        format!(r#"{{"mediaType":"{mt}","digest":"{d}","size":{size}}}"#)
    };
    let oci = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[{}],"annotations":{{"org.opencontainers.image.created":"2024-01-01T00:00:00Z"}}}}"#,
        desc("application/vnd.oci.image.config.v1+json", EMPTY, 2),
        desc("application/vnd.oci.image.layer.v1.tar+gzip", HELLO, 5)
    );
    let artifact = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example.sbom","config":{},"layers":[],"subject":{}}}"#,
        desc("application/vnd.oci.empty.v1+json", EMPTY, 2),
        desc("application/vnd.oci.image.manifest.v1+json", HELLO, 5)
    );
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
        desc("application/vnd.oci.image.manifest.v1+json", HELLO, 5)
    );
    let docker = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{},"layers":[{},{{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{HELLO}","size":5,"urls":["https://example.invalid/layer"]}}]}}"#,
        desc("application/vnd.docker.container.image.v1+json", EMPTY, 2),
        desc(
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            HELLO,
            5
        )
    );
    let list = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{}]}}"#,
        desc(
            "application/vnd.docker.distribution.manifest.v2+json",
            EMPTY,
            2
        )
    );
    manifest
        .put("oci-no-header", &oci)
        .put(
            "oci",
            format!("application/vnd.oci.image.manifest.v1+json\n{oci}"),
        )
        .put(
            "artifact",
            format!("application/vnd.oci.image.manifest.v1+json; charset=utf-8\n{artifact}"),
        )
        .put(
            "index",
            format!("application/vnd.oci.image.index.v1+json\n{index}"),
        )
        .put(
            "docker",
            format!("application/vnd.docker.distribution.manifest.v2+json\n{docker}"),
        )
        .put(
            "docker-list",
            format!("application/vnd.docker.distribution.manifest.list.v2+json\n{list}"),
        )
        .put("generic-header", format!("application/json\n{index}"))
        .put(
            "mismatch",
            format!("application/vnd.oci.image.index.v1+json\n{oci}"),
        );

    let envelope = out.target("envelope");
    for (i, json) in VECTOR_ENVELOPES.iter().enumerate() {
        envelope.mode(&format!("vector-{i}"), 0, json);
        envelope.mode(&format!("edit-vector-{i}"), 1, [i as u8]);
    }

    let segments = out.target("segments");
    for (name, bytes) in [
        ("empty", &b""[..]),
        ("small", &[16, 0, 35, 0, 0, 0][..]),
        ("flip", &[16, 0, 60, 7, 3, 0, 40, 1, 0, 9, 0x55, 2, 5][..]),
        (
            "splice",
            &[5, 1, 200, 9, 9, 9, 3, 50, 0, 1, 3, 10, 30, 7, 1, 17][..],
        ),
    ] {
        segments.put(name, bytes);
    }

    let session = out.target("session");
    session
        .mode("vector-box", 0, SESSION_BOX)
        .mode("edit-box", 1, []);
    for (alg, name) in [(Algorithm::Sha256, "sha256"), (Algorithm::Sha512, "sha512")] {
        for n in [0usize, 5, 64, 200] {
            let mut h = ResumableHash::new(alg);
            h.update(&vec![0xab; n]);
            session.mode(&format!("hash-{name}-{n}"), 2, h.export());
        }
    }

    let links = out.target("links");
    let link_key = LinkKey::derive(&Key32::from_bytes(RK_1));
    links
        .mode(
            "vector-tag",
            0,
            seal_object(&link_key, 1, LINK_PATH, LINK_BODY.to_owned()).expect("seal"),
        )
        .mode("unsealed-tag", 0, LINK_BODY)
        .mode("edit-vector", 1, [])
        .mode(
            "manifest-body",
            2,
            r#"{"media_type":"application/vnd.oci.image.index.v1+json","size":2,"subject":null}"#,
        );

    let keyring = out.target("keyring");
    keyring
        .mode("legit", 0, legit_keyring())
        .mode("edit-legit", 1, []);

    let authorization = out.target("authorization");
    for (name, s) in [
        ("basic", "Basic YWxpY2U6c2VjcmV0"),
        ("basic-lower", "basic dXNlcjpwYXNzOndpdGg6Y29sb25z"),
        ("basic-empty-user", "Basic OnBhc3M="),
        ("bearer", "Bearer eyJhbGciOiJFZERTQSJ9.eyJpc3MiOiJ4In0.c2ln"),
        ("bearer-padded", "Bearer abc-._~+/=="),
        ("bearer-empty", "Bearer "),
        ("other", "Digest username=\"x\""),
        ("scopes", "repository:library/ubuntu:pull,push&repository(plugin):localhost:5000/foo:pull&registry:catalog:*"),
    ] {
        authorization.put(name, s);
    }

    let jwt = out.target("jwt");
    let claims = |extra: &str| {
        format!(
            r#"{{"iss":"fuzz-issuer","sub":"alice","aud":"fuzz-registry","exp":{},"nbf":{},"iat":{},"jti":"x",{extra}"access":[{{"type":"repository","name":"library/ubuntu","actions":["pull","push"]}},{{"type":"registry","name":"catalog","actions":["*"]}}]}}"#,
            NOW + 300,
            NOW - 10,
            NOW - 10
        )
    };
    let good = claims("");
    for (name, header, payload) in [
        (
            "ed",
            r#"{"alg":"EdDSA","typ":"JWT","kid":"ed"}"#,
            good.clone(),
        ),
        (
            "ed-nokid",
            r#"{"alg":"EdDSA"}"#,
            claims(r#""aud_extra":1,"#),
        ),
        (
            "aud-list",
            r#"{"alg":"EdDSA","kid":"ed"}"#,
            good.replace(
                r#""aud":"fuzz-registry""#,
                r#""aud":["other","fuzz-registry"]"#,
            ),
        ),
        (
            "expired",
            r#"{"alg":"EdDSA"}"#,
            good.replace(&(NOW + 300).to_string(), &(NOW - 300).to_string()),
        ),
        ("es256", r#"{"alg":"ES256","kid":"es"}"#, good.clone()),
        ("rs256", r#"{"alg":"RS256","kid":"rs"}"#, good.clone()),
        ("none", r#"{"alg":"none"}"#, good.clone()),
        ("hs256", r#"{"alg":"HS256"}"#, good.clone()),
        ("crit", r#"{"alg":"EdDSA","crit":["exp"]}"#, good.clone()),
    ] {
        jwt.mode(
            &format!("token-{name}"),
            0,
            sign(header.as_bytes(), payload.as_bytes()),
        );
        let mut structured = header.as_bytes().to_vec();
        structured.push(0xff);
        structured.extend_from_slice(payload.as_bytes());
        structured.extend_from_slice(&[0xff, 17, 65, 0]);
        jwt.mode(&format!("sign-{name}"), 1, structured);
    }

    let htpasswd = out.target("htpasswd");
    htpasswd
        .put(
            "two-users",
            format!(
                "# users\n\nalice:{BCRYPT}\nbob:{}\r\n",
                BCRYPT.replace("$2y$", "$2b$")
            ),
        )
        .put("apr1", "carol:$apr1$abcdefgh$0123456789abcdefghijkl\n")
        .put("sha", "dave:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n")
        .put("plain", "erin:secret\n")
        .put("duplicate", format!("alice:{BCRYPT}\nalice:{BCRYPT}\n"))
        .put(
            "cost",
            format!("frank:{}\n", BCRYPT.replace("$05$", "$32$")),
        );
}
