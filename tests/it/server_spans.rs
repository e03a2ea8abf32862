//! SERVER spans through real axum routers driven with `oneshot`.

use crate::common;

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use axum::Router;
use common::*;
use http::{Request, StatusCode};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, TraceId};
use opentelemetry::KeyValue;
use tower::{Layer, ServiceExt};
use tower_otel_http::route::RecordRouteLayer;
use tower_otel_http::OtelLayer;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// `/api/v1/users/{id}` two levels deep (`/api` → `/v1`), `/api/v1/deep/{a}/items` three.
fn app() -> Router {
    let deep = Router::new().route("/{a}/items", get(|| async { "deep" }));
    let v1 = Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .route("/users", post(|| async { StatusCode::CREATED }))
        .nest("/deep", deep);
    let admin = Router::new().route("/boom", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }));
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/teapot", get(|| async { StatusCode::IM_A_TEAPOT }))
        .route("/odd", get(|| async { StatusCode::from_u16(600).unwrap() }))
        .nest("/api", Router::new().nest("/v1", v1))
        .nest("/admin", admin)
}

#[tokio::test]
async fn nested_route_with_router_layer_on_root() {
    let t = Telemetry::new();
    let app = app().layer(t.layer());
    let (status, _, body) = send(app, get_req("/api/v1/users/42?x=1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "user");

    let span = t.one();
    assert_eq!(span.name, "GET /api/v1/users/{id}");
    assert_eq!(span.span_kind, SpanKind::Server);
    assert_eq!(
        attr_str(&span, "http.route").as_deref(),
        Some("/api/v1/users/{id}")
    );
    assert_eq!(
        attr_str(&span, "url.path").as_deref(),
        Some("/api/v1/users/42")
    );
    assert_eq!(attr_str(&span, "url.query").as_deref(), Some("x=1"));
    assert_eq!(
        attr_str(&span, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(attr_str(&span, "url.scheme").as_deref(), Some("http"));
    assert_eq!(attr_i64(&span, "http.response.status_code"), Some(200));
    assert_eq!(
        attr_str(&span, "network.protocol.version").as_deref(),
        Some("1.1")
    );
    assert!(attr(&span, "network.protocol.name").is_none());
    assert!(attr(&span, "error.type").is_none());
    assert!(attr(&span, "http.request.method_original").is_none());
    assert_eq!(span.status, Status::Unset);
    assert!(is_root(&span));
}

#[tokio::test]
async fn route_two_levels_deep_and_post() {
    let t = Telemetry::new();
    let app = app().layer(t.layer());
    let (_, _, body) = send(app.clone(), get_req("/api/v1/deep/x/items")).await;
    assert_eq!(body, "deep");
    let span = t.one();
    assert_eq!(span.name, "GET /api/v1/deep/{a}/items");
    assert_eq!(
        attr_str(&span, "http.route").as_deref(),
        Some("/api/v1/deep/{a}/items")
    );
    t.reset();

    let req = Request::post("/api/v1/users").body(Body::empty()).unwrap();
    let (status, _, _) = send(app, req).await;
    assert_eq!(status, StatusCode::CREATED);
    let span = t.one();
    assert_eq!(span.name, "POST /api/v1/users");
    assert!(attr(&span, "url.query").is_none(), "no query received");
}

#[tokio::test]
async fn layer_around_whole_router_with_route_recorder() {
    let t = Telemetry::new();
    let svc = t.layer().layer(app().layer(RecordRouteLayer::new()));
    send(svc, get_req("/api/v1/users/7")).await;
    let span = t.one();
    assert_eq!(span.name, "GET /api/v1/users/{id}");
    assert_eq!(
        attr_str(&span, "http.route").as_deref(),
        Some("/api/v1/users/{id}")
    );
}

#[tokio::test]
async fn layer_around_whole_router_with_inner_instance() {
    let t = Telemetry::new();
    let layer = t.layer();
    let svc = layer.layer(app().layer(layer.clone()));
    send(svc, get_req("/api/v1/users/7")).await;
    let span = t.one();
    assert_eq!(span.name, "GET /api/v1/users/{id}");
    assert_eq!(
        attr_str(&span, "http.route").as_deref(),
        Some("/api/v1/users/{id}")
    );
}

#[tokio::test]
async fn layer_around_whole_router_without_recorder_has_no_route() {
    let t = Telemetry::new();
    let svc = t.layer().layer(app());
    send(svc, get_req("/api/v1/users/7")).await;
    let span = t.one();
    assert_eq!(span.name, "GET");
    assert!(attr(&span, "http.route").is_none());
    assert_eq!(
        attr_str(&span, "url.path").as_deref(),
        Some("/api/v1/users/7")
    );
}

#[tokio::test]
async fn not_found_fallback_has_no_route_and_unset_status() {
    let t = Telemetry::new();
    for svc_outer in [false, true] {
        let (status, _, _) = if svc_outer {
            send(
                t.layer().layer(app().layer(RecordRouteLayer::new())),
                get_req("/nope/123"),
            )
            .await
        } else {
            send(app().layer(t.layer()), get_req("/nope/123")).await
        };
        assert_eq!(status, StatusCode::NOT_FOUND);
        let span = t.one();
        assert_eq!(span.name, "GET", "outer={svc_outer}");
        assert!(attr(&span, "http.route").is_none());
        assert_eq!(attr_i64(&span, "http.response.status_code"), Some(404));
        assert_eq!(span.status, Status::Unset);
        assert!(attr(&span, "error.type").is_none());
        t.reset();
    }
}

#[tokio::test]
async fn stacked_layers_make_one_span() {
    let t = Telemetry::new();
    let layer = t.layer();
    // on the nested router and on the root
    let users = Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .layer(layer.clone());
    let app = Router::new()
        .nest("/api", users)
        .layer(layer.clone())
        .layer(layer.clone());
    send(app.clone(), get_req("/api/users/1")).await;
    let span = t.one();
    assert_eq!(span.name, "GET /api/users/{id}");
    t.reset();
    // twice around the outside as well
    let svc = layer.layer(layer.layer(app));
    send(svc, get_req("/api/users/1")).await;
    assert_eq!(t.one().name, "GET /api/users/{id}");
    t.reset();
    // two different layer values (e.g. two providers) still make one span
    let other = Telemetry::new();
    let app = Router::new()
        .route("/x", get(|| async { "x" }))
        .layer(other.layer())
        .layer(layer);
    send(app, get_req("/x")).await;
    assert_eq!(t.one().name, "GET /x");
    assert!(other.spans().is_empty());
}

#[tokio::test]
async fn five_hundred_is_error_with_error_type() {
    let t = Telemetry::new();
    let (status, _, _) = send(app().layer(t.layer()), get_req("/admin/boom")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let span = t.one();
    assert!(is_error(&span));
    assert_eq!(
        span.status,
        Status::error(""),
        "no description when the code says it all"
    );
    assert_eq!(attr_str(&span, "error.type").as_deref(), Some("500"));
    assert_eq!(attr_i64(&span, "http.response.status_code"), Some(500));
}

#[tokio::test]
async fn four_xx_leaves_status_unset() {
    let t = Telemetry::new();
    send(app().layer(t.layer()), get_req("/teapot")).await;
    let span = t.one();
    assert_eq!(span.status, Status::Unset);
    assert!(attr(&span, "error.type").is_none());
    assert_eq!(attr_i64(&span, "http.response.status_code"), Some(418));
}

#[tokio::test]
async fn status_outside_100_599_is_error() {
    let t = Telemetry::new();
    let (status, _, _) = send(app().layer(t.layer()), get_req("/odd")).await;
    assert_eq!(status.as_u16(), 600, "response unchanged");
    let span = t.one();
    assert!(is_error(&span));
    assert_eq!(attr_str(&span, "error.type").as_deref(), Some("_OTHER"));
    assert_eq!(attr_i64(&span, "http.response.status_code"), Some(600));
}

#[derive(Debug)]
struct MyError;

impl std::fmt::Display for MyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("my error")
    }
}

impl std::error::Error for MyError {}

#[derive(Debug)]
enum AppError {
    Db,
    Other,
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("app error")
    }
}

impl std::error::Error for AppError {}

#[tokio::test]
async fn inner_error_type_is_short_and_user_classifiable() {
    use tower_otel_http::error;
    // an error type the crate knows: classified from its source chain
    let t = Telemetry::new();
    let svc = t
        .layer()
        .layer(tower::service_fn(|_req: Request<Body>| async {
            Err::<http::Response<Body>, tower::BoxError>(Box::new(std::io::Error::from(
                std::io::ErrorKind::TimedOut,
            )))
        }));
    svc.oneshot(get_req("/x")).await.unwrap_err();
    assert_eq!(
        attr_str(&t.one(), "error.type").as_deref(),
        Some(error::TIMEOUT)
    );
    // the user's classification first; declined: the default
    for (e, want) in [(AppError::Db, "db"), (AppError::Other, "_OTHER")] {
        let t = Telemetry::new();
        let e = std::sync::Mutex::new(Some(e));
        let svc = t
            .layer()
            .with_error_type(|e: &AppError| match e {
                AppError::Db => Some("db"),
                AppError::Other => None,
            })
            .layer(tower::service_fn(move |_req: Request<Body>| {
                let e = e.lock().unwrap().take().unwrap();
                async move { Err::<http::Response<Body>, _>(e) }
            }));
        svc.oneshot(get_req("/x")).await.unwrap_err();
        let span = t.one();
        assert!(is_error(&span));
        assert_eq!(attr_str(&span, "error.type").as_deref(), Some(want));
    }
}

#[tokio::test]
async fn inner_service_error_sets_error_type() {
    let t = Telemetry::new();
    let svc = t
        .layer()
        .layer(tower::service_fn(|_req: Request<Body>| async {
            Err::<http::Response<Body>, _>(MyError)
        }));
    let err = svc.oneshot(get_req("/x")).await.unwrap_err();
    assert!(matches!(err, MyError), "the error is passed through");
    let span = t.one();
    assert!(is_error(&span));
    // not a compiler-generated type path: a stable value
    assert_eq!(attr_str(&span, "error.type").as_deref(), Some("_OTHER"));
    assert!(attr(&span, "http.response.status_code").is_none());
}

#[tokio::test]
async fn unknown_method_is_other() {
    let t = Telemetry::new();
    let app = Router::new()
        .route("/x", axum::routing::any(|| async { "any" }))
        .layer(t.layer());
    for (method, original) in [("PURGE", "PURGE"), ("get", "get")] {
        let req = Request::builder()
            .method(method)
            .uri("/x")
            .body(Body::empty())
            .unwrap();
        send(app.clone(), req).await;
        let span = t.one();
        assert_eq!(span.name, "HTTP /x");
        assert_eq!(
            attr_str(&span, "http.request.method").as_deref(),
            Some("_OTHER")
        );
        assert_eq!(
            attr_str(&span, "http.request.method_original").as_deref(),
            Some(original)
        );
        t.reset();
    }
}

#[tokio::test]
async fn known_methods_override() {
    let t = Telemetry::new();
    let app = Router::new()
        .route("/x", axum::routing::any(|| async { "any" }))
        .layer(t.layer().with_known_methods(["GET", "PURGE"]));
    let req = Request::builder()
        .method("PURGE")
        .uri("/x")
        .body(Body::empty())
        .unwrap();
    send(app.clone(), req).await;
    let span = t.one();
    assert_eq!(span.name, "PURGE /x");
    assert_eq!(
        attr_str(&span, "http.request.method").as_deref(),
        Some("PURGE")
    );
    assert!(attr(&span, "http.request.method_original").is_none());
    t.reset();
    let req = Request::post("/x").body(Body::empty()).unwrap();
    send(app, req).await;
    assert_eq!(
        attr_str(&t.one(), "http.request.method").as_deref(),
        Some("_OTHER")
    );
}

#[tokio::test]
async fn continues_valid_traceparent() {
    let t = Telemetry::new();
    let req = Request::get("/health")
        .header("traceparent", TRACEPARENT)
        .header("tracestate", "vendor=abc")
        .body(Body::empty())
        .unwrap();
    send(app().layer(t.layer()), req).await;
    let span = t.one();
    assert_eq!(
        span.span_context.trace_id(),
        TraceId::from_hex(TRACE_ID).unwrap()
    );
    assert_eq!(span.parent_span_id.to_string(), PARENT);
    assert!(span.parent_span_is_remote);
    assert_eq!(span.span_context.trace_state().get("vendor"), Some("abc"));
}

#[tokio::test]
async fn strict_traceparent_rejections_start_new_roots() {
    let t = Telemetry::new();
    let app = app().layer(t.layer());
    for bad in [
        "00-1-2-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ] {
        let req = Request::get("/health")
            .header("traceparent", bad)
            .header("tracestate", "vendor=abc")
            .body(Body::empty())
            .unwrap();
        let (status, _, _) = send(app.clone(), req).await;
        assert_eq!(status, StatusCode::OK);
        let span = t.one();
        assert!(is_root(&span), "{bad} was continued");
        assert_ne!(span.span_context.trace_id().to_string(), TRACE_ID);
        assert_eq!(
            span.span_context.trace_state().get("vendor"),
            None,
            "tracestate kept with {bad}"
        );
        t.reset();
    }
}

#[tokio::test]
async fn sdk_propagator_also_gets_strict_validation_and_keeps_random_flag() {
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    let t = Telemetry::new();
    let app = app().layer(t.layer().with_propagator(TraceContextPropagator::new()));
    let req = Request::get("/health")
        .header("traceparent", "00-1-2-01")
        .body(Body::empty())
        .unwrap();
    send(app.clone(), req).await;
    assert!(is_root(&t.one()), "the SDK alone accepts 00-1-2-01");
    t.reset();

    let req = Request::get("/health")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
        )
        .body(Body::empty())
        .unwrap();
    send(app, req).await;
    let span = t.one();
    assert_eq!(span.parent_span_id.to_string(), PARENT);
    assert_eq!(
        span.span_context.trace_flags().to_u8(),
        0b11,
        "random flag kept"
    );
}

#[tokio::test]
async fn public_endpoint_starts_new_root_with_link() {
    let t = Telemetry::new();
    let app = Router::new()
        .route("/public", get(|| async { "p" }))
        .route("/internal", get(|| async { "i" }))
        .layer(
            t.layer()
                .with_public_endpoint(|parts: &http::request::Parts| {
                    parts.uri.path().starts_with("/public")
                }),
        );
    let req = |path: &str| {
        Request::get(path)
            .header("traceparent", TRACEPARENT)
            .body(Body::empty())
            .unwrap()
    };
    send(app.clone(), req("/public")).await;
    let span = t.one();
    assert!(is_root(&span));
    assert_ne!(span.span_context.trace_id().to_string(), TRACE_ID);
    assert_eq!(span.links.links.len(), 1);
    let link = &span.links.links[0].span_context;
    assert_eq!(link.trace_id().to_string(), TRACE_ID);
    assert_eq!(link.span_id().to_string(), PARENT);
    t.reset();

    send(app, req("/internal")).await;
    let span = t.one();
    assert_eq!(span.parent_span_id.to_string(), PARENT);
    assert!(span.links.links.is_empty());
}

#[tokio::test]
async fn public_endpoint_without_caller_context_has_no_link() {
    let t = Telemetry::new();
    let app = app().layer(t.layer().with_public_endpoint(true));
    send(app, get_req("/health")).await;
    let span = t.one();
    assert!(is_root(&span));
    assert!(span.links.links.is_empty());
}

#[tokio::test]
async fn context_is_current_in_handler() {
    let t = Telemetry::new();
    let app = Router::new()
        .route(
            "/ctx",
            get(|| async {
                let cx = opentelemetry::Context::current();
                let sc = cx.span().span_context().clone();
                format!("{}-{}", sc.trace_id(), sc.span_id())
            }),
        )
        .layer(t.layer());
    let (_, _, body) = send(app, get_req("/ctx")).await;
    let span = t.one();
    assert_eq!(
        body,
        format!(
            "{}-{}",
            span.span_context.trace_id(),
            span.span_context.span_id()
        )
    );
}

#[tokio::test]
async fn query_is_redacted() {
    let t = Telemetry::new();
    send(
        app().layer(t.layer()),
        get_req("/health?sig=secret&page=2&X-Amz-Signature=abc&AWSAccessKeyId=AKIA"),
    )
    .await;
    assert_eq!(
        attr_str(&t.one(), "url.query").as_deref(),
        Some("sig=REDACTED&page=2&X-Amz-Signature=REDACTED&AWSAccessKeyId=REDACTED")
    );
    t.reset();
    send(
        app().layer(t.layer().with_redacted_query_keys(["token"])),
        get_req("/health?token=t&sig=s"),
    )
    .await;
    assert_eq!(
        attr_str(&t.one(), "url.query").as_deref(),
        Some("token=REDACTED&sig=s")
    );
}

#[tokio::test]
async fn headers_only_when_allow_listed() {
    let t = Telemetry::new();
    let app = Router::new()
        .route(
            "/h",
            get(|| async { ([("x-resp", "r1"), ("x-secret-resp", "no")], "h") }),
        )
        .layer(
            t.layer()
                .with_request_headers(["X-Request-Id", "x-multi", "bad name"])
                .with_response_headers(["x-resp"]),
        );
    let req = Request::get("/h")
        .header("x-request-id", "abc")
        .header("x-multi", "1")
        .header("x-multi", "2")
        .header("authorization", "Bearer secret")
        .body(Body::empty())
        .unwrap();
    send(app, req).await;
    let span = t.one();
    let arr = |k: &str| match attr(&span, k) {
        Some(opentelemetry::Value::Array(opentelemetry::Array::String(v))) => {
            Some(v.iter().map(|s| s.as_str().to_owned()).collect::<Vec<_>>())
        }
        None => None,
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(
        arr("http.request.header.x-request-id"),
        Some(vec!["abc".into()])
    );
    assert_eq!(
        arr("http.request.header.x-multi"),
        Some(vec!["1".into(), "2".into()])
    );
    assert_eq!(arr("http.response.header.x-resp"), Some(vec!["r1".into()]));
    for kv in &span.attributes {
        let k = kv.key.as_str();
        assert!(
            !k.contains("authorization") && !k.contains("secret"),
            "{k} recorded"
        );
    }
}

#[tokio::test]
async fn peer_server_and_user_agent_attributes() {
    let t = Telemetry::new();
    let app = app().layer(t.layer().with_client_port(true));
    let mut req = Request::get("/health")
        .header("host", "example.com:8080")
        .header("user-agent", "curl/8.0")
        .body(Body::empty())
        .unwrap();
    let peer: SocketAddr = "10.1.2.3:5555".parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(peer));
    send(app, req).await;
    let span = t.one();
    assert_eq!(
        attr_str(&span, "server.address").as_deref(),
        Some("example.com")
    );
    assert_eq!(attr_i64(&span, "server.port"), Some(8080));
    assert_eq!(
        attr_str(&span, "user_agent.original").as_deref(),
        Some("curl/8.0")
    );
    assert_eq!(
        attr_str(&span, "client.address").as_deref(),
        Some("10.1.2.3")
    );
    assert_eq!(attr_i64(&span, "client.port"), Some(5555));
    assert_eq!(
        attr_str(&span, "network.peer.address").as_deref(),
        Some("10.1.2.3")
    );
    assert_eq!(attr_i64(&span, "network.peer.port"), Some(5555));
}

#[tokio::test]
async fn default_port_and_no_opt_in_client_port() {
    let t = Telemetry::new();
    let mut req = Request::get("/health")
        .header("host", "example.com")
        .body(Body::empty())
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo("10.1.2.3:5555".parse::<SocketAddr>().unwrap()));
    send(app().layer(t.layer()), req).await;
    let span = t.one();
    assert_eq!(attr_i64(&span, "server.port"), Some(80));
    assert!(attr(&span, "client.port").is_none());
    t.reset();

    // absolute-form / :authority wins over Host, and an https scheme implies 443
    let req = Request::get("https://api.example.org/health")
        .header("host", "ignored.example.com")
        .body(Body::empty())
        .unwrap();
    send(app().layer(t.layer()), req).await;
    let span = t.one();
    assert_eq!(
        attr_str(&span, "server.address").as_deref(),
        Some("api.example.org")
    );
    assert_eq!(attr_i64(&span, "server.port"), Some(443));
    assert_eq!(attr_str(&span, "url.scheme").as_deref(), Some("https"));
}

#[tokio::test]
async fn proxy_headers_only_when_trusted() {
    let t = Telemetry::new();
    let req = || {
        let mut req = Request::get("/health")
            .header("forwarded", "for=203.0.113.9;proto=https")
            .header("x-forwarded-for", "198.51.100.1")
            .body(Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo("10.0.0.2:4000".parse::<SocketAddr>().unwrap()));
        req
    };
    send(app().layer(t.layer()), req()).await;
    let span = t.one();
    assert_eq!(
        attr_str(&span, "client.address").as_deref(),
        Some("10.0.0.2")
    );
    assert_eq!(attr_str(&span, "url.scheme").as_deref(), Some("http"));
    t.reset();

    send(
        app().layer(t.layer().with_trusted_proxy_headers(true)),
        req(),
    )
    .await;
    let span = t.one();
    assert_eq!(
        attr_str(&span, "client.address").as_deref(),
        Some("203.0.113.9")
    );
    assert_eq!(
        attr_str(&span, "network.peer.address").as_deref(),
        Some("10.0.0.2")
    );
    assert_eq!(attr_str(&span, "url.scheme").as_deref(), Some("https"));
}

#[tokio::test]
async fn with_https_sets_connection_scheme() {
    let t = Telemetry::new();
    send(app().layer(t.layer().with_https(true)), get_req("/health")).await;
    assert_eq!(attr_str(&t.one(), "url.scheme").as_deref(), Some("https"));
}

#[tokio::test]
async fn http2_and_http10_versions() {
    let t = Telemetry::new();
    for (v, s) in [
        (http::Version::HTTP_2, "2"),
        (http::Version::HTTP_10, "1.0"),
    ] {
        let req = Request::get("/health")
            .version(v)
            .body(Body::empty())
            .unwrap();
        send(app().layer(t.layer()), req).await;
        assert_eq!(
            attr_str(&t.one(), "network.protocol.version").as_deref(),
            Some(s)
        );
        t.reset();
    }
}

#[tokio::test]
async fn filter_skips_requests_entirely() {
    let t = Telemetry::new();
    let layer = t.layer().with_filter(|parts| parts.uri.path() != "/health");
    // an inner instance must not trace a filtered request either
    let app = app().layer(layer.clone()).layer(layer);
    let (status, _, body) = send(app.clone(), get_req("/health")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    assert!(t.spans().is_empty());
    send(app, get_req("/teapot")).await;
    assert_eq!(t.one().name, "GET /teapot");
}

#[tokio::test]
async fn hooks_and_span_name_override() {
    let t = Telemetry::new();
    let layer = t
        .layer()
        .with_request_attributes(|parts, attrs| {
            if let Some(tenant) = parts.headers.get("x-tenant") {
                attrs.push(KeyValue::new(
                    "tenant",
                    tenant.to_str().unwrap_or("?").to_owned(),
                ));
            }
        })
        .with_response_attributes(|parts, attrs| {
            attrs.push(KeyValue::new(
                "resp.has_body_type",
                parts.headers.contains_key("content-type"),
            ));
        })
        .with_span_name(|method, route| format!("handle {method} {}", route.unwrap_or("-")));
    let req = Request::get("/api/v1/users/3")
        .header("x-tenant", "acme")
        .body(Body::empty())
        .unwrap();
    send(app().layer(layer.clone()), req).await;
    let span = t.one();
    assert_eq!(span.name, "handle GET /api/v1/users/{id}");
    assert_eq!(attr_str(&span, "tenant").as_deref(), Some("acme"));
    assert_eq!(attr(&span, "resp.has_body_type"), Some(true.into()));
    t.reset();
    // the override is applied again when the route is known only after routing
    let svc = layer.layer(app().layer(RecordRouteLayer::new()));
    send(svc, get_req("/api/v1/users/3")).await;
    assert_eq!(t.one().name, "handle GET /api/v1/users/{id}");
}

#[tokio::test]
async fn sampler_sees_start_attributes() {
    use opentelemetry::trace::{Link, SpanKind, TraceId};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, ShouldSample};
    use opentelemetry_sdk::trace::{SamplingDecision, SamplingResult};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Debug, Default)]
    struct Recorder(Arc<Mutex<Vec<String>>>);
    impl ShouldSample for Recorder {
        fn should_sample(
            &self,
            _parent: Option<&opentelemetry::Context>,
            _trace_id: TraceId,
            name: &str,
            _kind: &SpanKind,
            attributes: &[KeyValue],
            _links: &[Link],
        ) -> SamplingResult {
            let mut v = self.0.lock().unwrap();
            v.push(format!("name={name}"));
            v.extend(attributes.iter().map(|kv| kv.key.to_string()));
            SamplingResult {
                decision: SamplingDecision::RecordAndSample,
                attributes: vec![],
                trace_state: Default::default(),
            }
        }
    }
    let rec = Recorder::default();
    let provider = SdkTracerProvider::builder()
        .with_sampler(rec.clone())
        .with_simple_exporter(InMemorySpanExporter::default())
        .build();
    let app = app().layer(OtelLayer::server().with_tracer_provider(&provider));
    let req = Request::get("/api/v1/users/1?a=b")
        .header("host", "h.example")
        .header("user-agent", "ua")
        .body(Body::empty())
        .unwrap();
    send(app, req).await;
    let seen = rec.0.lock().unwrap().clone();
    for key in [
        "name=GET /api/v1/users/{id}",
        "http.request.method",
        "url.path",
        "url.query",
        "url.scheme",
        "http.route",
        "server.address",
        "server.port",
        "user_agent.original",
        "network.protocol.version",
    ] {
        assert!(
            seen.iter().any(|s| s == key),
            "sampler did not see {key}: {seen:?}"
        );
    }
}

#[tokio::test]
async fn malformed_headers_never_panic_or_change_the_response() {
    let t = Telemetry::new();
    let app = app().layer(
        t.layer()
            .with_request_headers(["x-bin"])
            .with_trusted_proxy_headers(true),
    );
    let long = "a".repeat(20_000);
    let bin = http::HeaderValue::from_bytes(b"\xff\xfe\x80bin").unwrap();
    let req = Request::get("/health?%ZZ=%%&&==&")
        .header("host", bin.clone())
        .header("user-agent", bin.clone())
        .header("x-bin", bin.clone())
        .header("traceparent", bin.clone())
        .header("tracestate", long.as_str())
        .header("baggage", bin.clone())
        .header("forwarded", "for=;;;proto==,,")
        .header("x-forwarded-for", bin.clone())
        .header("x-forwarded-proto", long.as_str())
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(app.clone(), req).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    let span = t.one();
    assert!(is_root(&span));
    assert!(attr(&span, "server.address").is_none());
    assert_eq!(
        attr_str(&span, "user_agent.original").as_deref(),
        Some("\u{fffd}\u{fffd}\u{fffd}bin")
    );
    assert_eq!(attr_str(&span, "url.query").as_deref(), Some("%ZZ=%%&&==&"));
    t.reset();

    for host in ["[::1", "a b", "host:99999", ""] {
        let req = Request::get("/health")
            .header("host", host)
            .body(Body::empty())
            .unwrap();
        let (status, _, _) = send(app.clone(), req).await;
        assert_eq!(status, StatusCode::OK);
        assert!(attr(&t.one(), "server.address").is_none(), "{host:?}");
        t.reset();
    }
}

#[tokio::test]
async fn infallible_router_type_is_kept() {
    // The service error type is the inner one: axum's `Router` stays `Infallible`.
    let t = Telemetry::new();
    let svc = t.layer().layer(app());
    let resp: Result<_, Infallible> = svc.oneshot(get_req("/health")).await;
    assert!(resp.is_ok());
}

#[tokio::test]
async fn noop_provider_records_nothing_but_passes_the_callers_context_on() {
    use opentelemetry::trace::noop::NoopTracerProvider;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    let handler = || async {
        let cx = opentelemetry::Context::current();
        cx.span().span_context().trace_id().to_string()
    };
    // a propagator is configured: the caller's context is current in the handler
    let app = Router::new().route("/ctx", get(handler)).layer(
        OtelLayer::server()
            .with_tracer_provider(&NoopTracerProvider::new())
            .with_metrics(false)
            .with_propagator(TraceContextPropagator::new()),
    );
    let req = || {
        Request::get("/ctx")
            .header("traceparent", TRACEPARENT)
            .body(Body::empty())
            .unwrap()
    };
    let (status, _, body) = send(app.clone(), req()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, TRACE_ID);
    let (_, headers, body) = send(app, get_req("/ctx")).await;
    assert_eq!(body, TraceId::INVALID.to_string());
    assert!(!headers.contains_key("traceresponse"));

    // nothing configured at all (OpenTelemetry without an SDK): a pure pass-through
    let app = Router::new().route("/ctx", get(handler)).layer(
        OtelLayer::server()
            .with_tracer_provider(&NoopTracerProvider::new())
            .with_metrics(false),
    );
    let (status, headers, body) = send(app, req()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, TraceId::INVALID.to_string());
    assert!(!headers.contains_key("traceresponse"));
}

#[tokio::test]
async fn nest_service_routes_get_no_route_as_documented() {
    let t = Telemetry::new();
    let svc = tower::service_fn(|_req: Request<Body>| async {
        Ok::<_, Infallible>(http::Response::new(Body::from("static")))
    });
    let app = Router::new().nest_service("/static", svc).layer(t.layer());
    let (status, _, body) = send(app, get_req("/static/css/site.css")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "static"));
    let span = t.one();
    assert_eq!(span.name, "GET");
    assert!(attr(&span, "http.route").is_none());
    assert_eq!(
        attr_str(&span, "url.path").as_deref(),
        Some("/static/css/site.css")
    );
}

#[tokio::test]
async fn baggage_is_limited_by_the_propagator() {
    use opentelemetry::baggage::BaggageExt;
    use opentelemetry_sdk::propagation::BaggagePropagator;
    let t = Telemetry::new();
    let app = Router::new()
        .route(
            "/b",
            get(|| async {
                let cx = opentelemetry::Context::current();
                let b = cx.baggage();
                let has = |k: &str| b.get(k).is_some();
                format!("{} {} {} {}", b.len(), has("k0"), has("k63"), has("k64"))
            }),
        )
        .layer(t.layer().with_propagator(BaggagePropagator::new()));
    let members: Vec<String> = (0..70).map(|i| format!("k{i}=v{i}")).collect();
    let req = Request::get("/b")
        .header("baggage", members.join(","))
        .body(Body::empty())
        .unwrap();
    let (_, _, body) = send(app.clone(), req).await;
    assert_eq!(
        body, "64 true true false",
        "the first 64 whole members propagated"
    );
    let req = Request::get("/b")
        .header("baggage", "a=1,b=2")
        .body(Body::empty())
        .unwrap();
    let (_, _, body) = send(app, req).await;
    assert_eq!(
        body, "2 false false false",
        "small baggage propagated in full"
    );
}

#[tokio::test]
async fn a_public_endpoint_never_hands_on_the_callers_context_even_recording_no_span() {
    use opentelemetry::trace::noop::NoopTracerProvider;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    let handler = || async {
        let cx = opentelemetry::Context::current();
        cx.span().span_context().trace_id().to_string()
    };
    let req = || {
        Request::get("/ctx")
            .header("traceparent", TRACEPARENT)
            .body(Body::empty())
            .unwrap()
    };
    let m = Metrics::new();
    for layer in [
        // metrics only
        OtelLayer::server()
            .with_spans(false)
            .with_meter_provider(&m.provider),
        // records nothing at all
        OtelLayer::server()
            .with_tracer_provider(&NoopTracerProvider::new())
            .with_metrics(false),
    ] {
        let layer = layer.with_propagator(TraceContextPropagator::new());
        let public = Router::new()
            .route("/ctx", get(handler))
            .layer(layer.clone().with_public_endpoint(true));
        let (_, _, body) = send(public, req()).await;
        assert_eq!(
            body,
            TraceId::INVALID.to_string(),
            "the caller's trace is not current"
        );
        // the control: not a public endpoint, the caller's context flows on
        let internal = Router::new().route("/ctx", get(handler)).layer(layer);
        let (_, _, body) = send(internal, req()).await;
        assert_eq!(body, TRACE_ID);
    }
}

/// `with_error_type` for an error the service can never return (behind axum the service error is
/// `Infallible`: handlers answer errors with responses) says so once, through `tracing`, at the
/// first request — not a silent no-op.
#[test]
fn an_error_type_function_that_can_never_match_is_warned_about_once() {
    use tracing_subscriber::layer::SubscriberExt;
    let buf = Buf::default();
    let w = buf.clone();
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || w.clone()),
    );
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rt = &rt;
    rt.block_on(async {
        let t = Telemetry::new();
        let app = axum::Router::new()
            .route("/x", axum::routing::get(|| async { "x" }))
            .layer(t.layer().with_error_type(|_: &AppError| Some("app")));
        for _ in 0..3 {
            send(app.clone(), get_req("/x")).await;
        }
    });
    let warnings: Vec<String> = buf
        .lines()
        .into_iter()
        .filter(|l| l.contains("with_error_type can never match"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning: {:?}", buf.lines());
    assert!(warnings[0].contains("Infallible"), "{}", warnings[0]);
    assert!(warnings[0].contains("AppError"), "{}", warnings[0]);

    // a function for the body's errors (axum's) can match: no warning
    let buf = Buf::default();
    let w = buf.clone();
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || w.clone()),
    );
    let _guard = tracing::subscriber::set_default(subscriber);
    rt.block_on(async {
        let t = Telemetry::new();
        let app = axum::Router::new()
            .route("/x", axum::routing::get(|| async { "x" }))
            .layer(t.layer().with_error_type(|_: &axum::Error| Some("body")));
        send(app, get_req("/x")).await;
    });
    assert!(
        !buf.lines().iter().any(|l| l.contains("with_error_type")),
        "{:?}",
        buf.lines()
    );
}
