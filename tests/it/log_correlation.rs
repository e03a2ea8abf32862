//! Log correlation: a real subscriber's output for requests through a nested
//! router; the OpenTelemetry log bridge; tracing-opentelemetry alongside.
#![cfg(feature = "tracing")]

use crate::common;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use common::*;
use http::Request;
use opentelemetry::trace::{SpanKind, TracerProvider as _};
use tower_otel_http::logs::{exclude_request_spans, JsonFormat, TextFormat};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer as _;

/// Logs from a middleware inside the layer, the handler, and a task spawned by the handler.
fn app(layer: tower_otel_http::OtelServerLayer) -> Router {
    async fn handler() -> &'static str {
        tracing::info!(user = 42, "loading user");
        let task = tokio::spawn(
            async {
                tracing::warn!("in the spawned task");
            }
            .instrument(tracing::Span::current()),
        );
        task.await.unwrap();
        tracing::info!(quote = "say \"hi\"\n", "done");
        "user"
    }
    let users = Router::new().route("/users/{id}", get(handler));
    Router::new()
        .nest("/api", Router::new().nest("/v1", users))
        .layer(axum::middleware::from_fn(
            |req: axum::extract::Request, next: axum::middleware::Next| async move {
                tracing::info!("middleware before");
                let resp = next.run(req).await;
                tracing::info!("middleware after");
                resp
            },
        ))
        .layer(layer)
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[tokio::test]
async fn every_json_line_of_a_request_carries_its_ids() {
    let t = Telemetry::new();
    let buf = Buf::default();
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .event_format(JsonFormat::new())
            .with_writer(buf.clone()),
    );
    let _guard = tracing::subscriber::set_default(subscriber);
    tracing::info!("before any request");
    let (_, _, body) = send(app(t.layer()), get_req("/api/v1/users/7")).await;
    assert_eq!(body, "user");
    tracing::info!("after the request");

    let span = t.one();
    let trace_id = span.span_context.trace_id().to_string();
    let span_id = span.span_context.span_id().to_string();
    let lines = buf.lines();
    assert_eq!(lines.len(), 7, "{lines:#?}");
    let (outside, inside): (Vec<_>, Vec<_>) = lines
        .iter()
        .map(|l| json(l))
        .partition(|v| v["message"].as_str().unwrap().contains("request"));
    assert_eq!(outside.len(), 2);
    for v in &outside {
        assert!(v.get("trace_id").is_none(), "{v}");
    }
    let messages: Vec<&str> = inside
        .iter()
        .map(|v| v["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        messages,
        [
            "middleware before",
            "loading user",
            "in the spawned task",
            "done",
            "middleware after"
        ]
    );
    for v in &inside {
        assert_eq!(v["trace_id"], trace_id.as_str(), "{v}");
        assert_eq!(v["span_id"], span_id.as_str(), "{v}");
        assert_eq!(v["trace_flags"], "01", "{v}");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(v["level"].is_string() && v["target"].is_string());
    }
    assert_eq!(inside[1]["user"], 42);
    assert_eq!(
        inside[3]["quote"], "say \"hi\"\n",
        "escaped and parsed back"
    );
}

#[tokio::test]
async fn text_lines_carry_the_ids_too() {
    let t = Telemetry::new();
    let buf = Buf::default();
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .event_format(TextFormat::new())
            .with_writer(buf.clone()),
    );
    let _guard = tracing::subscriber::set_default(subscriber);
    send(app(t.layer()), get_req("/api/v1/users/7")).await;
    let span = t.one();
    let ids = format!(
        "trace_id={} span_id={} trace_flags=01",
        span.span_context.trace_id(),
        span.span_context.span_id()
    );
    let lines = buf.lines();
    assert_eq!(lines.len(), 5, "{lines:#?}");
    for l in &lines {
        assert!(l.ends_with(&ids), "{l}");
    }
    assert!(lines[1].contains(" loading user user=42 "), "{}", lines[1]);
}

#[tokio::test]
async fn unsampled_requests_log_flags_00_and_the_route_is_on_the_span() {
    let t = Telemetry::new();
    let buf = Buf::default();
    // the stock formatter shows the request span's fields, route included
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(buf.clone()),
    );
    let _guard = tracing::subscriber::set_default(subscriber);
    let req = Request::get("/api/v1/users/7")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )
        .body(Body::empty())
        .unwrap();
    send(app(t.layer()), req).await;
    let lines = buf.lines();
    assert!(!lines.is_empty());
    for l in &lines {
        assert!(
            l.contains("trace_id=4bf92f3577b34da6a3ce929d0e0e4736"),
            "{l}"
        );
        assert!(l.contains("trace_flags=00"), "{l}");
        assert!(l.contains("http.route=\"/api/v1/users/{id}\""), "{l}");
    }
}

#[tokio::test]
async fn correlation_can_be_switched_off_and_costs_nothing_when_filtered() {
    let t = Telemetry::new();
    let buf = Buf::default();
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .event_format(JsonFormat::new())
            .with_writer(buf.clone())
            .with_filter(tracing_subscriber::filter::LevelFilter::WARN),
    );
    let _guard = tracing::subscriber::set_default(subscriber);
    // the request span (INFO) is filtered out: only the WARN event from the spawned task is
    // written, and it has no span to take ids from (the task has no OTel context either)
    send(app(t.layer()), get_req("/api/v1/users/7")).await;
    let lines = buf.lines();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(json(&lines[0]).get("trace_id").is_none());

    // at WARN level the request span is seen again
    let buf2 = Buf::default();
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .event_format(JsonFormat::new())
            .with_writer(buf2.clone())
            .with_filter(tracing_subscriber::filter::LevelFilter::WARN),
    );
    let _g2 = tracing::subscriber::set_default(subscriber);
    t.reset();
    send(
        app(t.layer().with_log_level(tracing::Level::WARN)),
        get_req("/api/v1/users/7"),
    )
    .await;
    let lines = buf2.lines();
    assert_eq!(lines.len(), 1);
    assert_eq!(
        json(&lines[0])["trace_id"],
        t.one().span_context.trace_id().to_string().as_str()
    );
}

#[tokio::test]
async fn otel_log_bridge_records_carry_the_span_context() {
    use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
    use opentelemetry_sdk::logs::{InMemoryLogExporter, SdkLoggerProvider};

    let t = Telemetry::new();
    let exporter = InMemoryLogExporter::default();
    let logger_provider = SdkLoggerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber =
        tracing_subscriber::registry().with(OpenTelemetryTracingBridge::new(&logger_provider));
    let _guard = tracing::subscriber::set_default(subscriber);
    send(app(t.layer()), get_req("/api/v1/users/7")).await;
    let span = t.one();
    let logs = exporter.get_emitted_logs().unwrap();
    // the spawned task runs without the OTel context (only the tracing span follows it)
    let with_ctx: Vec<_> = logs
        .iter()
        .filter_map(|l| l.record.trace_context())
        .collect();
    assert_eq!(logs.len(), 5);
    assert_eq!(with_ctx.len(), 4, "handler and middleware records");
    for tc in with_ctx {
        assert_eq!(tc.trace_id, span.span_context.trace_id());
        assert_eq!(tc.span_id, span.span_context.span_id());
    }
}

#[tokio::test]
async fn works_with_tracing_opentelemetry_without_a_second_server_span() {
    let t = Telemetry::new();
    let tracer = t.provider.tracer("app");
    let subscriber = tracing_subscriber::registry().with(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(exclude_request_spans()),
    );
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = Router::new()
        .route(
            "/db",
            get(|| async {
                async {
                    tracing::info!("querying");
                }
                .instrument(tracing::info_span!("db query"))
                .await;
                "ok"
            }),
        )
        .layer(t.layer());
    send(app, get_req("/db")).await;
    let spans = t.spans();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
    assert_eq!(spans.len(), 2, "{names:?}");
    let server: Vec<_> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Server)
        .collect();
    assert_eq!(server.len(), 1, "{names:?}");
    let db = spans.iter().find(|s| s.name == "db query").unwrap();
    assert_eq!(db.parent_span_id, server[0].span_context.span_id());
    assert_eq!(
        db.span_context.trace_id(),
        server[0].span_context.trace_id()
    );
}
