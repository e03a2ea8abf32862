//! Route sources and the route slot.
//!
//! With `Router::layer` the request already carries axum's
//! [`MatchedPath`](axum::extract::MatchedPath) (the full template, nest prefixes included) when
//! the layer sees it. Wrapped around the whole `Router`, the layer runs *before* routing: it then
//! puts a shared *route slot* into the request extensions, and a route-recording layer placed
//! inside the router ([`RecordRouteLayer`], or a second instance of the server layer) fills it
//! after routing. The span name and `http.route` are settled when the response comes back.
//!
//! Route templates and span names are interned (`&'static str`) so that the hot path neither
//! formats nor allocates them; the interner is bounded (see [`MAX_INTERNED_ROUTES`]) and falls
//! back to per-request allocation beyond that bound.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{OnceLock, RwLock};

/// How many distinct route templates are interned for the whole process. Route templates come
/// from the application's router, never from traffic, so real applications stay far below it;
/// beyond it names are allocated per request instead.
pub const MAX_INTERNED_ROUTES: usize = 4096;

/// FNV-1a: the keys are route templates from the application, not attacker-controlled input,
/// so a fast non-keyed hash is fine here.
#[derive(Default, Clone, Copy)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FnvMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

#[derive(Default)]
struct Interner {
    routes: FnvMap<Box<str>, RouteEntry>,
    labels: FnvMap<Box<str>, &'static str>,
}

struct RouteEntry {
    route: &'static str,
    names: Vec<(&'static str, &'static str)>,
}

fn interner() -> &'static RwLock<Interner> {
    static I: OnceLock<RwLock<Interner>> = OnceLock::new();
    I.get_or_init(Default::default)
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Intern a configuration string (method labels). Bounded by configuration, not by traffic.
pub(crate) fn intern(s: &str) -> &'static str {
    if let Some(v) = interner()
        .read()
        .ok()
        .and_then(|i| i.labels.get(s).copied())
    {
        return v;
    }
    let Ok(mut i) = interner().write() else {
        return leak(s.to_owned());
    };
    if let Some(v) = i.labels.get(s) {
        return v;
    }
    let v = leak(s.to_owned());
    i.labels.insert(s.into(), v);
    v
}

thread_local! {
    /// A per-thread mirror of the interned entries this thread has used: the hot path takes no
    /// lock shared between cores. Bounded like the interner.
    static LOCAL: std::cell::RefCell<FnvMap<Box<str>, LocalEntry>> =
        std::cell::RefCell::new(FnvMap::default());
}

struct LocalEntry {
    route: &'static str,
    names: smallvec::SmallVec<[(&'static str, &'static str); 4]>,
}

/// A front cache entry: where a matched route's text lives (axum hands every request of a route
/// the same shared string), for which method label, and what it interns to.
#[derive(Clone, Copy)]
struct Front {
    ptr: usize,
    label: &'static str,
    route: &'static str,
    name: &'static str,
}

const FRONT_SLOTS: usize = 8;

thread_local! {
    /// Direct-mapped by the address of the route's text: a hit is a few comparisons, no hashing.
    /// The text is compared too, so a reused address can never give another route's entry.
    static FRONT: [std::cell::Cell<Option<Front>>; FRONT_SLOTS] =
        const { [const { std::cell::Cell::new(None) }; FRONT_SLOTS] };
}

fn front_slot(route: &str) -> usize {
    (route.as_ptr() as usize >> 4) % FRONT_SLOTS
}

/// Whether a front cache entry answers for `route` under `label`.
fn front_matches(e: &Front, label: &'static str, route: &str) -> bool {
    e.ptr == route.as_ptr() as usize && std::ptr::eq(e.label, label) && e.route == route
}

/// The route template and the span name `"{label} {route}"`, both `'static` when interned.
pub(crate) fn route_and_name(
    label: &'static str,
    route: &str,
) -> (Cow<'static, str>, Cow<'static, str>) {
    let slot = front_slot(route);
    let front = FRONT
        .try_with(|f| f[slot].get())
        .ok()
        .flatten()
        .filter(|e| front_matches(e, label, route));
    if let Some(e) = front {
        return (Cow::Borrowed(e.route), Cow::Borrowed(e.name));
    }
    let found = route_and_name_local(label, route);
    if let (Cow::Borrowed(r), Cow::Borrowed(n)) = &found {
        let entry = Front {
            ptr: route.as_ptr() as usize,
            label,
            route: r,
            name: n,
        };
        let _ = FRONT.try_with(|f| f[slot].set(Some(entry)));
    }
    found
}

/// [`route_and_name`] through this thread's mirror of the interner.
fn route_and_name_local(
    label: &'static str,
    route: &str,
) -> (Cow<'static, str>, Cow<'static, str>) {
    let local = LOCAL.try_with(|l| {
        let l = l.try_borrow().ok()?;
        let e = l.get(route)?;
        let (_, name) = e
            .names
            .iter()
            .find(|(l, _)| std::ptr::eq(*l, label) || *l == label)?;
        Some((e.route, *name))
    });
    if let Ok(Some((r, n))) = local {
        return (Cow::Borrowed(r), Cow::Borrowed(n));
    }
    let found = route_and_name_shared(label, route);
    if let (Cow::Borrowed(r), Cow::Borrowed(n)) = &found {
        let _ = LOCAL.try_with(|l| {
            if let Ok(mut l) = l.try_borrow_mut() {
                let e = l.entry(route.into()).or_insert_with(|| LocalEntry {
                    route: r,
                    names: smallvec::SmallVec::new(),
                });
                e.names.push((label, n));
            }
        });
    }
    found
}

/// [`route_and_name`] through the process-wide interner.
fn route_and_name_shared(
    label: &'static str,
    route: &str,
) -> (Cow<'static, str>, Cow<'static, str>) {
    if let Ok(i) = interner().read() {
        if let Some(e) = i.routes.get(route) {
            if let Some((_, name)) = e.names.iter().find(|(l, _)| *l == label) {
                return (Cow::Borrowed(e.route), Cow::Borrowed(name));
            }
        }
    }
    let Ok(mut i) = interner().write() else {
        return not_interned(label, route);
    };
    if !i.routes.contains_key(route) {
        if i.routes.len() >= MAX_INTERNED_ROUTES {
            return not_interned(label, route);
        }
        let r = leak(route.to_owned());
        i.routes.insert(
            route.into(),
            RouteEntry {
                route: r,
                names: Vec::new(),
            },
        );
    }
    let Some(e) = i.routes.get_mut(route) else {
        return not_interned(label, route);
    };
    if let Some((_, name)) = e.names.iter().find(|(l, _)| *l == label) {
        return (Cow::Borrowed(e.route), Cow::Borrowed(name));
    }
    let name = leak(format!("{label} {route}"));
    e.names.push((label, name));
    (Cow::Borrowed(e.route), Cow::Borrowed(name))
}

/// Route and name allocated for this request (the interner is full or unusable).
fn not_interned(label: &str, route: &str) -> (Cow<'static, str>, Cow<'static, str>) {
    (
        Cow::Owned(route.to_owned()),
        Cow::Owned(format!("{label} {route}")),
    )
}

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

/// The mark the outermost instrumenting layer leaves in the request extensions: inner
/// instances pass a marked request through. Zero-sized, so inserting it does not allocate.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Marker;

/// Whether an outer instance already handles this request; if so, fill its route slot from the
/// matched route (inner layers run after routing).
pub(crate) fn is_marked_and_record(ext: &http::Extensions) -> bool {
    #[cfg(feature = "axum")]
    if let Some(slot) = ext.get::<SlotExt>() {
        if let Some(m) = ext.get::<axum::extract::MatchedPath>() {
            let _ = slot.0 .0.set(m.clone());
        }
        return true;
    }
    ext.get::<Marker>().is_some()
}

/// Mark the request; with a route slot when the route is not known yet.
pub(crate) fn mark(
    ext: &mut http::Extensions,
    #[cfg(feature = "axum")] slot: Option<&std::sync::Arc<RouteSlot>>,
) {
    #[cfg(feature = "axum")]
    if let Some(slot) = slot {
        ext.insert(SlotExt(slot.clone()));
        return;
    }
    ext.insert(Marker);
}

/// The mark with a route slot.
#[cfg(feature = "axum")]
#[derive(Clone, Debug)]
struct SlotExt(std::sync::Arc<RouteSlot>);

/// A route filled in after routing.
#[cfg(feature = "axum")]
#[derive(Debug, Default)]
pub(crate) struct RouteSlot(OnceLock<axum::extract::MatchedPath>);

#[cfg(feature = "axum")]
impl RouteSlot {
    pub(crate) fn get(&self) -> Option<&str> {
        self.0.get().map(|m| m.as_str())
    }
}

#[cfg(feature = "axum")]
pub use record::{RecordRoute, RecordRouteLayer};

#[cfg(feature = "axum")]
mod record {
    use std::task::{Context, Poll};

    use tower_layer::Layer;
    use tower_service::Service;

    /// Records axum's `MatchedPath` into the route slot of an outer
    /// [`OtelServerLayer`](crate::server::OtelServerLayer) that wraps the whole `Router`.
    ///
    /// Add it with `Router::layer` (or `route_layer`) when the server layer is applied outside
    /// the router, e.g. around `Router` with `ServiceBuilder`, so that spans still get the full
    /// route template:
    ///
    /// ```
    /// use axum::{routing::get, Router};
    /// use tower_otel_http::{route::RecordRouteLayer, server::OtelServerLayer};
    /// use tower_layer::Layer;
    ///
    /// let router: Router = Router::new()
    ///     .route("/users/{id}", get(|| async { "user" }))
    ///     .layer(RecordRouteLayer::new());
    /// let service = OtelServerLayer::new().layer(router);
    /// # let _ = service;
    /// ```
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
            super::is_marked_and_record(req.extensions());
            self.inner.call(req)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_interned_once() {
        let (r1, n1) = route_and_name("GET", "/interned/{id}");
        let (r2, n2) = route_and_name("GET", "/interned/{id}");
        assert_eq!(n1, "GET /interned/{id}");
        assert_eq!(r1, "/interned/{id}");
        match (n1, n2, r1, r2) {
            (Cow::Borrowed(a), Cow::Borrowed(b), Cow::Borrowed(c), Cow::Borrowed(d)) => {
                assert!(std::ptr::eq(a, b));
                assert!(std::ptr::eq(c, d));
            }
            _ => panic!("expected interned names"),
        }
        assert_eq!(
            route_and_name("POST", "/interned/{id}").1,
            "POST /interned/{id}"
        );
    }

    #[test]
    fn the_front_cache_never_answers_for_another_route_or_method() {
        // one buffer rewritten in place: the same address holds different routes in turn
        let mut buf = String::with_capacity(64);
        for label in ["GET", "DELETE"] {
            for i in 0..40 {
                buf.clear();
                buf.push_str(&format!("/front/{i}/{{id}}"));
                let (r, n) = route_and_name(label, &buf);
                assert_eq!(r, buf.as_str());
                assert_eq!(n, format!("{label} {buf}"));
            }
        }
        // the same route and address, another method
        buf.clear();
        buf.push_str("/front/0/{id}");
        assert_eq!(route_and_name("GET", &buf).1, "GET /front/0/{id}");
        assert_eq!(route_and_name("PUT", &buf).1, "PUT /front/0/{id}");
        // same text at different addresses
        let a = String::from("/front/same");
        let b = String::from("/front/same");
        assert_eq!(route_and_name("GET", &a), route_and_name("GET", &b));
    }
}
