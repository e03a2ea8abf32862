//! OpenTelemetry for axum and hyper services and their HTTP clients: tower layers that record
//! spans and metrics under the stable HTTP semantic conventions — and gRPC calls (tonic servers,
//! alone or inside an axum `Router`, and tonic channels) under the RPC conventions ([`grpc`]) —,
//! W3C trace context in and out, the trace id in a response header and on every log line.
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_otel_http::OtelLayer;
//!
//! fn api_router() -> Router {
//!     Router::new().route("/users/{id}", get(|| async { "user" }))
//! }
//!
//! let app: Router = Router::new()
//!     .route("/health", get(|| async { "ok" }))
//!     .nest("/api", api_router())      // nested sub-routers
//!     .layer(OtelLayer::server());      // once, on the root
//! # let _ = app;
//! ```
//!
//! That one line gives, for every request:
//!
//! - one `SERVER` span named after the full route template (`GET /api/users/{id}`), however
//!   often the layer is stacked, ending at the last byte of the response body, with the span's
//!   context current while the handler and the body run ([`server`]);
//! - `http.server.request.duration` with the same value, and opt-in active requests and body
//!   sizes, instruments created once per layer value ([`metrics`]);
//! - `traceresponse: 00-<trace-id>-<span-id>-<flags>` on the response ([`response_header`]);
//! - a `tracing` span carrying `trace_id`/`span_id`/`trace_flags`, so that every log line of
//!   the request can be correlated (`logs`, feature `tracing`).
//!
//! For the calls a handler makes, the same layer on the client side ([`client`]) records a
//! `CLIENT` span per request, a child of the server span, and sends its context along:
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Empty;
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use tower::ServiceBuilder;
//! use tower_otel_http::OtelLayer;
//!
//! let client = ServiceBuilder::new()
//!     .layer(OtelLayer::client()) // a CLIENT span per request, its context sent along
//!     .service(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());
//! # let _ = client;
//! ```
//!
//! [`OtelLayer`] is one type for both sides: `OtelLayer<Server>` and `OtelLayer<Client>`
//! ([`side`]), with the settings both have and those of one side only. By default the global
//! tracer provider, meter provider and propagator are used as they are when requests arrive;
//! pass your own with `with_tracer_provider`, `with_meter_provider` and `with_propagator` (the
//! fastest choice too), and install [`propagation::W3cPropagator`] as the global propagator.
//! Nothing is recorded until an OpenTelemetry SDK with an exporter is installed: the README's
//! "Getting telemetry out" shows the dependency lines, OTLP and Prometheus setups, shutdown and
//! a log filter, each compiled as a doctest.
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `axum` | yes | route templates from axum's `MatchedPath`, peer addresses from `ConnectInfo`, [`route::RecordRouteLayer`], the [`metrics::Labeler`] extractor |
//! | `tracing` | yes | log correlation: a `tracing` span per request with `trace_id`/`span_id`/`trace_flags`, and formatters that write them on every line (`logs`) |
//! | `hyper-client` | no | for hyper-util's legacy client: `error.type` from its errors and hyper's, `network.peer.*` from its connection info |
//! | `reqwest` | no | `OtelLayer<Client>` is a `reqwest_middleware::Middleware` (implies `hyper-client`; see [`client`]) |
//! | `otlp` | no | `setup::init()`: the SDK from the `OTEL_*` environment in one call (OTLP, stdout or none per signal, the propagator, a log subscriber, a guard that shuts down within a bounded time) |
//! | `otlp-tls` | no | `https` OTLP endpoints for `setup::init()`: rustls (aws-lc-rs) with the system's roots and the certificate variables `OTEL_EXPORTER_OTLP_CERTIFICATE`, `_CLIENT_CERTIFICATE`, `_CLIENT_KEY` (implies `otlp`) |
//! | `prometheus` | no | `Setup::with_prometheus()` / `OTEL_METRICS_EXPORTER=prometheus`: a `/metrics` endpoint to mount, backed by the set-up's meter provider (implies `otlp`) |
//! | `tonic` | no | peer addresses from tonic's `Server` (`TcpConnectInfo`), `error.type` of a tonic `Channel`'s transport errors (see [`grpc`]) |
//!
//! ## Modules
//!
//! - [`server`], [`client`]: what each side records, and the settings of one side only.
//! - [`side`]: the two sides as types.
//! - [`body`]: the response body every instrumented response carries, request-body counting.
//! - [`error`]: the `error.type` vocabulary and error classification.
//! - [`grpc`]: gRPC calls (tonic servers and channels) under the RPC conventions.
//! - [`metrics`]: the HTTP metrics and [`metrics::Labeler`].
//! - [`response_header`]: the trace-context response header.
//! - `logs` (feature `tracing`): log correlation and formatters.
//! - [`propagation`]: W3C Trace Context Level 2 owned by the crate: the propagator to install, strict `traceparent`, `tracestate` ([`propagation::Tracestate`]), the random-trace-id flag carried to every outgoing call.
//! - [`route`]: where the server finds a request's route template.
//! - [`semconv`]: the semantic-convention constants (known methods, redacted query keys, ...).
//!
//! Specifications followed: the HTTP semantic conventions
//! (<https://opentelemetry.io/docs/specs/semconv/http/>), the RPC (gRPC) semantic conventions
//! (<https://opentelemetry.io/docs/specs/semconv/rpc/grpc/>) and W3C Trace Context
//! (<https://www.w3.org/TR/trace-context-2/>).

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations, rust_2018_idioms)]

pub mod body;
pub mod client;
mod config;
mod convention;
pub mod error;
pub mod grpc;
mod layer;
mod lifecycle;
#[cfg(feature = "tracing")]
pub mod logs;
pub mod metrics;
mod otel;
pub mod propagation;
#[cfg(test)]
mod properties;
pub mod response_header;
pub mod route;
pub mod semconv;
pub mod server;
mod service;
#[cfg(feature = "otlp")]
pub mod setup;
pub mod side;

/// The README's code blocks, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub use layer::{OtelClientLayer, OtelLayer, OtelServerLayer};
pub use service::{OtelClient, OtelServer, OtelService, ResponseFuture};
