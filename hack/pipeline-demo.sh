#!/usr/bin/env bash
# The offline pipeline on generated traces (`make pipeline`): generate traces with known
# parameters, learn profiles and graphs from them, evaluate the SLA probability, and solve.
set -euo pipefail
out=${1:-out/pipeline}
cd "$(dirname "$0")/.."
mkdir -p "$out"
cargo build --release -p derm-core --bin derm
derm=target/release/derm
"$derm" generate --scenario acceptance --seed 1 -o "$out/traces.json" --truth "$out/truth.json"
"$derm" profile --traces "$out/traces.json" --arg-tag distance=2,4 --out-dir "$out"
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
windows = json.load(open(f"{out}/windows.json"))["windows"]
mid = windows[len(windows) // 2]
loads = {s: rps / max(1, mid["containers"].get(s, 1)) for s, rps in mid["calls_rps"].items()}
json.dump(loads, open(f"{out}/mid-load.json", "w"), indent=1)
PY
"$derm" latency --profiles "$out/profiles.json" --graphs "$out/graphs.json" \
  --per-container-rps "$out/mid-load.json" --sla-ms 60
load=$(python3 -c "import json;w=json.load(open('$out/windows.json'))['windows'];print(round(w[len(w)//2]['load_rps'],1))")
echo "== derm solve: fewest containers for P(E2E <= 25 ms) >= 0.95 at $load req/s"
"$derm" solve --profiles "$out/profiles.json" --graphs "$out/graphs.json" --load-rps "$load" \
  --sla-ms 25 -o "$out/plan.json"
echo "outputs in $out: profiles.json graphs.json windows.json plan.json (truth.json: the true parameters)"
