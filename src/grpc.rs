//! gRPC: what the same layers record for tonic servers and clients, under the RPC semantic
//! conventions (v1.44.0: `rpc.system.name`, `rpc.method`, `rpc.response.status_code`).
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_otel_http::OtelLayer;
//!
//! let (_reporter, health) = tonic_health::server::health_reporter();
//! let app: Router = Router::new()
//!     .route("/hello", get(|| async { "hello" }))
//!     .merge(tonic::service::Routes::new(health).into_axum_router()) // tonic's routes
//!     .layer(OtelLayer::server()); // HTTP requests as HTTP, gRPC calls as gRPC
//! # let _ = app;
//! ```
//!
//! A request is a gRPC call when it is a `POST` whose `content-type` is `application/grpc`,
//! `application/grpc+…` (`+proto`, `+json`), `application/grpc;…`, or gRPC-Web's
//! `application/grpc-web…` (tonic-web's: a gRPC-Web response carries its status in a trailer
//! frame at the end of its body, which the layers read there for the binary
//! `application/grpc-web[+proto]`; for `application/grpc-web-text`, base64 text, only a status
//! sent in the headers is read, else the call gets no status and no error). The convention is
//! chosen per request: one layer on a root `Router`
//! records its HTTP routes under the HTTP conventions and its tonic services under the RPC
//! conventions. A gRPC call gets no HTTP attribute and no HTTP metric.
//!
//! # Where the layers go
//!
//! - **tonic inside an axum `Router`** (what most services have): merge
//!   `tonic::service::Routes::into_axum_router()` into the root router and put
//!   `.layer(OtelLayer::server())` on the root. Serve with `axum::serve`; HTTP/2 without TLS
//!   (h2c, what gRPC clients speak to a plain port) needs axum's `http2` feature.
//!   tonic's `Routes` has a fallback that answers every unmatched path, plain HTTP ones too,
//!   with a gRPC `UNIMPLEMENTED` (HTTP `200`): a `fallback` set after `merge` answers them with
//!   a 404 again. `Router::merge` panics when both routers already have a fallback: a root router
//!   with one adds each tonic service with `route_service("/package.Service/{*rest}", service)`
//!   instead. Either way a call to a service the router does not have reaches the root's
//!   fallback, recorded with `error.type` = its HTTP status and `rpc.method = _OTHER`.
//! - **tonic's own `Server`**: `Server::builder().layer(OtelLayer::server())`. With the
//!   `tonic` feature, `network.peer.*` and `client.address` come from its `TcpConnectInfo`.
//! - **A tonic `Channel`**: `ServiceBuilder::new().layer(OtelLayer::client().with_target(uri))
//!   .service(channel)`, handed to the generated client. Generated clients send origin-form
//!   requests (`/package.Service/Method`), the channel adds the origin where the layer cannot
//!   see it: [`with_target`](crate::OtelLayer::with_target) tells it the server
//!   (`server.address`/`server.port`); without it a `Host` header is used when there is one,
//!   else there is no server address. With the `tonic` feature, the channel's transport
//!   errors get an `error.type` (`connect`, `timeout`, ...).
//!
//! ```no_run
//! use tonic::transport::Endpoint;
//! use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
//! use tower::ServiceBuilder;
//! use tower_otel_http::OtelLayer;
//!
//! # async fn call() -> Result<(), Box<dyn std::error::Error>> {
//! let target = "http://inventory.svc:50051";
//! let channel = Endpoint::from_static(target).connect().await?;
//! let channel = ServiceBuilder::new()
//!     .layer(OtelLayer::client().with_target(target.parse()?))
//!     .service(channel);
//! let mut health = HealthClient::new(channel);
//! health.check(HealthCheckRequest { service: String::new() }).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # What a call gets
//!
//! A `SERVER` or `CLIENT` span named `{rpc.method}` (`grpc` when the method is `_OTHER`):
//!
//! | attribute | when |
//! |---|---|
//! | `rpc.system.name` | `grpc`, always |
//! | `rpc.method` | `package.Service/Method` from the path; on the server `_OTHER` for a method it does not have (below) |
//! | `rpc.method_original` | with `rpc.method = _OTHER`: the path's method |
//! | `rpc.response.status_code` | the status by name (`OK`, `NOT_FOUND`, ...; a number outside the known codes as that number), from a trailers-only response's headers or from the trailers; `CANCELLED` or `DEADLINE_EXCEEDED` for a call that stopped early (below); absent when no status arrived |
//! | `error.type` | when the call is an error on that side (below) |
//! | `server.address`, `server.port` | server: `:authority` (or trusted proxy headers); client: the request's URI, the layer's target, or `Host` |
//! | `network.peer.address`, `network.peer.port`, `client.address` | server: axum's `ConnectInfo` or tonic's `TcpConnectInfo` (feature `tonic`) |
//! | `rpc.request.metadata.<key>`, `rpc.response.metadata.<key>` | opt-in: the names given to `with_request_headers` / `with_response_headers`, from the request headers, the response headers and the trailers (string arrays; `authorization` and other sensitive names refused unless forced) |
//!
//! **Whether a method is known.** On the server, give the methods with
//! [`with_grpc_methods`](crate::OtelLayer::with_grpc_methods): `rpc.method` is then set when the
//! span starts (samplers see it) and any other method is `_OTHER`. Without a list, a method is
//! known only when a gRPC service answered for it — an HTTP `200` with a gRPC content-type —
//! but not when that answer is a trailers-only `UNIMPLEMENTED` without a `grpc-message` (what
//! tonic answers for a service or a method it does not have; a handler's own `UNIMPLEMENTED`
//! usually says why, and keeps its method). Anything else — no route, an answer of another
//! kind, a call dropped before any answer — is `_OTHER`: the path is the caller's choice, and
//! the metric's series must stay bounded whatever callers send. So without a list, calls that
//! stop before answering (a passed deadline, a caller's cancel before the response head) are
//! `_OTHER` on the metric, their path kept in `rpc.method_original` on the span; give the list
//! to keep their method. `rpc.method` is set at the end then: the SDK appends an attribute set
//! twice rather than replacing it, so a provisional value set at the start would be exported
//! beside the final one. A client sets the method it calls, at the start (`_OTHER` for a path
//! that is not `/package.Service/Method`).
//!
//! **Errors** (span status `Error`, `error.type` = the status name):
//!
//! | side | statuses that are errors |
//! |---|---|
//! | server | `UNKNOWN`, `DEADLINE_EXCEEDED`, `UNIMPLEMENTED`, `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS` (and a code outside the known ones) |
//! | client | every status but `OK`, except a cancel the caller chose |
//!
//! Besides the status: a non-`200` HTTP answer is an error on both sides (server: `error.type`
//! = the HTTP code; client: gRPC's HTTP mapping, as tonic applies it — `404` →
//! `UNIMPLEMENTED`, `429`/`502`/`503`/`504` → `UNAVAILABLE`, `400` → `INTERNAL`, `401` →
//! `UNAUTHENTICATED`, `403` → `PERMISSION_DENIED`, others `UNKNOWN`); a call that ends without
//! any `grpc-status` is `error.type = grpc_status_missing`; a failure before a status is
//! classified as for HTTP ([`crate::error`]: `connect`, `timeout`, `response_body`, `panic`,
//! ...).
//!
//! # When a call ends
//!
//! The span ends, and the duration is measured, when the call ends — never at the response
//! head of a streaming call:
//!
//! | call | ends | recorded as |
//! |---|---|---|
//! | unary, server, client or bidirectional streaming | at the trailers (or at the head of a trailers-only response) | the status |
//! | the caller resets the stream or drops the response (a client stopping a `Watch`) | then | `CANCELLED`, no error on either side |
//! | stopped early (dropped, reset, failed, or answered `CANCELLED`) once its `grpc-timeout` had passed | then | `DEADLINE_EXCEEDED`, an error on both sides |
//! | a status that arrived, after the deadline or not | at the trailers | that status |
//!
//! **Deadlines.** tonic's `Server` and tonic's client enforce `grpc-timeout` outside the user's
//! layers and report an expiry as a cancel (the server's layer only sees its call dropped; the
//! client's sees tonic's timeout error, and the caller gets `Code::Cancelled`); tonic services
//! inside an axum `Router` are not stopped at their deadline (the handler runs on, the client
//! gives up and resets the call). A server-side limit of tonic's own (`Server::timeout`)
//! shorter than the call's `grpc-timeout`, or without one, drops the call the same way before
//! its deadline: recorded `CANCELLED`, not an error, as a caller's cancel would be.
//!
//! The layers read the request's `grpc-timeout` (tonic's client sets it from
//! `Request::set_timeout`) and record `DEADLINE_EXCEEDED` when it has passed at the end, by
//! comparing the elapsed time: no dependency on tonic is needed. The layer's clock starts when
//! it sees the call — after the client started its own, after tonic's `Server` started its
//! timer, after whatever queued the call on a busy server — so a call stopped by its deadline
//! ends a little short of it by that clock: a call that stops within a tenth of its deadline
//! (at most 100 ms) before it counts as having missed it. A deadline set only on the
//! `Endpoint` (`Endpoint::timeout`) travels in no header: the client's layer cannot see it.
//!
//! # Metrics
//!
//! `rpc.server.call.duration` / `rpc.client.call.duration`: f64 histograms in `s` with the
//! conventions' buckets ([`crate::metrics::DURATION_BUCKETS`]), created at the first gRPC call
//! of a layer value and shared by its clones. Attributes: `rpc.system.name`, `rpc.method`
//! (`_OTHER` for unknown methods), `rpc.response.status_code`, `error.type` (when an error);
//! `server.address`/`server.port` on the client, and on the server only with
//! `with_metrics_server_address(true)`. No HTTP instrument records a gRPC call (duration,
//! active requests, body sizes).
//!
//! # Context, response header, logs
//!
//! `traceparent`, `tracestate` and `baggage` travel in the call's metadata as for HTTP
//! ([`crate::propagation`]): the client span is the parent of the server span across the call.
//! The trace-context response header ([`crate::response_header`]) is added to a gRPC
//! response's headers too, and the span's context is current in tonic handlers, so their log
//! lines carry `trace_id`/`span_id` ([`crate::logs`], feature `tracing`).
