use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::Record;
use crate::error;

pin_project! {
    /// The response body of the server and client services.
    ///
    /// The request ends when the body reaches its end (`None`, or a frame after which
    /// [`is_end_stream`](Body::is_end_stream) is true), when its declared length
    /// (`Content-Length`, an exact size hint) has been transferred, or when it fails
    /// (`error.type` from the error, `"response_body"` when nothing more specific is known) or
    /// ends short of its declared length (`"response_body"`). Dropped before that, a server reports
    /// `error.type = "response_body_dropped"` (the client went away mid-body); a client's
    /// caller dropping it is no error. The request's context is current while the body is
    /// polled.
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        record: Option<Record>,
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn untraced(inner: B) -> Self {
        Self {
            inner,
            record: None,
        }
    }

    pub(crate) fn traced(inner: B, record: Option<Record>) -> Self {
        Self { inner, record }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("instrumented", &self.record.is_some())
            .finish_non_exhaustive()
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body,
    B::Error: 'static,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let Some(record) = this.record.as_mut() else {
            return this.inner.poll_frame(cx);
        };
        let frame = {
            let _entered = record.scope.enter();
            ready!(this.inner.as_mut().poll_frame(cx))
        };
        let end = match &frame {
            None => Some(record.short_of_declared()),
            Some(Err(e)) => Some(Some(match record.config.error_type(e) {
                t if t == error::OTHER => error::RESPONSE_BODY.into(),
                t => t,
            })),
            Some(Ok(f)) => {
                let n = f.data_ref().map_or(0, bytes::Buf::remaining);
                if record.transferred(n) {
                    Some(None)
                } else {
                    this.inner
                        .is_end_stream()
                        .then(|| record.short_of_declared())
                }
            }
        };
        if let Some(error) = end {
            // ended in place, then dropped in place: no copy of the record
            record.end(error);
            *this.record = None;
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
