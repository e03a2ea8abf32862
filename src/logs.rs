//! Log correlation: every `tracing` event emitted while a request is handled
//! carries the request's `trace_id`, `span_id` and `trace_flags`.
//!
//! ```
//! use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt};
//!
//! // JSON lines carrying `trace_id`, `span_id` and `trace_flags` of the request they belong to
//! tracing_subscriber::registry().with(tower_otel_http::logs::json_layer()).init();
//! ```
//!
//! # How
//!
//! The server layer opens a `tracing` span per request ([`REQUEST_SPAN_NAME`], target
//! [`TARGET`]) holding `trace_id`, `span_id` and `trace_flags` (lowercase hex, as the
//! OpenTelemetry log/trace-context compatibility rules ask), `http.request.method` and, once
//! known, `http.route`. The span is entered while the inner service and the response body are
//! polled, so it is the parent of every event of the request, and work spawned with
//! `.instrument(tracing::Span::current())` keeps it. When no subscriber is interested in the
//! span (its level is filtered out), nothing is recorded and it costs a level check.
//!
//! The client layer opens no log span of its own: events logged during a client call (yours,
//! reqwest's, hyper's) carry the ids of the span current where the call is made — inside a
//! handler, the server request's. The client span is the OpenTelemetry context current while
//! the call is polled, and its `SpanContext` is in the response's extensions.
//!
//! Any `tracing-subscriber` formatter then shows the ids as span fields; [`JsonFormat`] and
//! [`TextFormat`] write them as **top-level fields of each line**, which is what Loki, Grafana
//! and the OpenTelemetry Collector's parsers look for. [`json_layer`] and [`text_layer`] are
//! `fmt` layers with them and without the span-field formatting they would not show
//! ([`NoSpanFields`]: most of what a `fmt` subscriber costs per request):
//!
//! ```
//! use tracing_subscriber::{filter::Targets, layer::SubscriberExt, Layer};
//!
//! // your own level for your own crate; hyper, h2, reqwest and the SDK log a lot below WARN
//! let filter: Targets = "my_app=info,tower_otel_http=info,warn".parse().unwrap();
//! let subscriber = tracing_subscriber::registry()
//!     .with(tower_otel_http::logs::json_layer().with_filter(filter));
//! # let _ = subscriber;
//! ```
//!
//! ```text
//! {"timestamp":"2026-11-24T05:30:26.283572Z","level":"INFO","target":"app","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","trace_flags":"01","message":"loaded user","user":42}
//! ```
//!
//! # With `opentelemetry-appender-tracing`
//!
//! The OpenTelemetry log bridge takes the trace context from
//! [`opentelemetry::Context::current()`], which the server layer makes current while the request
//! is handled: exported log records carry the server span's ids.
//!
//! # With `tracing-opentelemetry`
//!
//! Keep `tracing-opentelemetry` for your own spans and let this layer make the `SERVER` span.
//! Exclude the per-request correlation span from the `OpenTelemetryLayer` with
//! [`exclude_request_spans`], or it becomes a second, redundant span; with
//! `tracing-opentelemetry`'s context activation (its default), spans you open in handlers are
//! children of the `SERVER` span:
//!
//! ```
//! use opentelemetry::trace::TracerProvider as _;
//! use tracing_subscriber::{layer::SubscriberExt, Layer as _};
//!
//! let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
//! let otel = tracing_opentelemetry::layer()
//!     .with_tracer(provider.tracer("app"))
//!     .with_filter(tower_otel_http::logs::exclude_request_spans());
//! let subscriber = tracing_subscriber::registry()
//!     .with(otel)
//!     .with(tracing_subscriber::fmt::layer());
//! # let _ = subscriber;
//! ```

use std::fmt;

use opentelemetry::trace::{SpanId, TraceContextExt, TraceFlags, TraceId};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::filter::FilterFn;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::{LookupSpan, SpanData};

/// Target of the per-request `tracing` span.
pub const TARGET: &str = "tower_otel_http";
/// Name of the per-request `tracing` span.
pub const REQUEST_SPAN_NAME: &str = "HTTP request";

/// The ids of the request's server span, stored in the `tracing` span's extensions (when the
/// subscriber is a `tracing_subscriber::Registry`) so that formatters can write them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CorrelationIds {
    /// The trace id.
    pub trace_id: TraceId,
    /// The server span's id.
    pub span_id: SpanId,
    /// The trace flags (`01` sampled).
    pub trace_flags: TraceFlags,
}

impl CorrelationIds {
    /// The ids of the span of `cx`, with the flags as they go on
    /// ([`crate::propagation::outgoing_trace_flags`]: the random-trace-id bit as the trace came in).
    fn of(cx: &opentelemetry::Context) -> Option<Self> {
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| CorrelationIds {
            trace_id: sc.trace_id(),
            span_id: sc.span_id(),
            trace_flags: crate::propagation::outgoing_trace_flags(cx),
        })
    }
}

struct Flags(TraceFlags);

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}", self.0.to_u8())
    }
}

/// What the per-request span says of the request besides its ids.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RequestFields<'a> {
    /// `http.request.method` and, when known at the start, `http.route`.
    Http {
        method: &'static str,
        route: Option<&'a str>,
    },
    /// `rpc.system.name` and `rpc.method` (provisional: the method the path names).
    Rpc { method: &'a str },
}

/// Open the per-request span for the span of `cx`, with every field given at its creation (each later
/// `record` goes through the whole subscriber stack again); a level check when no subscriber
/// wants it, one atomic load when there is no subscriber at all.
pub(crate) fn request_span(
    level: Level,
    fields: RequestFields<'_>,
    cx: &opentelemetry::Context,
) -> tracing::Span {
    macro_rules! make {
        ($lvl:expr) => {{
            if !tracing::span_enabled!(target: TARGET, $lvl) {
                return tracing::Span::none();
            }
            let Some(tp) = crate::propagation::outgoing_traceparent(cx) else {
                return tracing::Span::none();
            };
            // `%`: shown as they are (no quotes) by the stock formatter
            let trace_id = crate::propagation::ascii(&tp[3..35]);
            let span_id = crate::propagation::ascii(&tp[36..52]);
            let trace_flags = crate::propagation::ascii(&tp[53..55]);
            match fields {
                RequestFields::Http { method, route } => tracing::span!(
                    target: TARGET,
                    $lvl,
                    REQUEST_SPAN_NAME,
                    trace_id = %trace_id,
                    span_id = %span_id,
                    trace_flags = %trace_flags,
                    http.request.method = method,
                    http.route = route,
                ),
                RequestFields::Rpc { method } => tracing::span!(
                    target: TARGET,
                    $lvl,
                    REQUEST_SPAN_NAME,
                    trace_id = %trace_id,
                    span_id = %span_id,
                    trace_flags = %trace_flags,
                    rpc.system.name = crate::convention::grpc::SYSTEM,
                    rpc.method = method,
                ),
            }
        }};
    }
    if !tracing::dispatcher::has_been_set() {
        return tracing::Span::none();
    }
    let span = match level {
        Level::TRACE => make!(Level::TRACE),
        Level::DEBUG => make!(Level::DEBUG),
        Level::INFO => make!(Level::INFO),
        Level::WARN => make!(Level::WARN),
        _ => make!(Level::ERROR),
    };
    if span.is_disabled() {
        // a span without metadata: entering it is free even with tracing's `log` feature
        return tracing::Span::none();
    }
    let Some(ids) = CorrelationIds::of(cx) else {
        return span;
    };
    span.with_subscriber(|(id, dispatch)| {
        if let Some(registry) = dispatch.downcast_ref::<tracing_subscriber::Registry>() {
            if let Some(data) = registry.span_data(id) {
                data.extensions_mut().insert(ids);
            }
        }
    });
    span
}

fn is_not_request_span(meta: &Metadata<'_>) -> bool {
    !(meta.is_span() && meta.target() == TARGET && meta.name() == REQUEST_SPAN_NAME)
}

/// A per-layer filter that hides the per-request correlation span from a layer, typically
/// `tracing-opentelemetry`'s, so that it does not become a second span (see the
/// [module docs](self)).
#[must_use]
pub fn exclude_request_spans() -> FilterFn<fn(&Metadata<'_>) -> bool> {
    FilterFn::new(is_not_request_span as fn(&Metadata<'_>) -> bool)
}

/// The ids for an event: from the innermost span of its scope that carries them, else from
/// the current OpenTelemetry context.
fn ids_for<S, N>(ctx: &FmtContext<'_, S, N>) -> Option<CorrelationIds>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    if let Some(scope) = ctx.event_scope() {
        for span in scope {
            if let Some(ids) = span.extensions().get::<CorrelationIds>() {
                return Some(*ids);
            }
        }
    }
    opentelemetry::Context::map_current(CorrelationIds::of)
}

/// A writer that escapes what goes through it for the inside of a JSON string (RFC 8259).
struct Escaped<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut start = 0;
        for (i, c) in s.char_indices() {
            let esc: Option<&str> = match c {
                '"' => Some("\\\""),
                '\\' => Some("\\\\"),
                '\n' => Some("\\n"),
                '\r' => Some("\\r"),
                '\t' => Some("\\t"),
                c if (c as u32) < 0x20 => None,
                _ => continue,
            };
            self.0.write_str(&s[start..i])?;
            match esc {
                Some(e) => self.0.write_str(e)?,
                None => write!(self.0, "\\u{:04x}", c as u32)?,
            }
            start = i + c.len_utf8();
        }
        self.0.write_str(&s[start..])
    }
}

/// Write `s` as a JSON string.
fn json_str(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    fmt::Write::write_str(&mut Escaped(w), s)?;
    w.write_char('"')
}

/// Write `value`'s `Display` form as a JSON string, escaped on the way (no intermediate
/// `String`).
fn json_display(w: &mut impl fmt::Write, value: impl fmt::Display) -> fmt::Result {
    w.write_char('"')?;
    fmt::Write::write_fmt(&mut Escaped(w), format_args!("{value}"))?;
    w.write_char('"')
}

struct JsonVisitor<'a, W: fmt::Write> {
    w: &'a mut W,
    result: fmt::Result,
}

impl<W: fmt::Write> JsonVisitor<'_, W> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        self.w.write_char(',')?;
        json_str(self.w, field.name())?;
        self.w.write_char(':')
    }
    fn put(&mut self, field: &Field, f: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| f(self.w));
        }
    }
}

impl<W: fmt::Write> Visit for JsonVisitor<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, |w| json_str(w, value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, |w| write!(w, "{value}"));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, |w| write!(w, "{value}"));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, |w| write!(w, "{value}"));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.put(field, |w| write!(w, "{value}"));
        } else {
            self.put(field, |w| json_display(w, value));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, |w| json_display(w, format_args!("{value:?}")));
    }
}

/// A [`FormatFields`] that formats nothing. `tracing_subscriber::fmt`'s layer formats every
/// span's fields into a string when the span is created, to show them on later lines;
/// [`JsonFormat`] and [`TextFormat`] never show span fields, so with them that work (the bulk of
/// what a `fmt` subscriber costs per request: the per-request span has five fields) is wasted.
/// [`json_layer`] and [`text_layer`] use it.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoSpanFields;

impl<'writer> FormatFields<'writer> for NoSpanFields {
    fn format_fields<R: RecordFields>(&self, _writer: Writer<'writer>, _fields: R) -> fmt::Result {
        Ok(())
    }
}

/// A `tracing_subscriber::fmt` layer writing [`JsonFormat`] lines (to stdout; change it with
/// `.with_writer(...)`), with [`NoSpanFields`].
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let subscriber = tracing_subscriber::registry().with(tower_otel_http::logs::json_layer());
/// # let _ = subscriber;
/// ```
#[must_use]
pub fn json_layer<S>() -> tracing_subscriber::fmt::Layer<S, NoSpanFields, JsonFormat>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .fmt_fields(NoSpanFields)
        .event_format(JsonFormat::new())
}

/// A `tracing_subscriber::fmt` layer writing [`TextFormat`] lines (to stdout; change it with
/// `.with_writer(...)`), with [`NoSpanFields`].
#[must_use]
pub fn text_layer<S>() -> tracing_subscriber::fmt::Layer<S, NoSpanFields, TextFormat>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .fmt_fields(NoSpanFields)
        .event_format(TextFormat::new())
}

/// One JSON object per event with `trace_id`, `span_id` and `trace_flags` at the top level
/// (absent outside a traced request). Other keys: `timestamp` (RFC 3339, UTC), `level`,
/// `target`, then the event's fields (`message` first when present).
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct JsonFormat {
    _p: (),
}

impl JsonFormat {
    /// The JSON formatter.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S, N> FormatEvent<S, N> for JsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        writer.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut writer)?;
        write!(writer, "\",\"level\":\"{}\",\"target\":", meta.level())?;
        json_str(&mut writer, meta.target())?;
        if let Some(ids) = ids_for(ctx) {
            write!(
                writer,
                ",\"trace_id\":\"{}\",\"span_id\":\"{}\",\"trace_flags\":\"{}\"",
                ids.trace_id,
                ids.span_id,
                Flags(ids.trace_flags)
            )?;
        }
        let mut v = JsonVisitor {
            w: &mut writer,
            result: Ok(()),
        };
        event.record(&mut v);
        v.result?;
        writer.write_str("}\n")
    }
}

struct TextVisitor<'a, 'w> {
    w: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl TextVisitor<'_, '_> {
    fn put(&mut self, args: fmt::Arguments<'_>) {
        if self.result.is_ok() {
            self.result = self.w.write_fmt(args);
        }
    }
}

impl Visit for TextVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.put(format_args!(" {value}"));
        } else {
            self.record_debug(field, &value);
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.put(format_args!(" {value:?}"));
        } else {
            self.put(format_args!(" {}={value:?}", field.name()));
        }
    }
}

/// A `key=value` text line: `<timestamp> <LEVEL> <target>: <message> <fields>
/// trace_id=<..> span_id=<..> trace_flags=<..>`.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct TextFormat {
    _p: (),
}

impl TextFormat {
    /// The text formatter.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S, N> FormatEvent<S, N> for TextFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        SystemTime.format_time(&mut writer)?;
        write!(writer, " {} {}:", meta.level(), meta.target())?;
        let mut v = TextVisitor {
            w: &mut writer,
            result: Ok(()),
        };
        event.record(&mut v);
        v.result?;
        if let Some(ids) = ids_for(ctx) {
            write!(
                writer,
                " trace_id={} span_id={} trace_flags={}",
                ids.trace_id,
                ids.span_id,
                Flags(ids.trace_flags)
            )?;
        }
        writer.write_char('\n')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escaping() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\nd\te\u{1}f\u{e9}").unwrap();
        assert_eq!(s, r#""a\"b\\c\nd\te\u0001fé""#);
        // Debug output is escaped as it is written
        let mut s = String::new();
        json_display(&mut s, format_args!("{:?}", ["x\"y", "z"])).unwrap();
        assert_eq!(s, r#""[\"x\\\"y\", \"z\"]""#);
        let mut s = String::new();
        json_display(&mut s, f64::NAN).unwrap();
        assert_eq!(s, r#""NaN""#);
    }

    #[test]
    fn request_span_filter() {
        let f = is_not_request_span;
        struct Cs;
        impl tracing::callsite::Callsite for Cs {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                unreachable!()
            }
        }
        static CS: Cs = Cs;
        let ours = Metadata::new(
            REQUEST_SPAN_NAME,
            TARGET,
            Level::INFO,
            None,
            None,
            None,
            tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&CS)),
            tracing::metadata::Kind::SPAN,
        );
        assert!(!f(&ours));
        let other = Metadata::new(
            "db",
            "app",
            Level::INFO,
            None,
            None,
            None,
            tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&CS)),
            tracing::metadata::Kind::SPAN,
        );
        assert!(f(&other));
    }
}
