//! `s3://<bucket>[/<prefix>]` and `az://<container>[/<prefix>]`: S3 (AWS, or any
//! S3-compatible endpoint) and Azure Blob Storage, through object_store's clients.
//!
//! Settings come from the standard environment variables, read by object_store:
//! - S3: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//!   `AWS_REGION`, `AWS_ENDPOINT_URL` (an S3-compatible endpoint, addressed path-style),
//!   `AWS_ALLOW_HTTP`, web identity (`AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_ARN`),
//!   the ECS container credentials and instance metadata.
//! - Azure: `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`,
//!   `AZURE_STORAGE_ENDPOINT`, `AZURE_STORAGE_USE_EMULATOR` (Azurite), managed and
//!   workload identity (`AZURE_CLIENT_ID`, `AZURE_TENANT_ID`,
//!   `AZURE_FEDERATED_TOKEN_FILE`).
//!
//! A create-only put is valv's commit point (DESIGN §3), so both are opened with it
//! real: S3's `If-None-Match: *` (object_store's `ETagMatch` mode) and Azure's
//! `If-None-Match: *`. [`super::Backend::probe`] proves it at start against the bucket
//! itself, so a store that ignores the condition is refused rather than trusted.
//!
//! Reads are ranged GETs ([`super::Ranged`]); parts are S3's minimum (5 MiB), which
//! Azure's block uploads take as well.

use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::prefix::PrefixStore;
use object_store::ObjectStore;

use super::{Backend, OpenError, Ranged, ANY_STORE_PART_SIZE};

/// Opens `s3://<bucket>/<prefix>`.
pub(super) fn open_s3(bucket: &str, prefix: &str) -> Result<Backend, OpenError> {
    kms_client::install_tls_provider();
    let url = format!("s3://{bucket}/{prefix}");
    let s3 = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_conditional_put(S3ConditionalPut::ETagMatch)
        .build()
        .map_err(|source| OpenError::ObjectStore {
            url: url.clone(),
            source,
        })?;
    Ok(with_prefix(Arc::new(s3), prefix))
}

/// Opens `az://<container>/<prefix>`.
pub(super) fn open_azure(container: &str, prefix: &str) -> Result<Backend, OpenError> {
    kms_client::install_tls_provider();
    let url = format!("az://{container}/{prefix}");
    let azure = MicrosoftAzureBuilder::from_env()
        .with_container_name(container)
        .build()
        .map_err(|source| OpenError::ObjectStore {
            url: url.clone(),
            source,
        })?;
    Ok(with_prefix(Arc::new(azure), prefix))
}

fn with_prefix(store: Arc<dyn ObjectStore>, prefix: &str) -> Backend {
    let objects: Arc<dyn ObjectStore> = if prefix.is_empty() {
        store
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    };
    Backend::new(objects, Arc::new(Ranged), ANY_STORE_PART_SIZE)
}
