//! Cases that need a process of their own — they install globals (providers, a propagator, a
//! subscriber), set environment variables, or could abort the process — in one test binary
//! that re-runs itself once per case.
//!
//! `every_case_in_a_process_of_its_own` starts this binary again for each case with
//! `PROCESS_CASE=<name>`, where `case` runs that one case; `cargo test --test process -- case`
//! with `PROCESS_CASE` set runs one by hand.

#[path = "../it/common/mod.rs"]
mod common;

mod capture_env;
#[cfg(all(feature = "tracing", feature = "reqwest"))]
mod client_chain;
mod global_defaults;
mod global_propagator_no_sdk;
mod global_propagators;
mod known_methods_env;
mod late_sdk;
#[cfg(feature = "reqwest")]
mod level2_forwarding;
#[cfg(feature = "otlp")]
mod setup_env;
#[cfg(feature = "otlp-tls")]
mod setup_tls;
mod span_name_panic;

use std::future::Future;
use std::pin::Pin;

type Async = fn() -> Pin<Box<dyn Future<Output = ()>>>;

/// How a case runs.
#[derive(Clone, Copy)]
enum Run {
    /// On a current-thread runtime.
    Current(Async),
    /// On a multi-thread runtime with two workers.
    Multi(Async),
    /// As it is (it makes its own threads and runtimes).
    Plain(fn()),
}

macro_rules! cases {
    ($($kind:ident $path:path),* $(,)?) => {
        &[$((stringify!($path), cases!(@run $kind $path))),*]
    };
    (@run plain $path:path) => { Run::Plain($path) };
    (@run current $path:path) => { Run::Current(|| Box::pin($path())) };
    (@run multi $path:path) => { Run::Multi(|| Box::pin($path())) };
}

fn cases() -> Vec<(&'static str, Run)> {
    let mut all: Vec<(&'static str, Run)> = cases![
        current capture_env::capture_lists_come_from_the_environment,
        current capture_env::grpc_metadata_lists_from_the_environment_alone,
        current global_defaults::layer_built_before_the_sdk_still_traces,
        current global_propagator_no_sdk::a_propagator_installed_later_is_used_from_the_next_request,
        current global_propagators::a_global_w3c_shaped_propagator_is_called_on_both_sides,
        current known_methods_env::env_overrides_known_methods,
        plain late_sdk::the_first_request_after_the_sdk_is_installed_is_recorded_on_every_thread,
        multi span_name_panic::a_panicking_span_name_function_never_aborts_and_is_contained,
    ]
    .to_vec();
    #[cfg(feature = "reqwest")]
    all.extend_from_slice(cases![
        multi level2_forwarding::a_forwarding_process_hands_on_every_valid_tracestate_exactly,
    ]);
    #[cfg(feature = "otlp")]
    all.extend_from_slice(cases![
        multi setup_env::otlp_http_reaches_a_real_receiver,
        multi setup_env::sdk_disabled_installs_nothing,
        multi setup_env::a_dead_collector_cannot_hang_the_exit,
        multi setup_env::the_export_timeout_comes_from_the_environment,
        multi setup_env::the_metric_export_timeout_comes_from_the_environment,
        multi setup_env::batch_and_interval_variables_reach_the_sdk,
        multi setup_env::an_unreachable_collector_is_said_once,
        current setup_env::errors_are_values_not_panics,
        current setup_env::otlp_grpc_reaches_a_real_receiver_from_a_current_thread_runtime,
        plain setup_env::otlp_grpc_outside_a_runtime,
        current setup_env::propagators_sampler_and_rust_log_take_effect,
    ]);
    #[cfg(feature = "otlp-tls")]
    all.extend_from_slice(cases![
        multi setup_tls::otlp_https_with_a_client_certificate,
        multi setup_tls::otlp_https_trusts_only_what_it_is_told,
        current setup_tls::otlp_grpc_over_tls_with_a_client_certificate,
    ]);
    #[cfg(feature = "prometheus")]
    all.extend_from_slice(cases![
        multi setup_env::prometheus_endpoint_from_the_environment,
        multi setup_env::prometheus_served_on_its_own_port,
        current setup_env::the_environment_names_the_service,
    ]);
    #[cfg(all(feature = "tracing", feature = "reqwest"))]
    all.extend_from_slice(cases![
        multi client_chain::three_hops_one_trace_and_every_log_line_carries_it,
    ]);
    all
}

const CASE_VAR: &str = "PROCESS_CASE";

/// Runs the case named in `PROCESS_CASE` (nothing when it is not set).
#[test]
fn case() {
    let Ok(name) = std::env::var(CASE_VAR) else {
        return;
    };
    let (_, run) = cases()
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no case {name}"));
    match run {
        Run::Plain(f) => f(),
        Run::Current(f) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f()),
        Run::Multi(f) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(f()),
    }
}

#[test]
fn every_case_in_a_process_of_its_own() {
    if std::env::var(CASE_VAR).is_ok() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut failed = Vec::new();
    for (name, _) in cases() {
        let out = std::process::Command::new(&exe)
            .args(["--exact", "case", "--nocapture", "--test-threads=1"])
            .env(CASE_VAR, name)
            .output()
            .unwrap();
        if out.status.success() {
            println!("case {name}: ok");
        } else {
            eprintln!(
                "case {name}: FAILED ({})\n--- stdout\n{}\n--- stderr\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            failed.push(name);
        }
    }
    assert!(failed.is_empty(), "failed cases: {failed:?}");
}
