//! The user's span-name function is user code: a panic in it is contained (the default name is
//! used) — and while the thread already unwinds (a handler panicked, and the request's record
//! is dropped by the unwinding), it does not run at all: a second panic there would abort the
//! process. A case of its own process: an abort would take the process down.

use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tower::{ServiceBuilder, ServiceExt};
use tower_otel_http::route::RecordRouteLayer;

use crate::common::*;

pub async fn a_panicking_span_name_function_never_aborts_and_is_contained() {
    let t = Telemetry::new();
    let layer = t
        .layer()
        // panics once the route is known
        .with_span_name(|method, route| match route {
            Some(_) => panic!("the user's span-name function panicked"),
            None => format!("{method} (routing)"),
        });

    // the route known at the start: the function panics, the default name is used
    let app = Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .layer(layer.clone());
    let (status, _, body) = send(app, get_req("/users/1")).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "user"));
    assert_eq!(t.one().name, "GET /users/{id}");
    t.reset();

    // around the whole router: the route is settled when the record ends — here, dropped by a
    // handler's panic unwinding through the layer
    let router: Router = Router::new()
        .route(
            "/boom/{id}",
            get(|| async {
                if true {
                    panic!("the handler panicked");
                }
                "never"
            }),
        )
        .layer(RecordRouteLayer::new());
    let svc = ServiceBuilder::new()
        .map_response(IntoResponse::into_response)
        .layer(layer)
        .service(router);
    let joined = tokio::spawn(svc.oneshot(get_req("/boom/7"))).await;
    assert!(
        joined.unwrap_err().is_panic(),
        "the handler's panic reaches the caller"
    );
    let span = t.one();
    assert_eq!(attr_str(&span, "error.type").as_deref(), Some("panic"));
    assert_eq!(
        span.name, "GET /boom/{id}",
        "the default name, the user's function not run"
    );
}
