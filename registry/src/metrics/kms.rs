//! Every key-encryption-key operation counted and timed: [`MeteredKek`] wraps the
//! provider the registry opened, so the store, the key watcher and the admin API are
//! all measured without knowing it. Each call is also a CLIENT span (`kms.wrap`, …)
//! for traces ([`crate::telemetry`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use kms_client::{Kek, KeyDescription, KeyId, KeyIdKind, KmsError, SecretBytes, VersionedKeyId};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tracing::Instrument as _;

/// Which provider holds the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// RSA keys on disk (`file://`).
    Local,
    /// Azure Key Vault or Managed HSM.
    AzureKeyVault,
}

impl Provider {
    pub fn of(key: &KeyId) -> Provider {
        match key.kind() {
            KeyIdKind::File { .. } => Provider::Local,
            KeyIdKind::AzureKeyVault { .. } => Provider::AzureKeyVault,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Provider::Local => "local",
            Provider::AzureKeyVault => "azure_key_vault",
        }
    }
}
label_value!(Provider);

/// The [`Kek`] operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Describe,
    LatestVersion,
    Wrap,
    Unwrap,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Describe => "describe",
            Operation::LatestVersion => "latest_version",
            Operation::Wrap => "wrap",
            Operation::Unwrap => "unwrap",
        }
    }

    fn span_name(self) -> &'static str {
        match self {
            Operation::Describe => "kms.describe",
            Operation::LatestVersion => "kms.latest_version",
            Operation::Wrap => "kms.wrap",
            Operation::Unwrap => "kms.unwrap",
        }
    }
}
label_value!(Operation);

/// How an operation ended: success, or the [`KmsError`] class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    Revoked,
    Transient,
    Misconfigured,
    InvalidCiphertext,
}

impl Outcome {
    fn of<T>(result: &Result<T, KmsError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Ok,
            Err(KmsError::Revoked { .. }) => Outcome::Revoked,
            Err(KmsError::Transient { .. }) => Outcome::Transient,
            Err(KmsError::Misconfigured { .. }) => Outcome::Misconfigured,
            Err(KmsError::InvalidCiphertext { .. }) => Outcome::InvalidCiphertext,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Revoked => "revoked",
            Outcome::Transient => "transient",
            Outcome::Misconfigured => "misconfigured",
            Outcome::InvalidCiphertext => "invalid_ciphertext",
        }
    }
}
label_value!(Outcome);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OperationLabels {
    pub provider: Provider,
    pub operation: Operation,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct LatencyLabels {
    pub provider: Provider,
    pub operation: Operation,
}

/// The vault's metrics, shared by every [`MeteredKek`] (cheap to clone).
#[derive(Debug, Clone)]
pub struct KmsMetrics {
    pub operations: Family<OperationLabels, Counter>,
    pub duration: Family<LatencyLabels, Histogram, fn() -> Histogram>,
}

/// A [`Kek`] whose every call is counted by outcome and timed.
#[derive(Debug)]
pub struct MeteredKek {
    inner: Arc<dyn Kek>,
    provider: Provider,
    metrics: KmsMetrics,
}

impl MeteredKek {
    pub fn new(inner: Arc<dyn Kek>, provider: Provider, metrics: KmsMetrics) -> MeteredKek {
        MeteredKek {
            inner,
            provider,
            metrics,
        }
    }

    /// Makes `call` inside the operation's span, then counts and times it.
    async fn measured<T>(
        &self,
        operation: Operation,
        call: impl Future<Output = Result<T, KmsError>>,
    ) -> Result<T, KmsError> {
        let span = tracing::trace_span!(
            target: crate::telemetry::TARGET,
            "kms",
            otel.name = operation.span_name(),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            valv.kms.provider = self.provider.as_str(),
            valv.kms.operation = operation.as_str(),
            valv.kms.outcome = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = call.instrument(span.clone()).await;
        let outcome = Outcome::of(&result);
        span.record("valv.kms.outcome", outcome.as_str());
        if outcome != Outcome::Ok {
            span.record("otel.status_code", "error");
        }
        let provider = self.provider;
        self.metrics
            .duration
            .get_or_create(&LatencyLabels {
                provider,
                operation,
            })
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .operations
            .get_or_create(&OperationLabels {
                provider,
                operation,
                outcome,
            })
            .inc();
        result
    }
}

#[async_trait]
impl Kek for MeteredKek {
    async fn describe(&self, id: &VersionedKeyId) -> Result<KeyDescription, KmsError> {
        self.measured(Operation::Describe, self.inner.describe(id))
            .await
    }

    async fn latest_version(&self, id: &KeyId) -> Result<VersionedKeyId, KmsError> {
        self.measured(Operation::LatestVersion, self.inner.latest_version(id))
            .await
    }

    async fn wrap(&self, id: &VersionedKeyId, plaintext: &[u8]) -> Result<Vec<u8>, KmsError> {
        self.measured(Operation::Wrap, self.inner.wrap(id, plaintext))
            .await
    }

    async fn unwrap(&self, id: &VersionedKeyId, wrapped: &[u8]) -> Result<SecretBytes, KmsError> {
        self.measured(Operation::Unwrap, self.inner.unwrap(id, wrapped))
            .await
    }
}
