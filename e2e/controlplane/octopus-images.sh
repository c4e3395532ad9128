#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The Octopus Server images of the real node: the twin's node process (e2e/twin-node, a
# static musl binary) with Debian's busybox-static (`sh` for the probes) and the node
# binary linked as `/usr/bin/curl` (the probes' curl flags), tagged as the Octopus image
# the operator asks for, docker.io/octopusdeploy/octopusdeploy:<tag>, one archive per tag.
# Each tag's image carries its version in its env (OCTOPUS_TWIN_VERSION): a container
# cannot see its tag. Built without a container daemon (oci.sh packs them), reproducibly
# (paths remapped, fixed mtimes and owners), cached in <cache>/images/ under a key of the
# node's sources, this script and oci.sh, Cargo.lock, rustc and busybox versions (older
# keys' archives are removed): a rerun is a no-op.
#
# Usage: octopus-images.sh            build what is missing, print nothing on stdout
#        octopus-images.sh --list     print "NAME ARCHIVE" per tag
#        octopus-images.sh --import   build what is missing, import every tag into the
#                                     containerd of this control plane's node
# Tags: OCTOPUS_TWIN_TAGS in versions.env. Env: lib.sh's (which control plane).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"
# shellcheck source=../../operator/image/versions.env
source "$root/operator/image/versions.env"
tags=$OCTOPUS_TWIN_TAGS
images="$cache/images"
repository=docker.io/octopusdeploy/octopusdeploy

busybox_deb=$(dpkg-query -W -f '${Version}' busybox-static 2>/dev/null || true)
[[ -x /bin/busybox && -n $busybox_deb ]] || die "busybox-static is not installed (apt: busybox-static)"
key=$(
  cd "$root"
  { cat Cargo.lock e2e/twin-node/Cargo.toml e2e/twin-node/src/*.rs "$here/oci.sh" "$here/octopus-images.sh"
    rustc --version; echo "$busybox_deb $IMAGE_RUST_TARGET"; } | sha256sum | cut -c1-12
)
archive_of() { echo "$images/octopus-twin-$key-$1.tar"; }

mode=${1:-}
case $mode in
  --list) for tag in $tags; do echo "$repository:$tag $(archive_of "$tag")"; done; exit ;;
  "" | --import) ;;
  *) echo "usage: $0 [--list|--import]" >&2; exit 2 ;;
esac

# One build at a time (tests may import concurrently).
mkdir -p "$images"
exec 7>"$images/.octopus-images.lock"
flock -w 900 7 || die "timed out waiting for $images/.octopus-images.lock"
missing=()
for tag in $tags; do [[ -f $(archive_of "$tag") ]] || missing+=("$tag"); done
if ((${#missing[@]})); then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # shellcheck source=oci.sh
  source "$here/oci.sh"
  started=$(date +%s)
  log "cargo build --release --target $IMAGE_RUST_TARGET -p octopus-twin-node (key $key)"
  cargo_home=${CARGO_HOME:-$HOME/.cargo}
  target_var=CARGO_TARGET_$(tr 'a-z-' 'A-Z_' <<<"$IMAGE_RUST_TARGET")_RUSTFLAGS
  (
    cd "$root"
    export "$target_var=--remap-path-prefix=$root=/src --remap-path-prefix=$cargo_home=/cargo"
    export CARGO_PROFILE_RELEASE_STRIP=symbols
    cargo build --release --locked --target "$IMAGE_RUST_TARGET" -p octopus-twin-node >&2
  )
  target=${CARGO_TARGET_DIR:-$root/target}
  rootfs="$work/rootfs"
  busybox_rootfs "$rootfs"
  mkdir -p "$rootfs/usr/local/bin" "$rootfs/usr/bin"
  install -m 0755 "$target/$IMAGE_RUST_TARGET/release/octopus-twin-node" "$rootfs/usr/local/bin/"
  ln -s ../local/bin/octopus-twin-node "$rootfs/usr/bin/curl"
  for tag in "${missing[@]}"; do
    pack "$repository:$tag" "$(archive_of "$tag")" "$rootfs" '["/usr/local/bin/octopus-twin-node"]' \
      "[\"PATH=/usr/local/bin:/usr/bin:/bin\",\"OCTOPUS_TWIN_VERSION=$tag\"]"
  done
  log "Octopus node images built in $(($(date +%s) - started)) s"
  # Archives of other keys are stale: the disk is shared.
  for old in "$images"/octopus-twin-*.tar; do
    [[ $old == "$images/octopus-twin-$key-"* ]] || rm -f "$old"
  done
fi

if [[ $mode == --import ]]; then
  archives=()
  for tag in $tags; do archives+=("$(archive_of "$tag")"); done
  "$here/node-import.sh" "${archives[@]}" >/dev/null
  log "imported $repository:{${tags// /,}} into the node's containerd"
fi
