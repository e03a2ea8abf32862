//! Server CPU per request over loopback TCP.
//!
//! Each server variant is served by a child process of its own (`peers serve <variant>`: its
//! global state, its router, `axum::serve` on 127.0.0.1:0 in a current-thread runtime, so one
//! core serves). This process sends it a fixed number of keep-alive requests over a few
//! connections with a plain hyper-util client, bracketed by `start`/`stop` on the child's
//! stdin; the child answers `stop` with its own `getrusage(RUSAGE_SELF)` user + system time
//! since `start` (every thread of the child: the batch exporter's too) and the spans its
//! exporter was given.
//!
//! The children all live for the whole measurement and are loaded in interleaved rounds, like
//! the in-process variants: the ratio to bare is taken within each round.

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::measure::{percentile, TRACEPARENTS_SEEN};
use crate::sdk::{exported, flush_all, Inbound};
use crate::variants::Srv;

/// Connections the load is spread over (each sends its requests one after the other).
const CONNECTIONS: usize = 4;

fn cpu_ns() -> u64 {
    // SAFETY: getrusage only writes the struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut ru), 0);
        ru
    };
    let t = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1_000;
    t(ru.ru_utime) + t(ru.ru_stime)
}

async fn listen() -> (tokio::net::TcpListener, u16) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

async fn serve_router(listener: tokio::net::TcpListener, router: axum::Router) {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router).await.unwrap();
}

/// The child: `peers serve <variant>`.
pub fn serve(id: &str) {
    let v = Srv::from_id(id).unwrap_or_else(|| panic!("no server variant {id:?}"));
    v.env().install();
    let router = v.router();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (listener, port) = rt.block_on(listen());
    println!("port {port}");
    std::io::stdout().flush().unwrap();
    std::thread::spawn(control);
    rt.block_on(serve_router(listener, router));
}

/// The child's control channel: `start`, `stop`, anything else (or end of input) exits.
fn control() {
    let mut out = std::io::stdout();
    let mut at_start = (0, 0);
    for line in std::io::stdin().lock().lines() {
        match line.as_deref().map(str::trim) {
            Ok("start") => {
                flush_all();
                at_start = (cpu_ns(), exported());
                writeln!(out, "ok").unwrap();
            }
            Ok("stop") => {
                // the export work the load caused is part of its cost: flushed, then read
                flush_all();
                let cpu = cpu_ns() - at_start.0;
                let spans = exported() - at_start.1;
                writeln!(out, "cpu_ns {cpu} spans {spans}").unwrap();
            }
            _ => break,
        }
        out.flush().unwrap();
    }
    std::process::exit(0);
}

/// A bare router on loopback in a thread of this process (its own current-thread runtime),
/// counting the requests that carry a `traceparent`; returns the port.
pub fn loopback() -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (listener, port) = listen().await;
            tx.send(port).unwrap();
            let router = crate::sdk::app().layer(axum::middleware::map_request(
                |req: Request<axum::body::Body>| async move {
                    if req.headers().contains_key("traceparent") {
                        TRACEPARENTS_SEEN.fetch_add(1, Ordering::Relaxed);
                    }
                    req
                },
            ));
            serve_router(listener, router).await;
        });
    });
    rx.recv().unwrap()
}

struct Child {
    srv: Srv,
    process: std::process::Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    uri: Uri,
}

impl Child {
    fn spawn(srv: Srv) -> Child {
        let exe = std::env::current_exe().unwrap();
        let mut process = Command::new(exe)
            .args(["serve", srv.id()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = process.stdin.take().unwrap();
        let mut stdout = BufReader::new(process.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let port: u16 = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("child {} said {line:?}", srv.id()));
        Child {
            srv,
            process,
            stdin,
            stdout,
            uri: format!("http://127.0.0.1:{port}/api/users/42")
                .parse()
                .unwrap(),
        }
    }

    fn say(&mut self, what: &str) -> String {
        writeln!(self.stdin, "{what}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line
    }

    /// CPU ns and spans for the load `f` puts on this child.
    fn measured(&mut self, f: impl FnOnce(&Uri)) -> (u64, u64) {
        assert_eq!(self.say("start").trim(), "ok", "child {}", self.srv.id());
        f(&self.uri);
        let line = self.say("stop");
        let mut words = line.split_whitespace();
        let mut field = |name: &str| -> u64 {
            assert_eq!(
                words.next(),
                Some(name),
                "child {} said {line:?}",
                self.srv.id()
            );
            words.next().unwrap().parse().unwrap()
        };
        let cpu = field("cpu_ns");
        let spans = field("spans");
        (cpu, spans)
    }
}

type LoadClient = Client<HttpConnector, Empty<Bytes>>;

async fn load(client: &LoadClient, uri: &Uri, inbound: Inbound, n: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..CONNECTIONS {
        let count = n / CONNECTIONS + usize::from(c < n % CONNECTIONS);
        let client = client.clone();
        let uri = uri.clone();
        tasks.spawn(async move {
            for _ in 0..count {
                let mut req = Request::get(uri.clone())
                    .header("host", "api.example.com")
                    .header("user-agent", "bench/1.0");
                if let Some(tp) = inbound.traceparent() {
                    req = req.header("traceparent", tp);
                }
                let resp = client
                    .request(req.body(Empty::new()).unwrap())
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(&body[..], b"user");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

/// One server variant over TCP: median µs of server CPU per request, its per-round ratio to
/// bare (p25, p50, p75), and the spans its exporter got per request.
#[derive(Clone, Copy, Debug)]
pub struct TcpResult {
    pub srv: Srv,
    pub us: f64,
    pub p25: f64,
    pub p50: f64,
    pub p75: f64,
    pub spans_per_request: f64,
}

/// Loads every variant (the first must be bare) `rounds` times with `per_round` requests.
pub fn measure(servers: &[Srv], rounds: usize, per_round: usize, warmup: usize) -> Vec<TcpResult> {
    assert_eq!(servers[0], Srv::Bare);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: LoadClient = {
        let _guard = rt.enter();
        Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(CONNECTIONS)
            .build(connector)
    };
    let mut children: Vec<Child> = servers.iter().map(|s| Child::spawn(*s)).collect();
    for c in &mut children {
        let inbound = c.srv.inbound();
        rt.block_on(load(&client, &c.uri, inbound, warmup));
    }
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
    let mut spans = vec![0u64; servers.len()];
    for round in 0..rounds {
        eprint!(" {}", round + 1);
        for k in 0..servers.len() {
            let i = (round + k) % servers.len();
            let inbound = servers[i].inbound();
            let (ns, n_spans) = children[i].measured(|uri| {
                rt.block_on(load(&client, uri, inbound, per_round));
            });
            cpu[i].push(ns as f64 / 1000.0 / per_round as f64);
            spans[i] += n_spans;
        }
    }
    eprintln!();
    for mut c in children {
        let _ = writeln!(c.stdin, "quit");
        drop(c.stdin);
        let _ = c.process.wait();
    }
    (0..servers.len())
        .map(|i| {
            let ratios: Vec<f64> = (0..rounds).map(|r| cpu[i][r] / cpu[0][r]).collect();
            TcpResult {
                srv: servers[i],
                us: percentile(cpu[i].clone(), 0.5),
                p25: percentile(ratios.clone(), 0.25),
                p50: percentile(ratios.clone(), 0.5),
                p75: percentile(ratios, 0.75),
                spans_per_request: spans[i] as f64 / (rounds * per_round) as f64,
            }
        })
        .collect()
}
