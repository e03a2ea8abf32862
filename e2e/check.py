#!/usr/bin/env python3
"""Checks for e2e/run.sh. Standard library only (runs with any Python 3.9+).

  check.py freeports N                      N free TCP ports on 127.0.0.1, one per line
  check.py otlp --sink DIR --phase P --port N [--service S] [--wait SECONDS]
      Check A: what rotel received from one `pizzeria --once` run (resource attribute
      e2e.phase=P): spans attribute by attribute, the kitchen trace, the duration metrics, logs.
  check.py propagation --sink DIR --phase P --port N --client FILE [--wait SECONDS]
      Check B: the Python `requests` CLIENT span (ids in FILE, written by py_client.py) is the
      parent of the Rust SERVER span, both as rotel received them.
  check.py grpc-propagation --sink DIR --phase P --port N --client FILE [--wait SECONDS]
      Check B (gRPC): the Python `grpcio` CLIENT span (ids in FILE, written by
      py_grpc_client.py) is the parent of the Rust SERVER span of `pizzeria.Oven/Bake`.
  check.py prometheus --prom URL --demo URL [--wait SECONDS]
      Check C: drives requests at the demo while Debian's Prometheus scrapes it, then asks
      Prometheus for the p95 per route.

Each sub-check prints one line, `PASS <name>` or `FAIL <name>: <why>`; the exit code is 1 when
any failed. `--wait` re-reads the sink until every sub-check passes or the time is up (OTLP
batches arrive asynchronously), then reports the last attempt.
"""

import argparse
import json
import math
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

SERVER, CLIENT = 2, 3  # OTLP SpanKind
STATUS_UNSET, STATUS_ERROR = 0, 2
BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
SCOPE = "tower-otel-http"

# the requests the demo sends itself at start (examples/pizzeria.rs, `burst`)
BURST = [
    ("GET", "/health", "/health", 200),
    ("GET", "/api/menu", "/api/menu", 200),
    ("POST", "/api/orders", "/api/orders", 201),
    ("GET", "/api/orders/42", "/api/orders/{id}", 200),
    ("GET", "/api/orders/0", "/api/orders/{id}", 404),
    ("GET", "/api/kitchen/status", "/api/kitchen/status", 200),
    ("GET", "/ui", "/ui", 200),
]

# stable semconv: the attributes http.server.request.duration / http.client.request.duration
# may carry (anything else is a cardinality or conformance problem)
SERVER_METRIC_REQUIRED = {
    "http.request.method",
    "url.scheme",
    "http.response.status_code",
    "http.route",
    "network.protocol.version",
}
SERVER_METRIC_ALLOWED = SERVER_METRIC_REQUIRED | {
    "error.type",
    "network.protocol.name",
    "server.address",
    "server.port",
}
CLIENT_METRIC_REQUIRED = {"http.request.method", "server.address", "server.port", "http.response.status_code"}
CLIENT_METRIC_ALLOWED = CLIENT_METRIC_REQUIRED | {
    "error.type",
    "network.protocol.name",
    "network.protocol.version",
    "url.scheme",
    "url.template",
}
# RPC conventions (v1.44.0): rpc.server.call.duration / rpc.client.call.duration
RPC_SERVER_METRIC_REQUIRED = {"rpc.system.name", "rpc.method", "rpc.response.status_code"}
RPC_SERVER_METRIC_ALLOWED = RPC_SERVER_METRIC_REQUIRED | {"error.type", "server.address", "server.port"}
RPC_CLIENT_METRIC_REQUIRED = RPC_SERVER_METRIC_REQUIRED | {"server.address", "server.port"}
RPC_CLIENT_METRIC_ALLOWED = RPC_CLIENT_METRIC_REQUIRED | {"error.type"}
HTTP_ON_RPC = {"http.request.method", "http.response.status_code", "http.route", "url.path",
               "url.full", "url.scheme", "network.protocol.version"}
BAKE = "pizzeria.Oven/Bake"
HIGH_CARDINALITY = {"url.path", "url.full", "url.query", "client.address", "network.peer.address",
                    "network.peer.port", "user_agent.original", "client.port"}


# ---------------------------------------------------------------- helpers


class Report:
    def __init__(self, prefix):
        self.prefix = prefix
        self.results = []  # (name, [errors])

    def check(self, name, errors):
        self.results.append((name, [e for e in errors if e]))

    def ok(self):
        return all(not errs for _, errs in self.results)

    def print(self):
        for name, errs in self.results:
            label = f"{self.prefix} {name}" if self.prefix else name
            if errs:
                print(f"FAIL {label}: " + "; ".join(errs[:8]) + (f" (+{len(errs) - 8} more)" if len(errs) > 8 else ""))
            else:
                print(f"PASS {label}")
        sys.stdout.flush()


def load_jsonl(path):
    out = []
    if not os.path.exists(path):
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                pass  # a line being written right now
    return out


def of_phase(records, phase):
    return [r for r in records if r.get("resource", {}).get("e2e.phase") == phase]


def typename(v):
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "double"
    if isinstance(v, str):
        return "string"
    return type(v).__name__


def expect_attr(what, attrs, key, value=None, kind=None):
    """'' when attrs[key] is there with that value (and type); else why not."""
    if key not in attrs:
        return f"{what}: {key} missing"
    got = attrs[key]
    if kind is not None and typename(got) != kind:
        return f"{what}: {key}={got!r} is a {typename(got)}, expected {kind}"
    if value is not None and (got != value or typename(got) != typename(value)):
        return f"{what}: {key}={got!r}, expected {value!r}"
    return ""


def expect_no_attr(what, attrs, key):
    return f"{what}: unexpected {key}={attrs[key]!r}" if key in attrs else ""


def status_unset(what, span):
    st = span.get("status")
    if st is None or st.get("code", 0) == STATUS_UNSET:
        return ""
    return f"{what}: status {st!r}, expected unset"


def is_hex_id(s, n):
    return isinstance(s, str) and len(s) == n and all(c in "0123456789abcdef" for c in s) and set(s) != {"0"}


def ids_ok(what, span):
    errs = []
    if not is_hex_id(span.get("trace_id"), 32):
        errs.append(f"{what}: bad trace_id {span.get('trace_id')!r}")
    if not is_hex_id(span.get("span_id"), 16):
        errs.append(f"{what}: bad span_id {span.get('span_id')!r}")
    if span.get("end_time_unix_nano", 0) < span.get("start_time_unix_nano", 0):
        errs.append(f"{what}: ends before it starts")
    return errs


def server_spans(spans, path, method="GET"):
    return [
        s
        for s in spans
        if s["kind"] == SERVER
        and s["attributes"].get("url.path") == path
        and s["attributes"].get("http.request.method") == method
    ]


def one(what, found):
    """(the one record, errors)."""
    if len(found) == 1:
        return found[0], []
    return None, [f"{what}: {len(found)} found, expected exactly 1"]


def common_server_attrs(what, span, port, method, path, route, status, user_agent):
    a = span["attributes"]
    errs = [
        expect_attr(what, a, "http.request.method", method),
        expect_attr(what, a, "url.path", path),
        expect_attr(what, a, "url.scheme", "http"),
        expect_attr(what, a, "http.route", route),
        expect_attr(what, a, "http.response.status_code", status, "int"),
        expect_attr(what, a, "network.protocol.version", "1.1"),
        expect_attr(what, a, "server.address", "127.0.0.1"),
        expect_attr(what, a, "server.port", port, "int"),
        expect_attr(what, a, "client.address", "127.0.0.1"),
        expect_attr(what, a, "network.peer.address", "127.0.0.1"),
        expect_attr(what, a, "network.peer.port", None, "int"),
        expect_no_attr(what, a, "error.type"),
        status_unset(what, span),
    ]
    if user_agent is None:
        # the demo's burst uses reqwest::Client::new(), which sends no User-Agent header
        errs.append(expect_no_attr(what, a, "user_agent.original"))
    else:
        errs.append(expect_attr(what, a, "user_agent.original", user_agent))
    if span["name"] != f"{method} {route}":
        errs.append(f"{what}: name {span['name']!r}, expected {method} {route!r}")
    if span["kind"] != SERVER:
        errs.append(f"{what}: kind {span['kind']}, expected {SERVER} (SERVER)")
    if span["scope"]["name"] != SCOPE:
        errs.append(f"{what}: scope {span['scope']['name']!r}, expected {SCOPE!r}")
    errs += ids_ok(what, span)
    return errs


def latest_points(points):
    """The newest data point of each (metric, attribute set): exports are cumulative."""
    latest = {}
    for p in points:
        key = (p["metric"], json.dumps(p["attributes"], sort_keys=True))
        if key not in latest or p["time_unix_nano"] >= latest[key]["time_unix_nano"]:
            latest[key] = p
    return list(latest.values())


def histogram_errs(what, p):
    errs = []
    if p.get("type") != "histogram":
        errs.append(f"{what}: type {p.get('type')!r}, expected histogram")
        return errs
    if p.get("unit") != "s":
        errs.append(f"{what}: unit {p.get('unit')!r}, expected 's'")
    if p.get("explicit_bounds") != BOUNDS:
        errs.append(f"{what}: bounds {p.get('explicit_bounds')}, expected {BOUNDS}")
    if len(p.get("bucket_counts", [])) != len(BOUNDS) + 1:
        errs.append(f"{what}: {len(p.get('bucket_counts', []))} buckets, expected {len(BOUNDS) + 1}")
    if sum(p.get("bucket_counts", [])) != p.get("count"):
        errs.append(f"{what}: bucket counts sum {sum(p.get('bucket_counts', []))} != count {p.get('count')}")
    if p.get("scope", {}).get("name") != SCOPE:
        errs.append(f"{what}: scope {p.get('scope', {}).get('name')!r}, expected {SCOPE!r}")
    s = p.get("sum")
    if not isinstance(s, (int, float)) or s <= 0 or s > 60:
        errs.append(f"{what}: sum {s!r} not a plausible duration in seconds")
    return errs


# ---------------------------------------------------------------- check A


def check_otlp(args):
    deadline = time.time() + args.wait
    while True:
        rep = evaluate_otlp(args)
        if rep.ok() or time.time() >= deadline:
            rep.print()
            return 0 if rep.ok() else 1
        time.sleep(0.3)


def evaluate_otlp(args):
    rep = Report(f"[{args.phase}]")
    spans = of_phase(load_jsonl(os.path.join(args.sink, "spans.jsonl")), args.phase)
    points = of_phase(load_jsonl(os.path.join(args.sink, "metrics.jsonl")), args.phase)
    logs = of_phase(load_jsonl(os.path.join(args.sink, "logs.jsonl")), args.phase)
    errors = load_jsonl(os.path.join(args.sink, "errors.jsonl"))
    rep.check("rotel processors ran without error", [f"{e['where']}: {e['error'].strip().splitlines()[-1]}" for e in errors])

    # resource and scope
    errs = []
    if not spans:
        errs.append("no spans received for this run")
    for s in spans:
        svc = s["resource"].get("service.name")
        if svc != args.service:
            errs.append(f"span {s['name']!r}: service.name {svc!r}, expected {args.service!r}")
        if s["scope"]["name"] != SCOPE:
            errs.append(f"span {s['name']!r}: scope {s['scope']['name']!r}, expected {SCOPE!r}")
    for p in points:
        if p["resource"].get("service.name") != args.service:
            errs.append(f"metric {p['metric']}: service.name {p['resource'].get('service.name')!r}")
    rep.check(f"resource service.name={args.service}, scope {SCOPE} ({len(spans)} spans, {len(points)} points, {len(logs)} logs)", errs)

    # one SERVER span per burst request, each root (the burst sends no traceparent)
    errs = []
    for method, path, route, status in BURST:
        found = server_spans(spans, path, method)
        if len(found) != 1:
            errs.append(f"{method} {path}: {len(found)} SERVER spans, expected 1")
            continue
        s = found[0]
        if s["parent_span_id"]:
            errs.append(f"{method} {path}: parent {s['parent_span_id']}, expected a root span")
        errs.append(expect_attr(f"{method} {path}", s["attributes"], "http.response.status_code", status, "int"))
        errs.append(expect_attr(f"{method} {path}", s["attributes"], "http.route", route))
    rep.check("one root SERVER span per request of the burst, route and status right", errs)

    # GET /api/orders/{id} -> 200
    s, errs = one("SERVER span for /api/orders/42", server_spans(spans, "/api/orders/42"))
    if s:
        if s["parent_span_id"]:
            errs.append(f"parent {s['parent_span_id']!r}, expected none")
        errs += common_server_attrs("GET /api/orders/42", s, args.port, "GET", "/api/orders/42", "/api/orders/{id}", 200, None)
    rep.check("SERVER span GET /api/orders/{id}: kind, name, every attribute and type, status unset", errs)

    # 404: not an error on the server side
    s, errs = one("SERVER span for /api/orders/0", server_spans(spans, "/api/orders/0"))
    if s:
        errs += common_server_attrs("GET /api/orders/0", s, args.port, "GET", "/api/orders/0", "/api/orders/{id}", 404, None)
    rep.check("SERVER span 404 for /api/orders/0: no error.type, status unset", errs)

    # the kitchen trace: SERVER -> CLIENT -> SERVER
    errs = []
    kitchen, e = one("SERVER span for /api/kitchen/status", server_spans(spans, "/api/kitchen/status"))
    errs += e
    if kitchen:
        errs += common_server_attrs("kitchen SERVER", kitchen, args.port, "GET", "/api/kitchen/status", "/api/kitchen/status", 200, None)
        if kitchen["parent_span_id"]:
            errs.append(f"kitchen SERVER: parent {kitchen['parent_span_id']}, expected a root span")
        trace = [x for x in spans if x["trace_id"] == kitchen["trace_id"]]
        clients = [x for x in trace if x["kind"] == CLIENT]
        client, e = one("CLIENT span in the kitchen trace", clients)
        errs += e
        if len(trace) != 3:
            errs.append(f"kitchen trace has {len(trace)} spans ({[x['name'] for x in trace]}), expected 3")
        if client:
            a = client["attributes"]
            w = "CLIENT GET /oven/temperature"
            errs += ids_ok(w, client)
            if client["name"] != "GET /oven/temperature":
                errs.append(f"{w}: name {client['name']!r}, expected 'GET /oven/temperature'")
            if client["parent_span_id"] != kitchen["span_id"]:
                errs.append(f"{w}: parent {client['parent_span_id']!r}, expected the kitchen SERVER span {kitchen['span_id']!r}")
            if client["scope"]["name"] != SCOPE:
                errs.append(f"{w}: scope {client['scope']['name']!r}")
            errs += [
                expect_attr(w, a, "http.request.method", "GET"),
                expect_attr(w, a, "server.address", "127.0.0.1"),
                expect_attr(w, a, "server.port", None, "int"),
                expect_attr(w, a, "url.full", None, "string"),
                expect_attr(w, a, "url.template", "/oven/temperature"),
                expect_attr(w, a, "http.response.status_code", 200, "int"),
                expect_no_attr(w, a, "error.type"),
                status_unset(w, client),
            ]
            oven_port = a.get("server.port")
            if isinstance(oven_port, int):
                want_url = f"http://127.0.0.1:{oven_port}/oven/temperature"
                if a.get("url.full") != want_url:
                    errs.append(f"{w}: url.full {a.get('url.full')!r}, expected {want_url!r}")
                if oven_port == args.port:
                    errs.append(f"{w}: server.port is the demo's own port, expected the oven's")
            if not (kitchen["start_time_unix_nano"] <= client["start_time_unix_nano"]
                    and client["end_time_unix_nano"] <= kitchen["end_time_unix_nano"]):
                errs.append(f"{w}: not within the kitchen SERVER span's time")
            ovens = [x for x in trace if x["kind"] == SERVER and x["attributes"].get("url.path") == "/oven/temperature"]
            oven, e = one("oven SERVER span in the kitchen trace", ovens)
            errs += e
            if oven:
                w = "oven SERVER GET /oven/temperature"
                oa = oven["attributes"]
                errs += ids_ok(w, oven)
                if oven["parent_span_id"] != client["span_id"]:
                    errs.append(f"{w}: parent {oven['parent_span_id']!r}, expected the CLIENT span {client['span_id']!r}")
                # OTLP span flags: 0x100 = is-remote known, 0x200 = parent is remote
                if oven.get("flags", 0) & 0x300 != 0x300:
                    errs.append(f"{w}: OTLP flags {oven.get('flags', 0):#x}: parent (came over HTTP) not marked remote")
                if client.get("flags", 0) & 0x300 != 0x100:
                    errs.append(f"CLIENT span: OTLP flags {client.get('flags', 0):#x}: parent (same process) marked remote")
                if oven["name"] != "GET /oven/temperature":
                    errs.append(f"{w}: name {oven['name']!r}")
                errs += [
                    expect_attr(w, oa, "http.route", "/oven/temperature"),
                    expect_attr(w, oa, "http.response.status_code", 200, "int"),
                    expect_attr(w, oa, "url.scheme", "http"),
                    expect_attr(w, oa, "server.port", oven_port if isinstance(oven_port, int) else None, "int"),
                    expect_no_attr(w, oa, "error.type"),
                    status_unset(w, oven),
                ]
    rep.check("kitchen trace: SERVER GET /api/kitchen/status -> CLIENT GET /oven/temperature -> SERVER GET /oven/temperature, one trace id, parents right", errs)

    # the order trace: SERVER POST /api/orders -> CLIENT pizzeria.Oven/Bake -> SERVER
    # pizzeria.Oven/Bake (gRPC on the same port, through the same root layer)
    errs = []
    order, e = one("SERVER span for POST /api/orders", server_spans(spans, "/api/orders", "POST"))
    errs += e
    bake_server = bake_client = None
    if order:
        trace = [x for x in spans if x["trace_id"] == order["trace_id"]]
        if len(trace) != 3:
            errs.append(f"order trace has {len(trace)} spans ({[x['name'] for x in trace]}), expected 3")
        bake_client, e = one("CLIENT span pizzeria.Oven/Bake", [x for x in trace if x["kind"] == CLIENT])
        errs += e
        bake_server, e = one("SERVER span pizzeria.Oven/Bake", [x for x in trace if x["kind"] == SERVER and x["name"] == BAKE])
        errs += e
        for w, x in [("CLIENT Bake", bake_client), ("SERVER Bake", bake_server)]:
            if not x:
                continue
            a = x["attributes"]
            errs += ids_ok(w, x)
            if x["name"] != BAKE:
                errs.append(f"{w}: name {x['name']!r}, expected {BAKE!r}")
            errs += [
                expect_attr(w, a, "rpc.system.name", "grpc"),
                expect_attr(w, a, "rpc.method", BAKE),
                expect_attr(w, a, "rpc.response.status_code", "OK"),
                expect_attr(w, a, "server.address", "127.0.0.1"),
                expect_attr(w, a, "server.port", args.port, "int"),
                expect_no_attr(w, a, "error.type"),
                status_unset(w, x),
            ]
            errs += [f"{w}: HTTP attribute {k} on a gRPC span" for k in sorted(a.keys() & HTTP_ON_RPC)]
        if bake_client and bake_client["parent_span_id"] != order["span_id"]:
            errs.append(f"CLIENT Bake: parent {bake_client['parent_span_id']!r}, expected the order span {order['span_id']!r}")
        if bake_client and bake_server:
            if bake_server["parent_span_id"] != bake_client["span_id"]:
                errs.append(f"SERVER Bake: parent {bake_server['parent_span_id']!r}, expected the CLIENT span {bake_client['span_id']!r}")
            if bake_server.get("flags", 0) & 0x300 != 0x300:
                errs.append(f"SERVER Bake: OTLP flags {bake_server.get('flags', 0):#x}: parent (came over gRPC) not marked remote")
            for k in ("network.peer.address", "client.address"):
                errs.append(expect_attr("SERVER Bake", bake_server["attributes"], k, "127.0.0.1"))
    rep.check("order trace: SERVER POST /api/orders -> CLIENT pizzeria.Oven/Bake -> SERVER pizzeria.Oven/Bake, RPC attributes, no HTTP ones", errs)

    # metrics
    latest = latest_points(points)
    for metric, required, allowed in [
        ("rpc.server.call.duration", RPC_SERVER_METRIC_REQUIRED, RPC_SERVER_METRIC_ALLOWED),
        ("rpc.client.call.duration", RPC_CLIENT_METRIC_REQUIRED, RPC_CLIENT_METRIC_ALLOWED),
    ]:
        errs = []
        rpc = [p for p in latest if p["metric"] == metric]
        if len(rpc) != 1:
            errs.append(f"{len(rpc)} {metric} series, expected 1 (the order's bake)")
        for p in rpc:
            a = p["attributes"]
            w = metric
            errs += histogram_errs(w, p)
            missing = required - a.keys()
            if missing:
                errs.append(f"{w}: missing {sorted(missing)}")
            bad = (a.keys() & HIGH_CARDINALITY) | (a.keys() - allowed)
            if bad:
                errs.append(f"{w}: attributes not allowed on the metric: {sorted(bad)}")
            errs += [
                expect_attr(w, a, "rpc.system.name", "grpc"),
                expect_attr(w, a, "rpc.method", BAKE),
                expect_attr(w, a, "rpc.response.status_code", "OK"),
            ]
            if p.get("count") != 1:
                errs.append(f"{w}: count {p.get('count')}, expected 1")
        rep.check(f"metric {metric}: unit s, bounds, rpc.system.name/rpc.method/rpc.response.status_code, no HTTP metric for the call", errs)
    srv = [p for p in latest if p["metric"] == "http.server.request.duration"]
    errs = []
    if not srv:
        errs.append("http.server.request.duration not received")
    seen = {}
    for p in srv:
        a = p["attributes"]
        w = f"server duration {a.get('http.request.method')} {a.get('http.route')} {a.get('http.response.status_code')}"
        errs += histogram_errs(w, p)
        missing = SERVER_METRIC_REQUIRED - a.keys()
        if missing:
            errs.append(f"{w}: missing {sorted(missing)}")
        bad = (a.keys() & HIGH_CARDINALITY) | (a.keys() - SERVER_METRIC_ALLOWED)
        if bad:
            errs.append(f"{w}: attributes not allowed on the metric: {sorted(bad)}")
        errs.append(expect_attr(w, a, "http.response.status_code", None, "int"))
        errs.append(expect_attr(w, a, "url.scheme", "http"))
        errs.append(expect_attr(w, a, "network.protocol.version", "1.1"))
        key = (a.get("http.request.method"), a.get("http.route"), a.get("http.response.status_code"))
        seen[key] = seen.get(key, 0) + p["count"]
    want = {(m, r, st): 1 for m, _, r, st in BURST}
    want[("GET", "/oven/temperature", 200)] = 1
    if srv and seen != want:
        errs.append(f"series (method, route, status) -> count {sorted(seen.items())}, expected {sorted(want.items())}")
    rep.check(f"metric http.server.request.duration: unit s, bounds, one series per route/method/status ({len(srv)}), no url.path/client.address", errs)

    cli = [p for p in latest if p["metric"] == "http.client.request.duration"]
    errs = []
    if len(cli) != 1:
        errs.append(f"{len(cli)} http.client.request.duration series, expected 1 (the oven call)")
    for p in cli:
        a = p["attributes"]
        w = "client duration"
        errs += histogram_errs(w, p)
        missing = CLIENT_METRIC_REQUIRED - a.keys()
        if missing:
            errs.append(f"{w}: missing {sorted(missing)}")
        bad = (a.keys() & HIGH_CARDINALITY) | (a.keys() - CLIENT_METRIC_ALLOWED)
        if bad:
            errs.append(f"{w}: attributes not allowed on the metric: {sorted(bad)}")
        errs += [
            expect_attr(w, a, "http.request.method", "GET"),
            expect_attr(w, a, "server.address", "127.0.0.1"),
            expect_attr(w, a, "server.port", None, "int"),
            expect_attr(w, a, "http.response.status_code", 200, "int"),
        ]
        if p.get("count") != 1:
            errs.append(f"{w}: count {p.get('count')}, expected 1")
    rep.check("metric http.client.request.duration: unit s, bounds, server.address/server.port", errs)

    # the demo turns on the opt-in up-down counter (deploy/'s dashboards query it); after the
    # burst every request has ended, so each series is back at 0
    act = [p for p in latest if p["metric"] == "http.server.active_requests"]
    errs = []
    if not act:
        errs.append("http.server.active_requests not received (the demo enables it with with_active_requests(true))")
    methods = set()
    for p in act:
        a = p["attributes"]
        w = f"active requests {a.get('http.request.method')}"
        if p.get("type") != "sum" or p.get("is_monotonic") is not False:
            errs.append(f"{w}: type {p.get('type')!r} monotonic={p.get('is_monotonic')!r}, expected a non-monotonic sum")
        if p.get("unit") != "{request}":
            errs.append(f"{w}: unit {p.get('unit')!r}, expected '{{request}}'")
        missing = {"http.request.method", "url.scheme"} - a.keys()
        bad = a.keys() - {"http.request.method", "url.scheme", "server.address", "server.port"}
        if missing:
            errs.append(f"{w}: missing {sorted(missing)}")
        if bad:
            errs.append(f"{w}: attributes not allowed on the metric: {sorted(bad)}")
        if p.get("value") != 0:
            errs.append(f"{w}: value {p.get('value')!r} after every request ended, expected 0")
        methods.add(a.get("http.request.method"))
    if act and methods != {"GET", "POST"}:
        errs.append(f"series for methods {sorted(methods, key=str)}, expected GET and POST")
    rep.check("metric http.server.active_requests: non-monotonic sum, {request}, method + scheme, back to 0", errs)

    # logs: each carries the ids of the request it was written in
    errs = []
    by_path = {}
    for method, path, _, _ in BURST + [("GET", "/oven/temperature", "", 0)]:
        found = server_spans(spans, path, method)
        if found:
            by_path[path] = found[0]
    expected_logs = [
        ("listing the menu", "/api/menu", "INFO"),
        ("order placed", "/api/orders", "INFO"),
        ("order looked up", "/api/orders/42", "INFO"),
        ("no such order", "/api/orders/0", "WARN"),
        ("asking the oven", "/api/kitchen/status", "INFO"),
        ("reading the thermometer", "/oven/temperature", "INFO"),
    ]
    if not logs:
        errs.append("no log records received")
    for body, path, level in expected_logs:
        recs = [r for r in logs if r.get("body") == body]
        if len(recs) != 1:
            errs.append(f"log {body!r}: {len(recs)} records, expected 1")
            continue
        r = recs[0]
        span = by_path.get(path)
        if span is None:
            errs.append(f"log {body!r}: no SERVER span for {path} to compare with")
            continue
        if (r["trace_id"], r["span_id"]) != (span["trace_id"], span["span_id"]):
            errs.append(f"log {body!r}: trace_id/span_id {r['trace_id']}/{r['span_id']}, expected {span['trace_id']}/{span['span_id']} ({span['name']})")
        if r.get("severity_text") != level:
            errs.append(f"log {body!r}: severity {r.get('severity_text')!r}, expected {level}")
    baking = [r for r in logs if r.get("body") == "baking"]
    if len(baking) != 1:
        errs.append(f"log 'baking': {len(baking)} records, expected 1")
    elif bake_server and (baking[0]["trace_id"], baking[0]["span_id"]) != (bake_server["trace_id"], bake_server["span_id"]):
        errs.append(f"log 'baking' (in the tonic handler): ids {baking[0]['trace_id']}/{baking[0]['span_id']}, expected the gRPC SERVER span's")
    span_ids = {(s["trace_id"], s["span_id"]) for s in spans}
    for r in logs:
        if r["trace_id"] and (r["trace_id"], r["span_id"]) not in span_ids:
            errs.append(f"log {r.get('body')!r}: ids {r['trace_id']}/{r['span_id']} match no span received")
    rep.check(f"logs ({len(logs)}): each record carries the trace_id/span_id of its request's SERVER span (the tonic handler's too)", errs)

    # the demo's own log fields are namespaced (pizzeria.order.id, not order): nothing a
    # semantic-conventions checker would flag as a bare, un-namespaced attribute
    errs = []
    keys = sorted({k for r in logs for k in r.get("attributes", {})})
    for k in keys:
        if "." not in k:
            errs.append(f"log attribute {k!r} is not namespaced")
    if "pizzeria.order.id" not in keys:
        errs.append(f"no log record carries pizzeria.order.id (attributes seen: {keys})")
    rep.check(f"log attributes namespaced ({', '.join(keys)})", errs)
    return rep


# ---------------------------------------------------------------- check B


def check_propagation(args):
    with open(args.client, encoding="utf-8") as f:
        py = json.load(f)
    deadline = time.time() + args.wait
    while True:
        rep = evaluate_propagation(args, py)
        if rep.ok() or time.time() >= deadline:
            rep.print()
            return 0 if rep.ok() else 1
        time.sleep(0.3)


def evaluate_propagation(args, py):
    rep = Report(f"[{args.phase}]")
    spans = of_phase(load_jsonl(os.path.join(args.sink, "spans.jsonl")), args.phase)

    errs = []
    pys = [s for s in spans if s["span_id"] == py["span_id"]]
    pyspan, e = one(f"Python CLIENT span {py['span_id']} in rotel", pys)
    errs += e
    if pyspan:
        w = "Python CLIENT span"
        if pyspan["kind"] != CLIENT:
            errs.append(f"{w}: kind {pyspan['kind']}, expected {CLIENT} (CLIENT)")
        if pyspan["trace_id"] != py["trace_id"]:
            errs.append(f"{w}: trace_id {pyspan['trace_id']}, Python said {py['trace_id']}")
        if pyspan["resource"].get("service.name") != py["service_name"]:
            errs.append(f"{w}: service.name {pyspan['resource'].get('service.name')!r}")
        if pyspan["resource"].get("telemetry.sdk.language") != "python":
            errs.append(f"{w}: telemetry.sdk.language {pyspan['resource'].get('telemetry.sdk.language')!r}")
        if not pyspan["scope"]["name"].startswith("opentelemetry.instrumentation.requests"):
            errs.append(f"{w}: scope {pyspan['scope']['name']!r}")
        errs.append(expect_attr(w, pyspan["attributes"], "http.response.status_code", 200, "int"))
    rep.check("Python requests CLIENT span (opentelemetry-instrumentation-requests) received over OTLP/HTTP", errs)

    errs = []
    candidates = [s for s in server_spans(spans, "/api/menu") if s["parent_span_id"]]
    rust, e = one("Rust SERVER span GET /api/menu with a parent", candidates)
    errs += e
    if rust:
        w = "Rust SERVER GET /api/menu"
        if rust["parent_span_id"] != py["span_id"]:
            errs.append(f"{w}: parent {rust['parent_span_id']}, expected the Python CLIENT span {py['span_id']}")
        if rust["trace_id"] != py["trace_id"]:
            errs.append(f"{w}: trace_id {rust['trace_id']}, expected the Python trace {py['trace_id']}")
        errs += common_server_attrs(w, rust, args.port, "GET", "/api/menu", "/api/menu", 200, py["user_agent"])
        flags = rust.get("flags", 0)
        if flags & 0x300 != 0x300:
            errs.append(f"{w}: OTLP flags {flags:#x}: parent not marked remote (0x300)")
        if not flags & 0x01:
            errs.append(f"{w}: OTLP flags {flags:#x}: not sampled, though the caller's traceparent was")
        # the header names the span that served the request, with its trace flags (the
        # caller's W3C flags, the random bit of Python's SDK included)
        want = f"00-{rust['trace_id']}-{rust['span_id']}-{flags & 0xFF:02x}"
        if py.get("traceresponse") != want:
            errs.append(f"traceresponse header {py.get('traceresponse')!r}, expected {want!r}")
        if (flags & 0xFF) != int(py.get("trace_flags", "01"), 16):
            errs.append(f"{w}: trace flags {flags & 0xFF:02x}, the caller sent {py.get('trace_flags')}")
        if rust["resource"].get("service.name") != args.service:
            errs.append(f"{w}: service.name {rust['resource'].get('service.name')!r}")
    rep.check("Rust SERVER span is the child of the Python CLIENT span (same trace id, parent = its span id), user_agent.original, traceresponse", errs)
    return rep


def check_grpc_propagation(args):
    with open(args.client, encoding="utf-8") as f:
        py = json.load(f)
    deadline = time.time() + args.wait
    while True:
        rep = evaluate_grpc_propagation(args, py)
        if rep.ok() or time.time() >= deadline:
            rep.print()
            return 0 if rep.ok() else 1
        time.sleep(0.3)


def evaluate_grpc_propagation(args, py):
    rep = Report(f"[{args.phase}]")
    spans = of_phase(load_jsonl(os.path.join(args.sink, "spans.jsonl")), args.phase)
    errs = []
    pyspan, e = one(f"Python gRPC CLIENT span {py['span_id']} in rotel", [s for s in spans if s["span_id"] == py["span_id"]])
    errs += e
    if pyspan:
        w = "Python gRPC CLIENT span"
        if pyspan["kind"] != CLIENT:
            errs.append(f"{w}: kind {pyspan['kind']}, expected {CLIENT} (CLIENT)")
        if not pyspan["scope"]["name"].startswith("opentelemetry.instrumentation.grpc"):
            errs.append(f"{w}: scope {pyspan['scope']['name']!r}")
        if pyspan["resource"].get("service.name") != py["service_name"]:
            errs.append(f"{w}: service.name {pyspan['resource'].get('service.name')!r}")
    rep.check("Python grpcio CLIENT span (opentelemetry-instrumentation-grpc) received over OTLP/HTTP", errs)

    errs = []
    candidates = [s for s in spans if s["kind"] == SERVER and s["name"] == BAKE and s["trace_id"] == py["trace_id"]]
    rust, e = one("Rust SERVER span pizzeria.Oven/Bake in the Python trace", candidates)
    errs += e
    if rust:
        w = "Rust SERVER pizzeria.Oven/Bake"
        a = rust["attributes"]
        if rust["parent_span_id"] != py["span_id"]:
            errs.append(f"{w}: parent {rust['parent_span_id']}, expected the Python CLIENT span {py['span_id']}")
        flags = rust.get("flags", 0)
        if flags & 0x300 != 0x300:
            errs.append(f"{w}: OTLP flags {flags:#x}: parent not marked remote (0x300)")
        errs += [
            expect_attr(w, a, "rpc.system.name", "grpc"),
            expect_attr(w, a, "rpc.method", BAKE),
            expect_attr(w, a, "rpc.response.status_code", "OK"),
            expect_attr(w, a, "server.port", args.port, "int"),
            expect_no_attr(w, a, "error.type"),
            status_unset(w, rust),
        ]
        errs += [f"{w}: HTTP attribute {k} on a gRPC span" for k in sorted(a.keys() & HTTP_ON_RPC)]
        want = f"00-{rust['trace_id']}-{rust['span_id']}-{flags & 0xFF:02x}"
        if py.get("traceresponse") != want:
            errs.append(f"traceresponse metadata {py.get('traceresponse')!r}, expected {want!r}")
    rep.check("Rust gRPC SERVER span is the child of the Python grpcio CLIENT span (same trace, parent = its span id), RPC attributes, traceresponse metadata", errs)
    return rep


# ---------------------------------------------------------------- check C


def http_get(url, timeout=5.0, method="GET", headers=None):
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def prom_query(prom, q):
    status, body = http_get(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": q}))
    if status != 200:
        raise RuntimeError(f"query {q!r}: HTTP {status}: {body[:200]!r}")
    doc = json.loads(body)
    if doc.get("status") != "success":
        raise RuntimeError(f"query {q!r}: {doc}")
    return doc["data"]["result"]


# (method, path, route) sent in each round; /oven/temperature comes with the kitchen
ROUND = [
    ("GET", "/health", "/health"),
    ("GET", "/api/menu", "/api/menu"),
    ("GET", "/api/orders", "/api/orders"),
    ("POST", "/api/orders", "/api/orders"),
    ("GET", "/api/orders/7", "/api/orders/{id}"),
    ("GET", "/api/kitchen/status", "/api/kitchen/status"),
    ("GET", "/ui", "/ui"),
    ("GET", "/ui/orders", "/ui/orders"),
]
QUANTILE = 'histogram_quantile(0.95, sum by (le, http_route) (rate(http_server_request_duration_seconds_bucket[1m])))'


def send_round(demo, n=3):
    for _ in range(n):
        for method, path, _ in ROUND:
            status, _ = http_get(demo + path, method=method, headers={"User-Agent": "e2e-prometheus-driver/1"})
            if status >= 500:
                raise RuntimeError(f"{method} {path}: HTTP {status}")


def wait_until(what, fn, deadline):
    last = None
    while time.time() < deadline:
        try:
            v = fn()
            if v:
                return v, None
        except Exception as e:  # noqa: BLE001 - reported below
            last = e
        time.sleep(0.25)
    return None, f"timed out waiting for {what}" + (f" (last error: {last})" if last else "")


def check_prometheus(args):
    rep = Report("[prometheus]")
    deadline = time.time() + args.wait
    routes = sorted({r for _, _, r in ROUND} | {"/oven/temperature"})

    def ready():
        return http_get(f"{args.prom}/-/ready", timeout=1)[0] == 200

    _, err = wait_until("Prometheus /-/ready", ready, deadline)
    if err:
        rep.check("Prometheus ready", [err])
        rep.print()
        return 1

    def scraped():
        res = prom_query(args.prom, 'up{job="pizzeria"}')
        return res and res[0]["value"][1] == "1"

    _, err = wait_until("a first successful scrape of the demo (up == 1)", scraped, deadline)
    rep.check("Prometheus scrapes the demo's /metrics (up == 1)", [err])
    if err:
        rep.print()
        return 1

    # rate() needs each route's counter to grow between two scrapes: round 1 makes every
    # series exist, round 2 (after a scrape saw round 1) makes it grow
    send_round(args.demo)

    def series():
        res = prom_query(args.prom, "count by (http_route) (http_server_request_duration_seconds_bucket)")
        return {r["metric"].get("http_route", "") for r in res} >= set(routes)

    _, err = wait_until("every route's series in Prometheus", series, deadline)
    if err:
        rep.check("series for every route scraped", [err])
        rep.print()
        return 1
    send_round(args.demo)

    last = {}

    def quantiles():
        res = prom_query(args.prom, QUANTILE)
        got = {r["metric"].get("http_route", ""): float(r["value"][1]) for r in res}
        last.clear()
        last.update(got)
        return set(got) == set(routes) and all(math.isfinite(v) for v in got.values())

    _, err = wait_until("p95 per route", quantiles, deadline)
    errs = []
    if err:
        errs.append(err)
        errs.append("last result: " + ", ".join(f"{k}={v}" for k, v in sorted(last.items())))
        missing = set(routes) - set(last)
        extra = set(last) - set(routes)
        if missing:
            errs.append(f"routes missing: {sorted(missing)}")
        if extra:
            errs.append(f"unexpected routes: {sorted(extra)}")
    rep.check(f"p95 per route from histogram_quantile: {len(routes)} routes, all finite", errs)
    if not err:
        for k, v in sorted(last.items()):
            print(f"     p95 {k:<22} {v * 1e3:8.2f} ms")
    bad = [f"{k}={v}" for k, v in last.items() if not (0 < v <= 10)]
    rep.check("p95 values within the histogram's range (0, 10] s", bad)
    rep.print()
    return 0 if rep.ok() else 1


# ---------------------------------------------------------------- main


def freeports(args):
    socks = []
    for _ in range(args.n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    for s in socks:
        print(s.getsockname()[1])
        s.close()
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("freeports")
    f.add_argument("n", type=int)
    f.set_defaults(fn=freeports)
    o = sub.add_parser("otlp")
    o.add_argument("--sink", required=True)
    o.add_argument("--phase", required=True)
    o.add_argument("--port", type=int, required=True)
    o.add_argument("--service", default="pizzeria-e2e")
    o.add_argument("--wait", type=float, default=10)
    o.set_defaults(fn=check_otlp)
    b = sub.add_parser("propagation")
    b.add_argument("--sink", required=True)
    b.add_argument("--phase", required=True)
    b.add_argument("--port", type=int, required=True)
    b.add_argument("--client", required=True)
    b.add_argument("--service", default="pizzeria-e2e")
    b.add_argument("--wait", type=float, default=10)
    b.set_defaults(fn=check_propagation)
    g = sub.add_parser("grpc-propagation")
    g.add_argument("--sink", required=True)
    g.add_argument("--phase", required=True)
    g.add_argument("--port", type=int, required=True)
    g.add_argument("--client", required=True)
    g.add_argument("--service", default="pizzeria-e2e")
    g.add_argument("--wait", type=float, default=10)
    g.set_defaults(fn=check_grpc_propagation)
    c = sub.add_parser("prometheus")
    c.add_argument("--prom", required=True)
    c.add_argument("--demo", required=True)
    c.add_argument("--wait", type=float, default=30)
    c.set_defaults(fn=check_prometheus)
    args = p.parse_args()
    sys.exit(args.fn(args))


if __name__ == "__main__":
    main()
