//! The `valv` registry: an OCI distribution-spec v1.1 HTTP server over the encrypted
//! content store.
//!
//! # Layout
//! The HTTP layer sits on top of `storage::Store` (STYLE habit 1) and never reaches past it.
//! - start-up: [`cli`] (clap arguments) → [`config`] (typed settings: file → env → flags,
//!   validated) → [`app`] (one [`app::App`]: the opened store plus settings; no globals).
//! - serving: [`server`] (accept loop, connection limit, graceful shutdown, one log line
//!   per request) → [`routes`] (method + path → typed [`routes::Route`]) →
//!   [`handlers`] (thin: parse, call one store operation, build the response).
//! - edge parsers, each unit-tested on its own: [`routes`], [`query`] (percent-decoded query
//!   strings), [`range`] (`Range` and upload `Content-Range`), [`manifest`] (manifest
//!   schemas by media type and the references they carry).
//! - key lifecycle: [`watcher`] (probe, revoke, recover, rotate; the gate every content
//!   request passes), [`kek`] (`valv kek …` for local `file://` keys), [`admin`] (the
//!   bearer-token admin API: encryption show / rotate-key) and [`admin_client`] (the
//!   `valv encryption …` commands' minimal HTTP/1.1 client).
//! - responses: [`errors`] (the OCI error-code table as data, the JSON envelope, and the
//!   exhaustive `StoreError` → code mapping), [`body`] (streaming request and response
//!   bodies; blob bodies are never buffered).

pub mod admin;
pub mod admin_client;
pub mod app;
pub mod body;
pub mod cli;
pub mod config;
pub mod errors;
pub mod handlers;
pub mod kek;
pub mod manifest;
pub mod query;
pub mod range;
pub mod routes;
pub mod server;
pub mod watcher;

/// The header every response carries, so Docker clients recognise a v2 registry.
pub const API_VERSION_HEADER: &str = "docker-distribution-api-version";
pub const API_VERSION: &str = "registry/2.0";
