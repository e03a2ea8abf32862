use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::SystemTime;

use http::{Request, Response};
use opentelemetry::trace::{Link, SpanBuilder, SpanKind, TraceContextExt};
use opentelemetry::{Context, KeyValue, StringValue};
use opentelemetry_semantic_conventions::attribute as attr;
use tower_service::Service;

use super::body::ResponseBody;
use super::future::ResponseFuture;
use super::layer::{Config, PublicEndpoint};
use super::request_body::{RequestBodyMode, Uncounted};
use super::state::{MetricsState, RequestState};
use crate::metrics::Labeler;
use crate::otel::Resolved;
use crate::propagation::StrictHeaderExtractor;
use crate::route;
use crate::semconv;

/// The service built by [`OtelServerLayer`](super::OtelServerLayer).
///
/// `M` says whether request bodies are counted ([`Uncounted`] by default); see
/// [`RequestBodyMode`].
pub struct OtelServer<S, M = Uncounted> {
    pub(crate) inner: S,
    pub(crate) config: Arc<Config>,
    _mode: PhantomData<fn() -> M>,
}

impl<S: Clone, M> Clone for OtelServer<S, M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
            _mode: PhantomData,
        }
    }
}

impl<S: std::fmt::Debug, M> std::fmt::Debug for OtelServer<S, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtelServer")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S, M> OtelServer<S, M> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        OtelServer {
            inner,
            config,
            _mode: PhantomData,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwrap the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, M, ReqBody, ResBody> Service<Request<ReqBody>> for OtelServer<S, M>
where
    M: RequestBodyMode,
    S: Service<Request<M::Body<ReqBody>>, Response = Response<ResBody>>,
    ResBody: http_body::Body,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // An outer instance already instruments this request: record the route for it (we may
        // run after routing) and pass through.
        if route::is_marked_and_record(req.extensions()) {
            return ResponseFuture::new(self.inner.call(req.map(|b| M::wrap(b, None))), None, None);
        }
        let (mut parts, body) = req.into_parts();
        if let Some(filter) = &self.config.filter {
            if !filter(&parts) {
                route::mark(
                    &mut parts.extensions,
                    #[cfg(feature = "axum")]
                    None,
                );
                let req = Request::from_parts(parts, M::wrap(body, None));
                return ResponseFuture::new(self.inner.call(req), None, None);
            }
        }
        let tracer = if self.config.spans {
            self.config.tracer.resolve()
        } else {
            None
        };
        let (start, now_nanos, instruments) = if tracer.is_none() && !self.config.meter.records() {
            (SystemTime::UNIX_EPOCH, None, None)
        } else {
            let start = SystemTime::now();
            let now_nanos = start
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64);
            let instruments = self
                .config
                .meter
                .for_request(self.config.metrics_options, now_nanos);
            (start, Some(now_nanos), instruments)
        };
        if tracer.is_none() && instruments.is_none() {
            // Nothing to record: the caller's context still flows through when a propagator is
            // configured; otherwise (OpenTelemetry without an SDK) a pure pass-through.
            let cx = self
                .config
                .propagator
                .pass_through(&parts.headers, now_nanos);
            let req = Request::from_parts(parts, M::wrap(body, None));
            let future = {
                let _guard = cx.clone().map(Context::attach);
                self.inner.call(req)
            };
            return ResponseFuture::new(future, None, cx);
        }
        let request_bytes = (M::COUNTS && instruments.is_some()).then(Arc::<AtomicU64>::default);
        let state = start_request(
            &self.config,
            tracer,
            instruments,
            start,
            now_nanos,
            request_bytes.clone(),
            &mut parts,
        );
        let req = Request::from_parts(parts, M::wrap(body, request_bytes));
        let future = {
            #[cfg(feature = "tracing")]
            let _entered = state.log_span.enter();
            let _guard = state.cx.as_ref().map(|cx| cx.clone().attach());
            self.inner.call(req)
        };
        ResponseFuture::new(future, Some(state), None)
    }
}

/// Build the attributes known at start, extract the parent, start the span (when spans are
/// recorded), prepare the metrics and mark the request.
fn start_request(
    config: &Arc<Config>,
    tracer: Option<Resolved<'_>>,
    instruments: Option<crate::metrics::RequestInstruments>,
    start: SystemTime,
    now_nanos: Option<u64>,
    request_bytes: Option<Arc<AtomicU64>>,
    parts: &mut http::request::Parts,
) -> RequestState {
    let method = config.methods.get(&parts.method);
    let matched = route::matched_route(&parts.extensions);
    let (route_value, name) = match matched {
        Some(r) => {
            let (rv, name) = route::route_and_name(method.label, r);
            (Some(rv), name)
        }
        None => (None, Cow::Borrowed(method.label)),
    };
    let forwarded = if config.trust_proxy_headers {
        semconv::forwarded(&parts.headers)
    } else {
        semconv::ForwardedInfo::default()
    };
    let https = forwarded
        .https
        .or_else(|| parts.uri.scheme().map(|s| *s == http::uri::Scheme::HTTPS))
        .unwrap_or(config.https);
    let version = semconv::protocol_version(parts.version);
    // `server.address` is needed by the span, and by the metrics only when opted in
    let wants_host = tracer.is_some() || (instruments.is_some() && config.metrics_server_address);
    // one allocation for the address (none when it repeats), shared by the span and the metrics
    let host_value: Option<(StringValue, i64)> = match parts.uri.authority() {
        Some(a) => Some(a.as_str()),
        None => parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok()),
    }
    .filter(|_| wants_host)
    .and_then(semconv::recent_host)
    .map(|(address, port)| {
        (
            address,
            i64::from(port.unwrap_or(if https { 443 } else { 80 })),
        )
    });

    let metrics = instruments.map(|instruments| MetricsState {
        instruments,
        method: if method.is_other {
            "_OTHER"
        } else {
            method.label
        },
        https,
        version,
        server: if config.metrics_server_address {
            host_value.clone().map(Box::new)
        } else {
            None
        },
        labeler: config.labeler.then(Labeler::new),
        request_bytes,
    });

    let span = tracer.is_some();
    let cx = match tracer {
        Some(tracer) => {
            let name = match &config.span_name {
                Some(f) => Cow::Owned(f(&parts.method, matched)),
                None => name,
            };
            let mut attrs: Vec<KeyValue> = Vec::with_capacity(
                16 + config.request_headers.len() + config.response_headers.len(),
            );
            attrs.push(method.attribute);
            if method.is_other {
                attrs.push(KeyValue::new(
                    attr::HTTP_REQUEST_METHOD_ORIGINAL,
                    parts.method.as_str().to_owned(),
                ));
            }
            let path = parts.uri.path();
            let path_value: StringValue = match &route_value {
                // a route without parameters is its own path: reuse the interned template
                Some(Cow::Borrowed(r)) if *r == path => (*r).into(),
                _ => path.to_owned().into(),
            };
            attrs.push(KeyValue::new(attr::URL_PATH, path_value));
            if let Some(q) = parts.uri.query() {
                attrs.push(KeyValue::new(
                    attr::URL_QUERY,
                    semconv::redact_query(q, &config.redacted_query_keys).into_owned(),
                ));
            }
            attrs.push(semconv::scheme_attribute(https));
            if let Some(v) = version {
                attrs.push(KeyValue::new(attr::NETWORK_PROTOCOL_VERSION, v));
            }
            if let Some((address, port)) = host_value {
                attrs.push(KeyValue::new(attr::SERVER_ADDRESS, address));
                attrs.push(KeyValue::new(attr::SERVER_PORT, port));
            }
            peer_attributes(config, parts, &forwarded, &mut attrs);
            if let Some(ua) = parts.headers.get(http::header::USER_AGENT) {
                let value = match ua.to_str() {
                    Ok(s) => semconv::recent_user_agent(s),
                    Err(_) => semconv::header_value_string(ua),
                };
                attrs.push(KeyValue::new(attr::USER_AGENT_ORIGINAL, value));
            }
            if let Some(rv) = &route_value {
                attrs.push(KeyValue::new(
                    attr::HTTP_ROUTE,
                    StringValue::from(rv.clone()),
                ));
            }
            semconv::capture_headers(&parts.headers, &config.request_headers, &mut attrs);
            if let Some(hook) = &config.request_hook {
                hook(parts, &mut attrs);
            }

            let extractor = StrictHeaderExtractor::new(&parts.headers);
            let public = match &config.public_endpoint {
                PublicEndpoint::No => false,
                PublicEndpoint::Yes => true,
                PublicEndpoint::When(f) => f(parts),
            };
            let mut builder = SpanBuilder::from_name(name)
                .with_kind(SpanKind::Server)
                .with_start_time(start);
            builder.attributes = Some(attrs);
            Some(if public {
                let remote = config.propagator.extract(&extractor, now_nanos);
                let sc = remote.span().span_context().clone();
                if sc.is_valid() {
                    builder.links = Some(vec![Link::with_context(sc)]);
                }
                tracer.start(builder, &Context::new())
            } else {
                let parent = config.propagator.extract(&extractor, now_nanos);
                tracer.start(builder, &parent)
            })
        }
        // metrics only: the caller's context flows through when a propagator is configured
        None => config.propagator.pass_through(&parts.headers, now_nanos),
    };

    #[cfg(feature = "axum")]
    let slot = route_value
        .is_none()
        .then(|| Arc::new(route::RouteSlot::default()));
    #[cfg(feature = "tracing")]
    let log_span = match (config.log_level, span, &cx) {
        (Some(level), true, Some(cx)) => {
            let s = crate::logs::request_span(level, method.label, cx.span().span_context());
            if let Some(r) = &route_value {
                s.record("http.route", &**r);
            }
            s
        }
        _ => tracing::Span::none(),
    };
    route::mark(
        &mut parts.extensions,
        #[cfg(feature = "axum")]
        slot.as_ref(),
    );
    if let Some(l) = metrics.as_ref().and_then(|m| m.labeler.as_ref()) {
        parts.extensions.insert(l.clone());
    }
    if let Some(m) = &metrics {
        m.request_started(config);
    }
    RequestState {
        cx,
        span,
        #[cfg(feature = "tracing")]
        log_span,
        start,
        // only a custom span name settled after routing needs the method itself
        method: (config.span_name.is_some() && route_value.is_none())
            .then(|| Box::new(parts.method.clone())),
        label: method.label,
        route: route_value,
        #[cfg(feature = "axum")]
        slot,
        config: config.clone(),
        metrics,
        status: None,
        response_bytes: 0,
        done: false,
    }
}

fn peer_attributes(
    config: &Config,
    parts: &http::request::Parts,
    forwarded: &semconv::ForwardedInfo<'_>,
    attrs: &mut Vec<KeyValue>,
) {
    #[cfg(feature = "axum")]
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    #[cfg(not(feature = "axum"))]
    let peer: Option<std::net::SocketAddr> = None;
    let _ = parts;

    let peer_ip: Option<opentelemetry::StringValue> =
        peer.map(|p| Arc::<str>::from(p.ip().to_string()).into());
    if let (Some(p), Some(ip)) = (peer, &peer_ip) {
        attrs.push(KeyValue::new(attr::NETWORK_PEER_ADDRESS, ip.clone()));
        attrs.push(KeyValue::new(attr::NETWORK_PEER_PORT, i64::from(p.port())));
    }
    match forwarded.client {
        Some(client) => {
            attrs.push(KeyValue::new(attr::CLIENT_ADDRESS, client.to_owned()));
            if config.client_port {
                if let Some(port) = forwarded.client_port {
                    attrs.push(KeyValue::new(attr::CLIENT_PORT, i64::from(port)));
                }
            }
        }
        None => {
            if let (Some(p), Some(ip)) = (peer, peer_ip) {
                attrs.push(KeyValue::new(attr::CLIENT_ADDRESS, ip));
                if config.client_port {
                    attrs.push(KeyValue::new(attr::CLIENT_PORT, i64::from(p.port())));
                }
            }
        }
    }
}
