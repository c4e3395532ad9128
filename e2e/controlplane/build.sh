#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Builds kube-apiserver, kube-controller-manager and etcd — and for the node kubelet,
# kube-scheduler, kube-proxy, CoreDNS, the CNI plugins and the pause and busybox images —
# from the official release Go modules and Debian packages (no prebuilt binaries: only
# the package registries are reachable).
#
# A wrapper module requires k8s.io/kubernetes at the pinned release and replaces every
# k8s.io staging module that release lists at v0.0.0 with the matching v0.Y.Z; etcd comes
# from the same module graph at the version Kubernetes pins. Binaries are cached in a
# version-keyed directory outside the clone; a rebuild happens only when the pin changes.
# Each binary is built on its own and written atomically, so an interrupted build resumes
# (Go's build cache keeps the packages already compiled). Progress goes to stdout.
# CoreDNS and the CNI plugins come from their own pinned modules (versions.env), each in
# its own version-keyed directory; the images are OCI archives packed here (node-images.sh).
#
# Usage: build.sh [--check]   (--check: exit 0 when everything is cached, build nothing)
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

k8s_binaries=(etcd kube-apiserver kube-controller-manager kubelet kube-scheduler kube-proxy)
cni_plugins=(bridge host-local loopback portmap)
cni_bin="$cache/cni-plugins-$CNI_PLUGINS_VERSION/bin"
coredns_bin="$cache/coredns-$COREDNS_VERSION/bin"
# CoreDNS with only the plugins a cluster.local resolver needs (the stock binary links
# every cloud provider's SDK). Nothing is forwarded: names outside the cluster fail.
coredns_main() {
  printf '// CoreDNS with the plugins the local cluster resolver uses.\npackage main\n\nimport (\n'
  printf '\t_ "github.com/coredns/coredns/core/dnsserver"\n\t"github.com/coredns/coredns/coremain"\n'
  # shellcheck disable=SC2086 # one plugin per word
  printf '\t_ "github.com/coredns/coredns/plugin/%s"\n' $COREDNS_PLUGINS
  printf ')\n\nfunc main() { coremain.Run() }\n'
}
have_all() {
  local b
  for b in "${k8s_binaries[@]}"; do [[ -x "$bin/$b" ]] || return 1; done
  for b in "${cni_plugins[@]}"; do [[ -x "$cni_bin/$b" ]] || return 1; done
  [[ -x "$coredns_bin/coredns" && "$(coredns_main)" == "$(cat "$cache/coredns-$COREDNS_VERSION/src/main.go" 2>/dev/null)" ]] &&
    "$here/node-images.sh" --check
}
[[ ${1:-} != --check ]] || { have_all; exit; }
if have_all; then
  echo "control plane and node $K8S_VERSION: cached in $cache"
  exit 0
fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
command -v go >/dev/null || { echo "build.sh: go is not installed" >&2; exit 1; }
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
started=$(date +%s)

minor=${K8S_VERSION#v1.}
staging="v0.${minor}" # v1.37.2 -> v0.37.2

# The packages the wrapper module builds; a cache made for a shorter list is re-tidied.
tools_go() {
  printf '//go:build tools\n\npackage tools\n\nimport (\n'
  printf '\t_ "%s"\n' go.etcd.io/etcd/server/v3 k8s.io/kubernetes/cmd/{kube-apiserver,kube-controller-manager,kubelet,kube-scheduler,kube-proxy}
  printf ')\n'
}
if [[ -f "$src/go.mod" && "$(tools_go)" != "$(cat "$src/tools.go" 2>/dev/null)" ]]; then
  tools_go >"$src/tools.go.new"
  mv "$src/tools.go.new" "$src/tools.go"
  rm -f "$src/go.sum"
fi

if [[ ! -f "$src/go.mod" ]]; then
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
  tools_go >"$src/tools.go"
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

# build NAME PKG [SRC BIN LDFLAGS]: go build PKG in module SRC into BIN/NAME, atomically
# (defaults: the Kubernetes wrapper module, its bin/ and the version ldflags).
build() {
  local name=$1 pkg=$2 from=${3:-$src} to=${4:-$bin} flags=${5:-$ldflags} t0
  if [[ -x "$to/$name" ]]; then
    log "$name: cached"
    return
  fi
  t0=$(date +%s)
  log "building $name ($pkg)"
  (cd "$from" && go build -v -trimpath -tags selinux,notest -ldflags "$flags" -o "$to/$name.tmp" "$pkg" 2>&1) |
    progress "$name"
  mv "$to/$name.tmp" "$to/$name"
  log "$name: done in $(($(date +%s) - t0))s"
}

build etcd go.etcd.io/etcd/server/v3
for b in kube-apiserver kube-controller-manager kubelet kube-scheduler kube-proxy; do
  build "$b" "k8s.io/kubernetes/cmd/$b"
done
for b in kube-apiserver kube-controller-manager kubelet kube-scheduler kube-proxy; do
  v=$("$bin/$b" --version)
  [[ $v == "Kubernetes $K8S_VERSION" ]] || { echo "build.sh: $b reports '$v', expected $K8S_VERSION" >&2; exit 1; }
done

# wrapper_module DIR MODULE VERSION: DIR/src becomes a module requiring MODULE@VERSION
# (these modules have no replace directives), tidied once.
wrapper_module() {
  local dir=$1 module=$2 version=$3
  [[ -f "$dir/src/go.sum" ]] && return
  printf 'module octopus-operator.local/%s\n\ngo %s\n\nrequire %s %s\n' \
    "${dir##*/}" "$have" "$module" "$version" >"$dir/src/go.mod"
  log "go mod tidy for $module@$version"
  (cd "$dir/src" && go mod tidy)
}

# CNI plugins: bridge with host-local addresses, loopback and portmap.
cni_dir="$cache/cni-plugins-$CNI_PLUGINS_VERSION"
mkdir -p "$cni_dir/src" "$cni_bin"
cni_pkgs=(main/bridge ipam/host-local main/loopback meta/portmap)
{
  printf '//go:build tools\n\npackage tools\n\nimport (\n'
  printf '\t_ "github.com/containernetworking/plugins/plugins/%s"\n' "${cni_pkgs[@]}"
  printf ')\n'
} >"$cni_dir/src/tools.go"
wrapper_module "$cni_dir" github.com/containernetworking/plugins "$CNI_PLUGINS_VERSION"
for p in "${cni_pkgs[@]}"; do
  build "${p#*/}" "github.com/containernetworking/plugins/plugins/$p" "$cni_dir/src" "$cni_bin" "-s -w"
done

# CoreDNS (coredns_main above).
coredns_dir="$cache/coredns-$COREDNS_VERSION"
mkdir -p "$coredns_dir/src" "$coredns_bin"
# A different plugin set is a different binary.
if [[ "$(coredns_main)" != "$(cat "$coredns_dir/src/main.go" 2>/dev/null)" ]]; then
  coredns_main >"$coredns_dir/src/main.go"
  rm -f "$coredns_bin/coredns" "$coredns_dir/src/go.sum"
fi
wrapper_module "$coredns_dir" github.com/coredns/coredns "$COREDNS_VERSION"
build coredns . "$coredns_dir/src" "$coredns_bin" "-s -w"

# Images: the pause (sandbox) image from Kubernetes' own pause.c, and busybox.
"$here/node-images.sh"

have_all
log "control plane and node $K8S_VERSION built in $(($(date +%s) - started))s: $cache"
