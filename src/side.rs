//! The side of a call a layer instruments — [`Server`] or [`Client`] — as a type.
//!
//! ```
//! use tower_otel_http::{side::{Client, Server}, OtelLayer};
//!
//! let server: OtelLayer<Server> = OtelLayer::server();
//! let client: OtelLayer<Client> = OtelLayer::client();
//! # let _ = (server, client);
//! ```
//!
//! The side is fixed when the layer is built. Every rule that differs between the two sides
//! has one implementation per side, behind the sealed [`Side`] trait: which HTTP status is an
//! error (a server's 5xx, a client's ≥ 400), what an early drop means (a server's client went
//! away: an error; a client's caller chose to stop: none), the instrument names, what happens at
//! the response head (the server adds its trace-context header, the client reads the peer and
//! the protocol version), and how a request starts. The request lifecycle is written once,
//! generic over the side; it names neither.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use http::request::Parts;
use http::Response;
use opentelemetry::trace::SpanKind;

use crate::config::Config;
use crate::lifecycle::{Record, Started};

/// The server side: [`OtelLayer::server()`](crate::OtelLayer::server).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Server;

/// The client side: [`OtelLayer::client()`](crate::OtelLayer::client).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Client;

/// The side of a call, [`Server`] or [`Client`] (sealed: these two are all there is).
pub trait Side: sealed::Rules {}

impl<T: sealed::Rules> Side for T {}

/// The names of a side's instruments.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HttpMetricNames {
    pub(crate) duration: &'static str,
    /// `rpc.*.call.duration`.
    pub(crate) rpc_duration: &'static str,
    pub(crate) active_requests: &'static str,
    pub(crate) request_body_size: &'static str,
    pub(crate) response_body_size: &'static str,
    /// `server` or `client`, for the instruments' descriptions.
    pub(crate) who: &'static str,
}

/// What a request's start hands back to the service: how it goes on, and the counter of its
/// request body's bytes when they are counted.
pub(crate) type Start<S> = (Started<S>, Option<Arc<AtomicU64>>);

pub(crate) mod sealed {
    use super::*;

    /// The rules of one side. Implemented in `server/` and `client/`; the lifecycle calls them
    /// and never asks which side it is on.
    #[allow(private_interfaces)]
    pub trait Rules: Copy + Default + fmt::Debug + Send + Sync + Sized + 'static {
        /// The settings only this side has.
        #[doc(hidden)]
        type Options: Clone + fmt::Debug + Default + Send + Sync + 'static;
        /// `server` or `client` (docs, `Debug`).
        #[doc(hidden)]
        const NAME: &'static str;
        /// The span kind.
        #[doc(hidden)]
        const KIND: SpanKind;
        /// The side, for the conventions' rules that differ by side (which status is an
        /// error, what an early drop means).
        #[doc(hidden)]
        const WHO: crate::convention::Who;
        /// The HTTP instrument names.
        #[doc(hidden)]
        const HTTP_METRICS: HttpMetricNames;
        /// The key of the request's template: `http.route` or `url.template`.
        #[doc(hidden)]
        const TEMPLATE_KEY: &'static str;
        /// `network.protocol.version` is known only at the response (the client's), so the
        /// span gets it at its end.
        #[doc(hidden)]
        const VERSION_AT_END: bool;

        /// Whether the template goes on this side's metrics.
        #[doc(hidden)]
        fn template_on_metrics(options: &Self::Options) -> bool;

        /// Start a request: read it, mark it for inner instances, choose how it goes on.
        #[doc(hidden)]
        fn start(config: &Arc<Config<Self>>, parts: &mut Parts, counts_body: bool) -> Start<Self>;

        /// The response head reaches this side's instance.
        #[doc(hidden)]
        fn head<B>(record: &mut Record<Self>, response: &mut Response<B>);

        /// Whether this side ends the request at the head of a response like this one (beyond
        /// the shapes that never carry a body).
        #[doc(hidden)]
        fn ends_at_head<B>(options: &Self::Options, response: &Response<B>) -> bool;
    }
}
