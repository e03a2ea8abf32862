#!/usr/bin/env bash
# End-to-end tests of tower-otel-http through its demo (examples/pizzeria.rs), on 127.0.0.1 only:
#   A  OTLP to a real receiver (rotel, Python processors writing what arrives as JSON lines),
#      once over http/protobuf, once over gRPC: spans attribute by attribute, the kitchen
#      trace, the duration metrics, log correlation
#   B  clients from another ecosystem: Python `requests` + opentelemetry-instrumentation-requests
#      calls the demo, Python `grpcio` + opentelemetry-instrumentation-grpc calls its gRPC oven;
#      each Rust SERVER span is the child of the Python CLIENT span
#   C  Debian's Prometheus scrapes /metrics; histogram_quantile per route; deploy/check.sh on
#      the scrape when deploy/ has it
# Installs what it needs (pip into e2e/.venv, Debian's prometheus when missing), builds the demo
# once (`cargo build --example pizzeria --all-features`), kills everything it started on exit. See e2e/README.md.
set -euo pipefail

E2E="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$E2E")"
OUT="$E2E/out"
VENV="$E2E/.venv"
T0=$(date +%s)
T_BUILT=""

rm -rf "$OUT"
mkdir -p "$OUT"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/pizzeria-e2e.XXXXXX")"

PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 30); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PASSED=0
FAILED=0
FAILURES=()

section() { printf '\n== %s\n' "$*"; }
summary() {
  local t1
  t1=$(date +%s)
  section "summary ($((t1 - T0))s in all${T_BUILT:+, $((t1 - T_BUILT))s after the build}; logs and received telemetry in e2e/out/)"
  if [[ $FAILED -gt 0 ]]; then
    echo "failed:"
    printf '  %s\n' "${FAILURES[@]}"
  fi
  echo "e2e: $PASSED passed, $FAILED failed"
}
# die: a failure the rest cannot run without; prints the summary and exits 1
die() {
  summary
  exit 1
}
pass() { PASSED=$((PASSED + 1)); echo "PASS $*"; }
fail() { FAILED=$((FAILED + 1)); FAILURES+=("$1"); echo "FAIL $*"; }

# checked NAME CMD...: runs a check.py subcommand (which prints its own PASS/FAIL lines) and
# counts them; a non-zero exit without any FAIL line counts as one failure named NAME
checked() {
  local name="$1" rc=0 p f
  shift
  "$@" >"$TMP/check.out" 2>&1 || rc=$?
  cat "$TMP/check.out"
  p=$(grep -c '^PASS' "$TMP/check.out" || true)
  f=$(grep -c '^FAIL' "$TMP/check.out" || true)
  PASSED=$((PASSED + p))
  FAILED=$((FAILED + f))
  while IFS= read -r line; do FAILURES+=("${line#FAIL }"); done < <(grep '^FAIL' "$TMP/check.out" | cut -c1-160 || true)
  if [[ $rc -ne 0 && $f -eq 0 ]]; then
    fail "$name (exit $rc)"
  fi
}

# bg NAME CMD...: starts CMD in the background, output to $OUT/NAME.log; its pid in $LAST_PID
bg() {
  local name="$1"
  shift
  "$@" >"$OUT/$name.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

# stop PID [SECONDS]: SIGTERM and wait for it to exit (the demo flushes telemetry on SIGTERM)
stop() {
  local pid="$1" secs="${2:-15}"
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 $((secs * 10))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    return 1
  fi
  wait "$pid" 2>/dev/null || true
}

# wait_tcp PORT SECONDS
wait_tcp() {
  local port="$1" secs="$2"
  for _ in $(seq 1 $((secs * 10))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# ---------------------------------------------------------------- setup

section "setup"
APT_UPDATED=0
apt_install() {
  if [[ $APT_UPDATED -eq 0 ]]; then
    apt-get update -qq >"$OUT/apt.log" 2>&1
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >>"$OUT/apt.log" 2>&1
}

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  echo "installing Debian's prometheus"
  apt_install prometheus || { tail -5 "$OUT/apt.log"; fail "apt-get install prometheus (log: e2e/out/apt.log)"; die; }
fi
prometheus --version 2>&1 | head -1

PYTHON="$(command -v python3.11 || command -v python3)"
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
REQ_HASH="$(sha256sum "$E2E/requirements.txt" | cut -d' ' -f1)"
if [[ "$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)" != "$REQ_HASH" ]]; then
  echo "installing e2e/requirements.txt into e2e/.venv"
  if ! "$PY" -m pip install -q --disable-pip-version-check -r "$E2E/requirements.txt" >"$OUT/pip.log" 2>&1; then
    tail -20 "$OUT/pip.log"
    fail "pip install -r e2e/requirements.txt (log: e2e/out/pip.log)"
    die
  fi
  echo "$REQ_HASH" >"$VENV/.requirements.sha256"
fi
ROTEL="$("$PY" -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))')"
# rotel-agent embeds the system's libpython3.11 for its Python processors
if ldd "$ROTEL" | grep -q 'not found'; then
  echo "installing libpython3.11 for rotel-agent"
  apt_install libpython3.11 || { tail -5 "$OUT/apt.log"; fail "apt-get install libpython3.11 (log: e2e/out/apt.log)"; die; }
fi
echo "rotel-agent $("$ROTEL" version 2>&1 | tail -1) (pip rotel $("$PY" -c 'import importlib.metadata as m; print(m.version("rotel"))'))"

if [[ -n "${E2E_DEMO:-}" ]]; then
  # a prebuilt demo binary (by hand: skips the build)
  DEMO="$E2E_DEMO"
  echo "demo: $DEMO (E2E_DEMO, not rebuilt)"
else
  echo "cargo build --example pizzeria --all-features"
  if ! (cd "$ROOT" && cargo build --example pizzeria --all-features) >"$OUT/build.log" 2>&1; then
    tail -30 "$OUT/build.log"
    fail "cargo build --example pizzeria --all-features (log: e2e/out/build.log)"
    die
  fi
  TARGET_DIR="$(cd "$ROOT" && cargo metadata --no-deps --format-version 1 | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
  DEMO="$TARGET_DIR/debug/examples/pizzeria"
fi
[[ -x "$DEMO" ]] || { fail "demo binary at $DEMO"; die; }
T_BUILT=$(date +%s)

CHECK=("$PY" "$E2E/check.py")
mapfile -t PORTS < <("${CHECK[@]}" freeports 6)
OTLP_HTTP=${PORTS[0]} OTLP_GRPC=${PORTS[1]} PORT_A1=${PORTS[2]} PORT_A2=${PORTS[3]} PORT_LIVE=${PORTS[4]} PORT_PROM=${PORTS[5]}

# ---------------------------------------------------------------- rotel

section "rotel (OTLP receiver) on 127.0.0.1:$OTLP_HTTP (http) and 127.0.0.1:$OTLP_GRPC (grpc)"
SINK="$OUT/sink"
mkdir -p "$SINK"
export E2E_SINK_DIR="$SINK"
# its embedded Python is the system libpython3.11 with its own stdlib: no inherited PYTHONHOME/PATH
bg rotel env -u PYTHONHOME -u PYTHONPATH "$ROTEL" start \
  --otlp-http-endpoint "127.0.0.1:$OTLP_HTTP" \
  --otlp-grpc-endpoint "127.0.0.1:$OTLP_GRPC" \
  --exporter blackhole \
  --otlp-with-trace-processor "$E2E/otlp_sink.py" \
  --otlp-with-metrics-processor "$E2E/otlp_sink.py" \
  --otlp-with-logs-processor "$E2E/otlp_sink.py" \
  --debug-log traces --debug-log metrics --debug-log logs --debug-log-verbosity detailed
ROTEL_PID=$LAST_PID
if wait_tcp "$OTLP_HTTP" 15 && wait_tcp "$OTLP_GRPC" 5; then
  pass "rotel listening"
else
  tail -20 "$OUT/rotel.log"
  fail "rotel listening"
  die
fi

# the SDK variables every demo run gets (e2e.phase tells runs apart in what rotel received)
otel_env() { # PHASE ENDPOINT PROTOCOL
  echo OTEL_EXPORTER_OTLP_ENDPOINT="$2" OTEL_EXPORTER_OTLP_PROTOCOL="$3" \
    OTEL_SERVICE_NAME=pizzeria-e2e OTEL_RESOURCE_ATTRIBUTES="e2e.phase=$1,deployment.environment.name=e2e" \
    OTEL_METRIC_EXPORT_INTERVAL=500 OTEL_BSP_SCHEDULE_DELAY=100
}

# ---------------------------------------------------------------- check A

check_a() { # PHASE ENDPOINT PROTOCOL PORT
  local phase="$1" endpoint="$2" protocol="$3" port="$4" rc=0
  section "A ($protocol): pizzeria --once -> rotel $endpoint"
  # shellcheck disable=SC2046
  env $(otel_env "$phase" "$endpoint" "$protocol") timeout 60 "$DEMO" --addr "127.0.0.1:$port" --once \
    >"$OUT/demo-$phase.log" 2>&1 || rc=$?
  if [[ $rc -eq 0 ]] && grep -q '^pizzeria listening on' "$OUT/demo-$phase.log"; then
    pass "[$phase] demo ran its burst and exited 0"
  else
    tail -20 "$OUT/demo-$phase.log"
    fail "[$phase] demo ran its burst and exited 0 (exit $rc)"
    return
  fi
  checked "[$phase] OTLP checks" "${CHECK[@]}" otlp --sink "$SINK" --phase "$phase" --port "$port" --wait 15
}

check_a a-http "http://127.0.0.1:$OTLP_HTTP" http/protobuf "$PORT_A1"
check_a a-grpc "http://127.0.0.1:$OTLP_GRPC" grpc "$PORT_A2"

# ---------------------------------------------------------------- the live demo (B and C)

section "live demo on 127.0.0.1:$PORT_LIVE (exporting to rotel over http/protobuf)"
# shellcheck disable=SC2046
bg demo-live env $(otel_env live "http://127.0.0.1:$OTLP_HTTP" http/protobuf) "$DEMO" --addr "127.0.0.1:$PORT_LIVE"
DEMO_PID=$LAST_PID
LIVE="http://127.0.0.1:$PORT_LIVE"
for _ in $(seq 1 100); do
  grep -q 'Ctrl-C to stop' "$OUT/demo-live.log" 2>/dev/null && break
  kill -0 "$DEMO_PID" 2>/dev/null || break
  sleep 0.1
done
if grep -q 'Ctrl-C to stop' "$OUT/demo-live.log" && wait_tcp "$PORT_LIVE" 5; then
  pass "live demo serving (burst done)"
else
  tail -20 "$OUT/demo-live.log"
  fail "live demo serving"
  die
fi

# ---------------------------------------------------------------- check B

section "B: Python requests (OTel-instrumented) -> $LIVE/api/menu"
if OTEL_RESOURCE_ATTRIBUTES="e2e.phase=live" "$PY" "$E2E/py_client.py" --url "$LIVE/api/menu" \
  --otlp "http://127.0.0.1:$OTLP_HTTP" --out "$OUT/py-client.json" >"$OUT/py-client.log" 2>&1; then
  cat "$OUT/py-client.log"
  pass "[live] Python client called the demo, sent a traceparent, exported its span"
else
  cat "$OUT/py-client.log"
  fail "[live] Python client called the demo"
fi

section "B (gRPC): Python grpcio (OTel-instrumented) -> 127.0.0.1:$PORT_LIVE pizzeria.Oven/Bake"
if OTEL_RESOURCE_ATTRIBUTES="e2e.phase=live" "$PY" "$E2E/py_grpc_client.py" --target "127.0.0.1:$PORT_LIVE" \
  --otlp "http://127.0.0.1:$OTLP_HTTP" --out "$OUT/py-grpc-client.json" >"$OUT/py-grpc-client.log" 2>&1; then
  cat "$OUT/py-grpc-client.log"
  pass "[live] Python grpcio client called pizzeria.Oven/Bake, exported its span"
else
  cat "$OUT/py-grpc-client.log"
  fail "[live] Python grpcio client called pizzeria.Oven/Bake"
fi

# ---------------------------------------------------------------- check C

section "C: Debian's Prometheus on 127.0.0.1:$PORT_PROM scraping $LIVE/metrics every 1s"
PROM_DIR="$TMP/prometheus"
mkdir -p "$PROM_DIR/data"
cat >"$PROM_DIR/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: pizzeria
    metrics_path: /metrics
    static_configs:
      - targets: ["127.0.0.1:$PORT_LIVE"]
EOF
cp "$PROM_DIR/prometheus.yml" "$OUT/prometheus.yml"
if promtool check config "$PROM_DIR/prometheus.yml" >"$OUT/promtool.log" 2>&1; then
  pass "[prometheus] promtool check config"
else
  cat "$OUT/promtool.log"
  fail "[prometheus] promtool check config"
fi
bg prometheus prometheus --config.file="$PROM_DIR/prometheus.yml" --storage.tsdb.path="$PROM_DIR/data" \
  --web.listen-address="127.0.0.1:$PORT_PROM" --log.level=warn
PROM_PID=$LAST_PID
checked "[prometheus] query" "${CHECK[@]}" prometheus --prom "http://127.0.0.1:$PORT_PROM" --demo "$LIVE" --wait 40
if ! kill -0 "$PROM_PID" 2>/dev/null; then
  tail -20 "$OUT/prometheus.log"
fi

if curl -fsS "$LIVE/metrics" -o "$OUT/scrape.txt" && grep -q '^http_server_request_duration_seconds_bucket{' "$OUT/scrape.txt"; then
  pass "[prometheus] /metrics saved to e2e/out/scrape.txt ($(grep -c '^http_server_request_duration_seconds_count{' "$OUT/scrape.txt") server duration series)"
else
  fail "[prometheus] /metrics saved to e2e/out/scrape.txt with http_server_request_duration_seconds_bucket"
fi
# E2E_DEPLOY_CHECK: strict (default: a failure of deploy/check.sh fails the run), warn, skip
DEPLOY_MODE="${E2E_DEPLOY_CHECK:-strict}"
if [[ ! -f "$ROOT/deploy/check.sh" ]]; then
  echo "SKIP [deploy] deploy/check.sh absent"
elif [[ "$DEPLOY_MODE" == skip ]]; then
  echo "SKIP [deploy] deploy/check.sh (E2E_DEPLOY_CHECK=skip)"
elif bash "$ROOT/deploy/check.sh" "$OUT/scrape.txt" >"$OUT/deploy-check.log" 2>&1; then
  pass "[deploy] deploy/check.sh e2e/out/scrape.txt ($(grep -E '^check.sh: ' "$OUT/deploy-check.log" | tail -1))"
else
  # its failed checks with their explanation (indented lines after each FAIL)
  awk '/^FAIL /{p=1; print "     " $0; next} /^(ok|skip|==) |^failed:|^ *$/{p=0} p{print "     " $0}' \
    "$OUT/deploy-check.log" | head -20
  if [[ "$DEPLOY_MODE" == warn ]]; then
    echo "WARN [deploy] deploy/check.sh e2e/out/scrape.txt failed (E2E_DEPLOY_CHECK=warn; log: e2e/out/deploy-check.log)"
  else
    fail "[deploy] deploy/check.sh e2e/out/scrape.txt ($(grep -E '^check.sh: ' "$OUT/deploy-check.log" | tail -1); log: e2e/out/deploy-check.log)"
  fi
fi
stop "$PROM_PID" 10 || true

# ---------------------------------------------------------------- B's spans (after the flush)

section "B: the spans as rotel received them (demo stopped with SIGTERM, telemetry flushed)"
if stop "$DEMO_PID" 20; then
  pass "[live] demo stopped on SIGTERM"
else
  fail "[live] demo stopped on SIGTERM within 20s"
fi
if [[ -f "$OUT/py-client.json" ]]; then
  checked "[live] propagation" "${CHECK[@]}" propagation --sink "$SINK" --phase live --port "$PORT_LIVE" \
    --client "$OUT/py-client.json" --wait 15
fi
if [[ -f "$OUT/py-grpc-client.json" ]]; then
  checked "[live] gRPC propagation" "${CHECK[@]}" grpc-propagation --sink "$SINK" --phase live --port "$PORT_LIVE" \
    --client "$OUT/py-grpc-client.json" --wait 15
fi
stop "$ROTEL_PID" 10 || true

# ---------------------------------------------------------------- summary

summary
[[ $FAILED -eq 0 ]]
