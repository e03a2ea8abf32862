//! When spans end: streaming bodies, dropped futures and bodies, body errors,
//! event streams, WebSocket upgrades, and a real server on 127.0.0.1 with a real client.

use crate::common;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::routing::get;
use axum::Router;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use opentelemetry::trace::{Status, TraceContextExt};
use tower::{Layer, Service, ServiceExt};
use tower_otel_http::server::SpanEnd;

#[tokio::test]
async fn streaming_body_ends_after_last_chunk() {
    let t = Telemetry::new();
    let (tx, app) = streaming_app(t.layer());
    let resp = app.oneshot(get_req("/stream")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(t.spans().is_empty(), "span ended at the response head");
    let mut body = resp.into_body();
    tx.send(Ok(Bytes::from_static(b"one"))).await.unwrap();
    let f = body.frame().await.unwrap().unwrap();
    assert_eq!(f.into_data().unwrap(), "one");
    assert!(t.spans().is_empty(), "span ended before the last chunk");
    tx.send(Ok(Bytes::from_static(b"two"))).await.unwrap();
    body.frame().await.unwrap().unwrap();
    assert!(t.spans().is_empty());
    drop(tx);
    assert!(body.frame().await.is_none());
    let span = t.one();
    assert_eq!(span.name, "GET /stream");
    assert_eq!(span.status, Status::Unset);
    assert!(attr(&span, "error.type").is_none());
    assert_eq!(attr_i64(&span, "http.response.status_code"), Some(200));
}

#[tokio::test]
async fn body_ending_without_trailing_poll_ends_span() {
    // A consumer that stops polling once `is_end_stream()` is true must still end the span.
    let t = Telemetry::new();
    let app = Router::new()
        .route("/full", get(|| async { "full body" }))
        .layer(t.layer());
    let resp = app.oneshot(get_req("/full")).await.unwrap();
    let mut body = resp.into_body();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "full body");
    assert!(http_body::Body::is_end_stream(&body));
    let span = t.one();
    assert!(attr(&span, "error.type").is_none());
    drop(body);
    assert_eq!(t.spans().len(), 1, "ended once");
}

#[tokio::test]
async fn dropped_body_ends_span_with_error_type_and_keeps_status() {
    let t = Telemetry::new();
    let (tx, app) = streaming_app(t.layer());
    let resp = app.oneshot(get_req("/stream")).await.unwrap();
    let mut body = resp.into_body();
    tx.send(Ok(Bytes::from_static(b"one"))).await.unwrap();
    body.frame().await.unwrap().unwrap();
    assert!(t.spans().is_empty());
    drop(body); // the client went away mid-body
    let span = t.one();
    assert_eq!(
        attr_str(&span, "error.type").as_deref(),
        Some(tower_otel_http::error::RESPONSE_BODY_DROPPED)
    );
    assert_eq!(attr_i64(&span, "http.response.status_code"), Some(200));
    assert!(is_error(&span));
}

#[tokio::test]
async fn body_error_ends_span_with_error_type() {
    let t = Telemetry::new();
    let (tx, app) = streaming_app(t.layer());
    let resp = app.oneshot(get_req("/stream")).await.unwrap();
    let mut body = resp.into_body();
    tx.send(Err(std::io::Error::other("disk on fire")))
        .await
        .unwrap();
    assert!(body.frame().await.unwrap().is_err());
    let span = t.one();
    assert_eq!(
        attr_str(&span, "error.type").as_deref(),
        Some(tower_otel_http::error::RESPONSE_BODY)
    );
    assert!(is_error(&span));
}

/// A future that never completes, to play a slow handler.
struct Never;
impl Future for Never {
    type Output = Result<http::Response<Body>, Infallible>;
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Pending
    }
}

#[tokio::test]
async fn dropped_future_ends_span_with_error_type() {
    let t = Telemetry::new();
    let mut svc = t
        .layer()
        .layer(tower::service_fn(|_req: Request<Body>| Never));
    let fut = svc.ready().await.unwrap().call(get_req("/slow"));
    // poll it once, as a server would, then the client goes away
    let timed_out = tokio::time::timeout(Duration::from_millis(20), fut).await;
    assert!(timed_out.is_err());
    let span = t.one();
    assert_eq!(
        attr_str(&span, "error.type").as_deref(),
        Some(tower_otel_http::error::CANCELLED)
    );
    assert!(is_error(&span));
    assert!(attr(&span, "http.response.status_code").is_none());
}

#[tokio::test]
async fn dropped_future_on_nested_route_keeps_the_route() {
    let t = Telemetry::new();
    let app = Router::new()
        .nest(
            "/api",
            Router::new().route(
                "/slow/{id}",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    "late"
                }),
            ),
        )
        .layer(t.layer());
    let r = tokio::time::timeout(
        Duration::from_millis(20),
        app.oneshot(get_req("/api/slow/1")),
    )
    .await;
    assert!(r.is_err());
    let span = t.one();
    assert_eq!(span.name, "GET /api/slow/{id}");
    assert_eq!(attr_str(&span, "error.type").as_deref(), Some("cancelled"));
}

#[tokio::test]
async fn panic_behind_catch_panic_is_a_500() {
    let t = Telemetry::new();
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
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(t.layer());
    let (status, _, _) = send(app, get_req("/panic")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let span = t.one();
    assert_eq!(span.name, "GET /panic");
    assert_eq!(attr_str(&span, "error.type").as_deref(), Some("500"));
    assert!(is_error(&span));
}

fn sse_app(t: &Telemetry, end: SpanEnd, body: Body) -> Router {
    Router::new()
        .route(
            "/events",
            once(body, &[("content-type", "text/event-stream")]),
        )
        .layer(t.layer().with_event_stream_end(end))
}

#[tokio::test]
async fn event_stream_ends_at_last_byte_by_default() {
    let t = Telemetry::new();
    let (tx, body) = channel_body();
    let resp = sse_app(&t, SpanEnd::LastByte, body)
        .oneshot(get_req("/events"))
        .await
        .unwrap();
    assert!(t.spans().is_empty());
    tx.send(Ok(Bytes::from_static(b"data: 1\n\n")))
        .await
        .unwrap();
    drop(tx);
    let collected = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(collected, "data: 1\n\n");
    let span = t.one();
    assert!(attr(&span, "error.type").is_none());
}

#[tokio::test]
async fn event_stream_can_end_at_head() {
    let t = Telemetry::new();
    let (tx, body) = channel_body();
    let resp = sse_app(&t, SpanEnd::Head, body)
        .oneshot(get_req("/events"))
        .await
        .unwrap();
    let span = t.one();
    assert_eq!(span.name, "GET /events");
    assert!(attr(&span, "error.type").is_none());
    // the stream goes on, unobserved, and dropping it records nothing more
    tx.send(Ok(Bytes::from_static(b"data: 1\n\n")))
        .await
        .unwrap();
    let mut body = resp.into_body();
    body.frame().await.unwrap().unwrap();
    drop(body);
    assert_eq!(t.spans().len(), 1);
}

/// Serve `app` on 127.0.0.1:0 with peer addresses; returns the address.
async fn serve(app: Router) -> std::net::SocketAddr {
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

#[tokio::test]
async fn real_server_continues_callers_trace() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let t = Telemetry::new();
    let app = Router::new()
        .nest(
            "/api",
            Router::new().route(
                "/items/{id}",
                get(|| async {
                    let cx = opentelemetry::Context::current();
                    cx.span().span_context().trace_id().to_string()
                }),
            ),
        )
        .layer(t.layer());
    let addr = serve(app).await;

    let client: Client<_, http_body_util::Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let caller_trace = "0af7651916cd43dd8448eb211c80319c";
    let caller_span = "b7ad6b7169203331";
    let req = Request::get(format!("http://{addr}/api/items/9"))
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, caller_trace, "handler saw the continued trace");

    // the server ends the span after the last byte was written; give it a moment
    let mut spans = Vec::new();
    for _ in 0..100 {
        spans = t.spans();
        if !spans.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(spans.len(), 1);
    let span = &spans[0];
    assert_eq!(span.name, "GET /api/items/{id}");
    assert_eq!(span.span_context.trace_id().to_string(), caller_trace);
    assert_eq!(span.parent_span_id.to_string(), caller_span);
    assert!(span.parent_span_is_remote);
    assert_eq!(
        attr_str(span, "network.peer.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        attr_str(span, "client.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        attr_str(span, "server.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(attr_i64(span, "server.port"), Some(i64::from(addr.port())));
    assert_eq!(
        attr_str(span, "network.protocol.version").as_deref(),
        Some("1.1")
    );
}

/// `network.peer.port` and (opted in) `client.port` are the caller's port as a real server
/// sees it through `ConnectInfo`; HTTP/1.0 is recorded as `1.0`.
#[tokio::test]
async fn real_server_records_the_peers_port_and_the_protocol_version() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let t = Telemetry::new();
    let app = Router::new()
        .route("/p", get(|| async { "p" }))
        .layer(t.layer().with_client_port(true));
    let addr = serve(app).await;
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let local = sock.local_addr().unwrap();
    sock.write_all(b"GET /p HTTP/1.0\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut resp))
        .await
        .unwrap()
        .unwrap();
    assert!(
        resp.starts_with(b"HTTP/1.0 200"),
        "{:?}",
        String::from_utf8_lossy(&resp)
    );
    let mut spans = Vec::new();
    for _ in 0..100 {
        spans = t.spans();
        if !spans.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let span = &spans[0];
    let port = i64::from(local.port());
    assert_eq!(attr_i64(span, "network.peer.port"), Some(port));
    assert_eq!(attr_i64(span, "client.port"), Some(port));
    assert_eq!(
        attr_str(span, "network.protocol.version").as_deref(),
        Some("1.0")
    );
    assert_eq!(
        attr_i64(span, "server.port"),
        Some(80),
        "Host without a port"
    );
}

#[tokio::test]
async fn websocket_upgrade_ends_span_at_the_head() {
    let t = Telemetry::new();
    let app = Router::new()
        .route(
            "/ws",
            get(|ws: WebSocketUpgrade| async move {
                ws.on_upgrade(|mut socket| async move {
                    while let Some(Ok(msg)) = socket.recv().await {
                        if socket.send(msg).await.is_err() {
                            break;
                        }
                    }
                })
            }),
        )
        .layer(t.layer());
    let addr = serve(app).await;
    let (mut ws, resp) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws")),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    // the socket is open and working...
    ws.send(tokio_tungstenite::tungstenite::Message::text("ping"))
        .await
        .unwrap();
    let echo = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echo.into_text().unwrap().as_str(), "ping");
    // ...and the request's span has already ended, cleanly
    let span = t.one();
    assert_eq!(span.name, "GET /ws");
    assert_eq!(attr_i64(&span, "http.response.status_code"), Some(101));
    assert!(attr(&span, "error.type").is_none());
    assert_eq!(span.status, Status::Unset);
    let _ = Message::Close(None);
    ws.close(None).await.unwrap();
}
