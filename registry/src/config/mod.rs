//! Typed configuration: defaults in code, then a TOML file, then `VALV_*` environment
//! variables, then command-line flags (DESIGN §9). Unknown keys are errors. Values with a
//! grammar of their own (the storage URL, the key id) are parsed as they are layered in,
//! so a loaded `Config` holds typed values, never text to re-parse. [`Config::load`]
//! reports every problem of the environment, the flags and [`Config::validate`] at once
//! instead of stopping at the first.
//!
//! docs/OPERATIONS.md lists every key; keep the two in step.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use kms_client::KeyId;
use serde::Deserialize;
use thiserror::Error;

pub mod auth;
pub mod cloud;
pub use auth::AuthConfig;
pub use cloud::{AzureConfig, S3Config};

/// Manifests are collected in memory, so their size is bounded. The spec says a
/// registry SHOULD accept at least 4 MB, hence the floor.
pub const DEFAULT_MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// 32 GiB: above any layer a real image has, small enough that one client cannot fill
/// a disk with one upload unnoticed.
pub const DEFAULT_MAX_BLOB_BYTES: u64 = 32 * 1024 * 1024 * 1024;
/// hyper reads a request head into a buffer of at least this many bytes.
const MIN_MAX_HEADER_BYTES: usize = 8 * 1024;
const MIN_MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
const MAX_MAX_MANIFEST_BYTES: usize = 64 * 1024 * 1024;

/// The whole configuration. Every field has a default, so an empty file is valid.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub encryption: EncryptionConfig,
    pub admin: AdminConfig,
    pub auth: AuthConfig,
    pub log: LogConfig,
    pub telemetry: TelemetryConfig,
}

/// `[telemetry]`: traces, exported by OTLP (HTTP/protobuf) to a collector
/// ([`crate::telemetry`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The collector: its base URL (`http://collector:4318`, `/v1/traces` appended) or
    /// the full URL spans are posted to. Unset (the default): no traces.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the exported spans.
    pub service_name: String,
    /// The share of requests traced when the client's `traceparent` has not decided
    /// (0.0 to 1.0; 1.0, the default, traces every request). A client's decision is
    /// always kept.
    pub sample_ratio: SampleRatio,
}

/// A share between 0.0 and 1.0 (checked when the configuration is loaded, so never
/// NaN: equality is total).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct SampleRatio(pub f64);

impl Eq for SampleRatio {}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            service_name: "valv".to_owned(),
            sample_ratio: SampleRatio(1.0),
        }
    }
}

/// `[log]`: how log lines are written (to stderr). Which lines is `RUST_LOG`'s.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (the default, for people) or `json` (one object per line, for log
    /// collectors).
    #[serde(deserialize_with = "log_format")]
    pub format: LogFormat,
}

/// The shape of a log line (`log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// tracing's human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?} is not \"text\" or \"json\"")),
        }
    }
}

/// The admin API (`/admin/v1/…`). Without a token it is disabled (404).
#[derive(Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The bearer token admin requests must carry. A secret: prefer
    /// `VALV_ADMIN_TOKEN` to the file; never logged (`Debug` redacts it).
    pub token: Option<String>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The admin API's settings as the running registry uses them. The token is never
/// logged (`Debug` redacts it).
#[derive(Clone, Default)]
pub struct AdminSettings {
    /// `None`: the admin API is disabled (404).
    pub token: Option<String>,
    /// The client id valv authenticates to the vault with (`AZURE_CLIENT_ID`), shown
    /// as `keyVaultProperties.identity`; a rotate-key naming another is refused.
    pub identity: Option<String>,
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("identity", &self.identity)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// `host:port` to listen on. Loopback by default, so a development registry is
    /// never exposed by accident.
    pub listen: String,
    /// `host:port` of a second listener that serves only `/metrics`, without
    /// authentication (for a scraper on a private network); none by default. The main
    /// listener's `/metrics` follows access control (docs/OPERATIONS.md "Metrics").
    pub metrics_listen: Option<String>,
    /// Connections served at once; further ones wait in the kernel's accept queue
    /// instead of exhausting file descriptors or memory.
    pub max_connections: usize,
    /// Connections one client may hold at once (one IPv4 address, or one IPv6 /64);
    /// beyond it a new connection is answered 429 and closed, so one client cannot
    /// take every slot. 0 = no per-client limit (behind a proxy all clients are one).
    pub max_connections_per_client: usize,
    /// After SIGINT/SIGTERM, how long in-flight requests may run before they are cut.
    /// Cutting is safe (an upload is only committed by its envelope), merely rude.
    pub shutdown_grace_secs: u64,
    /// How long a client may take to send its request headers (slow-loris guard).
    pub header_read_timeout_secs: u64,
    /// How long a request body may go without a byte before the request is ended
    /// (408): an upload trickled or stalled does not hold its connection for ever.
    pub body_idle_timeout_secs: u64,
    /// Largest HTTP/1.1 request head (request line and headers), in bytes (431 above
    /// it). It is also the most a connection's read buffer grows to, so a much smaller
    /// value slows uploads; hyper's default. (HTTP/2 keeps its 16 KiB header list.)
    pub max_header_bytes: usize,
    /// Most headers in one request (431 above it).
    pub max_headers: usize,
    /// Most blobs and child manifests one manifest may reference (each is checked
    /// in the store before the manifest is accepted).
    pub max_manifest_references: usize,
    /// Largest manifest accepted (413 above it).
    pub max_manifest_bytes: usize,
    /// Most upload sessions one client (an IPv4 address or IPv6 /64) may have open on
    /// this node (429 `TOOMANYREQUESTS` for the next).
    pub max_upload_sessions_per_client: usize,
    /// Most upload sessions open in one repository on this node.
    pub max_upload_sessions_per_repository: usize,
    /// How long an open session may go without a request and still count toward
    /// those limits (it can be resumed after that).
    pub upload_session_idle_secs: u64,
    /// TLS on the listener (`[server.tls]`); off unless a certificate and key are set.
    pub tls: TlsConfig,
}

/// `[server.tls]`: the listener's certificate, and client certificates (mTLS).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM: the server certificate, followed by any intermediates. Set with `key_file`
    /// (both or neither); both set = the listener speaks only TLS.
    pub cert_file: Option<PathBuf>,
    /// PEM: the certificate's private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key_file: Option<PathBuf>,
    /// PEM: CA certificates client certificates must chain to. Clients are asked for a
    /// certificate but may connect without one.
    pub client_ca_file: Option<PathBuf>,
    /// How often the files are checked for new contents to reload; 0 = only on SIGHUP.
    pub reload_interval_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            reload_interval_secs: 2,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:5000".into(),
            metrics_listen: None,
            max_connections: 4096,
            max_connections_per_client: 256,
            shutdown_grace_secs: 30,
            header_read_timeout_secs: 30,
            body_idle_timeout_secs: 60,
            max_header_bytes: 8 * 1024 + 100 * 4 * 1024,
            max_headers: 100,
            max_manifest_references: 10_000,
            max_upload_sessions_per_client: 1_000,
            max_upload_sessions_per_repository: 10_000,
            upload_session_idle_secs: 3600,
            max_manifest_bytes: DEFAULT_MAX_MANIFEST_BYTES,
            tls: TlsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Where the embedded defaults live: the local KEK (`keys/`) and, unless `url` says
    /// otherwise, the object store (`store/`).
    pub data_dir: PathBuf,
    /// `file:///abs/path`, `s3://<bucket>/<prefix>`, `az://<container>/<prefix>` or
    /// `memory://`. Unset: `<data_dir>/store` on the local disk.
    #[serde(deserialize_with = "parsed")]
    pub url: Option<StorageUrl>,
    /// How long a manifest GET may reuse a tag or digest lookup. Changes made through
    /// this node are seen at once; another node's tag moves and deletes within this.
    /// 0 = look up every time.
    pub tag_cache_ttl_ms: u64,
    /// What the crash cleanup (`storage::Store::sweep`, run at start and on the admin
    /// API's request) leaves alone: anything written less than this many seconds ago,
    /// so that writes in flight on any node are never touched. Also how long an ended
    /// upload session keeps answering a repeated commit.
    pub orphan_grace_secs: u64,
    /// Largest blob accepted, in bytes, by one push or a whole chunked upload (413
    /// `SIZE_INVALID` above it); 0 = no limit.
    pub max_blob_bytes: u64,
    /// Follow repository links (blob and manifest links, tags, referrers) written
    /// before links were sealed (docs/FORMAT.md §11). Off: such a link is an integrity
    /// error. On only while upgrading a store, until `POST
    /// /admin/v1/storage/seal-links` has sealed them.
    pub accept_unsealed_links: bool,
    /// MiB per part of a multipart data-object write on S3 and Azure (file and memory
    /// stores keep 1 MiB parts). An upload buffers part size × (parts in flight + 1).
    pub part_size_mib: u64,
    /// Parts of one data-object write uploaded at once (every backend).
    pub parts_in_flight: usize,
    /// MiB of part buffers all uploads in progress together may hold (every backend):
    /// an upload waits for room, reading no more of its body meanwhile. Raised to one
    /// part when smaller.
    pub write_buffer_mib: u64,
    /// Retries of a failed object-store request (S3, Azure); 0 = none.
    pub retries: usize,
    /// No retry starts later than this after a request's first attempt.
    pub retry_timeout_secs: u64,
    /// One object-store request attempt, from connecting to the end of its body.
    pub request_timeout_secs: u64,
    /// Connecting to the object store.
    pub connect_timeout_secs: u64,
    /// `[storage.s3]`: the S3 client's settings (`s3://` urls only).
    pub s3: Option<S3Config>,
    /// `[storage.azure]`: the Azure client's settings (`az://` urls only).
    pub azure: Option<AzureConfig>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./valv-data"),
            url: None,
            tag_cache_ttl_ms: 1000,
            orphan_grace_secs: 3600,
            max_blob_bytes: DEFAULT_MAX_BLOB_BYTES,
            accept_unsealed_links: false,
            part_size_mib: 5,
            parts_in_flight: 2,
            write_buffer_mib: 24,
            retries: 10,
            retry_timeout_secs: 180,
            request_timeout_secs: 30,
            connect_timeout_secs: 5,
            s3: None,
            azure: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncryptionConfig {
    /// The KEK. Unset: a local development key under `<data_dir>/keys`.
    #[serde(deserialize_with = "parsed")]
    pub key_id: Option<KeyId>,
    /// How often the key watcher probes the KEK (one unwrap) and looks for a keyring
    /// another node changed. Revocation takes effect within this interval.
    pub key_check_interval_secs: u64,
    /// How often, with a versionless key id, the watcher asks the vault for a newer
    /// key version to rotate to.
    pub rotation_poll_interval_secs: u64,
    /// How long content keeps being served while the vault cannot be reached
    /// (transient failures); after it, content is refused with 503. 0 = strict.
    pub outage_grace_secs: u64,
}

impl Default for EncryptionConfig {
    fn default() -> Self {
        EncryptionConfig {
            key_id: None,
            key_check_interval_secs: 30,
            rotation_poll_interval_secs: 300,
            outage_grace_secs: 900,
        }
    }
}

/// Values given on the command line; `None` leaves the lower layers' value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub listen: Option<String>,
    pub metrics_listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub key_id: Option<String>,
    pub storage: Option<String>,
    pub key_check_interval_secs: Option<u64>,
    pub rotation_poll_interval_secs: Option<u64>,
    pub outage_grace_secs: Option<u64>,
    pub htpasswd: Option<PathBuf>,
    pub token_auth: bool,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    pub log_format: Option<String>,
    pub otlp_endpoint: Option<String>,
}

/// Where the object store lives, parsed from `storage.url` (the storage crate opens it).
pub use storage::backend::StorageUrl;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
}

/// Environment variable names, one per setting (plus `VALV_CONFIG` for the file).
pub mod env {
    pub const CONFIG: &str = "VALV_CONFIG";
    pub const LISTEN: &str = "VALV_LISTEN";
    pub const METRICS_LISTEN: &str = "VALV_METRICS_LISTEN";
    pub const MAX_CONNECTIONS: &str = "VALV_MAX_CONNECTIONS";
    pub const SHUTDOWN_GRACE_SECS: &str = "VALV_SHUTDOWN_GRACE_SECS";
    pub const HEADER_READ_TIMEOUT_SECS: &str = "VALV_HEADER_READ_TIMEOUT_SECS";
    pub const MAX_MANIFEST_BYTES: &str = "VALV_MAX_MANIFEST_BYTES";
    pub const DATA_DIR: &str = "VALV_DATA_DIR";
    pub const STORAGE: &str = "VALV_STORAGE";
    pub const KEY_ID: &str = "VALV_KEY_ID";
    pub const KEY_CHECK_INTERVAL: &str = "VALV_KEY_CHECK_INTERVAL";
    pub const ROTATION_POLL_INTERVAL: &str = "VALV_ROTATION_POLL_INTERVAL";
    pub const OUTAGE_GRACE: &str = "VALV_OUTAGE_GRACE";
    pub const TAG_CACHE_TTL_MS: &str = "VALV_TAG_CACHE_TTL_MS";
    pub const ORPHAN_GRACE_SECS: &str = "VALV_ORPHAN_GRACE_SECS";
    pub const ADMIN_TOKEN: &str = "VALV_ADMIN_TOKEN";
    pub const HTPASSWD: &str = "VALV_HTPASSWD";
    pub const TOKEN_AUTH: &str = "VALV_TOKEN_AUTH";
    pub const AUTH_MAX_FAILURES: &str = "VALV_AUTH_MAX_FAILURES";
    pub const AUTH_WINDOW_SECS: &str = "VALV_AUTH_WINDOW_SECS";
    pub const TLS_CERT: &str = "VALV_TLS_CERT";
    pub const TLS_KEY: &str = "VALV_TLS_KEY";
    pub const TLS_CLIENT_CA: &str = "VALV_TLS_CLIENT_CA";
    pub const TLS_RELOAD_INTERVAL_SECS: &str = "VALV_TLS_RELOAD_INTERVAL_SECS";
    pub const LOG_FORMAT: &str = "VALV_LOG_FORMAT";
    pub const OTLP_ENDPOINT: &str = "VALV_OTLP_ENDPOINT";
    pub const OTEL_SERVICE_NAME: &str = "VALV_OTEL_SERVICE_NAME";
    pub const OTLP_SAMPLE_RATIO: &str = "VALV_OTLP_SAMPLE_RATIO";
}

impl Config {
    /// Builds the configuration from every layer and validates it.
    ///
    /// `getenv` is the environment (injected so tests need not touch the process's).
    /// Fails when the file cannot be read or parsed (unknown keys included), an
    /// environment value does not parse, or validation finds problems.
    pub fn load(
        flags: &Overrides,
        getenv: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        // An empty variable counts as unset, as shells make "unset" awkward.
        let getenv = |k: &str| getenv(k).filter(|v| !v.is_empty());
        let file = flags
            .config
            .clone()
            .or_else(|| getenv(env::CONFIG).map(PathBuf::from));
        let mut config = match file {
            Some(path) => Config::from_file(&path)?,
            None => Config::default(),
        };
        let mut problems = Vec::new();
        config.apply_env(&getenv, &mut problems);
        config.apply_flags(flags, &mut problems);
        if let Err(ConfigError::Invalid(found)) = config.validate() {
            problems.extend(found);
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Reads a TOML file. Fails on I/O errors, syntax errors and unknown keys.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses TOML text; the error is the parser's message (it names unknown keys).
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Overrides fields from `VALV_*` variables. A value that does not parse leaves the
    /// field as it was and adds a problem naming the variable.
    pub fn apply_env(
        &mut self,
        getenv: &dyn Fn(&str) -> Option<String>,
        problems: &mut Vec<String>,
    ) {
        fn number<T: FromStr>(
            field: &mut T,
            var: &str,
            getenv: &dyn Fn(&str) -> Option<String>,
            problems: &mut Vec<String>,
        ) {
            if let Some(v) = getenv(var) {
                match v.trim().parse() {
                    Ok(n) => *field = n,
                    Err(_) => problems.push(format!("{var}: {v:?} is not a non-negative integer")),
                }
            }
        }
        if let Some(v) = getenv(env::LISTEN) {
            self.server.listen = v;
        }
        if let Some(v) = getenv(env::METRICS_LISTEN) {
            self.server.metrics_listen = Some(v);
        }
        number(
            &mut self.server.max_connections,
            env::MAX_CONNECTIONS,
            getenv,
            problems,
        );
        number(
            &mut self.server.shutdown_grace_secs,
            env::SHUTDOWN_GRACE_SECS,
            getenv,
            problems,
        );
        number(
            &mut self.server.header_read_timeout_secs,
            env::HEADER_READ_TIMEOUT_SECS,
            getenv,
            problems,
        );
        number(
            &mut self.server.max_manifest_bytes,
            env::MAX_MANIFEST_BYTES,
            getenv,
            problems,
        );
        if let Some(v) = getenv(env::DATA_DIR) {
            self.storage.data_dir = PathBuf::from(v);
        }
        if let Some(v) = getenv(env::STORAGE) {
            set_storage_url(&mut self.storage.url, &v, env::STORAGE, problems);
        }
        number(
            &mut self.storage.tag_cache_ttl_ms,
            env::TAG_CACHE_TTL_MS,
            getenv,
            problems,
        );
        number(
            &mut self.storage.orphan_grace_secs,
            env::ORPHAN_GRACE_SECS,
            getenv,
            problems,
        );
        if let Some(v) = getenv(env::KEY_ID) {
            set_key_id(&mut self.encryption.key_id, &v, env::KEY_ID, problems);
        }
        number(
            &mut self.encryption.key_check_interval_secs,
            env::KEY_CHECK_INTERVAL,
            getenv,
            problems,
        );
        number(
            &mut self.encryption.rotation_poll_interval_secs,
            env::ROTATION_POLL_INTERVAL,
            getenv,
            problems,
        );
        number(
            &mut self.encryption.outage_grace_secs,
            env::OUTAGE_GRACE,
            getenv,
            problems,
        );
        if let Some(v) = getenv(env::ADMIN_TOKEN) {
            self.admin.token = Some(v);
        }
        if let Some(v) = getenv(env::HTPASSWD) {
            self.auth.htpasswd = Some(PathBuf::from(v));
        }
        if let Some(v) = getenv(env::TOKEN_AUTH) {
            match v.trim() {
                "1" | "true" => self.auth.enable_token_short_path(),
                "0" | "false" => {}
                _ => problems.push(format!("{}: {v:?} is not 1 or 0", env::TOKEN_AUTH)),
            }
        }
        number(
            &mut self.auth.limits.max_failures,
            env::AUTH_MAX_FAILURES,
            getenv,
            problems,
        );
        number(
            &mut self.auth.limits.window_secs,
            env::AUTH_WINDOW_SECS,
            getenv,
            problems,
        );
        if let Some(v) = getenv(env::TLS_CERT) {
            self.server.tls.cert_file = Some(PathBuf::from(v));
        }
        if let Some(v) = getenv(env::TLS_KEY) {
            self.server.tls.key_file = Some(PathBuf::from(v));
        }
        if let Some(v) = getenv(env::TLS_CLIENT_CA) {
            self.server.tls.client_ca_file = Some(PathBuf::from(v));
        }
        number(
            &mut self.server.tls.reload_interval_secs,
            env::TLS_RELOAD_INTERVAL_SECS,
            getenv,
            problems,
        );
        if let Some(v) = getenv(env::LOG_FORMAT) {
            set_log_format(&mut self.log.format, &v, env::LOG_FORMAT, problems);
        }
        if let Some(v) = getenv(env::OTLP_ENDPOINT) {
            self.telemetry.otlp_endpoint = Some(v);
        }
        if let Some(v) = getenv(env::OTEL_SERVICE_NAME) {
            self.telemetry.service_name = v;
        }
        if let Some(v) = getenv(env::OTLP_SAMPLE_RATIO) {
            match v.trim().parse::<f64>() {
                Ok(r) => self.telemetry.sample_ratio = SampleRatio(r),
                Err(_) => problems.push(format!(
                    "{} must be a number from 0.0 to 1.0 (got {v:?})",
                    env::OTLP_SAMPLE_RATIO
                )),
            }
        }
    }

    /// Overrides fields from command-line flags (the top layer). A value that does not
    /// parse leaves the field as it was and adds a problem naming the flag.
    pub fn apply_flags(&mut self, flags: &Overrides, problems: &mut Vec<String>) {
        if let Some(v) = &flags.listen {
            self.server.listen = v.clone();
        }
        if let Some(v) = &flags.metrics_listen {
            self.server.metrics_listen = Some(v.clone());
        }
        if let Some(v) = &flags.data_dir {
            self.storage.data_dir = v.clone();
        }
        if let Some(v) = &flags.storage {
            set_storage_url(&mut self.storage.url, v, "--storage", problems);
        }
        if let Some(v) = &flags.key_id {
            set_key_id(&mut self.encryption.key_id, v, "--key-id", problems);
        }
        if let Some(v) = flags.key_check_interval_secs {
            self.encryption.key_check_interval_secs = v;
        }
        if let Some(v) = flags.rotation_poll_interval_secs {
            self.encryption.rotation_poll_interval_secs = v;
        }
        if let Some(v) = flags.outage_grace_secs {
            self.encryption.outage_grace_secs = v;
        }
        if let Some(v) = &flags.htpasswd {
            self.auth.htpasswd = Some(v.clone());
        }
        if flags.token_auth {
            self.auth.enable_token_short_path();
        }
        if let Some(v) = &flags.tls_cert {
            self.server.tls.cert_file = Some(v.clone());
        }
        if let Some(v) = &flags.tls_key {
            self.server.tls.key_file = Some(v.clone());
        }
        if let Some(v) = &flags.tls_client_ca {
            self.server.tls.client_ca_file = Some(v.clone());
        }
        if let Some(v) = &flags.log_format {
            set_log_format(&mut self.log.format, v, "--log-format", problems);
        }
        if let Some(v) = &flags.otlp_endpoint {
            self.telemetry.otlp_endpoint = Some(v.clone());
        }
    }

    /// Checks every setting; the error lists all problems found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if let Err(e) = check_listen("server.listen", &self.server.listen) {
            problems.push(e);
        }
        if let Some(metrics) = &self.server.metrics_listen {
            if let Err(e) = check_listen("server.metrics_listen", metrics) {
                problems.push(e);
            }
        }
        if self.server.max_connections == 0 {
            problems.push("server.max_connections must be at least 1".into());
        }
        if self.server.header_read_timeout_secs == 0 {
            problems.push("server.header_read_timeout_secs must be at least 1".into());
        }
        if self.server.body_idle_timeout_secs == 0 {
            problems.push("server.body_idle_timeout_secs must be at least 1".into());
        }
        if self.server.max_header_bytes < MIN_MAX_HEADER_BYTES {
            problems.push(format!(
                "server.max_header_bytes must be at least {MIN_MAX_HEADER_BYTES} (got {})",
                self.server.max_header_bytes
            ));
        }
        if self.server.max_headers == 0 {
            problems.push("server.max_headers must be at least 1".into());
        }
        if self.server.max_manifest_references == 0 {
            problems.push("server.max_manifest_references must be at least 1".into());
        }
        for (name, n) in [
            (
                "server.max_upload_sessions_per_client",
                self.server.max_upload_sessions_per_client,
            ),
            (
                "server.max_upload_sessions_per_repository",
                self.server.max_upload_sessions_per_repository,
            ),
            (
                "server.upload_session_idle_secs",
                self.server.upload_session_idle_secs as usize,
            ),
        ] {
            if n == 0 {
                problems.push(format!("{name} must be at least 1"));
            }
        }
        let m = self.server.max_manifest_bytes;
        if !(MIN_MAX_MANIFEST_BYTES..=MAX_MAX_MANIFEST_BYTES).contains(&m) {
            problems.push(format!(
                "server.max_manifest_bytes must be between {MIN_MAX_MANIFEST_BYTES} and {MAX_MAX_MANIFEST_BYTES} (got {m})"
            ));
        }
        problems.extend(self.server.tls.problems());
        if self.storage.data_dir.as_os_str().is_empty() {
            problems.push("storage.data_dir must not be empty".into());
        }
        self.storage.cloud_problems(&mut problems);
        if self.encryption.key_check_interval_secs == 0 {
            problems.push("encryption.key_check_interval_secs must be at least 1".into());
        }
        if self.encryption.rotation_poll_interval_secs == 0 {
            problems.push("encryption.rotation_poll_interval_secs must be at least 1".into());
        }
        if let Some(token) = &self.admin.token {
            if token.trim().is_empty() || token.chars().any(|c| c.is_whitespace()) {
                problems.push(
                    "admin.token must be non-empty and contain no whitespace (leave it unset to disable the admin API)"
                        .into(),
                );
            }
        }
        self.auth.validate(&mut problems);
        self.telemetry.problems(&mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

impl TelemetryConfig {
    fn problems(&self, problems: &mut Vec<String>) {
        if let Some(url) = &self.otlp_endpoint {
            let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
            let host = url.split_once("://").map_or("", |(_, rest)| rest);
            if !scheme_ok || host.is_empty() || host.starts_with('/') {
                problems.push(format!(
                    "telemetry.otlp_endpoint must be an http:// or https:// URL (got {url:?})"
                ));
            } else if !cfg!(feature = "otlp") {
                problems.push(
                    "telemetry.otlp_endpoint is set, but this valv was built without traces \
                     (build it with `--features otlp`; the container image has them)"
                        .into(),
                );
            }
        }
        if self.service_name.trim().is_empty() {
            problems.push("telemetry.service_name must not be empty".into());
        }
        let SampleRatio(r) = self.sample_ratio;
        if !(0.0..=1.0).contains(&r) {
            problems.push(format!(
                "telemetry.sample_ratio must be from 0.0 to 1.0 (got {r})"
            ));
        }
    }
}

impl TlsConfig {
    /// What is wrong with the TLS settings as a whole (the files themselves are read
    /// and checked when the listener starts).
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let empty = |p: &Option<PathBuf>| p.as_ref().is_some_and(|p| p.as_os_str().is_empty());
        for (name, p) in [
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
            ("client_ca_file", &self.client_ca_file),
        ] {
            if empty(p) {
                problems.push(format!("server.tls.{name} must not be empty"));
            }
        }
        match (&self.cert_file, &self.key_file) {
            (Some(cert), None) => problems.push(format!(
                "server.tls.cert_file ({}) is set without server.tls.key_file (--tls-key, VALV_TLS_KEY): set both or neither",
                cert.display()
            )),
            (None, Some(key)) => problems.push(format!(
                "server.tls.key_file ({}) is set without server.tls.cert_file (--tls-cert, VALV_TLS_CERT): set both or neither",
                key.display()
            )),
            _ => {}
        }
        if let (Some(ca), None) = (&self.client_ca_file, &self.cert_file) {
            problems.push(format!(
                "server.tls.client_ca_file ({}) needs TLS: set server.tls.cert_file and key_file too",
                ca.display()
            ));
        }
        problems
    }
}

/// Parses a storage URL given by `source` (a variable or a flag) into `field`.
fn set_storage_url(
    field: &mut Option<StorageUrl>,
    text: &str,
    source: &str,
    problems: &mut Vec<String>,
) {
    match text.parse() {
        Ok(url) => *field = Some(url),
        Err(e) => problems.push(format!("storage.url ({source}): {e}")),
    }
}

/// Parses a key id given by `source` (a variable or a flag) into `field`.
fn set_key_id(field: &mut Option<KeyId>, text: &str, source: &str, problems: &mut Vec<String>) {
    match text.parse::<KeyId>() {
        Ok(id) => *field = Some(id),
        Err(e) => problems.push(format!("encryption.key_id ({source}): {e}")),
    }
}

/// Parses a log format given by `source` (a variable or a flag) into `field`.
fn set_log_format(field: &mut LogFormat, text: &str, source: &str, problems: &mut Vec<String>) {
    match text.parse() {
        Ok(f) => *field = f,
        Err(e) => problems.push(format!("log.format ({source}): {e}")),
    }
}

/// `log.format` in the file: the message names the key (serde's would list variants).
fn log_format<'de, D: serde::Deserializer<'de>>(d: D) -> Result<LogFormat, D::Error> {
    let text = String::deserialize(d)?;
    text.parse()
        .map_err(|e| serde::de::Error::custom(format!("log.format: {e}")))
}

/// Deserializes an optional value through its `FromStr` (the file layer of
/// [`set_storage_url`] and [`set_key_id`]): the parser's message names the key.
fn parsed<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let text = String::deserialize(d)?;
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

/// `host:port` with a numeric port; the host is resolved when binding.
fn check_listen(setting: &str, listen: &str) -> Result<(), String> {
    let bad =
        || format!("{setting} {listen:?} must be host:port, e.g. 127.0.0.1:5000 or [::]:5000");
    let (host, port) = listen.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = Config::load(&Overrides::default(), &no_env).expect("defaults load");
        assert_eq!(c.server.listen, "127.0.0.1:5000");
        assert_eq!(c.storage.data_dir, PathBuf::from("./valv-data"));
        assert_eq!(c.storage.url, None);
        assert_eq!(c.encryption.key_id, None);
        assert_eq!(c.server.max_manifest_bytes, 4 * 1024 * 1024);
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(Config::from_toml(""), Ok(Config::default()));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e =
            Config::from_toml("[server]\nlisten = \"127.0.0.1:1\"\nlisen = \"x\"\n").unwrap_err();
        assert!(e.contains("lisen"), "{e}");
        let e = Config::from_toml("[storag]\n").unwrap_err();
        assert!(e.contains("storag"), "{e}");
        let e = Config::from_toml("top_level = 1\n").unwrap_err();
        assert!(e.contains("top_level"), "{e}");
    }

    #[test]
    fn wrong_types_are_rejected() {
        assert!(Config::from_toml("[server]\nmax_connections = \"many\"\n").is_err());
    }

    #[test]
    fn the_file_holds_parsed_urls_and_key_ids() {
        let c = Config::from_toml(
            "[storage]\nurl = \"file:///srv/valv\"\n[encryption]\nkey_id = \"file:///keys/kek\"\n",
        )
        .expect("parse");
        assert_eq!(c.storage.url, Some(StorageUrl::File("/srv/valv".into())));
        assert_eq!(
            c.encryption.key_id,
            Some("file:///keys/kek".parse().expect("key id"))
        );
        let c = Config::from_toml("[storage]\nurl = \"s3://bucket/valv\"\n").expect("parse");
        assert_eq!(
            c.storage.url,
            Some(StorageUrl::S3 {
                bucket: "bucket".into(),
                prefix: "valv".into()
            })
        );
        let e = Config::from_toml("[storage]\nurl = \"gs://bucket\"\n").unwrap_err();
        assert!(e.contains("not available yet") && e.contains("url"), "{e}");
        let e = Config::from_toml("[encryption]\nkey_id = \"ftp://key\"\n").unwrap_err();
        assert!(e.contains("key_id"), "{e}");
    }

    #[test]
    fn precedence_is_file_then_env_then_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("valv.toml");
        std::fs::write(
            &file,
            "[server]\nlisten = \"127.0.0.1:1111\"\nmax_connections = 7\n\
             [storage]\ndata_dir = \"/from/file\"\nurl = \"memory://\"\n",
        )
        .expect("write config");
        let env: HashMap<&str, String> = [
            (env::CONFIG, file.display().to_string()),
            (env::LISTEN, "127.0.0.1:2222".to_string()),
            (env::DATA_DIR, "/from/env".to_string()),
            (env::MAX_CONNECTIONS, "".to_string()), // empty = unset
        ]
        .into_iter()
        .collect();
        let getenv = |k: &str| env.get(k).cloned();

        // File, overridden by env.
        let c = Config::load(&Overrides::default(), &getenv).expect("load");
        assert_eq!(c.server.listen, "127.0.0.1:2222");
        assert_eq!(c.storage.data_dir, PathBuf::from("/from/env"));
        assert_eq!(
            c.server.max_connections, 7,
            "file value kept when env is empty"
        );
        assert_eq!(c.storage.url, Some(StorageUrl::Memory));

        // Flags override both.
        let flags = Overrides {
            listen: Some("127.0.0.1:3333".into()),
            storage: Some("file:///srv/valv".into()),
            ..Overrides::default()
        };
        let c = Config::load(&flags, &getenv).expect("load");
        assert_eq!(c.server.listen, "127.0.0.1:3333");
        assert_eq!(c.storage.data_dir, PathBuf::from("/from/env"));
        assert_eq!(c.storage.url, Some(StorageUrl::File("/srv/valv".into())));
    }

    #[test]
    fn config_flag_beats_config_env() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.toml");
        let b = dir.path().join("b.toml");
        std::fs::write(&a, "[server]\nmax_connections = 1\n").expect("write");
        std::fs::write(&b, "[server]\nmax_connections = 2\n").expect("write");
        let a_str = a.display().to_string();
        let getenv = |k: &str| (k == env::CONFIG).then(|| a_str.clone());
        let flags = Overrides {
            config: Some(b),
            ..Overrides::default()
        };
        let c = Config::load(&flags, &getenv).expect("load");
        assert_eq!(c.server.max_connections, 2);
    }

    #[test]
    fn unparsable_env_is_an_error_naming_the_variable() {
        let getenv = |k: &str| (k == env::MAX_CONNECTIONS).then(|| "lots".to_string());
        let e = Config::load(&Overrides::default(), &getenv).unwrap_err();
        assert!(e.to_string().contains("VALV_MAX_CONNECTIONS"), "{e}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let flags = Overrides {
            config: Some("/nonexistent/valv.toml".into()),
            ..Overrides::default()
        };
        assert!(matches!(
            Config::load(&flags, &no_env),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn validate_reports_every_problem() {
        // Problems from every layer: parsed values (storage url, key id) from the
        // environment and the flags, and the ranges validation checks.
        let getenv = |k: &str| match k {
            env::LISTEN => Some("nope".to_string()),
            env::MAX_CONNECTIONS => Some("0".to_string()),
            env::STORAGE => Some("gs://bucket/prefix".to_string()),
            _ => None,
        };
        let flags = Overrides {
            key_id: Some("ftp://key".into()),
            ..Overrides::default()
        };
        let mut c = Config::default();
        c.server.max_manifest_bytes = 10;
        let mut problems = Vec::new();
        c.apply_env(&getenv, &mut problems);
        c.apply_flags(&flags, &mut problems);
        let Err(ConfigError::Invalid(found)) = c.validate() else {
            panic!("expected Invalid");
        };
        problems.extend(found);
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("not available yet")));
        assert!(
            problems.iter().any(|p| p.contains("--key-id")),
            "{problems:?}"
        );
        // load reports them all together too.
        let Err(ConfigError::Invalid(loaded)) = Config::load(&flags, &getenv) else {
            panic!("expected Invalid");
        };
        assert_eq!(loaded.len(), 4, "{loaded:?}");
    }

    #[test]
    fn admin_token_layers_and_is_never_shown() {
        let c = Config::from_toml("[admin]\ntoken = \"from-file\"\n").expect("parse");
        assert_eq!(c.admin.token.as_deref(), Some("from-file"));
        assert!(Config::from_toml("[admin]\ntokn = \"x\"\n").is_err());
        let getenv = |k: &str| (k == env::ADMIN_TOKEN).then(|| "from-env".to_string());
        let c = Config::load(&Overrides::default(), &getenv).expect("load");
        assert_eq!(c.admin.token.as_deref(), Some("from-env"));
        assert!(!format!("{c:?}").contains("from-env"));
        let mut c = Config::default();
        c.admin.token = Some("has space".into());
        assert!(c.validate().is_err());
    }

    #[test]
    fn tls_settings_layer_and_are_checked_together() {
        let c = Config::from_toml(
            "[server.tls]\ncert_file = \"/etc/valv/cert.pem\"\nkey_file = \"/etc/valv/key.pem\"\nreload_interval_secs = 0\n",
        )
        .expect("parse");
        assert_eq!(
            c.server.tls.cert_file,
            Some(PathBuf::from("/etc/valv/cert.pem"))
        );
        assert_eq!(c.server.tls.reload_interval_secs, 0);
        assert!(c.validate().is_ok());
        assert!(Config::from_toml("[server.tls]\ncert = \"x\"\n").is_err());
        assert_eq!(Config::default().server.tls.reload_interval_secs, 2);

        // Flags beat the environment; every problem is reported at once.
        let getenv = |k: &str| match k {
            env::TLS_KEY => Some("/env/key.pem".to_string()),
            env::TLS_CLIENT_CA => Some("/env/ca.pem".to_string()),
            env::TLS_RELOAD_INTERVAL_SECS => Some("soon".to_string()),
            _ => None,
        };
        let Err(ConfigError::Invalid(problems)) = Config::load(&Overrides::default(), &getenv)
        else {
            panic!("expected Invalid");
        };
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems
            .iter()
            .any(|p| p.contains("VALV_TLS_RELOAD_INTERVAL_SECS")));
        assert!(problems
            .iter()
            .any(|p| p.contains("/env/key.pem") && p.contains("without server.tls.cert_file")));
        assert!(problems.iter().any(|p| p.contains("/env/ca.pem")));

        let flags = Overrides {
            tls_cert: Some("/flag/cert.pem".into()),
            tls_key: Some("/flag/key.pem".into()),
            ..Overrides::default()
        };
        let getenv = |k: &str| (k == env::TLS_KEY).then(|| "/env/key.pem".to_string());
        let c = Config::load(&flags, &getenv).expect("load");
        assert_eq!(c.server.tls.key_file, Some(PathBuf::from("/flag/key.pem")));
        let flags = Overrides {
            tls_cert: Some("/flag/cert.pem".into()),
            ..Overrides::default()
        };
        let e = Config::load(&flags, &no_env).unwrap_err().to_string();
        assert!(
            e.contains("/flag/cert.pem") && e.contains("without server.tls.key_file"),
            "{e}"
        );
    }

    #[test]
    fn auth_layers_and_validation() {
        let c = Config::from_toml(
            "[auth]\nhtpasswd = \"/etc/valv/htpasswd\"\n[auth.limits]\nmax_failures = 3\n[[auth.rules]]\nrepositories = [\"**\"]\nusers = [\"*\"]\nactions = [\"pull\"]\n",
        )
        .expect("parse");
        assert_eq!(c.auth.htpasswd, Some(PathBuf::from("/etc/valv/htpasswd")));
        assert_eq!(c.auth.limits.max_failures, 3);
        assert_eq!(c.auth.rules.len(), 1);
        assert!(Config::from_toml("[auth]\nhtpasswdd = \"x\"\n").is_err());
        assert!(Config::from_toml("[auth.token]\nrelm = \"x\"\n").is_err());
        // The short path: a flag and a variable.
        let flags = Overrides {
            htpasswd: Some("/f".into()),
            token_auth: true,
            ..Overrides::default()
        };
        let c = Config::load(&flags, &no_env).expect("load");
        assert!(c.auth.token.enabled && c.auth.issuer.enabled);
        assert_eq!(c.auth.htpasswd, Some(PathBuf::from("/f")));
        let getenv = |k: &str| match k {
            env::HTPASSWD => Some("/e".to_string()),
            env::TOKEN_AUTH => Some("1".to_string()),
            env::AUTH_WINDOW_SECS => Some("7".to_string()),
            _ => None,
        };
        let c = Config::load(&Overrides::default(), &getenv).expect("load");
        assert!(c.auth.issuer.enabled && c.auth.limits.window_secs == 7);
        // Every problem at once: an issuer without users, token auth without keys or
        // realm, external keys without an issuer name, a zero limit.
        let mut c = Config::default();
        c.auth.issuer.enabled = true;
        c.auth.token.public_keys = vec!["/k.pem".into()];
        c.auth.limits.window_secs = 0;
        let Err(ConfigError::Invalid(p)) = c.validate() else {
            panic!("expected Invalid");
        };
        assert_eq!(p.len(), 4, "{p:?}");
        let getenv = |k: &str| (k == env::TOKEN_AUTH).then(|| "maybe".to_string());
        let e = Config::load(&Overrides::default(), &getenv).unwrap_err();
        assert!(e.to_string().contains("VALV_TOKEN_AUTH"), "{e}");
    }

    #[test]
    fn the_request_limits_refuse_zero() {
        let c = Config::from_toml(
            "[server]\nmax_headers = 0\nmax_manifest_references = 0\n\
             max_upload_sessions_per_client = 0\nmax_upload_sessions_per_repository = 0\n\
             upload_session_idle_secs = 0\n",
        )
        .expect("parse");
        let Err(ConfigError::Invalid(p)) = c.validate() else {
            panic!("expected Invalid");
        };
        for name in [
            "server.max_headers",
            "server.max_manifest_references",
            "server.max_upload_sessions_per_client",
            "server.max_upload_sessions_per_repository",
            "server.upload_session_idle_secs",
        ] {
            assert!(p.iter().any(|m| m.starts_with(name)), "{name}: {p:?}");
        }
        let d = Config::default().server;
        assert_eq!(
            (
                d.max_upload_sessions_per_client,
                d.max_upload_sessions_per_repository,
                d.upload_session_idle_secs
            ),
            (1_000, 10_000, 3600)
        );
    }

    #[test]
    fn telemetry_layers_and_checks_the_endpoint() {
        let no_env = |_: &str| None;
        assert_eq!(Config::default().telemetry.otlp_endpoint, None);
        assert_eq!(Config::default().telemetry.service_name, "valv");
        assert!(Config::from_toml("[telemetry]\notlp = \"x\"\n").is_err());
        let file = Config::from_toml(
            "[telemetry]\notlp_endpoint = \"http://c:4318\"\nservice_name = \"reg-a\"\n",
        )
        .expect("parse");
        assert_eq!(
            file.telemetry.otlp_endpoint.as_deref(),
            Some("http://c:4318")
        );
        assert_eq!(file.telemetry.service_name, "reg-a");
        let getenv = |k: &str| match k {
            env::OTLP_ENDPOINT => Some("http://env:4318".to_string()),
            env::OTEL_SERVICE_NAME => Some("reg-b".to_string()),
            _ => None,
        };
        let flags = Overrides {
            otlp_endpoint: Some("https://flag:4318/v1/traces".into()),
            ..Overrides::default()
        };
        let mut c = Config::default();
        let mut problems = Vec::new();
        c.apply_env(&getenv, &mut problems);
        assert_eq!(
            c.telemetry.otlp_endpoint.as_deref(),
            Some("http://env:4318")
        );
        assert_eq!(c.telemetry.service_name, "reg-b");
        c.apply_flags(&flags, &mut problems);
        assert_eq!(
            c.telemetry.otlp_endpoint.as_deref(),
            Some("https://flag:4318/v1/traces")
        );
        assert!(problems.is_empty(), "{problems:?}");
        // A bad URL and an empty name are both reported, with their keys.
        for bad in ["collector:4318", "ftp://c", "http://", "http:///x"] {
            let mut c = Config::default();
            c.telemetry.otlp_endpoint = Some(bad.into());
            c.telemetry.service_name = " ".into();
            let Err(ConfigError::Invalid(p)) = c.validate() else {
                panic!("{bad}: expected Invalid");
            };
            assert_eq!(p.len(), 2, "{bad}: {p:?}");
            assert!(p[0].contains("telemetry.otlp_endpoint"), "{p:?}");
            assert!(p[1].contains("telemetry.service_name"), "{p:?}");
        }
        // The sample ratio: 1.0 by default, from the file or the environment, and
        // refused outside 0.0 to 1.0 or when it is not a number.
        assert_eq!(Config::default().telemetry.sample_ratio, SampleRatio(1.0));
        let file = Config::from_toml("[telemetry]\nsample_ratio = 0.25\n").expect("parse");
        assert_eq!(file.telemetry.sample_ratio, SampleRatio(0.25));
        for (value, ok) in [
            ("0.1", true),
            ("0", true),
            ("1.5", false),
            ("-0.1", false),
            ("NaN", false),
            ("often", false),
        ] {
            let getenv = |k: &str| (k == env::OTLP_SAMPLE_RATIO).then(|| value.to_string());
            let loaded = Config::load(&Overrides::default(), &getenv);
            assert_eq!(loaded.is_ok(), ok, "{value}: {loaded:?}");
            if let Err(e) = loaded {
                assert!(
                    e.to_string().contains("sample_ratio")
                        || e.to_string().contains(env::OTLP_SAMPLE_RATIO),
                    "{e}"
                );
            }
        }
        // A good URL loads exactly when traces are built in.
        let loaded = Config::load(&flags, &no_env);
        assert_eq!(loaded.is_ok(), cfg!(feature = "otlp"), "{loaded:?}");
    }

    #[test]
    fn log_format_layers_and_unknown_values_name_the_key() {
        assert_eq!(Config::default().log.format, LogFormat::Text);
        let c = Config::from_toml("[log]\nformat = \"json\"\n").expect("parse");
        assert_eq!(c.log.format, LogFormat::Json);
        let e = Config::from_toml("[log]\nformat = \"xml\"\n").unwrap_err();
        assert!(e.contains("log.format") && e.contains("\"xml\""), "{e}");
        assert!(Config::from_toml("[log]\nformt = \"json\"\n").is_err());
        // The environment beats the file, the flag beats both.
        let getenv = |k: &str| (k == env::LOG_FORMAT).then(|| "json".to_string());
        let c = Config::load(&Overrides::default(), &getenv).expect("load");
        assert_eq!(c.log.format, LogFormat::Json);
        let flags = Overrides {
            log_format: Some("text".into()),
            ..Overrides::default()
        };
        assert_eq!(
            Config::load(&flags, &getenv).expect("load").log.format,
            LogFormat::Text
        );
        // Bad values from both layers are reported together, each naming its source.
        let getenv = |k: &str| (k == env::LOG_FORMAT).then(|| "yaml".to_string());
        let flags = Overrides {
            log_format: Some("JSON!".into()),
            ..Overrides::default()
        };
        let Err(ConfigError::Invalid(p)) = Config::load(&flags, &getenv) else {
            panic!("expected Invalid");
        };
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("log.format (VALV_LOG_FORMAT)") && p[0].contains("yaml"));
        assert!(p[1].contains("log.format (--log-format)") && p[1].contains("JSON!"));
    }

    #[test]
    fn metrics_listen_layers_file_env_flag() {
        let file =
            Config::from_toml("[server]\nmetrics_listen = \"127.0.0.1:9090\"\n").expect("toml");
        assert_eq!(
            file.server.metrics_listen.as_deref(),
            Some("127.0.0.1:9090")
        );
        assert_eq!(Config::default().server.metrics_listen, None);

        let mut c = file.clone();
        let mut problems = Vec::new();
        let getenv = |k: &str| (k == env::METRICS_LISTEN).then(|| "10.0.0.5:9100".to_string());
        c.apply_env(&getenv, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(c.server.metrics_listen.as_deref(), Some("10.0.0.5:9100"));
        c.apply_flags(
            &Overrides {
                metrics_listen: Some("127.0.0.1:0".into()),
                ..Overrides::default()
            },
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(c.server.metrics_listen.as_deref(), Some("127.0.0.1:0"));

        c.server.metrics_listen = Some("9090".into());
        let e = c.validate().expect_err("no host");
        assert!(e.to_string().contains("server.metrics_listen"), "{e}");
    }

    #[test]
    fn listen_forms() {
        assert!(check_listen("server.listen", "127.0.0.1:0").is_ok());
        assert!(check_listen("server.listen", "[::1]:5000").is_ok());
        assert!(check_listen("server.listen", "localhost:5000").is_ok());
        assert!(check_listen("server.listen", "127.0.0.1").is_err());
        assert!(check_listen("server.listen", ":5000").is_err());
        assert!(check_listen("server.listen", "127.0.0.1:99999").is_err());
    }
}
