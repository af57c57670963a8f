# Shared by the check scripts (smoke-test.sh, probe-aggregation.sh, e2e-adapter.sh); source it
# after setting K (kubectl) and TIMEOUT (seconds).
# shellcheck shell=bash

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
