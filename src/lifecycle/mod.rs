//! One owner for a request's life, on both sides and under every convention: [`Record`] holds
//! what a request has recorded so far and has its moments as methods — begun
//! ([`Record::begin`], from what the start code gathered in a [`Begin`]),
//! [`head`](Record::head), [`trailers`](Record::trailers), [`end`](Record::end) and drop — so
//! that the span, the duration metric, active requests, the log span and the response header
//! cannot disagree.
//!
//! The lifecycle is generic over the side ([`Side`]: its rules are constants and functions of
//! the side's type) and asks the request's convention ([`Conv`]) what a response means; it
//! names neither a side nor a convention.

mod body;
mod future;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{header, Method, Response, StatusCode};
use opentelemetry::trace::{SpanRef, Status, TraceContextExt};
use opentelemetry::{Context, KeyValue, StringValue};
use opentelemetry_semantic_conventions::attribute as attr;

use crate::config::Config;
use crate::convention::{Conv, Convention, Ending};
use crate::error;
use crate::metrics::Measure;
use crate::route::RouteSlot;
use crate::semconv;
use crate::side::sealed::Rules;

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
pub(crate) enum Started<S: Rules> {
    Record(Box<Record<S>>),
    Pass(Option<Context>),
}

impl<S: Rules> Started<S> {
    /// Call the inner service inside the request's scope; its future, wrapped.
    pub(crate) fn call<I, R>(self, inner: &mut I, req: R) -> ResponseFuture<I::Future, S>
    where
        I: tower_service::Service<R>,
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

/// What the start code of a side and convention gathered, for [`Record::begin`].
pub(crate) struct Begin<S: Rules> {
    pub(crate) config: Arc<Config<S>>,
    pub(crate) clock: Clock,
    pub(crate) conv: Conv,
    /// The span's context (`span`: it holds this layer's span), else the caller's.
    pub(crate) cx: Option<Context>,
    pub(crate) span: bool,
    /// The per-request `tracing` span (log correlation); `Span::none()` when off.
    #[cfg(feature = "tracing")]
    pub(crate) log: tracing::Span,
    pub(crate) measure: Option<Measure>,
    /// The server's `http.route`, the client's `url.template`.
    pub(crate) template: Option<StringValue>,
    /// The server's route, when it is settled only after routing.
    pub(crate) slot: Option<Arc<RouteSlot>>,
    /// The request's method, kept only for the user's span-name function when the template is
    /// settled after the start.
    pub(crate) method: Option<Method>,
    /// What the body of the response may be, by the request's method.
    pub(crate) body_rule: BodyRule,
    /// The span-name label of the method (`GET`, or `HTTP` for `_OTHER`).
    pub(crate) label: &'static str,
    /// `network.protocol.version`: the request's (server); the client's comes with the
    /// response.
    pub(crate) version: Option<http::Version>,
}

/// The attributes a request gets at its end, built once and shared by the span and the
/// measurements (cloning a [`KeyValue`] of a shared string takes no allocation).
#[derive(Debug, Default)]
pub(crate) struct EndAttributes {
    /// `http.response.status_code` (or the convention's status).
    pub(crate) status: Option<KeyValue>,
    pub(crate) error_type: Option<KeyValue>,
    /// `network.protocol.version`.
    pub(crate) version: Option<KeyValue>,
    /// `http.route` / `url.template`.
    pub(crate) template: Option<KeyValue>,
}

/// The one owner of a request's telemetry (see the [module docs](self)).
pub(crate) struct Record<S: Rules> {
    config: Arc<Config<S>>,
    scope: Scope,
    /// `scope.cx` holds this layer's span.
    span: bool,
    clock: Clock,
    conv: Conv,
    measure: Option<Measure>,
    template: Option<StringValue>,
    slot: Option<Arc<RouteSlot>>,
    method: Option<Method>,
    label: &'static str,
    body_rule: BodyRule,
    version: Option<http::Version>,
    /// The response status, once the head is out.
    status: Option<StatusCode>,
    /// Response body bytes transferred so far.
    sent: u64,
    /// The response body's declared length (`Content-Length`, or an exact size hint), when
    /// the convention ends the request there.
    declared: Option<u64>,
    /// An RPC call's response metadata (head and trailers), set on the span at the end.
    metadata: Vec<KeyValue>,
    done: bool,
}

impl<S: Rules> Record<S> {
    /// The request begins: its record is made from what the start gathered, its
    /// [`Labeler`](crate::metrics::Labeler) goes into the request's extensions (or the one
    /// already there is used), and there is one active request more.
    pub(crate) fn begin(b: Begin<S>, ext: &mut http::Extensions) -> Started<S> {
        let mut record = Record {
            scope: Scope {
                cx: b.cx,
                #[cfg(feature = "tracing")]
                log: b.log,
            },
            span: b.span,
            clock: b.clock,
            conv: b.conv,
            measure: b.measure,
            template: b.template,
            slot: b.slot,
            body_rule: b.body_rule,
            method: b.method,
            label: b.label,
            version: b.version,
            status: None,
            sent: 0,
            declared: None,
            metadata: Vec::new(),
            done: false,
            config: b.config,
        };
        if let Some(m) = &mut record.measure {
            m.adopt_labeler(ext);
            m.begin_active(&record.config.meter);
        }
        Started::Record(Box::new(record))
    }

    /// This request's span, when this layer records one.
    pub(crate) fn span(&self) -> Option<SpanRef<'_>> {
        match (&self.scope.cx, self.span) {
            (Some(cx), true) => Some(cx.span()),
            _ => None,
        }
    }

    /// The context holding this request's span, when this layer records one.
    pub(crate) fn span_cx(&self) -> Option<&Context> {
        self.scope.cx.as_ref().filter(|_| self.span)
    }

    pub(crate) fn config(&self) -> &Config<S> {
        &self.config
    }

    /// What the request's polls run inside.
    #[cfg(feature = "reqwest")]
    pub(crate) fn scope(&self) -> &Scope {
        &self.scope
    }

    /// `network.protocol.version`, known at the response (the client's).
    pub(crate) fn set_version(&mut self, version: http::Version) {
        self.version = Some(version);
    }

    /// The request body's length, known in full before it is sent (reqwest's).
    #[cfg(feature = "reqwest")]
    pub(crate) fn set_request_bytes(&mut self, n: u64) {
        if let Some(m) = &mut self.measure {
            m.set_request_bytes(n);
        }
    }

    /// The response head. Returns the response (the side may add to it: the server's
    /// trace-context header, the client's span context) and whether the request is complete
    /// now: nothing of the body will be sent or read.
    pub(crate) fn head<B: http_body::Body>(
        &mut self,
        mut response: Response<B>,
    ) -> (Response<B>, bool) {
        self.status = Some(response.status());
        self.conv.head(response.status(), response.headers());
        S::head(self, &mut response);
        self.settle_route();
        if self.config.has_response_extras() && self.span().is_some_and(|s| s.is_recording()) {
            let mut attrs = Vec::new();
            response = self
                .config
                .response_extras(response, self.conv.is_rpc(), &mut attrs);
            if self.conv.is_rpc() {
                // response metadata comes from the trailers too: set once, at the end, each
                // key's values from both (the SDK appends an attribute set twice)
                self.metadata = attrs;
            } else if let Some(span) = self.span() {
                span.set_attributes(attrs);
            }
        }
        self.declared = declared_length(&response).filter(|_| self.conv.ends_at_declared_length());
        let complete = self.complete_at_head(&response);
        (response, complete)
    }

    /// The response head reaches the caller: the record ends now when nothing of the body
    /// will be transferred, else it moves into the body.
    pub(crate) fn respond<B: http_body::Body>(
        mut self: Box<Self>,
        response: Response<B>,
    ) -> Response<ResponseBody<B, S>> {
        let (response, complete) = self.head(response);
        if complete {
            self.end(Ending::Completed(None));
            // a body polled anyway (an upgrade, an event stream ended at the head) runs in the
            // request's scope
            let scope = (!response.body().is_end_stream()).then(|| self.take_scope());
            response.map(|b| ResponseBody::passed(b, scope))
        } else {
            response.map(|b| ResponseBody::traced(b, self))
        }
    }

    /// Whether nothing of the body will be transferred: `1xx` (a `101` upgrade included),
    /// `204`, `304`, a response to `HEAD`, a `2xx` to `CONNECT`, an empty body, or what the
    /// side says (the server's event streams, when configured).
    fn complete_at_head<B: http_body::Body>(&self, response: &Response<B>) -> bool {
        let status = response.status();
        status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || self.body_rule == BodyRule::Head
            || (self.body_rule == BodyRule::Connect && status.is_success())
            || response.body().is_end_stream()
            || self.declared == Some(0)
            || S::ends_at_head(&self.config.side, response)
    }

    /// The request's scope, for what runs after its end (the record keeps an empty one).
    pub(crate) fn take_scope(&mut self) -> Scope {
        std::mem::replace(&mut self.scope, Scope::context(None))
    }

    /// A data frame of the response body went out (or was read): its bytes counted (and read
    /// by a convention that reads them, gRPC-Web's trailer frame); `true` when the body's
    /// declared length is reached (hyper then stops polling and drops it).
    pub(crate) fn transferred<D: bytes::Buf>(&mut self, data: &D) -> bool {
        if self.conv.reads_data() {
            let mut slices = [std::io::IoSlice::new(&[]); 16];
            let n = data.chunks_vectored(&mut slices);
            let mut seen = 0;
            for s in &slices[..n] {
                self.conv.data(s);
                seen += s.len();
            }
            if seen < data.remaining() {
                // more pieces than one look gives: the convention lost track of the bytes
                self.conv.data_gap();
            }
        }
        self.sent += data.remaining() as u64;
        self.declared.is_some_and(|d| self.sent >= d)
    }

    /// The response's trailers arrived: the convention reads them (and an RPC call's
    /// allow-listed response metadata is taken from them, beside the head's).
    pub(crate) fn trailers(&mut self, trailers: &http::HeaderMap) {
        self.conv.trailers(trailers);
        if self.conv.is_rpc()
            && !self.config.response_metadata.is_empty()
            && self.span().is_some_and(|s| s.is_recording())
        {
            let mut attrs = Vec::new();
            semconv::capture_headers(
                trailers,
                &self.config.response_metadata,
                self.config.sensitive_headers,
                self.config.max_value_length,
                &mut attrs,
            );
            for kv in attrs {
                match self.metadata.iter_mut().find(|m| m.key == kv.key) {
                    Some(m) => m.value = semconv::concat_string_arrays(&m.value, &kv.value),
                    None => self.metadata.push(kv),
                }
            }
        }
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
        if self.template.is_some() {
            return;
        }
        let Some(slot) = self.slot.clone() else {
            return;
        };
        let Some(route) = slot.get() else {
            return;
        };
        let interned = crate::route::interned(self.label, route);
        let name = match (interned, &self.config.span_name) {
            (Some((_, name)), None) => Cow::Borrowed(name),
            _ => {
                let method = self.method.as_ref().unwrap_or(&Method::GET);
                self.config.span_name(method, self.label, Some(route))
            }
        };
        #[cfg(feature = "tracing")]
        self.scope.log.record(S::TEMPLATE_KEY, route);
        self.template = Some(match interned {
            Some((route, _)) => route.into(),
            None => Arc::<str>::from(route).into(),
        });
        if let Some(span) = self.span() {
            span.update_name(name);
        }
    }

    /// End the span and record the measurements, once: the convention classifies how the
    /// request ended.
    pub(crate) fn end(&mut self, ending: Ending) {
        if self.done {
            return;
        }
        self.done = true;
        let (elapsed, end_time) = self.clock.stop();
        let error = self.conv.outcome(S::WHO, self.status, &ending, elapsed);
        self.settle_route();
        let end = EndAttributes {
            status: self.conv.status_attribute(self.status),
            error_type: error
                .as_ref()
                .map(|e| KeyValue::new(attr::ERROR_TYPE, StringValue::from(e.clone()))),
            version: self
                .version
                .filter(|_| !self.conv.is_rpc())
                .and_then(semconv::protocol_version)
                .map(|v| KeyValue::new(attr::NETWORK_PROTOCOL_VERSION, v)),
            template: self
                .template
                .as_ref()
                .map(|t| KeyValue::new(S::TEMPLATE_KEY, t.clone())),
        };
        let metadata = std::mem::take(&mut self.metadata);
        if let Some(span) = self.span() {
            if !metadata.is_empty() {
                span.set_attributes(metadata);
            }
            // the route settled after the start is not among the start attributes
            let late_template = self.slot.is_some();
            let attrs = [
                end.status.clone(),
                end.error_type.clone(),
                end.version.clone().filter(|_| S::VERSION_AT_END),
                end.template.clone().filter(|_| late_template),
            ];
            span.set_attributes(attrs.into_iter().flatten());
            self.conv.end_span(&span);
            if error.is_some() {
                span.set_status(Status::error(""));
            }
            match end_time {
                Some(t) => span.end_with_timestamp(t),
                None => span.end(),
            }
        }
        if let Some(m) = &mut self.measure {
            let template = S::template_on_metrics(&self.config.side);
            let attrs = [
                end.status,
                end.error_type,
                end.version,
                end.template.filter(|_| template),
            ];
            let conv = &self.conv;
            m.record(
                &self.config.meter,
                elapsed.as_secs_f64(),
                self.sent,
                attrs.into_iter().flatten(),
                |out| conv.metric_attributes(out),
            );
        }
    }

    /// The inner service failed: the request ends with the error's `error.type`.
    pub(crate) fn fail<E: 'static>(mut self: Box<Self>, e: &E) {
        let error_type = self.config.error_type(e);
        self.end(Ending::Failed(error_type));
    }
}

impl<S: Rules> Drop for Record<S> {
    fn drop(&mut self) {
        if !self.done {
            let ending = if std::thread::panicking() {
                Ending::Panicked
            } else {
                Ending::Dropped {
                    head_seen: self.status.is_some(),
                }
            };
            self.end(ending);
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
