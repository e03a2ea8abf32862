//! W3C Trace Context Level 2, owned by this crate: the propagator to install
//! ([`W3cPropagator`]), strict `traceparent` validation ([`parse_traceparent`]), `tracestate`
//! parsing and writing ([`Tracestate`]), and a [`HeaderMap`] extractor that only ever hands a
//! propagator validated trace context ([`StrictHeaderExtractor`]).
//!
//! ```
//! use tower_otel_http::propagation::{parse_traceparent, Tracestate, W3cPropagator};
//!
//! opentelemetry::global::set_text_map_propagator(W3cPropagator::new());
//! assert!(parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some());
//! assert!(parse_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").is_none());
//! assert!(Tracestate::parse("foo@@bar=1,bar=2").is_ok());
//! assert!(Tracestate::parse("foo=,bar=3").is_err());
//! ```
//!
//! # What comes in, what goes out
//!
//! - **`traceparent`** is taken only when it is valid under the specification's grammar
//!   ([`parse_traceparent`]); otherwise the request starts a new trace and its `tracestate` is
//!   not read.
//! - **`tracestate`** is parsed under the Level 2 grammar: the header fields combined in order,
//!   optional white space and empty list members skipped, at most 32 members, each key unique,
//!   keys of `a-z 0-9 _ - * / @` up to 256 characters (any number of `@`), values of 1 to 256
//!   printable characters but `,` and `=`, not ending in a space. A header that does not parse
//!   is discarded whole: the trace goes on without `tracestate`, and nothing invalid is ever
//!   sent on. What parsed goes on whole — every member, however long (no size cut below the 32
//!   members).
//! - **The random-trace-id flag** (`0x02`) comes in with `traceparent` and goes out, set or
//!   unset as it came, on every `traceparent` of the same trace this process sends — client
//!   spans included, sampled or not — and in the trace-context response header and the
//!   `trace_flags` log field. Reserved flag bits are sent as zero.
//!
//! The SDK's `TraceState` cannot hold every valid member (its key check is Level 1's, one `@`
//! and a system part one character short), so the span the SDK exports carries in its
//! `trace_state` the members the SDK accepts, while the whole list travels beside the span
//! context, in the OpenTelemetry [`Context`], to the calls the request makes (for the same trace
//! id only). When something in the process changes the SDK's copy — a sampler, the user with
//! `TraceState::insert` — the change is merged into the list that goes out: added and updated
//! keys first, as the specification's mutation rules say, keys the SDK held and no longer holds
//! deleted, every other member kept in its order. Likewise the SDK builds a child span's flags
//! from the parent's for a recorded span but from nothing for a dropped one, so the random flag
//! travels beside the context too. [`outgoing_tracestate`] and [`outgoing_trace_flags`] read what a
//! context sends.
//!
//! These rules are this crate's: they apply where it reads and writes W3C Trace Context — the
//! [`W3cPropagator`] (installed as the global propagator or given with `with_propagator`, alone
//! or inside a composite), the SDK's `TraceContextPropagator` given to a layer with
//! `with_propagator` (known by its type and handled by this crate's code), and the spans
//! recorded while no propagator is installed. A foreign propagator installed as the global is
//! called as it is, with `traceparent` and `tracestate` already checked by
//! [`StrictHeaderExtractor`] (so it never sees a `tracestate` that does not parse); the SDK's
//! `TraceContextPropagator` installed that way sends the random flag as zero and refuses a
//! Level 2 key its `TraceState` does not take (and with it the whole header).

use std::borrow::Cow;
use std::sync::OnceLock;

use http::{HeaderMap, HeaderName};
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;

mod traceparent;
mod tracestate;

pub(crate) use traceparent::{ascii, traceparent_bytes};
pub use traceparent::{parse_traceparent, Traceparent};
use tracestate::Handed;
pub use tracestate::{Tracestate, TracestateError, MAX_MEMBERS as MAX_TRACESTATE_MEMBERS};

/// The `traceparent` header name.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header name.
pub const TRACESTATE: &str = "tracestate";
/// The `baggage` header name.
pub const BAGGAGE: &str = "baggage";

/// The sampled flag (bit 0).
const SAMPLED: u8 = 0b01;
/// The random-trace-id flag (bit 1, W3C Trace Context Level 2).
const RANDOM: u8 = 0b10;
/// The trace-flags bits this crate keeps and sends: sampled and random-trace-id; the reserved
/// ones are sent as zero.
const KEPT_FLAGS: u8 = SAMPLED | RANDOM;

const TRACEPARENT_NAME: HeaderName = HeaderName::from_static(TRACEPARENT);
const TRACESTATE_NAME: HeaderName = HeaderName::from_static(TRACESTATE);
const BAGGAGE_NAME: HeaderName = HeaderName::from_static(BAGGAGE);

/// A list-valued header (`baggage`) that may be split over several fields: the fields combined
/// in order with `,`, as W3C requires. `None` when absent or not UTF-8.
fn combined<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<Cow<'a, str>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?.to_str().ok()?;
    let Some(second) = values.next() else {
        return Some(Cow::Borrowed(first));
    };
    let mut all = String::from(first);
    for v in std::iter::once(second).chain(values) {
        all.push(',');
        all.push_str(v.to_str().ok()?);
    }
    Some(Cow::Owned(all))
}

/// The `tracestate` of `headers`, its fields combined in order: `None` when absent, when a
/// field is not text, or when the combination does not parse ([`Tracestate::from_fields`]).
fn tracestate_of(headers: &HeaderMap) -> Option<Tracestate> {
    let mut fields = headers.get_all(&TRACESTATE_NAME).iter().peekable();
    fields.peek()?;
    let mut text = true;
    let parsed = Tracestate::from_fields(fields.map_while(|v| {
        let s = v.to_str().ok();
        text &= s.is_some();
        s
    }));
    parsed.ok().filter(|_| text)
}

/// An [`Extractor`] over a [`HeaderMap`] that only yields validated trace context:
/// `traceparent` when it passes [`parse_traceparent`] (normalised to its first four fields),
/// `tracestate` only alongside a valid `traceparent` and only when it parses under the Level 2
/// grammar ([`Tracestate`]: its fields combined in order, written back canonically), `baggage`
/// with its fields combined, and other headers (their first field) as-is when they are valid
/// UTF-8.
#[derive(Debug)]
pub struct StrictHeaderExtractor<'a> {
    headers: &'a HeaderMap,
    traceparent: Option<(&'a str, Traceparent)>,
    tracestate: Option<Tracestate>,
    /// Combined when a propagator first asks for it.
    baggage: std::cell::OnceCell<Option<Cow<'a, str>>>,
}

impl<'a> StrictHeaderExtractor<'a> {
    /// Validate the trace-context headers of `headers`.
    #[must_use]
    pub fn new(headers: &'a HeaderMap) -> Self {
        let mut values = headers.get_all(&TRACEPARENT_NAME).iter();
        // W3C: more than one traceparent is invalid.
        let traceparent = match (values.next(), values.next()) {
            (Some(v), None) => v
                .to_str()
                .ok()
                .and_then(|s| parse_traceparent(s).map(|tp| (&s[..55], tp))),
            _ => None,
        };
        // W3C: no tracestate without a valid traceparent
        let tracestate = traceparent.and_then(|_| tracestate_of(headers));
        Self {
            headers,
            traceparent,
            tracestate,
            baggage: std::cell::OnceCell::new(),
        }
    }

    /// The validated `traceparent`, if any.
    #[must_use]
    pub fn traceparent(&self) -> Option<Traceparent> {
        self.traceparent.map(|(_, tp)| tp)
    }

    /// The `tracestate` that parsed, if any (only beside a valid `traceparent`).
    #[must_use]
    pub fn tracestate(&self) -> Option<&Tracestate> {
        self.tracestate.as_ref()
    }

    /// `cx` continuing the caller's trace: its remote span context, the random flag and the
    /// whole `tracestate` carried beside it. `None` without a valid `traceparent`.
    pub(crate) fn remote(&self, cx: &Context) -> Option<Context> {
        Some(remote_context(
            cx,
            self.traceparent()?,
            self.tracestate.as_ref(),
        ))
    }
}

impl Extractor for StrictHeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if key.eq_ignore_ascii_case(TRACEPARENT) {
            return self.traceparent.map(|(s, _)| s);
        }
        if key.eq_ignore_ascii_case(TRACESTATE) {
            return self
                .tracestate
                .as_ref()
                .filter(|t| !t.is_empty())
                .map(Tracestate::as_str);
        }
        if key.eq_ignore_ascii_case(BAGGAGE) {
            return self
                .baggage
                .get_or_init(|| combined(self.headers, &BAGGAGE_NAME))
                .as_deref();
        }
        self.headers.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.headers.keys().map(|k| k.as_str()).collect()
    }

    /// The trace-context headers as one value each (validated, combined in order); other
    /// headers field by field, those that are valid UTF-8.
    fn get_all(&self, key: &str) -> Option<Vec<&str>> {
        if [TRACEPARENT, TRACESTATE, BAGGAGE]
            .iter()
            .any(|k| key.eq_ignore_ascii_case(k))
        {
            return self.get(key).map(|v| vec![v]);
        }
        let all: Vec<&str> = self
            .headers
            .get_all(key)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!all.is_empty()).then_some(all)
    }
}

/// An [`Injector`] into a [`HeaderMap`]; values that are not valid header values are skipped.
#[derive(Debug)]
pub(crate) struct HeaderInjector<'a>(pub(crate) &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // the trace-context names without building a header name; the value takes the
        // string's buffer (validated, not copied)
        let name = match key {
            TRACEPARENT => Ok(TRACEPARENT_NAME),
            TRACESTATE => Ok(TRACESTATE_NAME),
            BAGGAGE => Ok(BAGGAGE_NAME),
            other => http::HeaderName::from_bytes(other.as_bytes()),
        };
        if let (Ok(name), Ok(value)) = (
            name,
            http::HeaderValue::from_maybe_shared(bytes::Bytes::from(value)),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// What travels beside a continued trace's span context, in the [`Context`]: the inbound
/// random-trace-id flag and the whole inbound `tracestate`, for the trace it came with.
#[derive(Debug)]
struct Carried {
    trace_id: TraceId,
    random: bool,
    /// The whole list, and which of its members the SDK's copy was handed (to see what changed
    /// since).
    state: Option<(Tracestate, Handed)>,
}

/// `cx` with the caller's span context as its remote parent, and what the SDK's types cannot
/// hold carried beside it.
fn remote_context(cx: &Context, tp: Traceparent, tracestate: Option<&Tracestate>) -> Context {
    let flags = tp.flags & KEPT_FLAGS;
    // the whole list travels beside the span context only when the SDK's copy lacks members:
    // otherwise the SDK's copy is the list, and its changes are its own
    let (sdk_state, state) = match tracestate.filter(|t| !t.is_empty()) {
        Some(t) => {
            let (sdk, handed) = t.to_sdk();
            let partial = !handed.all(t.len());
            (sdk, partial.then(|| (t.clone(), handed)))
        }
        None => (TraceState::NONE, None),
    };
    let sc = SpanContext::new(
        tp.trace_id,
        tp.span_id,
        TraceFlags::new(flags),
        true,
        sdk_state,
    );
    let out = cx.with_remote_span_context(sc);
    // Nothing to carry when the SDK's types hold it all: no random flag (a child the SDK drops
    // has it unset anyway), no member the SDK's `TraceState` refused — unless `cx` carries
    // something of another request
    if flags & RANDOM == 0 && state.is_none() && cx.get::<Carried>().is_none() {
        return out;
    }
    out.with_value(Carried {
        trace_id: tp.trace_id,
        random: flags & RANDOM != 0,
        state,
    })
}

/// Whether the global tracer's trace ids are random (its SDK was set up by
/// [`crate::setup`], whose id generator is the SDK's random one): the traces it starts carry the
/// random-trace-id flag.
static GLOBAL_ROOTS_RANDOM: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Say whether the global tracer's trace ids are random.
#[cfg_attr(not(feature = "otlp"), allow(dead_code))]
pub(crate) fn set_global_roots_random(random: bool) {
    GLOBAL_ROOTS_RANDOM.store(random, std::sync::atomic::Ordering::Relaxed);
}

/// A trace the global tracer just started (`cx` holds its root span): with the random flag
/// when its ids are random.
pub(crate) fn global_root(cx: Context) -> Context {
    if !GLOBAL_ROOTS_RANDOM.load(std::sync::atomic::Ordering::Relaxed) {
        return cx;
    }
    let trace_id = cx.span().span_context().trace_id();
    cx.with_value(Carried {
        trace_id,
        random: true,
        state: None,
    })
}

/// What `cx` carries for the trace of `sc`.
fn carried<'a>(cx: &'a Context, sc: &SpanContext) -> Option<&'a Carried> {
    cx.get::<Carried>().filter(|c| c.trace_id == sc.trace_id())
}

/// The flags a context sends: the span's sampled bit, the random bit of the trace as it came
/// in (else the span's own), reserved bits zero.
fn flags_for(sc: &SpanContext, carried: Option<&Carried>) -> u8 {
    let own = sc.trace_flags().to_u8();
    let random = carried.map_or(own & RANDOM, |c| if c.random { RANDOM } else { 0 });
    (own & SAMPLED) | random
}

/// The `tracestate` a context sends: the carried list with the SDK-side changes merged in, or
/// the SDK's copy as a valid Level 2 list. `None` when empty.
fn tracestate_for(sc: &SpanContext, carried: Option<&Carried>) -> Option<Tracestate> {
    let now = sc.trace_state();
    let out = match carried.and_then(|c| c.state.as_ref()) {
        Some((whole, handed)) if whole.unchanged(*handed, now) => whole.clone(),
        Some((whole, handed)) => whole.merged(*handed, now),
        None if now.into_iter().len() == 0 => return None,
        None => Tracestate::from_sdk(now),
    };
    (!out.is_empty()).then_some(out)
}

/// The W3C trace flags `cx` sends on (and shows in the response header and on log lines):
/// the sampled bit of its span, the random-trace-id bit as the trace came in (else its
/// span's), reserved bits zero. Empty flags for a context without a valid span context.
///
/// ```
/// use opentelemetry::trace::TraceContextExt;
/// use opentelemetry::propagation::TextMapPropagator;
/// use tower_otel_http::propagation::{outgoing_trace_flags, W3cPropagator};
///
/// let mut carrier = std::collections::HashMap::new();
/// carrier.insert(
///     "traceparent".to_owned(),
///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02".to_owned(),
/// );
/// let cx = W3cPropagator::new().extract(&carrier);
/// assert_eq!(outgoing_trace_flags(&cx).to_u8(), 0x02, "random, not sampled");
/// ```
#[must_use]
pub fn outgoing_trace_flags(cx: &Context) -> TraceFlags {
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return TraceFlags::default();
    }
    TraceFlags::new(flags_for(sc, carried(cx, sc)))
}

/// The `tracestate` `cx` sends on: the whole list that came in with its trace (members the
/// SDK's `TraceState` cannot hold included), with the changes made to the SDK's copy in this
/// process merged in; or the SDK's copy's valid members for a trace that did not bring one.
/// `None` when there is none.
///
/// ```
/// use opentelemetry::trace::TraceContextExt;
/// use opentelemetry::propagation::TextMapPropagator;
/// use tower_otel_http::propagation::{outgoing_tracestate, W3cPropagator};
///
/// let mut carrier = std::collections::HashMap::new();
/// carrier.insert(
///     "traceparent".to_owned(),
///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
/// );
/// carrier.insert("tracestate".to_owned(), "tenant@sys@v2=1,rojo=2".to_owned());
/// let cx = W3cPropagator::new().extract(&carrier);
/// // the SDK's type holds `rojo` only; the whole list goes on
/// assert_eq!(cx.span().span_context().trace_state().header(), "rojo=2");
/// assert_eq!(outgoing_tracestate(&cx).unwrap().as_str(), "tenant@sys@v2=1,rojo=2");
/// ```
#[must_use]
pub fn outgoing_tracestate(cx: &Context) -> Option<Tracestate> {
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return None;
    }
    tracestate_for(sc, carried(cx, sc))
}

/// `traceparent` of the span of `cx` as it goes out (flags as [`outgoing_trace_flags`]), on the stack;
/// `None` without a valid span context.
pub(crate) fn outgoing_traceparent(cx: &Context) -> Option<[u8; 55]> {
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid()
        .then(|| traceparent_bytes(sc.trace_id(), sc.span_id(), flags_for(sc, carried(cx, sc))))
}

/// W3C Trace Context Level 2 (`traceparent`, `tracestate`) by this crate's rules (the module
/// docs): the propagator to install as the global one (or give with `with_propagator`).
///
/// ```
/// use tower_otel_http::propagation::W3cPropagator;
///
/// opentelemetry::global::set_text_map_propagator(W3cPropagator::new());
/// ```
///
/// It differs from the SDK's `TraceContextPropagator`: a `traceparent` is taken only when it is
/// valid under the specification's grammar ([`parse_traceparent`]; the SDK takes some that are
/// not); the random-trace-id flag (`0x02`) is kept and sent on; `tracestate` follows the Level
/// 2 grammar, is discarded whole when it does not parse and goes on whole when it does
/// ([`Tracestate`]). Given to a layer with `with_propagator` — this type, or the SDK's
/// `TraceContextPropagator` — it is read and written by the crate directly, without a call
/// through the `TextMapPropagator` trait; installed as the global, alone or in a composite
/// (with the SDK's `BaggagePropagator` for `baggage`), it is called like any other global
/// propagator. It is also what the layers use for the spans they record while no propagator is
/// installed at all.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct W3cPropagator;

impl W3cPropagator {
    /// The propagator.
    #[must_use]
    pub fn new() -> Self {
        W3cPropagator
    }
}

impl TextMapPropagator for W3cPropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return;
        }
        let carried = carried(cx, sc);
        let tp = traceparent_bytes(sc.trace_id(), sc.span_id(), flags_for(sc, carried));
        injector.set(TRACEPARENT, ascii(&tp).to_owned());
        if let Some(state) = tracestate_for(sc, carried) {
            injector.set(TRACESTATE, state.as_str().to_owned());
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        // the extractor is this crate's strict one, so its trace context is valid already; any
        // other extractor's is checked here, every `tracestate` field combined in order (a
        // second `traceparent` field is refused by `StrictHeaderExtractor`, what the layers
        // hand a propagator; another extractor's `get` is taken as it gives it: asking every
        // extractor for all its `traceparent` fields would cost an allocation per request)
        let Some(tp) = extractor.get(TRACEPARENT).and_then(parse_traceparent) else {
            return cx.clone();
        };
        let tracestate = match extractor.get_all(TRACESTATE) {
            Some(fields) => Tracestate::from_fields(fields).ok(),
            None => extractor
                .get(TRACESTATE)
                .and_then(|s| Tracestate::parse(s).ok()),
        };
        remote_context(cx, tp, tracestate.as_ref())
    }

    fn fields(&self) -> FieldIter<'_> {
        static FIELDS: OnceLock<[String; 2]> = OnceLock::new();
        FieldIter::new(FIELDS.get_or_init(|| [TRACEPARENT.to_owned(), TRACESTATE.to_owned()]))
    }
}

/// Extract with a foreign `propagator`, then restore the random-trace-id flag that propagators
/// built for Trace Context level 1 clear.
pub(crate) fn extract_with(
    propagator: &dyn TextMapPropagator,
    extractor: &StrictHeaderExtractor<'_>,
) -> Context {
    let cx = propagator.extract(extractor);
    let Some(want) = extractor.traceparent() else {
        return cx;
    };
    let want_flags = TraceFlags::new(want.flags & KEPT_FLAGS);
    let span = cx.span();
    let sc = span.span_context();
    if sc.is_remote()
        && sc.trace_id() == want.trace_id
        && sc.span_id() == want.span_id
        && sc.trace_flags() != want_flags
        && sc.trace_flags().is_sampled() == want_flags.is_sampled()
    {
        let fixed = SpanContext::new(
            sc.trace_id(),
            sc.span_id(),
            want_flags,
            true,
            sc.trace_state().clone(),
        );
        return cx.with_remote_span_context(fixed);
    }
    cx
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::SpanId;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn extractor_drops_tracestate_with_invalid_traceparent() {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, "00-1-2-01".parse().unwrap());
        h.insert(TRACESTATE, "a=b".parse().unwrap());
        let e = StrictHeaderExtractor::new(&h);
        assert_eq!(e.get(TRACEPARENT), None);
        assert_eq!(e.get(TRACESTATE), None);
        assert!(!W3cPropagator
            .extract_with_context(&Context::new(), &e)
            .span()
            .span_context()
            .is_valid());
    }

    #[test]
    fn extractor_rejects_duplicate_traceparent() {
        let mut h = HeaderMap::new();
        h.append(TRACEPARENT, VALID.parse().unwrap());
        h.append(TRACEPARENT, VALID.parse().unwrap());
        assert!(StrictHeaderExtractor::new(&h).traceparent().is_none());
    }

    #[test]
    fn higher_version_normalised_to_four_fields() {
        let mut h = HeaderMap::new();
        h.insert(
            TRACEPARENT,
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever"
                .parse()
                .unwrap(),
        );
        let e = StrictHeaderExtractor::new(&h);
        assert_eq!(
            e.get(TRACEPARENT),
            Some("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
    }

    #[test]
    fn tracestate_of_more_than_32_members_is_discarded_whole() {
        let members: Vec<String> = (0..33).map(|i| format!("k{i}=v{i}")).collect();
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, VALID.parse().unwrap());
        h.insert(TRACESTATE, members.join(",").parse().unwrap());
        let e = StrictHeaderExtractor::new(&h);
        assert_eq!(e.get(TRACESTATE), None);
        let cx = W3cPropagator.extract_with_context(&Context::new(), &e);
        assert!(cx.span().span_context().is_valid(), "the trace goes on");
        assert_eq!(cx.span().span_context().trace_state().header(), "");
        assert_eq!(outgoing_tracestate(&cx), None);
        // 32 go on whole
        h.insert(TRACESTATE, members[..32].join(",").parse().unwrap());
        let e = StrictHeaderExtractor::new(&h);
        assert_eq!(e.get(TRACESTATE), Some(members[..32].join(",").as_str()));
    }

    #[test]
    fn random_flag_kept_unknown_flags_cleared() {
        let mut h = HeaderMap::new();
        h.insert(
            TRACEPARENT,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff"
                .parse()
                .unwrap(),
        );
        let cx =
            W3cPropagator.extract_with_context(&Context::new(), &StrictHeaderExtractor::new(&h));
        let sc = cx.span().span_context().clone();
        assert!(sc.is_remote());
        assert_eq!(sc.trace_flags().to_u8(), 0b11);
    }

    #[test]
    fn non_utf8_headers_are_ignored() {
        let mut h = HeaderMap::new();
        h.insert(
            TRACEPARENT,
            http::HeaderValue::from_bytes(b"00-\xff\xfe").unwrap(),
        );
        h.insert("baggage", http::HeaderValue::from_bytes(b"k=\xff").unwrap());
        let e = StrictHeaderExtractor::new(&h);
        assert_eq!(e.get(TRACEPARENT), None);
        assert_eq!(e.get("baggage"), None);
    }

    #[test]
    fn long_tracestate_within_32_members_is_kept_whole() {
        // W3C: at least 512 characters propagate
        let members: Vec<String> = (0..20)
            .map(|i| format!("vendor{i:02}=value-{}", "x".repeat(20)))
            .collect();
        let header = members.join(",");
        assert!(header.len() > 512);
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, VALID.parse().unwrap());
        h.insert(TRACESTATE, header.parse().unwrap());
        let cx =
            W3cPropagator.extract_with_context(&Context::new(), &StrictHeaderExtractor::new(&h));
        let state = cx.span().span_context().trace_state().clone();
        assert_eq!(state.header(), header);
    }

    #[test]
    fn injector_sets_valid_headers_and_skips_invalid_ones() {
        let mut h = HeaderMap::new();
        let mut inj = HeaderInjector(&mut h);
        inj.set(TRACEPARENT, VALID.to_owned());
        inj.set("bad name", "x".to_owned());
        inj.set("baggage", "bad\nvalue".to_owned());
        assert_eq!(h.get(TRACEPARENT).unwrap(), VALID);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn tracestate_split_over_fields_is_combined_in_order() {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, VALID.parse().unwrap());
        h.append(TRACESTATE, "a=1,b=2".parse().unwrap());
        h.append(TRACESTATE, "c=3".parse().unwrap());
        let e = StrictHeaderExtractor::new(&h);
        assert_eq!(e.get(TRACESTATE), Some("a=1,b=2,c=3"));
        let cx = W3cPropagator.extract_with_context(&Context::new(), &e);
        assert_eq!(
            cx.span().span_context().trace_state().header(),
            "a=1,b=2,c=3"
        );
        // the 32-member limit applies to the combination: 40 over 20 fields do not parse
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, VALID.parse().unwrap());
        for i in 0..20 {
            h.append(TRACESTATE, format!("k{i}=v{i},x{i}=y{i}").parse().unwrap());
        }
        assert_eq!(StrictHeaderExtractor::new(&h).get(TRACESTATE), None);
        // one field that is not text discards the whole header
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, VALID.parse().unwrap());
        h.append(TRACESTATE, "a=1".parse().unwrap());
        h.append(
            TRACESTATE,
            http::HeaderValue::from_bytes(b"b=\xff").unwrap(),
        );
        assert_eq!(StrictHeaderExtractor::new(&h).get(TRACESTATE), None);
    }

    #[test]
    fn baggage_split_over_fields_is_combined_in_order() {
        let mut h = HeaderMap::new();
        h.append(BAGGAGE, "a=1".parse().unwrap());
        h.append(BAGGAGE, "b=2,c=3".parse().unwrap());
        let e = StrictHeaderExtractor::new(&h);
        assert_eq!(e.get(BAGGAGE), Some("a=1,b=2,c=3"));
        assert_eq!(e.get("Baggage"), Some("a=1,b=2,c=3"));
    }

    #[test]
    fn fallback_injects_what_it_extracts() {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, VALID.parse().unwrap());
        h.insert(TRACESTATE, "k=v".parse().unwrap());
        let cx =
            W3cPropagator.extract_with_context(&Context::new(), &StrictHeaderExtractor::new(&h));
        let mut out = HeaderMap::new();
        W3cPropagator.inject_context(&cx, &mut HeaderInjector(&mut out));
        assert_eq!(out.get(TRACEPARENT).unwrap(), VALID);
        assert_eq!(out.get(TRACESTATE).unwrap(), "k=v");
        let mut none = HeaderMap::new();
        W3cPropagator.inject_context(&Context::new(), &mut HeaderInjector(&mut none));
        assert!(
            none.is_empty(),
            "nothing to inject without a valid span context"
        );
    }

    fn extract(tp: &str, ts: Option<&str>) -> Context {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, tp.parse().unwrap());
        if let Some(ts) = ts {
            h.insert(TRACESTATE, ts.parse().unwrap());
        }
        W3cPropagator.extract_with_context(&Context::new(), &StrictHeaderExtractor::new(&h))
    }

    fn inject(cx: &Context) -> HeaderMap {
        let mut out = HeaderMap::new();
        W3cPropagator.inject_context(cx, &mut HeaderInjector(&mut out));
        out
    }

    /// A child span context as the SDK makes it when its sampler drops the span: flags from
    /// nothing, the parent's trace state.
    fn dropped_child(parent: &Context) -> Context {
        let span = parent.span();
        let psc = span.span_context();
        parent.with_remote_span_context(SpanContext::new(
            psc.trace_id(),
            SpanId::from_bytes([7; 8]),
            TraceFlags::default(),
            false,
            psc.trace_state().clone(),
        ))
    }

    #[test]
    fn the_random_flag_goes_on_with_the_trace_sampled_or_not() {
        for (inbound, out) in [
            ("00", "00"),
            ("01", "01"),
            ("02", "02"),
            ("03", "03"),
            ("ff", "03"),
            ("fd", "01"),
            ("fe", "02"),
        ] {
            let tp = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{inbound}");
            let cx = extract(&tp, None);
            let child = dropped_child(&cx);
            let sent = inject(&child);
            let sent = sent.get(TRACEPARENT).unwrap().to_str().unwrap();
            // a dropped child is not sampled: only the random bit can survive
            let want = if out == "02" || out == "03" {
                "02"
            } else {
                "00"
            };
            assert!(sent.ends_with(&format!("-{want}")), "{inbound}: {sent}");
            assert!(sent.contains("-0707070707070707-"), "the child's span id");
            assert_eq!(
                outgoing_trace_flags(&child).to_u8(),
                u8::from_str_radix(want, 16).unwrap()
            );
            // the remote parent itself (a pass-through) keeps sampled and random, reserved off
            let parent = inject(&cx);
            assert!(
                parent
                    .get(TRACEPARENT)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .ends_with(&format!("-{out}")),
                "{inbound}"
            );
        }
    }

    #[test]
    fn a_new_trace_in_the_same_context_does_not_take_the_carried_bits() {
        let cx = extract(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02",
            Some("a=1"),
        );
        let other = cx.with_remote_span_context(SpanContext::new(
            TraceId::from_bytes([9; 16]),
            SpanId::from_bytes([9; 8]),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ));
        let sent = inject(&other);
        assert!(sent
            .get(TRACEPARENT)
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with("-01"));
        assert!(
            sent.get(TRACESTATE).is_none(),
            "another trace's tracestate never goes out"
        );
    }

    #[test]
    fn the_whole_tracestate_goes_on_where_the_sdk_holds_part_of_it() {
        let whole = "foo@@bar=1,foo@bar@baz=2,bar=2";
        let cx = extract(VALID, Some(whole));
        assert_eq!(cx.span().span_context().trace_state().header(), "bar=2");
        let sent = inject(&dropped_child(&cx));
        assert_eq!(sent.get(TRACESTATE).unwrap(), whole);
    }

    #[test]
    fn sdk_side_changes_are_merged_into_what_goes_on() {
        let cx = extract(VALID, Some("foo@@bar=1,a=1,b=2"));
        let span = cx.span();
        let psc = span.span_context();
        let changed = psc.trace_state().insert("s", "x").unwrap();
        let child = cx.with_remote_span_context(SpanContext::new(
            psc.trace_id(),
            SpanId::from_bytes([7; 8]),
            TraceFlags::SAMPLED,
            false,
            changed,
        ));
        assert_eq!(
            inject(&child).get(TRACESTATE).unwrap(),
            "s=x,foo@@bar=1,a=1,b=2"
        );
    }

    /// An extractor of another crate that gives every field of a header (as
    /// opentelemetry-http's `HeaderExtractor` does).
    struct Fields(Vec<(&'static str, &'static str)>);

    impl Extractor for Fields {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
        }
        fn keys(&self) -> Vec<&str> {
            self.0.iter().map(|(k, _)| *k).collect()
        }
        fn get_all(&self, key: &str) -> Option<Vec<&str>> {
            let all: Vec<&str> = self
                .0
                .iter()
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| *v)
                .collect();
            (!all.is_empty()).then_some(all)
        }
    }

    #[test]
    fn any_extractors_tracestate_fields_are_combined() {
        let extract = |f: Vec<(&'static str, &'static str)>| {
            let cx = W3cPropagator.extract(&Fields(f));
            (
                cx.span().span_context().is_valid(),
                outgoing_tracestate(&cx).map(|t| t.as_str().to_owned()),
            )
        };
        assert_eq!(
            extract(vec![
                (TRACEPARENT, VALID),
                (TRACESTATE, "a=1"),
                (TRACESTATE, "foo@@b=2")
            ]),
            (true, Some("a=1,foo@@b=2".to_owned()))
        );
        // 33 members over two fields: discarded whole, not the first field alone
        let first: &'static str = Box::leak(
            (0..20)
                .map(|i| format!("k{i}=v"))
                .collect::<Vec<_>>()
                .join(",")
                .into_boxed_str(),
        );
        let second: &'static str = Box::leak(
            (20..33)
                .map(|i| format!("k{i}=v"))
                .collect::<Vec<_>>()
                .join(",")
                .into_boxed_str(),
        );
        assert_eq!(
            extract(vec![
                (TRACEPARENT, VALID),
                (TRACESTATE, first),
                (TRACESTATE, second)
            ]),
            (true, None)
        );
        // two traceparent fields: refused by the layers' extractor
        let mut h = HeaderMap::new();
        h.append(TRACEPARENT, VALID.parse().unwrap());
        h.append(TRACEPARENT, VALID.parse().unwrap());
        h.append(TRACESTATE, "a=1".parse().unwrap());
        let cx = W3cPropagator.extract(&StrictHeaderExtractor::new(&h));
        assert!(!cx.span().span_context().is_valid());
    }

    #[test]
    fn an_invalid_sdk_trace_state_never_goes_out() {
        let state = TraceState::from_key_value([("empty", ""), ("ok", "1")]).unwrap();
        let cx = Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_bytes([1; 16]),
            SpanId::from_bytes([1; 8]),
            TraceFlags::new(0xff),
            false,
            state,
        ));
        let sent = inject(&cx);
        assert_eq!(sent.get(TRACESTATE).unwrap(), "ok=1");
        assert!(
            sent.get(TRACEPARENT)
                .unwrap()
                .to_str()
                .unwrap()
                .ends_with("-03"),
            "reserved bits zero"
        );
    }
}
