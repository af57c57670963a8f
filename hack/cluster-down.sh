#!/usr/bin/env bash
# Stop the cluster started by hack/cluster-up.sh and remove its run dir.
#   DERM_CLUSTER_DIR  run dir (default /tmp/derm-cluster)
#   KEEP_LOGS=1       keep the run dir (logs, pki, etcd data) after stopping
#   DERM_STOP_TIMEOUT seconds to wait for each process after SIGTERM (default 15)
set -euo pipefail

RUN="${DERM_CLUSTER_DIR:-/tmp/derm-cluster}"
STOP_TIMEOUT="${DERM_STOP_TIMEOUT:-15}"
log() { printf '[cluster-down %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ ! -d "$RUN" ]]; then
  log "no run dir $RUN: nothing to stop"
  exit 0
fi
if [[ ! -f "$RUN/.derm-cluster" ]]; then
  log "$RUN was not made by hack/cluster-up.sh; not touching it"
  exit 1
fi

running() { # pid: alive and not a zombie (a zombie is waiting for its parent to reap it)
  kill -0 "$1" 2>/dev/null || return 1
  [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]
}

# Reverse start order: clients first, etcd last.
for name in pod-reaper kube-scheduler kube-controller-manager kube-apiserver etcd; do
  f="$RUN/pids/$name.pid"
  [[ -f "$f" ]] || continue
  pid="$(cat "$f")"
  # Only signal the pid if it is still the process we started (pids get reused).
  if running "$pid" && grep -qa -- "$name" "/proc/$pid/cmdline" 2>/dev/null; then
    # Each component was started with setsid: signal its whole process group (the
    # reaper's kubectl children included) when it leads one.
    target="$pid"
    if [[ "$(ps -o pgid= -p "$pid" | tr -d ' ')" == "$pid" ]]; then target="-$pid"; fi
    kill -TERM -- "$target" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT))
    while running "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
    if running "$pid"; then
      log "$name (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL -- "$target" 2>/dev/null || true
    fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$f"
done

if [[ "${KEEP_LOGS:-0}" == 1 ]]; then
  log "kept $RUN (logs in $RUN/logs)"
else
  rm -rf "$RUN"
  log "removed $RUN"
fi
