//! Every response shape over a real TCP server (`axum::serve`, hyper underneath): responses
//! that carry no body end at their head, a declared length ends the request once it went out,
//! and only real failures are errors.

use crate::common;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::routing::{any, get};
use axum::Router;
use common::*;
use http::{Request, StatusCode};
use http_body::{Frame, SizeHint};
use opentelemetry::trace::Status;
use opentelemetry_sdk::trace::SpanData;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::{Layer, ServiceExt};
use tower_otel_http::OtelServerLayer;

/// Telemetry with spans and every metric, on local providers.
struct T {
    t: Telemetry,
    m: Metrics,
}

impl T {
    fn new() -> Self {
        T {
            t: Telemetry::new(),
            m: Metrics::new(),
        }
    }

    fn layer(&self) -> OtelServerLayer {
        self.t
            .layer()
            .with_meter_provider(&self.m.provider)
            .with_active_requests(true)
            .with_response_body_size(true)
    }

    /// The one span of the request, waiting for the server to end it.
    async fn span(&self) -> SpanData {
        for _ in 0..200 {
            if !self.t.spans().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // a moment for a second (wrong) span to show up
        tokio::time::sleep(Duration::from_millis(30)).await;
        self.t.one()
    }

    /// A successful request: status unset, no `error.type` on the span or the metric, one
    /// measurement with the span's exact duration, no active request left.
    async fn assert_success(&self, status: u16) -> SpanData {
        let span = self.span().await;
        assert_eq!(span.status, Status::Unset, "{span:?}");
        assert_eq!(attr(&span, "error.type"), None, "{span:?}");
        assert_eq!(
            attr_i64(&span, "http.response.status_code"),
            Some(i64::from(status))
        );
        let points = self.m.points(DURATION);
        assert_eq!(points.len(), 1, "{points:?}");
        assert_eq!(points[0].attr("error.type"), None, "no error series");
        assert_eq!(points[0].count, 1);
        let span_seconds = span
            .end_time
            .duration_since(span.start_time)
            .unwrap()
            .as_secs_f64();
        assert_eq!(points[0].sum, span_seconds, "metric == span duration");
        assert_eq!(self.m.active(), 0.0, "active requests back to 0");
        span
    }
}

/// Serve a tower service (its response body boxed for axum) on 127.0.0.1:0.
async fn serve_svc<S, B>(svc: S) -> std::net::SocketAddr
where
    S: tower::Service<Request<Body>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let svc = svc.map_response(|r| r.map(Body::new));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, axum::ServiceExt::into_make_service(svc))
            .await
            .unwrap();
    });
    addr
}

async fn serve(app: Router) -> std::net::SocketAddr {
    serve_svc(app).await
}

/// Send raw HTTP/1.1 and read until the server closes or `until` is in what was read.
async fn raw(addr: std::net::SocketAddr, request: &str, until: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = s.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&out).contains(until) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn head_request_is_complete_at_its_head_router_layer() {
    let t = T::new();
    let app = Router::new()
        .route("/health", get(|| async { "a body hyper will not send" }))
        .layer(t.layer());
    let addr = serve(app).await;
    let resp = raw(
        addr,
        "HEAD /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        "\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let span = t.assert_success(200).await;
    assert_eq!(span.name, "HEAD /health");
}

#[tokio::test]
async fn head_request_is_complete_at_its_head_around_the_router() {
    let t = T::new();
    let app = Router::new()
        .route("/health", get(|| async { "a body hyper will not send" }))
        .layer(tower_otel_http::route::RecordRouteLayer::new());
    let addr = serve_svc(t.layer().layer(app)).await;
    let resp = raw(
        addr,
        "HEAD /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        "\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let span = t.assert_success(200).await;
    assert_eq!(span.name, "HEAD /health");
}

#[tokio::test]
async fn head_request_is_complete_at_its_head_plain_service() {
    // a hyper/tower service that is not an axum router answers HEAD with its usual body;
    // hyper drops it unsent
    let t = T::new();
    let svc = t
        .layer()
        .layer(tower::service_fn(|_req: Request<Body>| async {
            Ok::<_, Infallible>(http::Response::new(Body::from(
                "a body hyper will not send",
            )))
        }));
    let addr = serve_svc(svc).await;
    let resp = raw(
        addr,
        "HEAD /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        "\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let span = t.assert_success(200).await;
    assert_eq!(span.name, "HEAD");
}

#[tokio::test]
async fn no_content_and_not_modified_with_a_body_are_complete_at_their_head() {
    for status in [StatusCode::NO_CONTENT, StatusCode::NOT_MODIFIED] {
        let t = T::new();
        // a handler that gives a body by mistake: hyper drops it unsent
        let app = Router::new()
            .route("/x", get(move || async move { (status, "oops, a body") }))
            .layer(t.layer());
        let addr = serve(app).await;
        let resp = raw(
            addr,
            "GET /x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            "\r\n\r\n",
        )
        .await;
        assert!(
            resp.starts_with(&format!("HTTP/1.1 {}", status.as_u16())),
            "{resp}"
        );
        t.assert_success(status.as_u16()).await;
    }
}

#[tokio::test]
async fn successful_connect_is_complete_at_its_head() {
    let t = T::new();
    let svc = t
        .layer()
        .layer(tower::service_fn(|req: Request<Body>| async move {
            assert_eq!(req.method(), http::Method::CONNECT);
            Ok::<_, Infallible>(http::Response::new(Body::from("tunnel bytes")))
        }));
    let addr = serve_svc(svc).await;
    let resp = raw(
        addr,
        "CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n",
        "\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let span = t.assert_success(200).await;
    assert_eq!(span.name, "CONNECT");
}

#[tokio::test]
async fn informational_final_response_is_complete_at_its_head() {
    // hyper turns a final 1xx other than 101 into a 500 on the wire (it cannot be a final
    // response); the layer records what the handler returned, which only `oneshot` shows
    let t = T::new();
    let app = Router::new()
        .route(
            "/early",
            get(|| async { (StatusCode::EARLY_HINTS, "body") }),
        )
        .layer(t.layer());
    let resp = app.clone().oneshot(get_req("/early")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::EARLY_HINTS);
    // ended at the head, before anything of the body was read
    let span = t.t.one();
    assert_eq!(span.status, Status::Unset);
    assert_eq!(attr(&span, "error.type"), None);
    drop(resp);
    t.assert_success(103).await;
    // over a real server: what the caller gets from hyper
    let addr = serve(app).await;
    let wire = raw(
        addr,
        "GET /early HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        "\r\n\r\n",
    )
    .await;
    assert!(wire.starts_with("HTTP/1.1 500"), "{wire}");
}

/// A body that sends its data and then never says it ended (and never ends).
struct Endless {
    data: Option<Bytes>,
    exact: bool,
}

impl http_body::Body for Endless {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.data.take() {
            Some(d) => Poll::Ready(Some(Ok(Frame::data(d)))),
            None => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact(5)
        } else {
            SizeHint::default()
        }
    }
}

#[tokio::test]
async fn declared_length_ends_the_request_once_sent() {
    // an exact size hint, and a Content-Length header
    for exact in [true, false] {
        let t = T::new();
        let app = Router::new()
            .route(
                "/file",
                get(move || async move {
                    let mut resp = http::Response::new(Body::new(Endless {
                        data: Some(Bytes::from_static(b"hello")),
                        exact,
                    }));
                    if !exact {
                        resp.headers_mut()
                            .insert(http::header::CONTENT_LENGTH, "5".parse().unwrap());
                    }
                    resp
                }),
            )
            .layer(t.layer());
        let addr = serve(app).await;
        let resp = raw(
            addr,
            "GET /file HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            "hello",
        )
        .await;
        assert!(resp.ends_with("hello"), "{resp}");
        t.assert_success(200).await;
        let points = t.m.points("http.server.response.body.size");
        assert_eq!(points[0].sum, 5.0, "exact={exact}");
    }
}

#[tokio::test]
async fn body_dropped_before_its_declared_end_is_an_error() {
    let t = T::new();
    let (tx, body) = channel_body();
    let app = Router::new()
        .route("/file", once(body, &[("content-length", "10")]))
        .layer(t.layer());
    let addr = serve(app).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /file HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    tx.send(Ok(Bytes::from_static(b"hello"))).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).ends_with("hello") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    drop(s); // the client goes away with 5 of 10 bytes
    let span = t.span().await;
    drop(tx);
    assert_eq!(
        attr_str(&span, "error.type").as_deref(),
        Some(tower_otel_http::error::RESPONSE_BODY_DROPPED)
    );
    assert_eq!(attr_i64(&span, "http.response.status_code"), Some(200));
    assert!(is_error(&span));
    assert_eq!(t.m.active(), 0.0);
}

#[tokio::test]
async fn client_gone_before_the_head_is_cancelled() {
    let t = T::new();
    let app = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                "late"
            }),
        )
        .layer(t.layer());
    let addr = serve(app).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(s);
    let span = t.span().await;
    assert_eq!(
        attr_str(&span, "error.type").as_deref(),
        Some(tower_otel_http::error::CANCELLED)
    );
    assert_eq!(attr(&span, "http.response.status_code"), None);
    assert_eq!(t.m.active(), 0.0);
}

#[tokio::test]
async fn a_panic_is_told_apart_from_a_client_going_away() {
    let t = T::new();
    let app = Router::new()
        .route(
            "/panic",
            get(|| async {
                #[allow(unreachable_code)]
                {
                    panic!("handler bug");
                    "never"
                }
            }),
        )
        .layer(t.layer());
    // no CatchPanic: the panic unwinds through the layer and ends the connection
    let addr = serve(app).await;
    let resp = raw(
        addr,
        "GET /panic HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        "\r\n\r\n",
    )
    .await;
    assert!(resp.is_empty(), "the connection died: {resp}");
    let span = t.span().await;
    assert_eq!(
        attr_str(&span, "error.type").as_deref(),
        Some(tower_otel_http::error::PANIC)
    );
    assert!(is_error(&span));
    assert_eq!(t.m.active(), 0.0);
    let points = t.m.points(DURATION);
    assert_eq!(points[0].attr("error.type"), Some("panic"));
}

#[tokio::test]
async fn tracestate_split_over_header_fields_is_combined_in_order() {
    let t = T::new();
    let app = Router::new()
        .route("/x", get(|| async { "ok" }))
        .layer(t.layer());
    let addr = serve(app).await;
    let resp = raw(
        addr,
        "GET /x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
         traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
         tracestate: a=1,b=2\r\ntracestate: c=3\r\n\r\n",
        "ok",
    )
    .await;
    assert!(resp.ends_with("ok"), "{resp}");
    let span = t.assert_success(200).await;
    assert_eq!(span.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert_eq!(span.span_context.trace_state().header(), "a=1,b=2,c=3");
}

#[tokio::test]
async fn ordinary_get_over_a_real_server_is_a_success() {
    // the reference point for the shapes above: a plain body read to its end
    let t = T::new();
    let app = Router::new()
        .route("/x", any(|| async { "plain" }))
        .layer(t.layer());
    let addr = serve(app).await;
    let resp = raw(
        addr,
        "GET /x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        "plain",
    )
    .await;
    assert!(resp.ends_with("plain"));
    t.assert_success(200).await;
}

#[tokio::test]
async fn body_ending_short_of_its_declared_length_is_an_error() {
    let t = T::new();
    let (tx, body) = channel_body();
    let app = Router::new()
        .route("/file", once(body, &[("content-length", "10")]))
        .layer(t.layer());
    let addr = serve(app).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /file HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    tx.send(Ok(Bytes::from_static(b"hello"))).await.unwrap();
    drop(tx); // the body ends after 5 of its 10 declared bytes: the response is truncated
    let span = t.span().await;
    assert_eq!(
        attr_str(&span, "error.type").as_deref(),
        Some(tower_otel_http::error::RESPONSE_BODY)
    );
    assert!(is_error(&span));
    assert_eq!(t.m.active(), 0.0);
    drop(s);
}
