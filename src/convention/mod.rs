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
        match self {
            Conv::Http(c) => c.outcome(status, first_error),
            #[cfg(test)]
            Conv::Probe(c) => c.outcome(status, first_error),
        }
    }

    fn status_attribute(&self, status: Option<StatusCode>) -> Option<KeyValue> {
        match self {
            Conv::Http(c) => c.status_attribute(status),
            #[cfg(test)]
            Conv::Probe(c) => c.status_attribute(status),
        }
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

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use http_body::{Body, Frame};
    use http_body_util::BodyExt;
    use opentelemetry::trace::Status;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
    use tower_layer::Layer;
    use tower_service::Service;

    use super::probe::UseProbe;
    use crate::OtelLayer;

    /// Data, then trailers: an HTTP `200` whose outcome only the trailers tell.
    struct WithTrailers(u8, &'static str);

    impl Body for WithTrailers {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
            self.0 += 1;
            Poll::Ready(match self.0 {
                1 => Some(Ok(Frame::data(bytes::Bytes::from_static(b"reply")))),
                2 => {
                    let mut t = http::HeaderMap::new();
                    t.insert("probe-outcome", http::HeaderValue::from_static(self.1));
                    Some(Ok(Frame::trailers(t)))
                }
                _ => None,
            })
        }
    }

    fn call(probe: bool, outcome: &'static str) -> SpanData {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let mut svc = OtelLayer::server()
            .with_tracer_provider(&provider)
            .with_metrics(false)
            .layer(tower::service_fn(
                move |_req: http::Request<()>| async move {
                    Ok::<_, std::convert::Infallible>(http::Response::new(WithTrailers(0, outcome)))
                },
            ));
        let mut req = http::Request::post("/svc/Method").body(()).unwrap();
        if probe {
            req.extensions_mut().insert(UseProbe);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let response = svc.call(req).await.unwrap();
            assert_eq!(response.status(), 200);
            let collected = response.into_body().collect().await.unwrap();
            let trailers = collected.trailers().cloned();
            assert_eq!(
                trailers.and_then(|t| t.get("probe-outcome").cloned()),
                Some(http::HeaderValue::from_static(outcome)),
                "the trailers reach the caller untouched"
            );
        });
        let mut spans = exporter.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 1);
        spans.remove(0)
    }

    fn error_type(span: &SpanData) -> Option<String> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == "error.type")
            .map(|kv| kv.value.to_string())
    }

    /// The lifecycle hands the trailers to the request's convention, which classifies the call:
    /// a `200` whose trailers say it failed is a failure under a convention that reads them.
    #[test]
    fn a_trailer_carried_outcome_is_classified_by_the_convention() {
        let failed = call(true, "unavailable");
        assert_eq!(error_type(&failed).as_deref(), Some("unavailable"));
        assert!(matches!(failed.status, Status::Error { .. }));
        let ok = call(true, "ok");
        assert_eq!(error_type(&ok), None);
        assert_eq!(ok.status, Status::Unset);
        // the same response under HTTP: the status decides, the trailers mean nothing
        let http = call(false, "unavailable");
        assert_eq!(error_type(&http), None);
        assert_eq!(http.status, Status::Unset);
    }
}
