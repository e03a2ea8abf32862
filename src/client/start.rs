//! The start of a client request: what is read off it, the span's start attributes (set at the
//! start, so that samplers see them), the injection of its context, and the measurements'
//! attributes.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::SystemTime;

use http::request::Parts;
use opentelemetry::trace::{SpanBuilder, SpanKind};
use opentelemetry::{Context, KeyValue, StringValue};
use opentelemetry_semantic_conventions::attribute as attr;

use super::{Attempts, ClientMarker, NoPropagation, UrlTemplate};
use crate::config::Config;
use crate::lifecycle::{Clock, Record, Scope, Started};
use crate::metrics::{Labeler, Measure};
use crate::otel::RequestTracer;
use crate::semconv::{self, MethodInfo};

/// What the client reads off an outgoing request.
struct Target<'a> {
    method: MethodInfo,
    https: bool,
    /// `server.address`, `server.port`.
    host: Option<(StringValue, i64)>,
    template: Option<&'a str>,
    /// The template and the span name, interned.
    interned: Option<(&'static str, &'static str)>,
    resend: u32,
}

impl<'a> Target<'a> {
    fn read(config: &Config, parts: &'a Parts) -> Self {
        let method = config.methods.get(&parts.method);
        let https = parts.uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let host = match parts.uri.host() {
            Some(h) => Some((h, parts.uri.port_u16())),
            None => parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .and_then(semconv::split_host),
        }
        .map(|(h, port)| {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            let port = port.unwrap_or(semconv::default_port(https));
            // shared by the span and the measurements without a copy
            (StringValue::from(Arc::<str>::from(h)), i64::from(port))
        });
        let template = parts
            .extensions
            .get::<UrlTemplate>()
            .map(UrlTemplate::as_str);
        Target {
            interned: template.and_then(|t| crate::route::interned(method.label, t)),
            method,
            https,
            host,
            template,
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

    fn template_value(&self) -> Option<StringValue> {
        match (self.interned, self.template) {
            (Some((t, _)), _) => Some(t.into()),
            (None, Some(t)) => Some(t.to_owned().into()),
            (None, None) => None,
        }
    }
}

/// Whether trace context goes out with this request: not opted out, and to an allowed host.
fn propagates(config: &Config, parts: &Parts) -> bool {
    parts.extensions.get::<NoPropagation>().is_none()
        && config.client.propagates_to(parts.uri.host().or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .and_then(semconv::split_host)
                .map(|(h, _)| h)
        }))
}

/// Whether an outer instance of the client layer already instruments this request.
pub(super) fn is_inner(ext: &http::Extensions) -> bool {
    ext.get::<ClientMarker>().is_some()
}

/// Start a request: its record (span, measurements), or a pass-through when nothing would be
/// recorded (the current context is still sent on through a propagator). `counts_body`: the
/// request body is counted (returned: its counter).
pub(crate) fn start(
    config: &Arc<Config>,
    parts: &mut Parts,
    counts_body: bool,
) -> (Started, Option<Arc<AtomicU64>>) {
    let resend = parts.extensions.get::<Attempts>().map_or(0, Attempts::next);
    let tracer = config.tracer.resolve().filter(|_| config.spans);
    let measured = config.meter.starts();
    let propagate = propagates(config, parts);
    let parent = Context::current();
    if tracer.is_none() && !measured {
        if propagate {
            config.propagator.inject_passed(&parent, &mut parts.headers);
        }
        return (Started::Pass(None), None);
    }
    let clock = Clock::start(tracer.is_some());
    let mut target = Target::read(config, parts);
    target.resend = resend;
    let mut record = Record::new(config.clone(), clock, &parts.method, target.method.label);
    record.template = target.template_value();
    let request_bytes = (counts_body && measured).then(Arc::<AtomicU64>::default);
    record.measure = measured.then(|| target.measure(config, request_bytes.clone()));
    let cx =
        tracer.and_then(|t| start_span(config, t, &target, parts, &parent, record.clock.wall()));
    drop(target);
    record.span = cx.is_some();
    if propagate {
        match &cx {
            Some(cx) => config.propagator.inject_span(cx, &mut parts.headers),
            None => config.propagator.inject_passed(&parent, &mut parts.headers),
        }
    }
    record.scope = Scope::context(cx);
    parts.extensions.insert(ClientMarker);
    (record.begin(&mut parts.extensions), request_bytes)
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
    let name = match (target.interned, &config.span_name) {
        (Some((_, name)), None) => name.into(),
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
    if let Some(t) = target.template_value() {
        attrs.push(KeyValue::new(attr::URL_TEMPLATE, t));
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
