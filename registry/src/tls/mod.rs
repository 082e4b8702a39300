//! TLS for the listener: building a rustls `ServerConfig` from PEM files, the live
//! configuration every new handshake takes ([`ServerTls`]), the handshake itself
//! ([`accept`]), and reloading on SIGHUP or when the files change ([`reload`]).
//!
//! - Certificates and keys are PEM (a chain is the leaf followed by its
//!   intermediates); keys PKCS#8, PKCS#1 (RSA) or SEC1 (EC). The crypto is rustls'
//!   *ring* provider, the one reqwest already links, chosen explicitly rather than
//!   through a process-wide default.
//! - ALPN offers `h2` then `http/1.1`; the server runs whichever was chosen.
//! - With a client CA, the server asks for a client certificate but admits clients
//!   without one (they authenticate another way, or not at all); a certificate that does
//!   not chain to the CA fails the handshake. The verified subject is returned by
//!   [`accept`]; the server puts it in `http::conn::Connection::client_subject`.
//!
//! This module knows nothing of HTTP: `http::server` calls it, not the reverse.
//!
//! A configuration is built whole or not at all: every file is read and checked, the key
//! must match the certificate, and only then does it replace the one in use. So a bad
//! file at start is an error naming it, and a bad file at reload leaves the old
//! certificate serving.

pub mod reload;
pub mod x509;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

use crate::config::TlsConfig;

/// The ALPN protocols offered, in order of preference.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Where the listener's certificate, key and (for mTLS) client CA are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the server certificate, then any intermediates.
    pub cert: PathBuf,
    /// PEM: the certificate's private key.
    pub key: PathBuf,
    /// PEM: the CA certificates client certificates must chain to; `None` = no mTLS.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// The files `[server.tls]` names, or `None` when TLS is off (validation has
    /// already refused a certificate without a key and the reverse).
    pub fn from_config(tls: &TlsConfig) -> Option<TlsFiles> {
        match (&tls.cert_file, &tls.key_file) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: tls.client_ca_file.clone(),
            }),
            _ => None,
        }
    }
}

/// How often the reloader looks at the files; `None` = only on SIGHUP.
pub fn reload_interval(tls: &TlsConfig) -> Option<Duration> {
    (tls.reload_interval_secs > 0).then(|| Duration::from_secs(tls.reload_interval_secs))
}

/// A file that made a TLS configuration unusable, named, with what is wrong with it.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{what} {path}: {message}")]
    Invalid {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("TLS key file {key} does not hold the private key of the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("building the TLS configuration from {cert}: {message}")]
    Config { cert: PathBuf, message: String },
}

const CERT: &str = "TLS certificate file";
const KEY: &str = "TLS key file";
const CLIENT_CA: &str = "TLS client CA file";

/// The bytes of the files, read once, so what is checked is what is used (a file
/// changing between two reads cannot mix versions within one file).
#[derive(Debug)]
pub struct Sources {
    cert: Vec<u8>,
    key: Zeroizing<Vec<u8>>,
    client_ca: Option<Vec<u8>>,
}

impl Sources {
    /// Reads every file. Fails naming the first file that cannot be read.
    pub fn read(files: &TlsFiles) -> Result<Sources, TlsError> {
        let read = |what, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                what,
                path: path.to_owned(),
                source,
            })
        };
        Ok(Sources {
            cert: read(CERT, &files.cert)?,
            key: Zeroizing::new(read(KEY, &files.key)?),
            client_ca: files
                .client_ca
                .as_deref()
                .map(|p| read(CLIENT_CA, p))
                .transpose()?,
        })
    }

    /// A digest of all the files' contents: the reloader rebuilds when it changes. (A
    /// digest, not the bytes, so the key's bytes are not kept between polls.)
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [
            Some(self.cert.as_slice()),
            Some(self.key.as_slice()),
            self.client_ca.as_deref(),
        ] {
            match part {
                Some(bytes) => {
                    h.update((bytes.len() as u64).to_be_bytes());
                    h.update(bytes);
                }
                None => h.update(u64::MAX.to_be_bytes()),
            }
        }
        h.finalize().into()
    }
}

/// What is logged of a loaded server certificate (never anything of the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub serial: String,
    pub not_after: String,
    /// SHA-256 of the leaf certificate's DER, hex: what `openssl x509 -fingerprint
    /// -sha256` prints, without the colons.
    pub sha256: String,
    /// Certificates in the chain file (leaf included).
    pub chain_len: usize,
}

/// A checked configuration, ready to serve.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Arc<ServerConfig>,
    pub cert: CertInfo,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks the files and builds the configuration ([`build`]).
pub fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    build(files, &Sources::read(files)?)
}

/// Builds a server configuration from the files' contents.
///
/// Fails, naming the file, when the certificate file holds no PEM certificate or one
/// that is not X.509, the key file holds no supported private key or one that is not
/// the certificate's, or the client CA file holds no usable CA certificate.
pub fn build(files: &TlsFiles, sources: &Sources) -> Result<Loaded, TlsError> {
    let invalid = |what, path: &Path, message: String| TlsError::Invalid {
        what,
        path: path.to_owned(),
        message,
    };
    let chain = CertificateDer::pem_slice_iter(&sources.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(CERT, &files.cert, pem_problem(&e)))?;
    let Some(leaf) = chain.first() else {
        return Err(invalid(
            CERT,
            &files.cert,
            "no PEM CERTIFICATE block found".into(),
        ));
    };
    let fields = x509::fields(leaf).map_err(|_| {
        invalid(
            CERT,
            &files.cert,
            "the first certificate is not a DER X.509 certificate".into(),
        )
    })?;
    let cert = CertInfo {
        subject: fields.subject,
        serial: fields.serial,
        not_after: fields.not_after,
        sha256: x509::hex(&Sha256::digest(leaf.as_ref())),
        chain_len: chain.len(),
    };
    let key = PrivateKeyDer::from_pem_slice(&sources.key).map_err(|e| {
        invalid(
            KEY,
            &files.key,
            format!("no private key found (PKCS#8, PKCS#1 RSA or SEC1 EC PEM expected): {e}"),
        )
    })?;

    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config {
            cert: files.cert.clone(),
            message: e.to_string(),
        })?;
    let builder = match (&files.client_ca, &sources.client_ca) {
        (Some(path), Some(pem)) => {
            let roots = client_roots(path, pem)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| invalid(CLIENT_CA, path, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
        },
        rustls::Error::InvalidCertificate(e) => invalid(CERT, &files.cert, e.to_string()),
        other => invalid(KEY, &files.key, other.to_string()),
    })?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Loaded {
        config: Arc::new(config),
        cert,
    })
}

/// What is wrong with a PEM file, in words (the parser's own message shows the END
/// marker it missed as a list of byte values).
fn pem_problem(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { .. } => {
            "not valid PEM: a section has no END line (a truncated or half-written file?)".into()
        }
        Error::IllegalSectionStart { .. } => "not valid PEM: a malformed BEGIN line".into(),
        Error::Base64Decode(_) => "not valid PEM: a section is not valid base64".into(),
        other => format!("not valid PEM: {other}"),
    }
}

/// The client CA file's certificates as trust anchors. Fails when it holds none, or one
/// that cannot be a trust anchor.
fn client_roots(path: &Path, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let invalid = |message: String| TlsError::Invalid {
        what: CLIENT_CA,
        path: path.to_owned(),
        message,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| invalid(pem_problem(&e)))?;
        roots
            .add(cert)
            .map_err(|e| invalid(format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(invalid("no PEM CERTIFICATE block found".into()));
    }
    Ok(roots)
}

/// The configuration new handshakes use. Replacing it never touches connections that
/// already completed their handshake: each holds the configuration it started with.
#[derive(Debug)]
pub struct ServerTls {
    current: RwLock<Arc<ServerConfig>>,
    /// Whether client certificates are asked for (for the log line at start).
    pub mtls: bool,
}

impl ServerTls {
    pub fn new(config: Arc<ServerConfig>, mtls: bool) -> ServerTls {
        ServerTls {
            current: RwLock::new(config),
            mtls,
        }
    }

    /// The configuration in use now.
    pub fn current(&self) -> Arc<ServerConfig> {
        // A writer only ever stores a whole Arc, so a poisoned lock still holds a
        // complete configuration.
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Makes `config` the one new handshakes use.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
    }
}

/// Why a TLS connection was not served.
#[derive(Debug, Error)]
pub enum HandshakeError {
    #[error("TLS handshake did not finish within {0:?}")]
    Timeout(Duration),
    #[error("TLS handshake failed: {0}")]
    Failed(io::Error),
    #[error("the verified client certificate's subject cannot be read")]
    Subject,
}

/// The protocol a handshake chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiated {
    Http2,
    Http1,
    /// No ALPN: the client did not offer it (the server then detects the protocol).
    Unspecified,
}

/// A completed handshake.
#[derive(Debug)]
pub struct Accepted {
    pub stream: TlsStream<TcpStream>,
    /// The verified client certificate's subject DN (RFC 4514), when the client
    /// presented one (only possible with a client CA, and only one that chains to it).
    pub client_subject: Option<String>,
    pub negotiated: Negotiated,
}

/// Runs the server side of a TLS handshake on `stream` with the current configuration,
/// bounded by `timeout` (a client that stalls mid-handshake holds a connection slot as a
/// slow-header client would).
///
/// Fails on timeout, on any handshake failure (including a client certificate that does
/// not chain to the client CA), and — never expected, as rustls parsed it — when the
/// verified certificate's subject cannot be read.
pub async fn accept(
    tls: &ServerTls,
    stream: TcpStream,
    timeout: Duration,
) -> Result<Accepted, HandshakeError> {
    let acceptor = TlsAcceptor::from(tls.current());
    let stream = tokio::time::timeout(timeout, acceptor.accept(stream))
        .await
        .map_err(|_| HandshakeError::Timeout(timeout))?
        .map_err(HandshakeError::Failed)?;
    let session = stream.get_ref().1;
    let client_subject = match session.peer_certificates().and_then(|c| c.first()) {
        Some(leaf) => Some(x509::subject(leaf).map_err(|_| HandshakeError::Subject)?),
        None => None,
    };
    let negotiated = match session.alpn_protocol() {
        Some(b"h2") => Negotiated::Http2,
        Some(_) => Negotiated::Http1,
        None => Negotiated::Unspecified,
    };
    Ok(Accepted {
        stream,
        client_subject,
        negotiated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };

    struct Dir {
        dir: tempfile::TempDir,
    }

    impl Dir {
        fn new() -> Dir {
            Dir {
                dir: tempfile::tempdir().expect("tempdir"),
            }
        }
        fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let p = self.dir.path().join(name);
            std::fs::write(&p, bytes).expect("write");
            p
        }
    }

    fn ca() -> CertifiedIssuer<'static, KeyPair> {
        let mut p = CertificateParams::new(vec![]).expect("params");
        p.distinguished_name.push(DnType::CommonName, "test CA");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        CertifiedIssuer::self_signed(p, KeyPair::generate().expect("key")).expect("ca")
    }

    fn leaf(ca: &CertifiedIssuer<'static, KeyPair>, cn: &str) -> (String, String) {
        let mut p = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &**ca).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    fn files(dir: &Dir, cert: &str, key: &str, ca: Option<&str>) -> TlsFiles {
        TlsFiles {
            cert: dir.write("cert.pem", cert.as_bytes()),
            key: dir.write("key.pem", key.as_bytes()),
            client_ca: ca.map(|c| dir.write("ca.pem", c.as_bytes())),
        }
    }

    #[test]
    fn a_chain_and_its_key_load() {
        let dir = Dir::new();
        let ca = ca();
        let (cert, key) = leaf(&ca, "registry.test");
        let chain = format!("{cert}{}", ca.pem());
        let f = files(&dir, &chain, &key, Some(&ca.pem()));
        let loaded = load(&f).expect("load");
        assert_eq!(loaded.cert.subject, "CN=registry.test");
        assert_eq!(loaded.cert.chain_len, 2);
        assert_eq!(loaded.cert.sha256.len(), 64);
        assert_eq!(
            loaded.config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn each_bad_file_is_named() {
        let dir = Dir::new();
        let ca = ca();
        let (cert, key) = leaf(&ca, "a");
        let (_, other_key) = leaf(&ca, "b");

        let f = files(&dir, "garbage", &key, None);
        let e = load(&f).expect_err("garbage cert").to_string();
        assert!(
            e.contains("TLS certificate file") && e.contains("cert.pem"),
            "{e}"
        );

        let f = files(&dir, &cert, "garbage", None);
        let e = load(&f).expect_err("garbage key").to_string();
        assert!(e.contains("TLS key file") && e.contains("key.pem"), "{e}");

        let f = files(&dir, &cert, &other_key, None);
        let e = load(&f).expect_err("another key");
        assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");

        // A key where the certificate should be, and a half-written certificate.
        let f = files(&dir, &key, &key, None);
        assert!(load(&f)
            .expect_err("key as cert")
            .to_string()
            .contains("cert.pem"));
        let f = files(&dir, &cert[..cert.len() / 2], &key, None);
        assert!(load(&f)
            .expect_err("half a cert")
            .to_string()
            .contains("cert.pem"));

        let f = files(&dir, &cert, &key, Some("not a CA"));
        let e = load(&f).expect_err("bad CA").to_string();
        assert!(
            e.contains("TLS client CA file") && e.contains("ca.pem"),
            "{e}"
        );

        let missing = TlsFiles {
            cert: dir.dir.path().join("absent.pem"),
            key: f.key.clone(),
            client_ca: None,
        };
        let e = load(&missing).expect_err("missing").to_string();
        assert!(
            e.contains("cannot read TLS certificate file") && e.contains("absent.pem"),
            "{e}"
        );
    }

    #[test]
    fn the_digest_follows_every_file() {
        let dir = Dir::new();
        let ca = ca();
        let (cert, key) = leaf(&ca, "a");
        let f = files(&dir, &cert, &key, None);
        let d1 = Sources::read(&f).expect("read").digest();
        assert_eq!(d1, Sources::read(&f).expect("read").digest());
        dir.write("key.pem", format!("{key}\n").as_bytes());
        assert_ne!(d1, Sources::read(&f).expect("read").digest());
    }
}
