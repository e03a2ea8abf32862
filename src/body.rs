//! The body types of the layers: the response body every instrumented response carries
//! ([`ResponseBody`]), and request-body counting ([`RequestBodyMode`]).
//!
//! ```
//! use tower_otel_http::{body::Counted, OtelLayer, OtelServerLayer};
//!
//! // request bodies counted for `http.server.request.body.size`: the inner service then
//! // gets `RequestBody<B>` instead of `B`
//! let layer: OtelServerLayer<Counted> = OtelLayer::server().with_counted_request_bodies();
//! # let _ = layer;
//! ```
//!
//! The request ends with its response body: [`ResponseBody`] says when.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pub use crate::lifecycle::ResponseBody;

pub(crate) mod sealed {
    use super::*;

    /// What the layer does with a request body in each mode (`wrap` takes a [`Token`] only the
    /// crate can make: not callable from outside).
    pub trait Mode {
        fn wrap<B>(body: B, counter: Option<Arc<AtomicU64>>, _: Token) -> super::BodyOf<Self, B>
        where
            Self: super::RequestBodyMode;
        const COUNTS: bool;
    }

    /// Made only inside the crate.
    #[derive(Debug)]
    pub struct Token(());

    impl Token {
        pub(crate) fn new() -> Self {
            Token(())
        }
    }
}

type BodyOf<M, B> = <M as RequestBodyMode>::Body<B>;

/// Whether a layer counts request-body bytes (read by the server's inner service, or sent by
/// the client's).
///
/// Counting wraps the request body, which changes the body type the inner service sees, so it
/// is chosen at the type level: [`Uncounted`] (the default: the inner service gets the request
/// body untouched) or [`Counted`] (set by
/// [`with_counted_request_bodies`](crate::OtelLayer::with_counted_request_bodies)). Keeping the
/// default body type is what lets the layer sit anywhere without changing types (a tonic
/// `Channel`, say, only takes its own body type).
pub trait RequestBodyMode: sealed::Mode + Send + Sync + 'static {
    /// The request body type the inner service receives.
    type Body<B>;
}

/// Request bodies are passed through untouched (the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct Uncounted;

/// Request bodies are wrapped in [`RequestBody`], which counts the bytes read.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counted;

impl RequestBodyMode for Uncounted {
    type Body<B> = B;
}

impl sealed::Mode for Uncounted {
    fn wrap<B>(body: B, _counter: Option<Arc<AtomicU64>>, _: sealed::Token) -> B {
        body
    }
    const COUNTS: bool = false;
}

impl RequestBodyMode for Counted {
    type Body<B> = RequestBody<B>;
}

impl sealed::Mode for Counted {
    fn wrap<B>(body: B, counter: Option<Arc<AtomicU64>>, _: sealed::Token) -> RequestBody<B> {
        RequestBody {
            inner: body,
            counter,
        }
    }
    const COUNTS: bool = true;
}

pin_project! {
    /// A request body that counts the bytes read from it.
    pub struct RequestBody<B> {
        #[pin]
        inner: B,
        counter: Option<Arc<AtomicU64>>,
    }
}

impl<B> std::fmt::Debug for RequestBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody")
            .field("counted", &self.counter.is_some())
            .finish_non_exhaustive()
    }
}

impl<B: Body> Body for RequestBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = this.inner.poll_frame(cx);
        if let (Poll::Ready(Some(Ok(f))), Some(counter)) = (&frame, this.counter.as_ref()) {
            if let Some(data) = f.data_ref() {
                counter.fetch_add(bytes::Buf::remaining(data) as u64, Ordering::Relaxed);
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
