//! The start of a gRPC call on the server: the `SERVER` span named `{rpc.method}` with
//! `rpc.system.name`, `server.address`/`server.port` (from `:authority`), `network.peer.*` and
//! `client.address`; `rpc.server.call.duration` (no HTTP instrument); the log span; the mark
//! for inner instances.

use std::sync::Arc;

use http::request::Parts;
use opentelemetry::trace::SpanBuilder;
use opentelemetry::KeyValue;
use opentelemetry_semantic_conventions::attribute as attr;

use super::{Grpc, Known, OTHER, SYSTEM};
use crate::config::Config;
use crate::convention::http::server::{
    caller_context, connection_attributes, start_server_span, Connection,
};
use crate::lifecycle::{Clock, Record, Started};
use crate::metrics::Measure;
use crate::server::stack;
use crate::side::{Server, Start};

/// Start a gRPC call on the server: its record, or a pass-through when nothing would be
/// recorded.
pub(crate) fn start(config: &Arc<Config<Server>>, parts: &mut Parts) -> Start<Server> {
    let tracer = config.tracer.resolve().filter(|_| config.spans);
    let measured = config.meter.starts();
    let public = config.side.public_endpoint.applies(parts);
    if tracer.is_none() && !measured {
        return (Started::Pass(caller_context(config, parts, public)), None);
    }
    let (method, well_formed) = super::method_value(parts.uri.path(), config.max_value_length);
    let known = match (&config.side.grpc_methods, well_formed) {
        (_, false) => Known::No,
        (Some(list), true) if list.contains(method.as_str()) => Known::Yes,
        (Some(_), true) => Known::No,
        (None, true) => Known::Later,
    };
    let grpc = Grpc::new(method.clone(), known, super::deadline_of(&parts.headers));
    let clock = Clock::start(tracer.is_some());
    let conn = Connection::read(
        config,
        parts,
        tracer.is_some() || config.side.metrics_server_address,
    );
    let measure = measured.then(|| {
        Measure::rpc(
            conn.host
                .clone()
                .filter(|_| config.side.metrics_server_address),
            config.labeler,
        )
    });
    let cx = tracer.and_then(|tracer| {
        let name = match known {
            Known::No => std::borrow::Cow::Borrowed(SYSTEM),
            // provisional when decided at the end
            Known::Yes | Known::Later => method.as_str().to_owned().into(),
        };
        let mut attrs: Vec<KeyValue> = Vec::with_capacity(10 + config.request_metadata.len());
        attrs.push(KeyValue::new(attr::RPC_SYSTEM_NAME, SYSTEM));
        match known {
            Known::Yes => attrs.push(KeyValue::new(attr::RPC_METHOD, method.clone())),
            Known::No => {
                attrs.push(KeyValue::new(attr::RPC_METHOD, OTHER));
                attrs.push(KeyValue::new(attr::RPC_METHOD_ORIGINAL, method.clone()));
            }
            Known::Later => {}
        }
        if let Some((address, port)) = &conn.host {
            attrs.push(KeyValue::new(attr::SERVER_ADDRESS, address.clone()));
            attrs.push(KeyValue::new(attr::SERVER_PORT, *port));
        }
        connection_attributes(config, conn.peer, &conn.forwarded, &mut attrs);
        config.request_extras(parts, true, &mut attrs);
        let mut builder = SpanBuilder::from_name(name)
            .with_kind(<Server as crate::side::sealed::Rules>::KIND)
            .with_attributes(attrs);
        builder.start_time = clock.wall();
        start_server_span(config, tracer, builder, parts, public)
    });
    let span = cx.is_some();
    drop(conn);
    let cx = cx.or_else(|| caller_context(config, parts, public));
    #[cfg(feature = "tracing")]
    let log = crate::convention::http::server::log_span(
        config,
        crate::logs::RequestFields::Rpc {
            method: method.as_str(),
        },
        cx.as_ref(),
        span,
    );
    // inner instances pass the call through; no route slot (a gRPC call has no `http.route`)
    stack::mark(&mut parts.extensions, true);
    let begin = Box::new(grpc).begin(
        config.clone(),
        clock,
        cx,
        span,
        #[cfg(feature = "tracing")]
        log,
        measure,
    );
    (Record::begin(begin, &mut parts.extensions), None)
}
