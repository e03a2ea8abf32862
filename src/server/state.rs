//! Per-request state: the span's context, the metric instruments and what is needed to end the
//! span and record the measurements exactly once, on every path (response head, last body byte,
//! body error, dropped future, dropped body).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use http::{header, Response, StatusCode};
use opentelemetry::trace::{Status, TraceContextExt};
use opentelemetry::{Context, KeyValue, StringValue};
use opentelemetry_semantic_conventions::attribute as attr;

use super::layer::{Config, SpanEnd};
use crate::metrics::{AttrList, Labeler, RequestInstruments, ServerInstruments};
use crate::semconv;

/// What metrics need of a request, besides what the span state already has.
pub(crate) struct MetricsState {
    pub(crate) instruments: RequestInstruments,
    /// `http.request.method` value (`_OTHER` for unknown methods).
    pub(crate) method: &'static str,
    pub(crate) https: bool,
    pub(crate) version: Option<&'static str>,
    /// `server.address` / `server.port` when opted in.
    /// (Boxed: opt-in, and the state is moved several times per request.)
    pub(crate) server: Option<Box<(StringValue, i64)>>,
    pub(crate) labeler: Option<Labeler>,
    pub(crate) request_bytes: Option<Arc<AtomicU64>>,
}

impl MetricsState {
    fn method_attr(&self) -> KeyValue {
        KeyValue::new(attr::HTTP_REQUEST_METHOD, self.method)
    }

    fn scheme_attr(&self) -> KeyValue {
        semconv::scheme_attribute(self.https)
    }

    /// The instruments to record into; `config` is the request's layer configuration.
    fn instruments<'a>(&'a self, config: &'a Config) -> Option<&'a ServerInstruments> {
        match &self.instruments {
            RequestInstruments::Layer => config.meter.layer_instruments(),
            RequestInstruments::Global(i) => Some(i),
        }
    }

    pub(crate) fn request_started(&self, config: &Config) {
        if let Some(c) = self
            .instruments(config)
            .and_then(|i| i.active_requests.as_ref())
        {
            self.add_active(c, 1);
        }
    }

    /// `http.server.active_requests` += `delta`, with its attributes (§4.3, and the opt-in
    /// server address).
    fn add_active(&self, counter: &opentelemetry::metrics::UpDownCounter<i64>, delta: i64) {
        match self.server.as_deref() {
            None => counter.add(delta, &[self.method_attr(), self.scheme_attr()]),
            Some((address, port)) => counter.add(
                delta,
                &[
                    self.method_attr(),
                    self.scheme_attr(),
                    KeyValue::new(attr::SERVER_ADDRESS, address.clone()),
                    KeyValue::new(attr::SERVER_PORT, *port),
                ],
            ),
        }
    }
}

pub(crate) struct RequestState {
    /// The context made current while the inner service and the body are polled: the span's,
    /// or (spans off) the caller's propagated context.
    pub(super) cx: Option<Context>,
    /// `cx` holds this layer's span.
    pub(super) span: bool,
    /// The per-request `tracing` span (log correlation); `Span::none()` when off.
    #[cfg(feature = "tracing")]
    pub(super) log_span: tracing::Span,
    pub(super) start: SystemTime,
    /// The request method, kept only for a custom span name settled after routing.
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(super) method: Option<Box<http::Method>>,
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(super) label: &'static str,
    pub(super) route: Option<Cow<'static, str>>,
    #[cfg(feature = "axum")]
    pub(super) slot: Option<Arc<crate::route::RouteSlot>>,
    pub(super) config: Arc<Config>,
    pub(super) metrics: Option<MetricsState>,
    /// The response status, once the head is sent.
    pub(super) status: Option<StatusCode>,
    pub(super) response_bytes: u64,
    pub(super) done: bool,
}

impl RequestState {
    fn span(&self) -> Option<opentelemetry::trace::SpanRef<'_>> {
        match (&self.cx, self.span) {
            (Some(cx), true) => Some(cx.span()),
            _ => None,
        }
    }

    /// Bytes of response body sent so far (for `http.server.response.body.size`).
    pub(crate) fn add_response_bytes(&mut self, n: usize) {
        self.response_bytes += n as u64;
    }

    /// Record the response head. Returns `true` when the span must end now (no body to wait for,
    /// a protocol upgrade, or a stream configured to end at its head).
    ///
    /// The status code (and a route settled now) become span attributes when the span ends,
    /// in one call with `error.type`: each call into a span takes its lock.
    pub(crate) fn on_response<B: http_body::Body>(
        &mut self,
        mut response: Response<B>,
    ) -> (Response<B>, bool) {
        if let (true, Some(cx)) = (self.span, &self.cx) {
            self.config
                .response_header
                .apply(response.headers_mut(), cx.span().span_context());
        }
        let status = response.status();
        self.status = Some(status);
        let end_now = status == StatusCode::SWITCHING_PROTOCOLS
            || response.body().is_end_stream()
            || (self.config.event_stream_end == SpanEnd::Head && is_event_stream(&response));
        self.settle_route();
        let config = &self.config;
        if config.response_headers.is_empty() && config.response_hook.is_none() {
            return (response, end_now);
        }
        let Some(span) = self.span().filter(|s| s.is_recording()) else {
            return (response, end_now);
        };
        let mut attrs: Vec<KeyValue> = Vec::new();
        semconv::capture_headers(response.headers(), &config.response_headers, &mut attrs);
        let response = match &config.response_hook {
            Some(hook) => {
                let (parts, body) = response.into_parts();
                hook(&parts, &mut attrs);
                Response::from_parts(parts, body)
            }
            None => response,
        };
        span.set_attributes(attrs);
        (response, end_now)
    }

    /// The route was not known at the start (a route slot was set up for it).
    fn route_settled_late(&self) -> bool {
        #[cfg(feature = "axum")]
        return self.slot.is_some();
        #[cfg(not(feature = "axum"))]
        false
    }

    /// Route known only after routing (the layer wraps the whole router): the span name and
    /// `http.route` are settled now (the attribute is set when the span ends).
    fn settle_route(&mut self) {
        #[cfg(feature = "axum")]
        if let (None, Some(route)) = (&self.route, self.slot.as_ref().and_then(|s| s.get())) {
            let (route_value, name) = crate::route::route_and_name(self.label, route);
            let name = match (&self.config.span_name, self.method.as_deref()) {
                (Some(f), Some(method)) => Cow::Owned(f(method, Some(route))),
                _ => name,
            };
            #[cfg(feature = "tracing")]
            self.log_span.record("http.route", &*route_value);
            self.route = Some(route_value);
            if let Some(span) = self.span() {
                span.update_name(name);
            }
        }
    }

    /// End the span and record the measurements. `error` (when given) overrides the
    /// status-derived `error.type`.
    pub(crate) fn end(&mut self, error: Option<&'static str>) {
        if self.done {
            return;
        }
        self.done = true;
        let error = error.or_else(|| self.status.and_then(semconv::server_status_error));
        let end = SystemTime::now().max(self.start);
        self.settle_route();
        if let Some(span) = self.span() {
            let status = self
                .status
                .map(|s| KeyValue::new(attr::HTTP_RESPONSE_STATUS_CODE, i64::from(s.as_u16())));
            // a route known at the start is already among the start attributes
            let route = self
                .route
                .as_ref()
                .filter(|_| self.route_settled_late())
                .map(|r| KeyValue::new(attr::HTTP_ROUTE, StringValue::from(r.clone())));
            let error_attr = error.map(|e| KeyValue::new(attr::ERROR_TYPE, e));
            if status.is_some() || route.is_some() || error_attr.is_some() {
                span.set_attributes([status, route, error_attr].into_iter().flatten());
            }
            if error.is_some() {
                span.set_status(Status::error(""));
            }
            span.end_with_timestamp(end);
        }
        if let Some(m) = &self.metrics {
            let duration = end.duration_since(self.start).unwrap_or_default();
            self.record(m, duration.as_secs_f64(), error);
        }
    }

    fn record(&self, m: &MetricsState, seconds: f64, error: Option<&'static str>) {
        let Some(instruments) = m.instruments(&self.config) else {
            return;
        };
        let status = self
            .status
            .map(|s| KeyValue::new(attr::HTTP_RESPONSE_STATUS_CODE, i64::from(s.as_u16())));
        let route = self
            .route
            .as_ref()
            .map(|r| KeyValue::new(attr::HTTP_ROUTE, StringValue::from(r.clone())));
        let version = m
            .version
            .map(|v| KeyValue::new(attr::NETWORK_PROTOCOL_VERSION, v));
        let plain = error.is_none() && m.server.is_none() && m.labeler.is_none();
        match (plain, status, route, version) {
            // the common case: one array written in place (building a list element by element
            // costs a store-forwarding stall per element)
            (true, Some(status), Some(route), Some(version)) => {
                let attrs = [m.method_attr(), m.scheme_attr(), status, route, version];
                self.record_with(m, instruments, seconds, &attrs);
            }
            (_, status, route, version) => {
                let mut a = AttrList::new();
                a.push(m.method_attr());
                a.push(m.scheme_attr());
                if let Some(status) = status {
                    a.push(status);
                }
                if let Some(route) = route {
                    a.push(route);
                }
                if let Some(e) = error {
                    a.push(KeyValue::new(attr::ERROR_TYPE, e));
                }
                if let Some(version) = version {
                    a.push(version);
                }
                if let Some((addr, port)) = m.server.as_deref() {
                    a.push(KeyValue::new(attr::SERVER_ADDRESS, addr.clone()));
                    a.push(KeyValue::new(attr::SERVER_PORT, *port));
                }
                if let Some(l) = &m.labeler {
                    l.for_each(|kv| a.push(kv.clone()));
                }
                self.record_with(m, instruments, seconds, a.as_slice());
            }
        }
    }

    fn record_with(
        &self,
        m: &MetricsState,
        instruments: &ServerInstruments,
        seconds: f64,
        attrs: &[KeyValue],
    ) {
        instruments.duration.record(seconds, attrs);
        if let Some(h) = &instruments.response_body_size {
            h.record(self.response_bytes, attrs);
        }
        if let (Some(h), Some(n)) = (&instruments.request_body_size, &m.request_bytes) {
            h.record(n.load(Ordering::Relaxed), attrs);
        }
        if let Some(c) = &instruments.active_requests {
            m.add_active(c, -1);
        }
    }
}

impl Drop for RequestState {
    fn drop(&mut self) {
        if !self.done {
            self.end(Some(if self.status.is_some() {
                semconv::ERROR_TYPE_BODY_DROPPED
            } else {
                semconv::ERROR_TYPE_CANCELLED
            }));
        }
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
