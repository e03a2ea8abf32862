//! Property tests (proptest) of the parsers and helpers every request goes through: they never
//! panic, whatever the input (arbitrary strings, arbitrary bytes as header values), and what
//! they give back is well-formed. Each property restates the rule independently of the code
//! under test (an oracle, or the exact expected output built from the generated parts), so a
//! broken rule makes it fail.

use std::borrow::Cow;
use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use proptest::prelude::*;

use crate::propagation::{
    parse_traceparent, StrictHeaderExtractor, W3cPropagator, BAGGAGE, TRACEPARENT, TRACESTATE,
};
use crate::semconv::{
    cap_owned, capped, capture_headers, forwarded, header_key, header_value_string, redact_query,
    split_host, url_full, KnownMethods, DEFAULT_KNOWN_METHODS, DEFAULT_REDACTED_QUERY_KEYS,
    SENSITIVE_HEADERS,
};

const VALID_TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// proptest's defaults (256 cases, or `PROPTEST_CASES`), without regression files written into
/// the source tree.
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn default_keys() -> Vec<Box<str>> {
    DEFAULT_REDACTED_QUERY_KEYS
        .iter()
        .map(|k| Box::<str>::from(*k))
        .collect()
}

// ------------------------------------------------------------------ generators

/// Bytes a header value may hold (`HeaderValue::from_bytes` accepts them): visible ASCII, space,
/// tab, obs-text (0x80..=0xff, often whole UTF-8 characters).
fn header_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => (0x20u8..=0x7e).prop_map(|b| vec![b]),
        1 => Just(vec![b'\t']),
        1 => (0x80u8..=0xff).prop_map(|b| vec![b]),
        // an ASCII control character would not be a header value: mapped, not filtered (so
        // that long runs reject nothing)
        2 => any::<char>()
            .prop_map(|c| if c.is_ascii_control() { 'x' } else { c })
            .prop_map(|c| c.to_string().into_bytes()),
        1 => prop_oneof![Just(b",".to_vec()), Just(b"=".to_vec()), Just(b";".to_vec()), Just(b"-".to_vec())],
    ];
    proptest::collection::vec(piece, 0..max).prop_map(|v| v.concat())
}

fn header_value(max: usize) -> impl Strategy<Value = HeaderValue> {
    header_bytes(max).prop_map(|b| HeaderValue::from_bytes(&b).expect("generated valid"))
}

/// A header field's bytes split at random points into several fields.
fn split_into_fields(whole: &[String], breaks: &[bool]) -> Vec<String> {
    let mut fields = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for (i, m) in whole.iter().enumerate() {
        current.push(m);
        if breaks.get(i).copied().unwrap_or(false) {
            fields.push(current.join(","));
            current.clear();
        }
    }
    if !current.is_empty() {
        fields.push(current.join(","));
    }
    fields
}

// ------------------------------------------------------------------ traceparent

fn lower_hex(b: &[u8]) -> bool {
    b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// The W3C `traceparent` rules, restated: `vv-<32 hex>-<16 hex>-<2 hex>` in lowercase, version
/// not `ff`, ids not all zero; version `00` has exactly these four fields, higher versions may
/// go on after a `-`.
fn traceparent_oracle(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 55 {
        return false;
    }
    let (head, tail) = b.split_at(55);
    let fields: Vec<&[u8]> = head.split(|c| *c == b'-').collect();
    let lens: Vec<usize> = fields.iter().map(|f| f.len()).collect();
    if lens != [2, 32, 16, 2] || !fields.iter().all(|f| lower_hex(f)) {
        return false;
    }
    if fields[0] == b"ff"
        || fields[1].iter().all(|c| *c == b'0')
        || fields[2].iter().all(|c| *c == b'0')
    {
        return false;
    }
    if fields[0] == b"00" {
        tail.is_empty()
    } else {
        tail.is_empty() || tail[0] == b'-'
    }
}

/// Near-valid `traceparent` values: random version, ids (sometimes zero), flags and suffix,
/// then sometimes one byte replaced by a character that breaks (or keeps) the shape.
fn traceparent_candidate() -> impl Strategy<Value = String> {
    let version = prop_oneof![Just(0u8), Just(0xffu8), any::<u8>()];
    let trace = prop_oneof![1 => Just([0u8; 16]), 8 => any::<[u8; 16]>()];
    let span = prop_oneof![1 => Just([0u8; 8]), 8 => any::<[u8; 8]>()];
    let suffix = prop_oneof![
        4 => Just(String::new()),
        1 => "-[ -~]{0,10}",
        1 => "[ -~]{1,5}",
    ];
    let mutation = proptest::option::of((
        0usize..60,
        prop_oneof![
            Just('A'),
            Just('F'),
            Just('g'),
            Just('-'),
            Just(' '),
            Just('+'),
            Just('0'),
            Just('\u{e9}'),
            Just('\u{3042}'),
        ],
    ));
    (version, trace, span, any::<u8>(), suffix, mutation).prop_map(
        |(v, t, s, f, suffix, mutation)| {
            let mut out = format!(
                "{v:02x}-{}-{}-{f:02x}{suffix}",
                opentelemetry::trace::TraceId::from_bytes(t),
                opentelemetry::trace::SpanId::from_bytes(s)
            );
            if let Some((at, c)) = mutation {
                let mut chars: Vec<char> = out.chars().collect();
                if at < chars.len() {
                    chars[at] = c;
                    out = chars.into_iter().collect();
                }
            }
            out
        },
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn traceparent_accepted_iff_w3c_shape_and_ids_round_trip(
        s in prop_oneof![traceparent_candidate(), any::<String>(), "[0-9a-f-]{50,60}"]
    ) {
        let parsed = parse_traceparent(&s);
        prop_assert_eq!(parsed.is_some(), traceparent_oracle(&s), "{:?}", s);
        if let Some(tp) = parsed {
            // the ids and flags written back are the first four fields, byte for byte
            let back = format!("{}-{}-{}-{:02x}", &s[..2], tp.trace_id, tp.span_id, tp.flags);
            prop_assert_eq!(back.as_str(), &s[..55]);
        }
        // through the extractor: the header is handed on normalised to four fields, or not at
        // all; a header value that is not visible ASCII (obs-text after a higher version's
        // fields, say) is not a valid `traceparent` field
        if let Ok(v) = HeaderValue::from_str(&s) {
            let parsed = parsed.filter(|_| v.to_str().is_ok());
            let mut h = HeaderMap::new();
            h.insert(TRACEPARENT, v);
            h.insert(TRACESTATE, HeaderValue::from_static("k=v"));
            let e = StrictHeaderExtractor::new(&h);
            prop_assert_eq!(e.get(TRACEPARENT), parsed.map(|_| &s[..55]));
            prop_assert_eq!(e.get(TRACESTATE).is_some(), parsed.is_some());
            let cx = W3cPropagator.extract_with_context(&Context::new(), &e);
            let span = cx.span();
            let sc = span.span_context();
            match parsed {
                Some(tp) => {
                    prop_assert!(sc.is_valid() && sc.is_remote());
                    prop_assert_eq!(sc.trace_id(), tp.trace_id);
                    prop_assert_eq!(sc.span_id(), tp.span_id);
                    prop_assert_eq!(sc.trace_flags().to_u8(), tp.flags & 0b11);
                }
                None => prop_assert!(!sc.is_valid()),
            }
        }
    }

    #[test]
    fn arbitrary_trace_context_bytes_never_panic(
        tp in header_value(80),
        ts in proptest::collection::vec(header_value(120), 0..4),
        bag in proptest::collection::vec(header_value(120), 0..4),
        valid_tp in any::<bool>(),
    ) {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, if valid_tp { HeaderValue::from_static(VALID_TP) } else { tp });
        for v in ts {
            h.append(TRACESTATE, v);
        }
        for v in bag {
            h.append(BAGGAGE, v);
        }
        let e = StrictHeaderExtractor::new(&h);
        if let Some(out) = e.get(TRACESTATE) {
            prop_assert!(out.split(',').count() <= 32);
        }
        let _ = W3cPropagator.extract_with_context(&Context::new(), &e);
        let _ = TraceContextPropagator::new().extract(&e);
        let cx = BaggagePropagator::new().extract(&e);
        prop_assert!(cx.baggage().len() <= 64);
        let _ = crate::propagation::extract_with(&TraceContextPropagator::new(), &e);
    }
}

// ------------------------------------------------------------------ tracestate

/// A `tracestate` key under the Level 2 grammar: a lowercase letter or digit, then up to 255 of
/// `a-z 0-9 _ - * / @` (short ones, and long ones near the limit).
fn ts_key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9][a-z0-9_*/@-]{0,12}",
        1 => "[a-z0-9][a-z0-9_*/@-]{240,255}",
    ]
}

/// A `tracestate` value: 1 to 256 printable ASCII characters but `,` and `=`, the last not a
/// space.
fn ts_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[ -+\\--<>-~]{0,30}[!-+\\--<>-~]",
        1 => "[ -+\\--<>-~]{200,255}[!-+\\--<>-~]",
    ]
}

/// Valid members with distinct keys (a repeated key is dropped), up to 40 of them.
fn ts_members() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec((ts_key(), ts_value()), 0..40).prop_map(|pairs| {
        let mut seen = std::collections::HashSet::new();
        pairs
            .into_iter()
            .filter(|(k, _)| seen.insert(k.clone()))
            .collect()
    })
}

/// Something that is not a valid member, to put among valid ones.
fn ts_broken_member() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("empty=".to_owned()),
        Just("@lead=1".to_owned()),
        Just("Upper=1".to_owned()),
        Just("novalue".to_owned()),
        Just("k=a=b".to_owned()),
        "[a-z]{257}=v",
        "[a-z]{3}=[a-z]{257}",
        Just("tab=a\tb".to_owned()),
    ]
}

/// The valid members, the invalid one put among them (where, what), the header fields.
type TracestateInput = (Vec<(String, String)>, Option<(usize, String)>, Vec<String>);

/// A `tracestate` as a sender may write it: the members with optional white space around them,
/// empty members here and there, split over header fields at random; with `broken`, one
/// invalid member among them.
fn ts_fields() -> impl Strategy<Value = TracestateInput> {
    (
        ts_members(),
        proptest::option::weighted(0.3, (any::<usize>(), ts_broken_member())),
        proptest::collection::vec((0u8..6, 0u8..6, any::<bool>(), any::<bool>()), 41),
    )
        .prop_map(|(members, broken, shape)| {
            let ows = |n: u8| match n {
                0..=2 => "",
                3 => " ",
                4 => "\t",
                _ => " \t ",
            };
            let mut texts: Vec<String> = members.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let broken = broken.map(|(at, m)| (at % (texts.len() + 1), m));
            if let Some((at, m)) = &broken {
                texts.insert(*at, m.clone());
            }
            let mut fields = vec![String::new()];
            for (i, t) in texts.iter().enumerate() {
                let (before, after, empty, split) = shape[i];
                let field = fields.last_mut().unwrap();
                if !field.is_empty() {
                    field.push(',');
                }
                if empty {
                    field.push_str(ows(before));
                    field.push(',');
                }
                field.push_str(ows(before));
                field.push_str(t);
                field.push_str(ows(after));
                if split {
                    fields.push(String::new());
                }
            }
            (members, broken, fields)
        })
}

/// The Level 2 rules restated: the fields combined with `,`, white space around members and
/// empty members skipped, each member `key=value` by the grammar, keys unique, at most 32. The
/// canonical list (members joined by `,`), or `None` when it does not parse.
fn tracestate_oracle(fields: &[&str]) -> Option<String> {
    let key_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-*/@".contains(c);
    let value_char = |c: char| (' '..='~').contains(&c) && c != ',' && c != '=';
    let combined = fields.join(",");
    let mut out: Vec<(&str, &str)> = Vec::new();
    for m in combined.split(',') {
        let m = m.trim_matches(|c| c == ' ' || c == '\t');
        if m.is_empty() {
            continue;
        }
        let (k, v) = m.split_once('=')?;
        let first = k.chars().next()?;
        let key_ok = (first.is_ascii_lowercase() || first.is_ascii_digit())
            && k.chars().all(key_char)
            && k.len() <= 256;
        let value_ok =
            !v.is_empty() && v.len() <= 256 && v.chars().all(value_char) && !v.ends_with(' ');
        if !key_ok || !value_ok || out.iter().any(|(seen, _)| *seen == k) {
            return None;
        }
        out.push((k, v));
    }
    (out.len() <= 32).then(|| {
        out.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// The context the SDK gives a child of `parent`: a recorded child takes the parent's flags
/// with its own sampled bit, a dropped one flags from nothing; both the parent's trace state
/// (what `ParentBased` samplers hand on).
fn sdk_child(parent: &Context, dropped: bool, sampled: bool) -> Context {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags};
    let span = parent.span();
    let psc = span.span_context();
    let flags = if dropped {
        TraceFlags::default()
    } else {
        psc.trace_flags().with_sampled(sampled)
    };
    parent.with_remote_span_context(SpanContext::new(
        psc.trace_id(),
        SpanId::from_bytes([7; 8]),
        flags,
        false,
        psc.trace_state().clone(),
    ))
}

fn injected(cx: &Context) -> HeaderMap {
    let mut out = HeaderMap::new();
    W3cPropagator.inject_context(cx, &mut crate::propagation::HeaderInjector(&mut out));
    out
}

proptest! {
    #![proptest_config(config())]

    /// What goes out is what came in, canonically written, whenever it parses; nothing when it
    /// does not (a broken member, a repeated key, more than 32 members discard it whole) —
    /// through a child the SDK records or drops, as through a pass-through.
    #[test]
    fn tracestate_goes_on_whole_or_not_at_all(
        (members, broken, fields) in ts_fields(),
        dropped in any::<bool>(),
    ) {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(VALID_TP));
        for f in &fields {
            h.append(TRACESTATE, HeaderValue::from_str(f).unwrap());
        }
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        let want = tracestate_oracle(&fields).filter(|s| !s.is_empty());
        // the oracle agrees with how the input was built
        let built = (broken.is_none() && members.len() <= 32)
            .then(|| members.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","))
            .filter(|s| !s.is_empty());
        prop_assert_eq!(&want, &built);
        let e = StrictHeaderExtractor::new(&h);
        prop_assert_eq!(e.get(TRACESTATE), want.as_deref());
        for parent in [
            W3cPropagator.extract_with_context(&Context::new(), &e),
            e.remote(&Context::new()).unwrap(),
        ] {
            for cx in [sdk_child(&parent, dropped, !dropped), parent.clone()] {
                let out = injected(&cx);
                let sent = out.get(TRACESTATE).map(|v| v.to_str().unwrap());
                prop_assert_eq!(sent, want.as_deref());
                prop_assert_eq!(crate::propagation::outgoing_tracestate(&cx).map(|t| t.as_str().to_owned()), want.clone());
            }
        }
    }

    /// For any input, what is handed on parses under the Level 2 grammar and has at most 32
    /// members; it is there exactly when the input (all of it text) parses.
    #[test]
    fn any_tracestate_bytes_give_a_valid_list_or_none(
        fields in prop_oneof![
            proptest::collection::vec(header_value(300), 1..5),
            // valid lists, some with one broken member, as header values
            ts_fields().prop_map(|(_, _, f)| f.iter().map(|f| HeaderValue::from_str(f).unwrap()).collect()),
        ],
    ) {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(VALID_TP));
        for f in &fields {
            h.append(TRACESTATE, f.clone());
        }
        let e = StrictHeaderExtractor::new(&h);
        let texts: Option<Vec<&str>> = fields.iter().map(|f| f.to_str().ok()).collect();
        let want = texts.and_then(|t| tracestate_oracle(&t)).filter(|s| !s.is_empty());
        prop_assert_eq!(e.get(TRACESTATE), want.as_deref());
        let cx = e.remote(&Context::new()).unwrap();
        if let Some(sent) = injected(&sdk_child(&cx, true, false)).get(TRACESTATE) {
            let sent = sent.to_str().unwrap();
            let reparsed = tracestate_oracle(&[sent]);
            prop_assert_eq!(reparsed.as_deref(), Some(sent));
            prop_assert!(sent.split(',').count() <= 32);
        }
    }

    /// Keys a sampler (or the user) adds or updates on the SDK's copy come first in what goes
    /// out, the members it held and deleted are gone, every other member follows in order —
    /// the ones the SDK cannot hold included — and the list stays valid, at most 32.
    #[test]
    fn sdk_side_changes_are_merged_valid_and_bounded(
        members in ts_members(),
        // the SDK takes an empty value, which Level 2 refuses
        inserts in proptest::collection::vec(("[a-z][a-z0-9]{0,6}", "[a-z0-9]{0,8}"), 0..5),
        delete in any::<proptest::sample::Index>(),
    ) {
        let members: Vec<(String, String)> = members.into_iter().take(32).collect();
        let header = members.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(VALID_TP));
        if !header.is_empty() {
            h.insert(TRACESTATE, HeaderValue::from_str(&header).unwrap());
        }
        let parent = StrictHeaderExtractor::new(&h).remote(&Context::new()).unwrap();
        let span = parent.span();
        let handed = span.span_context().trace_state().clone();
        let mut state = handed.clone();
        let deleted = handed.into_iter().map(|(k, _)| k.to_owned()).collect::<Vec<_>>();
        let deleted = (!deleted.is_empty()).then(|| deleted[delete.index(deleted.len())].clone());
        if let Some(k) = &deleted {
            state = state.delete(k.clone()).unwrap();
        }
        for (k, v) in &inserts {
            state = state.insert(k.clone(), v.clone()).unwrap();
        }
        let child = parent.with_remote_span_context(opentelemetry::trace::SpanContext::new(
            span.span_context().trace_id(),
            opentelemetry::trace::SpanId::from_bytes([7; 8]),
            opentelemetry::trace::TraceFlags::SAMPLED,
            false,
            state.clone(),
        ));
        let out = injected(&child);
        let sent = out.get(TRACESTATE).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let reparsed = tracestate_oracle(&[&sent]);
        prop_assert_eq!(reparsed.as_deref(), Some(sent.as_str()));
        let sent: Vec<(&str, &str)> = sent.split(',').filter(|m| !m.is_empty()).map(|m| m.split_once('=').unwrap()).collect();
        prop_assert!(sent.len() <= 32);
        // the changed keys first, newest first (as the SDK's copy holds them), those with a
        // value Level 2 refuses left out
        let changed: Vec<(&str, &str)> = state
            .into_iter()
            .filter(|(k, v)| members.iter().all(|(mk, mv)| mk != k || mv != v))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        let updated_invalid: Vec<&str> = state
            .into_iter()
            .filter(|(k, v)| v.is_empty() && members.iter().any(|(mk, _)| mk == k))
            .map(|(k, _)| k)
            .collect();
        let n = changed.len().min(sent.len());
        prop_assert_eq!(&sent[..n], &changed[..n]);
        // then the members kept, in their order: all but the deleted and the changed
        let kept: Vec<(&str, &str)> = members
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .filter(|(k, _)| {
                Some(*k) != deleted.as_deref()
                    && changed.iter().all(|(ck, _)| ck != k)
                    && !updated_invalid.contains(k)
            })
            .collect();
        let rest = &sent[n..];
        prop_assert_eq!(rest, &kept[..rest.len()]);
        prop_assert!(sent.len() == 32 || rest.len() == kept.len(), "nothing dropped below 32");
    }

    /// For any flag byte, the random-trace-id bit of every outgoing `traceparent` of the trace
    /// is the incoming one, the sampled bit is the sending span's, the reserved bits are zero.
    #[test]
    fn the_random_bit_follows_the_trace_and_reserved_bits_are_zero(
        flags in any::<u8>(),
        dropped in any::<bool>(),
        sampled in any::<bool>(),
        tracestate in any::<bool>(),
    ) {
        let tp = format!("{}{flags:02x}", &VALID_TP[..53]);
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_str(&tp).unwrap());
        if tracestate {
            h.insert(TRACESTATE, HeaderValue::from_static("a=1"));
        }
        let e = StrictHeaderExtractor::new(&h);
        for parent in [
            W3cPropagator.extract_with_context(&Context::new(), &e),
            e.remote(&Context::new()).unwrap(),
        ] {
            let child = sdk_child(&parent, dropped, sampled);
            let out = injected(&child);
            let sent = out.get(TRACEPARENT).unwrap().to_str().unwrap();
            let sent_flags = u8::from_str_radix(&sent[53..], 16).unwrap();
            prop_assert_eq!(sent_flags & 0b10, flags & 0b10, "random bit");
            prop_assert_eq!(sent_flags & !0b11, 0, "reserved bits");
            prop_assert_eq!(sent_flags & 0b01, u8::from(sampled && !dropped), "the child's sampled bit");
            prop_assert_eq!(crate::propagation::outgoing_trace_flags(&child).to_u8(), sent_flags);
            // a pass-through sends the incoming sampled and random bits
            let passed = injected(&parent);
            let passed = passed.get(TRACEPARENT).unwrap().to_str().unwrap();
            prop_assert_eq!(u8::from_str_radix(&passed[53..], 16).unwrap(), flags & 0b11);
        }
    }

    #[test]
    fn tracestate_needs_a_valid_traceparent(tp in traceparent_candidate(), ts in header_value(100)) {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&tp) {
            h.insert(TRACEPARENT, v);
        }
        h.insert(TRACESTATE, ts);
        let e = StrictHeaderExtractor::new(&h);
        if e.traceparent().is_none() {
            prop_assert_eq!(e.get(TRACESTATE), None);
        }
    }
}

// ------------------------------------------------------------------ baggage

/// Baggage members with distinct keys; small values (a header under 8192 bytes) or large ones
/// (over it).
fn baggage_members() -> impl Strategy<Value = Vec<(String, String)>> {
    let small = proptest::collection::vec(("[a-zA-Z0-9_]{0,8}", "[a-zA-Z0-9]{0,40}"), 0..120);
    let large = proptest::collection::vec(("[a-zA-Z0-9_]{0,8}", "[a-zA-Z0-9]{0,400}"), 0..60);
    prop_oneof![small, large].prop_map(|pairs| {
        pairs
            .into_iter()
            .enumerate()
            .map(|(i, (k, v))| (format!("b{i}_{k}"), v))
            .collect()
    })
}

proptest! {
    #![proptest_config(config())]

    /// opentelemetry_sdk's `BaggagePropagator` drops a header longer than 8192 bytes whole and
    /// takes at most the first 64 members of one within it; the extractor combines the fields
    /// first, so splitting a header over several fields does not get around either limit.
    #[test]
    fn baggage_through_the_extractor_respects_the_sdk_limits(
        members in baggage_members(),
        breaks in proptest::collection::vec(any::<bool>(), 120),
    ) {
        let whole: Vec<String> = members.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let combined = whole.join(",");
        let mut h = HeaderMap::new();
        for f in split_into_fields(&whole, &breaks) {
            h.append(BAGGAGE, HeaderValue::from_str(&f).unwrap());
        }
        let e = StrictHeaderExtractor::new(&h);
        prop_assert_eq!(e.get(BAGGAGE), (!members.is_empty()).then_some(combined.as_str()));
        let cx = BaggagePropagator::new().extract(&e);
        let bag = cx.baggage();
        prop_assert!(bag.len() <= 64);
        let bytes: usize = bag
            .iter()
            .map(|(k, (v, m))| k.as_str().len() + v.as_str().len() + m.as_str().len())
            .sum();
        prop_assert!(bytes <= 8192);
        if combined.len() > 8192 {
            prop_assert!(bag.is_empty(), "an oversized header is dropped whole");
        } else {
            prop_assert_eq!(bag.len(), members.len().min(64));
            for (i, (k, v)) in members.iter().enumerate() {
                let got = bag.get(k.as_str()).map(|s| s.as_str().to_owned());
                if i < 64 {
                    prop_assert_eq!(got.as_deref(), Some(v.as_str()));
                } else {
                    prop_assert_eq!(got, None);
                }
            }
        }
    }
}

// ------------------------------------------------------------------ Host

/// What the crate's callers pass `split_host`: `HeaderValue::to_str` output (visible ASCII,
/// space, tab) and URI authorities.
fn host_candidate() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        "[a-z0-9.-]{1,20}",
        "[0-9a-f:]{2,20}".prop_map(|h| format!("[{h}]")),
        "[ -~\t]{0,12}",
        Just(String::new()),
    ];
    let port = proptest::option::of(prop_oneof!["[0-9]{0,7}", "[ -~]{0,4}"]);
    let junk = proptest::option::of(("[ -~\t]{0,3}", 0usize..30));
    (name, port, junk).prop_map(|(n, p, junk)| {
        let mut s = match p {
            Some(p) => format!("{n}:{p}"),
            None => n,
        };
        if let Some((j, at)) = junk {
            let at = at.min(s.len());
            s.insert_str(at, &j);
        }
        s
    })
}

fn check_split_host(value: &str) -> Result<(), TestCaseError> {
    let ascii_bad = |b: u8| b <= b' ' || b == 0x7f || b == b'/' || b == b'@';
    let Some((host, port)) = split_host(value) else {
        return Ok(());
    };
    prop_assert!(!host.is_empty());
    prop_assert!(!host.bytes().any(ascii_bad), "{:?} -> {:?}", value, host);
    // the value is exactly the host (bracketed or not) and the port's digits
    let rest = if value.starts_with('[') {
        let shown = format!("[{host}]");
        prop_assert!(value.starts_with(&shown), "{:?}", value);
        &value[shown.len()..]
    } else {
        prop_assert!(!host.contains(':'));
        prop_assert!(value.starts_with(host));
        &value[host.len()..]
    };
    match port {
        None => prop_assert_eq!(rest, ""),
        Some(p) => {
            let digits = rest.strip_prefix(':').unwrap_or("not a port");
            prop_assert!((1..=5).contains(&digits.len()));
            prop_assert!(digits.bytes().all(|d| d.is_ascii_digit()));
            prop_assert_eq!(digits.parse::<u32>().ok(), Some(u32::from(p)));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn split_host_gives_a_clean_host_and_a_valid_port(value in host_candidate()) {
        check_split_host(&value)?;
        if let Some((host, _)) = split_host(&value) {
            // the callers' inputs are ASCII: no whitespace or control character at all
            prop_assert!(!host.chars().any(|c| c.is_whitespace() || c.is_control()));
        }
        // whitespace or a control character anywhere: rejected
        if value.bytes().any(|b| b <= b' ' || b == 0x7f) {
            prop_assert_eq!(split_host(&value), None);
        }
    }

    #[test]
    fn split_host_never_panics_on_any_string(value in any::<String>()) {
        check_split_host(&value)?;
    }
}

// ------------------------------------------------------------------ Forwarded

fn node() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| std::net::Ipv4Addr::from(b).to_string()),
        any::<[u16; 8]>().prop_map(|b| format!("\"[{}]:{}\"", std::net::Ipv6Addr::from(b), b[0])),
        any::<[u16; 8]>().prop_map(|b| std::net::Ipv6Addr::from(b).to_string()),
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(b, p)| format!("{}:{p}", std::net::Ipv4Addr::from(b))),
        Just("unknown".to_owned()),
        "_[a-z]{1,6}",
        "[a-z.]{1,12}",
        "\"?[ -~]{0,16}\"?",
    ]
}

fn forwarded_value() -> impl Strategy<Value = String> {
    let pair = prop_oneof![
        node().prop_map(|n| format!("for={n}")),
        "(http|https|HTTPS|gopher|[a-z]{0,5})".prop_map(|p| format!("proto={p}")),
        host_candidate().prop_map(|h| format!("host={h}")),
        host_candidate().prop_map(|h| format!("host=\"{h}\"")),
        "[a-z]{1,5}=[ -~]{0,8}",
        "[ -~]{0,10}",
    ];
    proptest::collection::vec(proptest::collection::vec(pair, 1..4), 1..3).prop_map(|els| {
        els.iter()
            .map(|pairs| pairs.join(";"))
            .collect::<Vec<_>>()
            .join(", ")
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn forwarded_client_is_only_ever_an_ip_address(
        fwd in proptest::option::of(forwarded_value()),
        xff in proptest::option::of(proptest::collection::vec(node(), 1..4).prop_map(|v| v.join(", "))),
        xfp in proptest::option::of("(http|https|HTTP|ftp|[ -~]{0,6})"),
        raw in proptest::option::of(header_value(60)),
    ) {
        let mut h = HeaderMap::new();
        for (name, v) in [("forwarded", fwd), ("x-forwarded-for", xff), ("x-forwarded-proto", xfp)] {
            if let Some(v) = v.and_then(|v| HeaderValue::from_str(&v).ok()) {
                h.insert(name, v);
            }
        }
        if let Some(raw) = raw {
            h.append("forwarded", raw.clone());
            h.append("x-forwarded-for", raw);
        }
        let f = forwarded(&h);
        if let Some(c) = f.client {
            prop_assert!(c.parse::<IpAddr>().is_ok(), "client {:?} from {:?}", c, h);
        } else {
            prop_assert_eq!(f.client_port, None);
        }
        if let Some(host) = f.host {
            prop_assert!(split_host(host).is_some(), "host {:?} from {:?}", host, h);
            prop_assert!(!host.contains(['"', ',', ';', ' ']), "host {:?} from {:?}", host, h);
        }
        if let Some(https) = f.https {
            let want = if https { "https" } else { "http" };
            prop_assert!(
                h.iter().any(|(_, v)| String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase().contains(want)),
                "{:?}", h
            );
        }
    }

    /// Quoted values come out whole — `,` and `;` inside the quotes split nothing — and the
    /// pairs after them in the same element are still read.
    #[test]
    fn forwarded_quoted_values_are_whole(
        ip in any::<[u16; 8]>(),
        port in any::<u16>(),
        host in "[a-z]{1,10}(\\.[a-z]{1,6}){0,2}",
        junk in "[a-z0-9 !#$%&'()*+./:<=>?@^_`{|}~-]{0,10}",
        order in any::<bool>(),
    ) {
        let ip = std::net::Ipv6Addr::from(ip);
        let (a, b) = (format!("for=\"[{ip}]:{port}\""), format!("host=\"{host}\""));
        let (x, y) = if order { (a, b) } else { (b, a) };
        let v = format!("by=\"{junk},;{junk}\";{x};{y};proto=https, for=192.0.2.1;host=other");
        let mut h = HeaderMap::new();
        h.insert("forwarded", HeaderValue::from_str(&v).unwrap());
        let f = forwarded(&h);
        let want = ip.to_string();
        prop_assert_eq!(f.client, Some(want.as_str()), "{}", v);
        prop_assert_eq!(f.client_port, Some(port));
        prop_assert_eq!(f.host, Some(host.as_str()));
        prop_assert_eq!(f.https, Some(true));
    }

    #[test]
    fn forwarded_first_ip_is_the_client(
        first in any::<[u8; 4]>(),
        second in any::<[u8; 4]>(),
        use_forwarded in any::<bool>(),
    ) {
        let (a, b) = (std::net::Ipv4Addr::from(first), std::net::Ipv4Addr::from(second));
        let mut h = HeaderMap::new();
        if use_forwarded {
            h.insert("forwarded", HeaderValue::from_str(&format!("for={a};proto=https, for={b}")).unwrap());
        } else {
            h.insert("x-forwarded-for", HeaderValue::from_str(&format!("{a}, {b}")).unwrap());
        }
        let want = a.to_string();
        let f = forwarded(&h);
        prop_assert_eq!(f.client, Some(want.as_str()));
        prop_assert_eq!(f.https, use_forwarded.then_some(true));
    }
}

// ------------------------------------------------------------------ methods

fn method_token() -> impl Strategy<Value = String> {
    let known = proptest::sample::select(DEFAULT_KNOWN_METHODS.to_vec()).prop_map(str::to_owned);
    prop_oneof![
        known.clone(),
        known.clone().prop_map(|m| m.to_ascii_lowercase()),
        known.prop_map(|m| {
            let mut c: Vec<char> = m.chars().collect();
            c[0] = c[0].to_ascii_lowercase();
            c.into_iter().collect()
        }),
        "[A-Z]{1,10}",
        "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,16}",
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn known_methods_are_exact_and_case_sensitive(m in method_token()) {
        let method = Method::from_bytes(m.as_bytes()).unwrap();
        let info = KnownMethods::new(DEFAULT_KNOWN_METHODS).get(&method);
        let known = DEFAULT_KNOWN_METHODS.contains(&m.as_str());
        prop_assert_eq!(info.is_other, !known);
        if known {
            prop_assert_eq!(info.attribute.value.as_str(), m.as_str());
            prop_assert_eq!(info.label, m.as_str());
            prop_assert_eq!(info.metric_value(), m.as_str());
        } else {
            prop_assert_eq!(info.attribute.value.as_str(), "_OTHER");
            prop_assert_eq!(info.label, "HTTP");
            prop_assert_eq!(info.metric_value(), "_OTHER");
        }
    }

    #[test]
    fn a_configured_list_is_exact_too(
        list in proptest::collection::vec("[A-Z]{1,6}", 0..5),
        m in prop_oneof!["[A-Z]{1,6}", method_token()],
    ) {
        let method = Method::from_bytes(m.as_bytes()).unwrap();
        let info = KnownMethods::new(&list).get(&method);
        prop_assert_eq!(info.is_other, !list.contains(&m));
        prop_assert_eq!(
            info.attribute.value.as_str(),
            if list.contains(&m) { m.as_str() } else { "_OTHER" }
        );
    }
}

// ------------------------------------------------------------------ query redaction

/// A query pair: a sensitive key (exact, or another case) or another key, with a value or not.
/// Values of exact sensitive keys carry the marker `SECRET`, which nothing else contains.
fn query_pairs() -> impl Strategy<Value = Vec<(String, Option<String>)>> {
    let sensitive =
        proptest::sample::select(DEFAULT_REDACTED_QUERY_KEYS.to_vec()).prop_map(str::to_owned);
    let key = prop_oneof![
        3 => sensitive.clone(),
        1 => sensitive.prop_map(|k| k.to_ascii_lowercase()),
        3 => "[a-z0-9_.-]{0,10}",
    ];
    let value = proptest::option::of("[a-z0-9=%._~+-]{0,16}");
    proptest::collection::vec((key, value), 0..12).prop_map(|pairs| {
        pairs
            .into_iter()
            .enumerate()
            .map(|(i, (k, v))| {
                let v = match v {
                    Some(v) if DEFAULT_REDACTED_QUERY_KEYS.contains(&k.as_str()) => {
                        Some(format!("SECRET{i}{v}"))
                    }
                    v => v,
                };
                (k, v)
            })
            .collect()
    })
}

fn query_of(pairs: &[(String, Option<String>)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => k.clone(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The query as it must be recorded: each pair as it came, but `key=REDACTED` for a sensitive
/// key with a value.
fn redacted_query_of(pairs: &[(String, Option<String>)], keys: &[&str]) -> String {
    pairs
        .iter()
        .map(|(k, v)| match v {
            Some(_) if keys.contains(&k.as_str()) => format!("{k}=REDACTED"),
            Some(v) => format!("{k}={v}"),
            None => k.clone(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn redact_query_hides_sensitive_values_and_keeps_the_rest(pairs in query_pairs()) {
        let q = query_of(&pairs);
        let out = redact_query(&q, &default_keys());
        prop_assert!(!out.contains("SECRET"), "{:?} -> {:?}", q, out);
        prop_assert_eq!(out.as_ref(), redacted_query_of(&pairs, &DEFAULT_REDACTED_QUERY_KEYS));
        if out == q {
            prop_assert!(matches!(out, Cow::Borrowed(_)), "no allocation when nothing changes");
        }
        // a custom list replaces the default one
        let custom = vec![Box::<str>::from("sig")];
        let out = redact_query(&q, &custom);
        prop_assert_eq!(out.as_ref(), redacted_query_of(&pairs, &["sig"]));
        let untouched = redact_query(&q, &[]);
        prop_assert_eq!(untouched.as_ref(), q.as_str());
    }

    #[test]
    fn redact_query_keeps_the_pair_structure_of_any_string(q in any::<String>()) {
        let keys = default_keys();
        let out = redact_query(&q, &keys);
        let (ins, outs): (Vec<&str>, Vec<&str>) = (q.split('&').collect(), out.split('&').collect());
        prop_assert_eq!(ins.len(), outs.len());
        for (i, o) in ins.iter().zip(&outs) {
            match i.split_once('=') {
                Some((k, _)) if keys.iter().any(|s| **s == *k) => {
                    prop_assert_eq!(*o, format!("{k}=REDACTED"));
                }
                _ => prop_assert_eq!(i, o),
            }
        }
    }

    #[test]
    fn url_full_never_shows_credentials_or_sensitive_values(
        https in any::<bool>(),
        user in proptest::option::of(("[a-z0-9]{0,8}", proptest::option::of("[a-z0-9:]{0,8}"))),
        host in prop_oneof![
            "[a-z][a-z0-9-]{0,10}(\\.[a-z]{1,5}){0,2}",
            any::<[u8; 4]>().prop_map(|b| std::net::Ipv4Addr::from(b).to_string()),
            Just("[::1]".to_owned()),
        ],
        port in proptest::option::of(any::<u16>()),
        path in "(/[a-z0-9._~-]{0,8}){0,4}",
        pairs in query_pairs(),
    ) {
        let scheme = if https { "https" } else { "http" };
        let userinfo = match &user {
            Some((u, Some(p))) => format!("USR{u}:PWD{p}@"),
            Some((u, None)) => format!("USR{u}@"),
            None => String::new(),
        };
        let authority = match port {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let q = query_of(&pairs);
        let query = if pairs.is_empty() { String::new() } else { format!("?{q}") };
        let text = format!("{scheme}://{userinfo}{authority}{path}{query}");
        let uri: http::Uri = text.parse().map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        let out = url_full(&uri, &default_keys());
        for secret in ["USR", "PWD", "SECRET"] {
            prop_assert!(!out.contains(secret), "{:?} -> {:?}", text, out);
        }
        let creds = if user.is_some() { "REDACTED:REDACTED@" } else { "" };
        let path = if path.is_empty() { "/" } else { path.as_str() };
        let expected = format!(
            "{scheme}://{creds}{authority}{path}{}",
            if pairs.is_empty() { String::new() } else { format!("?{}", redacted_query_of(&pairs, &DEFAULT_REDACTED_QUERY_KEYS)) }
        );
        prop_assert_eq!(out, expected);
    }

    #[test]
    fn url_full_replaces_any_userinfo(
        authority in "[a-zA-Z0-9:@._~%!$&'()*+,;=-]{1,30}",
        tail in "(/[a-z]{0,5})?(\\?[a-z=&]{0,10})?",
    ) {
        let text = format!("http://{authority}{tail}");
        if let Ok(uri) = text.parse::<http::Uri>() {
            let out = url_full(&uri, &default_keys());
            let a = uri.authority().unwrap().as_str();
            match a.rsplit_once('@') {
                Some((_, host)) => {
                    let want = format!("http://REDACTED:REDACTED@{host}{}", uri.path());
                    prop_assert!(out.starts_with(&want), "{:?} -> {:?}", text, out);
                }
                None => {
                    let want = format!("http://{a}");
                    prop_assert!(out.starts_with(&want), "{:?} -> {:?}", text, out);
                }
            }
        }
    }
}

// ------------------------------------------------------------------ value caps

proptest! {
    #![proptest_config(config())]

    #[test]
    fn capped_is_the_longest_char_boundary_prefix_within_max(s in any::<String>(), seed in any::<usize>()) {
        let max = seed % (s.len() + 5);
        let r = capped(&s, max);
        prop_assert!(s.starts_with(r));
        prop_assert!(r.len() <= max);
        prop_assert!(std::str::from_utf8(r.as_bytes()).is_ok());
        if r.len() < s.len() {
            let next = s[r.len()..].chars().next().unwrap();
            prop_assert!(r.len() + next.len_utf8() > max, "not the longest prefix");
        }
        prop_assert_eq!(cap_owned(s.clone(), max), r);
    }

    #[test]
    fn header_value_string_is_utf8_and_within_max(bytes in header_bytes(300), seed in any::<usize>()) {
        let v = HeaderValue::from_bytes(&bytes).unwrap();
        let max = seed % (bytes.len() + 5);
        let out = header_value_string(&v, max);
        let out = out.as_str();
        prop_assert!(out.len() <= max);
        let lossy = String::from_utf8_lossy(&bytes);
        prop_assert_eq!(out, capped(&lossy, max), "the longest prefix of the decoded value");
        if let Ok(s) = std::str::from_utf8(&bytes) {
            prop_assert!(s.starts_with(out));
        }
    }

    #[test]
    fn captured_headers_are_capped_and_sensitive_ones_skipped(
        values in proptest::collection::vec((0usize..7, header_value(100)), 0..12),
        listed in proptest::sample::subsequence(
            vec!["authorization", "proxy-authorization", "cookie", "set-cookie", "x-request-id", "user-agent", "x-custom"],
            0..=7,
        ),
        sensitive_allowed in any::<bool>(),
        max in 0usize..40,
    ) {
        const NAMES: [&str; 7] = ["authorization", "proxy-authorization", "cookie", "set-cookie", "x-request-id", "user-agent", "x-custom"];
        let mut h = HeaderMap::new();
        for (i, v) in values {
            h.append(HeaderName::from_static(NAMES[i]), v);
        }
        let names: Vec<(HeaderName, opentelemetry::Key)> = listed
            .iter()
            .map(|n| {
                let n = HeaderName::from_static(n);
                let k = header_key("http.request.header", &n);
                (n, k)
            })
            .collect();
        let mut out = Vec::new();
        capture_headers(&h, &names, sensitive_allowed, max, &mut out);
        let expected: Vec<&&str> = listed
            .iter()
            .filter(|n| h.contains_key(**n))
            .filter(|n| sensitive_allowed || !SENSITIVE_HEADERS.contains(*n))
            .collect();
        prop_assert_eq!(out.len(), expected.len());
        for (kv, name) in out.iter().zip(expected) {
            prop_assert_eq!(kv.key.as_str(), format!("http.request.header.{name}"));
            let opentelemetry::Value::Array(opentelemetry::Array::String(got)) = &kv.value else {
                return Err(TestCaseError::fail("not a string array"));
            };
            let want: Vec<_> = h.get_all(*name).iter().map(|v| header_value_string(v, max)).collect();
            prop_assert_eq!(got, &want);
            prop_assert!(got.iter().all(|s| s.as_str().len() <= max));
        }
    }
}

// ------------------------------------------------------------------ the generators themselves

/// The generators reach both sides of every rule above (otherwise a property could pass
/// vacuously): accepted and rejected `traceparent`s, `tracestate` over and under 32 members and
/// over 512 characters, baggage over and under the SDK's limits, hosts with ports, forwarded
/// clients, URLs with credentials and sensitive values.
#[test]
fn generators_reach_both_sides_of_each_rule() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    fn sample<S: Strategy>(s: S, n: usize) -> Vec<S::Value> {
        let mut runner = TestRunner::deterministic();
        (0..n)
            .map(|_| s.new_tree(&mut runner).unwrap().current())
            .collect()
    }

    let tps = sample(traceparent_candidate(), 500);
    let accepted = tps
        .iter()
        .filter(|s| parse_traceparent(s).is_some())
        .count();
    assert!(
        accepted > 50 && accepted < 450,
        "accepted {accepted} of 500"
    );
    assert!(tps
        .iter()
        .any(|s| s.len() > 55 && parse_traceparent(s).is_some()));

    let ts = sample(ts_fields(), 400);
    let len =
        |m: &Vec<(String, String)>| m.iter().map(|(k, v)| k.len() + v.len() + 2).sum::<usize>();
    assert!(ts.iter().any(|(m, b, _)| m.len() > 32 && b.is_none()));
    assert!(ts
        .iter()
        .any(|(m, b, _)| m.len() <= 32 && b.is_none() && len(m) > 512));
    assert!(ts.iter().any(|(m, b, _)| m.len() <= 32 && b.is_some()));
    assert!(ts.iter().any(|(_, _, f)| f.len() > 2));
    assert!(ts
        .iter()
        .any(|(_, _, f)| f.iter().any(|f| f.contains(" ,") || f.contains(",,"))));
    let parsed = ts
        .iter()
        .filter(|(_, _, f)| {
            tracestate_oracle(&f.iter().map(String::as_str).collect::<Vec<_>>())
                .is_some_and(|s| !s.is_empty())
        })
        .count();
    assert!(parsed > 40 && parsed < 360, "{parsed} of 400 parse");

    let bags = sample(baggage_members(), 300);
    let len = |m: &Vec<(String, String)>| {
        m.iter().map(|(k, v)| k.len() + v.len() + 1).sum::<usize>() + m.len().saturating_sub(1)
    };
    assert!(bags.iter().any(|m| len(m) > 8192));
    assert!(bags.iter().any(|m| len(m) <= 8192 && m.len() > 64));
    assert!(bags
        .iter()
        .any(|m| len(m) <= 8192 && m.len() <= 64 && m.len() > 10));

    let hosts = sample(host_candidate(), 500);
    assert!(hosts
        .iter()
        .any(|h| matches!(split_host(h), Some((_, Some(_))))));
    assert!(hosts
        .iter()
        .any(|h| h.starts_with('[') && split_host(h).is_some()));
    assert!(hosts.iter().any(|h| split_host(h).is_none()));

    let fwd = sample(forwarded_value(), 300);
    let clients = fwd
        .iter()
        .filter(|v| {
            let mut h = HeaderMap::new();
            HeaderValue::from_str(v)
                .map(|v| h.insert("forwarded", v))
                .is_ok()
                && forwarded(&h).client.is_some()
        })
        .count();
    assert!(clients > 10, "{clients}");

    let queries = sample(query_pairs(), 300);
    assert!(queries.iter().any(|q| q
        .iter()
        .any(|(k, v)| v.is_some() && DEFAULT_REDACTED_QUERY_KEYS.contains(&k.as_str()))));
    assert!(queries.iter().any(|q| q
        .iter()
        .any(|(k, v)| v.is_some() && !k.chars().any(|c| c.is_ascii_uppercase()))));
}
