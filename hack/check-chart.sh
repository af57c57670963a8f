#!/usr/bin/env bash
# Checks of the Helm chart deploy/helm/derm against a cluster started by hack/cluster-up.sh:
#   - helm lint; manifests/ in sync with the chart (hack/gen-manifests.sh --check);
#   - `helm template --include-crds` for several value sets, each validated by a server-side
#     dry run (kubectl apply --server-side --dry-run=server): defaults (self-signed TLS),
#     tls.mode=secret, cert-manager (its objects only when cert-manager is served), and
#     extender, controller and custom API off, another OTLP port;
#   - bad values fail the render with a message naming the value;
#   - the self-signed certificate the chart generates verifies against the APIService caBundle
#     for derm-adapter.<ns>.svc, and the adapter serves TLS with it (curl checks the name);
#   - kube-scheduler accepts the shipped KubeSchedulerConfiguration (--write-config-to).
# Prints "N passed, N failed".
#   DERM_CLUSTER_DIR   run dir (default /tmp/derm-cluster)
#   DERM_HELM          helm binary (default: hack/build-helm.sh)
#   DERM_ADAPTER_BIN   derm-adapter binary (default: cargo build --release -p derm-adapter)
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HACK_DIR/.." && pwd)"
# shellcheck source=hack/lib.sh
. "$HACK_DIR/lib.sh"
e2e_begin check-chart 90
CHART="$ROOT/deploy/helm/derm"
NS=derm-chart-check
namespaces_gone "$NS"
HELM="${DERM_HELM:-$("$HACK_DIR/build-helm.sh" | tail -n 1)}"
export DERM_HELM="$HELM"

ADAPTER_PID=
cleanup() {
  [[ -z "$ADAPTER_PID" ]] || { kill "$ADAPTER_PID" 2>/dev/null || true; wait "$ADAPTER_PID" 2>/dev/null || true; }
  "$K" delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

if out="$("$HELM" lint "$CHART" 2>&1)"; then ok "helm lint"; else ko "helm lint: $out"; fi
if out="$("$HACK_DIR/gen-manifests.sh" --check 2>&1)"; then ok "$(tail -n 1 <<<"$out")"; else ko "manifests/ out of sync: $(head -c 600 <<<"$out")"; fi

"$K" create namespace "$NS" >/dev/null
cm_served=0
"$K" api-resources --api-group=cert-manager.io -o name 2>/dev/null | grep -q '^certificates' && cm_served=1
render() { # name helm-args...: renders to $WORK/<name>.yaml (cert-manager objects dropped unless served)
  local name=$1
  shift
  "$HELM" template derm "$CHART" --namespace "$NS" --include-crds "$@" >"$WORK/$name.all.yaml" || return 1
  python3 - "$WORK/$name.all.yaml" "$cm_served" >"$WORK/$name.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
keep = [d for d in docs if sys.argv[2] == "1" or not d["apiVersion"].startswith("cert-manager.io/")]
print(yaml.safe_dump_all(keep, sort_keys=False), end="")
print(f"{len(docs) - len(keep)} cert-manager objects dropped", file=sys.stderr)
PY
}
validate() { # name description helm-args...
  local name=$1 what=$2 n
  shift 2
  if ! render "$name" "$@" 2>"$WORK/$name.err"; then
    ko "helm template ($what): $(head -c 400 "$WORK/$name.err")"
    return
  fi
  n="$(grep -c '^kind:' "$WORK/$name.yaml")"
  if "$K" apply --server-side --dry-run=server --field-manager=derm-chart-check -f "$WORK/$name.yaml" >"$WORK/$name.apply" 2>&1; then
    ok "helm template ($what): $n objects pass a server-side dry run$(grep -o ', [1-9][0-9]* cert-manager.*' <<<", $(cat "$WORK/$name.err")" || true)"
  else
    ko "helm template ($what): $(grep -v 'serverside-applied' "$WORK/$name.apply" | head -c 600)"
  fi
}
validate defaults "defaults, self-signed TLS"
validate secret "tls.mode=secret" --set tls.mode=secret --set tls.secretName=my-tls --set-file tls.caBundle="$DERM_FRONT_PROXY_CA_FILE" \
  --set-file adapter.requestheaderClientCA="$DERM_FRONT_PROXY_CA_FILE"
validate certmanager "tls.mode=cert-manager" --set tls.mode=cert-manager
validate options "extender off, controller off, custom API off, OTLP port 14318" \
  --set extender.enabled=false --set controller.enabled=false --set apiServices.custom=false
validate otlp "OTLP port 14318, upstream with its CA" --set controller.otlpPort=14318 \
  --set upstream.url=https://keda-operator-metrics-apiserver.keda.svc:443 --set-file upstream.caBundle="$DERM_FRONT_PROXY_CA_FILE"
if ! grep -q 'derm-extender' "$WORK/options.yaml" && ! grep -q 'derm-controller' "$WORK/options.yaml" &&
  ! grep -q 'custom.metrics.k8s.io' "$WORK/options.yaml" && grep -q 'otlp-listen=0.0.0.0:14318' "$WORK/otlp.yaml" &&
  grep -q 'port: 14318' "$WORK/otlp.yaml" && grep -q -- '--upstream=https://keda-operator' "$WORK/otlp.yaml" &&
  grep -q -- '--upstream-ca-file=/etc/derm/upstream/ca.crt' "$WORK/otlp.yaml" && grep -q 'name: derm-adapter-upstream-reader' "$WORK/otlp.yaml" &&
  ! grep -q 'upstream' "$WORK/defaults.yaml"; then
  ok "values take effect: no extender, no controller, no custom.metrics APIService; OTLP port in args and Service; upstream args, CA and reader role (none by default)"
else
  ko "values did not take effect in $WORK/options.yaml / otlp.yaml"
fi
# The defaults: one controller (Recreate: two pods would split the traces) running the online
# loop with leader election; the serving replicas cannot write status.
python3 - "$WORK/defaults.yaml" <<'PY' && ok "defaults: derm-controller runs serve --controller --leader-elect, 1 replica, Recreate; the adapter's role only reads DermApps" || ko "controller/adapter objects in the default render"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
c = by[("Deployment", "derm-controller")]["spec"]
args = c["template"]["spec"]["containers"][0]["args"]
assert c["replicas"] == 1 and c["strategy"]["type"] == "Recreate", c
assert "--controller" in args and "--leader-elect" in args, args
rules = by[("ClusterRole", "derm-adapter")]["rules"]
assert all(r["verbs"] == ["get", "list", "watch"] for r in rules), rules
PY

bad_value() { # expected-message helm-args...
  local want=$1
  shift
  if ! out="$("$HELM" template derm "$CHART" --namespace "$NS" "$@" 2>&1)" && grep -q "$want" <<<"$out"; then
    ok "bad values refused: $*"
  else
    ko "bad values ($*) not refused with '$want': $(tail -n 2 <<<"$out")"
  fi
}
bad_value 'tls.mode must be self-signed, cert-manager or secret' --set tls.mode=bogus
bad_value 'tls.secretName is required' --set tls.mode=secret --set tls.caBundle=x
bad_value 'upstream.url must be an https:// URL' --set upstream.url=http://keda:80

# --- the chart's self-signed certificate, served by the adapter -------------------------------
python3 - "$WORK/defaults.yaml" "$WORK" <<'PY'
import base64, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "derm-adapter-tls")
for k in ("ca.crt", "tls.crt", "tls.key"):
    open(f"{sys.argv[2]}/chart-{k}", "wb").write(base64.b64decode(secret["data"][k]))
bundles = {base64.b64decode(d["spec"]["caBundle"]) for d in docs if d["kind"] == "APIService"}
open(f"{sys.argv[2]}/chart-cabundle-matches", "w").write(str(bundles == {base64.b64decode(secret["data"]["ca.crt"])}))
sched = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "derm-scheduler-config")
open(f"{sys.argv[2]}/scheduler-config.yaml", "w").write(sched["data"]["config.yaml"])
PY
if [[ "$(cat "$WORK/chart-cabundle-matches")" == True ]] &&
  openssl verify -CAfile "$WORK/chart-ca.crt" "$WORK/chart-tls.crt" >/dev/null 2>&1 &&
  openssl x509 -in "$WORK/chart-tls.crt" -noout -ext subjectAltName | grep -q "DNS:derm-adapter.$NS.svc"; then
  ok "self-signed TLS: serving certificate for derm-adapter.$NS.svc verifies against both APIServices' caBundle"
else
  ko "self-signed TLS: certificate, SAN or caBundle wrong (files under $WORK)"
fi
if [[ -z "${DERM_ADAPTER_BIN:-}" ]]; then
  (cd "$ROOT" && cargo build --release -p derm-adapter) >"$WORK/build.log" 2>&1 || { tail -n 20 "$WORK/build.log" >&2; exit 1; }
fi
ADAPTER="${DERM_ADAPTER_BIN:-$ROOT/target/release/derm-adapter}"
PORT="$(free_port)"
ADMIN_PORT="$(free_port)"
"$ADAPTER" serve --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
  --tls-cert "$WORK/chart-tls.crt" --tls-key "$WORK/chart-tls.key" >"$WORK/adapter.log" 2>&1 &
ADAPTER_PID=$!
served() {
  [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$WORK/chart-ca.crt" \
    --resolve "derm-adapter.$NS.svc:$PORT:127.0.0.1" "https://derm-adapter.$NS.svc:$PORT/apis/external.metrics.k8s.io/v1beta1")" == 200 ]]
}
if eventually served; then ok "the adapter serves TLS with the chart's key and certificate (curl verifies name and CA)"; else
  ko "adapter with the chart's certificate: $(tail -n 5 "$WORK/adapter.log")"
fi

# --- the KubeSchedulerConfiguration -----------------------------------------------------------
sed "s|kubeconfig: .*|kubeconfig: $KUBECONFIG|" "$WORK/scheduler-config.yaml" >"$WORK/scheduler-config.local.yaml"
if "$DERM_BIN_DIR/kube-scheduler" --config "$WORK/scheduler-config.local.yaml" \
  --write-config-to "$WORK/scheduler-config.out.yaml" >"$WORK/scheduler.log" 2>&1 &&
  grep -q 'urlPrefix: http://derm-extender' "$WORK/scheduler-config.out.yaml"; then
  ok "kube-scheduler accepts the chart's KubeSchedulerConfiguration (extender at derm-extender.$NS.svc)"
else
  ko "kube-scheduler rejects the KubeSchedulerConfiguration: $(grep -i 'err' "$WORK/scheduler.log" | head -n 3)"
fi

cleanup
ADAPTER_PID=
trap - EXIT
echo "$pass passed, $fail failed"
[[ $fail == 0 ]]
