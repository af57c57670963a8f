#!/usr/bin/env bash
# Build (cached), start a cluster in its own run dir, run hack/smoke-test.sh and
# hack/probe-aggregation.sh, stop it. Keeps the run dir (logs) when something failed.
#   DERM_CLUSTER_DIR  run dir (default /tmp/derm-probe-$$, so it never touches a running
#                     /tmp/derm-cluster)
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export DERM_CLUSTER_DIR="${DERM_CLUSTER_DIR:-/tmp/derm-probe-$$}"

"$HACK_DIR/cluster-up.sh" >/dev/null
rc=0
"$HACK_DIR/smoke-test.sh" || rc=1
"$HACK_DIR/probe-aggregation.sh" || rc=1
if [[ $rc == 0 ]]; then
  "$HACK_DIR/cluster-down.sh"
else
  KEEP_LOGS=1 "$HACK_DIR/cluster-down.sh"
  echo "probe failed; logs in $DERM_CLUSTER_DIR/logs" >&2
fi
exit "$rc"
