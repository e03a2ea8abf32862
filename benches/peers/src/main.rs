//! Per-request overhead of tower-otel-http against the crates a user would pick instead, in one
//! run: see README.md beside Cargo.toml. `./run.sh` (or `QUICK=1 ./run.sh`) builds and runs it.
//!
//! ```text
//! peers                 everything: each group in a process of its own, then TCP; one table
//! peers group <group>   one in-process group (prints ROW lines of JSON)
//! peers tcp             only the loopback TCP measurement
//! peers serve <variant> a TCP child (driven through stdin by `peers` / `peers tcp`)
//! peers grpc            gRPC: bare tonic, ours, tonic-tracing-opentelemetry (src/grpc.rs)
//! ```

mod grpc;
mod measure;
mod otel032;
mod sdk;
mod tcp;
mod variants;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{json, Value};
use tower::Layer as _;
use tower_otel_http::OtelLayer;

use measure::{Case, Exported};
use sdk::{Inbound, PARENT_ID, TRACE_ID};
use variants::{Cli, Expect, Group, Srv, Variant, GROUPS, SERVERS};

/// Sizes of a run: `QUICK=1` for a smoke test; `PEERS_ROUNDS`, `PEERS_TCP_ROUNDS` and
/// `PEERS_TCP_REQUESTS` (per variant, over all rounds) override.
struct Config {
    quick: bool,
    rounds: usize,
    batch: u32,
    check: u32,
    allocs: u32,
    tcp_rounds: usize,
    tcp_requests: usize,
    tcp_warmup: usize,
}

impl Config {
    fn from_env() -> Config {
        let quick = std::env::var("QUICK").is_ok_and(|q| !q.is_empty() && q != "0");
        let num = |name: &str, default: usize| -> usize {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        Config {
            quick,
            rounds: num("PEERS_ROUNDS", if quick { 6 } else { 300 }),
            batch: 500,
            check: if quick { 200 } else { 1000 },
            allocs: if quick { 200 } else { 2000 },
            tcp_rounds: num("PEERS_TCP_ROUNDS", if quick { 2 } else { 12 }).max(1),
            tcp_requests: num("PEERS_TCP_REQUESTS", if quick { 1000 } else { 60_000 }),
            tcp_warmup: if quick { 200 } else { 1000 },
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] | ["all"] => all(),
        ["group", g] => group(Group::from_id(g).unwrap_or_else(|| usage())),
        ["serve", v] => tcp::serve(v),
        // for instruction counts: `valgrind --tool=callgrind peers count <variant> <n>` at two
        // sizes, the difference removes start-up
        ["count", v, n] => {
            let n = n.parse().unwrap_or_else(|_| usage());
            if !grpc::count(v, n) {
                count(v, n)
            }
        }
        ["grpc"] => {
            let cfg = Config::from_env();
            if !grpc::all(cfg.rounds, cfg.batch, cfg.allocs) {
                std::process::exit(1);
            }
        }
        ["grpc-group", g] => {
            let cfg = Config::from_env();
            grpc::group(g, cfg.rounds, cfg.batch, cfg.allocs)
        }
        ["tcp"] => {
            let cfg = Config::from_env();
            let results = tcp_measure(&cfg);
            for r in results {
                println!(
                    "{:40} {:7.2} µs  × bare {:.2} ({:.2}–{:.2})  spans/req {:.2}",
                    r.srv.id(),
                    r.us,
                    r.p50,
                    r.p25,
                    r.p75,
                    r.spans_per_request
                );
            }
        }
        _ => usage(),
    }
}

/// `n` requests through one server variant on this thread, nothing measured: the process to
/// count instructions of.
fn count(variant: &str, n: usize) {
    let srv = variants::Srv::from_id(variant).unwrap_or_else(|| usage());
    srv.env().install();
    let case = build_case(variants::Variant::Server(srv), None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for _ in 0..n {
        rt.block_on(measure::call(&case));
    }
}

fn usage() -> ! {
    eprintln!("usage: peers [all | group <group> | tcp | serve <variant> | count <variant> <n>]");
    eprintln!("groups: {}", GROUPS.map(|g| g.id()).join(", "));
    eprintln!("server variants: {}", SERVERS.map(|s| s.id()).join(", "));
    std::process::exit(2);
}

fn reqwest_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .user_agent("bench/1.0")
        .build()
        .unwrap()
}

fn build_case(v: Variant, port: Option<u16>) -> Case {
    let s = sdk::sdk();
    let url = || format!("http://127.0.0.1:{}/api/users/42", port.unwrap());
    let ours_client = || {
        OtelLayer::client()
            .with_tracer_provider(&s.tracer)
            .with_meter_provider(&s.meters)
    };
    match v {
        Variant::Server(srv) => Case::Router(srv.router(), srv.inbound()),
        Variant::Client(Cli::MockBare) => Case::Mock(measure::mock()),
        Variant::Client(Cli::MockOurs) => Case::MockOurs(ours_client().layer(measure::mock())),
        Variant::Client(Cli::ReqwestBare | Cli::ReqwestBare032) => {
            Case::Reqwest(reqwest_client(), url())
        }
        Variant::Client(Cli::ReqwestOurs) => Case::ReqwestMiddleware(
            reqwest_middleware::ClientBuilder::new(reqwest_client())
                .with(ours_client())
                .build(),
            url(),
        ),
        Variant::Client(Cli::ReqwestTracing) => Case::ReqwestMiddleware(
            reqwest_middleware::ClientBuilder::new(reqwest_client())
                .with(reqwest_tracing::TracingMiddleware::default())
                .build(),
            url(),
        ),
    }
}

/// The check of what a variant exported: a text for the table and, when a variant that should
/// export exported nothing, the failure.
fn check(v: Variant, ex: &Exported, tcp_spans: Option<f64>) -> (String, Option<String>) {
    let rate = ex.spans_per_request;
    let mut text = format!("{rate:.2}/req");
    let mut failure = None;
    let warn = |w: &str, text: &mut String| text.push_str(&format!(" ⚠ {w}"));
    match v.expect() {
        Expect::None if rate > 0.0 => warn("expected none", &mut text),
        Expect::None => text.push_str(" (none expected)"),
        Expect::One | Expect::About(_) | Expect::Some if rate == 0.0 => {
            failure = Some(format!(
                "variant `{}` ({}) exported no span: its telemetry does not reach the SDK",
                v.id(),
                v.label()
            ));
            text.push_str(" ✗ FAILED: nothing exported");
        }
        Expect::One if (rate - 1.0).abs() > 0.005 => warn("expected 1/req", &mut text),
        Expect::About(p) if rate < p / 2.0 || rate > p * 2.0 => {
            warn(&format!("expected ≈ {p:.2}/req"), &mut text)
        }
        _ => text.push_str(" ✓"),
    }
    if let Some(t) = tcp_spans {
        text.push_str(&format!(", TCP {t:.2}/req"));
        if t == 0.0 && !matches!(v.expect(), Expect::None) && failure.is_none() {
            failure = Some(format!(
                "variant `{}` exported no span when served over TCP",
                v.id()
            ));
            text.push_str(" ✗");
        }
    }
    // what the spans are: names and kinds, and where they hang in the trace
    let mut shapes: Vec<String> = Vec::new();
    for s in &ex.samples {
        let place = if s.trace_id == TRACE_ID && s.parent_span_id == PARENT_ID {
            "child of the inbound parent"
        } else if s.trace_id == TRACE_ID {
            "in the inbound trace, not its child"
        } else if s.parent_span_id == "0000000000000000" {
            if v.inbound() == Inbound::Sampled {
                "new root: inbound parent ignored"
            } else {
                "root"
            }
        } else {
            "child of a local span"
        };
        let mut shape = format!(
            "`{}` {}, {} attributes",
            s.name,
            s.kind.to_lowercase(),
            s.attributes
        );
        if s.events > 0 {
            shape.push_str(&format!(", {} events", s.events));
        }
        if matches!(v, Variant::Server(_)) && !s.has_route {
            shape.push_str(", no `http.route`");
        }
        if !s.has_status_code {
            shape.push_str(", no `http.response.status_code`");
        }
        for k in &s.not_int {
            shape.push_str(&format!(", `{k}`"));
        }
        shape.push_str(", ");
        shape.push_str(place);
        if !shapes.contains(&shape) {
            shapes.push(shape);
        }
    }
    if !shapes.is_empty() {
        text.push_str(" — ");
        text.push_str(&shapes.join("; "));
    }
    if matches!(v, Variant::Client(_)) {
        let tp = ex.traceparents_per_request;
        text.push_str(&format!("; `traceparent` sent {tp:.2}/req"));
        if tp == 0.0 && !matches!(v.expect(), Expect::None) {
            text.push_str(" ⚠");
        }
    }
    (text, failure)
}

/// One in-process group, in this process: prints a `ROW {json}` line per variant.
fn group(g: Group) {
    let cfg = Config::from_env();
    g.env().install();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let port = matches!(g, Group::ClientReqwest | Group::ClientReqwest032).then(tcp::loopback);
    let variants = g.variants();
    let cases: Vec<Case> = {
        let _guard = rt.enter();
        variants.iter().map(|v| build_case(*v, port)).collect()
    };
    let exported: Vec<Exported> = cases
        .iter()
        .map(|c| measure::exported(&rt, c, cfg.check))
        .collect();
    let allocs: Vec<f64> = cases
        .iter()
        .map(|c| measure::allocations(&rt, c, cfg.allocs))
        .collect();
    let timing = measure::interleaved(&rt, &cases, cfg.rounds, cfg.batch);
    let mut failed = false;
    for (i, v) in variants.iter().enumerate() {
        let (check, failure) = check(*v, &exported[i], None);
        let row = json!({
            "group": g.id(),
            "id": v.id(),
            "ns": timing[i].ns,
            "p25": timing[i].p25,
            "p50": timing[i].p50,
            "p75": timing[i].p75,
            "allocs": allocs[i],
            "allocs_over": allocs[i] - allocs[0],
            "spans_per_request": exported[i].spans_per_request,
            "traceparents_per_request": exported[i].traceparents_per_request,
            "samples": exported[i].samples.iter().take(8).map(|s| json!({
                "name": s.name, "kind": s.kind, "trace_id": s.trace_id,
                "parent_span_id": s.parent_span_id, "has_route": s.has_route,
                "attributes": s.attributes, "events": s.events, "has_status_code": s.has_status_code, "not_int": s.not_int,
            })).collect::<Vec<_>>(),
            "check": check,
            "failure": failure,
        });
        println!("ROW {row}");
        failed |= row["failure"].is_string();
    }
    if failed {
        // a check failed (the rows say which); `peers` reports it from the rows
        std::process::exit(CHECK_FAILED);
    }
}

/// Exit status of `peers group` when a variant's check failed.
const CHECK_FAILED: i32 = 3;

fn tcp_measure(cfg: &Config) -> Vec<tcp::TcpResult> {
    let per_round = (cfg.tcp_requests / cfg.tcp_rounds).max(1);
    eprint!(
        "TCP: {} server processes, {} rounds of {per_round} requests each, round",
        SERVERS.len(),
        cfg.tcp_rounds
    );
    tcp::measure(&SERVERS, cfg.tcp_rounds, per_round, cfg.tcp_warmup)
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Everything: each group in a child process, then TCP, then the table.
fn all() {
    let started = Instant::now();
    let cfg = Config::from_env();
    let only: Option<Vec<String>> = std::env::var("PEERS_ONLY")
        .ok()
        .map(|s| s.split(',').map(str::to_owned).collect());
    let wanted = |id: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == id));
    let exe = std::env::current_exe().unwrap();
    let mut failures: Vec<String> = Vec::new();
    let mut rows: Vec<(Group, Vec<Value>)> = Vec::new();
    for g in GROUPS.into_iter().filter(|g| wanted(g.id())) {
        eprintln!("group {} ({}) ...", g.id(), g.describe());
        let out = Command::new(&exe)
            .args(["group", g.id()])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        if !out.status.success() && out.status.code() != Some(CHECK_FAILED) {
            failures.push(format!(
                "group `{}` failed ({}): see its output above",
                g.id(),
                out.status
            ));
        }
        let parsed: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("ROW "))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        rows.push((g, parsed));
    }
    let tcp: HashMap<&'static str, tcp::TcpResult> = if wanted("tcp") {
        tcp_measure(&cfg)
            .into_iter()
            .map(|r| (r.srv.id(), r))
            .collect()
    } else {
        HashMap::new()
    };

    let commit = sh(
        "git",
        &[
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ],
    );
    let dirty = !sh(
        "git",
        &[
            "-C",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../.."),
            "status",
            "--porcelain",
            "--",
            "src",
            "Cargo.toml",
        ],
    )
    .is_empty();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "tower-otel-http peers bench — {} — commit {commit}{} — {cores} cores, {cpu}{}",
        sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        if dirty { " (src modified)" } else { "" },
        if cfg.quick {
            " — QUICK mode: smoke test, figures meaningless"
        } else {
            ""
        },
    );
    println!(
        "in-process: {} rounds × {} requests per variant, median of per-round ratios to the process's baseline (p25–p75); \
         TCP: {} requests per variant in {} rounds, server process CPU (user + system)",
        cfg.rounds, cfg.batch, cfg.tcp_requests, cfg.tcp_rounds
    );
    println!();
    println!("| variant | ns/request | × bare | allocations over bare | server CPU µs/request (TCP) | exported spans check |");
    println!("|---|---:|---:|---:|---:|---|");
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    for (g, group_rows) in &rows {
        println!("| *process `{}`: {}* | | | | | |", g.id(), g.describe());
        for (i, r) in group_rows.iter().enumerate() {
            let id = r["id"].as_str().unwrap_or("?");
            let variant = Srv::from_id(id)
                .map(Variant::Server)
                .or_else(|| g.variants().into_iter().find(|v| v.id() == id));
            let Some(variant) = variant else { continue };
            let tcp_r = match variant {
                Variant::Server(s) => tcp.get(s.id()),
                Variant::Client(_) => None,
            };
            let tcp_cell = match tcp_r {
                Some(t) if t.srv == Srv::Bare => format!("{:.1}", t.us),
                Some(t) => format!(
                    "{:.1} ({:.2}× bare, {:.2}–{:.2})",
                    t.us, t.p50, t.p25, t.p75
                ),
                None => "—".into(),
            };
            // the check again, with the TCP child's count
            let samples: Vec<sdk::SpanInfo> = r["samples"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|s| sdk::SpanInfo {
                            name: s["name"].as_str().unwrap_or("").into(),
                            kind: s["kind"].as_str().unwrap_or("").into(),
                            trace_id: s["trace_id"].as_str().unwrap_or("").into(),
                            parent_span_id: s["parent_span_id"].as_str().unwrap_or("").into(),
                            has_route: s["has_route"].as_bool().unwrap_or(false),
                            attributes: s["attributes"].as_u64().unwrap_or(0) as usize,
                            events: s["events"].as_u64().unwrap_or(0) as usize,
                            has_status_code: s["has_status_code"].as_bool().unwrap_or(false),
                            not_int: s["not_int"]
                                .as_array()
                                .map(|a| {
                                    a.iter()
                                        .filter_map(|k| k.as_str().map(str::to_owned))
                                        .collect()
                                })
                                .unwrap_or_default(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let ex = Exported {
                spans_per_request: f(r, "spans_per_request"),
                traceparents_per_request: f(r, "traceparents_per_request"),
                samples,
            };
            let (check_text, failure) = check(variant, &ex, tcp_r.map(|t| t.spans_per_request));
            if let Some(msg) = failure {
                failures.push(msg);
            }
            let (ratio, over) = if i == 0 {
                (
                    "1.00".to_owned(),
                    format!("(baseline {:.1})", f(r, "allocs")),
                )
            } else {
                (
                    format!("{:.2} ({:.2}–{:.2})", f(r, "p50"), f(r, "p25"), f(r, "p75")),
                    format!("{:+.1}", f(r, "allocs_over")),
                )
            };
            println!(
                "| {} | {:.0} | {ratio} | {over} | {tcp_cell} | {check_text} |",
                variant.label(),
                f(r, "ns")
            );
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!();
    println!("run took {:.0} s (without the build)", elapsed);
    if !failures.is_empty() {
        failures.dedup();
        eprintln!();
        for msg in &failures {
            eprintln!("FAILED: {msg}");
        }
        std::process::exit(1);
    }
}
