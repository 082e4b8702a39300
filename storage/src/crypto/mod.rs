//! The on-disk format (DESIGN §4, normative text in docs/FORMAT.md).
//!
//! - [`keys`]: 256-bit secrets in zeroizing types, HKDF derivations, key wrapping.
//! - [`segment`]: AES-256-GCM segments, the streaming sealer and the streaming opener.
//! - [`envelope`]: the per-blob envelope and the AAD that binds it.
//! - [`hash`]: SHA-256/512 whose state can be saved and resumed across requests.
//!
//! All authentication failures collapse into the one [`IntegrityError`].

pub mod envelope;
pub mod hash;
pub mod keys;
pub mod segment;

/// Authentication failed. Deliberately without detail (STYLE habit 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("integrity check failed")]
pub struct IntegrityError;

/// Plaintext bytes per segment for new blobs (the size is recorded per blob).
pub const SEGMENT_SIZE: u32 = 64 * 1024;
/// AES-GCM tag length appended to every sealed segment.
pub const TAG_LEN: usize = 16;
