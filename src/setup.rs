//! Telemetry out in one call (feature `otlp`): the OpenTelemetry SDK set up from the standard
//! `OTEL_*` environment — traces, metrics and logs over OTLP (or to stdout, or nowhere), the
//! crate's propagator, a `tracing` subscriber whose lines carry the request's ids — and a guard
//! that flushes and shuts it all down, within a bounded time, when dropped.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let telemetry = tower_otel_http::setup::init()?; // reads OTEL_* and RUST_LOG
//! // ... serve with `.layer(OtelLayer::server())` ...
//! drop(telemetry); // flush and shut down (bounded)
//! # Ok(())
//! # }
//! ```
//!
//! # What is read, and by whom
//!
//! | variable | default | read by |
//! |---|---|---|
//! | `OTEL_SDK_DISABLED` | `false` | this crate: `true` installs no provider (the subscriber still is); any other value is false, with a warning |
//! | `OTEL_TRACES_EXPORTER`, `OTEL_METRICS_EXPORTER`, `OTEL_LOGS_EXPORTER` | `otlp` | this crate: `otlp`, `console` (stdout), `none`, comma-separated; `prometheus` for metrics with the feature `prometheus` (`TelemetryGuard::metrics_endpoint`, which the application mounts); anything else is an error |
//! | `OTEL_EXPORTER_PROMETHEUS_HOST`, `OTEL_EXPORTER_PROMETHEUS_PORT` | `localhost`, `9464`, when either is set | this crate (feature `prometheus`): the metrics also served there, on a port of their own ([`TelemetryGuard::metrics_address`]) |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_PROTOCOL` | `http/protobuf` | this crate checks it (`http/protobuf` or `grpc`; `http/json` and others are an error) and gives it to each exporter |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL: `/v1/traces` … appended for HTTP), `OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_ENDPOINT` (full URLs) | `http://localhost:4318` (HTTP), `http://localhost:4317` (gRPC) | this crate resolves and checks them (`http://`; `https://` with the feature `otlp-tls`; for gRPC also `host:port`, `https` unless `OTEL_EXPORTER_OTLP_[<SIGNAL>_]INSECURE=true`) and gives the result to opentelemetry-otlp |
//! | `OTEL_EXPORTER_OTLP_CERTIFICATE`, `…_CLIENT_CERTIFICATE`, `…_CLIENT_KEY` (and per signal) | the system's roots | this crate (feature `otlp-tls`): PEM files, read and checked at set-up; the certificate is trusted instead of the system's roots; certificate and key go together |
//! | `OTEL_EXPORTER_OTLP_TIMEOUT` (and per signal) | 10 s | this crate checks it (whole milliseconds, more than 0) and gives it to the exporters |
//! | `OTEL_EXPORTER_OTLP_HEADERS`, `…_COMPRESSION` (`gzip`; and per signal) | | opentelemetry-otlp |
//! | `OTEL_PROPAGATORS` | `tracecontext,baggage` | this crate: `tracecontext` (the crate's [`W3cPropagator`](crate::propagation::W3cPropagator)), `baggage`, `none`; anything else is an error |
//! | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | `parentbased_always_on` | this crate checks them and builds the sampler (an unknown sampler or an argument that is not a ratio in `[0, 1]` is an error, where the SDK only warns and samples everything) |
//! | `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` | `unknown_service`, or [`Setup::with_service_name`] | the SDK; `OTEL_SERVICE_NAME` wins over a `service.name` in the attributes |
//! | `OTEL_BSP_*`, `OTEL_BLRP_*`, `OTEL_METRIC_EXPORT_INTERVAL` | the SDK's | the SDK |
//! | `OTEL_METRIC_EXPORT_TIMEOUT` | the exporter's | this crate (the SDK's periodic reader does not read it): the OTLP metrics exporter's timeout when shorter than its own |
//! | `RUST_LOG` | `info`, the exporters' own stack at `warn` | this crate: `target=level,…` (`tracing_subscriber`'s `Targets`); a bad value is an error |
//!
//! The OTLP log bridge never exports the events of the exporters' own stack (`hyper*`, `h2`,
//! `tonic*`, `reqwest*`, `tower`, `opentelemetry*`, `rustls`): no feedback loop through a
//! failing collector.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::BaggagePropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::{FilterExt as _, LevelFilter, Targets};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer as _;

/// Targets whose events the OTLP log bridge never exports, and the default filter keeps at
/// `warn`: the exporters' own stack.
/// (`Targets` matches a target by its start: `tower` would take `tower_http` and this crate's
/// own `tower_otel_http` with it, so tower's own crates are named one by one.)
const EXPORTER_STACK: [&str; 9] = [
    "hyper",
    "h2",
    "tonic",
    "reqwest",
    "tower::",
    "tower_layer",
    "tower_service",
    "opentelemetry",
    "rustls",
];

/// Why the set-up failed: a variable with a value this crate cannot honour, an exporter that
/// could not be built, a subscriber already installed.
///
/// Its `Debug` form is the readable message (what `main() -> Result<_, Box<dyn Error>>`
/// prints on failure).
#[non_exhaustive]
pub enum SetupError {
    /// An environment variable's value is not one this crate can honour.
    Invalid {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// A file an environment variable names (a certificate or key) could not be read, holds
    /// nothing usable, or lacks the file it goes with (a client certificate without its key).
    File {
        /// The variable.
        var: String,
        /// The path it gives.
        path: String,
        /// What is wrong with the file.
        problem: String,
    },
    /// An exporter could not be built.
    Exporter(String),
    /// A global `tracing` subscriber is already installed (turn the subscriber off with
    /// [`Setup::with_subscriber`] to keep yours).
    SubscriberAlreadySet,
}

impl fmt::Debug for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "telemetry set-up: {self}")
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Invalid {
                var,
                value,
                expected,
            } => write!(f, "{var}={value:?} is not supported: expected {expected}"),
            SetupError::File { var, path, problem } => write!(f, "{var}={path:?}: {problem}"),
            SetupError::Exporter(e) => write!(f, "exporter: {e}"),
            SetupError::SubscriberAlreadySet => {
                f.write_str("a global tracing subscriber is already installed")
            }
        }
    }
}

impl std::error::Error for SetupError {}

/// Where a signal goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exporter {
    Otlp,
    Console,
    /// Metrics only: a registry the application serves ([`TelemetryGuard::metrics_endpoint`]).
    Prometheus,
}

/// The OTLP transport of a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    HttpProtobuf,
    Grpc,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::Grpc => "grpc",
        }
    }
}

/// One signal's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Signal {
    exporters: Vec<Exporter>,
    protocol: Protocol,
    /// Where its OTLP exporter sends: a full URL with its scheme (given to the exporter, so
    /// what was checked is what runs).
    endpoint: String,
    /// With an `https` endpoint: what the connection trusts and shows.
    tls: Option<TlsFiles>,
    /// How long one export may take (`OTEL_EXPORTER_OTLP_[<SIGNAL>_]TIMEOUT`).
    timeout: Duration,
}

/// The TLS of a signal's OTLP connection, from the certificate variables (PEM files, read and
/// checked at set-up).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct TlsFiles {
    /// `OTEL_EXPORTER_OTLP_[<SIGNAL>_]CERTIFICATE`: the roots trusted instead of the system's.
    ca: Option<Vec<u8>>,
    /// `…_CLIENT_CERTIFICATE` and `…_CLIENT_KEY`: the client's chain and key (mutual TLS).
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// What the environment asks for, checked.
#[derive(Clone, Debug, PartialEq)]
struct EnvConfig {
    disabled: bool,
    traces: Signal,
    metrics: Signal,
    logs: Signal,
    /// `tracecontext`, `baggage` (in order); empty: none.
    propagators: Vec<&'static str>,
    /// Whether any OTLP endpoint variable is set.
    endpoint_set: bool,
    /// The sampler's name, lowercased.
    sampler: String,
    /// The ratio of the `traceidratio` samplers (1 when not given).
    ratio: f64,
    /// `OTEL_METRIC_EXPORT_TIMEOUT`: the longest a metrics export may take.
    metric_timeout: Option<Duration>,
    /// `OTEL_EXPORTER_PROMETHEUS_HOST` and `_PORT` (unchecked), when either is set: where the
    /// Prometheus exporter serves its own endpoint.
    prometheus_server: Option<(String, String)>,
    /// Values taken with a warning (said once the subscriber is there).
    warnings: Vec<String>,
}

/// Keeps the first of each value, in order.
fn dedup<T: PartialEq>(v: &mut Vec<T>) {
    let mut i = 0;
    while i < v.len() {
        if v[..i].contains(&v[i]) {
            v.remove(i);
        } else {
            i += 1;
        }
    }
}

fn invalid(var: &str, value: &str, expected: &'static str) -> SetupError {
    SetupError::Invalid {
        var: var.to_owned(),
        value: value.to_owned(),
        expected,
    }
}

/// A variable's value, trimmed; none when unset or blank.
fn value(get: &dyn Fn(&str) -> Option<String>, var: &str) -> Option<String> {
    get(var)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// A signal's own `OTEL_EXPORTER_OTLP_<SIGNAL>_<what>` (`name` upper case), else the general
/// `OTEL_EXPORTER_OTLP_<what>`: the variable that gave the value, and the value.
fn per_signal(
    get: &dyn Fn(&str) -> Option<String>,
    name: &str,
    what: &str,
) -> Option<(String, String)> {
    [
        format!("OTEL_EXPORTER_OTLP_{name}_{what}"),
        format!("OTEL_EXPORTER_OTLP_{what}"),
    ]
    .into_iter()
    .find_map(|var| value(get, &var).map(|v| (var, v)))
}

/// A boolean as the specification reads one: `true` (any case) is true; anything else false,
/// with a warning unless it is `false`.
fn flag(var: &str, value: Option<&str>, warnings: &mut Vec<String>) -> bool {
    match value {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) => {
            if !v.eq_ignore_ascii_case("false") {
                warnings.push(format!("{var}={v:?} is not true or false: taken as false"));
            }
            false
        }
    }
}

/// Read and check the environment (`get` reads a variable).
fn read_env(get: &dyn Fn(&str) -> Option<String>) -> Result<EnvConfig, SetupError> {
    let nonempty = |k: &str| value(get, k);
    let mut warnings = Vec::new();
    let disabled = flag(
        "OTEL_SDK_DISABLED",
        nonempty("OTEL_SDK_DISABLED").as_deref(),
        &mut warnings,
    );
    let signal = |name: &str| -> Result<Signal, SetupError> {
        let var = format!("OTEL_{name}_EXPORTER");
        let mut exporters = Vec::new();
        for e in nonempty(&var)
            .unwrap_or_else(|| "otlp".to_owned())
            .split(',')
            .filter(|e| !e.trim().is_empty())
        {
            match e.trim().to_ascii_lowercase().as_str() {
                "otlp" => exporters.push(Exporter::Otlp),
                "console" | "logging" => exporters.push(Exporter::Console),
                "none" => {}
                "prometheus" if name == "METRICS" => {
                    if cfg!(feature = "prometheus") {
                        exporters.push(Exporter::Prometheus);
                    } else {
                        return Err(invalid(
                            &var,
                            "prometheus",
                            "otlp, console or none (prometheus needs the crate's `prometheus` feature)",
                        ));
                    }
                }
                _ => {
                    return Err(invalid(
                        &var,
                        e.trim(),
                        if name == "METRICS" {
                            "otlp, console, prometheus or none"
                        } else {
                            "otlp, console or none"
                        },
                    ))
                }
            }
        }
        dedup(&mut exporters);
        let protocol = match per_signal(get, name, "PROTOCOL") {
            None => Protocol::HttpProtobuf,
            Some((_, v)) if v.eq_ignore_ascii_case("http/protobuf") => Protocol::HttpProtobuf,
            Some((_, v)) if v.eq_ignore_ascii_case("grpc") => Protocol::Grpc,
            Some((var, v)) => return Err(invalid(&var, &v, "http/protobuf or grpc")),
        };
        Ok(Signal {
            exporters,
            protocol,
            endpoint: String::new(),
            tls: None,
            timeout: DEFAULT_EXPORT_TIMEOUT,
        })
    };
    let mut traces = signal("TRACES")?;
    let mut metrics = signal("METRICS")?;
    let mut logs = signal("LOGS")?;
    let mut propagators = Vec::new();
    for p in nonempty("OTEL_PROPAGATORS")
        .unwrap_or_else(|| "tracecontext,baggage".to_owned())
        .split(',')
        .filter(|p| !p.trim().is_empty())
    {
        match p.trim().to_ascii_lowercase().as_str() {
            "tracecontext" => propagators.push("tracecontext"),
            "baggage" => propagators.push("baggage"),
            "none" => {}
            other => {
                return Err(invalid(
                    "OTEL_PROPAGATORS",
                    other,
                    "tracecontext, baggage or none",
                ))
            }
        }
    }
    dedup(&mut propagators);
    let sampler = nonempty("OTEL_TRACES_SAMPLER")
        .unwrap_or_else(|| "parentbased_always_on".into())
        .to_ascii_lowercase();
    let ratio = match sampler.as_str() {
        "always_on" | "always_off" | "parentbased_always_on" | "parentbased_always_off" => false,
        "traceidratio" | "parentbased_traceidratio" => true,
        other => {
            return Err(invalid(
                "OTEL_TRACES_SAMPLER",
                other,
                "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio",
            ))
        }
    };
    let mut sampler_ratio = 1.0;
    if let (true, Some(arg)) = (ratio, nonempty("OTEL_TRACES_SAMPLER_ARG")) {
        match arg.parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => sampler_ratio = r,
            _ => {
                return Err(invalid(
                    "OTEL_TRACES_SAMPLER_ARG",
                    &arg,
                    "a ratio between 0 and 1",
                ))
            }
        }
    }
    // an endpoint the exporters cannot reach is said now, not at the first failed export; the
    // certificate variables no signal uses are said once
    let (mut used, mut unused) = (Vec::new(), Vec::new());
    for (name, signal) in [
        ("TRACES", &mut traces),
        ("METRICS", &mut metrics),
        ("LOGS", &mut logs),
    ] {
        if disabled || !signal.exporters.contains(&Exporter::Otlp) {
            continue;
        }
        let (var, endpoint) = endpoint(get, name, signal.protocol, &mut warnings);
        signal.endpoint = endpoint;
        signal.timeout = export_timeout(get, name)?;
        let files = transport(get, name, signal, var.as_deref())?;
        if signal.tls.is_some() {
            used.extend(files);
        } else {
            unused.extend(files);
        }
    }
    for v in unused {
        if !used.contains(&v) && !warnings.iter().any(|w| w.starts_with(&format!("{v} "))) {
            warnings.push(format!(
                "{v} is set, but no signal it applies to goes over https: not used"
            ));
        }
    }
    dedup(&mut warnings);
    // the SDK's periodic reader does not read it (its experimental async one does): the OTLP
    // metrics exporter is given it, when shorter than its own timeout
    let metric_timeout = if disabled || !metrics.exporters.contains(&Exporter::Otlp) {
        None
    } else {
        let var = "OTEL_METRIC_EXPORT_TIMEOUT";
        millis(value(get, var).map(|v| (var.to_owned(), v)))?
    };
    // checked where used: only when metrics go to prometheus
    let prometheus_server = match (
        nonempty("OTEL_EXPORTER_PROMETHEUS_HOST"),
        nonempty("OTEL_EXPORTER_PROMETHEUS_PORT"),
    ) {
        (None, None) => None,
        (host, port) => Some((
            host.unwrap_or_else(|| "localhost".to_owned()),
            port.unwrap_or_else(|| "9464".to_owned()),
        )),
    };
    let endpoint_set = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
    ]
    .iter()
    .any(|k| nonempty(k).is_some());
    Ok(EnvConfig {
        disabled,
        traces,
        metrics,
        logs,
        propagators,
        endpoint_set,
        sampler,
        ratio: sampler_ratio,
        metric_timeout,
        prometheus_server,
        warnings,
    })
}

/// An exporter that says once when its exports start failing (and once when they work again),
/// instead of a line per failed batch — or, as opentelemetry-otlp does without its internal
/// logs, nothing at all.
#[derive(Debug)]
struct Warned<E> {
    inner: E,
    signal: &'static str,
    endpoint: Arc<str>,
    failing: AtomicBool,
    /// The cause of the HTTP client's last failure, which opentelemetry-otlp reports as
    /// "network error" whatever it was.
    cause: Option<Cause>,
}

/// The cause of an OTLP/HTTP client's last failure.
type Cause = Arc<std::sync::Mutex<Option<String>>>;

impl<E> Warned<E> {
    fn new(inner: E, signal: &'static str, otlp: &Otlp<'_>) -> Self {
        Warned {
            inner,
            signal,
            endpoint: otlp.signal.endpoint.as_str().into(),
            failing: AtomicBool::new(false),
            cause: otlp.http_client.as_ref().map(|c| c.cause.clone()),
        }
    }

    fn note(&self, result: &OTelSdkResult) {
        match result {
            Err(e) if !self.failing.swap(true, Ordering::Relaxed) => {
                let mut text = e.to_string();
                // what opentelemetry-otlp calls a network error: the client's own cause
                let cause = self
                    .cause
                    .as_ref()
                    .and_then(|c| c.lock().ok().and_then(|mut c| c.take()));
                if let (Some(cause), true) = (cause, text.contains("network error")) {
                    text = format!("{text}: {cause}");
                }
                let text = unrepeated(&text);
                let hint = match (
                    self.endpoint.starts_with("https://") && text.contains("InvalidContentType"),
                    self.cause.is_some(),
                ) {
                    (false, _) => "",
                    (true, true) => " (the collector may be plain http: use an http:// endpoint)",
                    (true, false) => {
                        " (the collector may be plain http: use an http:// endpoint, or \
                         OTEL_EXPORTER_OTLP_INSECURE=true with host:port)"
                    }
                };
                tracing::warn!(
                    target: "tower_otel_http",
                    "cannot export {} to {}: {text}{hint} (said once: the next failures are \
                     not reported until an export succeeds)",
                    self.signal,
                    self.endpoint
                );
            }
            Ok(()) if self.failing.swap(false, Ordering::Relaxed) => tracing::info!(
                target: "tower_otel_http",
                "exporting {} to {} again",
                self.signal,
                self.endpoint
            ),
            _ => {}
        }
    }
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for Warned<E>
{
    async fn export(&self, batch: Vec<opentelemetry_sdk::trace::SpanData>) -> OTelSdkResult {
        let r = self.inner.export(batch).await;
        self.note(&r);
        r
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: opentelemetry_sdk::metrics::exporter::PushMetricExporter>
    opentelemetry_sdk::metrics::exporter::PushMetricExporter for Warned<E>
{
    async fn export(
        &self,
        metrics: &opentelemetry_sdk::metrics::data::ResourceMetrics,
    ) -> OTelSdkResult {
        let r = self.inner.export(metrics).await;
        self.note(&r);
        r
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn temporality(&self) -> opentelemetry_sdk::metrics::Temporality {
        self.inner.temporality()
    }
}

impl<E: opentelemetry_sdk::logs::LogExporter> opentelemetry_sdk::logs::LogExporter for Warned<E> {
    async fn export(&self, batch: opentelemetry_sdk::logs::LogBatch<'_>) -> OTelSdkResult {
        let r = self.inner.export(batch).await;
        self.note(&r);
        r
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn event_enabled(
        &self,
        level: opentelemetry::logs::Severity,
        target: &str,
        name: Option<&str>,
    ) -> bool {
        self.inner.event_enabled(level, target, name)
    }
    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// An error text with a run of `: `-separated parts said twice in a row said once (tonic's and
/// rustls' errors repeat their cause: "dns error: dns error: …").
fn unrepeated(text: &str) -> String {
    let mut parts: Vec<&str> = text.split(": ").collect();
    let mut i = 0;
    while i < parts.len() {
        let mut removed = false;
        for k in 1..=3 {
            if i + 2 * k <= parts.len() && parts[i..i + k] == parts[i + k..i + 2 * k] {
                parts.drain(i + k..i + 2 * k);
                removed = true;
                break;
            }
        }
        if !removed {
            i += 1;
        }
    }
    parts.join(": ")
}

/// The blocking client of an OTLP/HTTP exporter, which keeps the cause of its last failure.
#[derive(Clone, Debug)]
struct ExplainedClient {
    inner: reqwest::blocking::Client,
    cause: Cause,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for ExplainedClient {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let response = self.inner.send_bytes(request).await;
        // the last attempt's: a success, or an answer, clears it
        if let Ok(mut cause) = self.cause.lock() {
            *cause = response.as_ref().err().map(|e| {
                let text = with_causes(&**e);
                // the URL is in the warning already
                match e
                    .downcast_ref::<reqwest::Error>()
                    .and_then(reqwest::Error::url)
                {
                    Some(url) => text.replace(&format!(" for url ({url})"), ""),
                    None => text,
                }
            });
        }
        response
    }
}

/// Where OTLP sends a signal (`name` upper case) and the variable that said so (none: the
/// default): the signal's endpoint, whole; else the base endpoint, with `/v1/<signal>` appended
/// for HTTP; else the specification's default. A gRPC endpoint without a scheme gets `https://`,
/// or `http://` with `OTEL_EXPORTER_OTLP_[<SIGNAL>_]INSECURE=true` (the specification's rule).
fn endpoint(
    get: &dyn Fn(&str) -> Option<String>,
    name: &str,
    protocol: Protocol,
    warnings: &mut Vec<String>,
) -> (Option<String>, String) {
    let (var, mut url) = if let Some((var, e)) = per_signal(get, name, "ENDPOINT") {
        // the general one is a base: `/v1/<signal>` appended over HTTP
        let url = match protocol {
            Protocol::HttpProtobuf if var == "OTEL_EXPORTER_OTLP_ENDPOINT" => format!(
                "{}/v1/{}",
                e.trim_end_matches('/'),
                name.to_ascii_lowercase()
            ),
            _ => e,
        };
        (Some(var), url)
    } else {
        let url = match protocol {
            Protocol::HttpProtobuf => {
                format!("http://localhost:4318/v1/{}", name.to_ascii_lowercase())
            }
            Protocol::Grpc => "http://localhost:4317".to_owned(),
        };
        (None, url)
    };
    if protocol == Protocol::Grpc && scheme(&url).is_none() {
        let insecure = per_signal(get, name, "INSECURE")
            .is_some_and(|(var, v)| flag(&var, Some(&v), warnings));
        url = format!("{}://{url}", if insecure { "http" } else { "https" });
    }
    (var, url)
}

/// The scheme of an endpoint, lower case: none when `://` does not come before any path, query
/// or fragment.
fn scheme(url: &str) -> Option<String> {
    url.split_once("://")
        .filter(|(s, _)| !s.is_empty() && !s.contains(['/', '?', '#']))
        .map(|(s, _)| s.to_ascii_lowercase())
}

/// Checks a signal's OTLP endpoint against the crate's features and, for `https`, reads the
/// certificate variables into `signal.tls` (`var`: the endpoint's variable, none for the
/// default). The certificate variables set for the signal are returned, used or not.
fn transport(
    get: &dyn Fn(&str) -> Option<String>,
    name: &str,
    signal: &mut Signal,
    var: Option<&str>,
) -> Result<Vec<String>, SetupError> {
    let var = var.unwrap_or("OTEL_EXPORTER_OTLP_ENDPOINT");
    // what the endpoint was given as (before `/v1/<signal>` or the INSECURE rule)
    let given = value(get, var).unwrap_or_default();
    // the certificate files' variables (per signal first) and paths
    let files =
        ["CERTIFICATE", "CLIENT_CERTIFICATE", "CLIENT_KEY"].map(|what| per_signal(get, name, what));
    let names = files.iter().flatten().map(|(v, _)| v.clone()).collect();
    let https = match scheme(&signal.endpoint).as_deref() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            return Err(invalid(
                var,
                &given,
                match (signal.protocol, cfg!(feature = "otlp-tls")) {
                    (Protocol::HttpProtobuf, true) => "an http:// or https:// URL",
                    (Protocol::HttpProtobuf, false) => "an http:// URL",
                    (Protocol::Grpc, _) => "an http:// or https:// URL, or host:port",
                },
            ))
        }
    };
    // what the exporters would refuse (or misread) is said here, naming the variable
    let uri = signal.endpoint.parse::<http::Uri>().ok();
    // `http` reads a port it cannot parse as none
    let port_ok = |u: &http::Uri| {
        let authority = u.authority().map_or("", |a| a.as_str());
        let authority = authority.rsplit('@').next().unwrap_or_default();
        match authority.rsplit_once(':') {
            Some((_, p)) if !p.contains(']') => p.parse::<u16>().is_ok_and(|p| p > 0),
            _ => true,
        }
    };
    if uri
        .as_ref()
        .is_none_or(|u| u.host().is_none_or(str::is_empty) || !port_ok(u))
    {
        return Err(invalid(
            var,
            &given,
            "a URL with a host (and a port from 1 to 65535)",
        ));
    }
    if !https {
        return Ok(names);
    }
    if !cfg!(feature = "otlp-tls") {
        return Err(invalid(
            var,
            &given,
            if scheme(&given).is_some() {
                "an http:// URL (https needs the crate's `otlp-tls` feature)"
            } else {
                "an http:// URL (a gRPC endpoint without a scheme is https unless \
                 OTEL_EXPORTER_OTLP_INSECURE=true, and https needs the crate's \
                 `otlp-tls` feature)"
            },
        ));
    }
    let [ca, cert, key] = files;
    let read = |(var, path): (String, String)| {
        std::fs::read(&path).map_err(|e| SetupError::File {
            var,
            path,
            problem: e.to_string(),
        })
    };
    let mut tls = TlsFiles::default();
    if let Some(ca) = ca {
        let pem = read(ca.clone())?;
        check_certificates(&pem).map_err(|problem| SetupError::File {
            var: ca.0,
            path: ca.1,
            problem,
        })?;
        tls.ca = Some(pem);
    }
    match (cert, key) {
        (None, None) => {}
        (Some((var, path)), None) => {
            return Err(SetupError::File {
                var,
                path,
                problem: format!(
                    "a client certificate needs its key, and {} has none \
                     (OTEL_EXPORTER_OTLP_CLIENT_KEY or OTEL_EXPORTER_OTLP_{name}_CLIENT_KEY)",
                    name.to_ascii_lowercase()
                ),
            })
        }
        (None, Some((var, path))) => {
            return Err(SetupError::File {
                var,
                path,
                problem: format!(
                    "a client key needs its certificate, and {} has none \
                     (OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE or \
                     OTEL_EXPORTER_OTLP_{name}_CLIENT_CERTIFICATE)",
                    name.to_ascii_lowercase()
                ),
            })
        }
        (Some(cert), Some(key)) => {
            let chain = read(cert.clone())?;
            check_certificates(&chain).map_err(|problem| SetupError::File {
                var: cert.0,
                path: cert.1,
                problem,
            })?;
            let pem = read(key.clone())?;
            check_identity(&chain, &pem).map_err(|problem| SetupError::File {
                var: key.0,
                path: key.1,
                problem,
            })?;
            tls.identity = Some((chain, pem));
        }
    }
    signal.tls = Some(tls);
    Ok(names)
}

/// A PEM file of one certificate or more.
#[cfg(feature = "otlp-tls")]
fn check_certificates(pem: &[u8]) -> Result<(), String> {
    match reqwest::Certificate::from_pem_bundle(pem) {
        Ok(certs) if !certs.is_empty() => Ok(()),
        Ok(_) => Err("no PEM certificate in it".to_owned()),
        Err(e) => Err(format!("not a PEM certificate: {}", with_causes(&e))),
    }
}

/// A PEM private key that goes with a chain.
#[cfg(feature = "otlp-tls")]
fn check_identity(chain: &[u8], key: &[u8]) -> Result<(), String> {
    reqwest::Identity::from_pem(&[chain, b"\n", key].concat())
        .map(|_| ())
        .map_err(|e| format!("not a PEM private key: {}", with_causes(&e)))
}

#[cfg(not(feature = "otlp-tls"))]
fn check_certificates(_: &[u8]) -> Result<(), String> {
    Ok(())
}

#[cfg(not(feature = "otlp-tls"))]
fn check_identity(_: &[u8], _: &[u8]) -> Result<(), String> {
    Ok(())
}

/// What opentelemetry-otlp takes when no timeout is set.
const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one export may take: `OTEL_EXPORTER_OTLP_<SIGNAL>_TIMEOUT`, then
/// `OTEL_EXPORTER_OTLP_TIMEOUT`, in milliseconds; 10 s. Checked here (opentelemetry-otlp skips a
/// bad value silently) and given to the exporter.
fn export_timeout(
    get: &dyn Fn(&str) -> Option<String>,
    signal: &str,
) -> Result<Duration, SetupError> {
    let own = per_signal(get, &signal.to_ascii_uppercase(), "TIMEOUT");
    Ok(millis(own)?.unwrap_or(DEFAULT_EXPORT_TIMEOUT))
}

/// A variable's value (`(variable, value)`) as a duration in whole milliseconds, more than zero
/// (none: not set).
fn millis(given: Option<(String, String)>) -> Result<Option<Duration>, SetupError> {
    let Some((var, v)) = given else {
        return Ok(None);
    };
    match v.parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(Some(Duration::from_millis(ms))),
        _ => Err(invalid(
            &var,
            &v,
            "milliseconds, a whole number more than 0",
        )),
    }
}

/// An error and its causes, `: `-separated (reqwest's `Display` says only "builder error").
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// The blocking client of an OTLP/HTTP exporter (the one opentelemetry-otlp would make, with the
/// same timeout, but keeping its failures' causes); for `https`, rustls (whatever other TLS
/// backend reqwest was built with), the system's roots or only the given ones, and the client's
/// identity. Made on a thread of its own (reqwest's blocking client cannot be made on a
/// runtime's thread).
fn http_client(
    signal: &Signal,
    name: &str,
    timeout: Duration,
) -> Result<ExplainedClient, SetupError> {
    let tls = signal.tls.clone();
    let with_identity = tls.as_ref().is_some_and(|t| t.identity.is_some());
    let built = std::thread::Builder::new()
        .name("tower-otel-http-client".into())
        .spawn(move || {
            let b = reqwest::blocking::Client::builder().timeout(timeout);
            #[cfg(feature = "otlp-tls")]
            let b = match &tls {
                None => b,
                Some(tls) => {
                    let mut b = b.tls_backend_rustls();
                    if let Some(ca) = &tls.ca {
                        b = b.tls_certs_only(reqwest::Certificate::from_pem_bundle(ca)?);
                    }
                    if let Some((chain, key)) = &tls.identity {
                        b = b.identity(reqwest::Identity::from_pem(
                            &[chain, &b"\n"[..], key].concat(),
                        )?);
                    }
                    b
                }
            };
            #[cfg(not(feature = "otlp-tls"))]
            let _ = tls;
            b.build()
        })
        .map_err(|e| exporter_error(&e))?
        .join()
        .map_err(|_| SetupError::Exporter("the HTTP client's thread panicked".into()))?;
    let inner = built.map_err(|e| {
        SetupError::Exporter(format!(
            "{name} to {}: the HTTP client cannot be made{}: {}",
            signal.endpoint,
            match (&signal.tls, with_identity) {
                (None, _) => "",
                (Some(_), true) => " from the roots, client certificate and key given",
                (Some(_), false) => " from the roots given (or the system's)",
            },
            with_causes(&e)
        ))
    })?;
    Ok(ExplainedClient {
        inner,
        cause: Cause::default(),
    })
}

/// The TLS of an `https` OTLP/gRPC exporter: the system's roots, or only the given ones, and the
/// client's identity.
#[cfg(feature = "otlp-tls")]
fn grpc_tls(tls: &TlsFiles) -> opentelemetry_otlp::tonic_types::transport::ClientTlsConfig {
    use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig, Identity};
    let mut c = ClientTlsConfig::new();
    c = match &tls.ca {
        Some(ca) => c.ca_certificate(Certificate::from_pem(ca)),
        None => c.with_native_roots(),
    };
    if let Some((chain, key)) = &tls.identity {
        c = c.identity(Identity::from_pem(chain, key));
    }
    c
}

/// The format of the log lines the subscriber writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogFormat {
    /// One JSON object per line ([`crate::logs::JsonFormat`]).
    #[default]
    Json,
    /// Text lines ([`crate::logs::TextFormat`]).
    Text,
}

/// The set-up, with overrides in code; [`init`] is `Setup::new().install()`.
///
/// ```no_run
/// use tower_otel_http::setup::{LogFormat, Setup};
///
/// let telemetry = Setup::new()
///     .with_console_without_endpoint(true) // no OTEL_EXPORTER_OTLP_ENDPOINT: print to stdout
///     .with_log_format(LogFormat::Text)
///     .install()?;
/// # Ok::<(), tower_otel_http::setup::SetupError>(())
/// ```
#[must_use]
pub struct Setup {
    console_without_endpoint: bool,
    log_format: LogFormat,
    default_filter: String,
    subscriber: bool,
    shutdown_timeout: Duration,
    writer: Option<BoxMakeWriter>,
    service_name: Option<String>,
    prometheus: bool,
}

impl fmt::Debug for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Setup")
            .field("console_without_endpoint", &self.console_without_endpoint)
            .field("log_format", &self.log_format)
            .field("default_filter", &self.default_filter)
            .field("subscriber", &self.subscriber)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("writer", &self.writer.is_some())
            .field("service_name", &self.service_name)
            .field("prometheus", &self.prometheus)
            .finish()
    }
}

impl Default for Setup {
    fn default() -> Self {
        Self::new()
    }
}

impl Setup {
    /// The defaults: the specification's (OTLP over `http/protobuf` to `localhost:4318` when
    /// nothing is set), JSON log lines, a subscriber, 5 s to shut down.
    pub fn new() -> Self {
        let mut default_filter = String::from("info");
        for t in EXPORTER_STACK {
            default_filter.push_str(&format!(",{t}=warn"));
        }
        Setup {
            console_without_endpoint: false,
            log_format: LogFormat::Json,
            default_filter,
            subscriber: true,
            shutdown_timeout: Duration::from_secs(5),
            writer: None,
            service_name: None,
            prometheus: false,
        }
    }

    /// The `service.name` when the environment gives none (`OTEL_SERVICE_NAME`, or
    /// `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, win): without either, the SDK says
    /// `unknown_service`.
    pub fn with_service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// Serve the metrics for Prometheus to scrape as well as (or, with
    /// `OTEL_METRICS_EXPORTER=none`, instead of) pushing them: mount
    /// [`TelemetryGuard::metrics_endpoint`] on the router. `OTEL_METRICS_EXPORTER=prometheus`
    /// asks for the same from the environment.
    #[cfg(feature = "prometheus")]
    pub fn with_prometheus(mut self) -> Self {
        self.prometheus = true;
        self
    }

    /// Where the log lines go (default stdout): any `tracing_subscriber` writer
    /// (`std::io::stderr`, a file, a non-blocking appender).
    pub fn with_log_writer<W>(mut self, writer: W) -> Self
    where
        W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
    {
        self.writer = Some(BoxMakeWriter::new(writer));
        self
    }

    /// When no OTLP endpoint variable is set, send the signals that would go over OTLP to
    /// stdout instead (a demo that works without a collector); logs are then the subscriber's
    /// lines alone (not a second time through the stdout exporter).
    pub fn with_console_without_endpoint(mut self, console: bool) -> Self {
        self.console_without_endpoint = console;
        self
    }

    /// The format of the log lines (default JSON).
    pub fn with_log_format(mut self, format: LogFormat) -> Self {
        self.log_format = format;
        self
    }

    /// The log filter when `RUST_LOG` is not set (`target=level,…`).
    pub fn with_default_log_filter(mut self, filter: impl Into<String>) -> Self {
        self.default_filter = filter.into();
        self
    }

    /// Install the `tracing` subscriber (default `true`; `false` to keep your own).
    pub fn with_subscriber(mut self, install: bool) -> Self {
        self.subscriber = install;
        self
    }

    /// How long shutting down may take before it gives up (default 5 s): a dead collector
    /// cannot hang the exit.
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Read the environment, build the providers, install them, the propagator and the
    /// subscriber as the globals.
    ///
    /// # Errors
    ///
    /// A variable with a value this crate cannot honour, an exporter that cannot be built, a
    /// subscriber already installed.
    pub fn install(self) -> Result<TelemetryGuard, SetupError> {
        self.install_from(&|k| std::env::var(k).ok())
    }

    fn install_from(
        self,
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<TelemetryGuard, SetupError> {
        let mut env = read_env(get)?;
        let filter = match get("RUST_LOG").filter(|v| !v.trim().is_empty()) {
            Some(f) => {
                Targets::from_str(&f).map_err(|_| invalid("RUST_LOG", &f, "target=level,…"))?
            }
            None => Targets::from_str(&self.default_filter).map_err(|_| {
                invalid("default log filter", &self.default_filter, "target=level,…")
            })?,
        };
        // the signals OTLP would carry go to stdout when asked and no endpoint is set
        let console = self.console_without_endpoint && !env.endpoint_set;
        let route = |s: &Signal| -> Vec<Exporter> {
            let mut v = s
                .exporters
                .iter()
                .map(|e| match e {
                    Exporter::Otlp if console => Exporter::Console,
                    e => *e,
                })
                .collect();
            dedup(&mut v);
            v
        };
        let mut summary = Vec::new();
        let mut runtime = None;
        let mut prometheus = None;
        #[cfg_attr(not(feature = "prometheus"), allow(unused_mut))]
        let mut metrics_address: Option<std::net::SocketAddr> = None;
        let (tracer, meter, logger) = if env.disabled {
            summary.push("OTEL_SDK_DISABLED: nothing exported".to_owned());
            (None, None, None)
        } else {
            let traces = route(&env.traces);
            let mut metrics = route(&env.metrics);
            if self.prometheus && !metrics.contains(&Exporter::Prometheus) {
                metrics.push(Exporter::Prometheus);
            }
            let mut logs = route(&env.logs);
            if console && self.subscriber {
                // the subscriber's lines are the logs' console form: not twice
                logs.retain(|e| {
                    *e != Exporter::Console || env.logs.exporters.contains(&Exporter::Console)
                });
            }
            // the SDK's detectors read OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (the
            // latter last: its service.name would win, where the specification has
            // OTEL_SERVICE_NAME win — so that one is set again here)
            let mut resource = Resource::builder();
            let env_name = get("OTEL_SERVICE_NAME")
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty());
            let attrs_name = get("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|v| {
                v.split(',').any(|kv| {
                    kv.split_once('=')
                        .is_some_and(|(k, v)| k.trim() == "service.name" && !v.trim().is_empty())
                })
            });
            match (env_name, &self.service_name) {
                (Some(name), _) => resource = resource.with_service_name(name),
                (None, Some(name)) if !attrs_name => {
                    resource = resource.with_service_name(name.clone());
                }
                _ => {}
            }
            let resource = resource.build();
            let grpc = [
                (&traces, &env.traces),
                (&metrics, &env.metrics),
                (&logs, &env.logs),
            ]
            .iter()
            .any(|(e, s)| s.protocol == Protocol::Grpc && e.contains(&Exporter::Otlp));
            // the Prometheus exporter's own endpoint, where the environment asks for one
            let serve_prometheus =
                env.prometheus_server.is_some() && metrics.contains(&Exporter::Prometheus);
            if env.prometheus_server.is_some() && !serve_prometheus {
                env.warnings.push(
                    if cfg!(feature = "prometheus") {
                        "OTEL_EXPORTER_PROMETHEUS_HOST/_PORT are set, but metrics do not go to \
                         prometheus: not used"
                    } else {
                        "OTEL_EXPORTER_PROMETHEUS_HOST/_PORT are set, but this build has no \
                         prometheus exporter (the crate's `prometheus` feature): not used"
                    }
                    .to_owned(),
                );
            }
            if grpc || serve_prometheus {
                runtime = Some(OtlpRuntime(Some(
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(1)
                        .thread_name("tower-otel-http-otlp")
                        .enable_all()
                        .build()
                        .map_err(|e| exporter_error(&e))?,
                )));
            }
            // the gRPC exporters' channels are made (and live) on that runtime
            let _in_runtime = runtime
                .as_ref()
                .and_then(|r| r.0.as_ref())
                .map(tokio::runtime::Runtime::enter);
            let tracer = build_tracer(
                &traces,
                &Otlp::new(&env.traces, &traces, "traces", None)?,
                &resource,
                sampler(&env.sampler, env.ratio),
            )?;
            let meter = build_meter(
                &metrics,
                &Otlp::new(&env.metrics, &metrics, "metrics", env.metric_timeout)?,
                &resource,
                &mut prometheus,
            )?;
            let logger = build_logger(
                &logs,
                &Otlp::new(&env.logs, &logs, "logs", None)?,
                &resource,
            )?;
            #[cfg(feature = "prometheus")]
            if let (true, Some(endpoint), Some((host, port)), Some(rt)) = (
                serve_prometheus,
                &prometheus,
                &env.prometheus_server,
                runtime.as_ref().and_then(|r| r.0.as_ref()),
            ) {
                let port = prometheus_port(port)?;
                let cannot = |e: std::io::Error| {
                    SetupError::Exporter(format!(
                        "prometheus: cannot listen on {host}:{port} \
                         (OTEL_EXPORTER_PROMETHEUS_HOST/_PORT): {e}"
                    ))
                };
                // a name that resolves to several addresses (localhost: ::1 and 127.0.0.1)
                // is listened on at its first IPv4 one, what scrapers of `localhost:9464`
                // reach first
                let mut addresses: Vec<std::net::SocketAddr> =
                    std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
                        .map_err(cannot)?
                        .collect();
                addresses.sort_by_key(|a| !a.is_ipv4());
                let listener = std::net::TcpListener::bind(&addresses[..])
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(cannot)?;
                let address = listener.local_addr().map_err(|e| exporter_error(&e))?;
                let listener = {
                    let _in = rt.enter();
                    tokio::net::TcpListener::from_std(listener).map_err(cannot)?
                };
                rt.spawn(serve_metrics(listener, endpoint.clone()));
                metrics_address = Some(address);
            }
            for (name, exporters, s) in [
                ("traces", &traces, &env.traces),
                ("metrics", &metrics, &env.metrics),
                ("logs", &logs, &env.logs),
            ] {
                summary.push(format!(
                    "{name}: {}",
                    describe(exporters, s, metrics_address)
                ));
            }
            if env.sampler.ends_with("traceidratio") {
                summary.push(format!("sampler: {} {}", env.sampler, env.ratio));
            } else {
                summary.push(format!("sampler: {}", env.sampler));
            }
            (tracer, meter, logger)
        };
        // the subscriber first: when one is already there, nothing global has been touched
        if self.subscriber {
            // the bridge never exports the exporters' own events, whatever RUST_LOG says
            // (`Targets` takes the most specific directive: `hyper_util=debug` would beat an
            // `OFF` for `hyper`, hence the prefix check in front of it)
            let mut bridge_filter = filter.clone();
            for t in EXPORTER_STACK {
                bridge_filter = bridge_filter.with_target(t, LevelFilter::OFF);
            }
            let not_exporters = tracing_subscriber::filter::filter_fn(|meta| {
                let target = meta.target();
                !EXPORTER_STACK.iter().any(|t| target.starts_with(t))
            });
            let bridge = logger.as_ref().map(|l| {
                opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(l)
                    .with_filter(bridge_filter.and(not_exporters))
            });
            let writer = self
                .writer
                .unwrap_or_else(|| BoxMakeWriter::new(std::io::stdout));
            let lines = match self.log_format {
                LogFormat::Json => crate::logs::json_layer().with_writer(writer).boxed(),
                LogFormat::Text => crate::logs::text_layer().with_writer(writer).boxed(),
            };
            tracing_subscriber::registry()
                .with(lines.with_filter(filter))
                .with(bridge)
                .try_init()
                .map_err(|_| SetupError::SubscriberAlreadySet)?;
        }
        if let Some(t) = &tracer {
            opentelemetry::global::set_tracer_provider(t.clone());
            // the SDK's id generator is random: the traces started here carry the W3C random
            // flag (the SDK builds a root's flags from the sampled bit alone)
            crate::propagation::set_global_roots_random(true);
        }
        if let Some(m) = &meter {
            opentelemetry::global::set_meter_provider(m.clone());
        }
        let mut props: Vec<Box<dyn TextMapPropagator + Send + Sync>> = Vec::new();
        for p in &env.propagators {
            match *p {
                "tracecontext" => props.push(Box::new(crate::propagation::W3cPropagator::new())),
                _ => props.push(Box::new(BaggagePropagator::new())),
            }
        }
        summary.push(format!(
            "propagators: {}",
            if env.propagators.is_empty() {
                "none".to_owned()
            } else {
                env.propagators.join(",")
            }
        ));
        if !env.disabled {
            opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(props));
        }
        let summary = summary.join("; ");
        for w in &env.warnings {
            tracing::warn!(target: "tower_otel_http", "telemetry: {w}");
        }
        tracing::info!(target: "tower_otel_http", "telemetry: {summary}");
        Ok(TelemetryGuard {
            tracer,
            meter,
            logger,
            summary,
            timeout: self.shutdown_timeout,
            runtime,
            prometheus,
            #[cfg(feature = "prometheus")]
            metrics_address,
        })
    }
}

fn describe(
    exporters: &[Exporter],
    signal: &Signal,
    served: Option<std::net::SocketAddr>,
) -> String {
    if exporters.is_empty() {
        return "none".to_owned();
    }
    exporters
        .iter()
        .map(|e| match e {
            Exporter::Otlp => {
                let tls = match &signal.tls {
                    None => String::new(),
                    Some(t) => format!(
                        " (tls: {}{})",
                        if t.ca.is_some() {
                            "the given roots"
                        } else {
                            "the system's roots"
                        },
                        if t.identity.is_some() {
                            ", a client certificate"
                        } else {
                            ""
                        }
                    ),
                };
                format!("otlp ({}) {}{tls}", signal.protocol.name(), signal.endpoint)
            }
            Exporter::Console => "console".to_owned(),
            Exporter::Prometheus => match served {
                Some(a) => format!(
                    "prometheus (pull: served on http://{a}/metrics, and \
                     TelemetryGuard::metrics_endpoint to mount)"
                ),
                None => "prometheus (pull: mount TelemetryGuard::metrics_endpoint)".to_owned(),
            },
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a signal's OTLP exporter is built with: its endpoint, and its TLS when `https`.
struct Otlp<'a> {
    signal: &'a Signal,
    /// The export timeout (the signal's, or `OTEL_METRIC_EXPORT_TIMEOUT` when shorter).
    timeout: Duration,
    http_client: Option<ExplainedClient>,
    #[cfg(feature = "otlp-tls")]
    grpc_tls: Option<opentelemetry_otlp::tonic_types::transport::ClientTlsConfig>,
}

impl<'a> Otlp<'a> {
    /// `limit`: a timeout the exporter gets when shorter than the signal's own.
    /// `exporters`: where the signal goes (the environment's, as the set-up routed them).
    fn new(
        signal: &'a Signal,
        exporters: &[Exporter],
        name: &str,
        limit: Option<Duration>,
    ) -> Result<Self, SetupError> {
        let timeout = limit.map_or(signal.timeout, |l| l.min(signal.timeout));
        let http_client = match signal.protocol {
            Protocol::HttpProtobuf if exporters.contains(&Exporter::Otlp) => {
                Some(http_client(signal, name, timeout)?)
            }
            _ => None,
        };
        #[cfg(feature = "otlp-tls")]
        let grpc_tls = match (&signal.tls, signal.protocol) {
            (Some(tls), Protocol::Grpc) => Some(grpc_tls(tls)),
            _ => None,
        };
        Ok(Otlp {
            signal,
            timeout,
            http_client,
            #[cfg(feature = "otlp-tls")]
            grpc_tls,
        })
    }
}

/// An OTLP exporter of one signal (`$builder`: `SpanExporter::builder()`, ...), over the
/// signal's protocol, to its endpoint, with its TLS.
macro_rules! otlp_exporter {
    ($builder:expr, $otlp:expr) => {{
        let otlp: &Otlp<'_> = $otlp;
        match otlp.signal.protocol {
            Protocol::HttpProtobuf => {
                let mut b = $builder
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_endpoint(otlp.signal.endpoint.clone());
                b = b.with_timeout(otlp.timeout);
                if let Some(client) = &otlp.http_client {
                    use opentelemetry_otlp::WithHttpConfig as _;
                    b = b.with_http_client(client.clone());
                }
                b.build()
            }
            Protocol::Grpc => {
                let mut b = $builder
                    .with_tonic()
                    .with_protocol(opentelemetry_otlp::Protocol::Grpc)
                    .with_endpoint(otlp.signal.endpoint.clone());
                b = b.with_timeout(otlp.timeout);
                #[cfg(feature = "otlp-tls")]
                if let Some(tls) = &otlp.grpc_tls {
                    use opentelemetry_otlp::WithTonicConfig as _;
                    b = b.with_tls_config(tls.clone());
                }
                b.build()
            }
        }
        .map_err(|e| exporter_error(&e))
    }};
}

fn exporter_error(e: &dyn std::error::Error) -> SetupError {
    SetupError::Exporter(with_causes(e))
}

/// The sampler the checked variables name: built here, so that what was checked is what is
/// used (the SDK reads the variables untrimmed and falls back silently).
fn sampler(name: &str, ratio: f64) -> Sampler {
    match name {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatioBased(ratio),
        "parentbased_always_off" => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        "parentbased_traceidratio" => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
        }
        _ => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
    }
}

fn build_tracer(
    exporters: &[Exporter],
    otlp: &Otlp<'_>,
    resource: &Resource,
    sampler: Sampler,
) -> Result<Option<SdkTracerProvider>, SetupError> {
    if exporters.is_empty() {
        return Ok(None);
    }
    let mut b = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_sampler(sampler);
    for e in exporters {
        b = match e {
            Exporter::Console => {
                b.with_batch_exporter(opentelemetry_stdout::SpanExporter::default())
            }
            // metrics only (the environment is refused otherwise)
            Exporter::Prometheus => b,
            Exporter::Otlp => b.with_batch_exporter(Warned::new(
                otlp_exporter!(opentelemetry_otlp::SpanExporter::builder(), otlp)?,
                "traces",
                otlp,
            )),
        };
    }
    Ok(Some(b.build()))
}

fn build_meter(
    exporters: &[Exporter],
    otlp: &Otlp<'_>,
    resource: &Resource,
    prometheus: &mut Option<MetricsEndpoint>,
) -> Result<Option<SdkMeterProvider>, SetupError> {
    if exporters.is_empty() {
        return Ok(None);
    }
    let mut b = SdkMeterProvider::builder().with_resource(resource.clone());
    for e in exporters {
        b = match e {
            #[cfg(feature = "prometheus")]
            Exporter::Prometheus => {
                let registry = prometheus::Registry::new();
                let reader = opentelemetry_prometheus::exporter()
                    .with_registry(registry.clone())
                    .build()
                    .map_err(|e| exporter_error(&e))?;
                *prometheus = Some(MetricsEndpoint {
                    registry: Arc::new(registry),
                });
                b.with_reader(reader)
            }
            #[cfg(not(feature = "prometheus"))]
            Exporter::Prometheus => {
                let _ = prometheus;
                b
            }
            Exporter::Console => {
                b.with_periodic_exporter(opentelemetry_stdout::MetricExporter::default())
            }
            Exporter::Otlp => b.with_periodic_exporter(Warned::new(
                otlp_exporter!(opentelemetry_otlp::MetricExporter::builder(), otlp)?,
                "metrics",
                otlp,
            )),
        };
    }
    Ok(Some(b.build()))
}

fn build_logger(
    exporters: &[Exporter],
    otlp: &Otlp<'_>,
    resource: &Resource,
) -> Result<Option<SdkLoggerProvider>, SetupError> {
    if exporters.is_empty() {
        return Ok(None);
    }
    let mut b = SdkLoggerProvider::builder().with_resource(resource.clone());
    for e in exporters {
        b = match e {
            Exporter::Console => {
                b.with_batch_exporter(opentelemetry_stdout::LogExporter::default())
            }
            // metrics only (the environment is refused otherwise)
            Exporter::Prometheus => b,
            Exporter::Otlp => b.with_batch_exporter(Warned::new(
                otlp_exporter!(opentelemetry_otlp::LogExporter::builder(), otlp)?,
                "logs",
                otlp,
            )),
        };
    }
    Ok(Some(b.build()))
}

/// Read the environment and install everything: `Setup::new().install()` ([`Setup`] for
/// overrides in code).
///
/// # Errors
///
/// As [`Setup::install`].
pub fn init() -> Result<TelemetryGuard, SetupError> {
    Setup::new().install()
}

/// The providers [`init`] installed: flushed and shut down when dropped or on
/// [`TelemetryGuard::shutdown`], within the set-up's timeout, from inside or outside a Tokio
/// runtime (the work runs on a thread of its own, never on a runtime's worker).
#[must_use = "dropping the guard shuts the telemetry down"]
pub struct TelemetryGuard {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
    logger: Option<SdkLoggerProvider>,
    summary: String,
    timeout: Duration,
    /// The runtime the gRPC exporters' connections and the Prometheus server run on (one thread
    /// of its own): they work whether or not the application runs Tokio, and shut down while
    /// the application's current-thread runtime is blocked in the guard's drop.
    runtime: Option<OtlpRuntime>,
    #[cfg_attr(not(feature = "prometheus"), allow(dead_code))]
    prometheus: Option<MetricsEndpoint>,
    /// Where the Prometheus endpoint is served on a port of its own.
    #[cfg(feature = "prometheus")]
    metrics_address: Option<std::net::SocketAddr>,
}

impl fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("summary", &self.summary)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl TelemetryGuard {
    /// The tracer provider (for `with_tracer_provider`), unless traces go nowhere.
    #[must_use]
    pub fn tracer_provider(&self) -> Option<&SdkTracerProvider> {
        self.tracer.as_ref()
    }

    /// The meter provider (for `with_meter_provider`), unless metrics go nowhere.
    #[must_use]
    pub fn meter_provider(&self) -> Option<&SdkMeterProvider> {
        self.meter.as_ref()
    }

    /// The logger provider, unless logs go nowhere.
    #[must_use]
    pub fn logger_provider(&self) -> Option<&SdkLoggerProvider> {
        self.logger.as_ref()
    }

    /// The Prometheus endpoint to mount, when metrics are served for scraping
    /// ([`Setup::with_prometheus`] or `OTEL_METRICS_EXPORTER=prometheus`):
    ///
    /// ```no_run
    /// # fn app(telemetry: &tower_otel_http::setup::TelemetryGuard) -> axum::Router {
    /// # let router = axum::Router::new();
    /// let router = match telemetry.metrics_endpoint() {
    ///     Some(metrics) => router.route_service("/metrics", metrics),
    ///     None => router,
    /// };
    /// # router }
    /// ```
    #[cfg(feature = "prometheus")]
    #[must_use]
    pub fn metrics_endpoint(&self) -> Option<MetricsEndpoint> {
        self.prometheus.clone()
    }

    /// Where the metrics are served on a port of their own (feature `prometheus`): set when
    /// `OTEL_EXPORTER_PROMETHEUS_HOST` or `OTEL_EXPORTER_PROMETHEUS_PORT` is (`localhost` and
    /// `9464` when not; port `0` takes a free one), as the specification has the Prometheus
    /// exporter do. Every path answers with the metrics; the server stops with the guard's
    /// shutdown, its port given back by the time that returns.
    #[cfg(feature = "prometheus")]
    #[must_use]
    pub fn metrics_address(&self) -> Option<std::net::SocketAddr> {
        self.metrics_address
    }

    /// What was set up, in one line (the line logged at start).
    #[must_use]
    pub fn summary(&self) -> &str {
        &self.summary
    }

    /// Flush and shut down now; `false` when it did not finish within the timeout (what was
    /// not exported by then is lost).
    pub fn shutdown(mut self) -> bool {
        self.shutdown_now()
    }

    fn shutdown_now(&mut self) -> bool {
        let (tracer, meter, logger) = (self.tracer.take(), self.meter.take(), self.logger.take());
        if tracer.is_some() {
            // the traces started from now on are not this set-up's
            crate::propagation::set_global_roots_random(false);
        }
        if tracer.is_none() && meter.is_none() && logger.is_none() {
            drop(self.runtime.take());
            return true;
        }
        let (tx, rx) = mpsc::channel();
        let runtime = self.runtime.take();
        let spawned = std::thread::Builder::new()
            .name("tower-otel-http-shutdown".into())
            .spawn(move || {
                if let Some(t) = tracer {
                    let _ = t.shutdown();
                }
                if let Some(m) = meter {
                    let _ = m.shutdown();
                }
                if let Some(l) = logger {
                    let _ = l.shutdown();
                }
                // the runtime after the providers (the gRPC exporters flush on it), waited for
                // here, off any runtime: the Prometheus server's port is given back by then
                if let Some(rt) = runtime.and_then(|mut r| r.0.take()) {
                    rt.shutdown_timeout(Duration::from_millis(500));
                }
                let _ = tx.send(());
            });
        let done = spawned.is_ok() && rx.recv_timeout(self.timeout).is_ok();
        if !done {
            tracing::warn!(
                target: "tower_otel_http",
                "telemetry: the shutdown did not finish within {:?}: what was not exported by then is lost",
                self.timeout
            );
        }
        drop(self.runtime.take());
        done
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<EnvConfig, SetupError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        read_env(&move |k| map.get(k).cloned())
    }

    fn rejects(pairs: &[(&str, &str)], var: &str) {
        match env(pairs) {
            Err(SetupError::Invalid { var: v, .. }) => assert_eq!(v, var, "{pairs:?}"),
            other => panic!("{pairs:?}: {other:?}"),
        }
    }

    #[test]
    fn sdk_disabled_is_true_or_false_with_a_warning() {
        // the specification: anything but true is false (a warning, not an error)
        let e = env(&[("OTEL_SDK_DISABLED", "yes")]).unwrap();
        assert!(!e.disabled);
        assert!(
            e.warnings[0].contains("OTEL_SDK_DISABLED"),
            "{:?}",
            e.warnings
        );
        assert!(env(&[("OTEL_SDK_DISABLED", "TRUE")]).unwrap().disabled);
        assert!(env(&[("OTEL_SDK_DISABLED", "false")])
            .unwrap()
            .warnings
            .is_empty());
    }

    #[test]
    fn values_are_case_insensitive_and_lists_forgiving() {
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "GRPC"),
            ("OTEL_PROPAGATORS", "TraceContext,,baggage, tracecontext"),
            ("OTEL_TRACES_SAMPLER", " ParentBased_TraceIdRatio "),
            ("OTEL_TRACES_SAMPLER_ARG", " 0.25 "),
            ("OTEL_TRACES_EXPORTER", "otlp,console,otlp,"),
        ])
        .unwrap();
        assert_eq!(e.traces.protocol, Protocol::Grpc);
        assert_eq!(e.propagators, ["tracecontext", "baggage"]);
        assert_eq!(e.sampler, "parentbased_traceidratio");
        assert_eq!(e.ratio, 0.25);
        assert_eq!(e.traces.exporters, [Exporter::Otlp, Exporter::Console]);
        // what was checked is what is used: the sampler is built here
        let built = format!("{:?}", sampler(&e.sampler, e.ratio));
        assert!(
            built.contains("ParentBased") && built.contains("TraceIdRatioBased(0.25)"),
            "{built}"
        );
        let off = format!("{:?}", sampler("always_off", 1.0));
        assert_eq!(off, "AlwaysOff");
    }

    #[test]
    fn endpoints_are_http_or_https_urls() {
        rejects(
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318")],
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        );
        rejects(
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector:4318")],
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        );
        // the base gets /v1/<signal>, the per-signal one is taken whole and checked
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "HTTP://collector:4318/"),
            (
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                "http://logs:4318/custom",
            ),
        ])
        .unwrap();
        assert_eq!(e.traces.endpoint, "HTTP://collector:4318/v1/traces");
        assert_eq!(e.logs.endpoint, "http://logs:4318/custom");
        assert_eq!(e.metrics.tls, None);
        rejects(
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "logs:4318/v1/logs"),
            ],
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
        );
        // a signal that does not export over OTLP is not checked
        assert!(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "nonsense"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://collector:4318/v1/traces"
            ),
            ("OTEL_METRICS_EXPORTER", "none"),
            ("OTEL_LOGS_EXPORTER", "console"),
        ])
        .is_ok());
        // disabled: nothing is exported, nothing to check
        assert!(env(&[
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "nonsense"),
        ])
        .is_ok());
        // https: with the feature otlp-tls, or a clear error naming it
        let https = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c")]);
        if cfg!(feature = "otlp-tls") {
            let e = https.unwrap();
            assert_eq!(e.traces.endpoint, "https://c/v1/traces");
            assert_eq!(e.traces.tls, Some(TlsFiles::default()));
        } else {
            let e = https.unwrap_err();
            // what `main() -> Result<_, Box<dyn Error>>` prints: the readable message
            assert!(
                format!("{e:?}").starts_with(
                    "telemetry set-up: OTEL_EXPORTER_OTLP_ENDPOINT=\"https://c\" is not supported"
                ) && e.to_string().contains("otlp-tls"),
                "{e:?}"
            );
        }
    }

    #[test]
    fn a_grpc_endpoint_without_a_scheme_follows_insecure() {
        let grpc = |extra: &[(&str, &str)]| {
            let mut pairs = vec![
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
            ];
            pairs.extend_from_slice(extra);
            env(&pairs)
        };
        let e = grpc(&[("OTEL_EXPORTER_OTLP_INSECURE", "TRUE")]).unwrap();
        assert_eq!(e.traces.endpoint, "http://collector:4317");
        assert_eq!(e.traces.tls, None);
        // per signal first
        let e = grpc(&[
            ("OTEL_EXPORTER_OTLP_INSECURE", "false"),
            ("OTEL_EXPORTER_OTLP_LOGS_INSECURE", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
            ("OTEL_METRICS_EXPORTER", "console"),
        ])
        .unwrap();
        assert_eq!(e.logs.endpoint, "http://collector:4317");
        // anything but true/false is false, with a warning, said once
        let e = grpc(&[("OTEL_EXPORTER_OTLP_INSECURE", "yes")]);
        if cfg!(feature = "otlp-tls") {
            let e = e.unwrap();
            for s in [&e.traces, &e.metrics, &e.logs] {
                assert_eq!(s.endpoint, "https://collector:4317");
            }
            assert_eq!(e.warnings.len(), 1, "{:?}", e.warnings);
            assert!(
                e.warnings[0].contains("OTEL_EXPORTER_OTLP_INSECURE"),
                "{:?}",
                e.warnings
            );
        } else {
            assert!(e.is_err());
        }
        let secure = grpc(&[]);
        if cfg!(feature = "otlp-tls") {
            assert_eq!(secure.unwrap().traces.endpoint, "https://collector:4317");
        } else {
            let e = secure.unwrap_err();
            assert!(e.to_string().contains("INSECURE"), "{e}");
        }
        // an explicit scheme wins over INSECURE
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "false"),
        ])
        .unwrap();
        assert_eq!(e.traces.endpoint, "http://collector:4317");
        assert_eq!(e.traces.tls, None);
    }

    /// A fresh directory under the system's temporary one, removed when dropped.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("tower-otel-http-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn certificate_variables_are_read_and_checked() {
        let scratch = Scratch::new("certs");
        let dir = &scratch.0;
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let client = rcgen::generate_simple_self_signed(vec!["client".into()]).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path.to_str().unwrap().to_owned()
        };
        let ca_pem = write("ca.pem", &ca.cert.pem());
        let cert_pem = write("client.pem", &client.cert.pem());
        let key_pem = write("client.key", &client.signing_key.serialize_pem());
        let garbage = write("garbage.pem", "not a certificate");
        let missing = dir.join("missing.pem").to_str().unwrap().to_owned();
        let https = ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318");

        // over plain http the files are not used, and that is said
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", &missing),
        ])
        .unwrap();
        assert!(
            e.warnings.len() == 1
                && e.warnings[0].contains("OTEL_EXPORTER_OTLP_CERTIFICATE is set")
                && e.warnings[0].contains("not used"),
            "{:?}",
            e.warnings
        );
        if !cfg!(feature = "otlp-tls") {
            return;
        }
        // used by one signal over https, unused by another over http: no warning
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            (
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                "https://logs:4318/v1/logs",
            ),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca_pem),
        ])
        .unwrap();
        assert!(e.warnings.is_empty(), "{:?}", e.warnings);
        assert!(e.logs.tls.is_some() && e.traces.tls.is_none());
        let e = env(&[
            https,
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca_pem),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &cert_pem),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &key_pem),
            // per signal first
            ("OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE", &cert_pem),
        ])
        .unwrap();
        let tls = e.traces.tls.unwrap();
        assert_eq!(tls.ca.as_deref(), Some(ca.cert.pem().as_bytes()));
        let (chain, key) = tls.identity.unwrap();
        assert_eq!(chain, client.cert.pem().as_bytes());
        assert_eq!(key, client.signing_key.serialize_pem().as_bytes());
        assert_eq!(
            e.logs.tls.unwrap().ca.as_deref(),
            Some(client.cert.pem().as_bytes())
        );
        // a file that cannot be read, or holds no certificate: an error naming both
        for (var, path, problem) in [
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", &missing, "No such file"),
            (
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                &garbage,
                "no PEM certificate",
            ),
            (
                "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                &key_pem,
                "no PEM certificate",
            ),
        ] {
            match env(&[https, (var, path)]) {
                Err(e @ SetupError::File { .. }) => {
                    let text = e.to_string();
                    assert!(
                        text.starts_with(&format!("{var}={path:?}: ")) && text.contains(problem),
                        "{text}"
                    );
                }
                other => panic!("{var}={path}: {other:?}"),
            }
        }
        // a key that is not one
        match env(&[
            https,
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &cert_pem),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &ca_pem),
        ]) {
            Err(SetupError::File { var, .. }) => assert_eq!(var, "OTEL_EXPORTER_OTLP_CLIENT_KEY"),
            other => panic!("{other:?}"),
        }
        // a key that is not the certificate's: said at set-up, with the cause
        let e = env(&[
            https,
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &cert_pem),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &key_pem),
        ])
        .unwrap();
        let mut mismatched = e.traces.clone();
        if let Some(tls) = &mut mismatched.tls {
            tls.identity = Some((
                client.cert.pem().into_bytes(),
                ca.signing_key.serialize_pem().into_bytes(),
            ));
        }
        #[cfg(feature = "otlp-tls")]
        match Otlp::new(&mismatched, &[Exporter::Otlp], "traces", None) {
            Err(SetupError::Exporter(text)) => assert!(
                text.starts_with("traces to https://collector:4318/v1/traces: ")
                    && text.contains("client certificate and key"),
                "{text}"
            ),
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("a key that is not the certificate's was taken"),
        }
        // a certificate without its key, and a key without its certificate
        for (pairs, var, says) in [
            (
                vec![https, ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &*cert_pem)],
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                "needs its key, and traces has none",
            ),
            (
                vec![https, ("OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY", &*key_pem)],
                "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY",
                "needs its certificate, and metrics has none",
            ),
            // a signal's own certificate beside the general key: the others have no certificate
            (
                vec![
                    https,
                    ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", &*cert_pem),
                    ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &*key_pem),
                ],
                "OTEL_EXPORTER_OTLP_CLIENT_KEY",
                "needs its certificate, and metrics has none",
            ),
        ] {
            match env(&pairs) {
                Err(e @ SetupError::File { .. }) => {
                    let text = e.to_string();
                    assert!(text.starts_with(var) && text.contains(says), "{text}");
                }
                other => panic!("{pairs:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn prometheus_is_a_metrics_exporter_only() {
        rejects(
            &[("OTEL_TRACES_EXPORTER", "prometheus")],
            "OTEL_TRACES_EXPORTER",
        );
        rejects(
            &[("OTEL_LOGS_EXPORTER", "prometheus")],
            "OTEL_LOGS_EXPORTER",
        );
        let metrics = env(&[("OTEL_METRICS_EXPORTER", "otlp, prometheus")]);
        if cfg!(feature = "prometheus") {
            assert_eq!(
                metrics.unwrap().metrics.exporters,
                [Exporter::Otlp, Exporter::Prometheus]
            );
        } else {
            // without the feature: a clear error, not a silent fallback
            assert!(
                matches!(&metrics, Err(SetupError::Invalid { var, .. }) if var == "OTEL_METRICS_EXPORTER"),
                "{metrics:?}"
            );
        }
    }

    #[test]
    fn the_defaults_are_the_specifications() {
        let e = env(&[]).unwrap();
        assert!(!e.disabled);
        for s in [&e.traces, &e.metrics, &e.logs] {
            assert_eq!(s.exporters, [Exporter::Otlp]);
            assert_eq!(s.protocol, Protocol::HttpProtobuf);
        }
        assert_eq!(e.propagators, ["tracecontext", "baggage"]);
        assert!(!e.endpoint_set);
        assert_eq!(e.sampler, "parentbased_always_on");
    }

    #[test]
    fn each_variable_is_read() {
        let e = env(&[
            ("OTEL_SDK_DISABLED", "TRUE"),
            ("OTEL_TRACES_EXPORTER", "otlp,console"),
            ("OTEL_METRICS_EXPORTER", "none"),
            ("OTEL_LOGS_EXPORTER", "console"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/protobuf"),
            ("OTEL_PROPAGATORS", "tracecontext"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://collector:4318/v1/traces",
            ),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ])
        .unwrap();
        assert!(e.disabled);
        assert_eq!(e.traces.exporters, [Exporter::Otlp, Exporter::Console]);
        assert_eq!(e.traces.protocol, Protocol::Grpc);
        assert!(e.metrics.exporters.is_empty());
        assert_eq!(e.logs.exporters, [Exporter::Console]);
        assert_eq!(e.logs.protocol, Protocol::HttpProtobuf, "per signal first");
        assert_eq!(e.propagators, ["tracecontext"]);
        assert!(e.endpoint_set);
        assert!(env(&[("OTEL_PROPAGATORS", "none")])
            .unwrap()
            .propagators
            .is_empty());
        let e = env(&[("OTEL_EXPORTER_PROMETHEUS_HOST", "0.0.0.0")]).unwrap();
        assert_eq!(e.prometheus_server, Some(("0.0.0.0".into(), "9464".into())));
        // checked where used (metrics to prometheus), not here
        let e = env(&[("OTEL_EXPORTER_PROMETHEUS_PORT", "http")]).unwrap();
        assert_eq!(
            e.prometheus_server,
            Some(("localhost".into(), "http".into()))
        );
        assert_eq!(env(&[]).unwrap().prometheus_server, None);
        #[cfg(feature = "prometheus")]
        {
            assert_eq!(prometheus_port("9100").unwrap(), 9100);
            for bad in ["http", "65536", "-1"] {
                assert!(
                    matches!(prometheus_port(bad), Err(SetupError::Invalid { var, .. }) if var == "OTEL_EXPORTER_PROMETHEUS_PORT"),
                    "{bad}"
                );
            }
        }
        let e = env(&[("OTEL_METRIC_EXPORT_TIMEOUT", " 1500 ")]).unwrap();
        assert_eq!(e.metric_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(env(&[]).unwrap().metric_timeout, None);
    }

    #[test]
    fn causes_said_once() {
        assert_eq!(
            unrepeated("transport error: dns error: dns error: no such host"),
            "transport error: dns error: no such host"
        );
        assert_eq!(
            unrepeated(
                "invalid peer certificate: UnknownIssuer: invalid peer certificate: UnknownIssuer"
            ),
            "invalid peer certificate: UnknownIssuer"
        );
        assert_eq!(unrepeated("a: b: a: c"), "a: b: a: c");
    }

    #[test]
    fn export_timeouts_are_checked_and_chosen() {
        let e = env(&[]).unwrap();
        assert_eq!(e.traces.timeout, Duration::from_secs(10));
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
            ("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", " 300 "),
        ])
        .unwrap();
        assert_eq!(
            e.logs.timeout,
            Duration::from_millis(300),
            "per signal first"
        );
        assert_eq!(e.traces.timeout, Duration::from_secs(2));
        // where opentelemetry-otlp would skip it silently
        for bad in ["5s", "0", "-1"] {
            rejects(
                &[("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", bad)],
                "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
            );
        }
        // OTEL_METRIC_EXPORT_TIMEOUT: the metrics exporter's when shorter than its own
        let limit = |l| Otlp::new(&e.metrics, &[], "metrics", l).unwrap().timeout;
        assert_eq!(
            limit(Some(Duration::from_millis(500))),
            Duration::from_millis(500)
        );
        assert_eq!(limit(Some(Duration::from_secs(30))), Duration::from_secs(2));
        assert_eq!(limit(None), Duration::from_secs(2));
        rejects(
            &[("OTEL_METRIC_EXPORT_TIMEOUT", "0")],
            "OTEL_METRIC_EXPORT_TIMEOUT",
        );
        // read only where it is used
        assert!(env(&[
            ("OTEL_METRIC_EXPORT_TIMEOUT", "soon"),
            ("OTEL_METRICS_EXPORTER", "console"),
        ])
        .is_ok());
    }

    #[test]
    fn values_it_cannot_honour_are_errors() {
        rejects(
            &[("OTEL_TRACES_EXPORTER", "jaeger")],
            "OTEL_TRACES_EXPORTER",
        );
        // prometheus is one with the feature: prometheus_is_a_metrics_exporter_only
        rejects(
            &[("OTEL_METRICS_EXPORTER", "zipkin")],
            "OTEL_METRICS_EXPORTER",
        );
        rejects(
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        );
        rejects(
            &[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "udp")],
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        );
        rejects(
            &[("OTEL_PROPAGATORS", "tracecontext,b3")],
            "OTEL_PROPAGATORS",
        );
        rejects(
            &[("OTEL_METRIC_EXPORT_TIMEOUT", "5s")],
            "OTEL_METRIC_EXPORT_TIMEOUT",
        );
        // what the exporters would refuse later, with a message naming no variable
        for bad in [
            "http://collector:99999",
            "http://coll ector:4318",
            "http://:4318",
        ] {
            rejects(
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", bad)],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            );
        }
        for good in [
            "http://[::1]:4318",
            "http://[::1]",
            "http://u:p@c:4318",
            "http://c",
        ] {
            assert!(
                env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", good)]).is_ok(),
                "{good}"
            );
        }
        rejects(
            &[("OTEL_TRACES_SAMPLER", "sometimes")],
            "OTEL_TRACES_SAMPLER",
        );
        for arg in ["half", "1.5", "-0.1", "NaN"] {
            rejects(
                &[
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", arg),
                ],
                "OTEL_TRACES_SAMPLER_ARG",
            );
        }
        // an argument a sampler without a ratio ignores is no error
        assert!(env(&[
            ("OTEL_TRACES_SAMPLER", "always_on"),
            ("OTEL_TRACES_SAMPLER_ARG", "x")
        ])
        .is_ok());
        let e = env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "OTEL_EXPORTER_OTLP_PROTOCOL=\"http/json\" is not supported: expected http/protobuf or grpc"
        );
    }
}

/// The metrics in Prometheus' text format (feature `prometheus`): a tower `Service` that answers
/// every request with the current values — `Router::route_service("/metrics", endpoint)` — backed
/// by the meter provider the set-up installed (the layers' histograms with their route labels).
/// Only obtained from [`TelemetryGuard::metrics_endpoint`].
#[cfg(feature = "prometheus")]
#[derive(Clone)]
pub struct MetricsEndpoint {
    registry: Arc<prometheus::Registry>,
}

/// Without the feature `prometheus`: never made.
#[cfg(not(feature = "prometheus"))]
#[derive(Clone, Debug)]
#[allow(dead_code)]
struct MetricsEndpoint;

#[cfg(feature = "prometheus")]
impl fmt::Debug for MetricsEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsEndpoint").finish_non_exhaustive()
    }
}

#[cfg(feature = "prometheus")]
impl MetricsEndpoint {
    /// The registry the metrics are gathered from (for your own collectors, or to read them).
    #[must_use]
    pub fn registry(&self) -> &prometheus::Registry {
        &self.registry
    }

    /// The current metrics in the text exposition format.
    ///
    /// # Errors
    ///
    /// When the registry holds a metric the format cannot encode.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        prometheus::TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}

#[cfg(feature = "prometheus")]
impl<B> tower_service::Service<http::Request<B>> for MetricsEndpoint {
    type Response = http::Response<String>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<B>) -> Self::Future {
        let response = match self.render() {
            Ok(text) => http::Response::builder()
                .header(http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)
                .body(text),
            Err(e) => http::Response::builder()
                .status(http::StatusCode::INTERNAL_SERVER_ERROR)
                .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(format!("cannot encode the metrics: {e}")),
        };
        // the builder only fails on invalid parts, and these are constants
        std::future::ready(Ok(response.unwrap_or_default()))
    }
}

/// `OTEL_EXPORTER_PROMETHEUS_PORT`, checked.
#[cfg(feature = "prometheus")]
fn prometheus_port(port: &str) -> Result<u16, SetupError> {
    port.parse::<u16>().map_err(|_| {
        invalid(
            "OTEL_EXPORTER_PROMETHEUS_PORT",
            port,
            "a port number (0 to 65535; 0: any free one)",
        )
    })
}

/// How many scrapes the Prometheus endpoint serves at once; more wait to be accepted.
#[cfg(feature = "prometheus")]
const SCRAPES_AT_ONCE: usize = 16;

/// Serves `endpoint` on `listener` (HTTP/1.1, a scrape's headers within 10 s, at most
/// [`SCRAPES_AT_ONCE`] connections) until the runtime it runs on is shut down; the metrics are
/// gathered on a blocking thread (observable instruments call user code).
#[cfg(feature = "prometheus")]
async fn serve_metrics(listener: tokio::net::TcpListener, endpoint: MetricsEndpoint) {
    let slots = Arc::new(tokio::sync::Semaphore::new(SCRAPES_AT_ONCE));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            // out of file descriptors, say: not a busy loop
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: http::Request<_>| {
                let mut endpoint = endpoint.clone();
                async move {
                    let rendered = tokio::task::spawn_blocking(move || {
                        tower_service::Service::call(&mut endpoint, req).into_inner()
                    })
                    .await;
                    Ok::<_, std::convert::Infallible>(match rendered {
                        Ok(Ok(response)) => response,
                        _ => http::Response::builder()
                            .status(http::StatusCode::INTERNAL_SERVER_ERROR)
                            .body(String::new())
                            .unwrap_or_default(),
                    })
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                .await;
            drop(slot);
        });
    }
}

/// The runtime the gRPC exporters' connections and the Prometheus server run on (the guard's
/// shutdown waits for it on a thread of its own); shut down in the background when dropped,
/// never blocking (a runtime dropped inside another, e.g. when the set-up fails
/// under `#[tokio::main]`, would panic).
struct OtlpRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OtlpRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}
