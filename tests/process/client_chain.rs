//! A three-hop chain over real loopback TCP — A calls B with hyper-util's client, B calls C
//! with reqwest — each hop a server with the server layer, the calls made from inside the
//! handlers through the client layer: one trace, correct parents, and the log lines of all
//! three hops carry the one trace id. A case of its own process: it installs a global subscriber.
#![cfg(all(feature = "tracing", feature = "reqwest"))]

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use axum::body::Bytes;
use axum::routing::get;
use axum::Router;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::SpanKind;
use tower::{Layer, ServiceExt};
use tower_otel_http::logs::JsonFormat;
use tower_otel_http::OtelLayer;
use tracing_subscriber::layer::SubscriberExt;

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

pub async fn three_hops_one_trace_and_every_log_line_carries_it() {
    let logs = Buf::default();
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .event_format(JsonFormat::new())
            .with_writer(logs.clone()),
    );
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let t = Telemetry::new();
    let server = || t.layer();
    let client = || OtelLayer::client().with_tracer_provider(&t.provider);

    // C: the last hop
    let c = serve(
        Router::new()
            .route(
                "/c",
                get(|| async {
                    tracing::info!(hop = "c", "answering");
                    "from c"
                }),
            )
            .layer(server()),
    )
    .await;
    // B calls C with reqwest
    let to_c = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(client())
        .build();
    let b = serve(
        Router::new()
            .route(
                "/b",
                get(move || {
                    let to_c = to_c.clone();
                    async move {
                        tracing::info!(hop = "b", "calling c");
                        let body = to_c
                            .get(format!("http://{c}/c"))
                            .send()
                            .await
                            .unwrap()
                            .text()
                            .await
                            .unwrap();
                        format!("b+{body}")
                    }
                }),
            )
            .layer(server()),
    )
    .await;
    // A calls B with hyper-util's client
    let to_b = client().layer(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
    let a = serve(
        Router::new()
            .route(
                "/a",
                get(move || {
                    let to_b = to_b.clone();
                    async move {
                        tracing::info!(hop = "a", "calling b");
                        let resp = to_b
                            .oneshot(
                                Request::get(format!("http://{b}/b"))
                                    .body(Full::default())
                                    .unwrap(),
                            )
                            .await
                            .unwrap();
                        let body = resp.into_body().collect().await.unwrap().to_bytes();
                        format!("a+{}", String::from_utf8_lossy(&body))
                    }
                }),
            )
            .layer(server()),
    )
    .await;

    let body = reqwest::get(format!("http://{a}/a"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "a+b+from c");

    for _ in 0..300 {
        if t.spans().len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let spans = t.spans();
    assert_eq!(
        spans.len(),
        5,
        "{:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let find = |kind: SpanKind, name: &str| {
        spans
            .iter()
            .find(|s| s.span_kind == kind && s.name == name)
            .unwrap_or_else(|| panic!("{kind:?} {name}"))
            .clone()
    };
    let sa = find(SpanKind::Server, "GET /a");
    let ab = spans
        .iter()
        .find(|s| {
            s.span_kind == SpanKind::Client && attr_str(s, "url.full").unwrap().ends_with("/b")
        })
        .unwrap()
        .clone();
    let sb = find(SpanKind::Server, "GET /b");
    let bc = spans
        .iter()
        .find(|s| {
            s.span_kind == SpanKind::Client && attr_str(s, "url.full").unwrap().ends_with("/c")
        })
        .unwrap()
        .clone();
    let sc = find(SpanKind::Server, "GET /c");
    let trace = sa.span_context.trace_id();
    assert!(is_root(&sa));
    assert!(
        spans.iter().all(|s| s.span_context.trace_id() == trace),
        "one trace"
    );
    assert_eq!(ab.parent_span_id, sa.span_context.span_id());
    assert_eq!(sb.parent_span_id, ab.span_context.span_id());
    assert_eq!(bc.parent_span_id, sb.span_context.span_id());
    assert_eq!(sc.parent_span_id, bc.span_context.span_id());

    // every log line of the three hops carries the trace id, and its hop's server span id
    let lines: Vec<serde_json::Value> = String::from_utf8(logs.bytes())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v.get("hop").is_some())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for line in &lines {
        assert_eq!(line["trace_id"], trace.to_string(), "{line}");
        let hop_span = match line["hop"].as_str().unwrap() {
            "a" => &sa,
            "b" => &sb,
            _ => &sc,
        };
        assert_eq!(
            line["span_id"],
            hop_span.span_context.span_id().to_string(),
            "{line}"
        );
    }
}
