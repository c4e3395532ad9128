#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Packs the node's local images as OCI archives (nothing can be pulled here):
#   pause    the sandbox image: Kubernetes' own build/pause/linux/pause.c (from the
#            k8s.io/kubernetes module the control plane is built from), gcc -static
#   busybox  Debian's busybox-static (sh, wget, nslookup, ...) for smoke-test pods
# Packed by oci.sh (reproducible digests). Archives are cached by version in
# <cache>/images/; a rerun is a no-op. (The Octopus Server images: octopus-images.sh.)
#
# Usage: node-images.sh           build what is missing, print nothing on stdout
#        node-images.sh --check   exit 0 when every archive is cached
#        node-images.sh --list    print "NAME ARCHIVE" per image
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${OCTOPUS_OPERATOR_CACHE:-$HOME/.cache/octopus-operator}
images="$cache/images"

pause_tag=$(sed -n 's/^TAG ?= //p' "$(go env GOMODCACHE 2>/dev/null)/k8s.io/kubernetes@$K8S_VERSION/build/pause/Makefile" 2>/dev/null || true)
pause_tag=${pause_tag:-3.10.2}
busybox_deb=$(dpkg-query -W -f '${Version}' busybox-static 2>/dev/null || true)
busybox_tag=${busybox_deb#*:}
busybox_tag=${busybox_tag//[^A-Za-z0-9._-]/_}

# Image references the node uses (containerd's sandbox_image, the smoke test's pod).
PAUSE_IMAGE="octopus-operator.local/pause:$pause_tag"
BUSYBOX_IMAGE="octopus-operator.local/busybox:${busybox_tag:-missing}"
pause_tar="$images/pause-$pause_tag-$K8S_VERSION.tar"
busybox_tar="$images/busybox-${busybox_tag:-missing}.tar"

case ${1:-} in
  --check) [[ -f $pause_tar && -f $busybox_tar ]]; exit ;;
  --list) printf '%s %s\n' "$PAUSE_IMAGE" "$pause_tar" "$BUSYBOX_IMAGE" "$busybox_tar"; exit ;;
  "") ;;
  *) echo "usage: $0 [--check|--list]" >&2; exit 2 ;;
esac

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
mkdir -p "$images"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# shellcheck source=oci.sh
source "$here/oci.sh"

if [[ ! -f $pause_tar ]]; then
  command -v gcc >/dev/null || { echo "$0: gcc is not installed (apt: gcc libc6-dev)" >&2; exit 1; }
  [[ -n $(go env GOMODCACHE 2>/dev/null) ]] || { echo "$0: go is not installed" >&2; exit 1; }
  pause_c="$(go env GOMODCACHE)/k8s.io/kubernetes@$K8S_VERSION/build/pause/linux/pause.c"
  [[ -f $pause_c ]] || GOTOOLCHAIN=local GOFLAGS=-mod=mod go mod download "k8s.io/kubernetes@$K8S_VERSION"
  mkdir -p "$work/pause"
  gcc -Os -static -Wall -Werror -DVERSION="v$pause_tag-octopus" -o "$work/pause/pause" "$pause_c"
  strip "$work/pause/pause"
  pack "$PAUSE_IMAGE" "$pause_tar" "$work/pause" '["/pause"]'
fi

if [[ ! -f $busybox_tar ]]; then
  [[ -x /bin/busybox && -n $busybox_deb ]] || { echo "$0: busybox-static is not installed" >&2; exit 1; }
  busybox_rootfs "$work/busybox"
  pack "$BUSYBOX_IMAGE" "$busybox_tar" "$work/busybox" '["/bin/sh"]'
fi
