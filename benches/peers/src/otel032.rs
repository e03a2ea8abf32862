//! The OpenTelemetry 0.32 line, for reqwest-tracing: its newest OpenTelemetry feature is
//! `opentelemetry_0_32`, so it gets its own opentelemetry, SDK and tracing bridge
//! (tracing-opentelemetry 0.33), configured as the 0.33 SDK is (batch processor, the same queue
//! and delay, a counting exporter that discards), in a process of its own.

use opentelemetry_032 as otel;
use opentelemetry_sdk_032 as sdk;

use otel::trace::TracerProvider as _;
use sdk::error::OTelSdkResult;
use sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt;

use crate::sdk::{attribute_facts, note_batch, on_flush, SpanInfo, MAX_QUEUE, SCHEDULED_DELAY};

#[derive(Debug)]
struct Counting;

impl sdk::trace::SpanExporter for Counting {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        note_batch(batch.len(), || {
            batch
                .iter()
                .map(|s| {
                    let (has_route, has_status_code, not_int) = attribute_facts(
                        s.attributes
                            .iter()
                            .map(|kv| (kv.key.as_str(), format!("{:?}", kv.value))),
                    );
                    SpanInfo {
                        name: s.name.to_string(),
                        kind: format!("{:?}", s.span_kind),
                        trace_id: s.span_context.trace_id().to_string(),
                        parent_span_id: s.parent_span_id.to_string(),
                        has_route,
                        attributes: s.attributes.len(),
                        events: s.events.len(),
                        has_status_code,
                        not_int,
                    }
                })
                .collect()
        });
        Ok(())
    }
}

/// A 0.32 SDK tracer provider as the global one, W3C Trace Context as the global propagator
/// (reqwest-tracing injects through it) and a global `tracing` subscriber with the 0.33
/// bridge's layer.
pub fn install() {
    let processor = BatchSpanProcessor::builder(Counting)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(MAX_QUEUE)
                .with_scheduled_delay(SCHEDULED_DELAY)
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .build();
    let p = provider.clone();
    on_flush(move || {
        let _ = p.force_flush();
    });
    otel::global::set_text_map_propagator(sdk::propagation::TraceContextPropagator::new());
    otel::global::set_tracer_provider(provider.clone());
    let layer = tracing_opentelemetry_033::layer().with_tracer(provider.tracer("peers"));
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry()
            .with(crate::variants::tracing_filter())
            .with(layer),
    )
    .expect("a global subscriber was already set");
}
