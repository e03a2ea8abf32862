//! Where tracers and propagators come from: a user-supplied one, or the globals *as they stand
//! when requests arrive* (so a layer built before the SDK is installed still traces), resolved
//! through a cached handle.

use std::any::TypeId;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// Paces looks at a global that can change at any time: at most one look per
/// [`GLOBAL_RECHECK`], claimed by one caller. `now` is nanoseconds on one clock per pace (a clock
/// that went backwards makes a look due).
#[derive(Default)]
pub(crate) struct Pace {
    /// `now` (at least 1) of the last claimed look; 0: a look is due.
    last: AtomicU64,
}

impl Pace {
    /// Whether this caller should look now; if so, the next look is due a
    /// [`GLOBAL_RECHECK`] later.
    pub(crate) fn claim(&self, now: u64) -> bool {
        let now = now.max(1);
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now < last || now - last >= GLOBAL_RECHECK.as_nanos() as u64;
        due && self
            .last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Make a look due at once.
    pub(crate) fn reset(&self) {
        if self.last.load(Ordering::Relaxed) != 0 {
            self.last.store(0, Ordering::Relaxed);
        }
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

#[derive(Default)]
pub(crate) struct GlobalCache {
    tracer: RwLock<Option<Arc<BoxedTracer>>>,
    /// Paces the full-path check while the global provider is the no-op one (nanoseconds since
    /// [`epoch`]).
    pace: Pace,
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
                if !cache.pace.claim(epoch().elapsed().as_nanos() as u64) {
                    return None; // checked less than 50 ms ago, or another request is checking
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
                    cache.pace.reset();
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
    Global(Arc<GlobalPropagator>),
    Fixed(Arc<dyn TextMapPropagator + Send + Sync>),
}

/// While the global propagator is the no-op one, the global is looked at again at most every
/// [`GLOBAL_RECHECK`] (a read lock shared by every request of every core is what this saves).
#[derive(Default)]
pub(crate) struct GlobalPropagator {
    /// The last look found the no-op propagator.
    noop: AtomicBool,
    /// Paces the looks while it is the no-op one (wall-clock nanoseconds).
    pace: Pace,
}

/// Requests that record nothing (no span, no metric: no clock read) look at the global
/// propagator once every this many requests per thread while it is the no-op one.
const NOOP_SKIP_REQUESTS: u32 = 63;

thread_local! {
    static NOOP_SKIPS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

impl fmt::Debug for PropagatorSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PropagatorSource::Global(_) => "PropagatorSource::Global",
            PropagatorSource::Fixed(_) => "PropagatorSource::Fixed",
        })
    }
}

fn is_noop_propagator(p: &dyn TextMapPropagator) -> bool {
    p.fields().next().is_none()
}

impl PropagatorSource {
    pub(crate) fn global() -> Self {
        PropagatorSource::Global(Arc::default())
    }

    /// The global propagator is known to be the no-op one, seen less than [`GLOBAL_RECHECK`]
    /// before `now` (wall-clock nanoseconds; `None`: not known).
    fn known_noop(&self, now: Option<u64>) -> bool {
        match (self, now) {
            (PropagatorSource::Global(g), Some(now)) => {
                g.noop.load(Ordering::Relaxed) && !g.pace.claim(now)
            }
            // no clock read (the request records nothing): skip the look on this thread for a
            // number of requests after it found the no-op propagator
            (PropagatorSource::Global(_), None) => NOOP_SKIPS
                .try_with(|c| {
                    let n = c.get();
                    c.set(n.saturating_sub(1));
                    n > 0
                })
                .unwrap_or(false),
            _ => false,
        }
    }

    /// Remember what the global propagator was found to be at `now`.
    fn note(&self, noop: bool, now: Option<u64>) {
        if let (PropagatorSource::Global(_), None, true) = (self, now, noop) {
            let _ = NOOP_SKIPS.try_with(|c| c.set(NOOP_SKIP_REQUESTS));
        }
        if let (PropagatorSource::Global(g), Some(_)) = (self, now) {
            if g.noop.load(Ordering::Relaxed) != noop {
                g.noop.store(noop, Ordering::Relaxed);
            }
        }
    }

    /// The caller's context to make current when this layer records no span: `None` when no
    /// propagator is configured (nothing would propagate it) or it carries nothing. `now`:
    /// wall-clock nanoseconds when already read, which lets a no-op global be skipped.
    pub(crate) fn pass_through(
        &self,
        headers: &http::HeaderMap,
        now: Option<u64>,
    ) -> Option<Context> {
        if self.known_noop(now) {
            return None;
        }
        // headers are parsed only once a propagator is known to want them
        let cx = match self {
            PropagatorSource::Fixed(p) => {
                propagation::extract_with(p.as_ref(), &StrictHeaderExtractor::new(headers))
            }
            PropagatorSource::Global(_) => {
                let cx = global::get_text_map_propagator(|p| {
                    let noop = is_noop_propagator(p);
                    self.note(noop, now);
                    (!noop)
                        .then(|| propagation::extract_with(p, &StrictHeaderExtractor::new(headers)))
                });
                cx?
            }
        };
        let carries = cx.span().span_context().is_valid() || !cx.baggage().is_empty();
        carries.then_some(cx)
    }

    /// The caller's context (the parent of the server span): the configured or global
    /// propagator's extraction, or the built-in W3C extraction when the global is the no-op
    /// propagator. `now` as for [`pass_through`](Self::pass_through).
    pub(crate) fn extract(
        &self,
        extractor: &StrictHeaderExtractor<'_>,
        now: Option<u64>,
    ) -> Context {
        if self.known_noop(now) {
            return propagation::extract_w3c(extractor, Context::current());
        }
        match self {
            PropagatorSource::Fixed(p) => propagation::extract_with(p.as_ref(), extractor),
            PropagatorSource::Global(_) => global::get_text_map_propagator(|p| {
                let noop = is_noop_propagator(p);
                self.note(noop, now);
                if noop {
                    propagation::extract_w3c(extractor, Context::current())
                } else {
                    propagation::extract_with(p, extractor)
                }
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_gives_one_look_per_interval() {
        let step = GLOBAL_RECHECK.as_nanos() as u64;
        let p = Pace::default();
        assert!(p.claim(1_000), "the first look is due");
        assert!(!p.claim(1_000), "claimed: others skip");
        assert!(!p.claim(1_000 + step - 1));
        assert!(p.claim(1_000 + step), "due again after the interval");
        assert!(p.claim(10), "a clock that went backwards makes a look due");
        p.reset();
        assert!(p.claim(11), "reset: due at once");
        assert!(Pace::default().claim(0), "a zero clock still counts");
    }
}
