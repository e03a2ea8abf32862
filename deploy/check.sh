#!/usr/bin/env bash
# Static checks of the deploy/ stack; no Docker engine needed.
#
#   deploy/check.sh                 # all static checks
#   deploy/check.sh scrape.txt      # also: every http_*/rpc_* metric the dashboard, the alert rules and
#                                   # the Tempo->Prometheus links query is in this scrape
#                                   # (curl -s localhost:3000/metrics > scrape.txt while the demo runs)
#
# Checks: YAML syntax (no duplicate keys) of every .yml/.yaml here, JSON syntax of the dashboards,
# cross-file consistency (compose services, mounts, ports, collector pipelines, datasource links,
# dashboard datasource uids, the Loki derived-field regex against a real JsonFormat line),
# promtool check config / check rules / test rules, the PromQL syntax of every dashboard and
# datasource query, `docker compose config -q` when a compose client can run here.
# Installs PyYAML (pip) and promtool (Debian's `prometheus` package, as root) when missing.
set -euo pipefail

SCRAPE=""
if [[ $# -gt 1 ]]; then
  echo "usage: $0 [scrape-file]" >&2
  exit 2
fi
if [[ $# -eq 1 ]]; then
  if [[ ! -r "$1" ]]; then
    echo "check.sh: cannot read scrape file: $1" >&2
    exit 2
  fi
  SCRAPE="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
fi

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

PASSED=0
FAILED=0
SKIPPED=0
FAILURES=()
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# run NAME CMD...: runs CMD, prints its output indented, counts it as passed or failed.
run() {
  local name="$1"
  shift
  if "$@" >"$TMP/out" 2>&1; then
    PASSED=$((PASSED + 1))
    echo "ok   $name"
    sed 's/^/     /' "$TMP/out"
  else
    FAILED=$((FAILED + 1))
    FAILURES+=("$name")
    echo "FAIL $name"
    sed 's/^/     /' "$TMP/out"
  fi
}

# promql_check RULES: promtool parses the generated rules; on failure, say which query is which.
promql_check() {
  promtool check rules "$1" || {
    echo "which query is which:"
    cat "$1.map"
    return 1
  }
}

skip() {
  SKIPPED=$((SKIPPED + 1))
  echo "skip $1"
}

# ---------------------------------------------------------------- tools
if ! command -v python3 >/dev/null 2>&1; then
  echo "check.sh: python3 is required" >&2
  exit 1
fi
if ! python3 -c 'import yaml' >/dev/null 2>&1; then
  echo "PyYAML missing: python3 -m pip install --quiet pyyaml"
  python3 -m pip install --quiet pyyaml
fi
if ! command -v promtool >/dev/null 2>&1; then
  if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "promtool missing: installing Debian's prometheus package"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  fi
fi

# ---------------------------------------------------------------- python checks
# One helper script, called once per check: `python3 $PY <check> [args]`.
PY="$TMP/checks.py"
cat >"$PY" <<'PYEOF'
import glob, json, os, re, sys
from urllib.parse import urlparse

import yaml


class UniqueKeyLoader(yaml.SafeLoader):
    pass


def _no_dup_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_dup_mapping)


def load_yaml(path):
    with open(path) as f:
        return yaml.load(f, Loader=UniqueKeyLoader)


def _no_dup_pairs(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"duplicate key {k!r}")
        d[k] = v
    return d


def load_json(path):
    with open(path) as f:
        return json.load(f, object_pairs_hook=_no_dup_pairs)


def yaml_files():
    out = []
    for ext in ("yml", "yaml"):
        out += glob.glob(f"**/*.{ext}", recursive=True)
    return sorted(out)


def dashboards():
    return sorted(glob.glob("grafana/dashboards/**/*.json", recursive=True))


ERRORS = []


def need(cond, msg):
    if not cond:
        ERRORS.append(msg)
    return cond


def done(ok_msg):
    if ERRORS:
        for e in ERRORS:
            print(e)
        sys.exit(1)
    print(ok_msg)


# ------------------------------------------------------------------ syntax
def check_yaml():
    files = yaml_files()
    for path in files:
        try:
            load_yaml(path)
        except Exception as e:  # noqa: BLE001
            ERRORS.append(f"{path}: {e}")
    done(f"{len(files)} files: " + " ".join(files))


def check_json():
    files = dashboards()
    need(files, "no dashboard in grafana/dashboards")
    for path in files:
        try:
            d = load_json(path)
            need(isinstance(d.get("panels"), list) and d["panels"], f"{path}: no panels")
            need(d.get("uid"), f"{path}: no uid")
        except Exception as e:  # noqa: BLE001
            ERRORS.append(f"{path}: {e}")
    done(f"{len(files)} files: " + " ".join(files))


# ------------------------------------------------------------------ consistency
def host_port(url_or_addr):
    s = url_or_addr if "://" in url_or_addr else "x://" + url_or_addr
    u = urlparse(s)
    return u.hostname, u.port, u.path


def compose():
    return load_yaml("docker-compose.yml")


def container_ports(svc):
    """published ports as {container_port: host_port}"""
    out = {}
    for p in svc.get("ports", []):
        p = str(p).split("/")[0]
        parts = p.split(":")
        out[int(parts[-1])] = int(parts[-2])
    return out


def check_compose():
    c = compose()
    services = c.get("services", {})
    want = {"otel-collector", "tempo", "prometheus", "loki", "grafana"}
    need(set(services) == want, f"services {sorted(services)} != {sorted(want)}")
    images = {
        "otel-collector": "otel/opentelemetry-collector-contrib",
        "tempo": "grafana/tempo", "prometheus": "prom/prometheus",
        "loki": "grafana/loki", "grafana": "grafana/grafana",
    }
    host_ports = {}
    for name, svc in services.items():
        image = svc.get("image", "")
        repo, _, tag = image.rpartition(":")
        need(repo == images.get(name), f"{name}: image {image!r}, expected {images.get(name)}:<tag>")
        need(re.fullmatch(r"v?\d+\.\d+\.\d+", tag or ""), f"{name}: image tag {tag!r} is not a pinned x.y.z version")
        for v in svc.get("volumes", []):
            src = str(v).split(":")[0]
            if src.startswith((".", "/")):
                need(os.path.exists(src), f"{name}: bind-mount source {src} does not exist")
            else:
                need(src in (c.get("volumes") or {}), f"{name}: named volume {src} not declared")
        for cport, hport in container_ports(svc).items():
            need(hport not in host_ports, f"host port {hport} published twice ({host_ports.get(hport)}, {name})")
            host_ports[hport] = name
    need(container_ports(services["grafana"]).get(3000) == 3001, "grafana: expected host 3001 -> 3000")
    need(3000 not in host_ports, "host port 3000 is the demo's: no container may publish it")
    cp = container_ports(services["otel-collector"])
    need(cp.get(4317) == 4317 and cp.get(4318) == 4318, "otel-collector: publish 4317 and 4318")
    need("host.docker.internal:host-gateway" in services["prometheus"].get("extra_hosts", []),
         "prometheus: extra_hosts host.docker.internal:host-gateway missing")
    env = services["grafana"].get("environment", {})
    need(str(env.get("GF_AUTH_ANONYMOUS_ENABLED")).lower() == "true"
         and env.get("GF_AUTH_ANONYMOUS_ORG_ROLE") == "Admin", "grafana: anonymous Admin access not set")
    done(f"{len(services)} services, images pinned, mounts present, host ports "
         + ", ".join(f"{p}->{s}" for p, s in sorted(host_ports.items())))


def mount_target(svc, source):
    for v in svc.get("volumes", []):
        parts = str(v).split(":")
        if os.path.normpath(parts[0]) == os.path.normpath(source):
            return parts[1]
    return None


def check_collector():
    c = compose()["services"]
    col = load_yaml("collector.yaml")
    need(mount_target(c["otel-collector"], "./collector.yaml") is not None,
         "collector.yaml is not mounted into otel-collector")
    kinds = ("receivers", "processors", "exporters", "connectors", "extensions")
    defined = {k: set((col.get(k) or {}).keys()) for k in kinds}
    used = {k: set() for k in kinds}
    pipelines = col.get("service", {}).get("pipelines", {})
    need(set(p.split("/")[0] for p in pipelines) >= {"traces", "metrics", "logs"},
         f"pipelines {sorted(pipelines)}: traces, metrics and logs expected")
    for pname, p in pipelines.items():
        for k in ("receivers", "processors", "exporters"):
            for comp in p.get(k, []) or []:
                pool = defined[k] | (defined["connectors"] if k != "processors" else set())
                need(comp in pool, f"pipeline {pname}: {k[:-1]} {comp} is not defined")
                used[k].add(comp)
                if k != "processors" and comp in defined["connectors"]:
                    used["connectors"].add(comp)
    for k in ("receivers", "processors", "exporters", "connectors"):
        for comp in defined[k] - used[k]:
            ERRORS.append(f"{k[:-1]} {comp} is defined but in no pipeline")
    # receivers listen on the ports compose publishes
    proto = col["receivers"]["otlp"]["protocols"]
    for p, port in (("grpc", 4317), ("http", 4318)):
        need(host_port(proto[p]["endpoint"])[1] == port, f"otlp receiver {p} not on {port}")
    # exporters point at compose services on the ports those services listen on
    exps = col.get("exporters", {})
    for name, e in exps.items():
        host, port, path = host_port(e.get("endpoint", ""))
        need(host in c, f"exporter {name}: host {host} is not a compose service")
    tempo = load_yaml("tempo.yaml")
    tproto = tempo["distributor"]["receivers"]["otlp"]["protocols"]
    for name, e in exps.items():
        typ = name.split("/")[0]
        host, port, path = host_port(e["endpoint"])
        if host == "tempo":
            want = tproto["grpc" if typ in ("otlp_grpc", "otlp") else "http"]["endpoint"]
            need(port == host_port(want)[1], f"exporter {name}: port {port}, Tempo listens on {want}")
        if host == "loki":
            need(typ in ("otlp_http", "otlphttp") and path.rstrip("/") == "/otlp" and port == 3100,
                 f"exporter {name}: Loki's OTLP endpoint is otlp_http to http://loki:3100/otlp")
        if host == "prometheus":
            need(typ in ("prometheus_remote_write", "prometheusremotewrite") and path == "/api/v1/write",
                 f"exporter {name}: expected prometheus_remote_write to /api/v1/write")
            need("--web.enable-remote-write-receiver" in c["prometheus"].get("command", []),
                 "prometheus: --web.enable-remote-write-receiver missing for the remote-write exporter")
    done("pipelines " + ", ".join(
        f"{n}: {'+'.join(p.get('receivers', []))} -> {'+'.join(p.get('exporters', []))}"
        for n, p in pipelines.items()))


def check_prometheus():
    c = compose()["services"]["prometheus"]
    p = load_yaml("prometheus.yml")
    cfg_target = mount_target(c, "./prometheus.yml")
    need(cfg_target and f"--config.file={cfg_target}" in c.get("command", []),
         "prometheus.yml is not the mounted --config.file")
    for rf in p.get("rule_files", []):
        need(os.path.exists(rf), f"rule file {rf} missing next to prometheus.yml")
        target = mount_target(c, "./" + rf)
        want = os.path.join(os.path.dirname(cfg_target or "/"), rf)
        need(target == want, f"rule file {rf}: mounted at {target}, Prometheus will read {want}")
    jobs = {j["job_name"]: j for j in p.get("scrape_configs", [])}
    j = jobs.get("pizzeria")
    if need(j is not None, "no scrape job 'pizzeria'"):
        targets = [t for sc in j.get("static_configs", []) for t in sc.get("targets", [])]
        need(targets == ["host.docker.internal:3000"], f"pizzeria targets {targets}")
        need(j.get("metrics_path", "/metrics") == "/metrics", "pizzeria: metrics_path is not /metrics")
    done(f"jobs {sorted(jobs)}, rule files {p.get('rule_files', [])} mounted where Prometheus reads them")


JSON_LINE = ('{"timestamp":"2026-11-24T05:30:26.283572Z","level":"INFO","target":"app",'
             '"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7",'
             '"trace_flags":"01","message":"loaded user","user":42}')


def datasources():
    return load_yaml("grafana/provisioning/datasources/datasources.yaml")["datasources"]


def check_grafana():
    services = compose()["services"]
    g = services["grafana"]
    ds = datasources()
    uids = [d.get("uid") for d in ds]
    need(len(set(uids)) == len(uids) and None not in uids, f"datasource uids {uids}: each set and unique")
    by_type = {d["type"]: d for d in ds}
    need(set(by_type) >= {"prometheus", "tempo", "loki"}, f"datasource types {sorted(by_type)}")
    for d in ds:
        host, port, _ = host_port(d["url"])
        need(host in services, f"datasource {d['name']}: host {host} is not a compose service")
    # links
    refs = []
    prom, tempo, loki = by_type.get("prometheus", {}), by_type.get("tempo", {}), by_type.get("loki", {})
    pj, tj, lj = prom.get("jsonData", {}), tempo.get("jsonData", {}), loki.get("jsonData", {})
    ex = pj.get("exemplarTraceIdDestinations", [])
    need(any(e.get("name") == "trace_id" and e.get("datasourceUid") == tempo.get("uid") for e in ex),
         "prometheus: exemplarTraceIdDestinations trace_id -> tempo missing")
    refs += [("prometheus exemplars", e.get("datasourceUid")) for e in ex]
    t2l = tj.get("tracesToLogsV2", {})
    need(t2l.get("datasourceUid") == loki.get("uid") and t2l.get("filterByTraceID"),
         "tempo: tracesToLogsV2 -> loki filtered by trace id missing")
    t2m = tj.get("tracesToMetrics", {})
    need(t2m.get("datasourceUid") == prom.get("uid") and t2m.get("queries"),
         "tempo: tracesToMetrics -> prometheus with queries missing")
    refs += [("tempo tracesToLogsV2", t2l.get("datasourceUid")),
             ("tempo tracesToMetrics", t2m.get("datasourceUid")),
             ("tempo serviceMap", tj.get("serviceMap", {}).get("datasourceUid"))]
    dfs = lj.get("derivedFields", [])
    refs += [("loki derivedFields " + f.get("name", "?"), f.get("datasourceUid")) for f in dfs]
    need(any(f.get("matcherType") == "label" and f.get("matcherRegex") == "trace_id"
             and f.get("datasourceUid") == tempo.get("uid") for f in dfs),
         "loki: derived field on the trace_id structured metadata -> tempo missing")
    line_fields = [f for f in dfs if f.get("matcherType", "regex") == "regex"]
    need(line_fields, "loki: no regex derived field for JSON log lines")
    for f in line_fields:
        m = re.search(f["matcherRegex"], JSON_LINE)
        need(m and m.group(1) == "4bf92f3577b34da6a3ce929d0e0e4736",
             f"loki derived field {f.get('name')}: {f['matcherRegex']!r} does not extract the trace id "
             "from a tower-otel-http JsonFormat line")
    for where, uid in refs:
        if uid is not None:
            need(uid in uids, f"{where}: datasourceUid {uid!r} is not a provisioned datasource")
    # dashboards: provider path is where compose mounts grafana/dashboards; panels use known uids
    prov = load_yaml("grafana/provisioning/dashboards/dashboards.yaml")
    paths = [p["options"]["path"] for p in prov.get("providers", [])]
    need(mount_target(g, "./grafana/dashboards") in paths,
         f"dashboard provider paths {paths} do not include the mounted ./grafana/dashboards")
    for sub in ("datasources", "dashboards"):
        need(mount_target(g, f"./grafana/provisioning/{sub}") == f"/etc/grafana/provisioning/{sub}",
             f"grafana/provisioning/{sub} is not mounted at /etc/grafana/provisioning/{sub}")
    n = 0
    for path in dashboards():
        d = load_json(path)
        for obj in walk(d):
            if isinstance(obj, dict) and isinstance(obj.get("datasource"), dict):
                uid = obj["datasource"].get("uid")
                if uid and not uid.startswith("$"):
                    n += 1
                    need(uid in uids, f"{path}: datasource uid {uid!r} is not provisioned")
    done(f"datasources {uids}; links {[(w, u) for w, u in refs]}; "
         f"{n} dashboard datasource refs resolve; derived-field regex extracts the trace id")


def walk(o):
    yield o
    if isinstance(o, dict):
        for v in o.values():
            yield from walk(v)
    elif isinstance(o, list):
        for v in o:
            yield from walk(v)


# ------------------------------------------------------------------ PromQL
def promql_exprs():
    """(where, expr) for every PromQL expression of the dashboards, the rules and the datasources."""
    out = []
    for path in dashboards():
        d = load_json(path)
        for p in walk(d):
            if isinstance(p, dict) and "targets" in p:
                for t in p["targets"]:
                    if t.get("expr"):
                        out.append((f"{path}: {p.get('title')}", t["expr"]))
        for v in d.get("templating", {}).get("list", []):
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", q or "")
            if m:
                out.append((f"{path}: variable {v['name']}", m.group(1)))
    for g in load_yaml("prometheus/rules.yml")["groups"]:
        for r in g["rules"]:
            out.append((f"rules.yml: {r.get('alert') or r.get('record')}", r["expr"]))
    for d in datasources():
        for q in d.get("jsonData", {}).get("tracesToMetrics", {}).get("queries", []):
            out.append((f"datasource {d['name']}: {q['name']}", q["query"]))
    return out


def grafana_to_promql(expr):
    e = expr.replace("$$", "$")
    e = e.replace("$__tags", 'http_route="/x"')
    e = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", e)
    e = re.sub(r"\$\{?(\w+)(?::\w+)?\}?", "x", e)
    return e


def write_promql_rules(out_path):
    """Every query as a recording rule (Grafana variables replaced), for promtool to parse;
    out_path.map says which rule is which query."""
    exprs = promql_exprs()
    rules = [{"record": f"check:expr_{i}", "expr": grafana_to_promql(e)} for i, (_, e) in enumerate(exprs)]
    with open(out_path, "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard-and-datasource-queries", "rules": rules}]}, f)
    with open(out_path + ".map", "w") as f:
        for i, (where, _) in enumerate(exprs):
            f.write(f"check:expr_{i} = {where}\n")
    print(len(rules))


def metric_names(expr):
    e = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)  # label lists
    return set(re.findall(r"\b(?:http|rpc)_[a-z_]+\b", e))


def check_scrape(path):
    names = set()
    for _, e in promql_exprs():
        names |= metric_names(e)
    scraped = set()
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            m = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
            if m:
                scraped.add(m.group(0))
    missing = sorted(names - scraped)
    if missing:
        print(f"{len(missing)} of {len(names)} metric names queried are not in {path}:")
        for n in missing:
            print(f"  {n}")
        sim = sorted(s for s in scraped if s.startswith(("http_", "rpc_")))
        print("http_*/rpc_* names in the scrape: " + (", ".join(sim) if sim else "(none)"))
        sys.exit(1)
    print(f"all {len(names)} queried metric names are in the scrape: " + ", ".join(sorted(names)))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {
        "yaml": check_yaml, "json": check_json, "compose": check_compose,
        "collector": check_collector, "prometheus": check_prometheus, "grafana": check_grafana,
        "promql-rules": lambda: write_promql_rules(args[0]),
        "scrape": lambda: check_scrape(args[0]),
    }[cmd]()
PYEOF

echo "== syntax"
run "YAML syntax, no duplicate keys" python3 "$PY" yaml
run "dashboard JSON syntax, no duplicate keys" python3 "$PY" json

echo "== consistency"
run "docker-compose.yml: services, pinned images, mounts, ports" python3 "$PY" compose
run "collector.yaml: pipelines, receivers, exporters -> services" python3 "$PY" collector
run "prometheus.yml: rule files and mounts, pizzeria scrape job" python3 "$PY" prometheus
run "grafana: datasources, links, derived fields, dashboard refs" python3 "$PY" grafana

echo "== promtool"
if command -v promtool >/dev/null 2>&1; then
  echo "     $(promtool --version 2>&1 | head -n1)"
  run "promtool check config prometheus.yml" promtool check config prometheus.yml
  run "promtool check rules prometheus/rules.yml" promtool check rules prometheus/rules.yml
  run "promtool test rules prometheus/rules_test.yml" promtool test rules prometheus/rules_test.yml
  if python3 "$PY" promql-rules "$TMP/queries.yml" >"$TMP/n" 2>&1; then
    run "PromQL syntax of the $(cat "$TMP/n") dashboard/rule/datasource queries" \
      promql_check "$TMP/queries.yml"
  else
    FAILED=$((FAILED + 1))
    FAILURES+=("PromQL extraction from the dashboards, rules and datasources")
    echo "FAIL PromQL extraction from the dashboards, rules and datasources"
    sed 's/^/     /' "$TMP/n"
  fi
else
  FAILED=$((FAILED + 1))
  FAILURES+=("promtool not found (install Debian's prometheus package)")
  echo "FAIL promtool not found (run as root to let this script install Debian's prometheus package)"
fi

echo "== docker compose"
if docker compose version >/dev/null 2>&1; then
  run "docker compose config -q" docker compose -f docker-compose.yml config -q
elif command -v docker-compose >/dev/null 2>&1 && docker-compose version >/dev/null 2>&1; then
  run "docker-compose config -q" docker-compose -f docker-compose.yml config -q
else
  skip "docker compose config -q: no compose client here (neither 'docker compose' nor 'docker-compose')"
fi

if [[ -n "$SCRAPE" ]]; then
  echo "== scrape"
  run "queried metric names present in $SCRAPE" python3 "$PY" scrape "$SCRAPE"
fi

echo
if [[ $FAILED -gt 0 ]]; then
  echo "failed:"
  printf '  %s\n' "${FAILURES[@]}"
fi
echo "check.sh: $PASSED passed, $FAILED failed, $SKIPPED skipped"
[[ $FAILED -eq 0 ]]
