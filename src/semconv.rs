//! Semantic-convention helpers shared by the server and the client: method normalisation,
//! protocol versions, `url.query` / `url.full` redaction, `Host` / `:authority` parsing, header
//! capture and `Forwarded` parsing.
//!
//! ```
//! use tower_otel_http::semconv;
//!
//! assert!(semconv::DEFAULT_KNOWN_METHODS.contains(&"GET"));
//! assert_eq!(semconv::KNOWN_METHODS_ENV, "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS");
//! ```
//!
//! Known methods, schemes and protocol versions map to `&'static str` or pre-built
//! [`KeyValue`]s.

use std::borrow::Cow;
use std::sync::Arc;

use http::{Method, Version};
use opentelemetry::{Key, KeyValue, StringValue, Value};
use opentelemetry_semantic_conventions::attribute as attr;

/// The methods the HTTP semantic conventions know by default (case-sensitive).
pub const DEFAULT_KNOWN_METHODS: [&str; 10] = [
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY",
];

/// Environment variable that overrides the known-methods list (comma separated).
pub const KNOWN_METHODS_ENV: &str = "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS";

/// The query keys whose values are recorded as `REDACTED` by default (case-sensitive; the key
/// is kept): the conventions' list of keys that carry credentials.
pub const DEFAULT_REDACTED_QUERY_KEYS: [&str; 7] = [
    "AWSAccessKeyId",
    "Signature",
    "sig",
    "X-Goog-Signature",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
];

const REDACTED: &str = "REDACTED";

/// One known method: its token, the `http.request.method` attribute and the span-name label.
#[derive(Clone, Debug)]
struct KnownMethod {
    method: Method,
    attribute: KeyValue,
    label: &'static str,
}

/// The set of methods recorded as themselves; every other method becomes `_OTHER`.
#[derive(Clone, Debug)]
pub(crate) struct KnownMethods {
    methods: Vec<KnownMethod>,
    other: KeyValue,
}

/// The normalised method of one request.
#[derive(Debug, Clone)]
pub(crate) struct MethodInfo {
    /// `http.request.method` (pre-built).
    pub attribute: KeyValue,
    /// Label used in span names (`GET`, or `HTTP` for `_OTHER`).
    pub label: &'static str,
    /// Whether the method is `_OTHER` (then `http.request.method_original` is recorded).
    pub is_other: bool,
}

/// A `'static` label for a method token: the conventions' methods as they are, a
/// user-configured extra method interned once (bounded by configuration, never by traffic).
fn label_of(s: &str) -> &'static str {
    if let Some(m) = DEFAULT_KNOWN_METHODS.iter().find(|m| **m == s) {
        return m;
    }
    static EXTRA: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let Ok(mut extra) = EXTRA.lock() else {
        return "HTTP";
    };
    if let Some(m) = extra.iter().find(|m| **m == s) {
        return m;
    }
    let label: &'static str = Box::leak(Box::from(s));
    extra.push(label);
    label
}

impl MethodInfo {
    /// The `http.request.method` value: the method, or `_OTHER`.
    pub(crate) fn metric_value(&self) -> &'static str {
        if self.is_other {
            "_OTHER"
        } else {
            self.label
        }
    }
}

impl KnownMethods {
    /// The default list, or the list in `OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS` when set.
    pub(crate) fn from_env_or_default() -> Self {
        match std::env::var(KNOWN_METHODS_ENV) {
            Ok(v) if !v.trim().is_empty() => Self::new(v.split(',')),
            _ => Self::new(DEFAULT_KNOWN_METHODS),
        }
    }

    /// A list of method tokens; invalid tokens are ignored.
    pub(crate) fn new<I, S>(methods: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out: Vec<KnownMethod> = Vec::new();
        for m in methods {
            let m = m.as_ref().trim();
            let Ok(method) = Method::from_bytes(m.as_bytes()) else {
                continue;
            };
            if out.iter().any(|k| k.method == method) {
                continue;
            }
            let label = label_of(method.as_str());
            out.push(KnownMethod {
                attribute: KeyValue::new(attr::HTTP_REQUEST_METHOD, label),
                label,
                method,
            });
        }
        KnownMethods {
            methods: out,
            other: KeyValue::new(attr::HTTP_REQUEST_METHOD, "_OTHER"),
        }
    }

    /// Normalise a request method.
    pub(crate) fn get(&self, method: &Method) -> MethodInfo {
        // Standard methods compare as a tag; extension methods compare as bytes.
        for k in &self.methods {
            if k.method == *method {
                return MethodInfo {
                    attribute: k.attribute.clone(),
                    label: k.label,
                    is_other: false,
                };
            }
        }
        MethodInfo {
            attribute: self.other.clone(),
            label: "HTTP",
            is_other: true,
        }
    }
}

/// `network.protocol.version` for an HTTP version.
pub(crate) fn protocol_version(v: Version) -> Option<&'static str> {
    Some(match v {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_11 => "1.1",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => return None,
    })
}

/// A pre-built `url.scheme` attribute.
pub(crate) fn scheme_attribute(https: bool) -> KeyValue {
    KeyValue::new(attr::URL_SCHEME, if https { "https" } else { "http" })
}

/// Redact the values of sensitive query keys. Returns the input untouched (no
/// allocation beyond the caller's) when nothing needs redacting.
pub(crate) fn redact_query<'a>(query: &'a str, keys: &[Box<str>]) -> Cow<'a, str> {
    if keys.is_empty() {
        return Cow::Borrowed(query);
    }
    let sensitive = |raw: &str| keys.iter().any(|k| key_matches(raw, k));
    let needs = query.split('&').any(|pair| {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        sensitive(key) && pair.contains('=')
    });
    if !needs {
        return Cow::Borrowed(query);
    }
    let mut out = String::with_capacity(query.len());
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((k, _)) if sensitive(k) => {
                out.push_str(k);
                out.push('=');
                out.push_str(REDACTED);
            }
            _ => out.push_str(pair),
        }
    }
    Cow::Owned(out)
}

/// Whether a raw query key is `key`, also when it is percent-encoded (`si%67` is `sig`: a
/// server decodes it, so it must not slip through redaction).
fn key_matches(raw: &str, key: &str) -> bool {
    if raw == key {
        return true;
    }
    if !raw.contains('%') {
        return false;
    }
    let hex = |c: &u8| (*c as char).to_digit(16);
    let (raw, mut want) = (raw.as_bytes(), key.bytes());
    let mut i = 0;
    while i < raw.len() {
        let b = match (
            raw[i],
            raw.get(i + 1).and_then(hex),
            raw.get(i + 2).and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                i += 3;
                // two hex digits: at most 0xff
                u8::try_from(h * 16 + l).unwrap_or(u8::MAX)
            }
            (b, ..) => {
                i += 1;
                b
            }
        };
        if want.next() != Some(b) {
            return false;
        }
    }
    want.next().is_none()
}

/// `url.full` for an outgoing request: credentials replaced by
/// `REDACTED:REDACTED`, the values of sensitive query keys by `REDACTED`. A URI without scheme
/// or authority is written as it is (path and redacted query).
pub(crate) fn url_full(uri: &http::Uri, keys: &[Box<str>]) -> String {
    let len = uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(1, |p| p.as_str().len());
    let mut out = String::with_capacity(len + 32);
    if let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) {
        out.push_str(scheme);
        out.push_str("://");
        let authority = authority.as_str();
        match authority.rsplit_once('@') {
            Some((_, host)) => {
                out.push_str("REDACTED:REDACTED@");
                out.push_str(host);
            }
            None => out.push_str(authority),
        }
    }
    out.push_str(uri.path());
    if let Some(q) = uri.query() {
        out.push('?');
        out.push_str(&redact_query(q, keys));
    }
    out
}

/// `url.full` of a request: its URI when absolute; a path alone completed with `origin`
/// (`scheme`, `authority`) when one is known; `None` otherwise — never a bare path.
pub(crate) fn url_full_of(
    uri: &http::Uri,
    origin: Option<(&str, &str)>,
    keys: &[Box<str>],
) -> Option<String> {
    if uri.scheme().is_some() && uri.authority().is_some() {
        return Some(url_full(uri, keys));
    }
    let (scheme, authority) = origin?;
    let mut parts = http::uri::Parts::default();
    parts.scheme = scheme.parse().ok();
    parts.authority = authority.parse().ok();
    parts.path_and_query = uri
        .path_and_query()
        .cloned()
        .or_else(|| Some(http::uri::PathAndQuery::from_static("/")));
    let full = http::Uri::from_parts(parts).ok()?;
    Some(url_full(&full, keys))
}

/// The default port of a scheme.
pub(crate) fn default_port(https: bool) -> u16 {
    if https {
        443
    } else {
        80
    }
}

/// Split a `Host` / `:authority` value into address and port. Returns `None` for values that are
/// not a plausible host (empty, whitespace, control or non-ASCII characters — a `Host` header is
/// ASCII, international names travel as punycode —, bad port, unbalanced brackets).
pub(crate) fn split_host(value: &str) -> Option<(&str, Option<u16>)> {
    let b = value.as_bytes();
    if b.is_empty() || b.len() > 255 + 8 {
        return None;
    }
    // one pass: reject whitespace, controls, '/' and '@'; find the colons
    let (mut colons, mut last_colon) = (0usize, 0usize);
    for (i, &c) in b.iter().enumerate() {
        if c <= b' ' || c >= 0x7f || c == b'/' || c == b'@' {
            return None;
        }
        if c == b':' {
            colons += 1;
            last_colon = i;
        }
    }
    let (host, port) = if b[0] == b'[' {
        let close = value.find(']')?;
        let host = &value[1..close];
        match &value[close + 1..] {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match colons {
            0 => (value, None),
            1 => (&value[..last_colon], Some(&value[last_colon + 1..])),
            _ => return None, // bare IPv6 without brackets is not a valid Host
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 => {
            let mut n: u32 = 0;
            for &d in p.as_bytes() {
                if !d.is_ascii_digit() {
                    return None;
                }
                n = n * 10 + u32::from(d - b'0');
            }
            Some(u16::try_from(n).ok()?)
        }
        Some(_) => return None,
    };
    Some((host, port))
}

/// Header-capture key: `http.request.header.<lowercase name>`.
pub(crate) fn header_key(prefix: &str, name: &http::HeaderName) -> Key {
    Key::from(Arc::<str>::from(format!("{prefix}.{}", name.as_str())))
}

/// The default of the longest value taken from a request that is recorded (bytes): longer
/// values are cut at the last character boundary before it.
pub const DEFAULT_MAX_VALUE_LENGTH: usize = 2048;

/// The headers whose values are never recorded unless the user forces it
/// (`with_sensitive_headers(true)`), even when allow-listed: they carry credentials.
pub const SENSITIVE_HEADERS: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// `s` cut to at most `max` bytes, on a character boundary.
pub(crate) fn capped(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// An owned string cut to at most `max` bytes, on a character boundary.
pub(crate) fn cap_owned(mut s: String, max: usize) -> String {
    let end = capped(&s, max).len();
    s.truncate(end);
    s
}

/// A string attribute value from a header, at most `max` bytes, lossily decoded if it is not
/// UTF-8.
pub(crate) fn header_value_string(v: &http::HeaderValue, max: usize) -> StringValue {
    match v.to_str() {
        Ok(s) => StringValue::from(capped(s, max).to_owned()),
        Err(_) => {
            let s = String::from_utf8_lossy(v.as_bytes());
            StringValue::from(capped(&s, max).to_owned())
        }
    }
}

/// Values longer than this are never kept by [`recent_user_agent`].
const MAX_KEPT_LEN: usize = 256;

thread_local! {
    /// The last `User-Agent` seen on this thread.
    static RECENT_USER_AGENT: std::cell::RefCell<Option<Arc<str>>> =
        const { std::cell::RefCell::new(None) };
}

/// `user_agent.original` for a value that repeats from request to request (a client sends the
/// same one each time): the last one seen on this thread is kept, so a repeat costs a
/// comparison instead of an allocation. Per thread (no lock shared between cores), one value
/// (bounded memory). The span's copy is a reference count on this thread's value, released by
/// whichever thread drops the span (the batch exporter's): the allocation it replaces would be
/// freed there too, which takes the allocating thread's arena lock — no more traffic between
/// cores than before, and ≈ 290 instructions (0.85 %) less per request (`BENCHMARKS.md`).
pub(crate) fn recent_user_agent(s: &str) -> StringValue {
    if s.len() > MAX_KEPT_LEN {
        return StringValue::from(s.to_owned());
    }
    RECENT_USER_AGENT
        .try_with(|r| {
            let mut r = r.try_borrow_mut().ok()?;
            match &*r {
                Some(a) if **a == *s => Some(a.clone()),
                _ => {
                    let a: Arc<str> = Arc::from(s);
                    *r = Some(a.clone());
                    Some(a)
                }
            }
        })
        .ok()
        .flatten()
        .map_or_else(|| StringValue::from(s.to_owned()), StringValue::from)
}

/// Two captured header values (string arrays) as one array, in order.
pub(crate) fn concat_string_arrays(a: &Value, b: &Value) -> Value {
    match (a, b) {
        (
            Value::Array(opentelemetry::Array::String(a)),
            Value::Array(opentelemetry::Array::String(b)),
        ) => Value::Array(opentelemetry::Array::String(
            a.iter().chain(b).cloned().collect(),
        )),
        _ => b.clone(),
    }
}

/// `http.request.header.<name>` / `http.response.header.<name>` values: string arrays.
pub(crate) fn capture_headers(
    headers: &http::HeaderMap,
    names: &[(http::HeaderName, Key)],
    sensitive_allowed: bool,
    max: usize,
    out: &mut Vec<KeyValue>,
) {
    for (name, key) in names {
        if !sensitive_allowed && SENSITIVE_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let mut values = headers.get_all(name).iter().peekable();
        if values.peek().is_none() {
            continue;
        }
        let values: Vec<StringValue> = values.map(|v| header_value_string(v, max)).collect();
        out.push(KeyValue::new(
            key.clone(),
            Value::Array(opentelemetry::Array::String(values)),
        ));
    }
}

/// The first element of `Forwarded` (RFC 7239), or `X-Forwarded-*` when there is none.
/// Only consulted when the user trusts proxy headers.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ForwardedInfo<'a> {
    /// `for=` / `X-Forwarded-For`: the original client's address (no port, no brackets).
    pub client: Option<&'a str>,
    /// The original client's port, when the proxy sent one.
    pub client_port: Option<u16>,
    /// `proto=` / `X-Forwarded-Proto`: `Some(true)` for https, `Some(false)` for http.
    pub https: Option<bool>,
    /// `host=` / `X-Forwarded-Host`: the host the client asked for, as a `Host` value
    /// (validated by [`split_host`]).
    pub host: Option<&'a str>,
}

fn parse_proto(v: &str) -> Option<bool> {
    if v.eq_ignore_ascii_case("https") {
        Some(true)
    } else if v.eq_ignore_ascii_case("http") {
        Some(false)
    } else {
        None
    }
}

/// `for=` node: `192.0.2.60`, `[2001:db8::17]:4711`, `unknown`, `_hidden` (obfuscated ids
/// are not addresses and are ignored).
fn parse_node(v: &str) -> (Option<&str>, Option<u16>) {
    if v.is_empty() || v.eq_ignore_ascii_case("unknown") || v.starts_with('_') {
        return (None, None);
    }
    match split_host(v) {
        Some((h, p)) if h.parse::<std::net::IpAddr>().is_ok() => (Some(h), p),
        _ => (None, None),
    }
}

/// Each `name=value` pair of the first element of a `Forwarded` value, to `f` (RFC 7239: pairs
/// separated by `;`, elements by `,`, a value a token or a quoted string). A quoted value is
/// given without its quotes; a quoted value that uses `\` escapes is given as `None` (no
/// address, host or protocol needs one), but its extent is respected, so a `,` or `;` inside
/// quotes never splits. A malformed pair is skipped.
fn forwarded_pairs<'a>(v: &'a str, mut f: impl FnMut(&'a str, Option<&'a str>)) {
    let b = v.as_bytes();
    let ows = |mut i: usize| {
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        i
    };
    let mut i = 0;
    loop {
        i = ows(i);
        let start = i;
        while i < b.len() && !matches!(b[i], b'=' | b';' | b',') {
            i += 1;
        }
        let name = v[start..i].trim_matches([' ', '\t']);
        let mut value = None;
        if i < b.len() && b[i] == b'=' {
            i = ows(i + 1);
            if i < b.len() && b[i] == b'"' {
                let (s, mut escaped) = (i + 1, false);
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        escaped = true;
                        i += 1;
                    }
                    i += 1;
                }
                if i >= b.len() {
                    return; // unterminated: nothing after it can be trusted
                }
                value = Some((!escaped).then(|| &v[s..i]));
                i += 1;
            } else {
                let s = i;
                while i < b.len() && b[i] != b';' && b[i] != b',' {
                    i += 1;
                }
                value = Some(Some(v[s..i].trim_matches([' ', '\t'])));
            }
            // anything else up to the next separator makes the pair malformed
            let rest = i;
            while i < b.len() && b[i] != b';' && b[i] != b',' {
                i += 1;
            }
            if !v[rest..i].trim_matches([' ', '\t']).is_empty() {
                value = None;
            }
        }
        if let (false, Some(value)) = (name.is_empty(), value) {
            f(name, value);
        }
        if i >= b.len() || b[i] == b',' {
            return;
        }
        i += 1; // ';'
    }
}

/// A forwarded host: a valid `Host` value ([`split_host`]) with none of the characters a proxy
/// header can only carry by mistake or malice (quotes, backslashes, list separators).
fn forwarded_host(h: &str) -> bool {
    split_host(h).is_some() && !h.contains(['"', '\\', ',', ';'])
}

/// The first comma-separated value of a header, trimmed.
fn first_of<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim_matches([' ', '\t']))
}

pub(crate) fn forwarded(headers: &http::HeaderMap) -> ForwardedInfo<'_> {
    let mut out = ForwardedInfo::default();
    if let Some(value) = headers
        .get(http::header::FORWARDED)
        .and_then(|v| v.to_str().ok())
    {
        forwarded_pairs(value, |k, v| {
            if k.eq_ignore_ascii_case("for") {
                (out.client, out.client_port) = v.map_or((None, None), parse_node);
            } else if k.eq_ignore_ascii_case("proto") {
                out.https = v.and_then(parse_proto);
            } else if k.eq_ignore_ascii_case("host") {
                out.host = v.filter(|h| forwarded_host(h));
            }
        });
    }
    if out.client.is_none() {
        if let Some(first) = first_of(headers, "x-forwarded-for") {
            let unquoted = first
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(first);
            (out.client, out.client_port) = parse_node(unquoted);
            if out.client.is_none() && first.parse::<std::net::Ipv6Addr>().is_ok() {
                // a bare IPv6 address is common in X-Forwarded-For
                out.client = Some(first);
            }
        }
    }
    if out.https.is_none() {
        out.https = first_of(headers, "x-forwarded-proto").and_then(parse_proto);
    }
    if out.host.is_none() {
        out.host = first_of(headers, "x-forwarded-host").filter(|h| forwarded_host(h));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<Box<str>> {
        DEFAULT_REDACTED_QUERY_KEYS
            .iter()
            .map(|s| Box::<str>::from(*s))
            .collect()
    }

    /// The conventions' known methods (<https://opentelemetry.io/docs/specs/semconv/http/http-spans/#common-attributes>), written out (not the crate's own constant).
    const SPEC_METHODS: [&str; 10] = [
        "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY",
    ];

    /// The conventions' redacted query keys (<https://opentelemetry.io/docs/specs/semconv/registry/attributes/url/>), written out.
    const SPEC_REDACTED: [&str; 7] = [
        "AWSAccessKeyId",
        "Signature",
        "sig",
        "X-Goog-Signature",
        "X-Amz-Signature",
        "X-Amz-Credential",
        "X-Amz-Security-Token",
    ];

    #[test]
    fn the_defaults_are_the_conventions_lists() {
        let mut ours = DEFAULT_KNOWN_METHODS.to_vec();
        let mut theirs = SPEC_METHODS.to_vec();
        ours.sort_unstable();
        theirs.sort_unstable();
        assert_eq!(ours, theirs);
        let defaults = KnownMethods::from_env_or_default();
        for name in SPEC_METHODS {
            let info = defaults.get(&Method::from_bytes(name.as_bytes()).unwrap());
            assert!(!info.is_other, "{name}");
        }
        for key in SPEC_REDACTED {
            let q = format!("a=1&{key}=secret&b=2");
            assert_eq!(
                redact_query(&q, &keys()),
                format!("a=1&{key}=REDACTED&b=2"),
                "{key}"
            );
        }
        assert_eq!(DEFAULT_REDACTED_QUERY_KEYS.len(), SPEC_REDACTED.len());
    }

    #[test]
    fn known_methods_exact_and_case_sensitive() {
        let m = KnownMethods::new(DEFAULT_KNOWN_METHODS);
        for name in DEFAULT_KNOWN_METHODS {
            let info = m.get(&Method::from_bytes(name.as_bytes()).unwrap());
            assert!(!info.is_other, "{name}");
            assert_eq!(info.label, name);
            assert_eq!(info.attribute.value.as_str(), name);
        }
        for name in ["get", "Get", "PURGE", "FOO"] {
            let info = m.get(&Method::from_bytes(name.as_bytes()).unwrap());
            assert!(info.is_other, "{name}");
            assert_eq!(info.attribute.value.as_str(), "_OTHER");
            assert_eq!(info.label, "HTTP");
        }
    }

    #[test]
    fn known_methods_override() {
        let m = KnownMethods::new(["GET", " PURGE ", "bad token", ""]);
        assert!(!m.get(&Method::GET).is_other);
        let purge = m.get(&Method::from_bytes(b"PURGE").unwrap());
        assert!(!purge.is_other);
        assert_eq!(purge.label, "PURGE");
        assert!(m.get(&Method::POST).is_other);
    }

    #[test]
    fn redaction_keeps_keys_and_other_values() {
        let k = keys();
        assert!(matches!(
            redact_query("a=1&b=2", &k),
            Cow::Borrowed("a=1&b=2")
        ));
        assert_eq!(
            redact_query("sig=abc&x=1&X-Amz-Signature=zz&Signature", &k),
            "sig=REDACTED&x=1&X-Amz-Signature=REDACTED&Signature"
        );
        // case-sensitive
        assert_eq!(redact_query("SIG=abc", &k), "SIG=abc");
        // percent-encoded keys are the keys a server sees
        assert_eq!(redact_query("si%67=abc&x=1", &k), "si%67=REDACTED&x=1");
        assert_eq!(
            redact_query("X%2DAmz%2DSignature=s", &k),
            "X%2DAmz%2DSignature=REDACTED"
        );
        assert_eq!(redact_query("si%6=abc&%=1", &k), "si%6=abc&%=1");
        assert_eq!(
            redact_query("AWSAccessKeyId=A&X-Goog-Signature=B&X-Amz-Credential=C&X-Amz-Security-Token=D", &k),
            "AWSAccessKeyId=REDACTED&X-Goog-Signature=REDACTED&X-Amz-Credential=REDACTED&X-Amz-Security-Token=REDACTED"
        );
        let custom = vec![Box::<str>::from("token")];
        assert_eq!(
            redact_query("token=1&sig=2", &custom),
            "token=REDACTED&sig=2"
        );
    }

    #[test]
    fn recent_user_agents_are_exact() {
        assert_eq!(recent_user_agent("curl/8.0").as_str(), "curl/8.0");
        assert_eq!(recent_user_agent("curl/8.0").as_str(), "curl/8.0");
        assert_eq!(recent_user_agent("other/1.0").as_str(), "other/1.0");
        let long = "x".repeat(1000);
        assert_eq!(recent_user_agent(&long).as_str(), long);
    }

    #[test]
    fn url_full_is_redacted() {
        let k = keys();
        let u = |s: &str| s.parse::<http::Uri>().unwrap();
        assert_eq!(
            url_full(&u("https://user:pass@host/p?sig=x&q=1"), &k),
            "https://REDACTED:REDACTED@host/p?sig=REDACTED&q=1"
        );
        assert_eq!(
            url_full(&u("http://user@host:8080/"), &k),
            "http://REDACTED:REDACTED@host:8080/"
        );
        assert_eq!(
            url_full(&u("http://[::1]:3000/a/b?X-Amz-Signature=s"), &k),
            "http://[::1]:3000/a/b?X-Amz-Signature=REDACTED"
        );
        assert_eq!(url_full(&u("/relative?q=1"), &k), "/relative?q=1");
        assert_eq!(url_full(&u("http://host"), &k), "http://host/");
    }

    #[test]
    fn values_are_capped_on_character_boundaries() {
        assert_eq!(capped("abc", 2), "ab");
        assert_eq!(capped("abc", 3), "abc");
        assert_eq!(capped("été", 2), "é");
        assert_eq!(capped("été", 1), "");
        assert_eq!(capped("日本語", 4), "日");
        assert_eq!(cap_owned("日本語".to_owned(), 7), "日本");
        let v = http::HeaderValue::from_bytes(b"ab\xffcd").unwrap();
        assert_eq!(header_value_string(&v, 100).as_str(), "ab\u{fffd}cd");
        assert_eq!(header_value_string(&v, 3).as_str(), "ab");
    }

    #[test]
    fn sensitive_headers_are_skipped_unless_allowed() {
        let mut h = http::HeaderMap::new();
        h.insert("authorization", "Bearer secret".parse().unwrap());
        h.insert("x-request-id", "r1".parse().unwrap());
        let names: Vec<(http::HeaderName, Key)> = ["authorization", "x-request-id"]
            .iter()
            .map(|n| {
                let n = http::HeaderName::from_static(n);
                let k = header_key("http.request.header", &n);
                (n, k)
            })
            .collect();
        let mut out = Vec::new();
        capture_headers(&h, &names, false, 100, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key.as_str(), "http.request.header.x-request-id");
        let mut out = Vec::new();
        capture_headers(&h, &names, true, 100, &mut out);
        assert_eq!(out.len(), 2, "forced");
    }

    #[test]
    fn host_parsing() {
        assert_eq!(split_host("example.com"), Some(("example.com", None)));
        assert_eq!(
            split_host("example.com:8080"),
            Some(("example.com", Some(8080)))
        );
        assert_eq!(split_host("[::1]:3000"), Some(("::1", Some(3000))));
        assert_eq!(split_host("[::1]"), Some(("::1", None)));
        for bad in [
            "",
            ":80",
            "a b",
            "host:port",
            "host:99999",
            "[::1",
            "::1",
            "a/b",
            "u@h",
            "[::1]x",
        ] {
            assert_eq!(split_host(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn forwarded_headers() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "forwarded",
            "for=\"[2001:db8:cafe::17]:4711\";proto=HTTPS;by=x, for=10.0.0.1"
                .parse()
                .unwrap(),
        );
        let f = forwarded(&h);
        assert_eq!(f.client, Some("2001:db8:cafe::17"));
        assert_eq!(f.client_port, Some(4711));
        assert_eq!(f.https, Some(true));

        let mut h = http::HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.7, 10.0.0.1".parse().unwrap());
        h.insert("x-forwarded-proto", "http".parse().unwrap());
        let f = forwarded(&h);
        assert_eq!(f.client, Some("203.0.113.7"));
        assert_eq!(f.https, Some(false));

        let mut h = http::HeaderMap::new();
        h.insert("forwarded", "for=_hidden;proto=gopher".parse().unwrap());
        h.insert("x-forwarded-for", "not an ip".parse().unwrap());
        assert_eq!(forwarded(&h), ForwardedInfo::default());

        let mut h = http::HeaderMap::new();
        h.insert("x-forwarded-for", "2001:db8::1".parse().unwrap());
        assert_eq!(forwarded(&h).client, Some("2001:db8::1"));
    }

    #[test]
    fn forwarded_host_and_quoted_values() {
        let f = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert("forwarded", v.parse().unwrap());
            let f = forwarded(&h);
            let own = |s: Option<&str>| s.map(str::to_owned);
            (own(f.client), f.client_port, f.https, own(f.host))
        };
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            f(r#"for="[2001:db8::1]:443";host="a.example";proto=https"#),
            (s("2001:db8::1"), Some(443), Some(true), s("a.example"))
        );
        assert_eq!(
            f("host=a.example:8443 ; for = 192.0.2.1"),
            (s("192.0.2.1"), None, None, s("a.example:8443"))
        );
        // a `,` or `;` inside quotes does not split; the first element only
        assert_eq!(
            f(r#"by="x,y;z";host="[::1]:80", host=b.example"#),
            (None, None, None, s("[::1]:80"))
        );
        // escapes, bad hosts, unterminated quotes: ignored
        assert_eq!(f(r#"host="a\.example""#), (None, None, None, None));
        assert_eq!(f("host=a b"), (None, None, None, None));
        assert_eq!(f(r#"host="user@a.example""#), (None, None, None, None));
        assert_eq!(f(r#"for="192.0.2.1;proto=https"#), (None, None, None, None));
        assert_eq!(f("host=\"a.example\"x"), (None, None, None, None));
        // X-Forwarded-Host when Forwarded has no host
        let mut h = http::HeaderMap::new();
        h.insert(
            "x-forwarded-host",
            " b.example:8080 , c.example".parse().unwrap(),
        );
        assert_eq!(forwarded(&h).host, Some("b.example:8080"));
        h.insert("forwarded", "host=a.example".parse().unwrap());
        assert_eq!(forwarded(&h).host, Some("a.example"), "Forwarded first");
    }
}

#[cfg(test)]
mod robustness {
    //! Random and hostile inputs: the parsers never panic.
    use super::*;

    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    fn random_str(seed: &mut u64, alphabet: &[u8]) -> String {
        let len = (rng(seed) % 80) as usize;
        (0..len)
            .map(|_| char::from(alphabet[(rng(seed) % alphabet.len() as u64) as usize]))
            .collect()
    }

    #[test]
    fn parsers_never_panic_on_random_input() {
        let alphabet: Vec<u8> = (0x20u8..0x7f).chain([b'\t']).collect();
        let tricky = b"[]:;,=\"@/-0123456789abcdefABCDEF_ .%&?";
        let keys: Vec<Box<str>> = DEFAULT_REDACTED_QUERY_KEYS
            .iter()
            .map(|k| Box::<str>::from(*k))
            .collect();
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        for i in 0..20_000 {
            let s = if i % 2 == 0 {
                random_str(&mut seed, &alphabet)
            } else {
                random_str(&mut seed, tricky)
            };
            let _ = split_host(&s);
            assert_eq!(recent_user_agent(&s).as_str(), s);
            let _ = redact_query(&s, &keys);
            let _ = crate::propagation::parse_traceparent(&s);
            let mut h = http::HeaderMap::new();
            if let Ok(v) = http::HeaderValue::from_str(&s) {
                h.insert(http::header::FORWARDED, v.clone());
                h.insert("x-forwarded-for", v.clone());
                h.insert("x-forwarded-proto", v.clone());
                h.insert("traceparent", v.clone());
                h.insert("tracestate", v);
            }
            let _ = forwarded(&h);
            let e = crate::propagation::StrictHeaderExtractor::new(&h);
            let _ = opentelemetry::propagation::TextMapPropagator::extract(
                &crate::propagation::W3cPropagator,
                &e,
            );
        }
    }
}
