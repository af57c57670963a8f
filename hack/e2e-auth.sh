#!/usr/bin/env bash
# End to end test of the adapter's delegated authentication against a cluster started by
# hack/cluster-up.sh. The adapter (target/release/derm-adapter, --static-values) runs WITHOUT
# --requestheader-client-ca: with --authentication-configmap it reads the front-proxy CA,
# allowed names and header names (and the client CA) from the real
# kube-system/extension-apiserver-authentication and watches it; --token-review and
# --authorize delegate bearer tokens and authorization to kube-apiserver.
# Checks: the trust is read from the ConfigMap; the APIService (caBundle, no
# insecureSkipTLSVerify) becomes Available and `kubectl get --raw` through the aggregator
# returns the published value; a ServiceAccount token sent directly to the adapter is accepted
# when RBAC lets that account list the metric (TokenReview + SubjectAccessReview), refused 403
# for an account without RBAC, 401 for a forged token; the admin's client certificate (client
# CA from the ConfigMap) is served directly; allowed names edited in the ConfigMap apply to the
# running adapter (the aggregator refused, then served again), a malformed edit is rejected and
# counted while the last good trust keeps serving; the serving certificate files rotated under the
# running adapter are served to new connections and the aggregator keeps working.
# Deletes the APIService and namespace and stops the adapter, also on failure.
# Prints "N passed, N failed".
#   DERM_CLUSTER_DIR   run dir (default /tmp/derm-cluster)
#   DERM_PROBE_TIMEOUT seconds per wait (default 90)
#   DERM_ADAPTER_BIN   use this binary instead of building target/release/derm-adapter
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HACK_DIR/.." && pwd)"
# shellcheck source=hack/lib.sh
. "$HACK_DIR/lib.sh"
e2e_begin e2e-auth 90
NS=derm-e2e-auth
namespaces_gone "$NS"
SVC=derm-adapter
APISERVICE=v1beta1.external.metrics.k8s.io

build_bin derm-adapter DERM_ADAPTER_BIN "$WORK"

# --- PKI: our own serving CA, and a serving certificate (issued twice: the rotation) -----------
serving_cert() { # common name: (re)writes serving.crt/serving.key, signed by our CA
  (
    cd "$WORK"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$1" -keyout next.key -out next.csr 2>/dev/null
    printf 'subjectAltName=DNS:%s.%s.svc\nextendedKeyUsage=serverAuth\n' "$SVC" "$NS" >serving.ext
    openssl x509 -req -in next.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
      -extfile serving.ext -out next.crt 2>/dev/null
    # As a Secret volume update does: both files replaced, each atomically.
    mv next.key serving.key
    mv next.crt serving.crt
  )
}
(cd "$WORK" && openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=derm-e2e-auth-ca" \
  -keyout ca.key -out ca.crt 2>/dev/null)
serving_cert derm-adapter-first

# --- the adapter: trust from the ConfigMap, tokens and authorization by kube-apiserver ---------
echo "[{\"namespace\":\"$NS\",\"app\":\"shop\",\"service\":\"cart\",\"replicas\":4}]" >"$WORK/values.json"
PORT="$(free_port)"
ADMIN_PORT="$(free_port)"
KUBECONFIG="$RUN/kubeconfig" "$BIN" serve --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
  --tls-cert "$WORK/serving.crt" --tls-key "$WORK/serving.key" --tls-reload-interval 1s \
  --authentication-configmap --token-review --authorize --drain-timeout 2s --log-format json \
  --static-values "$WORK/values.json" >"$WORK/adapter.log" 2>&1 &
ADAPTER_PID=$!
cleanup() {
  "$K" delete apiservice "$APISERVICE" --ignore-not-found >/dev/null 2>&1 || true
  "$K" delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  "$K" delete clusterrole derm-e2e-auth-metrics --ignore-not-found >/dev/null 2>&1 || true
  kill "$ADAPTER_PID" 2>/dev/null || true
  wait "$ADAPTER_PID" 2>/dev/null || true
}
trap cleanup EXIT

adapter_ready() { curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz"; }
if eventually adapter_ready; then ok "derm-adapter ready without --requestheader-client-ca"; else
  ko "derm-adapter not ready: $(tail -n 5 "$WORK/adapter.log")"
fi
trust_line="$(grep 'trust from kube-system/extension-apiserver-authentication' "$WORK/adapter.log" || true)"
if [[ "$trust_line" == *'"request_header":true'* && "$trust_line" == *'"client_ca":true'* ]]; then
  ok "trust read from kube-system/extension-apiserver-authentication (request-header CA and client CA)"
else
  ko "trust from the ConfigMap: $(grep -i trust "$WORK/adapter.log" | tail -n 2)"
fi

# --- through the aggregator --------------------------------------------------------------------
register_external_metrics "$NS" "$SVC" "$PORT" "$WORK/ca.crt"
available() {
  [[ "$("$K" get apiservice "$APISERVICE" -o jsonpath='{.status.conditions[?(@.type=="Available")].status}')" == True ]]
}
if eventually available; then ok "APIService $APISERVICE Available"; else
  ko "APIService not Available: $("$K" get apiservice "$APISERVICE" -o jsonpath='{.status.conditions[0].message}')"
fi
METRIC_PATH="/apis/external.metrics.k8s.io/v1beta1/namespaces/$NS/derm_desired_replicas"
served() {
  "$K" get --raw "$METRIC_PATH" 2>&1 | python3 -c '
import json, sys
text = sys.stdin.read()
try:
    print(" ".join(i["value"] for i in json.loads(text)["items"]))
except Exception:
    print("not a metric list: " + " ".join(text.split())[:300])' || true
}
aggregated_again() { [[ "$(served)" == 4 ]]; }
val="$(served)"
if [[ "$val" == 4 ]]; then
  ok "kubectl get --raw through the aggregator: [4] (front-proxy certificate checked against the ConfigMap's CA)"
else
  ko "GET through the aggregator: $val"
fi

# --- ServiceAccount tokens, directly: TokenReview then SubjectAccessReview ----------------------
"$K" -n "$NS" create serviceaccount reader >/dev/null
"$K" -n "$NS" create serviceaccount nobody >/dev/null
# External metrics are resources named after the metric: reader may list this one in $NS.
cat <<YAML | "$K" apply -f - >/dev/null
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: derm-e2e-auth-metrics}
rules:
- apiGroups: [external.metrics.k8s.io]
  resources: [derm_desired_replicas]
  verbs: [list, get]
YAML
"$K" -n "$NS" create rolebinding reader-metrics --clusterrole=derm-e2e-auth-metrics \
  --serviceaccount="$NS:reader" >/dev/null
direct() { # extra curl args...: HTTP code of a direct GET (000: TLS refused)
  curl -s -o "$WORK/direct.body" -w '%{http_code}' --max-time 10 --cacert "$WORK/ca.crt" \
    --resolve "$SVC.$NS.svc:$PORT:127.0.0.1" "$@" "https://$SVC.$NS.svc:$PORT$METRIC_PATH" || true
}
reader_token="$("$K" -n "$NS" create token reader --duration 10m)"
nobody_token="$("$K" -n "$NS" create token nobody --duration 10m)"
reader_ok() { [[ "$(direct -H "Authorization: Bearer $reader_token")" == 200 ]]; }
# The RoleBinding may take a moment to reach the authorizer's cache.
if eventually reader_ok && grep -q '"value":"4"' "$WORK/direct.body"; then
  ok "ServiceAccount token with RBAC, directly: 200 with the value (TokenReview + SubjectAccessReview)"
else
  ko "ServiceAccount reader directly: HTTP $(direct -H "Authorization: Bearer $reader_token"): $(head -c 300 "$WORK/direct.body")"
fi
code="$(direct -H "Authorization: Bearer $nobody_token")"
if [[ "$code" == 403 ]] && grep -q "system:serviceaccount:$NS:nobody" "$WORK/direct.body"; then
  ok "ServiceAccount token without RBAC, directly: 403 naming system:serviceaccount:$NS:nobody"
else
  ko "ServiceAccount nobody directly: HTTP $code: $(head -c 300 "$WORK/direct.body")"
fi
code="$(direct -H "Authorization: Bearer forged.token.value")"
if [[ "$code" == 401 ]]; then ok "forged bearer token, directly: 401"; else
  ko "forged bearer token: HTTP $code: $(head -c 300 "$WORK/direct.body")"
fi
code="$(direct -H "X-Remote-User: system:admin" -H "X-Remote-Group: system:masters")"
if [[ "$code" == 401 ]]; then ok "X-Remote-* headers without the front-proxy certificate, directly: 401"; else
  ko "X-Remote-* headers without a certificate: HTTP $code"
fi
code="$(direct --cert "$DERM_ADMIN_CERT" --key "$DERM_ADMIN_KEY")"
if [[ "$code" == 200 ]]; then ok "the admin's client certificate (client-ca-file from the ConfigMap), directly: 200"; else
  ko "admin client certificate directly: HTTP $code: $(head -c 300 "$WORK/direct.body")"
fi

# --- the ConfigMap changes under the running adapter (kube-apiserver rewrites it only on its
# own resync, so an edit holds long enough to be seen) -------------------------------------------
CM=(-n kube-system configmap extension-apiserver-authentication)
NAMES="$("$K" get "${CM[@]}" -o jsonpath='{.data.requestheader-allowed-names}')"
set_names() { # JSON text of requestheader-allowed-names
  "$K" patch "${CM[@]}" --type merge -p "$(python3 -c 'import json,sys; print(json.dumps({"data": {"requestheader-allowed-names": sys.argv[1]}}))' "$1")" >/dev/null
}
reload_count() { # result: Applied or Rejected
  curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" |
    sed -n 's/^derm_adapter_reloads_total{source="AuthenticationConfigMap",result="'"$1"'"} //p'
}
restore_names() { set_names "$NAMES" 2>/dev/null || true; }
trap 'restore_names; cleanup' EXIT
set_names '["someone-else"]'
# kube-apiserver's own front-proxy certificate (CN system:auth-proxy), as the aggregator sends it.
as_proxy() { direct --cert "$DERM_PROXY_CLIENT_CERT" --key "$DERM_PROXY_CLIENT_KEY" -H 'X-Remote-User: system:admin' \
  -H 'X-Remote-Group: system:masters'; }
refused() { [[ "$(as_proxy)" == 403 ]] && grep -q 'system:auth-proxy' "$WORK/direct.body"; }
t0=$SECONDS
if eventually refused && [[ "$(reload_count Applied)" == 1 ]]; then
  ok "allowed names changed in the ConfigMap: the front-proxy certificate refused (403 naming it) in $((SECONDS - t0))s, no restart"
else
  ko "allowed names change not applied: GET $(served); reloads $(reload_count Applied)"
fi
set_names "$NAMES"
t0=$SECONDS
if eventually aggregated_again && [[ "$(reload_count Applied)" == 2 && "$(as_proxy)" == 200 ]]; then
  ok "allowed names restored: the front-proxy certificate served, and through the aggregator, in $((SECONDS - t0))s"
else
  ko "allowed names restored: GET $(served)"
fi
set_names 'not json'
rejected() { [[ "$(reload_count Rejected)" == 1 ]]; }
if eventually rejected && [[ "$(served)" == 4 ]]; then
  ok "malformed ConfigMap (allowed names not JSON): rejected, counted, the last good trust still serves [4]"
else
  ko "malformed ConfigMap: rejected $(reload_count Rejected), GET $(served)"
fi
set_names "$NAMES"

# --- the serving certificate rotates under the running adapter ---------------------------------
served_cn() {
  openssl s_client -connect "127.0.0.1:$PORT" -servername "$SVC.$NS.svc" </dev/null 2>/dev/null |
    openssl x509 -noout -subject 2>/dev/null || true
}
serving_cert derm-adapter-rotated
rotated() { served_cn | grep -q derm-adapter-rotated; }
t0=$SECONDS
if eventually rotated; then ok "serving certificate files replaced: new connections get the new certificate in $((SECONDS - t0))s"; else
  ko "serving certificate not reloaded: $(served_cn)"
fi
# The whole body first: `curl | grep -q` under pipefail fails when grep exits before curl has
# written the rest (curl: write error 23), which failed this check once in CI-like runs.
reloads() { grep -q 'derm_adapter_reloads_total{source="ServingCertificate",result="Applied"} 1' <<<"$(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics")"; }
if reloads && eventually aggregated_again; then
  ok "after the rotation: reload counted on /metrics, the aggregator still gets [4]"
else
  ko "after the rotation: $(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | grep reloads_total | tr '\n' ' '); GET $(served)"
fi

restore_names
cleanup
trap - EXIT
echo "$pass passed, $fail failed"
[[ $fail == 0 ]]
