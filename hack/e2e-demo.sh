#!/usr/bin/env bash
# End to end test of `derm-adapter demo` (the README's main command) with a real kubectl: the
# demo runs on a free port at high speed; the kubectl command it prints (with that port) lists
# one derm_desired_replicas series per trainticket service, each >= 1, also with a label
# selector; SIGTERM stops it cleanly (exit 0). Needs no cluster.
#   DERM_KUBECTL      kubectl to use (default: kubectl on PATH, else ~/.cache/derm/bin/current/kubectl)
#   DERM_ADAPTER_BIN  use this binary instead of building target/release/derm-adapter
#   DERM_PROBE_TIMEOUT seconds per wait (default 120)
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HACK_DIR/.." && pwd)"
K="${DERM_KUBECTL:-$(command -v kubectl || echo "$HOME/.cache/derm/bin/current/kubectl")}"
TIMEOUT="${DERM_PROBE_TIMEOUT:-120}"
# shellcheck source=hack/lib.sh
. "$HACK_DIR/lib.sh"
WORK="$(mktemp -d /tmp/derm-e2e-demo.XXXXXX)"
build_bin derm-adapter DERM_ADAPTER_BIN "$WORK" >/dev/null

PORT="$(free_port)"
"$BIN" demo --listen "127.0.0.1:$PORT" --speed 60 --minutes 30 >"$WORK/demo.log" 2>&1 &
DEMO_PID=$!
trap 'kill -9 $DEMO_PID 2>/dev/null || true' EXIT

# The command exactly as printed, run with our kubectl.
printed() { grep -m1 -- '--server https://' "$WORK/demo.log" | sed "s|^ *[^ ]*kubectl |\"$K\" |"; }
items() { # label selector (may be empty) -> "count min" of the served values
  local cmd
  cmd="$(printed)"
  [[ -n "$1" ]] && cmd="$cmd'?labelSelector=$1'"
  eval "$cmd" 2>/dev/null | python3 -c '
import json, sys
v = [int(i["value"]) for i in json.load(sys.stdin)["items"]]
print(len(v), min(v) if v else 0)'
}
services() { sed -n 's/^app trainticket: \([0-9]*\) services.*/\1/p' "$WORK/demo.log"; }
all_services() { [[ -n "$(services)" && "$(items "")" =~ ^$(services)\ [1-9] ]]; }
t0=$SECONDS
if eventually all_services; then ok "the printed kubectl command lists one series per service ($(services)), each >= 1, after $((SECONDS - t0))s"; else
  ko "printed command: $(printed); got: $(items "" 2>&1); log: $(tail -n 3 "$WORK/demo.log")"
fi
one="$(items 'service%3Dts-basic-service')"
if [[ "$one" =~ ^1\ [1-9] ]]; then ok "label selector service=ts-basic-service: exactly one series ($one)"; else
  ko "label selector: $one"
fi
decisions() { grep -c '^t = ' "$WORK/demo.log"; }
first="$(decisions)"
more() { (($(decisions) > first)); }
if eventually more; then ok "the online loop keeps deciding ($first -> $(decisions) decisions shown)"; else
  ko "no new decision after $first"
fi
kill -TERM "$DEMO_PID"
if wait "$DEMO_PID"; then ok "SIGTERM: the demo drains and exits 0"; else ko "SIGTERM: exit $?"; fi
trap - EXIT
echo "$pass passed, $fail failed"
[[ $fail == 0 ]] && rm -rf "$WORK"
[[ $fail == 0 ]]
