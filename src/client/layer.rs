use crate::side::Client;
use crate::OtelLayer;

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

/// The service a client calls, when its requests do not say (origin-form URIs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClientTarget {
    pub(crate) https: bool,
    /// `host[:port]` as given.
    pub(crate) authority: Box<str>,
    /// The host, an IPv6 literal without its brackets.
    pub(crate) host: Box<str>,
    pub(crate) port: Option<u16>,
}

/// The client-only settings.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Hosts trace context is sent to; `None`: every host.
    propagation_hosts: Option<Vec<HostPattern>>,
    /// The service called, for requests without an authority in their URI.
    pub(crate) target: Option<ClientTarget>,
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

/// The client's own settings; those both sides have are on `OtelLayer<S, M>`.
impl<M> OtelLayer<Client, M> {
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
    pub fn with_propagation_hosts<I, T>(mut self, hosts: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let hosts = hosts
            .into_iter()
            .map(|h| HostPattern(unbracketed(h.as_ref().trim()).to_ascii_lowercase().into()))
            .filter(|h| !h.0.is_empty())
            .collect();
        self.config_mut().side.propagation_hosts = Some(hosts);
        self
    }

    /// The service this client calls, for requests whose URI has no authority: a tonic
    /// `Channel` is built from an `Endpoint` and its generated clients send origin-form
    /// requests (`/package.Service/Method`), the origin added inside the channel where this
    /// layer cannot see it. `server.address`/`server.port` (and an HTTP request's `url.full`)
    /// come from the request's URI when it is absolute, else from this target, else from the
    /// `Host` header (`url.full` is then left out: the scheme is not known). A URI without an
    /// authority is ignored.
    ///
    /// ```
    /// use tower_otel_http::OtelLayer;
    ///
    /// let layer = OtelLayer::client().with_target("http://inventory.svc:50051".parse().unwrap());
    /// # let _ = layer;
    /// ```
    pub fn with_target(mut self, target: http::Uri) -> Self {
        let https = target.scheme() == Some(&http::uri::Scheme::HTTPS);
        self.config_mut().side.target = target.authority().map(|a| ClientTarget {
            https,
            authority: a.as_str().into(),
            host: unbracketed(a.host()).into(),
            port: a.port_u16(),
        });
        self
    }

    /// Put `url.template` on the metrics (opt-in in the conventions; the templates must have
    /// few values).
    pub fn with_metrics_url_template(mut self, record: bool) -> Self {
        self.config_mut().side.metrics_url_template = record;
        self
    }

    /// Put `url.scheme` on the metrics (opt-in in the conventions).
    pub fn with_metrics_url_scheme(mut self, record: bool) -> Self {
        self.config_mut().side.metrics_url_scheme = record;
        self
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
        let o = OtelLayer::client().with_propagation_hosts(["Api.Internal"]);
        let c = &o.config.side;
        assert!(c.propagates_to(Some("api.internal")));
        assert!(!c.propagates_to(Some("example.com")));
        assert!(!c.propagates_to(None), "an unknown host gets nothing");
        let v6 = OtelLayer::client().with_propagation_hosts(["::1", "[2001:db8::1]"]);
        let c = &v6.config.side;
        assert!(c.propagates_to(Some("[::1]")) && c.propagates_to(Some("::1")));
        assert!(c.propagates_to(Some("[2001:db8::1]")));
        assert!(!c.propagates_to(Some("[::2]")));
    }
}
