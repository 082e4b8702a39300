//! The Authorization header parser, and the authenticator end to end without HTTP:
//! Basic against a real htpasswd file, client certificates through a constructed
//! [`Connection`] (TLS listeners fill `client_subject`), and the decisions per need.

use super::*;
use crate::config::auth::{AnonymousRuleConfig, RuleConfig};

fn basic(user_pass: &str) -> Vec<u8> {
    format!("Basic {}", STANDARD.encode(user_pass)).into_bytes()
}

#[test]
fn authorization_headers_parse() {
    assert_eq!(
        parse_authorization(&basic("alice:pa:ss")),
        Ok(Credentials::Basic {
            user: "alice".into(),
            password: "pa:ss".into()
        })
    );
    assert_eq!(
        parse_authorization(b"bAsIc YWxpY2U6"),
        Ok(Credentials::Basic {
            user: "alice".into(),
            password: String::new()
        })
    );
    assert_eq!(
        parse_authorization(b"Bearer abc.def.ghi"),
        Ok(Credentials::Bearer("abc.def.ghi"))
    );
    assert_eq!(
        parse_authorization(b"bearer  a-b_c~d+e/f.G9=="),
        Ok(Credentials::Bearer("a-b_c~d+e/f.G9=="))
    );
    let cases: [(&[u8], HeaderError); 14] = [
        (b"", HeaderError::Scheme),
        (b"Digest x", HeaderError::Scheme),
        (b"Basic", HeaderError::Basic),
        (b"Basic !!!", HeaderError::Basic),
        (b"Basic YWxpY2U=", HeaderError::Basic), // no ':'
        (b"Basic OnBhc3M=", HeaderError::Basic), // empty user
        (b"Basic /w==", HeaderError::Basic),     // not UTF-8
        (b"Bearer", HeaderError::Bearer),
        (b"Bearer a b", HeaderError::Bearer),
        (b"Bearer a\tb", HeaderError::Bearer),
        (b"Bearer ==", HeaderError::Bearer),
        (b"Bearer a=b", HeaderError::Bearer),
        (b"Bearer a,b", HeaderError::Bearer),
        ("Bearer a\u{a0}b".as_bytes(), HeaderError::Bearer),
    ];
    for (value, want) in cases {
        assert_eq!(
            parse_authorization(value),
            Err(want),
            "{}",
            String::from_utf8_lossy(value)
        );
    }
    assert_eq!(parse_authorization(&[0xff, 0xfe]), Err(HeaderError::Scheme));
    // Debug never shows a secret.
    let value = basic("alice:hunter2");
    let c = parse_authorization(&value).expect("basic");
    assert!(!format!("{c:?}").contains("hunter2"));
}

struct Fixture {
    _dir: tempfile::TempDir,
    auth: Authenticator,
}

fn fixture(mutate: impl FnOnce(&mut AuthConfig)) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("htpasswd");
    let alice = bcrypt::hash("alice-pw", 4).expect("hash");
    let root = bcrypt::hash("root-pw", 4).expect("hash");
    std::fs::write(&path, format!("alice:{alice}\nroot:{root}\n")).expect("write");
    let mut config = AuthConfig {
        htpasswd: Some(path),
        ..AuthConfig::default()
    };
    config.rules = vec![RuleConfig {
        repositories: vec!["team-a/**".into()],
        users: vec!["alice".into()],
        groups: vec![],
        actions: vec!["pull".into()],
    }];
    config.anonymous = vec![AnonymousRuleConfig {
        repositories: vec!["public/**".into()],
        actions: vec!["pull".into()],
    }];
    config.admin.users = vec!["root".into()];
    mutate(&mut config);
    let auth = Authenticator::build(&config, dir.path(), None).expect("build");
    Fixture { _dir: dir, auth }
}

fn conn() -> Connection {
    Connection::plain("127.0.0.1:40000".parse().expect("addr"))
}

fn repo(s: &str) -> RepositoryName {
    s.parse().expect("repo")
}

#[tokio::test]
async fn basic_users_get_their_policy() {
    let f = fixture(|_| {});
    let alice = f
        .auth
        .authenticate(&conn(), Some(&basic("alice:alice-pw")), false)
        .await
        .expect("alice");
    assert_eq!(alice.subject(), "alice");
    let team_a = repo("team-a/app");
    let team_b = repo("team-b/app");
    assert_eq!(
        f.auth
            .authorize(&alice, &Need::Repository(&team_a, Action::Pull)),
        Ok(())
    );
    assert_eq!(
        f.auth
            .authorize(&alice, &Need::Repository(&team_a, Action::Push)),
        Err(Refusal::Denied)
    );
    assert_eq!(
        f.auth
            .authorize(&alice, &Need::Repository(&team_b, Action::Pull)),
        Err(Refusal::Denied)
    );
    assert!(f.auth.lists(&alice, &team_a) && !f.auth.lists(&alice, &team_b));
    let wrong = f
        .auth
        .authenticate(&conn(), Some(&basic("alice:nope")), false)
        .await;
    assert!(matches!(wrong, Err(Refusal::Unauthenticated { .. })));
    let anon = f
        .auth
        .authenticate(&conn(), None, false)
        .await
        .expect("anonymous");
    assert!(matches!(
        f.auth.authorize(&anon, &Need::Repository(&team_a, Action::Pull)),
        Err(Refusal::Unauthenticated { scope: Some(s), .. }) if s == "repository:team-a/app:pull"
    ));
    assert_eq!(
        f.auth
            .authorize(&anon, &Need::Repository(&repo("public/x"), Action::Pull)),
        Ok(())
    );
    assert!(matches!(
        f.auth.authorize(&anon, &Need::Authenticated),
        Err(Refusal::Unauthenticated { .. })
    ));
    let root = f
        .auth
        .authenticate(&conn(), Some(&basic("root:root-pw")), false)
        .await
        .expect("root");
    assert!(f.auth.is_admin(&root) && !f.auth.is_admin(&alice));
    assert!(f.auth.allows(&root, Action::Delete, &team_b));
}

#[tokio::test]
async fn a_client_certificate_is_a_user_when_enabled() {
    let mut c = conn();
    c.tls = true;
    c.client_subject = Some("alice".into());
    let off = fixture(|_| {});
    let p = off
        .auth
        .authenticate(&c, None, false)
        .await
        .expect("anonymous");
    assert!(matches!(p, Principal::Anonymous), "off by default");
    let on = fixture(|c| c.client_certificates = true);
    let p = on
        .auth
        .authenticate(&c, None, false)
        .await
        .expect("cert user");
    assert_eq!(p.subject(), "cert:alice");
    assert!(on.auth.allows(&p, Action::Pull, &repo("team-a/x")));
    assert!(!on.auth.allows(&p, Action::Push, &repo("team-a/x")));
    // Credentials in a header win over the certificate.
    let p = on
        .auth
        .authenticate(&c, Some(&basic("root:root-pw")), false)
        .await
        .expect("root");
    assert_eq!(p.subject(), "root");
}

#[tokio::test]
async fn failures_are_rate_limited_per_address() {
    let f = fixture(|c| {
        c.limits.max_failures = 3;
        c.limits.window_secs = 60;
    });
    for _ in 0..3 {
        let r = f
            .auth
            .authenticate(&conn(), Some(b"Bearer x.y.z"), false)
            .await;
        assert!(matches!(r, Err(Refusal::Unauthenticated { .. })), "{r:?}");
    }
    let r = f
        .auth
        .authenticate(&conn(), Some(&basic("alice:alice-pw")), false)
        .await;
    assert!(matches!(r, Err(Refusal::TooMany(_))), "{r:?}");
    let other = Connection::plain("127.0.0.2:1".parse().expect("addr"));
    assert!(f
        .auth
        .authenticate(&other, Some(&basic("alice:alice-pw")), false)
        .await
        .is_ok());
}

#[tokio::test]
async fn the_issuer_grants_the_allowed_subset() {
    let f = fixture(|c| c.enable_token_short_path());
    let scopes = Scope::parse_all([
        "repository:team-a/app:pull,push,delete repository:team-b/x:pull registry:catalog:*",
    ]);
    let issued = f
        .auth
        .issue(
            &conn(),
            Some(("alice".into(), "alice-pw".into())),
            Some("valv"),
            &scopes,
        )
        .await
        .expect("issued");
    let p = f
        .auth
        .authenticate(
            &conn(),
            Some(format!("Bearer {}", issued.token).as_bytes()),
            false,
        )
        .await
        .expect("token verifies");
    let team_a = repo("team-a/app");
    assert!(f.auth.allows(&p, Action::Pull, &team_a));
    assert!(!f.auth.allows(&p, Action::Push, &team_a));
    assert!(!f.auth.allows(&p, Action::Pull, &repo("team-b/x")));
    assert_eq!(f.auth.authorize(&p, &Need::Catalog), Ok(()));
    assert!(f.auth.lists(&p, &team_a) && !f.auth.lists(&p, &repo("team-b/x")));
    assert!(matches!(
        f.auth
            .authorize(&p, &Need::Repository(&team_a, Action::Push)),
        Err(Refusal::Unauthenticated {
            insufficient: true,
            ..
        })
    ));
    let wrong = f
        .auth
        .issue(
            &conn(),
            Some(("alice".into(), "nope".into())),
            None,
            &scopes,
        )
        .await;
    assert!(matches!(wrong, Err(IssueError::Refused(_))));
    let other = f
        .auth
        .issue(&conn(), None, Some("elsewhere"), &scopes)
        .await;
    assert_eq!(other.map(|_| ()), Err(IssueError::WrongService));
    let c = f.auth.challenge(
        Some("repository:a:pull"),
        false,
        Some("127.0.0.1:5000"),
        false,
    );
    assert_eq!(
        c,
        "Bearer realm=\"http://127.0.0.1:5000/auth/token\",service=\"valv\",scope=\"repository:a:pull\""
    );
    let evil = f.auth.challenge(None, false, Some("x\",evil=\"y"), false);
    assert!(
        evil.starts_with("Bearer realm=\"http://localhost/auth/token\""),
        "{evil}"
    );
}

#[test]
fn a_bad_htpasswd_file_fails_the_build_by_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("htpasswd");
    std::fs::write(&path, "# x\nbob:$apr1$abc$0123456789abcdef012345\n").expect("write");
    let config = AuthConfig {
        htpasswd: Some(path),
        ..AuthConfig::default()
    };
    let e = Authenticator::build(&config, dir.path(), None).expect_err("refused");
    assert!(e[0].contains("line 2") && e[0].contains("MD5"), "{e:?}");
    assert!(!e[0].contains("0123456789abcdef"), "{e:?}");
}
