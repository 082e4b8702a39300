//! The keyring (DESIGN §3).
