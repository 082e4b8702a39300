//! `[auth]`: who may do what (issue 13). Plain data, parsed by serde with unknown keys
//! refused; `crate::auth` builds the running authenticator from it and
//! [`AuthConfig::validate`] reports every problem with it at once.
//!
//! Several methods may be on together: Basic auth against an htpasswd file, bearer
//! tokens of the distribution token spec (from a third-party token service, from the
//! built-in endpoint, or both), and verified client certificates (mTLS).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// The whole `[auth]` table. Everything off by default: without `htpasswd`, token
/// auth or client certificates, valv admits every request (a trusted network only).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// An htpasswd file of bcrypt entries (`htpasswd -B`); turns Basic auth on.
    pub htpasswd: Option<PathBuf>,
    /// How often the htpasswd file's metadata is checked for a change to reload.
    pub htpasswd_reload_secs: u64,
    /// The realm of the `Basic` challenge.
    pub realm: String,
    /// Treat the subject of a verified client certificate (a TLS listener that asks for
    /// client certificates) as an authenticated user of that name.
    pub client_certificates: bool,
    /// How long a successful password verification is remembered (keyed hash, never
    /// the password). 0 = verify every time.
    pub cache_ttl_secs: u64,
    /// Bearer tokens (distribution token spec).
    pub token: TokenConfig,
    /// The built-in token endpoint `/auth/token`.
    pub issuer: IssuerConfig,
    /// Named groups of users, for rules and the admin role.
    pub groups: BTreeMap<String, Vec<String>>,
    /// Who may do what to which repositories. Empty: every authenticated user may
    /// pull, push and delete everywhere (distribution's behaviour).
    pub rules: Vec<RuleConfig>,
    /// What clients without credentials may do (e.g. pull `public/**`). Empty: nothing.
    pub anonymous: Vec<AnonymousRuleConfig>,
    /// The admin role: every action everywhere, and the admin API.
    pub admin: AdminRoleConfig,
    /// Failed-authentication rate limits.
    pub limits: LimitsConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            htpasswd: None,
            htpasswd_reload_secs: 5,
            realm: "valv".into(),
            client_certificates: false,
            cache_ttl_secs: 30,
            token: TokenConfig::default(),
            issuer: IssuerConfig::default(),
            groups: BTreeMap::new(),
            rules: Vec::new(),
            anonymous: Vec::new(),
            admin: AdminRoleConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// Accept bearer tokens and answer 401 with a `Bearer` challenge.
    pub enabled: bool,
    /// The token service's URL for the challenge. Unset with the built-in issuer on:
    /// `http(s)://<Host of the request>/auth/token`.
    pub realm: Option<String>,
    /// The registry's service name: the challenge's `service` and the `aud` tokens must
    /// carry.
    pub service: String,
    /// The `iss` tokens signed by `public_keys` / `jwks` must carry.
    pub issuer: Option<String>,
    /// PEM files of public keys (RSA, EC P-256, Ed25519) of a third-party token service.
    pub public_keys: Vec<PathBuf>,
    /// A JWKS file (`{"keys":[…]}`) of the same.
    pub jwks: Option<PathBuf>,
    /// Tolerance on `exp` and `nbf`, for clocks that disagree a little. At most 300.
    pub clock_skew_secs: u64,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            enabled: false,
            realm: None,
            service: "valv".into(),
            issuer: None,
            public_keys: Vec::new(),
            jwks: None,
            clock_skew_secs: 60,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IssuerConfig {
    /// Serve `/auth/token` for the htpasswd users (needs `htpasswd` and `token.enabled`).
    pub enabled: bool,
    /// PKCS#8 PEM of an EC P-256 private key. Unset: generated on first start under
    /// `<data_dir>/auth/token-signing-key.pem` (mode 0600).
    pub signing_key: Option<PathBuf>,
    /// Lifetime of issued tokens.
    pub lifetime_secs: u64,
    /// The `iss` of issued tokens.
    pub issuer: String,
}

impl Default for IssuerConfig {
    fn default() -> Self {
        IssuerConfig {
            enabled: false,
            signing_key: None,
            lifetime_secs: 300,
            issuer: "valv-token-issuer".into(),
        }
    }
}

/// `[[auth.rules]]`: these users and groups may do these actions on repositories
/// matching these patterns (`team-a/**`, `*/tools`, `**`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub repositories: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    pub actions: Vec<String>,
}

/// `[[auth.anonymous]]`: what anyone may do without credentials.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnonymousRuleConfig {
    pub repositories: Vec<String>,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AdminRoleConfig {
    pub users: Vec<String>,
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Failed authentications allowed per client address, and per user name, within
    /// one window; further attempts get 429 until the window ends.
    pub max_failures: u32,
    pub window_secs: u64,
    /// Addresses and users tracked at once (bounded memory).
    pub max_tracked: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_failures: 10,
            window_secs: 60,
            max_tracked: 10_000,
        }
    }
}

impl AuthConfig {
    /// Whether any authentication method is on; off means every request is admitted.
    pub fn enabled(&self) -> bool {
        self.htpasswd.is_some() || self.token.enabled || self.client_certificates
    }

    /// Problems with these settings (patterns, actions and key files are checked when
    /// the authenticator is built, which reads them).
    pub fn validate(&self, problems: &mut Vec<String>) {
        if self.issuer.enabled && self.htpasswd.is_none() {
            problems.push(
                "auth.issuer.enabled needs auth.htpasswd (the users it issues tokens to)".into(),
            );
        }
        if self.issuer.enabled && !self.token.enabled {
            problems.push("auth.issuer.enabled needs auth.token.enabled".into());
        }
        let external = !self.token.public_keys.is_empty() || self.token.jwks.is_some();
        if self.token.enabled && !external && !self.issuer.enabled {
            problems.push(
                "auth.token.enabled needs trusted keys (auth.token.public_keys or auth.token.jwks) or the built-in issuer (auth.issuer.enabled)"
                    .into(),
            );
        }
        if external && self.token.issuer.as_deref().is_none_or(str::is_empty) {
            problems.push(
                "auth.token.issuer must name the iss of tokens signed by auth.token.public_keys / jwks"
                    .into(),
            );
        }
        if self.token.enabled && self.token.realm.is_none() && !self.issuer.enabled {
            problems.push(
                "auth.token.realm (the token service's URL) is required unless the built-in issuer is on"
                    .into(),
            );
        }
        if self.token.service.is_empty() || self.token.service.contains('"') {
            problems.push("auth.token.service must be non-empty and contain no '\"'".into());
        }
        if self.realm.is_empty() || self.realm.contains('"') {
            problems.push("auth.realm must be non-empty and contain no '\"'".into());
        }
        if let Some(realm) = &self.token.realm {
            if realm.contains('"')
                || !(realm.starts_with("https://") || realm.starts_with("http://"))
            {
                problems.push(format!(
                    "auth.token.realm {realm:?} must be an http:// or https:// URL"
                ));
            }
        }
        if self.token.clock_skew_secs > 300 {
            problems.push("auth.token.clock_skew_secs must be at most 300".into());
        }
        if !(1..=86_400).contains(&self.issuer.lifetime_secs) {
            problems.push("auth.issuer.lifetime_secs must be between 1 and 86400".into());
        }
        if self.issuer.issuer.is_empty() {
            problems.push("auth.issuer.issuer must not be empty".into());
        }
        if self.htpasswd_reload_secs == 0 {
            problems.push("auth.htpasswd_reload_secs must be at least 1".into());
        }
        if self.limits.max_failures == 0 {
            problems.push("auth.limits.max_failures must be at least 1".into());
        }
        if self.limits.window_secs == 0 {
            problems.push("auth.limits.window_secs must be at least 1".into());
        }
        if self.limits.max_tracked == 0 {
            problems.push("auth.limits.max_tracked must be at least 1".into());
        }
    }
}

impl AuthConfig {
    /// `--token-auth` / `VALV_TOKEN_AUTH=1`: bearer tokens from the built-in issuer.
    pub fn enable_token_short_path(&mut self) {
        self.token.enabled = true;
        self.issuer.enabled = true;
    }
}
