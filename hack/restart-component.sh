#!/usr/bin/env bash
# Restart one component of the cluster started by hack/cluster-up.sh with the same command
# line (recorded by cluster-up.sh in pids/NAME.cmd): SIGTERM, wait for it to exit, start it
# again appending to its log. Does not wait for readiness (callers poll what they need).
#   hack/restart-component.sh kube-apiserver
#   DERM_CLUSTER_DIR  run dir (default /tmp/derm-cluster)
#   DERM_STOP_TIMEOUT seconds to wait after SIGTERM before SIGKILL (default 15)
set -euo pipefail

NAME="${1:?usage: restart-component.sh NAME (etcd, kube-apiserver, kube-controller-manager, kube-scheduler)}"
RUN="${DERM_CLUSTER_DIR:-/tmp/derm-cluster}"
STOP_TIMEOUT="${DERM_STOP_TIMEOUT:-15}"
PID_FILE="$RUN/pids/$NAME.pid"
CMD_FILE="$RUN/pids/$NAME.cmd"
[[ -f "$PID_FILE" && -f "$CMD_FILE" ]] || { echo "no $PID_FILE or $CMD_FILE: not started by cluster-up.sh" >&2; exit 1; }

pid="$(cat "$PID_FILE")"
if kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  deadline=$((SECONDS + STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null && [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]]; do
    if ((SECONDS >= deadline)); then kill -KILL "$pid" 2>/dev/null || true; fi
    sleep 0.2
  done
fi
mapfile -d '' cmd <"$CMD_FILE"
setsid "${cmd[@]}" >>"$RUN/logs/$NAME.log" 2>&1 </dev/null &
echo $! >"$PID_FILE"
echo "restarted $NAME (pid $!)"
