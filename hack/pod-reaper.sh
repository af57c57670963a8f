#!/usr/bin/env bash
# Plays the one kubelet duty a control plane without kubelets misses: confirming pod
# deletion. A pod bound to a node (spec.nodeName set) is deleted gracefully: the API server
# only sets deletionTimestamp and waits for the node's kubelet, so without kubelets such
# pods stay Terminating forever and so do namespace deletions. This watches pods and
# force-deletes (grace period 0) each bound pod once it is marked for deletion.
# Started by hack/cluster-up.sh (disable with DERM_POD_REAPER=0); needs KUBECONFIG.
set -uo pipefail

K="${DERM_KUBECTL:-kubectl}"
RUN="${DERM_CLUSTER_DIR:-/tmp/derm-cluster}"
# Ends by itself once the cluster is gone (run dir removed or API server pid file deleted).
while [[ -f "$RUN/pids/kube-apiserver.pid" ]]; do
  # A watch, not a poll: one line per pod event (the initial list included).
  "$K" get pods --all-namespaces --watch \
    -o jsonpath='{.metadata.namespace}{"|"}{.metadata.name}{"|"}{.metadata.deletionTimestamp}{"|"}{.spec.nodeName}{"\n"}' |
    while IFS='|' read -r ns name deleting node; do
      [[ -n "$deleting" && -n "$node" ]] || continue
      if "$K" -n "$ns" delete pod "$name" --grace-period=0 --force --wait=false >/dev/null 2>&1; then
        echo "$(date +%H:%M:%S) deleted pod $ns/$name (node $node)"
      fi
    done
  # The watch ends when the API server closes it (timeout, restart): start a new one.
  sleep 1
done
