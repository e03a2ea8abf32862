//! A global propagator is called, whatever its fields: one shaped exactly like W3C Trace
//! Context (`traceparent`, `tracestate`) may add vendor `tracestate` entries or change what it
//! extracts, and a global is a `dyn TextMapPropagator` the crate cannot tell from the SDK's. A
//! case of its own process: it installs a global propagator.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use http::Request;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{global, Context};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tower::{Layer, ServiceExt};
use tower_otel_http::OtelLayer;

use crate::common::*;

/// W3C Trace Context with a vendor entry added to every `tracestate` it writes, counting its
/// calls.
#[derive(Debug, Clone, Default)]
struct Vendor {
    extracted: Arc<AtomicUsize>,
    injected: Arc<AtomicUsize>,
}

impl TextMapPropagator for Vendor {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        self.injected.fetch_add(1, Ordering::Relaxed);
        TraceContextPropagator::new().inject_context(cx, injector);
        injector.set("tracestate", "vendor=seen".to_owned());
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        self.extracted.fetch_add(1, Ordering::Relaxed);
        TraceContextPropagator::new().extract_with_context(cx, extractor)
    }

    fn fields(&self) -> FieldIter<'_> {
        static FIELDS: std::sync::OnceLock<[String; 2]> = std::sync::OnceLock::new();
        FieldIter::new(FIELDS.get_or_init(|| ["traceparent".into(), "tracestate".into()]))
    }
}

pub async fn a_global_w3c_shaped_propagator_is_called_on_both_sides() {
    let vendor = Vendor::default();
    global::set_text_map_propagator(vendor.clone());
    let t = Telemetry::new();

    // server: the caller's context is extracted by the global propagator
    let app = Router::new()
        .route(
            "/x",
            get(|| async {
                let cx = Context::current();
                cx.span().span_context().trace_id().to_string()
            }),
        )
        .layer(t.layer());
    let req = Request::get("/x")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(axum::body::Body::empty())
        .unwrap();
    let (_, _, body) = send(app, req).await;
    assert_eq!(body, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(
        vendor.extracted.load(Ordering::Relaxed) >= 1,
        "the global propagator extracted the caller's context"
    );

    // client: the outgoing headers are the global propagator's
    let seen = Arc::new(std::sync::Mutex::new(None::<String>));
    let s = seen.clone();
    let client = OtelLayer::client()
        .with_tracer_provider(&t.provider)
        .layer(tower::service_fn(move |req: Request<String>| {
            let s = s.clone();
            async move {
                *s.lock().unwrap() = req
                    .headers()
                    .get("tracestate")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
            }
        }));
    let req = Request::get("http://downstream.test/y")
        .body(String::new())
        .unwrap();
    client.oneshot(req).await.unwrap();
    assert!(vendor.injected.load(Ordering::Relaxed) >= 1);
    assert_eq!(
        seen.lock().unwrap().as_deref(),
        Some("vendor=seen"),
        "the vendor entry the global propagator adds went out"
    );
}
