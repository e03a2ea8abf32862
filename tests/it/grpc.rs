//! gRPC under the RPC semantic conventions, over real h2c servers: tonic services inside a root
//! axum `Router` served by `axum::serve` (axum's `http2` feature), and tonic's own `Server`;
//! tonic clients over a `Channel` wrapped in the client layer. tonic-health for unary calls,
//! trailers-only errors and server streaming; a small service of the tests' own (prost
//! messages, `tonic::server::Grpc`) for client streaming and bidirectional calls.
#![cfg(feature = "tracing")]

use crate::common::*;
use crate::hardening::eventually;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use http::uri::PathAndQuery;
use opentelemetry::trace::{SpanKind, Status as SpanStatus};
use opentelemetry_sdk::trace::SpanData;
use tonic::codegen::tokio_stream::{self, Stream, StreamExt};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tower::ServiceBuilder;
use tower_otel_http::{OtelClient, OtelLayer, OtelServerLayer};

const CHECK: &str = "grpc.health.v1.Health/Check";
const WATCH: &str = "grpc.health.v1.Health/Watch";

// ------------------------------------------------------------------ the services

/// A health service whose answers the test chooses through the requested service name.
#[derive(Clone, Default)]
struct TestHealth;

fn serving() -> HealthCheckResponse {
    HealthCheckResponse {
        status: ServingStatus::Serving as i32,
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for TestHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.get_ref().service.clone();
        if let Some(code) = service.strip_prefix("code-") {
            let code = Code::from(code.parse::<i32>().unwrap());
            let mut status = Status::new(code, "as asked");
            status
                .metadata_mut()
                .insert("x-trailer", "from-the-status".parse().unwrap());
            return Err(status);
        }
        if let Some(ms) = service.strip_prefix("sleep-") {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
        }
        if service == "panic" {
            panic!("the handler panics");
        }
        if service == "log" {
            tracing::info!("inside the tonic handler");
        }
        let mut response = Response::new(serving());
        response
            .metadata_mut()
            .insert("x-resp", "head-metadata".parse().unwrap());
        Ok(response)
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.get_ref().service.clone();
        let stream: WatchStream = match service.as_str() {
            // one message every 20 ms, for ever: the caller stops
            "forever" => Box::pin(paced(std::iter::repeat_with(|| Ok(serving())))),
            // two messages, then a failure in the trailers
            "fail-after-2" => {
                let mut status = Status::internal("broke mid-stream");
                status
                    .metadata_mut()
                    .insert("x-trailer", "from-the-trailers".parse().unwrap());
                status
                    .metadata_mut()
                    .insert("x-both", "tail".parse().unwrap());
                Box::pin(tokio_stream::iter(vec![
                    Ok(serving()),
                    Ok(serving()),
                    Err(status),
                ]))
            }
            // three messages, then OK
            _ => Box::pin(tokio_stream::iter(vec![
                Ok(serving()),
                Ok(serving()),
                Ok(serving()),
            ])),
        };
        let mut response = Response::new(stream);
        response
            .metadata_mut()
            .insert("x-both", "head".parse().unwrap());
        Ok(response)
    }
}

/// `items`, one every 20 ms, until they run out or the receiver is gone.
fn paced<T: Send + 'static>(
    items: impl Iterator<Item = T> + Send + 'static,
) -> tokio_stream::wrappers::ReceiverStream<T> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        for item in items {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if tx.send(item).await.is_err() {
                break;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A message of the tests' own service.
#[derive(Clone, PartialEq, prost::Message)]
struct Num {
    #[prost(int64, tag = "1")]
    n: i64,
}

type Codec = tonic_prost::ProstCodec<Num, Num>;

/// `test.Nums`: `Sum` (client streaming) and `Chat` (bidirectional: each number back, doubled).
#[derive(Clone, Default)]
struct Nums;

impl tonic::server::NamedService for Nums {
    const NAME: &'static str = "test.Nums";
}

struct Sum;

impl tonic::server::ClientStreamingService<Num> for Sum {
    type Response = Num;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Num>, Status>> + Send>>;

    fn call(&mut self, request: Request<Streaming<Num>>) -> Self::Future {
        Box::pin(async move {
            let mut stream = request.into_inner();
            let mut total = 0;
            while let Some(n) = stream.message().await? {
                total += n.n;
            }
            Ok(Response::new(Num { n: total }))
        })
    }
}

struct Chat;

type NumStream = Pin<Box<dyn Stream<Item = Result<Num, Status>> + Send>>;

impl tonic::server::StreamingService<Num> for Chat {
    type Response = Num;
    type ResponseStream = NumStream;
    type Future = Pin<Box<dyn Future<Output = Result<Response<NumStream>, Status>> + Send>>;

    fn call(&mut self, request: Request<Streaming<Num>>) -> Self::Future {
        Box::pin(async move {
            let stream = request.into_inner();
            let out: NumStream = Box::pin(stream.map(|r| r.map(|n| Num { n: 2 * n.n })));
            Ok(Response::new(out))
        })
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Nums {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(Codec::default());
            Ok(match req.uri().path() {
                "/test.Nums/Sum" => grpc.client_streaming(Sum, req).await,
                "/test.Nums/Chat" => grpc.streaming(Chat, req).await,
                _ => Status::unimplemented("").into_http(),
            })
        })
    }
}

// ------------------------------------------------------------------ servers and clients

async fn listener() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// The tonic services inside a root axum `Router` (with an HTTP route of its own), the server
/// layer on the root, served by `axum::serve` (h2c).
async fn axum_server(layer: OtelServerLayer) -> SocketAddr {
    let grpc = tonic::service::Routes::new(HealthServer::new(TestHealth))
        .add_service(Nums)
        .into_axum_router();
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .merge(grpc)
        .layer(layer);
    let (listener, addr) = listener().await;
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
    addr
}

/// tonic's own `Server` with the server layer.
async fn tonic_server(layer: OtelServerLayer) -> SocketAddr {
    let (listener, addr) = listener().await;
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(HealthServer::new(TestHealth))
            .add_service(Nums)
            .serve_with_incoming(incoming)
            .await
            .unwrap()
    });
    addr
}

type Traced = OtelClient<Channel>;

/// A channel to `addr` wrapped in the client layer, told its target.
async fn channel(addr: SocketAddr, t: &Telemetry, m: &Metrics) -> Traced {
    let target = format!("http://{addr}");
    let channel = Endpoint::from_shared(target.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    ServiceBuilder::new()
        .layer(
            OtelLayer::client()
                .with_tracer_provider(&t.provider)
                .with_meter_provider(&m.provider)
                .with_target(target.parse().unwrap()),
        )
        .service(channel)
}

/// A unary call of `path` with a `Num` through `grpc` (any path: the tests' own service, or one
/// nobody serves).
async fn unary(
    grpc: &mut tonic::client::Grpc<Traced>,
    path: &str,
) -> Result<Response<Num>, Status> {
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = PathAndQuery::try_from(path.to_owned()).unwrap();
    grpc.unary::<Num, Num, Codec>(Request::new(Num { n: 1 }), path, Codec::default())
        .await
}

fn server_layer(t: &Telemetry, m: &Metrics) -> OtelServerLayer {
    t.layer().with_meter_provider(&m.provider)
}

fn check(service: &str) -> Request<HealthCheckRequest> {
    Request::new(HealthCheckRequest {
        service: service.to_owned(),
    })
}

fn by_kind(spans: &[SpanData], kind: SpanKind) -> Vec<SpanData> {
    spans
        .iter()
        .filter(|s| s.span_kind == kind)
        .cloned()
        .collect()
}

/// The one span of `kind`, once it has ended.
async fn one(t: &Telemetry, kind: SpanKind) -> SpanData {
    let mut spans = Vec::new();
    for _ in 0..200 {
        spans = by_kind(&t.spans(), kind.clone());
        if !spans.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(spans.len(), 1, "{kind:?} spans: {:?}", names(&t.spans()));
    spans.remove(0)
}

fn names(spans: &[SpanData]) -> Vec<String> {
    spans
        .iter()
        .map(|s| format!("{:?} {}", s.span_kind, s.name))
        .collect()
}

fn has(span: &SpanData, key: &str) -> bool {
    attr(span, key).is_some()
}

/// The RPC attributes every gRPC span has, and no HTTP one.
fn assert_rpc(span: &SpanData, method: &str) {
    assert_eq!(attr_str(span, "rpc.system.name").as_deref(), Some("grpc"));
    assert_eq!(
        attr_str(span, "rpc.method").as_deref(),
        Some(method),
        "{span:?}"
    );
    let mut keys: Vec<&str> = span.attributes.iter().map(|kv| kv.key.as_str()).collect();
    for k in [
        "http.request.method",
        "http.response.status_code",
        "http.route",
        "url.path",
        "url.full",
        "url.scheme",
        "network.protocol.version",
    ] {
        assert!(!keys.contains(&k), "{k} on a gRPC span: {keys:?}");
    }
    keys.sort_unstable();
    let n = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), n, "an attribute set twice: {keys:?}");
}

/// The span is an error whose `error.type` is `want`.
#[track_caller]
fn assert_failed(span: &SpanData, want: &str) {
    assert!(is_error(span), "not an error: {span:?}");
    assert_eq!(
        attr_str(span, "error.type").as_deref(),
        Some(want),
        "{span:?}"
    );
}

fn code_of(span: &SpanData) -> Option<String> {
    attr_str(span, "rpc.response.status_code")
}

// ------------------------------------------------------------------ 6.1, 6.2: the span

#[tokio::test]
async fn a_unary_call_through_the_root_router_is_an_rpc_span_on_both_sides() {
    let (t, m) = (Telemetry::new(), Metrics::new());
    let addr = axum_server(server_layer(&t, &m)).await;
    let mut client = HealthClient::new(channel(addr, &t, &m).await);
    let response = client.check(check("ok")).await.unwrap();
    assert!(
        response.metadata().get("traceresponse").is_some(),
        "the trace-context response header is on a gRPC response too"
    );
    let server = one(&t, SpanKind::Server).await;
    let client_span = one(&t, SpanKind::Client).await;
    for span in [&server, &client_span] {
        assert_eq!(span.name, CHECK);
        assert_rpc(span, CHECK);
        assert_eq!(code_of(span).as_deref(), Some("OK"));
        assert_eq!(span.status, SpanStatus::Unset);
        assert_eq!(
            attr_str(span, "server.address").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(attr_i64(span, "server.port"), Some(i64::from(addr.port())));
    }
    assert_eq!(
        attr_str(&server, "network.peer.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        attr_str(&server, "client.address").as_deref(),
        Some("127.0.0.1")
    );
    // 6.7: the client span is the server span's parent, over the metadata
    assert_eq!(server.parent_span_id, client_span.span_context.span_id());
    assert_eq!(
        server.span_context.trace_id(),
        client_span.span_context.trace_id()
    );
    // the HTTP route of the same router is still HTTP
    let hello = reqwest_free_get(addr, "/hello").await;
    assert_eq!(hello, "hello");
    assert!(t.spans().iter().any(|s| s.name == "GET /hello"));
}

/// A plain HTTP/1.1 GET over the same port.
async fn reqwest_free_get(addr: SocketAddr, path: &str) -> String {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let resp = client
        .get(format!("http://{addr}{path}").parse().unwrap())
        .await
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test]
async fn tonic_servers_own_server_records_the_same_with_its_connect_info() {
    let (t, m) = (Telemetry::new(), Metrics::new());
    let addr = tonic_server(server_layer(&t, &m)).await;
    let mut client = HealthClient::new(channel(addr, &t, &m).await);
    client.check(check("ok")).await.unwrap();
    let server = one(&t, SpanKind::Server).await;
    assert_eq!(server.name, CHECK);
    assert_rpc(&server, CHECK);
    assert_eq!(code_of(&server).as_deref(), Some("OK"));
    assert_eq!(
        attr_str(&server, "server.address").as_deref(),
        Some("127.0.0.1")
    );
    // tonic's TcpConnectInfo (feature `tonic`)
    #[cfg(feature = "tonic")]
    {
        assert_eq!(
            attr_str(&server, "network.peer.address").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            attr_str(&server, "client.address").as_deref(),
            Some("127.0.0.1")
        );
        assert!(attr_i64(&server, "network.peer.port").is_some());
    }
}

// ------------------------------------------------------------------ 6.3, 6.4: status and errors

/// Every status code, on each side: the name recorded, the server's error list, the client's
/// every-status-but-OK.
#[tokio::test]
async fn every_status_code_by_side() {
    let server_errors = [
        "UNKNOWN",
        "DEADLINE_EXCEEDED",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
    ];
    let (t, m) = (Telemetry::new(), Metrics::new());
    let addr = axum_server(server_layer(&t, &m)).await;
    let mut client = HealthClient::new(channel(addr, &t, &m).await);
    for code in 1..=16 {
        t.reset();
        let status = client
            .check(check(&format!("code-{code}")))
            .await
            .unwrap_err();
        assert_eq!(status.code() as i32, code);
        let name = format!("{:?}", Code::from(code));
        let want = tower_otel_http_code_name(code);
        let server = one(&t, SpanKind::Server).await;
        let client_span = one(&t, SpanKind::Client).await;
        assert_eq!(code_of(&server).as_deref(), Some(want), "{name}");
        assert_eq!(code_of(&client_span).as_deref(), Some(want), "{name}");
        let server_error = server_errors.contains(&want);
        assert_eq!(is_error(&server), server_error, "server {want}");
        assert_eq!(
            attr_str(&server, "error.type").as_deref(),
            server_error.then_some(want),
            "server {want}"
        );
        assert_failed(&client_span, want);
        // the method is known: tonic answered with a message of its own
        assert_rpc(&server, CHECK);
    }
}

/// The conventions' names of the status codes, written out.
fn tower_otel_http_code_name(code: i32) -> &'static str {
    [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ][code as usize]
}

/// A failure in the trailers after messages (not trailers-only) is read from the trailers.
#[tokio::test]
async fn a_status_in_the_trailers_after_messages_is_read_from_them() {
    let (t, m) = (Telemetry::new(), Metrics::new());
    let addr = axum_server(server_layer(&t, &m)).await;
    let mut client = HealthClient::new(channel(addr, &t, &m).await);
    let mut stream = client
        .watch(check("fail-after-2"))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    assert!(stream.message().await.unwrap().is_some());
    let status = stream.message().await.unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    for kind in [SpanKind::Server, SpanKind::Client] {
        let span = one(&t, kind.clone()).await;
        assert_eq!(span.name, WATCH);
        assert_eq!(code_of(&span).as_deref(), Some("INTERNAL"), "{kind:?}");
        assert_failed(&span, "INTERNAL");
    }
}

/// A method the server does not have (tonic answers UNIMPLEMENTED trailers-only), and a service
/// it does not have (tonic's router fallback): `rpc.method = _OTHER`, span name `grpc`.
#[tokio::test]
async fn unknown_methods_are_other_on_the_server() {
    let (t, m) = (Telemetry::new(), Metrics::new());
    let addr = axum_server(server_layer(&t, &m)).await;
    let mut grpc = tonic::client::Grpc::new(channel(addr, &t, &m).await);
    for path in ["/grpc.health.v1.Health/Nope", "/nope.Service/Method"] {
        t.reset();
        let status = unary(&mut grpc, path).await.unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented);
        let server = one(&t, SpanKind::Server).await;
        assert_eq!(server.name, "grpc", "{path}");
        assert_rpc(&server, "_OTHER");
        assert_eq!(
            attr_str(&server, "rpc.method_original").as_deref(),
            Some(&path[1..])
        );
        assert_eq!(code_of(&server).as_deref(), Some("UNIMPLEMENTED"));
        assert!(is_error(&server));
        // the client knows what it called
        let client_span = one(&t, SpanKind::Client).await;
        assert_eq!(client_span.name, &path[1..]);
        assert_rpc(&client_span, &path[1..]);
    }
    // the metric: _OTHER, bounded
    let points = m.points("rpc.server.call.duration");
    assert!(points
        .iter()
        .all(|p| p.attr("rpc.method") != Some("nope.Service/Method")));
    assert!(points
        .iter()
        .any(|p| p.attr("rpc.method") == Some("_OTHER")));
}

/// A list of known methods decides up front: `rpc.method` is set at the start (samplers see
/// it), and a method not on it is `_OTHER` from the start.
#[tokio::test]
async fn a_known_method_list_decides_at_the_start() {
    let (t, m) = (Telemetry::new(), Metrics::new());
    let addr = axum_server(server_layer(&t, &m).with_grpc_methods([CHECK])).await;
    let mut client = HealthClient::new(channel(addr, &t, &m).await);
    client.check(check("ok")).await.unwrap();
    let server = one(&t, SpanKind::Server).await;
    assert_rpc(&server, CHECK);
    t.reset();
    let mut stream = client.watch(check("ok-3")).await.unwrap().into_inner();
    while stream.message().await.unwrap().is_some() {}
    let server = one(&t, SpanKind::Server).await;
    assert_eq!(server.name, "grpc");
    assert_rpc(&server, "_OTHER");
    assert_eq!(
        attr_str(&server, "rpc.method_original").as_deref(),
        Some(WATCH)
    );
    assert_eq!(code_of(&server).as_deref(), Some("OK"));
}

/// A gRPC call answered with a non-200 HTTP status (the root router's own fallback, no tonic
/// fallback): the server records the HTTP code, the client tonic's mapping (404 →
/// UNIMPLEMENTED).
#[tokio::test]
async fn a_non_200_answer_is_an_error_on_both_sides() {
    let (t, m) = (Telemetry::new(), Metrics::new());
    let app = Router::new()
        .route_service(
            "/grpc.health.v1.Health/{*rest}",
            HealthServer::new(TestHealth),
        )
        .fallback(|| async { (http::StatusCode::NOT_FOUND, "no such route") })
        .layer(server_layer(&t, &m));
    let (listener, addr) = listener().await;
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut grpc = tonic::client::Grpc::new(channel(addr, &t, &m).await);
    let status = unary(&mut grpc, "/nope.Service/Method").await.unwrap_err();
    // tonic itself reports the text/plain answer as a protocol failure
    assert_ne!(status.code(), Code::Ok);
    let server = one(&t, SpanKind::Server).await;
    assert_failed(&server, "404");
    assert_eq!(attr_str(&server, "rpc.method").as_deref(), Some("_OTHER"));
    let client_span = one(&t, SpanKind::Client).await;
    assert_eq!(code_of(&client_span).as_deref(), Some("UNIMPLEMENTED"));
    assert_eq!(
        attr_str(&client_span, "error.type").as_deref(),
        Some("UNIMPLEMENTED")
    );
}

// ------------------------------------------------------------------ 6.5: when a call ends

/// Server streaming that the caller stops (as every health checker does): one span per side
/// that lasts as long as the stream, CANCELLED, no error on either side.
#[tokio::test]
async fn a_watch_the_caller_stops_is_cancelled_and_no_error() {
    let (t, m) = (Telemetry::new(), Metrics::new());
    for addr in [
        axum_server(server_layer(&t, &m)).await,
        tonic_server(server_layer(&t, &m)).await,
    ] {
        t.reset();
        let mut client = HealthClient::new(channel(addr, &t, &m).await);
        let mut stream = client.watch(check("forever")).await.unwrap().into_inner();
        for _ in 0..5 {
            assert!(stream.message().await.unwrap().is_some());
        }
        assert!(
            t.spans().is_empty(),
            "a streaming call does not end at the head"
        );
        drop(stream);
        for kind in [SpanKind::Client, SpanKind::Server] {
            let span = one(&t, kind.clone()).await;
            assert_eq!(span.name, WATCH);
            assert_eq!(code_of(&span).as_deref(), Some("CANCELLED"), "{kind:?}");
            assert!(!is_error(&span), "{kind:?}: {span:?}");
            assert_eq!(attr_str(&span, "error.type"), None);
            let lasted = span.end_time.duration_since(span.start_time).unwrap();
            assert!(
                lasted >= Duration::from_millis(60),
                "{kind:?} lasted {lasted:?}"
            );
        }
    }
}

/// Client streaming and bidirectional calls: one span per side, ending with the stream.
#[tokio::test]
async fn client_streaming_and_bidirectional_calls_are_one_span_each() {
    let (t, m) = (Telemetry::new(), Metrics::new());
    let addr = axum_server(server_layer(&t, &m)).await;
    let mut grpc = tonic::client::Grpc::new(channel(addr, &t, &m).await);
    grpc.ready().await.unwrap();
    let numbers = paced((1..=4).map(|n| Num { n }));
    let sum = grpc
        .client_streaming::<_, Num, Num, Codec>(
            Request::new(numbers),
            PathAndQuery::from_static("/test.Nums/Sum"),
            Codec::default(),
        )
        .await
        .unwrap();
    assert_eq!(sum.into_inner().n, 10);
    for kind in [SpanKind::Server, SpanKind::Client] {
        let span = one(&t, kind.clone()).await;
        assert_eq!(span.name, "test.Nums/Sum");
        assert_eq!(code_of(&span).as_deref(), Some("OK"));
        let lasted = span.end_time.duration_since(span.start_time).unwrap();
        assert!(
            lasted >= Duration::from_millis(60),
            "{kind:?} lasted {lasted:?}"
        );
    }
    t.reset();
    grpc.ready().await.unwrap();
    let numbers = paced((1..=3).map(|n| Num { n }));
    let mut doubled = grpc
        .streaming::<_, Num, Num, Codec>(
            Request::new(numbers),
            PathAndQuery::from_static("/test.Nums/Chat"),
            Codec::default(),
        )
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(n) = doubled.message().await.unwrap() {
        got.push(n.n);
    }
    assert_eq!(got, [2, 4, 6]);
    for kind in [SpanKind::Server, SpanKind::Client] {
        let span = one(&t, kind.clone()).await;
        assert_eq!(span.name, "test.Nums/Chat");
        assert_eq!(code_of(&span).as_deref(), Some("OK"), "{kind:?}");
        assert!(!is_error(&span));
    }
}

/// A deadline that passes: tonic's client gives up; both spans are DEADLINE_EXCEEDED (an
/// error on both sides), where tonic's own reports say CANCELLED or nothing.
#[tokio::test]
async fn a_passed_deadline_is_deadline_exceeded_on_both_sides() {
    let (t, m) = (Telemetry::new(), Metrics::new());
    for addr in [
        axum_server(server_layer(&t, &m)).await,
        tonic_server(server_layer(&t, &m)).await,
    ] {
        t.reset();
        let mut client = HealthClient::new(channel(addr, &t, &m).await);
        let mut request = check("sleep-2000");
        request.set_timeout(Duration::from_millis(200));
        let status = client.check(request).await.unwrap_err();
        assert!(
            matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded),
            "{status:?}"
        );
        for kind in [SpanKind::Client, SpanKind::Server] {
            let span = one(&t, kind.clone()).await;
            assert_eq!(
                code_of(&span).as_deref(),
                Some("DEADLINE_EXCEEDED"),
                "{kind:?}"
            );
            assert_failed(&span, "DEADLINE_EXCEEDED");
        }
    }
}

/// A caller that drops the call before the answer: CANCELLED, no error on either side.
#[tokio::test]
async fn a_call_the_caller_drops_is_cancelled_on_both_sides() {
    let (t, m) = (Telemetry::new(), Metrics::new());
    let addr = axum_server(server_layer(&t, &m)).await;
    let mut client = HealthClient::new(channel(addr, &t, &m).await);
    let call = client.check(check("sleep-500"));
    assert!(tokio::time::timeout(Duration::from_millis(50), call)
        .await
        .is_err());
    for kind in [SpanKind::Client, SpanKind::Server] {
        let span = one(&t, kind.clone()).await;
        assert_eq!(code_of(&span).as_deref(), Some("CANCELLED"), "{kind:?}");
        assert!(!is_error(&span), "{kind:?}");
    }
}

/// A panic in a handler: recorded as `panic` on the server, the call failed on the client.
#[tokio::test]
async fn a_panic_in_a_handler_is_recorded() {
    let (t, m) = (Telemetry::new(), Metrics::new());
    let addr = axum_server(server_layer(&t, &m)).await;
    let mut client = HealthClient::new(channel(addr, &t, &m).await);
    let status = client.check(check("panic")).await.unwrap_err();
    assert_ne!(status.code(), Code::Ok);
    let server = one(&t, SpanKind::Server).await;
    assert_failed(&server, "panic");
    let client_span = one(&t, SpanKind::Client).await;
    assert!(is_error(&client_span));
}

// ------------------------------------------------------------------ 6.6: metrics

#[tokio::test]
async fn rpc_metrics_and_no_http_metric_for_a_grpc_call() {
    let (t, m) = (Telemetry::new(), Metrics::new());
    let addr = axum_server(server_layer(&t, &m).with_all_metrics()).await;
    let mut client = HealthClient::new(channel(addr, &t, &m).await);
    client.check(check("ok")).await.unwrap();
    client.check(check("code-5")).await.unwrap_err();
    client.check(check("code-13")).await.unwrap_err();
    // let the spans end
    assert!(eventually(5, || t.spans().len() == 6).await);
    let server = m.points("rpc.server.call.duration");
    let client_points = m.points("rpc.client.call.duration");
    assert_eq!(server.len(), 3, "{server:?}");
    assert_eq!(client_points.len(), 3);
    for p in server.iter().chain(&client_points) {
        assert_eq!(p.unit, "s");
        assert_eq!(p.bounds, tower_otel_http::metrics::DURATION_BUCKETS);
        assert_eq!(p.attr("rpc.system.name"), Some("grpc"));
        assert_eq!(p.attr("rpc.method"), Some(CHECK));
        assert_eq!(p.count, 1);
    }
    let code = |ps: &[Point], c: &str| {
        ps.iter()
            .find(|p| p.attr("rpc.response.status_code") == Some(c))
            .cloned()
            .unwrap()
    };
    assert_eq!(code(&server, "OK").attr("error.type"), None);
    assert_eq!(code(&server, "NOT_FOUND").attr("error.type"), None);
    assert_eq!(
        code(&server, "INTERNAL").attr("error.type"),
        Some("INTERNAL")
    );
    assert_eq!(
        code(&client_points, "NOT_FOUND").attr("error.type"),
        Some("NOT_FOUND")
    );
    // server.address: opt-in on the server, always on the client
    assert!(server.iter().all(|p| p.attr("server.address").is_none()));
    assert!(client_points
        .iter()
        .all(|p| p.attr("server.address") == Some("127.0.0.1")));
    // no HTTP instrument at all for the gRPC calls
    for name in [
        "http.server.request.duration",
        "http.client.request.duration",
        "http.server.active_requests",
        "http.server.request.body.size",
        "http.server.response.body.size",
    ] {
        assert!(m.points(name).is_empty(), "{name}: {:?}", m.points(name));
    }
}

// ------------------------------------------------------------------ 6.7: context, header, logs

#[tokio::test]
async fn log_lines_inside_a_tonic_handler_carry_the_server_spans_ids() {
    use tracing_subscriber::layer::SubscriberExt;
    let buf = Buf::default();
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .event_format(tower_otel_http::logs::JsonFormat::new())
            .with_writer(buf.clone()),
    );
    let _guard = tracing::subscriber::set_default(subscriber);
    let (t, m) = (Telemetry::new(), Metrics::new());
    let addr = axum_server(server_layer(&t, &m)).await;
    let mut client = HealthClient::new(channel(addr, &t, &m).await);
    client.check(check("log")).await.unwrap();
    let server = one(&t, SpanKind::Server).await;
    let line = buf
        .lines()
        .into_iter()
        .find(|l| l.contains("inside the tonic handler"))
        .expect("the handler's line");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["trace_id"], server.span_context.trace_id().to_string());
    assert_eq!(v["span_id"], server.span_context.span_id().to_string());
}

// ------------------------------------------------------------------ 6.8: metadata, opt-in

#[tokio::test]
async fn allow_listed_metadata_from_headers_and_trailers() {
    let (t, m) = (Telemetry::new(), Metrics::new());
    let layer = server_layer(&t, &m)
        .with_request_headers(["x-tenant", "authorization"])
        .with_response_headers(["x-resp", "x-trailer", "x-both"]);
    let addr = axum_server(layer).await;
    let target = format!("http://{addr}");
    let channel = Endpoint::from_shared(target.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let traced = ServiceBuilder::new()
        .layer(
            OtelLayer::client()
                .with_tracer_provider(&t.provider)
                .with_target(target.parse().unwrap())
                .with_request_headers(["x-tenant"])
                .with_response_headers(["x-resp"]),
        )
        .service(channel);
    let mut client = HealthClient::new(traced);
    let mut request = check("ok");
    request
        .metadata_mut()
        .insert("x-tenant", "acme".parse().unwrap());
    request
        .metadata_mut()
        .insert("authorization", "Bearer secret".parse().unwrap());
    client.check(request).await.unwrap();
    let server = one(&t, SpanKind::Server).await;
    let arr = |s: &SpanData, k: &str| attr(s, k).map(|v| v.to_string());
    assert_eq!(
        arr(&server, "rpc.request.metadata.x-tenant").as_deref(),
        Some("[\"acme\"]")
    );
    assert_eq!(
        arr(&server, "rpc.request.metadata.authorization"),
        None,
        "sensitive: refused"
    );
    assert_eq!(
        arr(&server, "rpc.response.metadata.x-resp").as_deref(),
        Some("[\"head-metadata\"]")
    );
    assert!(!has(&server, "http.request.header.x-tenant"));
    let client_span = one(&t, SpanKind::Client).await;
    assert_eq!(
        arr(&client_span, "rpc.request.metadata.x-tenant").as_deref(),
        Some("[\"acme\"]")
    );
    assert_eq!(
        arr(&client_span, "rpc.response.metadata.x-resp").as_deref(),
        Some("[\"head-metadata\"]")
    );
    // from the trailers of a streaming call that fails after its messages
    t.reset();
    let mut stream = client
        .watch(check("fail-after-2"))
        .await
        .unwrap()
        .into_inner();
    while stream.message().await.is_ok_and(|m| m.is_some()) {}
    let server = one(&t, SpanKind::Server).await;
    assert_eq!(
        arr(&server, "rpc.response.metadata.x-trailer").as_deref(),
        Some("[\"from-the-trailers\"]")
    );
    // a key in the head and the trailers: one attribute, both values, in order
    assert_eq!(
        arr(&server, "rpc.response.metadata.x-both").as_deref(),
        Some("[\"head\",\"tail\"]")
    );
    assert_rpc(&server, WATCH);
}

/// Without a target and without a `Host` header, a tonic channel's requests have no server
/// address; the target given makes one.
#[tokio::test]
async fn the_client_needs_its_target_for_server_address() {
    let (t, m) = (Telemetry::new(), Metrics::new());
    let addr = axum_server(server_layer(&t, &m)).await;
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let traced = ServiceBuilder::new()
        .layer(OtelLayer::client().with_tracer_provider(&t.provider))
        .service(channel);
    let mut client = HealthClient::new(traced);
    client.check(check("ok")).await.unwrap();
    let client_span = one(&t, SpanKind::Client).await;
    assert_rpc(&client_span, CHECK);
    assert!(
        !has(&client_span, "server.address"),
        "tonic sends origin-form requests"
    );
}

// ------------------------------------------------------------------ calls without a status

/// A gRPC answer that ends without any `grpc-status` (an HTTP `200`, no trailers): an error on
/// both sides, `error.type = grpc_status_missing`, no status recorded (tonic reports UNKNOWN to
/// its caller).
#[tokio::test]
async fn a_call_that_ends_without_a_status_is_an_error() {
    let (t, m) = (Telemetry::new(), Metrics::new());
    let app = Router::new()
        .route(
            "/broken.Service/Call",
            axum::routing::post(|| async {
                (
                    [(http::header::CONTENT_TYPE, "application/grpc")],
                    bytes::Bytes::from_static(&[0, 0, 0, 0, 0]),
                )
            }),
        )
        .layer(server_layer(&t, &m));
    let (listener, addr) = listener().await;
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut grpc = tonic::client::Grpc::new(channel(addr, &t, &m).await);
    let result = unary(&mut grpc, "/broken.Service/Call").await;
    assert!(result.is_err(), "{result:?}");
    let server = one(&t, SpanKind::Server).await;
    assert_failed(&server, "grpc_status_missing");
    assert_eq!(code_of(&server), None);
    let client_span = one(&t, SpanKind::Client).await;
    assert_failed(&client_span, "grpc_status_missing");
}

/// SEMCONV 6.3: a `grpc-status` outside the known codes (a trailers-only answer over a real h2c
/// server) is recorded as that number on both sides, and is an error on both (taken as
/// `UNKNOWN` on the server).
#[tokio::test]
async fn a_status_outside_the_known_codes_is_recorded_as_its_number() {
    let (t, m) = (Telemetry::new(), Metrics::new());
    let app = Router::new()
        .route(
            "/odd.Service/Call",
            axum::routing::post(|| async {
                (
                    [
                        (http::header::CONTENT_TYPE, "application/grpc"),
                        (http::HeaderName::from_static("grpc-status"), "42"),
                    ],
                    "",
                )
            }),
        )
        .layer(server_layer(&t, &m));
    let (listener, addr) = listener().await;
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut grpc = tonic::client::Grpc::new(channel(addr, &t, &m).await);
    let result = unary(&mut grpc, "/odd.Service/Call").await;
    assert!(result.is_err(), "{result:?}");
    let server = one(&t, SpanKind::Server).await;
    assert_eq!(code_of(&server).as_deref(), Some("42"));
    assert_failed(&server, "42");
    let client_span = one(&t, SpanKind::Client).await;
    assert_eq!(code_of(&client_span).as_deref(), Some("42"));
    assert!(is_error(&client_span));
}

/// The server's stream fails mid-way (its body errors: hyper resets the stream): an error on
/// the client, which got no status.
#[tokio::test]
async fn a_stream_the_server_resets_is_an_error_on_the_client() {
    let (t, m) = (Telemetry::new(), Metrics::new());
    let app = Router::new()
        .route(
            "/broken.Service/Stream",
            axum::routing::post(|| async {
                let chunks = tokio_stream::iter(vec![
                    Ok(bytes::Bytes::from_static(&[0, 0, 0, 0, 0])),
                    Err(std::io::Error::other("the server fails")),
                ]);
                (
                    [(http::header::CONTENT_TYPE, "application/grpc")],
                    axum::body::Body::from_stream(chunks),
                )
            }),
        )
        .layer(server_layer(&t, &m));
    let (listener, addr) = listener().await;
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut grpc = tonic::client::Grpc::new(channel(addr, &t, &m).await);
    grpc.ready().await.unwrap();
    let response = grpc
        .server_streaming::<Num, Num, Codec>(
            Request::new(Num { n: 1 }),
            PathAndQuery::from_static("/broken.Service/Stream"),
            Codec::default(),
        )
        .await;
    if let Ok(response) = response {
        let mut stream = response.into_inner();
        while let Ok(Some(_)) = stream.message().await {}
    }
    let server = one(&t, SpanKind::Server).await;
    assert_failed(&server, "response_body");
    let client_span = one(&t, SpanKind::Client).await;
    assert!(is_error(&client_span), "{client_span:?}");
    assert!(attr_str(&client_span, "error.type").is_some());
}

/// No server: the call fails before any status, `error.type` as for HTTP.
#[tokio::test]
async fn a_transport_failure_before_a_status_is_classified_as_for_http() {
    let (t, m) = (Telemetry::new(), Metrics::new());
    let (listener, addr) = listener().await;
    drop(listener);
    let target = format!("http://{addr}");
    let channel = Endpoint::from_shared(target.clone())
        .unwrap()
        .connect_lazy();
    let traced = ServiceBuilder::new()
        .layer(
            OtelLayer::client()
                .with_tracer_provider(&t.provider)
                .with_meter_provider(&m.provider)
                .with_target(target.parse().unwrap()),
        )
        .service(channel);
    let mut client = HealthClient::new(traced);
    let status = client.check(check("ok")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let span = one(&t, SpanKind::Client).await;
    assert!(is_error(&span));
    // tonic's `transport::Error` is walked with the `tonic` feature
    #[cfg(feature = "tonic")]
    assert_eq!(
        attr_str(&span, "error.type").as_deref(),
        Some("connect"),
        "{span:?}"
    );
    assert_eq!(code_of(&span), None, "no status arrived");
}

// ------------------------------------------------------------------ gRPC-Web

/// A health server behind tonic-web inside the server layer (gRPC-Web over HTTP/1.1).
async fn grpc_web_server(t: &Telemetry, m: &Metrics) -> SocketAddr {
    let app = Router::new()
        .route_service(
            "/grpc.health.v1.Health/{*rest}",
            HealthServer::new(TestHealth),
        )
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(server_layer(t, m));
    let (listener, addr) = listener().await;
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// One gRPC-Web call of `method` for `service` over HTTP/1.1: the whole response body.
async fn grpc_web_call(addr: SocketAddr, method: &str, service: &str) -> bytes::Bytes {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let msg = prost::Message::encode_to_vec(&HealthCheckRequest {
        service: service.into(),
    });
    let mut body = vec![0u8];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(&msg);
    let req = http::Request::post(format!("http://{addr}/grpc.health.v1.Health/{method}"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap().to_bytes()
}

/// gRPC-Web (tonic-web inside the layer, over HTTP/1.1): the status travels in a trailer frame
/// of the body, read from there.
#[tokio::test]
async fn grpc_web_statuses_come_from_the_trailer_frame() {
    let (t, m) = (Telemetry::new(), Metrics::new());
    let addr = grpc_web_server(&t, &m).await;
    for (service, want, error) in [
        ("ok", "OK", false),
        ("code-13", "INTERNAL", true),
        ("code-5", "NOT_FOUND", false),
    ] {
        t.reset();
        grpc_web_call(addr, "Check", service).await;
        let server = one(&t, SpanKind::Server).await;
        assert_eq!(server.name, CHECK);
        assert_rpc(&server, CHECK);
        assert_eq!(code_of(&server).as_deref(), Some(want), "{service}");
        assert_eq!(is_error(&server), error, "{service}");
    }
}

/// tonic's `Routes` fallback answers every unmatched path — plain HTTP ones too — with a gRPC
/// `UNIMPLEMENTED` (HTTP 200): a `fallback` set after `merge` takes that back.
#[tokio::test]
async fn a_fallback_after_merge_answers_unmatched_http_paths_again() {
    let (t, m) = (Telemetry::new(), Metrics::new());
    let grpc = tonic::service::Routes::new(HealthServer::new(TestHealth)).into_axum_router();
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .merge(grpc)
        .fallback(|| async { (http::StatusCode::NOT_FOUND, "no such page") })
        .layer(server_layer(&t, &m));
    let (listener, addr) = listener().await;
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    assert_eq!(reqwest_free_get(addr, "/nope").await, "no such page");
    let span = one(&t, SpanKind::Server).await;
    assert_eq!(span.name, "GET");
    assert_eq!(attr_i64(&span, "http.response.status_code"), Some(404));
    // the gRPC service is still served
    t.reset();
    let mut client = HealthClient::new(channel(addr, &t, &m).await);
    client.check(check("ok")).await.unwrap();
    assert_eq!(one(&t, SpanKind::Server).await.name, CHECK);
}

// ------------------------------------------------------------------ review findings

/// gRPC-shaped calls to paths a gRPC service does not answer (an HTTP route answering text,
/// whatever the path): `_OTHER`, so the caller's paths never become metric series.
#[tokio::test]
async fn paths_no_grpc_service_answered_are_other_on_the_metric() {
    let (t, m) = (Telemetry::new(), Metrics::new());
    let app = Router::new()
        .route("/users/{id}", axum::routing::post(|| async { "not gRPC" }))
        .layer(server_layer(&t, &m));
    let (listener, addr) = listener().await;
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut grpc = tonic::client::Grpc::new(channel(addr, &t, &m).await);
    for i in 0..20 {
        let _ = unary(&mut grpc, &format!("/users/{i}")).await;
    }
    assert!(eventually(5, || by_kind(&t.spans(), SpanKind::Server).len() == 20).await);
    let methods: std::collections::BTreeSet<String> = m
        .points("rpc.server.call.duration")
        .iter()
        .filter_map(|p| p.attr("rpc.method").map(str::to_owned))
        .collect();
    assert_eq!(methods.into_iter().collect::<Vec<_>>(), ["_OTHER"]);
    for s in by_kind(&t.spans(), SpanKind::Server) {
        assert_eq!(s.name, "grpc");
        assert!(attr_str(&s, "rpc.method_original").is_some_and(|m| m.starts_with("users/")));
    }
}

/// A non-200 answer whose body tonic reads as gRPC frames, fails on and drops (a streamed 503
/// page, no Content-Length): an error on the client (UNAVAILABLE), not a cancel.
#[tokio::test]
async fn a_streamed_non_200_answer_dropped_by_tonic_is_no_cancel() {
    let (t, m) = (Telemetry::new(), Metrics::new());
    let app = Router::new().fallback(|| async {
        let page = tokio_stream::iter(vec![
            Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"<html>the gateway is down")),
            Ok(bytes::Bytes::from(vec![b'.'; 4096])),
        ]);
        (
            http::StatusCode::SERVICE_UNAVAILABLE,
            [(http::header::CONTENT_TYPE, "text/html")],
            axum::body::Body::from_stream(page),
        )
    });
    let (listener, addr) = listener().await;
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut client = HealthClient::new(channel(addr, &t, &m).await);
    let status = client.check(check("ok")).await.unwrap_err();
    assert_ne!(status.code(), Code::Ok);
    let span = one(&t, SpanKind::Client).await;
    assert_eq!(code_of(&span).as_deref(), Some("UNAVAILABLE"), "{span:?}");
    assert!(is_error(&span));
}

/// A gRPC answer with a Content-Length and its status in the trailers after the body: the
/// call ends at the trailers, not at the declared length.
#[tokio::test]
async fn a_declared_length_does_not_end_a_grpc_call_before_its_trailers() {
    use http_body::Frame;
    struct Framed(u8);
    impl http_body::Body for Framed {
        type Data = bytes::Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut TaskContext<'_>,
        ) -> Poll<Option<Result<Frame<bytes::Bytes>, Infallible>>> {
            self.0 += 1;
            Poll::Ready(match self.0 {
                1 => Some(Ok(Frame::data(bytes::Bytes::from_static(&[
                    0, 0, 0, 0, 2, 8, 1,
                ])))),
                2 => {
                    let mut t = http::HeaderMap::new();
                    t.insert("grpc-status", "13".parse().unwrap());
                    Some(Ok(Frame::trailers(t)))
                }
                _ => None,
            })
        }
    }
    let (t, m) = (Telemetry::new(), Metrics::new());
    let app = Router::new()
        .route(
            "/declared.Service/Call",
            axum::routing::post(|| async {
                (
                    [
                        (http::header::CONTENT_TYPE, "application/grpc"),
                        (http::header::CONTENT_LENGTH, "7"),
                    ],
                    axum::body::Body::new(Framed(0)),
                )
            }),
        )
        .layer(server_layer(&t, &m));
    let (listener, addr) = listener().await;
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut grpc = tonic::client::Grpc::new(channel(addr, &t, &m).await);
    let status = unary(&mut grpc, "/declared.Service/Call")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    for kind in [SpanKind::Server, SpanKind::Client] {
        let span = one(&t, kind.clone()).await;
        assert_eq!(code_of(&span).as_deref(), Some("INTERNAL"), "{kind:?}");
    }
}

/// gRPC-Web: a stream that fails after its messages carries INTERNAL in its trailer frame.
#[tokio::test]
async fn grpc_web_failure_in_the_trailer_frame_after_messages() {
    let (t, m) = (Telemetry::new(), Metrics::new());
    let addr = grpc_web_server(&t, &m).await;
    let bytes = grpc_web_call(addr, "Watch", "fail-after-2").await;
    assert!(
        bytes
            .windows(14)
            .any(|w| w.eq_ignore_ascii_case(b"grpc-status:13")),
        "the trailer frame: {bytes:?}"
    );
    let server = one(&t, SpanKind::Server).await;
    assert_eq!(code_of(&server).as_deref(), Some("INTERNAL"));
    assert!(is_error(&server));
}

/// What the sampler sees at the start: `rpc.method` with a known-method list, not without one
/// (then it is set at the end, once).
#[tokio::test]
async fn the_sampler_sees_rpc_method_only_with_a_list() {
    use opentelemetry::trace::{Link, TraceId};
    use opentelemetry::KeyValue;
    use opentelemetry_sdk::trace::{
        InMemorySpanExporter, SamplingDecision, SamplingResult, SdkTracerProvider, ShouldSample,
    };
    #[derive(Clone, Debug, Default)]
    struct Seen(std::sync::Arc<std::sync::Mutex<Vec<Vec<String>>>>);
    impl ShouldSample for Seen {
        fn should_sample(
            &self,
            _: Option<&opentelemetry::Context>,
            _: TraceId,
            _: &str,
            kind: &SpanKind,
            attributes: &[KeyValue],
            _: &[Link],
        ) -> SamplingResult {
            if *kind == SpanKind::Server {
                self.0
                    .lock()
                    .unwrap()
                    .push(attributes.iter().map(|kv| kv.key.to_string()).collect());
            }
            SamplingResult {
                decision: SamplingDecision::RecordAndSample,
                attributes: Vec::new(),
                trace_state: Default::default(),
            }
        }
    }
    for (list, want) in [(true, true), (false, false)] {
        let seen = Seen::default();
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .with_sampler(seen.clone())
            .build();
        let mut layer = OtelLayer::server().with_tracer_provider(&provider);
        if list {
            layer = layer.with_grpc_methods([CHECK]);
        }
        let addr = axum_server(layer).await;
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        HealthClient::new(channel).check(check("ok")).await.unwrap();
        let keys = seen
            .0
            .lock()
            .unwrap()
            .pop()
            .expect("the server span was sampled");
        assert_eq!(
            keys.iter().any(|k| k == "rpc.method"),
            want,
            "list: {list}, {keys:?}"
        );
        assert!(keys.iter().any(|k| k == "rpc.system.name"));
        assert!(eventually(5, || !exporter.get_finished_spans().unwrap().is_empty()).await);
        let span = exporter.get_finished_spans().unwrap().remove(0);
        assert_rpc(&span, CHECK);
    }
}
