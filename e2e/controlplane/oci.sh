# shellcheck shell=bash disable=SC2154
# Packs a directory as a one-layer OCI image archive (sourced by node-images.sh and
# octopus-images.sh; nothing can be pulled, so every image of the node is built here).
# One uncompressed layer written with fixed owners and mtimes, so the same inputs give
# the same digests. `ctr images import` reads the name from the io.containerd.image.name
# annotation. Needs $work (a scratch directory) and log() from the caller (hence SC2154).

# blob FILE: stores FILE under blobs/sha256 of the layout being built; prints its digest.
blob() {
  local d
  d=$(sha256sum "$1" | cut -d' ' -f1)
  mkdir -p "$work/oci/blobs/sha256"
  cp "$1" "$work/oci/blobs/sha256/$d"
  echo "$d"
}

# pack NAME ARCHIVE ROOTFS ENTRYPOINT_JSON [ENV_JSON]: one-layer OCI image archive of
# ROOTFS (ENV_JSON default ["PATH=/bin"]).
pack() {
  local name=$1 archive=$2 rootfs=$3 entrypoint=$4 env=${5:-'["PATH=/bin"]'} layer config manifest
  rm -rf "$work/oci"
  mkdir -p "$work/oci"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$rootfs" -cf "$work/layer.tar" .
  layer=$(blob "$work/layer.tar")
  printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":%s,"Env":%s},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$entrypoint" "$env" "$layer" >"$work/config.json"
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

# busybox_rootfs DIR: Debian's busybox-static with a link per applet, /etc/passwd and
# /etc/group for root, and /tmp.
busybox_rootfs() {
  local applet
  mkdir -p "$1/bin" "$1/etc" "$1/tmp"
  cp /bin/busybox "$1/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [[ $applet == busybox ]] || ln -s busybox "$1/bin/$applet"
  done
  echo "root:x:0:0:root:/:/bin/sh" >"$1/etc/passwd"
  echo "root:x:0:" >"$1/etc/group"
  chmod 1777 "$1/tmp"
}
