//! Bugs found by the hardening pass, each pinned by the test that showed it (they failed before
//! the fix): log ids after a shutdown, trace context across reqwest redirects, active requests
//! after a panicking hook, IPv6 entries of the propagation allow-list.
#![cfg(feature = "reqwest")]

use crate::common;
use crate::hardening;

use std::sync::{Arc, Mutex};

use axum::routing::get;
use axum::Router;
use common::*;
use hardening::*;
use http::HeaderMap;
use tower_otel_http::logs::JsonFormat;
use tower_otel_http::OtelLayer;
use tracing_subscriber::layer::SubscriberExt;

/// Was: with a tracer provider passed in (`with_tracer_provider`) that has been shut down, every
/// request's log lines carry `trace_id` 00000000000000000000000000000000 and `span_id`
/// 0000000000000000: all such lines correlate with one bogus trace.
///
/// After shutdown the SDK's tracer hands out spans with an invalid (all-zero) span
/// context. `otel::RequestTracer::Fixed` returns that context as the request's span
/// (`Some(cx)`; only the `Global` path checks `is_valid()` and treats it as "no span"), so
/// `server::start::log_span` calls `logs::request_span` with it, which formats the zero ids
/// without checking `sc.is_valid()` (unlike `logs.rs`'s `CorrelationIds` lookup, which does).
/// The response header is not affected (`response_header::apply` checks validity).
/// Expected: no ids on the line, as for a request that records no span.
#[tokio::test]
async fn logs_after_the_providers_shutdown_carry_no_all_zero_ids() {
    let t = Telemetry::new();
    let buf = Buf::default();
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .event_format(JsonFormat::new())
            .with_writer(buf.clone()),
    );
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = Router::new()
        .route(
            "/x",
            get(|| async {
                tracing::info!("in the handler");
                "x"
            }),
        )
        .layer(t.layer());
    t.provider.shutdown().unwrap();
    let (status, _, _) = send(app, get_req("/x")).await;
    assert_eq!(status, 200);
    let out = String::from_utf8(buf.bytes()).unwrap();
    let line = out
        .lines()
        .find(|l| l.contains("in the handler"))
        .expect("the handler logged");
    assert!(
        !line.contains("00000000000000000000000000000000"),
        "an all-zero trace id on the log line: {line}"
    );
}

/// Was (security): through the reqwest middleware with reqwest's default redirect policy, an
/// allowed host that redirects to a third party got the trace context sent on to it: reqwest
/// follows redirects inside one middleware call, re-sending the headers. The crate cannot see
/// those hops; the documented setup (`with_propagation_hosts`, the reqwest middleware) is a
/// redirect policy that stops at hosts not on the list. This test builds its client that way:
/// the third party is never contacted with the context (it is not contacted at all).
#[tokio::test]
async fn a_redirect_followed_by_reqwest_does_not_carry_trace_context_to_another_host() {
    let t = Telemetry::new();
    let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let record = seen.clone();
    let third_party = serve(Router::new().route(
        "/landing",
        get(move |headers: HeaderMap| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(headers);
                "landed"
            }
        }),
    ))
    .await;
    let port = third_party.port();
    let allowed = serve(Router::new().route(
        "/go",
        get(move || async move {
            axum::response::Redirect::temporary(&format!(
                "http://tracker.third-party.example:{port}/landing"
            ))
        }),
    ))
    .await;
    // the documented setup: follow redirects only to hosts on the propagation list
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        if attempt.url().host_str() == Some("127.0.0.1") {
            attempt.follow()
        } else {
            attempt.stop()
        }
    });
    let client = reqwest_middleware::ClientBuilder::new(
        reqwest::Client::builder()
            .resolve("tracker.third-party.example", third_party)
            .redirect(policy)
            .build()
            .unwrap(),
    )
    .with(
        OtelLayer::client()
            .with_tracer_provider(&t.provider)
            .with_propagation_hosts(["127.0.0.1"]),
    )
    .build();
    let resp = client
        .get(format!("http://{allowed}/go"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        307,
        "the redirect to a third party is not followed"
    );
    let seen = seen.lock().unwrap().clone();
    assert!(seen.is_empty(), "the third party was contacted: {seen:?}");
}

/// Was: a panic in a user hook that runs while the request starts (`with_request_attributes`,
/// `with_span_name`, `with_public_endpoint`) drives `http.server.active_requests` (and
/// `http.client.active_requests`) below zero, for good: each such panic takes one more away.
///
/// `server::start::start` (and `client::start::start`) builds the `Record` and sets its
/// `measure` before `start_span` runs the hooks, but counts the request as active only at the
/// end, in `Record::begin`. When a hook panics, the unwinding drops the `Record` that was never
/// begun; its `Drop` ends it (`error.type = panic`), and `Measure::record` subtracts the active
/// request that was never added. Expected: the gauge back at 0 (the `-1` must only follow a
/// `+1`: begin before running user code, or mark the record as not begun).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_request_hook_leaves_active_requests_at_zero() {
    let t = Telemetry::new();
    let m = Metrics::new();
    let app = Router::new()
        .route("/x", get(|| async { "x" }))
        .layer(
            t.layer()
                .with_meter_provider(&m.provider)
                .with_active_requests(true)
                .with_request_attributes(|req, attrs| {
                    // a hook with a bug: indexing a header that is not there panics
                    let tenant = req.headers["x-tenant"].to_str().unwrap_or("?").to_owned();
                    attrs.push(opentelemetry::KeyValue::new("app.tenant", tenant));
                }),
        )
        .layer(tower_http::catch_panic::CatchPanicLayer::new());
    let addr = serve(app).await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let resp = client.get(format!("http://{addr}/x")).send().await.unwrap();
        assert_eq!(resp.status(), 500, "CatchPanic answered");
    }
    let resp = client
        .get(format!("http://{addr}/x"))
        .header("x-tenant", "acme")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "x");
    assert_eq!(
        m.active(),
        0.0,
        "http.server.active_requests after 3 panicking hooks and 1 good request"
    );
}

/// The same bug on the client side: `http.client.active_requests` goes below zero when the
/// client layer's request hook panics.
#[tokio::test]
async fn a_panicking_client_request_hook_leaves_active_requests_at_zero() {
    use tower::{Layer, ServiceExt};
    let t = Telemetry::new();
    let m = Metrics::new();
    let client = OtelLayer::client()
        .with_tracer_provider(&t.provider)
        .with_meter_provider(&m.provider)
        .with_active_requests(true)
        .with_request_attributes(|req, _| {
            assert!(req.headers.contains_key("x-tenant"), "hook bug");
        })
        .layer(tower::service_fn(|_req: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(String::from("ok")))
        }));
    let call = tokio::spawn(
        client.clone().oneshot(
            http::Request::get("http://api.internal/x")
                .body(())
                .unwrap(),
        ),
    );
    assert!(call.await.unwrap_err().is_panic());
    let active: f64 = m
        .points("http.client.active_requests")
        .iter()
        .map(|p| p.sum)
        .sum();
    assert_eq!(
        active, 0.0,
        "http.client.active_requests after a panicking hook"
    );
}

/// Was (minor, failed closed): `with_propagation_hosts` says an entry may be "an IP address",
/// but an IPv6 address written as such (`::1`, `2001:db8::1`) never matches, so trace context
/// is never sent to it; only the bracketed form (`[::1]`) does.
///
/// `client::start::propagates` matches the patterns against `Uri::host()`, which keeps
/// the brackets of an IPv6 literal (`[::1]`), while `HostPattern::matches` compares the text
/// as given. Expected: `::1` and `[::1]` both match a request to `http://[::1]:port/`.
#[tokio::test]
async fn an_ipv6_address_in_the_propagation_hosts_matches_requests_to_it() {
    use tower::{Layer, ServiceExt};
    let sent_headers = |pattern: &'static str| async move {
        let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
        let record = seen.clone();
        let inner = tower::service_fn(move |req: http::Request<()>| {
            record.lock().unwrap().push(req.headers().clone());
            async { Ok::<_, std::convert::Infallible>(http::Response::new(String::new())) }
        });
        let t = Telemetry::new();
        let client = OtelLayer::client()
            .with_tracer_provider(&t.provider)
            .with_propagation_hosts([pattern])
            .layer(inner);
        client
            .oneshot(http::Request::get("http://[::1]:8080/x").body(()).unwrap())
            .await
            .unwrap();
        let headers = seen.lock().unwrap()[0].clone();
        headers
    };
    // the bracketed form works
    assert!(sent_headers("[::1]").await.contains_key("traceparent"));
    // the address itself does not
    assert!(
        sent_headers("::1").await.contains_key("traceparent"),
        "no trace context to ::1, which is on the list"
    );
}

/// A response body that, when polled, notes the trace id of the current OpenTelemetry context.
struct ContextProbe {
    seen: Arc<Mutex<Option<String>>>,
    done: bool,
}

impl http_body::Body for ContextProbe {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use opentelemetry::trace::TraceContextExt;
        if self.done {
            return std::task::Poll::Ready(None);
        }
        self.done = true;
        let cx = opentelemetry::Context::current();
        let sc = cx.span().span_context().clone();
        *self.seen.lock().unwrap() = sc.is_valid().then(|| sc.trace_id().to_string());
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data("body".into()))))
    }
}

/// A request passed through unrecorded (no spans, no metrics) with a propagator given: the
/// caller's context is current in the handler *and* while the response body is polled, as it
/// is for a recorded request.
#[tokio::test]
async fn the_callers_context_is_current_in_a_passed_through_body() {
    use tower::{Layer, ServiceExt};
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    let svc = OtelLayer::server()
        .with_tracer_provider(&opentelemetry::trace::noop::NoopTracerProvider::new())
        .with_metrics(false)
        .with_propagator(tower_otel_http::propagation::W3cPropagator::new())
        .layer(tower::service_fn(move |_req: http::Request<()>| {
            let seen = s.clone();
            async move {
                Ok::<_, std::convert::Infallible>(http::Response::new(ContextProbe {
                    seen,
                    done: false,
                }))
            }
        }));
    let req = http::Request::get("/x")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(())
        .unwrap();
    let response = svc.oneshot(req).await.unwrap();
    use http_body_util::BodyExt;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"body");
    assert_eq!(
        seen.lock().unwrap().as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736"),
        "the caller's context while the body is polled"
    );
}

/// A response body that goes on after its request ended at the head — an event stream with
/// `SpanEnd::Head` — is still polled in the request's context.
#[tokio::test]
async fn a_body_polled_after_its_request_ended_at_the_head_runs_in_its_context() {
    use tower::{Layer, ServiceExt};
    let t = Telemetry::new();
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    let svc = t
        .layer()
        .with_event_stream_end(tower_otel_http::server::SpanEnd::Head)
        .layer(tower::service_fn(move |_req: http::Request<()>| {
            let seen = s.clone();
            async move {
                let mut r = http::Response::new(ContextProbe { seen, done: false });
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/event-stream"),
                );
                Ok::<_, std::convert::Infallible>(r)
            }
        }));
    let req = http::Request::get("/events").body(()).unwrap();
    let response = svc.oneshot(req).await.unwrap();
    let span = t.one();
    use http_body_util::BodyExt;
    response.into_body().collect().await.unwrap();
    assert_eq!(
        seen.lock().unwrap().clone(),
        Some(span.span_context.trace_id().to_string()),
        "the span's context while the body is polled after the span ended"
    );
}
