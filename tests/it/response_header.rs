//! Trace-context response header (W3C Trace Context Level 2 `traceresponse`).

use crate::common;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use common::*;
use http::{HeaderName, Request};
use tower_otel_http::response_header::{ResponseHeader, TraceResponseHeaderLayer};
use tower_otel_http::{OtelLayer, OtelServerLayer};

fn app(layer: OtelServerLayer) -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/own",
            get(|| async { ([("traceresponse", "00-handler-set-it")], "own") }),
        )
        .route(
            "/timing",
            get(|| async { ([("server-timing", "db;dur=53")], "timing") }),
        )
        .route(
            "/expose",
            get(|| async { ([("access-control-expose-headers", "x-other")], "e") }),
        )
        .layer(layer)
}

fn expected(span: &opentelemetry_sdk::trace::SpanData) -> String {
    format!(
        "00-{}-{}-{:02x}",
        span.span_context.trace_id(),
        span.span_context.span_id(),
        span.span_context.trace_flags().to_u8()
    )
}

#[tokio::test]
async fn traceresponse_by_default() {
    let t = Telemetry::new();
    let (_, headers, _) = send(app(t.layer()), get_req("/")).await;
    let span = t.one();
    assert_eq!(headers["traceresponse"], expected(&span).as_str());
    assert!(headers["traceresponse"].to_str().unwrap().ends_with("-01"));
    assert!(!headers.contains_key("access-control-expose-headers"));
}

#[tokio::test]
async fn unsampled_requests_get_the_header_with_flags_00() {
    let t = Telemetry::new(); // default sampler: parent-based
    let req = Request::get("/")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )
        .body(Body::empty())
        .unwrap();
    let (_, headers, _) = send(app(t.layer()), req).await;
    assert!(t.spans().is_empty(), "not sampled, not exported");
    let v = headers["traceresponse"].to_str().unwrap().to_owned();
    assert!(v.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{v}");
    assert!(v.ends_with("-00"), "{v}");
    assert!(
        !v.contains("00f067aa0ba902b7"),
        "the server span's id, not the caller's"
    );
}

#[tokio::test]
async fn handler_header_is_never_overwritten() {
    let t = Telemetry::new();
    let (_, headers, _) = send(app(t.layer()), get_req("/own")).await;
    assert_eq!(headers["traceresponse"], "00-handler-set-it");
    assert_eq!(headers.get_all("traceresponse").iter().count(), 1);
}

#[tokio::test]
async fn server_timing_is_appended() {
    let t = Telemetry::new();
    let layer = t.layer().with_response_header(ResponseHeader::ServerTiming);
    let (_, headers, _) = send(app(layer), get_req("/timing")).await;
    let span = t.one();
    let values: Vec<&str> = headers
        .get_all("server-timing")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(
        values,
        vec![
            "db;dur=53".to_owned(),
            format!("trace;desc=\"{}\"", expected(&span))
        ]
    );
    assert!(!headers.contains_key("traceresponse"));
}

#[tokio::test]
async fn custom_header_carries_the_trace_id() {
    let t = Telemetry::new();
    let layer = t
        .layer()
        .with_response_header(ResponseHeader::TraceId(HeaderName::from_static(
            "x-trace-id",
        )));
    let (_, headers, _) = send(app(layer), get_req("/")).await;
    let span = t.one();
    assert_eq!(
        headers["x-trace-id"],
        span.span_context.trace_id().to_string().as_str()
    );
    assert!(!headers.contains_key("traceresponse"));
}

#[tokio::test]
async fn header_can_be_switched_off() {
    let t = Telemetry::new();
    let layer = t.layer().with_response_header(ResponseHeader::Off);
    let (_, headers, _) = send(app(layer), get_req("/")).await;
    assert!(!headers.contains_key("traceresponse"));
    assert!(!headers.contains_key("server-timing"));
}

#[tokio::test]
async fn cors_expose_lists_the_header_once() {
    let t = Telemetry::new();
    let layer = t.layer().with_response_header_cors_expose(true);
    let (_, headers, _) = send(app(layer.clone()), get_req("/")).await;
    assert_eq!(headers["access-control-expose-headers"], "traceresponse");
    let (_, headers, _) = send(app(layer), get_req("/expose")).await;
    let values: Vec<&str> = headers
        .get_all("access-control-expose-headers")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(values, vec!["x-other", "traceresponse"]);
}

#[tokio::test]
async fn no_header_without_a_span_of_ours() {
    // no-op tracer: the caller's context flows, but it is not our span
    let app = app(OtelLayer::server()
        .with_tracer_provider(&opentelemetry::trace::noop::NoopTracerProvider::new()));
    let req = Request::get("/")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(Body::empty())
        .unwrap();
    let (_, headers, _) = send(app, req).await;
    assert!(!headers.contains_key("traceresponse"));
}

#[tokio::test]
async fn standalone_layer_uses_the_current_span() {
    let t = Telemetry::new();
    // spans from our layer, header from the standalone layer inside it
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(
            TraceResponseHeaderLayer::new()
                .with_header(ResponseHeader::TraceId(HeaderName::from_static(
                    "x-trace-id",
                )))
                .with_cors_expose(true),
        )
        .layer(t.layer().with_response_header(ResponseHeader::Off));
    let (_, headers, _) = send(app, get_req("/")).await;
    let span = t.one();
    assert_eq!(
        headers["x-trace-id"],
        span.span_context.trace_id().to_string().as_str()
    );
    assert_eq!(headers["access-control-expose-headers"], "x-trace-id");

    // and nothing without a current span
    let bare = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(TraceResponseHeaderLayer::new());
    let (_, headers, _) = send(bare, get_req("/")).await;
    assert!(!headers.contains_key("traceresponse"));
}
