//! The Key Vault provider over https, as production runs it: the fake Key Vault serves
//! TLS with a certificate from a CA this test generates, and the provider is opened the
//! way the registry opens it (`kms_client::open` with `VALV_KEYVAULT_ENDPOINT`,
//! `AZURE_AUTHORITY_HOST` and `VALV_KEYVAULT_CA_FILE` from the environment), so that
//! token requests and vault calls both go over https.
//!
//! Everything listens on 127.0.0.1.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use fake_keyvault::{Config, FakeVault, IdentitySpec, KeyKind, Permission, TlsIdentity};
use kms_client::azure::{AzureConfig, AzureKek, Credential, RetryPolicy};
use kms_client::{KeyId, KmsError, VersionedKeyId};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

const VAULT: &str = "https://fakevault.vault.azure.net";
const OID: &str = "11111111-0000-0000-0000-0000000000a1";
const CLIENT: &str = "22222222-0000-0000-0000-0000000000a2";
const SECRET: &str = "fixture-client-secret";

/// A test CA (generated here, never stored) and server certificates it signs.
struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let pem = params.self_signed(&key).expect("self-sign the CA").pem();
        TestCa { params, key, pem }
    }

    /// A server certificate for `names` (IP addresses become IP SANs).
    fn issue(&self, names: &[&str]) -> TlsIdentity {
        let key = KeyPair::generate().expect("server key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let params = CertificateParams::new(names).expect("server params");
        let issuer = Issuer::new(self.params.clone(), &self.key);
        let cert = params.signed_by(&key, &issuer).expect("sign");
        TlsIdentity {
            cert_chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A fake vault serving https with `identity`, a service principal holding every
/// permission, and one RSA key.
async fn https_vault(identity: TlsIdentity) -> (FakeVault, VersionedKeyId) {
    let vault = FakeVault::start(Config {
        tls: Some(identity),
        ..Config::default()
    })
    .await
    .expect("start the fake vault");
    assert!(
        vault.url().starts_with("https://127.0.0.1:"),
        "{}",
        vault.url()
    );
    let mut spec = IdentitySpec::new(OID, CLIENT);
    spec.client_secret = Some(SECRET.into());
    vault.register_identity(spec).expect("register identity");
    vault.grant(OID, &Permission::ALL).expect("grant");
    let created = vault
        .create_key("tls-kek", KeyKind::Rsa { bits: 2048 })
        .await
        .expect("create key");
    let id = format!("{VAULT}/keys/tls-kek/{}", created.version)
        .parse()
        .expect("versioned key id");
    (vault, id)
}

/// The environment the registry would be started with for `vault`.
fn env_for(vault: &FakeVault, ca_file: Option<&Path>) -> HashMap<&'static str, String> {
    let mut env = HashMap::from([
        ("VALV_KEYVAULT_ENDPOINT", vault.url()),
        ("AZURE_AUTHORITY_HOST", vault.url()),
        ("AZURE_TENANT_ID", vault.tenant_id().to_owned()),
        ("AZURE_CLIENT_ID", CLIENT.to_owned()),
        ("AZURE_CLIENT_SECRET", SECRET.to_owned()),
    ]);
    if let Some(path) = ca_file {
        env.insert("VALV_KEYVAULT_CA_FILE", path.display().to_string());
    }
    env
}

fn versionless(id: &VersionedKeyId) -> KeyId {
    id.key().clone()
}

/// Retries that give up quickly: a refused certificate is not worth waiting for.
fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(1),
    }
}

#[tokio::test]
async fn wrap_and_unwrap_over_https_with_the_configured_ca() {
    let ca = TestCa::new("valv test CA");
    let (vault, id) = https_vault(ca.issue(&["127.0.0.1", "localhost"])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).expect("write the CA");
    let env = env_for(&vault, Some(&ca_file));

    let kek = kms_client::open(&versionless(&id), &|k| env.get(k).cloned()).expect("open");
    let latest = kek.latest_version(&versionless(&id)).await.expect("latest");
    assert_eq!(latest, id);
    let description = kek.describe(&id).await.expect("describe");
    assert!(description.enabled);
    let wrapped = kek.wrap(&id, &[7u8; 32]).await.expect("wrap over https");
    let back = kek.unwrap(&id, &wrapped).await.expect("unwrap over https");
    assert_eq!(back.expose(), &[7u8; 32]);

    let counters = vault.counters();
    assert!(
        counters.token >= 1,
        "the token came over https: {counters:?}"
    );
    assert_eq!(counters.wrap_key, 1);
    assert_eq!(counters.unwrap_key, 1);
    vault.shutdown().await;
}

#[tokio::test]
async fn a_vault_certificate_from_an_untrusted_ca_is_refused() {
    let ca = TestCa::new("valv test CA");
    let (vault, id) = https_vault(ca.issue(&["127.0.0.1"])).await;
    // The built-in roots only: the test CA is not among them.
    let config = AzureConfig {
        retry: fast_retry(),
        ..AzureConfig::default()
    }
    .with_endpoint(VAULT, vault.url());
    let credential = Credential::client_secret(vault.tenant_id(), CLIENT, SECRET)
        .with_authority(vault.url())
        .with_retry(fast_retry());
    let kek = AzureKek::new(config, credential).expect("provider");
    use kms_client::Kek as _;
    let e = kek
        .describe(&id)
        .await
        .expect_err("an untrusted certificate");
    assert!(matches!(e, KmsError::Transient { .. }), "{e}");
    assert_eq!(
        vault.counters().token,
        0,
        "no request got past the handshake"
    );

    // Trusting another CA does not help either.
    let other = TestCa::new("another CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("other.pem");
    std::fs::write(&ca_file, &other.pem).expect("write");
    let env = env_for(&vault, Some(&ca_file));
    let kek = kms_client::open(&versionless(&id), &|k| env.get(k).cloned()).expect("open");
    assert!(kek.describe(&id).await.is_err());
    assert_eq!(vault.counters().token, 0);
    vault.shutdown().await;
}

#[tokio::test]
async fn a_certificate_for_another_host_is_refused() {
    let ca = TestCa::new("valv test CA");
    // Signed by the trusted CA, but for a name the client does not connect to.
    let (vault, id) = https_vault(ca.issue(&["vault.other.example"])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).expect("write the CA");
    let mut config = AzureConfig {
        retry: fast_retry(),
        ca_file: Some(ca_file),
        ..AzureConfig::default()
    }
    .with_endpoint(VAULT, vault.url());
    config.request_timeout = Duration::from_secs(5);
    let credential = Credential::client_secret(vault.tenant_id(), CLIENT, SECRET)
        .with_authority(vault.url())
        .with_retry(fast_retry())
        .with_http_client(config.http_client().expect("client"));
    let kek = AzureKek::new(config, credential).expect("provider");
    use kms_client::Kek as _;
    assert!(kek.describe(&id).await.is_err(), "hostname not checked");
    assert_eq!(vault.counters().token, 0);
    vault.shutdown().await;
}

#[test]
fn an_unreadable_or_empty_ca_file_is_a_configuration_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id: KeyId = format!("{VAULT}/keys/k").parse().expect("key id");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    for path in [garbage, dir.path().join("missing.pem")] {
        let env = HashMap::from([
            ("VALV_KEYVAULT_ENDPOINT", "https://127.0.0.1:9".to_owned()),
            ("VALV_KEYVAULT_CA_FILE", path.display().to_string()),
        ]);
        let e = kms_client::open(&id, &|k| env.get(k).cloned()).expect_err("refused");
        assert!(matches!(e, KmsError::Misconfigured { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("VALV_KEYVAULT_CA_FILE") && msg.contains(&path.display().to_string()),
            "{msg}"
        );
    }
}
