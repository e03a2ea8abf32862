//! The start of a gRPC call on the client: the `CLIENT` span named `{rpc.method}` with
//! `rpc.system.name`, `rpc.method`, `server.address`/`server.port` (the request's URI, the
//! layer's target, or `Host`); its context injected into the request's metadata;
//! `rpc.client.call.duration` (no HTTP instrument).

use std::sync::Arc;

use http::request::Parts;
use opentelemetry::trace::SpanBuilder;
use opentelemetry::{KeyValue, StringValue};
use opentelemetry_semantic_conventions::attribute as attr;

use super::{Grpc, Known, SYSTEM};
use crate::config::Config;
use crate::convention::http::client::{inject, opening, propagate_passed, Opening};
use crate::lifecycle::{Clock, Record, Started};
use crate::metrics::Measure;
use crate::semconv;
use crate::side::{Client, Start};

/// Start a gRPC call on the client: its record, or a pass-through (the current context still
/// sent on through a propagator) when nothing would be recorded.
pub(crate) fn start(config: &Arc<Config<Client>>, parts: &mut Parts) -> Start<Client> {
    let Opening {
        tracer,
        measured,
        host,
        propagate,
        parent,
    } = opening(config, parts);
    if tracer.is_none() && !measured {
        propagate_passed(config, propagate, &parent, &mut parts.headers);
        return (Started::Pass(None), None);
    }
    // the method the client calls is the method: known (a path of another shape is not one)
    let (method, well_formed) = super::method_value(parts.uri.path(), config.max_value_length);
    let known = if well_formed { Known::Yes } else { Known::No };
    let grpc = Grpc::new(method.clone(), known, super::deadline_of(&parts.headers));
    let clock = Clock::start(tracer.is_some());
    let server = host.map(|(h, port, https)| {
        (
            StringValue::from(Arc::<str>::from(h)),
            i64::from(port.unwrap_or(semconv::default_port(https))),
        )
    });
    let measure = measured.then(|| Measure::rpc(server.clone(), config.labeler));
    let cx = tracer.and_then(|tracer| {
        let mut attrs: Vec<KeyValue> = Vec::with_capacity(6 + config.request_metadata.len());
        attrs.push(KeyValue::new(attr::RPC_SYSTEM_NAME, SYSTEM));
        if well_formed {
            attrs.push(KeyValue::new(attr::RPC_METHOD, method.clone()));
        } else {
            attrs.push(KeyValue::new(attr::RPC_METHOD, super::OTHER));
            attrs.push(KeyValue::new(attr::RPC_METHOD_ORIGINAL, method.clone()));
        }
        if let Some((address, port)) = &server {
            attrs.push(KeyValue::new(attr::SERVER_ADDRESS, address.clone()));
            attrs.push(KeyValue::new(attr::SERVER_PORT, *port));
        }
        config.request_extras(parts, true, &mut attrs);
        let name = if well_formed { method.as_str() } else { SYSTEM };
        let mut builder = SpanBuilder::from_name(name.to_owned())
            .with_kind(<Client as crate::side::sealed::Rules>::KIND)
            .with_attributes(attrs);
        builder.start_time = clock.wall();
        tracer.start(builder, &parent)
    });
    let span = cx.is_some();
    inject(config, cx.as_ref(), propagate, &parent, &mut parts.headers);
    let begin = Box::new(grpc).begin(
        config.clone(),
        clock,
        cx,
        span,
        #[cfg(feature = "tracing")]
        tracing::Span::none(),
        measure,
    );
    (Record::begin(begin, &mut parts.extensions), None)
}
