//! HTTP client instrumentation: [`OtelClientLayer`] builds [`OtelClient`] for any tower HTTP
//! client (hyper-util's legacy `Client`, a `ServiceBuilder` stack around it, ...), and with the
//! `reqwest` feature the same layer is a `reqwest_middleware::Middleware`.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Empty;
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use tower::ServiceBuilder;
//! use tower_otel_http::OtelLayer;
//!
//! let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
//! let client = ServiceBuilder::new()
//!     .layer(OtelLayer::client()) // one CLIENT span and measurement per request sent
//!     .service(client);
//! # let _ = client;
//! ```
//!
//! # What a request gets
//!
//! One `CLIENT` span per physical attempt (a retry or a redirect that resends is a new span),
//! a child of the current OpenTelemetry context — inside a handler served through the server
//! layer, the server span, with no glue code — and `http.client.request.duration` with the
//! same duration. The span's context is sent with the request (`traceparent`, `tracestate`,
//! `baggage`, through the configured or global propagator; W3C Trace Context when none is
//! installed) and is current while the inner client is polled. Requests already instrumented
//! by an outer instance of this layer pass through; a request forwarded from a server handler
//! carries the *server* layer's mark, which the client ignores.
//!
//! | attribute | when |
//! |---|---|
//! | `http.request.method` | always; `_OTHER` for methods outside the known list |
//! | `http.request.method_original` | when the method is `_OTHER` |
//! | `server.address`, `server.port` | from the URL (the port defaults to the scheme's), else `Host` |
//! | `url.full` | always: credentials replaced by `REDACTED:REDACTED`, sensitive query values by `REDACTED` |
//! | `url.template` | when the request carries a [`UrlTemplate`] (the span name is then `"{method} {template}"`) |
//! | `http.request.resend_count` | when the request is a resend (see [`Attempts`]) |
//! | `http.response.status_code` | when a response arrived |
//! | `network.protocol.version` | from the response |
//! | `network.peer.address`, `network.peer.port` | from the connection (feature `hyper-client`: hyper-util's `HttpInfo`, also reqwest's) |
//! | `error.type` | the status code for ≥ 400; for transport failures see [`crate::error`] (`connect`, `timeout`, `connection_closed`, `response_body`, ...) |
//! | `http.request.header.<name>`, `http.response.header.<name>` | only for allow-listed names |
//!
//! Span name: `"{method}"`, or `"{method} {url.template}"` (`HTTP` for `_OTHER`).
//!
//! Status: `Error` for status ≥ 400 and transport failures. A caller that drops the request
//! future or the response body (say, after reading the status) is not an error: the status is
//! left unset and no `error.type` is recorded.
//!
//! # When the request ends
//!
//! When the caller has read the response body to its end (or its declared length), or drops
//! it: the span and the duration cover the whole exchange, body included, like Go's otelhttp.
//! A response without a body (`HEAD`, `204`, `304`, an empty body) ends at its head.
//!
//! # Per request
//!
//! Extensions on the outgoing request (`http::Request::extensions_mut`, or reqwest-middleware's
//! `RequestBuilder::with_extension`): [`UrlTemplate`] names the span after a low-cardinality
//! template, [`NoPropagation`] keeps trace context off this request, [`Attempts`] counts
//! resends for a tower retry layer placed outside this layer. The span context of the call is
//! put into the response's extensions (an [`opentelemetry::trace::SpanContext`]), so the caller
//! can log its trace id.

mod layer;
#[cfg(feature = "reqwest")]
mod reqwest;
mod service;
mod start;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

pub use crate::lifecycle::{ResponseBody, ResponseFuture};
pub use crate::request_body::{Counted, RequestBody, RequestBodyMode, Uncounted};
pub(crate) use layer::ClientOptions;
pub use layer::OtelClientLayer;
pub use service::OtelClient;

/// A low-cardinality template of the request's URL (`/users/{id}`), recorded as `url.template`
/// and in the span name (`GET /users/{id}`). Put it into the request's extensions.
///
/// ```
/// use tower_otel_http::client::UrlTemplate;
///
/// let mut req = http::Request::get("http://api.internal/users/42").body(()).unwrap();
/// req.extensions_mut().insert(UrlTemplate::new("/users/{id}"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlTemplate(Cow<'static, str>);

impl UrlTemplate {
    /// A template; keep its values bounded (never an id or a raw path).
    #[must_use]
    pub fn new(template: impl Into<Cow<'static, str>>) -> Self {
        UrlTemplate(template.into())
    }

    /// The template.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Put into a request's extensions to keep trace context (`traceparent`, `tracestate`,
/// `baggage`, and the headers of the propagator in use) off it: none is added, and any the
/// request carries (a proxy forwarding its caller's headers) is removed. The request is still
/// recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoPropagation;

/// Counts the attempts of one logical request, so that resends get
/// `http.request.resend_count`.
///
/// The reqwest middleware keeps one by itself (reqwest-retry resends with the same
/// extensions). A tower retry layer outside the client layer resends a clone of the original
/// request: put an `Attempts` into that request's extensions and have the retry policy clone
/// the extensions with the request; every clone shares the count.
///
/// ```
/// use tower_otel_http::client::Attempts;
///
/// let mut req = http::Request::get("http://api.internal/").body(()).unwrap();
/// req.extensions_mut().insert(Attempts::new());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Attempts(Arc<AtomicU32>);

impl Attempts {
    /// A count at zero.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Attempts started so far.
    #[must_use]
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    /// Count an attempt; returns how many were made before it (its resend count).
    pub(crate) fn next(&self) -> u32 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// The mark an instrumenting client instance leaves on the outgoing request (distinct from the
/// server's): an inner instance passes a marked request through.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientMarker;

/// The peer of the connection a response came over (hyper-util's `HttpInfo`).
pub(crate) fn peer_of(ext: &http::Extensions) -> Option<SocketAddr> {
    #[cfg(feature = "hyper-client")]
    return ext
        .get::<hyper_util::client::legacy::connect::HttpInfo>()
        .map(|i| i.remote_addr());
    #[cfg(not(feature = "hyper-client"))]
    {
        let _ = ext;
        None
    }
}
