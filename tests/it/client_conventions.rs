//! Conventions of the client side that the server side pins in its own tests: the attribute
//! derivation through a mock
//! transport (no network needed to see what a URL or a `Host` header yields), the metrics and
//! the span's duration over real loopback TCP.

use crate::common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::routing::get;
use axum::Router;
use common::*;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use opentelemetry::trace::{Link, SpanKind, TraceId};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{
    InMemorySpanExporter, SamplingDecision, SamplingResult, SdkTracerProvider, ShouldSample,
};
use tower::{Layer, ServiceExt};
use tower_otel_http::client::UrlTemplate;
use tower_otel_http::OtelLayer;

/// A transport answering `200` with a short body at once, recording nothing on the wire.
fn mock() -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    tower::service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    })
}

/// Send `req` through the client layer `layer` around the mock, reading the whole body.
async fn call(layer: tower_otel_http::OtelClientLayer, req: Request<Full<Bytes>>) {
    let resp = layer.layer(mock()).oneshot(req).await.unwrap();
    resp.into_body().collect().await.unwrap();
}

fn req(method: Method, uri: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::default())
        .unwrap()
}

#[tokio::test]
async fn server_port_defaults_by_scheme_and_falls_back_to_the_host_header() {
    let t = Telemetry::new();
    let layer = || OtelLayer::client().with_tracer_provider(&t.provider);
    for (uri, host, address, port) in [
        ("http://example.com/a", None, "example.com", 80),
        ("https://example.com/a", None, "example.com", 443),
        ("http://example.com:8080/a", None, "example.com", 8080),
        ("http://[::1]:9000/a", None, "::1", 9000),
        // origin-form: the Host header names the server
        ("/a", Some("api.example.com:8443"), "api.example.com", 8443),
        ("/a", Some("api.example.com"), "api.example.com", 80),
    ] {
        t.reset();
        let mut r = req(Method::GET, uri);
        if let Some(h) = host {
            r.headers_mut().insert("host", h.parse().unwrap());
        }
        call(layer(), r).await;
        let span = t.one();
        assert_eq!(span.span_kind, SpanKind::Client);
        assert_eq!(
            attr_str(&span, "server.address").as_deref(),
            Some(address),
            "{uri}"
        );
        assert_eq!(attr_i64(&span, "server.port"), Some(port), "{uri}");
    }
}

/// `url.full` is absolute or absent, never a bare path; a request in origin form takes its
/// server from the layer's target, then from `Host`.
#[tokio::test]
async fn url_full_is_absolute_or_absent_and_the_target_names_the_server() {
    let t = Telemetry::new();
    for (target, uri, host, full, address, port) in [
        (
            None,
            "http://example.com/a?b=1",
            None,
            Some("http://example.com/a?b=1"),
            Some("example.com"),
            Some(80),
        ),
        (
            None,
            "/a?b=1",
            Some("api.example.com:8443"),
            None,
            Some("api.example.com"),
            Some(8443),
        ),
        (None, "/a", None, None, None, None),
        (
            Some("https://inventory.svc"),
            "/pkg.Svc/M",
            None,
            Some("https://inventory.svc/pkg.Svc/M"),
            Some("inventory.svc"),
            Some(443),
        ),
        (
            Some("http://[::1]:50051"),
            "/a?sig=secret",
            Some("ignored.example"),
            Some("http://[::1]:50051/a?sig=REDACTED"),
            Some("::1"),
            Some(50051),
        ),
        // an absolute URI wins over the target
        (
            Some("http://inventory.svc:1"),
            "http://other.svc:2/a",
            None,
            Some("http://other.svc:2/a"),
            Some("other.svc"),
            Some(2),
        ),
    ] {
        t.reset();
        let mut layer = OtelLayer::client().with_tracer_provider(&t.provider);
        if let Some(target) = target {
            layer = layer.with_target(target.parse().unwrap());
        }
        let mut r = req(Method::GET, uri);
        if let Some(h) = host {
            r.headers_mut().insert("host", h.parse().unwrap());
        }
        call(layer, r).await;
        let span = t.one();
        assert_eq!(
            attr_str(&span, "url.full").as_deref(),
            full,
            "{target:?} {uri}"
        );
        assert_eq!(
            attr_str(&span, "server.address").as_deref(),
            address,
            "{target:?} {uri}"
        );
        assert_eq!(attr_i64(&span, "server.port"), port, "{target:?} {uri}");
    }
}

#[tokio::test]
async fn an_unknown_method_is_other_on_the_span_and_the_metric() {
    let t = Telemetry::new();
    let m = Metrics::new();
    let layer = OtelLayer::client()
        .with_tracer_provider(&t.provider)
        .with_meter_provider(&m.provider);
    let purge = Method::from_bytes(b"PURGE").unwrap();
    call(layer.clone(), req(purge, "http://example.com/cache")).await;
    let span = t.one();
    assert_eq!(span.name, "HTTP");
    assert_eq!(
        attr_str(&span, "http.request.method").as_deref(),
        Some("_OTHER")
    );
    assert_eq!(
        attr_str(&span, "http.request.method_original").as_deref(),
        Some("PURGE")
    );
    // case-sensitive: `get` is not GET
    t.reset();
    let lower = Method::from_bytes(b"get").unwrap();
    call(layer, req(lower, "http://example.com/cache")).await;
    assert_eq!(
        attr_str(&t.one(), "http.request.method").as_deref(),
        Some("_OTHER")
    );
    let points = m.points("http.client.request.duration");
    assert_eq!(points.len(), 1, "one series for both unknown methods");
    assert_eq!(points[0].attr("http.request.method"), Some("_OTHER"));
    assert_eq!(points[0].attr("http.request.method_original"), None);
    assert_eq!(points[0].count, 2);
}

#[tokio::test]
async fn url_template_and_scheme_are_on_metrics_only_when_opted_in() {
    let t = Telemetry::new();
    let with_template = || {
        let mut r = req(Method::GET, "https://example.com/users/42");
        r.extensions_mut().insert(UrlTemplate::new("/users/{id}"));
        r
    };

    let m = Metrics::new();
    let layer = OtelLayer::client()
        .with_tracer_provider(&t.provider)
        .with_meter_provider(&m.provider);
    call(layer, with_template()).await;
    let span = t.one();
    assert_eq!(span.name, "GET /users/{id}");
    assert_eq!(
        attr_str(&span, "url.template").as_deref(),
        Some("/users/{id}"),
        "on the span"
    );
    let p = &m.points("http.client.request.duration")[0];
    assert_eq!(p.attr("url.template"), None, "off the metric by default");
    assert_eq!(p.attr("url.scheme"), None, "off the metric by default");

    let m = Metrics::new();
    let layer = OtelLayer::client()
        .with_tracer_provider(&t.provider)
        .with_meter_provider(&m.provider)
        .with_metrics_url_template(true)
        .with_metrics_url_scheme(true);
    call(layer, with_template()).await;
    let p = &m.points("http.client.request.duration")[0];
    assert_eq!(p.attr("url.template"), Some("/users/{id}"));
    assert_eq!(p.attr("url.scheme"), Some("https"));
}

#[tokio::test]
async fn redaction_and_header_capture_follow_the_users_lists() {
    let t = Telemetry::new();
    let layer = OtelLayer::client()
        .with_tracer_provider(&t.provider)
        .with_redacted_query_keys(["token"])
        .with_request_headers(["x-request-id"]);
    let mut r = req(Method::GET, "http://example.com/p?token=abc&sig=kept&q=1");
    r.headers_mut()
        .insert("x-request-id", "r-1".parse().unwrap());
    r.headers_mut()
        .insert("x-not-listed", "secret".parse().unwrap());
    r.headers_mut()
        .insert("authorization", "Bearer t".parse().unwrap());
    call(layer, r).await;
    let span = t.one();
    assert_eq!(
        attr_str(&span, "url.full").as_deref(),
        Some("http://example.com/p?token=REDACTED&sig=kept&q=1"),
        "the user's list replaces the default one"
    );
    match attr(&span, "http.request.header.x-request-id") {
        Some(opentelemetry::Value::Array(opentelemetry::Array::String(v))) => {
            assert_eq!(v.iter().map(|s| s.as_str()).collect::<Vec<_>>(), ["r-1"]);
        }
        other => panic!("x-request-id: {other:?}"),
    }
    for key in [
        "http.request.header.x-not-listed",
        "http.request.header.authorization",
    ] {
        assert_eq!(attr(&span, key), None, "{key}");
    }
}

#[tokio::test]
async fn the_sampler_sees_the_clients_start_attributes() {
    #[derive(Clone, Debug, Default)]
    struct Recorder(Arc<Mutex<Vec<String>>>);
    impl ShouldSample for Recorder {
        fn should_sample(
            &self,
            _parent: Option<&opentelemetry::Context>,
            _trace_id: TraceId,
            name: &str,
            kind: &SpanKind,
            attributes: &[KeyValue],
            _links: &[Link],
        ) -> SamplingResult {
            let mut v = self.0.lock().unwrap();
            v.push(format!("name={name}"));
            v.push(format!("kind={kind:?}"));
            v.extend(attributes.iter().map(|kv| kv.key.to_string()));
            SamplingResult {
                decision: SamplingDecision::RecordAndSample,
                attributes: vec![],
                trace_state: Default::default(),
            }
        }
    }
    let rec = Recorder::default();
    let provider = SdkTracerProvider::builder()
        .with_sampler(rec.clone())
        .with_simple_exporter(InMemorySpanExporter::default())
        .build();
    let mut r = req(Method::GET, "https://example.com/users/42?q=1");
    r.extensions_mut().insert(UrlTemplate::new("/users/{id}"));
    call(OtelLayer::client().with_tracer_provider(&provider), r).await;
    let seen = rec.0.lock().unwrap().clone();
    for key in [
        "name=GET /users/{id}",
        "kind=Client",
        "http.request.method",
        "server.address",
        "server.port",
        "url.full",
        "url.template",
    ] {
        assert!(seen.iter().any(|s| s == key), "{key} not in {seen:?}");
    }
}

/// Over real loopback TCP: the duration metric is the span's duration, exactly.
#[tokio::test]
async fn the_client_duration_metric_is_the_spans_duration() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Body::from("slow")
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let t = Telemetry::new();
    let m = Metrics::new();
    let client = OtelLayer::client()
        .with_tracer_provider(&t.provider)
        .with_meter_provider(&m.provider)
        .layer(
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>(),
        );
    let resp = client
        .oneshot(req(Method::GET, &format!("http://{addr}/slow")))
        .await
        .unwrap();
    resp.into_body().collect().await.unwrap();
    let span = t.one();
    let span_secs = span
        .end_time
        .duration_since(span.start_time)
        .unwrap()
        .as_secs_f64();
    let p = &m.points("http.client.request.duration")[0];
    assert_eq!(p.sum, span_secs, "same value");
    assert!(p.sum >= 0.03);
}
