//! The generic provider test suite (to be implemented).
