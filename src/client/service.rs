use std::task::{Context as TaskContext, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::start::{is_inner, start};
use super::ClientMarker;
use super::{ResponseBody, ResponseFuture};
use crate::lifecycle::Started;
use crate::request_body::RequestBodyMode;

crate::config::instrumented_service!(
    /// The service built by [`OtelClientLayer`](super::OtelClientLayer).
    ///
    /// `M` says whether request bodies are counted ([`Uncounted`](super::Uncounted) by default); see
    /// [`RequestBodyMode`].
    OtelClient
);

impl<S, M, ReqBody, ResBody> Service<Request<ReqBody>> for OtelClient<S, M>
where
    M: RequestBodyMode,
    S: Service<Request<M::Body<ReqBody>>, Response = Response<ResBody>>,
    S::Error: 'static,
    ResBody: http_body::Body,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if is_inner(req.extensions()) {
            return Started::Pass(None).call(&mut self.inner, req.map(|b| M::wrap(b, None)));
        }
        let (mut parts, body) = req.into_parts();
        let (started, request_bytes) = if self.config.admits(&parts) {
            start(&self.config, &mut parts, M::COUNTS)
        } else {
            (Started::Pass(None), None)
        };
        // inner instances pass it through, recorded here or filtered out
        parts.extensions.insert(ClientMarker);
        let req = Request::from_parts(parts, M::wrap(body, request_bytes));
        started.call(&mut self.inner, req)
    }
}
