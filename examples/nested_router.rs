//! A root axum `Router` with nested sub-routers, instrumented with one `.layer(...)`.
//!
//! Serves on 127.0.0.1 (an ephemeral port unless `PORT` is set), calls itself a few times
//! through a real HTTP client — once with a caller's `traceparent` — and prints to stdout:
//! the handlers' log lines as JSON with `trace_id`/`span_id` on each, the spans (OpenTelemetry
//! stdout exporter), the `traceresponse` header of each response, and at exit the metrics.
//! No collector needed.
//!
//! ```text
//! cargo run --example nested_router             # demo requests, print spans, exit
//! cargo run --example nested_router -- --serve  # keep serving (Ctrl-C to stop)
//! ```

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tower_otel_http::logs;
use tower_otel_http::OtelLayer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn users() -> Router {
    Router::new()
        .route("/", get(|| async { "alice, bob" }))
        .route(
            "/{id}",
            get(|Path(id): Path<u32>| async move {
                // the request's span is current inside the handler, and every log line of
                // the request carries its ids
                tracing::info!(user = id, "loading user");
                let cx = opentelemetry::Context::current();
                format!("user {id} (trace {})", cx.span().span_context().trace_id())
            }),
        )
}

fn app(provider: &SdkTracerProvider, meters: &SdkMeterProvider) -> Router {
    let api = Router::new()
        .nest("/users", users())
        .route("/fail", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }));
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .nest("/api/v1", api)
        // once, on the root: every nested route gets its full template
        .layer(
            OtelLayer::server()
                .with_tracer_provider(provider)
                .with_meter_provider(meters),
        )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let resource = Resource::builder()
        .with_service_name("nested-router-demo")
        .build();
    let provider = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
        .build();
    let meters = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(
            PeriodicReader::builder(opentelemetry_stdout::MetricExporter::default()).build(),
        )
        .build();
    // log lines as JSON, with the request's trace_id / span_id / trace_flags at the top level
    tracing_subscriber::registry()
        .with(logs::json_layer())
        .init();

    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}");
    let server = tokio::spawn(
        axum::serve(
            listener,
            app(&provider, &meters).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .into_future(),
    );

    if std::env::args().any(|a| a == "--serve") {
        tokio::signal::ctrl_c().await?;
    } else {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        for (path, traceparent) in [
            (
                "/api/v1/users/42",
                Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            ),
            ("/api/v1/users", None),
            ("/api/v1/fail", None),
            ("/health", None),
            ("/nope", None),
        ] {
            let mut req = http::Request::get(format!("http://{addr}{path}"));
            if let Some(tp) = traceparent {
                req = req.header("traceparent", tp);
            }
            let resp = tokio::time::timeout(
                Duration::from_secs(5),
                client.request(req.body(Empty::new())?),
            )
            .await??;
            let status = resp.status();
            let traceresponse = resp
                .headers()
                .get("traceresponse")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned();
            let body = resp.into_body().collect().await?.to_bytes();
            println!(
                "GET {path} -> {status} {} (traceresponse: {traceresponse})",
                String::from_utf8_lossy(&body)
            );
        }
        // spans end when the server has written the last byte: give it a moment
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.abort();
    provider.shutdown()?;
    meters.shutdown()?; // exports the metrics
    Ok(())
}
