//! Test helpers: a local tracer provider with an in-memory exporter (never the globals).
#![allow(dead_code)]

use axum::body::Body;
use http::Request;
use http_body_util::BodyExt;
use opentelemetry::trace::{SpanId, Status};
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tower::ServiceExt;
use tower_otel_http::{OtelLayer, OtelServerLayer};

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
        OtelLayer::server().with_tracer_provider(&self.provider)
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

// ---------------------------------------------------------------- metrics

use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use std::collections::BTreeMap;

/// One exported data point, flattened.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub metric: String,
    pub unit: String,
    pub attrs: BTreeMap<String, String>,
    /// histogram count (1 for sums)
    pub count: u64,
    /// histogram sum, or the sum's value
    pub sum: f64,
    pub bounds: Vec<f64>,
}

impl Point {
    pub fn attr(&self, k: &str) -> Option<&str> {
        self.attrs.get(k).map(|s| s.as_str())
    }
}

pub struct Metrics {
    pub provider: SdkMeterProvider,
    pub exporter: InMemoryMetricExporter,
}

impl Metrics {
    pub fn new() -> Self {
        let exporter = InMemoryMetricExporter::default();
        let reader = PeriodicReader::builder(exporter.clone()).build();
        let provider = SdkMeterProvider::builder().with_reader(reader).build();
        Metrics { provider, exporter }
    }

    /// All points of the latest collection (cumulative).
    pub fn collect(&self) -> Vec<Point> {
        self.provider.force_flush().unwrap();
        let all = self.exporter.get_finished_metrics().unwrap();
        let Some(last) = all.last() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for sm in last.scope_metrics() {
            for m in sm.metrics() {
                let name = m.name().to_string();
                let unit = m.unit().to_string();
                let mut push = |it: &mut dyn Iterator<Item = &opentelemetry::KeyValue>,
                                count: u64,
                                sum: f64,
                                bounds: Vec<f64>| {
                    out.push(Point {
                        metric: name.clone(),
                        unit: unit.clone(),
                        attrs: it
                            .map(|kv| (kv.key.to_string(), kv.value.as_str().into_owned()))
                            .collect(),
                        count,
                        sum,
                        bounds,
                    })
                };
                match m.data() {
                    AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                        for p in h.data_points() {
                            push(
                                &mut p.attributes(),
                                p.count(),
                                p.sum(),
                                p.bounds().collect(),
                            );
                        }
                    }
                    AggregatedMetrics::U64(MetricData::Histogram(h)) => {
                        for p in h.data_points() {
                            let sum = p.sum() as f64;
                            push(&mut p.attributes(), p.count(), sum, p.bounds().collect());
                        }
                    }
                    AggregatedMetrics::I64(MetricData::Sum(s)) => {
                        for p in s.data_points() {
                            push(&mut p.attributes(), 1, p.value() as f64, vec![]);
                        }
                    }
                    other => panic!("unexpected data for {name}: {other:?}"),
                }
            }
        }
        out
    }

    pub fn points(&self, metric: &str) -> Vec<Point> {
        self.collect()
            .into_iter()
            .filter(|p| p.metric == metric)
            .collect()
    }

    /// The value of `http.server.active_requests` summed over all series.
    pub fn active(&self) -> f64 {
        self.points("http.server.active_requests")
            .iter()
            .map(|p| p.sum)
            .sum()
    }
}

pub const DURATION: &str = "http.server.request.duration";

// ---------------------------------------------------------------- streaming bodies

/// Feeds a [`channel_body`].
pub type Chunks = tokio::sync::mpsc::Sender<Result<axum::body::Bytes, std::io::Error>>;

/// A response body whose chunks (or error) the test sends one by one.
pub fn channel_body() -> (Chunks, Body) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (tx, Body::from_stream(stream))
}

/// A GET handler that answers once with `body`, with the given headers.
pub fn once(
    body: Body,
    headers: &'static [(&'static str, &'static str)],
) -> axum::routing::MethodRouter {
    let body = std::sync::Arc::new(std::sync::Mutex::new(Some(body)));
    axum::routing::get(move || {
        let b = body.lock().unwrap().take().expect("called once");
        async move {
            let mut resp = http::Response::new(b);
            for (k, v) in headers {
                resp.headers_mut()
                    .insert(*k, http::HeaderValue::from_static(v));
            }
            resp
        }
    })
}

/// `/stream` behind `layer`, answering with a body fed by the returned sender.
pub fn streaming_app(layer: OtelServerLayer) -> (Chunks, axum::Router) {
    let (tx, body) = channel_body();
    let app = axum::Router::new()
        .route("/stream", once(body, &[]))
        .layer(layer);
    (tx, app)
}

/// A `MakeWriter` into a shared buffer: what a `fmt` layer wrote, for assertions.
#[derive(Clone, Default)]
pub struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Buf {
    /// Everything written so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }

    /// Everything written so far, line by line.
    pub fn lines(&self) -> Vec<String> {
        String::from_utf8(self.bytes())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buf {
    type Writer = Buf;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Serves `app` on 127.0.0.1, port 0, with `ConnectInfo`; its address.
pub async fn serve_on_loopback(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}
