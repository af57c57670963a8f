#!/usr/bin/env bash
# Start a local Kubernetes control plane without kubelets: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler (with a scheduler extender configured), all on
# 127.0.0.1 with free ports, plus N fake Nodes that pods can be bound to.
#
# Writes, under the run dir (${DERM_CLUSTER_DIR:-/tmp/derm-cluster}):
#   kubeconfig   admin kubeconfig (system:masters, data embedded)
#   env          sourceable: KUBECONFIG, ports, URLs, CA/cert paths (see hack/README.md)
#   pki/         all keys and certificates
#   logs/        one log per component
#   pids/        one pid file per component (used by hack/cluster-down.sh)
#
# Environment (all optional):
#   DERM_CLUSTER_DIR     run dir (default /tmp/derm-cluster)
#   DERM_K8S_VERSION     version to run (default: what hack/build-control-plane.sh picks,
#                        v1.36.3 or its fallback v1.35.4); built first when missing
#   DERM_BIN_DIR         use the binaries in this directory, build nothing
#   DERM_CACHE           build cache (default $HOME/.cache/derm)
#   DERM_NO_BUILD=1      build nothing: use <cache>/bin/${DERM_K8S_VERSION:-current}
#   DERM_NODES           number of fake nodes (default 3)
#   DERM_NODE_CPU / DERM_NODE_MEMORY / DERM_NODE_PODS   per node (default 8 / 32Gi / 110)
#   DERM_EXTENDER_PORT   port the scheduler extender is expected on (default: a free port)
#   DERM_EXTENDER_URL    extender urlPrefix (default http://127.0.0.1:$DERM_EXTENDER_PORT)
#   DERM_EXTENDER=0      configure no extender at all
#   DERM_EXTENDER_WEIGHT extender prioritize weight (default 1; hack/e2e-extender.sh wants 5)
#   DERM_ADAPTER_SERVICE / DERM_ADAPTER_NAMESPACE  names in the adapter serving cert SANs
#                        (default derm-adapter / derm-system)
#   DERM_FEATURE_GATES   extra --feature-gates for apiserver and controller-manager
#   DERM_APISERVER_ARGS / DERM_KCM_ARGS / DERM_SCHEDULER_ARGS  extra flags (word-split)
#   DERM_HPA_SYNC_PERIOD HPA controller sync period (default 2s)
#   DERM_LOG_V           klog verbosity of the Kubernetes components (default 2)
#   DERM_START_TIMEOUT   seconds to wait for each component (default 120)
#   DERM_POD_REAPER=0    do not start hack/pod-reaper.sh (force-deletes bound pods once
#                        they are marked for deletion, the kubelet's part)
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUN="${DERM_CLUSTER_DIR:-/tmp/derm-cluster}"
CACHE="${DERM_CACHE:-$HOME/.cache/derm}"
NODES="${DERM_NODES:-3}"
TIMEOUT="${DERM_START_TIMEOUT:-120}"
LOGV="${DERM_LOG_V:-2}"

log() { printf '[cluster-up %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------------------
# binaries
# ---------------------------------------------------------------------------
if [[ -n "${DERM_BIN_DIR:-}" ]]; then
  BIN="$DERM_BIN_DIR"
  DERM_K8S_VERSION="${DERM_K8S_VERSION:-$("$BIN/kube-apiserver" --version | awk '{print $2}')}"
elif [[ "${DERM_NO_BUILD:-0}" == 1 ]]; then
  BIN="$CACHE/bin/${DERM_K8S_VERSION:-current}"
  BIN="$(cd "$BIN" 2>/dev/null && pwd -P)" || { log "no binaries in $CACHE/bin (run hack/build-control-plane.sh)"; exit 1; }
  DERM_K8S_VERSION="$(basename "$BIN")"
else
  # A no-op (well under a second) when the binaries are built; otherwise builds them
  # (15-35 min estimate, measured 5 min cold here) and falls back to v1.35.4 by itself.
  BIN="$("$HACK_DIR/build-control-plane.sh" ${DERM_K8S_VERSION:+"$DERM_K8S_VERSION"} | tail -n 1)" || {
    log "building the control plane failed (messages above)"
    exit 1
  }
  DERM_K8S_VERSION="$(basename "$BIN")"
fi
for b in etcd kube-apiserver kube-controller-manager kube-scheduler; do
  [[ -x "$BIN/$b" ]] || { log "missing $BIN/$b"; exit 1; }
done
KUBECTL="$BIN/kubectl"
[[ -x "$KUBECTL" ]] || KUBECTL="$(command -v kubectl || true)"
[[ -n "$KUBECTL" ]] || { log "no kubectl found"; exit 1; }

# ---------------------------------------------------------------------------
# already running?
# ---------------------------------------------------------------------------
alive() { # name
  local f="$RUN/pids/$1.pid" pid
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f")"
  kill -0 "$pid" 2>/dev/null && grep -qa -- "$1" "/proc/$pid/cmdline" 2>/dev/null
}
if [[ -f "$RUN/env" ]] && alive etcd && alive kube-apiserver && alive kube-controller-manager \
  && alive kube-scheduler && { [[ "${DERM_POD_REAPER:-1}" == 0 ]] || alive pod-reaper; } \
  && KUBECONFIG="$RUN/kubeconfig" "$KUBECTL" get --raw /readyz >/dev/null 2>&1; then
  log "cluster already running in $RUN (source $RUN/env)"
  echo "$RUN/env"
  exit 0
fi
if [[ -d "$RUN" ]]; then
  if [[ -f "$RUN/.derm-cluster" ]]; then
    log "stopping/removing stale run dir $RUN"
    KEEP_LOGS=0 DERM_CLUSTER_DIR="$RUN" "$HACK_DIR/cluster-down.sh" >/dev/null 2>&1 || true
    rm -rf "$RUN"
  elif [[ -n "$(ls -A "$RUN")" ]]; then
    log "$RUN exists, is not empty and was not made by cluster-up.sh; refusing to touch it"
    exit 1
  fi
fi
mkdir -p "$RUN"/{pki,logs,pids,etcd-data,kcm-certs,scheduler-certs,apiserver-certs}
touch "$RUN/.derm-cluster"
chmod 700 "$RUN/pki"

started=()
ready=0
on_exit() {
  local rc=$?
  [[ $ready == 1 ]] && return 0
  [[ $rc == 0 ]] && rc=1
  log "FAILED to start the cluster (exit $rc); logs kept in $RUN/logs"
  if [[ ${#started[@]} -gt 0 ]]; then
    local last="${started[-1]}"
    log "---- last lines of $RUN/logs/$last.log"
    tail -n 20 "$RUN/logs/$last.log" >&2 || true
    log "----"
  fi
  KEEP_LOGS=1 DERM_CLUSTER_DIR="$RUN" "$HACK_DIR/cluster-down.sh" >/dev/null 2>&1 || true
  log "logs: $RUN/logs"
  exit "$rc"
}
trap on_exit EXIT

# ---------------------------------------------------------------------------
# ports
# ---------------------------------------------------------------------------
free_ports() { # count
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
  else
    local out=() p
    while [[ ${#out[@]} -lt $1 ]]; do
      p=$((20000 + RANDOM % 12000))
      [[ " ${out[*]} " == *" $p "* ]] && continue
      (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
      out+=("$p")
    done
    echo "${out[*]}"
  fi
}
read -r ETCD_PORT ETCD_PEER_PORT API_PORT KCM_PORT SCHED_PORT EXT_PORT <<<"$(free_ports 6)"
EXT_PORT="${DERM_EXTENDER_PORT:-$EXT_PORT}"
EXT_URL="${DERM_EXTENDER_URL:-http://127.0.0.1:$EXT_PORT}"

# ---------------------------------------------------------------------------
# PKI
# ---------------------------------------------------------------------------
P="$RUN/pki"
ADAPTER_SVC="${DERM_ADAPTER_SERVICE:-derm-adapter}"
ADAPTER_NS="${DERM_ADAPTER_NAMESPACE:-derm-system}"
ossl() { openssl "$@" 2>>"$RUN/logs/openssl.log"; }
mk_ca() { # name cn
  ossl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -keyout "$P/$1.key" -out "$P/$1.crt" \
    -subj "/CN=$2" -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}
mk_cert() { # name ca subject eku [san]
  local ext="$P/$1.ext"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$4"
    if [[ -n "${5:-}" ]]; then echo "subjectAltName=$5"; fi
  } >"$ext"
  ossl req -newkey rsa:2048 -nodes -sha256 -keyout "$P/$1.key" -out "$P/$1.csr" -subj "$3"
  ossl x509 -req -sha256 -days 3650 -in "$P/$1.csr" -CA "$P/$2.crt" -CAkey "$P/$2.key" \
    -CAcreateserial -out "$P/$1.crt" -extfile "$ext"
  rm -f "$P/$1.csr" "$P/$1.ext"
}
log "PKI in $P"
mk_ca ca derm-server-ca
mk_ca client-ca derm-client-ca
mk_ca front-proxy-ca derm-front-proxy-ca
mk_cert apiserver ca /CN=kube-apiserver serverAuth \
  "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.0.0.1"
mk_cert admin client-ca "/O=system:masters/CN=derm-admin" clientAuth
mk_cert proxy-client front-proxy-ca /CN=system:auth-proxy clientAuth
mk_cert adapter ca "/CN=$ADAPTER_SVC.$ADAPTER_NS.svc" serverAuth \
  "DNS:$ADAPTER_SVC.$ADAPTER_NS.svc,DNS:$ADAPTER_SVC.$ADAPTER_NS.svc.cluster.local,DNS:localhost,IP:127.0.0.1"
ossl genrsa -out "$P/sa.key" 2048
ossl rsa -in "$P/sa.key" -pubout -out "$P/sa.pub"

# ---------------------------------------------------------------------------
# kubeconfig
# ---------------------------------------------------------------------------
b64() { base64 -w0 <"$1"; }
API_URL="https://127.0.0.1:$API_PORT"
cat >"$RUN/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: derm
  cluster:
    server: $API_URL
    certificate-authority-data: $(b64 "$P/ca.crt")
users:
- name: derm-admin
  user:
    client-certificate-data: $(b64 "$P/admin.crt")
    client-key-data: $(b64 "$P/admin.key")
contexts:
- name: derm
  context:
    cluster: derm
    user: derm-admin
current-context: derm
EOF
chmod 600 "$RUN/kubeconfig"
export KUBECONFIG="$RUN/kubeconfig"

# ---------------------------------------------------------------------------
# process helpers
# ---------------------------------------------------------------------------
start() { # name binary args...
  local name="$1"; shift
  started+=("$name")
  # setsid: the component outlives this script and the shell that ran it.
  setsid "$@" >"$RUN/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/pids/$name.pid"
  # The command line, NUL-separated, for hack/restart-component.sh.
  printf '%s\0' "$@" >"$RUN/pids/$name.cmd"
  log "started $name (pid $!), log $RUN/logs/$name.log"
}

wait_for() { # name description command...
  local name="$1" what="$2"; shift 2
  local deadline=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$(cat "$RUN/pids/$name.pid")" 2>/dev/null; then
      log "$name exited while waiting for $what"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      log "timed out after ${TIMEOUT}s waiting for $what"
      return 1
    fi
    sleep 0.5
  done
  log "$what: ok ($((SECONDS - t_start))s since start)"
}
t_start=$SECONDS

curl_ok() { # url expected-body [curl args]
  local url="$1" want="$2"; shift 2
  [[ "$(curl -fsS --max-time 3 "$@" "$url")" == *"$want"* ]]
}

# ---------------------------------------------------------------------------
# etcd
# ---------------------------------------------------------------------------
start etcd "$BIN/etcd" \
  --name derm \
  --data-dir "$RUN/etcd-data" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "derm=http://127.0.0.1:$ETCD_PEER_PORT" \
  --unsafe-no-fsync \
  --quota-backend-bytes 2147483648
wait_for etcd "etcd /health" curl_ok "http://127.0.0.1:$ETCD_PORT/health" '"health":"true"'

# ---------------------------------------------------------------------------
# kube-apiserver
# ---------------------------------------------------------------------------
gates=()
if [[ -n "${DERM_FEATURE_GATES:-}" ]]; then gates=(--feature-gates="$DERM_FEATURE_GATES"); fi
# shellcheck disable=SC2206
extra_api=(${DERM_APISERVER_ARGS:-})
start kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 \
  --advertise-address 127.0.0.1 \
  --secure-port "$API_PORT" \
  --tls-cert-file "$P/apiserver.crt" \
  --tls-private-key-file "$P/apiserver.key" \
  --client-ca-file "$P/client-ca.crt" \
  --authorization-mode RBAC \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$P/sa.pub" \
  --service-account-signing-key-file "$P/sa.key" \
  --service-cluster-ip-range 10.0.0.0/24 \
  --endpoint-reconciler-type none \
  --disable-admission-plugins TaintNodesByCondition \
  --requestheader-client-ca-file "$P/front-proxy-ca.crt" \
  --requestheader-allowed-names system:auth-proxy \
  --requestheader-username-headers X-Remote-User \
  --requestheader-group-headers X-Remote-Group \
  --requestheader-extra-headers-prefix X-Remote-Extra- \
  --proxy-client-cert-file "$P/proxy-client.crt" \
  --proxy-client-key-file "$P/proxy-client.key" \
  --cert-dir "$RUN/apiserver-certs" \
  --profiling=false \
  --v "$LOGV" \
  "${gates[@]}" "${extra_api[@]}"
wait_for kube-apiserver "kube-apiserver /readyz" curl_ok "$API_URL/readyz" ok \
  --cacert "$P/ca.crt" --cert "$P/admin.crt" --key "$P/admin.key"

# ---------------------------------------------------------------------------
# kube-controller-manager
# ---------------------------------------------------------------------------
# shellcheck disable=SC2206
extra_kcm=(${DERM_KCM_ARGS:-})
start kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig "$RUN/kubeconfig" \
  --authentication-kubeconfig "$RUN/kubeconfig" \
  --authorization-kubeconfig "$RUN/kubeconfig" \
  --bind-address 127.0.0.1 \
  --secure-port "$KCM_PORT" \
  --cert-dir "$RUN/kcm-certs" \
  --leader-elect=false \
  --controllers deployment-controller,replicaset-controller,horizontal-pod-autoscaler-controller,serviceaccount-controller,namespace-controller,garbage-collector-controller \
  --horizontal-pod-autoscaler-sync-period "${DERM_HPA_SYNC_PERIOD:-2s}" \
  --service-account-private-key-file "$P/sa.key" \
  --root-ca-file "$P/ca.crt" \
  --use-service-account-credentials=false \
  --profiling=false \
  --v "$LOGV" \
  "${gates[@]}" "${extra_kcm[@]}"

# ---------------------------------------------------------------------------
# kube-scheduler
# ---------------------------------------------------------------------------
{
  cat <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $RUN/kubeconfig
leaderElection:
  leaderElect: false
EOF
  if [[ "${DERM_EXTENDER:-1}" != 0 ]]; then
    cat <<EOF
extenders:
- urlPrefix: "$EXT_URL"
  filterVerb: filter
  prioritizeVerb: prioritize
  weight: ${DERM_EXTENDER_WEIGHT:-1}
  nodeCacheCapable: true
  ignorable: true
  httpTimeout: 2s
  enableHTTPS: false
EOF
  fi
} >"$RUN/scheduler-config.yaml"
# shellcheck disable=SC2206
extra_sched=(${DERM_SCHEDULER_ARGS:-})
start kube-scheduler "$BIN/kube-scheduler" \
  --config "$RUN/scheduler-config.yaml" \
  --authentication-kubeconfig "$RUN/kubeconfig" \
  --authorization-kubeconfig "$RUN/kubeconfig" \
  --bind-address 127.0.0.1 \
  --secure-port "$SCHED_PORT" \
  --cert-dir "$RUN/scheduler-certs" \
  --profiling=false \
  --v "$LOGV" \
  "${extra_sched[@]}"

wait_for kube-controller-manager "kube-controller-manager /healthz" \
  curl_ok "https://127.0.0.1:$KCM_PORT/healthz" ok -k
wait_for kube-scheduler "kube-scheduler /readyz" \
  curl_ok "https://127.0.0.1:$SCHED_PORT/readyz" ok -k
wait_for kube-controller-manager "ServiceAccount default/default" \
  "$KUBECTL" get serviceaccount default -n default

# ---------------------------------------------------------------------------
# fake nodes
# ---------------------------------------------------------------------------
node_names=()
{
  for i in $(seq 1 "$NODES"); do
    n="derm-node-$i"
    node_names+=("$n")
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: $n
  labels:
    kubernetes.io/hostname: $n
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    derm.dev/fake-node: "true"
status:
  capacity:
    cpu: "${DERM_NODE_CPU:-8}"
    memory: ${DERM_NODE_MEMORY:-32Gi}
    pods: "${DERM_NODE_PODS:-110}"
  allocatable:
    cpu: "${DERM_NODE_CPU:-8}"
    memory: ${DERM_NODE_MEMORY:-32Gi}
    pods: "${DERM_NODE_PODS:-110}"
  conditions:
  - type: Ready
    status: "True"
    reason: DermFakeNode
    message: fake node without a kubelet
EOF
  done
} >"$RUN/nodes.yaml"
"$KUBECTL" apply -f "$RUN/nodes.yaml" >>"$RUN/logs/kubectl.log" 2>&1
# Belt and braces: the TaintNodesByCondition admission plugin is disabled above; if a taint
# still shows up (another component, another version), remove it.
for n in "${node_names[@]}"; do
  if [[ -n "$("$KUBECTL" get node "$n" -o jsonpath='{.spec.taints}')" ]]; then
    log "node $n has taints; removing them"
    "$KUBECTL" patch node "$n" --type=json -p '[{"op":"remove","path":"/spec/taints"}]' >>"$RUN/logs/kubectl.log"
  fi
done
log "$NODES fake nodes: ${node_names[*]}"

# Without kubelets nothing confirms the deletion of bound pods; the reaper does.
if [[ "${DERM_POD_REAPER:-1}" != 0 ]]; then
  export DERM_KUBECTL="$KUBECTL" DERM_CLUSTER_DIR="$RUN"
  start pod-reaper bash "$HACK_DIR/pod-reaper.sh"
fi

# ---------------------------------------------------------------------------
# env file
# ---------------------------------------------------------------------------
cat >"$RUN/env" <<EOF
# Generated by hack/cluster-up.sh; source it: . $RUN/env
export DERM_CLUSTER_DIR=$RUN
export KUBECONFIG=$RUN/kubeconfig
export DERM_K8S_VERSION=$DERM_K8S_VERSION
export DERM_BIN_DIR=$BIN
export DERM_KUBECTL=$KUBECTL
export DERM_APISERVER_URL=$API_URL
export DERM_APISERVER_PORT=$API_PORT
export DERM_ETCD_URL=http://127.0.0.1:$ETCD_PORT
export DERM_ETCD_PORT=$ETCD_PORT
export DERM_KCM_PORT=$KCM_PORT
export DERM_SCHEDULER_PORT=$SCHED_PORT
export DERM_EXTENDER_URL=$EXT_URL
export DERM_EXTENDER_PORT=$EXT_PORT
export DERM_CA_FILE=$P/ca.crt
export DERM_CA_KEY=$P/ca.key
export DERM_CLIENT_CA_FILE=$P/client-ca.crt
export DERM_CLIENT_CA_KEY=$P/client-ca.key
export DERM_ADMIN_CERT=$P/admin.crt
export DERM_ADMIN_KEY=$P/admin.key
export DERM_FRONT_PROXY_CA_FILE=$P/front-proxy-ca.crt
export DERM_FRONT_PROXY_CA_KEY=$P/front-proxy-ca.key
export DERM_PROXY_CLIENT_CERT=$P/proxy-client.crt
export DERM_PROXY_CLIENT_KEY=$P/proxy-client.key
export DERM_ADAPTER_CERT=$P/adapter.crt
export DERM_ADAPTER_KEY=$P/adapter.key
export DERM_ADAPTER_SERVICE=$ADAPTER_SVC
export DERM_ADAPTER_NAMESPACE=$ADAPTER_NS
export DERM_SA_KEY=$P/sa.key
export DERM_SA_PUB=$P/sa.pub
export DERM_NODES=$NODES
export DERM_NODE_NAMES="${node_names[*]}"
export DERM_LOG_DIR=$RUN/logs
EOF
ready=1
log "cluster ready in $((SECONDS - t_start))s: $API_URL ($DERM_K8S_VERSION); source $RUN/env"
echo "$RUN/env"
