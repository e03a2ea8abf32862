//! Per-request overhead of the server layer against bare axum, measured in the same process.
//!
//! Every variant serves `GET /api/users/{id}` from a router nested under `/api`, called with
//! `oneshot` and a sampled `traceparent`, and reads the whole response body.
//!
//! ```text
//! cargo bench --bench server
//! ```
//!
//! After criterion's own output a table prints each variant's mean time, its ratio to bare axum,
//! an interleaved same-run measurement (rounds that time every variant in turn; the median of
//! the per-round ratios to bare axum is robust to this machine's slow phases) and the heap
//! allocations per request made on the calling thread (a counting allocator).
//!
//! ```text
//! # only the interleaved table, for some variants, 60 rounds:
//! BENCH_VARIANTS=spans_metrics_sdk,naive_spans_metrics_layer BENCH_ROUNDS=60 \
//!     cargo bench --bench server -- no-criterion-variant-matches-this
//! # no SDK installed at all (a process of its own: nothing global is set), the defaults:
//! BENCH_NO_SDK=1 cargo bench --bench server -- no-criterion-variant-matches-this
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use criterion::{criterion_group, Criterion};
use http::Request;
use http_body_util::BodyExt;
use opentelemetry::metrics::noop::NoopMeterProvider;
use opentelemetry::trace::noop::NoopTracerProvider;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter,
};
use tower::Layer;
use tower::ServiceExt;
use tower_otel_http::response_header::ResponseHeader;
use tower_otel_http::{OtelLayer, OtelServer};

// ---- allocation counting (calling thread only: the batch exporter thread is not counted) ----

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(|c| c.get())
}

// ---- reference layers: the SDK floor, and what "just instrument it" costs ----

#[path = "support/reference.rs"]
mod reference;

// ---- the application ----

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn app() -> Router {
    let users = Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .route("/users", get(|| async { "users" }));
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .nest("/api", users)
}

fn request() -> Request<Body> {
    Request::get("/api/users/42")
        .header("host", "api.example.com")
        .header("user-agent", "bench/1.0")
        .header("traceparent", TRACEPARENT)
        .body(Body::empty())
        .unwrap()
}

async fn call_svc<S, B>(svc: &S)
where
    S: tower::Service<Request<Body>, Response = http::Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let resp = svc.clone().oneshot(request()).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"user");
}

/// A service under test: a router (layers added with `Router::layer`), or the layer wrapped
/// around the whole router from outside.
enum Svc {
    Router(Router),
    Outside(OtelServer<Router>),
}

async fn call(svc: &Svc) {
    match svc {
        Svc::Router(r) => call_svc(r).await,
        Svc::Outside(s) => call_svc(s).await,
    }
}

/// Exports nothing, as fast as possible: what is measured is the instrumentation.
#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
        Ok(())
    }
}

/// The SDK with a batch span processor whose queue does not overflow at bench rates (a full
/// queue drops spans on a cheaper path and makes runs incomparable).
fn sdk_provider() -> SdkTracerProvider {
    let processor = BatchSpanProcessor::builder(Discard)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(
                    std::env::var("BENCH_QUEUE")
                        .ok()
                        .and_then(|q| q.parse().ok())
                        .unwrap_or(1 << 16),
                )
                .with_scheduled_delay(Duration::from_millis(20))
                .build(),
        )
        .build();
    SdkTracerProvider::builder()
        .with_span_processor(processor)
        .build()
}

struct Variant {
    name: &'static str,
    router: Svc,
}

fn meter_provider() -> SdkMeterProvider {
    // the periodic reader's default interval (60 s) is longer than a bench: what is measured is
    // the recording path
    SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(InMemoryMetricExporter::default()).build())
        .build()
}

/// One SDK tracer provider and one meter provider for every variant (also installed as the
/// globals), so that every variant runs with the same background threads.
fn providers() -> &'static (SdkTracerProvider, SdkMeterProvider) {
    static P: std::sync::OnceLock<(SdkTracerProvider, SdkMeterProvider)> =
        std::sync::OnceLock::new();
    P.get_or_init(|| {
        let p = (sdk_provider(), meter_provider());
        opentelemetry::global::set_tracer_provider(p.0.clone());
        opentelemetry::global::set_meter_provider(p.1.clone());
        p
    })
}

fn variants() -> Vec<Variant> {
    let (sdk, meters) = providers();
    static SIMPLE: std::sync::OnceLock<SdkTracerProvider> = std::sync::OnceLock::new();
    let simple = SIMPLE.get_or_init(|| {
        SdkTracerProvider::builder()
            .with_simple_exporter(Discard)
            .build()
    });
    let noop = || {
        OtelLayer::server()
            .with_tracer_provider(&NoopTracerProvider::new())
            .with_metrics(false)
    };
    vec![
        Variant {
            name: "bare",
            router: Svc::Router(app()),
        },
        Variant {
            // what any `Router::layer` costs: axum boxes the layered route
            name: "identity_router_layer",
            router: Svc::Router(app().layer(tower::layer::util::Identity::new())),
        },
        Variant {
            name: "spans_noop_provider",
            router: Svc::Router(app().layer(noop())),
        },
        Variant {
            // the default one-liner with no-op tracer and meter providers
            name: "full_stack_noop_providers",
            router: Svc::Router(
                app().layer(
                    OtelLayer::server()
                        .with_tracer_provider(&NoopTracerProvider::new())
                        .with_meter_provider(&NoopMeterProvider::new()),
                ),
            ),
        },
        Variant {
            name: "spans_noop_provider_outside",
            router: Svc::Outside(noop().layer(app())),
        },
        Variant {
            name: "spans_sdk",
            router: Svc::Router(
                app().layer(
                    OtelLayer::server()
                        .with_tracer_provider(sdk)
                        .with_metrics(false),
                ),
            ),
        },
        Variant {
            name: "metrics_sdk",
            router: Svc::Router(
                app().layer(
                    OtelLayer::server()
                        .with_spans(false)
                        .with_meter_provider(meters),
                ),
            ),
        },
        Variant {
            // the default one-liner on an SDK that exports synchronously (simple processor,
            // discarding exporter): the instrumentation without the batch thread's cross-core
            // traffic, which makes the batch variants vary from run to run on a 2-core machine
            name: "spans_metrics_sdk_simple_processor",
            router: Svc::Router(
                app().layer(
                    OtelLayer::server()
                        .with_tracer_provider(simple)
                        .with_meter_provider(meters),
                ),
            ),
        },
        Variant {
            // reference: the SDK calls alone (span start/end, one histogram record), boxed future
            name: "sdk_floor_span_histogram",
            router: Svc::Router(app().layer(reference::ReferenceLayer::new(sdk, meters, false))),
        },
        Variant {
            // reference: the SDK floor on the synchronously exporting SDK
            name: "sdk_floor_simple_processor",
            router: Svc::Router(app().layer(reference::ReferenceLayer::new(simple, meters, false))),
        },
        Variant {
            // reference: a straightforward span + histogram layer (boxed future, ends at the head)
            name: "naive_spans_metrics_layer",
            router: Svc::Router(app().layer(reference::ReferenceLayer::new(sdk, meters, true))),
        },
        Variant {
            // reference: the straightforward layer on the synchronously exporting SDK
            name: "naive_simple_processor",
            router: Svc::Router(app().layer(reference::ReferenceLayer::new(simple, meters, true))),
        },
        Variant {
            // spans + duration metric, without the response header and the log span
            name: "spans_metrics_sdk_no_header_no_logs",
            router: Svc::Router(
                app().layer(
                    OtelLayer::server()
                        .with_tracer_provider(sdk)
                        .with_meter_provider(meters)
                        .with_response_header(ResponseHeader::Off)
                        .with_log_correlation(false),
                ),
            ),
        },
        Variant {
            // spans + duration metric + traceresponse header, no log span
            name: "spans_metrics_header_sdk",
            router: Svc::Router(
                app().layer(
                    OtelLayer::server()
                        .with_tracer_provider(sdk)
                        .with_meter_provider(meters)
                        .with_log_correlation(false),
                ),
            ),
        },
        Variant {
            // the default one-liner: spans + duration metric + traceresponse header + log
            // correlation span (no subscriber wants it here)
            name: "spans_metrics_sdk",
            router: Svc::Router(
                app().layer(
                    OtelLayer::server()
                        .with_tracer_provider(sdk)
                        .with_meter_provider(meters),
                ),
            ),
        },
        Variant {
            // everything: active requests, both body sizes (the request body is wrapped)
            name: "spans_all_metrics_sdk",
            router: Svc::Router(
                app().layer(
                    OtelLayer::server()
                        .with_tracer_provider(sdk)
                        .with_meter_provider(meters)
                        .with_all_metrics()
                        .with_counted_request_bodies(),
                ),
            ),
        },
        Variant {
            // the zero-configuration default: global provider (the SDK, installed in main)
            name: "spans_metrics_sdk_global",
            router: Svc::Router(app().layer(OtelLayer::server())),
        },
    ]
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("server");
    for v in variants() {
        group.bench_function(v.name, |b| b.iter(|| rt.block_on(call(&v.router))));
    }
    group.finish();
}

/// Allocations per request on the calling thread, averaged over many requests.
fn allocations(rt: &tokio::runtime::Runtime, router: &Svc) -> f64 {
    const N: u64 = 2000;
    for _ in 0..200 {
        rt.block_on(call(router));
    }
    let before = allocs();
    for _ in 0..N {
        rt.block_on(call(router));
    }
    (allocs() - before) as f64 / N as f64
}

fn mean_ns(name: &str) -> Option<f64> {
    let path = format!("target/criterion/server/{name}/new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

/// Interleaved measurement: every round times a batch of requests of each variant in turn
/// (starting at a different variant each round), so that a slow phase of this noisy machine hits
/// all variants alike; the ratio to bare axum is
/// taken within each round and the median over rounds is reported (with the 25th/75th
/// percentiles). Rounds: `BENCH_ROUNDS` (default 40).
fn interleaved(rt: &tokio::runtime::Runtime, variants: &[Variant]) -> Vec<(f64, f64, f64, f64)> {
    const BATCH: u32 = 500;
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(40);
    let mut ns: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); variants.len()];
    for v in variants {
        for _ in 0..BATCH {
            rt.block_on(call(&v.router));
        }
    }
    for round in 0..rounds {
        // each round starts at another variant, so that no variant always follows the same one
        // (what ran just before — a batch exporter's burst, a heap state — shows in a variant's
        // time)
        for k in 0..variants.len() {
            let i = (round + k) % variants.len();
            let v = &variants[i];
            let start = std::time::Instant::now();
            rt.block_on(async {
                for _ in 0..BATCH {
                    call(&v.router).await;
                }
            });
            ns[i].push(start.elapsed().as_nanos() as f64 / f64::from(BATCH));
        }
    }
    let pct = |mut xs: Vec<f64>, p: f64| {
        xs.sort_by(|a, b| a.total_cmp(b));
        xs[((xs.len() - 1) as f64 * p).round() as usize]
    };
    (0..variants.len())
        .map(|i| {
            let ratios: Vec<f64> = (0..rounds).map(|r| ns[i][r] / ns[0][r]).collect();
            (
                pct(ns[i].clone(), 0.5),
                pct(ratios.clone(), 0.25),
                pct(ratios.clone(), 0.5),
                pct(ratios, 0.75),
            )
        })
        .collect()
}

fn summary() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // `BENCH_VARIANTS=a,b,c`: only these (and bare) in the table
    let only: Option<Vec<String>> = std::env::var("BENCH_VARIANTS")
        .ok()
        .map(|s| s.split(',').map(str::to_owned).collect());
    let variants: Vec<Variant> = variants()
        .into_iter()
        .enumerate()
        .filter(|(i, v)| *i == 0 || only.as_ref().is_none_or(|o| o.iter().any(|n| n == v.name)))
        .map(|(_, v)| v)
        .collect();
    let allocs: Vec<f64> = variants
        .iter()
        .map(|v| allocations(&rt, &v.router))
        .collect();
    let paired = interleaved(&rt, &variants);
    println!();
    println!("criterion means, and an interleaved same-run measurement (median ratio of rounds)");
    println!(
        "| variant | criterion ns | × bare | interleaved ns | × bare (p25–p75) | allocations | over bare |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let bare_ns = mean_ns(variants[0].name);
    for (i, v) in variants.iter().enumerate() {
        let ns = mean_ns(v.name);
        let (ns_s, ratio) = match (ns, bare_ns) {
            (Some(ns), Some(b)) => (format!("{ns:.0}"), format!("{:.2}", ns / b)),
            _ => ("-".into(), "-".into()),
        };
        let (pns, p25, p50, p75) = paired[i];
        println!(
            "| {} | {ns_s} | {ratio} | {pns:.0} | {p50:.2} ({p25:.2}–{p75:.2}) | {:.1} | {:+.1} |",
            v.name,
            allocs[i],
            allocs[i] - allocs[0]
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}

/// No SDK installed: the default layer on the untouched globals, against bare axum.
fn no_sdk() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let variants = vec![
        Variant {
            name: "bare",
            router: Svc::Router(app()),
        },
        Variant {
            name: "no_sdk_defaults",
            router: Svc::Router(app().layer(OtelLayer::server())),
        },
    ];
    let allocs: Vec<f64> = variants
        .iter()
        .map(|v| allocations(&rt, &v.router))
        .collect();
    let paired = interleaved(&rt, &variants);
    println!("no SDK installed (interleaved, median ratio of rounds)");
    println!("| variant | ns | × bare (p25–p75) | allocations over bare |");
    println!("|---|---:|---:|---:|");
    for (i, v) in variants.iter().enumerate() {
        let (ns, p25, p50, p75) = paired[i];
        println!(
            "| {} | {ns:.0} | {p50:.2} ({p25:.2}–{p75:.2}) | {:+.1} |",
            v.name,
            allocs[i] - allocs[0]
        );
    }
}

fn main() {
    if std::env::var_os("BENCH_NO_SDK").is_some() {
        no_sdk();
        return;
    }
    providers();
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
