#!/usr/bin/env bash
# `make demo`: a live upgrade of a 3-node Octopus cluster on the local control plane.
# Finds the control plane and kubectl, builds the binaries, and runs octopus-demo
# (e2e/src/bin/octopus-demo/), which says what it does and shows the kubectl commands.
#
# Env: DEMO_KUBECONFIG (default: what e2e/controlplane/up.sh starts or reuses),
# KUBECTL (default: e2e/tools/install-kubectl.sh's), DEMO_TWIN_BIN / DEMO_OPERATOR_BIN
# (default: built here); the rest (DEMO_NAMESPACE, DEMO_NONINTERACTIVE=1,
# DEMO_STAGE_TIMEOUT, DEMO_RUN_DIR, DEMO_KEEP_RUN_DIR=1) is read by octopus-demo --help.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
DEMO_KUBECONFIG=${DEMO_KUBECONFIG:-$("$root/e2e/controlplane/up.sh")}
KUBECTL=${KUBECTL:-$("$root/e2e/tools/install-kubectl.sh")}
(cd "$root" && "${CARGO:-cargo}" build --quiet -p octopus-operator --bin octopus-operator \
  -p octopus-e2e --bin octopus-twin --bin octopus-demo)
bin=${CARGO_TARGET_DIR:-$root/target}/debug
export DEMO_KUBECONFIG KUBECTL
export DEMO_TWIN_BIN=${DEMO_TWIN_BIN:-$bin/octopus-twin}
export DEMO_OPERATOR_BIN=${DEMO_OPERATOR_BIN:-$bin/octopus-operator}
exec "$bin/octopus-demo" "$@"
