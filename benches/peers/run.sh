#!/usr/bin/env bash
# The peers bench: builds in release and runs everything, printing one markdown table.
#   benches/peers/run.sh             full run (a few minutes on 2 cores; the figures are noisy)
#   QUICK=1 benches/peers/run.sh     smoke test: few rounds, figures meaningless
# Optional: PEERS_ROUNDS, PEERS_TCP_ROUNDS, PEERS_TCP_REQUESTS override the sizes;
# PEERS_ONLY=plain,tracing,tcp runs only these groups (see `peers` without arguments' usage).
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --quiet --bin peers
exec cargo run --release --quiet --bin peers -- "$@"
