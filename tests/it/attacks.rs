//! Hostile traffic over real loopback TCP, and the security rules: what a caller controls
//! (paths, methods, `Host`, huge values, `tracestate`, credentials in headers and queries,
//! `traceparent`, proxy headers) can neither multiply metric series, nor grow memory, nor leak
//! secrets into telemetry, nor take over tracing decisions. Each load is bounded in count; the
//! memory checks compare the process's resident set size after a warm-up (the tests of this
//! binary run one at a time for that).

use crate::common;
use crate::hardening;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Request as AxumRequest;
use axum::routing::get;
use axum::Router;
use common::*;
use hardening::*;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData};
use tower::{Layer, ServiceExt};
use tower_otel_http::semconv::{DEFAULT_MAX_VALUE_LENGTH, DEFAULT_REDACTED_QUERY_KEYS};
use tower_otel_http::{OtelLayer, OtelServerLayer};

type HyperClient = Client<HttpConnector, Full<Bytes>>;

fn hyper_client() -> HyperClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Resident memory may grow by at most this much over a load (generous: the point is that it
/// does not grow with the attack's size).
const MEMORY_BOUND: u64 = 64 * MIB;

/// Drive `requests` requests built by `make(i)` at `concurrency` over keep-alive connections;
/// each response must have status `expect` (its body is read).
async fn drive(
    client: HyperClient,
    requests: usize,
    concurrency: usize,
    expect: StatusCode,
    make: impl Fn(usize) -> Request<Full<Bytes>> + Send + Sync + 'static,
) {
    let make = Arc::new(make);
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (client, make) = (client.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            for i in (w..requests).step_by(concurrency) {
                let resp = client.request(make(i)).await.unwrap();
                assert_eq!(resp.status(), expect, "request {i}");
                resp.into_body().collect().await.unwrap();
            }
        }));
    }
    let all = async {
        for t in tasks {
            t.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(300), all)
        .await
        .expect("the load finished");
}

/// A tracer provider over a [`Probe`] (spans counted and checked, not kept).
fn probed(
    check: impl Fn(&SpanData) -> Result<(), String> + Send + Sync + 'static,
) -> (SdkTracerProvider, Arc<Probe>) {
    let probe = Probe::new(8, check);
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(ProbeExporter(probe.clone()))
        .build();
    (provider, probe)
}

fn layer(provider: &SdkTracerProvider, m: &Metrics) -> OtelServerLayer {
    OtelLayer::server()
        .with_tracer_provider(provider)
        .with_meter_provider(&m.provider)
        .with_active_requests(true)
}

/// A cheap pseudo-random sequence (xorshift), so that the loads are reproducible.
fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn random_token(seed: &mut u64, alphabet: &[u8], min: usize, max: usize) -> String {
    let len = min + (rng(seed) as usize) % (max - min + 1);
    (0..len)
        .map(|_| char::from(alphabet[(rng(seed) as usize) % alphabet.len()]))
        .collect()
}

fn check(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what.to_owned())
    }
}

fn report(what: &str, before: u64, after: u64) {
    println!("{what}: RSS {} MiB -> {} MiB", before / MIB, after / MIB);
    let growth = after.saturating_sub(before);
    assert!(
        growth < MEMORY_BOUND,
        "{what}: RSS grew by {} MiB",
        growth / MIB
    );
}

// ---------------------------------------------------------------- cardinality

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_unmatched_paths_share_one_series() {
    const REQUESTS: usize = 10_000;
    let _serial = serial().await;
    let m = Metrics::new();
    let (provider, probe) = probed(|s| {
        check(str_attr(s, "http.route").is_none(), "no http.route")?;
        check(s.name == "GET", "span name is the method")?;
        check(
            str_attr(s, "url.path").is_some_and(|p| p.starts_with("/probe/")),
            "url.path recorded",
        )
    });
    let app = Router::new()
        .route("/api/users/{id}", get(|| async { "user" }))
        .layer(layer(&provider, &m));
    let addr = serve(app).await;
    let client = hyper_client();
    let path = move |i: usize| {
        Request::get(format!("http://{addr}/probe/{i}/{:x}", i * 7919))
            .body(Full::default())
            .unwrap()
    };
    drive(client.clone(), 500, 16, StatusCode::NOT_FOUND, path).await;
    let before = rss_bytes();
    drive(client, REQUESTS, 16, StatusCode::NOT_FOUND, move |i| {
        path(500 + i)
    })
    .await;
    let after = rss_bytes();

    assert!(eventually(5, || probe.servers() == REQUESTS + 500).await);
    probe.assert_checks_passed();
    let points = m.points(DURATION);
    assert_eq!(
        points.len(),
        1,
        "one series for every unmatched path: {points:?}"
    );
    let p = &points[0];
    assert_eq!(p.count, (REQUESTS + 500) as u64);
    assert_eq!(p.attr("http.response.status_code"), Some("404"));
    for never in ["http.route", "url.path", "server.address"] {
        assert_eq!(p.attr(never), None, "{never}");
    }
    assert_eq!(m.active(), 0.0);
    report("10 000 unmatched paths", before, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_random_methods_are_all_other() {
    const REQUESTS: usize = 1_000;
    let _serial = serial().await;
    let m = Metrics::new();
    let sent: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let (provider, probe) = probed(|s| {
        check(
            str_attr(s, "http.request.method").as_deref() == Some("_OTHER"),
            "method _OTHER",
        )?;
        let original = str_attr(s, "http.request.method_original").unwrap_or_default();
        check(
            !original.is_empty()
                && !["GET", "POST", "PUT", "DELETE", "HEAD"].contains(&original.as_str()),
            "method_original is the unknown method",
        )?;
        check(s.name == "HTTP /x", "span name HTTP /x")
    });
    let app = Router::new()
        .route("/x", get(|| async { "x" }))
        .layer(layer(&provider, &m));
    let addr = serve(app).await;
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let known = ["get", "Get", "post", "pUT", "delete", "Head", "options"];
    let methods: Vec<String> = (0..REQUESTS + 100)
        .map(|i| match i % 10 {
            0 => known[i / 10 % known.len()].to_owned(),
            1 => random_token(&mut seed, b"!#$%&'*+.^_`|~0123456789abcxyz", 1, 16),
            _ => random_token(&mut seed, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", 3, 12),
        })
        .filter(|m| !tower_otel_http::semconv::DEFAULT_KNOWN_METHODS.contains(&m.as_str()))
        .take(REQUESTS + 50)
        .collect();
    sent.lock().unwrap().extend(methods.iter().cloned());
    let methods = Arc::new(methods);
    let make = {
        let methods = methods.clone();
        move |i: usize| {
            Request::builder()
                .method(Method::from_bytes(methods[i].as_bytes()).unwrap())
                .uri(format!("http://{addr}/x"))
                .body(Full::default())
                .unwrap()
        }
    };
    let client = hyper_client();
    drive(
        client.clone(),
        50,
        8,
        StatusCode::METHOD_NOT_ALLOWED,
        make.clone(),
    )
    .await;
    let before = rss_bytes();
    drive(
        client,
        REQUESTS,
        16,
        StatusCode::METHOD_NOT_ALLOWED,
        move |i| make(50 + i),
    )
    .await;
    let after = rss_bytes();

    assert!(eventually(5, || probe.servers() == REQUESTS + 50).await);
    probe.assert_checks_passed();
    let points = m.points(DURATION);
    assert_eq!(points.len(), 1, "{points:?}");
    assert_eq!(points[0].attr("http.request.method"), Some("_OTHER"));
    assert_eq!(points[0].attr("http.response.status_code"), Some("405"));
    assert_eq!(points[0].count, (REQUESTS + 50) as u64);
    let active = m.points("http.server.active_requests");
    assert_eq!(active.len(), 1, "{active:?}");
    assert_eq!(m.active(), 0.0);
    // the sample of spans kept: each original method is one that was sent
    for s in probe.sample() {
        let original = str_attr(&s, "http.request.method_original").unwrap();
        assert!(sent.lock().unwrap().contains(&original), "{original}");
    }
    report("1 000 random methods", before, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_host_headers_stay_off_the_metrics() {
    const REQUESTS: usize = 2_000;
    let _serial = serial().await;
    let m = Metrics::new();
    let (provider, probe) = probed(|s| {
        check(
            str_attr(s, "server.address")
                .is_some_and(|h| h.starts_with('h') && h.ends_with(".example")),
            "server.address from the Host header",
        )
    });
    let app = Router::new()
        .route("/x", get(|| async { "x" }))
        .layer(layer(&provider, &m));
    let addr = serve(app).await;
    let make = move |i: usize| {
        Request::get(format!("http://{addr}/x"))
            .header(
                "host",
                format!("h{:x}.example:{}", i * 104_729, 1000 + i % 60_000),
            )
            .body(Full::default())
            .unwrap()
    };
    let client = hyper_client();
    drive(client.clone(), 200, 8, StatusCode::OK, make).await;
    let before = rss_bytes();
    drive(client.clone(), REQUESTS, 16, StatusCode::OK, move |i| {
        make(200 + i)
    })
    .await;
    let after = rss_bytes();
    assert!(eventually(5, || probe.servers() == REQUESTS + 200).await);
    probe.assert_checks_passed();
    let points = m.points(DURATION);
    assert_eq!(
        points.len(),
        1,
        "no server.address on metrics by default: {points:?}"
    );
    assert_eq!(points[0].attr("server.address"), None);
    assert_eq!(points[0].attr("server.port"), None);
    report("random Host headers", before, after);

    // the opt-in puts them there: one series per Host (what the default protects against)
    let opted = Metrics::new();
    let app = Router::new()
        .route("/x", get(|| async { "x" }))
        .layer(layer(&provider, &opted).with_metrics_server_address(true));
    let addr2 = serve(app).await;
    drive(client, 50, 4, StatusCode::OK, move |i| {
        Request::get(format!("http://{addr2}/x"))
            .header("host", format!("h{i}.example"))
            .body(Full::default())
            .unwrap()
    })
    .await;
    assert_eq!(opted.points(DURATION).len(), 50);
}

// ---------------------------------------------------------------- huge values

/// `a` then `é` repeated: `len` bytes whose cut at an even length falls inside a character.
fn multibyte(len: usize) -> String {
    let mut s = String::from("a");
    while s.len() + 2 <= len {
        s.push('é');
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_values_are_cut_to_the_default_cap_on_a_character_boundary() {
    let _serial = serial().await;
    let t = Telemetry::new();
    let m = Metrics::new();
    // a response header the layer sees (the middleware is inside it)
    let app = Router::new()
        .route("/x", get(|| async { "x" }))
        .layer(axum::middleware::map_response(
            |mut r: axum::response::Response| async move {
                r.headers_mut().insert(
                    "x-big-response",
                    HeaderValue::from_str(&"r".repeat(65_536)).unwrap(),
                );
                r
            },
        ))
        .layer(
            t.layer()
                .with_meter_provider(&m.provider)
                .with_request_headers(["x-big"])
                .with_response_headers(["x-big-response"]),
        );
    let addr = serve(app).await;
    let path = format!("/{}", "p".repeat(20_000));
    let query = format!("q={}", "v".repeat(40_000));
    let ua = multibyte(65_536);
    let big = multibyte(65_535);
    let client = OtelLayer::client()
        .with_tracer_provider(&t.provider)
        .with_request_headers(["x-big"])
        .layer(hyper_client());
    let req = Request::get(format!("http://{addr}{path}?{query}"))
        .header(
            "user-agent",
            HeaderValue::from_bytes(ua.as_bytes()).unwrap(),
        )
        .header("x-big", HeaderValue::from_bytes(big.as_bytes()).unwrap())
        .header("x-big", HeaderValue::from_bytes(ua.as_bytes()).unwrap())
        .body(Full::default())
        .unwrap();
    let resp = client.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    resp.into_body().collect().await.unwrap();
    assert!(eventually(5, || t.spans().len() == 2).await);
    let all = t.spans();
    let server = all
        .iter()
        .find(|s| s.span_kind == SpanKind::Server)
        .unwrap();
    let client = all
        .iter()
        .find(|s| s.span_kind == SpanKind::Client)
        .unwrap();
    let cap = DEFAULT_MAX_VALUE_LENGTH;
    assert_eq!(cap, 2048);

    let q = str_attr(server, "url.query").unwrap();
    assert_eq!(q.len(), cap);
    assert_eq!(q, prefix_within(&query, cap));
    let p = str_attr(server, "url.path").unwrap();
    assert_eq!(p, prefix_within(&path, cap));
    let u = str_attr(server, "user_agent.original").unwrap();
    assert_eq!(
        u.len(),
        cap - 1,
        "cut before the character that straddles the cap"
    );
    assert_eq!(u, prefix_within(&ua, cap));
    let h = header_attr(server, "http.request.header.x-big").unwrap();
    assert_eq!(h, vec![prefix_within(&big, cap), prefix_within(&ua, cap)]);
    assert!(h.iter().all(|v| v.len() <= cap));
    let r = header_attr(server, "http.response.header.x-big-response").unwrap();
    assert_eq!(r, vec!["r".repeat(cap)]);
    // the client's url.full and captured header
    let full = str_attr(client, "url.full").unwrap();
    let want = format!("http://{addr}{path}?{query}");
    assert_eq!(full, prefix_within(&want, cap));
    let h = header_attr(client, "http.request.header.x-big").unwrap();
    assert_eq!(h, vec![prefix_within(&big, cap), prefix_within(&ua, cap)]);
    assert_eq!(m.points(DURATION).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_with_huge_values_keep_memory_flat() {
    const REQUESTS: usize = 1_000;
    let _serial = serial().await;
    let m = Metrics::new();
    let cap = DEFAULT_MAX_VALUE_LENGTH;
    let (provider, probe) = probed(move |s| {
        let within = |k: &str| str_attr(s, k).is_some_and(|v| v.len() <= cap);
        check(
            within("url.query") && within("url.path") && within("user_agent.original"),
            "capped",
        )?;
        check(
            header_attr(s, "http.request.header.x-big")
                .is_some_and(|v| v.len() == 1 && v[0].len() <= cap),
            "captured header capped",
        )
    });
    let app = Router::new()
        .route("/x", get(|| async { "x" }))
        .layer(layer(&provider, &m).with_request_headers(["x-big"]));
    let addr = serve(app).await;
    let big: Arc<str> = multibyte(65_536).into();
    let make = move |i: usize| {
        Request::get(format!("http://{addr}/x{i}?q={}", "v".repeat(60_000)))
            .header(
                "user-agent",
                HeaderValue::from_bytes(big.as_bytes()).unwrap(),
            )
            .header("x-big", HeaderValue::from_bytes(big.as_bytes()).unwrap())
            .body(Full::default())
            .unwrap()
    };
    let client = hyper_client();
    drive(client.clone(), 100, 8, StatusCode::NOT_FOUND, make.clone()).await;
    let before = rss_bytes();
    drive(client, REQUESTS, 8, StatusCode::NOT_FOUND, move |i| {
        make(100 + i)
    })
    .await;
    let after = rss_bytes();
    assert!(eventually(5, || probe.servers() == REQUESTS + 100).await);
    probe.assert_checks_passed();
    assert_eq!(m.points(DURATION).len(), 1);
    report("1 000 requests with 180 KB of values each", before, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_max_value_length_applies_everywhere() {
    const N: usize = 16;
    let _serial = serial().await;
    let t = Telemetry::new();
    let app = Router::new().route("/x", get(|| async { "x" })).layer(
        t.layer()
            .with_max_value_length(N)
            .with_request_headers(["x-big"]),
    );
    let addr = serve(app).await;
    let client = OtelLayer::client()
        .with_tracer_provider(&t.provider)
        .with_max_value_length(N)
        .with_request_headers(["x-big"])
        .layer(hyper_client());
    let ua = multibyte(100);
    let path = "/abcdefghijklmnopqrstuvwxyz";
    let query = "q=0123456789abcdefghij";
    let method = "PROPFINDEXTENDEDMETHOD";
    let req = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(format!("http://{addr}{path}?{query}"))
        .header(
            "user-agent",
            HeaderValue::from_bytes(ua.as_bytes()).unwrap(),
        )
        .header("x-big", HeaderValue::from_bytes(ua.as_bytes()).unwrap())
        .body(Full::default())
        .unwrap();
    let resp = client.oneshot(req).await.unwrap();
    resp.into_body().collect().await.unwrap();
    assert!(eventually(5, || t.spans().len() == 2).await);
    let all = t.spans();
    let server = all
        .iter()
        .find(|s| s.span_kind == SpanKind::Server)
        .unwrap();
    let client = all
        .iter()
        .find(|s| s.span_kind == SpanKind::Client)
        .unwrap();
    assert_eq!(str_attr(server, "url.path").unwrap(), &path[..N]);
    assert_eq!(str_attr(server, "url.query").unwrap(), &query[..N]);
    assert_eq!(
        str_attr(server, "user_agent.original").unwrap(),
        prefix_within(&ua, N)
    );
    assert_eq!(prefix_within(&ua, N).len(), N - 1);
    assert_eq!(
        str_attr(server, "http.request.method_original").unwrap(),
        &method[..N]
    );
    assert_eq!(
        header_attr(server, "http.request.header.x-big").unwrap(),
        vec![prefix_within(&ua, N)]
    );
    let full = format!("http://{addr}{path}?{query}");
    assert_eq!(str_attr(client, "url.full").unwrap(), &full[..N]);
    assert_eq!(
        str_attr(client, "http.request.method_original").unwrap(),
        &method[..N]
    );
    assert_eq!(
        header_attr(client, "http.request.header.x-big").unwrap(),
        vec![prefix_within(&ua, N)]
    );
}

// ---------------------------------------------------------------- tracestate

const CALLER_TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// More than 32 members do not parse (W3C Trace Context Level 2): the header is discarded
/// whole — the span's trace state is empty and nothing goes downstream — and it costs little.
async fn ten_thousand_tracestate_members_are_discarded_whole_downstream_too() {
    const REQUESTS: usize = 300;
    let _serial = serial().await;
    let m = Metrics::new();
    let members: Vec<String> = (0..10_000).map(|i| format!("k{i}=v{i}")).collect();
    let (provider, probe) = probed(move |s| {
        check(
            s.span_context.trace_state().header().is_empty(),
            "no trace state",
        )
    });
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    let downstream = serve(
        Router::new()
            .route(
                "/leaf",
                get(move |req: AxumRequest| {
                    let record = record.clone();
                    async move {
                        let ts = req
                            .headers()
                            .get_all("tracestate")
                            .iter()
                            .map(|v| v.to_str().unwrap().to_owned())
                            .collect::<Vec<_>>()
                            .join(",");
                        let mut r = record.lock().unwrap();
                        if r.len() < 10 {
                            r.push(ts);
                        }
                        "leaf"
                    }
                }),
            )
            .layer(layer(&provider, &m)),
    )
    .await;
    let client = OtelLayer::client()
        .with_tracer_provider(&provider)
        .layer(hyper_client());
    let front = serve(
        Router::new()
            .route(
                "/front",
                get(move || {
                    let client = client.clone();
                    async move {
                        let req = Request::get(format!("http://{downstream}/leaf"))
                            .body(Full::default())
                            .unwrap();
                        let resp = client.oneshot(req).await.unwrap();
                        resp.into_body().collect().await.unwrap().to_bytes()
                    }
                }),
            )
            .layer(layer(&provider, &m)),
    )
    .await;
    // one field of 10 000 members, or 50 fields of 200
    let one_field = Arc::new(members.join(","));
    let fields: Arc<Vec<String>> = Arc::new(members.chunks(200).map(|c| c.join(",")).collect());
    let make = move |i: usize| {
        let mut req =
            Request::get(format!("http://{front}/front")).header("traceparent", CALLER_TP);
        if i.is_multiple_of(2) {
            req = req.header("tracestate", one_field.as_str());
        } else {
            for f in fields.iter() {
                req = req.header("tracestate", f.as_str());
            }
        }
        req.body(Full::default()).unwrap()
    };
    let client = hyper_client();
    drive(client.clone(), 20, 4, StatusCode::OK, make.clone()).await;
    let before = rss_bytes();
    drive(client, REQUESTS, 8, StatusCode::OK, move |i| make(20 + i)).await;
    let after = rss_bytes();
    assert!(eventually(5, || probe.total() == 3 * (REQUESTS + 20)).await);
    probe.assert_checks_passed();
    for ts in seen.lock().unwrap().iter() {
        assert_eq!(ts, "", "the downstream gets no tracestate");
    }
    assert!(!seen.lock().unwrap().is_empty());
    assert_eq!(m.points(DURATION).len(), 2, "one series per route");
    report("10 000 tracestate members", before, after);
}

// ---------------------------------------------------------------- credentials in headers

const SECRET: &str = "s3cr3t-t0ken";

fn no_secret_anywhere(span: &SpanData) {
    for kv in &span.attributes {
        let v = format!("{:?}", kv.value);
        assert!(!v.contains(SECRET), "{} = {v}", kv.key);
    }
}

#[tokio::test]
async fn credential_headers_are_not_recorded_unless_forced() {
    let _serial = serial().await;
    for forced in [false, true] {
        let t = Telemetry::new();
        let app = Router::new()
            .route(
                "/login",
                get(|| async {
                    (
                        [
                            ("set-cookie", format!("session={SECRET}")),
                            ("x-resp", "visible".to_owned()),
                        ],
                        "ok",
                    )
                }),
            )
            .layer(
                t.layer()
                    .with_request_headers([
                        "authorization",
                        "Proxy-Authorization",
                        "cookie",
                        "x-request-id",
                    ])
                    .with_response_headers(["set-cookie", "x-resp"])
                    .with_sensitive_headers(forced),
            );
        let addr = serve(app).await;
        let client = OtelLayer::client()
            .with_tracer_provider(&t.provider)
            .with_request_headers([
                "authorization",
                "cookie",
                "proxy-authorization",
                "x-request-id",
            ])
            .with_response_headers(["set-cookie", "x-resp"])
            .with_sensitive_headers(forced)
            .layer(hyper_client());
        let req = Request::get(format!("http://{addr}/login"))
            .header("authorization", format!("Bearer {SECRET}"))
            .header("proxy-authorization", format!("Basic {SECRET}"))
            .header("cookie", format!("id={SECRET}"))
            .header("x-request-id", "r-1")
            .body(Full::default())
            .unwrap();
        let resp = client.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.into_body().collect().await.unwrap();
        assert!(eventually(5, || t.spans().len() == 2).await);
        for span in t.spans() {
            let side = if span.span_kind == SpanKind::Server {
                "server"
            } else {
                "client"
            };
            assert_eq!(
                header_attr(&span, "http.request.header.x-request-id"),
                Some(vec!["r-1".to_owned()]),
                "{side}"
            );
            assert_eq!(
                header_attr(&span, "http.response.header.x-resp"),
                Some(vec!["visible".to_owned()]),
                "{side}"
            );
            for (key, value) in [
                (
                    "http.request.header.authorization",
                    format!("Bearer {SECRET}"),
                ),
                (
                    "http.request.header.proxy-authorization",
                    format!("Basic {SECRET}"),
                ),
                ("http.request.header.cookie", format!("id={SECRET}")),
                (
                    "http.response.header.set-cookie",
                    format!("session={SECRET}"),
                ),
            ] {
                let got = header_attr(&span, key);
                if forced {
                    assert_eq!(got, Some(vec![value]), "{side} {key} forced");
                } else {
                    assert_eq!(got, None, "{side} {key}");
                }
            }
            if !forced {
                no_secret_anywhere(&span);
            }
        }
    }
}

// ---------------------------------------------------------------- public endpoints

#[tokio::test]
async fn a_public_endpoint_starts_a_new_trace_and_links_the_caller() {
    let _serial = serial().await;
    let t = Telemetry::new();
    let app = Router::new()
        .route("/public", get(|| async { "hi" }))
        .layer(t.layer().with_public_endpoint(true));
    let addr = serve(app).await;
    let resp = hyper_client()
        .request(
            Request::get(format!("http://{addr}/public"))
                .header("traceparent", CALLER_TP)
                .header("tracestate", "vendor=caller")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    let traceresponse = resp.headers()["traceresponse"].to_str().unwrap().to_owned();
    resp.into_body().collect().await.unwrap();
    assert!(eventually(5, || t.spans().len() == 1).await);
    let span = t.one();
    assert!(is_root(&span), "the caller is not the parent");
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    assert_ne!(span.span_context.trace_id().to_string(), caller_trace);
    assert_eq!(
        span.span_context.trace_state().header(),
        "",
        "the caller's state is not taken over"
    );
    assert_eq!(span.links.links.len(), 1);
    let link = &span.links.links[0].span_context;
    assert_eq!(link.trace_id().to_string(), caller_trace);
    assert_eq!(link.span_id().to_string(), "00f067aa0ba902b7");
    assert!(!traceresponse.contains(caller_trace), "{traceresponse}");
    assert!(traceresponse.contains(&span.span_context.trace_id().to_string()));
}

#[tokio::test]
async fn a_public_caller_cannot_force_sampling() {
    let _serial = serial().await;
    // the same service behind an internal and a public endpoint, sampling nothing on its own
    for public in [false, true] {
        let probe = Probe::new(16, |_| Ok(()));
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)))
            .with_simple_exporter(ProbeExporter(probe.clone()))
            .build();
        let seen: Arc<Mutex<Option<String>>> = Arc::default();
        let record = seen.clone();
        let downstream = serve(Router::new().route(
            "/leaf",
            get(move |headers: HeaderMap| {
                let record = record.clone();
                async move {
                    *record.lock().unwrap() = headers
                        .get("traceparent")
                        .map(|v| v.to_str().unwrap().to_owned());
                    "leaf"
                }
            }),
        ))
        .await;
        let client = OtelLayer::client()
            .with_tracer_provider(&provider)
            .layer(hyper_client());
        let front = serve(
            Router::new()
                .route(
                    "/front",
                    get(move || {
                        let client = client.clone();
                        async move {
                            let req = Request::get(format!("http://{downstream}/leaf"))
                                .body(Full::default())
                                .unwrap();
                            let resp = client.oneshot(req).await.unwrap();
                            resp.into_body().collect().await.unwrap().to_bytes()
                        }
                    }),
                )
                .layer(
                    OtelLayer::server()
                        .with_tracer_provider(&provider)
                        .with_public_endpoint(public),
                ),
        )
        .await;
        let resp = hyper_client()
            .request(
                Request::get(format!("http://{front}/front"))
                    .header("traceparent", CALLER_TP)
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.into_body().collect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent_on = seen
            .lock()
            .unwrap()
            .clone()
            .expect("a traceparent went downstream");
        if public {
            assert_eq!(
                probe.total(),
                0,
                "nothing sampled: the caller's flag was not obeyed"
            );
            assert!(
                !sent_on.contains("4bf92f3577b34da6a3ce929d0e0e4736"),
                "{sent_on}"
            );
            assert!(
                sent_on.ends_with("-00"),
                "not sampled downstream either: {sent_on}"
            );
        } else {
            // the control: an internal endpoint follows its caller
            assert_eq!(probe.total(), 2, "server and client spans sampled");
            assert!(
                sent_on.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
                "{sent_on}"
            );
            assert!(sent_on.ends_with("-01"), "{sent_on}");
        }
    }
}

// ---------------------------------------------------------------- propagation allow-list

#[tokio::test]
async fn trace_context_goes_only_to_allowed_hosts_and_subdomains() {
    use opentelemetry::baggage::{Baggage, BaggageExt};
    use opentelemetry::propagation::TextMapCompositePropagator;
    use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
    let _serial = serial().await;
    let t = Telemetry::new();
    let seen: Arc<Mutex<Vec<(String, HeaderMap)>>> = Arc::default();
    let record = seen.clone();
    let addr = serve(Router::new().route(
        "/seen",
        get(move |headers: HeaderMap| {
            let record = record.clone();
            async move {
                let host = headers["host"].to_str().unwrap().to_owned();
                record.lock().unwrap().push((host, headers));
                "seen"
            }
        }),
    ))
    .await;
    // every name resolves to the test server, so that made-up hosts reach it over loopback
    let resolver = tower::service_fn(move |_: Name| {
        std::future::ready(Ok::<_, std::io::Error>(std::iter::once(addr)))
    });
    let client_to: Client<_, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new_with_resolver(resolver));
    let client = OtelLayer::client()
        .with_tracer_provider(&t.provider)
        .with_propagator(TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ]))
        .with_propagation_hosts([".svc.cluster.local", "api.partner.example"])
        .layer(client_to);
    let hosts = [
        ("svc.cluster.local", true),
        ("users.svc.cluster.local", true),
        ("a.b.SVC.Cluster.Local", true),
        ("evilsvc.cluster.local", false),
        ("svc.cluster.local.evil.example", false),
        ("cluster.local", false),
        ("api.partner.example", true),
        ("x.api.partner.example", false),
        ("api.partner.example.evil", false),
        ("127.0.0.1", false),
    ];
    // a caller context with a trace state and baggage, all of which must stay home
    let tracer = t.provider.tracer("caller");
    let parent = tracer.start("caller");
    let mut baggage = Baggage::new();
    let _ = baggage.insert("tenant", "acme");
    let cx = Context::current_with_span(parent).with_baggage(baggage);
    let cx = {
        let sc = cx.span().span_context().clone();
        let state = sc.trace_state().insert("vendor", "x").unwrap();
        let sc = opentelemetry::trace::SpanContext::new(
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags(),
            false,
            state,
        );
        cx.with_remote_span_context(sc)
    };
    for (host, _) in hosts {
        let req = Request::get(format!("http://{host}:{}/seen", addr.port()))
            .body(Full::default())
            .unwrap();
        let resp = {
            use opentelemetry::context::FutureExt;
            client
                .clone()
                .oneshot(req)
                .with_context(cx.clone())
                .await
                .unwrap()
        };
        assert_eq!(resp.status(), StatusCode::OK, "{host}");
        resp.into_body().collect().await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), hosts.len());
    for ((host, allowed), (got_host, headers)) in hosts.iter().zip(&seen) {
        assert!(
            got_host
                .to_ascii_lowercase()
                .starts_with(&host.to_ascii_lowercase()),
            "{got_host} vs {host}"
        );
        for name in ["traceparent", "tracestate", "baggage"] {
            assert_eq!(headers.contains_key(name), *allowed, "{name} to {host}");
        }
    }
    assert_eq!(
        t.spans()
            .iter()
            .filter(|s| s.span_kind == SpanKind::Client)
            .count(),
        hosts.len(),
        "every call recorded, allowed or not"
    );
}

// ---------------------------------------------------------------- proxy headers

/// Headers sent, and the `client.address`, `url.scheme` and `server.address`/`server.port`
/// (`None`: the `Host` header's) they stand for when trusted.
type ProxyCase = (
    &'static [(&'static str, &'static str)],
    &'static str,
    &'static str,
    Option<(&'static str, i64)>,
);

#[tokio::test]
async fn proxy_headers_count_only_when_trusted() {
    let _serial = serial().await;
    let cases: [ProxyCase; 7] = [
        (
            &[("forwarded", "for=203.0.113.7;proto=https, for=10.0.0.1")],
            "203.0.113.7",
            "https",
            None,
        ),
        (
            &[
                ("x-forwarded-for", "198.51.100.9, 10.0.0.1"),
                ("x-forwarded-proto", "https"),
            ],
            "198.51.100.9",
            "https",
            None,
        ),
        (
            &[("forwarded", "for=\"[2001:db8::17]:4711\"")],
            "2001:db8::17",
            "http",
            None,
        ),
        // the host the client asked for, quoted values, the scheme's default port
        (
            &[(
                "forwarded",
                "for=\"[2001:db8::1]:443\";host=\"a.example\";proto=https, host=b.example",
            )],
            "2001:db8::1",
            "https",
            Some(("a.example", 443)),
        ),
        (
            &[
                ("x-forwarded-host", "b.example:8080, c.example"),
                ("x-forwarded-for", "198.51.100.9"),
            ],
            "198.51.100.9",
            "http",
            Some(("b.example", 8080)),
        ),
        // not a host: ignored even when trusted
        (
            &[
                ("forwarded", "host=\"a b\";for=192.0.2.1"),
                ("x-forwarded-host", "user@evil.example"),
            ],
            "192.0.2.1",
            "http",
            None,
        ),
        // not an address: ignored even when trusted
        (
            &[
                ("forwarded", "for=evil.example;proto=gopher"),
                ("x-forwarded-for", "<script>"),
            ],
            "127.0.0.1",
            "http",
            None,
        ),
    ];
    for trusted in [false, true] {
        let t = Telemetry::new();
        let addr = serve(
            Router::new()
                .route("/x", get(|| async { "x" }))
                .layer(t.layer().with_trusted_proxy_headers(trusted)),
        )
        .await;
        for (headers, client_address, scheme, server) in cases {
            t.reset();
            let mut req = Request::get(format!("http://{addr}/x"));
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let resp = hyper_client()
                .request(req.body(Full::default()).unwrap())
                .await
                .unwrap();
            resp.into_body().collect().await.unwrap();
            assert!(eventually(5, || t.spans().len() == 1).await);
            let span = t.one();
            let host = ("127.0.0.1", i64::from(addr.port()));
            let (want_client, want_scheme, want_server) = if trusted {
                (client_address, scheme, server.unwrap_or(host))
            } else {
                ("127.0.0.1", "http", host)
            };
            assert_eq!(
                str_attr(&span, "client.address").as_deref(),
                Some(want_client),
                "trusted: {trusted}, {headers:?}"
            );
            assert_eq!(
                str_attr(&span, "url.scheme").as_deref(),
                Some(want_scheme),
                "trusted: {trusted}, {headers:?}"
            );
            assert_eq!(
                (
                    str_attr(&span, "server.address").as_deref(),
                    attr_i64(&span, "server.port")
                ),
                (Some(want_server.0), Some(want_server.1)),
                "trusted: {trusted}, {headers:?}"
            );
            assert_eq!(
                str_attr(&span, "network.peer.address").as_deref(),
                Some("127.0.0.1"),
                "the peer is always the connection's"
            );
        }
    }
}

// ---------------------------------------------------------------- query redaction

#[tokio::test]
async fn every_default_sensitive_query_key_is_redacted_on_both_sides() {
    let _serial = serial().await;
    let t = Telemetry::new();
    let addr = serve(
        Router::new()
            .route("/q", get(|| async { "q" }))
            .layer(t.layer()),
    )
    .await;
    let client = OtelLayer::client()
        .with_tracer_provider(&t.provider)
        .layer(hyper_client());
    let mut queries: Vec<(String, String)> = DEFAULT_REDACTED_QUERY_KEYS
        .iter()
        .enumerate()
        .map(|(i, k)| {
            (
                format!("keep=a{i}&{k}={SECRET}{i}&other={i}"),
                format!("keep=a{i}&{k}=REDACTED&other={i}"),
            )
        })
        .collect();
    let all_in: Vec<String> = DEFAULT_REDACTED_QUERY_KEYS
        .iter()
        .map(|k| format!("{k}={SECRET}"))
        .collect();
    let all_out: Vec<String> = DEFAULT_REDACTED_QUERY_KEYS
        .iter()
        .map(|k| format!("{k}=REDACTED"))
        .collect();
    queries.push((all_in.join("&"), all_out.join("&")));
    for (query, redacted) in &queries {
        t.reset();
        let resp = client
            .clone()
            .oneshot(
                Request::get(format!("http://{addr}/q?{query}"))
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.into_body().collect().await.unwrap();
        assert!(eventually(5, || t.spans().len() == 2).await);
        for span in t.spans() {
            match span.span_kind {
                SpanKind::Server => {
                    assert_eq!(
                        str_attr(&span, "url.query").as_deref(),
                        Some(redacted.as_str())
                    )
                }
                _ => assert_eq!(
                    str_attr(&span, "url.full"),
                    Some(format!("http://{addr}/q?{redacted}"))
                ),
            }
            no_secret_anywhere(&span);
        }
    }
}
