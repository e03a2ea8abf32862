//! gRPC: a tonic service inside an axum `Router` (`tonic::service::Routes`), called in process
//! with `oneshot` — a unary call and a server-streaming call of three messages, the whole body
//! and its trailers read — bare, with this crate's server layer, and with
//! tonic-tracing-opentelemetry's server layer (on a global `tracing` subscriber with
//! tracing-opentelemetry's layer, as it needs). Every variant on the same SDK ([`crate::sdk`]).
//!
//! ```text
//! peers grpc                         ns, × bare and allocations per call, one process per peer
//! peers grpc-group <plain|tracing>   one process's rows (ROW lines of JSON)
//! peers count grpc-<variant>-<shape> <n>   for callgrind: variant bare|ours|tto, shape unary|stream
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use axum::body::Body;
use axum::Router;
use bytes::{BufMut, Bytes, BytesMut};
use http::Request;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use tower_otel_http::OtelLayer;

use crate::measure::{interleaved, Timing};
use crate::sdk::{flush_all, sdk, PARENT_ID, TRACE_ID};
use crate::variants::Env;

/// The message of the bench's service.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Num {
    #[prost(int64, tag = "1")]
    pub n: i64,
}

type Codec = tonic_prost::ProstCodec<Num, Num>;

/// `bench.Svc`: `Unary` answers one message, `Stream` three.
#[derive(Clone, Copy, Default)]
struct Svc;

impl tonic::server::NamedService for Svc {
    const NAME: &'static str = "bench.Svc";
}

struct Unary;

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tonic::server::UnaryService<Num> for Unary {
    type Response = Num;
    type Future = Boxed<Result<tonic::Response<Num>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<Num>) -> Self::Future {
        Box::pin(async move { Ok(tonic::Response::new(Num { n: request.into_inner().n + 1 })) })
    }
}

struct Stream;

type NumStream =
    Pin<Box<dyn tonic::codegen::tokio_stream::Stream<Item = Result<Num, tonic::Status>> + Send>>;

impl tonic::server::ServerStreamingService<Num> for Stream {
    type Response = Num;
    type ResponseStream = NumStream;
    type Future = Boxed<Result<tonic::Response<NumStream>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<Num>) -> Self::Future {
        let n = request.into_inner().n;
        Box::pin(async move {
            let items = (0..3).map(move |i| Ok(Num { n: n + i }));
            let s: NumStream = Box::pin(tonic::codegen::tokio_stream::iter(items));
            Ok(tonic::Response::new(s))
        })
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Svc {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Boxed<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(Codec::default());
            Ok(match req.uri().path() {
                "/bench.Svc/Unary" => grpc.unary(Unary, req).await,
                "/bench.Svc/Stream" => grpc.server_streaming(Stream, req).await,
                _ => tonic::Status::unimplemented("").into_http(),
            })
        })
    }
}

/// The variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrpcVariant {
    Bare,
    Ours,
    /// tonic-tracing-opentelemetry 0.42's server layer.
    Tto,
}

impl GrpcVariant {
    pub fn id(self) -> &'static str {
        match self {
            GrpcVariant::Bare => "bare",
            GrpcVariant::Ours => "ours",
            GrpcVariant::Tto => "tto",
        }
    }

    fn label(self) -> &'static str {
        match self {
            GrpcVariant::Bare => "bare tonic (in an axum Router)",
            GrpcVariant::Ours => "tower-otel-http `OtelLayer::server()`",
            GrpcVariant::Tto => "tonic-tracing-opentelemetry 0.42 `OtelGrpcLayer`",
        }
    }

    /// The process-global state its process needs.
    fn env(self) -> Env {
        match self {
            GrpcVariant::Bare | GrpcVariant::Ours => Env::Plain,
            GrpcVariant::Tto => Env::Tracing,
        }
    }

    /// The router with the variant's layer on the root.
    pub fn router(self) -> Router {
        let routes = tonic::service::Routes::new(Svc).into_axum_router();
        let s = sdk();
        match self {
            GrpcVariant::Bare => routes,
            GrpcVariant::Ours => routes.layer(
                OtelLayer::server()
                    .with_tracer_provider(&s.tracer)
                    .with_meter_provider(&s.meters),
            ),
            GrpcVariant::Tto => routes
                .layer(tonic_tracing_opentelemetry::middleware::server::OtelGrpcLayer::default()),
        }
    }
}

/// The call shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Unary,
    Stream,
}

impl Shape {
    fn id(self) -> &'static str {
        match self {
            Shape::Unary => "unary",
            Shape::Stream => "stream",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Shape::Unary => "/bench.Svc/Unary",
            Shape::Stream => "/bench.Svc/Stream",
        }
    }

    fn messages(self) -> usize {
        match self {
            Shape::Unary => 1,
            Shape::Stream => 3,
        }
    }
}

/// A gRPC frame: no compression, the length, the message.
fn frame(n: i64) -> Bytes {
    let msg = prost::Message::encode_to_vec(&Num { n });
    let mut b = BytesMut::with_capacity(5 + msg.len());
    b.put_u8(0);
    b.put_u32(msg.len() as u32);
    b.put_slice(&msg);
    b.freeze()
}

fn request(shape: Shape) -> Request<Body> {
    Request::post(shape.path())
        .header("host", "127.0.0.1:50051")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", "grpc-rust/bench")
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .body(Body::from(frame(41)))
        .unwrap()
}

/// One call: the whole body read, its trailers checked.
pub async fn call(router: &Router, shape: Shape) {
    let resp = router.clone().oneshot(request(shape)).await.unwrap();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    let data = collected.to_bytes();
    assert_eq!(data.len(), shape.messages() * 7, "{data:?}");
    let status = trailers.and_then(|t| t.get("grpc-status").cloned());
    assert_eq!(status.as_ref().map(|s| s.as_bytes()), Some(&b"0"[..]));
}

/// `peers count grpc-<variant>-<shape> <n>`: `n` calls on this thread, nothing measured.
pub fn count(id: &str, n: usize) -> bool {
    let Some(rest) = id.strip_prefix("grpc-") else {
        return false;
    };
    let Some((v, s)) = rest.split_once('-') else {
        return false;
    };
    let variant = match v {
        "bare" => GrpcVariant::Bare,
        "ours" => GrpcVariant::Ours,
        "tto" => GrpcVariant::Tto,
        _ => return false,
    };
    let shape = match s {
        "unary" => Shape::Unary,
        "stream" => Shape::Stream,
        _ => return false,
    };
    variant.env().install();
    let router = variant.router();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for _ in 0..n {
        rt.block_on(call(&router, shape));
    }
    true
}

/// The processes: each with bare tonic as its baseline.
const GROUPS: [(&str, GrpcVariant); 2] = [("plain", GrpcVariant::Ours), ("tracing", GrpcVariant::Tto)];

/// One process's rows: for each shape, the baseline and the variant, interleaved; allocations
/// per call; spans exported per call.
pub fn group(id: &str, rounds: usize, batch: u32, allocs: u32) {
    let Some(&(_, variant)) = GROUPS.iter().find(|(g, _)| *g == id) else {
        eprintln!("grpc groups: plain, tracing");
        std::process::exit(2);
    };
    variant.env().install();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for shape in [Shape::Unary, Shape::Stream] {
        let routers = [GrpcVariant::Bare.router(), variant.router()];
        // spans per call, before timing
        flush_all();
        let before = crate::sdk::exported();
        rt.block_on(async {
            for _ in 0..200 {
                call(&routers[1], shape).await;
            }
        });
        flush_all();
        let spans = (crate::sdk::exported() - before) as f64 / 200.0;
        let timings = interleaved_grpc(&rt, &routers, shape, rounds, batch);
        let a: Vec<f64> = routers
            .iter()
            .map(|r| crate::measure::allocations_with(&rt, allocs, || call(r, shape)))
            .collect();
        for (i, v) in [GrpcVariant::Bare, variant].into_iter().enumerate() {
            let t = timings[i];
            let row = json!({
                "variant": v.id(), "label": v.label(), "shape": shape.id(),
                "ns": t.ns, "p25": t.p25, "p50": t.p50, "p75": t.p75,
                "allocs": a[i], "allocs_over_bare": a[i] - a[0],
                "spans_per_call": if i == 0 { 0.0 } else { spans },
            });
            println!("ROW {row}");
        }
    }
}

fn interleaved_grpc(
    rt: &tokio::runtime::Runtime,
    routers: &[Router; 2],
    shape: Shape,
    rounds: usize,
    batch: u32,
) -> Vec<Timing> {
    interleaved(
        rt,
        &[
            crate::measure::Case::Grpc(routers[0].clone(), shape),
            crate::measure::Case::Grpc(routers[1].clone(), shape),
        ],
        rounds,
        batch,
    )
}

/// Every group in a process of its own; one markdown table.
pub fn all(rounds: usize, batch: u32, allocs: u32) -> bool {
    let exe = std::env::current_exe().unwrap();
    let mut rows: Vec<Value> = Vec::new();
    let mut ok = true;
    for (g, _) in GROUPS {
        let out = std::process::Command::new(&exe)
            .args(["grpc-group", g])
            .env("PEERS_ROUNDS", rounds.to_string())
            .env("PEERS_BATCH", batch.to_string())
            .env("PEERS_ALLOCS", allocs.to_string())
            .output()
            .unwrap();
        if !out.status.success() {
            eprintln!("grpc group {g} failed:\n{}", String::from_utf8_lossy(&out.stderr));
            ok = false;
            continue;
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(json) = line.strip_prefix("ROW ") {
                let mut v: Value = serde_json::from_str(json).unwrap();
                v["process"] = json!(g);
                rows.push(v);
            }
        }
    }
    println!("| process | shape | variant | ns/call | × bare (p25–p75) | allocations over bare | spans/call |");
    println!("|---|---|---|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.0} | {:.2} ({:.2}–{:.2}) | {:+.1} | {:.2} |",
            r["process"].as_str().unwrap_or(""),
            r["shape"].as_str().unwrap_or(""),
            r["label"].as_str().unwrap_or(""),
            r["ns"].as_f64().unwrap_or(0.0),
            r["p50"].as_f64().unwrap_or(0.0),
            r["p25"].as_f64().unwrap_or(0.0),
            r["p75"].as_f64().unwrap_or(0.0),
            r["allocs_over_bare"].as_f64().unwrap_or(0.0),
            r["spans_per_call"].as_f64().unwrap_or(0.0),
        );
        if r["variant"] != "bare" && r["spans_per_call"].as_f64().unwrap_or(0.0) < 0.5 {
            eprintln!("FAILED: {} exported no span per call", r["label"]);
            ok = false;
        }
    }
    ok
}
