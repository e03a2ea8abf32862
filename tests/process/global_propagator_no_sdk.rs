//! Without an SDK (a no-op tracer provider, no metrics) the layer records nothing but still makes
//! the caller's context current when a propagator is installed — also one installed after the
//! first requests, from the next request on. A case of its own process: it installs a global propagator.

use crate::common::*;
use axum::routing::get;
use axum::Router;
use http::Request;
use opentelemetry::global;
use opentelemetry::trace::noop::NoopTracerProvider;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tower_otel_http::OtelLayer;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn traced_get() -> Request<axum::body::Body> {
    Request::get("/x")
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .body(axum::body::Body::empty())
        .unwrap()
}

pub async fn a_propagator_installed_later_is_used_from_the_next_request() {
    let app = Router::new()
        .route(
            "/x",
            get(|| async {
                let cx = opentelemetry::Context::current();
                let sc = cx.span().span_context().clone();
                if sc.is_valid() {
                    sc.trace_id().to_string()
                } else {
                    String::new()
                }
            }),
        )
        .layer(
            OtelLayer::server()
                .with_tracer_provider(&NoopTracerProvider::new())
                .with_metrics(false),
        );

    // no propagator: nothing is propagated, nothing breaks
    let (status, _, body) = send(app.clone(), traced_get()).await;
    assert_eq!(status, http::StatusCode::OK);
    assert_eq!(body, "");

    global::set_text_map_propagator(TraceContextPropagator::new());
    // the global propagator is looked up per request: the very next one uses it
    for _ in 0..10 {
        let (_, _, body) = send(app.clone(), traced_get()).await;
        assert_eq!(body, TRACE_ID, "the propagator installed is used at once");
    }
}
