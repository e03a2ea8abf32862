//! The gRPC convention (the RPC semantic conventions, `rpc.system.name = "grpc"`): how a call
//! starts on each side ([`server`], [`client`]) and how its end is classified from the
//! `grpc-status` of its trailers (or of a trailers-only response's headers), the HTTP status,
//! how the call stopped and its deadline.
//!
//! Specification: <https://opentelemetry.io/docs/specs/semconv/rpc/grpc/> (as released in
//! v1.44.0: `rpc.system.name`, `rpc.method`, `rpc.response.status_code`,
//! `rpc.server.call.duration` / `rpc.client.call.duration`).

pub(crate) mod client;
pub(crate) mod server;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use opentelemetry::trace::SpanRef;
use opentelemetry::{Context, KeyValue, StringValue};
use opentelemetry_semantic_conventions::attribute as attr;

use super::{Conv, Convention, Ending, Who};
use crate::config::Config;
use crate::error;
use crate::lifecycle::{Begin, BodyRule, Clock};
use crate::metrics::Measure;
use crate::side::sealed::Rules;

/// `rpc.system.name` of gRPC.
pub(crate) const SYSTEM: &str = "grpc";
/// `rpc.method` of a method that is not known (and the span name then: `grpc`).
pub(crate) const OTHER: &str = "_OTHER";

/// The gRPC status codes, by number.
pub(crate) const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

const OK: u32 = 0;
const CANCELLED: u32 = 1;
const UNKNOWN: u32 = 2;
const DEADLINE_EXCEEDED: u32 = 4;
const UNIMPLEMENTED: u32 = 12;
const INTERNAL: u32 = 13;
const UNAVAILABLE: u32 = 14;
const DATA_LOSS: u32 = 15;
const UNAUTHENTICATED: u32 = 16;
const PERMISSION_DENIED: u32 = 7;

/// Whether a request is a gRPC call: a `POST` whose `content-type` is `application/grpc`,
/// `application/grpc+…`, `application/grpc;…`, or gRPC-Web's `application/grpc-web…`.
pub(crate) fn is_grpc(method: &http::Method, headers: &HeaderMap) -> bool {
    method == http::Method::POST && is_grpc_content_type(headers)
}

fn is_grpc_content_type(headers: &HeaderMap) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    let Some(ct) = headers.get(http::header::CONTENT_TYPE) else {
        return false;
    };
    let b = ct.as_bytes();
    if b.len() < GRPC.len() || !b[..GRPC.len()].eq_ignore_ascii_case(GRPC) {
        return false;
    }
    let rest = &b[GRPC.len()..];
    // `application/grpc-web`, `-web+proto`, `-web-text`
    let rest = match rest.get(..4) {
        Some(web) if web.eq_ignore_ascii_case(b"-web") => &rest[4..],
        _ => rest,
    };
    match rest.first() {
        None | Some(b'+' | b';') => true,
        Some(b'-') => rest.len() > 1 && b.len() - rest.len() > GRPC.len(),
        _ => false,
    }
}

/// A status code's name, or its number for a code outside the known ones.
pub(crate) fn code_name(code: u32) -> StringValue {
    match CODES.get(code as usize) {
        Some(name) => StringValue::from(*name),
        None => StringValue::from(code.to_string()),
    }
}

/// Whether a code makes a span an error on `who`'s side: every code but `OK` on a client;
/// `UNKNOWN`, `DEADLINE_EXCEEDED`, `UNIMPLEMENTED`, `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS` (and
/// a code outside the known ones, taken as `UNKNOWN`) on a server.
pub(crate) fn is_error(who: Who, code: u32) -> bool {
    match who {
        Who::Client => code != OK,
        Who::Server => {
            matches!(
                code,
                UNKNOWN | DEADLINE_EXCEEDED | UNIMPLEMENTED | INTERNAL | UNAVAILABLE | DATA_LOSS
            ) || code as usize >= CODES.len()
        }
    }
}

/// The code a client infers from a non-`200` HTTP status without a `grpc-status` (gRPC's
/// HTTP-to-gRPC mapping, as tonic applies it).
pub(crate) fn code_of_http(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => INTERNAL,
        401 => UNAUTHENTICATED,
        403 => PERMISSION_DENIED,
        404 => UNIMPLEMENTED,
        429 | 502 | 503 | 504 => UNAVAILABLE,
        _ => UNKNOWN,
    }
}

/// `grpc-status` of a header map (a trailers-only response's headers, or trailers): `None`
/// when absent or not a number.
fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    let v = headers.get("grpc-status")?.to_str().ok()?.trim();
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// `grpc-timeout`: 1 to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub(crate) fn parse_timeout(v: &str) -> Option<Duration> {
    let (&unit, digits) = v.as_bytes().split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// How much before its deadline a call that stopped counts as having missed it: a tenth of
/// the deadline, at most 100 ms. The layer's clock starts when it sees the call — after the
/// client started its own, after tonic's `Server` started its timer, after whatever queued the
/// request on a busy server — so a call the deadline stopped ends a little short of it by this
/// clock.
fn margin(deadline: Duration) -> Duration {
    (deadline / 10).min(Duration::from_millis(100))
}

/// The deadline a request carries (`grpc-timeout`).
pub(crate) fn deadline_of(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_timeout)
}

/// The method of a call: `package.Service/Method` from the path `/package.Service/Method`.
/// `None` for a path of another shape.
pub(crate) fn method_of(path: &str) -> Option<&str> {
    let m = path.strip_prefix('/')?;
    let (service, method) = m.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/')).then_some(m)
}

/// Whether the method is known: decided at the start (a list was given, or the path is not a
/// method), or at the end (from the response).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Known {
    /// Decided at the start; `rpc.method` set on the span then.
    Yes,
    No,
    /// Decided at the end: `rpc.method` set then (the SDK appends, never overwrites, an
    /// attribute: a provisional value would be exported beside the final one).
    Later,
}

/// The gRPC convention's state for one call.
#[derive(Debug)]
pub(crate) struct Grpc {
    /// `package.Service/Method` (capped), shared with the span name and the metrics.
    method: StringValue,
    known: Known,
    /// The request's `grpc-timeout`.
    deadline: Option<Duration>,
    /// The response's HTTP status.
    http: Option<StatusCode>,
    /// `grpc-status` of the headers of a trailers-only response, or of the trailers.
    code: Option<u32>,
    /// The response head carried `grpc-status`: a trailers-only response.
    trailers_only: bool,
    /// A trailers-only response carried a (non-empty) `grpc-message`.
    message: bool,
    /// The response's content-type is gRPC's (or gRPC-Web's).
    grpc_answer: bool,
    /// The code the end settled on, and whether the method turned out unknown.
    settled: Option<Option<u32>>,
    unknown: bool,
    /// A gRPC-Web response (binary): its status travels in a trailer frame of the body.
    web: Option<WebFrames>,
}

/// Longest gRPC-Web trailer frame read (its `grpc-status` line comes first in practice).
const MAX_WEB_TRAILER: usize = 8 * 1024;

/// The frames of a gRPC-Web response body, followed across data chunks: `[flags, len (4 bytes
/// big-endian), payload]`, the trailer frame flagged `0x80` and holding HTTP/1-style header
/// lines.
#[derive(Debug, Default)]
struct WebFrames {
    header: [u8; 5],
    header_len: usize,
    /// Payload bytes left in the current frame.
    left: usize,
    /// The current frame is the trailer frame: its payload so far.
    trailer: Option<Vec<u8>>,
    /// Bytes were missed: nothing more can be read.
    lost: bool,
}

impl WebFrames {
    /// Feed bytes; the trailer frame's payload when it completes.
    fn feed(&mut self, mut bytes: &[u8], mut on_trailer: impl FnMut(&[u8])) {
        while !bytes.is_empty() && !self.lost {
            if self.header_len < 5 {
                let n = (5 - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
                self.header_len += n;
                bytes = &bytes[n..];
                if self.header_len < 5 {
                    return;
                }
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]) as usize;
                self.left = len;
                self.trailer = (self.header[0] & 0x80 != 0)
                    .then(|| Vec::with_capacity(len.min(MAX_WEB_TRAILER)));
            } else {
                let n = self.left.min(bytes.len());
                if let Some(t) = &mut self.trailer {
                    let room = MAX_WEB_TRAILER.saturating_sub(t.len());
                    t.extend_from_slice(&bytes[..n.min(room)]);
                }
                self.left -= n;
                bytes = &bytes[n..];
            }
            if self.header_len == 5 && self.left == 0 {
                if let Some(t) = self.trailer.take() {
                    on_trailer(&t);
                }
                self.header_len = 0;
            }
        }
    }
}

/// `grpc-status` (and whether a non-empty `grpc-message` came) of a gRPC-Web trailer frame:
/// `name: value` lines, names case-insensitive.
fn web_trailer_status(payload: &[u8]) -> (Option<u32>, bool) {
    let mut code = None;
    let mut message = false;
    for line in payload.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.trim_ascii().eq_ignore_ascii_case(b"grpc-status") {
            code = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse().ok());
        } else if name.trim_ascii().eq_ignore_ascii_case(b"grpc-message") {
            message = !value.is_empty();
        }
    }
    (code, message)
}

impl Grpc {
    /// The record of this call on either side: no route or template, the body as it comes,
    /// `rpc.system.name` for a label.
    pub(crate) fn begin<S: Rules>(
        self: Box<Self>,
        config: Arc<Config<S>>,
        clock: Clock,
        cx: Option<Context>,
        span: bool,
        #[cfg(feature = "tracing")] log: tracing::Span,
        measure: Option<Measure>,
    ) -> Begin<S> {
        Begin {
            config,
            clock,
            conv: Conv::Grpc(self),
            cx,
            span,
            #[cfg(feature = "tracing")]
            log,
            measure,
            template: None,
            slot: None,
            method: None,
            body_rule: BodyRule::Normal,
            label: SYSTEM,
            version: None,
        }
    }

    pub(crate) fn new(method: StringValue, known: Known, deadline: Option<Duration>) -> Self {
        Grpc {
            method,
            known,
            deadline,
            http: None,
            code: None,
            trailers_only: false,
            message: false,
            grpc_answer: false,
            settled: None,
            unknown: known == Known::No,
            web: None,
        }
    }

    /// The code the call ends with, and the error it is (`error.type`), if any.
    fn classify(
        &self,
        who: Who,
        ending: &Ending,
        elapsed: Duration,
    ) -> (Option<u32>, Option<Cow<'static, str>>) {
        let past_deadline = self
            .deadline
            .is_some_and(|d| elapsed >= d.saturating_sub(margin(d)));
        let code_error = |code: u32| {
            let code = if code == CANCELLED && past_deadline {
                DEADLINE_EXCEEDED
            } else {
                code
            };
            let error =
                is_error(who, code).then(|| Cow::Owned(code_name(code).as_str().to_owned()));
            (Some(code), error)
        };
        // a non-200 answer: the client maps it as gRPC does (tonic reads such a body as gRPC
        // frames, fails and drops it: a drop is no cancel then); the server reports the HTTP
        // code
        let non_200 = |who: Who, s: StatusCode| match who {
            Who::Client => code_error(code_of_http(s)),
            Who::Server => (None, Some(Cow::Owned(s.as_str().to_owned()))),
        };
        match ending {
            Ending::Panicked => (None, Some(Cow::Borrowed(error::PANIC))),
            // the inner service or the transport failed before a status
            Ending::Failed(e) if past_deadline => {
                let _ = e;
                code_error(DEADLINE_EXCEEDED)
            }
            Ending::Failed(e) => (None, Some(e.clone())),
            Ending::Dropped { .. } => match (self.code, self.http) {
                // a status that arrived before the drop stands
                (Some(code), _) => code_error(code),
                (None, Some(s)) if s != StatusCode::OK => non_200(who, s),
                (None, _) if past_deadline => code_error(DEADLINE_EXCEEDED),
                // the caller went away (server: reset or dropped) or chose to stop (client):
                // CANCELLED, an error on neither side
                (None, _) => (Some(CANCELLED), None),
            },
            // the body failed
            Ending::Completed(Some(e)) => match (self.code, self.http) {
                (Some(code), _) => code_error(code),
                (None, Some(s)) if s != StatusCode::OK => non_200(who, s),
                (None, _) if past_deadline => code_error(DEADLINE_EXCEEDED),
                (None, _) => (None, Some(e.clone())),
            },
            Ending::Completed(None) => match (self.code, self.http) {
                (Some(code), _) => code_error(code),
                (None, Some(s)) if s != StatusCode::OK => non_200(who, s),
                // a gRPC-Web body that could not be read (`-text`): the status is not known
                (None, _) if self.web.as_ref().is_some_and(|w| w.lost) => (None, None),
                (None, _) => (None, Some(Cow::Borrowed(error::GRPC_STATUS_MISSING))),
            },
        }
    }

    /// `rpc.method` as it ends: the method, or `_OTHER`.
    pub(crate) fn method_value(&self) -> StringValue {
        if self.unknown {
            StringValue::from(OTHER)
        } else {
            self.method.clone()
        }
    }
}

impl Convention for Grpc {
    fn head(&mut self, status: StatusCode, headers: &HeaderMap) {
        self.http = Some(status);
        // binary gRPC-Web: the status comes in the body's trailer frame (`-text`, base64, is not
        // read: its status is known only when it came in the headers)
        let ct = headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        self.grpc_answer = ct.len() >= 16 && ct[..16].eq_ignore_ascii_case(b"application/grpc");
        let web = ct.len() >= 20 && ct[..20].eq_ignore_ascii_case(b"application/grpc-web");
        let text = ct.len() >= 25 && ct[..25].eq_ignore_ascii_case(b"application/grpc-web-text");
        if web {
            self.web = Some(WebFrames {
                lost: text,
                ..WebFrames::default()
            });
        }
        if let Some(code) = grpc_status(headers) {
            self.code = Some(code);
            self.trailers_only = true;
            self.message = headers.get("grpc-message").is_some_and(|m| !m.is_empty());
        }
    }

    fn trailers(&mut self, trailers: &HeaderMap) {
        if let Some(code) = grpc_status(trailers) {
            self.code = Some(code);
        }
    }

    fn reads_data(&self) -> bool {
        self.web.as_ref().is_some_and(|w| !w.lost)
    }

    /// gRPC's result comes in the trailers, after the body: a declared length ends nothing
    /// (but gRPC-Web's status is inside the body).
    fn ends_at_declared_length(&self) -> bool {
        self.web.is_some()
    }

    fn data(&mut self, bytes: &[u8]) {
        let Some(web) = &mut self.web else {
            return;
        };
        let mut found = None;
        web.feed(bytes, |payload| found = Some(web_trailer_status(payload)));
        if let Some((code, _)) = found {
            if code.is_some() {
                self.code = code;
            }
        }
    }

    fn data_gap(&mut self) {
        if let Some(web) = &mut self.web {
            web.lost = true;
        }
    }

    fn outcome(
        &mut self,
        who: Who,
        _status: Option<StatusCode>,
        ending: &Ending,
        elapsed: Duration,
    ) -> Option<Cow<'static, str>> {
        let (code, error) = self.classify(who, ending, elapsed);
        // Decided at the end, a method is known only when a gRPC service answered for it: an
        // HTTP `200` with a gRPC content-type — but not a trailers-only
        // UNIMPLEMENTED without a message (tonic's answer for a service or method it does not
        // have; a handler's own UNIMPLEMENTED usually says why). Anything else — no route (a
        // 404), another answer (an SPA fallback, a 405), a call dropped before any answer —
        // keeps the caller's path out of the metrics: the caller chooses it.
        if self.known == Known::Later && who == Who::Server {
            let answered = self.http == Some(StatusCode::OK) && self.grpc_answer;
            let tonic_unknown =
                self.trailers_only && self.code == Some(UNIMPLEMENTED) && !self.message;
            self.unknown = !answered || tonic_unknown;
        }
        self.settled = Some(code);
        error
    }

    fn status_attribute(&self, _status: Option<StatusCode>) -> Option<KeyValue> {
        self.settled
            .flatten()
            .map(|c| KeyValue::new(attr::RPC_RESPONSE_STATUS_CODE, code_name(c)))
    }

    fn end_span(&self, span: &SpanRef<'_>) {
        if self.known == Known::Later {
            span.set_attribute(KeyValue::new(attr::RPC_METHOD, self.method_value()));
        }
        if self.unknown && self.known == Known::Later {
            span.set_attribute(KeyValue::new(
                attr::RPC_METHOD_ORIGINAL,
                self.method.clone(),
            ));
            span.update_name(Cow::Borrowed(SYSTEM));
        }
    }

    fn metric_attributes(&self, out: &mut dyn FnMut(KeyValue)) {
        out(KeyValue::new(attr::RPC_METHOD, self.method_value()));
    }

    fn is_rpc(&self) -> bool {
        true
    }
}

/// The method value (capped) and whether it is known, for a call to `path`.
pub(crate) fn method_value(path: &str, max: usize) -> (StringValue, bool) {
    match method_of(path) {
        Some(m) => (
            StringValue::from(Arc::<str>::from(crate::semconv::capped(m, max))),
            true,
        ),
        None => (
            StringValue::from(Arc::<str>::from(crate::semconv::capped(
                path.trim_start_matches('/'),
                max,
            ))),
            false,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::CONTENT_TYPE, v.parse().unwrap());
        h
    }

    #[test]
    fn grpc_content_types() {
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc+json",
            "application/grpc;charset=utf-8",
            "Application/GRPC",
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grpc-web-text",
        ] {
            assert!(is_grpc(&http::Method::POST, &ct(yes)), "{yes}");
            assert!(!is_grpc(&http::Method::GET, &ct(yes)), "{yes}");
        }
        for no in [
            "application/json",
            "application/grpcx",
            "application/grpc-",
            "application/grpc-other",
            "text/grpc",
            "application/gr",
        ] {
            assert!(!is_grpc(&http::Method::POST, &ct(no)), "{no}");
        }
        assert!(!is_grpc(&http::Method::POST, &HeaderMap::new()));
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(
            parse_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in [
            "",
            "S",
            "1",
            "123456789S",
            "1s",
            "-1S",
            "1.5S",
            "é",
            "1é",
            "é1S",
        ] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn methods() {
        assert_eq!(
            method_of("/grpc.health.v1.Health/Check"),
            Some("grpc.health.v1.Health/Check")
        );
        for bad in ["", "/", "/svc", "/svc/", "//m", "/a/b/c", "svc/m"] {
            assert_eq!(method_of(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn grpc_web_trailer_frames_are_read_across_chunks() {
        let mut body = Vec::new();
        // a data frame, then the trailer frame
        body.extend_from_slice(&[0, 0, 0, 0, 2, 8, 1]);
        let trailer = b"grpc-status: 13\r\ngrpc-message: boom\r\nx-a: b\r\n";
        body.push(0x80);
        body.extend_from_slice(&(trailer.len() as u32).to_be_bytes());
        body.extend_from_slice(trailer);
        // every split into two chunks, and one byte at a time
        for cut in 0..=body.len() {
            let mut w = WebFrames::default();
            let mut got = None;
            w.feed(&body[..cut], |p| got = Some(web_trailer_status(p)));
            w.feed(&body[cut..], |p| got = Some(web_trailer_status(p)));
            assert_eq!(got, Some((Some(13), true)), "cut at {cut}");
        }
        let mut w = WebFrames::default();
        let mut got = None;
        for b in &body {
            w.feed(std::slice::from_ref(b), |p| {
                got = Some(web_trailer_status(p))
            });
        }
        assert_eq!(got, Some((Some(13), true)));
        assert_eq!(web_trailer_status(b"GRPC-STATUS:0\n"), (Some(0), false));
        assert_eq!(web_trailer_status(b"grpc-status: x\n"), (None, false));
        assert_eq!(web_trailer_status(b"\xff\xfe"), (None, false));
    }

    #[test]
    fn codes_and_errors() {
        assert_eq!(code_name(0).as_str(), "OK");
        assert_eq!(code_name(16).as_str(), "UNAUTHENTICATED");
        assert_eq!(code_name(17).as_str(), "17");
        let server_errors: Vec<u32> = (0..17).filter(|c| is_error(Who::Server, *c)).collect();
        assert_eq!(server_errors, [2, 4, 12, 13, 14, 15]);
        assert!((1..17).all(|c| is_error(Who::Client, c)));
        assert!(!is_error(Who::Client, 0));
        assert!(is_error(Who::Server, 99));
        assert_eq!(code_of_http(StatusCode::NOT_FOUND), UNIMPLEMENTED);
        assert_eq!(code_of_http(StatusCode::SERVICE_UNAVAILABLE), UNAVAILABLE);
        assert_eq!(code_of_http(StatusCode::IM_A_TEAPOT), UNKNOWN);
    }
}
