#!/usr/bin/env bash
# Choose the trend predictor's default parameters on a validation run: the `derm` policy with
# every grid point of --predictor trend:ALPHA,BETA,PHI, one simulated hour each (two at a time),
# sorted by window violation rate, then mean containers. The defaults in core/src/predict/trend.rs
# come from `hack/trend-grid.sh trainticket 3` (seed 3: neither of the README's evaluated seeds).
#   hack/trend-grid.sh [SCENARIO] [SEED] [OUT_DIR]
set -euo pipefail
scenario="${1:-trainticket}"
seed="${2:-3}"
out="${3:-out/trend-grid/$scenario-$seed}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -q -p derm-core
mkdir -p "$out"
for a in 0.3 0.5 0.7 1.0; do for b in 0.1 0.2 0.3 0.5; do for phi in 0.8 0.9 1.0; do
  echo "$a $b $phi"
done; done; done | xargs -P 2 -L 1 sh -c '
  dir="$0/$3-$4-$5"
  target/release/derm simulate --scenario "$1" --duration-s 3600 --seed "$2" --policies derm \
    --predictor "trend:$3,$4,$5" --no-plots --out-dir "$dir" >/dev/null 2>&1
  python3 -c "import json,sys; d=json.load(open(sys.argv[1]))[\"policies\"][\"derm\"]; print(sys.argv[2], d[\"window_violation_rate\"], d[\"mean_containers\"])" \
    "$dir/results.json" "$3,$4,$5"' "$out" "$scenario" "$seed" |
  sort -k2,2g -k3,3g | awk 'BEGIN { print "alpha,beta,phi  window_violations  mean_containers" } { printf "%-15s %17.1f%% %16.1f\n", $1, 100 * $2, $3 }'
