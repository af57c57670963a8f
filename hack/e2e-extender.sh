#!/usr/bin/env bash
# End to end test of the real scheduler extender (target/release/derm-extender) with the real
# kube-scheduler of a cluster started by hack/cluster-up.sh (extender configured at
# $DERM_EXTENDER_URL, nodeCacheCapable, ignorable). The extender runs from --state-file: app
# "shop" where frontend (3 replicas, on node 1) calls cart at 120/s, and payment already has 2
# replicas on node 2 with --max-replicas-per-node 2.
# Checks: kube-scheduler calls /filter and /prioritize (the extender's request counters);
# the 3 cart pods all land on node 1, where the extender prefers them (affinity); no payment
# pod lands on node 2, which the extender filters (hard limit), although spreading would use
# it; a pod of no DermApp is neither filtered nor steered; control: with --shadow the same cart
# Deployment is spread by kube-scheduler instead; cluster mode (no state file): a DermApp's status
# and a pod watch send an api Deployment next to its caller; manifests/scheduler/*config.yaml
# decode in the real kube-scheduler. Deletes the namespace and stops the
# extender, also on failure. Prints "N passed, N failed".
#   DERM_CLUSTER_DIR   run dir (default /tmp/derm-cluster)
#   DERM_PROBE_TIMEOUT seconds per wait (default 90)
#   DERM_EXTENDER_BIN  use this binary instead of building target/release/derm-extender
# The extender's weight in the scheduler configuration must outweigh PodTopologySpread's
# default spreading (weight 2): cluster-up.sh's DERM_EXTENDER_WEIGHT (hack/probe-all.sh sets 5).
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HACK_DIR/.." && pwd)"
# shellcheck source=hack/lib.sh
. "$HACK_DIR/lib.sh"
e2e_begin e2e-extender 90
NS=derm-e2e-extender
namespaces_gone "$NS"

# --- the binary -------------------------------------------------------------------------------
build_bin derm-extender DERM_EXTENDER_BIN "$WORK"

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
EXT_PID=
start_extender() { # extra flags...
  NO_COLOR=1 "$BIN" --listen "127.0.0.1:$DERM_EXTENDER_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
    --state-file "$WORK/state.json" --max-replicas-per-node 2 --weight-spread 0 --plan-interval 0 "$@" \
    >>"$WORK/extender.log" 2>&1 &
  EXT_PID=$!
}
stop_extender() {
  [[ -n "$EXT_PID" ]] || return 0
  kill "$EXT_PID" 2>/dev/null || true
  wait "$EXT_PID" 2>/dev/null || true
  EXT_PID=
}
cleanup() {
  "$K" delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  stop_extender
}
trap cleanup EXIT
ready() { curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz"; }
start_extender
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

# --- control: the same deployment with the extender in --shadow mode --------------------------
# Decisions are logged but scores are neutral: kube-scheduler's own spreading places the pods,
# so the placement above was the extender's doing.
stop_extender
start_extender --shadow
"$K" -n "$NS" delete deployment cart --wait=false >/dev/null
gone() { [[ -z "$(nodes_of cart)" ]]; }
eventually gone || true
if eventually ready; then
  "$K" -n "$NS" create deployment cart --image=registry.k8s.io/pause:3.10 --replicas=3 >/dev/null
  shadow_logged() { grep -q 'shadow=true' "$WORK/extender.log"; }
  if eventually bound cart 3 && eventually shadow_logged; then
    cart="$(nodes_of cart | uniq -c | xargs)"
    if [[ "$cart" != "3 $N1" ]]; then ok "control (--shadow, decisions only logged): cart pods spread by kube-scheduler: $cart"; else
      ko "control (--shadow): cart pods still all on $N1, so the extender was not what placed them"
    fi
  else
    ko "control (--shadow): cart pods not bound ($(nodes_of cart | xargs)) or no shadow decision logged"
  fi
else
  ko "control: extender not ready in --shadow mode: $(tail -n 3 "$WORK/extender.log")"
fi

# --- cluster mode: knowledge from watches of DermApps, Pods and Nodes --------------------------
# A DermApp "web" (web calls api at 50/s, status written through the status subresource), web's
# 2 replicas pinned to node 3 by a nodeSelector, then an api Deployment: the extender, now
# watching the cluster instead of reading a file, sends all 3 api pods to node 3.
stop_extender
N3=${NODES[2]}
CRD_CREATED=
if ! "$K" get crd dermapps.derm.dev >/dev/null 2>&1; then
  # A stand-in CRD with an open schema (the real one is derm-adapter's); removed again below.
  "$K" apply -f - >/dev/null <<'YAML'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: dermapps.derm.dev}
spec:
  group: derm.dev
  names: {kind: DermApp, listKind: DermAppList, plural: dermapps, singular: dermapp}
  scope: Namespaced
  versions:
  - name: v1alpha1
    served: true
    storage: true
    subresources: {status: {}}
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
YAML
  CRD_CREATED=1
fi
"$K" wait --for=condition=Established crd/dermapps.derm.dev --timeout="${TIMEOUT}s" >/dev/null
"$K" apply -f - >/dev/null <<YAML
apiVersion: derm.dev/v1alpha1
kind: DermApp
metadata: {name: web, namespace: $NS}
spec:
  sla: {latencyMs: 200, percentile: 95}
  entryService: web
  traceSource: {otlp: {}}
  services:
  - {name: web, scaleTargetRef: {kind: Deployment, name: web}, maxReplicas: 10}
  - {name: api, scaleTargetRef: {kind: Deployment, name: api}, maxReplicas: 10}
YAML
"$K" -n "$NS" patch dermapp web --subresource=status --type=merge -p "{\"status\": {
  \"lastSolveTime\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\", \"desiredReplicas\": {\"web\": 2, \"api\": 3},
  \"callAffinity\": [{\"from\": \"web\", \"to\": \"api\", \"callsPerSecond\": 50}]}}" >/dev/null
# Created with its nodeSelector (a later patch would start a rollout that never finishes: fake
# nodes run no kubelet, so new pods never become ready).
"$K" apply -f - >/dev/null <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: $NS}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      nodeSelector: {kubernetes.io/hostname: $N3}
      containers: [{name: pause, image: registry.k8s.io/pause:3.10}]
YAML
web_on_n3() { [[ "$(nodes_of web | uniq -c | xargs)" == "2 $N3" ]]; }
eventually web_on_n3 || ko "web pods not on $N3: $(nodes_of web | xargs)"
NO_COLOR=1 KUBECONFIG="$DERM_CLUSTER_DIR/kubeconfig" "$BIN" --listen "127.0.0.1:$DERM_EXTENDER_PORT" \
  --admin-listen "127.0.0.1:$ADMIN_PORT" --weight-spread 0 --plan-interval 0 >>"$WORK/extender.log" 2>&1 &
EXT_PID=$!
t0=$SECONDS
if eventually ready; then ok "cluster mode: caches of DermApps, Pods and Nodes synced, ready in $((SECONDS - t0))s"; else
  ko "cluster mode: not ready: $(tail -n 3 "$WORK/extender.log")"
fi
"$K" -n "$NS" create deployment api --image=registry.k8s.io/pause:3.10 --replicas=3 >/dev/null
if eventually bound api 3; then
  api="$(nodes_of api | uniq -c | xargs)"
  if [[ "$api" == "3 $N3" ]]; then ok "cluster mode: all 3 api pods on $N3, next to web (from the DermApp's status and the pod watch)"; else
    ko "cluster mode: api pods $api (want all 3 on $N3); extender: $(grep 'preferred node' "$WORK/extender.log" | tail -n 1)"
  fi
else
  ko "cluster mode: api pods not bound: $(nodes_of api | xargs)"
fi
stop_extender
"$K" -n "$NS" delete dermapp web --ignore-not-found >/dev/null 2>&1 || true
[[ -z "$CRD_CREATED" ]] || "$K" delete crd dermapps.derm.dev --wait=false >/dev/null 2>&1 || true

# --- the KubeSchedulerConfiguration snippets in manifests/ decode in the real kube-scheduler ----
for f in "$ROOT"/manifests/scheduler/*config.yaml; do
  {
    sed -e "s#caFile: .*#caFile: $DERM_CA_FILE#" -e '/^clientConnection:/d' -e '/^  kubeconfig:/d' "$f"
    printf 'clientConnection:\n  kubeconfig: %s\n' "$DERM_CLUSTER_DIR/kubeconfig"
  } >"$WORK/check-config.yaml"
  if "$DERM_BIN_DIR/kube-scheduler" --config "$WORK/check-config.yaml" --write-config-to "$WORK/written.yaml" \
    >"$WORK/check-config.log" 2>&1 && grep -q 'nodeCacheCapable: true' "$WORK/written.yaml"; then
    ok "kube-scheduler accepts manifests/scheduler/${f##*/} (extender, nodeCacheCapable, TLS)"
  else
    ko "kube-scheduler rejects manifests/scheduler/${f##*/}: $(grep -m1 -i error "$WORK/check-config.log")"
  fi
done

# --- cleanup ----------------------------------------------------------------------------------
cleanup
trap - EXIT
if eventually bash -c "! '$K' get namespace '$NS'"; then ok "cleanup: namespace deleted, extender stopped"; else
  ko "namespace $NS still present after cleanup"
fi
echo "$pass passed, $fail failed"
[[ $fail == 0 ]]
