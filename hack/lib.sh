# Shared by the check scripts (smoke-test.sh, probe-aggregation.sh, the e2e-*.sh); the
# functions use K (kubectl) and TIMEOUT (seconds): set them, or call e2e_begin.
# shellcheck shell=bash

# e2e_begin NAME DEFAULT_TIMEOUT: the common start of a check against a cluster from
# hack/cluster-up.sh: RUN (its run dir, DERM_CLUSTER_DIR) and its env, K, TIMEOUT
# (DERM_PROBE_TIMEOUT or the default) and an empty WORK dir, $RUN/NAME.
e2e_begin() {
  RUN="${DERM_CLUSTER_DIR:-/tmp/derm-cluster}"
  # shellcheck disable=SC1091
  . "$RUN/env"
  K="$DERM_KUBECTL"
  TIMEOUT="${DERM_PROBE_TIMEOUT:-$2}"
  WORK="$RUN/$1"
  rm -rf "$WORK"
  mkdir -p "$WORK"
}

# namespaces_gone NAMESPACE...: waits while a previous run's namespace is still being deleted
# (each script's cleanup deletes its namespace without waiting, and a terminating namespace
# refuses new objects: a rerun within seconds would fail for that alone).
namespaces_gone() {
  local ns
  for ns in "$@"; do
    "$K" wait --for=delete "namespace/$ns" --timeout="${TIMEOUT}s" >/dev/null 2>&1 || true
  done
}

pass=0 fail=0
ok() { echo "PASS $*"; pass=$((pass + 1)); }
ko() { echo "FAIL $*"; fail=$((fail + 1)); }

# Poll until the command succeeds, with a deadline (never a fixed sleep as synchronisation).
eventually() {
  local deadline=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# register_external_metrics NAMESPACE SERVICE PORT CA_FILE: an ExternalName Service to
# localhost:PORT and the v1beta1.external.metrics.k8s.io APIService pointing at it, trusting
# CA_FILE (caBundle; never insecureSkipTLSVerify).
register_external_metrics() {
  local ns=$1 svc=$2 port=$3 ca=$4
  cat <<YAML | "$K" apply -f - >/dev/null
apiVersion: v1
kind: Namespace
metadata: {name: $ns}
---
apiVersion: v1
kind: Service
metadata: {name: $svc, namespace: $ns}
spec:
  type: ExternalName
  externalName: localhost
  ports: [{name: https, port: $port, protocol: TCP}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.external.metrics.k8s.io}
spec:
  group: external.metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  service: {name: $svc, namespace: $ns, port: $port}
  caBundle: $(base64 -w0 <"$ca")
YAML
}

# build_bin PACKAGE OVERRIDE_VAR WORKDIR: sets BIN to $OVERRIDE_VAR when set, else builds
# target/release/PACKAGE (log in WORKDIR/build.log; exits with its tail on failure).
build_bin() {
  local pkg=$1 override=${!2:-} work=$3 t0=$SECONDS
  if [[ -n "$override" ]]; then BIN="$override"; return; fi
  if ! (cd "$ROOT" && cargo build --release -p "$pkg") >"$work/build.log" 2>&1; then
    tail -n 30 "$work/build.log" >&2
    echo "cargo build --release -p $pkg failed; log in $work/build.log" >&2
    exit 1
  fi
  BIN="$ROOT/target/release/$pkg"
  echo "$pkg built in $((SECONDS - t0))s"
}

# stays SECONDS CMD...: CMD holds at every look (each 0.5 s) for SECONDS: an observation over
# several HPA syncs that something does NOT change, not a wait. Returns 1 at the first miss.
stays() {
  local deadline=$((SECONDS + $1))
  shift
  while ((SECONDS < deadline)); do
    "$@" >/dev/null 2>&1 || return 1
    sleep 0.5
  done
}

# exact_hpa NAMESPACE NAME APP SERVICE MAX: a Deployment-targeting HPA (autoscaling/v2) on
# derm_desired_replicas{app,service} with the exact-landing recipe (AverageValue 1, tolerance 0
# both ways, no stabilization, one-step policies), for kubectl apply -f -.
exact_hpa() {
  cat <<YAML
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: $2, namespace: $1}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: $2}
  minReplicas: 1
  maxReplicas: $5
  metrics:
  - type: External
    external:
      metric:
        name: derm_desired_replicas
        selector: {matchLabels: {app: $3, service: $4}}
      target: {type: AverageValue, averageValue: "1"}
  behavior:
    scaleUp:
      tolerance: "0"
      stabilizationWindowSeconds: 0
      selectPolicy: Max
      policies: [{type: Pods, value: 100, periodSeconds: 1}, {type: Percent, value: 1000, periodSeconds: 1}]
    scaleDown:
      tolerance: "0"
      stabilizationWindowSeconds: 0
      selectPolicy: Max
      policies: [{type: Pods, value: 100, periodSeconds: 1}, {type: Percent, value: 100, periodSeconds: 1}]
YAML
}

# mesh_prometheus DIR TRACES SAMPLING: hack/mesh-counters.py over TRACES (a `derm generate
# --format jaeger` file) and a Prometheus from hack/build-prometheus.sh scraping it every
# second, on free loopback ports, logs and TSDB in DIR. Sets MESH_PID, PROM_PORT and PROM_PID;
# `start_prometheus` starts it again on the same port and TSDB (as a Prometheus with a volume
# restarts). Returns non-zero when the build fails or Prometheus is not ready within TIMEOUT.
mesh_prometheus() {
  local dir=$1 traces=$2 sampling=$3 here mesh_port
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  PROMETHEUS="$("$here/build-prometheus.sh" 2>"$dir/build-prometheus.log")" ||
    { tail -n 20 "$dir/build-prometheus.log" >&2; return 1; }
  mesh_port="$(free_port)" PROM_PORT="$(free_port)"
  python3 "$here/mesh-counters.py" "$traces" "$sampling" "$mesh_port" >"$dir/mesh-counters.log" 2>&1 &
  MESH_PID=$!
  cat >"$dir/prometheus.yml" <<YAML
global: {scrape_interval: 1s}
scrape_configs:
  - job_name: mesh
    static_configs: [{targets: ["127.0.0.1:$mesh_port"]}]
YAML
  PROM_DIR="$dir"
  start_prometheus
  eventually curl -sf "http://127.0.0.1:$PROM_PORT/-/ready" || { tail -n 3 "$dir/prometheus.log" >&2; return 1; }
}
start_prometheus() {
  "$PROMETHEUS" --config.file="$PROM_DIR/prometheus.yml" --storage.tsdb.path="$PROM_DIR/prometheus-data" \
    --web.listen-address="127.0.0.1:$PROM_PORT" >>"$PROM_DIR/prometheus.log" 2>&1 &
  PROM_PID=$!
}
