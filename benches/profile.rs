//! A deterministic harness for instruction-level profiling (not a criterion bench): serves
//! `GET /api/users/{id}` N times through one configuration, so that `valgrind --tool=callgrind`
//! can count instructions per request — repeatable where wall-clock timings on a shared machine
//! are not.
//!
//! ```text
//! cargo bench --bench profile --no-run          # prints the binary's path
//! valgrind --tool=callgrind target/release/deps/profile-<hash> default 20000
//! ```
//!
//! Variants: `bare`, `noop`, `metrics`, `spans`, `default` (spans + metrics + header + log span),
//! `default_simple` (the default on an SDK exporting synchronously), `global` (the default on
//! the global providers), `global_w3c` (the default with the SDK's W3C propagator installed as
//! the global one), `global_crate` (the default with the crate's `W3cPropagator` installed as
//! the global one), `given_w3c` (the default with it given to the layer), `nosdk` (the
//! defaults with no SDK installed), `client_bare` / `client` (the request through a client-side
//! service answering at once, bare and under `OtelLayer::client()`: the client's start and end),
//! `grpc_client_bare` / `grpc_client` (the same for a unary gRPC call answered trailers-only),
//! and the two reference
//! layers of the
//! criterion bench: `floor` (SDK span start/end + one histogram record) and `naive` (a
//! straightforward span + histogram layer).
//!
//! `PROFILE_TRACESTATE=1` sends flags `03` and a two-member `tracestate` with each request.
//!
//! `PROFILE_THREADS=k` runs k threads (each with its own runtime) against the one app, `n`
//! requests each, and prints the elapsed time: shared-state contention shows there.

use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http::Request;
use http_body_util::BodyExt;
use opentelemetry::trace::noop::NoopTracerProvider;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter,
};
use tower::ServiceExt;
use tower_otel_http::OtelLayer;

#[path = "support/reference.rs"]
mod reference;

#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
        Ok(())
    }
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let variant = args.next().unwrap_or_else(|| "default".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(20_000);

    let tracer = SdkTracerProvider::builder()
        .with_span_processor(
            BatchSpanProcessor::builder(Discard)
                .with_batch_config(
                    BatchConfigBuilder::default()
                        .with_max_queue_size(1 << 16)
                        .with_scheduled_delay(Duration::from_millis(20))
                        .build(),
                )
                .build(),
        )
        .build();
    let meters = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(InMemoryMetricExporter::default()).build())
        .build();

    let users = Router::new().route("/users/{id}", get(|| async { "user" }));
    let app = Router::new().nest("/api", users);
    let app = match variant.as_str() {
        "bare" => app,
        "noop" => app.layer(
            OtelLayer::server()
                .with_tracer_provider(&NoopTracerProvider::new())
                .with_metrics(false),
        ),
        "metrics" => app.layer(
            OtelLayer::server()
                .with_spans(false)
                .with_meter_provider(&meters),
        ),
        "spans" => app.layer(
            OtelLayer::server()
                .with_tracer_provider(&tracer)
                .with_metrics(false),
        ),
        "default_simple" => app.layer(
            OtelLayer::server()
                .with_tracer_provider(
                    &SdkTracerProvider::builder()
                        .with_simple_exporter(Discard)
                        .build(),
                )
                .with_meter_provider(&meters),
        ),
        "floor" => app.layer(reference::ReferenceLayer::new(&tracer, &meters, false)),
        "naive" => app.layer(reference::ReferenceLayer::new(&tracer, &meters, true)),
        // the defaults with nothing installed: no SDK, no propagator
        "nosdk" => app.layer(OtelLayer::server()),
        "global_w3c" => {
            // the default on explicit providers, with the SDK's W3C propagator as the global
            opentelemetry::global::set_text_map_propagator(
                opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            );
            app.layer(
                OtelLayer::server()
                    .with_tracer_provider(&tracer)
                    .with_meter_provider(&meters),
            )
        }
        "global_crate" => {
            // the default on explicit providers, with the crate's W3cPropagator as the global
            opentelemetry::global::set_text_map_propagator(
                tower_otel_http::propagation::W3cPropagator::new(),
            );
            app.layer(
                OtelLayer::server()
                    .with_tracer_provider(&tracer)
                    .with_meter_provider(&meters),
            )
        }
        "given_w3c" => app.layer(
            OtelLayer::server()
                .with_tracer_provider(&tracer)
                .with_meter_provider(&meters)
                .with_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new()),
        ),
        "client_bare" | "client" | "grpc_client_bare" | "grpc_client" => {
            // a client stack in front of a transport that answers at once, mounted as the
            // Router's fallback (the Router's own cost is in both halves of a pair)
            let grpc = variant.starts_with("grpc");
            let transport = tower::service_fn(move |_: Request<Body>| async move {
                let mut resp = http::Response::builder().status(200);
                if grpc {
                    resp = resp
                        .header("content-type", "application/grpc")
                        .header("grpc-status", "0");
                }
                Ok::<_, std::convert::Infallible>(resp.body(Body::from("user")).unwrap())
            });
            if variant.ends_with("bare") {
                Router::new().fallback_service(transport)
            } else {
                Router::new().fallback_service(
                    tower::ServiceBuilder::new()
                        .layer(
                            OtelLayer::client()
                                .with_tracer_provider(&tracer)
                                .with_meter_provider(&meters),
                        )
                        .service(transport)
                        .map_response(|r: http::Response<_>| r.map(Body::new)),
                )
            }
        }
        "global" => {
            opentelemetry::global::set_tracer_provider(tracer.clone());
            opentelemetry::global::set_meter_provider(meters.clone());
            app.layer(OtelLayer::server())
        }
        _ => app.layer(
            OtelLayer::server()
                .with_tracer_provider(&tracer)
                .with_meter_provider(&meters),
        ),
    };
    // `PROFILE_THREADS=k`: k threads, each with its own runtime, share the one app (what a
    // multi-threaded server does to shared state), n requests each
    let threads: usize = std::env::var("PROFILE_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let started = std::time::Instant::now();
    if threads <= 1 {
        serve(&app, n); // on the main thread, as before the option existed
    } else {
        std::thread::scope(|s| {
            for _ in 0..threads {
                let app = app.clone();
                s.spawn(move || serve(&app, n));
            }
        });
    }
    eprintln!(
        "{variant}: {threads} thread(s) x {n} requests in {:?}",
        started.elapsed()
    );
}

fn serve(app: &Router, n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // `PROFILE_TRACESTATE=1`: the caller sends the random-trace-id flag and a two-member
    // `tracestate` too
    let level2 = std::env::var_os("PROFILE_TRACESTATE").is_some();
    // the client variants send absolute URIs, as clients do; the server ones origin-form
    let variant = std::env::args().nth(1).unwrap_or_default();
    let (client, grpc) = (variant.contains("client"), variant.starts_with("grpc"));
    for _ in 0..n {
        rt.block_on(async {
            let mut req = if grpc {
                Request::post("http://api.example.com/pkg.Users/Get")
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
            } else if client {
                Request::get("http://api.example.com/api/users/42")
            } else {
                Request::get("/api/users/42")
            }
            .header("host", "api.example.com")
            .header("user-agent", "bench/1.0");
            req = if level2 {
                req.header(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
                )
                .header("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
            } else {
                req.header(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                )
            };
            let req = req.body(Body::empty()).unwrap();
            let resp = app.clone().oneshot(req).await.unwrap();
            resp.into_body().collect().await.unwrap();
        });
    }
}
