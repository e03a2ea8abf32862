//! The `error.type` vocabulary shared by the server and the client, and how errors are classified.
//!
//! ```
//! use tower_otel_http::{error, OtelLayer};
//!
//! // `error.type` of a request whose response future was dropped before the response
//! assert_eq!(error::CANCELLED, "cancelled");
//! // an I/O timeout deep in an error's source chain
//! let e = std::io::Error::from(std::io::ErrorKind::TimedOut);
//! assert_eq!(error::classify(&e), error::TIMEOUT);
//! # let _ = OtelLayer::server();
//! ```
//!
//! `error.type` is set only when a request failed; it is a short, stable, low-cardinality value
//! (never a message, never a compiler-generated type path):
//!
//! | value | side | when |
//! |---|---|---|
//! | `"500"`, `"503"`, ... | server | the response has a 5xx status |
//! | `"404"`, `"500"`, ... | client | the response has a status ≥ 400 |
//! | `_OTHER` | both | a status outside `100..=599`, or an error nothing below classifies |
//! | [`TIMEOUT`] | both | a timeout fired inside the layer (an `io::ErrorKind::TimedOut`, tower's or tokio's `Elapsed`, hyper's or reqwest's timeout) |
//! | [`CONNECT`] | client | no connection could be made (refused, unreachable, DNS) |
//! | [`CONNECTION_CLOSED`] | both | the connection was closed or reset mid-request |
//! | [`RESPONSE_BODY`] | both | the response body failed while it was being sent or read |
//! | [`CANCELLED`] | server | the response future was dropped before the response (the client went away, an outer timeout) |
//! | [`RESPONSE_BODY_DROPPED`] | server | the response body was dropped before its end (the client went away mid-body) |
//! | [`PANIC`] | both | a panic unwound through the layer |
//! | `CANCELLED`, `DEADLINE_EXCEEDED`, `UNAVAILABLE`, ... | both | gRPC: the call's status when it is an error on that side (a server: `UNKNOWN`, `DEADLINE_EXCEEDED`, `UNIMPLEMENTED`, `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS`; a client: every status but `OK`, except a cancel the caller chose) |
//! | [`GRPC_STATUS_MISSING`] | both | gRPC: the call ended (HTTP `200`) without a `grpc-status` |
//!
//! A response that is complete at its head (`HEAD`, `1xx`, `204`, `304`, `2xx` to `CONNECT`) or
//! whose declared length (`Content-Length`, an exact size hint) has gone out is a success even if
//! its body is then dropped unpolled, as hyper does. On the client, a caller that drops the
//! request future or the response body is not an error (no `error.type`, status unset).
//!
//! An inner service's error is classified by the user's function when one is configured
//! (`with_error_type` on the server and client layers), else by [`classify`] when the error can
//! be seen as a [`std::error::Error`] (a boxed error, `std::io::Error`, hyper's and hyper-util's
//! errors, tower's and tokio's `Elapsed`, reqwest's and reqwest-middleware's errors, tonic's
//! `transport::Error` with the `tonic` feature), else `_OTHER`. A response body that fails is classified the same way, `response_body` when
//! nothing more specific is known.

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::error::Error as StdError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A timeout fired inside the layer.
pub const TIMEOUT: &str = "timeout";
/// No connection could be made.
pub const CONNECT: &str = "connect";
/// The connection was closed or reset mid-request.
pub const CONNECTION_CLOSED: &str = "connection_closed";
/// The response body failed while it was being sent (server) or read (client).
pub const RESPONSE_BODY: &str = "response_body";
/// Server: the response future was dropped before the inner service produced a response.
pub const CANCELLED: &str = "cancelled";
/// Server: the response body was dropped before its end (the status code sent is kept).
pub const RESPONSE_BODY_DROPPED: &str = "response_body_dropped";
/// A panic unwound through the layer.
pub const PANIC: &str = "panic";
/// Anything else, and status codes outside `100..=599`.
pub const OTHER: &str = "_OTHER";
/// gRPC: the call ended without a `grpc-status` (its response neither trailers-only nor ended
/// by trailers carrying one), on an HTTP `200`.
pub const GRPC_STATUS_MISSING: &str = "grpc_status_missing";

type DirectFn = dyn Fn(&dyn Any) -> Option<&'static str> + Send + Sync;
type LinkFn = dyn Fn(&(dyn StdError + 'static)) -> Option<&'static str> + Send + Sync;

/// The user's classification of an inner service's errors (`with_error_type`), type-erased.
#[derive(Clone)]
pub(crate) struct ErrorTypeFn {
    /// On the service's error itself.
    direct: Arc<DirectFn>,
    /// On one link of an error's source chain.
    link: Arc<LinkFn>,
    /// The type the function was written for.
    wants: TypeId,
    wants_name: &'static str,
    /// A warning was given: the service's errors can never be of that type.
    warned: Arc<AtomicBool>,
}

impl std::fmt::Debug for ErrorTypeFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ErrorTypeFn")
            .field(&self.wants_name)
            .finish()
    }
}

/// Wrap a typed classification function.
pub(crate) fn error_type_fn<E, F>(f: F) -> ErrorTypeFn
where
    E: StdError + 'static,
    F: Fn(&E) -> Option<&'static str> + Send + Sync + 'static,
{
    let f = Arc::new(f);
    let g = f.clone();
    ErrorTypeFn {
        direct: Arc::new(move |e: &dyn Any| e.downcast_ref::<E>().and_then(|e| f(e))),
        link: Arc::new(move |e: &(dyn StdError + 'static)| {
            e.downcast_ref::<E>().and_then(|e| g(e))
        }),
        wants: TypeId::of::<E>(),
        wants_name: std::any::type_name::<E>(),
        warned: Arc::default(),
    }
}

impl ErrorTypeFn {
    /// Warn once when neither the service's errors (`SE`) nor its response body's errors
    /// (`BE`) can ever hand the function its type: each is neither that type nor an error whose
    /// source chain this crate walks.
    pub(crate) fn check<SE: 'static, BE: 'static>(&self) {
        if self.warned.load(Ordering::Relaxed) || self.can_see::<SE>() || self.can_see::<BE>() {
            return;
        }
        if !self.warned.swap(true, Ordering::Relaxed) {
            #[cfg(feature = "tracing")]
            tracing::warn!(
                target: "tower_otel_http",
                service_error = std::any::type_name::<SE>(),
                body_error = std::any::type_name::<BE>(),
                classifies = self.wants_name,
                "with_error_type can never match: the service's errors and its response body's \
                 are of other types (behind axum the service's are Infallible: handlers answer \
                 errors with responses)"
            );
        }
    }

    fn can_see<SE: 'static>(&self) -> bool {
        let se = TypeId::of::<SE>();
        se == self.wants || (se != TypeId::of::<std::convert::Infallible>() && walks_chain(se))
    }
}

/// Whether errors of this type are seen as a [`std::error::Error`] whose chain is walked.
fn walks_chain(t: TypeId) -> bool {
    let std = [
        TypeId::of::<Box<dyn StdError + Send + Sync>>(),
        TypeId::of::<Box<dyn StdError + Send>>(),
        TypeId::of::<Box<dyn StdError>>(),
        TypeId::of::<std::io::Error>(),
    ];
    #[cfg(feature = "hyper-client")]
    if t == TypeId::of::<hyper::Error>() || t == TypeId::of::<hyper_util::client::legacy::Error>() {
        return true;
    }
    #[cfg(feature = "reqwest")]
    if t == TypeId::of::<reqwest::Error>() || t == TypeId::of::<reqwest_middleware::Error>() {
        return true;
    }
    #[cfg(feature = "tonic")]
    if t == TypeId::of::<tonic::transport::Error>() {
        return true;
    }
    std.contains(&t)
}

/// `error.type` of an inner service's error: the user's function first (on the error, then
/// along its source chain), then [`classify`] when the error can be seen as a
/// [`std::error::Error`], else `_OTHER`.
pub(crate) fn error_type<E: 'static>(user: Option<&ErrorTypeFn>, error: &E) -> Cow<'static, str> {
    let any: &dyn Any = error;
    let std = as_std_error(any);
    if let Some(user) = user {
        if let Some(t) = (user.direct)(any) {
            return Cow::Borrowed(t);
        }
        let mut link = std;
        while let Some(e) = link {
            if let Some(t) = (user.link)(e) {
                return Cow::Borrowed(t);
            }
            link = next_link(e);
        }
    }
    Cow::Borrowed(std.map_or(OTHER, classify))
}

/// The next error of a source chain: an `io::Error`'s own payload (its `source()` skips it and
/// goes on to the payload's source), else the error's source.
fn next_link<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a (dyn StdError + 'static)> {
    match e
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
    {
        Some(payload) => Some(payload),
        None => e.source(),
    }
}

/// The error as a [`std::error::Error`], for the error types this crate knows.
fn as_std_error(e: &dyn Any) -> Option<&(dyn StdError + 'static)> {
    if let Some(b) = e.downcast_ref::<Box<dyn StdError + Send + Sync>>() {
        return Some(&**b);
    }
    if let Some(b) = e.downcast_ref::<Box<dyn StdError + Send>>() {
        return Some(&**b);
    }
    if let Some(b) = e.downcast_ref::<Box<dyn StdError>>() {
        return Some(&**b);
    }
    macro_rules! known {
        ($($t:ty),* $(,)?) => {
            $(if let Some(e) = e.downcast_ref::<$t>() {
                return Some(e);
            })*
        };
    }
    known!(
        std::io::Error,
        tower::timeout::error::Elapsed,
        tokio::time::error::Elapsed
    );
    #[cfg(feature = "hyper-client")]
    known!(hyper::Error, hyper_util::client::legacy::Error);
    #[cfg(feature = "tonic")]
    known!(tonic::transport::Error);
    #[cfg(feature = "reqwest")]
    {
        known!(reqwest::Error);
        // its `source()` skips the error it wraps (`#[error(transparent)]`): unwrap it here
        match e.downcast_ref::<reqwest_middleware::Error>() {
            Some(reqwest_middleware::Error::Reqwest(e)) => return Some(e),
            Some(reqwest_middleware::Error::Middleware(e)) => return Some(e.as_ref()),
            None => {}
        }
    }
    None
}

/// Classify an error by walking its [`source`](StdError::source) chain: the first link this
/// crate recognises decides ([`CONNECT`], [`TIMEOUT`], [`CONNECTION_CLOSED`]); else a reqwest
/// body or decode error is [`RESPONSE_BODY`]; `_OTHER` when none of that applies.
///
/// ```
/// use std::io;
/// use tower_otel_http::error::{classify, TIMEOUT};
///
/// let e = io::Error::new(io::ErrorKind::TimedOut, "slow");
/// assert_eq!(classify(&e), TIMEOUT);
/// ```
#[must_use]
pub fn classify(error: &(dyn StdError + 'static)) -> &'static str {
    let mut fallback = None;
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(t) = recognise(e) {
            return t;
        }
        fallback = fallback.or_else(|| recognise_loosely(e));
        next = next_link(e);
    }
    fallback.unwrap_or(OTHER)
}

/// What an error says of itself when nothing down its chain says more: reqwest's body and
/// decode errors are [`RESPONSE_BODY`] unless their cause is known (a connection closed
/// mid-body is [`CONNECTION_CLOSED`] through reqwest as through hyper's client).
fn recognise_loosely(e: &(dyn StdError + 'static)) -> Option<&'static str> {
    #[cfg(feature = "reqwest")]
    if let Some(r) = e.downcast_ref::<reqwest::Error>() {
        if r.is_body() || r.is_decode() {
            return Some(RESPONSE_BODY);
        }
    }
    let _ = e;
    None
}

fn recognise(e: &(dyn StdError + 'static)) -> Option<&'static str> {
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        return io_kind(io.kind());
    }
    #[cfg(feature = "reqwest")]
    if let Some(r) = e.downcast_ref::<reqwest::Error>() {
        if r.is_connect() {
            return Some(CONNECT);
        }
        if r.is_timeout() {
            return Some(TIMEOUT);
        }
    }
    if e.is::<tower::timeout::error::Elapsed>() || e.is::<tokio::time::error::Elapsed>() {
        return Some(TIMEOUT);
    }
    #[cfg(feature = "hyper-client")]
    {
        if let Some(h) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            if h.is_connect() {
                // a connect timeout is a connect failure: the server was never reached
                return Some(CONNECT);
            }
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                return Some(TIMEOUT);
            }
            if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                return Some(CONNECTION_CLOSED);
            }
        }
    }
    None
}

fn io_kind(kind: std::io::ErrorKind) -> Option<&'static str> {
    use std::io::ErrorKind as K;
    Some(match kind {
        K::TimedOut => TIMEOUT,
        K::ConnectionRefused | K::AddrNotAvailable | K::HostUnreachable | K::NetworkUnreachable => {
            CONNECT
        }
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
            CONNECTION_CLOSED
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[derive(Debug)]
    struct Wrapper(io::Error);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn io_errors_by_kind_through_the_chain() {
        let refused = Wrapper(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(classify(&refused), CONNECT);
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(classify(&reset), CONNECTION_CLOSED);
        assert_eq!(classify(&io::Error::other("x")), OTHER);
    }

    #[test]
    fn boxed_and_elapsed_errors() {
        let boxed: Box<dyn StdError + Send + Sync> =
            Box::new(tower::timeout::error::Elapsed::new());
        assert_eq!(error_type(None, &boxed), TIMEOUT);
        let io = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(error_type(None, &io), TIMEOUT);
        // an io::Error's payload is a link of the chain (its `source()` skips it)
        let wrapped = io::Error::other(tower::timeout::error::Elapsed::new());
        assert_eq!(classify(&wrapped), TIMEOUT);
        // a type this crate cannot see as an error
        assert_eq!(error_type(None, &42u8), OTHER);
        assert_eq!(error_type(None, &"text"), OTHER);
    }

    #[test]
    fn the_users_function_comes_first_and_may_decline() {
        #[derive(Debug)]
        enum AppError {
            Db,
            Other,
        }
        impl std::fmt::Display for AppError {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("app")
            }
        }
        impl StdError for AppError {}
        let f = error_type_fn(|e: &AppError| match e {
            AppError::Db => Some("db"),
            AppError::Other => None,
        });
        assert_eq!(error_type(Some(&f), &AppError::Db), "db");
        assert_eq!(error_type(Some(&f), &AppError::Other), OTHER);
        // another error type: the function is not called, the default applies
        let io = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(error_type(Some(&f), &io), TIMEOUT);
        // found inside a box and along the source chain (a timeout or retry layer's BoxError)
        let boxed: Box<dyn StdError + Send + Sync> = Box::new(AppError::Db);
        assert_eq!(error_type(Some(&f), &boxed), "db");
        let wrapped: Box<dyn StdError + Send + Sync> = Box::new(io::Error::other(AppError::Db));
        assert_eq!(error_type(Some(&f), &wrapped), "db");
        // which service errors it can see
        assert!(f.can_see::<AppError>());
        assert!(f.can_see::<Box<dyn StdError + Send + Sync>>());
        assert!(!f.can_see::<std::convert::Infallible>());
        assert!(!f.can_see::<String>());
    }
}
