//! W3C trace-context handling: strict `traceparent` validation (SEMCONV §5.1), a
//! [`HeaderMap`] extractor that only ever hands a propagator validated trace context, an
//! injector for outgoing requests, and the built-in W3C extraction used when no global
//! propagator is installed.

use std::str::FromStr;

use http::{HeaderMap, HeaderName};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;

/// The `traceparent` header name.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header name.
pub const TRACESTATE: &str = "tracestate";

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

/// Lowercase hex digit values; `0xff` for anything else.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Lowercase hex only: no uppercase, no signs, no whitespace.
fn parse_hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let (hi, lo) = (HEX[usize::from(pair[0])], HEX[usize::from(pair[1])]);
        bad |= hi | lo;
        *o = (hi << 4) | (lo & 0x0f);
    }
    (bad & 0xf0 == 0).then_some(out)
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Eight lowercase hex digits at once (SWAR): their four bytes, or `None` if any of them is
/// not in `[0-9a-f]`. Same result as [`parse_hex::<4>`], a quarter of the instructions.
fn parse_hex8(chunk: [u8; 8]) -> Option<[u8; 4]> {
    let x = u64::from_le_bytes(chunk);
    if x & HIGHS != 0 {
        return None; // non-ASCII
    }
    // per byte b < 0x80, no carry or borrow crosses a byte:
    // (b | 0x80) - m has its high bit set iff b >= m; (0x80 + n) - b iff b <= n
    let ge = |m: u64| (x | HIGHS).wrapping_sub(m * ONES) & HIGHS;
    let le = |n: u64| ((0x80 + n) * ONES).wrapping_sub(x) & HIGHS;
    let digit = ge(u64::from(b'0')) & le(u64::from(b'9'));
    let alpha = ge(u64::from(b'a')) & le(u64::from(b'f'));
    if digit | alpha != HIGHS {
        return None;
    }
    // nibble value: low four bits, + 9 for letters (bit 6 set)
    let n = (x & (0x0f * ONES)) + ((x >> 6) & ONES) * 9;
    // the first digit of each pair is the high nibble (little-endian: the lower byte)
    let pairs = ((n & 0x00ff_00ff_00ff_00ff) << 4) | ((n >> 8) & 0x00ff_00ff_00ff_00ff);
    let quads = (pairs | (pairs >> 8)) & 0x0000_ffff_0000_ffff;
    let packed = (quads | (quads >> 16)) & 0xffff_ffff;
    Some((packed as u32).to_le_bytes())
}

/// `2 * N` lowercase hex digits (`N` a multiple of 4), eight at a time.
fn parse_hex_wide<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != N * 2 || N % 4 != 0 {
        return None;
    }
    let mut out = [0u8; N];
    for (o, chunk) in out.chunks_exact_mut(4).zip(s.chunks_exact(8)) {
        let chunk: [u8; 8] = chunk.try_into().ok()?;
        o.copy_from_slice(&parse_hex8(chunk)?);
    }
    Some(out)
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
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let version = parse_hex::<1>(&b[0..2])?[0];
    // version ff is invalid; version 00 has exactly four fields; higher versions may append
    // fields after a '-'
    if version == 0xff || (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
        return None;
    }
    let trace_id = parse_hex_wide::<16>(&b[3..35])?;
    let span_id = parse_hex_wide::<8>(&b[36..52])?;
    let flags = parse_hex::<1>(&b[53..55])?[0];
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Traceparent {
        trace_id: TraceId::from_bytes(trace_id),
        span_id: SpanId::from_bytes(span_id),
        flags,
    })
}

/// Keep at most the first 32 `tracestate` members (whole members, never a cut one).
fn truncate_tracestate(value: &str) -> &str {
    match value.match_indices(',').nth(MAX_TRACESTATE_MEMBERS - 1) {
        Some((i, _)) => &value[..i],
        None => value,
    }
}

/// An [`Extractor`] over a [`HeaderMap`] that only yields validated trace context:
/// `traceparent` when it passes [`parse_traceparent`] (normalised to its first four fields),
/// `tracestate` only alongside a valid `traceparent` and at most 32 members, and other headers
/// as-is when they are valid UTF-8.
#[derive(Debug)]
pub struct StrictHeaderExtractor<'a> {
    headers: &'a HeaderMap,
    traceparent: Option<(&'a str, Traceparent)>,
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
        Self {
            headers,
            traceparent,
        }
    }

    /// The validated `traceparent`, if any.
    #[must_use]
    pub fn traceparent(&self) -> Option<Traceparent> {
        self.traceparent.map(|(_, tp)| tp)
    }
}

impl Extractor for StrictHeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if key.eq_ignore_ascii_case(TRACEPARENT) {
            return self.traceparent.map(|(s, _)| s);
        }
        if key.eq_ignore_ascii_case(TRACESTATE) {
            self.traceparent?;
            return self
                .headers
                .get(&TRACESTATE_NAME)
                .and_then(|v| v.to_str().ok())
                .map(truncate_tracestate);
        }
        self.headers.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.headers.keys().map(|k| k.as_str()).collect()
    }
}

/// An [`Injector`] into a [`HeaderMap`]; values that are not valid header values are skipped.
#[derive(Debug)]
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The built-in W3C Trace Context extraction: `traceparent` + `tracestate` on top of `base`.
pub(crate) fn extract_w3c(extractor: &StrictHeaderExtractor<'_>, base: Context) -> Context {
    match w3c_span_context(extractor) {
        Some(sc) => base.with_remote_span_context(sc),
        None => base,
    }
}

fn w3c_span_context(extractor: &StrictHeaderExtractor<'_>) -> Option<SpanContext> {
    let tp = extractor.traceparent()?;
    let state = extractor
        .get(TRACESTATE)
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

/// Extract with `propagator`, then restore the random-trace-id flag that propagators built for
/// Trace Context level 1 clear.
pub(crate) fn extract_with(
    propagator: &dyn TextMapPropagator,
    extractor: &StrictHeaderExtractor<'_>,
) -> Context {
    let cx = propagator.extract(extractor);
    if let Some(tp) = extractor.traceparent() {
        let sc = cx.span().span_context().clone();
        let want = TraceFlags::new(tp.flags & KEPT_FLAGS);
        if sc.is_remote()
            && sc.trace_id() == tp.trace_id
            && sc.span_id() == tp.span_id
            && sc.trace_flags() != want
            && sc.trace_flags().is_sampled() == want.is_sampled()
        {
            let fixed = SpanContext::new(
                sc.trace_id(),
                sc.span_id(),
                want,
                true,
                sc.trace_state().clone(),
            );
            return cx.with_remote_span_context(fixed);
        }
    }
    cx
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn wide_hex_parsing_agrees_with_the_bytewise_one_on_every_byte_value() {
        let base = *b"4bf92f3577b34da6";
        for pos in 0..base.len() {
            for v in 0..=255u8 {
                let mut s = base;
                s[pos] = v;
                assert_eq!(
                    parse_hex_wide::<8>(&s),
                    parse_hex::<8>(&s),
                    "byte {v:#04x} at {pos}"
                );
            }
        }
        // every pair of digit values, in every lane
        for hi in b"0123456789abcdef" {
            for lo in b"0123456789abcdef" {
                for lane in 0..4 {
                    let mut s = *b"0a1b2c3d";
                    s[lane * 2] = *hi;
                    s[lane * 2 + 1] = *lo;
                    assert_eq!(parse_hex8(s), parse_hex::<4>(&s));
                }
            }
        }
        assert_eq!(parse_hex_wide::<4>(b"ffffffff"), Some([0xff; 4]));
        assert_eq!(parse_hex_wide::<4>(b"00000000"), Some([0; 4]));
        assert_eq!(parse_hex_wide::<4>(b"0000000"), None);
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
        assert!(!extract_w3c(&e, Context::new())
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
        let cx = extract_w3c(&e, Context::new());
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
        let cx = extract_w3c(&StrictHeaderExtractor::new(&h), Context::new());
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
        // SEMCONV 5.2: at least 512 characters propagate
        let members: Vec<String> = (0..20)
            .map(|i| format!("vendor{i:02}=value-{}", "x".repeat(20)))
            .collect();
        let header = members.join(",");
        assert!(header.len() > 512);
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, VALID.parse().unwrap());
        h.insert(TRACESTATE, header.parse().unwrap());
        let cx = extract_w3c(&StrictHeaderExtractor::new(&h), Context::new());
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
}
