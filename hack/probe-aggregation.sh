#!/usr/bin/env bash
# Probe the aggregation layer and the HPA arithmetic of a cluster started by
# hack/cluster-up.sh, with hack/fake-metrics-adapter.py standing in for the adapter:
# ExternalName Service -> localhost, APIService v1beta1.external.metrics.k8s.io with the
# server CA as caBundle, a request through the aggregator, the front-proxy identity seen by
# the adapter, and an HPA (External, AverageValue 1, tolerance 0) landing exactly on the
# metric's value, up and down. Leaves no APIService behind. Prints "N passed, N failed".
#   DERM_CLUSTER_DIR   run dir (default /tmp/derm-cluster)
#   DERM_PROBE_TIMEOUT seconds per wait (default 90)
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUN="${DERM_CLUSTER_DIR:-/tmp/derm-cluster}"
# shellcheck disable=SC1091
. "$RUN/env"
K="$DERM_KUBECTL"
TIMEOUT="${DERM_PROBE_TIMEOUT:-90}"
# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
NS=derm-agg-probe
namespaces_gone "$NS" "$DERM_ADAPTER_NAMESPACE"
WORK="$RUN/probe-aggregation"
mkdir -p "$WORK"

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
echo '{"derm_probe_metric": "7"}' >"$WORK/values.json"
python3 "$HACK_DIR/fake-metrics-adapter.py" "$PORT" "$DERM_ADAPTER_CERT" "$DERM_ADAPTER_KEY" \
  "$DERM_FRONT_PROXY_CA_FILE" "$WORK/values.json" >"$WORK/adapter.log" 2>&1 &
ADAPTER_PID=$!
cleanup() {
  "$K" delete apiservice v1beta1.external.metrics.k8s.io --ignore-not-found >/dev/null 2>&1 || true
  "$K" delete namespace "$NS" "$DERM_ADAPTER_NAMESPACE" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  kill "$ADAPTER_PID" 2>/dev/null || true
}
trap cleanup EXIT

register_external_metrics "$DERM_ADAPTER_NAMESPACE" "$DERM_ADAPTER_SERVICE" "$PORT" "$DERM_CA_FILE"

available() {
  [[ "$("$K" get apiservice v1beta1.external.metrics.k8s.io -o jsonpath='{.status.conditions[?(@.type=="Available")].status}')" == True ]]
}
if eventually available; then
  ok "APIService v1beta1.external.metrics.k8s.io Available"
else
  ko "APIService not Available: $("$K" get apiservice v1beta1.external.metrics.k8s.io -o jsonpath='{.status.conditions[0].message}')"
fi

val="$("$K" get --raw "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/derm_probe_metric" 2>&1 |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["value"])' 2>&1 || true)"
if [[ "$val" == 7 ]]; then ok "GET through the aggregator returns value 7"; else ko "GET through the aggregator: $val"; fi

if grep -q '"client_cn": "system:auth-proxy", "x_remote_user": "derm-admin"' "$WORK/adapter.log"; then
  ok "adapter saw the proxy-client certificate (CN system:auth-proxy) and X-Remote-User derm-admin"
else
  ko "front-proxy identity not seen; adapter log: $(tail -n 3 "$WORK/adapter.log")"
fi

"$K" create namespace "$NS" >/dev/null
"$K" -n "$NS" create deployment web --image=registry.k8s.io/pause:3.10 --replicas=1 >/dev/null
cat <<EOF | "$K" apply -f - >/dev/null
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web, namespace: $NS}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 1
  maxReplicas: 20
  metrics:
  - type: External
    external:
      metric: {name: derm_probe_metric}
      target: {type: AverageValue, averageValue: "1"}
  behavior:
    scaleUp:
      tolerance: "0"
      stabilizationWindowSeconds: 0
      policies: [{type: Pods, value: 100, periodSeconds: 1}]
    scaleDown:
      tolerance: "0"
      stabilizationWindowSeconds: 0
      policies: [{type: Pods, value: 100, periodSeconds: 1}]
EOF
replicas_are() {
  [[ "$("$K" -n "$NS" get deployment web -o jsonpath='{.spec.replicas}')" == "$1" ]]
}
t0=$SECONDS
if eventually replicas_are 7; then ok "HPA scaled 1 -> 7 (value 7, AverageValue 1) in $((SECONDS - t0))s"; else
  ko "HPA did not land on 7: spec.replicas=$("$K" -n "$NS" get deployment web -o jsonpath='{.spec.replicas}'), $("$K" -n "$NS" describe hpa web | tail -n 8)"
fi
echo '{"derm_probe_metric": "6"}' >"$WORK/values.json"
t0=$SECONDS
if eventually replicas_are 6; then ok "HPA scaled 7 -> 6 (scale-down, stabilization window 0) in $((SECONDS - t0))s"; else
  ko "HPA did not land on 6: spec.replicas=$("$K" -n "$NS" get deployment web -o jsonpath='{.spec.replicas}')"
fi
echo '{"derm_probe_metric": "21"}' >"$WORK/values.json"
t0=$SECONDS
if eventually replicas_are 20; then ok "HPA capped at maxReplicas 20 (value 21) in $((SECONDS - t0))s"; else
  ko "HPA did not cap at 20: spec.replicas=$("$K" -n "$NS" get deployment web -o jsonpath='{.spec.replicas}')"
fi
echo '{"derm_probe_metric": "19"}' >"$WORK/values.json"
t0=$SECONDS
if eventually replicas_are 19; then ok "HPA 20 -> 19 (a 5% change, inside the default 10% band: needs tolerance 0) in $((SECONDS - t0))s"; else
  ko "HPA did not land on 19: spec.replicas=$("$K" -n "$NS" get deployment web -o jsonpath='{.spec.replicas}')"
fi

cleanup
trap - EXIT
if eventually bash -c "! '$K' get namespace '$NS' && ! '$K' get namespace '$DERM_ADAPTER_NAMESPACE'"; then
  ok "cleanup: APIService and namespaces deleted"
else
  ko "namespaces still present after cleanup"
fi
echo "$pass passed, $fail failed"
[[ $fail == 0 ]]
