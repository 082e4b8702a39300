use thiserror::Error;

/// Errors from a KEK provider, in the classes the key watcher acts on (DESIGN §6).
///
/// Messages name the key and the reason but never carry key material.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KmsError {
    /// The key is authoritatively unusable: disabled, expired, not yet valid, deleted,
    /// missing, or access to it was removed. Content operations must stop.
    #[error("key {key} is revoked: {reason}")]
    Revoked { key: String, reason: String },
    /// The provider could not answer now (throttling, 5xx, timeout). Retry later.
    #[error("key provider unavailable for {key}: {reason}")]
    Transient { key: String, reason: String },
    /// The configuration is wrong: a malformed id, an EC or symmetric key, an unsupported
    /// size, a malformed key file. Restarting will not help; an operator must act.
    #[error("key {key} is misconfigured: {reason}")]
    Misconfigured { key: String, reason: String },
    /// The key is usable but the wrapped bytes were not produced by it (wrong key, or
    /// the wrapped bytes were altered).
    #[error("wrapped key material could not be unwrapped by {key}")]
    InvalidCiphertext { key: String },
}

impl KmsError {
    pub fn revoked(key: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        KmsError::Revoked {
            key: key.to_string(),
            reason: reason.into(),
        }
    }
    pub fn transient(key: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        KmsError::Transient {
            key: key.to_string(),
            reason: reason.into(),
        }
    }
    pub fn misconfigured(key: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        KmsError::Misconfigured {
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}
