//! HTTP server metrics with an in-memory metric exporter and local providers.

use crate::common;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::routing::{get, post};
use axum::Router;
use common::*;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use opentelemetry::metrics::{
    Histogram, HistogramBuilder, InstrumentBuilder, InstrumentProvider, Meter, MeterProvider,
    UpDownCounter,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use tower::{Layer, Service, ServiceExt};
use tower_otel_http::metrics::{Labeler, DURATION_BUCKETS};
use tower_otel_http::route::RecordRouteLayer;
use tower_otel_http::OtelServerLayer;

fn app() -> Router {
    let v1 = Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .route(
            "/upload",
            post(|body: Bytes| async move { format!("{}", body.len()) }),
        )
        .route("/boom", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }));
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .nest("/api", Router::new().nest("/v1", v1))
}

/// `/panic` panics behind tower-http's `CatchPanic`, inside `layer`.
fn panic_app(layer: OtelServerLayer) -> Router {
    Router::new()
        .route(
            "/panic",
            get(|| async {
                if true {
                    panic!("bug");
                }
                "never"
            }),
        )
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(layer)
}

struct Both {
    t: Telemetry,
    m: Metrics,
}

impl Both {
    fn new() -> Self {
        Both {
            t: Telemetry::new(),
            m: Metrics::new(),
        }
    }
    fn layer(&self) -> OtelServerLayer {
        self.t.layer().with_meter_provider(&self.m.provider)
    }
}

fn keys(p: &Point) -> BTreeSet<&str> {
    p.attrs.keys().map(|k| k.as_str()).collect()
}

#[tokio::test]
async fn duration_histogram_has_exact_attributes_unit_and_buckets() {
    let b = Both::new();
    let app = app().layer(b.layer());
    let req = Request::get("/api/v1/users/42?q=secret")
        .header("host", "example.com")
        .header("user-agent", "ua")
        .body(Body::empty())
        .unwrap();
    send(app, req).await;
    let points = b.m.points(DURATION);
    assert_eq!(points.len(), 1);
    let p = &points[0];
    assert_eq!(p.unit, "s");
    assert_eq!(p.bounds, DURATION_BUCKETS.to_vec());
    // the conventions' duration buckets, written out
    assert_eq!(
        p.bounds,
        [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
    );
    assert_eq!(p.count, 1);
    assert_eq!(
        keys(p),
        BTreeSet::from([
            "http.request.method",
            "http.response.status_code",
            "http.route",
            "network.protocol.version",
            "url.scheme",
        ]),
        "exactly the conventions' attributes (no path, query, address, user agent)"
    );
    assert_eq!(p.attr("http.request.method"), Some("GET"));
    assert_eq!(p.attr("http.response.status_code"), Some("200"));
    assert_eq!(p.attr("http.route"), Some("/api/v1/users/{id}"));
    assert_eq!(p.attr("network.protocol.version"), Some("1.1"));
    assert_eq!(p.attr("url.scheme"), Some("http"));
}

#[tokio::test]
async fn metric_value_equals_span_duration() {
    let b = Both::new();
    let app = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(30)).await;
                "slow"
            }),
        )
        .layer(b.layer());
    send(app, get_req("/slow")).await;
    let span = b.t.one();
    let span_secs = span
        .end_time
        .duration_since(span.start_time)
        .unwrap()
        .as_secs_f64();
    let p = &b.m.points(DURATION)[0];
    assert_eq!(p.sum, span_secs, "same value");
    assert!(p.sum >= 0.03);
}

#[tokio::test]
async fn errors_and_unmatched_routes() {
    let b = Both::new();
    let app = app().layer(b.layer());
    send(app.clone(), get_req("/api/v1/boom")).await;
    send(app.clone(), get_req("/nope")).await;
    let req = Request::builder()
        .method("PURGE")
        .uri("/health")
        .body(Body::empty())
        .unwrap();
    send(app, req).await;
    let points = b.m.points(DURATION);
    let boom = points
        .iter()
        .find(|p| p.attr("http.route") == Some("/api/v1/boom"))
        .unwrap();
    assert_eq!(boom.attr("error.type"), Some("500"));
    assert_eq!(boom.attr("http.response.status_code"), Some("500"));
    let nope = points
        .iter()
        .find(|p| p.attr("http.response.status_code") == Some("404"))
        .unwrap();
    assert_eq!(nope.attr("http.route"), None, "no route on the fallback");
    assert_eq!(nope.attr("error.type"), None);
    let purge = points
        .iter()
        .find(|p| p.attr("http.request.method") == Some("_OTHER"))
        .unwrap();
    assert!(!purge.attrs.contains_key("http.request.method_original"));
}

#[tokio::test]
async fn inner_error_panic_and_cancellation_are_recorded_with_error_type() {
    #[derive(Debug)]
    struct Oops;
    let b = Both::new();
    // inner error
    let svc = b
        .layer()
        .layer(tower::service_fn(|_r: Request<Body>| async {
            Err::<http::Response<Body>, _>(Oops)
        }));
    assert!(svc.oneshot(get_req("/x")).await.is_err());
    // panic behind CatchPanic
    let app = panic_app(b.layer());
    send(app, get_req("/panic")).await;
    // cancellation
    let app = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                "late"
            }),
        )
        .layer(b.layer());
    let r = tokio::time::timeout(Duration::from_millis(20), app.oneshot(get_req("/slow"))).await;
    assert!(r.is_err());

    let points = b.m.points(DURATION);
    let errs: BTreeSet<&str> = points.iter().filter_map(|p| p.attr("error.type")).collect();
    // an error type the crate cannot classify: the stable fallback, never a type path
    assert!(errs.contains("_OTHER"), "{errs:?}");
    assert!(errs.contains("500"));
    assert!(errs.contains("cancelled"));
    let cancelled = points
        .iter()
        .find(|p| p.attr("error.type") == Some("cancelled"))
        .unwrap();
    assert_eq!(cancelled.attr("http.route"), Some("/slow"));
    assert_eq!(cancelled.attr("http.response.status_code"), None);
}

/// Counts instrument creations, delegating to a real SDK meter.
struct CountingProvider {
    inner: opentelemetry_sdk::metrics::SdkMeterProvider,
    created: Arc<Mutex<HashMap<String, usize>>>,
}

struct CountingInstruments {
    meter: Meter,
    created: Arc<Mutex<HashMap<String, usize>>>,
}

impl CountingInstruments {
    fn count(&self, name: &str) {
        *self
            .created
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_default() += 1;
    }
}

impl InstrumentProvider for CountingInstruments {
    fn f64_histogram(&self, b: HistogramBuilder<'_, Histogram<f64>>) -> Histogram<f64> {
        self.count(&b.name);
        let mut h = self.meter.f64_histogram(b.name.clone());
        if let Some(u) = b.unit.clone() {
            h = h.with_unit(u);
        }
        if let Some(bounds) = b.boundaries.clone() {
            h = h.with_boundaries(bounds);
        }
        h.build()
    }
    fn u64_histogram(&self, b: HistogramBuilder<'_, Histogram<u64>>) -> Histogram<u64> {
        self.count(&b.name);
        let mut h = self.meter.u64_histogram(b.name.clone());
        if let Some(u) = b.unit.clone() {
            h = h.with_unit(u);
        }
        h.build()
    }
    fn i64_up_down_counter(
        &self,
        b: InstrumentBuilder<'_, UpDownCounter<i64>>,
    ) -> UpDownCounter<i64> {
        self.count(&b.name);
        let mut c = self.meter.i64_up_down_counter(b.name.clone());
        if let Some(u) = b.unit.clone() {
            c = c.with_unit(u);
        }
        c.build()
    }
}

impl MeterProvider for CountingProvider {
    fn meter_with_scope(&self, scope: InstrumentationScope) -> Meter {
        Meter::new(Arc::new(CountingInstruments {
            meter: self.inner.meter_with_scope(scope),
            created: self.created.clone(),
        }))
    }
}

#[tokio::test]
async fn instruments_are_created_once_for_a_big_nested_router() {
    let m = Metrics::new();
    let created = Arc::new(Mutex::new(HashMap::new()));
    let provider = CountingProvider {
        inner: m.provider.clone(),
        created: created.clone(),
    };
    let t = Telemetry::new();
    let layer = t
        .layer()
        .with_meter_provider(&provider)
        .with_active_requests(true)
        .with_response_body_size(true);
    // 50 routes over two levels of nesting
    let mut inner = Router::new();
    for i in 0..20 {
        inner = inner.route(&format!("/r{i}/{{id}}"), get(|| async { "x" }));
    }
    let mut mid = Router::new().nest("/inner", inner);
    for i in 0..20 {
        mid = mid.route(&format!("/m{i}"), get(|| async { "x" }));
    }
    let mut root = Router::new().nest("/mid", mid);
    for i in 0..10 {
        root = root.route(&format!("/t{i}"), get(|| async { "x" }));
    }
    let app = root.layer(layer.clone());
    // stacked on top once more, outside, with the same layer value
    let svc = layer.layer(app.clone());
    let mut n = 0;
    for i in 0..20 {
        send(app.clone(), get_req(&format!("/mid/inner/r{i}/7"))).await;
        send(svc.clone(), get_req(&format!("/mid/m{i}"))).await;
        n += 2;
    }
    for i in 0..10 {
        send(app.clone(), get_req(&format!("/t{i}"))).await;
        n += 1;
    }
    send(app.clone(), get_req("/missing")).await;
    n += 1;
    let created = created.lock().unwrap().clone();
    assert_eq!(
        created,
        HashMap::from([
            ("http.server.request.duration".to_owned(), 1),
            ("http.server.active_requests".to_owned(), 1),
            ("http.server.response.body.size".to_owned(), 1),
        ])
    );
    let total: u64 = m.points(DURATION).iter().map(|p| p.count).sum();
    assert_eq!(total, n, "each request counted once");
    assert_eq!(t.spans().len() as u64, n, "each request traced once");
}

#[tokio::test]
async fn active_requests_return_to_zero_on_every_path() {
    let b = Both::new();
    let layer = b.layer().with_active_requests(true);

    // completion, with a look while the body is still streaming
    let (tx, app) = streaming_app(layer.clone());
    let resp = app.oneshot(get_req("/stream")).await.unwrap();
    assert_eq!(b.m.active(), 1.0, "in flight while the body streams");
    let p = b.m.points("http.server.active_requests");
    assert_eq!(p[0].unit, "{request}");
    assert_eq!(
        keys(&p[0]),
        BTreeSet::from(["http.request.method", "url.scheme"])
    );
    tx.send(Ok(Bytes::from_static(b"x"))).await.unwrap();
    drop(tx);
    resp.into_body().collect().await.unwrap();
    assert_eq!(b.m.active(), 0.0, "completion");

    // dropped body
    let (tx, app) = streaming_app(layer.clone());
    let resp = app.oneshot(get_req("/stream")).await.unwrap();
    assert_eq!(b.m.active(), 1.0);
    drop(resp);
    drop(tx);
    assert_eq!(b.m.active(), 0.0, "dropped body");

    // inner error
    let svc = layer.layer(tower::service_fn(|_r: Request<Body>| async {
        Err::<http::Response<Body>, _>(std::io::Error::other("x"))
    }));
    assert!(svc.oneshot(get_req("/x")).await.is_err());
    assert_eq!(b.m.active(), 0.0, "inner error");

    // panic behind CatchPanic
    let app = panic_app(layer.clone());
    send(app, get_req("/panic")).await;
    assert_eq!(b.m.active(), 0.0, "panic");

    // dropped future
    let mut svc = layer.layer(tower::service_fn(|_r: Request<Body>| {
        std::future::pending::<Result<http::Response<Body>, std::convert::Infallible>>()
    }));
    let fut = svc.ready().await.unwrap().call(get_req("/x"));
    let r = tokio::time::timeout(Duration::from_millis(10), fut).await;
    assert!(r.is_err());
    assert_eq!(b.m.active(), 0.0, "dropped future");
}

#[tokio::test]
async fn body_sizes_count_bytes_actually_streamed() {
    let b = Both::new();
    let app = app().layer(b.layer().with_all_metrics().with_counted_request_bodies());
    let payload = vec![b'a'; 1234];
    let req = Request::post("/api/v1/upload")
        .body(Body::from(payload))
        .unwrap();
    let (_, _, body) = send(app.clone(), req).await;
    assert_eq!(body, "1234");
    let req_size = b.m.points("http.server.request.body.size");
    assert_eq!(req_size.len(), 1);
    assert_eq!(req_size[0].unit, "By");
    assert_eq!(req_size[0].sum, 1234.0);
    assert_eq!(req_size[0].attr("http.route"), Some("/api/v1/upload"));
    let resp_size = b.m.points("http.server.response.body.size");
    assert_eq!(resp_size[0].sum, 4.0, "\"1234\" is four bytes");
    // the body-size metrics carry the attributes of the duration metric of the same side
    let duration = b.m.points(DURATION);
    assert_eq!(req_size[0].attrs, duration[0].attrs);
    assert_eq!(resp_size[0].attrs, duration[0].attrs);

    // a streamed response, counted chunk by chunk; no Content-Length involved
    let b = Both::new();
    let (tx, app) = streaming_app(b.layer().with_response_body_size(true));
    let resp = app.oneshot(get_req("/stream")).await.unwrap();
    for chunk in [&b"hello "[..], b"streaming ", b"world"] {
        tx.send(Ok(Bytes::copy_from_slice(chunk))).await.unwrap();
    }
    drop(tx);
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got.len(), 21);
    let p = b.m.points("http.server.response.body.size");
    assert_eq!(p[0].sum, 21.0);
}

#[tokio::test]
async fn series_stay_bounded_under_hostile_traffic() {
    let b = Both::new();
    let app = app().layer(b.layer().with_active_requests(true));
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..10_000u64 {
        let req = Request::get(format!("/scan/{i}/{:x}", rnd()))
            .header("host", format!("h{:x}.example", rnd()))
            .body(Body::empty())
            .unwrap();
        send(app.clone(), req).await;
    }
    for _ in 0..1_000 {
        let token: String = (0..8)
            .map(|_| char::from(b'A' + (rnd() % 26) as u8))
            .collect();
        let req = Request::builder()
            .method(token.as_str())
            .uri(format!("/api/v1/users/{}", rnd()))
            .header("host", format!("{:x}.evil", rnd()))
            .body(Body::empty())
            .unwrap();
        send(app.clone(), req).await;
    }
    let points = b.m.points(DURATION);
    let total: u64 = points.iter().map(|p| p.count).sum();
    assert_eq!(total, 11_000);
    // GET on the fallback, and _OTHER on a known route (405): two series, whatever was sent
    assert_eq!(
        points.len(),
        2,
        "series: {:?}",
        points.iter().map(|p| &p.attrs).collect::<Vec<_>>()
    );
    let methods: std::collections::BTreeSet<&str> = points
        .iter()
        .filter_map(|p| p.attr("http.request.method"))
        .collect();
    assert_eq!(methods, ["GET", "_OTHER"].into_iter().collect());
    let active = b.m.points("http.server.active_requests");
    assert_eq!(active.len(), 2, "GET and _OTHER");
    for p in &points {
        assert!(!p.attrs.contains_key("server.address"));
        assert!(!p.attrs.contains_key("url.path"));
    }
}

#[tokio::test]
async fn metrics_only_and_spans_only() {
    let b = Both::new();
    send(app().layer(b.layer().with_spans(false)), get_req("/health")).await;
    assert!(b.t.spans().is_empty(), "metrics only: no span");
    assert_eq!(b.m.points(DURATION).len(), 1);

    let b = Both::new();
    send(
        app().layer(b.layer().with_metrics(false)),
        get_req("/health"),
    )
    .await;
    assert_eq!(b.t.spans().len(), 1);
    assert!(b.m.points(DURATION).is_empty(), "spans only: no metric");
}

#[tokio::test]
async fn metrics_only_still_passes_the_callers_context_on() {
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    let handler = || async {
        opentelemetry::Context::current()
            .span()
            .span_context()
            .trace_id()
            .to_string()
    };
    let req = || {
        Request::get("/ctx")
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .body(Body::empty())
            .unwrap()
    };
    // with a propagator configured, the caller's context is current in the handler
    let b = Both::new();
    let app = Router::new().route("/ctx", get(handler)).layer(
        b.layer()
            .with_spans(false)
            .with_propagator(TraceContextPropagator::new()),
    );
    let (_, headers, body) = send(app, req()).await;
    assert_eq!(body, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(!headers.contains_key("traceresponse"), "no span of ours");
    assert_eq!(b.m.points(DURATION).len(), 1);

    // with none (OpenTelemetry without an SDK's propagator), nothing would propagate anyway
    let b = Both::new();
    let app = Router::new()
        .route("/ctx", get(handler))
        .layer(b.layer().with_spans(false));
    let (_, _, body) = send(app, req()).await;
    assert_eq!(body, opentelemetry::trace::TraceId::INVALID.to_string());
    assert_eq!(b.m.points(DURATION).len(), 1, "still measured");
}

#[tokio::test]
async fn labeler_attributes_are_added() {
    let b = Both::new();
    let app = Router::new()
        .route(
            "/t",
            get(|labeler: Labeler| async move {
                labeler.add(KeyValue::new("app.tier", "gold"));
                "t"
            }),
        )
        .layer(b.layer().with_labeler(true));
    send(app, get_req("/t")).await;
    let p = &b.m.points(DURATION)[0];
    assert_eq!(p.attr("app.tier"), Some("gold"));
    assert!(attr(&b.t.one(), "app.tier").is_none(), "metrics only");
}

#[tokio::test]
async fn server_address_on_metrics_only_when_opted_in() {
    let b = Both::new();
    let req = || {
        Request::get("/health")
            .header("host", "api.example.com:8443")
            .body(Body::empty())
            .unwrap()
    };
    send(app().layer(b.layer()), req()).await;
    let p = &b.m.points(DURATION)[0];
    assert!(!p.attrs.contains_key("server.address"));

    let b = Both::new();
    send(
        app().layer(b.layer().with_metrics_server_address(true)),
        req(),
    )
    .await;
    let p = &b.m.points(DURATION)[0];
    assert_eq!(p.attr("server.address"), Some("api.example.com"));
    assert_eq!(p.attr("server.port"), Some("8443"));

    // active requests carry the opted-in address too, and their one series returns to zero
    let b = Both::new();
    send(
        app().layer(
            b.layer()
                .with_metrics_server_address(true)
                .with_active_requests(true),
        ),
        req(),
    )
    .await;
    let active = b.m.points("http.server.active_requests");
    assert_eq!(
        active.len(),
        1,
        "one series: +1 and -1 with the same attributes"
    );
    assert_eq!(
        keys(&active[0]),
        BTreeSet::from([
            "http.request.method",
            "server.address",
            "server.port",
            "url.scheme"
        ])
    );
    assert_eq!(active[0].sum, 0.0);
}

#[tokio::test]
async fn route_from_slot_reaches_the_metrics() {
    let b = Both::new();
    let svc = b.layer().layer(app().layer(RecordRouteLayer::new()));
    send(svc, get_req("/api/v1/users/9")).await;
    let p = &b.m.points(DURATION)[0];
    assert_eq!(p.attr("http.route"), Some("/api/v1/users/{id}"));
}

#[tokio::test]
async fn client_disconnect_over_a_real_server_ends_span_and_active_request() {
    use tokio::io::AsyncWriteExt;
    let b = Both::new();
    let (started_tx, mut started_rx) = tokio::sync::mpsc::channel::<()>(1);
    let app = Router::new()
        .route(
            "/slow/{id}",
            get(move || {
                let started = started_tx.clone();
                async move {
                    let _ = started.send(()).await;
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }
            }),
        )
        .layer(b.layer().with_active_requests(true));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /slow/1 HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), started_rx.recv())
        .await
        .unwrap();
    assert_eq!(b.m.active(), 1.0);
    drop(conn); // the client goes away

    let mut spans = Vec::new();
    for _ in 0..200 {
        spans = b.t.spans();
        if !spans.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(spans.len(), 1, "span ended when hyper dropped the request");
    assert_eq!(
        attr_str(&spans[0], "error.type").as_deref(),
        Some("cancelled")
    );
    assert_eq!(b.m.active(), 0.0);
    let p = &b.m.points(DURATION)[0];
    assert_eq!(
        p.attr("error.type"),
        Some("cancelled"),
        "same error.type on the metric"
    );
    assert_eq!(p.attr("http.route"), Some("/slow/{id}"));
}

#[tokio::test]
async fn span_and_metric_carry_the_same_error_type() {
    let b = Both::new();
    let app = app().layer(b.layer());
    send(app, get_req("/api/v1/boom")).await;
    let span = b.t.one();
    let p = &b.m.points(DURATION)[0];
    assert_eq!(attr_str(&span, "error.type").as_deref(), Some("500"));
    assert_eq!(p.attr("error.type"), Some("500"));
}
