//! The one application value every request handler sees: the opened store and the
//! settings, built from a validated [`Config`]. Nothing is global.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kms_client::local::{ensure_dev_key, LocalKek};
use kms_client::{Kek, KeyId, KmsError};
use storage::backend::{self, Backend, OpenError};
use storage::{Store, StoreError};
use thiserror::Error;

use crate::auth::Authenticator;
use crate::config::{AdminSettings, Config, StorageUrl};
use crate::http::sessions::SessionLimits;
use crate::keys::{KeyStatus, WatchSettings};
use crate::metrics::kms::{MeteredKek, Provider};
use crate::metrics::Metrics;

/// The local development KEK's name under `<data_dir>/keys`.
pub const DEV_KEY_NAME: &str = "valv-dev-kek";

/// Settings the HTTP layer reads on every connection or request.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_connections: usize,
    /// 0 = no per-client limit.
    pub max_connections_per_client: usize,
    pub shutdown_grace: Duration,
    pub header_read_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_manifest_bytes: usize,
    pub max_manifest_references: usize,
    /// `storage.max_blob_bytes`; `None` = no limit.
    pub max_blob_bytes: Option<u64>,
    /// What the crash cleanup leaves alone (`storage.orphan_grace_secs`).
    pub orphan_grace: Duration,
}

impl Settings {
    pub fn from_config(config: &Config) -> Settings {
        Settings {
            max_connections: config.server.max_connections,
            max_connections_per_client: config.server.max_connections_per_client,
            shutdown_grace: Duration::from_secs(config.server.shutdown_grace_secs),
            header_read_timeout: Duration::from_secs(config.server.header_read_timeout_secs),
            body_idle_timeout: Duration::from_secs(config.server.body_idle_timeout_secs),
            max_header_bytes: config.server.max_header_bytes,
            max_headers: config.server.max_headers,
            max_manifest_bytes: config.server.max_manifest_bytes,
            max_manifest_references: config.server.max_manifest_references,
            max_blob_bytes: Some(config.storage.max_blob_bytes).filter(|&n| n > 0),
            orphan_grace: Duration::from_secs(config.storage.orphan_grace_secs),
        }
    }
}

#[derive(Debug)]
pub struct App {
    pub store: Store,
    pub settings: Settings,
    /// The key id the registry was started with (the keyring records the one in use).
    pub key_id: KeyId,
    /// The key watcher's view of the KEK; every content request consults it.
    pub key_status: KeyStatus,
    /// How the key watcher runs (intervals, outage grace).
    pub watch: WatchSettings,
    /// The admin API's token (none: disabled) and the identity it reports.
    pub admin: AdminSettings,
    /// Access control (`[auth]`): who a request is and what it may do.
    pub auth: Authenticator,
    /// What `/metrics` reports; recorded at the edges (HTTP, the KEK, the store).
    pub metrics: Metrics,
    /// Open upload sessions, held to their per-client and per-repository limits.
    pub sessions: SessionLimits,
}

/// Which KEK the registry runs under, so `main` can tell the operator.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// The embedded default: a local RSA key on disk. Development only.
    DevKey { id: KeyId, created: bool },
    /// An operator-configured key.
    Configured(KeyId),
}

#[derive(Debug, Error)]
pub enum StartError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("encryption key: {0}")]
    Key(#[from] KmsError),
    #[error("object storage at {url}: {source}")]
    ObjectStore {
        url: String,
        source: object_store::Error,
    },
    #[error("opening the encrypted store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

impl App {
    /// Builds the application: resolves the data directory, prepares the KEK (creating
    /// the local development key on first start), opens the object store and the
    /// encrypted store's keyring.
    ///
    /// Fails when a directory cannot be created, the key provider is misconfigured,
    /// the key is unusable, or the keyring cannot be opened with it.
    pub async fn build(config: &Config) -> Result<(App, KeySource), StartError> {
        let data_dir = absolute(&config.storage.data_dir)?;
        create_dir(&data_dir, "creating data directory")?;

        // Access control first: a bad htpasswd file or key stops the start before
        // anything touches the store.
        let auth = Authenticator::build(&config.auth, &data_dir, config.admin.token.clone())
            .map_err(|problems| {
                StartError::Invalid(format!(
                    "access control ([auth]):\n  {}",
                    problems.join("\n  ")
                ))
            })?;
        let mut metrics = Metrics::new();
        let (kek, key_id, source) = open_kek(config, &data_dir).await?;
        // Every vault call from here on is measured: the keyring's load, the watcher's
        // probes and rotations, the admin API's.
        let kek: Arc<dyn Kek> = Arc::new(MeteredKek::new(
            kek,
            Provider::of(&key_id),
            metrics.kms.clone(),
        ));
        let (backend, url) = open_objects(config, &data_dir)?;
        backend.probe(&url).await.map_err(start_error)?;
        let settings = Settings::from_config(config);
        let store_config = storage::StoreConfig {
            reference_cache_ttl: std::time::Duration::from_millis(config.storage.tag_cache_ttl_ms),
            max_parts_in_flight: config.storage.parts_in_flight,
            write_buffer_bytes: usize::try_from(config.storage.write_buffer_mib << 20)
                .unwrap_or(usize::MAX),
            max_blob_bytes: settings.max_blob_bytes,
            accept_unsealed_links: config.storage.accept_unsealed_links,
            ..storage::StoreConfig::default()
        };
        let store = Store::open_with(backend, kek, &key_id, store_config).await?;
        metrics.register_store(store.clone());
        let key_status = KeyStatus::new();
        // Opening the store unwrapped the registry keys: the first successful probe.
        key_status.record_probe_success();
        let app = App {
            store,
            settings,
            key_id,
            key_status,
            watch: WatchSettings::from_config(config),
            admin: AdminSettings {
                token: config.admin.token.clone(),
                identity: std::env::var("AZURE_CLIENT_ID")
                    .ok()
                    .filter(|v| !v.is_empty()),
            },
            auth,
            metrics,
            sessions: SessionLimits::new(
                config.server.max_upload_sessions_per_client,
                config.server.max_upload_sessions_per_repository,
                Duration::from_secs(config.server.upload_session_idle_secs),
            ),
        };
        Ok((app, source))
    }
}

async fn open_kek(
    config: &Config,
    data_dir: &Path,
) -> Result<(Arc<dyn Kek>, KeyId, KeySource), StartError> {
    match &config.encryption.key_id {
        Some(id) => {
            // The provider, and its settings from the environment, come from the key
            // id's kind (kms_client::open); the registry does not choose.
            let kek = kms_client::open(id, &|k| std::env::var(k).ok().filter(|v| !v.is_empty()))?;
            Ok((kek, id.clone(), KeySource::Configured(id.clone())))
        }
        None => {
            let dir = data_dir.join("keys");
            create_dir(&dir, "creating key directory")?;
            // RSA key generation takes a while; keep it off the async worker threads.
            let (id, created) =
                tokio::task::spawn_blocking(move || ensure_dev_key(&dir, DEV_KEY_NAME))
                    .await
                    .map_err(|e| {
                        StartError::Invalid(format!("creating the development key: {e}"))
                    })??;
            Ok((
                Arc::new(LocalKek::new()),
                id.clone(),
                KeySource::DevKey { id, created },
            ))
        }
    }
}

/// The object store the configuration names (by default under the data directory).
fn open_objects(config: &Config, data_dir: &Path) -> Result<(Backend, StorageUrl), StartError> {
    let url = config
        .storage
        .url
        .clone()
        .unwrap_or_else(|| StorageUrl::File(data_dir.join("store")));
    let backend = backend::open(&url, &config.storage.open_options()).map_err(start_error)?;
    Ok((backend, url))
}

fn start_error(e: OpenError) -> StartError {
    match e {
        OpenError::CreateDir { path, source } => StartError::Io {
            what: "creating storage directory",
            path,
            source,
        },
        OpenError::ObjectStore { url, source } => StartError::ObjectStore { url, source },
        OpenError::Unusable { url, reason } => {
            StartError::Invalid(format!("object storage at {url}: {reason}"))
        }
    }
}

/// file:// key ids need absolute paths, and a relative data dir would silently change
/// meaning with the working directory of a restarted process.
fn absolute(path: &Path) -> Result<PathBuf, StartError> {
    std::path::absolute(path).map_err(|source| StartError::Io {
        what: "resolving data directory",
        path: path.to_owned(),
        source,
    })
}

fn create_dir(path: &Path, what: &'static str) -> Result<(), StartError> {
    std::fs::create_dir_all(path).map_err(|source| StartError::Io {
        what,
        path: path.to_owned(),
        source,
    })
}

/// The warning printed when valv listens beyond the loopback interface without TLS or
/// without authentication, or `None` when neither is missing (or the address is
/// loopback, where only this machine can connect).
///
/// Without TLS, content and any credentials cross the network in the clear (unless a
/// TLS-terminating proxy on the same host is the only client); without authentication
/// anyone who can connect can pull, push and delete.
pub fn exposure_warning(listen: SocketAddr, tls: bool, auth: bool) -> Option<String> {
    if listen.ip().is_loopback() || (tls && auth) {
        return None;
    }
    let (what, risk) = match (tls, auth) {
        (false, false) => (
            "without TLS and without authentication",
            "anyone who can reach it can pull, push and delete, and everything\n\
             * crosses the network in plaintext.",
        ),
        (false, true) => (
            "without TLS",
            "credentials and content cross the network in plaintext.",
        ),
        (true, false) => (
            "without authentication",
            "anyone who can reach it can pull, push and delete.",
        ),
        (true, true) => return None,
    };
    Some(format!(
        "\n\
         ************************************************************************\n\
         * WARNING: valv listens on {listen} {what}:\n\
         * {risk}\n\
         * Configure TLS (--tls-cert/--tls-key or [server.tls]) and authentication,\n\
         * or listen on 127.0.0.1 behind a proxy that does both\n\
         * (see docs/OPERATIONS.md).\n\
         ************************************************************************\n"
    ))
}

/// The notice printed when the embedded default key is in use.
pub fn dev_key_notice(id: &KeyId, created: bool) -> String {
    let what = if created {
        "created a new local development key-encryption key"
    } else {
        "using the local development key-encryption key"
    };
    format!(
        "\n\
         ************************************************************************\n\
         * WARNING: valv {what}\n\
         *   {id}\n\
         * A local KEK lives on the same disk as the data it protects: it is for\n\
         * development only and gives none of the customer-managed-key guarantees.\n\
         * For production, configure a vault key:\n\
         *   valv serve --key-id https://<vault>.vault.azure.net/keys/<name>\n\
         * (or VALV_KEY_ID / [encryption] key_id; see docs/OPERATIONS.md).\n\
         ************************************************************************\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[test]
    fn exposure_warning_names_what_is_missing_beyond_loopback() {
        for loopback in ["127.0.0.1:5000", "127.8.9.10:1", "[::1]:5000"] {
            for (tls, auth) in [(false, false), (true, false), (false, true), (true, true)] {
                assert_eq!(
                    exposure_warning(addr(loopback), tls, auth),
                    None,
                    "{loopback}"
                );
            }
        }
        for exposed in ["0.0.0.0:5000", "[::]:5000", "192.0.2.7:443"] {
            let both = exposure_warning(addr(exposed), false, false).expect("warned");
            assert!(both.contains("WARNING") && both.contains(exposed), "{both}");
            assert!(
                both.contains("without TLS and without authentication"),
                "{both}"
            );
            let no_tls = exposure_warning(addr(exposed), false, true).expect("warned");
            assert!(
                no_tls.contains("without TLS:") && no_tls.contains("plaintext"),
                "{no_tls}"
            );
            let no_auth = exposure_warning(addr(exposed), true, false).expect("warned");
            assert!(no_auth.contains("without authentication:"), "{no_auth}");
            assert_eq!(exposure_warning(addr(exposed), true, true), None);
        }
    }
}
