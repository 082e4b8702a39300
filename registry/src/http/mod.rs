//! The HTTP layer: everything between a TCP connection and one store call.
//!
//! A request goes [`server`] (accept loop, connection limit, graceful shutdown) →
//! [`access`] (request id, one log line per request) → [`routes`] (method + path → typed [`routes::Route`]) → [`gate`]
//! (authentication, when it exists, then the key gate) → [`handlers`] (thin: parse,
//! call one store operation, build the response) → [`reply`] / [`errors`] (the
//! response builder; the OCI error codes, their JSON envelope, and the exhaustive
//! `StoreError` → code mapping).
//!
//! Edge parsers, each unit-tested on its own: [`routes`], [`query`] (percent-decoded
//! query strings), [`range`] (`Range` and upload `Content-Range`), [`manifest`]
//! (manifest schemas by media type and the references they carry); [`body`] streams
//! request and response bodies (blob bodies are never buffered). [`metrics`] records
//! each request for `/metrics` and serves it (also on its own listener); [`sessions`]
//! counts open upload sessions against their per-client and per-repository limits.

pub mod access;
pub mod admission;
pub mod body;
pub mod conn;
pub mod errors;
pub mod gate;
pub mod handlers;
pub mod manifest;
pub mod metrics;
pub mod query;
pub mod range;
pub mod reply;
pub mod routes;
pub mod server;
pub mod sessions;
