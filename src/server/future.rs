use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use super::body::ResponseBody;
use super::state::RequestState;

pin_project! {
    /// Response future of [`OtelServer`](super::OtelServer).
    ///
    /// The span's context is current while the inner future is polled. If this future is
    /// dropped before the inner service answered (the client went away, an outer timeout
    /// fired), the span ends with `error.type = "cancelled"`.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        state: Option<RequestState>,
        // the caller's context, made current while polling when no span is recorded
        propagated: Option<opentelemetry::Context>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(
        inner: F,
        state: Option<RequestState>,
        propagated: Option<opentelemetry::Context>,
    ) -> Self {
        Self {
            inner,
            state,
            propagated,
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("instrumented", &self.state.is_some())
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let guard = this
            .state
            .as_ref()
            .and_then(|s| s.cx.as_ref())
            .or(this.propagated.as_ref())
            .map(|cx| cx.clone().attach());
        #[cfg(feature = "tracing")]
        let entered = this.state.as_ref().map(|s| s.log_span.enter());
        let result = ready!(this.inner.poll(cx));
        #[cfg(feature = "tracing")]
        drop(entered);
        drop(guard);
        // the state is updated where it is and moved once, into the body (no copies of it)
        let Some(state) = this.state.as_mut() else {
            return Poll::Ready(result.map(|r| r.map(ResponseBody::untraced)));
        };
        Poll::Ready(match result {
            Ok(response) => {
                let (response, end_now) = state.on_response(response);
                if end_now {
                    state.end(None);
                    *this.state = None;
                    Ok(response.map(ResponseBody::untraced))
                } else {
                    Ok(response.map(|b| ResponseBody::traced(b, this.state.take())))
                }
            }
            Err(e) => {
                state.end(Some(std::any::type_name::<E>()));
                *this.state = None;
                Err(e)
            }
        })
    }
}
