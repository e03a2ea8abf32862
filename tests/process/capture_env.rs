//! The capture allow-lists from the environment (the variables the other OpenTelemetry HTTP and
//! gRPC instrumentations read): each applies to its side and kind only, a sensitive header is
//! still refused unless forced in code, and a list given in code replaces the environment's. A
//! case of its own process: it sets environment variables before any layer is built.

use crate::common::*;
use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http::Request;
use tower::{Layer, ServiceExt};
use tower_otel_http::OtelLayer;

fn array(span: &opentelemetry_sdk::trace::SpanData, key: &str) -> Option<String> {
    attr(span, key).map(|v| v.to_string())
}

pub async fn capture_lists_come_from_the_environment() {
    for (var, value) in [
        (
            "OTEL_INSTRUMENTATION_HTTP_SERVER_CAPTURE_REQUEST_HEADERS",
            "X-Tenant, authorization",
        ),
        (
            "OTEL_INSTRUMENTATION_HTTP_SERVER_CAPTURE_RESPONSE_HEADERS",
            "x-served-by",
        ),
        (
            "OTEL_INSTRUMENTATION_HTTP_CLIENT_CAPTURE_REQUEST_HEADERS",
            "x-client-req",
        ),
        (
            "OTEL_INSTRUMENTATION_HTTP_CLIENT_CAPTURE_RESPONSE_HEADERS",
            "x-served-by",
        ),
        (
            "OTEL_INSTRUMENTATION_GRPC_CAPTURE_METADATA_SERVER_REQUEST",
            "x-grpc-tenant",
        ),
    ] {
        std::env::set_var(var, value);
    }
    let t = Telemetry::new();
    let app = |layer: tower_otel_http::OtelServerLayer| {
        Router::new()
            .route("/x", get(|| async { ([("x-served-by", "node-1")], "x") }))
            .layer(layer)
    };
    let req = || {
        Request::get("/x")
            .header("x-tenant", "acme")
            .header("authorization", "Bearer secret")
            .header("x-grpc-tenant", "not-for-http")
            .header("x-client-req", "not-for-the-server")
            .body(Body::empty())
            .unwrap()
    };
    // the server: its own variables, HTTP only
    send(app(t.layer()), req()).await;
    let span = t.one();
    assert_eq!(
        array(&span, "http.request.header.x-tenant").as_deref(),
        Some("[\"acme\"]")
    );
    assert_eq!(
        array(&span, "http.request.header.authorization"),
        None,
        "sensitive: refused"
    );
    assert_eq!(
        array(&span, "http.response.header.x-served-by").as_deref(),
        Some("[\"node-1\"]")
    );
    assert_eq!(
        array(&span, "http.request.header.x-grpc-tenant"),
        None,
        "the gRPC list is not HTTP's"
    );
    assert_eq!(
        array(&span, "http.request.header.x-client-req"),
        None,
        "the client's list"
    );
    t.reset();
    // forced in code: the sensitive header is recorded
    send(app(t.layer().with_sensitive_headers(true)), req()).await;
    assert_eq!(
        array(&t.one(), "http.request.header.authorization").as_deref(),
        Some("[\"Bearer secret\"]")
    );
    t.reset();
    // a list in code replaces the environment's
    send(app(t.layer().with_request_headers(["x-client-req"])), req()).await;
    let span = t.one();
    assert_eq!(array(&span, "http.request.header.x-tenant"), None);
    assert_eq!(
        array(&span, "http.request.header.x-client-req").as_deref(),
        Some("[\"not-for-the-server\"]")
    );
    t.reset();
    // the client: its own variables
    let client = OtelLayer::client()
        .with_tracer_provider(&t.provider)
        .layer(tower::service_fn(|_req: Request<String>| async {
            let mut resp = http::Response::new(String::new());
            resp.headers_mut()
                .insert("x-served-by", "node-2".parse().unwrap());
            Ok::<_, std::convert::Infallible>(resp)
        }));
    let req = Request::get("http://downstream.test/y")
        .header("x-client-req", "yes")
        .header("x-tenant", "not-the-clients")
        .body(String::new())
        .unwrap();
    client.oneshot(req).await.unwrap();
    let span = t.one();
    assert_eq!(
        array(&span, "http.request.header.x-client-req").as_deref(),
        Some("[\"yes\"]")
    );
    assert_eq!(array(&span, "http.request.header.x-tenant"), None);
    assert_eq!(
        array(&span, "http.response.header.x-served-by").as_deref(),
        Some("[\"node-2\"]")
    );
}

/// The gRPC metadata lists from the environment alone (no HTTP list set): request metadata and
/// response metadata at the head of a trailers-only answer are both recorded.
pub async fn grpc_metadata_lists_from_the_environment_alone() {
    std::env::set_var(
        "OTEL_INSTRUMENTATION_GRPC_CAPTURE_METADATA_SERVER_REQUEST",
        "x-grpc-tenant",
    );
    std::env::set_var(
        "OTEL_INSTRUMENTATION_GRPC_CAPTURE_METADATA_SERVER_RESPONSE",
        "x-grpc-served",
    );
    let t = Telemetry::new();
    let app = Router::new()
        .route(
            "/pizzeria.Oven/Bake",
            axum::routing::post(|| async {
                (
                    [
                        ("content-type", "application/grpc"),
                        ("grpc-status", "0"),
                        ("x-grpc-served", "node-3"),
                    ],
                    "",
                )
            }),
        )
        .layer(t.layer());
    let req = Request::post("/pizzeria.Oven/Bake")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-grpc-tenant", "acme")
        .body(Body::empty())
        .unwrap();
    send(app, req).await;
    let span = t.one();
    assert_eq!(
        array(&span, "rpc.request.metadata.x-grpc-tenant").as_deref(),
        Some("[\"acme\"]")
    );
    assert_eq!(
        array(&span, "rpc.response.metadata.x-grpc-served").as_deref(),
        Some("[\"node-3\"]"),
        "response metadata at the head, with no HTTP response list set"
    );
}
