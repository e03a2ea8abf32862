//! HTTP metrics: the instrument set, created once per layer value and shared by every clone,
//! and per-request custom attributes ([`Labeler`]).
//!
//! ```
//! use tower_otel_http::OtelLayer;
//!
//! // the duration histogram (on by default), active requests and response body sizes
//! let layer = OtelLayer::server().with_all_metrics();
//! # let _ = layer;
//! ```
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

use opentelemetry::metrics::UpDownCounter;
use opentelemetry::{KeyValue, StringValue};
use opentelemetry_semantic_conventions::attribute as attr;

pub use labeler::Labeler;

pub(crate) use instruments::MeterSource;

/// Bucket boundaries of `http.*.request.duration` (seconds), from the semantic conventions.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The attributes of one measurement, kept on the stack in the common case (the conventions'
/// set is 8 at most); more (a [`Labeler`]'s) spill to the heap, never dropped.
type AttrList = smallvec::SmallVec<[KeyValue; 12]>;

/// What a request's measurements need besides its outcome, known at its start.
pub(crate) struct Measure {
    /// An RPC call: `rpc.*.call.duration` only (no HTTP instrument at all).
    rpc: bool,
    /// `http.request.method` (`_OTHER` for unknown methods).
    method: &'static str,
    /// `url.scheme` (`true`: https), when recorded on this side's metrics.
    scheme: Option<bool>,
    /// `server.address` / `server.port`, when recorded on this side's metrics (boxed: opt-in
    /// on the server, and the record is moved several times per request).
    server: Option<Box<(StringValue, i64)>>,
    labeler: Option<Labeler>,
    /// Bytes of request body read or sent, when counted.
    request_bytes: Option<Arc<AtomicU64>>,
    /// The active-requests counter this request was counted on.
    active: Option<UpDownCounter<i64>>,
}

impl Measure {
    /// `method`: `http.request.method` (`_OTHER` for unknown methods); `scheme` (`true`:
    /// https) and `server` (`server.address`, `server.port`) when this side records them on
    /// its metrics.
    pub(crate) fn new(
        method: &'static str,
        scheme: Option<bool>,
        server: Option<(StringValue, i64)>,
        labeler: bool,
        request_bytes: Option<Arc<AtomicU64>>,
    ) -> Self {
        Measure {
            rpc: false,
            method,
            scheme,
            server: server.map(Box::new),
            labeler: labeler.then(Labeler::new),
            request_bytes,
            active: None,
        }
    }

    /// An RPC call's: `rpc.system.name`, and `server` (`server.address`, `server.port`) when
    /// this side records it; the method and the status come at the end.
    pub(crate) fn rpc(server: Option<(StringValue, i64)>, labeler: bool) -> Self {
        Measure {
            rpc: true,
            method: "",
            scheme: None,
            server: server.map(Box::new),
            labeler: labeler.then(Labeler::new),
            request_bytes: None,
            active: None,
        }
    }

    /// The attributes every instrument gets, active requests included: method, scheme, server
    /// address and port as this side records them. One function builds them for the start
    /// and the end, so that active requests are uncounted with exactly the attributes they
    /// were counted with.
    fn base(&self) -> AttrList {
        let mut base = AttrList::new();
        if self.rpc {
            base.push(KeyValue::new(
                attr::RPC_SYSTEM_NAME,
                crate::convention::grpc::SYSTEM,
            ));
        } else {
            base.push(KeyValue::new(attr::HTTP_REQUEST_METHOD, self.method));
        }
        if let Some(https) = self.scheme {
            base.push(crate::semconv::scheme_attribute(https));
        }
        if let Some((address, port)) = self.server.as_deref() {
            base.push(KeyValue::new(attr::SERVER_ADDRESS, address.clone()));
            base.push(KeyValue::new(attr::SERVER_PORT, *port));
        }
        base
    }

    /// This request's [`Labeler`] goes into its extensions, or the one already there (put by
    /// the caller, an outer middleware) is the one used.
    pub(crate) fn adopt_labeler(&mut self, ext: &mut http::Extensions) {
        if let Some(l) = &self.labeler {
            match ext.get::<Labeler>() {
                Some(given) => self.labeler = Some(given.clone()),
                None => {
                    ext.insert(l.clone());
                }
            }
        }
    }

    /// The request body's length, known in full before it is sent.
    #[cfg(feature = "reqwest")]
    pub(crate) fn set_request_bytes(&mut self, n: u64) {
        self.request_bytes = Some(Arc::new(AtomicU64::new(n)));
    }

    /// One active request more (`http.*.active_requests`), when they are recorded: the counter
    /// is kept, so that the request is uncounted on the same one at its end, whatever becomes
    /// of the global provider meanwhile.
    pub(crate) fn begin_active(&mut self, meter: &MeterSource) {
        if self.rpc {
            return; // no HTTP instrument for an RPC call
        }
        self.active = meter.with(|i| i.active_requests.clone()).flatten();
        if let Some(c) = &self.active {
            c.add(1, &self.base());
        }
    }

    /// Record the request's end: duration and body sizes with the base attributes, `end` (the
    /// attributes the span gets at its end too), the convention's (`extra`) and the labeler's;
    /// one active request less when it was counted as one.
    pub(crate) fn record(
        &mut self,
        meter: &MeterSource,
        seconds: f64,
        response_bytes: u64,
        end: impl Iterator<Item = KeyValue>,
        extra: impl FnOnce(&mut dyn FnMut(KeyValue)),
    ) {
        let mut a = self.base();
        if let Some(c) = self.active.take() {
            // the counter and the attributes it was counted with
            c.add(-1, &a);
        }
        meter.with(|i| {
            for kv in end {
                a.push(kv);
            }
            extra(&mut |kv| a.push(kv));
            if let Some(l) = &self.labeler {
                l.for_each(|kv| a.push(kv.clone()));
            }
            if self.rpc {
                i.rpc_duration().record(seconds, &a);
                return;
            }
            i.duration.record(seconds, &a);
            if let Some(h) = &i.response_body_size {
                h.record(response_bytes, &a);
            }
            if let (Some(h), Some(n)) = (&i.request_body_size, &self.request_bytes) {
                h.record(n.load(Ordering::Relaxed), &a);
            }
        });
    }
}
