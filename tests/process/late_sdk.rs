//! An SDK installed after the server started: the first request after
//! `global::set_tracer_provider` / `global::set_meter_provider` is recorded on every thread,
//! however many requests each thread served before (nothing waits for a per-thread recheck).
//! A case of its own process: it installs global providers.

use std::sync::{Arc, Barrier};

use axum::routing::get;
use axum::Router;
use opentelemetry::global;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tower_otel_http::OtelLayer;

use crate::common::*;

const THREADS: usize = 2;

pub fn the_first_request_after_the_sdk_is_installed_is_recorded_on_every_thread() {
    // the defaults (the globals as they stand), built before any SDK
    let app = Router::new()
        .route("/x", get(|| async { "ok" }))
        .layer(OtelLayer::server());
    let installed = Arc::new(Barrier::new(THREADS + 1));
    let warmed = Arc::new(Barrier::new(THREADS + 1));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (app, installed, warmed) = (app.clone(), installed.clone(), warmed.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    // this thread has looked at the (empty) globals, and served a few requests
                    for _ in 0..5 {
                        send(app.clone(), get_req("/x")).await;
                    }
                    warmed.wait();
                    installed.wait();
                    // the very next request on this thread
                    send(app.clone(), get_req("/x")).await;
                });
            })
        })
        .collect();
    warmed.wait();
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    global::set_tracer_provider(provider.clone());
    let metrics = Metrics::new();
    global::set_meter_provider(metrics.provider.clone());
    installed.wait();
    for w in workers {
        w.join().unwrap();
    }
    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(
        spans.len(),
        THREADS,
        "one span per thread, for the first request after the SDK was installed"
    );
    let measured: u64 = metrics
        .points("http.server.request.duration")
        .iter()
        .map(|p| p.count)
        .sum();
    assert_eq!(measured, THREADS as u64, "and one measurement per thread");
}
