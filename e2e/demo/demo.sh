#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# `make demo`: a live upgrade of a 3-node Octopus cluster on the local control plane and
# its real node, run like production: the operator installed by its Helm chart from its
# own image, the Octopus Server nodes as pods of the node images, the backup Job as a pod.
# Finds the control plane, kubectl and helm; builds the binaries; builds (`make image`)
# and imports into the node's containerd the operator image and the Octopus Server
# images (nothing is pulled); then runs octopus-demo (e2e/src/bin/octopus-demo/), which
# says what it does and shows the kubectl and helm commands.
#
# Needs the real node (as root `make cluster-up` starts it; see README "The real node").
# Env: DEMO_KUBECONFIG (default: what e2e/controlplane/up.sh starts or reuses),
# KUBECTL / HELM (default: e2e/tools/install-*.sh's), DEMO_TWIN_BIN (default: built
# here); the rest (DEMO_NAMESPACE, DEMO_NONINTERACTIVE=1, DEMO_STAGE_TIMEOUT,
# DEMO_RUN_DIR, DEMO_KEEP_RUN_DIR=1) is read by octopus-demo --help.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
DEMO_KUBECONFIG=${DEMO_KUBECONFIG:-$("$root/e2e/controlplane/up.sh")}
KUBECTL=${KUBECTL:-$("$root/e2e/tools/install-kubectl.sh")}
HELM=${HELM:-$("$root/e2e/tools/install-helm.sh")}
# The scripts below act on the node of this kubeconfig's control plane.
export OCTOPUS_OPERATOR_RUN_DIR
OCTOPUS_OPERATOR_RUN_DIR=$(dirname "$DEMO_KUBECONFIG")
# shellcheck source=../controlplane/lib.sh
source "$root/e2e/controlplane/lib.sh"
node_load || die "the control plane in $run has no real node: run as root (OCTOPUS_OPERATOR_NODE=1 make cluster-up)"

(cd "$root" && "${CARGO:-cargo}" build --quiet -p octopus-e2e --bin octopus-twin --bin octopus-demo)
bin=${CARGO_TARGET_DIR:-$root/target}/debug

# The images' static binaries need the musl target (as .ci/run installs it).
target=$(sed -n 's/^IMAGE_RUST_TARGET=//p' "$root/operator/image/versions.env")
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$target"; then
  rustup target add "$target"
fi
log "make image: the operator's image (a no-op when built), into the node's containerd"
summary=$("$root/operator/image/build.sh" | tail -1)
archive=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["archive"])' "$summary")
DEMO_OPERATOR_IMAGE=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["image"])' "$summary")
"$root/e2e/controlplane/node-import.sh" "$archive" >/dev/null
log "the Octopus Server images ($OCTOPUS_TWIN_TAGS), into the node's containerd"
"$root/e2e/controlplane/octopus-images.sh" --import

export DEMO_KUBECONFIG KUBECTL HELM DEMO_OPERATOR_IMAGE
# The shared database listens where the pods reach the host: its end of the node's veth.
# shellcheck disable=SC2154 # node_load sets host_ip
export DEMO_DATABASE_HOST=$host_ip
export DEMO_TWIN_BIN=${DEMO_TWIN_BIN:-$bin/octopus-twin}
exec "$bin/octopus-demo" "$@"
