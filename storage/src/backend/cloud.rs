//! `s3://<bucket>[/<prefix>]` and `az://<container>[/<prefix>]`: S3 (AWS, or any
//! S3-compatible endpoint) and Azure Blob Storage, through object_store's clients.
//!
//! Each client starts from the standard environment variables, read by object_store,
//! and then takes what [`OpenOptions`] gives, which wins over the variable for the
//! same setting:
//! - S3: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//!   `AWS_REGION`, `AWS_ENDPOINT_URL` (an S3-compatible endpoint, addressed path-style),
//!   `AWS_ALLOW_HTTP`, web identity (`AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_ARN`),
//!   the ECS container credentials and instance metadata.
//! - Azure: `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`,
//!   `AZURE_STORAGE_ENDPOINT`, `AZURE_STORAGE_USE_EMULATOR` (Azurite), managed and
//!   workload identity (`AZURE_CLIENT_ID`, `AZURE_TENANT_ID`,
//!   `AZURE_FEDERATED_TOKEN_FILE`).
//!
//! Options are applied key by key (`with_config`) rather than by replacing the
//! client options wholesale, so client settings only the environment gives (a
//! proxy, say) survive.
//!
//! A create-only put is valv's commit point (DESIGN §3), so both are opened with it
//! real: S3's `If-None-Match: *` (object_store's `ETagMatch` mode) and Azure's
//! `If-None-Match: *`. [`super::Backend::probe`] proves it at start against the bucket
//! itself, so a store that ignores the condition is refused rather than trusted.
//!
//! Reads are ranged GETs ([`super::Ranged`]); parts are [`OpenOptions::part_size`]
//! (S3's minimum, 5 MiB, unless configured), which Azure's block uploads take as well.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, RetryConfig};

use super::{Backend, OpenError, OpenOptions, Ranged, RetryOptions, MIN_CLOUD_PART_SIZE};

/// Opens `s3://<bucket>/<prefix>`.
pub(super) fn open_s3(
    bucket: &str,
    prefix: &str,
    options: &OpenOptions,
) -> Result<Backend, OpenError> {
    build_s3(AmazonS3Builder::from_env(), bucket, prefix, options)
}

/// Opens `az://<container>/<prefix>`.
pub(super) fn open_azure(
    container: &str,
    prefix: &str,
    options: &OpenOptions,
) -> Result<Backend, OpenError> {
    build_azure(
        MicrosoftAzureBuilder::from_env(),
        container,
        prefix,
        options,
    )
}

/// [`open_s3`] over `base`, the environment's settings (a test passes its own).
fn build_s3(
    base: AmazonS3Builder,
    bucket: &str,
    prefix: &str,
    options: &OpenOptions,
) -> Result<Backend, OpenError> {
    kms_client::install_tls_provider();
    let url = format!("s3://{bucket}/{prefix}");
    check_part_size(&url, options)?;
    let s3 = s3_builder(base, options)
        .with_bucket_name(bucket)
        .with_conditional_put(S3ConditionalPut::ETagMatch)
        .build()
        .map_err(|source| OpenError::ObjectStore {
            url: url.clone(),
            source,
        })?;
    Ok(with_prefix(Arc::new(s3), prefix, options.part_size))
}

/// [`open_azure`] over `base`, the environment's settings (a test passes its own).
fn build_azure(
    base: MicrosoftAzureBuilder,
    container: &str,
    prefix: &str,
    options: &OpenOptions,
) -> Result<Backend, OpenError> {
    kms_client::install_tls_provider();
    let url = format!("az://{container}/{prefix}");
    check_part_size(&url, options)?;
    let azure = azure_builder(base, options)
        .with_container_name(container)
        .build()
        .map_err(|source| OpenError::ObjectStore {
            url: url.clone(),
            source,
        })?;
    Ok(with_prefix(Arc::new(azure), prefix, options.part_size))
}

/// `options` over the S3 settings in `base`: what is given wins.
fn s3_builder(base: AmazonS3Builder, options: &OpenOptions) -> AmazonS3Builder {
    let s3 = &options.s3;
    let mut b = base;
    if let Some(endpoint) = &s3.endpoint {
        b = b.with_endpoint(endpoint);
    }
    if let Some(region) = &s3.region {
        b = b.with_region(region);
    }
    if let Some(path_style) = s3.path_style {
        b = b.with_virtual_hosted_style_request(!path_style);
    }
    if let Some(allow_http) = s3.allow_http {
        b = b.with_allow_http(allow_http);
    }
    for (key, value) in client_settings(&options.retry) {
        b = b.with_config(AmazonS3ConfigKey::Client(key), value);
    }
    b.with_retry(retry_config(&options.retry))
}

/// `options` over the Azure settings in `base`: what is given wins.
fn azure_builder(base: MicrosoftAzureBuilder, options: &OpenOptions) -> MicrosoftAzureBuilder {
    let az = &options.azure;
    let mut b = base;
    if let Some(account) = &az.account {
        b = b.with_account(account);
    }
    if let Some(endpoint) = &az.endpoint {
        b = b.with_endpoint(endpoint.clone());
    }
    // object_store ignores the endpoint in emulator mode: an endpoint given here
    // would be dropped in silence if the environment turned the emulator on.
    match (az.use_emulator, &az.endpoint) {
        (Some(use_emulator), _) => b = b.with_use_emulator(use_emulator),
        (None, Some(_)) => b = b.with_use_emulator(false),
        (None, None) => {}
    }
    if let Some(allow_http) = az.allow_http {
        b = b.with_allow_http(allow_http);
    }
    for (key, value) in client_settings(&options.retry) {
        b = b.with_config(AzureConfigKey::Client(key), value);
    }
    b.with_retry(retry_config(&options.retry))
}

/// The timeouts as client settings, in the form object_store parses.
fn client_settings(retry: &RetryOptions) -> [(ClientConfigKey, String); 2] {
    let secs = |d: Duration| format!("{}s", d.as_secs());
    [
        (ClientConfigKey::Timeout, secs(retry.request_timeout)),
        (ClientConfigKey::ConnectTimeout, secs(retry.connect_timeout)),
    ]
}

fn retry_config(retry: &RetryOptions) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: retry.max_retries,
        retry_timeout: retry.retry_timeout,
    }
}

/// S3 refuses parts under 5 MiB (but the last); the config layer checks this too,
/// so only a caller building options by hand meets it.
fn check_part_size(url: &str, options: &OpenOptions) -> Result<(), OpenError> {
    if options.part_size < MIN_CLOUD_PART_SIZE {
        return Err(OpenError::Unusable {
            url: url.to_owned(),
            reason: format!(
                "a part size of {} bytes is under the object store's minimum of {MIN_CLOUD_PART_SIZE}",
                options.part_size
            ),
        });
    }
    Ok(())
}

fn with_prefix(store: Arc<dyn ObjectStore>, prefix: &str, part_size: usize) -> Backend {
    let objects: Arc<dyn ObjectStore> = if prefix.is_empty() {
        store
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    };
    Backend::new(objects, Arc::new(Ranged), part_size)
}

#[cfg(test)]
mod tests {
    //! The options reach the clients: requests go to a recorder on 127.0.0.1 that
    //! answers every one with a fixed status, over a base builder standing in for the
    //! environment (test credentials, and settings the options must override).

    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::mpsc;
    use std::time::Instant;

    use super::*;
    use crate::backend::{AzureOptions, S3Options, StorageUrl};

    /// A request as the recorder saw it.
    #[derive(Debug)]
    struct Seen {
        line: String,
        host: String,
        authorization: String,
    }

    /// A local HTTP server. With `status`, it answers each request with it and
    /// closes; without, it reads requests and never answers (a hung store).
    fn recorder(status: Option<&'static str>) -> (SocketAddr, mpsc::Receiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let Some(seen) = read_request(&conn) else {
                    continue;
                };
                if tx.send(seen).is_err() {
                    return;
                }
                match status {
                    Some(status) => {
                        let _ = write!(
                            conn,
                            "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        );
                    }
                    None => held.push(conn),
                }
            }
        });
        (addr, rx)
    }

    fn read_request(conn: &TcpStream) -> Option<Seen> {
        let mut reader = BufReader::new(conn.try_clone().ok()?);
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let (mut host, mut authorization, mut length) = (String::new(), String::new(), 0);
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).ok()? == 0 || header.trim_end().is_empty() {
                break;
            }
            if let Some((name, value)) = header.trim_end().split_once(':') {
                let value = value.trim().to_owned();
                match name.to_ascii_lowercase().as_str() {
                    "host" => host = value,
                    "authorization" => authorization = value,
                    "content-length" => length = value.parse().unwrap_or(0),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        Some(Seen {
            line: line.trim_end().to_owned(),
            host,
            authorization,
        })
    }

    /// An S3 client as the environment would give it, with its endpoint elsewhere
    /// (a closed port) as if `AWS_ENDPOINT_URL` named another store.
    fn s3_env() -> AmazonS3Builder {
        AmazonS3Builder::new()
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_endpoint("http://127.0.0.1:1")
            .with_region("us-west-1")
    }

    fn no_retries() -> RetryOptions {
        RetryOptions {
            max_retries: 0,
            ..RetryOptions::default()
        }
    }

    fn s3_options(addr: SocketAddr) -> OpenOptions {
        OpenOptions {
            s3: S3Options {
                endpoint: Some(format!("http://{addr}")),
                region: Some("eu-central-1".into()),
                path_style: None,
                allow_http: Some(true),
            },
            retry: no_retries(),
            ..OpenOptions::default()
        }
    }

    fn s3_url() -> StorageUrl {
        "s3://registry/team/valv".parse().expect("url")
    }

    #[tokio::test]
    async fn s3_endpoint_and_region_from_options_win_over_the_environment() {
        let (addr, seen) = recorder(Some("403 Forbidden"));
        let backend = build_s3(s3_env(), "registry", "team/valv", &s3_options(addr)).expect("open");
        assert!(backend.probe(&s3_url()).await.is_err());
        let first = seen
            .try_recv()
            .expect("the configured endpoint got a request");
        assert!(
            first
                .line
                .starts_with("PUT /registry/team/valv/_valv/probe/"),
            "path-style by default: {first:?}"
        );
        assert_eq!(first.host, addr.to_string());
        assert!(
            first
                .authorization
                .contains("/eu-central-1/s3/aws4_request"),
            "signed for the configured region: {first:?}"
        );
    }

    #[tokio::test]
    async fn s3_virtual_hosted_style_when_path_style_is_off() {
        let (addr, seen) = recorder(Some("403 Forbidden"));
        let mut options = s3_options(addr);
        options.s3.path_style = Some(false);
        let backend = build_s3(s3_env(), "registry", "team/valv", &options).expect("open");
        assert!(backend.probe(&s3_url()).await.is_err());
        let first = seen.try_recv().expect("a request");
        // Virtual-hosted: the bucket is the endpoint's business, not the path's.
        assert!(
            first.line.starts_with("PUT /team/valv/_valv/probe/"),
            "{first:?}"
        );
    }

    #[tokio::test]
    async fn without_allow_http_a_plain_http_endpoint_is_refused() {
        let (addr, seen) = recorder(Some("403 Forbidden"));
        let mut options = s3_options(addr);
        options.s3.allow_http = Some(false);
        let env = s3_env().with_allow_http(true);
        let backend = build_s3(env, "registry", "team/valv", &options).expect("open");
        let e = backend.probe(&s3_url()).await.expect_err("refused");
        assert!(seen.try_recv().is_err(), "nothing was sent: {e}");
    }

    #[tokio::test]
    async fn retries_follow_the_options() {
        let (addr, seen) = recorder(Some("503 Service Unavailable"));
        let mut options = s3_options(addr);
        options.retry.max_retries = 2;
        let backend = build_s3(s3_env(), "registry", "team/valv", &options).expect("open");
        assert!(backend.probe(&s3_url()).await.is_err());
        assert_eq!(seen.try_iter().count(), 3, "one attempt and two retries");
    }

    #[tokio::test]
    async fn a_hung_store_times_out_after_the_request_timeout() {
        let (addr, seen) = recorder(None);
        let mut options = s3_options(addr);
        options.retry.request_timeout = Duration::from_secs(1);
        let backend = build_s3(s3_env(), "registry", "team/valv", &options).expect("open");
        let start = Instant::now();
        assert!(backend.probe(&s3_url()).await.is_err());
        // object_store's default is 30 s; well under it proves the 1 s reached it.
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(seen.try_iter().count(), 1);
    }

    #[test]
    fn timeouts_are_set_key_by_key_and_other_client_settings_survive() {
        let env = s3_env()
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "99s")
            .with_proxy_url("http://127.0.0.1:3128");
        let options = OpenOptions {
            retry: RetryOptions {
                request_timeout: Duration::from_secs(45),
                connect_timeout: Duration::from_secs(7),
                ..RetryOptions::default()
            },
            ..OpenOptions::default()
        };
        let b = s3_builder(env, &options);
        let client = |k| b.get_config_value(&AmazonS3ConfigKey::Client(k));
        assert_eq!(client(ClientConfigKey::Timeout).as_deref(), Some("45s"));
        assert_eq!(
            client(ClientConfigKey::ConnectTimeout).as_deref(),
            Some("7s")
        );
        assert_eq!(
            client(ClientConfigKey::ProxyUrl).as_deref(),
            Some("http://127.0.0.1:3128")
        );
        // Unset options leave the environment's values.
        assert_eq!(
            b.get_config_value(&AmazonS3ConfigKey::Endpoint).as_deref(),
            Some("http://127.0.0.1:1")
        );
        assert_eq!(
            b.get_config_value(&AmazonS3ConfigKey::Region).as_deref(),
            Some("us-west-1")
        );
    }

    #[tokio::test]
    async fn azure_account_and_endpoint_from_options_win_over_the_environment() {
        let (addr, seen) = recorder(Some("403 Forbidden"));
        // The environment: another account, and the emulator on (which would send
        // everything to Azurite's address and ignore any endpoint).
        let env = MicrosoftAzureBuilder::new()
            .with_account("fromenv")
            .with_access_key("dGVzdA==")
            .with_use_emulator(true);
        let options = OpenOptions {
            azure: AzureOptions {
                account: Some("valvacct".into()),
                endpoint: Some(format!("http://{addr}")),
                use_emulator: None,
                allow_http: Some(true),
            },
            retry: no_retries(),
            ..OpenOptions::default()
        };
        let backend = build_azure(env, "registry", "valv", &options).expect("open");
        let url: StorageUrl = "az://registry/valv".parse().expect("url");
        assert!(backend.probe(&url).await.is_err());
        let first = seen
            .try_recv()
            .expect("the configured endpoint got a request");
        assert!(
            first.line.starts_with("PUT /registry/valv/_valv/probe/"),
            "{first:?}"
        );
        assert_eq!(first.host, addr.to_string());
        assert!(
            first.authorization.starts_with("SharedKey valvacct:"),
            "{first:?}"
        );
    }

    #[test]
    fn part_size_reaches_the_backend_and_is_at_least_the_minimum() {
        let options = OpenOptions {
            part_size: 64 * 1024 * 1024,
            ..OpenOptions::default()
        };
        let backend = build_s3(s3_env(), "registry", "", &options).expect("open");
        assert_eq!(backend.part_size(), 64 * 1024 * 1024);
        let small = OpenOptions {
            part_size: MIN_CLOUD_PART_SIZE - 1,
            ..OpenOptions::default()
        };
        let e = build_s3(s3_env(), "registry", "", &small).expect_err("refused");
        assert!(
            matches!(e, OpenError::Unusable { .. }) && e.to_string().contains("part size"),
            "{e}"
        );
        let e =
            build_azure(MicrosoftAzureBuilder::new(), "registry", "", &small).expect_err("refused");
        assert!(e.to_string().contains("part size"), "{e}");
    }
}
