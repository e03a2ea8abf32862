//! The layer of both sides, [`OtelLayer`]: built by [`OtelLayer::server()`] or
//! [`OtelLayer::client()`], configured with `with_*` methods, applied with `.layer(...)`.
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_otel_http::OtelLayer;
//!
//! let app: Router = Router::new()
//!     .route("/health", get(|| async { "ok" }))
//!     .layer(OtelLayer::server().with_active_requests(true));
//! # let _ = app;
//! ```
//!
//! The methods both sides have are on `OtelLayer<S, M>` for any side `S`; those of one side
//! only (the server's response header, the client's propagation hosts, ...) are on
//! `OtelLayer<Server, M>` or `OtelLayer<Client, M>` (see [`server`](crate::server) and
//! [`client`](crate::client)). Each setting is a field of its own: the outcome never depends on
//! the order of the calls. Cloning the layer (as `Router::layer` does for every route) clones one
//! [`Arc`]; the metric instruments are created once per layer value, when it builds its first
//! service.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use tower_layer::Layer;

use crate::body::{Counted, Uncounted};
use crate::config::Config;
use crate::service::OtelService;
use crate::side::{Client, Server, Side};

/// A tower [`Layer`] that instruments one side of HTTP calls: `OtelLayer<Server>` (from
/// [`OtelLayer::server()`]) records a `SERVER` span and the server metrics per request,
/// `OtelLayer<Client>` (from [`OtelLayer::client()`]) a `CLIENT` span and the client metrics per
/// request sent. `M` says whether request bodies are counted ([`Uncounted`] unless
/// [`with_counted_request_bodies`](OtelLayer::with_counted_request_bodies) was called).
///
/// ```
/// use tower_otel_http::OtelLayer;
///
/// let server = OtelLayer::server();
/// let client = OtelLayer::client();
/// # let _ = (server, client);
/// ```
#[must_use]
pub struct OtelLayer<S: Side = Server, M = Uncounted> {
    pub(crate) config: Arc<Config<S>>,
    _mode: PhantomData<fn() -> M>,
}

/// The server layer, `OtelLayer<Server, M>`: one `SERVER` span per request following
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
/// See [`server`](crate::server) for what is recorded and when, and [`OtelLayer`] for the
/// settings.
pub type OtelServerLayer<M = Uncounted> = OtelLayer<Server, M>;

/// The client layer, `OtelLayer<Client, M>`: one `CLIENT` span per request sent,
/// following the stable HTTP semantic conventions, the request-duration metric, and the trace
/// context sent along.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Empty;
/// use hyper_util::{client::legacy::Client, rt::TokioExecutor};
/// use opentelemetry_sdk::trace::SdkTracerProvider;
/// use tower::ServiceBuilder;
/// use tower_otel_http::OtelLayer;
///
/// let provider = SdkTracerProvider::builder().build();
/// let client = ServiceBuilder::new()
///     .layer(
///         OtelLayer::client()
///             .with_tracer_provider(&provider)
///             .with_propagation_hosts([".svc.cluster.local", "api.partner.example"])
///             .with_active_requests(true),
///     )
///     .service(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());
/// # let _ = client;
/// ```
///
/// See [`client`](crate::client) for what is recorded and when (and how the same layer serves as
/// a reqwest middleware), and [`OtelLayer`] for the settings.
pub type OtelClientLayer<M = Uncounted> = OtelLayer<Client, M>;

impl<S: Side, M> Clone for OtelLayer<S, M> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            _mode: PhantomData,
        }
    }
}

impl<S: Side, M> fmt::Debug for OtelLayer<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelLayer")
            .field("config", &self.config)
            .field("request_body_mode", &std::any::type_name::<M>())
            .finish()
    }
}

impl OtelLayer<Server> {
    /// The server layer with its defaults: spans, the request-duration metric, the
    /// `traceresponse` header and log correlation; the global tracer and meter providers and
    /// propagator (resolved when requests arrive); the conventions' known methods (or
    /// `OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS`), default query redaction, no header capture,
    /// proxy headers not trusted.
    pub fn server() -> Self {
        Self::with_config(Config::new())
    }
}

impl Default for OtelLayer<Server> {
    fn default() -> Self {
        Self::server()
    }
}

impl OtelLayer<Client> {
    /// The client layer with its defaults: spans and the request-duration metric; the global
    /// tracer and meter providers and propagator (resolved when requests are sent); trace
    /// context sent to every host; the conventions' known methods (or
    /// `OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS`), default query redaction, no header capture.
    pub fn client() -> Self {
        Self::with_config(Config::new())
    }
}

impl Default for OtelLayer<Client> {
    fn default() -> Self {
        Self::client()
    }
}

impl<S: Side, M> OtelLayer<S, M> {
    fn with_config(config: Config<S>) -> Self {
        OtelLayer {
            config: Arc::new(config),
            _mode: PhantomData,
        }
    }

    pub(crate) fn config_mut(&mut self) -> &mut Config<S> {
        Arc::make_mut(&mut self.config)
    }

    /// Also record the request body size (`http.server.request.body.size` /
    /// `http.client.request.body.size`): the request body is wrapped in a
    /// [`RequestBody`](crate::body::RequestBody) that counts the bytes read or sent. This
    /// **changes the request body type** the inner service sees, hence a method of its own and
    /// a layer of another type; everything else leaves the body type alone. (A tonic `Channel`
    /// only takes its own body type: leave request bodies uncounted there.) As a reqwest
    /// middleware, the layer counts the bodies whose bytes reqwest holds in full (not streamed
    /// ones).
    pub fn with_counted_request_bodies(mut self) -> OtelLayer<S, Counted> {
        self.config_mut().meter.options_mut().request_body_size = true;
        OtelLayer {
            config: self.config,
            _mode: PhantomData,
        }
    }

    /// Every metric that leaves the body types alone: duration, active requests and response
    /// body sizes. Add [`with_counted_request_bodies`](Self::with_counted_request_bodies) for
    /// the request body sizes too.
    pub fn with_all_metrics(self) -> Self {
        self.with_metrics(true)
            .with_active_requests(true)
            .with_response_body_size(true)
    }

    /// Use this tracer provider instead of the global one. A concrete provider (such as
    /// the SDK's) is also the fastest choice: spans are not boxed twice.
    pub fn with_tracer_provider<P>(mut self, provider: &P) -> Self
    where
        P: opentelemetry::trace::TracerProvider,
        P::Tracer: Send + Sync + 'static,
        <P::Tracer as opentelemetry::trace::Tracer>::Span: Send + Sync + 'static,
    {
        self.config_mut().tracer = crate::otel::TracerSource::from_provider(provider);
        self
    }

    /// Use this meter provider instead of the global one.
    pub fn with_meter_provider<P>(mut self, provider: &P) -> Self
    where
        P: opentelemetry::metrics::MeterProvider + ?Sized + 'static,
    {
        self.config_mut().meter.set_provider(provider);
        self
    }

    /// Use this propagator instead of the global one.
    ///
    /// Whatever the propagator, `traceparent` and `tracestate` are validated first (an invalid
    /// `traceparent` is ignored together with `tracestate`; a `tracestate` that does not parse
    /// under W3C Trace Context Level 2 is dropped whole: see [`crate::propagation`]). By default the global propagator is called for
    /// every request (a global is a `dyn TextMapPropagator`: whatever it is, it runs); while
    /// none is installed, W3C Trace Context is used for the spans this layer records. This
    /// crate's [`W3cPropagator`](crate::propagation::W3cPropagator) and the SDK's
    /// `TraceContextPropagator`, given here, are read and written by the crate's own W3C Level 2
    /// code without a call through the trait (the random-trace-id flag and the whole
    /// `tracestate` carried to every outgoing call of the trace); any other propagator given
    /// here is called as it is.
    pub fn with_propagator<P>(mut self, propagator: P) -> Self
    where
        P: opentelemetry::propagation::TextMapPropagator + Send + Sync + 'static,
    {
        self.config_mut().propagator = crate::otel::PropagatorSource::fixed(propagator);
        self
    }

    /// Record spans (default `true`). `false` gives a metrics-only layer.
    pub fn with_spans(mut self, spans: bool) -> Self {
        self.config_mut().spans = spans;
        self
    }

    /// Record metrics (default `true`). `false` gives a spans-only layer.
    pub fn with_metrics(mut self, metrics: bool) -> Self {
        self.config_mut().meter.set_enabled(metrics);
        self
    }

    /// Record `http.server.active_requests` / `http.client.active_requests` (opt-in).
    pub fn with_active_requests(mut self, record: bool) -> Self {
        self.config_mut().meter.options_mut().active_requests = record;
        self
    }

    /// Record `http.server.response.body.size` / `http.client.response.body.size`: the bytes
    /// actually transferred (opt-in).
    pub fn with_response_body_size(mut self, record: bool) -> Self {
        self.config_mut().meter.options_mut().response_body_size = record;
        self
    }

    /// Put a [`Labeler`](crate::metrics::Labeler) into every instrumented request's
    /// extensions; its attributes are added to the request's measurements.
    pub fn with_labeler(mut self, labeler: bool) -> Self {
        self.config_mut().labeler = labeler;
        self
    }

    /// Only instrument requests for which `filter` returns `true`; the others are passed
    /// through untouched.
    pub fn with_filter<F>(mut self, filter: F) -> Self
    where
        F: Fn(&http::request::Parts) -> bool + Send + Sync + 'static,
    {
        self.config_mut().filter = Some(std::sync::Arc::new(filter));
        self
    }

    /// Replace the known-methods list (case-sensitive tokens; invalid tokens are ignored).
    /// Methods outside it are recorded as `_OTHER` with `http.request.method_original`.
    /// The default is the conventions' list, or `OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS`.
    pub fn with_known_methods<I, T>(mut self, methods: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        self.config_mut().methods = crate::semconv::KnownMethods::new(methods);
        self
    }

    /// Record these request headers as `http.request.header.<name>` (string arrays), and on a
    /// gRPC call as `rpc.request.metadata.<name>`. Names are case-insensitive; invalid names
    /// are ignored. Replaces the lists the environment gives
    /// (`OTEL_INSTRUMENTATION_HTTP_{SERVER,CLIENT}_CAPTURE_REQUEST_HEADERS`,
    /// `OTEL_INSTRUMENTATION_GRPC_CAPTURE_METADATA_{SERVER,CLIENT}_REQUEST`: comma-separated
    /// names, read when the layer is built). Nothing is recorded by default, and
    /// `authorization`, `proxy-authorization`, `cookie` and `set-cookie` are not recorded
    /// even when listed unless [`with_sensitive_headers`](Self::with_sensitive_headers)
    /// forces them.
    pub fn with_request_headers<I, T>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let names: Vec<String> = names.into_iter().map(|n| n.as_ref().to_owned()).collect();
        let config = self.config_mut();
        config.request_headers = crate::config::header_keys(
            &names,
            opentelemetry_semantic_conventions::attribute::HTTP_REQUEST_HEADER,
        );
        config.request_metadata = crate::config::header_keys(
            &names,
            opentelemetry_semantic_conventions::attribute::RPC_REQUEST_METADATA,
        );
        self
    }

    /// Record these response headers as `http.response.header.<name>` (string arrays), and on a
    /// gRPC call as `rpc.response.metadata.<name>`, from the response headers and the trailers.
    /// Replaces the lists the environment gives
    /// (`OTEL_INSTRUMENTATION_HTTP_{SERVER,CLIENT}_CAPTURE_RESPONSE_HEADERS`,
    /// `OTEL_INSTRUMENTATION_GRPC_CAPTURE_METADATA_{SERVER,CLIENT}_RESPONSE`).
    pub fn with_response_headers<I, T>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let names: Vec<String> = names.into_iter().map(|n| n.as_ref().to_owned()).collect();
        let config = self.config_mut();
        config.response_headers = crate::config::header_keys(
            &names,
            opentelemetry_semantic_conventions::attribute::HTTP_RESPONSE_HEADER,
        );
        config.response_metadata = crate::config::header_keys(
            &names,
            opentelemetry_semantic_conventions::attribute::RPC_RESPONSE_METADATA,
        );
        self
    }

    /// Add attributes from the request when the span starts (samplers see them).
    pub fn with_request_attributes<F>(mut self, hook: F) -> Self
    where
        F: Fn(&http::request::Parts, &mut Vec<opentelemetry::KeyValue>) + Send + Sync + 'static,
    {
        self.config_mut().request_hook = Some(std::sync::Arc::new(hook));
        self
    }

    /// Add attributes from the response head.
    pub fn with_response_attributes<F>(mut self, hook: F) -> Self
    where
        F: Fn(&http::response::Parts, &mut Vec<opentelemetry::KeyValue>) + Send + Sync + 'static,
    {
        self.config_mut().response_hook = Some(std::sync::Arc::new(hook));
        self
    }

    /// Record allow-listed `authorization`, `proxy-authorization`, `cookie` and `set-cookie`
    /// headers too (default `false`: they carry credentials, and telemetry backends are
    /// rarely protected like a secrets store).
    pub fn with_sensitive_headers(mut self, record: bool) -> Self {
        self.config_mut().sensitive_headers = record;
        self
    }

    /// The longest value taken from a request that is recorded, in bytes (default
    /// [`DEFAULT_MAX_VALUE_LENGTH`](crate::semconv::DEFAULT_MAX_VALUE_LENGTH), 2 KiB):
    /// `url.path`, `url.query`, `url.full`, `user_agent.original`,
    /// `http.request.method_original` and captured header values are cut at the last
    /// character boundary before it, so that a caller cannot make telemetry grow with its
    /// input.
    pub fn with_max_value_length(mut self, bytes: usize) -> Self {
        self.config_mut().max_value_length = bytes;
        self
    }

    /// Replace the query keys whose values are recorded as `REDACTED` (case-sensitive).
    /// Defaults to the conventions' list (`sig`, `X-Amz-Signature`, ...).
    pub fn with_redacted_query_keys<I, T>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        self.config_mut().redacted_query_keys =
            keys.into_iter().map(|k| Box::from(k.as_ref())).collect();
        self
    }

    /// Override the span name. The function gets the method and the template — the
    /// server's route, the client's [`UrlTemplate`](crate::client::UrlTemplate) — when
    /// known; on a server it is called again when the route becomes known only after
    /// routing. The default, `"{method} {template}"` or `"{method}"`, is what the
    /// conventions require: names built from raw paths or URLs have unbounded cardinality.
    pub fn with_span_name<F>(mut self, name: F) -> Self
    where
        F: Fn(&http::Method, Option<&str>) -> String + Send + Sync + 'static,
    {
        self.config_mut().span_name = Some(std::sync::Arc::new(name));
        self
    }

    /// Classify the inner service's errors for `error.type`: `f` gets errors of type `E` and
    /// returns a short, stable value, or `None` to leave the error to the default
    /// classification ([`error::classify`](crate::error::classify), else `_OTHER`).
    ///
    /// `E` is looked for in the service's error itself, and — when that is a boxed
    /// `dyn Error` (tower's `BoxError`) or any error of a type this crate knows — along its
    /// [`source`](std::error::Error::source) chain, so an error wrapped by a timeout or a
    /// retry layer is still found. The same function classifies the errors of response bodies
    /// (`response_body` when it declines). A service whose error type and body error type can
    /// never hold an `E` (behind axum the service error is `Infallible`: handlers answer errors
    /// with responses) gets a warning at its first request (through `tracing`, feature
    /// `tracing`), not a silent no-op.
    ///
    /// ```
    /// # use tower_otel_http::OtelLayer;
    /// #[derive(Debug)]
    /// enum AppError { Db, Auth }
    /// impl std::fmt::Display for AppError {
    ///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    ///         f.write_str("app error")
    ///     }
    /// }
    /// impl std::error::Error for AppError {}
    ///
    /// let layer = OtelLayer::server().with_error_type(|e: &AppError| match e {
    ///     AppError::Db => Some("db"),
    ///     AppError::Auth => None,
    /// });
    /// # let _ = layer;
    /// ```
    pub fn with_error_type<E, F>(mut self, f: F) -> Self
    where
        E: std::error::Error + 'static,
        F: Fn(&E) -> Option<&'static str> + Send + Sync + 'static,
    {
        self.config_mut().error_type = Some(crate::error::error_type_fn(f));
        self
    }
}

impl<S: Side, M, Inner> Layer<Inner> for OtelLayer<S, M> {
    type Service = OtelService<Inner, S, M>;

    fn layer(&self, inner: Inner) -> Self::Service {
        // instruments are created here, once per layer value, not on the first request
        self.config.meter.init();
        OtelService::new(inner, self.config.clone())
    }
}
