use std::fmt;
use std::sync::Arc;

use http::{request, response, HeaderName, Method};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Tracer, TracerProvider};
use opentelemetry::{Key, KeyValue};
use opentelemetry_semantic_conventions::attribute as attr;
use tower_layer::Layer;

use std::marker::PhantomData;

use opentelemetry::metrics::MeterProvider;

use super::request_body::{Counted, Uncounted};
use super::OtelServer;
use crate::metrics::{MeterSource, MetricsOptions};
use crate::otel::{PropagatorSource, TracerSource};
use crate::response_header::{HeaderConfig, ResponseHeader};
use crate::semconv::{self, KnownMethods};

pub(crate) type RequestPredicate = Arc<dyn Fn(&request::Parts) -> bool + Send + Sync>;
pub(crate) type RequestHook = Arc<dyn Fn(&request::Parts, &mut Vec<KeyValue>) + Send + Sync>;
pub(crate) type ResponseHook = Arc<dyn Fn(&response::Parts, &mut Vec<KeyValue>) + Send + Sync>;
pub(crate) type SpanNameFn = Arc<dyn Fn(&Method, Option<&str>) -> String + Send + Sync>;

/// When the span of a long-lived streaming response ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpanEnd {
    /// When the last byte of the body was sent (or the body was dropped). The default.
    #[default]
    LastByte,
    /// When the response head was produced; the body is then not observed.
    Head,
}

#[derive(Clone)]
pub(crate) enum PublicEndpoint {
    No,
    Yes,
    When(RequestPredicate),
}

#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) tracer: TracerSource,
    pub(crate) propagator: PropagatorSource,
    pub(crate) methods: KnownMethods,
    pub(crate) filter: Option<RequestPredicate>,
    pub(crate) public_endpoint: PublicEndpoint,
    pub(crate) request_headers: Vec<(HeaderName, Key)>,
    pub(crate) response_headers: Vec<(HeaderName, Key)>,
    pub(crate) request_hook: Option<RequestHook>,
    pub(crate) response_hook: Option<ResponseHook>,
    pub(crate) span_name: Option<SpanNameFn>,
    pub(crate) redacted_query_keys: Vec<Box<str>>,
    pub(crate) trust_proxy_headers: bool,
    pub(crate) https: bool,
    pub(crate) event_stream_end: SpanEnd,
    pub(crate) client_port: bool,
    pub(crate) spans: bool,
    pub(crate) meter: MeterSource,
    pub(crate) metrics_options: MetricsOptions,
    pub(crate) metrics_server_address: bool,
    pub(crate) labeler: bool,
    pub(crate) response_header: HeaderConfig,
    /// Level of the per-request `tracing` span; `None`: no log correlation span.
    #[cfg(feature = "tracing")]
    pub(crate) log_level: Option<tracing::Level>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tracer: TracerSource::global(),
            propagator: PropagatorSource::global(),
            methods: KnownMethods::from_env_or_default(),
            filter: None,
            public_endpoint: PublicEndpoint::No,
            request_headers: Vec::new(),
            response_headers: Vec::new(),
            request_hook: None,
            response_hook: None,
            span_name: None,
            redacted_query_keys: semconv::DEFAULT_REDACTED_QUERY_KEYS
                .iter()
                .map(|k| Box::<str>::from(*k))
                .collect(),
            trust_proxy_headers: false,
            https: false,
            event_stream_end: SpanEnd::LastByte,
            client_port: false,
            spans: true,
            meter: MeterSource::global(),
            metrics_options: MetricsOptions::default(),
            metrics_server_address: false,
            labeler: false,
            response_header: HeaderConfig::default(),
            #[cfg(feature = "tracing")]
            log_level: Some(tracing::Level::INFO),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("tracer", &self.tracer)
            .field("propagator", &self.propagator)
            .field("methods", &self.methods)
            .field("filter", &self.filter.is_some())
            .field(
                "public_endpoint",
                &match self.public_endpoint {
                    PublicEndpoint::No => "no",
                    PublicEndpoint::Yes => "yes",
                    PublicEndpoint::When(_) => "predicate",
                },
            )
            .field("request_headers", &self.request_headers)
            .field("response_headers", &self.response_headers)
            .field("request_hook", &self.request_hook.is_some())
            .field("response_hook", &self.response_hook.is_some())
            .field("span_name", &self.span_name.is_some())
            .field("redacted_query_keys", &self.redacted_query_keys)
            .field("trust_proxy_headers", &self.trust_proxy_headers)
            .field("https", &self.https)
            .field("event_stream_end", &self.event_stream_end)
            .field("client_port", &self.client_port)
            .field("spans", &self.spans)
            .field("meter", &self.meter)
            .field("metrics_options", &self.metrics_options)
            .field("metrics_server_address", &self.metrics_server_address)
            .field("labeler", &self.labeler)
            .field("response_header", &self.response_header)
            .finish()
    }
}

/// A tower [`Layer`] that instruments an HTTP server: one `SERVER` span per request following
/// the stable HTTP semantic conventions, with the caller's W3C trace context continued.
///
/// Apply it **once**, on the root router; every nested router is covered and every route gets
/// its full template:
///
/// ```
/// use axum::{routing::get, Router};
/// use tower_otel_http::OtelLayer;
///
/// let api = Router::new().route("/users/{id}", get(|| async { "user" }));
/// let app: Router = Router::new()
///     .route("/health", get(|| async { "ok" }))
///     .nest("/api/v1", api)
///     .layer(OtelLayer::server());
/// # let _ = app;
/// ```
///
/// Configured, with your own providers (the fastest choice) and a few options:
///
/// ```
/// use axum::{routing::get, Router};
/// use opentelemetry::KeyValue;
/// use opentelemetry_sdk::{metrics::SdkMeterProvider, trace::SdkTracerProvider};
/// use tower_otel_http::{response_header::ResponseHeader, server::SpanEnd, OtelLayer};
///
/// let tracer_provider = SdkTracerProvider::builder().build();
/// let meter_provider = SdkMeterProvider::builder().build();
/// let layer = OtelLayer::server()
///     .with_tracer_provider(&tracer_provider)
///     .with_meter_provider(&meter_provider)
///     .with_filter(|req| req.uri.path() != "/health")
///     .with_request_headers(["x-request-id"])
///     .with_request_attributes(|req, attrs| {
///         if let Some(tenant) = req.headers.get("x-tenant").and_then(|v| v.to_str().ok()) {
///             attrs.push(KeyValue::new("app.tenant", tenant.to_owned()));
///         }
///     })
///     .with_active_requests(true)
///     .with_event_stream_end(SpanEnd::Head)
///     .with_response_header(ResponseHeader::TraceId(http::HeaderName::from_static(
///         "x-trace-id",
///     )));
/// let app: Router = Router::new()
///     .route("/health", get(|| async { "ok" }))
///     .layer(layer);
/// # let _ = app;
/// ```
///
/// Cloning the layer (as `Router::layer` does for every route) clones one [`Arc`].
/// See the [module docs](crate::server) for what is recorded and when.
#[must_use]
pub struct OtelServerLayer<M = Uncounted> {
    pub(crate) config: Arc<Config>,
    _mode: PhantomData<fn() -> M>,
}

impl<M> Clone for OtelServerLayer<M> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            _mode: PhantomData,
        }
    }
}

impl<M> fmt::Debug for OtelServerLayer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelServerLayer")
            .field("config", &self.config)
            .field("request_body_mode", &std::any::type_name::<M>())
            .finish()
    }
}

impl Default for OtelServerLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl OtelServerLayer {
    /// A layer with the defaults: spans and the request-duration metric, global tracer and
    /// meter providers and propagator (resolved when requests arrive), the semantic
    /// conventions' known methods (or `OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS`), default query
    /// redaction, no header capture, proxy headers not trusted.
    pub fn new() -> Self {
        OtelServerLayer {
            config: Arc::new(Config::default()),
            _mode: PhantomData,
        }
    }

    /// Also record `http.server.request.body.size`: the request body is wrapped in a
    /// [`RequestBody`](super::RequestBody) that counts the bytes read (this changes the body type
    /// the inner service sees, hence a method of its own).
    pub fn with_request_body_size(mut self) -> OtelServerLayer<Counted> {
        self.config().metrics_options.request_body_size = true;
        self.reset_instruments();
        OtelServerLayer {
            config: self.config,
            _mode: PhantomData,
        }
    }

    /// Every metric: duration, active requests, request and response body sizes.
    pub fn with_all_metrics(self) -> OtelServerLayer<Counted> {
        self.with_metrics(true)
            .with_active_requests(true)
            .with_response_body_size(true)
            .with_request_body_size()
    }
}

impl<M> OtelServerLayer<M> {
    fn config(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// Instruments are created once per layer value: a changed metrics option gets new ones.
    fn reset_instruments(&mut self) {
        let c = self.config();
        c.meter = c.meter.reset();
    }

    /// Use this meter provider instead of the global one.
    pub fn with_meter_provider<P>(mut self, provider: &P) -> Self
    where
        P: MeterProvider + ?Sized + 'static,
    {
        let on = !matches!(self.config.meter, MeterSource::Off);
        self.config().meter = MeterSource::fixed(provider);
        if !on {
            self.config().meter = MeterSource::Off;
        }
        self
    }

    /// Record spans (default `true`). `false` gives a metrics-only layer.
    pub fn with_spans(mut self, spans: bool) -> Self {
        self.config().spans = spans;
        self
    }

    /// Record metrics (default `true`). `false` gives a spans-only layer.
    pub fn with_metrics(mut self, metrics: bool) -> Self {
        let c = self.config();
        c.meter = match (metrics, &c.meter) {
            (false, _) => MeterSource::Off,
            (true, MeterSource::Off) => MeterSource::global(),
            (true, m) => m.reset(),
        };
        self
    }

    /// Record `http.server.active_requests` (opt-in).
    pub fn with_active_requests(mut self, record: bool) -> Self {
        self.config().metrics_options.active_requests = record;
        self.reset_instruments();
        self
    }

    /// Record `http.server.response.body.size`: the bytes actually sent (opt-in).
    pub fn with_response_body_size(mut self, record: bool) -> Self {
        self.config().metrics_options.response_body_size = record;
        self.reset_instruments();
        self
    }

    /// Put `server.address` / `server.port` on the metrics (opt-in in the conventions). Their
    /// values come from the request's `Host`: only enable this when something in front of the
    /// server restricts it to known hosts, or the number of series is up to the callers.
    pub fn with_metrics_server_address(mut self, record: bool) -> Self {
        self.config().metrics_server_address = record;
        self
    }

    /// Which response header carries the server span's trace context (default
    /// `traceresponse`; see [`response_header`](crate::response_header)).
    pub fn with_response_header(mut self, header: ResponseHeader) -> Self {
        self.config().response_header.header = header;
        self
    }

    /// Also list the trace-context response header in `access-control-expose-headers`, so
    /// that browser code may read it from cross-origin responses.
    pub fn with_response_header_cors_expose(mut self, expose: bool) -> Self {
        self.config().response_header.expose = expose;
        self
    }

    /// Open a `tracing` span per request carrying `trace_id`, `span_id` and `trace_flags`, so
    /// that every log line of the request can be correlated with its trace (default `true`;
    /// see [`logs`](crate::logs)).
    #[cfg(feature = "tracing")]
    pub fn with_log_correlation(mut self, enabled: bool) -> Self {
        self.config().log_level =
            enabled.then_some(self.config.log_level.unwrap_or(tracing::Level::INFO));
        self
    }

    /// The level of the per-request `tracing` span (default `INFO`): a subscriber that filters
    /// this level out pays only a level check.
    #[cfg(feature = "tracing")]
    pub fn with_log_level(mut self, level: tracing::Level) -> Self {
        self.config().log_level = Some(level);
        self
    }

    /// Put a [`Labeler`](crate::metrics::Labeler) into every instrumented request's
    /// extensions; its attributes are added to the request's measurements.
    pub fn with_labeler(mut self, labeler: bool) -> Self {
        self.config().labeler = labeler;
        self
    }

    /// Use this tracer provider instead of the global one. A concrete provider (such as the
    /// SDK's) is also the fastest choice: spans are not boxed twice.
    pub fn with_tracer_provider<P>(mut self, provider: &P) -> Self
    where
        P: TracerProvider,
        P::Tracer: Send + Sync + 'static,
        <P::Tracer as Tracer>::Span: Send + Sync + 'static,
    {
        self.config().tracer = TracerSource::from_provider(provider);
        self
    }

    /// Use this propagator instead of the global one to extract the caller's context.
    ///
    /// Whatever the propagator, `traceparent` is validated strictly first (an invalid one is
    /// ignored together with `tracestate`). By default the global propagator is used; when no
    /// global propagator is installed, W3C Trace Context (`traceparent`, `tracestate`) is
    /// extracted by this crate; while that is so, the global is looked at again at most every
    /// 50 ms, so a propagator installed after the first requests takes effect within 50 ms (for
    /// a layer that records nothing — a no-op tracer provider and no metrics — within 64
    /// requests on each thread).
    pub fn with_propagator<P>(mut self, propagator: P) -> Self
    where
        P: TextMapPropagator + Send + Sync + 'static,
    {
        self.config().propagator = PropagatorSource::Fixed(Arc::new(propagator));
        self
    }

    /// Only instrument requests for which `filter` returns `true` (e.g. skip `/health`).
    /// Skipped requests are passed through untouched, also by inner instances of the layer.
    pub fn with_filter<F>(mut self, filter: F) -> Self
    where
        F: Fn(&request::Parts) -> bool + Send + Sync + 'static,
    {
        self.config().filter = Some(Arc::new(filter));
        self
    }

    /// Treat every caller as untrusted (SEMCONV §5.4): each request starts a new trace, and the
    /// caller's context, when valid, is attached as a span link.
    pub fn with_public_endpoint(mut self, public: bool) -> Self {
        self.config().public_endpoint = if public {
            PublicEndpoint::Yes
        } else {
            PublicEndpoint::No
        };
        self
    }

    /// Decide per request whether the caller is untrusted (see
    /// [`with_public_endpoint`](Self::with_public_endpoint)).
    pub fn with_public_endpoint_fn<F>(mut self, is_public: F) -> Self
    where
        F: Fn(&request::Parts) -> bool + Send + Sync + 'static,
    {
        self.config().public_endpoint = PublicEndpoint::When(Arc::new(is_public));
        self
    }

    /// Replace the known-methods list (case-sensitive tokens; invalid tokens are ignored).
    /// Methods outside it are recorded as `_OTHER` with `http.request.method_original`.
    pub fn with_known_methods<I, S>(mut self, methods: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.config().methods = KnownMethods::new(methods);
        self
    }

    /// Record these request headers as `http.request.header.<name>` (string arrays). Names are
    /// case-insensitive; invalid names are ignored. Nothing is recorded by default.
    pub fn with_request_headers<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.config().request_headers = header_keys(names, attr::HTTP_REQUEST_HEADER);
        self
    }

    /// Record these response headers as `http.response.header.<name>` (string arrays).
    pub fn with_response_headers<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.config().response_headers = header_keys(names, attr::HTTP_RESPONSE_HEADER);
        self
    }

    /// Add attributes from the request when the span starts (samplers see them).
    pub fn with_request_attributes<F>(mut self, hook: F) -> Self
    where
        F: Fn(&request::Parts, &mut Vec<KeyValue>) + Send + Sync + 'static,
    {
        self.config().request_hook = Some(Arc::new(hook));
        self
    }

    /// Add attributes from the response head.
    pub fn with_response_attributes<F>(mut self, hook: F) -> Self
    where
        F: Fn(&response::Parts, &mut Vec<KeyValue>) + Send + Sync + 'static,
    {
        self.config().response_hook = Some(Arc::new(hook));
        self
    }

    /// Override the span name. The function gets the method and the route template (when
    /// known); it is called again when the route becomes known only after routing. The
    /// default, `"{method} {route}"` or `"{method}"`, is what the conventions require: names
    /// built from raw paths have unbounded cardinality.
    pub fn with_span_name<F>(mut self, name: F) -> Self
    where
        F: Fn(&Method, Option<&str>) -> String + Send + Sync + 'static,
    {
        self.config().span_name = Some(Arc::new(name));
        self
    }

    /// Replace the query keys whose values are recorded as `REDACTED` in `url.query`
    /// (case-sensitive). Defaults to the conventions' list (`sig`, `X-Amz-Signature`, ...).
    pub fn with_redacted_query_keys<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.config().redacted_query_keys =
            keys.into_iter().map(|k| Box::from(k.as_ref())).collect();
        self
    }

    /// Trust `Forwarded` / `X-Forwarded-For` / `X-Forwarded-Proto` for `client.address` and
    /// `url.scheme`. Off by default: only enable behind a proxy that sets these headers.
    pub fn with_trusted_proxy_headers(mut self, trust: bool) -> Self {
        self.config().trust_proxy_headers = trust;
        self
    }

    /// The scheme of the connection when the request does not say (`true`: `https`, for a
    /// server that terminates TLS itself). Defaults to `http`.
    pub fn with_https(mut self, https: bool) -> Self {
        self.config().https = https;
        self
    }

    /// When the span of a `text/event-stream` response ends (default: at its last byte).
    pub fn with_event_stream_end(mut self, end: SpanEnd) -> Self {
        self.config().event_stream_end = end;
        self
    }

    /// Record `client.port` (opt-in in the conventions).
    pub fn with_client_port(mut self, record: bool) -> Self {
        self.config().client_port = record;
        self
    }
}

fn header_keys<I, S>(names: I, prefix: &str) -> Vec<(HeaderName, Key)>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out: Vec<(HeaderName, Key)> = Vec::new();
    for n in names {
        if let Ok(name) = HeaderName::from_bytes(n.as_ref().trim().as_bytes()) {
            if !out.iter().any(|(n, _)| *n == name) {
                let key = semconv::header_key(prefix, &name);
                out.push((name, key));
            }
        }
    }
    out
}

impl<S, M> Layer<S> for OtelServerLayer<M> {
    type Service = OtelServer<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        // instruments are created here, once per layer value, not on the first request
        self.config.meter.init(self.config.metrics_options);
        OtelServer::new(inner, self.config.clone())
    }
}
