//! `valv healthcheck`: one `GET /readyz` of a valv on this host, for a container's
//! `HEALTHCHECK` (the runtime image has no curl). Exit status 0 when it answers 200,
//! 1 otherwise (another status, no answer, no answer in time).
//!
//! Without `--url` the address comes from the same configuration `valv serve` reads
//! (`--config` / `VALV_CONFIG`, `VALV_LISTEN`, …), so a container that moves the
//! listener moves its health check with it. An unspecified listen address (`0.0.0.0`,
//! `[::]`) is probed on loopback, and a listener with TLS over `https://` *without
//! verifying its certificate*: the probe goes to this process's own listener, sends
//! no credentials and reads only the status, while verification would need the
//! certificate's name to lead here, which inside a container it rarely does. A `--url`
//! given explicitly is verified as usual (built-in roots).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use reqwest::Url;
use thiserror::Error;

use super::causes;
use crate::cli::HealthcheckArgs;
use crate::config::{Config, ConfigError, Overrides, ServerConfig};

/// The path probed by default: ready while content can be served (DESIGN §8).
pub const READY_PATH: &str = "/readyz";

/// Bodies of `/readyz` are one short line; more is not read.
const MAX_BODY_BYTES: usize = 4096;

#[derive(Debug, Error)]
pub enum HealthError {
    /// The configuration the address would come from does not load.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("health check url {0:?}: expected http://host[:port]/path or https://…")]
    Url(String),
    #[error(
        "cannot derive a health check address from server.listen {0:?}; pass --url http://HOST:PORT/readyz"
    )]
    Listen(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("GET {url}: no answer within {secs} s")]
    Timeout { url: Url, secs: u64 },
    #[error("GET {url}: {reason}")]
    Unreachable { url: Url, reason: String },
    /// An answer other than 200; `body` is what it said (its first line).
    #[error("GET {url}: {status} {body}")]
    NotReady { url: Url, status: u16, body: String },
}

/// What to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub url: Url,
    /// Check the server's certificate (https only): false for the address derived from
    /// the configuration (module docs).
    pub verify: bool,
}

impl Probe {
    /// An explicit URL: http or https with a host, verified as usual.
    pub fn explicit(url: &str) -> Result<Probe, HealthError> {
        let parsed = Url::parse(url).map_err(|_| HealthError::Url(url.to_owned()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(HealthError::Url(url.to_owned()));
        }
        Ok(Probe {
            url: parsed,
            verify: true,
        })
    }

    /// `/readyz` on the address `valv serve` would listen on with `server`.
    ///
    /// Fails when the listen setting has no usable port (port 0 is picked by the
    /// kernel at start, so it cannot be known here) or no `host:port` shape.
    pub fn from_config(server: &ServerConfig) -> Result<Probe, HealthError> {
        let listen = server.listen.trim();
        let bad = || HealthError::Listen(listen.to_owned());
        let authority = match listen.parse::<SocketAddr>() {
            Ok(addr) => {
                let ip = match addr.ip() {
                    IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
                    ip => ip,
                };
                if addr.port() == 0 {
                    return Err(bad());
                }
                SocketAddr::new(ip, addr.port()).to_string()
            }
            // A host name (`localhost:5000`), as the listener's bind accepts one.
            Err(_) => {
                let (host, port) = listen.rsplit_once(':').ok_or_else(bad)?;
                match port.parse::<u16>() {
                    Ok(p) if p != 0 && !host.is_empty() => listen.to_owned(),
                    _ => return Err(bad()),
                }
            }
        };
        let tls = server.tls.cert_file.is_some() && server.tls.key_file.is_some();
        let scheme = if tls { "https" } else { "http" };
        let url = Url::parse(&format!("{scheme}://{authority}{READY_PATH}")).map_err(|_| bad())?;
        Ok(Probe { url, verify: false })
    }
}

/// The probe `args` ask for: their `--url`, or the address of the configuration that
/// `--config` (else `VALV_CONFIG`) and the `VALV_*` variables of `getenv` make.
///
/// Fails when the URL is malformed, the configuration does not load (as `valv serve`
/// would fail), or its listen address gives no URL.
pub fn probe(
    args: &HealthcheckArgs,
    getenv: &dyn Fn(&str) -> Option<String>,
) -> Result<Probe, HealthError> {
    if let Some(url) = &args.url {
        return Probe::explicit(url);
    }
    let flags = Overrides {
        config: args.config.clone(),
        ..Overrides::default()
    };
    let config = Config::load(&flags, getenv)?;
    Probe::from_config(&config.server)
}

/// GETs the probe's URL, waiting at most `timeout` in all; `Ok` with the first line of
/// the body when the answer is 200.
///
/// Fails with `NotReady` for any other status, `Timeout` or `Unreachable` without an
/// answer, and `Client` when no HTTP client can be built.
pub async fn run(probe: &Probe, timeout: Duration) -> Result<String, HealthError> {
    kms_client::install_tls_provider();
    let client = reqwest::Client::builder()
        .timeout(timeout)
        // A health check of this host never goes through a proxy from the environment.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .tls_danger_accept_invalid_certs(!probe.verify)
        .user_agent(concat!("valv-healthcheck/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(HealthError::Client)?;
    let url = probe.url.clone();
    let failed = |e: reqwest::Error| {
        if e.is_timeout() {
            HealthError::Timeout {
                url: url.clone(),
                secs: timeout.as_secs(),
            }
        } else {
            HealthError::Unreachable {
                url: url.clone(),
                reason: causes(&e),
            }
        }
    };
    let mut resp = client.get(url.clone()).send().await.map_err(failed)?;
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(failed)? {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_BODY_BYTES {
            body.truncate(MAX_BODY_BYTES);
            break;
        }
    }
    let text = String::from_utf8_lossy(&body);
    let line = text.lines().next().unwrap_or("").trim().to_owned();
    if status == 200 {
        Ok(line)
    } else {
        Err(HealthError::NotReady {
            url,
            status,
            body: line,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn server(listen: &str) -> ServerConfig {
        ServerConfig {
            listen: listen.to_owned(),
            ..ServerConfig::default()
        }
    }

    fn derived(listen: &str) -> Result<String, HealthError> {
        Probe::from_config(&server(listen)).map(|p| p.url.to_string())
    }

    #[test]
    fn the_listen_address_gives_the_url() {
        assert_eq!(
            derived("127.0.0.1:5000").expect("loopback"),
            "http://127.0.0.1:5000/readyz"
        );
        assert_eq!(
            derived("0.0.0.0:5000").expect("any v4"),
            "http://127.0.0.1:5000/readyz"
        );
        assert_eq!(
            derived("[::]:5001").expect("any v6"),
            "http://[::1]:5001/readyz"
        );
        assert_eq!(
            derived("10.1.2.3:80").expect("an address"),
            "http://10.1.2.3/readyz"
        );
        assert_eq!(
            derived("localhost:5000").expect("a name"),
            "http://localhost:5000/readyz"
        );
        let probe = Probe::from_config(&server("0.0.0.0:5000")).expect("derived");
        assert!(!probe.verify, "the derived probe of the own listener");
    }

    #[test]
    fn a_listen_address_without_a_known_port_is_refused() {
        for listen in ["127.0.0.1:0", "0.0.0.0", "localhost", ":5000", "host:x"] {
            assert!(
                matches!(derived(listen), Err(HealthError::Listen(_))),
                "{listen}"
            );
        }
    }

    #[test]
    fn tls_on_the_listener_means_https() {
        let mut s = server("0.0.0.0:5443");
        s.tls.cert_file = Some(PathBuf::from("/etc/valv/tls/server.crt"));
        s.tls.key_file = Some(PathBuf::from("/etc/valv/tls/server.key"));
        let probe = Probe::from_config(&s).expect("derived");
        assert_eq!(probe.url.as_str(), "https://127.0.0.1:5443/readyz");
    }

    #[test]
    fn explicit_urls_are_checked_and_verified() {
        let p = Probe::explicit("https://registry.example/readyz").expect("https");
        assert!(p.verify);
        assert!(Probe::explicit("http://127.0.0.1:5000/healthz").is_ok());
        for bad in ["127.0.0.1:5000", "ftp://h/readyz", "http://", "unix:///s"] {
            assert!(
                matches!(Probe::explicit(bad), Err(HealthError::Url(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_environment_moves_the_probe() {
        let args = HealthcheckArgs {
            url: None,
            config: None,
            timeout: 5,
        };
        let env = |k: &str| (k == "VALV_LISTEN").then(|| "0.0.0.0:6000".to_owned());
        let p = probe(&args, &env).expect("probe from the environment");
        assert_eq!(p.url.as_str(), "http://127.0.0.1:6000/readyz");
        let none = |_: &str| None;
        let p = probe(&args, &none).expect("the default");
        assert_eq!(p.url.as_str(), "http://127.0.0.1:5000/readyz");
        let bad = |k: &str| (k == "VALV_MAX_CONNECTIONS").then(|| "many".to_owned());
        assert!(matches!(probe(&args, &bad), Err(HealthError::Config(_))));
        let explicit = HealthcheckArgs {
            url: Some("http://127.0.0.1:7/healthz".to_owned()),
            ..args
        };
        assert_eq!(
            probe(&explicit, &bad)
                .expect("an explicit url needs no config")
                .url
                .as_str(),
            "http://127.0.0.1:7/healthz"
        );
    }

    #[tokio::test]
    async fn nothing_listening_is_unreachable() {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(([127, 0, 0, 1], 0).into()).expect("bind");
        let port = socket.local_addr().expect("addr").port();
        let probe =
            Probe::explicit(&format!("http://127.0.0.1:{port}/readyz")).expect("explicit url");
        let err = run(&probe, Duration::from_secs(5))
            .await
            .expect_err("nothing listens");
        assert!(matches!(err, HealthError::Unreachable { .. }), "{err}");
    }
}
