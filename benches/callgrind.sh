#!/usr/bin/env bash
# Instructions per request of benches/profile.rs variants, under callgrind: each variant runs at
# two request counts and the difference removes start-up. Deterministic where wall time on a
# shared machine is not.
#
#   benches/callgrind.sh <profile-binary> [variant ...]
#   PREFIX=count benches/callgrind.sh benches/peers/target/release/peers ours opentelemetry-instrumentation-tower
#
# The binary: `cargo bench --bench profile --no-run` prints its path (the peers bench's:
# `cargo build --release --bin peers` in benches/peers, run as `peers count <variant> <n>`).
# Prints one line per variant: name, instructions per request, and the two totals.
set -euo pipefail
bin=$1
shift
variants=("$@")
if [ ${#variants[@]} -eq 0 ]; then
  variants=(bare noop metrics spans default default_simple global global_w3c global_crate given_w3c nosdk floor naive)
fi
small=${SMALL:-2000}
large=${LARGE:-6000}
ir() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" ${PREFIX:-} "$1" "$2" 2>&1 |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
for v in "${variants[@]}"; do
  a=$(ir "$v" "$small")
  b=$(ir "$v" "$large")
  echo "$v $(( (b - a) / (large - small) )) $a $b"
done
