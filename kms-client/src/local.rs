//! Local RSA keys on disk (to be implemented).
