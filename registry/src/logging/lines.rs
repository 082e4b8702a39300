//! How a log line is written, in text or JSON: valv's own event formatter for
//! tracing-subscriber's fmt layer.
//!
//! It writes what the fmt layer's `Full` and `Json` formats wrote before (the same
//! shapes, which OPERATIONS.md documents), with one difference in where the request's
//! id comes from: the request being served is not a span but a task-local value
//! ([`access::current_id`]), printed as the context `request{request_id=…}` (text) or
//! `"span":{"request_id":…,"name":"request"}` (JSON) of every line written while it is
//! served. A span would be created, have its id formatted into a string and be closed
//! on every request, line or no line; the task-local costs a swap per poll, and the id
//! is formatted only into a line that is written.
//!
//! Real spans (a `RUST_LOG` naming `[request]` makes the request one, `trace` shows the
//! trace's own) print as the fmt layer printed them: text names each from the root with
//! its fields, JSON the innermost under `span`.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime as _, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::config::LogFormat;
use crate::http::access;

/// The layer that writes log lines to stderr in `format`.
pub fn layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        // Colour only for a terminal: journald and log files get plain text.
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .event_format(Shape::Text)
            .boxed(),
        // Spans' fields kept as JSON, to be spliced into `span`.
        LogFormat::Json => fmt
            .with_ansi(false)
            .fmt_fields(JsonFields::new())
            .event_format(Shape::Json)
            .boxed(),
    }
}

/// The span name the request's context is printed under.
const REQUEST: &str = "request";

/// The shape of a line: the formatter the fmt layer is given.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    Text,
    Json,
}

impl<S, N> FormatEvent<S, N> for Shape
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        match self {
            Shape::Text => text(ctx, w, event),
            Shape::Json => json(ctx, w, event),
        }
    }
}

/// `2026-12-02T18:48:15.525547Z  INFO request{request_id=…}: valv::access: request …`
fn text<S, N>(ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let meta = event.metadata();
    let ansi = w.has_ansi_escapes();
    if ansi {
        w.write_str(DIM)?;
    }
    SystemTime.format_time(&mut w)?;
    if ansi {
        write!(
            w,
            "{RESET} {}{}{RESET} ",
            level_colour(meta.level()),
            level(meta.level())
        )?;
    } else {
        write!(w, " {} ", level(meta.level()))?;
    }
    let in_request_span = ctx
        .event_scope()
        .is_some_and(|mut scope| scope.any(|span| span.name() == REQUEST));
    let mut context = false;
    if !in_request_span {
        context = access::current_id(|id| {
            write!(
                w,
                "{}{REQUEST}{{request_id={id}}}:",
                if ansi { BOLD } else { "" }
            )?;
            if ansi {
                w.write_str(RESET)?;
            }
            Ok::<_, fmt::Error>(())
        })
        .transpose()?
        .is_some();
    }
    if let Some(scope) = ctx.event_scope() {
        for span in scope.from_root() {
            context = true;
            if ansi {
                w.write_str(BOLD)?;
            }
            w.write_str(span.name())?;
            let ext = span.extensions();
            if let Some(fields) = ext.get::<FormattedFields<N>>() {
                if !fields.is_empty() {
                    write!(w, "{{{fields}}}")?;
                }
            }
            w.write_char(':')?;
            if ansi {
                w.write_str(RESET)?;
            }
        }
    }
    if context {
        w.write_char(' ')?;
    }
    if ansi {
        write!(w, "{DIM}{}:{RESET} ", meta.target())?;
    } else {
        write!(w, "{}: ", meta.target())?;
    }
    ctx.format_fields(w.by_ref(), event)?;
    writeln!(w)
}

/// `{"timestamp":…,"level":…,<the event's fields>,"target":…,"span":{…,"name":…}}`:
/// one object per line, the event's fields (`message` among them) beside the rest.
fn json<S, N>(ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let meta = event.metadata();
    w.write_str("{\"timestamp\":\"")?;
    SystemTime.format_time(&mut w)?;
    write!(w, "\",\"level\":\"{}\"", meta.level())?;
    let mut fields = JsonVisitor {
        w: &mut w,
        result: Ok(()),
    };
    event.record(&mut fields);
    fields.result?;
    w.write_str(",\"target\":")?;
    json_str(&mut w, meta.target())?;
    // The innermost span, as the fmt layer's `with_current_span` showed it, else the
    // request being served.
    if let Some(span) = ctx.event_scope().and_then(|mut scope| scope.next()) {
        w.write_str(",\"span\":{")?;
        let ext = span.extensions();
        if let Some(fields) = ext.get::<FormattedFields<N>>() {
            // A JSON object of the span's fields: its members, without the braces.
            let members = fields.trim().trim_start_matches('{').trim_end_matches('}');
            if !members.is_empty() {
                write!(w, "{members},")?;
            }
        }
        w.write_str("\"name\":")?;
        json_str(&mut w, span.name())?;
        w.write_char('}')?;
    } else {
        access::current_id(|id| {
            w.write_str(",\"span\":{\"request_id\":")?;
            json_str(&mut w, id)?;
            write!(w, ",\"name\":\"{REQUEST}\"}}")
        })
        .transpose()?;
    }
    w.write_str("}\n")
}

/// Writes each field as `,"name":value`.
struct JsonVisitor<'a, 'w> {
    w: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl JsonVisitor<'_, '_> {
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        // `log.` fields are the log crate's bridge metadata, not the event's.
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        self.result = (|| {
            self.w.write_char(',')?;
            json_str(self.w, field.name())?;
            self.w.write_char(':')?;
            value(self.w)
        })();
    }
}

impl Visit for JsonVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |w| json_str(w, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // serde_json's number keeps a float a float (`1.0`, not `1`); NaN and the
        // infinities, which JSON cannot hold, are null.
        self.member(field, |w| match serde_json::Number::from_f64(value) {
            Some(n) => write!(w, "{n}"),
            None => w.write_str("null"),
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.member(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value}")?;
            w.write_char('"')
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// `s` as a JSON string, quoted and escaped.
fn json_str(w: &mut Writer<'_>, s: &str) -> fmt::Result {
    w.write_char('"')?;
    Escaped(w).write_str(s)?;
    w.write_char('"')
}

/// Writes what it is given escaped for the inside of a JSON string.
struct Escaped<'a, 'w>(&'a mut Writer<'w>);

impl fmt::Write for Escaped<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&s[plain..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = i + 1;
        }
        self.0.write_str(&s[plain..])
    }
}

const DIM: &str = "\x1b[2m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// The level, right-aligned in five columns as the fmt layer writes it.
fn level(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => " INFO",
        Level::WARN => " WARN",
        Level::ERROR => "ERROR",
    }
}

fn level_colour(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "\x1b[35m",
        Level::DEBUG => "\x1b[34m",
        Level::INFO => "\x1b[32m",
        Level::WARN => "\x1b[33m",
        Level::ERROR => "\x1b[31m",
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// What the lines layer writes in `format` while `f` runs, with no terminal.
    fn captured(format: LogFormat, f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.lock().expect("sink").extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let fmt = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || writer.clone());
        let layer: Box<dyn Layer<_> + Send + Sync> = match format {
            LogFormat::Text => fmt.event_format(Shape::Text).boxed(),
            LogFormat::Json => fmt
                .fmt_fields(JsonFields::new())
                .event_format(Shape::Json)
                .boxed(),
        };
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, f);
        let bytes = sink.0.lock().expect("sink").clone();
        String::from_utf8(bytes).expect("utf-8 lines")
    }

    fn event() {
        tracing::info!(
            target: "valv::test",
            text = "a \"quoted\"\nline\u{1}",
            n = 7_u64,
            neg = -3_i64,
            whole = 2.0_f64,
            ratio = 0.25_f64,
            yes = true,
            dbg = ?Some(1),
            "hello {}",
            "world"
        );
    }

    #[test]
    fn text_lines_have_the_fmt_layers_shape() {
        let out = captured(LogFormat::Text, event);
        let line = out.strip_suffix('\n').expect("one line");
        let (ts, rest) = line.split_once(' ').expect("timestamp");
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
        assert_eq!(
            rest,
            " INFO valv::test: hello world text=\"a \\\"quoted\\\"\\nline\\u{1}\" n=7 neg=-3 \
             whole=2.0 ratio=0.25 yes=true dbg=Some(1)"
        );
    }

    #[test]
    fn text_lines_name_spans_from_the_root() {
        let out = captured(LogFormat::Text, || {
            let outer = tracing::info_span!("outer", a = 1);
            let inner = tracing::info_span!(parent: &outer, "inner");
            inner.in_scope(|| tracing::warn!(target: "valv::test", "inside"));
        });
        assert!(
            out.contains(" WARN outer{a=1}:inner: valv::test: inside\n"),
            "{out}"
        );
    }

    #[test]
    fn json_lines_parse_with_every_field_typed() {
        let out = captured(LogFormat::Json, event);
        let v: serde_json::Value = serde_json::from_str(out.trim_end()).expect("JSON");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "valv::test");
        assert_eq!(v["message"], "hello world");
        assert_eq!(v["text"], "a \"quoted\"\nline\u{1}");
        assert_eq!((v["n"].as_u64(), v["neg"].as_i64()), (Some(7), Some(-3)));
        assert!(v["whole"].is_f64() && v["ratio"] == 0.25, "{v}");
        assert_eq!(
            (v["yes"].as_bool(), v["dbg"].as_str()),
            (Some(true), Some("Some(1)"))
        );
        assert!(v.get("span").is_none(), "outside any request or span: {v}");
        let ts = v["timestamp"].as_str().expect("timestamp");
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
    }

    #[test]
    fn json_lines_show_the_innermost_span_with_its_fields() {
        let out = captured(LogFormat::Json, || {
            let outer = tracing::info_span!("outer", a = 1);
            let inner = tracing::info_span!(parent: &outer, "inner", b = "x\"y");
            inner.in_scope(|| tracing::warn!(target: "valv::test", "inside"));
            let empty = tracing::info_span!("empty");
            empty.in_scope(|| tracing::warn!(target: "valv::test", "in empty"));
        });
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON"))
            .collect();
        assert_eq!(
            lines[0]["span"],
            serde_json::json!({"b": "x\"y", "name": "inner"})
        );
        assert_eq!(lines[1]["span"], serde_json::json!({"name": "empty"}));
    }

    #[test]
    fn lines_inside_a_request_name_its_id() {
        for (format, expected) in [
            (
                LogFormat::Text,
                " WARN request{request_id=req-1}: valv::test: inside\n",
            ),
            (
                LogFormat::Json,
                r#""span":{"request_id":"req-1","name":"request"}}"#,
            ),
        ] {
            let id = access::RequestId::from_client(&http::HeaderValue::from_static("req-1"))
                .expect("sane id");
            // The task-local is set only while the request's future is polled.
            let out = captured(format, || {
                block_on(access::serving(id, async {
                    tracing::warn!(target: "valv::test", "inside");
                }));
                tracing::warn!(target: "valv::test", "outside");
            });
            let mut lines = out.lines();
            let inside = lines.next().expect("inside");
            assert!(format!("{inside}\n").contains(expected), "{inside}");
            let outside = lines.next().expect("outside");
            assert!(!outside.contains("request"), "{outside}");
        }
    }

    /// Polls `f` to completion on this thread (it never waits on anything).
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        loop {
            if let std::task::Poll::Ready(out) = f.as_mut().poll(&mut cx) {
                return out;
            }
        }
    }
}
