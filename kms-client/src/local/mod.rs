//! Local RSA key-encryption keys on disk, for development and the embedded default
//! (DESIGN §9). Anyone who can read these files can unwrap every registry key, so a
//! local KEK gives none of the separation a vault or HSM gives; it exists so that
//! `valv serve` works with no vault at all, and so that key lifecycle (disable,
//! expire, delete, rotate) can be tested without one.
//!
//! # On-disk layout
//!
//! A key id `file:///<dir>/<name>[/<version>]` maps to the directory `<dir>/<name>/`
//! (created with mode 0700), which holds one pair of files per version:
//!
//! ```text
//! <dir>/<name>/<version>.pem    private key, PKCS#8 PEM ("BEGIN PRIVATE KEY"), mode 0600
//! <dir>/<name>/<version>.json   metadata, see below
//! ```
//!
//! `<version>` is 32 random lowercase hex characters, like a Key Vault version. The
//! metadata file is:
//!
//! ```json
//! {"enabled": true, "created": "2025-01-31T12:00:00.123456789Z", "expires": null,
//!  "not_before": null, "key_type": "RSA", "key_size": 2048}
//! ```
//!
//! `created`, `expires` and `not_before` are RFC 3339; `expires` and `not_before` may
//! be `null`. Unknown fields are an error, so a typo such as `"enable": false` is
//! reported instead of silently leaving the version enabled. `key_type` must be `RSA`
//! and `key_size` must match the key's modulus.
//!
//! A version exists once both of its files exist. Writers create the private key
//! first and the metadata last, so a crash in between leaves an invisible,
//! harmless `.pem`. Metadata is always replaced atomically (temporary file in the
//! same directory, then rename), so a reader never sees a half-written file; files
//! whose names are not `<version>.json` / `<version>.pem` are ignored.
//!
//! An operator may hand-place a key made elsewhere: PKCS#8 (`openssl genpkey
//! -algorithm RSA`) or PKCS#1 (`BEGIN RSA PRIVATE KEY`) PEM of 2048, 3072 or 4096
//! bits, next to a metadata file written by hand. Encrypted PEM is not supported.
//!
//! # Reading
//!
//! [`LocalKek`] reads both files on every call, so disabling, expiring or deleting a
//! version on disk takes effect on the very next operation; that is what revocation
//! tests rely on. File I/O and RSA private-key operations run on tokio's blocking
//! pool because they take milliseconds.
//!
//! # Operator functions
//!
//! [`create_key`], [`add_version`], [`set_enabled`], [`set_expiry`],
//! [`set_not_before`], [`describe_versions`] and [`ensure_dev_key`] back the key
//! subcommands (`valv kek …`) and `valv serve`'s embedded default. They are
//! synchronous and may take seconds (RSA key generation); async callers run them
//! with `tokio::task::spawn_blocking`.
//!
//! # Errors
//!
//! - a missing key directory, version, or private key file, or a file we may not
//!   read: `Revoked` (the local equivalents of Key Vault's 404 and 403);
//! - malformed metadata or PEM, an EC key, an RSA key of another size, a non-`file://`
//!   id: `Misconfigured`, naming the file and what is wrong with it;
//! - any other I/O error (e.g. EMFILE, EIO): `Transient`.
//!
//! # Layout
//!
//! - `provider`: [`LocalKek`], the [`crate::Kek`] operations.
//! - `files`: the on-disk layout above ([`key_dir`], [`version_files`]), the
//!   metadata format, reading and checking private keys, durable atomic writes.
//! - `ops`: the operator functions.

mod files;
mod ops;
mod provider;

pub use files::{key_dir, version_files, VersionFiles};
pub use ops::{
    add_version, create_key, describe_versions, ensure_dev_key, set_enabled, set_expiry,
    set_not_before,
};
pub use provider::LocalKek;

/// RSA modulus sizes valv accepts, the sizes Key Vault offers.
pub const SUPPORTED_KEY_SIZES: [u32; 3] = [2048, 3072, 4096];

/// Size of the key [`ensure_dev_key`] creates: NIST's 128-bit-security size, and
/// still quick to generate at first start.
pub const DEV_KEY_BITS: u32 = 3072;

const KEY_TYPE_RSA: &str = "RSA";
