#!/usr/bin/env bash
# Builds the argocd-health runner (main.go: Argo CD health.lua test cases evaluated by Argo
# CD's own util/lua) and prints its path. The binary is cached under a directory keyed by
# the argo-cd version and a hash of this module's sources, so a second run is a no-op; the
# first one downloads the modules from the Go module proxy and compiles for a few minutes.
#
# Env: OCTOPUS_OPERATOR_CACHE   cache root (default ~/.cache/octopus-operator)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${OCTOPUS_OPERATOR_CACHE:-$HOME/.cache/octopus-operator}
argocd=$(awk '$1 == "github.com/argoproj/argo-cd/v3" { print $2; exit }' "$here/go.mod")
key=$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" | sha256sum | cut -c1-12)
dir="$cache/tools/argocd-health-$argocd-$key"
if [[ -x "$dir/argocd-health" ]]; then
  echo "$dir/argocd-health"
  exit 0
fi
command -v go >/dev/null || { echo "$0: go is not installed" >&2; exit 1; }
start=$(date +%s)
printf '[%s] building argocd-health (argo-cd %s), first time: minutes\n' "$(date +%H:%M:%S)" "$argocd" >&2
mkdir -p "$dir"
(cd "$here" && GOFLAGS=-mod=readonly go build -trimpath -o "$dir/argocd-health.tmp" .)
mv "$dir/argocd-health.tmp" "$dir/argocd-health"
printf '[%s] built %s in %ss\n' "$(date +%H:%M:%S)" "$dir/argocd-health" "$(($(date +%s) - start))" >&2
echo "$dir/argocd-health"
