#!/usr/bin/env bash
# End to end test of manifests/ and `derm migrate` against a cluster started by
# hack/cluster-up.sh (no kubelet: this script plays the parts a cluster would):
#   1. manifests/ apply cleanly with server-side apply (cert-manager objects too when
#      cert-manager's CRDs are served, else they are counted as skipped); the adapter's and the
#      extender's ReplicaSets create their pods under Pod Security "restricted" (the namespace
#      enforces it); examples/trainticket validate with a server-side dry run.
#   2. The adapter runs as a local process from the Deployment's args and env, with its Secret
#      and ConfigMap volumes written to local files. The script does what cert-manager and the
#      helm lookup would (serving Secret, caBundle) and points the Service at
#      localhost (ExternalName; the APIService's port follows). Both APIServices become
#      Available and answer through the aggregator.
#   3. `derm migrate` turns a CPU HPA into a Derm HPA (diff first, nothing written; then
#      --apply), which lands exactly on the published value 7 -> 13 -> 12 (tolerance 0). A
#      second run is a no-op; an HPA with its own behavior is refused and left alone, then
#      migrated with --replace-behavior; an HPA on a workload in no DermApp, given with -f, is
#      refused; -f ... -o yaml output passes a server-side dry run.
# Deletes what it created, also on failure. Prints "N passed, N failed".
#   DERM_CLUSTER_DIR   run dir (default /tmp/derm-cluster)
#   DERM_PROBE_TIMEOUT seconds per wait (default 90)
#   DERM_ADAPTER_BIN / DERM_BIN   use these binaries instead of building target/release/*
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HACK_DIR/.." && pwd)"
# shellcheck source=hack/lib.sh
. "$HACK_DIR/lib.sh"
e2e_begin e2e-manifests 90
NS=derm-system
APP_NS=train-ticket
namespaces_gone "$NS" "$APP_NS"

# --- binaries ---------------------------------------------------------------------------------
t0=$SECONDS
if [[ -z "${DERM_ADAPTER_BIN:-}" || -z "${DERM_BIN:-}" ]]; then
  if ! (cd "$ROOT" && cargo build --release -p derm-adapter -p derm-core) >"$WORK/build.log" 2>&1; then
    tail -n 30 "$WORK/build.log" >&2
    echo "cargo build failed; log in $WORK/build.log" >&2
    exit 1
  fi
fi
# shellcheck disable=SC2034 # used in the eval that starts the adapter
ADAPTER="${DERM_ADAPTER_BIN:-$ROOT/target/release/derm-adapter}"
DERM="${DERM_BIN:-$ROOT/target/release/derm}"
echo "binaries ready in $((SECONDS - t0))s"

ADAPTER_PID=
stop_adapter() {
  [[ -n "$ADAPTER_PID" ]] || return 0
  kill "$ADAPTER_PID" 2>/dev/null || true
  wait "$ADAPTER_PID" 2>/dev/null || true
  ADAPTER_PID=
}
cleanup() {
  # APIServices first, or namespace deletion stalls on discovery.
  "$K" delete apiservice v1beta1.external.metrics.k8s.io v1beta2.custom.metrics.k8s.io --ignore-not-found >/dev/null 2>&1 || true
  "$K" delete namespace "$APP_NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  "$K" delete -f "$ROOT/manifests/" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  stop_adapter
  [[ -z "$CONTROLLER_PID" ]] || { kill "$CONTROLLER_PID" 2>/dev/null || true; wait "$CONTROLLER_PID" 2>/dev/null || true; }
}
CONTROLLER_PID=
trap cleanup EXIT

# --- 1. apply ---------------------------------------------------------------------------------
if "$K" apply --server-side --field-manager=derm-e2e -f "$ROOT/manifests/" >"$WORK/apply.log" 2>&1; then
  ok "manifests/ applied with server-side apply ($(grep -c 'serverside-applied' "$WORK/apply.log") objects)"
else
  ko "server-side apply of manifests/: $(grep -v serverside-applied "$WORK/apply.log" | head -n 5)"
fi
cm_files=("$ROOT"/manifests/cert-manager/*.yaml)
if "$K" api-resources --api-group=cert-manager.io -o name 2>/dev/null | grep -q '^certificates'; then
  if "$K" apply --server-side -f "$ROOT/manifests/cert-manager/" >>"$WORK/apply.log" 2>&1; then
    ok "manifests/cert-manager applied (${#cm_files[@]} objects)"
  else
    ko "manifests/cert-manager: $(tail -n 3 "$WORK/apply.log")"
  fi
else
  echo "SKIP manifests/cert-manager (${#cm_files[@]} objects): cert-manager is not installed here"
fi
pods_created() { # deployment: its ReplicaSet created spec.replicas pods (admission accepted them)
  local want have
  want="$("$K" -n "$NS" get deployment "$1" -o jsonpath='{.spec.replicas}')"
  have="$("$K" -n "$NS" get pods -l "app.kubernetes.io/name=$1" -o name | wc -l)"
  [[ -n "$want" && "$have" == "$want" ]]
}
for d in derm-adapter derm-extender derm-controller; do
  if eventually pods_created "$d"; then
    ok "$d: ReplicaSet created its pods in a Pod Security 'restricted' namespace"
  else
    ko "$d: pods not created: $("$K" -n "$NS" get events --field-selector reason=FailedCreate -o jsonpath='{.items[*].message}' | head -c 400)"
  fi
done
"$K" create namespace "$APP_NS" >/dev/null
# Least privilege as kube-apiserver's RBAC authorizer sees it (impersonating each ServiceAccount).
can() { # sa verb resource [namespace] [extra...]
  local sa=$1 verb=$2 res=$3 ns=${4:-$APP_NS}
  shift 4 || shift $#
  "$K" auth can-i "$verb" "$res" -n "$ns" --as "system:serviceaccount:$NS:$sa" "$@" >/dev/null 2>&1
}
denied=() allowed=()
for c in "derm-controller patch dermapps.derm.dev $APP_NS --subresource=status" \
  "derm-controller create configmaps $APP_NS" "derm-controller patch configmaps $APP_NS" \
  "derm-controller create leases.coordination.k8s.io $NS" "derm-controller update leases.coordination.k8s.io $NS" \
  "derm-controller list horizontalpodautoscalers.autoscaling $APP_NS" "derm-controller create events.events.k8s.io $APP_NS" \
  "derm-adapter watch dermapps.derm.dev $APP_NS" "derm-adapter create subjectaccessreviews.authorization.k8s.io $APP_NS" \
  "derm-adapter get configmaps/extension-apiserver-authentication kube-system" \
  "derm-adapter watch configmaps/extension-apiserver-authentication kube-system" \
  "derm-adapter create tokenreviews.authentication.k8s.io $APP_NS" \
  "derm-controller watch configmaps/extension-apiserver-authentication kube-system"; do
  # shellcheck disable=SC2086 # split on purpose
  can $c || allowed+=("$c")
done
for c in "derm-adapter patch dermapps.derm.dev $APP_NS --subresource=status" "derm-adapter create configmaps $APP_NS" \
  "derm-adapter create leases.coordination.k8s.io $NS" "derm-controller delete configmaps $APP_NS" \
  "derm-controller create leases.coordination.k8s.io $APP_NS" "derm-controller list secrets $APP_NS" \
  "derm-extender patch dermapps.derm.dev $APP_NS --subresource=status"; do
  # shellcheck disable=SC2086
  if can $c; then denied+=("$c"); fi
done
if ((${#allowed[@]} == 0 && ${#denied[@]} == 0)); then
  ok "RBAC: the controller may write DermApp status, its state ConfigMaps, its Lease and audit Events, and list HPAs; the adapter only reads DermApps and delegates auth; 7 writes refused"
else
  ko "RBAC: missing [${allowed[*]}]; too broad [${denied[*]}]"
fi
if out="$("$K" apply --server-side -f "$ROOT/examples/trainticket/dermapp.yaml" 2>&1)" &&
  out2="$("$K" apply --server-side --dry-run=server -f "$ROOT/examples/trainticket/hpas.yaml" 2>&1)"; then
  ok "examples/trainticket: DermApp applied, $(grep -c 'serverside-applied' <<<"$out2") HPAs valid (server dry run)"
else
  ko "examples/trainticket: $out ${out2:-}"
fi
tol="$("$K" apply --server-side --dry-run=server -f "$ROOT/examples/trainticket/hpas.yaml" -o jsonpath='{.items[0].spec.behavior.scaleUp.tolerance}' 2>/dev/null || true)"
if [[ "$tol" == 0 ]]; then ok "the server keeps behavior.scaleUp.tolerance \"0\" (HPAConfigurableTolerance on)"; else
  ko "behavior.scaleUp.tolerance dropped by the server (got '$tol'): HPAs keep the 10% dead band"
fi

# --- 2. the adapter from its Deployment -------------------------------------------------------
(
  cd "$WORK"
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=derm-e2e-ca" -keyout ca.key -out ca.crt 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=derm-adapter.$NS.svc" -keyout tls.key -out tls.csr 2>/dev/null
  printf 'subjectAltName=DNS:derm-adapter.%s.svc\nextendedKeyUsage=serverAuth\n' "$NS" >tls.ext
  openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile tls.ext -out tls.crt 2>/dev/null
)
# cert-manager's part: the serving Secret. The front-proxy CA comes from
# kube-system/extension-apiserver-authentication, which the adapter reads itself
# (adapter.authentication=configmap, the chart's default).
"$K" -n "$NS" create secret generic derm-adapter-tls --from-file="$WORK/tls.crt" --from-file="$WORK/tls.key" \
  --from-file="$WORK/ca.crt" --dry-run=client -o yaml | "$K" apply -f - >/dev/null

PORT="$(free_port)"
ADMIN_PORT="$(free_port)"
VALUES="$WORK/values.json"
publish() { # replicas of ts-order-service
  printf '[{"namespace":"%s","app":"trainticket","service":"ts-order-service","replicas":%s}]\n' "$APP_NS" "$1" >"$VALUES.tmp"
  mv "$VALUES.tmp" "$VALUES"
}
publish 7
# The kubelet's part: volumes to files, args with the ports we got and the files we wrote. The
# one value rewritten (adapter.authentication=file only): the allowed front-proxy name, which
# is this cluster's (a chart value).
"$K" -n "$NS" get deployment derm-adapter -o json >"$WORK/deployment.json"
"$K" -n "$NS" get secret derm-adapter-tls -o json >"$WORK/secret.json"
# No ConfigMap volume in the default render (the front-proxy CA is read from the cluster).
"$K" -n "$NS" get configmap derm-adapter-requestheader -o json >"$WORK/configmap.json" 2>/dev/null ||
  echo '{"data": {}}' >"$WORK/configmap.json"
pod_command() { # deployment.json port admin-port [otlp-port]: env line, args line
  python3 - "$WORK" "$@" <<'PY'
import base64, json, os, shlex, sys
work, dep_file, port, admin = sys.argv[1:5]
otlp = sys.argv[5] if len(sys.argv) > 5 else ""
dep = json.load(open(dep_file))
pod = dep["spec"]["template"]["spec"]
c = pod["containers"][0]
sources = {"Secret": json.load(open(f"{work}/secret.json")), "ConfigMap": json.load(open(f"{work}/configmap.json"))}
mounts = {}
for v in pod["volumes"]:
    d = f"{work}/volumes/{v['name']}"
    os.makedirs(d, exist_ok=True)
    if "secret" in v:
        for k, b in sources["Secret"]["data"].items():
            open(f"{d}/{k}", "wb").write(base64.b64decode(b))
    elif "configMap" in v:
        for k, s in sources["ConfigMap"]["data"].items():
            open(f"{d}/{k}", "w").write(s)
    mounts[v["name"]] = d
paths = {m["mountPath"]: mounts[m["name"]] for m in c["volumeMounts"]}
def local(arg):
    flag, eq, val = arg.partition("=")
    if flag == "--listen": return f"{flag}=127.0.0.1:{port}"
    if flag == "--admin-listen": return f"{flag}=127.0.0.1:{admin}"
    if flag == "--otlp-listen": return f"{flag}=127.0.0.1:{otlp}"
    if flag == "--requestheader-allowed-names": return f"{flag}=system:auth-proxy"
    for mp, d in paths.items():
        if val.startswith(mp + "/"): return f"{flag}={d}{val[len(mp):]}"
    return arg
# The downward API's part: the pod's name and namespace.
field = {"metadata.name": dep["metadata"]["name"] + "-local", "metadata.namespace": dep["metadata"]["namespace"]}
env = [f"{e['name']}={e['value'] if 'value' in e else field[e['valueFrom']['fieldRef']['fieldPath']]}"
       for e in c.get("env", [])]
for e in env:
    name, _, val = e.partition("=")
    for mp, d in paths.items():
        if val.startswith(mp): env[env.index(e)] = f"{name}={d}{val[len(mp):]}"
print(" ".join(["env"] + [shlex.quote(e) for e in env]))
print(" ".join(shlex.quote(local(a)) for a in c["args"]))
PY
}
pod_command "$WORK/deployment.json" "$PORT" "$ADMIN_PORT" >"$WORK/command"
read -r ENV_LINE < <(sed -n 1p "$WORK/command")
read -r ARGS_LINE < <(sed -n 2p "$WORK/command")
echo "adapter command (from the Deployment): $ENV_LINE derm-adapter $ARGS_LINE --static-values $VALUES"
# exec: $! is then the adapter itself, not a shell around it (which a kill would orphan).
eval "exec $ENV_LINE \"\$ADAPTER\" $ARGS_LINE --static-values \"\$VALUES\" --static-values-poll 500ms" >"$WORK/adapter.log" 2>&1 &
ADAPTER_PID=$!
adapter_ready() { curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz"; }
if eventually adapter_ready; then ok "derm-adapter runs from the Deployment's args and volumes (ready on $PORT)"; else
  ko "derm-adapter not ready: $(tail -n 5 "$WORK/adapter.log")"
fi

# The Service to localhost, the APIServices to its port, and cainjector's caBundle.
"$K" -n "$NS" delete service derm-adapter >/dev/null
cat <<YAML | "$K" apply -f - >/dev/null
apiVersion: v1
kind: Service
metadata: {name: derm-adapter, namespace: $NS}
spec:
  type: ExternalName
  externalName: localhost
  ports: [{name: https, port: $PORT, protocol: TCP}]
YAML
for api in v1beta1.external.metrics.k8s.io v1beta2.custom.metrics.k8s.io; do
  "$K" patch apiservice "$api" --type merge \
    -p "{\"spec\":{\"service\":{\"port\":$PORT},\"caBundle\":\"$(base64 -w0 <"$WORK/ca.crt")\"}}" >/dev/null
  available() { [[ "$("$K" get apiservice "$1" -o jsonpath='{.status.conditions[?(@.type=="Available")].status}')" == True ]]; }
  t0=$SECONDS
  if eventually available "$api"; then ok "APIService $api Available in $((SECONDS - t0))s"; else
    ko "APIService $api: $("$K" get apiservice "$api" -o jsonpath='{.status.conditions[0].message}')"
  fi
done
ext="$("$K" get --raw "/apis/external.metrics.k8s.io/v1beta1/namespaces/$APP_NS/derm_desired_replicas?labelSelector=app%3Dtrainticket" 2>&1 |
  python3 -c 'import json,sys; print(" ".join(i["value"] for i in json.load(sys.stdin)["items"]))' 2>&1 || true)"
if [[ "$ext" == 7 ]]; then ok "external.metrics.k8s.io through the aggregator: [7]"; else ko "external metric: $ext"; fi
if "$K" get --raw /apis/custom.metrics.k8s.io/v1beta2 2>&1 | grep -q derm_desired_replicas; then
  ok "custom.metrics.k8s.io/v1beta2 discovery through the aggregator lists derm_desired_replicas"
else
  ko "custom.metrics.k8s.io/v1beta2 discovery: $("$K" get --raw /apis/custom.metrics.k8s.io/v1beta2 2>&1 | head -c 300)"
fi

# --- 2b. the controller from its Deployment, with its ServiceAccount's token ------------------
# Its RBAC must be enough for the real thing: take the Lease, read DermApps, write status.
"$K" -n "$NS" get deployment derm-controller -o json >"$WORK/controller.json"
C_PORT="$(free_port)" C_ADMIN="$(free_port)" C_OTLP="$(free_port)"
pod_command "$WORK/controller.json" "$C_PORT" "$C_ADMIN" "$C_OTLP" >"$WORK/controller.command"
token="$("$K" -n "$NS" create token derm-controller --duration 1h)"
cat >"$WORK/controller.kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "$DERM_APISERVER_URL", certificate-authority: "$DERM_CA_FILE"}}]
users: [{name: derm-controller, user: {token: "$token"}}]
contexts: [{name: local, context: {cluster: local, user: derm-controller}}]
current-context: local
YAML
cat <<YAML | "$K" apply -f - >/dev/null
apiVersion: derm.dev/v1alpha1
kind: DermApp
metadata: {name: checkout, namespace: $APP_NS}
spec:
  sla: {latencyMs: 200, percentile: 95}
  entryService: frontend
  traceSource: {otlp: {}}
  intervalSeconds: 2
  services: [{name: frontend, scaleTargetRef: {kind: Deployment, name: frontend}, maxReplicas: 10}]
YAML
read -r C_ENV < <(sed -n 1p "$WORK/controller.command")
read -r C_ARGS < <(sed -n 2p "$WORK/controller.command")
echo "controller command (from the Deployment): $C_ENV derm-adapter $C_ARGS"
eval "exec $C_ENV KUBECONFIG=\"\$WORK/controller.kubeconfig\" \"\$ADAPTER\" $C_ARGS" >"$WORK/controller.log" 2>&1 &
CONTROLLER_PID=$!
holder() { "$K" -n "$NS" get lease derm-adapter-controller -o jsonpath='{.spec.holderIdentity}' 2>/dev/null; }
leads() { [[ "$(holder)" == derm-controller-local ]]; }
t0=$SECONDS
if eventually leads; then ok "derm-controller (its ServiceAccount's token) took the Lease in $NS in $((SECONDS - t0))s"; else
  ko "controller Lease holder '$(holder)': $(tail -n 5 "$WORK/controller.log")"
fi
reason() { "$K" -n "$APP_NS" get dermapp checkout -o jsonpath='{.status.conditions[?(@.type=="Ready")].reason}'; }
holding() { [[ "$(reason)" == Holding ]]; }
code="$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' --data-binary '{"resourceSpans": []}' \
  "http://127.0.0.1:$C_OTLP/v1/traces")"
if eventually holding && [[ "$code" == 200 ]]; then
  ok "derm-controller wrote DermApp status (Ready False/Holding: no traces yet) and takes OTLP exports (200)"
else
  ko "controller: status reason '$(reason)', OTLP $code; $(grep -i -m 3 'forbidden\|cannot' "$WORK/controller.log")"
fi
kill "$CONTROLLER_PID" 2>/dev/null || true
wait "$CONTROLLER_PID" 2>/dev/null || true
CONTROLLER_PID=

# --- 3. derm migrate --------------------------------------------------------------------------
cpu_hpa() { # deployment [behavior json]
  cat <<YAML
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: $1, namespace: $APP_NS, labels: {team: trains}}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: $1}
  minReplicas: 1
  maxReplicas: 40
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 60}}
${2:+  behavior: $2}
YAML
}
"$K" -n "$APP_NS" create deployment ts-order-service --image=registry.k8s.io/pause:3.10 --replicas=1 >/dev/null
cpu_hpa ts-order-service | "$K" apply -f - >/dev/null
state() { echo "$("$K" -n "$APP_NS" get hpa "$1" -o jsonpath='{.status.desiredReplicas}') $("$K" -n "$APP_NS" get deployment "$1" -o jsonpath='{.spec.replicas}')"; }
metric_of() { "$K" -n "$APP_NS" get hpa "$1" -o jsonpath='{.spec.metrics[0].type}'; }

if "$DERM" migrate -n "$APP_NS" >"$WORK/migrate-diff.out" 2>&1 &&
  grep -q '^migrate HorizontalPodAutoscaler train-ticket/ts-order-service' "$WORK/migrate-diff.out" &&
  grep -q '^+        name: derm_desired_replicas' "$WORK/migrate-diff.out" && [[ "$(metric_of ts-order-service)" == Resource ]]; then
  ok "derm migrate (no --apply): diff shown, the HPA in the cluster still on CPU"
else
  ko "derm migrate diff: $(head -c 600 "$WORK/migrate-diff.out")"
fi
if "$DERM" migrate -n "$APP_NS" --apply >"$WORK/migrate-apply.out" 2>&1 && [[ "$(metric_of ts-order-service)" == External ]]; then
  ok "derm migrate --apply: the HPA now scales on derm_desired_replicas"
else
  ko "derm migrate --apply: $(tail -n 5 "$WORK/migrate-apply.out")"
fi
lands_on() { [[ "$(state "$1")" == "$2 $2" ]]; }
step() { # value description
  publish "$1"
  local t0=$SECONDS
  if eventually lands_on ts-order-service "$1"; then ok "migrated HPA $2: desiredReplicas = spec.replicas = $1 in $((SECONDS - t0))s"; else
    ko "migrated HPA $2: want $1, got (desired, spec) = ($(state ts-order-service))"
  fi
}
step 7 "lands on Derm's count"
step 13 "7 -> 13"
step 12 "13 -> 12 (8%, inside the default 10% band: needs tolerance 0)"
if "$DERM" migrate -n "$APP_NS" >"$WORK/migrate-again.out" 2>&1 && grep -q '^unchanged .*ts-order-service' "$WORK/migrate-again.out"; then
  ok "derm migrate again: unchanged"
else
  ko "derm migrate again: $(tail -n 3 "$WORK/migrate-again.out")"
fi

"$K" -n "$APP_NS" create deployment ts-seat-service --image=registry.k8s.io/pause:3.10 --replicas=1 >/dev/null
cpu_hpa ts-seat-service '{scaleDown: {stabilizationWindowSeconds: 300}}' | "$K" apply -f - >/dev/null
if ! "$DERM" migrate -n "$APP_NS" --apply >"$WORK/migrate-refused.out" 2>&1 &&
  grep -q '^REFUSED .*ts-seat-service: has its own spec.behavior' "$WORK/migrate-refused.out" &&
  [[ "$(metric_of ts-seat-service)" == Resource ]]; then
  ok "HPA with its own behavior: refused (exit != 0), left on CPU"
else
  ko "HPA with its own behavior: $(head -c 600 "$WORK/migrate-refused.out")"
fi
if "$DERM" migrate -n "$APP_NS" --apply --replace-behavior >"$WORK/migrate-replace.out" 2>&1 &&
  [[ "$("$K" -n "$APP_NS" get hpa ts-seat-service -o jsonpath='{.spec.behavior.scaleDown.stabilizationWindowSeconds} {.spec.metrics[0].type}')" == "0 External" ]]; then
  ok "--replace-behavior: migrated with the recipe"
else
  ko "--replace-behavior: $(tail -n 3 "$WORK/migrate-replace.out")"
fi
cpu_hpa payments >"$WORK/unrelated.yaml"
if ! "$DERM" migrate -n "$APP_NS" -f "$WORK/unrelated.yaml" >"$WORK/migrate-unrelated.out" 2>&1 &&
  grep -q 'REFUSED .*payments: its scale target is in no DermApp' "$WORK/migrate-unrelated.out"; then
  ok "-f with an HPA on a workload in no DermApp: refused"
else
  ko "unrelated HPA: $(head -c 400 "$WORK/migrate-unrelated.out")"
fi

cpu_hpa ts-route-service >"$WORK/route.yaml"
if "$DERM" migrate -n "$APP_NS" -f "$WORK/route.yaml" -o yaml >"$WORK/route.migrated.yaml" 2>"$WORK/migrate-yaml.err" &&
  grep -q 'name: derm_desired_replicas' "$WORK/route.migrated.yaml" &&
  "$K" apply --server-side --dry-run=server -f "$WORK/route.migrated.yaml" >/dev/null 2>&1; then
  ok "-f ... -o yaml: the migrated HPA passes a server-side dry run (for a Git repository)"
else
  ko "-o yaml: $(head -c 400 "$WORK/migrate-yaml.err") $(head -c 400 "$WORK/route.migrated.yaml")"
fi

# --- cleanup ----------------------------------------------------------------------------------
cleanup
trap - EXIT
gone() { ! "$K" get apiservice v1beta1.external.metrics.k8s.io && ! "$K" get namespace "$NS" && ! "$K" get namespace "$APP_NS" &&
  ! pgrep -f -- "--admin-listen=127.0.0.1:$ADMIN_PORT" && ! pgrep -f -- "--admin-listen=127.0.0.1:$C_ADMIN"; }
if eventually gone; then ok "cleanup: APIServices, namespaces and cluster objects deleted, adapter and controller processes gone"; else
  ko "cleanup: objects left behind"
fi
echo "$pass passed, $fail failed"
[[ $fail == 0 ]]
