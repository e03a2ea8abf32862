//! HTTP metrics (SEMCONV §4): the instrument set, created once per layer value and shared by
//! every clone, and per-request custom attributes ([`Labeler`]).
//!
//! | instrument | kind | unit | when |
//! |---|---|---|---|
//! | `http.server.request.duration` | f64 histogram, the conventions' buckets | `s` | on (unless metrics are off) |
//! | `http.server.active_requests` | i64 up-down counter | `{request}` | opt-in |
//! | `http.server.request.body.size` | u64 histogram | `By` | opt-in (bytes actually read) |
//! | `http.server.response.body.size` | u64 histogram | `By` | opt-in (bytes actually sent) |
//!
//! Attributes on the duration and size histograms: `http.request.method` (`_OTHER` for unknown
//! methods), `url.scheme`, `http.response.status_code` (when a response was produced),
//! `http.route` (when a route matched), `error.type` (when the request failed),
//! `network.protocol.version`, and `server.address`/`server.port` only when opted in. On
//! `active_requests`: method and scheme (and the opt-in server address). Never: paths, queries,
//! client addresses, user agents or original methods, so the number of series is bounded by
//! routes × methods × status codes whatever the traffic.

mod instruments;
mod labeler;

pub use labeler::Labeler;

pub(crate) use instruments::{MeterSource, MetricsOptions, RequestInstruments, ServerInstruments};

/// Bucket boundaries of `http.*.request.duration` (seconds), from the semantic conventions.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// At most this many attributes go on one measurement (the conventions' set is 7 at most; the
/// rest is room for a [`Labeler`]'s attributes, which are appended after them).
pub(crate) const MAX_METRIC_ATTRIBUTES: usize = 16;

/// An attribute list kept on the stack (up to [`MAX_METRIC_ATTRIBUTES`]), so that recording
/// does not allocate.
pub(crate) struct AttrList(smallvec::SmallVec<[opentelemetry::KeyValue; MAX_METRIC_ATTRIBUTES]>);

impl AttrList {
    pub(crate) fn new() -> Self {
        AttrList(smallvec::SmallVec::new())
    }

    /// Push; attributes beyond the capacity are dropped (never spilled to the heap).
    pub(crate) fn push(&mut self, kv: opentelemetry::KeyValue) {
        if self.0.len() < MAX_METRIC_ATTRIBUTES {
            self.0.push(kv);
        }
    }

    pub(crate) fn as_slice(&self) -> &[opentelemetry::KeyValue] {
        &self.0
    }
}
