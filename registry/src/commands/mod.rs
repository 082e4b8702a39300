//! The subcommands other than `serve`: each runs once and prints its result.
//!
//! - [`kek`]: `valv kek …`, the local `file://` key provider's lifecycle.
//! - [`admin_client`]: `valv encryption …`, one admin API call to a running valv.
//! - [`healthcheck`]: `valv healthcheck`, one `GET /readyz` (the image's HEALTHCHECK).

pub mod admin_client;
pub mod healthcheck;
pub mod kek;
