//! `setup::init()` from the environment (feature `otlp`): each case in a process of its own,
//! since each sets variables and installs globals. A real OTLP/HTTP receiver on loopback (an
//! axum server recording what is posted to `/v1/traces`, `/v1/metrics`, `/v1/logs`).
#![cfg(feature = "otlp")]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::Request as AxumRequest;
use axum::routing::{get, post};
use axum::Router;
use http::Request;
use tower::ServiceExt;
use tower_otel_http::setup::{Setup, SetupError};
use tower_otel_http::OtelLayer;

/// What the receiver got: (path, content-type, body bytes, the `x-tenant` header,
/// the `content-encoding`).
pub(crate) type Posts = Arc<Mutex<Vec<(String, String, usize, String, String)>>>;

pub(crate) async fn receiver() -> (SocketAddr, Posts) {
    let posts = Posts::default();
    let app = receiver_app(&posts);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, posts)
}

/// The receiver's routes: each post recorded in `posts`.
pub(crate) fn receiver_app(posts: &Posts) -> Router {
    let record = posts.clone();
    Router::new().route(
        "/v1/{signal}",
        post(move |req: AxumRequest| {
            let record = record.clone();
            async move {
                let path = req.uri().path().to_owned();
                let ct = req
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let (tenant, encoding) = {
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    (header("x-tenant"), header("content-encoding"))
                };
                let body = axum::body::to_bytes(req.into_body(), usize::MAX)
                    .await
                    .unwrap_or_default();
                record
                    .lock()
                    .unwrap()
                    .push((path, ct, body.len(), tenant, encoding));
                ([("content-type", "application/x-protobuf")], Bytes::new())
            }
        }),
    )
}

/// The guard's start-up line says `text`.
#[track_caller]
pub(crate) fn says(guard: &tower_otel_http::setup::TelemetryGuard, text: &str) {
    assert!(guard.summary().contains(text), "{}", guard.summary());
}

/// One request through the server layer on the global providers; the `traceresponse` header.
pub(crate) async fn one_request() -> String {
    request_with(None).await
}

async fn request_with(traceparent: Option<&str>) -> String {
    let app = Router::new()
        .route(
            "/hello",
            get(|| async {
                tracing::info!(greeting.target = "world", "saying hello");
                "hello"
            }),
        )
        .layer(OtelLayer::server());
    let mut req = Request::get("/hello");
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    let resp = app
        .oneshot(req.body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let header = resp
        .headers()
        .get("traceresponse")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    header
}

/// Traces, metrics and logs reach a real OTLP/HTTP receiver at `OTEL_EXPORTER_OTLP_ENDPOINT`
/// (a base URL: `/v1/<signal>` appended), as protobuf; the guard's drop flushes them, from
/// inside the runtime.
pub async fn otlp_http_reaches_a_real_receiver() {
    let (addr, posts) = receiver().await;
    // the base URL gets /v1/{signal} appended; a per-signal endpoint is taken whole
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"));
    std::env::set_var(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        format!("http://{addr}/v1/traces-elsewhere"),
    );
    std::env::set_var("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme");
    std::env::set_var("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "gzip");
    std::env::set_var("OTEL_SERVICE_NAME", "setup-test");
    std::env::set_var("OTEL_METRIC_EXPORT_INTERVAL", "60000");
    let guard = tower_otel_http::setup::init().expect("init");
    says(&guard, &format!("http://{addr}/v1/traces-elsewhere"));
    says(&guard, "traces: otlp (http/protobuf)");
    assert!(guard.tracer_provider().is_some() && guard.meter_provider().is_some());
    // a trace started here carries the random flag (the SDK's ids are random); a continued
    // one the flags it came with
    let tr = one_request().await;
    assert!(tr.ends_with("-03"), "a root: {tr}");
    let tr = request_with(Some(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ))
    .await;
    assert!(
        tr.ends_with("-01") && tr.contains("4bf92f3577b34da6a3ce929d0e0e4736"),
        "{tr}"
    );
    // the flush at drop, on this worker thread: the shutdown runs on a thread of its own
    let started = Instant::now();
    drop(guard);
    assert!(started.elapsed() < Duration::from_secs(5));
    let got = posts.lock().unwrap().clone();
    assert!(
        !got.iter().any(|(p, ..)| p == "/v1/traces"),
        "the per-signal endpoint is a full URL: {got:?}"
    );
    for signal in ["/v1/traces-elsewhere", "/v1/metrics", "/v1/logs"] {
        let found: Vec<_> = got.iter().filter(|(p, ..)| p == signal).collect();
        assert!(!found.is_empty(), "nothing posted to {signal}: {got:?}");
        for (_, ct, len, tenant, encoding) in found {
            assert_eq!(ct, "application/x-protobuf", "{signal}");
            assert!(*len > 0, "{signal}: an empty body");
            assert_eq!(tenant, "acme", "{signal}: OTEL_EXPORTER_OTLP_HEADERS");
            // OTEL_EXPORTER_OTLP_LOGS_COMPRESSION: the logs alone
            let gzip = if signal == "/v1/logs" { "gzip" } else { "" };
            assert_eq!(encoding, gzip, "{signal}: compression");
        }
    }
}

/// `OTEL_SDK_DISABLED=true`: no provider, nothing exported, the layers record nothing.
pub async fn sdk_disabled_installs_nothing() {
    let (addr, posts) = receiver().await;
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"));
    std::env::set_var("OTEL_SDK_DISABLED", "true");
    let guard = tower_otel_http::setup::init().expect("init");
    assert!(guard.tracer_provider().is_none());
    assert!(guard.meter_provider().is_none());
    assert!(guard.summary().contains("OTEL_SDK_DISABLED"));
    one_request().await;
    drop(guard);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(posts.lock().unwrap().is_empty());
}

/// A collector that accepts and never answers cannot hang the exit: the shutdown gives up at
/// its timeout.
pub async fn a_dead_collector_cannot_hang_the_exit() {
    let addr = silent_collector().await;
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"));
    std::env::set_var("OTEL_EXPORTER_OTLP_TIMEOUT", "60000");
    let guard = Setup::new()
        .with_shutdown_timeout(Duration::from_millis(800))
        .install()
        .expect("init");
    one_request().await;
    let started = Instant::now();
    let finished = guard.shutdown();
    let took = started.elapsed();
    assert!(!finished, "the dead collector answered?");
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
}

/// A subscriber already installed: an error value, no panic; bad values are errors too.
pub async fn errors_are_values_not_panics() {
    std::env::set_var("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json");
    match tower_otel_http::setup::init() {
        Err(SetupError::Invalid { var, .. }) => assert_eq!(var, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        other => panic!("{other:?}"),
    }
    std::env::remove_var("OTEL_EXPORTER_OTLP_PROTOCOL");
    std::env::set_var("RUST_LOG", "info,=bad=");
    assert!(matches!(
        tower_otel_http::setup::init(),
        Err(SetupError::Invalid { .. })
    ));
    std::env::remove_var("RUST_LOG");
    tracing::subscriber::set_global_default(tracing_subscriber::registry()).unwrap();
    std::env::set_var("OTEL_TRACES_EXPORTER", "none");
    std::env::set_var("OTEL_METRICS_EXPORTER", "none");
    std::env::set_var("OTEL_LOGS_EXPORTER", "none");
    assert!(matches!(
        tower_otel_http::setup::init(),
        Err(SetupError::SubscriberAlreadySet)
    ));
    // with gRPC, whose exporters get a runtime of their own, inside this (current-thread)
    // runtime: still an error value, and that runtime dropped without a panic
    std::env::set_var("OTEL_TRACES_EXPORTER", "otlp");
    std::env::set_var("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9");
    assert!(matches!(
        tower_otel_http::setup::init(),
        Err(SetupError::SubscriberAlreadySet)
    ));
    // and nothing global was touched: a request through the layer records no span
    assert_eq!(one_request().await, "", "no provider installed");
    std::env::set_var("OTEL_TRACES_EXPORTER", "none");
    // without the subscriber it works beside the user's
    let guard = Setup::new().with_subscriber(false).install().expect("init");
    assert!(guard.tracer_provider().is_none(), "traces: none");
}

/// A collector that cannot be reached: one warning, not one per failed batch; and one line when
/// it can be reached again.
pub async fn an_unreachable_collector_is_said_once() {
    let buf = crate::common::Buf::default();
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe); // nothing listens there now
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"));
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "30");
    std::env::set_var("OTEL_METRICS_EXPORTER", "none");
    std::env::set_var("OTEL_LOGS_EXPORTER", "none");
    let guard = Setup::new()
        .with_log_writer(buf.clone())
        .with_shutdown_timeout(Duration::from_secs(2))
        .install()
        .expect("init");
    says(&guard, &format!("http://{addr}/v1/traces"));
    // opentelemetry-otlp retries a failed export three times (≈ 1 s in all): requests for
    // 3.5 s make several failed exports
    let said = |what: &str| buf.lines().iter().filter(|l| l.contains(what)).count();
    let until = Instant::now() + Duration::from_millis(3500);
    while Instant::now() < until {
        one_request().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(said("cannot export traces"), 1, "{:?}", buf.lines());
    // with the cause, where opentelemetry-otlp says only "network error"
    assert_eq!(said("Connection refused"), 1, "{:?}", buf.lines());
    // the collector comes up on that address (answering 400 once told to)
    let refuse = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refusing = refuse.clone();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let app = Router::new().route(
        "/v1/traces",
        post(move || {
            let status = if refusing.load(std::sync::atomic::Ordering::SeqCst) {
                http::StatusCode::BAD_REQUEST
            } else {
                http::StatusCode::OK
            };
            async move {
                (
                    status,
                    [("content-type", "application/x-protobuf")],
                    Bytes::new(),
                )
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let wait_for = |what: &'static str, n: usize| {
        let buf = buf.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            while buf.lines().iter().filter(|l| l.contains(what)).count() < n
                && Instant::now() < deadline
            {
                one_request().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for("exporting traces to", 1).await;
    assert_eq!(said("exporting traces to"), 1, "{:?}", buf.lines());
    assert_eq!(said("cannot export traces"), 1);
    // a failure of another kind: said with its own reason, not the old connection's
    refuse.store(true, std::sync::atomic::Ordering::SeqCst);
    wait_for("cannot export traces", 2).await;
    let lines = buf.lines();
    let last = lines
        .iter()
        .rfind(|l| l.contains("cannot export traces"))
        .unwrap();
    assert!(last.contains("400") && !last.contains("refused"), "{last}");
    drop(guard);
}

/// An OTLP/gRPC receiver (opentelemetry-proto's tonic services): how many export requests of
/// each signal it got, and the `service.name` of the spans.
#[derive(Clone, Default)]
pub(crate) struct GrpcSink {
    pub(crate) got: Arc<Mutex<Vec<(&'static str, String)>>>,
}

mod grpc_sink {
    use super::GrpcSink;
    use opentelemetry_proto::tonic::collector::logs::v1::{
        logs_service_server::LogsService, ExportLogsServiceRequest, ExportLogsServiceResponse,
    };
    use opentelemetry_proto::tonic::collector::metrics::v1::{
        metrics_service_server::MetricsService, ExportMetricsServiceRequest,
        ExportMetricsServiceResponse,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::{
        trace_service_server::TraceService, ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use tonic::{Request, Response, Status};

    fn service_name(attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> String {
        attrs
            .iter()
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref())
            .map(|v| format!("{:?}", v.value))
            .unwrap_or_default()
    }

    #[tonic::async_trait]
    impl TraceService for GrpcSink {
        async fn export(
            &self,
            r: Request<ExportTraceServiceRequest>,
        ) -> Result<Response<ExportTraceServiceResponse>, Status> {
            let name = r
                .get_ref()
                .resource_spans
                .first()
                .and_then(|s| s.resource.as_ref())
                .map(|res| service_name(&res.attributes))
                .unwrap_or_default();
            self.got.lock().unwrap().push(("traces", name));
            Ok(Response::new(ExportTraceServiceResponse::default()))
        }
    }

    #[tonic::async_trait]
    impl MetricsService for GrpcSink {
        async fn export(
            &self,
            _: Request<ExportMetricsServiceRequest>,
        ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
            self.got.lock().unwrap().push(("metrics", String::new()));
            Ok(Response::new(ExportMetricsServiceResponse::default()))
        }
    }

    #[tonic::async_trait]
    impl LogsService for GrpcSink {
        async fn export(
            &self,
            _: Request<ExportLogsServiceRequest>,
        ) -> Result<Response<ExportLogsServiceResponse>, Status> {
            self.got.lock().unwrap().push(("logs", String::new()));
            Ok(Response::new(ExportLogsServiceResponse::default()))
        }
    }
}

/// OTLP over gRPC (`OTEL_EXPORTER_OTLP_PROTOCOL=grpc`) to a real receiver, set up and shut down
/// on a **current-thread** runtime: the exporters' connections run on a runtime of the guard's
/// own, so the flush at drop completes while this runtime is blocked in it.
pub async fn otlp_grpc_reaches_a_real_receiver_from_a_current_thread_runtime() {
    let sink = GrpcSink::default();
    let addr = grpc_receiver(&sink);
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"));
    std::env::set_var("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
    std::env::set_var("OTEL_SERVICE_NAME", "setup-grpc-test");
    std::env::set_var("OTEL_METRIC_EXPORT_INTERVAL", "60000");
    let guard = tower_otel_http::setup::init().expect("init");
    says(&guard, "traces: otlp (grpc)");
    one_request().await;
    let started = Instant::now();
    assert!(guard.shutdown(), "the shutdown finished in time");
    assert!(started.elapsed() < Duration::from_secs(5));
    let got = sink.got.lock().unwrap().clone();
    for signal in ["traces", "metrics", "logs"] {
        assert!(
            got.iter().any(|(s, _)| *s == signal),
            "no {signal}: {got:?}"
        );
    }
    assert!(
        got.iter()
            .any(|(s, n)| *s == "traces" && n.contains("setup-grpc-test")),
        "{got:?}"
    );
}

/// Set up outside any runtime, with gRPC (whose exporters need one): no panic, and the guard
/// dropped outside any runtime too. The endpoint without a scheme is plain `http` by
/// `OTEL_EXPORTER_OTLP_INSECURE=true` (the specification's rule).
pub fn otlp_grpc_outside_a_runtime() {
    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    let sink = GrpcSink::default();
    let addr = grpc_receiver(&sink);
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", addr.to_string());
    std::env::set_var("OTEL_EXPORTER_OTLP_INSECURE", "true");
    std::env::set_var("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
    std::env::set_var("OTEL_SERVICE_NAME", "outside-a-runtime");
    let guard = Setup::new()
        .with_shutdown_timeout(Duration::from_secs(4))
        .install()
        .expect("init outside a runtime");
    says(&guard, &format!("traces: otlp (grpc) http://{addr}"));
    let tracer = guard.tracer_provider().expect("traces").tracer("t");
    let mut span = tracer.start("no runtime here");
    span.end();
    assert!(guard.shutdown(), "the flush finished in time");
    let got = sink.got.lock().unwrap().clone();
    assert!(
        got.iter()
            .any(|(s, n)| *s == "traces" && n.contains("outside-a-runtime")),
        "{got:?}"
    );
}

/// A GET over HTTP/1.1: the content type and the body.
#[cfg(feature = "prometheus")]
async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let res = send
        .send_request(
            Request::get(path)
                .header("host", "localhost")
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    (ct, String::from_utf8(body.to_vec()).unwrap())
}

/// `OTEL_EXPORTER_PROMETHEUS_HOST`/`_PORT` (port 0: any free one): the metrics served on a port
/// of their own, scraped over HTTP, with the layer's histogram; the server stops with the guard.
#[cfg(feature = "prometheus")]
pub async fn prometheus_served_on_its_own_port() {
    std::env::set_var("OTEL_METRICS_EXPORTER", "prometheus");
    std::env::set_var("OTEL_TRACES_EXPORTER", "none");
    std::env::set_var("OTEL_LOGS_EXPORTER", "none");
    std::env::set_var("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1");
    // a port taken: an error value naming the variables, nothing installed
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std::env::set_var(
        "OTEL_EXPORTER_PROMETHEUS_PORT",
        taken.local_addr().unwrap().port().to_string(),
    );
    match tower_otel_http::setup::init() {
        Err(e) => assert!(
            e.to_string().contains("cannot listen on")
                && e.to_string()
                    .contains("OTEL_EXPORTER_PROMETHEUS_HOST/_PORT"),
            "{e}"
        ),
        Ok(_) => panic!("a port in use was listened on"),
    }
    drop(taken);
    std::env::set_var("OTEL_EXPORTER_PROMETHEUS_PORT", "0");
    let guard = tower_otel_http::setup::init().expect("init");
    let addr = guard.metrics_address().expect("served");
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    says(&guard, &format!("served on http://{addr}/metrics"));
    one_request().await;
    one_request().await;
    let (ct, text) = http_get(addr, "/metrics").await;
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let count = text
        .lines()
        .find(|l| {
            l.starts_with("http_server_request_duration_seconds_count{")
                && l.contains("http_route=\"/hello\"")
        })
        .unwrap_or_else(|| panic!("no count for the route:\n{text}"));
    assert!(count.ends_with(" 2"), "{count}");
    assert!(guard.shutdown(), "the shutdown finished in time");
    // the port is given back by the time the shutdown returns
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still served after the guard"
    );
}

/// `OTEL_METRICS_EXPORTER=prometheus`: the endpoint mounted on a real server and scraped over
/// HTTP — the layer's histogram with its route label, the resource from
/// `OTEL_RESOURCE_ATTRIBUTES` and the code's fallback service name in `target_info`.
#[cfg(feature = "prometheus")]
pub async fn prometheus_endpoint_from_the_environment() {
    std::env::set_var("OTEL_METRICS_EXPORTER", "prometheus");
    std::env::set_var("OTEL_TRACES_EXPORTER", "none");
    std::env::set_var("OTEL_LOGS_EXPORTER", "none");
    std::env::set_var(
        "OTEL_RESOURCE_ATTRIBUTES",
        "deployment.environment.name=staging",
    );
    let guard = Setup::new()
        .with_service_name("fallback-name")
        .install()
        .expect("init");
    let metrics = guard.metrics_endpoint().expect("a Prometheus endpoint");
    let api = Router::new().route("/items/{id}", get(|| async { "item" }));
    let app = Router::new()
        .nest("/api", api)
        .layer(OtelLayer::server())
        .route_service("/metrics", metrics);
    let addr = crate::common::serve_on_loopback(app).await;
    let get_text = |path: &'static str| http_get(addr, path);
    for _ in 0..3 {
        get_text("/api/items/7").await;
    }
    let (ct, text) = get_text("/metrics").await;
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let count = text
        .lines()
        .find(|l| {
            l.starts_with("http_server_request_duration_seconds_count{")
                && l.contains("http_route=\"/api/items/{id}\"")
        })
        .unwrap_or_else(|| panic!("no count for the route:\n{text}"));
    assert!(count.ends_with(" 3"), "{count}");
    let info = text
        .lines()
        .find(|l| l.starts_with("target_info{"))
        .unwrap_or_else(|| panic!("no target_info:\n{text}"));
    assert!(info.contains("service_name=\"fallback-name\""), "{info}");
    assert!(
        info.contains("deployment_environment_name=\"staging\""),
        "{info}"
    );
    drop(guard);
}

/// `OTEL_SERVICE_NAME` wins over the code's fallback name and over `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES` (the specification's order); `with_prometheus` serves the
/// metrics with `OTEL_METRICS_EXPORTER=none`.
#[cfg(feature = "prometheus")]
pub async fn the_environment_names_the_service() {
    std::env::set_var("OTEL_SERVICE_NAME", "from-env");
    std::env::set_var(
        "OTEL_RESOURCE_ATTRIBUTES",
        "service.name=from-attributes,team=pizza",
    );
    std::env::set_var("OTEL_METRICS_EXPORTER", "none");
    std::env::set_var("OTEL_TRACES_EXPORTER", "none");
    std::env::set_var("OTEL_LOGS_EXPORTER", "none");
    let guard = Setup::new()
        .with_service_name("fallback-name")
        .with_prometheus()
        .install()
        .expect("init");
    // with_prometheus serves the metrics even when OTEL_METRICS_EXPORTER pushes them nowhere
    let metrics = guard.metrics_endpoint().expect("a Prometheus endpoint");
    let text = metrics.render().unwrap();
    let info = text
        .lines()
        .find(|l| l.starts_with("target_info{"))
        .unwrap_or_else(|| panic!("no target_info:\n{text}"));
    assert!(info.contains("service_name=\"from-env\""), "{info}");
    assert!(info.contains("team=\"pizza\""), "{info}");
    assert!(guard.tracer_provider().is_none());
}

/// `OTEL_PROPAGATORS=none` (an incoming trace is not continued), `OTEL_TRACES_SAMPLER=always_off`
/// (nothing sampled), `RUST_LOG` (the filter of the lines), each with its effect on a request.
pub async fn propagators_sampler_and_rust_log_take_effect() {
    std::env::set_var("OTEL_PROPAGATORS", "none");
    std::env::set_var("OTEL_TRACES_SAMPLER", "always_off");
    std::env::set_var("OTEL_TRACES_EXPORTER", "console");
    std::env::set_var("OTEL_METRICS_EXPORTER", "none");
    std::env::set_var("OTEL_LOGS_EXPORTER", "none");
    std::env::set_var("RUST_LOG", "warn,tower_otel_http=info");
    let lines = crate::common::Buf::default();
    let guard = Setup::new()
        .with_log_writer(lines.clone())
        .install()
        .expect("init");
    assert!(
        guard.summary().contains("propagators: none")
            && guard.summary().contains("sampler: always_off")
            && guard.summary().contains("traces: console"),
        "{}",
        guard.summary()
    );
    let incoming = "4bf92f3577b34da6a3ce929d0e0e4736";
    let tr = request_with(Some(&format!("00-{incoming}-00f067aa0ba902b7-01"))).await;
    assert!(
        !tr.contains(incoming),
        "OTEL_PROPAGATORS=none: the incoming trace is not continued ({tr})"
    );
    assert!(
        tr.is_empty() || tr.ends_with("-00") || tr.ends_with("-02"),
        "always_off: not sampled ({tr})"
    );
    tracing::warn!(target: "app", "a warning");
    drop(guard);
    let text = lines.lines().join("\n");
    assert!(text.contains("telemetry: traces: console"), "{text}");
    assert!(text.contains("a warning"), "{text}");
    assert!(
        !text.contains("saying hello"),
        "RUST_LOG=warn hides the handler's info line: {text}"
    );
}

/// A real OTLP/gRPC receiver on a thread and runtime of its own (its socket registered there
/// too): the caller's runtime may be blocked while the guard shuts down, or absent.
fn grpc_receiver(sink: &GrpcSink) -> SocketAddr {
    grpc_receiver_with(sink, |server| server)
}

/// [`grpc_receiver`] with the server configured by `configure` (TLS, say).
pub(crate) fn grpc_receiver_with(
    sink: &GrpcSink,
    configure: impl FnOnce(tonic::transport::Server) -> tonic::transport::Server + Send + 'static,
) -> SocketAddr {
    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::LogsServiceServer;
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsServiceServer;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let server_sink = sink.clone();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let incoming = tonic::transport::server::TcpIncoming::from(listener);
                configure(tonic::transport::Server::builder())
                    .add_service(TraceServiceServer::new(server_sink.clone()))
                    .add_service(MetricsServiceServer::new(server_sink.clone()))
                    .add_service(LogsServiceServer::new(server_sink))
                    .serve_with_incoming(incoming)
                    .await
                    .unwrap()
            })
    });
    addr
}

/// `OTEL_EXPORTER_OTLP_TIMEOUT` (read by opentelemetry-otlp) bounds each export: against a
/// collector that never answers, a 300 ms timeout lets the flush finish (and say so) well within
/// a generous shutdown bound — the default (10 s) would not.
pub async fn the_export_timeout_comes_from_the_environment() {
    std::env::set_var("OTEL_EXPORTER_OTLP_TIMEOUT", "300");
    std::env::set_var("OTEL_METRICS_EXPORTER", "none");
    std::env::set_var("OTEL_LOGS_EXPORTER", "none");
    flush_gives_up_on_a_silent_collector().await;
}

/// Set up to a collector that never answers, one request, then the shutdown: it finishes, by
/// the exporters' own timeouts, well within its own 8 s bound.
async fn flush_gives_up_on_a_silent_collector() {
    let addr = silent_collector().await;
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"));
    let guard = Setup::new()
        .with_shutdown_timeout(Duration::from_secs(8))
        .install()
        .expect("init");
    one_request().await;
    let started = Instant::now();
    let finished = guard.shutdown();
    let took = started.elapsed();
    assert!(
        finished,
        "the flush gave up on the dead collector by itself"
    );
    assert!(took < Duration::from_secs(4), "shutdown took {took:?}");
}

/// A collector that accepts connections and never answers (reads nothing, holds them).
async fn silent_collector() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    addr
}

/// The batch and interval variables reach the SDK: `OTEL_BSP_MAX_EXPORT_BATCH_SIZE=1` and
/// `OTEL_BLRP_MAX_EXPORT_BATCH_SIZE=1` make an export per span and per log record (the defaults,
/// 512, would send the few of this test in one flush), and `OTEL_METRIC_EXPORT_INTERVAL=200`
/// sends metrics while the guard is alive (the default is a minute).
pub async fn batch_and_interval_variables_reach_the_sdk() {
    let (addr, posts) = receiver().await;
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"));
    std::env::set_var("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1");
    std::env::set_var("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "1");
    // no export by the clock: only a full batch (of one) sends before the flush
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "600000");
    std::env::set_var("OTEL_BLRP_SCHEDULE_DELAY", "600000");
    std::env::set_var("OTEL_METRIC_EXPORT_INTERVAL", "200");
    let guard = tower_otel_http::setup::init().expect("init");
    for _ in 0..4 {
        one_request().await;
    }
    let count = |signal: &str| posted(&posts, signal);
    // the periodic reader's exports, before any flush
    let deadline = Instant::now() + Duration::from_secs(10);
    while count("/v1/metrics") < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(count("/v1/metrics") >= 2, "{:?}", posts.lock().unwrap());
    drop(guard);
    // four server spans, four handler logs (and the set-up's own lines)
    assert!(count("/v1/traces") >= 4, "{:?}", posts.lock().unwrap());
    assert!(count("/v1/logs") >= 4, "{:?}", posts.lock().unwrap());
}

/// `OTEL_METRIC_EXPORT_TIMEOUT` bounds a metrics export (the SDK's periodic reader does not read
/// it; the crate gives it to the OTLP exporter): against a collector that never answers, the
/// final export gives up after 300 ms — with the exporter's own 10 s the shutdown would wait for
/// the reader's hard-coded 5 s.
pub async fn the_metric_export_timeout_comes_from_the_environment() {
    std::env::set_var("OTEL_METRIC_EXPORT_TIMEOUT", "300");
    std::env::set_var("OTEL_TRACES_EXPORTER", "none");
    std::env::set_var("OTEL_LOGS_EXPORTER", "none");
    flush_gives_up_on_a_silent_collector().await;
}

/// How many posts the receiver got at `path`.
pub(crate) fn posted(posts: &Posts, path: &str) -> usize {
    posts
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, ..)| p == path)
        .count()
}
