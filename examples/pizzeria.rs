//! The pizzeria: a root router with `/health`, an API sub-router, a UI sub-router and a gRPC
//! service (`pizzeria.Oven/Bake`, tonic, on the same port), instrumented **once** at the root;
//! handlers call a downstream HTTP service (the thermometer) and the gRPC oven through the
//! instrumented clients, so trace propagation shows — HTTP → HTTP and HTTP → gRPC.
//!
//! ```text
//! cargo run --example pizzeria --features otlp,prometheus              # serves 127.0.0.1:3000, sends itself a few requests
//! cargo run --example pizzeria --features otlp,prometheus -- --once    # the same, then exits
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 cargo run --example pizzeria --features otlp,prometheus
//! ```
//!
//! The telemetry is set up in one call (`tower_otel_http::setup`, from the `OTEL_*`
//! environment). With no endpoint set (the default), spans and metrics print to stdout, logs
//! are JSON lines on stdout carrying `trace_id`/`span_id`, and metrics are served at `/metrics`
//! for Prometheus. With `OTEL_EXPORTER_OTLP_ENDPOINT` set, traces, metrics and logs are
//! exported over OTLP (`OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf`, the default, or `grpc`)
//! and every standard variable applies (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER`(`_ARG`), `OTEL_*_EXPORTER`, …). `RUST_LOG` (`target=level,...`)
//! replaces the default log filter (`pizzeria=info,tower_otel_http=info,warn`). Ctrl-C or
//! SIGTERM stops the server and flushes the telemetry.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tower::{Layer, ServiceExt};
use tower_otel_http::client::UrlTemplate;
use tower_otel_http::setup::{MetricsEndpoint, Setup};
use tower_otel_http::OtelLayer;

const DEFAULT_LOG_FILTER: &str = "pizzeria=info,tower_otel_http=info,warn";

// ---------------------------------------------------------------- the application

type OvenClient = tower_otel_http::OtelClient<Client<HttpConnector, Empty<Bytes>>>;
/// A tonic channel through the client layer.
type GrpcChannel = tower_otel_http::OtelClient<tonic::transport::Channel>;

#[derive(Clone)]
struct App {
    oven: OvenClient,
    oven_url: String,
    /// The gRPC oven (this same server).
    baker: GrpcChannel,
    next_order: Arc<AtomicU64>,
}

fn app(state: App) -> Router {
    let api = Router::new()
        .route("/menu", get(menu))
        .route("/orders", get(list_orders).post(place_order))
        .route("/orders/{id}", get(order))
        .route("/kitchen/status", get(kitchen_status));
    let ui = Router::new()
        .route(
            "/",
            get(|| async { axum::response::Html("<h1>Pizzeria</h1>") }),
        )
        .route(
            "/orders",
            get(|| async { axum::response::Html("<ul><li>42</li></ul>") }),
        );
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .nest("/api", api)
        .nest("/ui", ui)
        // a tonic service on the same port (h2c: axum's `http2` feature); `route_service`, not
        // `merge`, so that the root router may keep a fallback of its own
        .route_service("/pizzeria.Oven/{*rest}", Oven)
        // once, on the root: spans, metrics, the traceresponse header, log correlation — HTTP
        // requests under the HTTP conventions, gRPC calls under the RPC ones
        .layer(OtelLayer::server().with_active_requests(true))
        .with_state(state)
}

async fn menu() -> Json<serde_json::Value> {
    tracing::info!(pizzeria.menu.items = 3, "listing the menu");
    Json(json!(["margherita", "marinara", "quattro formaggi"]))
}

async fn list_orders() -> Json<serde_json::Value> {
    tracing::info!("listing orders");
    Json(json!([{"id": 42, "pizza": "margherita"}]))
}

/// Places an order and has the oven bake it over gRPC: the oven's spans are children of this
/// request's span.
async fn place_order(State(app): State<App>) -> (StatusCode, Json<serde_json::Value>) {
    let id = app.next_order.fetch_add(1, Ordering::Relaxed);
    tracing::info!(pizzeria.order.id = id, "order placed");
    let mut baker = tonic::client::Grpc::new(app.baker);
    let baked = async {
        baker
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        baker
            .unary(
                tonic::Request::new(BakeRequest {
                    pizza: "margherita".to_owned(),
                }),
                http::uri::PathAndQuery::from_static("/pizzeria.Oven/Bake"),
                tonic_prost::ProstCodec::<BakeRequest, BakeReply>::default(),
            )
            .await
    };
    match baked.await {
        Ok(reply) => (
            StatusCode::CREATED,
            Json(json!({"id": id, "ready_in_minutes": reply.into_inner().minutes})),
        ),
        Err(status) => {
            tracing::error!(pizzeria.oven.status = ?status.code(), "the oven did not bake");
            (StatusCode::BAD_GATEWAY, Json(json!({"id": id})))
        }
    }
}

// ---------------------------------------------------------------- the gRPC oven

/// `pizzeria.Oven/Bake`'s request (protobuf: field 1, a string).
#[derive(Clone, PartialEq, prost::Message)]
struct BakeRequest {
    #[prost(string, tag = "1")]
    pizza: String,
}

/// `pizzeria.Oven/Bake`'s reply (protobuf: field 1, a varint).
#[derive(Clone, PartialEq, prost::Message)]
struct BakeReply {
    #[prost(uint32, tag = "1")]
    minutes: u32,
}

/// The gRPC service `pizzeria.Oven`, written with tonic's server machinery (what
/// `tonic-prost-build` would generate from a `.proto`).
#[derive(Clone, Copy)]
struct Oven;

struct Bake;

impl tonic::server::UnaryService<BakeRequest> for Bake {
    type Response = BakeReply;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<tonic::Response<BakeReply>, tonic::Status>>
                + Send,
        >,
    >;

    fn call(&mut self, request: tonic::Request<BakeRequest>) -> Self::Future {
        Box::pin(async move {
            let pizza = request.into_inner().pizza;
            if pizza.is_empty() {
                return Err(tonic::Status::invalid_argument("which pizza?"));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            tracing::info!(pizzeria.pizza = %pizza, "baking");
            Ok(tonic::Response::new(BakeReply { minutes: 7 }))
        })
    }
}

impl tower::Service<http::Request<axum::body::Body>> for Oven {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<axum::body::Body>) -> Self::Future {
        Box::pin(async move {
            let req = req.map(tonic::body::Body::new);
            Ok(match req.uri().path() {
                "/pizzeria.Oven/Bake" => {
                    let codec = tonic_prost::ProstCodec::<BakeReply, BakeRequest>::default();
                    tonic::server::Grpc::new(codec).unary(Bake, req).await
                }
                _ => tonic::Status::unimplemented("").into_http(),
            })
        })
    }
}

async fn order(Path(id): Path<u64>) -> Result<Json<serde_json::Value>, StatusCode> {
    if id == 0 {
        tracing::warn!(pizzeria.order.id = id, "no such order");
        return Err(StatusCode::NOT_FOUND);
    }
    tracing::info!(pizzeria.order.id = id, "order looked up");
    Ok(Json(json!({"id": id, "pizza": "margherita"})))
}

/// Calls the oven (another service) through the instrumented client: the oven's span is a
/// child of this request's span, in the same trace.
async fn kitchen_status(State(app): State<App>) -> Result<String, StatusCode> {
    tracing::info!("asking the oven");
    let mut req = http::Request::get(format!("{}/oven/temperature", app.oven_url))
        .body(Empty::new())
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    req.extensions_mut()
        .insert(UrlTemplate::new("/oven/temperature"));
    let reply = app.oven.oneshot(req).await.map_err(|e| {
        tracing::error!(error.message = %e, "the oven did not answer");
        StatusCode::BAD_GATEWAY
    })?;
    let degrees = reply
        .into_body()
        .collect()
        .await
        .map_err(|_| StatusCode::BAD_GATEWAY)?
        .to_bytes();
    Ok(format!("oven at {} °C", String::from_utf8_lossy(&degrees)))
}

/// The downstream service, instrumented with the same layer.
fn oven() -> Router {
    Router::new()
        .route(
            "/oven/temperature",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(3)).await;
                tracing::info!("reading the thermometer");
                "420"
            }),
        )
        .layer(OtelLayer::server())
}

// ---------------------------------------------------------------- telemetry

/// One line per route: requests and mean duration, from the Prometheus registry the set-up
/// serves at `/metrics`.
fn summary(metrics: &MetricsEndpoint) -> String {
    let mut out = String::new();
    for family in metrics.registry().gather() {
        let rpc = family.name() == "rpc_server_call_duration_seconds";
        if family.name() != "http_server_request_duration_seconds" && !rpc {
            continue;
        }
        for m in family.get_metric() {
            let label = |k: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == k)
                    .map(|l| l.value().to_owned())
                    .unwrap_or_default()
            };
            let h = m.get_histogram();
            let (method, route, status) = if rpc {
                (
                    "gRPC".to_owned(),
                    label("rpc_method"),
                    label("rpc_response_status_code"),
                )
            } else {
                (
                    label("http_request_method"),
                    label("http_route"),
                    label("http_response_status_code"),
                )
            };
            let _ = writeln!(
                out,
                "  {:<6} {:<22} {:>3}  count {}  mean {:.1} ms",
                method,
                if route.is_empty() {
                    "(no route)".into()
                } else {
                    route
                },
                status,
                h.get_sample_count(),
                h.get_sample_sum() / h.get_sample_count().max(1) as f64 * 1e3,
            );
        }
    }
    out
}

// ---------------------------------------------------------------- main

struct Args {
    addr: SocketAddr,
    once: bool,
}

fn args() -> Result<Args, String> {
    let mut out = Args {
        addr: "127.0.0.1:3000".parse().map_err(|e| format!("{e}"))?,
        once: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--addr" => {
                let v = it.next().ok_or("--addr needs HOST:PORT")?;
                out.addr = v.parse().map_err(|e| {
                    format!("--addr {v:?}: {e} (expected HOST:PORT, e.g. 127.0.0.1:3000)")
                })?;
            }
            "--once" => out.once = true,
            "-h" | "--help" => {
                println!("usage: pizzeria [--addr HOST:PORT] [--once]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(out)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// A few requests, so that telemetry shows at once.
async fn burst(base: &str) {
    let client = reqwest::Client::new();
    let calls: [(&str, &str); 7] = [
        ("GET", "/health"),
        ("GET", "/api/menu"),
        ("POST", "/api/orders"),
        ("GET", "/api/orders/42"),
        ("GET", "/api/orders/0"),
        ("GET", "/api/kitchen/status"),
        ("GET", "/ui"),
    ];
    for (method, path) in calls {
        let req = client.request(
            method.parse().unwrap_or(reqwest::Method::GET),
            format!("{base}{path}"),
        );
        if let Err(e) = req
            .send()
            .await
            .and_then(|r| r.error_for_status().map(|_| ()))
        {
            if e.status().is_none() {
                eprintln!("request {method} {path} failed: {e}");
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("pizzeria: {e}");
            std::process::exit(2);
        }
    };
    // the telemetry in one call: OTEL_* and RUST_LOG decide; without an endpoint, stdout
    let telemetry = match Setup::new()
        .with_service_name("pizzeria")
        .with_console_without_endpoint(true)
        .with_default_log_filter(DEFAULT_LOG_FILTER)
        .with_prometheus()
        .install()
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("pizzeria: telemetry setup failed: {e}");
            std::process::exit(1);
        }
    };
    // None under OTEL_SDK_DISABLED=true
    let metrics = telemetry.metrics_endpoint();

    // the downstream service on a port of its own
    let oven_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the oven");
    let oven_url = format!(
        "http://{}",
        oven_listener.local_addr().expect("oven address")
    );
    tokio::spawn(async move {
        axum::serve(
            oven_listener,
            oven().into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });

    let listener = match tokio::net::TcpListener::bind(args.addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "pizzeria: cannot listen on {}: {e} (try --addr 127.0.0.1:0)",
                args.addr
            );
            std::process::exit(1);
        }
    };
    let addr = listener.local_addr().expect("local address");
    let base = format!("http://{addr}");
    // the gRPC oven is this same server: a tonic channel through the client layer, told its
    // target (tonic's generated clients send origin-form requests)
    let baker = tower::ServiceBuilder::new()
        .layer(OtelLayer::client().with_target(base.parse().expect("the demo's own address")))
        .service(
            tonic::transport::Endpoint::from_shared(base.clone())
                .expect("the demo's own address")
                .connect_lazy(),
        );
    let state = App {
        // the client layer: a CLIENT span per call, its context sent along
        oven: OtelLayer::client().layer(Client::builder(TokioExecutor::new()).build_http()),
        oven_url,
        baker,
        next_order: Arc::new(AtomicU64::new(1)),
    };
    let router = match &metrics {
        Some(m) => app(state).route_service("/metrics", m.clone()),
        None => app(state),
    };
    println!("pizzeria listening on {base}; metrics at {base}/metrics\n");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            tokio::select! {
                _ = shutdown_signal() => {},
                _ = stop_rx => {},
            }
        })
        .await
    });

    burst(&base).await;
    // give the last spans a moment to be written
    tokio::time::sleep(Duration::from_millis(50)).await;
    println!(
        "\nmetrics (http.server.request.duration per route, rpc.server.call.duration per method):"
    );
    match &metrics {
        Some(m) => print!("{}", summary(m)),
        None => println!("  (none: OTEL_SDK_DISABLED)"),
    }
    if args.once {
        println!("\n--once: stopping (without it, the demo keeps serving for curl)");
        let _ = stop_tx.send(());
    } else {
        println!(
            "\nnext:  curl -i {base}/api/orders/42     (the traceresponse header)\n       \
             curl -s {base}/metrics | grep http_server_request_duration_seconds_count\n       \
             docker compose -f deploy/docker-compose.yml up -d   (then OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318)\n       \
             Ctrl-C to stop (telemetry is flushed)\n"
        );
    }
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("pizzeria: server error: {e}"),
        Err(e) => eprintln!("pizzeria: server task failed: {e}"),
    }
    // flush and shut down (on a thread of the guard's own, bounded in time)
    drop(telemetry);
}
