//! The start of a client request under the HTTP conventions: what is read off it, the span's start attributes (set at the
//! start, so that samplers see them), the injection of its context, and the measurements'
//! attributes.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::SystemTime;

use http::request::Parts;
use http::HeaderMap;
use opentelemetry::trace::SpanBuilder;
use opentelemetry::{Context, KeyValue, StringValue};
use opentelemetry_semantic_conventions::attribute as attr;

use crate::client::{Attempts, NoPropagation, UrlTemplate};
use crate::config::Config;
use crate::convention::Conv;
use crate::lifecycle::{Begin, BodyRule, Clock, Record, Started};
use crate::metrics::Measure;
use crate::otel::RequestTracer;
use crate::semconv::{self, MethodInfo};
use crate::side::{Client, Start};

/// The host an outgoing request goes to, the port given with it and whether the scheme is
/// `https`: its URI's; else the client's configured target (`with_target`); else its `Host`
/// header's (scheme unknown: taken as `http`). Brackets of an IPv6 literal removed.
pub(crate) fn target_host<'a>(
    config: &'a Config<Client>,
    parts: &'a Parts,
) -> Option<(&'a str, Option<u16>, bool)> {
    let (h, port, https) = match (parts.uri.host(), &config.side.target) {
        (Some(h), _) => (
            h,
            parts.uri.port_u16(),
            parts.uri.scheme() == Some(&http::uri::Scheme::HTTPS),
        ),
        (None, Some(t)) => (&*t.host, t.port, t.https),
        (None, None) => {
            let (h, port) = parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .and_then(semconv::split_host)?;
            (h, port, false)
        }
    };
    Some((h.trim_start_matches('[').trim_end_matches(']'), port, https))
}

/// What a client's start decides first, under any convention.
pub(crate) struct Opening<'a> {
    pub(crate) tracer: Option<RequestTracer<'a>>,
    /// Whether the request is measured.
    pub(crate) measured: bool,
    /// [`target_host`].
    pub(crate) host: Option<(&'a str, Option<u16>, bool)>,
    /// Whether trace context goes with the request.
    pub(crate) propagate: bool,
    /// The context the request is made in.
    pub(crate) parent: Context,
}

/// [`Opening`] of an outgoing request. When neither a span nor a measurement would be taken
/// (`tracer` none, `measured` false), the caller sends the context on with
/// [`propagate_passed`] and passes the request through.
#[inline]
pub(crate) fn opening<'a>(config: &'a Config<Client>, parts: &'a Parts) -> Opening<'a> {
    let host = target_host(config, parts);
    Opening {
        tracer: config.tracer.resolve().filter(|_| config.spans),
        measured: config.meter.starts(),
        host,
        propagate: parts.extensions.get::<NoPropagation>().is_none()
            && config.side.propagates_to(host.map(|(h, _, _)| h)),
        parent: Context::current(),
    }
}

/// Send the context of the request's span on (`cx`: the span's, when one was started), or what
/// [`propagate_passed`] sends.
#[inline]
pub(crate) fn inject(
    config: &Config<Client>,
    cx: Option<&Context>,
    propagate: bool,
    parent: &Context,
    headers: &mut HeaderMap,
) {
    match cx {
        Some(cx) if propagate => config.propagator.inject_span(cx, headers),
        _ => propagate_passed(config, propagate, parent, headers),
    }
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
    resend: u32,
}

impl<'a> Target<'a> {
    fn read(
        config: &Config<Client>,
        parts: &'a Parts,
        host: Option<(&str, Option<u16>, bool)>,
    ) -> Self {
        let method = config.methods.get(&parts.method);
        let https = host.is_some_and(|(_, _, https)| https);
        let host = host.map(|(h, port, _)| {
            let port = port.unwrap_or(semconv::default_port(https));
            // shared by the span and the measurements without a copy
            (StringValue::from(Arc::<str>::from(h)), i64::from(port))
        });
        let template = parts
            .extensions
            .get::<UrlTemplate>()
            .map(UrlTemplate::as_str);
        // templates are the caller's, of any number: never interned (they would stay for the
        // life of the process)
        let template_value = template.map(|t| StringValue::from(Arc::<str>::from(t)));
        Target {
            method,
            https,
            host,
            template,
            template_value,
            resend: 0,
        }
    }

    fn measure(&self, config: &Config<Client>, request_bytes: Option<Arc<AtomicU64>>) -> Measure {
        Measure::new(
            self.method.metric_value(),
            config.side.metrics_url_scheme.then_some(self.https),
            self.host.clone(),
            config.labeler,
            request_bytes,
        )
    }
}

/// Start a request: its record (span, measurements), or a pass-through when nothing would be
/// recorded (the current context is still sent on through a propagator). Trace context goes
/// out only when the request is not opted out ([`NoPropagation`]) and its host is allowed;
/// otherwise trace-context headers it already carries (a proxy forwarding its caller's) are
/// removed. `counts_body`: the request body is counted (returned: its counter).
pub(crate) fn start(
    config: &Arc<Config<Client>>,
    parts: &mut Parts,
    counts_body: bool,
) -> Start<Client> {
    let resend = parts.extensions.get::<Attempts>().map_or(0, Attempts::next);
    let Opening {
        tracer,
        measured,
        host,
        propagate,
        parent,
    } = opening(config, parts);
    if tracer.is_none() && !measured {
        propagate_passed(config, propagate, &parent, &mut parts.headers);
        return (Started::Pass(None), None);
    }
    let conv = Conv::http(parts);
    let clock = Clock::start(tracer.is_some());
    let mut target = Target::read(config, parts, host);
    target.resend = resend;
    let label = target.method.label;
    let template = target.template_value.clone();
    let request_bytes = (counts_body && measured).then(Arc::<AtomicU64>::default);
    let measure = measured.then(|| target.measure(config, request_bytes.clone()));
    let cx = tracer.and_then(|t| start_span(config, t, &target, parts, &parent, clock.wall()));
    drop(target);
    let span = cx.is_some();
    inject(config, cx.as_ref(), propagate, &parent, &mut parts.headers);
    let begin = Begin {
        config: config.clone(),
        clock,
        conv,
        cx,
        span,
        #[cfg(feature = "tracing")]
        log: tracing::Span::none(),
        measure,
        template,
        slot: None,
        method: None,
        body_rule: BodyRule::of(&parts.method),
        label,
        version: None,
    };
    (Record::begin(begin, &mut parts.extensions), request_bytes)
}

/// Send the current context on (no span of ours), or, when the request must go without trace
/// context, remove what it carries.
pub(crate) fn propagate_passed(
    config: &Config<Client>,
    propagate: bool,
    parent: &Context,
    headers: &mut HeaderMap,
) {
    if propagate {
        config.propagator.inject_passed(parent, headers);
    } else {
        config.propagator.strip(headers);
    }
}

/// Start the `CLIENT` span, a child of the current context. `None` when the tracer makes no
/// real spans.
fn start_span(
    config: &Config<Client>,
    tracer: RequestTracer<'_>,
    target: &Target<'_>,
    parts: &Parts,
    parent: &Context,
    start: Option<SystemTime>,
) -> Option<Context> {
    let name = config.span_name(&parts.method, target.method.label, target.template);
    let mut builder = SpanBuilder::from_name(name)
        .with_kind(<Client as crate::side::sealed::Rules>::KIND)
        .with_attributes(span_attributes(config, target, parts));
    builder.start_time = start;
    tracer.start(builder, parent)
}

/// The span's start attributes: the required and recommended ones of a `CLIENT` span, and
/// the opt-in ones configured.
fn span_attributes(config: &Config<Client>, target: &Target<'_>, parts: &Parts) -> Vec<KeyValue> {
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
    // absolute, or absent: never a bare path
    let origin = config
        .side
        .target
        .as_ref()
        .map(|t| (if t.https { "https" } else { "http" }, &*t.authority));
    if let Some(full) = semconv::url_full_of(&parts.uri, origin, &config.redacted_query_keys) {
        attrs.push(KeyValue::new(
            attr::URL_FULL,
            semconv::cap_owned(full, config.max_value_length),
        ));
    }
    if let Some(t) = &target.template_value {
        attrs.push(KeyValue::new(attr::URL_TEMPLATE, t.clone()));
    }
    if target.resend > 0 {
        attrs.push(KeyValue::new(
            attr::HTTP_REQUEST_RESEND_COUNT,
            i64::from(target.resend),
        ));
    }
    config.request_extras(parts, false, &mut attrs);
    attrs
}

#[cfg(test)]
mod tests {
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tower_layer::Layer;
    use tower_service::Service;

    use crate::client::UrlTemplate;
    use crate::OtelLayer;

    /// A client's `url.template` is the caller's, of any number and length: it names the span,
    /// and is never interned for the life of the process (the interner is for the server's
    /// route templates, which come from the application's router).
    #[test]
    fn client_templates_are_not_interned() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let mut client =
            OtelLayer::client()
                .with_tracer_provider(&provider)
                .layer(tower::service_fn(|_req: http::Request<()>| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
                }));
        let template = "/not-interned/{unique-to-this-test}";
        let mut req = http::Request::get("http://api.test/not-interned/1")
            .body(())
            .unwrap();
        req.extensions_mut().insert(UrlTemplate::new(template));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(client.call(req)).unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].name, format!("GET {template}"));
        assert!(!crate::route::is_interned(template));
    }
}
