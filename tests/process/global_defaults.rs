//! The defaults resolve the *global* provider and propagator when requests arrive. A case of its
//! own process: it installs globals.

use crate::common::*;
use axum::routing::get;
use axum::Router;
use http::Request;
use opentelemetry::global;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tower_otel_http::OtelLayer;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn traced_get(path: &str) -> Request<axum::body::Body> {
    Request::get(path)
        .header("traceparent", TRACEPARENT)
        .header("baggage", "user=alice")
        .body(axum::body::Body::empty())
        .unwrap()
}

pub async fn layer_built_before_the_sdk_still_traces() {
    // Built first, as in `fn app() -> Router` called before telemetry is set up.
    let app = Router::new()
        .route(
            "/x",
            get(|| async {
                use opentelemetry::baggage::BaggageExt;
                let cx = opentelemetry::Context::current();
                cx.baggage()
                    .get("user")
                    .map(|v| v.to_string())
                    .unwrap_or_default()
            }),
        )
        .layer(OtelLayer::server());

    // 1. No SDK yet: requests pass, nothing is recorded, nothing breaks.
    let (status, _, _) = send(app.clone(), traced_get("/x")).await;
    assert_eq!(status, http::StatusCode::OK);

    // 2. The SDK is installed afterwards (no global propagator yet: the built-in W3C
    //    extraction continues the caller's trace), tracing and metrics.
    let metrics = Metrics::new();
    global::set_meter_provider(metrics.provider.clone());
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    global::set_tracer_provider(provider.clone());
    // while the global makes no real spans, every request looks at it again: the very next
    // request is traced
    let mut picked_up = None;
    for i in 1..=64 {
        send(app.clone(), traced_get("/x")).await;
        if !exporter.get_finished_spans().unwrap().is_empty() {
            picked_up = Some(i);
            break;
        }
    }
    assert_eq!(
        picked_up,
        Some(1),
        "the SDK is used from the next request on"
    );
    for _ in 0..64 {
        send(app.clone(), traced_get("/x")).await;
    }
    exporter.reset();
    let measured = metrics.points(DURATION).first().map_or(0, |p| p.count);
    assert!(
        measured > 0,
        "the global meter provider installed later is used"
    );
    let (_, _, body) = send(app.clone(), traced_get("/x")).await;
    assert_eq!(body, "", "no baggage propagator installed");
    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "GET /x");
    assert_eq!(spans[0].parent_span_id.to_string(), "00f067aa0ba902b7");
    assert_eq!(
        spans[0].instrumentation_scope.name(),
        "tower-otel-http",
        "spans carry this crate's scope"
    );
    exporter.reset();
    let points = metrics.points(DURATION);
    assert_eq!(points.len(), 1, "one series");
    assert_eq!(points[0].count, measured + 1, "every request measured once");
    assert_eq!(points[0].attr("http.route"), Some("/x"));

    // 3. A global propagator installed later is used (here with baggage).
    global::set_text_map_propagator(opentelemetry::propagation::TextMapCompositePropagator::new(
        vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ],
    ));
    // looked up per request: the very next request uses it
    let mut seen_after = None;
    for i in 1..=64 {
        exporter.reset();
        let (_, _, body) = send(app.clone(), traced_get("/x")).await;
        if body == "alice" {
            seen_after = Some(i);
            break;
        }
    }
    assert_eq!(
        seen_after,
        Some(1),
        "baggage extracted by the global propagator from the next request on"
    );
    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].parent_span_id.to_string(), "00f067aa0ba902b7");
    exporter.reset();

    // 4. The provider is replaced (the old one shut down): the layer follows.
    let exporter2 = InMemorySpanExporter::default();
    let provider2 = SdkTracerProvider::builder()
        .with_simple_exporter(exporter2.clone())
        .build();
    global::set_tracer_provider(provider2.clone());
    provider.shutdown().unwrap();
    // the first request after shutdown may still reach the old, shut-down provider (and is
    // dropped by it); from then on the new one is used
    for _ in 0..2 {
        send(app.clone(), traced_get("/x")).await;
    }
    assert!(!exporter2.get_finished_spans().unwrap().is_empty());
    assert!(exporter.get_finished_spans().unwrap().is_empty());
    let _ = provider2.shutdown();
}
