//! The client layer over real loopback TCP: hyper-util's client through the tower layer and
//! reqwest through reqwest-middleware, against axum servers instrumented with the server layer
//! (the HTTP client span and metric conventions, and W3C Trace Context).
#![cfg(feature = "reqwest")]

use crate::common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request as AxumRequest;
use axum::routing::get;
use axum::Router;
use common::*;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::{SpanContext, SpanKind, Status};
use opentelemetry_sdk::trace::SpanData;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_otel_http::client::{Attempts, NoPropagation, UrlTemplate};
use tower_otel_http::{error, OtelClientLayer, OtelLayer};

type HyperClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn hyper_client() -> HyperClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn serve(app: Router) -> SocketAddr {
    crate::common::serve_on_loopback(app).await
}

/// Headers received by the server, per request.
type Seen = Arc<Mutex<Vec<HeaderMap>>>;

/// A server recording the headers it receives: `/ok`, `/missing` (404), `/flaky` (500 once,
/// then 200), `/slow` (answers after 5 s), `/stream` (a body in two parts).
fn app(seen: Seen) -> Router {
    let flaky = Arc::new(Mutex::new(0u32));
    let record = move |req: AxumRequest, next: axum::middleware::Next| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push(req.headers().clone());
            next.run(req).await
        }
    };
    Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route("/items/{id}", get(|| async { "item" }))
        .route(
            "/missing",
            get(|| async { (StatusCode::NOT_FOUND, "nope") }),
        )
        .route(
            "/flaky",
            get(move || {
                let flaky = flaky.clone();
                async move {
                    let mut n = flaky.lock().unwrap();
                    *n += 1;
                    if *n == 1 {
                        (StatusCode::INTERNAL_SERVER_ERROR, "try again")
                    } else {
                        (StatusCode::OK, "ok")
                    }
                }
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route(
            "/stream",
            get(|| async {
                let parts = futures_util::stream::iter([
                    Ok::<_, Infallible>(Bytes::from_static(b"hello ")),
                    Ok(Bytes::from_static(b"world")),
                ]);
                Body::from_stream(parts)
            }),
        )
        .layer(axum::middleware::from_fn(record))
}

/// Wait until `n` spans have ended.
async fn spans(t: &Telemetry, n: usize) -> Vec<SpanData> {
    for _ in 0..300 {
        let s = t.spans();
        if s.len() >= n {
            tokio::time::sleep(Duration::from_millis(20)).await;
            return t.spans();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t.spans()
}

fn of_kind(spans: &[SpanData], kind: SpanKind) -> Vec<SpanData> {
    spans
        .iter()
        .filter(|s| s.span_kind == kind)
        .cloned()
        .collect()
}

fn client_layer(t: &Telemetry) -> OtelClientLayer {
    OtelLayer::client().with_tracer_provider(&t.provider)
}

async fn hyper_get<S, B>(svc: S, url: String) -> (StatusCode, String, http::Extensions)
where
    S: Service<Request<Full<Bytes>>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let resp = svc
        .oneshot(Request::get(url).body(Full::default()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        status,
        String::from_utf8_lossy(&body).into_owned(),
        parts.extensions,
    )
}

#[tokio::test]
async fn hyper_client_span_is_the_parent_of_the_server_span() {
    let t = Telemetry::new();
    let seen = Seen::default();
    let addr = serve(app(seen.clone()).layer(t.layer())).await;
    let client = client_layer(&t).layer(hyper_client());
    let (status, body, ext) = hyper_get(client, format!("http://{addr}/ok?q=1")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));

    let all = spans(&t, 2).await;
    let client = &of_kind(&all, SpanKind::Client)[0];
    let server = &of_kind(&all, SpanKind::Server)[0];
    assert_eq!(client.name, "GET");
    assert_eq!(server.parent_span_id, client.span_context.span_id());
    assert_eq!(
        server.span_context.trace_id(),
        client.span_context.trace_id()
    );
    assert!(
        is_root(client),
        "no current context: the client span is a root"
    );
    // the attributes of an HTTP client span
    assert_eq!(
        attr_str(client, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        attr_str(client, "server.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        attr_i64(client, "server.port"),
        Some(i64::from(addr.port()))
    );
    assert_eq!(
        attr_str(client, "url.full"),
        Some(format!("http://{addr}/ok?q=1"))
    );
    assert_eq!(attr_i64(client, "http.response.status_code"), Some(200));
    assert_eq!(
        attr_str(client, "network.protocol.version").as_deref(),
        Some("1.1")
    );
    assert_eq!(
        attr_str(client, "network.peer.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        attr_i64(client, "network.peer.port"),
        Some(i64::from(addr.port()))
    );
    assert_eq!(attr(client, "http.request.resend_count"), None);
    assert_eq!(attr(client, "error.type"), None);
    assert_eq!(client.status, Status::Unset);
    // the traceparent on the wire is the client span's
    let sent = seen.lock().unwrap()[0].clone();
    let tp = sent
        .get("traceparent")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        tp,
        format!(
            "00-{}-{}-01",
            client.span_context.trace_id(),
            client.span_context.span_id()
        )
    );
    // and the caller can read it from the response
    let sc = ext
        .get::<tower_otel_http::client::ClientSpanContext>()
        .expect("span context in the extensions");
    assert_eq!(sc.span_context().span_id(), client.span_context.span_id());
    assert!(
        ext.get::<SpanContext>().is_none(),
        "a crate type, not a bare SpanContext another middleware could replace"
    );
}

#[tokio::test]
async fn reqwest_client_span_is_the_parent_of_the_server_span() {
    let t = Telemetry::new();
    let seen = Seen::default();
    let addr = serve(app(seen.clone()).layer(t.layer())).await;
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(client_layer(&t))
        .build();
    let url = format!("http://{addr}/stream");
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.url().as_str(), url, "Response::url() kept");
    assert!(
        resp.extensions()
            .get::<tower_otel_http::client::ClientSpanContext>()
            .is_some(),
        "the call's span context for the caller"
    );
    assert!(
        t.spans().iter().all(|s| s.span_kind != SpanKind::Client),
        "the body is not read yet"
    );
    assert_eq!(resp.text().await.unwrap(), "hello world");

    let all = spans(&t, 2).await;
    let client = &of_kind(&all, SpanKind::Client)[0];
    let server = &of_kind(&all, SpanKind::Server)[0];
    assert_eq!(server.parent_span_id, client.span_context.span_id());
    assert_eq!(
        server.span_context.trace_id(),
        client.span_context.trace_id()
    );
    assert_eq!(attr_str(client, "url.full"), Some(url));
    assert_eq!(attr_i64(client, "http.response.status_code"), Some(200));
    assert_eq!(
        attr_str(client, "network.peer.address").as_deref(),
        Some("127.0.0.1")
    );
    assert!(
        client.end_time >= server.end_time,
        "ended after the body was read"
    );
}

#[tokio::test]
async fn a_client_call_inside_a_handler_is_a_child_of_the_server_span() {
    let t = Telemetry::new();
    let downstream = serve(app(Seen::default()).layer(t.layer())).await;
    let client = client_layer(&t).layer(hyper_client());
    let front = Router::new()
        .route(
            "/front",
            get(move || {
                let client = client.clone();
                async move {
                    let (_, body, _) = hyper_get(client, format!("http://{downstream}/ok")).await;
                    body
                }
            }),
        )
        .layer(t.layer());
    let front = serve(front).await;
    let resp = reqwest::get(format!("http://{front}/front")).await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "ok");
    let all = spans(&t, 3).await;
    let servers = of_kind(&all, SpanKind::Server);
    let front_span = servers.iter().find(|s| s.name == "GET /front").unwrap();
    let down_span = servers.iter().find(|s| s.name == "GET /ok").unwrap();
    let client = &of_kind(&all, SpanKind::Client)[0];
    assert_eq!(client.parent_span_id, front_span.span_context.span_id());
    assert_eq!(down_span.parent_span_id, client.span_context.span_id());
    assert!(all
        .iter()
        .all(|s| s.span_context.trace_id() == front_span.span_context.trace_id()));
}

#[tokio::test]
async fn a_forwarded_request_carrying_the_servers_mark_is_recorded_by_the_client() {
    // a proxy handler forwards the incoming request, extensions (and the server layer's mark)
    // included
    let t = Telemetry::new();
    let downstream = serve(app(Seen::default())).await;
    let client = client_layer(&t).layer(hyper_client());
    let proxy = Router::new()
        .route(
            "/proxy",
            get(move |req: AxumRequest| {
                let client = client.clone();
                async move {
                    let (parts, _) = req.into_parts();
                    let mut out = Request::from_parts(parts, Full::default());
                    *out.uri_mut() = format!("http://{downstream}/ok").parse().unwrap();
                    let resp = client.oneshot(out).await.unwrap();
                    let body = resp.into_body().collect().await.unwrap().to_bytes();
                    String::from_utf8_lossy(&body).into_owned()
                }
            }),
        )
        .layer(t.layer());
    let proxy = serve(proxy).await;
    let body = reqwest::get(format!("http://{proxy}/proxy"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "ok");
    let all = spans(&t, 2).await;
    let clients = of_kind(&all, SpanKind::Client);
    assert_eq!(
        clients.len(),
        1,
        "the client recorded the forwarded request"
    );
    let server = &of_kind(&all, SpanKind::Server)[0];
    assert_eq!(clients[0].parent_span_id, server.span_context.span_id());
}

#[tokio::test]
async fn status_404_is_an_error_with_its_code() {
    let t = Telemetry::new();
    let m = Metrics::new();
    let addr = serve(app(Seen::default())).await;
    let client = client_layer(&t)
        .with_meter_provider(&m.provider)
        .layer(hyper_client());
    let (status, _, _) = hyper_get(client, format!("http://{addr}/missing")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let span = t.one();
    assert!(is_error(&span));
    assert_eq!(attr_str(&span, "error.type").as_deref(), Some("404"));
    let p = &m.points("http.client.request.duration")[0];
    assert_eq!(p.attr("error.type"), Some("404"));
    assert_eq!(p.attr("http.response.status_code"), Some("404"));
}

#[tokio::test]
async fn connection_refused_is_connect() {
    // a port that was just free
    let free = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let url = format!("http://{addr}/ok");
    // hyper-util
    let t = Telemetry::new();
    let client = client_layer(&t).layer(hyper_client());
    let err = client
        .oneshot(Request::get(&url).body(Full::default()).unwrap())
        .await
        .unwrap_err();
    assert!(err.is_connect());
    let span = t.one();
    assert!(is_error(&span));
    assert_eq!(
        attr_str(&span, "error.type").as_deref(),
        Some(error::CONNECT)
    );
    assert_eq!(attr(&span, "http.response.status_code"), None);
    // reqwest
    let t = Telemetry::new();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(client_layer(&t))
        .build();
    client.get(&url).send().await.unwrap_err();
    assert_eq!(
        attr_str(&t.one(), "error.type").as_deref(),
        Some(error::CONNECT)
    );
}

#[tokio::test]
async fn the_clients_own_timeout_is_timeout() {
    let addr = serve(app(Seen::default())).await;
    let url = format!("http://{addr}/slow");
    // a tower timeout inside the client layer
    let t = Telemetry::new();
    let client = ServiceBuilder::new()
        .layer(client_layer(&t))
        .timeout(Duration::from_millis(100))
        .service(hyper_client());
    client
        .oneshot(Request::get(&url).body(Full::default()).unwrap())
        .await
        .unwrap_err();
    let span = t.one();
    assert!(is_error(&span));
    assert_eq!(
        attr_str(&span, "error.type").as_deref(),
        Some(error::TIMEOUT)
    );
    // reqwest's timeout
    let t = Telemetry::new();
    let client = reqwest_middleware::ClientBuilder::new(
        reqwest::Client::builder()
            .timeout(Duration::from_millis(100))
            .build()
            .unwrap(),
    )
    .with(client_layer(&t))
    .build();
    client.get(&url).send().await.unwrap_err();
    assert_eq!(
        attr_str(&t.one(), "error.type").as_deref(),
        Some(error::TIMEOUT)
    );
}

#[tokio::test]
async fn a_caller_that_gives_up_is_no_error() {
    let addr = serve(app(Seen::default())).await;
    let m = Metrics::new();
    // the request future dropped (a timeout outside the client layer)
    let t = Telemetry::new();
    let client = client_layer(&t)
        .with_meter_provider(&m.provider)
        .with_active_requests(true)
        .layer(hyper_client());
    let r = tokio::time::timeout(
        Duration::from_millis(100),
        client.oneshot(
            Request::get(format!("http://{addr}/slow"))
                .body(Full::default())
                .unwrap(),
        ),
    )
    .await;
    assert!(r.is_err());
    let span = t.one();
    assert_eq!(span.status, Status::Unset);
    assert_eq!(attr(&span, "error.type"), None);
    assert_eq!(attr(&span, "http.response.status_code"), None);
    // the response body dropped after reading the status
    let t = Telemetry::new();
    let client = client_layer(&t)
        .with_meter_provider(&m.provider)
        .with_active_requests(true)
        .layer(hyper_client());
    let resp = client
        .oneshot(
            Request::get(format!("http://{addr}/stream"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    drop(resp);
    let span = t.one();
    assert_eq!(span.status, Status::Unset);
    assert_eq!(attr(&span, "error.type"), None);
    assert_eq!(attr_i64(&span, "http.response.status_code"), Some(200));
    assert_eq!(
        m.points("http.client.active_requests")
            .iter()
            .map(|p| p.sum)
            .sum::<f64>(),
        0.0
    );
}

#[tokio::test]
async fn each_attempt_is_a_span_and_resends_are_counted_reqwest_retry() {
    use reqwest_retry::{policies::ExponentialBackoff, RetryTransientMiddleware};
    let t = Telemetry::new();
    let seen = Seen::default();
    let addr = serve(app(seen.clone())).await;
    let policy = ExponentialBackoff::builder()
        .retry_bounds(Duration::from_millis(1), Duration::from_millis(5))
        .build_with_max_retries(2);
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(RetryTransientMiddleware::new_with_policy(policy))
        .with(client_layer(&t))
        .build();
    let resp = client
        .get(format!("http://{addr}/flaky"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.text().await.unwrap();
    let mut all = of_kind(&spans(&t, 2).await, SpanKind::Client);
    all.sort_by_key(|s| s.start_time);
    assert_eq!(all.len(), 2, "one span per attempt");
    assert_eq!(attr_i64(&all[0], "http.response.status_code"), Some(500));
    assert_eq!(attr(&all[0], "http.request.resend_count"), None);
    assert_eq!(attr_i64(&all[1], "http.request.resend_count"), Some(1));
    assert_eq!(attr_i64(&all[1], "http.response.status_code"), Some(200));
    // each attempt carried its own span's context
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    for (headers, span) in seen.iter().zip(&all) {
        let tp = headers.get("traceparent").unwrap().to_str().unwrap();
        assert!(tp.contains(&span.span_context.span_id().to_string()));
    }
}

/// Retries a request once when the answer is a 5xx.
#[derive(Clone)]
struct RetryOnce(bool);

impl<B, E> tower::retry::Policy<Request<Full<Bytes>>, http::Response<B>, E> for RetryOnce {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _req: &mut Request<Full<Bytes>>,
        result: &mut Result<http::Response<B>, E>,
    ) -> Option<Self::Future> {
        match result {
            Ok(r) if r.status().is_server_error() && !self.0 => {
                self.0 = true;
                Some(std::future::ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>> {
        let mut out = Request::new(req.body().clone());
        *out.uri_mut() = req.uri().clone();
        *out.headers_mut() = req.headers().clone();
        *out.extensions_mut() = req.extensions().clone();
        Some(out)
    }
}

#[tokio::test]
async fn each_attempt_is_a_span_and_resends_are_counted_tower_retry() {
    let t = Telemetry::new();
    let addr = serve(app(Seen::default())).await;
    let client = ServiceBuilder::new()
        .retry(RetryOnce(false))
        .layer(client_layer(&t))
        .service(hyper_client());
    let mut req = Request::get(format!("http://{addr}/flaky"))
        .body(Full::default())
        .unwrap();
    req.extensions_mut().insert(Attempts::new());
    let resp = client.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body().collect().await.unwrap();
    let mut all = of_kind(&spans(&t, 2).await, SpanKind::Client);
    all.sort_by_key(|s| s.start_time);
    assert_eq!(all.len(), 2);
    assert_eq!(attr(&all[0], "http.request.resend_count"), None);
    assert_eq!(attr_i64(&all[1], "http.request.resend_count"), Some(1));
}

#[tokio::test]
async fn credentials_and_sensitive_query_values_are_redacted() {
    let t = Telemetry::new();
    let addr = serve(app(Seen::default())).await;
    let client = client_layer(&t).layer(hyper_client());
    let url = format!("http://user:pass@{addr}/ok?sig=x&q=1");
    let (status, _, _) = hyper_get(client, url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        attr_str(&t.one(), "url.full"),
        Some(format!(
            "http://REDACTED:REDACTED@{addr}/ok?sig=REDACTED&q=1"
        ))
    );
}

#[tokio::test]
async fn trace_context_only_goes_to_allowed_hosts_and_can_be_opted_out() {
    let t = Telemetry::new();
    let seen = Seen::default();
    let addr = serve(app(seen.clone())).await;
    let get = |host: &str| {
        Request::get(format!("http://{host}:{}/ok", addr.port()))
            .body(Full::default())
            .unwrap()
    };
    // allowed: 127.0.0.1; not allowed: localhost (the same server, another name)
    let client = client_layer(&t)
        .with_propagation_hosts(["127.0.0.1"])
        .layer(hyper_client());
    client.clone().oneshot(get("127.0.0.1")).await.unwrap();
    client.clone().oneshot(get("localhost")).await.unwrap();
    let mut opted_out = get("127.0.0.1");
    opted_out.extensions_mut().insert(NoPropagation);
    client.oneshot(opted_out).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert!(seen[0].contains_key("traceparent"), "allowed host");
    assert!(!seen[1].contains_key("traceparent"), "host not on the list");
    assert!(!seen[2].contains_key("traceparent"), "opted out");
    assert_eq!(spans(&t, 3).await.len(), 3, "all three recorded");
}

#[tokio::test]
async fn a_url_template_names_the_span() {
    let t = Telemetry::new();
    let m = Metrics::new();
    let addr = serve(app(Seen::default())).await;
    let client = client_layer(&t)
        .with_meter_provider(&m.provider)
        .with_metrics_url_template(true)
        .layer(hyper_client());
    let mut req = Request::get(format!("http://{addr}/items/42"))
        .body(Full::default())
        .unwrap();
    req.extensions_mut().insert(UrlTemplate::new("/items/{id}"));
    let resp = client.oneshot(req).await.unwrap();
    resp.into_body().collect().await.unwrap();
    let span = t.one();
    assert_eq!(span.name, "GET /items/{id}");
    assert_eq!(
        attr_str(&span, "url.template").as_deref(),
        Some("/items/{id}")
    );
    let p = &m.points("http.client.request.duration")[0];
    assert_eq!(p.attr("url.template"), Some("/items/{id}"));
}

#[tokio::test]
async fn client_metrics_follow_the_conventions() {
    let t = Telemetry::new();
    let m = Metrics::new();
    let addr = serve(app(Seen::default())).await;
    let client = client_layer(&t)
        .with_meter_provider(&m.provider)
        .with_active_requests(true)
        .with_response_body_size(true)
        .with_counted_request_bodies()
        .layer(
            Client::builder(TokioExecutor::new())
                .build_http::<tower_otel_http::body::RequestBody<Full<Bytes>>>(),
        );
    let resp = client
        .clone()
        .oneshot(
            Request::post(format!("http://{addr}/ok"))
                .body(Full::new(Bytes::from_static(b"12345")))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    resp.into_body().collect().await.unwrap();
    let (status, body, _) = hyper_get(client, format!("http://{addr}/stream")).await;
    assert_eq!(status, StatusCode::OK);

    let d = m.points("http.client.request.duration");
    assert_eq!(d.len(), 2);
    for p in &d {
        assert_eq!(p.unit, "s");
        assert_eq!(
            p.bounds,
            tower_otel_http::metrics::DURATION_BUCKETS.to_vec()
        );
        assert_eq!(p.attr("server.address"), Some("127.0.0.1"));
        assert_eq!(
            p.attr("server.port"),
            Some(addr.port().to_string().as_str())
        );
        assert_eq!(p.attr("network.protocol.version"), Some("1.1"));
        for never in [
            "url.full",
            "url.path",
            "network.peer.address",
            "url.scheme",
            "url.template",
        ] {
            assert_eq!(p.attr(never), None, "{never}");
        }
    }
    let post = d
        .iter()
        .find(|p| p.attr("http.request.method") == Some("POST"))
        .unwrap();
    assert_eq!(post.attr("http.response.status_code"), Some("405"));
    assert_eq!(post.attr("error.type"), Some("405"));
    let req_sizes = m.points("http.client.request.body.size");
    let req_size = req_sizes
        .iter()
        .find(|p| p.attr("http.request.method") == Some("POST"))
        .unwrap();
    assert_eq!(req_size.sum, 5.0);
    assert_eq!(req_size.unit, "By");
    let res_sizes = m.points("http.client.response.body.size");
    let streamed = res_sizes
        .iter()
        .find(|p| p.attr("http.request.method") == Some("GET"))
        .unwrap();
    assert_eq!(streamed.sum, body.len() as f64, "the bytes read, streamed");
    let active = m.points("http.client.active_requests");
    assert_eq!(active.iter().map(|p| p.sum).sum::<f64>(), 0.0);
    assert_eq!(active.len(), 2, "one series per method");
    for p in &active {
        assert_eq!(p.attr("server.address"), Some("127.0.0.1"));
        assert!(matches!(
            p.attr("http.request.method"),
            Some("POST" | "GET")
        ));
        assert_eq!(p.attr("http.response.status_code"), None);
    }
}

#[tokio::test]
async fn stacked_client_layers_record_once() {
    let t = Telemetry::new();
    let addr = serve(app(Seen::default())).await;
    let client = ServiceBuilder::new()
        .layer(client_layer(&t))
        .layer(client_layer(&t))
        .service(hyper_client());
    let (status, _, _) = hyper_get(client, format!("http://{addr}/ok")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(spans(&t, 1).await.len(), 1);
}

#[tokio::test]
async fn metrics_only_client_still_sends_the_current_context() {
    use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider as _};
    let t = Telemetry::new();
    let seen = Seen::default();
    let addr = serve(app(seen.clone())).await;
    let client = OtelLayer::client()
        .with_spans(false)
        .with_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new())
        .with_meter_provider(&Metrics::new().provider)
        .layer(hyper_client());
    let tracer = t.provider.tracer("test");
    let span = tracer.start("caller");
    let cx = opentelemetry::Context::current_with_span(span);
    let trace_id = cx.span().span_context().trace_id();
    use opentelemetry::context::FutureExt;
    hyper_get(client, format!("http://{addr}/ok"))
        .with_context(cx)
        .await;
    let tp = seen.lock().unwrap()[0]
        .get("traceparent")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(tp.contains(&trace_id.to_string()));
}

#[tokio::test]
async fn a_filtered_request_is_left_alone_by_inner_instances_too() {
    let t = Telemetry::new();
    let seen = Seen::default();
    let addr = serve(app(seen.clone())).await;
    let client = ServiceBuilder::new()
        .layer(client_layer(&t).with_filter(|req| req.uri.path() != "/ok"))
        .layer(client_layer(&t))
        .service(hyper_client());
    let (status, _, _) = hyper_get(client, format!("http://{addr}/ok")).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(t.spans().is_empty(), "filtered by the outer instance");
    assert!(!seen.lock().unwrap()[0].contains_key("traceparent"));
}

#[tokio::test]
async fn trace_context_a_request_carries_is_removed_when_it_must_not_go_out() {
    // a proxy forwarding its caller's headers to a host off the list, or opted out
    let t = Telemetry::new();
    let seen = Seen::default();
    let addr = serve(app(seen.clone())).await;
    let client = client_layer(&t)
        .with_propagation_hosts(["allowed.example"])
        .layer(hyper_client());
    let forwarded = |opt_out: bool| {
        let mut req = Request::get(format!("http://{addr}/ok"))
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .header("tracestate", "vendor=secret")
            .header("baggage", "user=alice")
            .header("x-other", "kept")
            .body(Full::default())
            .unwrap();
        if opt_out {
            req.extensions_mut().insert(NoPropagation);
        }
        req
    };
    client.clone().oneshot(forwarded(false)).await.unwrap();
    let open = client_layer(&t).layer(hyper_client());
    open.oneshot(forwarded(true)).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for h in &seen {
        for name in ["traceparent", "tracestate", "baggage"] {
            assert!(!h.contains_key(name), "{name} went out: {h:?}");
        }
        assert_eq!(h.get("x-other").unwrap(), "kept");
    }
}

#[tokio::test]
async fn a_labeler_given_with_the_request_gets_its_attributes_recorded() {
    use tower_otel_http::metrics::Labeler;
    let t = Telemetry::new();
    let m = Metrics::new();
    let addr = serve(app(Seen::default())).await;
    let client = client_layer(&t)
        .with_meter_provider(&m.provider)
        .with_labeler(true)
        .layer(hyper_client());
    let labeler = Labeler::new();
    labeler.add(opentelemetry::KeyValue::new("app.downstream", "users"));
    let mut req = Request::get(format!("http://{addr}/ok"))
        .body(Full::default())
        .unwrap();
    req.extensions_mut().insert(labeler);
    let resp = client.oneshot(req).await.unwrap();
    resp.into_body().collect().await.unwrap();
    let p = &m.points("http.client.request.duration")[0];
    assert_eq!(p.attr("app.downstream"), Some("users"));
}

#[tokio::test]
async fn stacked_client_layers_measure_once() {
    let t = Telemetry::new();
    let m = Metrics::new();
    let addr = serve(app(Seen::default())).await;
    let client = ServiceBuilder::new()
        .layer(client_layer(&t).with_meter_provider(&m.provider))
        .layer(client_layer(&t).with_meter_provider(&m.provider))
        .service(hyper_client());
    hyper_get(client, format!("http://{addr}/ok")).await;
    let d = m.points("http.client.request.duration");
    assert_eq!(d.iter().map(|p| p.count).sum::<u64>(), 1);
}

#[tokio::test]
async fn reqwest_counts_request_bodies_it_holds_in_full() {
    let t = Telemetry::new();
    let m = Metrics::new();
    let addr = serve(app(Seen::default())).await;
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(
            client_layer(&t)
                .with_meter_provider(&m.provider)
                .with_counted_request_bodies(),
        )
        .build();
    let resp = client
        .post(format!("http://{addr}/ok"))
        .body("12345")
        .send()
        .await
        .unwrap();
    resp.text().await.unwrap();
    let sizes = m.points("http.client.request.body.size");
    assert_eq!(sizes.len(), 1, "{sizes:?}");
    assert_eq!(sizes[0].sum, 5.0);
    assert_eq!(sizes[0].unit, "By");
}

#[tokio::test]
async fn a_reqwest_resend_after_a_cancelled_attempt_is_recorded() {
    // an outer middleware that gives up on the first attempt (a timeout) and resends with the
    // same extensions: the second attempt must not pass for an inner instance's
    struct CancelFirst;
    #[async_trait::async_trait]
    impl reqwest_middleware::Middleware for CancelFirst {
        async fn handle(
            &self,
            req: reqwest::Request,
            ext: &mut http::Extensions,
            next: reqwest_middleware::Next<'_>,
        ) -> reqwest_middleware::Result<reqwest::Response> {
            let mut retry = req.try_clone().unwrap();
            retry.url_mut().set_path("/ok");
            let _ =
                tokio::time::timeout(Duration::from_millis(50), next.clone().run(req, ext)).await;
            next.run(retry, ext).await
        }
    }
    let t = Telemetry::new();
    let seen = Seen::default();
    let addr = serve(app(seen.clone())).await;
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(CancelFirst)
        .with(client_layer(&t))
        .build();
    // /slow answers after 5 s: the first attempt is cancelled; the resend goes to /ok
    let _ = client.get(format!("http://{addr}/slow")).send().await;
    let mut all = of_kind(&spans(&t, 2).await, SpanKind::Client);
    all.sort_by_key(|s| s.start_time);
    assert_eq!(all.len(), 2, "both attempts recorded");
    assert_eq!(attr_i64(&all[1], "http.request.resend_count"), Some(1));
}

/// A request that already carries trace-context headers (a proxy forwarding its caller's) goes
/// out with this call's context only: the caller's `tracestate` never travels beside our
/// `traceparent`, whatever the state of our span.
#[tokio::test]
async fn a_forwarded_tracestate_never_goes_out_beside_our_traceparent() {
    let t = Telemetry::new();
    let seen = Arc::new(Mutex::new(HeaderMap::new()));
    let s = seen.clone();
    let client = client_layer(&t)
        .with_propagator(tower_otel_http::propagation::W3cPropagator::new())
        .layer(tower::service_fn(move |req: Request<String>| {
            *s.lock().unwrap() = req.headers().clone();
            async { Ok::<_, Infallible>(http::Response::new(String::new())) }
        }));
    let req = Request::get("http://downstream.test/x")
        .header(
            "traceparent",
            "00-11111111111111111111111111111111-2222222222222222-01",
        )
        .header("tracestate", "caller=untrusted")
        .body(String::new())
        .unwrap();
    client.oneshot(req).await.unwrap();
    let headers = seen.lock().unwrap().clone();
    let span = t.one();
    let tp = headers.get("traceparent").unwrap().to_str().unwrap();
    assert!(
        tp.contains(&span.span_context.span_id().to_string()),
        "our span's traceparent: {tp}"
    );
    assert!(
        headers.get("tracestate").is_none(),
        "the caller's tracestate is not sent with our traceparent: {headers:?}"
    );
}
