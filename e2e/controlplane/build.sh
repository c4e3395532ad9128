#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Builds kube-apiserver, kube-controller-manager and etcd from the official Kubernetes
# release Go modules (no prebuilt binaries: only the Go module proxy is reachable).
#
# A wrapper module requires k8s.io/kubernetes at the pinned release and replaces every
# k8s.io staging module that release lists at v0.0.0 with the matching v0.Y.Z; etcd comes
# from the same module graph at the version Kubernetes pins. Binaries are cached in a
# version-keyed directory outside the clone; a rebuild happens only when the pin changes.
# Each binary is built on its own and written atomically, so an interrupted build resumes
# (Go's build cache keeps the packages already compiled). Progress goes to stdout.
#
# Env: OCTOPUS_OPERATOR_CACHE   cache root (default ~/.cache/octopus-operator)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache=${OCTOPUS_OPERATOR_CACHE:-$HOME/.cache/octopus-operator}
dir="$cache/kubernetes-$K8S_VERSION"
bin="$dir/bin"
src="$dir/src"
mkdir -p "$bin" "$src"

have_all() {
  [[ -x "$bin/kube-apiserver" && -x "$bin/kube-controller-manager" && -x "$bin/etcd" ]]
}
if have_all; then
  echo "control plane $K8S_VERSION: cached in $bin"
  exit 0
fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
command -v go >/dev/null || { echo "build.sh: go is not installed" >&2; exit 1; }
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
started=$(date +%s)

minor=${K8S_VERSION#v1.}
staging="v0.${minor}" # v1.37.2 -> v0.37.2

if [[ ! -f "$src/go.sum" ]]; then
  log "resolving k8s.io/kubernetes@$K8S_VERSION"
  kmod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [[ -f "$kmod" ]] || { echo "build.sh: no go.mod for k8s.io/kubernetes@$K8S_VERSION" >&2; exit 1; }
  goline=$(grep -m1 '^go ' "$kmod")
  {
    echo "module octopus-operator.local/controlplane"
    echo
    echo "$goline"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    # Every staging module the release requires at v0.0.0 gets the published v0.Y.Z.
    grep -E '^\s*k8s\.io/[A-Za-z0-9._-]+ v0\.0\.0(\s|$)' "$kmod" | awk '{print $1}' | sort -u |
      while read -r m; do echo "	$m => $m $staging"; done
    echo ")"
  } >"$src/go.mod.new"
  mv "$src/go.mod.new" "$src/go.mod"
  rm -f "$src/go.sum"
  cat >"$src/tools.go" <<'EOF'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
EOF
fi

# GOTOOLCHAIN=local: the machine's Go must satisfy the release's go line (no toolchain
# download behind our back).
need=$(sed -n 's/^go //p' "$src/go.mod")
have=$(go env GOVERSION)
have=${have#go}
if [[ $(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1) != "$need" ]]; then
  echo "build.sh: Kubernetes $K8S_VERSION needs Go >= $need; this machine has $have" >&2
  exit 1
fi

if [[ ! -f "$src/go.sum" ]]; then
  log "go mod tidy (downloads ~1 GB of modules on a cold cache)"
  (cd "$src" && go mod tidy)
fi

ver_pkg() {
  local major=1 gminor=${minor%%.*}
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    printf -- '-X %s.gitVersion=%s -X %s.gitMajor=%s -X %s.gitMinor=%s -X %s.gitTreeState=clean ' \
      "$p" "$K8S_VERSION" "$p" "$major" "$p" "$gminor" "$p"
  done
}
ldflags="-s -w $(ver_pkg)"

# progress NAME: go build -v names each package it compiles; count them, pass the rest
# (compiler errors) through.
progress() {
  local n=0 line
  while IFS= read -r line; do
    if [[ $line =~ ^[A-Za-z0-9._~/-]+$ ]]; then
      n=$((n + 1))
      ((n % 250)) || log "$1: $n packages compiled"
    else
      printf '%s\n' "$line" >&2
    fi
  done
}

build() {
  local name=$1 pkg=$2 t0
  if [[ -x "$bin/$name" ]]; then
    log "$name: cached"
    return
  fi
  t0=$(date +%s)
  log "building $name ($pkg)"
  (cd "$src" && go build -v -trimpath -tags selinux,notest -ldflags "$ldflags" -o "$bin/$name.tmp" "$pkg" 2>&1) |
    progress "$name"
  mv "$bin/$name.tmp" "$bin/$name"
  log "$name: done in $(($(date +%s) - t0))s"
}

build etcd go.etcd.io/etcd/server/v3
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
for b in kube-apiserver kube-controller-manager; do
  v=$("$bin/$b" --version)
  [[ $v == "Kubernetes $K8S_VERSION" ]] || { echo "build.sh: $b reports '$v', expected $K8S_VERSION" >&2; exit 1; }
done
have_all
log "control plane $K8S_VERSION built in $(($(date +%s) - started))s: $bin"
