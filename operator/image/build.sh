#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# `make image`: builds the octopus-operator OCI image without a container daemon or a
# registry: a static (musl) release binary and Mozilla's CA bundle (PyPI certifi, pinned
# by hash) in one layer, assembled by assemble.py into an OCI archive that
# `ctr -n k8s.io images import` and `docker load` accept. Prints assemble.py's summary
# (JSON: image, digest, archive, sizes) on stdout.
#
# Reproducible: SOURCE_DATE_EPOCH (default: the last commit's time) is the only time in
# the image; the binary is built with paths remapped, so two builds of one commit give the
# same digest (e2e/tests/image.rs checks the assembly; see operator/image/README.md).
#
# Usage: operator/image/build.sh [--binary PATH] [--output FILE]
#   --binary PATH   use this static binary instead of building it
#   --output FILE   default: target/image/octopus-operator-<version>.tar
# Env: OCTOPUS_OPERATOR_CACHE   cache root for the CA bundle (default ~/.cache/octopus-operator)
#      SOURCE_DATE_EPOCH         image creation time (default: the last commit's time)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${OCTOPUS_OPERATOR_CACHE:-$HOME/.cache/octopus-operator}
log() { printf '[%s] image: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

binary="" output=""
while (($#)); do
  case $1 in
    --binary) binary=$2; shift 2 ;;
    --output) output=$2; shift 2 ;;
    *) echo "usage: $0 [--binary PATH] [--output FILE]" >&2; exit 2 ;;
  esac
done

# Version and source URL from the workspace manifest ([workspace.package]).
version=$(awk -F'"' '/^\[workspace.package\]/ { p = 1 } p && /^version *=/ { print $2; exit }' "$root/Cargo.toml")
source_url=$(awk -F'"' '/^\[workspace.package\]/ { p = 1 } p && /^repository *=/ { print $2; exit }' "$root/Cargo.toml")
[[ -n "$version" ]] || { echo "$0: no version in Cargo.toml [workspace.package]" >&2; exit 1; }
revision=""
if git -C "$root" rev-parse --verify -q HEAD >/dev/null 2>&1; then
  revision=$(git -C "$root" rev-parse HEAD)
  [[ -z $(git -C "$root" status --porcelain --untracked-files=no) ]] || revision="$revision-dirty"
  : "${SOURCE_DATE_EPOCH:=$(git -C "$root" log -1 --format=%ct)}"
fi
: "${SOURCE_DATE_EPOCH:?not a git checkout: set SOURCE_DATE_EPOCH}"
output=${output:-$root/target/image/octopus-operator-$version.tar}

if [[ -z "$binary" ]]; then
  log "cargo build --release --target $IMAGE_RUST_TARGET (revision ${revision:-unknown})"
  # Paths remapped: the binary must not depend on where the checkout or the cargo home is.
  cargo_home=${CARGO_HOME:-$HOME/.cargo}
  target_var=CARGO_TARGET_$(tr 'a-z-' 'A-Z_' <<<"$IMAGE_RUST_TARGET")_RUSTFLAGS
  (
    cd "$root"
    export "$target_var=--remap-path-prefix=$root=/src --remap-path-prefix=$cargo_home=/cargo"
    export CARGO_PROFILE_RELEASE_STRIP=symbols
    export OCTOPUS_OPERATOR_REVISION="$revision"
    cargo build --release --locked --target "$IMAGE_RUST_TARGET" \
      -p octopus-operator --bin octopus-operator >&2
  )
  binary=$root/target/$IMAGE_RUST_TARGET/release/octopus-operator
fi

# Mozilla's CA bundle from the pinned certifi wheel, once per version.
ca_dir="$cache/tools/certifi-$CERTIFI_VERSION"
if [[ ! -s "$ca_dir/cacert.pem" ]]; then
  log "downloading certifi==$CERTIFI_VERSION"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: --disable-pip-version-check \
    -d "$work" "certifi==$CERTIFI_VERSION"
  python3 - "$work" "$CERTIFI_WHEEL_SHA256" <<'PY'
import glob, hashlib, os, sys, zipfile
work, want = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(work, "certifi-*.whl"))
got = hashlib.sha256(open(wheel, "rb").read()).hexdigest()
if got != want:
    sys.exit(f"{os.path.basename(wheel)}: sha256 {got}, versions.env pins {want}")
with zipfile.ZipFile(wheel) as z:
    open(os.path.join(work, "cacert.pem"), "wb").write(z.read("certifi/cacert.pem"))
PY
  mkdir -p "$ca_dir"
  mv "$work/cacert.pem" "$ca_dir/cacert.pem"
fi

mkdir -p "$(dirname "$output")"
log "assembling $output"
python3 "$here/assemble.py" --binary "$binary" --ca-bundle "$ca_dir/cacert.pem" \
  --name octopus-operator --version "$version" --revision "$revision" \
  --source "$source_url" --epoch "$SOURCE_DATE_EPOCH" --output "$output"
