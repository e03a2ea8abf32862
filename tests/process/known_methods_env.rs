//! `OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS` overrides the known methods. A case of its own
//! process: it sets an environment variable before any layer is built.

use crate::common::*;
use axum::body::Body;
use axum::routing::any;
use axum::Router;
use http::Request;

pub async fn env_overrides_known_methods() {
    // Set before any layer is built; this process runs no other case.
    std::env::set_var("OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS", "GET,PURGE");
    let t = Telemetry::new();
    let app = Router::new()
        .route("/x", any(|| async { "x" }))
        .layer(t.layer());
    for (method, recorded, name) in [
        ("PURGE", "PURGE", "PURGE /x"),
        ("GET", "GET", "GET /x"),
        ("POST", "_OTHER", "HTTP /x"),
    ] {
        let req = Request::builder()
            .method(method)
            .uri("/x")
            .body(Body::empty())
            .unwrap();
        send(app.clone(), req).await;
        let span = t.one();
        assert_eq!(span.name, name);
        assert_eq!(
            attr_str(&span, "http.request.method").as_deref(),
            Some(recorded)
        );
        t.reset();
    }
}
