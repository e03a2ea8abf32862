//! The conventions a request is recorded under, chosen per request when it starts: HTTP
//! ([`http`]) and gRPC ([`grpc`], a request whose `content-type` is `application/grpc…`).
//!
//! A convention decides what a response *means*: how a completed response is classified from
//! its status, its headers and its trailers (an HTTP `200` whose trailers say the call failed is
//! a failure under a convention that reads them), how a call that stopped early is recorded,
//! and what the span and the metrics get at the end from it. The lifecycle
//! ([`crate::lifecycle`]) hands it the response head, the trailers when they arrive and asks it
//! at the end; it never looks at a status itself.

pub(crate) mod grpc;
pub(crate) mod http;

use std::borrow::Cow;
use std::time::Duration;

use ::http::{HeaderMap, StatusCode};
use opentelemetry::trace::SpanRef;
use opentelemetry::KeyValue;

/// The side a request is classified for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Who {
    Server,
    Client,
}

/// How a request's record ends.
#[derive(Debug)]
pub(crate) enum Ending {
    /// The response completed: at its head, or its body ended (with the body's failure, or its
    /// falling short of its declared length, when there was one).
    Completed(Option<Cow<'static, str>>),
    /// The record was dropped before the end: the response future or the body (a server's
    /// client went away, a client's caller stopped), `head_seen`: after the response head.
    Dropped { head_seen: bool },
    /// The inner service failed (its error's `error.type`).
    Failed(Cow<'static, str>),
    /// A panic unwound through the layer.
    Panicked,
}

/// What is convention-specific in a request's end.
pub(crate) trait Convention {
    /// The response head.
    fn head(&mut self, _status: StatusCode, _headers: &HeaderMap) {}

    /// Trailers arrived (the last frame of the response body).
    fn trailers(&mut self, trailers: &HeaderMap);

    /// Whether the convention reads the response body's bytes ([`Convention::data`]).
    fn reads_data(&self) -> bool {
        false
    }

    /// Bytes of the response body, in order (only when [`Convention::reads_data`]).
    fn data(&mut self, _bytes: &[u8]) {}

    /// Some of the response body's bytes could not be handed to [`Convention::data`].
    fn data_gap(&mut self) {}

    /// Whether the request is complete once the response body's declared length
    /// (`Content-Length`, an exact size hint) has gone out (hyper stops polling then): HTTP's
    /// yes; not where the result comes in the trailers after the body.
    fn ends_at_declared_length(&self) -> bool {
        true
    }

    /// `error.type` of the request as it ended on `who`'s side (`status`: the response's, when
    /// there was one; `elapsed`: since the start); `None`: a success. Called once, before the
    /// attributes below are asked for.
    fn outcome(
        &mut self,
        who: Who,
        status: Option<StatusCode>,
        ending: &Ending,
        elapsed: Duration,
    ) -> Option<Cow<'static, str>>;

    /// The status attribute the span and the metrics get at the end.
    fn status_attribute(&self, status: Option<StatusCode>) -> Option<KeyValue>;

    /// What the span gets at its end beyond the status and `error.type` (a late name, late
    /// attributes).
    fn end_span(&self, _span: &SpanRef<'_>) {}

    /// What the measurements get at the end beyond the status and `error.type`.
    fn metric_attributes(&self, _out: &mut dyn FnMut(KeyValue)) {}

    /// An RPC convention: the RPC instruments, no HTTP attributes (protocol version, route).
    fn is_rpc(&self) -> bool {
        false
    }
}

/// The convention of one request (an enum: chosen per request, no dynamic call).
#[derive(Debug)]
pub(crate) enum Conv {
    /// The HTTP semantic conventions.
    Http(http::Http),
    /// The gRPC semantic conventions (boxed: the HTTP variant stays small).
    Grpc(Box<grpc::Grpc>),
    /// A convention of the tests: classifies from a trailer (`probe-outcome`), so that the
    /// lifecycle's trailer path is pinned independently of gRPC.
    #[cfg(test)]
    Probe(probe::Probe),
}

impl Conv {
    /// The HTTP convention, or the tests' probe when the request asks for it.
    pub(crate) fn http(parts: &::http::request::Parts) -> Self {
        #[cfg(test)]
        if parts.extensions.get::<probe::UseProbe>().is_some() {
            return Conv::Probe(probe::Probe::default());
        }
        let _ = parts;
        Conv::Http(http::Http)
    }
}

macro_rules! each {
    ($self:ident, $c:ident => $e:expr) => {
        match $self {
            Conv::Http($c) => $e,
            Conv::Grpc($c) => $e,
            #[cfg(test)]
            Conv::Probe($c) => $e,
        }
    };
}

impl Convention for Conv {
    fn head(&mut self, status: StatusCode, headers: &HeaderMap) {
        each!(self, c => c.head(status, headers))
    }

    fn trailers(&mut self, trailers: &HeaderMap) {
        each!(self, c => c.trailers(trailers))
    }

    fn reads_data(&self) -> bool {
        each!(self, c => c.reads_data())
    }

    fn data(&mut self, bytes: &[u8]) {
        each!(self, c => c.data(bytes))
    }

    fn data_gap(&mut self) {
        each!(self, c => c.data_gap())
    }

    fn ends_at_declared_length(&self) -> bool {
        each!(self, c => c.ends_at_declared_length())
    }

    fn outcome(
        &mut self,
        who: Who,
        status: Option<StatusCode>,
        ending: &Ending,
        elapsed: Duration,
    ) -> Option<Cow<'static, str>> {
        each!(self, c => c.outcome(who, status, ending, elapsed))
    }

    fn status_attribute(&self, status: Option<StatusCode>) -> Option<KeyValue> {
        each!(self, c => c.status_attribute(status))
    }

    fn end_span(&self, span: &SpanRef<'_>) {
        each!(self, c => c.end_span(span))
    }

    fn metric_attributes(&self, out: &mut dyn FnMut(KeyValue)) {
        each!(self, c => c.metric_attributes(out))
    }

    fn is_rpc(&self) -> bool {
        each!(self, c => c.is_rpc())
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
            &mut self,
            who: Who,
            status: Option<StatusCode>,
            ending: &Ending,
            elapsed: std::time::Duration,
        ) -> Option<Cow<'static, str>> {
            match &self.failed {
                Some(f) => Some(Cow::Owned(f.clone())),
                None => http::Http.outcome(who, status, ending, elapsed),
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
