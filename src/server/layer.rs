use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use http::request;
use tower_layer::Layer;

use super::OtelServer;
use crate::config::{common_builder_methods, Config, RequestPredicate, Side};
use crate::request_body::{Counted, Uncounted};
use crate::response_header::{HeaderConfig, ResponseHeader};

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

#[derive(Clone, Default)]
pub(crate) enum PublicEndpoint {
    #[default]
    No,
    Yes,
    When(RequestPredicate),
}

impl PublicEndpoint {
    pub(crate) fn applies(&self, parts: &request::Parts) -> bool {
        match self {
            PublicEndpoint::No => false,
            PublicEndpoint::Yes => true,
            PublicEndpoint::When(f) => f(parts),
        }
    }
}

/// The server-only settings.
#[derive(Clone)]
pub(crate) struct ServerOptions {
    pub(crate) public_endpoint: PublicEndpoint,
    pub(crate) trust_proxy_headers: bool,
    pub(crate) https: bool,
    pub(crate) event_stream_end: SpanEnd,
    pub(crate) client_port: bool,
    pub(crate) metrics_server_address: bool,
    pub(crate) response_header: HeaderConfig,
    /// Open a `tracing` span per request for log correlation.
    pub(crate) log_correlation: bool,
    #[cfg(feature = "tracing")]
    pub(crate) log_level: tracing::Level,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            public_endpoint: PublicEndpoint::No,
            trust_proxy_headers: false,
            https: false,
            event_stream_end: SpanEnd::LastByte,
            client_port: false,
            metrics_server_address: false,
            response_header: HeaderConfig::default(),
            log_correlation: cfg!(feature = "tracing"),
            #[cfg(feature = "tracing")]
            log_level: tracing::Level::INFO,
        }
    }
}

impl fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ServerOptions");
        d.field(
            "public_endpoint",
            &match self.public_endpoint {
                PublicEndpoint::No => "no",
                PublicEndpoint::Yes => "yes",
                PublicEndpoint::When(_) => "predicate",
            },
        )
        .field("trust_proxy_headers", &self.trust_proxy_headers)
        .field("https", &self.https)
        .field("event_stream_end", &self.event_stream_end)
        .field("client_port", &self.client_port)
        .field("metrics_server_address", &self.metrics_server_address)
        .field("response_header", &self.response_header)
        .field("log_correlation", &self.log_correlation);
        #[cfg(feature = "tracing")]
        d.field("log_level", &self.log_level);
        d.finish()
    }
}

/// A tower [`Layer`] that instruments an HTTP server: one `SERVER` span per request following
/// the stable HTTP semantic conventions, with the caller's W3C trace context continued, the
/// request-duration metric, the trace-context response header and a log-correlation span.
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
/// Cloning the layer (as `Router::layer` does for every route) clones one [`Arc`]. The outcome
/// of a configuration does not depend on the order of the `with_*` calls. See the
/// [module docs](crate::server) for what is recorded and when.
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
    /// A layer with the defaults: spans, the request-duration metric, the `traceresponse`
    /// header and log correlation; the global tracer and meter providers and propagator
    /// (resolved when requests arrive); the conventions' known methods (or
    /// `OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS`), default query redaction, no header capture,
    /// proxy headers not trusted.
    pub fn new() -> Self {
        OtelServerLayer {
            config: Arc::new(Config::new(Side::Server)),
            _mode: PhantomData,
        }
    }

    /// Also record `http.server.request.body.size`: the request body is wrapped in a
    /// [`RequestBody`](super::RequestBody) that counts the bytes read (this changes the body type
    /// the inner service sees, hence a method of its own).
    pub fn with_request_body_size(mut self) -> OtelServerLayer<Counted> {
        self.config_mut().meter.options_mut().request_body_size = true;
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
    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    common_builder_methods!("server");

    /// Put `server.address` / `server.port` on the metrics (opt-in in the conventions). Their
    /// values come from the request's `Host`: only enable this when something in front of the
    /// server restricts it to known hosts, or the number of series is up to the callers.
    pub fn with_metrics_server_address(mut self, record: bool) -> Self {
        self.config_mut().server.metrics_server_address = record;
        self
    }

    /// Which response header carries the server span's trace context (default
    /// `traceresponse`; see [`response_header`](crate::response_header)).
    pub fn with_response_header(mut self, header: ResponseHeader) -> Self {
        self.config_mut().server.response_header.header = header;
        self
    }

    /// Also list the trace-context response header in `access-control-expose-headers`, so
    /// that browser code may read it from cross-origin responses.
    pub fn with_response_header_cors_expose(mut self, expose: bool) -> Self {
        self.config_mut().server.response_header.expose = expose;
        self
    }

    /// Open a `tracing` span per request carrying `trace_id`, `span_id` and `trace_flags`, so
    /// that every log line of the request can be correlated with its trace (default `true`;
    /// see [`logs`](crate::logs)).
    #[cfg(feature = "tracing")]
    pub fn with_log_correlation(mut self, enabled: bool) -> Self {
        self.config_mut().server.log_correlation = enabled;
        self
    }

    /// The level of the per-request `tracing` span (default `INFO`): a subscriber that filters
    /// this level out pays only a level check.
    #[cfg(feature = "tracing")]
    pub fn with_log_level(mut self, level: tracing::Level) -> Self {
        self.config_mut().server.log_level = level;
        self
    }

    /// Treat every caller as untrusted: each request starts a new trace, and the
    /// caller's context, when valid, is attached as a span link.
    pub fn with_public_endpoint(mut self, public: bool) -> Self {
        self.config_mut().server.public_endpoint = if public {
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
        self.config_mut().server.public_endpoint = PublicEndpoint::When(Arc::new(is_public));
        self
    }

    /// Trust `Forwarded` / `X-Forwarded-For` / `X-Forwarded-Proto` for `client.address` and
    /// `url.scheme`: the first element is taken, the original client. Off by default: only
    /// enable behind a proxy that *replaces* these headers — one that appends to what the caller
    /// sent (nginx's `$proxy_add_x_forwarded_for`) leaves the first element to the caller.
    pub fn with_trusted_proxy_headers(mut self, trust: bool) -> Self {
        self.config_mut().server.trust_proxy_headers = trust;
        self
    }

    /// The scheme of the connection when the request does not say (`true`: `https`, for a
    /// server that terminates TLS itself). Defaults to `http`.
    pub fn with_https(mut self, https: bool) -> Self {
        self.config_mut().server.https = https;
        self
    }

    /// When the span of a `text/event-stream` response ends (default: at its last byte).
    pub fn with_event_stream_end(mut self, end: SpanEnd) -> Self {
        self.config_mut().server.event_stream_end = end;
        self
    }

    /// Record `client.port` (opt-in in the conventions).
    pub fn with_client_port(mut self, record: bool) -> Self {
        self.config_mut().server.client_port = record;
        self
    }
}

impl<S, M> Layer<S> for OtelServerLayer<M> {
    type Service = OtelServer<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        // instruments are created here, once per layer value, not on the first request
        self.config.meter.init();
        OtelServer::new(inner, self.config.clone())
    }
}
