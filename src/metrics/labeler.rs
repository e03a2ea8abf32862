use std::sync::{Arc, Mutex};

use opentelemetry::KeyValue;

/// Per-request custom metric attributes, like Go otelhttp's `Labeler`.
///
/// When the layer is built with
/// [`with_labeler(true)`](crate::OtelLayer::with_labeler), every instrumented
/// request carries a `Labeler` in its extensions; attributes added to it while the request is
/// handled are appended to the attributes of its duration (and body-size) measurements.
///
/// **Cardinality is the caller's responsibility**: add only attributes with a small, fixed set of
/// values (a tenant tier, an API version), never ids, paths or user input. At most
/// [`Labeler::MAX`] attributes are kept; more are ignored.
///
/// With the `axum` feature it is also an extractor that never fails (a detached labeler when
/// the layer did not add one):
///
/// ```
/// use axum::{routing::get, Router};
/// use opentelemetry::KeyValue;
/// use tower_otel_http::{metrics::Labeler, OtelLayer};
///
/// async fn handler(labeler: Labeler) -> &'static str {
///     labeler.add(KeyValue::new("app.tier", "gold"));
///     "ok"
/// }
///
/// let app: Router = Router::new()
///     .route("/", get(handler))
///     .layer(OtelLayer::server().with_labeler(true));
/// # let _ = app;
/// ```
#[derive(Clone, Debug, Default)]
pub struct Labeler(Arc<Mutex<Vec<KeyValue>>>);

impl Labeler {
    /// The most attributes one request's labeler keeps.
    pub const MAX: usize = 8;

    /// A new, empty labeler.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Add an attribute (ignored beyond [`Labeler::MAX`]).
    pub fn add(&self, attribute: KeyValue) {
        if let Ok(mut v) = self.0.lock() {
            if v.len() < Self::MAX {
                v.push(attribute);
            }
        }
    }

    /// The attributes added so far.
    #[must_use]
    pub fn get(&self) -> Vec<KeyValue> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub(crate) fn for_each(&self, mut f: impl FnMut(&KeyValue)) {
        if let Ok(v) = self.0.lock() {
            v.iter().for_each(&mut f);
        }
    }
}

#[cfg(feature = "axum")]
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Labeler {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Labeler>()
            .cloned()
            .unwrap_or_default())
    }
}
