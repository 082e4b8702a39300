//! Settings of the Key Vault provider, and how they are read from the environment.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::retry::RetryPolicy;
use crate::KmsError;

/// The base URL requests for the key id's vault go to (tests, private endpoints).
pub const ENV_ENDPOINT: &str = "VALV_KEYVAULT_ENDPOINT";
/// The `api-version` query parameter.
pub const ENV_API_VERSION: &str = "VALV_KEYVAULT_API_VERSION";
/// The managed-identity (IMDS) endpoint.
pub const ENV_IMDS_ENDPOINT: &str = "VALV_IMDS_ENDPOINT";
/// A PEM file of CA certificates trusted for the vault and the token endpoint besides
/// the built-in roots (a private CA, a TLS-inspecting proxy, a test vault).
pub const ENV_CA_FILE: &str = "VALV_KEYVAULT_CA_FILE";

/// Settings of the Key Vault provider.
#[derive(Debug, Clone)]
pub struct AzureConfig {
    /// `api-version` query parameter (default "7.4").
    pub api_version: String,
    /// Vault URL as in the key id (`https://myvault.vault.azure.net`) → the base URL
    /// actually used (e.g. `http://127.0.0.1:PORT` for a fake). Empty by default.
    /// Checked by [`AzureConfig::validate`]: plain `http://` only to a loopback host.
    pub endpoint_overrides: HashMap<String, String>,
    /// Timeout of one HTTP request (default 10 s).
    pub request_timeout: Duration,
    /// `maxresults` of version listing, 1..=25 (default 25).
    pub list_page_size: u32,
    pub retry: RetryPolicy,
    /// Extra trusted CA certificates (PEM) for the vault and token endpoints; the
    /// built-in roots stay trusted. None by default.
    pub ca_file: Option<PathBuf>,
}

impl Default for AzureConfig {
    fn default() -> Self {
        AzureConfig {
            api_version: "7.4".to_owned(),
            endpoint_overrides: HashMap::new(),
            request_timeout: Duration::from_secs(10),
            list_page_size: 25,
            retry: RetryPolicy::default(),
            ca_file: None,
        }
    }
}

impl AzureConfig {
    /// Sends requests for key ids under `vault` (`https://<host>`) to `base_url`.
    pub fn with_endpoint(mut self, vault: impl Into<String>, base_url: impl Into<String>) -> Self {
        self.endpoint_overrides.insert(
            vault.into().trim_end_matches('/').to_owned(),
            base_url.into().trim_end_matches('/').to_owned(),
        );
        self
    }

    /// The settings for `vault` from [`ENV_ENDPOINT`] and [`ENV_API_VERSION`] as
    /// `getenv` returns them, defaults otherwise. Validated.
    ///
    /// Fails like [`AzureConfig::validate`].
    pub fn from_lookup(
        vault: &str,
        getenv: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AzureConfig, KmsError> {
        let mut config = AzureConfig::default();
        if let Some(endpoint) = getenv(ENV_ENDPOINT) {
            config = config.with_endpoint(vault, endpoint);
        }
        if let Some(version) = getenv(ENV_API_VERSION) {
            config.api_version = version;
        }
        config.ca_file = getenv(ENV_CA_FILE).map(PathBuf::from);
        config.validate()?;
        Ok(config)
    }

    /// Checks every endpoint override: `https://` to any host, `http://` only to a
    /// loopback host (127.0.0.0/8, ::1, `localhost`). Plain HTTP elsewhere would send
    /// bearer tokens and wrapped keys over the network in clear.
    ///
    /// Fails with `Misconfigured`, naming the endpoint.
    pub fn validate(&self) -> Result<(), KmsError> {
        for (vault, endpoint) in &self.endpoint_overrides {
            check_endpoint(endpoint).map_err(|why| {
                KmsError::misconfigured(vault, format!("{ENV_ENDPOINT} {endpoint:?}: {why}"))
            })?;
        }
        Ok(())
    }

    /// The HTTP client for vault and token requests: the built-in roots plus the
    /// certificates of [`AzureConfig::ca_file`].
    ///
    /// Fails with `Misconfigured` when the CA file cannot be read or holds no PEM
    /// certificate.
    pub fn http_client(&self) -> Result<reqwest::Client, KmsError> {
        crate::install_tls_provider();
        let mut builder = reqwest::Client::builder();
        if let Some(path) = &self.ca_file {
            let bad = |why: String| {
                KmsError::misconfigured(
                    "azure key vault",
                    format!("{ENV_CA_FILE} {}: {why}", path.display()),
                )
            };
            let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| bad(format!("not a PEM certificate bundle: {e}")))?;
            if certs.is_empty() {
                return Err(bad("holds no PEM certificate".to_owned()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        builder.build().map_err(|e| {
            KmsError::misconfigured("azure key vault", format!("building the HTTP client: {e}"))
        })
    }
}

/// Why `endpoint` may not carry vault or token requests, if it may not.
pub(crate) fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(endpoint).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        "http" => Err(
            "plain http:// is refused for a vault that is not on this machine (loopback only); use https://"
                .to_owned(),
        ),
        other => Err(format!("scheme {other:?} is not supported; use https://")),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    // The parser has normalised the host: IPv4 in dotted decimal, IPv6 in brackets,
    // names in lower case.
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const VAULT: &str = "https://v.vault.azure.net";

    fn lookup(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn plain_http_is_accepted_only_to_loopback() {
        for ok in [
            "https://v.vault.azure.net",
            "https://10.1.2.3:8443/",
            "http://127.0.0.1:8443",
            "http://127.8.9.10",
            "http://[::1]:8443",
            "http://localhost:1234",
            "http://LOCALHOST",
        ] {
            assert!(check_endpoint(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.1.2.3:8443",
            "http://v.vault.azure.net",
            "http://localhost.example.com",
            "http://[::ffff:10.0.0.1]",
            "http://0.0.0.0:8443",
            "ftp://127.0.0.1",
            "127.0.0.1:8443",
            "",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn environment_settings_are_read_and_checked() {
        let getenv = lookup(&[
            (ENV_ENDPOINT, "http://127.0.0.1:9/"),
            (ENV_API_VERSION, "7.6"),
        ]);
        let c = AzureConfig::from_lookup(VAULT, &getenv).unwrap();
        assert_eq!(c.api_version, "7.6");
        assert_eq!(
            c.endpoint_overrides.get(VAULT).map(String::as_str),
            Some("http://127.0.0.1:9")
        );
        let c = AzureConfig::from_lookup(VAULT, &lookup(&[])).unwrap();
        assert_eq!(c.api_version, "7.4");
        assert!(c.endpoint_overrides.is_empty());

        let getenv = lookup(&[(ENV_ENDPOINT, "http://vault.internal.example:80")]);
        let err = AzureConfig::from_lookup(VAULT, &getenv).unwrap_err();
        assert!(matches!(err, KmsError::Misconfigured { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(ENV_ENDPOINT) && msg.contains("http://vault.internal.example:80"),
            "{msg}"
        );
    }

    #[test]
    fn builder_overrides_are_checked_too() {
        let c = AzureConfig::default().with_endpoint(VAULT, "http://192.168.1.5");
        assert!(matches!(c.validate(), Err(KmsError::Misconfigured { .. })));
    }
}
