//! Every variant, the process it runs in and the process-global state that process installs.

use axum::Router;
use opentelemetry::metrics::noop::NoopMeterProvider;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::noop::NoopTracerProvider;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tower_otel_http::OtelLayer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer as _;

use crate::sdk::{app, ratio_tracer, sdk, Inbound};

/// The process-global state a process installs before it builds anything. Variants that need
/// different global state run in different processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Env {
    /// Nothing global: every layer is given its providers.
    Plain,
    /// The SDK as the global tracer and meter providers, W3C Trace Context as the global
    /// propagator (the README's "Getting telemetry out" setup).
    Global,
    /// Only a global W3C propagator (no SDK installed).
    Propagator,
    /// A global `tracing_subscriber::fmt` subscriber at INFO with `logs::JsonFormat`.
    FmtJson,
    /// The same with `logs::TextFormat`.
    FmtText,
    /// The globals of `Global` and a global `tracing` subscriber with tracing-opentelemetry's
    /// layer on the same SDK: what the tracing-based peers need.
    Tracing,
    /// The OpenTelemetry 0.32 line's globals and subscriber, for reqwest-tracing.
    Otel032,
}

impl Env {
    pub fn install(self) {
        let s = sdk();
        let globals = || {
            opentelemetry::global::set_tracer_provider(s.tracer.clone());
            opentelemetry::global::set_meter_provider(s.meters.clone());
            opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        };
        match self {
            Env::Plain => {}
            Env::Global => globals(),
            Env::Propagator => {
                opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new())
            }
            // nothing is logged by the handler: the writer is never written to (a sink, so that
            // a stray line could not mix with this process's report on stdout)
            // the setup the crate's docs give: `logs::json_layer()` / `logs::text_layer()`
            Env::FmtJson => tracing::subscriber::set_global_default(
                tracing_subscriber::registry().with(
                    tower_otel_http::logs::json_layer()
                        .with_writer(std::io::sink)
                        .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
                ),
            )
            .expect("a global subscriber was already set"),
            Env::FmtText => tracing::subscriber::set_global_default(
                tracing_subscriber::registry().with(
                    tower_otel_http::logs::text_layer()
                        .with_writer(std::io::sink)
                        .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
                ),
            )
            .expect("a global subscriber was already set"),
            Env::Tracing => {
                globals();
                let layer = tracing_opentelemetry::layer().with_tracer(s.tracer.tracer("peers"));
                tracing::subscriber::set_global_default(
                    tracing_subscriber::registry()
                        .with(tracing_filter())
                        .with(layer),
                )
                .expect("a global subscriber was already set");
            }
            Env::Otel032 => crate::otel032::install(),
        }
    }
}

/// The `tracing` filter of the tracing-based peers' processes: INFO, as the fmt variants,
/// with the directives that make each peer's spans pass it (without them, at INFO,
/// axum-tracing-opentelemetry and tower-http's `TraceLayer` export nothing):
/// `otel::tracing=trace` (axum-tracing-opentelemetry's spans are TRACE on that target, its
/// `init-tracing-opentelemetry` adds the same directive) and `tower_http=debug` (`TraceLayer`'s
/// spans and events are DEBUG; tower-http's examples use this directive). tower-otel is given
/// INFO, reqwest-tracing's spans are INFO.
pub fn tracing_filter() -> tracing_subscriber::filter::Targets {
    use tracing::Level;
    let only_info = std::env::var_os("PEERS_TRACING_INFO_ONLY").is_some();
    let t = tracing_subscriber::filter::Targets::new().with_default(Level::INFO);
    if only_info {
        return t;
    }
    t.with_target("otel::tracing", Level::TRACE)
        .with_target("tower_http", Level::DEBUG)
}

/// How many spans a variant should export per request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Expect {
    None,
    One,
    About(f64),
    /// A peer: at least some (its shape is reported, not judged).
    Some,
}

/// The server variants: the layer (or none) on [`app`]'s root router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Srv {
    Bare,
    Ours,
    OursUnsampledParent,
    OursRatio10,
    OursMetricsOnly,
    OursAll,
    OursNoop,
    OursGlobal,
    OtelTower,
    OursNoopPropagator,
    OursJson,
    OursText,
    AxumTracing,
    TowerHttp,
    TowerOtel,
}

pub const SERVERS: [Srv; 15] = [
    Srv::Bare,
    Srv::Ours,
    Srv::OursUnsampledParent,
    Srv::OursRatio10,
    Srv::OursMetricsOnly,
    Srv::OursAll,
    Srv::OursNoop,
    Srv::OursGlobal,
    Srv::OtelTower,
    Srv::OursNoopPropagator,
    Srv::OursJson,
    Srv::OursText,
    Srv::AxumTracing,
    Srv::TowerHttp,
    Srv::TowerOtel,
];

impl Srv {
    pub fn id(self) -> &'static str {
        match self {
            Srv::Bare => "bare",
            Srv::Ours => "ours",
            Srv::OursUnsampledParent => "ours-unsampled-parent",
            Srv::OursRatio10 => "ours-ratio-10",
            Srv::OursMetricsOnly => "ours-metrics-only",
            Srv::OursAll => "ours-all-metrics",
            Srv::OursNoop => "ours-noop",
            Srv::OursGlobal => "ours-global",
            Srv::OtelTower => "opentelemetry-instrumentation-tower",
            Srv::OursNoopPropagator => "ours-noop-global-propagator",
            Srv::OursJson => "ours-fmt-json",
            Srv::OursText => "ours-fmt-text",
            Srv::AxumTracing => "axum-tracing-opentelemetry",
            Srv::TowerHttp => "tower-http-trace",
            Srv::TowerOtel => "tower-otel",
        }
    }

    pub fn from_id(id: &str) -> Option<Srv> {
        SERVERS.into_iter().find(|s| s.id() == id)
    }

    pub fn label(self) -> &'static str {
        match self {
            Srv::Bare => "bare axum",
            Srv::Ours => "**ours**: default one-liner, explicit providers",
            Srv::OursUnsampledParent => {
                "ours: parent-based sampler, unsampled inbound parent (flags 00)"
            }
            Srv::OursRatio10 => "ours: ParentBased(TraceIdRatioBased(0.1)), no inbound parent",
            Srv::OursMetricsOnly => "ours: metrics only",
            Srv::OursAll => "ours: everything (`with_all_metrics()`)",
            Srv::OursNoop => "ours: no-op providers, no global propagator",
            Srv::OursGlobal => "**ours**: default one-liner on the global providers",
            Srv::OtelTower => "opentelemetry-instrumentation-tower 0.19 (spans + metrics)",
            Srv::OursNoopPropagator => "ours: no-op providers, global W3C propagator installed",
            Srv::OursJson => "ours: default one-liner, fmt subscriber at INFO, `logs::json_layer()`",
            Srv::OursText => "ours: default one-liner, fmt subscriber at INFO, `logs::text_layer()`",
            Srv::AxumTracing => {
                "axum-tracing-opentelemetry 0.42 (`OtelAxumLayer` + `OtelInResponseLayer`)"
            }
            Srv::TowerHttp => "tower-http 0.7 `TraceLayer::new_for_http()` + tracing-opentelemetry",
            Srv::TowerOtel => "tower-otel 0.12 (trace + metrics layers)",
        }
    }

    /// The process-global state of the variant's process (bare runs in every server process).
    pub fn env(self) -> Env {
        match self {
            Srv::Bare
            | Srv::Ours
            | Srv::OursUnsampledParent
            | Srv::OursRatio10
            | Srv::OursMetricsOnly
            | Srv::OursAll
            | Srv::OursNoop => Env::Plain,
            Srv::OursGlobal | Srv::OtelTower => Env::Global,
            Srv::OursNoopPropagator => Env::Propagator,
            Srv::OursJson => Env::FmtJson,
            Srv::OursText => Env::FmtText,
            Srv::AxumTracing | Srv::TowerHttp | Srv::TowerOtel => Env::Tracing,
        }
    }

    pub fn inbound(self) -> Inbound {
        match self {
            Srv::OursUnsampledParent => Inbound::Unsampled,
            Srv::OursRatio10 => Inbound::None,
            _ => Inbound::Sampled,
        }
    }

    pub fn expect(self) -> Expect {
        match self {
            Srv::Bare
            | Srv::OursUnsampledParent
            | Srv::OursMetricsOnly
            | Srv::OursNoop
            | Srv::OursNoopPropagator => Expect::None,
            Srv::Ours | Srv::OursAll | Srv::OursGlobal | Srv::OursJson | Srv::OursText => {
                Expect::One
            }
            Srv::OursRatio10 => Expect::About(0.1),
            Srv::OtelTower | Srv::AxumTracing | Srv::TowerHttp | Srv::TowerOtel => Expect::Some,
        }
    }

    /// The router with the variant's layer on the root (after [`Env::install`]: some peers read
    /// the globals when their layer is built).
    pub fn router(self) -> Router {
        let s = sdk();
        let ours = || {
            OtelLayer::server()
                .with_tracer_provider(&s.tracer)
                .with_meter_provider(&s.meters)
        };
        let noop = || {
            OtelLayer::server()
                .with_tracer_provider(&NoopTracerProvider::new())
                .with_meter_provider(&NoopMeterProvider::new())
        };
        match self {
            Srv::Bare => app(),
            Srv::Ours | Srv::OursUnsampledParent | Srv::OursJson | Srv::OursText => {
                app().layer(ours())
            }
            Srv::OursRatio10 => app().layer(
                OtelLayer::server()
                    .with_tracer_provider(ratio_tracer())
                    .with_meter_provider(&s.meters),
            ),
            Srv::OursMetricsOnly => app().layer(
                OtelLayer::server()
                    .with_spans(false)
                    .with_meter_provider(&s.meters),
            ),
            Srv::OursAll => app().layer(ours().with_all_metrics().with_counted_request_bodies()),
            Srv::OursNoop | Srv::OursNoopPropagator => app().layer(noop()),
            Srv::OursGlobal => app().layer(OtelLayer::server()),
            Srv::OtelTower => {
                use opentelemetry_instrumentation_tower::http::extractors::AxumMatchedPathExtractor;
                use opentelemetry_instrumentation_tower::http::server::LayerBuilder;
                // reads the global tracer and meter providers here, at build time
                app().layer(
                    LayerBuilder::builder()
                        .with_route_extractor(AxumMatchedPathExtractor)
                        .build()
                        .expect("opentelemetry-instrumentation-tower layer"),
                )
            }
            Srv::AxumTracing => {
                use axum_tracing_opentelemetry::middleware::{OtelAxumLayer, OtelInResponseLayer};
                app()
                    .layer(OtelInResponseLayer)
                    .layer(OtelAxumLayer::default())
            }
            Srv::TowerHttp => app().layer(tower_http::trace::TraceLayer::new_for_http()),
            Srv::TowerOtel => {
                let meter = s.meters.meter("tower-otel");
                app()
                    .layer(tower_otel::trace::http::HttpLayer::server(
                        tracing::Level::INFO,
                    ))
                    .layer(tower_otel::metrics::http::HttpLayer::server(&meter))
            }
        }
    }
}

/// The client variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cli {
    MockBare,
    MockOurs,
    ReqwestBare,
    ReqwestOurs,
    ReqwestBare032,
    ReqwestTracing,
}

impl Cli {
    pub fn id(self) -> &'static str {
        match self {
            Cli::MockBare => "mock-bare",
            Cli::MockOurs => "mock-ours",
            Cli::ReqwestBare => "reqwest-bare",
            Cli::ReqwestOurs => "reqwest-ours",
            Cli::ReqwestBare032 => "reqwest-bare-032",
            Cli::ReqwestTracing => "reqwest-tracing",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Cli::MockBare => "bare mock transport (`service_fn`, response at once)",
            Cli::MockOurs => "**ours**: client layer around the mock transport",
            Cli::ReqwestBare => "bare reqwest, loopback server",
            Cli::ReqwestOurs => "**ours**: reqwest-middleware + `OtelClientLayer`",
            Cli::ReqwestBare032 => "bare reqwest, loopback server",
            Cli::ReqwestTracing => "reqwest-tracing 0.7.1 `TracingMiddleware` (OTel 0.32 line)",
        }
    }

    pub fn expect(self) -> Expect {
        match self {
            Cli::MockBare | Cli::ReqwestBare | Cli::ReqwestBare032 => Expect::None,
            Cli::MockOurs | Cli::ReqwestOurs => Expect::One,
            Cli::ReqwestTracing => Expect::Some,
        }
    }
}

/// A variant of either side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Server(Srv),
    Client(Cli),
}

impl Variant {
    pub fn id(self) -> &'static str {
        match self {
            Variant::Server(s) => s.id(),
            Variant::Client(c) => c.id(),
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Variant::Server(s) => s.label(),
            Variant::Client(c) => c.label(),
        }
    }
    pub fn expect(self) -> Expect {
        match self {
            Variant::Server(s) => s.expect(),
            Variant::Client(c) => c.expect(),
        }
    }
    pub fn inbound(self) -> Inbound {
        match self {
            Variant::Server(s) => s.inbound(),
            Variant::Client(_) => Inbound::None,
        }
    }
}

/// The in-process groups: one process each, the first variant the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Plain,
    Global,
    Propagator,
    FmtJson,
    FmtText,
    Tracing,
    ClientMock,
    ClientReqwest,
    ClientReqwest032,
}

pub const GROUPS: [Group; 9] = [
    Group::Plain,
    Group::Global,
    Group::Propagator,
    Group::FmtJson,
    Group::FmtText,
    Group::Tracing,
    Group::ClientMock,
    Group::ClientReqwest,
    Group::ClientReqwest032,
];

impl Group {
    pub fn id(self) -> &'static str {
        match self {
            Group::Plain => "plain",
            Group::Global => "global",
            Group::Propagator => "propagator",
            Group::FmtJson => "fmt-json",
            Group::FmtText => "fmt-text",
            Group::Tracing => "tracing",
            Group::ClientMock => "client-mock",
            Group::ClientReqwest => "client-reqwest",
            Group::ClientReqwest032 => "client-reqwest-032",
        }
    }

    pub fn from_id(id: &str) -> Option<Group> {
        GROUPS.into_iter().find(|g| g.id() == id)
    }

    pub fn describe(self) -> &'static str {
        match self {
            Group::Plain => "no global state",
            Group::Global => "SDK as the global providers, global W3C propagator",
            Group::Propagator => "only a global W3C propagator",
            Group::FmtJson => "global fmt subscriber, INFO, `logs::json_layer()`",
            Group::FmtText => "global fmt subscriber, INFO, `logs::text_layer()`",
            Group::Tracing => "globals + global subscriber with tracing-opentelemetry 0.34",
            Group::ClientMock => "client, no global state",
            Group::ClientReqwest => "client, loopback server in a thread, no global state",
            Group::ClientReqwest032 => {
                "client, loopback server, OTel 0.32 globals + tracing-opentelemetry 0.33"
            }
        }
    }

    pub fn env(self) -> Env {
        match self {
            Group::Plain | Group::ClientMock | Group::ClientReqwest => Env::Plain,
            Group::Global => Env::Global,
            Group::Propagator => Env::Propagator,
            Group::FmtJson => Env::FmtJson,
            Group::FmtText => Env::FmtText,
            Group::Tracing => Env::Tracing,
            Group::ClientReqwest032 => Env::Otel032,
        }
    }

    pub fn variants(self) -> Vec<Variant> {
        match self {
            Group::ClientMock => vec![
                Variant::Client(Cli::MockBare),
                Variant::Client(Cli::MockOurs),
            ],
            Group::ClientReqwest => vec![
                Variant::Client(Cli::ReqwestBare),
                Variant::Client(Cli::ReqwestOurs),
            ],
            Group::ClientReqwest032 => vec![
                Variant::Client(Cli::ReqwestBare032),
                Variant::Client(Cli::ReqwestTracing),
            ],
            _ => SERVERS
                .into_iter()
                .filter(|s| *s == Srv::Bare || s.env() == self.env())
                .map(Variant::Server)
                .collect(),
        }
    }
}
