//! The one application value every request handler sees: the opened store and the
//! settings, built from a validated [`Config`]. Nothing is global.

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
use crate::keys::{KeyStatus, WatchSettings};

/// The local development KEK's name under `<data_dir>/keys`.
pub const DEV_KEY_NAME: &str = "valv-dev-kek";

/// Settings the HTTP layer reads on every connection or request.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_connections: usize,
    pub shutdown_grace: Duration,
    pub header_read_timeout: Duration,
    pub max_manifest_bytes: usize,
    /// What the crash cleanup leaves alone (`storage.orphan_grace_secs`).
    pub orphan_grace: Duration,
}

impl Settings {
    pub fn from_config(config: &Config) -> Settings {
        Settings {
            max_connections: config.server.max_connections,
            shutdown_grace: Duration::from_secs(config.server.shutdown_grace_secs),
            header_read_timeout: Duration::from_secs(config.server.header_read_timeout_secs),
            max_manifest_bytes: config.server.max_manifest_bytes,
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
        let (kek, key_id, source) = open_kek(config, &data_dir).await?;
        let backend = open_objects(config, &data_dir)?;
        let store_config = storage::StoreConfig {
            reference_cache_ttl: std::time::Duration::from_millis(config.storage.tag_cache_ttl_ms),
            ..storage::StoreConfig::default()
        };
        let store = Store::open_with(backend, kek, &key_id, store_config).await?;
        let app = App {
            store,
            settings: Settings::from_config(config),
            key_id,
            key_status: KeyStatus::new(),
            watch: WatchSettings::from_config(config),
            admin: AdminSettings {
                token: config.admin.token.clone(),
                identity: std::env::var("AZURE_CLIENT_ID")
                    .ok()
                    .filter(|v| !v.is_empty()),
            },
            auth,
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
fn open_objects(config: &Config, data_dir: &Path) -> Result<Backend, StartError> {
    let url = config
        .storage
        .url
        .clone()
        .unwrap_or_else(|| StorageUrl::File(data_dir.join("store")));
    backend::open(&url).map_err(|e| match e {
        OpenError::CreateDir { path, source } => StartError::Io {
            what: "creating storage directory",
            path,
            source,
        },
        OpenError::ObjectStore { url, source } => StartError::ObjectStore { url, source },
    })
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
