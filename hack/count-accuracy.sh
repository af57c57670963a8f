#!/usr/bin/env bash
# How close a real Prometheus's per-service call rates come to each interval's exact counts:
# the setup of hack/e2e-controller.sh's call counts without a cluster. Generates live traces
# (`derm generate`, 10 levels of 24 s from now, sampling 0.25), serves them as mesh counters
# (hack/mesh-counters.py), scrapes them every second with Prometheus (hack/build-prometheus.sh),
# waits SECONDS of real time for the data, then runs hack/count-accuracy.py with the README's
# Istio query over 12 s intervals. Everything on 127.0.0.1; cleans up after itself.
#
# Usage: hack/count-accuracy.sh [SECONDS]      (default 200; the traces last 240 s)
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HACK_DIR/.." && pwd)"
# shellcheck source=hack/lib.sh
. "$HACK_DIR/lib.sh"
TIMEOUT=60
DURATION="${1:-200}"
INTERVAL=12
WORK="$(mktemp -d)"
(cd "$ROOT" && cargo build --release -q -p derm-core --bin derm)
origin=$((($(date +%s) / INTERVAL) * INTERVAL))
"$ROOT/target/release/derm" generate --format jaeger --level-s 24 --origin-s "$origin" --sampling 0.25 \
  --load-scale 0.5 --seed 9 -o "$WORK/traces.json" 2>/dev/null
MESH_PID= PROM_PID=
trap 'kill $PROM_PID $MESH_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
mesh_prometheus "$WORK" "$WORK/traces.json" 0.25
echo "measuring for $DURATION s (Prometheus on 127.0.0.1:$PROM_PORT)" >&2
# The measurement period: real time for the counters to move, not a synchronisation.
sleep "$DURATION"
python3 "$HACK_DIR/count-accuracy.py" "$WORK/traces.json" 0.25 "http://127.0.0.1:$PROM_PORT" "$origin" "$INTERVAL" \
  'sum by (destination_workload) (rate(istio_requests_total{reporter="destination"}[$interval]))'
