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

/// `tracestate` members valid for W3C and the SDK, with distinct keys and values up to 200
/// characters (so that headers well over 512 characters are common).
fn tracestate_members() -> impl Strategy<Value = Vec<String>> {
    // `k<i>_<suffix>`: the suffix has no `_`, so the keys are distinct
    proptest::collection::vec(("[a-z0-9*/-]{0,12}", "[!-+.-<>-~]{1,200}"), 0..70).prop_map(
        |pairs| {
            pairs
                .into_iter()
                .enumerate()
                .map(|(i, (k, v))| format!("k{i}_{k}={v}"))
                .collect()
        },
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn tracestate_keeps_at_most_32_whole_members_in_order(
        members in tracestate_members(),
        breaks in proptest::collection::vec(any::<bool>(), 70),
    ) {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(VALID_TP));
        for f in split_into_fields(&members, &breaks) {
            h.append(TRACESTATE, HeaderValue::from_str(&f).unwrap());
        }
        let e = StrictHeaderExtractor::new(&h);
        let kept = members.len().min(32);
        let expected = members[..kept].join(",");
        match e.get(TRACESTATE) {
            None => prop_assert!(members.is_empty()),
            Some(out) => {
                prop_assert_eq!(out, expected.as_str());
                prop_assert!(out.split(',').count() <= 32);
            }
        }
        // what the propagators make of it: all of it when it has at most 32 members, however
        // long (W3C: at least 512 characters must propagate)
        for state in [
            W3cPropagator.extract_with_context(&Context::new(), &e).span().span_context().trace_state().header(),
            crate::propagation::extract_with(&TraceContextPropagator::new(), &e).span().span_context().trace_state().header(),
        ] {
            prop_assert_eq!(&state, &expected);
        }
    }

    #[test]
    fn tracestate_cut_is_always_a_member_boundary(
        fields in proptest::collection::vec(header_value(400), 1..6),
    ) {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(VALID_TP));
        let mut utf8 = true;
        for f in &fields {
            utf8 &= f.to_str().is_ok();
            h.append(TRACESTATE, f.clone());
        }
        let e = StrictHeaderExtractor::new(&h);
        let out = e.get(TRACESTATE);
        if !utf8 {
            prop_assert_eq!(out, None);
        } else {
            let combined = fields.iter().map(|f| f.to_str().unwrap()).collect::<Vec<_>>().join(",");
            let out = out.unwrap();
            prop_assert!(combined.starts_with(out));
            prop_assert!(out.len() == combined.len() || combined.as_bytes()[out.len()] == b',');
            prop_assert_eq!(out.split(',').count(), combined.split(',').count().min(32));
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
        if let Some(https) = f.https {
            let want = if https { "https" } else { "http" };
            prop_assert!(
                h.iter().any(|(_, v)| String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase().contains(want)),
                "{:?}", h
            );
        }
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

    let ts = sample(tracestate_members(), 300);
    assert!(ts.iter().any(|m| m.len() > 32));
    assert!(ts.iter().any(|m| m.len() <= 32 && m.join(",").len() > 512));

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
