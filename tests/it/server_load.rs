//! A bounded concurrent load through a real server on 127.0.0.1: every request is traced and
//! counted exactly once, and nothing is left in flight.

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::{get, post};
use axum::Router;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const REQUESTS: usize = 2_000;
const CONCURRENCY: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_each_traced_and_counted_once() {
    let t = Telemetry::new();
    let m = Metrics::new();
    let users = Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .route("/echo", post(|body: Bytes| async move { body }));
    let app = Router::new()
        .nest("/api", Router::new().nest("/v1", users))
        .layer(
            t.layer()
                .with_meter_provider(&m.provider)
                .with_all_metrics()
                .with_counted_request_bodies(),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let work = async {
        let mut handles = Vec::new();
        for worker in 0..CONCURRENCY {
            let client = client.clone();
            handles.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                for i in (worker..REQUESTS).step_by(CONCURRENCY) {
                    let req = if i % 2 == 0 {
                        http::Request::get(format!("http://{addr}/api/v1/users/{i}"))
                            .body(Full::default())
                            .unwrap()
                    } else {
                        http::Request::post(format!("http://{addr}/api/v1/echo"))
                            .body(Full::new(Bytes::from(vec![b'x'; 100])))
                            .unwrap()
                    };
                    let resp = client.request(req).await.unwrap();
                    assert!(resp.status().is_success());
                    let tr = resp.headers()["traceresponse"].to_str().unwrap().to_owned();
                    resp.into_body().collect().await.unwrap();
                    seen.push(tr);
                }
                seen
            }));
        }
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.unwrap());
        }
        all
    };
    let headers = tokio::time::timeout(Duration::from_secs(120), work)
        .await
        .expect("load finished in time");
    assert_eq!(headers.len(), REQUESTS);

    // spans end after the last byte is written: wait for the stragglers
    let mut spans = Vec::new();
    for _ in 0..500 {
        spans = t.spans();
        if spans.len() >= REQUESTS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(spans.len(), REQUESTS, "one span per request");
    let span_ids: HashSet<String> = spans
        .iter()
        .map(|s| format!("{}-{}", s.span_context.trace_id(), s.span_context.span_id()))
        .collect();
    assert_eq!(span_ids.len(), REQUESTS, "distinct spans");
    for h in &headers {
        assert!(
            span_ids.contains(&h[3..52]),
            "traceresponse {h} matches a span"
        );
    }
    let names: HashSet<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
    assert_eq!(
        names,
        HashSet::from(["GET /api/v1/users/{id}", "POST /api/v1/echo"])
    );
    let total: u64 = m.points(DURATION).iter().map(|p| p.count).sum();
    assert_eq!(total, REQUESTS as u64, "one measurement per request");
    assert_eq!(m.active(), 0.0, "nothing left in flight");
    let req_bytes: f64 = m
        .points("http.server.request.body.size")
        .iter()
        .map(|p| p.sum)
        .sum();
    assert_eq!(req_bytes, (REQUESTS / 2 * 100) as f64);
}
