//! Test helpers: a local tracer provider with an in-memory exporter (never the globals).
#![allow(dead_code)]

use axum::body::Body;
use http::Request;
use http_body_util::BodyExt;
use opentelemetry::trace::{SpanId, Status};
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tower::ServiceExt;
use tower_otel_http::OtelServerLayer;

pub struct Telemetry {
    pub provider: SdkTracerProvider,
    pub exporter: InMemorySpanExporter,
}

impl Telemetry {
    pub fn new() -> Self {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        Telemetry { provider, exporter }
    }

    pub fn layer(&self) -> OtelServerLayer {
        OtelServerLayer::new().with_tracer_provider(&self.provider)
    }

    pub fn spans(&self) -> Vec<SpanData> {
        self.exporter.get_finished_spans().unwrap()
    }

    /// The only finished span; panics if there is not exactly one.
    pub fn one(&self) -> SpanData {
        let spans = self.spans();
        assert_eq!(
            spans.len(),
            1,
            "expected exactly one span, got {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        spans.into_iter().next().unwrap()
    }

    pub fn reset(&self) {
        self.exporter.reset();
    }
}

pub fn attr(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

pub fn attr_str(span: &SpanData, key: &str) -> Option<String> {
    attr(span, key).map(|v| v.as_str().into_owned())
}

pub fn attr_i64(span: &SpanData, key: &str) -> Option<i64> {
    match attr(span, key) {
        Some(Value::I64(i)) => Some(i),
        Some(other) => panic!("{key} is not an i64: {other:?}"),
        None => None,
    }
}

pub fn is_root(span: &SpanData) -> bool {
    span.parent_span_id == SpanId::INVALID
}

pub fn is_error(span: &SpanData) -> bool {
    matches!(span.status, Status::Error { .. })
}

/// Send a request through `svc` and read the whole body.
pub async fn send<S, B>(svc: S, req: Request<Body>) -> (http::StatusCode, http::HeaderMap, String)
where
    S: tower::Service<Request<Body>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let resp = svc.oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

pub fn get_req(uri: &str) -> Request<Body> {
    Request::builder().uri(uri).body(Body::empty()).unwrap()
}
