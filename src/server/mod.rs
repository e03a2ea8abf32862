//! HTTP server instrumentation: [`OtelServerLayer`] builds [`OtelServer`].
//!
//! # What a request gets
//!
//! One `SERVER` span (SEMCONV §1), its measurements ([`crate::metrics`]), the trace-context
//! response header ([`crate::response_header`]) and a `tracing` span for log correlation
//! (`crate::logs`, feature `tracing`) — once, even when the layer is stacked (on the root router
//! and on a nested router, or twice): the outermost instance marks the request and inner
//! instances pass it through, only recording the route for the outer one.
//!
//! | mode | how | per request |
//! |---|---|---|
//! | spans + duration metric + header + log span | `OtelLayer::server()` (default) | everything below |
//! | metrics only | `.with_spans(false)` | measurements; the caller's context made current when a propagator is configured |
//! | spans only | `.with_metrics(false)` | span, header, log span |
//! | no-op | no-op providers, or no SDK installed | nothing recorded; context passed on when a propagator is configured, else a pure pass-through |
//!
//! | attribute | when |
//! |---|---|
//! | `http.request.method` | always; `_OTHER` for methods outside the known list |
//! | `http.request.method_original` | when the method is `_OTHER` |
//! | `url.path`, `url.scheme` | always (`url.scheme` from `Forwarded`/`X-Forwarded-Proto` only when proxies are trusted) |
//! | `url.query` | when a query was received; values of sensitive keys are `REDACTED` |
//! | `http.route` | when a route matched: full template, nest prefixes included; never on the 404 fallback |
//! | `http.response.status_code` | when a response was produced |
//! | `error.type` | `"500"` etc. for 5xx, `_OTHER` for codes outside 100..=599, the error's type name when the inner service failed, `cancelled`, `response_body_error`, `response_body_dropped` |
//! | `network.protocol.version` | `1.0`, `1.1`, `2`, `3` |
//! | `server.address`, `server.port` | from `:authority`, else `Host` (port defaults to the scheme's) |
//! | `client.address`, `network.peer.address`, `network.peer.port` | from axum's `ConnectInfo<SocketAddr>` (or trusted proxy headers for `client.address`) |
//! | `user_agent.original` | when sent |
//! | `http.request.header.<name>`, `http.response.header.<name>` | only for allow-listed names |
//! | `client.port` | opt-in |
//!
//! Span name: `"{method} {http.route}"`, or `"{method}"` without a route (`HTTP` for `_OTHER`).
//! Attributes known at the start are set at the start, so samplers see them.
//!
//! Status: unset for 1xx–4xx; `Error` for 5xx, codes outside `100..=599`, inner errors and body
//! failures.
//!
//! # When the span ends
//!
//! When the response body reaches its end or is dropped (the last byte, not the response head),
//! so the span covers streaming. Exceptions: a `101 Switching Protocols` response (WebSocket)
//! ends at its head; a body that is already at its end (empty) ends at the head; a
//! `text/event-stream` response can be configured to end at its head with
//! [`OtelServerLayer::with_event_stream_end`]. A response future dropped before the response
//! (client gone) ends the span with `error.type = "cancelled"`.
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
//! `RecordRouteLayer`.

mod body;
mod future;
mod layer;
mod request_body;
mod service;
mod state;

pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use layer::{OtelServerLayer, SpanEnd};
pub use request_body::{Counted, RequestBody, RequestBodyMode, Uncounted};
pub use service::OtelServer;
