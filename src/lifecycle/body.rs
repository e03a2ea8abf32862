use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::{Record, Scope};
use crate::convention::Ending;
use crate::error;
use crate::side::{Server, Side};

pin_project! {
    /// The response body of [`OtelService`](crate::OtelService), on side `S`.
    ///
    /// The request ends when the body reaches its end (`None`, trailers — the last frame, which
    /// the request's convention reads — or a frame after which
    /// [`is_end_stream`](Body::is_end_stream) is true), when its declared length
    /// (`Content-Length`, an exact size hint) has been transferred (HTTP: a gRPC call's result
    /// comes in the trailers after it), or when it fails (`error.type` from the error,
    /// `"response_body"` when nothing more specific is known) or ends short of its declared
    /// length (`"response_body"`). Dropped before that, an HTTP server reports
    /// `error.type = "response_body_dropped"` (the client went away mid-body); a client's caller
    /// dropping it is no error; a gRPC call is `CANCELLED`, an error on neither side
    /// ([`crate::grpc`]). The request's context is current while the body
    /// is polled — the caller's, when the request was passed through unrecorded, and still the
    /// request's when the body is polled after the request ended. A body with a declared length
    /// ends at its last declared byte (hyper polls no further on HTTP/1.1): trailers after it are
    /// not read — under HTTP's convention they decide nothing.
    pub struct ResponseBody<B, S: Side = Server> {
        #[pin]
        inner: B,
        record: Option<Box<Record<S>>>,
        // entered while polling when no record is kept: the caller's context, or the ended
        // request's (a body that goes on after its request ended at the head or at its declared
        // length still runs in it)
        pass: Option<Scope>,
    }
}

impl<B, S: Side> ResponseBody<B, S> {
    /// Nothing recorded (any more); `scope` entered while the body is polled.
    pub(crate) fn passed(inner: B, scope: Option<Scope>) -> Self {
        Self {
            inner,
            record: None,
            pass: scope,
        }
    }

    pub(crate) fn traced(inner: B, record: Box<Record<S>>) -> Self {
        Self {
            inner,
            record: Some(record),
            pass: None,
        }
    }
}

impl<B, S: Side> std::fmt::Debug for ResponseBody<B, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("side", &S::NAME)
            .field("instrumented", &self.record.is_some())
            .finish_non_exhaustive()
    }
}

impl<B, S> Body for ResponseBody<B, S>
where
    B: Body,
    B::Error: 'static,
    S: Side,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let Some(record) = this.record.as_mut() else {
            let _entered = this.pass.as_ref().map(Scope::enter);
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
            Some(Ok(f)) => match f.trailers_ref() {
                Some(trailers) => {
                    // the last frame: the body ends here
                    record.trailers(trailers);
                    Some(record.short_of_declared())
                }
                None => {
                    let full = f.data_ref().is_some_and(|d| record.transferred(d));
                    if full {
                        Some(None)
                    } else {
                        this.inner
                            .is_end_stream()
                            .then(|| record.short_of_declared())
                    }
                }
            },
        };
        if let Some(error) = end {
            record.end(Ending::Completed(error));
            let more = matches!(&frame, Some(Ok(f)) if f.is_data());
            if more && !this.inner.is_end_stream() {
                // more may be polled (trailers, an end the body signals late): in the scope
                *this.pass = Some(record.take_scope());
            }
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
