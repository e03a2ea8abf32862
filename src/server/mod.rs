//! The server side: what [`OtelLayer::server()`](crate::OtelLayer::server) records, and the
//! settings only a server has.
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_otel_http::{server::SpanEnd, OtelLayer};
//!
//! let app: Router = Router::new()
//!     .route("/events", get(|| async { "..." }))
//!     .layer(OtelLayer::server().with_event_stream_end(SpanEnd::Head));
//! # let _ = app;
//! ```
//!
//! # What a request gets
//!
//! One `SERVER` span, its measurements ([`crate::metrics`]), the trace-context response header
//! ([`crate::response_header`]) and a `tracing` span for log correlation (`crate::logs`,
//! feature `tracing`) — once, even when the layer is stacked (on the root router and on a
//! nested router, or twice): the outermost instance marks the request and inner instances pass
//! it through, only recording the route for the outer one.
//!
//! | mode | how | per request |
//! |---|---|---|
//! | spans + duration metric + header + log span | `OtelLayer::server()` (default) | everything below |
//! | metrics only | `.with_spans(false)` | measurements; the caller's context made current |
//! | spans only | `.with_metrics(false)` | span, header, log span |
//! | nothing recorded | no-op providers, or no SDK installed (see below) | the caller's context made current when it carries a trace or baggage; else a pass-through |
//!
//! **With no OpenTelemetry SDK installed** and the defaults (global providers), nothing is
//! recorded and no response header is added, but opentelemetry's no-op tracer can only be
//! recognised by the spans it makes: each request builds its span's attributes, reads the clock
//! and asks the global tracer, which hands back a non-recording span — the price of the first
//! request after `global::set_tracer_provider` being traced on every thread. The no-op global
//! meter provider is recognised by being zero-sized: nothing is measured. While a global
//! propagator is installed, the caller's context is extracted so that it is current in the
//! handler (never an untrusted caller's: see
//! [`with_public_endpoint`](crate::OtelLayer::with_public_endpoint)). Give a `NoopTracerProvider`
//! with `with_tracer_provider` (or turn spans off) to pay nothing for spans.
//! `BENCH_NO_SDK=1 cargo bench --bench server` measures it.
//!
//! | attribute | when |
//! |---|---|
//! | `http.request.method` | always; `_OTHER` for methods outside the known list |
//! | `http.request.method_original` | when the method is `_OTHER` |
//! | `url.path`, `url.scheme` | always (`url.scheme` from `Forwarded`/`X-Forwarded-Proto` only when proxies are trusted) |
//! | `url.query` | when a query was received; values of sensitive keys are `REDACTED` |
//! | `http.route` | when a route matched: full template, nest prefixes included; never on the 404 fallback |
//! | `http.response.status_code` | when a response was produced |
//! | `error.type` | see [`crate::error`]: `"500"` etc. for 5xx, `_OTHER`, `cancelled`, `response_body`, `response_body_dropped`, `panic`, or the inner error's classification |
//! | `network.protocol.version` | `1.0`, `1.1`, `2`, `3` |
//! | `server.address`, `server.port` | from `Forwarded: host=` / `X-Forwarded-Host` when proxies are trusted, else `:authority`, else `Host` (port defaults to the scheme's) |
//! | `client.address`, `network.peer.address`, `network.peer.port` | from axum's `ConnectInfo<SocketAddr>` (or trusted proxy headers for `client.address`) |
//! | `user_agent.original` | when sent |
//! | `http.request.header.<name>`, `http.response.header.<name>` | only for allow-listed names |
//! | `client.port` | opt-in |
//!
//! Span name: `"{method} {http.route}"`, or `"{method}"` without a route (`HTTP` for `_OTHER`).
//! Attributes known at the start are set at the start, so samplers see them.
//!
//! Status: unset for 1xx–4xx; `Error` for 5xx, codes outside `100..=599`, inner errors, panics,
//! body failures and requests the client abandoned.
//!
//! # When the request ends
//!
//! The span ends and the duration is measured (on a monotonic clock; the span's end timestamp
//! is its start plus that duration) when the last byte of the response body has gone out:
//!
//! | response | ends | recorded as |
//! |---|---|---|
//! | a body, streamed or not | at its end (`None`, or `is_end_stream()` after a frame) | success |
//! | a declared length (`Content-Length`, or an exact size hint) | once that many bytes went out, even if the body never says it ended (hyper then drops it unpolled) | success |
//! | to `HEAD`; `1xx` (a `101` upgrade such as a WebSocket); `204`; `304`; `2xx` to `CONNECT`; an empty body | at the head: no body will be sent (hyper and axum drop it unpolled) | success |
//! | `text/event-stream` with [`SpanEnd::Head`] | at the head | success |
//! | body failed | then | `error.type = "response_body"` |
//! | body dropped before its end (client gone mid-body) | then | `error.type = "response_body_dropped"`, the status kept |
//! | response future dropped before the response (client gone, outer timeout) | then | `error.type = "cancelled"` |
//! | a panic unwinding through the layer | then | `error.type = "panic"` |
//!
//! A handler returning a `1xx` other than `101` is recorded as it returned it; hyper itself
//! turns such a final response into a `500` on the wire.
//!
//! # Where the route comes from
//!
//! With `Router::layer` on the root router (the recommended placement), axum has already routed
//! the request and `MatchedPath` holds the full template (`/api/v1/users/{id}`): span name and
//! `http.route` are set at the start. Applied around the whole router instead (e.g. with
//! `ServiceBuilder`, for middleware that must run before routing), the layer cannot see the
//! route: add [`RecordRouteLayer`](crate::route::RecordRouteLayer) (or a second instance of this
//! layer) with `Router::layer` and the route is filled in after routing, then set on the span
//! when the response comes back. Routes added with `nest_service` are opaque to axum's
//! `MatchedPath`, so they get no `http.route` (and the span name is the method alone) unless
//! the nested service is itself an axum `Router` carrying an instance of this layer or a
//! [`RecordRouteLayer`](crate::route::RecordRouteLayer).

mod layer;
pub(crate) mod stack;

use std::sync::Arc;

use http::request::Parts;
use http::{header, Response};
use opentelemetry::trace::SpanKind;
use opentelemetry_semantic_conventions::{attribute as attr, metric as m};

use crate::config::Config;
use crate::lifecycle::{Record, Started};
use crate::side::{sealed::Rules, HttpMetricNames, Server, Start};

pub(crate) use layer::ServerOptions;
pub use layer::{PublicEndpoint, SpanEnd};

#[allow(private_interfaces)] // the rules are the crate's own: sealed
impl Rules for Server {
    type Options = ServerOptions;
    const NAME: &'static str = "server";
    const KIND: SpanKind = SpanKind::Server;
    const WHO: crate::convention::Who = crate::convention::Who::Server;
    const HTTP_METRICS: HttpMetricNames = HttpMetricNames {
        duration: m::HTTP_SERVER_REQUEST_DURATION,
        rpc_duration: m::RPC_SERVER_CALL_DURATION,
        active_requests: m::HTTP_SERVER_ACTIVE_REQUESTS,
        request_body_size: m::HTTP_SERVER_REQUEST_BODY_SIZE,
        response_body_size: m::HTTP_SERVER_RESPONSE_BODY_SIZE,
        who: "server",
    };
    const TEMPLATE_KEY: &'static str = attr::HTTP_ROUTE;
    const VERSION_AT_END: bool = false;

    fn template_on_metrics(_: &ServerOptions) -> bool {
        true
    }

    fn start(config: &Arc<Config<Server>>, parts: &mut Parts, counts_body: bool) -> Start<Self> {
        // An outer instance already instruments this request (and we may run after routing:
        // the route is recorded for it).
        if stack::is_inner(&parts.extensions) {
            return (Started::Pass(None), None);
        }
        if !config.admits(parts) {
            stack::mark(&mut parts.extensions, true);
            (Started::Pass(None), None)
        } else if crate::convention::grpc::is_grpc(&parts.method, &parts.headers) {
            crate::convention::grpc::server::start(config, parts)
        } else {
            crate::convention::http::server::start(config, parts, counts_body)
        }
    }

    /// The trace-context response header.
    fn head<B>(record: &mut Record<Self>, response: &mut Response<B>) {
        if let Some(tp) = record
            .span_cx()
            .and_then(crate::propagation::outgoing_traceparent)
        {
            record
                .config()
                .side
                .response_header
                .apply(response.headers_mut(), &tp);
        }
    }

    fn ends_at_head<B>(options: &ServerOptions, response: &Response<B>) -> bool {
        options.event_stream_end == SpanEnd::Head && is_event_stream(response)
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
