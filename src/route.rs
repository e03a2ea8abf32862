//! Route sources: where the server layer finds a request's route template.
//!
//! With `Router::layer` the request already carries axum's
//! [`MatchedPath`](axum::extract::MatchedPath) (the full template, nest prefixes included) when
//! the layer sees it. Wrapped around the whole `Router`, the layer runs *before* routing: add
//! [`RecordRouteLayer`] inside the router (or a second instance of the server layer), which
//! records the matched route for the outer instance after routing; the span name and
//! `http.route` are then settled when the response comes back.

pub use crate::server::{RecordRoute, RecordRouteLayer};

/// The route template the framework matched for this request, when it is known.
#[cfg(feature = "axum")]
pub(crate) fn matched_route(ext: &http::Extensions) -> Option<&str> {
    ext.get::<axum::extract::MatchedPath>().map(|m| m.as_str())
}

/// The route template the framework matched for this request, when it is known.
#[cfg(not(feature = "axum"))]
pub(crate) fn matched_route(_ext: &http::Extensions) -> Option<&str> {
    None
}
