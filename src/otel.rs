//! Where tracers and propagators come from: a user-supplied one, or the globals *as they stand
//! when requests arrive*, so that a layer built before the SDK is installed still traces.
//!
//! # The global tracer, per thread
//!
//! opentelemetry keeps its global tracer provider behind a lock shared by every core, and its
//! tracer behind a reference count. A web server runs on many cores, and a lock (or a
//! reference count) touched by every request of every core makes its cache line travel between
//! them on every request — a cost that a 2-core bench cannot show and a 64-core server pays.
//! So each thread keeps the global tracer it last found and looks again once every
//! [`RECHECK_EVERY`] requests it serves — and at *every* request while that tracer makes no
//! real spans (no SDK installed yet, or one shut down), so that the first request after
//! `global::set_tracer_provider` is traced on every thread. Measured on 2 cores the cache gains
//! nothing (`BENCHMARKS.md`: no fewer instructions, no shorter wall time with two threads); it
//! stays for the many-core case, which a 2-core machine cannot show.
//!
//! The global propagator is looked up for every request (opentelemetry takes its lock for every
//! extraction anyway): whatever it is, it is called — a global is a `dyn TextMapPropagator`, it
//! cannot be told from a user's propagator of the same shape. Only while none is installed
//! (the no-op one, which has no fields) does the crate read and write W3C Trace Context itself,
//! for the spans it records.

use std::any::TypeId;
use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

use opentelemetry::baggage::BaggageExt;
use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::noop::NoopTracer;
use opentelemetry::trace::{SpanBuilder, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, InstrumentationScope};

use crate::propagation::{self, StrictHeaderExtractor};

/// A thread looks at the globals again after serving this many requests.
pub(crate) const RECHECK_EVERY: u32 = 64;

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

/// A countdown to the next look at a global, per thread.
#[derive(Default)]
pub(crate) struct Recheck(u32);

impl Recheck {
    /// Whether this request looks at the global (then the countdown starts again).
    pub(crate) fn due(&mut self) -> bool {
        match self.0 {
            0 => {
                self.0 = RECHECK_EVERY - 1;
                true
            }
            n => {
                self.0 = n - 1;
                false
            }
        }
    }
}

#[derive(Default)]
struct ThreadGlobals {
    /// Shared with the request starting a span, so that no borrow is held while the SDK (and
    /// the user's sampler and processors) run.
    tracer: Option<Rc<BoxedTracer>>,
    tracer_check: Recheck,
}

thread_local! {
    static GLOBALS: RefCell<ThreadGlobals> = RefCell::default();
}

/// Where spans come from.
#[derive(Clone)]
pub(crate) enum TracerSource {
    /// The global tracer provider as it stands (per thread, see the module docs).
    Global,
    /// A user-supplied provider's tracer.
    Fixed(Arc<dyn StartSpan>),
    /// A user-supplied no-op provider: no span work at all.
    Noop,
}

impl fmt::Debug for TracerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TracerSource::Global => "Global",
            TracerSource::Fixed(_) => "Fixed",
            TracerSource::Noop => "Noop",
        })
    }
}

/// The tracer of one request: `start` starts its span.
pub(crate) enum RequestTracer<'a> {
    Fixed(&'a dyn StartSpan),
    /// This thread's global tracer.
    Global,
}

impl TracerSource {
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

    /// The tracer for this request, or `None` when its span would be a no-op (decided before
    /// any attribute is built).
    pub(crate) fn resolve(&self) -> Option<RequestTracer<'_>> {
        match self {
            TracerSource::Noop => None,
            TracerSource::Fixed(t) => Some(RequestTracer::Fixed(t.as_ref())),
            TracerSource::Global => GLOBALS
                .try_with(|g| {
                    let Ok(mut g) = g.try_borrow_mut() else {
                        return false;
                    };
                    // no real spans from the cached tracer (or none cached): look every request
                    if g.tracer.is_none() || g.tracer_check.due() {
                        g.tracer = Some(Rc::new(global::tracer_with_scope(scope())));
                    }
                    g.tracer.is_some()
                })
                .unwrap_or(false)
                .then_some(RequestTracer::Global),
        }
    }
}

impl RequestTracer<'_> {
    /// Start a span as a child of `parent`; `None` when the tracer turned out to make no real
    /// spans (no SDK installed, or it was shut down).
    pub(crate) fn start(self, builder: SpanBuilder, parent: &Context) -> Option<Context> {
        match self {
            RequestTracer::Fixed(t) => {
                let cx = t.start_span(builder, parent);
                // a shut-down SDK hands out invalid span contexts: no span of ours then
                cx.span().span_context().is_valid().then_some(cx)
            }
            RequestTracer::Global => {
                let tracer = GLOBALS
                    .try_with(|g| g.try_borrow().ok()?.tracer.clone())
                    .ok()
                    .flatten()?;
                let cx = StartSpan::start_span(&*tracer, builder, parent);
                // A no-op tracer hands back the parent's span context (or an invalid one); a
                // shut-down SDK an invalid one. Real spans have their own id.
                let (real, root) = {
                    let span = cx.span();
                    let sc = span.span_context();
                    let parent_span = parent.span();
                    let parent_sc = parent_span.span_context();
                    (
                        sc.is_valid() && sc.span_id() != parent_sc.span_id(),
                        !parent_sc.is_valid(),
                    )
                };
                let _ = GLOBALS.try_with(|g| {
                    let Ok(mut g) = g.try_borrow_mut() else {
                        return;
                    };
                    if !real {
                        // no SDK (yet), or one shut down or replaced: look again next request
                        g.tracer = None;
                    }
                });
                match (real, root) {
                    (true, true) => Some(crate::propagation::global_root(cx)),
                    (true, false) => Some(cx),
                    (false, _) => None,
                }
            }
        }
    }
}

/// What a propagator is, as far as this crate is concerned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum PropagatorKind {
    /// The no-op one (no fields): nothing installed.
    #[default]
    Noop,
    /// W3C Trace Context alone, known by its type: this crate's
    /// [`W3cPropagator`](propagation::W3cPropagator) or the SDK's `TraceContextPropagator`,
    /// given to the layer. Read and written by this crate's strict W3C code.
    W3c,
    /// Anything else: called for every request.
    Other,
}

impl PropagatorKind {
    /// The kind of a propagator of type `P`, given to a layer: W3C only for the types known to
    /// be exactly W3C Trace Context (a type of the user's with the same fields is called).
    fn of_type<P: TextMapPropagator + 'static>(p: &P) -> Self {
        const SDK_W3C: &str =
            "opentelemetry_sdk::propagation::trace_context::TraceContextPropagator";
        if TypeId::of::<P>() == TypeId::of::<propagation::W3cPropagator>()
            || std::any::type_name::<P>() == SDK_W3C
        {
            PropagatorKind::W3c
        } else {
            Self::of(p)
        }
    }

    /// The kind of a propagator whose type is unknown (the global one): the no-op one — no
    /// fields and zero-sized, as opentelemetry's `NoopTextMapPropagator` (the API gives no other
    /// way to recognise it) — or called.
    fn of(p: &dyn TextMapPropagator) -> Self {
        if p.fields().next().is_none() && std::mem::size_of_val(p) == 0 {
            PropagatorKind::Noop
        } else {
            PropagatorKind::Other
        }
    }
}

/// The propagator of one request.
enum Prop<'a> {
    /// None configured or installed.
    None,
    /// W3C Trace Context, by this crate's code.
    W3c,
    Other(&'a dyn TextMapPropagator),
}

/// Where the caller's context is extracted from (server) and the outgoing context injected with
/// (client).
#[derive(Clone)]
pub(crate) enum PropagatorSource {
    /// The global propagator as it stands (per thread, see the module docs); while none is
    /// installed, W3C Trace Context for the spans this crate records.
    Global,
    Fixed(Arc<dyn TextMapPropagator + Send + Sync>, PropagatorKind),
}

impl fmt::Debug for PropagatorSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PropagatorSource::Global => f.write_str("Global"),
            PropagatorSource::Fixed(_, kind) => write!(f, "Fixed({kind:?})"),
        }
    }
}

impl PropagatorSource {
    /// A propagator given to the layer.
    pub(crate) fn fixed<P: TextMapPropagator + Send + Sync + 'static>(p: P) -> Self {
        let kind = PropagatorKind::of_type(&p);
        PropagatorSource::Fixed(Arc::new(p), kind)
    }

    /// Run `f` with the propagator for this request: the given one, or the global one as it
    /// stands (looked up per request: see the module docs).
    fn with<T>(&self, mut f: impl FnMut(Prop<'_>) -> T) -> T {
        fn from_kind(kind: PropagatorKind, p: &dyn TextMapPropagator) -> Prop<'_> {
            match kind {
                PropagatorKind::Noop => Prop::None,
                PropagatorKind::W3c => Prop::W3c,
                PropagatorKind::Other => Prop::Other(p),
            }
        }
        match self {
            PropagatorSource::Fixed(p, kind) => f(from_kind(*kind, p.as_ref())),
            PropagatorSource::Global => {
                global::get_text_map_propagator(|p| f(from_kind(PropagatorKind::of(p), p)))
            }
        }
    }

    /// The caller's context, the parent of the span this layer records: extracted by the
    /// propagator, or by W3C Trace Context while none is installed.
    pub(crate) fn extract(&self, extractor: &StrictHeaderExtractor<'_>) -> Context {
        self.with(|p| match p {
            Prop::Other(p) => propagation::extract_with(p, extractor),
            Prop::None | Prop::W3c => {
                let cx = Context::current();
                extractor.remote(&cx).unwrap_or(cx)
            }
        })
    }

    /// The caller's context to make current when no span of ours is recorded: `None` when no
    /// propagator is configured or installed (nothing would carry it on) or it carries nothing
    /// (no valid parent, no baggage). Headers are parsed only when a propagator wants them.
    pub(crate) fn pass_through(&self, headers: &http::HeaderMap) -> Option<Context> {
        self.with(|p| {
            let cx = match p {
                Prop::None => return None,
                Prop::W3c => StrictHeaderExtractor::new(headers).remote(&Context::current())?,
                Prop::Other(p) => {
                    propagation::extract_with(p, &StrictHeaderExtractor::new(headers))
                }
            };
            let carries = cx.span().span_context().is_valid() || !cx.baggage().is_empty();
            carries.then_some(cx)
        })
    }

    /// Write the context of a span this layer records into outgoing request headers: with the
    /// propagator, or W3C Trace Context while none is installed.
    pub(crate) fn inject_span(&self, cx: &Context, headers: &mut http::HeaderMap) {
        // what the request carries already (a proxy forwarding its caller's headers) never goes
        // out beside this span's context: a propagator that writes no `tracestate` for an empty
        // state would leave the caller's, and one of another format (B3) would leave a W3C
        // context that skips this span
        headers.remove(propagation::TRACEPARENT);
        headers.remove(propagation::TRACESTATE);
        self.with(|p| {
            let p: &dyn TextMapPropagator = match p {
                Prop::Other(p) => p,
                Prop::None | Prop::W3c => &propagation::W3cPropagator,
            };
            p.inject_context(cx, &mut propagation::HeaderInjector(headers));
        });
    }

    /// Remove trace-context headers from outgoing request headers: W3C Trace Context's, W3C
    /// Baggage's, and those of the propagator in use.
    pub(crate) fn strip(&self, headers: &mut http::HeaderMap) {
        for name in [
            propagation::TRACEPARENT,
            propagation::TRACESTATE,
            propagation::BAGGAGE,
        ] {
            headers.remove(name);
        }
        self.with(|p| {
            if let Prop::Other(p) = p {
                for field in p.fields() {
                    headers.remove(field);
                }
            }
        });
    }

    /// Write a context merely passed through (no span of ours) into outgoing request headers:
    /// only through a configured or installed propagator.
    pub(crate) fn inject_passed(&self, cx: &Context, headers: &mut http::HeaderMap) {
        self.with(|p| {
            let p: &dyn TextMapPropagator = match p {
                Prop::Other(p) => p,
                Prop::W3c => &propagation::W3cPropagator,
                Prop::None => return,
            };
            if cx.span().span_context().is_valid() {
                // the context sent on replaces any the request carries
                headers.remove(propagation::TRACEPARENT);
                headers.remove(propagation::TRACESTATE);
            }
            p.inject_context(cx, &mut propagation::HeaderInjector(headers));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propagator_kinds() {
        use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator as _};
        use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
        let w3c = TraceContextPropagator::new();
        // known by type: the fast path
        assert_eq!(PropagatorKind::of_type(&w3c), PropagatorKind::W3c);
        assert_eq!(
            PropagatorKind::of_type(&propagation::W3cPropagator),
            PropagatorKind::W3c
        );
        // a global's type is unknown: called, whatever its fields
        assert_eq!(PropagatorKind::of(&w3c), PropagatorKind::Other);
        assert_eq!(
            PropagatorKind::of(&propagation::W3cPropagator),
            PropagatorKind::Other
        );
        let noop = opentelemetry::trace::noop::NoopTextMapPropagator::new();
        assert_eq!(PropagatorKind::of(&noop), PropagatorKind::Noop);
        let both = TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ]);
        assert_eq!(PropagatorKind::of(&both), PropagatorKind::Other);
        assert!(w3c.fields().count() == 2);
        // given to the layer: the SDK's type is W3C; a user's with the same fields is called
        let fixed = PropagatorSource::fixed(TraceContextPropagator::new());
        assert!(matches!(
            fixed,
            PropagatorSource::Fixed(_, PropagatorKind::W3c)
        ));
        #[derive(Debug)]
        struct Mine;
        impl opentelemetry::propagation::TextMapPropagator for Mine {
            fn inject_context(
                &self,
                _: &Context,
                _: &mut dyn opentelemetry::propagation::Injector,
            ) {
            }
            fn extract_with_context(
                &self,
                cx: &Context,
                _: &dyn opentelemetry::propagation::Extractor,
            ) -> Context {
                cx.clone()
            }
            fn fields(&self) -> opentelemetry::propagation::text_map_propagator::FieldIter<'_> {
                propagation::W3cPropagator.fields()
            }
        }
        let mine = PropagatorSource::fixed(Mine);
        assert!(matches!(
            mine,
            PropagatorSource::Fixed(_, PropagatorKind::Other)
        ));
    }

    #[test]
    fn recheck_counts_down() {
        let mut r = Recheck::default();
        assert!(r.due(), "the first request looks");
        for _ in 0..RECHECK_EVERY - 1 {
            assert!(!r.due());
        }
        assert!(r.due(), "looks again after RECHECK_EVERY requests");
    }
}
