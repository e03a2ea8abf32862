//! The client side: what [`OtelLayer::client()`](crate::OtelLayer::client) records around any
//! tower HTTP client (hyper-util's legacy `Client`, a `ServiceBuilder` stack around it, ...) —
//! and, with the `reqwest` feature, as a `reqwest_middleware::Middleware` — and the settings and
//! per-request extensions only a client has.
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
//! same duration. The span's context is sent with the request through the configured or global
//! propagator (`traceparent` and `tracestate` with W3C Trace Context — the crate's
//! [`W3cPropagator`](crate::propagation::W3cPropagator) or the SDK's, and W3C Trace Context when
//! none is installed; `baggage` only when the propagator carries it, e.g. a composite with the
//! SDK's `BaggagePropagator`) and is current while the inner client is polled. Requests already instrumented
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
//! put into the response's extensions as a [`ClientSpanContext`], so the caller can log its trace
//! id.
//!
//! # As a reqwest middleware
//!
//! With the `reqwest` feature, `OtelLayer<Client>` is a `reqwest_middleware::Middleware`: one
//! `CLIENT` span and measurement per attempt, the trace context sent along. Place it after a
//! retry middleware, so that every attempt is seen (resends get `http.request.resend_count`).
//!
//! ```
//! # #[cfg(feature = "reqwest")] {
//! use reqwest_middleware::ClientBuilder;
//! use tower_otel_http::OtelLayer;
//!
//! let client = ClientBuilder::new(reqwest::Client::new())
//!     .with(OtelLayer::client())
//!     .build();
//! # let _ = client;
//! # }
//! ```
//!
//! Redirects that reqwest follows by itself happen inside one call: the span covers them all
//! and records the final response, and every hop gets the first hop's headers — trace context
//! included, whatever [`with_propagation_hosts`](crate::OtelLayer::with_propagation_hosts)
//! says about the next host. For a span per hop, or with a host list, disable reqwest's
//! redirects (`redirect::Policy::none()`) or stop them at hosts not on the list:
//!
//! ```
//! # #[cfg(feature = "reqwest")] {
//! let policy = reqwest::redirect::Policy::custom(|attempt| {
//!     match attempt.url().host_str() {
//!         Some(h) if h.ends_with(".svc.cluster.local") => attempt.follow(),
//!         _ => attempt.stop(),
//!     }
//! });
//! let client = reqwest::Client::builder().redirect(policy).build();
//! # let _ = client;
//! # }
//! ```

mod layer;
#[cfg(feature = "reqwest")]
mod reqwest;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use http::request::Parts;
use http::Response;
use opentelemetry::trace::{SpanContext, SpanKind};
use opentelemetry::KeyValue;
use opentelemetry_semantic_conventions::{attribute as attr, metric as m};

use crate::config::Config;
use crate::lifecycle::{Record, Started};
use crate::side::{sealed::Rules, Client, HttpMetricNames, Start};

pub(crate) use layer::ClientOptions;

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

/// The context of the `CLIENT` span a response belongs to, put into the response's extensions
/// (a type of this crate, so that no other middleware's value is taken for it).
///
/// ```
/// use tower_otel_http::client::ClientSpanContext;
///
/// fn trace_id_of<B>(response: &http::Response<B>) -> Option<String> {
///     let cx = response.extensions().get::<ClientSpanContext>()?;
///     Some(cx.span_context().trace_id().to_string())
/// }
/// # let _ = trace_id_of::<()>;
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ClientSpanContext(SpanContext);

impl ClientSpanContext {
    /// The span context of the call.
    #[must_use]
    pub fn span_context(&self) -> &SpanContext {
        &self.0
    }
}

#[allow(private_interfaces)] // the rules are the crate's own: sealed
impl Rules for Client {
    type Options = ClientOptions;
    const NAME: &'static str = "client";
    const KIND: SpanKind = SpanKind::Client;
    const WHO: crate::convention::Who = crate::convention::Who::Client;
    const HTTP_METRICS: HttpMetricNames = HttpMetricNames {
        duration: m::HTTP_CLIENT_REQUEST_DURATION,
        rpc_duration: m::RPC_CLIENT_CALL_DURATION,
        active_requests: m::HTTP_CLIENT_ACTIVE_REQUESTS,
        request_body_size: m::HTTP_CLIENT_REQUEST_BODY_SIZE,
        response_body_size: m::HTTP_CLIENT_RESPONSE_BODY_SIZE,
        who: "client",
    };
    const TEMPLATE_KEY: &'static str = attr::URL_TEMPLATE;
    const VERSION_AT_END: bool = true;

    fn template_on_metrics(options: &ClientOptions) -> bool {
        options.metrics_url_template
    }

    fn start(config: &Arc<Config<Client>>, parts: &mut Parts, counts_body: bool) -> Start<Self> {
        if parts.extensions.get::<ClientMarker>().is_some() {
            return (Started::Pass(None), None);
        }
        let started = if !config.admits(parts) {
            (Started::Pass(None), None)
        } else if crate::convention::grpc::is_grpc(&parts.method, &parts.headers) {
            crate::convention::grpc::client::start(config, parts)
        } else {
            crate::convention::http::client::start(config, parts, counts_body)
        };
        // inner instances pass it through, recorded here or filtered out
        parts.extensions.insert(ClientMarker);
        started
    }

    /// The protocol version and the peer of the response; the span's context into its
    /// extensions.
    fn head<B>(record: &mut Record<Self>, response: &mut Response<B>) {
        record.set_version(response.version());
        if let Some(span) = record.span() {
            if let Some(peer) = peer_of(response.extensions()) {
                span.set_attributes([
                    KeyValue::new(attr::NETWORK_PEER_ADDRESS, peer.ip().to_string()),
                    KeyValue::new(attr::NETWORK_PEER_PORT, i64::from(peer.port())),
                ]);
            }
            let sc = span.span_context().clone();
            response.extensions_mut().insert(ClientSpanContext(sc));
        }
    }

    fn ends_at_head<B>(_: &ClientOptions, _: &Response<B>) -> bool {
        false
    }
}

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
