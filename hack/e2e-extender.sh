#!/usr/bin/env bash
# End to end test of the real scheduler extender (target/release/derm-extender) with the real
# kube-scheduler of a cluster started by hack/cluster-up.sh (extender configured at
# $DERM_EXTENDER_URL, nodeCacheCapable, ignorable). The extender runs from --state-file: app
# "shop" where frontend (3 replicas, on node 1) calls cart at 120/s, and payment already has 2
# replicas on node 2 with --max-replicas-per-node 2.
# Checks: kube-scheduler calls /filter and /prioritize (the extender's request counters);
# the 3 cart pods all land on node 1, where the extender prefers them (affinity); no payment
# pod lands on node 2, which the extender filters (hard limit), although spreading would use
# it; a pod of no DermApp is neither filtered nor steered. Deletes the namespace and stops the
# extender, also on failure. Prints "N passed, N failed".
#   DERM_CLUSTER_DIR   run dir (default /tmp/derm-cluster)
#   DERM_PROBE_TIMEOUT seconds per wait (default 90)
#   DERM_EXTENDER_BIN  use this binary instead of building target/release/derm-extender
# The extender's weight in the scheduler configuration must outweigh PodTopologySpread's
# default spreading (weight 2): cluster-up.sh's DERM_EXTENDER_WEIGHT (hack/probe-all.sh sets 5).
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HACK_DIR/.." && pwd)"
RUN="${DERM_CLUSTER_DIR:-/tmp/derm-cluster}"
# shellcheck disable=SC1091
. "$RUN/env"
K="$DERM_KUBECTL"
TIMEOUT="${DERM_PROBE_TIMEOUT:-90}"
# shellcheck source=hack/lib.sh
. "$HACK_DIR/lib.sh"
NS=derm-e2e-extender
WORK="$RUN/e2e-extender"
rm -rf "$WORK"
mkdir -p "$WORK"

# --- the binary -------------------------------------------------------------------------------
t0=$SECONDS
if [[ -n "${DERM_EXTENDER_BIN:-}" ]]; then
  BIN="$DERM_EXTENDER_BIN"
else
  if ! (cd "$ROOT" && cargo build --release -p derm-extender) >"$WORK/build.log" 2>&1; then
    tail -n 30 "$WORK/build.log" >&2
    echo "cargo build --release -p derm-extender failed; log in $WORK/build.log" >&2
    exit 1
  fi
  BIN="$ROOT/target/release/derm-extender"
fi
echo "derm-extender built in $((SECONDS - t0))s"

mapfile -t NODES < <("$K" get nodes -l derm.dev/fake-node=true -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}' | sort)
if ((${#NODES[@]} < 3)); then
  ko "need 3 fake nodes, found ${#NODES[@]}"
  echo "$pass passed, $fail failed"
  exit 1
fi
N1=${NODES[0]} N2=${NODES[1]}
weight="$(awk '/^  weight:/ {print $2}' "$DERM_CLUSTER_DIR/scheduler-config.yaml")"
echo "extender weight in the scheduler configuration: ${weight:-none}"

# --- the extender -----------------------------------------------------------------------------
cat >"$WORK/state.json" <<EOF
{
  "apps": [{
    "namespace": "$NS", "name": "shop",
    "services": [{"name": "frontend", "scaleTargetRef": {"name": "frontend"}},
                 {"name": "cart", "scaleTargetRef": {"name": "cart"}},
                 {"name": "payment", "scaleTargetRef": {"name": "payment"}}],
    "callAffinity": [{"from": "frontend", "to": "cart", "callsPerSecond": 120}]
  }],
  "pods": [{"namespace": "$NS", "workload": {"name": "frontend"}, "node": "$N1", "count": 3},
           {"namespace": "$NS", "workload": {"name": "payment"}, "node": "$N2", "count": 2}]
}
EOF
ADMIN_PORT="$(free_port)"
"$BIN" --listen "127.0.0.1:$DERM_EXTENDER_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
  --state-file "$WORK/state.json" --max-replicas-per-node 2 --weight-spread 0 --plan-interval 0 \
  >"$WORK/extender.log" 2>&1 &
EXT_PID=$!
cleanup() {
  "$K" delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  kill "$EXT_PID" 2>/dev/null || true
  wait "$EXT_PID" 2>/dev/null || true
}
trap cleanup EXIT
ready() { curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz"; }
if eventually ready; then ok "derm-extender ready on 127.0.0.1:$DERM_EXTENDER_PORT (admin $ADMIN_PORT)"; else
  ko "derm-extender not ready: $(tail -n 5 "$WORK/extender.log")"
fi

# --- deployments ------------------------------------------------------------------------------
"$K" create namespace "$NS" >/dev/null
for d in cart:3 payment:4 other:1; do
  "$K" -n "$NS" create deployment "${d%%:*}" --image=registry.k8s.io/pause:3.10 --replicas="${d##*:}" >/dev/null
done
nodes_of() { # deployment -> sorted node names of its bound pods, one per line
  "$K" -n "$NS" get pods -l "app=$1" -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | sed '/^$/d' | sort
}
bound() { [[ "$(nodes_of "$1" | wc -l)" == "$2" ]]; }
t0=$SECONDS
if eventually bound cart 3 && eventually bound payment 4 && eventually bound other 1; then
  ok "all 8 pods bound to fake nodes by kube-scheduler in $((SECONDS - t0))s"
else
  ko "pods not bound: cart [$(nodes_of cart | xargs)] payment [$(nodes_of payment | xargs)] other [$(nodes_of other | xargs)]"
fi

metric() { # name and labels as printed -> value (0 when absent)
  curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics" | awk -v m="$1" '$1 == m {print $2; found=1} END {if (!found) print 0}'
}
filters="$(metric 'derm_extender_requests_total{verb="Filter",code="200"}')"
prios="$(metric 'derm_extender_requests_total{verb="Prioritize",code="200"}')"
if ((filters >= 8 && prios >= 1)); then ok "kube-scheduler called the extender: $filters filter, $prios prioritize requests (all 200)"; else
  ko "extender calls: $filters filter, $prios prioritize; scheduler log: $(grep -i extender "$DERM_CLUSTER_DIR/logs/kube-scheduler.log" | tail -n 2)"
fi

cart="$(nodes_of cart | uniq -c | xargs)"
if [[ "$cart" == "3 $N1" ]]; then ok "affinity decided placement: all 3 cart pods on $N1, next to frontend"; else
  ko "cart pods: $cart (want all 3 on $N1); extender: $(grep 'preferred node' "$WORK/extender.log" | tail -n 1)"
fi
payment="$(nodes_of payment | uniq -c | xargs)"
if ! nodes_of payment | grep -qx "$N2" && bound payment 4; then
  ok "hard limit decided placement: no payment pod on $N2 (filtered: 2 already there); placed $payment"
else
  ko "payment pods: $payment ($N2 must be filtered)"
fi
if grep -q 'filter: nodes fail a hard limit' "$WORK/extender.log" && grep -q 'prioritize: preferred node' "$WORK/extender.log"; then
  ok "decisions explained in the log: $(grep -m1 -o 'prioritize: preferred node.*' "$WORK/extender.log" | head -c 200)"
else
  ko "no decision log lines in $WORK/extender.log"
fi
notderm="$(metric 'derm_extender_decisions_total{verb="Filter",outcome="NotDerm",shadow="Active"}')"
if ((notderm >= 1)); then ok "the pod of no DermApp was seen and left neutral ($notderm NotDerm filter decisions)"; else
  ko "no NotDerm decision counted"
fi

# --- cleanup ----------------------------------------------------------------------------------
cleanup
trap - EXIT
if eventually bash -c "! '$K' get namespace '$NS'"; then ok "cleanup: namespace deleted, extender stopped"; else
  ko "namespace $NS still present after cleanup"
fi
echo "$pass passed, $fail failed"
[[ $fail == 0 ]]
