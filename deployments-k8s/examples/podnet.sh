#!/usr/bin/env bash
# podnet.sh NAMESPACE LABEL-SELECTOR COMMAND... runs COMMAND (ping, ip) on this machine inside the
# network namespace of the first pod the selector matches.
#
# vwire's images hold one program each and no ping, so `kubectl exec` has nothing to run; on the
# cluster of integration-tests (make cluster-up) every node shares this machine's process and
# cgroup view, so the pod's processes are found through its cgroup and entered with nsenter.
# On another cluster, use an image that has ping and `kubectl exec` instead.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 NAMESPACE LABEL-SELECTOR COMMAND..." >&2
  exit 2
fi
ns=$1 selector=$2
shift 2
uid=$(kubectl get pods -n "$ns" -l "$selector" -o jsonpath='{.items[0].metadata.uid}')
if [ -z "$uid" ]; then
  echo "$0: no pod in namespace $ns matches $selector" >&2
  exit 1
fi
pid=""
for dir in $(find /sys/fs/cgroup/pids /sys/fs/cgroup/unified -type d -name "pod$uid" 2>/dev/null); do
  procs=$(find "$dir" -name cgroup.procs -exec cat {} +)
  pid=${procs%%$'\n'*}
  [ -n "$pid" ] && break
done
if [ -z "$pid" ]; then
  echo "$0: pod $uid ($selector in $ns) has no process on this machine: is it on this cluster and running?" >&2
  exit 1
fi
exec nsenter -t "$pid" -n -- "$@"
