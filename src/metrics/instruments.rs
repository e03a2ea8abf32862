use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use opentelemetry::global;
use opentelemetry::metrics::{Histogram, Meter, MeterProvider, UpDownCounter};

use super::DURATION_BUCKETS;
use crate::otel::Recheck;
use crate::side::HttpMetricNames;

/// Which optional instruments a layer records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MetricsOptions {
    pub(crate) active_requests: bool,
    pub(crate) request_body_size: bool,
    pub(crate) response_body_size: bool,
}

/// The instruments of one layer value, created once and shared by every clone and every
/// service the layer builds.
pub(crate) struct Instruments {
    pub(crate) duration: Histogram<f64>,
    /// `rpc.*.call.duration`, created at the first gRPC call this layer value records (an
    /// HTTP-only application never gets it).
    rpc_duration: OnceLock<Histogram<f64>>,
    meter: Meter,
    names: HttpMetricNames,
    pub(crate) active_requests: Option<UpDownCounter<i64>>,
    pub(crate) request_body_size: Option<Histogram<u64>>,
    pub(crate) response_body_size: Option<Histogram<u64>>,
}

impl fmt::Debug for Instruments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instruments")
            .field("active_requests", &self.active_requests.is_some())
            .field("request_body_size", &self.request_body_size.is_some())
            .field("response_body_size", &self.response_body_size.is_some())
            .finish_non_exhaustive()
    }
}

impl Instruments {
    /// `rpc.server.call.duration` / `rpc.client.call.duration`: the conventions' buckets (the
    /// same as HTTP's), seconds; created once per layer value.
    pub(crate) fn rpc_duration(&self) -> &Histogram<f64> {
        self.rpc_duration.get_or_init(|| {
            let who = self.names.who;
            self.meter
                .f64_histogram(self.names.rpc_duration)
                .with_description(format!("Duration of RPC {who} calls."))
                .with_unit("s")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build()
        })
    }

    pub(crate) fn new(meter: &Meter, names: HttpMetricNames, options: MetricsOptions) -> Self {
        let HttpMetricNames {
            duration,
            rpc_duration: _,
            active_requests: active,
            request_body_size: request_size,
            response_body_size: response_size,
            who,
        } = names;
        let size = |name: &'static str, what: &str| {
            meter
                .u64_histogram(name)
                .with_description(format!("Size of HTTP {who} {what} bodies."))
                .with_unit("By")
                .build()
        };
        Instruments {
            rpc_duration: OnceLock::new(),
            meter: meter.clone(),
            names,
            duration: meter
                .f64_histogram(duration)
                .with_description(format!("Duration of HTTP {who} requests."))
                .with_unit("s")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            active_requests: options.active_requests.then(|| {
                meter
                    .i64_up_down_counter(active)
                    .with_description(format!("Number of active HTTP {who} requests."))
                    .with_unit("{request}")
                    .build()
            }),
            request_body_size: options
                .request_body_size
                .then(|| size(request_size, "request")),
            response_body_size: options
                .response_body_size
                .then(|| size(response_size, "response")),
        }
    }
}

/// Which meter provider a layer records into.
#[derive(Clone)]
enum Provider {
    /// The global provider as it stands (per thread, see [`crate::otel`]).
    Global,
    /// A user-supplied provider.
    Fixed(Arc<Meter>),
    /// A user-supplied no-op provider: nothing to record, no per-request work.
    Noop,
}

/// The metrics settings of a layer value and the instruments derived from them.
#[derive(Clone)]
pub(crate) struct MeterSource {
    names: HttpMetricNames,
    enabled: bool,
    provider: Provider,
    options: MetricsOptions,
    /// The instruments of a user-supplied provider, created when the layer builds its first
    /// service; a fresh cell whenever a metrics setting changes (a new layer value).
    fixed: Arc<OnceLock<Instruments>>,
    /// The instruments for the global provider, created once per global provider.
    global: Arc<GlobalInstruments>,
}

impl fmt::Debug for MeterSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeterSource")
            .field("enabled", &self.enabled)
            .field(
                "provider",
                &match self.provider {
                    Provider::Global => "Global",
                    Provider::Fixed(_) => "Fixed",
                    Provider::Noop => "Noop",
                },
            )
            .field("options", &self.options)
            .finish()
    }
}

type DynProvider = Arc<dyn MeterProvider + Send + Sync>;

/// The instruments one layer value created for the global meter provider.
struct GlobalInstruments {
    /// Identifies this layer value in the per-thread caches.
    id: u64,
    current: Mutex<Option<(DynProvider, Arc<Instruments>)>>,
}

impl GlobalInstruments {
    fn new() -> Arc<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Arc::new(GlobalInstruments {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            current: Mutex::new(None),
        })
    }
}

/// What one thread last found in the global meter provider, per layer value.
struct ThreadMeter {
    id: u64,
    check: Recheck,
    /// `None`: the global provider is the no-op one.
    instruments: Option<Arc<Instruments>>,
}

/// Per-thread entries kept: layer values with the global provider in use on a thread (an
/// application has a few: a server layer, a client layer per downstream). Beyond this the
/// entries are dropped and rebuilt, each at the cost of one look at the global.
const THREAD_METERS: usize = 256;

thread_local! {
    static METERS: RefCell<Vec<ThreadMeter>> = const { RefCell::new(Vec::new()) };
}

/// opentelemetry 0.33 gives no way to ask whether the global meter provider is its no-op one.
/// Its no-op provider is a zero-sized type, and a provider that records anything holds state
/// (its pipeline), so a zero-sized global provider is taken for "no SDK installed": the layer
/// then measures nothing.
fn is_noop_provider(p: &DynProvider) -> bool {
    std::mem::size_of_val(&**p) == 0
}

impl MeterSource {
    pub(crate) fn new(names: HttpMetricNames) -> Self {
        MeterSource {
            names,
            enabled: true,
            provider: Provider::Global,
            options: MetricsOptions::default(),
            fixed: Arc::default(),
            global: GlobalInstruments::new(),
        }
    }

    /// A metrics setting changed: this layer value gets instruments of its own.
    fn renew(&mut self) {
        self.fixed = Arc::default();
        self.global = GlobalInstruments::new();
    }

    pub(crate) fn set_provider<P: MeterProvider + ?Sized + 'static>(&mut self, provider: &P) {
        self.provider = if std::any::TypeId::of::<P>()
            == std::any::TypeId::of::<opentelemetry::metrics::noop::NoopMeterProvider>()
        {
            Provider::Noop
        } else {
            Provider::Fixed(Arc::new(provider.meter_with_scope(crate::otel::scope())))
        };
        self.renew();
    }

    pub(crate) fn set_enabled(&mut self, enabled: bool) {
        self.enabled = enabled;
        self.renew();
    }

    #[cfg(feature = "reqwest")]
    pub(crate) fn options(&self) -> MetricsOptions {
        self.options
    }

    pub(crate) fn options_mut(&mut self) -> &mut MetricsOptions {
        self.renew();
        &mut self.options
    }

    /// Create the instruments now (called when the layer builds a service, so that creation
    /// happens at construction, not on the hot path).
    pub(crate) fn init(&self) {
        if let (true, Provider::Fixed(meter)) = (self.enabled, &self.provider) {
            self.fixed
                .get_or_init(|| Instruments::new(meter, self.names, self.options));
        }
    }

    /// At the start of a request: whether it is measured (for the global provider, this
    /// thread's view of it, looked at again every so many requests).
    pub(crate) fn starts(&self) -> bool {
        match (&self.provider, self.enabled) {
            (_, false) | (Provider::Noop, _) => false,
            (Provider::Fixed(_), true) => true,
            (Provider::Global, true) => self.thread_global(true, |i| i.is_some()),
        }
    }

    /// Run `f` with the instruments to record into, when there are any.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&Instruments) -> T) -> Option<T> {
        match (&self.provider, self.enabled) {
            (_, false) | (Provider::Noop, _) => None,
            (Provider::Fixed(meter), true) => Some(f(self
                .fixed
                .get_or_init(|| Instruments::new(meter, self.names, self.options)))),
            (Provider::Global, true) => {
                let mut f = Some(f);
                self.thread_global(false, |i| i.and_then(|i| f.take().map(|f| f(i))))
            }
        }
    }

    /// This thread's instruments for the global provider; `count`: this call starts a request
    /// (it counts towards the next look at the global).
    fn thread_global<T>(&self, count: bool, mut f: impl FnMut(Option<&Instruments>) -> T) -> T {
        let done = METERS.try_with(|m| {
            let Ok(mut m) = m.try_borrow_mut() else {
                // re-entered (an SDK call back into a layer on this thread): the global itself
                return f(self.global_instruments().as_deref());
            };
            let at = match m.iter().position(|e| e.id == self.global.id) {
                Some(at) => at,
                None => {
                    if m.len() >= THREAD_METERS {
                        m.clear();
                    }
                    m.push(ThreadMeter {
                        id: self.global.id,
                        check: Recheck::default(),
                        instruments: None,
                    });
                    m.len() - 1
                }
            };
            let e = &mut m[at];
            // while the global is the no-op one, every request looks (the first request after
            // `global::set_meter_provider` is measured on every thread), and a request that
            // ends on a thread that has not seen the provider yet looks now
            let unseen = e.instruments.is_none();
            if unseen || (count && e.check.due()) {
                e.instruments = self.global_instruments();
            }
            f(e.instruments.as_deref())
        });
        // the thread is going away: look at the global directly
        done.unwrap_or_else(|_| f(self.global_instruments().as_deref()))
    }

    /// The instruments for the global provider as it stands, created once per provider for
    /// this layer value; `None` while it is the no-op one.
    fn global_instruments(&self) -> Option<Arc<Instruments>> {
        let provider = global::meter_provider();
        if is_noop_provider(&provider) {
            return None;
        }
        let mut current = self.global.current.lock().ok()?;
        if let Some((p, i)) = current.as_ref() {
            if Arc::ptr_eq(p, &provider) {
                return Some(i.clone());
            }
        }
        let meter = provider.meter_with_scope(crate::otel::scope());
        let instruments = Arc::new(Instruments::new(&meter, self.names, self.options));
        *current = Some((provider, instruments.clone()));
        Some(instruments)
    }
}
