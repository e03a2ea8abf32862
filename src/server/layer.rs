use std::fmt;
use std::sync::Arc;

use http::request;

use crate::config::RequestPredicate;
use crate::response_header::{HeaderConfig, ResponseHeader};
use crate::side::Server;
use crate::OtelLayer;

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

/// Whether a request comes from an untrusted caller, for
/// [`with_public_endpoint`](OtelLayer::with_public_endpoint): a `bool` for every request, or a
/// function `Fn(&http::request::Parts) -> bool` deciding per request.
///
/// A closure's argument type has to be written out (`|req: &http::request::Parts| ...`): the
/// method takes either kind, so the compiler cannot infer it from the method alone.
pub trait PublicEndpoint: sealed::Rule {}

pub(crate) mod sealed {
    use super::*;

    /// What a setting becomes (not callable from outside).
    pub trait Rule {
        #[allow(private_interfaces)]
        fn into_rule(self) -> Public;
    }

    impl Rule for bool {
        #[allow(private_interfaces)]
        fn into_rule(self) -> Public {
            if self {
                Public::Yes
            } else {
                Public::No
            }
        }
    }

    impl<F> Rule for F
    where
        F: Fn(&request::Parts) -> bool + Send + Sync + 'static,
    {
        #[allow(private_interfaces)]
        fn into_rule(self) -> Public {
            Public::When(Arc::new(self))
        }
    }
}

impl PublicEndpoint for bool {}

impl<F> PublicEndpoint for F where F: Fn(&request::Parts) -> bool + Send + Sync + 'static {}

#[derive(Clone, Default)]
pub(crate) enum Public {
    #[default]
    No,
    Yes,
    When(RequestPredicate),
}

impl Public {
    pub(crate) fn applies(&self, parts: &request::Parts) -> bool {
        match self {
            Public::No => false,
            Public::Yes => true,
            Public::When(f) => f(parts),
        }
    }
}

/// The server-only settings.
#[derive(Clone)]
pub struct ServerOptions {
    pub(crate) public_endpoint: Public,
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
    /// The gRPC methods served (`package.Service/Method`), when the user lists them.
    pub(crate) grpc_methods: Option<Arc<std::collections::HashSet<Box<str>>>>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            public_endpoint: Public::No,
            trust_proxy_headers: false,
            https: false,
            event_stream_end: SpanEnd::LastByte,
            client_port: false,
            metrics_server_address: false,
            response_header: HeaderConfig::default(),
            log_correlation: cfg!(feature = "tracing"),
            #[cfg(feature = "tracing")]
            log_level: tracing::Level::INFO,
            grpc_methods: None,
        }
    }
}

impl fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ServerOptions");
        d.field(
            "public_endpoint",
            &match self.public_endpoint {
                Public::No => "no",
                Public::Yes => "yes",
                Public::When(_) => "predicate",
            },
        )
        .field("trust_proxy_headers", &self.trust_proxy_headers)
        .field("https", &self.https)
        .field("event_stream_end", &self.event_stream_end)
        .field("client_port", &self.client_port)
        .field("metrics_server_address", &self.metrics_server_address)
        .field("response_header", &self.response_header)
        .field("log_correlation", &self.log_correlation)
        .field("grpc_methods", &self.grpc_methods.as_ref().map(|m| m.len()));
        #[cfg(feature = "tracing")]
        d.field("log_level", &self.log_level);
        d.finish()
    }
}

/// The server's own settings; those both sides have are on `OtelLayer<S, M>`.
impl<M> OtelLayer<Server, M> {
    /// Put `server.address` / `server.port` on the metrics (opt-in in the conventions). Their
    /// values come from the request's `Host`: only enable this when something in front of the
    /// server restricts it to known hosts, or the number of series is up to the callers.
    pub fn with_metrics_server_address(mut self, record: bool) -> Self {
        self.config_mut().side.metrics_server_address = record;
        self
    }

    /// Which response header carries the server span's trace context (default
    /// `traceresponse`; see [`response_header`](crate::response_header)).
    pub fn with_response_header(mut self, header: ResponseHeader) -> Self {
        self.config_mut().side.response_header.header = header;
        self
    }

    /// Also list the trace-context response header in `access-control-expose-headers`, so
    /// that browser code may read it from cross-origin responses.
    pub fn with_response_header_cors_expose(mut self, expose: bool) -> Self {
        self.config_mut().side.response_header.expose = expose;
        self
    }

    /// Open a `tracing` span per request carrying `trace_id`, `span_id` and `trace_flags`, so
    /// that every log line of the request can be correlated with its trace (default `true`;
    /// see [`logs`](crate::logs)).
    #[cfg(feature = "tracing")]
    pub fn with_log_correlation(mut self, enabled: bool) -> Self {
        self.config_mut().side.log_correlation = enabled;
        self
    }

    /// The level of the per-request `tracing` span (default `INFO`): a subscriber that filters
    /// this level out pays only a level check.
    #[cfg(feature = "tracing")]
    pub fn with_log_level(mut self, level: tracing::Level) -> Self {
        self.config_mut().side.log_level = level;
        self
    }

    /// Whether callers are untrusted: `true` for every request, or a function deciding per
    /// request (`|req: &http::request::Parts| ...`). An untrusted caller's request starts a new
    /// trace, with the caller's context, when valid, attached as a span link; its context is
    /// never made current (so it cannot join its trace downstream either). Default `false`.
    ///
    /// ```
    /// use tower_otel_http::OtelLayer;
    ///
    /// let all = OtelLayer::server().with_public_endpoint(true);
    /// let some = OtelLayer::server()
    ///     .with_public_endpoint(|req: &http::request::Parts| req.uri.path().starts_with("/public"));
    /// # let _ = (all, some);
    /// ```
    pub fn with_public_endpoint(mut self, public: impl PublicEndpoint) -> Self {
        self.config_mut().side.public_endpoint = public.into_rule();
        self
    }

    /// Trust `Forwarded` (`for=`, `proto=`, `host=`, quoted values included) /
    /// `X-Forwarded-For` / `X-Forwarded-Proto` / `X-Forwarded-Host` for `client.address`,
    /// `url.scheme` and `server.address`/`server.port` (the host the client asked for, its port
    /// defaulting to the forwarded scheme's): the first element is taken, the original client's.
    /// A value that is not an address, a scheme or a host is ignored. Off by default: only
    /// enable behind a proxy that *replaces* these headers — one that appends to what the caller
    /// sent (nginx's `$proxy_add_x_forwarded_for`) leaves the first element to the caller.
    pub fn with_trusted_proxy_headers(mut self, trust: bool) -> Self {
        self.config_mut().side.trust_proxy_headers = trust;
        self
    }

    /// The scheme of the connection when the request does not say (`true`: `https`, for a
    /// server that terminates TLS itself). Defaults to `http`.
    pub fn with_https(mut self, https: bool) -> Self {
        self.config_mut().side.https = https;
        self
    }

    /// When the span of a `text/event-stream` response ends (default: at its last byte).
    pub fn with_event_stream_end(mut self, end: SpanEnd) -> Self {
        self.config_mut().side.event_stream_end = end;
        self
    }

    /// Record `client.port` (opt-in in the conventions).
    pub fn with_client_port(mut self, record: bool) -> Self {
        self.config_mut().side.client_port = record;
        self
    }

    /// The gRPC methods this server has (`package.Service/Method`): a call to any other is
    /// recorded with `rpc.method = _OTHER` (and `rpc.method_original`, span name `grpc`), and
    /// `rpc.method` is set when the span starts, so that samplers see it.
    ///
    /// Without a list, whether a method is known is decided at the end of the call: known only
    /// when a gRPC service answered for it (an HTTP `200` with a gRPC content-type), but not for
    /// a trailers-only `UNIMPLEMENTED` without a `grpc-message` (what tonic answers for a
    /// service or method it does not have); a call dropped before any answer is `_OTHER` too
    /// (its path is the caller's choice) — give the list to keep the method of calls that stop
    /// before answering (a passed deadline, a caller's cancel). `rpc.method` is then set at the
    /// end: the SDK appends a span attribute set twice rather than replacing it, so a
    /// provisional value set at the start would be exported beside the final one.
    ///
    /// ```
    /// use tower_otel_http::OtelLayer;
    ///
    /// let layer = OtelLayer::server()
    ///     .with_grpc_methods(["grpc.health.v1.Health/Check", "grpc.health.v1.Health/Watch"]);
    /// # let _ = layer;
    /// ```
    pub fn with_grpc_methods<I, T>(mut self, methods: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let set = methods
            .into_iter()
            .map(|m| Box::<str>::from(m.as_ref().trim_start_matches('/')))
            .collect();
        self.config_mut().side.grpc_methods = Some(Arc::new(set));
        self
    }
}
