use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use super::{Record, ResponseBody, Scope};

pin_project! {
    /// The response future of the server and client services.
    ///
    /// The request's context (its span's, or the caller's propagated one) is current and its
    /// log span entered while the inner future is polled. On a server, dropping this future
    /// before the response ends the span with `error.type = "cancelled"`; on a client, the
    /// caller dropping it is no error.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        record: Option<Record>,
        // made current while polling when no record is kept
        pass: Option<Scope>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn recorded(inner: F, record: Record) -> Self {
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
            pass: cx.map(|cx| Scope::context(Some(cx))),
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("instrumented", &self.record.is_some())
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body,
    E: 'static,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _entered = this
                .record
                .as_ref()
                .map(|r| &r.scope)
                .or(this.pass.as_ref())
                .map(Scope::enter);
            ready!(this.inner.poll(cx))
        };
        // the record is updated where it is and moved once, into the body
        Poll::Ready(match result {
            Ok(response) => Ok(Record::respond(this.record, response)),
            Err(e) => {
                if let Some(mut record) = this.record.take() {
                    let error_type = record.config.error_type(&e);
                    record.end(Some(error_type));
                }
                Err(e)
            }
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
