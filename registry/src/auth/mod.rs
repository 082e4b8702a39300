//! Access control (issue 13): who a request is, and whether it may do what its route
//! needs. `http::gate::admit` calls [`Authenticator::authenticate`] and then
//! [`Authenticator::authorize`] before the key gate, so an unauthenticated client
//! learns nothing about the key state.
//!
//! # Layout
//! - this module: the [`Authenticator`] built from `[auth]`, the [`Principal`] a
//!   request is, what a route [`Need`]s, the `Authorization` header parser and the
//!   challenge a refusal carries.
//! - [`htpasswd`]: bcrypt entries, verified on the blocking pool, with a keyed cache
//!   and reloads when the file changes.
//! - [`token`]: bearer JWTs (distribution token spec) verified with *ring*; [`keys`]:
//!   the trusted public keys (PEM, JWKS).
//! - [`issuer`]: the built-in token endpoint's signer.
//! - [`policy`]: rules, patterns, groups, the admin role, anonymous access.
//! - [`limiter`]: failed-authentication rate limits per address and per user.
//!
//! Methods: Basic (htpasswd), Bearer (tokens), and a verified client certificate's
//! subject (mTLS, on TLS listeners, when `client_certificates` is on). Credentials in
//! an `Authorization` header win over a certificate. Secrets (passwords, tokens) are
//! never logged, and a refusal tells the client only that it was refused.

pub mod htpasswd;
pub mod issuer;
pub mod keys;
pub mod limiter;
pub mod policy;
pub mod token;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use storage::RepositoryName;
use subtle::ConstantTimeEq;

use self::htpasswd::Htpasswd;
use self::issuer::{Issued, Issuer};
use self::limiter::Limiter;
use self::policy::{Action, Policy};
use self::token::{AccessEntry, Grants, Scope, Verifier};
use crate::config::AuthConfig;
use crate::http::conn::Connection;

/// Credentials of an `Authorization` header. A bearer token borrows the header: it
/// is looked up on every request and need not be copied.
#[derive(PartialEq, Eq)]
pub enum Credentials<'a> {
    Basic { user: String, password: String },
    Bearer(&'a str),
}

impl std::fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { user, .. } => write!(f, "Basic({user:?}, <redacted>)"),
            Credentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// Why an `Authorization` header could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Not `Basic` or `Bearer`.
    Scheme,
    /// `Basic` whose value is not base64 of UTF-8 `user:password`.
    Basic,
    /// `Bearer` with nothing, or whitespace inside the token.
    Bearer,
}

impl HeaderError {
    pub fn message(self) -> &'static str {
        match self {
            HeaderError::Scheme => "unsupported Authorization scheme (Basic or Bearer)",
            HeaderError::Basic => "malformed Basic credentials",
            HeaderError::Bearer => "malformed Bearer token",
        }
    }
}

/// Parses an `Authorization` header value (RFC 7617 Basic, RFC 6750 Bearer; scheme
/// names are case-insensitive).
pub fn parse_authorization(value: &[u8]) -> Result<Credentials<'_>, HeaderError> {
    let value = std::str::from_utf8(value).map_err(|_| HeaderError::Scheme)?;
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let raw = STANDARD.decode(rest).map_err(|_| HeaderError::Basic)?;
        let text = String::from_utf8(raw).map_err(|_| HeaderError::Basic)?;
        let (user, password) = text.split_once(':').ok_or(HeaderError::Basic)?;
        if user.is_empty() {
            return Err(HeaderError::Basic);
        }
        Ok(Credentials::Basic {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    } else if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() || !is_token68(rest.as_bytes()) {
            return Err(HeaderError::Bearer);
        }
        Ok(Credentials::Bearer(rest))
    } else {
        Err(HeaderError::Scheme)
    }
}

/// Whether `s` is an RFC 6750 `b64token` (`1*( ALPHA / DIGIT / "-" / "." / "_" / "~"
/// / "+" / "/" ) *"="`). Every byte is checked without an early exit, so the loop
/// vectorises: a kilobyte-long JWT costs nanoseconds, not a per-character Unicode test.
fn is_token68(s: &[u8]) -> bool {
    let body = s.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    body > 0
        && s[..body].iter().fold(true, |ok, &b| {
            ok & (b.is_ascii_alphanumeric() | matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/'))
        })
}

/// How a user proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Basic,
    Certificate,
}

/// Who a request is.
#[derive(Debug, Clone)]
pub enum Principal {
    /// Access control is off: every request may do everything.
    Open,
    /// No credentials.
    Anonymous,
    /// An htpasswd user (Basic) or a client certificate's subject.
    User { name: String, via: Via },
    /// A verified bearer token: it may do what it grants.
    Token {
        subject: Option<Arc<str>>,
        grants: Arc<Grants>,
        /// Issued by the built-in issuer (its subject is an htpasswd user).
        local: bool,
    },
    /// The admin API's bearer token (`admin.token`), on an admin route.
    AdminToken,
}

impl Principal {
    /// What the access log shows: a name, never a credential.
    pub fn subject(&self) -> String {
        match self {
            Principal::Open => "-".into(),
            Principal::Anonymous => "anonymous".into(),
            Principal::User { name, via } => match via {
                Via::Basic => name.clone(),
                Via::Certificate => format!("cert:{name}"),
            },
            Principal::Token { subject, .. } => {
                format!("token:{}", subject.as_deref().unwrap_or("anonymous"))
            }
            Principal::AdminToken => "admin-token".into(),
        }
    }
}

/// What a route needs of its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need<'a> {
    /// Nothing (health, readiness, the token endpoint, which authenticates itself).
    Nothing,
    /// Any authenticated caller (`/v2/`).
    Authenticated,
    /// `action` on `repo`.
    Repository(&'a RepositoryName, Action),
    /// The catalog (filtered to what the caller may pull).
    Catalog,
    /// The admin API.
    Admin,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 401 with a challenge: no (usable) credentials. `scope` is what to ask a token
    /// for; `insufficient` marks a valid token that lacks it (RFC 6750
    /// `error="insufficient_scope"`), so the client fetches a token with the scope.
    Unauthenticated {
        message: &'static str,
        scope: Option<String>,
        insufficient: bool,
    },
    /// 403: authenticated, not allowed.
    Denied,
    /// 429: too many failed authentications from this address or for this user.
    TooMany(Duration),
}

impl Refusal {
    fn unauthenticated(message: &'static str) -> Refusal {
        Refusal::Unauthenticated {
            message,
            scope: None,
            insufficient: false,
        }
    }
}

/// The token endpoint's answer when it refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssueError {
    Refused(Refusal),
    /// The request names another service.
    WrongService,
    /// The issuer failed (randomness, signing); logged.
    Internal,
}

/// Access control, built once from `[auth]`.
pub struct Authenticator {
    enabled: bool,
    realm: String,
    htpasswd: Option<Htpasswd>,
    htpasswd_reload: Duration,
    verifier: Option<Verifier>,
    token_realm: Option<String>,
    issuer: Option<Issuer>,
    client_certificates: bool,
    policy: Policy,
    limiter: Limiter,
    admin_token: Option<String>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("enabled", &self.enabled)
            .field("htpasswd", &self.htpasswd)
            .field("token", &self.verifier.is_some())
            .field("issuer", &self.issuer)
            .field("client_certificates", &self.client_certificates)
            .finish()
    }
}

impl Authenticator {
    /// Access control off: every request admitted (the admin API keeps its token).
    pub fn open(admin_token: Option<String>) -> Authenticator {
        Authenticator {
            enabled: false,
            realm: String::new(),
            htpasswd: None,
            htpasswd_reload: Duration::from_secs(5),
            verifier: None,
            token_realm: None,
            issuer: None,
            client_certificates: false,
            policy: Policy::default(),
            limiter: Limiter::new(&Default::default()),
            admin_token,
        }
    }

    /// Builds access control from `config`: reads the htpasswd file, the trusted keys
    /// and the issuer's signing key (generating it under `data_dir/auth` on first
    /// start), and parses the policy. Fails with every problem found (a bad htpasswd
    /// line by its number, a key file by its name).
    pub fn build(
        config: &AuthConfig,
        data_dir: &Path,
        admin_token: Option<String>,
    ) -> Result<Authenticator, Vec<String>> {
        if !config.enabled() {
            return Ok(Authenticator::open(admin_token));
        }
        let mut problems = Vec::new();
        let policy = Policy::build(
            &config.rules,
            &config.anonymous,
            &config.groups,
            &config.admin,
        )
        .unwrap_or_else(|p| {
            problems.extend(p);
            Policy::default()
        });
        let htpasswd = config.htpasswd.as_deref().and_then(|path| {
            Htpasswd::open(path, Duration::from_secs(config.cache_ttl_secs))
                .map_err(|e| problems.push(format!("auth.htpasswd: {e}")))
                .ok()
        });
        let issuer = if config.issuer.enabled {
            Issuer::open(&config.issuer, data_dir, &config.token.service)
                .map_err(|e| problems.push(format!("auth.issuer: {e}")))
                .ok()
        } else {
            None
        };
        let verifier = if config.token.enabled {
            let issuer_name = config.token.issuer.as_deref().unwrap_or_default();
            let mut keys = token_keys(config, issuer_name, &mut problems);
            if let Some(i) = &issuer {
                keys.push(i.trusted_key());
            }
            Some(Verifier::new(
                keys,
                config.token.service.clone(),
                config.token.clock_skew_secs,
            ))
        } else {
            None
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Authenticator {
            enabled: true,
            realm: config.realm.clone(),
            htpasswd,
            htpasswd_reload: Duration::from_secs(config.htpasswd_reload_secs),
            verifier,
            token_realm: config.token.realm.clone(),
            issuer,
            client_certificates: config.client_certificates,
            policy,
            limiter: Limiter::new(&config.limits),
            admin_token,
        })
    }

    /// Whether access control is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether the built-in token endpoint is served.
    pub fn issues_tokens(&self) -> bool {
        self.issuer.is_some()
    }

    /// Whether the admin API exists: an admin token, or an admin role.
    pub fn admin_api_enabled(&self) -> bool {
        self.admin_token.is_some() || (self.enabled && self.policy.has_admins())
    }

    /// Polls the htpasswd file and reloads it when it changes, until the future is
    /// dropped. A file that no longer parses keeps the entries in use and is logged.
    pub async fn watch_htpasswd(&self) {
        let Some(h) = &self.htpasswd else {
            return std::future::pending().await;
        };
        let mut every = tokio::time::interval(self.htpasswd_reload);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            match h.reload_if_changed() {
                Ok(true) => {
                    tracing::info!(path = %h.path().display(), "reloaded the htpasswd file")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "the htpasswd file changed but cannot be used; keeping the previous entries")
                }
            }
        }
    }

    fn admin_token_matches(&self, presented: &str) -> bool {
        use sha2::Digest as _;
        self.admin_token.as_deref().is_some_and(|t| {
            // Hashing first makes the comparison independent of the lengths too.
            let a = sha2::Sha256::digest(presented.as_bytes());
            let b = sha2::Sha256::digest(t.as_bytes());
            bool::from(a.as_slice().ct_eq(b.as_slice()))
        })
    }

    /// Who the request is. `authorization` is the raw header; `admin_route` lets the
    /// admin token authenticate. Fails with 401 for credentials that do not verify
    /// (counted against the address and the user) and 429 while those counts are over
    /// the limit.
    pub async fn authenticate(
        &self,
        conn: &Connection,
        authorization: Option<&[u8]>,
        admin_route: bool,
    ) -> Result<Principal, Refusal> {
        if !self.enabled {
            return Ok(match authorization.map(parse_authorization) {
                Some(Ok(Credentials::Bearer(t))) if admin_route && self.admin_token_matches(t) => {
                    Principal::AdminToken
                }
                _ => Principal::Open,
            });
        }
        let ip = conn.peer.ip();
        let Some(raw) = authorization else {
            return Ok(match (&conn.client_subject, self.client_certificates) {
                (Some(name), true) => Principal::User {
                    name: name.clone(),
                    via: Via::Certificate,
                },
                _ => Principal::Anonymous,
            });
        };
        let credentials = match parse_authorization(raw) {
            Ok(c) => c,
            Err(e) => return Err(self.malformed(conn, e.message())),
        };
        match credentials {
            Credentials::Basic { user, password } => {
                if let Some(wait) = self.limiter.check(ip, Some(&user)) {
                    return Err(Refusal::TooMany(wait));
                }
                if self.check_password(&user, &password).await {
                    Ok(Principal::User {
                        name: user,
                        via: Via::Basic,
                    })
                } else {
                    self.limiter.fail(ip, Some(&user));
                    tracing::info!(target: "valv::auth", user = %user, peer = %ip, "basic authentication failed");
                    Err(Refusal::unauthenticated("wrong user name or password"))
                }
            }
            Credentials::Bearer(token) => {
                if admin_route && self.admin_token_matches(token) {
                    return Ok(Principal::AdminToken);
                }
                if let Some(wait) = self.limiter.check(ip, None) {
                    return Err(Refusal::TooMany(wait));
                }
                let verified = match &self.verifier {
                    Some(v) => v.verify(token).map_err(|e| e.to_string()),
                    None => Err("token auth is not enabled".to_string()),
                };
                match verified {
                    Ok(v) => Ok(Principal::Token {
                        subject: v.subject,
                        grants: v.grants,
                        local: v.local,
                    }),
                    Err(why) => {
                        self.limiter.fail(ip, None);
                        tracing::info!(target: "valv::auth", peer = %ip, reason = %why, "bearer token refused");
                        Err(Refusal::unauthenticated("invalid or expired token"))
                    }
                }
            }
        }
    }

    /// Counts a malformed `Authorization` header against `conn`'s address, and answers
    /// the refusal (429 once over the limit).
    pub fn malformed(&self, conn: &Connection, message: &'static str) -> Refusal {
        let ip = conn.peer.ip();
        if let Some(wait) = self.limiter.check(ip, None) {
            return Refusal::TooMany(wait);
        }
        self.limiter.fail(ip, None);
        Refusal::unauthenticated(message)
    }

    /// The `Basic` challenge (the token endpoint's, and the registry's without tokens).
    pub fn basic_challenge(&self) -> String {
        format!("Basic realm=\"{}\"", self.realm)
    }

    async fn check_password(&self, user: &str, password: &str) -> bool {
        match &self.htpasswd {
            Some(h) => h.verify(user, password).await,
            None => false,
        }
    }

    /// Whether `principal` may take `action` on `repo`.
    pub fn allows(&self, principal: &Principal, action: Action, repo: &RepositoryName) -> bool {
        match principal {
            Principal::Open => true,
            Principal::Anonymous => self.policy.anonymous_allows(action, repo.as_str()),
            Principal::User { name, .. } => self.policy.user_allows(name, action, repo.as_str()),
            Principal::Token { grants, .. } => grants.allows(action, repo.as_str()),
            Principal::AdminToken => false,
        }
    }

    /// Whether `principal` sees `repo` in the catalog: those it may pull. A
    /// third-party token granted the catalog sees all of it (the token service, not
    /// the registry, knows what it may pull: distribution's behaviour).
    pub fn lists(&self, principal: &Principal, repo: &RepositoryName) -> bool {
        match principal {
            Principal::Token {
                subject,
                local: true,
                ..
            } => match subject {
                Some(s) => self.policy.user_allows(s, Action::Pull, repo.as_str()),
                None => self.policy.anonymous_allows(Action::Pull, repo.as_str()),
            },
            Principal::Token { local: false, .. } => true,
            other => self.allows(other, Action::Pull, repo),
        }
    }

    /// Whether `principal` has the admin role (or is the admin token).
    pub fn is_admin(&self, principal: &Principal) -> bool {
        match principal {
            Principal::AdminToken => true,
            Principal::User { name, .. } => self.policy.is_admin(name),
            // Only the built-in issuer's subjects are known users.
            Principal::Token {
                subject: Some(s),
                local: true,
                ..
            } => self.policy.is_admin(s),
            _ => false,
        }
    }

    /// Whether `principal` may have what the route needs.
    pub fn authorize(&self, principal: &Principal, need: &Need<'_>) -> Result<(), Refusal> {
        let challenge = |scope: String| match principal {
            Principal::Anonymous => Err(Refusal::Unauthenticated {
                message: "authentication required",
                scope: Some(scope),
                insufficient: false,
            }),
            Principal::Token { .. } => Err(Refusal::Unauthenticated {
                message: "the token does not grant this access",
                scope: Some(scope),
                insufficient: true,
            }),
            _ => Err(Refusal::Denied),
        };
        match (principal, need) {
            (Principal::Open, _) | (_, Need::Nothing) => Ok(()),
            // The admin handler decides (it answers in the admin API's error shape).
            (_, Need::Admin) => Ok(()),
            (Principal::Anonymous, Need::Authenticated) => {
                Err(Refusal::unauthenticated("authentication required"))
            }
            (_, Need::Authenticated) => Ok(()),
            (p, Need::Repository(repo, action)) => {
                if self.allows(p, *action, repo) {
                    Ok(())
                } else {
                    challenge(repository_scope(repo, *action))
                }
            }
            (p, Need::Catalog) => {
                let ok = match p {
                    Principal::Anonymous => self.policy.has_anonymous(),
                    Principal::Token { grants, .. } => grants.catalog(),
                    Principal::AdminToken => false,
                    _ => true,
                };
                if ok {
                    Ok(())
                } else {
                    challenge("registry:catalog:*".into())
                }
            }
        }
    }

    /// The `WWW-Authenticate` value for `refusal` (a 401). `host` and `tls` build the
    /// built-in issuer's realm when none is configured.
    pub fn challenge(
        &self,
        scope: Option<&str>,
        insufficient: bool,
        host: Option<&str>,
        tls: bool,
    ) -> String {
        match &self.verifier {
            Some(v) => {
                let realm = match &self.token_realm {
                    Some(r) => r.clone(),
                    None => {
                        let host = host
                            .filter(|h| {
                                !h.is_empty()
                                    && h.bytes().all(|b| {
                                        b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b)
                                    })
                            })
                            .unwrap_or("localhost");
                        format!("{}://{host}/auth/token", if tls { "https" } else { "http" })
                    }
                };
                let mut c = format!("Bearer realm=\"{realm}\",service=\"{}\"", v.service());
                if let Some(s) = scope {
                    c.push_str(&format!(",scope=\"{s}\""));
                }
                if insufficient {
                    c.push_str(",error=\"insufficient_scope\"");
                }
                c
            }
            None => self.basic_challenge(),
        }
    }

    /// The token endpoint: who asks (`credentials` from the header or the OAuth2
    /// form; none is anonymous, or the client certificate's subject), for which
    /// `service` and `scopes`. Grants the subset of each scope the policy allows.
    pub async fn issue(
        &self,
        conn: &Connection,
        credentials: Option<(String, String)>,
        service: Option<&str>,
        scopes: &[Scope],
    ) -> Result<Issued, IssueError> {
        let Some(issuer) = &self.issuer else {
            return Err(IssueError::Internal);
        };
        if let (Some(s), Some(v)) = (service, &self.verifier) {
            if s != v.service() {
                return Err(IssueError::WrongService);
            }
        }
        let ip = conn.peer.ip();
        let user = match credentials {
            Some((user, password)) => {
                if let Some(wait) = self.limiter.check(ip, Some(&user)) {
                    return Err(IssueError::Refused(Refusal::TooMany(wait)));
                }
                if !self.check_password(&user, &password).await {
                    self.limiter.fail(ip, Some(&user));
                    tracing::info!(target: "valv::auth", user = %user, peer = %ip, "token request with a wrong password");
                    return Err(IssueError::Refused(Refusal::unauthenticated(
                        "wrong user name or password",
                    )));
                }
                Some(user)
            }
            None => conn
                .client_subject
                .clone()
                .filter(|_| self.client_certificates),
        };
        let access = self.grant(user.as_deref(), scopes);
        let issued = issuer
            .mint(user.as_deref().unwrap_or(""), &access, token::now_secs())
            .map_err(|e| {
                tracing::error!(error = %e, "the token issuer failed");
                IssueError::Internal
            })?;
        tracing::info!(target: "valv::auth", subject = user.as_deref().unwrap_or("anonymous"), grants = access.len(), "issued a token");
        Ok(issued)
    }

    /// What `user` (`None`: anonymous) is granted of `scopes`.
    fn grant(&self, user: Option<&str>, scopes: &[Scope]) -> Vec<AccessEntry> {
        let mut out: Vec<AccessEntry> = Vec::new();
        for scope in scopes {
            match scope.kind.as_str() {
                "repository" => {
                    let Ok(repo) = scope.name.parse::<RepositoryName>() else {
                        continue;
                    };
                    let wanted: BTreeSet<Action> = scope
                        .actions
                        .iter()
                        .flat_map(|a| match a.as_str() {
                            "*" => Action::ALL.to_vec(),
                            other => Action::parse(other).into_iter().collect(),
                        })
                        .collect();
                    let allowed = self.policy.allowed_actions(user, &repo, &wanted);
                    if allowed.is_empty() {
                        continue;
                    }
                    let actions: Vec<String> =
                        allowed.iter().map(|a| a.as_str().to_owned()).collect();
                    match out
                        .iter_mut()
                        .find(|e| e.kind == "repository" && e.name == scope.name)
                    {
                        Some(e) => {
                            for a in actions {
                                if !e.actions.contains(&a) {
                                    e.actions.push(a);
                                }
                            }
                        }
                        None => out.push(AccessEntry {
                            kind: "repository".into(),
                            name: scope.name.clone(),
                            actions,
                        }),
                    }
                }
                "registry" if scope.name == "catalog" && scope.actions.iter().any(|a| a == "*") => {
                    let may = user.is_some() || self.policy.has_anonymous();
                    if may && !out.iter().any(|e| e.kind == "registry") {
                        out.push(AccessEntry {
                            kind: "registry".into(),
                            name: "catalog".into(),
                            actions: vec!["*".into()],
                        });
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// `repository:<name>:<actions>` for the challenge: push asks for pull too, as
/// docker does (a push reads what it mounts and checks).
pub fn repository_scope(repo: &RepositoryName, action: Action) -> String {
    let actions = match action {
        Action::Pull => "pull",
        Action::Push => "pull,push",
        Action::Delete => "delete",
    };
    format!("repository:{repo}:{actions}")
}

fn token_keys(
    config: &AuthConfig,
    issuer: &str,
    problems: &mut Vec<String>,
) -> Vec<keys::TrustedKey> {
    keys::load_keys(
        &config.token.public_keys,
        config.token.jwks.as_deref(),
        issuer,
    )
    .unwrap_or_else(|p| {
        problems.extend(p);
        Vec::new()
    })
}

#[cfg(test)]
mod tests;
