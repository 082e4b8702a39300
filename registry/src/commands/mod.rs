//! The subcommands other than `serve`: each runs once and prints its result.
//!
//! - [`kek`]: `valv kek …`, the local `file://` key provider's lifecycle.
//! - [`admin_client`]: `valv encryption …`, one admin API call to a running valv.
//! - [`healthcheck`]: `valv healthcheck`, one `GET /readyz` (the image's HEALTHCHECK).

pub mod admin_client;
pub mod healthcheck;
pub mod kek;

/// An error and its causes, `a: b: c` (reqwest's own message omits the cause, e.g.
/// "connection refused"): what the client commands print.
pub(crate) fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}
