//! Pre-bound instruments (feature `experimental-bound-instruments`): one bound handle per
//! attribute combination, so that recording skips the SDK's per-measurement attribute hashing.
//!
//! Only combinations made of `'static` values (methods, schemes, interned routes, status codes,
//! error types, protocol versions) are bound; a measurement with a [`Labeler`](super::Labeler)
//! attribute or an opted-in `server.address` is recorded the ordinary way. At most
//! [`MAX_BOUND`] combinations are bound per layer value; beyond that, the ordinary way.
//!
//! Requires the SDK's own `experimental_metrics_bound_instruments` feature: without it the SDK
//! does not implement binding and bound measurements would be dropped, so enable both.

use std::sync::{Arc, RwLock};

use opentelemetry::metrics::BoundHistogram;
use opentelemetry::KeyValue;

use super::instruments::ServerInstruments;
use crate::route::FnvMap;

/// Most attribute combinations bound per layer value.
pub const MAX_BOUND: usize = 4096;

fn id(s: &'static str) -> (usize, usize) {
    (s.as_ptr() as usize, s.len())
}

/// Identity of an attribute combination: `'static` strings by address.
#[derive(Clone, Copy, Hash, PartialEq, Eq)]
pub(crate) struct BoundKey {
    method: (usize, usize),
    https: bool,
    status: u16,
    route: (usize, usize),
    error: (usize, usize),
    version: (usize, usize),
}

impl BoundKey {
    pub(crate) fn new(
        method: &'static str,
        https: bool,
        status: Option<u16>,
        route: Option<&'static str>,
        error: Option<&'static str>,
        version: Option<&'static str>,
    ) -> Self {
        BoundKey {
            method: id(method),
            https,
            status: status.unwrap_or(0),
            route: route.map_or((0, 0), id),
            error: error.map_or((0, 0), id),
            version: version.map_or((0, 0), id),
        }
    }
}

pub(crate) struct BoundSet {
    pub(crate) duration: BoundHistogram<f64>,
    pub(crate) request_body_size: Option<BoundHistogram<u64>>,
    pub(crate) response_body_size: Option<BoundHistogram<u64>>,
}

#[derive(Default)]
pub(crate) struct BoundCache {
    map: RwLock<FnvMap<BoundKey, Arc<BoundSet>>>,
}

impl BoundCache {
    /// The bound set for `key`, binding it with `attrs` on first use; `None` beyond
    /// [`MAX_BOUND`] combinations.
    pub(crate) fn get(
        &self,
        key: BoundKey,
        instruments: &ServerInstruments,
        attrs: impl FnOnce() -> super::AttrList,
    ) -> Option<Arc<BoundSet>> {
        if let Some(set) = self.map.read().ok()?.get(&key) {
            return Some(set.clone());
        }
        let mut map = self.map.write().ok()?;
        if let Some(set) = map.get(&key) {
            return Some(set.clone());
        }
        if map.len() >= MAX_BOUND {
            return None;
        }
        let attrs = attrs();
        let attrs: &[KeyValue] = attrs.as_slice();
        let set = Arc::new(BoundSet {
            duration: instruments.duration.bind(attrs),
            request_body_size: instruments
                .request_body_size
                .as_ref()
                .map(|h| h.bind(attrs)),
            response_body_size: instruments
                .response_body_size
                .as_ref()
                .map(|h| h.bind(attrs)),
        });
        map.insert(key, set.clone());
        Some(set)
    }
}
