//! The stacking protocol: the outermost instance of the server layer marks the request; an inner
//! instance that sees the mark passes the request through, and — running after routing —
//! records the matched route into the outer instance's route slot.
//!
//! With `Router::layer` the request already carries axum's `MatchedPath` when the outer
//! instance sees it. Wrapped around the whole `Router`, the outer instance runs *before*
//! routing: it then puts a shared route slot into the request extensions, and a route-recording
//! layer inside the router ([`RecordRouteLayer`], or a second instance of the server layer)
//! fills it after routing.

use std::sync::Arc;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use crate::route::RouteSlot;

/// The mark of the outermost server instance. Zero-sized, so inserting it does not allocate.
/// The client layer has a mark of its own: a request forwarded from a handler to a client
/// carries this one, which the client ignores.
#[derive(Clone, Copy, Debug)]
struct Marker;

/// The mark with a route slot (the outer instance runs before routing).
#[cfg(feature = "axum")]
#[derive(Clone, Debug)]
struct SlotMarker(Arc<RouteSlot>);

/// Whether an outer instance already handles this request; if so, fill its route slot from the
/// matched route (inner layers run after routing).
pub(crate) fn is_inner(ext: &http::Extensions) -> bool {
    #[cfg(feature = "axum")]
    if let Some(SlotMarker(slot)) = ext.get::<SlotMarker>() {
        if let Some(route) = crate::route::matched_route(ext) {
            slot.set(route);
        }
        return true;
    }
    ext.get::<Marker>().is_some()
}

/// Mark the request as handled; returns a route slot when the route is not known yet.
pub(crate) fn mark(ext: &mut http::Extensions, route_known: bool) -> Option<Arc<RouteSlot>> {
    #[cfg(feature = "axum")]
    if !route_known {
        let slot = Arc::new(RouteSlot::default());
        ext.insert(SlotMarker(slot.clone()));
        return Some(slot);
    }
    let _ = route_known;
    ext.insert(Marker);
    None
}

/// Records axum's `MatchedPath` into the route slot of an outer
/// [`OtelServerLayer`](crate::OtelServerLayer) that wraps the whole `Router`.
///
/// Add it with `Router::layer` (or `route_layer`) when the server layer is applied outside the
/// router, e.g. around `Router` with `ServiceBuilder`, so that spans still get the full route
/// template:
///
/// ```no_run
/// use std::net::SocketAddr;
/// use axum::{response::IntoResponse, routing::get, Router};
/// use tower::ServiceBuilder;
/// use tower_otel_http::{route::RecordRouteLayer, OtelLayer};
///
/// # #[tokio::main]
/// # async fn main() -> std::io::Result<()> {
/// let router: Router = Router::new()
///     .route("/users/{id}", get(|| async { "user" }))
///     .layer(RecordRouteLayer::new());
/// let service = ServiceBuilder::new()
///     // the layer's response body is its own type: back to axum's for `axum::serve`
///     .map_response(IntoResponse::into_response)
///     .layer(OtelLayer::server())
///     .service(router);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// let make_service = axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
///     SocketAddr,
/// >(service);
/// axum::serve(listener, make_service).await
/// # }
/// ```
///
/// (`map_response` needs tower's `util` feature.) With `Router::layer` on the root router
/// instead, none of this is needed: axum maps the body itself and the route is known.
///
/// It costs one extension lookup per request and passes the inner future through unchanged.
#[derive(Clone, Copy, Debug, Default)]
#[must_use]
pub struct RecordRouteLayer {
    _p: (),
}

impl RecordRouteLayer {
    /// A new route recorder.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for RecordRouteLayer {
    type Service = RecordRoute<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RecordRoute { inner }
    }
}

/// The service built by [`RecordRouteLayer`].
#[derive(Clone, Debug)]
pub struct RecordRoute<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for RecordRoute<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        is_inner(req.extensions());
        self.inner.call(req)
    }
}
