#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Stops the control plane started by up.sh and removes its state (certificates, etcd
# data, kubeconfigs), keeping only logs/ for a post-mortem. Safe after a crash: pids are
# checked against the run directory before any signal, and processes whose pid files are
# lost are found by their command line. Running it with nothing up is a no-op.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

take_lock
stop_all
if [[ -d "$run" ]]; then
  find "$run" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} +
fi
log "control plane in $run is down"
