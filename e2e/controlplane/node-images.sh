#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Packs the node's local images as OCI archives (nothing can be pulled here):
#   pause    the sandbox image: Kubernetes' own build/pause/linux/pause.c (from the
#            k8s.io/kubernetes module the control plane is built from), gcc -static
#   busybox  Debian's busybox-static (sh, wget, nslookup, ...) for smoke-test pods
# Each archive holds one uncompressed layer written with fixed owners and mtimes, so the
# same inputs give the same digests. `ctr images import` reads the name from the
# io.containerd.image.name annotation. Archives are cached by version in
# <cache>/images/; a rerun is a no-op.
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

# blob FILE: stores FILE under blobs/sha256 of the layout being built; prints its digest.
blob() {
  local d
  d=$(sha256sum "$1" | cut -d' ' -f1)
  mkdir -p "$work/oci/blobs/sha256"
  cp "$1" "$work/oci/blobs/sha256/$d"
  echo "$d"
}

# pack NAME ARCHIVE ROOTFS ENTRYPOINT_JSON: one-layer OCI image archive of ROOTFS.
pack() {
  local name=$1 archive=$2 rootfs=$3 entrypoint=$4 layer config manifest
  rm -rf "$work/oci"
  mkdir -p "$work/oci"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$rootfs" -cf "$work/layer.tar" .
  layer=$(blob "$work/layer.tar")
  printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":%s,"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$entrypoint" "$layer" >"$work/config.json"
  config=$(blob "$work/config.json")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%d}]}' \
    "$config" "$(stat -c %s "$work/config.json")" "$layer" "$(stat -c %s "$work/layer.tar")" >"$work/manifest.json"
  manifest=$(blob "$work/manifest.json")
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$manifest" "$(stat -c %s "$work/manifest.json")" "$name" "${name##*:}" >"$work/oci/index.json"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$work/oci/oci-layout"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/oci" -cf "$archive.tmp" .
  mv "$archive.tmp" "$archive"
  log "image $name: $archive (manifest sha256:$manifest)"
}

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
  mkdir -p "$work/busybox/bin" "$work/busybox/etc" "$work/busybox/tmp"
  cp /bin/busybox "$work/busybox/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [[ $applet == busybox ]] || ln -s busybox "$work/busybox/bin/$applet"
  done
  echo "root:x:0:0:root:/:/bin/sh" >"$work/busybox/etc/passwd"
  echo "root:x:0:" >"$work/busybox/etc/group"
  chmod 1777 "$work/busybox/tmp"
  pack "$BUSYBOX_IMAGE" "$busybox_tar" "$work/busybox" '["/bin/sh"]'
fi
