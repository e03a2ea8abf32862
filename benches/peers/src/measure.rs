//! In-process measurement: interleaved rounds (as `benches/server.rs` `interleaved()`),
//! allocations per request on the calling thread, and the exported-spans check.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::future::Ready;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use tokio::runtime::Runtime;
use tower::util::ServiceFn;
use tower::ServiceExt;
use tower_otel_http::OtelClient;

use crate::sdk::{flush_all, request, Inbound};

// ---- allocation counting (calling thread only: the batch exporter thread is not counted) ----

struct CountingAlloc;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocs() -> u64 {
    ALLOCS.with(|c| c.get())
}

// ---- what is called ----

/// Requests that carried a `traceparent`, as seen by the mock transport or the loopback server.
pub static TRACEPARENTS_SEEN: AtomicU64 = AtomicU64::new(0);

pub type MockFn = fn(Request<Empty<Bytes>>) -> Ready<Result<Response<Full<Bytes>>, Infallible>>;
pub type Mock = ServiceFn<MockFn>;

/// The mock transport: answers at once.
pub fn mock() -> Mock {
    fn answer(req: Request<Empty<Bytes>>) -> Ready<Result<Response<Full<Bytes>>, Infallible>> {
        if req.headers().contains_key("traceparent") {
            TRACEPARENTS_SEEN.fetch_add(1, Ordering::Relaxed);
        }
        std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(b"user")))))
    }
    tower::service_fn(answer as MockFn)
}

fn client_request() -> Request<Empty<Bytes>> {
    Request::get("http://api.example.com/api/users/42")
        .header("user-agent", "bench/1.0")
        .body(Empty::new())
        .unwrap()
}

/// One service under test (an enum, not a boxed future: nothing is added to any variant).
pub enum Case {
    Router(Router, Inbound),
    Mock(Mock),
    MockOurs(OtelClient<Mock>),
    Reqwest(reqwest::Client, String),
    ReqwestMiddleware(reqwest_middleware::ClientWithMiddleware, String),
    /// A gRPC call into a tonic service in a router.
    Grpc(Router, crate::grpc::Shape),
}

async fn read<B>(resp: Response<B>)
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"user");
}

/// One request, its whole response body read.
pub async fn call(case: &Case) {
    match case {
        Case::Router(r, inbound) => read(r.clone().oneshot(request(*inbound)).await.unwrap()).await,
        Case::Mock(m) => read((*m).oneshot(client_request()).await.unwrap()).await,
        Case::MockOurs(m) => read(m.clone().oneshot(client_request()).await.unwrap()).await,
        Case::Reqwest(c, url) => {
            let resp = c.get(url).send().await.unwrap();
            assert_eq!(&resp.bytes().await.unwrap()[..], b"user");
        }
        Case::ReqwestMiddleware(c, url) => {
            let resp = c.get(url).send().await.unwrap();
            assert_eq!(&resp.bytes().await.unwrap()[..], b"user");
        }
        Case::Grpc(r, shape) => crate::grpc::call(r, *shape).await,
    }
}

fn run(rt: &Runtime, case: &Case, n: u32) {
    rt.block_on(async {
        for _ in 0..n {
            call(case).await;
        }
    });
}

/// Allocations per request on the calling thread, averaged over `n` requests.
pub fn allocations(rt: &Runtime, case: &Case, n: u32) -> f64 {
    run(rt, case, n / 10);
    let before = allocs();
    // one request per `block_on`, as `benches/server.rs` does
    for _ in 0..n {
        rt.block_on(call(case));
    }
    (allocs() - before) as f64 / f64::from(n)
}

/// Allocations per call of `f` on the calling thread, averaged over `n` calls.
pub fn allocations_with<F: std::future::Future<Output = ()>>(
    rt: &Runtime,
    n: u32,
    mut f: impl FnMut() -> F,
) -> f64 {
    for _ in 0..n / 10 {
        rt.block_on(f());
    }
    let before = allocs();
    for _ in 0..n {
        rt.block_on(f());
    }
    (allocs() - before) as f64 / f64::from(n)
}

/// What the exporters got for `n` requests of a variant.
pub struct Exported {
    pub spans_per_request: f64,
    pub traceparents_per_request: f64,
    pub samples: Vec<crate::sdk::SpanInfo>,
}

pub fn exported(rt: &Runtime, case: &Case, n: u32) -> Exported {
    flush_all();
    let spans0 = crate::sdk::exported();
    let tp0 = TRACEPARENTS_SEEN.load(Ordering::SeqCst);
    crate::sdk::sampling(true);
    run(rt, case, n);
    flush_all();
    let samples = crate::sdk::sampling(false);
    Exported {
        spans_per_request: (crate::sdk::exported() - spans0) as f64 / f64::from(n),
        traceparents_per_request: (TRACEPARENTS_SEEN.load(Ordering::SeqCst) - tp0) as f64
            / f64::from(n),
        samples,
    }
}

/// A variant's interleaved figures: median ns per request, and its per-round ratio to the
/// baseline (the first case) at the 25th, 50th and 75th percentiles.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub ns: f64,
    pub p25: f64,
    pub p50: f64,
    pub p75: f64,
}

pub fn percentile(mut xs: Vec<f64>, p: f64) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[((xs.len() - 1) as f64 * p).round() as usize]
}

/// Rounds that time `batch` requests of each case in turn, each round starting at another case
/// (what ran just before — a batch exporter's burst, a heap state — shows in a case's time);
/// the ratio to the baseline is taken within each round, the median over rounds reported.
pub fn interleaved(rt: &Runtime, cases: &[Case], rounds: usize, batch: u32) -> Vec<Timing> {
    let mut ns: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); cases.len()];
    for c in cases {
        run(rt, c, batch);
    }
    for round in 0..rounds {
        for k in 0..cases.len() {
            let i = (round + k) % cases.len();
            let start = Instant::now();
            run(rt, &cases[i], batch);
            ns[i].push(start.elapsed().as_nanos() as f64 / f64::from(batch));
        }
    }
    (0..cases.len())
        .map(|i| {
            let ratios: Vec<f64> = (0..rounds).map(|r| ns[i][r] / ns[0][r]).collect();
            Timing {
                ns: percentile(ns[i].clone(), 0.5),
                p25: percentile(ratios.clone(), 0.25),
                p50: percentile(ratios.clone(), 0.5),
                p75: percentile(ratios, 0.75),
            }
        })
        .collect()
}
