//! HTTP metrics: the instrument set, created once per layer value and shared by every clone,
//! and per-request custom attributes ([`Labeler`]).
//!
//! | instrument | kind | unit | when |
//! |---|---|---|---|
//! | `http.server.request.duration`, `http.client.request.duration` | f64 histogram, the conventions' buckets ([`DURATION_BUCKETS`]) | `s` | on (unless metrics are off) |
//! | `http.server.active_requests`, `http.client.active_requests` | i64 up-down counter | `{request}` | opt-in |
//! | `http.server.request.body.size`, `http.client.request.body.size` | u64 histogram | `By` | opt-in (bytes actually transferred) |
//! | `http.server.response.body.size`, `http.client.response.body.size` | u64 histogram | `By` | opt-in (bytes actually transferred) |
//!
//! Server attributes on the duration and size histograms: `http.request.method` (`_OTHER` for
//! unknown methods), `url.scheme`, `http.response.status_code` (when a response was produced),
//! `http.route` (when a route matched), `error.type` (when the request failed),
//! `network.protocol.version`, and `server.address`/`server.port` only when opted in. On
//! `http.server.active_requests`: method and scheme (and the opt-in server address).
//!
//! Client attributes: `http.request.method`, `server.address`, `server.port`,
//! `http.response.status_code`, `error.type`, `network.protocol.version` (from the response),
//! and `url.scheme` and `url.template` only when opted in. On `http.client.active_requests`:
//! method, server address and port (and the opt-in scheme).
//!
//! Never on metrics: paths, queries, full URLs, client or peer addresses, user agents or
//! original methods, so the number of series is bounded by routes (or downstream hosts) ×
//! methods × status codes whatever the traffic. The duration recorded is the span's duration,
//! measured on a monotonic clock.

mod instruments;
mod labeler;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use opentelemetry::{KeyValue, StringValue};
use opentelemetry_semantic_conventions::attribute as attr;

pub use labeler::Labeler;

pub(crate) use instruments::MeterSource;

/// Bucket boundaries of `http.*.request.duration` (seconds), from the semantic conventions.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// At most this many attributes go on one measurement (the conventions' set is 8 at most; the
/// rest is room for a [`Labeler`]'s attributes, which are appended after them).
const MAX_METRIC_ATTRIBUTES: usize = 16;

/// An attribute list kept on the stack, so that recording does not allocate.
struct AttrList(smallvec::SmallVec<[KeyValue; MAX_METRIC_ATTRIBUTES]>);

impl AttrList {
    fn new() -> Self {
        AttrList(smallvec::SmallVec::new())
    }

    /// Push; attributes beyond the capacity are dropped (never spilled to the heap).
    fn push(&mut self, kv: KeyValue) {
        if self.0.len() < MAX_METRIC_ATTRIBUTES {
            self.0.push(kv);
        }
    }
}

/// What a request's measurements need besides its outcome, known at its start.
pub(crate) struct Measure {
    /// `http.request.method` (`_OTHER` for unknown methods).
    pub(crate) method: &'static str,
    /// `url.scheme` (`true`: https), when recorded on this side's metrics.
    pub(crate) scheme: Option<bool>,
    /// `server.address` / `server.port`, when recorded on this side's metrics (boxed on the
    /// server, where they are opt-in: the record is moved several times per request).
    pub(crate) server: Option<Box<(StringValue, i64)>>,
    pub(crate) labeler: Option<Labeler>,
    /// Bytes of request body read or sent, when counted.
    pub(crate) request_bytes: Option<Arc<AtomicU64>>,
}

impl Measure {
    /// The attributes shared by every instrument: method, scheme, server address.
    fn base(&self, out: &mut AttrList) {
        out.push(KeyValue::new(attr::HTTP_REQUEST_METHOD, self.method));
        if let Some(https) = self.scheme {
            out.push(crate::semconv::scheme_attribute(https));
        }
        if let Some((address, port)) = self.server.as_deref() {
            out.push(KeyValue::new(attr::SERVER_ADDRESS, address.clone()));
            out.push(KeyValue::new(attr::SERVER_PORT, *port));
        }
    }

    /// `http.*.active_requests` += `delta`.
    pub(crate) fn add_active(&self, meter: &MeterSource, delta: i64) {
        meter.with(|i| {
            if let Some(c) = &i.active_requests {
                let mut a = AttrList::new();
                self.base(&mut a);
                c.add(delta, &a.0);
            }
        });
    }

    /// Record the request's end: duration and body sizes with the base attributes, `end` (the
    /// attributes the span gets at its end too) and the labeler's; one active request less when
    /// it was counted as one (`active`: a panic in a user's hook can end a request before).
    pub(crate) fn record(
        &self,
        meter: &MeterSource,
        seconds: f64,
        response_bytes: u64,
        end: [Option<KeyValue>; 4],
        active: bool,
    ) {
        meter.with(|i| {
            let mut a = AttrList::new();
            self.base(&mut a);
            for kv in end.into_iter().flatten() {
                a.push(kv);
            }
            if let Some(l) = &self.labeler {
                l.for_each(|kv| a.push(kv.clone()));
            }
            i.duration.record(seconds, &a.0);
            if let Some(h) = &i.response_body_size {
                h.record(response_bytes, &a.0);
            }
            if let (Some(h), Some(n)) = (&i.request_body_size, &self.request_bytes) {
                h.record(n.load(Ordering::Relaxed), &a.0);
            }
            if let (Some(c), true) = (&i.active_requests, active) {
                // the same attributes as at the start: the base ones
                a.0.truncate(self.base_len());
                c.add(-1, &a.0);
            }
        });
    }

    fn base_len(&self) -> usize {
        1 + usize::from(self.scheme.is_some()) + 2 * usize::from(self.server.is_some())
    }
}
