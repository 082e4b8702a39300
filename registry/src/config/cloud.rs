//! The object-store client settings of `[storage]`: `[storage.s3]`, `[storage.azure]`,
//! and the part size, parts in flight, retries and timeouts beside them. Plain data;
//! [`StorageConfig::open_options`] turns it into the storage crate's
//! [`OpenOptions`] and [`StorageConfig::cloud_problems`] reports what is wrong.
//!
//! No secrets here: access keys and account keys stay in the environment (or the
//! identity chain), where object_store reads them. A setting given here wins over
//! object_store's standard variable for the same thing (`AWS_ENDPOINT_URL`, ...);
//! one left out leaves the variable in charge.

use std::time::Duration;

use serde::Deserialize;
use storage::backend::{AzureOptions, OpenOptions, RetryOptions, S3Options};

use super::{StorageConfig, StorageUrl};

/// Part sizes, in MiB: S3 refuses parts under 5 MiB (but the last); above 512 MiB an
/// upload's write buffer (part size × (parts in flight + 1)) is more memory than a
/// registry should spend on one push.
pub const PART_SIZE_MIB: std::ops::RangeInclusive<u64> = 5..=512;
/// Parts of one data-object write in flight at once.
pub const PARTS_IN_FLIGHT: std::ops::RangeInclusive<usize> = 1..=16;
const MAX_RETRIES: usize = 100;
const MAX_TIMEOUT_SECS: u64 = 3600;
/// The most memory `storage.write_buffer_mib` may promise to uploads (64 GiB).
const MAX_WRITE_BUFFER_MIB: u64 = 64 * 1024;

/// `[storage.s3]`: for `s3://` storage urls only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// An S3-compatible endpoint URL (MinIO, Ceph, ...). Unset: `AWS_ENDPOINT_URL`,
    /// else AWS for the region.
    pub endpoint: Option<String>,
    /// The region requests are signed for. Unset: `AWS_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// `<endpoint>/<bucket>/<key>` rather than `<bucket>.<endpoint>/<key>`. Unset:
    /// path-style unless `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`.
    pub path_style: Option<bool>,
    /// Allow a plain-http endpoint. Unset: `AWS_ALLOW_HTTP`, else https only.
    pub allow_http: Option<bool>,
}

/// `[storage.azure]`: for `az://` storage urls only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AzureConfig {
    /// The storage account name. Unset: `AZURE_STORAGE_ACCOUNT_NAME`.
    pub account: Option<String>,
    /// The blob service URL (a sovereign cloud, a private endpoint, Azurite addressed
    /// as an account). Unset: `AZURE_STORAGE_ENDPOINT`, else
    /// `https://<account>.blob.core.windows.net`. Turns off an emulator mode the
    /// environment asked for.
    pub endpoint: Option<String>,
    /// Azurite, at `AZURITE_BLOB_STORAGE_URL` (default `http://127.0.0.1:10000`), with
    /// its development account and key unless given. Unset:
    /// `AZURE_STORAGE_USE_EMULATOR`.
    pub use_emulator: Option<bool>,
    /// Allow a plain-http endpoint. Unset: `AZURE_ALLOW_HTTP`, else https only.
    pub allow_http: Option<bool>,
}

impl StorageConfig {
    /// The storage crate's options for opening the store.
    pub fn open_options(&self) -> OpenOptions {
        let s3 = self.s3.clone().unwrap_or_default();
        let azure = self.azure.clone().unwrap_or_default();
        OpenOptions {
            // Validated to 5..=512 MiB: no overflow.
            part_size: (self.part_size_mib as usize) << 20,
            retry: RetryOptions {
                max_retries: self.retries,
                retry_timeout: Duration::from_secs(self.retry_timeout_secs),
                request_timeout: Duration::from_secs(self.request_timeout_secs),
                connect_timeout: Duration::from_secs(self.connect_timeout_secs),
            },
            s3: S3Options {
                endpoint: s3.endpoint,
                region: s3.region,
                path_style: s3.path_style,
                allow_http: s3.allow_http,
            },
            azure: AzureOptions {
                account: azure.account,
                endpoint: azure.endpoint,
                use_emulator: azure.use_emulator,
                allow_http: azure.allow_http,
            },
        }
    }

    /// What is wrong with the object-store settings, each naming its key.
    pub(super) fn cloud_problems(&self, problems: &mut Vec<String>) {
        if !PART_SIZE_MIB.contains(&self.part_size_mib) {
            problems.push(format!(
                "storage.part_size_mib must be between {} and {} (got {}); S3 refuses parts under 5 MiB",
                PART_SIZE_MIB.start(),
                PART_SIZE_MIB.end(),
                self.part_size_mib
            ));
        }
        if !PARTS_IN_FLIGHT.contains(&self.parts_in_flight) {
            problems.push(format!(
                "storage.parts_in_flight must be between {} and {} (got {})",
                PARTS_IN_FLIGHT.start(),
                PARTS_IN_FLIGHT.end(),
                self.parts_in_flight
            ));
        }
        if !(1..=MAX_WRITE_BUFFER_MIB).contains(&self.write_buffer_mib) {
            problems.push(format!(
                "storage.write_buffer_mib must be between 1 and {MAX_WRITE_BUFFER_MIB} (got {})",
                self.write_buffer_mib
            ));
        }
        if self.retries > MAX_RETRIES {
            problems.push(format!(
                "storage.retries must be at most {MAX_RETRIES} (got {})",
                self.retries
            ));
        }
        for (key, secs) in [
            ("retry_timeout_secs", self.retry_timeout_secs),
            ("request_timeout_secs", self.request_timeout_secs),
            ("connect_timeout_secs", self.connect_timeout_secs),
        ] {
            if !(1..=MAX_TIMEOUT_SECS).contains(&secs) {
                problems.push(format!(
                    "storage.{key} must be between 1 and {MAX_TIMEOUT_SECS} (got {secs})"
                ));
            }
        }
        let url = || match &self.url {
            Some(url) => url.to_string(),
            None => "unset (the local filesystem)".into(),
        };
        if let Some(s3) = &self.s3 {
            if !matches!(self.url, Some(StorageUrl::S3 { .. })) {
                problems.push(format!(
                    "[storage.s3] is set but storage.url is {}: it applies to s3:// urls only; remove it or point storage.url at a bucket",
                    url()
                ));
            }
            if let Some(endpoint) = &s3.endpoint {
                check_endpoint("storage.s3.endpoint", endpoint, problems);
            }
            if let Some(region) = &s3.region {
                if region.is_empty() || !region.bytes().all(|b| b.is_ascii_graphic()) {
                    problems.push(format!(
                        "storage.s3.region {region:?} must be a region name such as eu-central-1"
                    ));
                }
            }
        }
        if let Some(azure) = &self.azure {
            if !matches!(self.url, Some(StorageUrl::Azure { .. })) {
                problems.push(format!(
                    "[storage.azure] is set but storage.url is {}: it applies to az:// urls only; remove it or point storage.url at a container",
                    url()
                ));
            }
            if let Some(endpoint) = &azure.endpoint {
                check_endpoint("storage.azure.endpoint", endpoint, problems);
                if azure.use_emulator == Some(true) {
                    problems.push(
                        "storage.azure.endpoint is set with storage.azure.use_emulator = true: the emulator's address is AZURITE_BLOB_STORAGE_URL (default http://127.0.0.1:10000); drop one of them"
                            .into(),
                    );
                }
            }
            if let Some(account) = &azure.account {
                let valid = (3..=24).contains(&account.len())
                    && account
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
                if !valid {
                    problems.push(format!(
                        "storage.azure.account {account:?} must be 3 to 24 lowercase letters and digits"
                    ));
                }
            }
        }
    }
}

/// An endpoint is an absolute `http` or `https` URL with a host and nothing after the
/// path (a query would be sent, unsigned, with every request).
fn check_endpoint(key: &str, endpoint: &str, problems: &mut Vec<String>) {
    let ok = endpoint.parse::<http::Uri>().is_ok_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.host().is_some_and(|h| !h.is_empty())
            && uri.query().is_none()
            && !endpoint.contains('#')
    });
    if !ok {
        problems.push(format!(
            "{key} {endpoint:?} must be an http:// or https:// URL with a host, e.g. https://s3.example.net:9000"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, ConfigError, Overrides};
    use super::*;

    fn problems(toml: &str) -> Vec<String> {
        let c = Config::from_toml(toml).expect("parse");
        match c.validate() {
            Ok(()) => Vec::new(),
            Err(ConfigError::Invalid(p)) => p,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn defaults_are_object_stores_and_five_mib_parts_two_in_flight() {
        let c = Config::load(&Overrides::default(), &|_| None).expect("defaults load");
        assert_eq!(c.storage.part_size_mib, 5);
        assert_eq!(c.storage.parts_in_flight, 2);
        let o = c.storage.open_options();
        assert_eq!(o.part_size, 5 * 1024 * 1024);
        // object_store's own defaults, so an unconfigured client behaves as before.
        assert_eq!(o.retry, RetryOptions::default());
        assert_eq!(o.retry.max_retries, 10);
        assert_eq!(o.retry.retry_timeout, Duration::from_secs(180));
        assert_eq!(o.retry.request_timeout, Duration::from_secs(30));
        assert_eq!(o.retry.connect_timeout, Duration::from_secs(5));
        // Nothing set: the environment decides.
        assert_eq!(o.s3, S3Options::default());
        assert_eq!(o.azure, AzureOptions::default());
    }

    #[test]
    fn s3_settings_parse_and_reach_the_open_options() {
        let toml = "[storage]\nurl = \"s3://registry/valv\"\npart_size_mib = 16\nparts_in_flight = 4\n\
                    retries = 3\nretry_timeout_secs = 60\nrequest_timeout_secs = 120\nconnect_timeout_secs = 2\n\
                    [storage.s3]\nendpoint = \"http://127.0.0.1:9000\"\nregion = \"eu-central-1\"\n\
                    path_style = false\nallow_http = true\n";
        assert_eq!(problems(toml), Vec::<String>::new());
        let c = Config::from_toml(toml).expect("parse");
        let o = c.storage.open_options();
        assert_eq!(o.part_size, 16 * 1024 * 1024);
        assert_eq!(c.storage.parts_in_flight, 4);
        assert_eq!(
            o.retry,
            RetryOptions {
                max_retries: 3,
                retry_timeout: Duration::from_secs(60),
                request_timeout: Duration::from_secs(120),
                connect_timeout: Duration::from_secs(2),
            }
        );
        assert_eq!(
            o.s3,
            S3Options {
                endpoint: Some("http://127.0.0.1:9000".into()),
                region: Some("eu-central-1".into()),
                path_style: Some(false),
                allow_http: Some(true),
            }
        );
    }

    #[test]
    fn azure_settings_parse_and_reach_the_open_options() {
        let toml = "[storage]\nurl = \"az://registry/valv\"\n\
                    [storage.azure]\naccount = \"devstoreaccount1\"\n\
                    endpoint = \"http://127.0.0.1:10000/devstoreaccount1\"\nallow_http = true\n";
        assert_eq!(problems(toml), Vec::<String>::new());
        let o = Config::from_toml(toml)
            .expect("parse")
            .storage
            .open_options();
        assert_eq!(
            o.azure,
            AzureOptions {
                account: Some("devstoreaccount1".into()),
                endpoint: Some("http://127.0.0.1:10000/devstoreaccount1".into()),
                use_emulator: None,
                allow_http: Some(true),
            }
        );
        let emulator = "[storage]\nurl = \"az://registry\"\n[storage.azure]\nuse_emulator = true\n";
        assert_eq!(problems(emulator), Vec::<String>::new());
    }

    #[test]
    fn unknown_keys_in_the_new_tables_are_refused_by_name() {
        for (toml, key) in [
            ("[storage.s3]\nendpont = \"x\"\n", "endpont"),
            ("[storage.s3]\naccess_key_id = \"x\"\n", "access_key_id"),
            ("[storage.azure]\naccount_key = \"x\"\n", "account_key"),
            ("[storage]\npart_size = 8\n", "part_size"),
        ] {
            let e = Config::from_toml(toml).unwrap_err();
            assert!(e.contains(key), "{key}: {e}");
        }
        let e = Config::from_toml("[storage.s3]\npath_style = \"yes\"\n").unwrap_err();
        assert!(e.contains("path_style"), "{e}");
    }

    #[test]
    fn bad_values_are_problems_naming_the_key() {
        let s3 = "[storage]\nurl = \"s3://registry\"\n";
        for (extra, key) in [
            ("part_size_mib = 3\n", "storage.part_size_mib"),
            ("part_size_mib = 513\n", "storage.part_size_mib"),
            ("write_buffer_mib = 0\n", "storage.write_buffer_mib"),
            ("parts_in_flight = 0\n", "storage.parts_in_flight"),
            ("parts_in_flight = 17\n", "storage.parts_in_flight"),
            ("retries = 101\n", "storage.retries"),
            ("retry_timeout_secs = 0\n", "storage.retry_timeout_secs"),
            ("request_timeout_secs = 0\n", "storage.request_timeout_secs"),
            (
                "connect_timeout_secs = 3601\n",
                "storage.connect_timeout_secs",
            ),
            (
                "[storage.s3]\nendpoint = \"not a url\"\n",
                "storage.s3.endpoint",
            ),
            (
                "[storage.s3]\nendpoint = \"ftp://host\"\n",
                "storage.s3.endpoint",
            ),
            (
                "[storage.s3]\nendpoint = \"127.0.0.1:9000\"\n",
                "storage.s3.endpoint",
            ),
            (
                "[storage.s3]\nendpoint = \"https://h/?x=1\"\n",
                "storage.s3.endpoint",
            ),
            ("[storage.s3]\nregion = \"\"\n", "storage.s3.region"),
            ("[storage.s3]\nregion = \"eu west\"\n", "storage.s3.region"),
        ] {
            let found = problems(&format!("{s3}{extra}"));
            assert_eq!(found.len(), 1, "{extra}: {found:?}");
            assert!(found[0].contains(key), "{extra}: {found:?}");
        }
        let az = "[storage]\nurl = \"az://registry\"\n[storage.azure]\n";
        for (extra, key) in [
            ("account = \"Has_Upper\"\n", "storage.azure.account"),
            ("account = \"ab\"\n", "storage.azure.account"),
            ("endpoint = \"nope\"\n", "storage.azure.endpoint"),
            (
                "endpoint = \"http://127.0.0.1:10000\"\nuse_emulator = true\n",
                "use_emulator",
            ),
        ] {
            let found = problems(&format!("{az}{extra}"));
            assert_eq!(found.len(), 1, "{extra}: {found:?}");
            assert!(found[0].contains(key), "{extra}: {found:?}");
        }
        // Every problem at once.
        let found = problems(
            "[storage]\nurl = \"s3://registry\"\npart_size_mib = 3\nparts_in_flight = 0\n\
             [storage.s3]\nendpoint = \"x\"\n",
        );
        assert_eq!(found.len(), 3, "{found:?}");
    }

    #[test]
    fn a_table_for_another_backend_is_a_problem_naming_both() {
        let found = problems("[storage]\nurl = \"az://registry/valv\"\n[storage.s3]\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("[storage.s3]") && found[0].contains("az://registry/valv"),
            "{found:?}"
        );
        let found = problems("[storage.azure]\naccount = \"acct\"\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("[storage.azure]") && found[0].contains("local filesystem"),
            "{found:?}"
        );
        // The url from a later layer counts: the flag points the file's table elsewhere.
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("valv.toml");
        std::fs::write(
            &file,
            "[storage]\nurl = \"s3://registry\"\n[storage.s3]\nregion = \"eu-central-1\"\n",
        )
        .expect("write");
        let flags = Overrides {
            config: Some(file.clone()),
            ..Overrides::default()
        };
        assert!(Config::load(&flags, &|_| None).is_ok());
        let flags = Overrides {
            config: Some(file),
            storage: Some("memory://".into()),
            ..Overrides::default()
        };
        let e = Config::load(&flags, &|_| None).unwrap_err().to_string();
        assert!(e.contains("[storage.s3]") && e.contains("memory://"), "{e}");
        // The [storage] settings themselves are accepted with any backend (file and
        // memory keep their own part size; parts in flight applies to all).
        assert_eq!(
            problems("[storage]\npart_size_mib = 64\nparts_in_flight = 8\n"),
            Vec::<String>::new()
        );
    }
}
