//! The start of a server request under the HTTP conventions: what is read off it, the span's start attributes (all of
//! them set at the start, so that samplers see them), the parent context, the measurements'
//! attributes, the log span and the mark for inner instances.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::SystemTime;

use http::request::Parts;
use opentelemetry::trace::{Link, SpanBuilder, TraceContextExt};
use opentelemetry::{Context, KeyValue, StringValue};
use opentelemetry_semantic_conventions::attribute as attr;

use crate::config::Config;
use crate::convention::Conv;
use crate::lifecycle::{Begin, BodyRule, Clock, Record, Started};
use crate::metrics::Measure;
use crate::otel::RequestTracer;
use crate::propagation::StrictHeaderExtractor;
use crate::semconv::{self, ForwardedInfo, MethodInfo};
use crate::server::stack;
use crate::side::{Server, Start};

/// What the server reads off a request's connection and host, whatever its convention
/// (borrowed from it).
pub(crate) struct Connection<'a> {
    pub(crate) https: bool,
    /// `server.address` (shared by the span and the metrics) and `server.port`.
    pub(crate) host: Option<(StringValue, i64)>,
    pub(crate) forwarded: ForwardedInfo<'a>,
    pub(crate) peer: Option<SocketAddr>,
}

impl<'a> Connection<'a> {
    /// `wants_host`: `server.address` is recorded (on the span, or opted in on the metrics).
    pub(crate) fn read(config: &Config<Server>, parts: &'a Parts, wants_host: bool) -> Self {
        let options = &config.side;
        let forwarded = if options.trust_proxy_headers {
            semconv::forwarded(&parts.headers)
        } else {
            ForwardedInfo::default()
        };
        let https = forwarded
            .https
            .or_else(|| parts.uri.scheme().map(|s| *s == http::uri::Scheme::HTTPS))
            .unwrap_or(options.https);
        // a trusted proxy's `Forwarded: host=` / `X-Forwarded-Host`, else `:authority`, else
        // `Host`
        let host = match (forwarded.host, parts.uri.authority()) {
            (Some(h), _) => Some(h),
            (None, Some(a)) => Some(a.as_str()),
            (None, None) => parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok()),
        }
        .filter(|_| wants_host)
        .and_then(semconv::split_host)
        .map(|(address, port)| {
            let port = port.unwrap_or(if https { 443 } else { 80 });
            (
                StringValue::from(Arc::<str>::from(address)),
                i64::from(port),
            )
        });
        Connection {
            https,
            host,
            forwarded,
            peer: peer_address(parts),
        }
    }
}

/// What the server reads off an incoming request (borrowed from it).
struct Incoming<'a> {
    method: MethodInfo,
    route: Option<&'a str>,
    /// `http.route`, shared by the span and the measurements.
    template: Option<StringValue>,
    /// The default span name, interned.
    name: Option<&'static str>,
    https: bool,
    version: Option<&'static str>,
    /// `server.address` (shared by the span and the metrics) and `server.port`.
    host: Option<(StringValue, i64)>,
    forwarded: ForwardedInfo<'a>,
    peer: Option<SocketAddr>,
}

impl<'a> Incoming<'a> {
    fn read(config: &Config<Server>, parts: &'a Parts, wants_host: bool) -> Self {
        let Connection {
            https,
            host,
            forwarded,
            peer,
        } = Connection::read(config, parts, wants_host);
        let method = config.methods.get(&parts.method);
        let route = crate::route::matched_route(&parts.extensions);
        let (template, name) = match route.map(|r| (r, crate::route::interned(method.label, r))) {
            Some((_, Some((route, name)))) => (Some(StringValue::from(route)), Some(name)),
            Some((r, None)) => (Some(StringValue::from(Arc::<str>::from(r))), None),
            None => (None, None),
        };
        Incoming {
            method,
            route,
            template,
            name,
            https,
            version: semconv::protocol_version(parts.version),
            host,
            forwarded,
            peer,
        }
    }

    fn measure(&self, config: &Config<Server>, request_bytes: Option<Arc<AtomicU64>>) -> Measure {
        Measure::new(
            self.method.metric_value(),
            Some(self.https),
            self.host
                .clone()
                .filter(|_| config.side.metrics_server_address),
            config.labeler,
            request_bytes,
        )
    }
}

/// The peer of the connection: axum's `ConnectInfo`, or tonic's `TcpConnectInfo` (feature
/// `tonic`).
fn peer_address(parts: &Parts) -> Option<SocketAddr> {
    #[cfg(feature = "axum")]
    if let Some(c) = parts
        .extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(c.0);
    }
    #[cfg(feature = "tonic")]
    if let Some(info) = parts
        .extensions
        .get::<tonic::transport::server::TcpConnectInfo>()
    {
        return info.remote_addr();
    }
    let _ = parts;
    None
}

/// Start a request: its record (span, measurements, log span), or a pass-through when nothing
/// would be recorded. `counts_body`: the request body is counted (returned: its counter).
pub(crate) fn start(
    config: &Arc<Config<Server>>,
    parts: &mut Parts,
    counts_body: bool,
) -> Start<Server> {
    let tracer = config.tracer.resolve().filter(|_| config.spans);
    let measured = config.meter.starts();
    // the user's predicate, when there is one, runs once per request
    let public = config.side.public_endpoint.applies(parts);
    if tracer.is_none() && !measured {
        // nothing to record: the caller's context still flows through (not an untrusted one)
        return (Started::Pass(caller_context(config, parts, public)), None);
    }
    let conv = Conv::http(parts);
    let clock = Clock::start(tracer.is_some());
    let incoming = Incoming::read(
        config,
        parts,
        tracer.is_some() || config.side.metrics_server_address,
    );
    let label = incoming.method.label;
    let request_bytes = (counts_body && measured).then(Arc::<AtomicU64>::default);
    let measure = measured.then(|| incoming.measure(config, request_bytes.clone()));
    let cx = tracer.and_then(|t| start_span(config, t, &incoming, parts, clock.wall(), public));
    let span = cx.is_some();
    let route_known = incoming.route.is_some();
    let template = incoming.template.clone();
    #[cfg(feature = "tracing")]
    let method = incoming.method.metric_value();
    drop(incoming);
    let cx = cx.or_else(|| caller_context(config, parts, public));
    #[cfg(feature = "tracing")]
    let log = log_span(
        config,
        crate::logs::RequestFields::Http {
            method,
            route: template.as_ref().map(StringValue::as_str),
        },
        cx.as_ref(),
        span,
    );
    let slot = stack::mark(&mut parts.extensions, route_known);
    let begin = Begin {
        config: config.clone(),
        clock,
        conv,
        cx,
        span,
        #[cfg(feature = "tracing")]
        log,
        measure,
        template,
        slot,
        method: (config.span_name.is_some() && !route_known).then(|| parts.method.clone()),
        body_rule: BodyRule::of(&parts.method),
        label,
        version: Some(parts.version),
    };
    (Record::begin(begin, &mut parts.extensions), request_bytes)
}

/// The caller's context to make current when no span of ours is recorded: none from an
/// untrusted caller (a public endpoint), so that it cannot join its trace downstream either.
pub(crate) fn caller_context(
    config: &Config<Server>,
    parts: &Parts,
    public: bool,
) -> Option<Context> {
    if public {
        return None;
    }
    config.propagator.pass_through(&parts.headers)
}

/// Start the `SERVER` span, a child of the caller's context (or, for a public endpoint, a new
/// root linked to it). `None` when the tracer makes no real spans.
fn start_span(
    config: &Config<Server>,
    tracer: RequestTracer<'_>,
    incoming: &Incoming<'_>,
    parts: &Parts,
    start: Option<SystemTime>,
    public: bool,
) -> Option<Context> {
    let name = match (incoming.name, &config.span_name) {
        (Some(name), None) => name.into(),
        _ => config.span_name(&parts.method, incoming.method.label, incoming.route),
    };
    let mut builder = SpanBuilder::from_name(name)
        .with_kind(<Server as crate::side::sealed::Rules>::KIND)
        .with_attributes(span_attributes(config, incoming, parts));
    builder.start_time = start;
    start_server_span(config, tracer, builder, parts, public)
}

/// Start a `SERVER` span from `builder`, a child of the caller's context (or, for a public
/// endpoint, a new root linked to it). `None` when the tracer makes no real spans.
pub(crate) fn start_server_span(
    config: &Config<Server>,
    tracer: RequestTracer<'_>,
    mut builder: SpanBuilder,
    parts: &Parts,
    public: bool,
) -> Option<Context> {
    let parent = config
        .propagator
        .extract(&StrictHeaderExtractor::new(&parts.headers));
    if public {
        let sc = parent.span().span_context().clone();
        if sc.is_valid() {
            builder.links = Some(vec![Link::with_context(sc)]);
        }
        tracer.start(builder, &Context::new())
    } else {
        tracer.start(builder, &parent)
    }
}

/// The span's start attributes: the required, conditionally required and recommended ones of a
/// `SERVER` span, and the opt-in ones configured.
fn span_attributes(
    config: &Config<Server>,
    incoming: &Incoming<'_>,
    parts: &Parts,
) -> Vec<KeyValue> {
    let mut attrs: Vec<KeyValue> = Vec::with_capacity(16 + config.request_headers.len());
    attrs.push(incoming.method.attribute.clone());
    if incoming.method.is_other {
        attrs.push(KeyValue::new(
            attr::HTTP_REQUEST_METHOD_ORIGINAL,
            config.cap(parts.method.as_str()).to_owned(),
        ));
    }
    attrs.push(KeyValue::new(
        attr::URL_PATH,
        config.cap(parts.uri.path()).to_owned(),
    ));
    if let Some(q) = parts.uri.query() {
        let q = semconv::redact_query(q, &config.redacted_query_keys);
        attrs.push(KeyValue::new(attr::URL_QUERY, config.cap(&q).to_owned()));
    }
    attrs.push(semconv::scheme_attribute(incoming.https));
    if let Some(v) = incoming.version {
        attrs.push(KeyValue::new(attr::NETWORK_PROTOCOL_VERSION, v));
    }
    if let Some((address, port)) = &incoming.host {
        attrs.push(KeyValue::new(attr::SERVER_ADDRESS, address.clone()));
        attrs.push(KeyValue::new(attr::SERVER_PORT, *port));
    }
    peer_attributes(config, incoming, &mut attrs);
    if let Some(ua) = parts.headers.get(http::header::USER_AGENT) {
        let ua = match ua.to_str() {
            Ok(s) => semconv::recent_user_agent(config.cap(s)),
            Err(_) => semconv::header_value_string(ua, config.max_value_length),
        };
        attrs.push(KeyValue::new(attr::USER_AGENT_ORIGINAL, ua));
    }
    if let Some(route) = &incoming.template {
        attrs.push(KeyValue::new(attr::HTTP_ROUTE, route.clone()));
    }
    config.request_extras(parts, false, &mut attrs);
    attrs
}

/// `network.peer.*` from the connection; `client.address` from trusted proxy headers, else the
/// peer (`client.port` opt-in).
fn peer_attributes(config: &Config<Server>, incoming: &Incoming<'_>, attrs: &mut Vec<KeyValue>) {
    connection_attributes(config, incoming.peer, &incoming.forwarded, attrs);
}

/// `network.peer.*` and `client.address` (`client.port` opt-in) of a connection.
pub(crate) fn connection_attributes(
    config: &Config<Server>,
    peer: Option<SocketAddr>,
    forwarded: &ForwardedInfo<'_>,
    attrs: &mut Vec<KeyValue>,
) {
    let peer_ip: Option<StringValue> = peer.map(|p| Arc::<str>::from(p.ip().to_string()).into());
    if let (Some(p), Some(ip)) = (peer, &peer_ip) {
        attrs.push(KeyValue::new(attr::NETWORK_PEER_ADDRESS, ip.clone()));
        attrs.push(KeyValue::new(attr::NETWORK_PEER_PORT, i64::from(p.port())));
    }
    let client = match (forwarded.client, peer, peer_ip) {
        (Some(client), ..) => Some((StringValue::from(client.to_owned()), forwarded.client_port)),
        (None, Some(p), Some(ip)) => Some((ip, Some(p.port()))),
        _ => None,
    };
    if let Some((address, port)) = client {
        attrs.push(KeyValue::new(attr::CLIENT_ADDRESS, address));
        if let (true, Some(port)) = (config.side.client_port, port) {
            attrs.push(KeyValue::new(attr::CLIENT_PORT, i64::from(port)));
        }
    }
}

/// The per-request `tracing` span carrying the span's ids (when a span is recorded and log
/// correlation is on).
#[cfg(feature = "tracing")]
pub(crate) fn log_span(
    config: &Config<Server>,
    fields: crate::logs::RequestFields<'_>,
    cx: Option<&Context>,
    span: bool,
) -> tracing::Span {
    match (config.side.log_correlation, span, cx) {
        (true, true, Some(cx)) => crate::logs::request_span(config.side.log_level, fields, cx),
        _ => tracing::Span::none(),
    }
}
