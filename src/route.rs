//! Route sources: where the server layer finds a request's route template.
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_otel_http::{route::RecordRouteLayer, OtelLayer};
//!
//! // the server layer around the whole router (before routing): the route is recorded for it
//! let router: Router = Router::new()
//!     .route("/users/{id}", get(|| async { "user" }))
//!     .layer(RecordRouteLayer::new());
//! let service = tower::ServiceBuilder::new().layer(OtelLayer::server()).service(router);
//! # let _ = service;
//! ```
//!
//! With `Router::layer` the request already carries axum's
//! [`MatchedPath`](axum::extract::MatchedPath) (the full template, nest prefixes included) when
//! the layer sees it. Wrapped around the whole `Router`, the layer runs *before* routing: add
//! [`RecordRouteLayer`] inside the router (or a second instance of the server layer), which
//! records the matched route for the outer instance after routing; the span name and
//! `http.route` are then settled when the response comes back.

pub use crate::server::stack::{RecordRoute, RecordRouteLayer};

/// A route filled in after routing, by an inner instance or a [`RecordRouteLayer`], for the
/// outer instance that runs before routing.
#[derive(Debug, Default)]
pub(crate) struct RouteSlot(std::sync::OnceLock<Box<str>>);

impl RouteSlot {
    pub(crate) fn get(&self) -> Option<&str> {
        self.0.get().map(|r| &**r)
    }

    /// Fill the slot (the first route recorded stays).
    #[cfg(feature = "axum")]
    pub(crate) fn set(&self, route: &str) {
        let _ = self.0.set(route.into());
    }
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

/// How many distinct route templates are interned for the whole process. Route templates come
/// from the application's router, never from traffic, so real applications stay far below it;
/// beyond it, route values and span names are allocated per request instead.
pub(crate) const MAX_INTERNED_ROUTES: usize = 4096;

/// An interned route template and its span names, one per method label.
#[derive(Clone, Default)]
struct Interned {
    route: &'static str,
    names: Vec<(&'static str, &'static str)>,
}

/// FNV-1a: the keys are route templates from the application, not input from callers, so a
/// fast unkeyed hash is fine (SipHash would cost more than the rest of the lookup).
#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
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
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type Interner = std::collections::HashMap<Box<str>, Interned, std::hash::BuildHasherDefault<Fnv>>;

thread_local! {
    /// This thread's copy of the entries it used: the hot path takes no lock shared between
    /// cores (see [`crate::otel`] on why that matters on a many-core server).
    static LOCAL: std::cell::RefCell<Interner> = std::cell::RefCell::default();
}

/// The process-wide interner, locked only when a thread meets a route (or a method of a
/// route) for the first time.
fn shared() -> &'static std::sync::Mutex<Interner> {
    static SHARED: std::sync::OnceLock<std::sync::Mutex<Interner>> = std::sync::OnceLock::new();
    SHARED.get_or_init(Default::default)
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// The route template and the span name `"{label} {route}"` as `&'static str`, so that
/// neither is formatted nor allocated per request; `None` once [`MAX_INTERNED_ROUTES`] routes
/// are interned (the caller then allocates).
pub(crate) fn interned(label: &'static str, route: &str) -> Option<(&'static str, &'static str)> {
    let found = LOCAL.try_with(|l| {
        let l = l.try_borrow().ok()?;
        let e = l.get(route)?;
        let (_, name) = e.names.iter().find(|(l, _)| *l == label)?;
        Some((e.route, *name))
    });
    if let Ok(Some(hit)) = found {
        return Some(hit);
    }
    let entry = intern_shared(label, route)?;
    let hit = (
        entry.route,
        entry.names.iter().find(|(l, _)| *l == label)?.1,
    );
    let _ = LOCAL.try_with(|l| {
        if let Ok(mut l) = l.try_borrow_mut() {
            l.insert(route.into(), entry);
        }
    });
    Some(hit)
}

/// The process-wide interner holds [`MAX_INTERNED_ROUTES`]: from then on, a route it does
/// not hold is not interned, and its lock is no longer taken (a plain load, no lock per
/// request).
static FULL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Intern `route` and its name for `label` in the process-wide interner; a copy of the entry.
fn intern_shared(label: &'static str, route: &str) -> Option<Interned> {
    use std::sync::atomic::Ordering;
    if FULL.load(Ordering::Relaxed) {
        return None;
    }
    let mut shared = shared().lock().ok()?;
    if !shared.contains_key(route) {
        if shared.len() >= MAX_INTERNED_ROUTES {
            FULL.store(true, Ordering::Relaxed);
            return None;
        }
        let entry = Interned {
            route: leak(route.to_owned()),
            names: Vec::new(),
        };
        shared.insert(route.into(), entry);
    }
    let entry = shared.get_mut(route)?;
    if !entry.names.iter().any(|(l, _)| *l == label) {
        let name = leak(format!("{label} {route}"));
        entry.names.push((label, name));
    }
    Some(entry.clone())
}

/// Whether `route` is in the process-wide interner.
#[cfg(test)]
pub(crate) fn is_interned(route: &str) -> bool {
    shared()
        .lock()
        .map(|s| s.contains_key(route))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_names_are_interned_once() {
        let (r1, n1) = interned("GET", "/interned/{id}").unwrap();
        let (r2, n2) = interned("GET", "/interned/{id}").unwrap();
        assert_eq!(n1, "GET /interned/{id}");
        assert_eq!(r1, "/interned/{id}");
        assert!(std::ptr::eq(n1, n2) && std::ptr::eq(r1, r2));
        let (r3, n3) = interned("POST", "/interned/{id}").unwrap();
        assert_eq!(n3, "POST /interned/{id}");
        assert!(std::ptr::eq(r1, r3), "one copy of the route");
        // another thread finds the same copies
        let other = std::thread::spawn(|| interned("GET", "/interned/{id}").unwrap())
            .join()
            .unwrap();
        assert!(std::ptr::eq(other.0, r1) && std::ptr::eq(other.1, n1));
    }
}
