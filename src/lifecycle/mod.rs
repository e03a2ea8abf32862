//! One owner for a request's life, on both sides: [`Record`] holds what a request has recorded so
//! far and has its moments as methods — started (built by the server's or client's start code),
//! [`head`](Record::head), [`end`](Record::end) and drop — so that the span, the duration
//! metric, active requests, the log span and the response header cannot disagree.
//!
//! The rules that differ between the sides are in [`Record::head`],
//! [`status_error`] and [`Record`]'s `Drop`: a server counts 5xx as errors, a client ≥ 400; a
//! server whose response future or body is dropped early reports it (the client went away), a
//! client whose caller drops them does not (the caller chose to).

mod body;
mod future;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{header, Method, Response, StatusCode};
use opentelemetry::trace::{Status, TraceContextExt};
use opentelemetry::{Context, KeyValue, StringValue};
use opentelemetry_semantic_conventions::attribute as attr;

use crate::config::{Config, Side};
use crate::error;
use crate::metrics::Measure;
use crate::semconv;

pub use body::ResponseBody;
#[cfg(feature = "reqwest")]
pub(crate) use future::InScope;
pub use future::ResponseFuture;

/// What a request's polls run inside: its OpenTelemetry context and its log span.
pub(crate) struct Scope {
    /// The span's context, or (no span of ours) the caller's propagated context.
    pub(crate) cx: Option<Context>,
    /// The per-request `tracing` span (log correlation); `Span::none()` when off.
    #[cfg(feature = "tracing")]
    pub(crate) log: tracing::Span,
}

/// A [`Scope`] entered: dropped in the reverse order of entering.
pub(crate) struct Entered<'a> {
    #[cfg(feature = "tracing")]
    _log: tracing::span::Entered<'a>,
    _cx: Option<opentelemetry::ContextGuard>,
    #[cfg(not(feature = "tracing"))]
    _p: std::marker::PhantomData<&'a ()>,
}

impl Scope {
    /// Only a context (no log span).
    pub(crate) fn context(cx: Option<Context>) -> Self {
        Scope {
            cx,
            #[cfg(feature = "tracing")]
            log: tracing::Span::none(),
        }
    }

    /// Make the context current and enter the log span until the guard is dropped (it is not
    /// `Send`: never hold it across an `.await`).
    pub(crate) fn enter(&self) -> Entered<'_> {
        let cx = self.cx.as_ref().map(|c| c.clone().attach());
        Entered {
            #[cfg(feature = "tracing")]
            _log: self.log.enter(),
            _cx: cx,
            #[cfg(not(feature = "tracing"))]
            _p: std::marker::PhantomData,
        }
    }
}

/// How a request starts: recorded, or passed through with the caller's context (when a
/// propagator would carry it on).
#[allow(clippy::large_enum_variant)] // moved once, into the response future
pub(crate) enum Started {
    Record(Record),
    Pass(Option<Context>),
}

impl Started {
    /// Call the inner service inside the request's scope; its future, wrapped.
    pub(crate) fn call<S, R>(self, inner: &mut S, req: R) -> ResponseFuture<S::Future>
    where
        S: tower_service::Service<R>,
    {
        match self {
            Started::Record(record) => {
                let future = {
                    let _entered = record.scope.enter();
                    inner.call(req)
                };
                ResponseFuture::recorded(future, record)
            }
            Started::Pass(cx) => {
                let future = {
                    let _guard = cx.clone().map(Context::attach);
                    inner.call(req)
                };
                ResponseFuture::pass(future, cx)
            }
        }
    }
}

/// The request's clock: a monotonic start for the duration, and the wall-clock start of the
/// span; the span's end timestamp is its start plus the monotonic duration, so the span and the
/// duration metric agree exactly.
pub(crate) struct Clock {
    start: Instant,
    wall: Option<SystemTime>,
}

impl Clock {
    /// Start now; `wall`: a span is recorded and needs its start timestamp.
    pub(crate) fn start(wall: bool) -> Self {
        Clock {
            wall: wall.then(SystemTime::now),
            start: Instant::now(),
        }
    }

    pub(crate) fn wall(&self) -> Option<SystemTime> {
        self.wall
    }

    fn stop(&self) -> (Duration, Option<SystemTime>) {
        let elapsed = self.start.elapsed();
        (elapsed, self.wall.map(|w| w + elapsed))
    }
}

/// Which requests have a response that carries no body whatever its headers say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyRule {
    Normal,
    /// A `HEAD` request: the response is complete at its head.
    Head,
    /// A `CONNECT` request: a `2xx` response is a tunnel, complete at its head.
    Connect,
}

impl BodyRule {
    pub(crate) fn of(method: &Method) -> Self {
        match *method {
            Method::HEAD => BodyRule::Head,
            Method::CONNECT => BodyRule::Connect,
            _ => BodyRule::Normal,
        }
    }
}

/// `error.type` for a response status: the code for 5xx on a server
/// and for ≥ 400 on a client, `_OTHER` for codes outside `100..=599`, none otherwise.
pub(crate) fn status_error(side: Side, code: StatusCode) -> Option<Cow<'static, str>> {
    let first_error = match side {
        Side::Server => 500,
        Side::Client => 400,
    };
    match code.as_u16() {
        c if (100..=599).contains(&c) && c >= first_error => {
            Some(Cow::Owned(code.as_str().to_owned()))
        }
        100..=599 => None,
        _ => Some(Cow::Borrowed(error::OTHER)),
    }
}

/// The one owner of a request's telemetry (see the [module docs](self)).
pub(crate) struct Record {
    pub(crate) config: Arc<Config>,
    pub(crate) scope: Scope,
    /// `scope.cx` holds this layer's span.
    pub(crate) span: bool,
    pub(crate) clock: Clock,
    pub(crate) measure: Option<Measure>,
    /// The server's `http.route`, the client's `url.template` (shared by the span, the log
    /// span and the measurements: cloning it takes no allocation).
    pub(crate) template: Option<StringValue>,
    /// The server's route, when it is settled only after routing.
    pub(crate) slot: Option<Arc<crate::server::RouteSlot>>,
    /// The method, kept only for the user's span-name function when the route is settled
    /// after routing (boxed: rare, and the record is moved several times per request).
    pub(crate) method: Option<Box<Method>>,
    /// The span-name label of the method (`GET`, or `HTTP` for `_OTHER`).
    pub(crate) label: &'static str,
    pub(crate) body_rule: BodyRule,
    /// `network.protocol.version`: the request's (server), the response's (client).
    pub(crate) version: Option<http::Version>,
    /// The response status, once the head is out.
    pub(crate) status: Option<StatusCode>,
    /// Response body bytes transferred so far.
    pub(crate) sent: u64,
    /// The response body's declared length (`Content-Length`, or an exact size hint).
    pub(crate) declared: Option<u64>,
    /// Counted as an active request (so it is uncounted at its end, and only then).
    pub(crate) active: bool,
    pub(crate) done: bool,
}

impl Record {
    /// A record with nothing observed yet; the side's start code fills in the rest.
    pub(crate) fn new(
        config: Arc<Config>,
        clock: Clock,
        method: &Method,
        label: &'static str,
    ) -> Self {
        Record {
            config,
            scope: Scope::context(None),
            span: false,
            clock,
            measure: None,
            template: None,
            slot: None,
            method: None,
            label,
            body_rule: BodyRule::of(method),
            version: None,
            status: None,
            sent: 0,
            declared: None,
            active: false,
            done: false,
        }
    }

    fn span(&self) -> Option<opentelemetry::trace::SpanRef<'_>> {
        match (&self.scope.cx, self.span) {
            (Some(cx), true) => Some(cx.span()),
            _ => None,
        }
    }

    /// The request begins: its [`Labeler`](crate::metrics::Labeler) goes into the request's
    /// extensions (or the one already there is used), and there is one active request more.
    pub(crate) fn begin(mut self, ext: &mut http::Extensions) -> Started {
        if let Some(m) = &mut self.measure {
            if let Some(l) = &m.labeler {
                // one put there already (by the caller, an outer middleware) is the one used
                match ext.get::<crate::metrics::Labeler>() {
                    Some(given) => m.labeler = Some(given.clone()),
                    None => {
                        ext.insert(l.clone());
                    }
                }
            }
            m.add_active(&self.config.meter, 1);
            self.active = true;
        }
        Started::Record(self)
    }

    /// The response head. Returns the response (with the trace-context header on a server,
    /// the span context in its extensions on a client) and whether the request is complete
    /// now: nothing of the body will be sent or read.
    pub(crate) fn head<B: http_body::Body>(
        &mut self,
        mut response: Response<B>,
    ) -> (Response<B>, bool) {
        let status = response.status();
        self.status = Some(status);
        match self.config.side {
            Side::Server => {
                if let Some(span) = self.span() {
                    self.config
                        .server
                        .response_header
                        .apply(response.headers_mut(), span.span_context());
                }
            }
            Side::Client => {
                self.version = Some(response.version());
                if let Some(span) = self.span() {
                    if let Some(peer) = crate::client::peer_of(response.extensions()) {
                        span.set_attributes([
                            KeyValue::new(attr::NETWORK_PEER_ADDRESS, peer.ip().to_string()),
                            KeyValue::new(attr::NETWORK_PEER_PORT, i64::from(peer.port())),
                        ]);
                    }
                    let sc = span.span_context().clone();
                    response.extensions_mut().insert(sc);
                }
            }
        }
        self.settle_route();
        if self.config.has_response_extras() && self.span().is_some_and(|s| s.is_recording()) {
            let mut attrs = Vec::new();
            response = self.config.response_extras(response, &mut attrs);
            if let Some(span) = self.span() {
                span.set_attributes(attrs);
            }
        }
        self.declared = declared_length(&response);
        let complete = self.complete_at_head(&response);
        (response, complete)
    }

    /// The response head reaches the caller: the record ends now when nothing of the body
    /// will be transferred, else it moves into the body. `slot` is emptied either way (the
    /// record is ended in place, not copied).
    pub(crate) fn respond<B: http_body::Body>(
        slot: &mut Option<Record>,
        response: Response<B>,
    ) -> Response<ResponseBody<B>> {
        let Some(record) = slot.as_mut() else {
            return response.map(ResponseBody::untraced);
        };
        let (response, complete) = record.head(response);
        if complete {
            record.end(None);
            *slot = None;
            response.map(ResponseBody::untraced)
        } else {
            response.map(|b| ResponseBody::traced(b, slot.take()))
        }
    }

    /// Whether nothing of the body will be transferred: `1xx` (a `101`
    /// upgrade included), `204`, `304`, a response to `HEAD`, a `2xx` to `CONNECT`, an empty
    /// body, and (server, configured) an event stream.
    fn complete_at_head<B: http_body::Body>(&self, response: &Response<B>) -> bool {
        let status = response.status();
        status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || self.body_rule == BodyRule::Head
            || (self.body_rule == BodyRule::Connect && status.is_success())
            || response.body().is_end_stream()
            || self.declared == Some(0)
            || (self.config.side == Side::Server
                && self.config.server.event_stream_end == crate::server::SpanEnd::Head
                && is_event_stream(response))
    }

    /// `n` more bytes of the response body went out (or were read); `true` when its declared
    /// length is reached (hyper then stops polling and drops it).
    pub(crate) fn transferred(&mut self, n: usize) -> bool {
        self.sent += n as u64;
        self.declared.is_some_and(|d| self.sent >= d)
    }

    /// `error.type` for a body that ended: `response_body` when it ended short of its
    /// declared length (the response is truncated).
    pub(crate) fn short_of_declared(&self) -> Option<Cow<'static, str>> {
        self.declared
            .is_some_and(|d| self.sent < d)
            .then_some(Cow::Borrowed(error::RESPONSE_BODY))
    }

    /// A route known only after routing (the server layer wraps the whole router): the span
    /// name and `http.route` are settled now.
    fn settle_route(&mut self) {
        if let (None, Some(route)) = (&self.template, self.slot.as_ref().and_then(|s| s.get())) {
            let interned = crate::route::interned(self.label, route);
            let name = match (interned, &self.config.span_name) {
                (Some((_, name)), None) => Cow::Borrowed(name),
                _ => {
                    let method = self.method.as_deref().unwrap_or(&Method::GET);
                    self.config.span_name(method, self.label, Some(route))
                }
            };
            #[cfg(feature = "tracing")]
            self.scope.log.record("http.route", route);
            self.template = Some(match interned {
                Some((route, _)) => route.into(),
                None => Arc::<str>::from(route).into(),
            });
            if let Some(span) = self.span() {
                span.update_name(name);
            }
        }
    }

    /// The route was settled after the span started (so it is not among its start attributes).
    fn route_settled_late(&self) -> bool {
        self.slot.is_some()
    }

    /// End the span and record the measurements, once. `error` (when given) overrides the
    /// status-derived `error.type`.
    pub(crate) fn end(&mut self, error: Option<Cow<'static, str>>) {
        if self.done {
            return;
        }
        self.done = true;
        let (elapsed, end_time) = self.clock.stop();
        let error = error.or_else(|| self.status.and_then(|s| status_error(self.config.side, s)));
        self.settle_route();
        // what the span and the duration metric share at the end, built once
        let status = self
            .status
            .map(|s| KeyValue::new(attr::HTTP_RESPONSE_STATUS_CODE, i64::from(s.as_u16())));
        let error_type = error
            .as_ref()
            .map(|e| KeyValue::new(attr::ERROR_TYPE, StringValue::from(e.clone())));
        let version = self
            .version
            .and_then(semconv::protocol_version)
            .map(|v| KeyValue::new(attr::NETWORK_PROTOCOL_VERSION, v));
        let template = self.template.as_ref().map(|t| {
            let key = match self.config.side {
                Side::Server => attr::HTTP_ROUTE,
                Side::Client => attr::URL_TEMPLATE,
            };
            KeyValue::new(key, t.clone())
        });
        if let Some(span) = self.span() {
            let client = self.config.side == Side::Client;
            let late = [
                status.clone(),
                error_type.clone(),
                version.clone().filter(|_| client),
                template.clone().filter(|_| self.route_settled_late()),
            ];
            span.set_attributes(late.into_iter().flatten());
            if error.is_some() {
                span.set_status(Status::error(""));
            }
            match end_time {
                Some(t) => span.end_with_timestamp(t),
                None => span.end(),
            }
        }
        if let Some(m) = &self.measure {
            let template = template.filter(|_| self.template_on_metrics());
            let end = [status, error_type, version, template];
            m.record(
                &self.config.meter,
                elapsed.as_secs_f64(),
                self.sent,
                end,
                self.active,
            );
        }
    }

    /// The server's route is on its metrics; the client's template only when opted in.
    fn template_on_metrics(&self) -> bool {
        match self.config.side {
            Side::Server => true,
            Side::Client => self.config.client.metrics_url_template,
        }
    }

    /// `error.type` when the record is dropped before its end.
    fn drop_error(&self) -> Option<Cow<'static, str>> {
        if std::thread::panicking() {
            return Some(Cow::Borrowed(error::PANIC));
        }
        match (self.config.side, self.status) {
            (Side::Server, None) => Some(Cow::Borrowed(error::CANCELLED)),
            (Side::Server, Some(_)) => Some(Cow::Borrowed(error::RESPONSE_BODY_DROPPED)),
            // the caller dropped the request future or the body: its choice, no error
            (Side::Client, _) => None,
        }
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if !self.done {
            let error = self.drop_error();
            self.end(error);
        }
    }
}

/// The body length a response declares: `Content-Length`, else an exact size hint.
fn declared_length<B: http_body::Body>(response: &Response<B>) -> Option<u64> {
    match response.headers().get(header::CONTENT_LENGTH) {
        Some(v) => v.to_str().ok().and_then(|s| s.trim().parse().ok()),
        None => response.body().size_hint().exact(),
    }
}

fn is_event_stream<B>(response: &Response<B>) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_by_side() {
        let s = |c: u16| StatusCode::from_u16(c).unwrap();
        assert_eq!(status_error(Side::Server, s(500)).as_deref(), Some("500"));
        assert_eq!(status_error(Side::Server, s(599)).as_deref(), Some("599"));
        assert_eq!(status_error(Side::Server, s(404)), None);
        assert_eq!(status_error(Side::Server, s(101)), None);
        assert_eq!(
            status_error(Side::Server, s(600)).as_deref(),
            Some("_OTHER")
        );
        assert_eq!(status_error(Side::Client, s(404)).as_deref(), Some("404"));
        assert_eq!(status_error(Side::Client, s(400)).as_deref(), Some("400"));
        assert_eq!(status_error(Side::Client, s(399)), None);
        assert_eq!(
            status_error(Side::Client, s(999)).as_deref(),
            Some("_OTHER")
        );
    }
}
