use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use tower_layer::Layer;

use super::OtelClient;
use crate::config::{common_builder_methods, Config, Side};
use crate::request_body::{Counted, Uncounted};

/// A host the trace context may be sent to: exact (`api.internal`), or a domain and its
/// subdomains (`.svc.cluster.local`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct HostPattern(Box<str>);

/// An IPv6 literal without its brackets (`[::1]` → `::1`); other hosts as they are.
fn unbracketed(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

impl HostPattern {
    fn matches(&self, host: &str) -> bool {
        let host = unbracketed(host);
        let p = &*self.0;
        match p.strip_prefix('.') {
            Some(domain) => {
                host.eq_ignore_ascii_case(domain)
                    || (host.len() > p.len()
                        && host.as_bytes()[host.len() - p.len()..]
                            .eq_ignore_ascii_case(p.as_bytes()))
            }
            None => host.eq_ignore_ascii_case(p),
        }
    }
}

/// The client-only settings.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClientOptions {
    /// Hosts trace context is sent to; `None`: every host.
    propagation_hosts: Option<Vec<HostPattern>>,
    /// `url.template` on the metrics (opt-in).
    pub(crate) metrics_url_template: bool,
    /// `url.scheme` on the metrics (opt-in).
    pub(crate) metrics_url_scheme: bool,
}

impl ClientOptions {
    /// Whether trace context may be sent to `host`.
    pub(crate) fn propagates_to(&self, host: Option<&str>) -> bool {
        match (&self.propagation_hosts, host) {
            (None, _) => true,
            (Some(hosts), Some(host)) => hosts.iter().any(|p| p.matches(host)),
            (Some(_), None) => false,
        }
    }
}

/// A tower [`Layer`] that instruments an HTTP client: one `CLIENT` span per request sent,
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
/// Cloning the layer clones one [`Arc`]. The outcome of a configuration does not depend on the
/// order of the `with_*` calls. See the [module docs](crate::client) for what is recorded and
/// when.
#[must_use]
pub struct OtelClientLayer<M = Uncounted> {
    pub(crate) config: Arc<Config>,
    _mode: PhantomData<fn() -> M>,
}

impl<M> Clone for OtelClientLayer<M> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            _mode: PhantomData,
        }
    }
}

impl<M> fmt::Debug for OtelClientLayer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelClientLayer")
            .field("config", &self.config)
            .field("request_body_mode", &std::any::type_name::<M>())
            .finish()
    }
}

impl Default for OtelClientLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl OtelClientLayer {
    /// A layer with the defaults: spans and the request-duration metric; the global tracer
    /// and meter providers and propagator (resolved when requests are sent); trace context sent
    /// to every host; the conventions' known methods (or
    /// `OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS`), default query redaction, no header capture.
    pub fn new() -> Self {
        OtelClientLayer {
            config: Arc::new(Config::new(Side::Client)),
            _mode: PhantomData,
        }
    }

    /// Also record `http.client.request.body.size`: the request body is wrapped in a
    /// [`RequestBody`](super::RequestBody) that counts the bytes sent (this changes the body type
    /// the inner client gets, hence a method of its own). As a reqwest middleware, the layer
    /// counts the bodies whose bytes reqwest holds in full (not streamed ones).
    pub fn with_request_body_size(mut self) -> OtelClientLayer<Counted> {
        self.config_mut().meter.options_mut().request_body_size = true;
        OtelClientLayer {
            config: self.config,
            _mode: PhantomData,
        }
    }

    /// Every metric: duration, active requests, request and response body sizes.
    pub fn with_all_metrics(self) -> OtelClientLayer<Counted> {
        self.with_metrics(true)
            .with_active_requests(true)
            .with_response_body_size(true)
            .with_request_body_size()
    }
}

impl<M> OtelClientLayer<M> {
    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    common_builder_methods!("client");

    /// Send trace context only to these hosts: exact names (`api.internal`, an IP address), or
    /// a leading dot for a domain and its subdomains (`.svc.cluster.local`); case-insensitive.
    /// Requests to other hosts are still recorded, without `traceparent`/`tracestate`/`baggage`
    /// (and the headers of the propagator in use): none is added, and any the request carries
    /// (a proxy forwarding its caller's headers) is removed. By default trace context goes to
    /// every host.
    ///
    /// Redirects: the list is checked for every request this layer sees. A client that follows
    /// redirects *inside* the layer re-sends the headers to the next host unseen — reqwest does
    /// (its default policy follows up to 10): with a list, give reqwest a redirect policy that
    /// stops at hosts not on it (`reqwest::redirect::Policy::custom`), or none. With a tower
    /// client, put tower-http's `FollowRedirectLayer` outside this layer, so that every hop
    /// passes through it.
    pub fn with_propagation_hosts<I, S>(mut self, hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let hosts = hosts
            .into_iter()
            .map(|h| HostPattern(unbracketed(h.as_ref().trim()).to_ascii_lowercase().into()))
            .filter(|h| !h.0.is_empty())
            .collect();
        self.config_mut().client.propagation_hosts = Some(hosts);
        self
    }

    /// Put `url.template` on the metrics (opt-in in the conventions; the templates must have
    /// few values).
    pub fn with_metrics_url_template(mut self, record: bool) -> Self {
        self.config_mut().client.metrics_url_template = record;
        self
    }

    /// Put `url.scheme` on the metrics (opt-in in the conventions).
    pub fn with_metrics_url_scheme(mut self, record: bool) -> Self {
        self.config_mut().client.metrics_url_scheme = record;
        self
    }
}

impl<S, M> Layer<S> for OtelClientLayer<M> {
    type Service = OtelClient<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        // instruments are created here, once per layer value, not on the first request
        self.config.meter.init();
        OtelClient::new(inner, self.config.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        let exact = HostPattern("api.internal".into());
        assert!(exact.matches("api.internal"));
        assert!(exact.matches("API.internal"));
        assert!(!exact.matches("x.api.internal"));
        let domain = HostPattern(".svc.local".into());
        assert!(domain.matches("svc.local"));
        assert!(domain.matches("a.svc.local"));
        assert!(domain.matches("a.b.SVC.local"));
        assert!(!domain.matches("evilsvc.local"));
        assert!(!domain.matches("local"));
        let o = ClientOptions::default();
        assert!(o.propagates_to(Some("anything")) && o.propagates_to(None));
        let o = OtelClientLayer::new().with_propagation_hosts(["Api.Internal"]);
        let c = &o.config.client;
        assert!(c.propagates_to(Some("api.internal")));
        assert!(!c.propagates_to(Some("example.com")));
        assert!(!c.propagates_to(None), "an unknown host gets nothing");
        let v6 = OtelClientLayer::new().with_propagation_hosts(["::1", "[2001:db8::1]"]);
        let c = &v6.config.client;
        assert!(c.propagates_to(Some("[::1]")) && c.propagates_to(Some("::1")));
        assert!(c.propagates_to(Some("[2001:db8::1]")));
        assert!(!c.propagates_to(Some("[::2]")));
    }
}
