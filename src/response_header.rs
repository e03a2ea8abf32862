//! The trace context of the server span in a response header, so that a support
//! engineer can paste the trace id of a failed response into Grafana.
//!
//! ```
//! use tower_otel_http::{response_header::ResponseHeader, OtelLayer};
//!
//! let layer = OtelLayer::server()
//!     .with_response_header(ResponseHeader::TraceId(http::HeaderName::from_static("x-trace-id")));
//! # let _ = layer;
//! ```
//!
//! - [`ResponseHeader::TraceResponse`] (default): `traceresponse: 00-<trace-id>-<span-id>-<flags>`
//!   (W3C Trace Context Level 2 draft);
//! - [`ResponseHeader::ServerTiming`]: `server-timing: trace;desc="00-<trace-id>-<span-id>-<flags>"`,
//!   appended to any `server-timing` metrics the handler set (readable by browsers' Resource Timing
//!   API);
//! - [`ResponseHeader::TraceId`]: a header of your choice carrying the trace id alone, e.g.
//!   `x-trace-id: 4bf92f3577b34da6a3ce929d0e0e4736`;
//! - [`ResponseHeader::Off`].
//!
//! A header the handler already set is never overwritten. Unsampled spans get the header too
//! (flags `00`): the trace id still identifies the request in logs. The value is formatted on the
//! stack; the only allocation is the header value itself.
//!
//! The server layer adds the header itself ([`OtelServerLayer::with_response_header`]); users of
//! other span layers can add [`TraceResponseHeaderLayer`] inside their span layer: it reads
//! [`opentelemetry::Context::current()`] when the request is called.
//!
//! [`OtelServerLayer::with_response_header`]: crate::OtelLayer::with_response_header

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context as TaskContext, Poll};

use http::header::ACCESS_CONTROL_EXPOSE_HEADERS;
use http::{HeaderMap, HeaderName, HeaderValue, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

/// The `server-timing` header name.
const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// The `traceresponse` header name.
pub const TRACERESPONSE: HeaderName = HeaderName::from_static("traceresponse");

/// Which response header carries the server span's trace context.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResponseHeader {
    /// `traceresponse: 00-<trace-id>-<span-id>-<flags>` (the default).
    #[default]
    TraceResponse,
    /// `server-timing: trace;desc="00-<trace-id>-<span-id>-<flags>"`, appended.
    ServerTiming,
    /// This header with the trace id alone (32 lowercase hex digits).
    TraceId(HeaderName),
    /// No header.
    Off,
}

/// Response-header settings: which header, and whether browsers may read it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct HeaderConfig {
    pub(crate) header: ResponseHeader,
    pub(crate) expose: bool,
}

impl HeaderConfig {
    /// Add the header for the outgoing `traceparent` `tp` (the flags as they go on:
    /// [`crate::propagation::outgoing_trace_flags`]) to `headers` unless it is off or the handler set
    /// the header already.
    pub(crate) fn apply(&self, headers: &mut HeaderMap, tp: &[u8; 55]) {
        match &self.header {
            ResponseHeader::Off => {}
            ResponseHeader::TraceResponse => {
                if let http::header::Entry::Vacant(e) = headers.entry(TRACERESPONSE) {
                    if let Ok(v) = HeaderValue::from_bytes(tp) {
                        e.insert(v);
                        self.expose(headers, &TRACERESPONSE);
                    }
                }
            }
            ResponseHeader::ServerTiming => {
                let already = headers.get_all(SERVER_TIMING).iter().any(|v| {
                    v.as_bytes().split(|b| *b == b',').any(|m| {
                        let m = m.trim_ascii_start();
                        m == b"trace" || m.starts_with(b"trace;")
                    })
                });
                if already {
                    return;
                }
                let mut v = [0u8; 12 + 55 + 1];
                v[..12].copy_from_slice(b"trace;desc=\"");
                v[12..67].copy_from_slice(tp);
                v[67] = b'"';
                if let Ok(v) = HeaderValue::from_bytes(&v) {
                    headers.append(SERVER_TIMING, v);
                    self.expose(headers, &SERVER_TIMING);
                }
            }
            ResponseHeader::TraceId(name) => {
                if let http::header::Entry::Vacant(e) = headers.entry(name) {
                    if let Ok(v) = HeaderValue::from_bytes(&tp[3..35]) {
                        e.insert(v);
                        self.expose(headers, name);
                    }
                }
            }
        }
    }

    /// List `name` in `access-control-expose-headers` when configured (unless listed already or
    /// `*`).
    fn expose(&self, headers: &mut HeaderMap, name: &HeaderName) {
        if !self.expose {
            return;
        }
        let listed = headers
            .get_all(ACCESS_CONTROL_EXPOSE_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|n| {
                let n = n.trim();
                n == "*" || n.eq_ignore_ascii_case(name.as_str())
            });
        if !listed {
            // shares the name's bytes: no allocation
            headers.append(
                ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from(name.clone()),
            );
        }
    }
}

/// A standalone layer that adds the trace context of the current span to responses, for users
/// whose spans come from another layer (place it inside that layer).
///
/// ```
/// use axum::{routing::get, Router};
/// use tower_otel_http::response_header::{ResponseHeader, TraceResponseHeaderLayer};
///
/// let app: Router = Router::new()
///     .route("/", get(|| async { "ok" }))
///     .layer(TraceResponseHeaderLayer::new().with_header(ResponseHeader::TraceId(
///         http::HeaderName::from_static("x-trace-id"),
///     )));
/// # let _ = app;
/// ```
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct TraceResponseHeaderLayer {
    config: HeaderConfig,
}

impl TraceResponseHeaderLayer {
    /// `traceresponse`, not exposed to browsers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Which header to write.
    pub fn with_header(mut self, header: ResponseHeader) -> Self {
        self.config.header = header;
        self
    }

    /// Also list the header in `access-control-expose-headers`, so that browser code may read
    /// it from a cross-origin response.
    pub fn with_cors_expose(mut self, expose: bool) -> Self {
        self.config.expose = expose;
        self
    }
}

impl<S> Layer<S> for TraceResponseHeaderLayer {
    type Service = TraceResponseHeader<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceResponseHeader {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service built by [`TraceResponseHeaderLayer`].
#[derive(Clone, Debug)]
pub struct TraceResponseHeader<S> {
    inner: S,
    config: HeaderConfig,
}

impl<S, Req, B> Service<Req> for TraceResponseHeader<S>
where
    S: Service<Req, Response = Response<B>>,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = TraceResponseHeaderFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // the ids and the flags as they go on, on the stack
        let traceparent =
            opentelemetry::Context::map_current(crate::propagation::outgoing_traceparent);
        TraceResponseHeaderFuture {
            inner: self.inner.call(req),
            traceparent,
            config: self.config.clone(),
        }
    }
}

pin_project! {
    /// Response future of [`TraceResponseHeader`].
    pub struct TraceResponseHeaderFuture<F> {
        #[pin]
        inner: F,
        traceparent: Option<[u8; 55]>,
        config: HeaderConfig,
    }
}

impl<F> std::fmt::Debug for TraceResponseHeaderFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceResponseHeaderFuture")
            .field(
                "traceparent",
                &self
                    .traceparent
                    .as_ref()
                    .map(|t| crate::propagation::ascii(t)),
            )
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for TraceResponseHeaderFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = ready!(this.inner.poll(cx));
        if let (Ok(resp), Some(tp)) = (&mut result, this.traceparent.as_ref()) {
            this.config.apply(resp.headers_mut(), tp);
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::propagation::outgoing_traceparent;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry::Context;

    fn cx(flags: u8) -> Context {
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::new(flags),
            false,
            TraceState::default(),
        ))
    }

    #[test]
    fn formats_traceparent_on_the_stack() {
        assert_eq!(
            &outgoing_traceparent(&cx(1)).unwrap(),
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(
            &outgoing_traceparent(&cx(0)).unwrap()[53..],
            b"00",
            "unsampled keeps flags 00"
        );
        assert_eq!(
            &outgoing_traceparent(&cx(0xff)).unwrap()[53..],
            b"03",
            "reserved bits sent as zero"
        );
    }

    #[test]
    fn invalid_context_has_no_traceparent() {
        assert!(outgoing_traceparent(&Context::new()).is_none());
        let mut h = HeaderMap::new();
        HeaderConfig::default().apply(&mut h, &outgoing_traceparent(&cx(1)).unwrap());
        assert_eq!(
            h.get("traceresponse").unwrap(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }
}
