//! Faults over real loopback TCP, on the server and the client side: panics with and without
//! `CatchPanic`, inner service errors, response bodies failing mid-stream, peers going away
//! mid-body or before the head, exporters that block or fail, providers shut down while
//! serving, and downstreams that close or reset the connection. Whatever happens, the request
//! is recorded once with the right `error.type`, and nothing is left in flight.
#![cfg(feature = "reqwest")]

#[path = "it/common/mod.rs"]
mod common;
#[path = "it/hardening/mod.rs"]
mod hardening;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::routing::get;
use axum::Router;
use common::*;
use hardening::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry::trace::{SpanKind, Status};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_otel_http::{error, OtelClientLayer, OtelLayer, OtelServerLayer};

type HyperClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn hyper_client() -> HyperClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn server_layer(t: &Telemetry, m: &Metrics) -> OtelServerLayer {
    t.layer()
        .with_meter_provider(&m.provider)
        .with_active_requests(true)
}

fn client_layer(t: &Telemetry, m: &Metrics) -> OtelClientLayer {
    OtelLayer::client()
        .with_tracer_provider(&t.provider)
        .with_meter_provider(&m.provider)
        .with_active_requests(true)
}

fn get_req(addr: SocketAddr, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .body(Full::default())
        .unwrap()
}

fn client_active(m: &Metrics) -> f64 {
    m.points("http.client.active_requests")
        .iter()
        .map(|p| p.sum)
        .sum()
}

/// Wait until `n` spans ended (at most 5 s), then a moment more for a wrong extra one.
async fn spans(t: &Telemetry, n: usize) -> Vec<SpanData> {
    eventually(5, || t.spans().len() >= n).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    t.spans()
}

fn one_of(spans: &[SpanData], kind: SpanKind) -> SpanData {
    let of: Vec<_> = spans.iter().filter(|s| s.span_kind == kind).collect();
    assert_eq!(of.len(), 1, "one {kind:?} span: {spans:#?}");
    of[0].clone()
}

fn server_point_error(m: &Metrics) -> Option<String> {
    let points = m.points(DURATION);
    assert_eq!(points.len(), 1, "{points:?}");
    points[0].attr("error.type").map(str::to_owned)
}

// ---------------------------------------------------------------- panics

#[tokio::test]
async fn a_panic_behind_catch_panic_is_a_500_on_both_sides() {
    let _serial = serial().await;
    let (t, m, cm) = (Telemetry::new(), Metrics::new(), Metrics::new());
    let app = Router::new()
        .route(
            "/boom",
            get(|| async {
                if true {
                    panic!("handler bug (expected by the test)");
                }
                "never"
            }),
        )
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(server_layer(&t, &m));
    let addr = serve(app).await;
    let client = client_layer(&t, &cm).layer(hyper_client());
    let resp = client.oneshot(get_req(addr, "/boom")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    resp.into_body().collect().await.unwrap();

    let all = spans(&t, 2).await;
    let server = one_of(&all, SpanKind::Server);
    assert!(is_error(&server));
    assert_eq!(attr_str(&server, "error.type").as_deref(), Some("500"));
    assert_eq!(attr_i64(&server, "http.response.status_code"), Some(500));
    assert_eq!(server_point_error(&m).as_deref(), Some("500"));
    assert_eq!(m.active(), 0.0, "server: nothing in flight");
    let client = one_of(&all, SpanKind::Client);
    assert_eq!(attr_str(&client, "error.type").as_deref(), Some("500"));
    assert_eq!(server.parent_span_id, client.span_context.span_id());
    assert_eq!(client_active(&cm), 0.0, "client: nothing in flight");
}

#[tokio::test]
async fn a_panic_without_catch_panic_is_panic_and_the_server_lives_on() {
    let _serial = serial().await;
    let (t, m, cm) = (Telemetry::new(), Metrics::new(), Metrics::new());
    let app = Router::new()
        .route(
            "/boom",
            get(|| async {
                if true {
                    panic!("handler bug (expected by the test)");
                }
                "never"
            }),
        )
        .route("/ok", get(|| async { "ok" }))
        .layer(server_layer(&t, &m));
    let addr = serve(app).await;
    let client = client_layer(&t, &cm).layer(hyper_client());
    let err = client
        .clone()
        .oneshot(get_req(addr, "/boom"))
        .await
        .expect_err("the connection dies with the panicking task");
    let all = spans(&t, 2).await;
    let server = one_of(&all, SpanKind::Server);
    assert!(is_error(&server));
    assert_eq!(
        attr_str(&server, "error.type").as_deref(),
        Some(error::PANIC)
    );
    assert_eq!(attr(&server, "http.response.status_code"), None);
    assert_eq!(server_point_error(&m).as_deref(), Some("panic"));
    assert_eq!(m.active(), 0.0, "server: nothing in flight");
    let client_span = one_of(&all, SpanKind::Client);
    assert!(is_error(&client_span));
    assert_eq!(
        attr_str(&client_span, "error.type").as_deref(),
        Some(error::CONNECTION_CLOSED),
        "{err:?}"
    );
    assert_eq!(client_active(&cm), 0.0, "client: nothing in flight");

    // the server serves the next connection as usual
    t.reset();
    let resp = client.oneshot(get_req(addr, "/ok")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body().collect().await.unwrap();
    let all = spans(&t, 2).await;
    assert!(all.iter().all(|s| s.status == Status::Unset), "{all:#?}");
}

// ---------------------------------------------------------------- inner errors

#[derive(Debug)]
struct DbDown;

impl std::fmt::Display for DbDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("database down")
    }
}

impl std::error::Error for DbDown {}

/// Serve a tower service that fails with `E` through hyper directly (axum requires
/// `Infallible`); hyper closes the connection when the service fails.
async fn serve_failing<S, B>(svc: S) -> SocketAddr
where
    S: tower::Service<Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = svc.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(
                        TokioIo::new(stream),
                        hyper_util::service::TowerToHyperService::new(svc),
                    )
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_inner_service_error_is_classified_over_a_real_server() {
    let _serial = serial().await;
    // the user's classification
    let (t, m, cm) = (Telemetry::new(), Metrics::new(), Metrics::new());
    let svc = server_layer(&t, &m)
        .with_error_type(|_: &DbDown| Some("db"))
        .layer(tower::service_fn(
            |_req: Request<hyper::body::Incoming>| async {
                Err::<http::Response<Full<Bytes>>, DbDown>(DbDown)
            },
        ));
    let addr = serve_failing(svc).await;
    let client = client_layer(&t, &cm).layer(hyper_client());
    client
        .oneshot(get_req(addr, "/x"))
        .await
        .expect_err("hyper closes the connection");
    let all = spans(&t, 2).await;
    let server = one_of(&all, SpanKind::Server);
    assert!(is_error(&server));
    assert_eq!(attr_str(&server, "error.type").as_deref(), Some("db"));
    assert_eq!(attr(&server, "http.response.status_code"), None);
    assert_eq!(server_point_error(&m).as_deref(), Some("db"));
    assert_eq!(m.active(), 0.0);
    let client = one_of(&all, SpanKind::Client);
    assert_eq!(
        attr_str(&client, "error.type").as_deref(),
        Some(error::CONNECTION_CLOSED)
    );
    assert_eq!(client_active(&cm), 0.0);

    // no classification configured: an io::Error by its kind
    let (t, m) = (Telemetry::new(), Metrics::new());
    let svc = server_layer(&t, &m).layer(tower::service_fn(
        |_req: Request<hyper::body::Incoming>| async {
            Err::<http::Response<Full<Bytes>>, std::io::Error>(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "upstream too slow",
            ))
        },
    ));
    let addr = serve_failing(svc).await;
    hyper_client()
        .request(get_req(addr, "/x"))
        .await
        .expect_err("hyper closes the connection");
    let server = one_of(&spans(&t, 1).await, SpanKind::Server);
    assert_eq!(
        attr_str(&server, "error.type").as_deref(),
        Some(error::TIMEOUT)
    );
    assert_eq!(m.active(), 0.0);
}

#[tokio::test]
async fn a_client_inner_error_is_classified_by_the_users_function() {
    let _serial = serial().await;
    let (t, cm) = (Telemetry::new(), Metrics::new());
    let client = client_layer(&t, &cm)
        .with_error_type(|_: &DbDown| Some("no_route"))
        .layer(tower::service_fn(|_req: Request<Full<Bytes>>| async {
            Err::<http::Response<Full<Bytes>>, DbDown>(DbDown)
        }));
    client
        .oneshot(
            Request::get("http://downstream.internal/x")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap_err();
    let span = t.one();
    assert!(is_error(&span));
    assert_eq!(attr_str(&span, "error.type").as_deref(), Some("no_route"));
    assert_eq!(client_active(&cm), 0.0);
}

// ---------------------------------------------------------------- bodies

#[tokio::test]
async fn a_response_body_failing_mid_stream_is_an_error_on_both_sides() {
    let _serial = serial().await;
    let (t, m, cm) = (Telemetry::new(), Metrics::new(), Metrics::new());
    let (tx, app) = streaming_app(server_layer(&t, &m));
    let addr = serve(app).await;
    let client = client_layer(&t, &cm).layer(hyper_client());
    tx.send(Ok(Bytes::from_static(b"first part ")))
        .await
        .unwrap();
    let resp = client.oneshot(get_req(addr, "/stream")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "first part ");
    tx.send(Err(std::io::Error::other("cursor lost")))
        .await
        .unwrap();
    let failed = body.collect().await;
    assert!(failed.is_err(), "the client sees the body fail");

    let all = spans(&t, 2).await;
    let server = one_of(&all, SpanKind::Server);
    assert!(is_error(&server));
    assert_eq!(
        attr_str(&server, "error.type").as_deref(),
        Some(error::RESPONSE_BODY)
    );
    assert_eq!(
        attr_i64(&server, "http.response.status_code"),
        Some(200),
        "the status that went out is kept"
    );
    assert_eq!(server_point_error(&m).as_deref(), Some("response_body"));
    assert_eq!(m.active(), 0.0);
    let client = one_of(&all, SpanKind::Client);
    assert!(is_error(&client));
    assert_eq!(
        attr_str(&client, "error.type").as_deref(),
        Some(error::CONNECTION_CLOSED),
        "the server aborted the chunked body: the connection closed mid-body"
    );
    assert_eq!(attr_i64(&client, "http.response.status_code"), Some(200));
    assert_eq!(client_active(&cm), 0.0);
}

/// A body that sends a chunk every 5 ms, forever.
fn endless() -> Body {
    let chunks = futures_util::stream::unfold(0u64, |n| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Some((
            Ok::<_, Infallible>(Bytes::from(format!("chunk {n}\n"))),
            n + 1,
        ))
    });
    Body::from_stream(chunks)
}

#[tokio::test]
async fn a_client_disconnecting_mid_body_is_response_body_dropped() {
    let _serial = serial().await;
    let (t, m) = (Telemetry::new(), Metrics::new());
    let app = Router::new()
        .route("/endless", get(|| async { endless() }))
        .layer(server_layer(&t, &m).with_response_body_size(true));
    let addr = serve(app).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /endless HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("chunk 2") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "the server closed first");
        got.extend_from_slice(&buf[..n]);
    }
    s.set_zero_linger().unwrap();
    drop(s);

    let span = one_of(&spans(&t, 1).await, SpanKind::Server);
    assert!(is_error(&span));
    assert_eq!(
        attr_str(&span, "error.type").as_deref(),
        Some(error::RESPONSE_BODY_DROPPED)
    );
    assert_eq!(attr_i64(&span, "http.response.status_code"), Some(200));
    assert_eq!(
        server_point_error(&m).as_deref(),
        Some("response_body_dropped")
    );
    let sent: f64 = m
        .points("http.server.response.body.size")
        .iter()
        .map(|p| p.sum)
        .sum();
    assert!(sent >= 24.0, "the bytes that went out are counted: {sent}");
    assert_eq!(m.active(), 0.0);
}

#[tokio::test]
async fn a_panic_inside_the_response_body_is_panic_and_keeps_the_status() {
    let _serial = serial().await;
    let (t, m) = (Telemetry::new(), Metrics::new());
    let app = Router::new()
        .route(
            "/bad-body",
            get(|| async {
                let chunks = futures_util::stream::unfold(0u32, |n| async move {
                    if n == 2 {
                        panic!("body bug (expected by the test)");
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Some((
                        Ok::<_, Infallible>(Bytes::from(format!("part {n}\n"))),
                        n + 1,
                    ))
                });
                Body::from_stream(chunks)
            }),
        )
        .layer(server_layer(&t, &m));
    let addr = serve(app).await;
    let resp = hyper_client()
        .request(get_req(addr, "/bad-body"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.into_body().collect().await.is_err(),
        "the body breaks off"
    );
    let span = one_of(&spans(&t, 1).await, SpanKind::Server);
    assert!(is_error(&span));
    assert_eq!(attr_str(&span, "error.type").as_deref(), Some(error::PANIC));
    assert_eq!(attr_i64(&span, "http.response.status_code"), Some(200));
    assert_eq!(server_point_error(&m).as_deref(), Some("panic"));
    assert_eq!(m.active(), 0.0);
}

// ---------------------------------------------------------------- dropped futures

#[tokio::test]
async fn an_outer_timeout_dropping_the_server_future_is_cancelled() {
    let _serial = serial().await;
    let (t, m, cm) = (Telemetry::new(), Metrics::new(), Metrics::new());
    let app = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        )
        .layer(server_layer(&t, &m))
        .layer(
            ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(
                    |_: axum::BoxError| async { StatusCode::REQUEST_TIMEOUT },
                ))
                .timeout(Duration::from_millis(100)),
        );
    let addr = serve(app).await;
    let client = client_layer(&t, &cm).layer(hyper_client());
    let resp = client.oneshot(get_req(addr, "/slow")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
    resp.into_body().collect().await.unwrap();
    let all = spans(&t, 2).await;
    let server = one_of(&all, SpanKind::Server);
    assert!(is_error(&server));
    assert_eq!(
        attr_str(&server, "error.type").as_deref(),
        Some(error::CANCELLED)
    );
    assert_eq!(attr(&server, "http.response.status_code"), None);
    assert_eq!(attr_str(&server, "http.route").as_deref(), Some("/slow"));
    assert_eq!(m.active(), 0.0);
    let client = one_of(&all, SpanKind::Client);
    assert_eq!(attr_str(&client, "error.type").as_deref(), Some("408"));
    assert_eq!(client_active(&cm), 0.0);
}

#[tokio::test]
async fn a_caller_dropping_the_client_future_is_no_error_and_the_server_sees_cancelled() {
    let _serial = serial().await;
    let (t, m, cm) = (Telemetry::new(), Metrics::new(), Metrics::new());
    let started = Arc::new(tokio::sync::Notify::new());
    let handler_started = started.clone();
    let app = Router::new()
        .route(
            "/slow",
            get(move || {
                let started = handler_started.clone();
                async move {
                    started.notify_one();
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }
            }),
        )
        .layer(server_layer(&t, &m));
    let addr = serve(app).await;
    let client = client_layer(&t, &cm).layer(hyper_client());
    let call = tokio::spawn(client.oneshot(get_req(addr, "/slow")));
    started.notified().await;
    call.abort(); // the caller gives up: the request future is dropped
    assert!(call.await.unwrap_err().is_cancelled());

    let all = spans(&t, 2).await;
    let client = one_of(&all, SpanKind::Client);
    assert_eq!(
        client.status,
        Status::Unset,
        "the caller's choice, not an error"
    );
    assert_eq!(attr(&client, "error.type"), None);
    assert_eq!(client_active(&cm), 0.0);
    // the pooled connection went with the future: the server's handler is cancelled
    let server = one_of(&all, SpanKind::Server);
    assert_eq!(
        attr_str(&server, "error.type").as_deref(),
        Some(error::CANCELLED)
    );
    assert_eq!(m.active(), 0.0);
}

// ---------------------------------------------------------------- exporters

/// `requests` GETs at `concurrency` to `url`, each with the given headers; every response must
/// be a 200 (its body read). Returns when all are done.
async fn load(
    url: String,
    requests: usize,
    concurrency: usize,
    headers: Vec<(&'static str, String)>,
) {
    let client = hyper_client();
    let headers = Arc::new(headers);
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (client, url, headers) = (client.clone(), url.clone(), headers.clone());
        tasks.push(tokio::spawn(async move {
            for _ in (w..requests).step_by(concurrency) {
                let mut req = Request::get(&url);
                for (k, v) in headers.iter() {
                    req = req.header(*k, v);
                }
                let resp = client
                    .request(req.body(Full::default()).unwrap())
                    .await
                    .unwrap();
                assert_eq!(resp.status(), StatusCode::OK);
                resp.into_body().collect().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exporter_that_blocks_holds_neither_requests_nor_memory() {
    const QUEUE: usize = 64;
    const BATCH: usize = 16;
    const REQUESTS: usize = 3_000;
    let _serial = serial().await;
    let exporter = BlockingExporter::default();
    let processor = BatchSpanProcessor::builder(exporter.clone())
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(QUEUE)
                .with_max_export_batch_size(BATCH)
                .with_scheduled_delay(Duration::from_millis(10))
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .build();
    let app = Router::new().route("/x", get(|| async { "ok" })).layer(
        OtelLayer::server()
            .with_tracer_provider(&provider)
            .with_request_headers(["x-fat"]),
    );
    let addr = serve(app).await;
    // fat spans: three ~2 KiB attributes each
    let fat = "f".repeat(2000);
    let url = format!("http://{addr}/x?q={fat}");
    let headers = vec![("user-agent", fat.clone()), ("x-fat", fat.clone())];

    load(url.clone(), 200, 8, headers.clone()).await;
    assert!(
        eventually(10, || exporter.calls.load(Ordering::SeqCst) >= 1).await,
        "the exporter was called (and is now blocked)"
    );
    let before = rss_bytes();
    tokio::time::timeout(Duration::from_secs(120), load(url, REQUESTS, 16, headers))
        .await
        .expect("requests complete while the exporter is blocked");
    let after = rss_bytes();
    assert_eq!(
        exporter.received.load(Ordering::SeqCst),
        0,
        "the exporter was still blocked all along"
    );
    let growth = after.saturating_sub(before);
    println!(
        "blocked exporter: RSS {} MiB -> {} MiB over {REQUESTS} requests",
        before / MIB,
        after / MIB
    );
    assert!(growth < 64 * MIB, "RSS grew by {} MiB", growth / MIB);

    exporter.released.store(true, Ordering::SeqCst);
    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap()
        .unwrap();
    let received = exporter.received.load(Ordering::SeqCst);
    println!(
        "blocked exporter: {received} of {} spans exported",
        REQUESTS + 200
    );
    assert!(received >= 1);
    assert!(
        received <= QUEUE + BATCH,
        "the SDK keeps at most its queue and one batch: {received} spans arrived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exporter_that_fails_leaves_requests_unaffected() {
    const REQUESTS: usize = 100;
    let _serial = serial().await;
    let exporter = FailingExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let downstream = serve(
        Router::new()
            .route("/leaf", get(|| async { "leaf" }))
            .layer(OtelLayer::server().with_tracer_provider(&provider)),
    )
    .await;
    let client = OtelLayer::client()
        .with_tracer_provider(&provider)
        .layer(hyper_client());
    let front = Router::new()
        .route(
            "/front",
            get(move || {
                let client = client.clone();
                async move {
                    let resp = client.oneshot(get_req(downstream, "/leaf")).await.unwrap();
                    assert_eq!(resp.status(), StatusCode::OK);
                    resp.into_body().collect().await.unwrap().to_bytes()
                }
            }),
        )
        .layer(OtelLayer::server().with_tracer_provider(&provider));
    let front = serve(front).await;
    let plain = hyper_client();
    for _ in 0..REQUESTS {
        let resp = plain.request(get_req(front, "/front")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers().contains_key("traceresponse"));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "leaf");
    }
    assert!(
        eventually(5, || exporter.spans.load(Ordering::SeqCst) == 3 * REQUESTS).await,
        "every span was handed to the failing exporter: {}",
        exporter.spans.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_shut_down_while_serving_leave_requests_working() {
    let _serial = serial().await;
    let probe = Probe::new(0, |_| Ok(()));
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(ProbeExporter(probe.clone()))
        .build();
    let m = Metrics::new();
    let downstream = serve(
        Router::new()
            .route("/leaf", get(|| async { "leaf" }))
            .layer(
                OtelLayer::server()
                    .with_tracer_provider(&provider)
                    .with_meter_provider(&m.provider)
                    .with_all_metrics()
                    .with_counted_request_bodies(),
            ),
    )
    .await;
    let client = OtelLayer::client()
        .with_tracer_provider(&provider)
        .with_meter_provider(&m.provider)
        .with_active_requests(true)
        .layer(hyper_client());
    let front = Router::new()
        .route(
            "/front",
            get(move || {
                let client = client.clone();
                async move {
                    let resp = client.oneshot(get_req(downstream, "/leaf")).await.unwrap();
                    resp.into_body().collect().await.unwrap().to_bytes()
                }
            }),
        )
        .layer(
            OtelLayer::server()
                .with_tracer_provider(&provider)
                .with_meter_provider(&m.provider)
                .with_active_requests(true),
        );
    let front = serve(front).await;
    let url = format!("http://{front}/front");
    load(url.clone(), 20, 2, vec![]).await;
    assert!(eventually(5, || probe.total() == 60).await);
    assert_eq!(m.points(DURATION).iter().map(|p| p.count).sum::<u64>(), 40);

    // shut both providers down while a load is in flight: every request still answers 200
    // (`load` asserts it)
    let running = tokio::spawn(load(url.clone(), 600, 8, vec![]));
    assert!(eventually(30, || probe.total() >= 150).await);
    let (tp, mp) = (provider.clone(), m.provider.clone());
    tokio::task::spawn_blocking(move || {
        tp.shutdown().unwrap();
        mp.shutdown().unwrap();
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let at_shutdown = probe.total();
    running
        .await
        .expect("every request answered while the providers shut down");
    load(url, 20, 2, vec![]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        at_shutdown < 3 * 620,
        "the shutdown came mid-load: {at_shutdown}"
    );
    assert_eq!(
        probe.total(),
        at_shutdown,
        "nothing exported after the shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_provider_shut_down_while_serving_leaves_requests_working() {
    let _serial = serial().await;
    let probe = Probe::new(0, |_| Ok(()));
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(ProbeExporter(probe.clone()))
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    /// Puts the global provider back however the test ends.
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            opentelemetry::global::set_tracer_provider(
                opentelemetry::trace::noop::NoopTracerProvider::new(),
            );
        }
    }
    let _restore = Restore;
    // the defaults: the global providers as they stand when requests arrive
    let app = Router::new()
        .route("/x", get(|| async { "ok" }))
        .layer(OtelLayer::server());
    let addr = serve(app).await;
    let url = format!("http://{addr}/x");
    load(url.clone(), 20, 2, vec![]).await;
    assert!(
        eventually(5, || probe.servers() == 20).await,
        "{}",
        probe.servers()
    );
    let running = tokio::spawn(load(url.clone(), 600, 8, vec![]));
    assert!(eventually(30, || probe.servers() >= 100).await);
    let tp = provider.clone();
    tokio::task::spawn_blocking(move || tp.shutdown().unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let at_shutdown = probe.servers();
    running
        .await
        .expect("every request answered while the provider shuts down");
    load(url, 20, 2, vec![]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        at_shutdown < 620,
        "the shutdown came mid-load: {at_shutdown}"
    );
    assert_eq!(
        probe.servers(),
        at_shutdown,
        "nothing exported after the shutdown"
    );
}

// ---------------------------------------------------------------- a downstream that hangs up

/// A downstream that accepts, reads a request head, then closes the connection (FIN) or resets
/// it (RST).
async fn hanging_up_downstream(reset: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                if reset {
                    let _ = s.set_zero_linger();
                }
                drop(s);
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_downstream_closing_or_resetting_the_connection_is_connection_closed() {
    let _serial = serial().await;
    for reset in [false, true] {
        let addr = hanging_up_downstream(reset).await;
        // hyper-util through the tower layer
        let (t, cm) = (Telemetry::new(), Metrics::new());
        let client = client_layer(&t, &cm).layer(hyper_client());
        let err = client.oneshot(get_req(addr, "/x")).await.unwrap_err();
        let span = t.one();
        assert!(is_error(&span));
        assert_eq!(
            attr_str(&span, "error.type").as_deref(),
            Some(error::CONNECTION_CLOSED),
            "reset: {reset}, {err:?}"
        );
        assert_eq!(attr(&span, "http.response.status_code"), None);
        let p = &cm.points("http.client.request.duration")[0];
        assert_eq!(p.attr("error.type"), Some(error::CONNECTION_CLOSED));
        assert_eq!(client_active(&cm), 0.0);
        // reqwest through reqwest-middleware
        let t = Telemetry::new();
        let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
            .with(OtelLayer::client().with_tracer_provider(&t.provider))
            .build();
        let err = client
            .get(format!("http://{addr}/x"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            attr_str(&t.one(), "error.type").as_deref(),
            Some(error::CONNECTION_CLOSED),
            "reqwest, reset: {reset}, {err:?}"
        );
    }
}
