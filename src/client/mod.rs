//! HTTP client instrumentation.

use std::net::SocketAddr;

/// The client-only settings.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClientOptions {
    /// `url.template` on the metrics (opt-in).
    pub(crate) metrics_url_template: bool,
}

/// The peer of the connection a response came over (hyper-util's `HttpInfo`).
pub(crate) fn peer_of(ext: &http::Extensions) -> Option<SocketAddr> {
    #[cfg(feature = "hyper-client")]
    return ext
        .get::<hyper_util::client::legacy::connect::HttpInfo>()
        .map(|i| i.remote_addr());
    #[cfg(not(feature = "hyper-client"))]
    {
        let _ = ext;
        None
    }
}
