use std::fmt;
use std::sync::{Arc, OnceLock, RwLock};

use opentelemetry::global;
use opentelemetry::metrics::{Histogram, Meter, MeterProvider, UpDownCounter};
use opentelemetry_semantic_conventions::metric as m;

use super::DURATION_BUCKETS;

/// Which optional instruments a layer records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MetricsOptions {
    pub(crate) active_requests: bool,
    pub(crate) request_body_size: bool,
    pub(crate) response_body_size: bool,
}

/// The instruments of one layer value, created once and shared (behind an `Arc`) by every clone
/// and every service the layer builds.
pub(crate) struct ServerInstruments {
    pub(crate) duration: Histogram<f64>,
    pub(crate) active_requests: Option<UpDownCounter<i64>>,
    pub(crate) request_body_size: Option<Histogram<u64>>,
    pub(crate) response_body_size: Option<Histogram<u64>>,
}

impl fmt::Debug for ServerInstruments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerInstruments")
            .field("active_requests", &self.active_requests.is_some())
            .field("request_body_size", &self.request_body_size.is_some())
            .field("response_body_size", &self.response_body_size.is_some())
            .finish_non_exhaustive()
    }
}

impl ServerInstruments {
    pub(crate) fn new(meter: &Meter, options: MetricsOptions) -> Self {
        ServerInstruments {
            duration: meter
                .f64_histogram(m::HTTP_SERVER_REQUEST_DURATION)
                .with_description("Duration of HTTP server requests.")
                .with_unit("s")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            active_requests: options.active_requests.then(|| {
                meter
                    .i64_up_down_counter(m::HTTP_SERVER_ACTIVE_REQUESTS)
                    .with_description("Number of active HTTP server requests.")
                    .with_unit("{request}")
                    .build()
            }),
            request_body_size: options.request_body_size.then(|| {
                meter
                    .u64_histogram(m::HTTP_SERVER_REQUEST_BODY_SIZE)
                    .with_description("Size of HTTP server request bodies.")
                    .with_unit("By")
                    .build()
            }),
            response_body_size: options.response_body_size.then(|| {
                meter
                    .u64_histogram(m::HTTP_SERVER_RESPONSE_BODY_SIZE)
                    .with_description("Size of HTTP server response bodies.")
                    .with_unit("By")
                    .build()
            }),
        }
    }
}

/// The instruments a request records into: the layer's own (reached through the layer's
/// configuration, which the request holds anyway: no reference count touched per request), or
/// those of the global provider as it stood when the request started.
pub(crate) enum RequestInstruments {
    Layer,
    Global(Arc<ServerInstruments>),
}

/// Where the meter comes from.
#[derive(Clone)]
pub(crate) enum MeterSource {
    /// Metrics are off.
    Off,
    /// A user-supplied no-op provider: nothing to record, no per-request work.
    Noop,
    /// A user-supplied provider; instruments created once, when the layer builds its first
    /// service.
    Fixed(Arc<Meter>, Arc<OnceLock<ServerInstruments>>),
    /// The global provider as it stands: instruments created once per global provider.
    Global(Arc<GlobalInstruments>),
}

impl fmt::Debug for MeterSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MeterSource::Off => "MeterSource::Off",
            MeterSource::Noop => "MeterSource::Noop",
            MeterSource::Fixed(..) => "MeterSource::Fixed",
            MeterSource::Global(_) => "MeterSource::Global",
        })
    }
}

type Provider = Arc<dyn MeterProvider + Send + Sync>;

#[derive(Default)]
pub(crate) struct GlobalInstruments {
    current: RwLock<Option<(Provider, Arc<ServerInstruments>)>>,
    /// Paces the looks at the global provider (wall-clock nanoseconds).
    pace: crate::otel::Pace,
}

impl MeterSource {
    pub(crate) fn fixed<P: MeterProvider + ?Sized + 'static>(provider: &P) -> Self {
        if std::any::TypeId::of::<P>()
            == std::any::TypeId::of::<opentelemetry::metrics::noop::NoopMeterProvider>()
        {
            return MeterSource::Noop;
        }
        MeterSource::Fixed(
            Arc::new(provider.meter_with_scope(crate::otel::scope())),
            Arc::default(),
        )
    }

    pub(crate) fn global() -> Self {
        MeterSource::Global(Arc::default())
    }

    /// A source with fresh (not yet created) instruments and the same provider.
    pub(crate) fn reset(&self) -> Self {
        match self {
            MeterSource::Off => MeterSource::Off,
            MeterSource::Noop => MeterSource::Noop,
            MeterSource::Fixed(meter, _) => MeterSource::Fixed(meter.clone(), Arc::default()),
            MeterSource::Global(_) => MeterSource::global(),
        }
    }

    /// Whether requests are measured at all (no clock read otherwise).
    pub(crate) fn records(&self) -> bool {
        !matches!(self, MeterSource::Off | MeterSource::Noop)
    }

    /// The instruments for a request (see [`RequestInstruments`]). `now_nanos` (wall clock,
    /// already read for the span's start) paces the look at the global provider.
    pub(crate) fn for_request(
        &self,
        options: MetricsOptions,
        now_nanos: u64,
    ) -> Option<RequestInstruments> {
        match self {
            MeterSource::Off | MeterSource::Noop => None,
            MeterSource::Fixed(meter, cell) => {
                cell.get_or_init(|| ServerInstruments::new(meter, options));
                Some(RequestInstruments::Layer)
            }
            MeterSource::Global(g) => {
                global_instruments(g, options, Some(now_nanos)).map(RequestInstruments::Global)
            }
        }
    }

    /// The instruments of a user-supplied provider, once created.
    pub(crate) fn layer_instruments(&self) -> Option<&ServerInstruments> {
        match self {
            MeterSource::Fixed(_, cell) => cell.get(),
            _ => None,
        }
    }

    /// Create the instruments now if they do not exist yet (called when the layer builds a
    /// service, so that creation happens at construction, not on the hot path).
    pub(crate) fn init(&self, options: MetricsOptions) {
        match self {
            MeterSource::Off | MeterSource::Noop => {}
            MeterSource::Fixed(meter, cell) => {
                cell.get_or_init(|| ServerInstruments::new(meter, options));
            }
            MeterSource::Global(g) => {
                let _ = global_instruments(g, options, None);
            }
        }
    }
}

/// The instruments for the global meter provider as it stands, created once per provider;
/// looked at again at most every 50 ms of `now_nanos` (`None`: look now).
fn global_instruments(
    g: &GlobalInstruments,
    options: MetricsOptions,
    now_nanos: Option<u64>,
) -> Option<Arc<ServerInstruments>> {
    if let Some(now) = now_nanos {
        if !g.pace.claim(now) {
            if let Some((_, inst)) = g.current.read().ok()?.as_ref() {
                return Some(inst.clone());
            }
        }
    }
    let provider = global::meter_provider();
    if let Some((p, inst)) = g.current.read().ok()?.as_ref() {
        if Arc::ptr_eq(p, &provider) {
            return Some(inst.clone());
        }
    }
    let mut w = g.current.write().ok()?;
    if let Some((p, inst)) = w.as_ref() {
        if Arc::ptr_eq(p, &provider) {
            return Some(inst.clone());
        }
    }
    let meter = provider.meter_with_scope(crate::otel::scope());
    let inst = Arc::new(ServerInstruments::new(&meter, options));
    *w = Some((provider, inst.clone()));
    Some(inst)
}
