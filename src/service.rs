//! The service of both sides, [`OtelService`], and its response future.
//!
//! ```
//! use tower::ServiceBuilder;
//! use tower_otel_http::{OtelLayer, OtelServer};
//!
//! let svc: OtelServer<_> = ServiceBuilder::new()
//!     .layer(OtelLayer::server())
//!     .service(tower::service_fn(|_req: http::Request<String>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
//!     }));
//! # let _ = svc;
//! ```
//!
//! Its response is the inner service's with the body wrapped in a
//! [`ResponseBody`](crate::body::ResponseBody); its error is the inner service's, untouched.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use http::{Request, Response};
use tower_service::Service;

use crate::body::{RequestBodyMode, ResponseBody, Uncounted};
use crate::config::Config;
pub use crate::lifecycle::ResponseFuture;
use crate::side::{Client, Server, Side};

/// The service an [`OtelLayer`](crate::OtelLayer) builds around `Inner`, on side `S`.
///
/// `M` says whether request bodies are counted ([`Uncounted`] by default; see
/// [`RequestBodyMode`]).
pub struct OtelService<Inner, S: Side = Server, M = Uncounted> {
    inner: Inner,
    /// One reference count per request is taken on it (the request's record holds it): axum
    /// clones the whole service per request anyway, so the cache line is already this core's.
    config: Arc<Config<S>>,
    _mode: PhantomData<fn() -> M>,
}

/// The server service: `OtelService<Inner, Server, M>`.
pub type OtelServer<Inner, M = Uncounted> = OtelService<Inner, Server, M>;

/// The client service: `OtelService<Inner, Client, M>`.
pub type OtelClient<Inner, M = Uncounted> = OtelService<Inner, Client, M>;

impl<Inner: Clone, S: Side, M> Clone for OtelService<Inner, S, M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
            _mode: PhantomData,
        }
    }
}

impl<Inner: fmt::Debug, S: Side, M> fmt::Debug for OtelService<Inner, S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelService")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<Inner, S: Side, M> OtelService<Inner, S, M> {
    pub(crate) fn new(inner: Inner, config: Arc<Config<S>>) -> Self {
        OtelService {
            inner,
            config,
            _mode: PhantomData,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &Inner {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut Inner {
        &mut self.inner
    }

    /// Unwrap the inner service.
    pub fn into_inner(self) -> Inner {
        self.inner
    }
}

impl<Inner, S, M, ReqBody, ResBody> Service<Request<ReqBody>> for OtelService<Inner, S, M>
where
    S: Side,
    M: RequestBodyMode,
    Inner: Service<Request<M::Body<ReqBody>>, Response = Response<ResBody>>,
    Inner::Error: 'static,
    ResBody: http_body::Body,
    ResBody::Error: 'static,
{
    type Response = Response<ResponseBody<ResBody, S>>;
    type Error = Inner::Error;
    type Future = ResponseFuture<Inner::Future, S>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        self.config
            .check_error_type::<Inner::Error, ResBody::Error>();
        let (mut parts, body) = req.into_parts();
        let (started, request_bytes) = S::start(&self.config, &mut parts, M::COUNTS);
        let req = Request::from_parts(
            parts,
            M::wrap(body, request_bytes, crate::body::sealed::Token::new()),
        );
        started.call(&mut self.inner, req)
    }
}
