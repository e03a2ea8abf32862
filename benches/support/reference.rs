//! Two same-run references, one boxed-future layer:
//! - `Naive`: extract the context with the SDK's propagator, start a span with 8 attributes,
//!   end it at the response head, record a histogram — no route slot, no strictness, no body
//!   tracking: the point the crate is meant to beat;
//! - `Floor`: a root span without attributes started and ended, and one histogram record with
//!   the five attributes of a successful request — the SDK calls alone.
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use axum::extract::MatchedPath;
use http::{Request, Response};
use opentelemetry::metrics::{Histogram, MeterProvider as _};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Span, SpanKind, Tracer, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

struct Headers<'a>(&'a http::HeaderMap);
impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[derive(Clone)]
pub struct ReferenceLayer {
    tracer: SdkTracer,
    histogram: Histogram<f64>,
    naive: bool,
}

impl ReferenceLayer {
    pub fn new(tracers: &SdkTracerProvider, meters: &SdkMeterProvider, naive: bool) -> Self {
        let name = if naive { "naive" } else { "floor" };
        ReferenceLayer {
            tracer: tracers.tracer(name),
            histogram: meters
                .meter(name)
                .f64_histogram("http.server.request.duration")
                .build(),
            naive,
        }
    }
}

impl<S> tower::Layer<S> for ReferenceLayer {
    type Service = Reference<S>;
    fn layer(&self, inner: S) -> Reference<S> {
        Reference {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Reference<S> {
    inner: S,
    layer: ReferenceLayer,
}

impl<S, B, RB> tower::Service<Request<B>> for Reference<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let histogram = self.layer.histogram.clone();
        if !self.layer.naive {
            let mut span = self.layer.tracer.start("GET /api/users/{id}");
            let fut = self.inner.call(req);
            return Box::pin(async move {
                let res = fut.await;
                span.end();
                histogram.record(
                    0.001,
                    &[
                        KeyValue::new("http.request.method", "GET"),
                        KeyValue::new("url.scheme", "http"),
                        KeyValue::new("http.response.status_code", 200),
                        KeyValue::new("http.route", "/api/users/{id}"),
                        KeyValue::new("network.protocol.version", "1.1"),
                    ],
                );
                res
            });
        }
        let parent = TraceContextPropagator::new().extract(&Headers(req.headers()));
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map(|m| m.as_str().to_owned());
        let method = req.method().as_str().to_owned();
        let name = match &route {
            Some(r) => format!("{method} {r}"),
            None => method.clone(),
        };
        let header = |n: &str| {
            req.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let attrs = vec![
            KeyValue::new("http.request.method", method.clone()),
            KeyValue::new("url.path", req.uri().path().to_owned()),
            KeyValue::new("url.scheme", "http"),
            KeyValue::new("http.route", route.clone().unwrap_or_default()),
            KeyValue::new("network.protocol.version", "1.1"),
            KeyValue::new("server.address", header("host")),
            KeyValue::new("user_agent.original", header("user-agent")),
        ];
        let mut span = self
            .layer
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes(attrs)
            .start_with_context(&self.layer.tracer, &parent);
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            if let Ok(r) = &res {
                let status = i64::from(r.status().as_u16());
                span.set_attribute(KeyValue::new("http.response.status_code", status));
                histogram.record(
                    start.elapsed().as_secs_f64(),
                    &[
                        KeyValue::new("http.request.method", method),
                        KeyValue::new("http.route", route.unwrap_or_default()),
                        KeyValue::new("http.response.status_code", status),
                        KeyValue::new("url.scheme", "http"),
                    ],
                );
            }
            span.end();
            res
        })
    }
}
