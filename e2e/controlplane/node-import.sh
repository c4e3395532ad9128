#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Imports OCI image archives into the real node's containerd (namespace k8s.io, where
# kubelet looks), since nothing can be pulled: e.g. the operator image `make image` builds,
#   e2e/controlplane/node-import.sh target/image/octopus-operator-0.1.0.tar
# The image keeps the name in its archive (docker.io/library/octopus-operator:0.1.0 for
# `octopus-operator:0.1.0`); pods use it with imagePullPolicy IfNotPresent or Never.
# Re-importing the same archive is a no-op for containerd. Prints one line per image.
#
# Env: lib.sh's (OCTOPUS_OPERATOR_CLUSTER or OCTOPUS_OPERATOR_RUN_DIR pick the control plane).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

(($# > 0)) || { echo "usage: $0 ARCHIVE..." >&2; exit 2; }
command -v ctr >/dev/null || die "ctr is not installed (apt: containerd)"
node_load || die "no node in $run: start the control plane as root (OCTOPUS_OPERATOR_NODE=1)"
socket="$node_dir/containerd/containerd.sock"
[[ -S $socket ]] || die "the node's containerd is not running ($socket)"
for archive; do
  [[ -f $archive ]] || die "no such archive: $archive"
  ctr --address "$socket" -n k8s.io images import --all-platforms "$archive" >&2 ||
    die "cannot import $archive"
  echo "imported $archive"
done
