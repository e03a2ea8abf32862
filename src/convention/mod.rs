//! The conventions a request is recorded under, chosen per request when it starts: today HTTP
//! ([`http`]); the seam a second one (gRPC) plugs into.
//!
//! A convention decides what a response *means*: how a completed response is classified from
//! its status, its headers and its trailers (an HTTP `200` whose trailers say the call failed is
//! a failure under a convention that reads them), and what the span and the metrics get at the
//! end from it. The lifecycle ([`crate::lifecycle`]) hands it the response head, the trailers
//! when they arrive and asks it at the end; it never looks at a status itself.

pub(crate) mod http;

use std::borrow::Cow;

use ::http::{HeaderMap, StatusCode};
use opentelemetry::KeyValue;

/// What is convention-specific in a request's end.
pub(crate) trait Convention {
    /// Trailers arrived (the last frame of the response body).
    fn trailers(&mut self, trailers: &HeaderMap);

    /// `error.type` of a response that completed (its body ended, or it ended at its head),
    /// on a side whose first error status is `first_error`; `None`: a success.
    fn outcome(&self, status: Option<StatusCode>, first_error: u16) -> Option<Cow<'static, str>>;

    /// The status attribute the span and the metrics get at the end.
    fn status_attribute(&self, status: Option<StatusCode>) -> Option<KeyValue>;
}

/// The convention of one request (an enum: chosen per request, no allocation, no dynamic call).
#[derive(Debug)]
pub(crate) enum Conv {
    /// The HTTP semantic conventions.
    Http(http::Http),
    /// A convention of the tests: classifies from a trailer (`probe-outcome`), so that the
    /// lifecycle's trailer path is pinned before a real trailer convention exists.
    #[cfg(test)]
    Probe(probe::Probe),
}

impl Conv {
    /// The convention a request follows.
    pub(crate) fn choose(parts: &::http::request::Parts) -> Self {
        #[cfg(test)]
        if parts.extensions.get::<probe::UseProbe>().is_some() {
            return Conv::Probe(probe::Probe::default());
        }
        let _ = parts;
        Conv::Http(http::Http)
    }

    fn get(&self) -> &dyn Convention {
        match self {
            Conv::Http(c) => c,
            #[cfg(test)]
            Conv::Probe(c) => c,
        }
    }
}

impl Convention for Conv {
    fn trailers(&mut self, trailers: &HeaderMap) {
        match self {
            Conv::Http(c) => c.trailers(trailers),
            #[cfg(test)]
            Conv::Probe(c) => c.trailers(trailers),
        }
    }

    fn outcome(&self, status: Option<StatusCode>, first_error: u16) -> Option<Cow<'static, str>> {
        self.get().outcome(status, first_error)
    }

    fn status_attribute(&self, status: Option<StatusCode>) -> Option<KeyValue> {
        self.get().status_attribute(status)
    }
}

#[cfg(test)]
pub(crate) mod probe {
    use super::*;

    /// Put into a request's extensions: it follows the probe convention.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct UseProbe;

    /// Classifies from the `probe-outcome` trailer; otherwise as HTTP.
    #[derive(Debug, Default)]
    pub(crate) struct Probe {
        failed: Option<String>,
    }

    impl Convention for Probe {
        fn trailers(&mut self, trailers: &HeaderMap) {
            self.failed = trailers
                .get("probe-outcome")
                .and_then(|v| v.to_str().ok())
                .filter(|v| *v != "ok")
                .map(str::to_owned);
        }

        fn outcome(
            &self,
            status: Option<StatusCode>,
            first_error: u16,
        ) -> Option<Cow<'static, str>> {
            match &self.failed {
                Some(f) => Some(Cow::Owned(f.clone())),
                None => http::Http.outcome(status, first_error),
            }
        }

        fn status_attribute(&self, status: Option<StatusCode>) -> Option<KeyValue> {
            http::Http.status_attribute(status)
        }
    }
}
