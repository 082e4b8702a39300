//! Command-line arguments. Flags are the top configuration layer; the `VALV_*`
//! environment layer is applied by [`crate::config`] (not by clap) so that the file →
//! env → flags order holds for every setting, including those without a flag.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Overrides;

#[derive(Debug, Parser)]
#[command(
    name = "valv",
    version,
    about = "An OCI registry whose storage is envelope-encrypted under a customer-managed key"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the registry.
    Serve(Box<ServeArgs>),
    /// Manage local (file://) key-encryption keys: create, add-version, disable,
    /// enable, show.
    #[command(subcommand)]
    Kek(KekCommand),
    /// Run a fake Azure Key Vault (with token endpoint and IMDS) for development and
    /// tests. Not a vault: its keys sit in plain files and its control API under
    /// /_fake has no authentication. Listen on 127.0.0.1 only.
    #[cfg(feature = "dev-keyvault")]
    DevKeyvault(DevKeyvaultArgs),
    /// Show or rotate the registry's encryption key through a running valv's admin API
    /// (like `az acr encryption show|rotate-key`).
    #[command(subcommand)]
    Encryption(EncryptionCommand),
    /// Exit 0 when a valv on this host answers 200 on /readyz, 1 otherwise: the
    /// container image's HEALTHCHECK (it has no curl).
    Healthcheck(HealthcheckArgs),
}

/// `valv healthcheck`: where to probe, and for how long.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// The URL to GET [default: /readyz on the address `valv serve` listens on, from
    /// the same configuration (--config / VALV_CONFIG, VALV_LISTEN, …); 0.0.0.0 and
    /// [::] are probed on loopback, a TLS listener over https without certificate
    /// verification]
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// TOML configuration file to read the listen address from [env: VALV_CONFIG]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Seconds to wait for the answer (at least 1)
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub timeout: u64,
}

/// `valv encryption …`: clients of the admin API (`/admin/v1/encryption`).
#[derive(Debug, Subcommand)]
pub enum EncryptionCommand {
    /// Print the key the registry is encrypted under, its state and the registry-key
    /// generations, as JSON.
    Show {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Rewrap the registry keys under another key or key version. A versionless id
    /// turns automatic rotation on; a versioned id pins that version.
    RotateKey {
        /// The new key-encryption key id (versioned or versionless)
        #[arg(long, value_name = "ID")]
        key_encryption_key: String,
        /// The client id of the identity to reach the key with: only the identity the
        /// registry runs with is accepted (valv uses one identity)
        #[arg(long, value_name = "ID")]
        identity: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Where the admin API is and how to authenticate to it.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The registry's base URL (http:// or https://)
    #[arg(
        long,
        value_name = "URL",
        env = "VALV_ADMIN_URL",
        default_value = "http://127.0.0.1:5000"
    )]
    pub url: String,
    /// The admin bearer token [env: VALV_ADMIN_TOKEN]; prefer the variable, as
    /// command lines are visible to other users
    #[arg(long, value_name = "TOKEN", env = "VALV_ADMIN_TOKEN", hide_env = true)]
    pub token: Option<String>,
    /// PEM file of CA certificates to trust for an https:// URL, besides the built-in
    /// roots (a registry whose certificate comes from a private CA)
    #[arg(long, value_name = "FILE", env = "VALV_ADMIN_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
}

/// Only in a build with the cargo feature `dev-keyvault` (tests turn it on).
#[cfg(feature = "dev-keyvault")]
#[derive(Debug, Args)]
pub struct DevKeyvaultArgs {
    /// Address to listen on (port 0 picks a free port)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
    pub listen: std::net::SocketAddr,
    /// Directory for the fake vault's keys and state; without it, state is in memory
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// The tenant id its token endpoint serves
    #[arg(long, value_name = "ID")]
    pub tenant: Option<String>,
    /// Lifetime of the tokens it issues, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub token_lifetime: u64,
}

/// `valv kek …`: the local key provider's lifecycle. Key ids are
/// `file:///<dir>/<name>` (a key) or `file:///<dir>/<name>/<version>` (one version).
#[derive(Debug, Subcommand)]
pub enum KekCommand {
    /// Create a key with one enabled version.
    Create {
        /// file:///<dir>/<name> (the directory is created if needed)
        #[arg(value_name = "KEY_ID")]
        key_id: String,
        /// RSA modulus size: 2048, 3072 or 4096
        #[arg(long, default_value_t = 3072)]
        bits: u32,
    },
    /// Add a new enabled version; a registry using the versionless id adopts it.
    AddVersion {
        /// file:///<dir>/<name>
        #[arg(value_name = "KEY_ID")]
        key_id: String,
        /// RSA modulus size: 2048, 3072 or 4096
        #[arg(long, default_value_t = 3072)]
        bits: u32,
    },
    /// Disable one version: it can no longer wrap or unwrap (revocation).
    Disable {
        /// file:///<dir>/<name>/<version>
        #[arg(value_name = "KEY_ID")]
        version_id: String,
    },
    /// Enable one version again.
    Enable {
        /// file:///<dir>/<name>/<version>
        #[arg(value_name = "KEY_ID")]
        version_id: String,
    },
    /// Show every version of a key, and which one a versionless id resolves to.
    Show {
        /// file:///<dir>/<name>
        #[arg(value_name = "KEY_ID")]
        key_id: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Each flag can also be set with the environment variable named in its help, or in
/// the config file; docs/OPERATIONS.md lists every setting.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Address to listen on, host:port [env: VALV_LISTEN] [default: 127.0.0.1:5000]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// A second listener serving only /metrics, without authentication, host:port
    /// (port 0 picks a free port) [env: VALV_METRICS_LISTEN] [default: none]
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Data directory for the local KEK and the default filesystem storage
    /// [env: VALV_DATA_DIR] [default: ./valv-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Key-encryption key id, file:///<dir>/<name>[/<version>]
    /// [env: VALV_KEY_ID] [default: a local development key under <data-dir>/keys]
    #[arg(long, value_name = "ID")]
    pub key_id: Option<String>,
    /// TOML configuration file [env: VALV_CONFIG]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Object storage URL, file:///<dir> or memory:// [env: VALV_STORAGE]
    /// [default: <data-dir>/store]
    #[arg(long, value_name = "URL")]
    pub storage: Option<String>,
    /// Seconds between key checks: a revoked key stops all content within this
    /// [env: VALV_KEY_CHECK_INTERVAL] [default: 30]
    #[arg(long, value_name = "SECS")]
    pub key_check_interval: Option<u64>,
    /// Seconds between looks for a newer key version (versionless key ids)
    /// [env: VALV_ROTATION_POLL_INTERVAL] [default: 300]
    #[arg(long, value_name = "SECS")]
    pub rotation_poll_interval: Option<u64>,
    /// Seconds content is still served while the vault is unreachable; 0 = strict
    /// [env: VALV_OUTAGE_GRACE] [default: 900]
    #[arg(long, value_name = "SECS")]
    pub outage_grace: Option<u64>,
    /// htpasswd file of bcrypt entries (htpasswd -B): turns Basic auth on
    /// [env: VALV_HTPASSWD]
    #[arg(long, value_name = "FILE")]
    pub htpasswd: Option<PathBuf>,
    /// Bearer token auth with the built-in token endpoint /auth/token, for the
    /// htpasswd users [env: VALV_TOKEN_AUTH=1]
    #[arg(long)]
    pub token_auth: bool,
    /// TLS: the server certificate, PEM (leaf first, then intermediates); needs
    /// --tls-key [env: VALV_TLS_CERT]
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// TLS: the certificate's private key, PEM [env: VALV_TLS_KEY]
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// TLS: CA certificates (PEM) that client certificates must chain to (mTLS);
    /// clients without a certificate are still admitted [env: VALV_TLS_CLIENT_CA]
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// Log lines as `text` or `json` (one object per line) on stderr
    /// [env: VALV_LOG_FORMAT] [default: text]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Traces: the OTLP/HTTP collector to export spans to (`http://collector:4318`;
    /// `/v1/traces` is appended when the URL has no path) [env: VALV_OTLP_ENDPOINT]
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

impl ServeArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            config: self.config.clone(),
            listen: self.listen.clone(),
            metrics_listen: self.metrics_listen.clone(),
            data_dir: self.data_dir.clone(),
            key_id: self.key_id.clone(),
            storage: self.storage.clone(),
            key_check_interval_secs: self.key_check_interval,
            rotation_poll_interval_secs: self.rotation_poll_interval,
            outage_grace_secs: self.outage_grace,
            htpasswd: self.htpasswd.clone(),
            token_auth: self.token_auth,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_client_ca: self.tls_client_ca.clone(),
            log_format: self.log_format.clone(),
            otlp_endpoint: self.otlp_endpoint.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_flags_parse() {
        let cli = Cli::try_parse_from([
            "valv",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "/d",
            "--storage",
            "memory://",
            "--tls-cert",
            "/c.pem",
            "--tls-key",
            "/k.pem",
            "--tls-client-ca",
            "/ca.pem",
        ])
        .expect("parse");
        let Command::Serve(args) = cli.command else {
            panic!("serve parses as Serve");
        };
        let o = args.overrides();
        assert_eq!(o.listen.as_deref(), Some("127.0.0.1:0"));
        assert_eq!(o.data_dir, Some(PathBuf::from("/d")));
        assert_eq!(o.storage.as_deref(), Some("memory://"));
        assert_eq!(o.key_id, None);
        assert_eq!(o.tls_cert, Some(PathBuf::from("/c.pem")));
        assert_eq!(o.tls_key, Some(PathBuf::from("/k.pem")));
        assert_eq!(o.tls_client_ca, Some(PathBuf::from("/ca.pem")));
    }

    #[test]
    fn kek_subcommands_parse() {
        let cli = Cli::try_parse_from(["valv", "kek", "create", "file:///k/a", "--bits", "2048"])
            .expect("parse");
        assert!(matches!(
            cli.command,
            Command::Kek(KekCommand::Create { bits: 2048, .. })
        ));
        assert!(Cli::try_parse_from(["valv", "kek", "disable"]).is_err());
        assert!(Cli::try_parse_from(["valv", "kek", "rotate", "file:///k/a"]).is_err());
    }

    #[test]
    fn encryption_subcommands_parse() {
        let cli = Cli::try_parse_from([
            "valv",
            "encryption",
            "rotate-key",
            "--key-encryption-key",
            "file:///k/a",
            "--url",
            "http://127.0.0.1:1",
            "--token",
            "t",
        ])
        .expect("parse");
        let Command::Encryption(EncryptionCommand::RotateKey {
            key_encryption_key,
            identity,
            admin,
        }) = cli.command
        else {
            panic!("rotate-key parses as RotateKey");
        };
        assert_eq!(key_encryption_key, "file:///k/a");
        assert_eq!(identity, None);
        assert_eq!(admin.url, "http://127.0.0.1:1");
        assert_eq!(admin.token.as_deref(), Some("t"));
        assert!(Cli::try_parse_from(["valv", "encryption", "rotate-key"]).is_err());
        assert!(Cli::try_parse_from(["valv", "encryption", "show"]).is_ok());
    }

    #[test]
    fn healthcheck_parses() {
        let cli = Cli::try_parse_from(["valv", "healthcheck"]).expect("parse");
        let Command::Healthcheck(args) = cli.command else {
            panic!("healthcheck parses as Healthcheck");
        };
        assert_eq!((args.url, args.timeout), (None, 5));
        let cli = Cli::try_parse_from([
            "valv",
            "healthcheck",
            "--url",
            "http://127.0.0.1:1/readyz",
            "--timeout",
            "2",
        ])
        .expect("parse");
        assert!(matches!(
            cli.command,
            Command::Healthcheck(HealthcheckArgs { timeout: 2, .. })
        ));
    }

    #[test]
    fn unknown_flag_is_rejected() {
        assert!(Cli::try_parse_from(["valv", "serve", "--listn", "x"]).is_err());
    }
}
