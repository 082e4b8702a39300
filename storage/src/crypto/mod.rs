//! The on-disk format (DESIGN §4, normative text in docs/FORMAT.md).
//!
//! - [`keys`]: 256-bit secrets in zeroizing types, HKDF derivations, key wrapping.
//! - [`segment`]: AES-256-GCM segments, the streaming sealer and the streaming opener.
//! - [`plan`]: plaintext ranges to sealed offsets and data parts (all tag arithmetic).
//! - [`envelope`]: the per-blob envelope and the AAD that binds it.
//! - [`hash`]: SHA-256/512 whose state can be saved and resumed across requests.
//! - [`seal`]: HMACs that bind repository links to their object paths.
//!
//! All authentication failures collapse into the one [`IntegrityError`].

pub mod envelope;
pub mod hash;
pub mod keys;
pub mod plan;
pub mod seal;
pub mod segment;

/// Authentication failed. Deliberately without detail (STYLE habit 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("integrity check failed")]
pub struct IntegrityError;

/// Plaintext bytes per segment for new blobs (the size is recorded per blob).
pub const SEGMENT_SIZE: u32 = 64 * 1024;
/// AES-GCM tag length appended to every sealed segment.
pub const TAG_LEN: usize = 16;
/// Largest segment size an envelope may record. Bounds the memory one segment costs a
/// reader, whatever a (possibly tampered) envelope says.
pub const MAX_SEGMENT_SIZE: u32 = 16 * 1024 * 1024;
/// Length of the random per-blob nonce prefix (the rest of the 12-byte nonce is the
/// segment index and the last-flag).
pub const NONCE_PREFIX_LEN: usize = 7;
