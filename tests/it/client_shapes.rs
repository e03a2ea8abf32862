//! The client's response shapes over real loopback TCP, through hyper-util's client (tower
//! layer) and reqwest (middleware), against a raw HTTP/1.1 server that writes exact bytes:
//! a response that carries no body — to `HEAD`, `204`, `304` — ends the
//! span at its head, with no error and whether or not the caller touches the body; a body read
//! up to its `Content-Length` ends the span without a further poll; a body cut short of its
//! `Content-Length` is an error, the same `error.type` through both clients.
#![cfg(feature = "reqwest")]

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::SpanKind;
use opentelemetry_sdk::trace::SpanData;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::{Layer, ServiceExt};
use tower_otel_http::{error, OtelLayer};

/// A raw server: the answer to each request is chosen by its path; the connection stays open
/// afterwards (keep-alive), except after `/short`, whose body ends short of its declared
/// length when the server closes the connection.
async fn raw_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // one request head at a time (the tests send no request bodies)
                    let mut chunk = [0u8; 1024];
                    let n = match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                        let answer: &[u8] = match path.as_str() {
                            // to HEAD: the length the body would have, no body
                            "/head" => b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n",
                            "/no-content" => b"HTTP/1.1 204 No Content\r\n\r\n",
                            "/not-modified" => {
                                b"HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\ncontent-length: 11\r\n\r\n"
                            }
                            "/length" => b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello world",
                            "/short" => b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello",
                            _ => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
                        };
                        if sock.write_all(answer).await.is_err() {
                            return;
                        }
                        if path == "/short" {
                            return; // closes the connection mid-body
                        }
                    }
                }
            });
        }
    });
    addr
}

/// The finished client spans, once `n` have ended (or after a second).
async fn client_spans(t: &Telemetry, n: usize) -> Vec<SpanData> {
    for _ in 0..100 {
        let s: Vec<_> = t
            .spans()
            .into_iter()
            .filter(|s| s.span_kind == SpanKind::Client)
            .collect();
        if s.len() >= n {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t.spans()
        .into_iter()
        .filter(|s| s.span_kind == SpanKind::Client)
        .collect()
}

fn assert_success(span: &SpanData, status: i64) {
    assert!(!is_error(span), "{:?}: {:?}", span.name, span.status);
    assert_eq!(attr_str(span, "error.type"), None, "{:?}", span.name);
    assert_eq!(attr_i64(span, "http.response.status_code"), Some(status));
}

fn hyper_client(
    t: &Telemetry,
) -> tower_otel_http::OtelClient<
    Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
> {
    OtelLayer::client()
        .with_tracer_provider(&t.provider)
        .layer(Client::builder(TokioExecutor::new()).build_http())
}

fn reqwest_client(t: &Telemetry) -> reqwest_middleware::ClientWithMiddleware {
    reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(OtelLayer::client().with_tracer_provider(&t.provider))
        .build()
}

const BODILESS: [(Method, &str, u16); 3] = [
    (Method::HEAD, "/head", 200),
    (Method::GET, "/no-content", 204),
    (Method::GET, "/not-modified", 304),
];

#[tokio::test]
async fn hyper_responses_without_a_body_end_at_their_head() {
    let addr = raw_server().await;
    for (method, path, status) in BODILESS {
        let t = Telemetry::new();
        let req = Request::builder()
            .method(method.clone())
            .uri(format!("http://{addr}{path}"))
            .body(Full::default())
            .unwrap();
        let resp = hyper_client(&t).oneshot(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), status);
        // the caller holds the response and never polls its body: the span has ended anyway
        let spans = client_spans(&t, 1).await;
        assert_eq!(spans.len(), 1, "{method} {path}: ended at the head");
        assert_success(&spans[0], i64::from(status));
        drop(resp);
        assert_eq!(client_spans(&t, 1).await.len(), 1, "ended once");
    }
}

#[tokio::test]
async fn reqwest_responses_without_a_body_end_at_their_head() {
    let addr = raw_server().await;
    for (method, path, status) in BODILESS {
        let t = Telemetry::new();
        let resp = reqwest_client(&t)
            .request(method.clone(), format!("http://{addr}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status);
        let spans = client_spans(&t, 1).await;
        assert_eq!(spans.len(), 1, "{method} {path}: ended at the head");
        assert_success(&spans[0], i64::from(status));
        assert!(resp.bytes().await.unwrap().is_empty());
        assert_eq!(client_spans(&t, 1).await.len(), 1, "ended once");
    }
}

#[tokio::test]
async fn hyper_body_read_up_to_its_length_ends_the_span_without_a_further_poll() {
    let addr = raw_server().await;
    let t = Telemetry::new();
    let req = Request::get(format!("http://{addr}/length"))
        .body(Full::default())
        .unwrap();
    let resp = hyper_client(&t).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(t.spans().is_empty(), "the body is not read yet");
    let mut body = resp.into_body();
    let mut read = Vec::new();
    // read frames until the declared 11 bytes are in, then stop polling (the body is kept)
    while read.len() < 11 {
        let frame = body.frame().await.unwrap().unwrap();
        read.extend_from_slice(frame.data_ref().unwrap());
    }
    assert_eq!(read, b"hello world");
    let spans = client_spans(&t, 1).await;
    assert_eq!(spans.len(), 1, "ended at the last declared byte");
    assert_success(&spans[0], 200);
    drop(body);
}

#[tokio::test]
async fn reqwest_body_read_up_to_its_length_ends_the_span_without_a_further_poll() {
    let addr = raw_server().await;
    let t = Telemetry::new();
    let mut resp = reqwest_client(&t)
        .get(format!("http://{addr}/length"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.content_length(), Some(11));
    assert!(t.spans().is_empty(), "the body is not read yet");
    let mut read = Vec::new();
    while read.len() < 11 {
        read.extend_from_slice(&resp.chunk().await.unwrap().unwrap());
    }
    assert_eq!(read, b"hello world");
    let spans = client_spans(&t, 1).await;
    assert_eq!(spans.len(), 1, "ended at the last declared byte");
    assert_success(&spans[0], 200);
    drop(resp);
}

/// A body cut short of its declared length is an error; both clients see the same failure on
/// the wire (the connection closed mid-body) and record the same `error.type`.
#[tokio::test]
async fn a_body_cut_short_is_the_same_error_through_both_clients() {
    let addr = raw_server().await;

    let t = Telemetry::new();
    let req = Request::get(format!("http://{addr}/short"))
        .body(Full::default())
        .unwrap();
    let resp = hyper_client(&t).oneshot(req).await.unwrap();
    assert!(resp.into_body().collect().await.is_err());
    let hyper_span = client_spans(&t, 1).await.remove(0);

    let t = Telemetry::new();
    let resp = reqwest_client(&t)
        .get(format!("http://{addr}/short"))
        .send()
        .await
        .unwrap();
    assert!(resp.bytes().await.is_err());
    let reqwest_span = client_spans(&t, 1).await.remove(0);

    for span in [&hyper_span, &reqwest_span] {
        assert!(is_error(span), "{:?}", span.status);
        assert_eq!(
            attr_str(span, "error.type").as_deref(),
            Some(error::CONNECTION_CLOSED)
        );
        assert_eq!(attr_i64(span, "http.response.status_code"), Some(200));
    }
}
