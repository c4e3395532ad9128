#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Restarts only the kube-apiserver of a running control plane (up.sh), etcd and the rest
# kept: SIGTERM (a graceful stop, as a rolling control-plane upgrade does), DOWN_SECONDS
# with no API server, then the same binary with the same flags, which it reads from the
# running process, until /readyz answers. Clients keep their kubeconfig (same port, same
# certificates) and must reconnect by themselves. For `make trials`: run it only on a
# control plane no other test uses (OCTOPUS_OPERATOR_CLUSTER names it).
#
# Usage: e2e/controlplane/restart-apiserver.sh [DOWN_SECONDS]   (default 0)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

down=${1:-0}
[[ $down =~ ^[0-9]+([.][0-9]+)?$ ]] || die "DOWN_SECONDS must be a number, not '$down'"

take_lock
[[ -f "$run/state.env" ]] || die "no control plane in $run (up.sh starts one)"
# shellcheck source=/dev/null
source "$run/state.env"
pid=$(pid_of kube-apiserver) || die "kube-apiserver of $run is not running"
mapfile -d '' args <"/proc/$pid/cmdline"
((${#args[@]} > 1)) || die "cannot read the command line of kube-apiserver (pid $pid)"

log "stopping kube-apiserver (pid $pid)"
stop_pid "$pid"
sleep "$down"
# As up.sh starts it: own session, no inherited lock fd; the log is appended to.
setsid "${args[@]}" </dev/null >>"$run/logs/kube-apiserver.log" 2>&1 9>&- &
echo $! >"$run/kube-apiserver.pid"

pki="$run/pki"
for ((i = 0; i < 1200; i++)); do
  if [[ $(curl --silent --max-time 2 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "https://$APISERVER_HOST:$APISERVER_PORT/readyz" 2>/dev/null) == ok ]]; then
    log "kube-apiserver ready again (pid $(cat "$run/kube-apiserver.pid"))"
    exit 0
  fi
  pid_of kube-apiserver >/dev/null || die "kube-apiserver exited after the restart; see $run/logs/kube-apiserver.log"
  sleep 0.1
done
die "kube-apiserver not ready within 120 s of the restart"
