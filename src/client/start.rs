//! The start of a client request: what is read off it, the span's start attributes (set at the
//! start, so that samplers see them), the injection of its context, and the measurements'
//! attributes.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::SystemTime;

use http::request::Parts;
use http::HeaderMap;
use opentelemetry::trace::{SpanBuilder, SpanKind};
use opentelemetry::{Context, KeyValue, StringValue};
use opentelemetry_semantic_conventions::attribute as attr;

use super::{Attempts, ClientMarker, NoPropagation, UrlTemplate};
use crate::config::Config;
use crate::lifecycle::{Clock, Record, Scope, Started};
use crate::metrics::{Labeler, Measure};
use crate::otel::RequestTracer;
use crate::semconv::{self, MethodInfo};

/// The host an outgoing request goes to: its URL's, else its `Host` header's (brackets of an
/// IPv6 literal removed), and the port given with it.
fn target_host(parts: &Parts) -> Option<(&str, Option<u16>)> {
    match parts.uri.host() {
        Some(h) => Some((h, parts.uri.port_u16())),
        None => parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(semconv::split_host),
    }
    .map(|(h, port)| (h.trim_start_matches('[').trim_end_matches(']'), port))
}

/// What the client reads off an outgoing request.
struct Target<'a> {
    method: MethodInfo,
    https: bool,
    /// `server.address`, `server.port`.
    host: Option<(StringValue, i64)>,
    template: Option<&'a str>,
    /// `url.template`, shared by the span and the measurements.
    template_value: Option<StringValue>,
    /// The span name, interned with the template.
    name: Option<&'static str>,
    resend: u32,
}

impl<'a> Target<'a> {
    fn read(config: &Config, parts: &'a Parts, host: Option<(&str, Option<u16>)>) -> Self {
        let method = config.methods.get(&parts.method);
        let https = parts.uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let host = host.map(|(h, port)| {
            let port = port.unwrap_or(semconv::default_port(https));
            // shared by the span and the measurements without a copy
            (StringValue::from(Arc::<str>::from(h)), i64::from(port))
        });
        let template = parts
            .extensions
            .get::<UrlTemplate>()
            .map(UrlTemplate::as_str);
        let interned = template.and_then(|t| crate::route::interned(method.label, t));
        let template_value = match (interned, template) {
            (Some((t, _)), _) => Some(t.into()),
            (None, Some(t)) => Some(Arc::<str>::from(t).into()),
            (None, None) => None,
        };
        Target {
            name: interned.map(|(_, name)| name),
            method,
            https,
            host,
            template,
            template_value,
            resend: 0,
        }
    }

    fn measure(&self, config: &Config, request_bytes: Option<Arc<AtomicU64>>) -> Measure {
        Measure {
            method: self.method.metric_value(),
            scheme: config.client.metrics_url_scheme.then_some(self.https),
            server: self.host.clone().map(Box::new),
            labeler: config.labeler.then(Labeler::new),
            request_bytes,
        }
    }
}

/// Whether an outer instance of the client layer already instruments this request.
pub(super) fn is_inner(ext: &http::Extensions) -> bool {
    ext.get::<ClientMarker>().is_some()
}

/// Start a request: its record (span, measurements), or a pass-through when nothing would be
/// recorded (the current context is still sent on through a propagator). Trace context goes
/// out only when the request is not opted out ([`NoPropagation`]) and its host is allowed;
/// otherwise trace-context headers it already carries (a proxy forwarding its caller's) are
/// removed. `counts_body`: the request body is counted (returned: its counter).
pub(crate) fn start(
    config: &Arc<Config>,
    parts: &mut Parts,
    counts_body: bool,
) -> (Started, Option<Arc<AtomicU64>>) {
    let resend = parts.extensions.get::<Attempts>().map_or(0, Attempts::next);
    let tracer = config.tracer.resolve().filter(|_| config.spans);
    let measured = config.meter.starts();
    let host = target_host(parts);
    let propagate = parts.extensions.get::<NoPropagation>().is_none()
        && config.client.propagates_to(host.map(|(h, _)| h));
    let parent = Context::current();
    if tracer.is_none() && !measured {
        propagate_passed(config, propagate, &parent, &mut parts.headers);
        return (Started::Pass(None), None);
    }
    let clock = Clock::start(tracer.is_some());
    let mut target = Target::read(config, parts, host);
    target.resend = resend;
    let mut record = Record::new(config.clone(), clock, &parts.method, target.method.label);
    record.template = target.template_value.clone();
    let request_bytes = (counts_body && measured).then(Arc::<AtomicU64>::default);
    record.measure = measured.then(|| target.measure(config, request_bytes.clone()));
    let cx =
        tracer.and_then(|t| start_span(config, t, &target, parts, &parent, record.clock.wall()));
    drop(target);
    record.span = cx.is_some();
    match &cx {
        Some(cx) if propagate => config.propagator.inject_span(cx, &mut parts.headers),
        _ => propagate_passed(config, propagate, &parent, &mut parts.headers),
    }
    record.scope = Scope::context(cx);
    (record.begin(&mut parts.extensions), request_bytes)
}

/// Send the current context on (no span of ours), or, when the request must go without trace
/// context, remove what it carries.
fn propagate_passed(config: &Config, propagate: bool, parent: &Context, headers: &mut HeaderMap) {
    if propagate {
        config.propagator.inject_passed(parent, headers);
    } else {
        config.propagator.strip(headers);
    }
}

/// Start the `CLIENT` span, a child of the current context. `None` when the tracer makes no
/// real spans.
fn start_span(
    config: &Config,
    tracer: RequestTracer<'_>,
    target: &Target<'_>,
    parts: &Parts,
    parent: &Context,
    start: Option<SystemTime>,
) -> Option<Context> {
    let name = match (target.name, &config.span_name) {
        (Some(name), None) => name.into(),
        _ => config.span_name(&parts.method, target.method.label, target.template),
    };
    let mut builder = SpanBuilder::from_name(name)
        .with_kind(SpanKind::Client)
        .with_attributes(span_attributes(config, target, parts));
    builder.start_time = start;
    tracer.start(builder, parent)
}

/// The span's start attributes: the required and recommended ones of a `CLIENT` span, and
/// the opt-in ones configured.
fn span_attributes(config: &Config, target: &Target<'_>, parts: &Parts) -> Vec<KeyValue> {
    let mut attrs: Vec<KeyValue> = Vec::with_capacity(12 + config.request_headers.len());
    attrs.push(target.method.attribute.clone());
    if target.method.is_other {
        attrs.push(KeyValue::new(
            attr::HTTP_REQUEST_METHOD_ORIGINAL,
            config.cap(parts.method.as_str()).to_owned(),
        ));
    }
    if let Some((address, port)) = &target.host {
        attrs.push(KeyValue::new(attr::SERVER_ADDRESS, address.clone()));
        attrs.push(KeyValue::new(attr::SERVER_PORT, *port));
    }
    attrs.push(KeyValue::new(
        attr::URL_FULL,
        semconv::cap_owned(
            semconv::url_full(&parts.uri, &config.redacted_query_keys),
            config.max_value_length,
        ),
    ));
    if let Some(t) = &target.template_value {
        attrs.push(KeyValue::new(attr::URL_TEMPLATE, t.clone()));
    }
    if target.resend > 0 {
        attrs.push(KeyValue::new(
            attr::HTTP_REQUEST_RESEND_COUNT,
            i64::from(target.resend),
        ));
    }
    config.request_extras(parts, &mut attrs);
    attrs
}
