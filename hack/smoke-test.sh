#!/usr/bin/env bash
# Probe a cluster started by hack/cluster-up.sh: API ready, fake nodes untainted,
# Deployment -> ReplicaSet -> Pods bound to fake nodes by the scheduler, HPA with a per-HPA
# tolerance accepted and reconciled by the HPA controller, scheduler calling the extender,
# namespace deletion completing. Prints one line per check and "N passed, N failed".
#   DERM_CLUSTER_DIR   run dir (default /tmp/derm-cluster)
#   DERM_SMOKE_TIMEOUT seconds per wait (default 90)
set -euo pipefail

RUN="${DERM_CLUSTER_DIR:-/tmp/derm-cluster}"
# shellcheck disable=SC1091
. "$RUN/env"
K="$DERM_KUBECTL"
NS="derm-smoke-$$"
TIMEOUT="${DERM_SMOKE_TIMEOUT:-90}"
# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"


# 1. API
if [[ "$("$K" get --raw /readyz 2>&1)" == ok ]]; then ok "GET /readyz = ok"; else ko "GET /readyz"; fi
gv="$("$K" get --raw /version | python3 -c 'import json,sys; print(json.load(sys.stdin)["gitVersion"])')"
if [[ "$gv" == "$DERM_K8S_VERSION" ]]; then ok "/version gitVersion = $gv"; else ko "/version gitVersion = $gv, want $DERM_K8S_VERSION"; fi

# 2. nodes
nodes="$("$K" get nodes -o jsonpath='{range .items[*]}{.metadata.name}{"|"}{.spec.taints}{"|"}{.status.allocatable.cpu}{"\n"}{end}')"
count="$(grep -c . <<<"$nodes" || true)"
tainted="$(awk -F'|' '$2 != ""' <<<"$nodes")"
if [[ "$count" == "$DERM_NODES" && -z "$tainted" ]]; then
  ok "$count fake nodes, none tainted"
else
  ko "nodes: count $count (want $DERM_NODES), tainted: ${tainted:-none}"
fi

# 3. Deployment -> ReplicaSet -> Pods bound by the scheduler
"$K" create namespace "$NS" >/dev/null
"$K" -n "$NS" create deployment smoke --image=registry.k8s.io/pause:3.10 --replicas=3 >/dev/null
if eventually bash -c "[[ \$('$K' -n '$NS' get rs -l app=smoke -o jsonpath='{.items[0].status.replicas}') == 3 ]]"; then
  ok "ReplicaSet created by the deployment controller with 3 replicas"
else
  ko "ReplicaSet with 3 replicas"
fi
bound() {
  local out
  out="$("$K" -n "$NS" get pods -l app=smoke -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}')"
  [[ "$(grep -c '^derm-node-' <<<"$out")" == 3 ]]
}
if eventually bound; then
  ok "3 pods bound by kube-scheduler to: $("$K" -n "$NS" get pods -l app=smoke -o jsonpath='{.items[*].spec.nodeName}')"
else
  ko "pods bound to fake nodes; got: $("$K" -n "$NS" get pods -o wide 2>&1 | tail -n +2)"
fi
phases="$("$K" -n "$NS" get pods -l app=smoke -o jsonpath='{.items[*].status.phase}')"
if [[ "$phases" == "Pending Pending Pending" ]]; then ok "pods stay Pending (no kubelet)"; else ko "pod phases: $phases"; fi

# 4. HPA with per-HPA tolerance (feature gate HPAConfigurableTolerance)
cat <<EOF | "$K" apply -f - >/dev/null
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: smoke
  namespace: $NS
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: smoke}
  minReplicas: 1
  maxReplicas: 10
  metrics:
  - type: External
    external:
      metric: {name: derm_smoke_metric}
      target: {type: AverageValue, averageValue: "1"}
  behavior:
    scaleUp:
      tolerance: "0"
      stabilizationWindowSeconds: 0
    scaleDown:
      tolerance: "0"
      stabilizationWindowSeconds: 0
EOF
tol="$("$K" -n "$NS" get hpa smoke -o jsonpath='{.spec.behavior.scaleUp.tolerance}|{.spec.behavior.scaleDown.tolerance}')"
if [[ "$tol" == "0|0" ]]; then ok "HPA spec.behavior.scale{Up,Down}.tolerance persisted as \"0\""; else ko "HPA tolerance read back as '$tol' (dropped: feature gate off?)"; fi
cond() {
  [[ -n "$("$K" -n "$NS" get hpa smoke -o jsonpath='{.status.conditions[?(@.type=="ScalingActive")].reason}')" ]]
}
if eventually cond; then
  ok "HPA controller reconciles it: ScalingActive reason $("$K" -n "$NS" get hpa smoke -o jsonpath='{.status.conditions[?(@.type=="ScalingActive")].reason}')"
else
  ko "HPA controller set no ScalingActive condition"
fi

# 5. the scheduler called the extender (nothing listens there unless a test started one)
skip_line="$(grep -F 'Skipping extender' "$DERM_LOG_DIR/kube-scheduler.log" | grep -F -- "$DERM_EXTENDER_URL/" | head -n 1 || true)"
if ! grep -q '^extenders:' "$DERM_CLUSTER_DIR/scheduler-config.yaml"; then
  ok "no extender configured (DERM_EXTENDER=0)"
elif [[ -n "$skip_line" ]]; then
  ok "kube-scheduler called the extender and ignored its error: ${skip_line:0:260}"
elif (exec 3<>"/dev/tcp/127.0.0.1/$DERM_EXTENDER_PORT") 2>/dev/null; then
  ok "an extender listens on $DERM_EXTENDER_PORT (successful calls are not logged)"
else
  ko "no extender call to $DERM_EXTENDER_URL in kube-scheduler.log"
fi

# 6. namespace deletion completes (namespace + garbage collector controllers)
"$K" delete namespace "$NS" --wait=false >/dev/null
if eventually bash -c "! '$K' get namespace '$NS'"; then ok "namespace $NS deleted"; else ko "namespace $NS still there after ${TIMEOUT}s"; fi

echo "$pass passed, $fail failed"
[[ $fail == 0 ]]
