//! The application, the request and the SDK every variant runs on (the same as
//! `benches/server.rs`), with a span exporter that counts what it is given.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http::Request;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter,
};

// ---- the application (benches/server.rs) ----

/// Trace id and span id of the inbound `traceparent`.
pub const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
pub const PARENT_ID: &str = "00f067aa0ba902b7";

/// What the request carries as its caller's trace context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// `traceparent` with flags `01` (the default request of every variant).
    Sampled,
    /// `traceparent` with flags `00`: the caller did not sample.
    Unsampled,
    /// No `traceparent`: a root request.
    None,
}

impl Inbound {
    pub fn traceparent(self) -> Option<&'static str> {
        match self {
            Inbound::Sampled => Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Inbound::Unsampled => Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
            Inbound::None => None,
        }
    }
}

/// The router of `benches/server.rs`: `/health` at the root, the users routes nested under `/api`.
pub fn app() -> Router {
    let users = Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .route("/users", get(|| async { "users" }));
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .nest("/api", users)
}

/// `GET /api/users/42` with `Host`, `User-Agent` and the inbound trace context.
pub fn request(inbound: Inbound) -> Request<Body> {
    let mut b = Request::get("/api/users/42")
        .header("host", "api.example.com")
        .header("user-agent", "bench/1.0");
    if let Some(tp) = inbound.traceparent() {
        b = b.header("traceparent", tp);
    }
    b.body(Body::empty()).unwrap()
}

// ---- what the exporters saw ----

/// Spans handed to any counting exporter of this process (both OpenTelemetry lines).
static EXPORTED: AtomicU64 = AtomicU64::new(0);
/// While set, the exporters keep a description of the spans they see.
static SAMPLING: AtomicBool = AtomicBool::new(false);
static SAMPLES: Mutex<Vec<SpanInfo>> = Mutex::new(Vec::new());

/// What the check reports about an exported span.
#[derive(Clone, Debug)]
pub struct SpanInfo {
    pub name: String,
    pub kind: String,
    pub trace_id: String,
    pub parent_span_id: String,
    pub has_route: bool,
    pub attributes: usize,
    pub events: usize,
    pub has_status_code: bool,
    /// Attributes the semantic conventions type as integers that arrived as something else
    /// (`key:type`).
    pub not_int: Vec<String>,
}

/// Attributes that the HTTP semantic conventions define as integers.
const INT_KEYS: [&str; 5] = [
    "http.response.status_code",
    "server.port",
    "client.port",
    "network.peer.port",
    "http.request.resend_count",
];

/// `has_route`, `has_status_code` and `not_int` of a span from its attributes, given as
/// (key, the value's `Debug`).
pub fn attribute_facts<'a>(
    attrs: impl Iterator<Item = (&'a str, String)>,
) -> (bool, bool, Vec<String>) {
    let (mut route, mut status, mut not_int) = (false, false, Vec::new());
    for (k, v) in attrs {
        route |= k == "http.route";
        status |= k == "http.response.status_code";
        if INT_KEYS.contains(&k) && !v.starts_with("I64(") {
            let ty = v.split('(').next().unwrap_or("?").to_lowercase();
            not_int.push(format!("{k}:{ty}"));
        }
    }
    (route, status, not_int)
}

pub fn exported() -> u64 {
    EXPORTED.load(Ordering::SeqCst)
}

/// Called by the exporters with a batch's size and, when sampling, its descriptions.
pub fn note_batch(n: usize, describe: impl FnOnce() -> Vec<SpanInfo>) {
    EXPORTED.fetch_add(n as u64, Ordering::SeqCst);
    if SAMPLING.load(Ordering::Relaxed) {
        let mut s = SAMPLES.lock().unwrap();
        if s.len() < 64 {
            s.extend(describe());
        }
    }
}

/// Start (or stop, returning what was seen) keeping span descriptions.
pub fn sampling(on: bool) -> Vec<SpanInfo> {
    SAMPLING.store(on, Ordering::SeqCst);
    std::mem::take(&mut *SAMPLES.lock().unwrap())
}

type Flush = Box<dyn Fn() + Send + Sync>;
static FLUSHERS: Mutex<Vec<Flush>> = Mutex::new(Vec::new());

/// Registers a tracer provider's `force_flush`, so that counts can be read after a flush.
pub fn on_flush(f: impl Fn() + Send + Sync + 'static) {
    FLUSHERS.lock().unwrap().push(Box::new(f));
}

/// Flushes every tracer provider of this process: after this, every span ended so far has been
/// counted.
pub fn flush_all() {
    for f in FLUSHERS.lock().unwrap().iter() {
        f();
    }
}

// ---- the SDK (0.33 line) ----

/// Counts the spans and throws them away: what is measured is the instrumentation.
#[derive(Debug)]
pub struct Counting;

impl SpanExporter for Counting {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        note_batch(batch.len(), || {
            batch
                .iter()
                .map(|s| {
                    let (has_route, has_status_code, not_int) = attribute_facts(
                        s.attributes
                            .iter()
                            .map(|kv| (kv.key.as_str(), format!("{:?}", kv.value))),
                    );
                    SpanInfo {
                        name: s.name.to_string(),
                        kind: format!("{:?}", s.span_kind),
                        trace_id: s.span_context.trace_id().to_string(),
                        parent_span_id: s.parent_span_id.to_string(),
                        has_route,
                        attributes: s.attributes.len(),
                        events: s.events.len(),
                        has_status_code,
                        not_int,
                    }
                })
                .collect()
        });
        Ok(())
    }
}

/// Queue size and scheduled delay of `benches/server.rs`: the queue does not overflow at bench
/// rates (a full queue drops spans on a cheaper path and makes runs incomparable).
pub const MAX_QUEUE: usize = 1 << 16;
pub const SCHEDULED_DELAY: Duration = Duration::from_millis(20);

fn tracer_provider(sampler: Sampler) -> SdkTracerProvider {
    let processor = BatchSpanProcessor::builder(Counting)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(MAX_QUEUE)
                .with_scheduled_delay(SCHEDULED_DELAY)
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_span_processor(processor)
        .build();
    let p = provider.clone();
    on_flush(move || {
        let _ = p.force_flush();
    });
    provider
}

/// The tracer provider (parent-based, always on: the SDK's default sampler) and the meter
/// provider that every variant of a process uses.
pub struct Sdk {
    pub tracer: SdkTracerProvider,
    pub meters: SdkMeterProvider,
}

pub fn sdk() -> &'static Sdk {
    static S: OnceLock<Sdk> = OnceLock::new();
    S.get_or_init(|| Sdk {
        tracer: tracer_provider(Sampler::ParentBased(Box::new(Sampler::AlwaysOn))),
        // the periodic reader's default interval (60 s) is longer than a measurement: what is
        // measured is the recording path
        meters: SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(InMemoryMetricExporter::default()).build())
            .build(),
    })
}

/// The same SDK with `ParentBased(TraceIdRatioBased(0.1))`, made only where a variant uses it.
pub fn ratio_tracer() -> &'static SdkTracerProvider {
    static P: OnceLock<SdkTracerProvider> = OnceLock::new();
    P.get_or_init(|| {
        tracer_provider(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            0.1,
        ))))
    })
}
