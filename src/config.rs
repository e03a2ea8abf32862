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
use crate::side::sealed::Rules;
use crate::side::Side;

pub(crate) type RequestPredicate = Arc<dyn Fn(&request::Parts) -> bool + Send + Sync>;
pub(crate) type RequestHook = Arc<dyn Fn(&request::Parts, &mut Vec<KeyValue>) + Send + Sync>;
pub(crate) type ResponseHook = Arc<dyn Fn(&response::Parts, &mut Vec<KeyValue>) + Send + Sync>;
pub(crate) type SpanNameFn = Arc<dyn Fn(&Method, Option<&str>) -> String + Send + Sync>;

/// The settings of one layer value; `S` is its side.
pub(crate) struct Config<S: Rules> {
    pub(crate) tracer: TracerSource,
    pub(crate) propagator: PropagatorSource,
    pub(crate) spans: bool,
    pub(crate) meter: MeterSource,
    pub(crate) methods: KnownMethods,
    pub(crate) filter: Option<RequestPredicate>,
    pub(crate) request_headers: Vec<(HeaderName, Key)>,
    pub(crate) response_headers: Vec<(HeaderName, Key)>,
    /// The request-header allow-list's names as gRPC metadata (`rpc.request.metadata.<key>`).
    pub(crate) request_metadata: Vec<(HeaderName, Key)>,
    /// The response-header allow-list's names as gRPC metadata (`rpc.response.metadata.<key>`),
    /// from the response headers and trailers.
    pub(crate) response_metadata: Vec<(HeaderName, Key)>,
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
    /// The settings only this side has.
    pub(crate) side: S::Options,
}

impl<S: Side> Clone for Config<S> {
    fn clone(&self) -> Self {
        Config {
            tracer: self.tracer.clone(),
            propagator: self.propagator.clone(),
            spans: self.spans,
            meter: self.meter.clone(),
            methods: self.methods.clone(),
            filter: self.filter.clone(),
            request_headers: self.request_headers.clone(),
            response_headers: self.response_headers.clone(),
            request_metadata: self.request_metadata.clone(),
            response_metadata: self.response_metadata.clone(),
            request_hook: self.request_hook.clone(),
            response_hook: self.response_hook.clone(),
            span_name: self.span_name.clone(),
            redacted_query_keys: self.redacted_query_keys.clone(),
            error_type: self.error_type.clone(),
            labeler: self.labeler,
            max_value_length: self.max_value_length,
            sensitive_headers: self.sensitive_headers,
            side: self.side.clone(),
        }
    }
}

/// The comma-separated header names of an environment variable (`None` when unset or empty).
fn env_names(var: &str) -> Option<Vec<String>> {
    let v = std::env::var(var).ok()?;
    let names: Vec<String> = v
        .split(',')
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    (!names.is_empty()).then_some(names)
}

/// The header and metadata allow-lists the environment gives a side (the variables the other
/// OpenTelemetry HTTP and gRPC instrumentations read, the Java agent's names):
/// `OTEL_INSTRUMENTATION_HTTP_{SERVER,CLIENT}_CAPTURE_{REQUEST,RESPONSE}_HEADERS` and
/// `OTEL_INSTRUMENTATION_GRPC_CAPTURE_METADATA_{SERVER,CLIENT}_{REQUEST,RESPONSE}`. Settings
/// given in code replace them.
pub(crate) struct EnvCaptures {
    pub(crate) request_headers: Vec<(HeaderName, Key)>,
    pub(crate) response_headers: Vec<(HeaderName, Key)>,
    pub(crate) request_metadata: Vec<(HeaderName, Key)>,
    pub(crate) response_metadata: Vec<(HeaderName, Key)>,
}

impl EnvCaptures {
    pub(crate) fn read(side: &str) -> Self {
        use opentelemetry_semantic_conventions::attribute as attr;
        let side = side.to_ascii_uppercase();
        let list = |var: String, prefix: &str| {
            env_names(&var).map_or_else(Vec::new, |names| header_keys(&names, prefix))
        };
        EnvCaptures {
            request_headers: list(
                format!("OTEL_INSTRUMENTATION_HTTP_{side}_CAPTURE_REQUEST_HEADERS"),
                attr::HTTP_REQUEST_HEADER,
            ),
            response_headers: list(
                format!("OTEL_INSTRUMENTATION_HTTP_{side}_CAPTURE_RESPONSE_HEADERS"),
                attr::HTTP_RESPONSE_HEADER,
            ),
            request_metadata: list(
                format!("OTEL_INSTRUMENTATION_GRPC_CAPTURE_METADATA_{side}_REQUEST"),
                attr::RPC_REQUEST_METADATA,
            ),
            response_metadata: list(
                format!("OTEL_INSTRUMENTATION_GRPC_CAPTURE_METADATA_{side}_RESPONSE"),
                attr::RPC_RESPONSE_METADATA,
            ),
        }
    }
}

impl<S: Side> Config<S> {
    pub(crate) fn new() -> Self {
        let env = EnvCaptures::read(S::NAME);
        Config {
            tracer: TracerSource::Global,
            propagator: PropagatorSource::Global,
            spans: true,
            meter: MeterSource::new(S::HTTP_METRICS),
            methods: KnownMethods::from_env_or_default(),
            filter: None,
            request_headers: env.request_headers,
            response_headers: env.response_headers,
            request_metadata: env.request_metadata,
            response_metadata: env.response_metadata,
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
            side: Default::default(),
        }
    }

    /// Whether the filter lets this request be instrumented.
    pub(crate) fn admits(&self, parts: &request::Parts) -> bool {
        self.filter.as_ref().is_none_or(|f| f(parts))
    }

    /// The span name: the user's function, else `"{method} {template}"` or `"{method}"`.
    ///
    /// The user's function runs contained: when it panics, the default name is used (and the
    /// panic is reported by the panic hook as usual); while the thread is already unwinding
    /// (the request's record is dropped by a panic), it does not run at all — a second panic
    /// would abort the process.
    pub(crate) fn span_name(
        &self,
        method: &Method,
        label: &'static str,
        template: Option<&str>,
    ) -> Cow<'static, str> {
        if let Some(f) = &self.span_name {
            if !std::thread::panicking() {
                let named =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(method, template)));
                if let Ok(name) = named {
                    return Cow::Owned(name);
                }
            }
        }
        match template {
            Some(t) => {
                let mut name = String::with_capacity(label.len() + 1 + t.len());
                name.push_str(label);
                name.push(' ');
                name.push_str(t);
                Cow::Owned(name)
            }
            None => Cow::Borrowed(label),
        }
    }

    /// The attributes the user's request hook and header allow-list add at the start (`rpc`:
    /// the allow-listed headers as gRPC request metadata).
    pub(crate) fn request_extras(
        &self,
        parts: &request::Parts,
        rpc: bool,
        attrs: &mut Vec<KeyValue>,
    ) {
        semconv::capture_headers(
            &parts.headers,
            if rpc {
                &self.request_metadata
            } else {
                &self.request_headers
            },
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
        rpc: bool,
        attrs: &mut Vec<KeyValue>,
    ) -> http::Response<B> {
        semconv::capture_headers(
            response.headers(),
            if rpc {
                &self.response_metadata
            } else {
                &self.response_headers
            },
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
        !self.response_headers.is_empty()
            || !self.response_metadata.is_empty()
            || self.response_hook.is_some()
    }

    /// Warn once when the user's `with_error_type` can never see the inner service's errors
    /// (`SE`) nor its response body's (`BE`).
    pub(crate) fn check_error_type<SE: 'static, BE: 'static>(&self) {
        if let Some(f) = &self.error_type {
            f.check::<SE, BE>();
        }
    }

    /// The `error.type` of an inner service's error.
    pub(crate) fn error_type<E: 'static>(&self, error: &E) -> Cow<'static, str> {
        crate::error::error_type(self.error_type.as_ref(), error)
    }
}

impl<S: Side> fmt::Debug for Config<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Config");
        d.field("side", &S::NAME)
            .field("tracer", &self.tracer)
            .field("propagator", &self.propagator)
            .field("spans", &self.spans)
            .field("meter", &self.meter)
            .field("methods", &self.methods)
            .field("filter", &self.filter.is_some())
            .field("request_headers", &self.request_headers)
            .field("response_headers", &self.response_headers)
            .field("request_metadata", &self.request_metadata)
            .field("response_metadata", &self.response_metadata)
            .field("request_hook", &self.request_hook.is_some())
            .field("response_hook", &self.response_hook.is_some())
            .field("span_name", &self.span_name.is_some())
            .field("redacted_query_keys", &self.redacted_query_keys)
            .field("error_type", &self.error_type.is_some())
            .field("labeler", &self.labeler)
            .field("max_value_length", &self.max_value_length)
            .field("sensitive_headers", &self.sensitive_headers)
            .field(S::NAME, &self.side);
        d.finish()
    }
}

/// Headers for `with_request_headers` / `with_response_headers`: lowercase, deduplicated,
/// invalid names ignored.
pub(crate) fn header_keys<I, T>(names: I, prefix: &str) -> Vec<(HeaderName, Key)>
where
    I: IntoIterator<Item = T>,
    T: AsRef<str>,
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
