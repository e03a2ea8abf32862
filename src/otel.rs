//! Where tracers and propagators come from: a user-supplied one, or the globals *as they stand
//! when requests arrive* (so a layer built before the SDK is installed still traces), resolved
//! through a cached handle.

use std::fmt;
use std::sync::{Arc, RwLock};

use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanBuilder, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, InstrumentationScope};

use crate::propagation::{self, StrictHeaderExtractor};

pub(crate) fn scope() -> InstrumentationScope {
    InstrumentationScope::builder(env!("CARGO_PKG_NAME"))
        .with_version(env!("CARGO_PKG_VERSION"))
        .with_schema_url(opentelemetry_semantic_conventions::SCHEMA_URL)
        .build()
}

/// Starts a span and returns the context that holds it. Object-safe over any [`Tracer`], so
/// that a concrete tracer's span is boxed only once (inside the [`Context`]).
pub(crate) trait StartSpan: Send + Sync {
    fn start_span(&self, builder: SpanBuilder, parent: &Context) -> Context;
}

impl<T> StartSpan for T
where
    T: Tracer + Send + Sync,
    T::Span: Send + Sync + 'static,
{
    fn start_span(&self, builder: SpanBuilder, parent: &Context) -> Context {
        let span = self.build_with_context(builder, parent);
        parent.with_span(span)
    }
}

#[derive(Clone)]
pub(crate) enum TracerSource {
    /// The global tracer provider, cached once it yields real spans and re-resolved while it
    /// yields no-op (or shut-down) spans.
    Global(Arc<RwLock<Option<Arc<BoxedTracer>>>>),
    Fixed(Arc<dyn StartSpan>),
}

impl fmt::Debug for TracerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TracerSource::Global(_) => "TracerSource::Global",
            TracerSource::Fixed(_) => "TracerSource::Fixed",
        })
    }
}

impl TracerSource {
    pub(crate) fn global() -> Self {
        TracerSource::Global(Arc::default())
    }

    pub(crate) fn from_provider<P>(provider: &P) -> Self
    where
        P: TracerProvider,
        P::Tracer: Send + Sync + 'static,
        <P::Tracer as Tracer>::Span: Send + Sync + 'static,
    {
        TracerSource::Fixed(Arc::new(provider.tracer_with_scope(scope())))
    }

    /// Start a span as a child of `parent`.
    pub(crate) fn start(&self, builder: SpanBuilder, parent: &Context) -> Context {
        match self {
            TracerSource::Fixed(t) => t.start_span(builder, parent),
            TracerSource::Global(cache) => {
                let cached = cache.read().ok().and_then(|c| c.clone());
                let (tracer, fresh) = match cached {
                    Some(t) => (t, false),
                    None => (Arc::new(global::tracer_with_scope(scope())), true),
                };
                let cx = StartSpan::start_span(&*tracer, builder, parent);
                let sc = cx.span().span_context().clone();
                // A no-op tracer hands back the parent's span context (or an invalid one); a
                // shut-down SDK hands back an invalid one. Real spans have their own id.
                let real = sc.is_valid() && sc.span_id() != parent.span().span_context().span_id();
                if fresh && real {
                    if let Ok(mut c) = cache.write() {
                        *c = Some(tracer);
                    }
                } else if !fresh && !sc.is_valid() {
                    if let Ok(mut c) = cache.write() {
                        *c = None;
                    }
                }
                cx
            }
        }
    }
}

#[derive(Clone)]
pub(crate) enum PropagatorSource {
    /// The global propagator; when none is installed (the global is the no-op one), the
    /// built-in W3C Trace Context extraction.
    Global,
    Fixed(Arc<dyn TextMapPropagator + Send + Sync>),
}

impl fmt::Debug for PropagatorSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PropagatorSource::Global => "PropagatorSource::Global",
            PropagatorSource::Fixed(_) => "PropagatorSource::Fixed",
        })
    }
}

impl PropagatorSource {
    pub(crate) fn extract(&self, extractor: &StrictHeaderExtractor<'_>) -> Context {
        match self {
            PropagatorSource::Fixed(p) => propagation::extract_with(p.as_ref(), extractor),
            PropagatorSource::Global => global::get_text_map_propagator(|p| {
                if p.fields().next().is_none() {
                    propagation::extract_w3c(extractor, Context::current())
                } else {
                    propagation::extract_with(p, extractor)
                }
            }),
        }
    }
}
