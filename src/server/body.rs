use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::state::RequestState;
use crate::semconv;

pin_project! {
    /// Response body of [`OtelServer`](super::OtelServer).
    ///
    /// The span ends when the body reaches its end (a frame after which
    /// [`is_end_stream`](Body::is_end_stream) is true, or `None`), fails
    /// (`error.type = "response_body_error"`), or is dropped before its end
    /// (`error.type = "response_body_dropped"`). The span's context is current while the body is
    /// polled.
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        state: Option<RequestState>,
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn untraced(inner: B) -> Self {
        Self { inner, state: None }
    }

    pub(crate) fn traced(inner: B, state: Option<RequestState>) -> Self {
        Self { inner, state }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("instrumented", &self.state.is_some())
            .finish_non_exhaustive()
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let Some(state) = this.state.as_mut() else {
            return this.inner.poll_frame(cx);
        };
        let frame = {
            let _guard = state.cx.as_ref().map(|c| c.clone().attach());
            #[cfg(feature = "tracing")]
            let _entered = state.log_span.enter();
            ready!(this.inner.as_mut().poll_frame(cx))
        };
        let end = match &frame {
            None => Some(None),
            Some(Err(_)) => Some(Some(semconv::ERROR_TYPE_BODY_ERROR)),
            Some(Ok(f)) => {
                if let Some(data) = f.data_ref() {
                    state.add_response_bytes(bytes::Buf::remaining(data));
                }
                this.inner.is_end_stream().then_some(None)
            }
        };
        if let Some(error) = end {
            // ended in place, then dropped in place: no copy of the state
            state.end(error);
            *this.state = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
