//! The integration tests that need no process of their own, in one binary (one link instead of
//! one per file). Tests that change process-wide state — the global providers, propagator or
//! subscriber, environment variables — stay in binaries of their own under `tests/`.

mod common;
mod hardening;

mod attacks;
mod client;
mod client_conventions;
mod client_shapes;
mod grpc;
mod log_correlation;
mod regressions;
mod response_header;
mod response_shapes;
mod server_lifecycle;
mod server_load;
mod server_metrics;
mod server_spans;
mod trace_context;
