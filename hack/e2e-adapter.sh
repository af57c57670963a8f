#!/usr/bin/env bash
# End to end test of the real adapter (target/release/derm-adapter) against a cluster started
# by hack/cluster-up.sh: its own serving CA and certificate for derm-adapter.<ns>.svc, the
# front-proxy CA from the cluster, a DermApp whose status subresource is patched while it runs
# (the adapter watches it, as every replica does in a cluster), an ExternalName
# Service + APIService v1beta1.external.metrics.k8s.io with caBundle (no insecureSkipTLSVerify).
# Checks: Available; a GET through the aggregator with a label selector; a stock HPA (External
# derm_desired_replicas, AverageValue 1, tolerance 0) landing exactly on the value 1 -> 8 -> 5
# -> 20 -> 19; direct requests without the front-proxy certificate (401) or with one from
# another CA (refused); authorization (--authorize, SubjectAccessReview): a user without RBAC
# refused 403 directly and through the aggregator, the HPA controller's identity allowed
# (kube-controller-manager here runs the HPA as the admin user, system:masters); the adapter killed (HPA keeps its replicas, FailedGetExternalMetric)
# and restarted (served again from the DermApp status); values whose solve time is older than
# the hold (still served) and the error limit (HPA FailedGetExternalMetric, replicas kept);
# kube-apiserver restarted (the watch reconnects, a new value lands). Deletes the APIService,
# then the namespace, and stops the adapter, also on failure. Prints "N passed, N failed".
#   DERM_CLUSTER_DIR   run dir (default /tmp/derm-cluster)
#   DERM_PROBE_TIMEOUT seconds per wait (default 90)
#   DERM_ADAPTER_BIN   use this binary instead of building target/release/derm-adapter
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HACK_DIR/.." && pwd)"
# shellcheck source=hack/lib.sh
. "$HACK_DIR/lib.sh"
e2e_begin e2e-adapter 90
NS=derm-e2e-adapter
namespaces_gone "$NS"
SVC=derm-adapter
APISERVICE=v1beta1.external.metrics.k8s.io

# --- the binary -------------------------------------------------------------------------------
build_bin derm-adapter DERM_ADAPTER_BIN "$WORK"

# --- PKI: our own serving CA, and a foreign client CA for the negative check -----------------
(
  cd "$WORK"
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=derm-e2e-serving-ca" \
    -keyout ca.key -out ca.crt 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$SVC.$NS.svc" -keyout serving.key -out serving.csr 2>/dev/null
  printf 'subjectAltName=DNS:%s.%s.svc,DNS:%s.%s.svc.cluster.local\nextendedKeyUsage=serverAuth\n' \
    "$SVC" "$NS" "$SVC" "$NS" >serving.ext
  openssl x509 -req -in serving.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
    -extfile serving.ext -out serving.crt 2>/dev/null
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=derm-e2e-rogue-ca" \
    -keyout rogue-ca.key -out rogue-ca.crt 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=system:auth-proxy" -keyout rogue.key -out rogue.csr 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' >client.ext
  openssl x509 -req -in rogue.csr -CA rogue-ca.crt -CAkey rogue-ca.key -CAcreateserial -days 1 \
    -extfile client.ext -out rogue.crt 2>/dev/null
)

# --- the DermApp whose status the adapter publishes -------------------------------------------
"$K" create namespace "$NS" --dry-run=client -o yaml | "$K" apply -f - >/dev/null
"$BIN" crd | "$K" apply --server-side -f - >/dev/null
eventually "$K" wait --for condition=Established crd/dermapps.derm.dev --timeout 5s ||
  ko "CRD dermapps.derm.dev not Established"
dermapp() { # hold-seconds error-after-seconds: applies the DermApp spec
  cat <<YAML | "$K" apply -f - >/dev/null
apiVersion: derm.dev/v1alpha1
kind: DermApp
metadata: {name: shop, namespace: $NS}
spec:
  sla: {latencyMs: 200, percentile: 95}
  entryService: frontend
  traceSource: {otlp: {}}
  services:
  - {name: frontend, scaleTargetRef: {kind: Deployment, name: frontend}, minReplicas: 1, maxReplicas: 40}
  - {name: cart, scaleTargetRef: {kind: Deployment, name: cart}, minReplicas: 1, maxReplicas: 40}
  staleness: {holdSeconds: $1, errorAfterSeconds: $2}
YAML
}
dermapp 600 900
# What the leader's online loop does each interval, here by hand: desired replicas and the
# solve time (values age from it) into the status subresource.
publish() { # cart-replicas [solve-time]; frontend (another series of the app) shows the selector
  local at="${2:-$(date -u +%Y-%m-%dT%H:%M:%SZ)}"
  "$K" -n "$NS" patch dermapp shop --subresource=status --type=merge \
    -p "{\"status\":{\"desiredReplicas\":{\"cart\":$1,\"frontend\":3},\"lastSolveTime\":\"$at\"}}" >/dev/null
}
publish 1

# --- the adapter: watches DermApps with the admin kubeconfig ----------------------------------
PORT="$(free_port)"
ADMIN_PORT="$(free_port)"
ADAPTER_PID=
# The adapter Derm replaces (KEDA, prometheus-adapter...): hack/fake-metrics-adapter.py, which
# serves queue_depth = 42; Derm forwards what it does not own there with its own token.
UP_PORT="$(free_port)"
echo '{"queue_depth": "42"}' >"$WORK/upstream-values.json"
echo "e2e-upstream-token" >"$WORK/upstream.token"
python3 "$HACK_DIR/fake-metrics-adapter.py" "$UP_PORT" "$DERM_ADAPTER_CERT" "$DERM_ADAPTER_KEY" \
  "$DERM_FRONT_PROXY_CA_FILE" "$WORK/upstream-values.json" >"$WORK/upstream.log" 2>&1 &
UPSTREAM_PID=$!
# Listening before Derm starts: Derm's first discovery would otherwise find it refused and
# serve its own resources alone until it asks again.
upstream_listening() { python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$UP_PORT"; }
eventually upstream_listening || ko "fake upstream adapter not listening: $(tail -n 3 "$WORK/upstream.log")"
start_adapter() {
  KUBECONFIG="$RUN/kubeconfig" "$BIN" serve --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
    --tls-cert "$WORK/serving.crt" --tls-key "$WORK/serving.key" \
    --requestheader-client-ca "$DERM_FRONT_PROXY_CA_FILE" --requestheader-allowed-names system:auth-proxy \
    --authorize --drain-timeout 2s \
    --upstream "https://127.0.0.1:$UP_PORT" --upstream-ca-file "$DERM_CA_FILE" --upstream-token-file "$WORK/upstream.token" \
    >>"$WORK/adapter.log" 2>&1 &
  ADAPTER_PID=$!
}
stop_adapter() {
  [[ -n "$ADAPTER_PID" ]] || return 0
  kill -9 "$ADAPTER_PID" 2>/dev/null || true
  wait "$ADAPTER_PID" 2>/dev/null || true
  ADAPTER_PID=
}
cleanup() {
  "$K" delete apiservice "$APISERVICE" --ignore-not-found >/dev/null 2>&1 || true
  "$K" delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  stop_adapter
  kill "$UPSTREAM_PID" 2>/dev/null || true
}
trap cleanup EXIT

adapter_ready() { curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz"; }
start_adapter
if eventually adapter_ready; then
  ok "derm-adapter ready on 127.0.0.1:$PORT (admin $ADMIN_PORT)"
else
  ko "derm-adapter not ready: $(tail -n 5 "$WORK/adapter.log")"
fi

# --- registration -----------------------------------------------------------------------------
register_external_metrics "$NS" "$SVC" "$PORT" "$WORK/ca.crt"

available() {
  [[ "$("$K" get apiservice "$APISERVICE" -o jsonpath='{.status.conditions[?(@.type=="Available")].status}')" == True ]]
}
t0=$SECONDS
if eventually available; then
  ok "APIService $APISERVICE Available (caBundle = our serving CA) in $((SECONDS - t0))s"
else
  ko "APIService not Available: $("$K" get apiservice "$APISERVICE" -o jsonpath='{.status.conditions[0].message}')"
fi

METRIC_PATH="/apis/external.metrics.k8s.io/v1beta1/namespaces/$NS/derm_desired_replicas?labelSelector=app%3Dshop,service%3Dcart"
served() { # prints the values of the items, space separated, or what came back instead
  "$K" get --raw "$METRIC_PATH" 2>&1 | python3 -c '
import json, sys
text = sys.stdin.read()
try:
    print(" ".join(i["value"] for i in json.loads(text)["items"]))
except Exception:
    print("not a metric list: " + " ".join(text.split())[:300])' || true
}
val="$(served)"
if [[ "$val" == 1 ]]; then ok "GET through the aggregator (app=shop,service=cart) returns exactly [1]"; else
  ko "GET through the aggregator: $val"
fi

# --- drop-in: what Derm does not own goes to the adapter it replaced (--upstream) -------------
discovery="$("$K" get --raw /apis/external.metrics.k8s.io/v1beta1 2>&1 |
  python3 -c 'import json,sys; print(" ".join(sorted(r["name"] for r in json.load(sys.stdin)["resources"])))' 2>&1 || true)"
if [[ "$discovery" == "derm_desired_replicas externalmetrics" ]]; then
  ok "discovery through the aggregator lists Derm's and the upstream's resources: $discovery"
else
  ko "merged discovery: $discovery"
fi
up_val="$("$K" get --raw "/apis/external.metrics.k8s.io/v1beta1/namespaces/$NS/queue_depth" 2>&1 |
  python3 -c 'import json,sys; print(" ".join(i["value"] for i in json.load(sys.stdin)["items"]))' 2>&1 || true)"
if [[ "$up_val" == 42 ]] && grep -q '"path": "/apis/external.metrics.k8s.io/v1beta1/namespaces/'"$NS"'/queue_depth", .*"authorization": "Bearer e2e-upstream-token"' "$WORK/upstream.log"; then
  ok "queue_depth (not Derm's) through the aggregator and Derm: the upstream's [42], asked with Derm's token"
else
  ko "forwarded metric: $up_val; upstream saw: $(tail -n 2 "$WORK/upstream.log")"
fi
"$K" -n "$NS" create deployment legacy --image=registry.k8s.io/pause:3.10 --replicas=1 >/dev/null
cat <<YAML | "$K" apply -f - >/dev/null
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: legacy, namespace: $NS}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: legacy}
  minReplicas: 1
  maxReplicas: 20
  metrics:
  - type: External
    external:
      metric: {name: queue_depth}
      target: {type: AverageValue, averageValue: "6"}
YAML
legacy_scaled() { [[ "$("$K" -n "$NS" get deployment legacy -o jsonpath='{.spec.replicas}')" == 7 ]]; }
t0=$SECONDS
if eventually legacy_scaled; then
  ok "an existing HPA on the replaced adapter's metric keeps working through Derm: queue_depth 42 / 6 -> 7 replicas in $((SECONDS - t0))s"
else
  ko "legacy HPA: replicas $("$K" -n "$NS" get deployment legacy -o jsonpath='{.spec.replicas}'), $("$K" -n "$NS" get hpa legacy -o jsonpath='{.status.conditions}' | head -c 300)"
fi

# --- direct requests --------------------------------------------------------------------------
direct() { # extra curl args...; prints the HTTP code (000 when the TLS handshake failed)
  curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$WORK/ca.crt" \
    --resolve "$SVC.$NS.svc:$PORT:127.0.0.1" "$@" "https://$SVC.$NS.svc:$PORT$METRIC_PATH" || true
}
code="$(direct)"
if [[ "$code" == 401 ]]; then ok "direct request without a client certificate: 401"; else
  ko "direct request without a client certificate: HTTP $code (want 401)"
fi
code="$(direct --cert "$WORK/rogue.crt" --key "$WORK/rogue.key" -H 'X-Remote-User: mallory')"
# 000: the handshake is refused (the chain does not verify); 401/403 would also be a refusal.
if [[ "$code" =~ ^(000|401|403)$ ]]; then ok "direct request with a client certificate from another CA refused (HTTP $code)"; else
  ko "direct request with a foreign client certificate: HTTP $code"
fi
# Authorization (--authorize): the adapter asks kube-apiserver with a SubjectAccessReview.
# kube-apiserver authorizes proxied requests too, so the adapter's own refusal shows directly.
code="$(direct --cert "$DERM_PROXY_CLIENT_CERT" --key "$DERM_PROXY_CLIENT_KEY" -H 'X-Remote-User: derm-e2e')"
body="$(curl -s --max-time 10 --cacert "$WORK/ca.crt" --resolve "$SVC.$NS.svc:$PORT:127.0.0.1" \
  --cert "$DERM_PROXY_CLIENT_CERT" --key "$DERM_PROXY_CLIENT_KEY" -H 'X-Remote-User: derm-e2e' \
  "https://$SVC.$NS.svc:$PORT$METRIC_PATH" || true)"
if [[ "$code" == 403 && "$body" == *'"Forbidden"'* && "$body" == *'\"derm-e2e\" cannot list'* ]]; then
  ok "direct request as derm-e2e (no RBAC) with the front-proxy certificate: 403 Status naming the user"
else
  ko "direct request as derm-e2e without RBAC: HTTP $code (want 403): $body"
fi
code="$(direct --cert "$DERM_PROXY_CLIENT_CERT" --key "$DERM_PROXY_CLIENT_KEY" -H 'X-Remote-User: derm-e2e' \
  -H 'X-Remote-Group: system:masters')"
if [[ "$code" == 200 ]]; then ok "direct request as derm-e2e in group system:masters: 200 (SubjectAccessReview allowed)"; else
  ko "direct request as derm-e2e in system:masters: HTTP $code (want 200)"
fi
as_code() { # user -> "ok" or the error kubectl printed
  if "$K" --as="$1" get --raw "$METRIC_PATH" >/dev/null 2>"$WORK/as.err"; then echo ok; else tr '\n' ' ' <"$WORK/as.err"; fi
}
got="$(as_code someone)"
if [[ "$got" == *Forbidden* || "$got" == *forbidden* ]]; then ok "kubectl --as=someone (no RBAC) through the aggregator: forbidden"; else
  ko "kubectl --as=someone through the aggregator: $got"
fi
# The identity of the HPA controller in real clusters, allowed by the built-in
# system:controller:horizontal-pod-autoscaler role (list external.metrics.k8s.io *): this
# checks that the adapter asks with the verb and resource kube-apiserver's RBAC grants.
got="$(as_code system:serviceaccount:kube-system:horizontal-pod-autoscaler)"
if [[ "$got" == ok ]]; then ok "kubectl --as=the HPA controller's service account through the aggregator: allowed"; else
  ko "the HPA controller's service account through the aggregator: $got"
fi

# --- a stock HPA ------------------------------------------------------------------------------
"$K" -n "$NS" create deployment cart --image=registry.k8s.io/pause:3.10 --replicas=1 >/dev/null
exact_hpa "$NS" cart shop cart 40 | "$K" apply -f - >/dev/null
state() { # "<hpa status.desiredReplicas> <deployment spec.replicas>"
  echo "$("$K" -n "$NS" get hpa cart -o jsonpath='{.status.desiredReplicas}') $("$K" -n "$NS" get deployment cart -o jsonpath='{.spec.replicas}')"
}
lands_on() { [[ "$(state)" == "$1 $1" ]]; }
hpa_condition() { # type -> "status reason"
  "$K" -n "$NS" get hpa cart -o jsonpath="{.status.conditions[?(@.type==\"$1\")].status} {.status.conditions[?(@.type==\"$1\")].reason}"
}
step() { # value, description
  publish "$1"
  local t0=$SECONDS
  if eventually lands_on "$1"; then ok "HPA $2: desiredReplicas = spec.replicas = $1 in $((SECONDS - t0))s"; else
    ko "HPA $2: want $1, got (desired, spec) = ($(state)); ScalingActive: $(hpa_condition ScalingActive)"
  fi
}
scaling_active() { [[ "$(hpa_condition ScalingActive)" == "True ValidMetricFound" ]]; }
t0=$SECONDS
if eventually scaling_active && eventually lands_on 1; then
  ok "HPA reads the metric (ScalingActive ValidMetricFound) and holds 1 in $((SECONDS - t0))s"
else
  ko "HPA not active: ScalingActive $(hpa_condition ScalingActive), (desired, spec) = ($(state))"
fi
step 8 "1 -> 8 (scale-up)"
step 5 "8 -> 5 (scale-down, stabilization window 0)"
step 20 "5 -> 20"
step 19 "20 -> 19 (5%, inside the default 10% band: needs tolerance 0)"

# --- the adapter goes away --------------------------------------------------------------------
stop_adapter
failed_metric() { [[ "$(hpa_condition ScalingActive)" == "False FailedGetExternalMetric" ]]; }
t0=$SECONDS
if eventually failed_metric; then
  ok "adapter killed: HPA ScalingActive False / FailedGetExternalMetric in $((SECONDS - t0))s"
else
  ko "adapter killed: ScalingActive $(hpa_condition ScalingActive)"
fi
# A few more HPA syncs (2 s each) with the adapter gone: replicas must not move.
if stays 6 lands_on 19; then ok "adapter killed: HPA keeps 19 replicas"; else
  ko "adapter killed: HPA moved, (desired, spec) = ($(state))"
fi

start_adapter
t0=$SECONDS
back() { [[ "$(served)" == 19 ]]; }
if eventually adapter_ready && eventually back; then
  ok "adapter restarted: served again through the aggregator (19) in $((SECONDS - t0))s"
else
  ko "adapter restarted: GET $(served); log: $(tail -n 3 "$WORK/adapter.log")"
fi
t0=$SECONDS
if eventually scaling_active && lands_on 19; then
  ok "adapter restarted: HPA ScalingActive True again, still 19 in $((SECONDS - t0))s"
else
  ko "adapter restarted: ScalingActive $(hpa_condition ScalingActive), (desired, spec) = ($(state))"
fi
step 12 "after the restart, 19 -> 12"

# --- the online loop stops (trace source down): values age from their solve time ------------
dermapp 5 30
publish 12 "$(date -u -d '-15 seconds' +%Y-%m-%dT%H:%M:%SZ)"
stale_counted() { grep -q 'derm_adapter_published_series{freshness="Stale"} 2' <<<"$(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics")"; }
if eventually stale_counted && [[ "$(served)" == 12 ]]; then
  ok "solve 15 s old (hold 5 s): the last good value is still served (12), counted as stale"
else
  ko "stale value: GET $(served); $(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | grep published_series | tr '\n' ' ')"
fi
publish 12 "$(date -u -d '-60 seconds' +%Y-%m-%dT%H:%M:%SZ)"
t0=$SECONDS
if eventually failed_metric; then
  ok "solve 60 s old (error after 30 s): HPA ScalingActive False / FailedGetExternalMetric in $((SECONDS - t0))s"
else
  ko "expired value: ScalingActive $(hpa_condition ScalingActive); GET $(served)"
fi
if stays 6 lands_on 12; then ok "expired value: HPA keeps 12 replicas (no scale-down on missing data)"; else
  ko "expired value: HPA moved, (desired, spec) = ($(state))"
fi
dermapp 600 900
step 12 "fresh again, holds 12"

# --- kube-apiserver restarts: the adapter's watch reconnects ---------------------------------
"$HACK_DIR/restart-component.sh" kube-apiserver >/dev/null
t0=$SECONDS
if eventually "$K" get --raw /readyz; then ok "kube-apiserver restarted, ready in $((SECONDS - t0))s"; else
  ko "kube-apiserver not ready after restart"
fi
eventually available || ko "APIService not Available after the kube-apiserver restart"
step 7 "after the kube-apiserver restart, a new status value 12 -> 7 (watch reconnected)"

# --- cleanup ----------------------------------------------------------------------------------
cleanup
trap - EXIT
if eventually bash -c "! '$K' get apiservice '$APISERVICE' && ! '$K' get namespace '$NS'"; then
  ok "cleanup: APIService and namespace deleted, adapter stopped"
else
  ko "APIService or namespace $NS still present after cleanup"
fi
echo "$pass passed, $fail failed"
[[ $fail == 0 ]]
