//! A test KEK for the keyring target: deterministic, authenticated, and fast.
//!
//! A wrap is `rk ‖ HMAC-SHA256(K, version ‖ rk)[..16]` under a fixed public key `K`, so
//! bytes this KEK did not produce (for that version) fail to unwrap, as a vault's
//! RSA-OAEP unwrap fails on bytes its key did not wrap. It stands in for the vault,
//! not for RSA: the target fuzzes the keyring document, not the KEK.

use async_trait::async_trait;
use kms_client::{Kek, KeyDescription, KeyId, KmsError, SecretBytes, VersionedKeyId};
use ring::hmac;

/// The key id the fuzzed registry is configured with (versionless: automatic rotation).
pub const KEY_ID: &str = "file:///fuzz/keys/kek";
/// The two KEK versions that exist.
pub const VERSIONS: [&str; 2] = [
    "file:///fuzz/keys/kek/00000000000000000000000000000001",
    "file:///fuzz/keys/kek/00000000000000000000000000000002",
];
/// The registry keys the legitimate keyring holds: generation 1 (read-only, wrapped by
/// version 1) and generation 2 (active, wrapped by version 2).
pub const RKS: [[u8; 32]; 2] = [[0x11; 32], [0x22; 32]];

#[derive(Debug, Default)]
pub struct TestKek;

fn mac(version: &VersionedKeyId, rk: &[u8]) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"valv fuzz test kek (public)");
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(version.to_string().as_bytes());
    ctx.update(&[0]);
    ctx.update(rk);
    ctx.sign()
}

fn known(id: &VersionedKeyId) -> Result<(), KmsError> {
    if VERSIONS.contains(&id.to_string().as_str()) {
        Ok(())
    } else {
        Err(KmsError::revoked(id, "no such version"))
    }
}

impl TestKek {
    /// What `wrap` returns, without the async trait.
    pub fn wrap_now(version: &VersionedKeyId, rk: &[u8]) -> Vec<u8> {
        let mut out = rk.to_vec();
        out.extend_from_slice(&mac(version, rk).as_ref()[..16]);
        out
    }
}

#[async_trait]
impl Kek for TestKek {
    async fn describe(&self, id: &VersionedKeyId) -> Result<KeyDescription, KmsError> {
        known(id)?;
        Ok(KeyDescription {
            id: id.clone(),
            key_type: "RSA".into(),
            key_size_bits: 2048,
            enabled: true,
            created: None,
            expires: None,
            not_before: None,
        })
    }

    async fn latest_version(&self, id: &KeyId) -> Result<VersionedKeyId, KmsError> {
        match id.as_versioned() {
            Some(v) => known(&v).map(|()| v),
            None => VERSIONS[1].parse(),
        }
    }

    async fn wrap(&self, id: &VersionedKeyId, plaintext: &[u8]) -> Result<Vec<u8>, KmsError> {
        known(id)?;
        Ok(TestKek::wrap_now(id, plaintext))
    }

    async fn unwrap(&self, id: &VersionedKeyId, wrapped: &[u8]) -> Result<SecretBytes, KmsError> {
        known(id)?;
        let invalid = || KmsError::InvalidCiphertext {
            key: id.to_string(),
        };
        if wrapped.len() < 16 {
            return Err(invalid());
        }
        let (rk, tag) = wrapped.split_at(wrapped.len() - 16);
        // Not constant time: this KEK guards nothing.
        if tag != &mac(id, rk).as_ref()[..16] {
            return Err(invalid());
        }
        Ok(SecretBytes::new(rk.to_vec()))
    }
}

/// The legitimate keyring document (as `storage::keyring::write_version` writes it).
pub fn legit_keyring() -> Vec<u8> {
    use base64::Engine as _;
    let b64 = |v: usize| {
        let version: VersionedKeyId = VERSIONS[v].parse().expect("a versioned id");
        base64::engine::general_purpose::STANDARD.encode(TestKek::wrap_now(&version, &RKS[v]))
    };
    let doc = serde_json::json!({
        "version": 1,
        "key_id": KEY_ID,
        "automatic_rotation": true,
        "last_rotation": "2025-01-02T03:04:05Z",
        "generations": [
            {"generation": 1, "kek": VERSIONS[0], "algorithm": "RSA-OAEP-256", "wrapped": b64(0),
             "created": "2025-01-01T00:00:00Z", "state": "read-only"},
            {"generation": 2, "kek": VERSIONS[1], "algorithm": "RSA-OAEP-256", "wrapped": b64(1),
             "created": "2025-01-02T03:04:05Z", "state": "active"},
        ],
    });
    serde_json::to_vec_pretty(&doc).expect("json")
}
