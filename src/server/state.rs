//! Per-request state: the span's context and what is needed to end it exactly once, on every
//! path (response head, last body byte, body error, dropped future, dropped body).

use std::sync::Arc;
use std::time::SystemTime;

use http::{header, Response, StatusCode};
use opentelemetry::trace::{Status, TraceContextExt};
use opentelemetry::{Context, KeyValue};
use opentelemetry_semantic_conventions::attribute as attr;

use super::layer::{Config, SpanEnd};
use crate::semconv;

pub(crate) struct RequestState {
    pub(crate) cx: Context,
    start: SystemTime,
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    method: http::Method,
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    label: &'static str,
    route_known: bool,
    #[cfg(feature = "axum")]
    slot: Option<Arc<crate::route::RouteSlot>>,
    config: Arc<Config>,
    recording: bool,
    head_sent: bool,
    error: Option<&'static str>,
    done: bool,
}

pub(crate) struct NewState {
    pub(crate) cx: Context,
    pub(crate) start: SystemTime,
    pub(crate) method: http::Method,
    pub(crate) label: &'static str,
    pub(crate) route_known: bool,
    #[cfg(feature = "axum")]
    pub(crate) slot: Option<Arc<crate::route::RouteSlot>>,
    pub(crate) config: Arc<Config>,
}

impl RequestState {
    pub(crate) fn new(n: NewState) -> Self {
        let recording = n.cx.span().is_recording();
        RequestState {
            cx: n.cx,
            start: n.start,
            method: n.method,
            label: n.label,
            route_known: n.route_known,
            #[cfg(feature = "axum")]
            slot: n.slot,
            config: n.config,
            recording,
            head_sent: false,
            error: None,
            done: false,
        }
    }

    /// Record the response head. Returns `true` when the span must end now (no body to wait for,
    /// a protocol upgrade, or a stream configured to end at its head).
    pub(crate) fn on_response<B: http_body::Body>(
        &mut self,
        response: Response<B>,
    ) -> (Response<B>, bool) {
        self.head_sent = true;
        let status = response.status();
        self.error = semconv::server_status_error(status);
        let end_now = status == StatusCode::SWITCHING_PROTOCOLS
            || response.body().is_end_stream()
            || (self.config.event_stream_end == SpanEnd::Head && is_event_stream(&response));
        if !self.recording {
            return (response, end_now);
        }
        let status_attr =
            KeyValue::new(attr::HTTP_RESPONSE_STATUS_CODE, i64::from(status.as_u16()));
        let config = self.config.clone();
        if config.response_headers.is_empty() && config.response_hook.is_none() {
            // common case: no allocation
            self.cx.span().set_attribute(status_attr);
            let mut route = Vec::new();
            self.settle_route(&mut route);
            if !route.is_empty() {
                self.cx.span().set_attributes(route);
            }
            return (response, end_now);
        }
        let mut attrs: Vec<KeyValue> = vec![status_attr];
        self.settle_route(&mut attrs);
        semconv::capture_headers(response.headers(), &config.response_headers, &mut attrs);
        let response = match &config.response_hook {
            Some(hook) => {
                let (parts, body) = response.into_parts();
                hook(&parts, &mut attrs);
                Response::from_parts(parts, body)
            }
            None => response,
        };
        self.cx.span().set_attributes(attrs);
        (response, end_now)
    }

    /// Route known only after routing (the layer wraps the whole router): name and
    /// `http.route` are set now.
    fn settle_route(&mut self, _attrs: &mut Vec<KeyValue>) {
        if self.route_known {
            return;
        }
        #[cfg(feature = "axum")]
        if let Some(route) = self.slot.as_ref().and_then(|s| s.get()) {
            self.route_known = true;
            let (route_value, name) = crate::route::route_and_name(self.label, route);
            _attrs.push(KeyValue::new(attr::HTTP_ROUTE, route_value));
            let name = match &self.config.span_name {
                Some(f) => std::borrow::Cow::Owned(f(&self.method, Some(route))),
                None => name,
            };
            self.cx.span().update_name(name);
        }
    }

    /// End the span. `error` (when given) overrides the status-derived `error.type`.
    pub(crate) fn end(&mut self, error: Option<&'static str>) {
        if self.done {
            return;
        }
        self.done = true;
        let error = error.or(self.error);
        let end = SystemTime::now().max(self.start);
        if self.recording && !self.head_sent {
            let mut attrs = Vec::new();
            self.settle_route(&mut attrs);
            if !attrs.is_empty() {
                self.cx.span().set_attributes(attrs);
            }
        }
        let span = self.cx.span();
        if self.recording {
            if let Some(e) = error {
                span.set_attribute(KeyValue::new(attr::ERROR_TYPE, e));
                span.set_status(Status::error(""));
            }
        }
        span.end_with_timestamp(end);
    }
}

impl Drop for RequestState {
    fn drop(&mut self) {
        if !self.done {
            self.end(Some(if self.head_sent {
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
