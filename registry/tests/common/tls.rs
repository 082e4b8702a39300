//! TLS for the tests: certificate authorities and certificates generated per test
//! (rcgen; no key material is ever committed), their files, valv started with TLS,
//! reqwest clients that trust a test CA (with or without a client certificate), and a
//! raw rustls handshake that reports which certificate the server presented.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use super::Valv;

/// A test certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// A certificate and its key, PEM, and the certificate's DER (what a handshake shows).
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(vec![]).expect("CA params");
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(p, KeyPair::generate().expect("CA key"))
            .expect("self-sign the CA");
        let pem = issuer.pem();
        Ca { issuer, pem }
    }

    fn sign(&self, mut p: CertificateParams, eku: ExtendedKeyUsagePurpose) -> Leaf {
        p.extended_key_usages = vec![eku];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("leaf key");
        let cert = p.signed_by(&key, &*self.issuer).expect("sign leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A server certificate for 127.0.0.1 and localhost. Each call makes a new key and
    /// certificate (`cn` tells them apart in logs).
    pub fn server(&self, cn: &str) -> Leaf {
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("server params");
        p.distinguished_name.push(DnType::CommonName, cn);
        self.sign(p, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate with subject `O=<org>, CN=<cn>`.
    pub fn client(&self, org: &str, cn: &str) -> Leaf {
        let mut p = CertificateParams::new(vec![]).expect("client params");
        // In this order in the certificate (rcgen's default DN has a CN first).
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::OrganizationName, org);
        p.distinguished_name.push(DnType::CommonName, cn);
        self.sign(p, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// The certificate, key and (optionally) client CA files of one valv, in a temp dir.
#[derive(Debug)]
pub struct TlsFiles {
    pub dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    pub fn new(leaf: &Leaf, client_ca: Option<&Ca>) -> TlsFiles {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("server.crt");
        let key = dir.path().join("server.key");
        write_atomic(&cert, leaf.cert_pem.as_bytes());
        write_atomic(&key, leaf.key_pem.as_bytes());
        let client_ca = client_ca.map(|ca| {
            let path = dir.path().join("clients-ca.crt");
            write_atomic(&path, ca.pem.as_bytes());
            path
        });
        TlsFiles {
            dir,
            cert,
            key,
            client_ca,
        }
    }

    /// `--tls-cert … --tls-key … [--tls-client-ca …]`
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--tls-cert".to_owned(),
            self.cert.display().to_string(),
            "--tls-key".to_owned(),
            self.key.display().to_string(),
        ];
        if let Some(ca) = &self.client_ca {
            args.push("--tls-client-ca".to_owned());
            args.push(ca.display().to_string());
        }
        args
    }

    /// Replaces the certificate and key, each file by an atomic rename (key first, so
    /// that a reload between the two renames sees the new key with the old
    /// certificate, which it refuses and retries).
    pub fn replace(&self, leaf: &Leaf) {
        write_atomic(&self.key, leaf.key_pem.as_bytes());
        write_atomic(&self.cert, leaf.cert_pem.as_bytes());
    }
}

/// Writes `bytes` to a temporary file beside `path` and renames it over `path`, as
/// certificate tooling does, so a reader never sees a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-new");
    std::fs::write(&tmp, bytes).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over");
}

/// `valv serve` with TLS from `files` on 127.0.0.1:0, its stderr captured (with the
/// access log at info) so tests can wait for log lines.
pub fn start(data_dir: &Path, files: &TlsFiles, extra: &[&str], env: &[(&str, &str)]) -> Valv {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_valv"));
    cmd.arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .args(files.args())
        .args(extra)
        .env("RUST_LOG", "warn,valv=info")
        .stdout(Stdio::piped())
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let valv = Valv::spawn_logged(cmd, data_dir);
    assert!(
        valv.base.starts_with("https://127.0.0.1:"),
        "with TLS valv announces https://, got {}",
        valv.base
    );
    valv
}

fn builder(ca: &Ca) -> reqwest::ClientBuilder {
    kms_client::install_tls_provider();
    reqwest::Client::builder()
        .tls_certs_only(
            [reqwest::Certificate::from_pem(ca.pem.as_bytes()).expect("CA certificate")],
        )
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(60))
}

/// A client trusting only `ca`, offering `h2` and `http/1.1` by ALPN.
pub fn client(ca: &Ca) -> reqwest::Client {
    builder(ca).build().expect("https client")
}

/// A client trusting only `ca`, offering only HTTP/1.1.
pub fn client_h1(ca: &Ca) -> reqwest::Client {
    builder(ca).http1_only().build().expect("https client")
}

/// [`client_h1`] that opens a new connection (a new handshake) for every request.
pub fn client_h1_fresh_connections(ca: &Ca) -> reqwest::Client {
    builder(ca)
        .http1_only()
        .pool_max_idle_per_host(0)
        .build()
        .expect("https client")
}

/// A client trusting `ca` that presents `identity` as its client certificate.
pub fn client_with_identity(ca: &Ca, identity: &Leaf) -> reqwest::Client {
    let pem = format!("{}{}", identity.cert_pem, identity.key_pem);
    builder(ca)
        .identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("client identity"))
        .build()
        .expect("https client with a client certificate")
}

/// Connects to `host` (`127.0.0.1:PORT`) with a bare rustls client trusting `ca`, and
/// returns the DER of the certificate the server presented. Fails (as a message) when
/// the handshake does.
pub async fn served_certificate(host: &str, ca: &Ca) -> Result<Vec<u8>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect(host)
            .await
            .map_err(|e| format!("connect {host}: {e}"))?;
        connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake with {host}: {e}"))
    };
    let stream = tokio::time::timeout(Duration::from_secs(20), handshake)
        .await
        .map_err(|_| format!("handshake with {host} timed out"))??;
    let (_, session) = stream.get_ref();
    let leaf = session
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("the server presented no certificate")?;
    Ok(leaf.as_ref().to_vec())
}

/// Polls (bounded) until the server at `host` presents `want`; panics with `what`
/// otherwise. Each poll is a new handshake.
pub async fn wait_until_served(host: &str, ca: &Ca, want: &Leaf, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let last = match served_certificate(host, ca).await {
            Ok(der) if der == want.der => return,
            Ok(_) => "another certificate".to_owned(),
            Err(e) => e,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: the new certificate was not served within 30 s (last: {last})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
