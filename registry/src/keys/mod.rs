//! The key lifecycle (DESIGN §7), below the HTTP layer and above the store.
//!
//! - [`state`]: [`KeyState`] / [`KeyStatus`] (where the registry's keys stand, read by
//!   every request) and [`WatchSettings`].
//! - [`watcher`]: the loop that probes the KEK, drops or reloads the registry keys and
//!   rotates; it sees only a [`watcher::KeyringStore`], the status, its settings and the
//!   `Kek`, so its state machine is tested without an HTTP server.
//!
//! What a refused key means for a request (403 `DENIED`, 503) is decided by the HTTP
//! layer's gate, `crate::http::gate`.

pub mod state;
pub mod watcher;

pub use state::{KeyState, KeyStatus, WatchSettings};
pub use watcher::{KeyringStore, Watcher};

#[cfg(test)]
mod watcher_tests;
