//! The `valv` registry: an OCI distribution-spec v1.1 HTTP server over the encrypted
//! content store.
//!
//! # Layout
//! The HTTP layer sits on top of `storage::Store` (STYLE habit 1) and never reaches past
//! it; the key lifecycle sits between them and knows nothing of HTTP.
//! - start-up: [`cli`] (clap arguments) → [`config`] (typed settings: file → env →
//!   flags, validated) → [`app`] (one [`app::App`]: the opened store, the key status
//!   and the settings; no globals) and [`logging`] (the log subscriber, text or JSON).
//! - [`http`]: serving. [`http::server`] (accept loop, connection limit, graceful
//!   shutdown, access log) → [`http::routes`] (method + path → typed route) →
//!   [`http::gate`] (authentication and authorization through [`auth`], then the key gate) →
//!   [`http::handlers`] (thin: parse, call one store operation, build the response; the
//!   admin API is [`http::handlers::admin`]) → [`http::reply`] and [`http::errors`]
//!   (the response builder; the OCI error codes, envelope and `StoreError` mapping).
//!   Edge parsers beside them: [`http::query`], [`http::range`], [`http::manifest`],
//!   and [`http::body`] (streamed request and response bodies).
//! - [`auth`]: access control: authentication (htpasswd Basic, bearer tokens, client
//!   certificates), authorization (the policy), the built-in token issuer, failure
//!   rate limits. No HTTP types beyond header bytes; `http::gate` calls it.
//! - [`tls`]: the listener's TLS: the rustls configuration built from PEM files
//!   ([`tls::load`]), the handshake that fills a connection's client-certificate subject
//!   ([`tls::accept`]), and reloading on SIGHUP or file change ([`tls::reload`]). The
//!   accept loop in [`http::server`] calls it; nothing else does.
//! - [`keys`]: the key lifecycle. [`keys::state`] (the key state every request reads,
//!   the watch settings) and [`keys::watcher`] (probe, revoke, recover, rotate).
//! - [`metrics`]: what `/metrics` reports: the registry of counters and histograms the
//!   HTTP edge records into ([`http::metrics`]), the metered KEK ([`metrics::kms`]), and
//!   the store's and the key state's values read at each scrape.
//! - [`telemetry`]: traces: the request's SERVER span and the object-store and vault
//!   CLIENT spans exported by OTLP when a collector is configured (`otlp` feature).
//! - [`commands`]: the one-shot subcommands: [`commands::kek`] (`valv kek …` for
//!   local `file://` keys), [`commands::admin_client`] (`valv encryption …`) and
//!   [`commands::healthcheck`] (`valv healthcheck`, the container's health probe).
//!
//! Dependencies point one way: `http` → `keys` → `storage`, and `app` → `keys`,
//! `config`; nothing below `http` imports it.

pub mod app;
pub mod auth;
pub mod cli;
pub mod commands;
pub mod config;
pub mod http;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod telemetry;
pub mod tls;

/// The header every response carries, so Docker clients recognise a v2 registry.
pub const API_VERSION_HEADER: &str = "docker-distribution-api-version";
pub const API_VERSION: &str = "registry/2.0";
