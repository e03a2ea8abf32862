//! A bounded soak through the full stack, run only with `SOAK=1` (`.ci/soak` runs it in release
//! mode; without it the test returns at once, saying so).
//!
//! A plain hyper-util client (no layer) sends 1 000 000 requests at concurrency 64 over keep-alive
//! connections to a front axum server (server layer, every metric), whose handler calls a
//! downstream axum server (server layer, every metric) through the client layer over a
//! hyper-util client. Every layer samples everything, and spans go through a simple processor to
//! an exporter that cannot drop them and only updates atomics: counts per kind, and for the
//! parent links order-independent fingerprints (wrapping sums and xors of mixed span ids) of
//! the multisets {client span ids} = {downstream server spans' parents} and {front server span
//! ids} = {client spans' parents}, so that memory stays flat however long the soak. The soak
//! checks: no error response, one span per request and side, every client span the parent of
//! exactly one downstream server span and the child of exactly one front server span, nothing
//! left in flight on any side, one measurement per request, and resident memory growth under
//! 256 MiB after a warm-up (a leak of 300 bytes per request would exceed it).

#[path = "it/common/mod.rs"]
mod common;
#[path = "it/hardening/mod.rs"]
mod hardening;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::get;
use axum::Router;
use common::*;
use hardening::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::{SpanId, SpanKind};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use tower::{Layer, ServiceExt};
use tower_otel_http::OtelLayer;

const WARM_UP: usize = 20_000;
const REQUESTS: usize = 1_000_000;
const CONCURRENCY: usize = 64;
const RSS_BOUND: u64 = 256 * MIB;

fn id(s: SpanId) -> u64 {
    u64::from_be_bytes(s.to_bytes())
}

/// splitmix64's finaliser: spreads ids so that sums and xors of different multisets differ.
fn mix(mut z: u64, salt: u64) -> u64 {
    z = z.wrapping_add(salt);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// An order-independent fingerprint of a multiset of span ids: a wrapping sum and an xor of
/// two different mixes of each id.
#[derive(Debug, Default)]
struct Fingerprint {
    sum: AtomicU64,
    xor: AtomicU64,
}

impl Fingerprint {
    fn add(&self, id: u64) {
        self.sum
            .fetch_add(mix(id, 0x9e37_79b9_7f4a_7c15), Ordering::Relaxed);
        self.xor
            .fetch_xor(mix(id, 0x6a09_e667_f3bc_c908), Ordering::Relaxed);
    }

    fn get(&self) -> (u64, u64) {
        (
            self.sum.load(Ordering::Relaxed),
            self.xor.load(Ordering::Relaxed),
        )
    }
}

/// Counts spans per kind and route, and fingerprints the ids the parent checks need.
#[derive(Debug, Default)]
struct Counts {
    front: AtomicU64,
    downstream: AtomicU64,
    client: AtomicU64,
    other: AtomicU64,
    /// Front server span ids, and the parents of client spans.
    front_ids: Fingerprint,
    client_parents: Fingerprint,
    /// Client span ids, and the parents of downstream server spans.
    client_ids: Fingerprint,
    downstream_parents: Fingerprint,
}

#[derive(Debug, Clone, Default)]
struct CountingExporter(Arc<Counts>);

impl SpanExporter for CountingExporter {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let c = &self.0;
        for s in batch {
            let own = id(s.span_context.span_id());
            let parent = id(s.parent_span_id);
            match (s.span_kind, s.name.as_ref()) {
                (SpanKind::Server, "GET /front") => {
                    c.front.fetch_add(1, Ordering::Relaxed);
                    c.front_ids.add(own);
                }
                (SpanKind::Server, "GET /leaf") => {
                    c.downstream.fetch_add(1, Ordering::Relaxed);
                    c.downstream_parents.add(parent);
                }
                (SpanKind::Client, _) => {
                    c.client.fetch_add(1, Ordering::Relaxed);
                    c.client_ids.add(own);
                    c.client_parents.add(parent);
                }
                _ => {
                    c.other.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        std::future::ready(Ok(()))
    }
}

/// `n` GETs to `url` at [`CONCURRENCY`], each expected to answer 200 with `leaf`; returns the
/// number of failures and the first few.
async fn drive(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: &str,
    n: usize,
) -> (usize, Vec<String>) {
    let failures = Arc::new(AtomicU64::new(0));
    let first: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..CONCURRENCY {
        let (client, url, failures, first) = (
            client.clone(),
            url.to_owned(),
            failures.clone(),
            first.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for _ in (w..n).step_by(CONCURRENCY) {
                let req = Request::get(url.as_str()).body(Full::default()).unwrap();
                let outcome = match client.request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        match resp.into_body().collect().await.map(|b| b.to_bytes()) {
                            Ok(b) if status == StatusCode::OK && b == "leaf" => Ok(()),
                            Ok(_) => Err(format!("status {status}")),
                            Err(e) => Err(format!("body: {e}")),
                        }
                    }
                    Err(e) => Err(format!("request: {e:?}")),
                };
                if let Err(e) = outcome {
                    failures.fetch_add(1, Ordering::Relaxed);
                    let mut f = first.lock().unwrap();
                    if f.len() < 5 {
                        f.push(e);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let first = first.lock().unwrap().clone();
    (failures.load(Ordering::Relaxed) as usize, first)
}

#[tokio::test(flavor = "multi_thread")]
async fn soak_full_stack() {
    if std::env::var("SOAK").as_deref() != Ok("1") {
        println!("soak: not run (set SOAK=1, as .ci/soak does, to run it)");
        return;
    }
    let counts = CountingExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_sampler(Sampler::AlwaysOn)
        .with_simple_exporter(counts.clone())
        .build();
    let (m_front, m_down, m_client) = (Metrics::new(), Metrics::new(), Metrics::new());

    let downstream = serve(
        Router::new()
            .route("/leaf", get(|| async { "leaf" }))
            .layer(
                OtelLayer::server()
                    .with_tracer_provider(&provider)
                    .with_meter_provider(&m_down.provider)
                    .with_all_metrics()
                    .with_counted_request_bodies(),
            ),
    )
    .await;
    let leaf = format!("http://{downstream}/leaf");
    let client = OtelLayer::client()
        .with_tracer_provider(&provider)
        .with_meter_provider(&m_client.provider)
        .with_active_requests(true)
        .with_response_body_size(true)
        .layer(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
    let front = serve(
        Router::new()
            .route(
                "/front",
                get(move || {
                    let (client, leaf) = (client.clone(), leaf.clone());
                    async move {
                        let req = Request::get(leaf).body(Full::default()).unwrap();
                        match client.oneshot(req).await {
                            Ok(resp) if resp.status() == StatusCode::OK => {
                                match resp.into_body().collect().await {
                                    Ok(b) => (StatusCode::OK, b.to_bytes()),
                                    Err(_) => (StatusCode::BAD_GATEWAY, Bytes::new()),
                                }
                            }
                            _ => (StatusCode::BAD_GATEWAY, Bytes::new()),
                        }
                    }
                }),
            )
            .layer(
                OtelLayer::server()
                    .with_tracer_provider(&provider)
                    .with_meter_provider(&m_front.provider)
                    .with_all_metrics()
                    .with_counted_request_bodies(),
            ),
    )
    .await;
    let url = format!("http://{front}/front");
    let plain: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();

    let started = Instant::now();
    let (failed, first) = drive(&plain, &url, WARM_UP).await;
    assert_eq!(failed, 0, "warm-up failures: {first:?}");
    let settled = |n: u64| {
        let c = &counts.0;
        c.front.load(Ordering::Relaxed) >= n
            && c.downstream.load(Ordering::Relaxed) >= n
            && c.client.load(Ordering::Relaxed) >= n
    };
    assert!(eventually(30, || settled(WARM_UP as u64)).await);
    let rss_before = rss_bytes();
    let load_start = Instant::now();
    let (failed, first) =
        tokio::time::timeout(Duration::from_secs(600), drive(&plain, &url, REQUESTS))
            .await
            .expect("the soak stops by itself");
    let load_time = load_start.elapsed();
    let total = (WARM_UP + REQUESTS) as u64;
    assert!(
        eventually(60, || settled(total)).await,
        "every span exported"
    );
    let rss_after = rss_bytes();
    println!(
        "soak: {REQUESTS} requests (+{WARM_UP} warm-up) at concurrency {CONCURRENCY} in {:.1} s ({:.0} req/s), {:.1} s in all; RSS {} MiB -> {} MiB (growth {} MiB, bound {} MiB)",
        load_time.as_secs_f64(),
        REQUESTS as f64 / load_time.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        rss_before / MIB,
        rss_after / MIB,
        rss_after.saturating_sub(rss_before) / MIB,
        RSS_BOUND / MIB,
    );
    assert_eq!(failed, 0, "error responses: {first:?}");

    // one span per request and side, nothing else
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = &counts.0;
    assert_eq!(c.front.load(Ordering::Relaxed), total);
    assert_eq!(c.downstream.load(Ordering::Relaxed), total);
    assert_eq!(
        c.front.load(Ordering::Relaxed) + c.downstream.load(Ordering::Relaxed),
        2 * total,
        "SERVER spans"
    );
    assert_eq!(c.client.load(Ordering::Relaxed), total, "CLIENT spans");
    assert_eq!(c.other.load(Ordering::Relaxed), 0);

    // parent links: each client span is the parent of exactly one downstream server span, and
    // the child of exactly one front server span (equal counts and equal multiset fingerprints;
    // a root or a wrong parent anywhere changes the fingerprint)
    assert_eq!(
        c.downstream_parents.get(),
        c.client_ids.get(),
        "downstream server spans' parents are exactly the client spans"
    );
    assert_eq!(
        c.client_parents.get(),
        c.front_ids.get(),
        "client spans' parents are exactly the front server spans"
    );
    assert_ne!(c.client_ids.get(), c.front_ids.get(), "distinct span sets");

    // nothing in flight, one measurement per request on every side
    assert_eq!(m_front.active(), 0.0, "front: active requests");
    assert_eq!(m_down.active(), 0.0, "downstream: active requests");
    let client_active: f64 = m_client
        .points("http.client.active_requests")
        .iter()
        .map(|p| p.sum)
        .sum();
    assert_eq!(client_active, 0.0, "client: active requests");
    let count = |m: &Metrics, name: &str| m.points(name).iter().map(|p| p.count).sum::<u64>();
    assert_eq!(count(&m_front, DURATION), total);
    assert_eq!(count(&m_down, DURATION), total);
    assert_eq!(count(&m_client, "http.client.request.duration"), total);
    for m in [&m_front, &m_down] {
        assert!(m
            .points(DURATION)
            .iter()
            .all(|p| p.attr("error.type").is_none()));
    }

    let growth = rss_after.saturating_sub(rss_before);
    assert!(
        growth < RSS_BOUND,
        "RSS grew by {} MiB over {REQUESTS} requests",
        growth / MIB
    );
}
