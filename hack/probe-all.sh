#!/usr/bin/env bash
# Build (cached), start a cluster in its own run dir, run hack/smoke-test.sh,
# hack/probe-aggregation.sh, hack/e2e-adapter.sh (builds derm-adapter), hack/e2e-auth.sh,
# hack/e2e-demo.sh, hack/e2e-controller.sh, hack/e2e-extender.sh (builds derm-extender), hack/e2e-manifests.sh
# (builds derm too) and hack/check-chart.sh (builds helm), stop it. Keeps the run dir (logs)
# when something failed. Prints each step's wall time.
#   DERM_CLUSTER_DIR  run dir (default /tmp/derm-probe-$$, so it never touches a running
#                     /tmp/derm-cluster)
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export DERM_CLUSTER_DIR="${DERM_CLUSTER_DIR:-/tmp/derm-probe-$$}"
# The extender must outweigh kube-scheduler's default spreading for e2e-extender.sh to see it decide.
export DERM_EXTENDER_WEIGHT="${DERM_EXTENDER_WEIGHT:-5}"

timed() { # command...: runs it, prints its wall time, records a failure in rc
  local t0=$SECONDS
  "$@" || rc=1
  echo "== ${1##*/}: $((SECONDS - t0))s"
}
rc=0
t_up=$SECONDS
"$HACK_DIR/cluster-up.sh" >/dev/null
echo "== cluster-up.sh: $((SECONDS - t_up))s"
timed "$HACK_DIR/smoke-test.sh"
timed "$HACK_DIR/probe-aggregation.sh"
timed "$HACK_DIR/e2e-adapter.sh"
timed "$HACK_DIR/e2e-auth.sh"
DERM_KUBECTL="$(. "$DERM_CLUSTER_DIR/env" && echo "$DERM_KUBECTL")" timed "$HACK_DIR/e2e-demo.sh"
timed "$HACK_DIR/e2e-controller.sh"
timed "$HACK_DIR/e2e-extender.sh"
timed "$HACK_DIR/e2e-manifests.sh"
timed "$HACK_DIR/check-chart.sh"
if [[ $rc == 0 ]]; then
  "$HACK_DIR/cluster-down.sh"
else
  KEEP_LOGS=1 "$HACK_DIR/cluster-down.sh"
  echo "probe failed; logs in $DERM_CLUSTER_DIR/logs (adapter: $DERM_CLUSTER_DIR/e2e-adapter)" >&2
fi
exit "$rc"
