use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::start::{start, Started};
use super::{stack, ResponseBody, ResponseFuture};
use crate::config::Config;
use crate::request_body::{RequestBodyMode, Uncounted};

/// The service built by [`OtelServerLayer`](super::OtelServerLayer).
///
/// `M` says whether request bodies are counted ([`Uncounted`] by default); see
/// [`RequestBodyMode`].
pub struct OtelServer<S, M = Uncounted> {
    inner: S,
    /// One reference count per request is taken on it (the request's record holds it): axum
    /// clones the whole service per request anyway, so the cache line is already this core's.
    config: Arc<Config>,
    _mode: PhantomData<fn() -> M>,
}

impl<S: Clone, M> Clone for OtelServer<S, M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
            _mode: PhantomData,
        }
    }
}

impl<S: std::fmt::Debug, M> std::fmt::Debug for OtelServer<S, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtelServer")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S, M> OtelServer<S, M> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        OtelServer {
            inner,
            config,
            _mode: PhantomData,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwrap the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, M, ReqBody, ResBody> Service<Request<ReqBody>> for OtelServer<S, M>
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
        // An outer instance already instruments this request (and we may run after routing:
        // the route is recorded for it).
        if stack::is_inner(req.extensions()) {
            return ResponseFuture::pass(self.inner.call(req.map(|b| M::wrap(b, None))), None);
        }
        let (mut parts, body) = req.into_parts();
        if !self.config.admits(&parts) {
            stack::mark(&mut parts.extensions, true);
            let req = Request::from_parts(parts, M::wrap(body, None));
            return ResponseFuture::pass(self.inner.call(req), None);
        }
        let (started, request_bytes) = start(&self.config, &mut parts, M::COUNTS);
        let req = Request::from_parts(parts, M::wrap(body, request_bytes));
        match started {
            Started::Record(record) => {
                let future = {
                    let _entered = record.scope.enter();
                    self.inner.call(req)
                };
                ResponseFuture::recorded(future, record)
            }
            Started::Pass(cx) => {
                let future = {
                    let _guard = cx.clone().map(opentelemetry::Context::attach);
                    self.inner.call(req)
                };
                ResponseFuture::pass(future, cx)
            }
        }
    }
}
