use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use super::{Record, ResponseBody, Scope};
use crate::side::{Server, Side};

pin_project! {
    /// The response future of [`OtelService`](crate::OtelService), on side `S`.
    ///
    /// The request's context (its span's, or the caller's propagated one) is current and its
    /// log span entered while the inner future is polled. On an HTTP server, dropping this
    /// future before the response ends the span with `error.type = "cancelled"`; on a client,
    /// the caller dropping it is no error; a gRPC call is `CANCELLED`, an error on neither side
    /// ([`crate::grpc`]).
    pub struct ResponseFuture<F, S: Side = Server> {
        #[pin]
        inner: F,
        record: Option<Box<Record<S>>>,
        // made current while polling, and handed to the body, when no record is kept
        pass: Option<opentelemetry::Context>,
    }
}

impl<F, S: Side> ResponseFuture<F, S> {
    pub(crate) fn recorded(inner: F, record: Box<Record<S>>) -> Self {
        Self {
            inner,
            record: Some(record),
            pass: None,
        }
    }

    /// Nothing recorded; `cx` (the caller's context) made current while polling, if any.
    pub(crate) fn pass(inner: F, cx: Option<opentelemetry::Context>) -> Self {
        Self {
            inner,
            record: None,
            pass: cx,
        }
    }
}

impl<F, S: Side> std::fmt::Debug for ResponseFuture<F, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("side", &S::NAME)
            .field("instrumented", &self.record.is_some())
            .finish_non_exhaustive()
    }
}

impl<F, B, E, S> Future for ResponseFuture<F, S>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body,
    E: 'static,
    S: Side,
{
    type Output = Result<Response<ResponseBody<B, S>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.record.as_ref() {
            Some(r) => {
                let _entered = r.scope.enter();
                ready!(this.inner.poll(cx))
            }
            None => {
                let _guard = this.pass.as_ref().map(|c| c.clone().attach());
                ready!(this.inner.poll(cx))
            }
        };
        Poll::Ready(match (result, this.record.take()) {
            (Ok(response), Some(record)) => Ok(record.respond(response)),
            (Ok(response), None) => {
                let pass = this.pass.take().map(|cx| Scope::context(Some(cx)));
                Ok(response.map(|b| ResponseBody::passed(b, pass)))
            }
            (Err(e), Some(record)) => {
                record.fail(&e);
                Err(e)
            }
            (Err(e), None) => Err(e),
        })
    }
}

#[cfg(feature = "reqwest")]
pin_project! {
    /// A future polled inside a request's [`Scope`] (for `async` code, where a scope cannot be
    /// held across an `.await`).
    pub(crate) struct InScope<'a, F> {
        #[pin]
        inner: F,
        scope: &'a Scope,
    }
}

#[cfg(feature = "reqwest")]
impl<'a, F> InScope<'a, F> {
    pub(crate) fn new(inner: F, scope: &'a Scope) -> Self {
        Self { inner, scope }
    }
}

#[cfg(feature = "reqwest")]
impl<F: Future> Future for InScope<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.scope.enter();
        this.inner.poll(cx)
    }
}
