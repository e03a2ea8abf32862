//! Where tracers and propagators come from: a user-supplied one, or the globals *as they stand
//! when requests arrive* (so a layer built before the SDK is installed still traces), resolved
//! through a cached handle.

use std::any::TypeId;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use opentelemetry::baggage::BaggageExt;
use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::noop::NoopTracer;
use opentelemetry::trace::{SpanBuilder, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, InstrumentationScope};

use crate::propagation::{self, StrictHeaderExtractor};

/// While the global tracer provider is the no-op one, one request in this interval takes the
/// full path and so finds out whether an SDK has been installed since; the others skip span
/// work entirely.
pub(crate) const GLOBAL_RECHECK: Duration = Duration::from_millis(50);

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

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

#[derive(Default)]
pub(crate) struct GlobalCache {
    tracer: RwLock<Option<Arc<BoxedTracer>>>,
    /// Nanoseconds since [`epoch`] (+1) of the last full-path check while no-op; 0 = never.
    last_check: AtomicU64,
}

#[derive(Clone)]
pub(crate) enum TracerSource {
    /// The global tracer provider, cached once it yields real spans.
    Global(Arc<GlobalCache>),
    /// A user-supplied provider's tracer.
    Fixed(Arc<dyn StartSpan>),
    /// A user-supplied no-op provider: no span work at all.
    Noop,
}

/// A tracer resolved for one request.
pub(crate) enum Resolved<'a> {
    Fixed(&'a dyn StartSpan),
    Global(Arc<BoxedTracer>, bool, &'a GlobalCache),
}

impl fmt::Debug for TracerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TracerSource::Global(_) => "TracerSource::Global",
            TracerSource::Fixed(_) => "TracerSource::Fixed",
            TracerSource::Noop => "TracerSource::Noop",
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
        if TypeId::of::<P::Tracer>() == TypeId::of::<NoopTracer>() {
            return TracerSource::Noop;
        }
        TracerSource::Fixed(Arc::new(provider.tracer_with_scope(scope())))
    }

    /// The tracer for this request, or `None` when spans would be no-ops.
    pub(crate) fn resolve(&self) -> Option<Resolved<'_>> {
        match self {
            TracerSource::Noop => None,
            TracerSource::Fixed(t) => Some(Resolved::Fixed(t.as_ref())),
            TracerSource::Global(cache) => {
                if let Some(t) = cache.tracer.read().ok().and_then(|c| c.clone()) {
                    return Some(Resolved::Global(t, false, cache));
                }
                let now = epoch().elapsed().as_nanos() as u64 + 1;
                let last = cache.last_check.load(Ordering::Relaxed);
                if last != 0 && now.saturating_sub(last) < GLOBAL_RECHECK.as_nanos() as u64 {
                    return None;
                }
                if cache
                    .last_check
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
                {
                    return None; // another request is checking right now
                }
                Some(Resolved::Global(
                    Arc::new(global::tracer_with_scope(scope())),
                    true,
                    cache,
                ))
            }
        }
    }
}

impl Resolved<'_> {
    /// Start a span as a child of `parent`.
    pub(crate) fn start(self, builder: SpanBuilder, parent: &Context) -> Context {
        match self {
            Resolved::Fixed(t) => t.start_span(builder, parent),
            Resolved::Global(tracer, fresh, cache) => {
                let cx = StartSpan::start_span(&*tracer, builder, parent);
                // A no-op tracer hands back the parent's span context (or an invalid one); a
                // shut-down SDK hands back an invalid one. Real spans have their own id.
                let span = cx.span();
                let sc = span.span_context();
                let real = sc.is_valid() && sc.span_id() != parent.span().span_context().span_id();
                if fresh && real {
                    if let Ok(mut c) = cache.tracer.write() {
                        *c = Some(tracer);
                    }
                } else if !fresh && !real {
                    if let Ok(mut c) = cache.tracer.write() {
                        *c = None;
                    }
                    cache.last_check.store(0, Ordering::Relaxed);
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
    /// No propagator is configured: the global one is the no-op propagator.
    pub(crate) fn is_noop(&self) -> bool {
        match self {
            PropagatorSource::Fixed(_) => false,
            PropagatorSource::Global => {
                global::get_text_map_propagator(|p| p.fields().next().is_none())
            }
        }
    }

    /// The caller's context to make current when this layer records no span: `None` when no
    /// propagator is configured (nothing would propagate it) or it carries nothing.
    pub(crate) fn pass_through(&self, headers: &http::HeaderMap) -> Option<Context> {
        if self.is_noop() {
            return None;
        }
        let cx = self.extract(&StrictHeaderExtractor::new(headers));
        let carries = cx.span().span_context().is_valid() || !cx.baggage().is_empty();
        carries.then_some(cx)
    }

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
