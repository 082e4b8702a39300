//! The log subscriber: `RUST_LOG` picks the lines (default `info`), `log.format` their
//! shape, and they go to stderr (stdout carries only the "listening on" line that
//! scripts and the test harness wait for).
//!
//! `json` writes one object per line: `timestamp` (RFC 3339, UTC), `level`, `target`,
//! `message`, the event's fields beside them, and `span` (the request span's
//! `request_id`) for every event logged while a request is handled
//! ([`crate::http::access`]).

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Called once, before anything logs.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Colour only for a terminal: journald and log files get plain text.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // Fields beside the message rather than under "fields", and the innermost
        // span only (the request span; nothing nests deeper today).
        LogFormat::Json => builder
            .json()
            .with_ansi(false)
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}
