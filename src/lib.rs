//! # tower-otel-http
//!
//! Composable [tower](https://docs.rs/tower) layers that give HTTP servers (axum, hyper, tonic)
//! OpenTelemetry traces that follow the stable HTTP semantic conventions, with W3C trace
//! context continued from the caller.
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
//! Every route gets its full template (`GET /api/users/{id}`), one span per request however
//! often the layer is stacked, the span ends at the last byte of the response body, and the
//! span's context is current while the handler and the body run.
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `axum` | yes | route templates from axum's `MatchedPath`, peer addresses from `ConnectInfo`, [`route::RecordRouteLayer`], the [`metrics::Labeler`] extractor |
//! | `tracing` | yes | log correlation: a `tracing` span per request with `trace_id`/`span_id`/`trace_flags`, and formatters that write them on every line (`logs`) |
//!
//! ## Modules
//!
//! - [`server`]: the server layer and what it records.
//! - [`metrics`]: the HTTP metrics and [`metrics::Labeler`].
//! - [`response_header`]: the trace-context response header.
//! - `logs` (feature `tracing`): log correlation and formatters.
//! - [`propagation`]: strict `traceparent` validation and header carriers.
//! - [`route`]: route sources and the route slot.
//! - [`semconv`]: the semantic-convention helpers shared by every layer.

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations, rust_2018_idioms)]

#[cfg(feature = "tracing")]
pub mod logs;
pub mod metrics;
mod otel;
pub mod propagation;
pub mod response_header;
pub mod route;
pub mod semconv;
pub mod server;

pub use server::{OtelServer, OtelServerLayer};

/// Entry point for the layers of this crate.
///
/// ```
/// let layer = tower_otel_http::OtelLayer::server();
/// # let _ = layer;
/// ```
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct OtelLayer;

impl OtelLayer {
    /// The server layer with its defaults; see [`OtelServerLayer`].
    pub fn server() -> OtelServerLayer {
        OtelServerLayer::new()
    }
}
