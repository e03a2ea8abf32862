use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::start::{is_inner, start};
use super::{ResponseBody, ResponseFuture};
use crate::config::Config;
use crate::request_body::{RequestBodyMode, Uncounted};

/// The service built by [`OtelClientLayer`](super::OtelClientLayer).
///
/// `M` says whether request bodies are counted ([`Uncounted`] by default); see
/// [`RequestBodyMode`].
pub struct OtelClient<S, M = Uncounted> {
    inner: S,
    config: Arc<Config>,
    _mode: PhantomData<fn() -> M>,
}

impl<S: Clone, M> Clone for OtelClient<S, M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
            _mode: PhantomData,
        }
    }
}

impl<S: std::fmt::Debug, M> std::fmt::Debug for OtelClient<S, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtelClient")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S, M> OtelClient<S, M> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        OtelClient {
            inner,
            config,
            _mode: PhantomData,
        }
    }

    /// The wrapped client.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped client, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwrap the inner client.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

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
            return ResponseFuture::pass(self.inner.call(req.map(|b| M::wrap(b, None))), None);
        }
        let (mut parts, body) = req.into_parts();
        if !self.config.admits(&parts) {
            let req = Request::from_parts(parts, M::wrap(body, None));
            return ResponseFuture::pass(self.inner.call(req), None);
        }
        let (record, request_bytes) = start(&self.config, &mut parts, M::COUNTS);
        let req = Request::from_parts(parts, M::wrap(body, request_bytes));
        match record {
            Some(record) => {
                let future = {
                    let _entered = record.scope.enter();
                    self.inner.call(req)
                };
                ResponseFuture::recorded(future, record)
            }
            None => ResponseFuture::pass(self.inner.call(req), None),
        }
    }
}
