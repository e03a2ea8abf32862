//! The client layer as a `reqwest_middleware::Middleware` (feature `reqwest`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::Extensions;
use reqwest::ResponseBuilderExt;
use reqwest_middleware::{Middleware, Next};

use super::Attempts;
use crate::body::RequestBodyMode;
use crate::convention::http::client::start;
use crate::lifecycle::{InScope, Record, Started};
use crate::side::Client;
use crate::OtelLayer;

/// The parts of a reqwest request the client's start code reads and writes: its headers and
/// the middleware's extensions are moved in (and back out with [`restore`]), nothing copied but
/// the URL.
fn parts_of(req: &mut reqwest::Request, ext: &mut Extensions) -> Option<http::request::Parts> {
    let uri: http::Uri = req.url().as_str().parse().ok()?;
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = req.method().clone();
    parts.uri = uri;
    parts.version = req.version();
    parts.headers = std::mem::take(req.headers_mut());
    parts.extensions = std::mem::take(ext);
    Some(parts)
}

fn restore(req: &mut reqwest::Request, ext: &mut Extensions, parts: http::request::Parts) {
    *req.headers_mut() = parts.headers;
    *ext = parts.extensions;
}

/// The response with its body wrapped (the record ends when the caller has read it, or drops
/// it); what reqwest users rely on is kept: `Response::url()`, the extensions, the headers.
fn wrap_response(record: Box<Record<Client>>, response: reqwest::Response) -> reqwest::Response {
    let url = response.url().clone();
    let response: http::Response<reqwest::Body> = response.into();
    let response = record.respond(response).map(reqwest::Body::wrap);
    let (mut parts, body) = response.into_parts();
    // `Response::url()` travels in an extension only reqwest can name: rebuild it there
    if let Ok(with_url) = http::Response::builder().url(url).body(()) {
        let mut ext = with_url.into_parts().0.extensions;
        ext.extend(std::mem::take(&mut parts.extensions));
        parts.extensions = ext;
    }
    reqwest::Response::from(http::Response::from_parts(parts, body))
}

/// The mark of an instance's call in reqwest-middleware's extensions, which outlive the call
/// (reqwest-retry resends with them): it marks only while its call is in flight, so that a
/// resend after a cancelled attempt is recorded again.
#[derive(Clone, Debug)]
struct InFlight(Arc<AtomicBool>);

/// Ends an [`InFlight`] mark when the call ends, or is dropped.
struct Landed(Arc<AtomicBool>);

impl Drop for Landed {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

fn in_flight(ext: &Extensions) -> bool {
    ext.get::<InFlight>()
        .is_some_and(|f| f.0.load(Ordering::Relaxed))
}

#[async_trait::async_trait]
impl<M: RequestBodyMode> Middleware for OtelLayer<Client, M> {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        ext: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        // reqwest-retry resends with these same extensions: the count carries over
        if ext.get::<Attempts>().is_none() {
            ext.insert(Attempts::new());
        }
        // an outer instance instruments (or filtered out) this attempt
        if in_flight(ext) {
            return next.run(req, ext).await;
        }
        let flight = Arc::new(AtomicBool::new(true));
        ext.insert(InFlight(flight.clone()));
        let _landed = Landed(flight);
        let Some(mut parts) = parts_of(&mut req, ext) else {
            return next.run(req, ext).await;
        };
        let started = if self.config.admits(&parts) {
            start(&self.config, &mut parts, false).0
        } else {
            Started::Pass(None)
        };
        restore(&mut req, ext, parts);
        let Started::Record(mut record) = started else {
            return next.run(req, ext).await;
        };
        if self.config.meter.options().request_body_size {
            // the length of a body known in full (a streamed one is not counted)
            if let Some(n) = req
                .body()
                .and_then(reqwest::Body::as_bytes)
                .map(<[u8]>::len)
            {
                record.set_request_bytes(n as u64);
            }
        }
        let result = InScope::new(next.run(req, ext), record.scope()).await;
        match result {
            Ok(response) => Ok(wrap_response(record, response)),
            Err(e) => {
                record.fail(&e);
                Err(e)
            }
        }
    }
}
