//! Helpers for the hardening tests (faults, attacks, soak): real servers on 127.0.0.1:0, raw TCP,
//! span exporters that count or misbehave, and the process's resident memory.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use opentelemetry::trace::SpanKind;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One test at a time in a binary whose tests measure the process's memory (the tests of one
/// binary share the process).
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// The process's resident set size (`VmRSS` in /proc/self/status), in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS value");
    kib * 1024
}

pub const MIB: u64 = 1024 * 1024;

/// Serve `app` on 127.0.0.1:0 with `ConnectInfo` (peer addresses).
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// Send raw bytes over a new connection and read until the peer closes, `until` has been read,
/// or 10 s passed.
pub async fn raw(addr: SocketAddr, request: &[u8], until: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let read = async {
        loop {
            let n = s.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&out).contains(until) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Poll `f` every 10 ms until it is true, for at most `secs` seconds; returns its last value.
pub async fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return f();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------- exporters

/// A check run on every exported span.
pub type Check = Box<dyn Fn(&SpanData) -> Result<(), String> + Send + Sync>;

/// Counts spans per kind and keeps a bounded sample (the first `keep`), so that a load of
/// thousands of requests does not itself grow the memory the test measures. `check` runs on
/// every span; the first failures are kept.
pub struct Probe {
    pub server: AtomicUsize,
    pub client: AtomicUsize,
    pub other: AtomicUsize,
    keep: usize,
    pub sample: Mutex<Vec<SpanData>>,
    check: Check,
    pub failures: Mutex<Vec<String>>,
    pub failed: AtomicUsize,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe").finish_non_exhaustive()
    }
}

impl Probe {
    pub fn new(
        keep: usize,
        check: impl Fn(&SpanData) -> Result<(), String> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Probe {
            server: AtomicUsize::new(0),
            client: AtomicUsize::new(0),
            other: AtomicUsize::new(0),
            keep,
            sample: Mutex::new(Vec::new()),
            check: Box::new(check),
            failures: Mutex::new(Vec::new()),
            failed: AtomicUsize::new(0),
        })
    }

    pub fn total(&self) -> usize {
        self.server.load(Ordering::SeqCst)
            + self.client.load(Ordering::SeqCst)
            + self.other.load(Ordering::SeqCst)
    }

    pub fn servers(&self) -> usize {
        self.server.load(Ordering::SeqCst)
    }

    pub fn clients(&self) -> usize {
        self.client.load(Ordering::SeqCst)
    }

    /// Panics with the first failures if `check` failed on any span.
    pub fn assert_checks_passed(&self) {
        let failed = self.failed.load(Ordering::SeqCst);
        assert_eq!(
            failed,
            0,
            "{failed} spans failed the check, first ones: {:#?}",
            self.failures.lock().unwrap()
        );
    }

    pub fn sample(&self) -> Vec<SpanData> {
        self.sample.lock().unwrap().clone()
    }

    fn take(&self, span: SpanData) {
        match span.span_kind {
            SpanKind::Server => &self.server,
            SpanKind::Client => &self.client,
            _ => &self.other,
        }
        .fetch_add(1, Ordering::SeqCst);
        if let Err(e) = (self.check)(&span) {
            self.failed.fetch_add(1, Ordering::SeqCst);
            let mut f = self.failures.lock().unwrap();
            if f.len() < 5 {
                f.push(format!("{e}: {} {:?}", span.name, span.attributes));
            }
        }
        let mut s = self.sample.lock().unwrap();
        if s.len() < self.keep {
            s.push(span);
        }
    }
}

/// A [`SpanExporter`] over a shared [`Probe`].
#[derive(Debug, Clone)]
pub struct ProbeExporter(pub Arc<Probe>);

impl SpanExporter for ProbeExporter {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        for span in batch {
            self.0.take(span);
        }
        std::future::ready(Ok(()))
    }
}

/// An exporter whose export blocks its thread until released (or 120 s passed), counting the
/// spans it was finally handed.
#[derive(Debug, Clone, Default)]
pub struct BlockingExporter {
    pub released: Arc<AtomicBool>,
    pub calls: Arc<AtomicUsize>,
    pub received: Arc<AtomicUsize>,
}

impl SpanExporter for BlockingExporter {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let start = Instant::now();
        while !self.released.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.received.fetch_add(batch.len(), Ordering::SeqCst);
        std::future::ready(Ok(()))
    }
}

/// An exporter that always fails, counting its calls.
#[derive(Debug, Clone, Default)]
pub struct FailingExporter {
    pub calls: Arc<AtomicUsize>,
    pub spans: Arc<AtomicUsize>,
}

impl SpanExporter for FailingExporter {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.spans.fetch_add(batch.len(), Ordering::SeqCst);
        std::future::ready(Err(OTelSdkError::InternalFailure(
            "collector unreachable".into(),
        )))
    }
}

// ---------------------------------------------------------------- span attributes

pub fn str_attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

/// The recorded value of a header-capture attribute (a string array), joined with `,`.
pub fn header_attr(span: &SpanData, key: &str) -> Option<Vec<String>> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| match &kv.value {
            opentelemetry::Value::Array(opentelemetry::Array::String(v)) => {
                v.iter().map(|s| s.as_str().to_owned()).collect()
            }
            other => panic!("{key} is not a string array: {other:?}"),
        })
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn prefix_within(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
