//! The configuration shared by the server and the client layers: one type with methods, built by
//! the layers' `with_*` methods and read by the request lifecycle.
//!
//! Each setting is a field of its own, so the outcome of a configuration never depends on the
//! order of the builder calls; what is derived from the settings (the metric instruments) is
//! created when the layer builds its first service, once per layer value.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::{request, response, HeaderName, Method};
use opentelemetry::{Key, KeyValue};

use crate::error::ErrorTypeFn;
use crate::metrics::MeterSource;
use crate::otel::{PropagatorSource, TracerSource};
use crate::semconv::{self, KnownMethods};

pub(crate) type RequestPredicate = Arc<dyn Fn(&request::Parts) -> bool + Send + Sync>;
pub(crate) type RequestHook = Arc<dyn Fn(&request::Parts, &mut Vec<KeyValue>) + Send + Sync>;
pub(crate) type ResponseHook = Arc<dyn Fn(&response::Parts, &mut Vec<KeyValue>) + Send + Sync>;
pub(crate) type SpanNameFn = Arc<dyn Fn(&Method, Option<&str>) -> String + Send + Sync>;

/// Which side of a call a layer instruments; the rules that differ between the two live where
/// this is matched on (the request lifecycle).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Server,
    Client,
}

/// The settings of one layer value.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) side: Side,
    pub(crate) tracer: TracerSource,
    pub(crate) propagator: PropagatorSource,
    pub(crate) spans: bool,
    pub(crate) meter: MeterSource,
    pub(crate) methods: KnownMethods,
    pub(crate) filter: Option<RequestPredicate>,
    pub(crate) request_headers: Vec<(HeaderName, Key)>,
    pub(crate) response_headers: Vec<(HeaderName, Key)>,
    pub(crate) request_hook: Option<RequestHook>,
    pub(crate) response_hook: Option<ResponseHook>,
    pub(crate) span_name: Option<SpanNameFn>,
    pub(crate) redacted_query_keys: Vec<Box<str>>,
    pub(crate) error_type: Option<ErrorTypeFn>,
    pub(crate) labeler: bool,
    /// The longest value taken from a request that is recorded (bytes).
    pub(crate) max_value_length: usize,
    /// Record allow-listed sensitive headers (`authorization`, `cookie`, ...) too.
    pub(crate) sensitive_headers: bool,
    pub(crate) server: crate::server::ServerOptions,
    pub(crate) client: crate::client::ClientOptions,
}

impl Config {
    pub(crate) fn new(side: Side) -> Self {
        Config {
            side,
            tracer: TracerSource::Global,
            propagator: PropagatorSource::Global,
            spans: true,
            meter: MeterSource::new(side),
            methods: KnownMethods::from_env_or_default(),
            filter: None,
            request_headers: Vec::new(),
            response_headers: Vec::new(),
            request_hook: None,
            response_hook: None,
            span_name: None,
            redacted_query_keys: semconv::DEFAULT_REDACTED_QUERY_KEYS
                .iter()
                .map(|k| Box::<str>::from(*k))
                .collect(),
            error_type: None,
            labeler: false,
            max_value_length: semconv::DEFAULT_MAX_VALUE_LENGTH,
            sensitive_headers: false,
            server: Default::default(),
            client: Default::default(),
        }
    }

    /// Whether the filter lets this request be instrumented.
    pub(crate) fn admits(&self, parts: &request::Parts) -> bool {
        self.filter.as_ref().map_or(true, |f| f(parts))
    }

    /// The span name: the user's function, else `"{method} {template}"` or `"{method}"`.
    pub(crate) fn span_name(
        &self,
        method: &Method,
        label: &'static str,
        template: Option<&str>,
    ) -> Cow<'static, str> {
        match (&self.span_name, template) {
            (Some(f), _) => Cow::Owned(f(method, template)),
            (None, Some(t)) => {
                let mut name = String::with_capacity(label.len() + 1 + t.len());
                name.push_str(label);
                name.push(' ');
                name.push_str(t);
                Cow::Owned(name)
            }
            (None, None) => Cow::Borrowed(label),
        }
    }

    /// The attributes the user's request hook and header allow-list add at the start.
    pub(crate) fn request_extras(&self, parts: &request::Parts, attrs: &mut Vec<KeyValue>) {
        semconv::capture_headers(
            &parts.headers,
            &self.request_headers,
            self.sensitive_headers,
            self.max_value_length,
            attrs,
        );
        if let Some(hook) = &self.request_hook {
            hook(parts, attrs);
        }
    }

    /// The attributes the user's response hook and header allow-list add at the response head
    /// (the response is split for the hook and put back together).
    pub(crate) fn response_extras<B>(
        &self,
        response: http::Response<B>,
        attrs: &mut Vec<KeyValue>,
    ) -> http::Response<B> {
        semconv::capture_headers(
            response.headers(),
            &self.response_headers,
            self.sensitive_headers,
            self.max_value_length,
            attrs,
        );
        match &self.response_hook {
            Some(hook) => {
                let (parts, body) = response.into_parts();
                hook(&parts, attrs);
                http::Response::from_parts(parts, body)
            }
            None => response,
        }
    }

    /// `s` cut to the longest value recorded.
    pub(crate) fn cap<'a>(&self, s: &'a str) -> &'a str {
        semconv::capped(s, self.max_value_length)
    }

    /// Whether anything is captured at the response head.
    pub(crate) fn has_response_extras(&self) -> bool {
        !self.response_headers.is_empty() || self.response_hook.is_some()
    }

    /// The `error.type` of an inner service's error.
    pub(crate) fn error_type<E: 'static>(&self, error: &E) -> Cow<'static, str> {
        crate::error::error_type(self.error_type.as_ref(), error)
    }

    /// Headers for `with_request_headers` / `with_response_headers`: lowercase, deduplicated,
    /// invalid names ignored.
    pub(crate) fn header_keys<I, S>(names: I, prefix: &str) -> Vec<(HeaderName, Key)>
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
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Config");
        d.field("side", &self.side)
            .field("tracer", &self.tracer)
            .field("propagator", &self.propagator)
            .field("spans", &self.spans)
            .field("meter", &self.meter)
            .field("methods", &self.methods)
            .field("filter", &self.filter.is_some())
            .field("request_headers", &self.request_headers)
            .field("response_headers", &self.response_headers)
            .field("request_hook", &self.request_hook.is_some())
            .field("response_hook", &self.response_hook.is_some())
            .field("span_name", &self.span_name.is_some())
            .field("redacted_query_keys", &self.redacted_query_keys)
            .field("error_type", &self.error_type.is_some())
            .field("labeler", &self.labeler)
            .field("max_value_length", &self.max_value_length)
            .field("sensitive_headers", &self.sensitive_headers);
        match self.side {
            Side::Server => d.field("server", &self.server),
            Side::Client => d.field("client", &self.client),
        };
        d.finish()
    }
}

/// The `with_*` methods the server and client layers share. Expanded inside each layer's
/// `impl` block, which provides `fn config_mut(&mut self) -> &mut Config`; `$side` is `server`
/// or `client` (for the docs).
macro_rules! common_builder_methods {
    ($side:literal) => {
        /// Use this tracer provider instead of the global one. A concrete provider (such as
        /// the SDK's) is also the fastest choice: spans are not boxed twice.
        pub fn with_tracer_provider<P>(mut self, provider: &P) -> Self
        where
            P: opentelemetry::trace::TracerProvider,
            P::Tracer: Send + Sync + 'static,
            <P::Tracer as opentelemetry::trace::Tracer>::Span: Send + Sync + 'static,
        {
            self.config_mut().tracer = $crate::otel::TracerSource::from_provider(provider);
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
        /// Whatever the propagator, `traceparent` is validated strictly first (an invalid one
        /// is ignored together with `tracestate`). By default the global propagator is used;
        /// when none is installed, W3C Trace Context is used for the spans this layer records.
        /// A global propagator installed later is picked up within 64 requests on each
        /// thread. The SDK's `TraceContextPropagator` (given here), and a global propagator
        /// whose fields are exactly `traceparent` and `tracestate`, are taken for W3C Trace
        /// Context: this crate reads and writes those headers itself (through its strict
        /// parser, the random-trace-id flag kept, as with any propagator), and takes no lock per
        /// request for a global one. A propagator of your own type with those two fields, given
        /// here, is always called (install it only globally and it is taken for W3C).
        pub fn with_propagator<P>(mut self, propagator: P) -> Self
        where
            P: opentelemetry::propagation::TextMapPropagator + Send + Sync + 'static,
        {
            self.config_mut().propagator = $crate::otel::PropagatorSource::fixed(propagator);
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

        #[doc = concat!("Record `http.", $side, ".active_requests` (opt-in).")]
        pub fn with_active_requests(mut self, record: bool) -> Self {
            self.config_mut().meter.options_mut().active_requests = record;
            self
        }

        #[doc = concat!("Record `http.", $side, ".response.body.size`: the bytes actually transferred (opt-in).")]
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
        pub fn with_known_methods<I, S>(mut self, methods: I) -> Self
        where
            I: IntoIterator<Item = S>,
            S: AsRef<str>,
        {
            self.config_mut().methods = $crate::semconv::KnownMethods::new(methods);
            self
        }

        /// Record these request headers as `http.request.header.<name>` (string arrays). Names
        /// are case-insensitive; invalid names are ignored. Nothing is recorded by default, and
        /// `authorization`, `proxy-authorization`, `cookie` and `set-cookie` are not recorded
        /// even when listed unless [`with_sensitive_headers`](Self::with_sensitive_headers)
        /// forces them.
        pub fn with_request_headers<I, S>(mut self, names: I) -> Self
        where
            I: IntoIterator<Item = S>,
            S: AsRef<str>,
        {
            self.config_mut().request_headers = $crate::config::Config::header_keys(
                names,
                opentelemetry_semantic_conventions::attribute::HTTP_REQUEST_HEADER,
            );
            self
        }

        /// Record these response headers as `http.response.header.<name>` (string arrays).
        pub fn with_response_headers<I, S>(mut self, names: I) -> Self
        where
            I: IntoIterator<Item = S>,
            S: AsRef<str>,
        {
            self.config_mut().response_headers = $crate::config::Config::header_keys(
                names,
                opentelemetry_semantic_conventions::attribute::HTTP_RESPONSE_HEADER,
            );
            self
        }

        /// Add attributes from the request when the span starts (samplers see them).
        pub fn with_request_attributes<F>(mut self, hook: F) -> Self
        where
            F: Fn(&http::request::Parts, &mut Vec<opentelemetry::KeyValue>)
                + Send
                + Sync
                + 'static,
        {
            self.config_mut().request_hook = Some(std::sync::Arc::new(hook));
            self
        }

        /// Add attributes from the response head.
        pub fn with_response_attributes<F>(mut self, hook: F) -> Self
        where
            F: Fn(&http::response::Parts, &mut Vec<opentelemetry::KeyValue>)
                + Send
                + Sync
                + 'static,
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
        pub fn with_redacted_query_keys<I, S>(mut self, keys: I) -> Self
        where
            I: IntoIterator<Item = S>,
            S: AsRef<str>,
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

        /// Classify the inner service's errors for `error.type`: `f` gets errors of type `E`
        /// (the service's error type) and returns a short, stable value, or `None` to leave the
        /// error to the default classification ([`error::classify`](crate::error::classify),
        /// else `_OTHER`).
        ///
        /// ```
        /// # use tower_otel_http::OtelLayer;
        /// #[derive(Debug)]
        /// enum AppError { Db, Auth }
        ///
        #[doc = concat!("let layer = OtelLayer::", $side, "().with_error_type(|e: &AppError| match e {")]
        ///     AppError::Db => Some("db"),
        ///     AppError::Auth => None,
        /// });
        /// # let _ = layer;
        /// ```
        pub fn with_error_type<E, F>(mut self, f: F) -> Self
        where
            E: 'static,
            F: Fn(&E) -> Option<&'static str> + Send + Sync + 'static,
        {
            self.config_mut().error_type = Some($crate::error::error_type_fn(f));
            self
        }
    };
}

pub(crate) use common_builder_methods;

/// The service struct of a layer and its plumbing (`Clone`, `Debug`, accessors), the same for
/// the server and the client: `$name` wraps the inner service and the layer's configuration.
macro_rules! instrumented_service {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name<S, M = $crate::request_body::Uncounted> {
            inner: S,
            /// One reference count per request is taken on it (the request's record holds it):
            /// axum clones the whole service per request anyway, so the cache line is already
            /// this core's.
            config: std::sync::Arc<$crate::config::Config>,
            _mode: std::marker::PhantomData<fn() -> M>,
        }

        impl<S: Clone, M> Clone for $name<S, M> {
            fn clone(&self) -> Self {
                Self {
                    inner: self.inner.clone(),
                    config: self.config.clone(),
                    _mode: std::marker::PhantomData,
                }
            }
        }

        impl<S: std::fmt::Debug, M> std::fmt::Debug for $name<S, M> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("inner", &self.inner)
                    .field("config", &self.config)
                    .finish()
            }
        }

        impl<S, M> $name<S, M> {
            pub(crate) fn new(inner: S, config: std::sync::Arc<$crate::config::Config>) -> Self {
                $name {
                    inner,
                    config,
                    _mode: std::marker::PhantomData,
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
    };
}

pub(crate) use instrumented_service;
