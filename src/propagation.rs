//! W3C Trace Context: the crate's propagator ([`W3cPropagator`], to install as the global one),
//! strict `traceparent` validation ([`parse_traceparent`]), and a [`HeaderMap`] extractor that
//! only ever hands a propagator validated trace context ([`StrictHeaderExtractor`]).
//!
//! ```
//! use tower_otel_http::propagation::{parse_traceparent, W3cPropagator};
//!
//! opentelemetry::global::set_text_map_propagator(W3cPropagator::new());
//! assert!(parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some());
//! assert!(parse_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").is_none());
//! ```

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::OnceLock;

use http::{HeaderMap, HeaderName};
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;

/// The `traceparent` header name.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header name.
pub const TRACESTATE: &str = "tracestate";
/// The `baggage` header name.
pub const BAGGAGE: &str = "baggage";

/// Most `tracestate` list members kept (W3C: 32).
const MAX_TRACESTATE_MEMBERS: usize = 32;
/// The trace-flags bits this crate keeps when continuing a trace: sampled (bit 0) and
/// random-trace-id (bit 1, W3C Trace Context level 2).
const KEPT_FLAGS: u8 = 0b11;

/// A `traceparent` that passed the strict checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traceparent {
    /// The trace id (never all-zero).
    pub trace_id: TraceId,
    /// The parent span id (never all-zero).
    pub span_id: SpanId,
    /// The trace flags as sent.
    pub flags: u8,
}

const TRACEPARENT_NAME: HeaderName = HeaderName::from_static(TRACEPARENT);
const TRACESTATE_NAME: HeaderName = HeaderName::from_static(TRACESTATE);
const BAGGAGE_NAME: HeaderName = HeaderName::from_static(BAGGAGE);

/// `2 * N` lowercase hex digits as `N` bytes: no uppercase, no signs, no whitespace (which
/// `from_str_radix`, underneath opentelemetry's `from_hex`, would accept).
fn lower_hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    let mut chunks = s.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut c = [0u8; 8];
        c.copy_from_slice(chunk);
        out[at..at + 4].copy_from_slice(&hex8(c)?);
        at += 4;
    }
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    for pair in chunks.remainder().chunks_exact(2) {
        out[at] = (digit(pair[0])? << 4) | digit(pair[1])?;
        at += 1;
    }
    Some(out)
}

/// Eight lowercase hex digits as four bytes, eight digits at a time in one `u64` (a
/// `traceparent` has 48 of them per request: ≈ 300 instructions per request less than a digit at
/// a time, `BENCHMARKS.md`).
fn hex8(chars: [u8; 8]) -> Option<[u8; 4]> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let x = u64::from_le_bytes(chars);
    if x & HIGH != 0 {
        return None; // not ASCII
    }
    // per byte b < 0x80: the high bit of ((b | 0x80) - n) is set iff b >= n (no borrow
    // crosses bytes)
    let ge = |n: u8| (x | HIGH).wrapping_sub(u64::from(n) * ONES) & HIGH;
    let digit = ge(b'0') & !ge(b'9' + 1);
    let letter = ge(b'a') & !ge(b'f' + 1);
    if digit | letter != HIGH {
        return None;
    }
    // each byte its value: the low nibble, plus 9 for a letter ('a' = 0x61 → 1 + 9)
    let nibbles = (x & (0x0f * ONES)) + (letter >> 7) * 9;
    // pairs of nibbles into bytes (the first digit is the high nibble), one per 16-bit lane
    const LOW_OF_16: u64 = 0x00ff_00ff_00ff_00ff;
    let pairs = ((nibbles & LOW_OF_16) << 4) | ((nibbles >> 8) & LOW_OF_16);
    let b = pairs.to_le_bytes();
    Some([b[0], b[2], b[4], b[6]])
}

/// Parse a `traceparent` value strictly per W3C Trace Context:
/// `00-<32 lowercase hex>-<16 lowercase hex>-<2 lowercase hex>`.
///
/// Rejected: all-zero ids, version `ff`, wrong lengths, uppercase, signs, whitespace, extra
/// fields on version `00`. For higher versions the first four fields are parsed and anything
/// after a `-` following them is ignored.
///
/// ```
/// use tower_otel_http::propagation::parse_traceparent;
/// assert!(parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some());
/// assert!(parse_traceparent("00-1-2-01").is_none());
/// ```
#[must_use]
pub fn parse_traceparent(value: &str) -> Option<Traceparent> {
    let b = value.as_bytes();
    if b.len() < 55 || !value.is_char_boundary(55) {
        return None;
    }
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let [version] = lower_hex::<1>(&b[0..2])?;
    // version ff is invalid; version 00 has exactly four fields; higher versions may append
    // fields after a '-'
    if version == 0xff || (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
        return None;
    }
    let trace_id = lower_hex::<16>(&b[3..35])?;
    let span_id = lower_hex::<8>(&b[36..52])?;
    let [flags] = lower_hex::<1>(&b[53..55])?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Traceparent {
        trace_id: TraceId::from_bytes(trace_id),
        span_id: SpanId::from_bytes(span_id),
        flags,
    })
}

/// `00-<trace-id>-<span-id>-<flags>` for a span context, lowercase hex, on the stack (the trace
/// id is bytes 3..35, the span id 36..52, the flags 53..55).
pub(crate) fn traceparent_bytes(sc: &SpanContext) -> [u8; 55] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    fn hex_into(out: &mut [u8], bytes: &[u8]) {
        for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0x0f)];
        }
    }
    let mut b = [b'-'; 55];
    b[0] = b'0';
    b[1] = b'0';
    hex_into(&mut b[3..35], &sc.trace_id().to_bytes());
    hex_into(&mut b[36..52], &sc.span_id().to_bytes());
    hex_into(&mut b[53..55], &[sc.trace_flags().to_u8()]);
    b
}

/// The ASCII text of (part of) [`traceparent_bytes`].
pub(crate) fn ascii(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or_default()
}

/// Keep at most the first 32 `tracestate` members (whole members, never a cut one).
fn truncate_tracestate(value: Cow<'_, str>) -> Cow<'_, str> {
    match value.match_indices(',').nth(MAX_TRACESTATE_MEMBERS - 1) {
        Some((i, _)) => match value {
            Cow::Borrowed(v) => Cow::Borrowed(&v[..i]),
            Cow::Owned(mut v) => {
                v.truncate(i);
                Cow::Owned(v)
            }
        },
        None => value,
    }
}

/// A list-valued header (`tracestate`, `baggage`) that may be split over several fields:
/// the fields combined in order with `,`, as W3C requires. `None` when absent or not UTF-8.
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

/// An [`Extractor`] over a [`HeaderMap`] that only yields validated trace context:
/// `traceparent` when it passes [`parse_traceparent`] (normalised to its first four fields),
/// `tracestate` only alongside a valid `traceparent`, its fields combined in order and cut to
/// at most 32 whole members, `baggage` with its fields combined, and other headers (their first
/// field) as-is when they are valid UTF-8.
#[derive(Debug)]
pub struct StrictHeaderExtractor<'a> {
    headers: &'a HeaderMap,
    traceparent: Option<(&'a str, Traceparent)>,
    tracestate: Option<Cow<'a, str>>,
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
        let tracestate = traceparent
            .and_then(|_| combined(headers, &TRACESTATE_NAME))
            .map(truncate_tracestate);
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

    /// The span context of a valid `traceparent` and its `tracestate` (remote; the sampled
    /// and random-trace-id flags kept).
    pub(crate) fn span_context(&self) -> Option<SpanContext> {
        let tp = self.traceparent()?;
        let state = self
            .tracestate
            .as_deref()
            .and_then(|s| TraceState::from_str(s).ok())
            .unwrap_or_default();
        Some(SpanContext::new(
            tp.trace_id,
            tp.span_id,
            TraceFlags::new(tp.flags & KEPT_FLAGS),
            true,
            state,
        ))
    }
}

impl Extractor for StrictHeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if key.eq_ignore_ascii_case(TRACEPARENT) {
            return self.traceparent.map(|(s, _)| s);
        }
        if key.eq_ignore_ascii_case(TRACESTATE) {
            return self.tracestate.as_deref();
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

/// W3C Trace Context (`traceparent`, `tracestate`) through this crate's strict parser: the
/// propagator to install as the global one (or give with `with_propagator`).
///
/// ```
/// use tower_otel_http::propagation::W3cPropagator;
///
/// opentelemetry::global::set_text_map_propagator(W3cPropagator::new());
/// ```
///
/// It differs from the SDK's `TraceContextPropagator` in what it accepts: a `traceparent` is
/// taken only when it is valid under the specification's grammar ([`parse_traceparent`]; the
/// SDK takes some that are not), and the random-trace-id flag (`0x02`) is kept. Given to a layer with `with_propagator` — this
/// type, or the SDK's `TraceContextPropagator` — it is read and written by the crate directly,
/// without a call through the `TextMapPropagator` trait; installed as the global, it is called
/// like any other global propagator. It is also what the layers use for the spans they record
/// while no propagator is installed at all.
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
        if sc.is_valid() {
            injector.set(TRACEPARENT, ascii(&traceparent_bytes(sc)).to_owned());
            let state = sc.trace_state().header();
            if !state.is_empty() {
                injector.set(TRACESTATE, state);
            }
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        // the extractor is this crate's strict one, so its traceparent is valid already; any
        // other extractor's is checked here
        let Some(tp) = extractor.get(TRACEPARENT).and_then(parse_traceparent) else {
            return cx.clone();
        };
        let state = extractor
            .get(TRACESTATE)
            .and_then(|s| TraceState::from_str(s).ok())
            .unwrap_or_default();
        let sc = SpanContext::new(
            tp.trace_id,
            tp.span_id,
            TraceFlags::new(tp.flags & KEPT_FLAGS),
            true,
            state,
        );
        cx.with_remote_span_context(sc)
    }

    fn fields(&self) -> FieldIter<'_> {
        static FIELDS: OnceLock<[String; 2]> = OnceLock::new();
        FieldIter::new(FIELDS.get_or_init(|| [TRACEPARENT.to_owned(), TRACESTATE.to_owned()]))
    }
}

/// Extract with `propagator`, then restore the random-trace-id flag that propagators built for
/// Trace Context level 1 clear.
pub(crate) fn extract_with(
    propagator: &dyn TextMapPropagator,
    extractor: &StrictHeaderExtractor<'_>,
) -> Context {
    let cx = propagator.extract(extractor);
    let Some(want) = extractor.span_context() else {
        return cx;
    };
    let span = cx.span();
    let sc = span.span_context();
    if sc.is_remote()
        && sc.trace_id() == want.trace_id()
        && sc.span_id() == want.span_id()
        && sc.trace_flags() != want.trace_flags()
        && sc.trace_flags().is_sampled() == want.trace_flags().is_sampled()
    {
        let fixed = SpanContext::new(
            sc.trace_id(),
            sc.span_id(),
            want.trace_flags(),
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

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn every_byte_value_in_every_id_position_is_accepted_iff_lowercase_hex() {
        for pos in (3..35).chain(36..52).chain(53..55) {
            for v in 0..=255u8 {
                let mut b = VALID.as_bytes().to_vec();
                b[pos] = v;
                let Ok(s) = std::str::from_utf8(&b) else {
                    continue;
                };
                let hex = v.is_ascii_digit() || (b'a'..=b'f').contains(&v);
                assert_eq!(
                    parse_traceparent(s).is_some(),
                    hex,
                    "byte {v:#04x} at {pos}"
                );
            }
        }
    }

    #[test]
    fn accepts_valid() {
        let tp = parse_traceparent(VALID).unwrap();
        assert_eq!(
            tp.trace_id,
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert_eq!(tp.span_id, SpanId::from_hex("00f067aa0ba902b7").unwrap());
        assert_eq!(tp.flags, 1);
        // higher version with extra fields: first four parsed
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra")
                .is_some()
        );
        assert!(
            parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some()
        );
    }

    #[test]
    fn rejects_invalid() {
        for bad in [
            "00-1-2-01",
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-+0f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-+1",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "0-04bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?} accepted");
        }
    }

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
    fn tracestate_truncated_to_32_whole_members() {
        let members: Vec<String> = (0..40).map(|i| format!("k{i}=v{i}")).collect();
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, VALID.parse().unwrap());
        h.insert(TRACESTATE, members.join(",").parse().unwrap());
        let e = StrictHeaderExtractor::new(&h);
        let ts = e.get(TRACESTATE).unwrap();
        assert_eq!(ts.split(',').count(), 32);
        assert!(ts.ends_with("k31=v31"));
        let cx = W3cPropagator.extract_with_context(&Context::new(), &e);
        let state = cx.span().span_context().trace_state().clone();
        assert_eq!(state.get("k0"), Some("v0"));
        assert_eq!(state.get("k31"), Some("v31"));
        assert_eq!(state.get("k32"), None);
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
    fn eight_digits_at_a_time_agree_with_one_at_a_time() {
        fn slow(s: &[u8]) -> Option<[u8; 4]> {
            let digit = |b: u8| match b {
                b'0'..=b'9' => Some(b - b'0'),
                b'a'..=b'f' => Some(b - b'a' + 10),
                _ => None,
            };
            let mut out = [0u8; 4];
            for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
                *o = (digit(pair[0])? << 4) | digit(pair[1])?;
            }
            Some(out)
        }
        // every byte value in every position, around valid digits
        let base = *b"0123abcd";
        for pos in 0..8 {
            for v in 0..=255u8 {
                let mut c = base;
                c[pos] = v;
                assert_eq!(hex8(c), slow(&c), "{c:?}");
            }
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..100_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let alphabet = b"0123456789abcdefABCDEF/:`g@G\x00\x7f\xff";
            let mut c = [0u8; 8];
            for (i, b) in c.iter_mut().enumerate() {
                *b = alphabet[((seed >> (i * 5)) % alphabet.len() as u64) as usize];
            }
            assert_eq!(hex8(c), slow(&c), "{c:?}");
        }
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
        // the 32-member cap applies to the combination
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, VALID.parse().unwrap());
        for i in 0..20 {
            h.append(TRACESTATE, format!("k{i}=v{i},x{i}=y{i}").parse().unwrap());
        }
        let e = StrictHeaderExtractor::new(&h);
        let ts = e.get(TRACESTATE).unwrap();
        assert_eq!(ts.split(',').count(), 32);
        assert!(ts.starts_with("k0=v0,x0=y0,k1=v1"));
        assert!(ts.ends_with("k15=v15,x15=y15"));
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

    #[test]
    fn multibyte_input_at_the_field_boundaries_is_rejected_not_panicking() {
        for s in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\u{e9}",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b\u{e9}-01",
            "\u{e9}0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(s).is_none(), "{s:?}");
        }
    }
}
