//! A process that only forwards — the server layer in, the client layer out (hyper-util and
//! reqwest), the crate's propagator installed as the global one (alone, then in a composite with
//! the SDK's baggage propagator), nothing in the process changing the trace state — hands on
//! every valid `tracestate` exactly, never an invalid one, and the random flag as it came: with
//! no SDK installed (the context passed through) and with one (spans recorded, and dropped by
//! the sampler). A case of its own process: it installs the global propagator and tracer
//! provider.
#![cfg(feature = "reqwest")]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::Request as AxumRequest;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::global;
use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry_sdk::propagation::BaggagePropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tower::{Layer, ServiceExt};
use tower_otel_http::propagation::W3cPropagator;
use tower_otel_http::OtelLayer;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

type Seen = Arc<Mutex<Vec<HeaderMap>>>;

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The forwarder: the layers with every default (the global provider and propagator).
async fn forwarder() -> (SocketAddr, Seen) {
    let seen = Seen::default();
    let record = seen.clone();
    let down = serve(Router::new().route(
        "/leaf",
        get(move |req: AxumRequest| {
            record.lock().unwrap().push(req.headers().clone());
            async { "leaf" }
        }),
    ))
    .await;
    let hyper = OtelLayer::client()
        .layer(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
    let reqwest = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(OtelLayer::client())
        .build();
    let url = format!("http://{down}/leaf");
    let hyper_url = url.clone();
    let front = serve(
        Router::new()
            .route(
                "/hyper",
                get(move || {
                    let (hyper, url) = (hyper.clone(), hyper_url.clone());
                    async move {
                        let req = Request::get(url).body(Full::default()).unwrap();
                        let resp = hyper.oneshot(req).await.unwrap();
                        resp.into_body().collect().await.unwrap().to_bytes()
                    }
                }),
            )
            .route(
                "/reqwest",
                get(move || {
                    let (reqwest, url) = (reqwest.clone(), url.clone());
                    async move {
                        reqwest
                            .get(url)
                            .send()
                            .await
                            .unwrap()
                            .bytes()
                            .await
                            .unwrap()
                    }
                }),
            )
            .layer(OtelLayer::server()),
    )
    .await;
    (front, seen)
}

/// Valid `tracestate` values as senders write them, each with the list that must go on.
fn valid() -> Vec<(Vec<String>, String)> {
    let long_key = format!("{}@{}", "t".repeat(241), "s".repeat(14));
    let members32: Vec<String> = (0..32).map(|i| format!("v{i}@x=~{i} ")).collect();
    let canonical32: Vec<String> = (0..32).map(|i| format!("v{i}@x=~{i}")).collect();
    let wide: Vec<String> = (0..32)
        .map(|i| {
            format!(
                "{i:02}{}@{}={}",
                "k".repeat(239),
                "s".repeat(14),
                "w".repeat(256)
            )
        })
        .collect();
    vec![
        (vec!["foo@@bar=1,bar=2".into()], "foo@@bar=1,bar=2".into()),
        (vec!["foo@bar@baz=1".into()], "foo@bar@baz=1".into()),
        (
            vec![format!("{long_key}=x,bar=2")],
            format!("{long_key}=x,bar=2"),
        ),
        (
            vec![" a=1 ,\t, b= 2".into(), "".into(), "c=3".into()],
            "a=1,b= 2,c=3".into(),
        ),
        (
            members32.chunks(8).map(|c| c.join(",")).collect(),
            canonical32.join(","),
        ),
        (vec![wide.join(",")], wide.join(",")),
    ]
}

/// Invalid ones: nothing of them may go on.
fn invalid() -> Vec<Vec<String>> {
    let members33: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
    vec![
        vec!["foo=,bar=3".into()],
        vec!["a=1".into(), "@b=2".into()],
        vec!["a=1,a=2".into()],
        vec![format!("{}=1", "k".repeat(257))],
        vec![format!("k={}", "v".repeat(257))],
        members33.chunks(9).map(|c| c.join(",")).collect(),
        vec!["UPPER=1".into()],
    ]
}

async fn check_all(front: SocketAddr, seen: &Seen, phase: &str) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let cases = valid()
        .into_iter()
        .map(|(fields, out)| (fields, Some(out)))
        .chain(invalid().into_iter().map(|f| (f, None)));
    for (fields, want) in cases {
        for flags in ["00", "01", "02", "03"] {
            for path in ["hyper", "reqwest"] {
                let mut req = Request::get(format!("http://{front}/{path}")).header(
                    "traceparent",
                    format!("00-{TRACE}-00f067aa0ba902b7-{flags}"),
                );
                for f in &fields {
                    req = req.header("tracestate", f.as_str());
                }
                let resp = client
                    .request(req.body(Full::default()).unwrap())
                    .await
                    .unwrap();
                resp.into_body().collect().await.unwrap();
                let down = seen.lock().unwrap().pop().unwrap();
                let case = format!("{phase} {path} {flags} {fields:?}");
                let tp = down.get("traceparent").unwrap().to_str().unwrap();
                assert!(tp.starts_with(&format!("00-{TRACE}-")), "{case}: {tp}");
                assert_eq!(&tp[53..], flags, "{case}: the flags as they came");
                let ts: Vec<&str> = down
                    .get_all("tracestate")
                    .iter()
                    .map(|v| v.to_str().unwrap())
                    .collect();
                match &want {
                    Some(w) => assert_eq!(ts, [w.as_str()], "{case}"),
                    None => assert!(ts.is_empty(), "{case}: {ts:?}"),
                }
            }
        }
    }
}

pub async fn a_forwarding_process_hands_on_every_valid_tracestate_exactly() {
    global::set_text_map_propagator(W3cPropagator::new());
    let (front, seen) = forwarder().await;
    // no SDK: the caller's context passes through
    check_all(front, &seen, "no SDK").await;

    // an SDK: a server span and a client span in between (recorded when the caller sampled,
    // dropped by the parent-based sampler when not)
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    global::set_tracer_provider(provider.clone());
    check_all(front, &seen, "SDK").await;
    let spans = exporter.get_finished_spans().unwrap();
    assert!(
        spans.len() >= 2 * 4 * 2 * valid().len(),
        "{} spans recorded",
        spans.len()
    );

    // the crate's propagator inside a composite, for baggage too
    global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(W3cPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));
    check_all(front, &seen, "composite").await;
    let _ = provider.shutdown();
}
