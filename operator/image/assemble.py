#!/usr/bin/env python3
"""Assembles the octopus-operator OCI image from a static binary and a CA bundle.

Writes one uncompressed tar holding an OCI image layout (oci-layout, index.json,
blobs/sha256/...) plus a docker-style manifest.json, the format `docker save` writes since
Docker 25: `ctr -n k8s.io images import`, `docker load`, umoci and skopeo (oci-archive:)
read it. The image has one gzip layer:

  /usr/local/bin/octopus-operator      the binary, 0755
  /etc/ssl/certs/ca-certificates.crt   Mozilla's CA bundle, 0644 (for https Octopus URLs)

and runs as uid/gid 65532 (no /etc/passwd needed), entrypoint the binary, command `run`.

Reproducible: the bytes depend only on the inputs' contents and the arguments. Every tar
entry is sorted, owned by 0:0 with fixed modes and mtime = --epoch (SOURCE_DATE_EPOCH);
gzip carries no name and no time; JSON is written with sorted keys and no spaces.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
from datetime import datetime, timezone

BINARY_PATH = "usr/local/bin/octopus-operator"
CA_PATH = "etc/ssl/certs/ca-certificates.crt"
USER = "65532:65532"

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def canonical_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_bytes(entries, epoch):
    """A tar of `entries` ({path: (mode, bytes or None for a directory)}), sorted, with
    parent directories added, every header fixed."""
    paths = set(entries)
    for path in entries:
        parts = path.split("/")
        for i in range(1, len(parts)):
            paths.add("/".join(parts[:i]))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path in sorted(paths):
            mode, data = entries.get(path, (0o755, None))
            info = tarfile.TarInfo(path)
            info.mode = mode
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = epoch
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def gzip_bytes(data):
    out = io.BytesIO()
    # filename "" and mtime 0: the gzip header carries neither a name nor a time.
    with gzip.GzipFile(filename="", fileobj=out, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return out.getvalue()


def descriptor(media_type, data, annotations=None):
    d = {"mediaType": media_type, "digest": sha256(data), "size": len(data)}
    if annotations:
        d["annotations"] = annotations
    return d


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--binary", required=True)
    p.add_argument("--ca-bundle", required=True)
    p.add_argument("--name", required=True, help="image name, e.g. octopus-operator")
    p.add_argument("--version", required=True, help="image tag and version label")
    p.add_argument("--revision", default="", help="git commit (label, when known)")
    p.add_argument("--source", default="", help="source repository URL (label)")
    p.add_argument("--epoch", type=int, required=True, help="SOURCE_DATE_EPOCH")
    p.add_argument("--output", required=True, help="the image tar to write")
    args = p.parse_args()

    with open(args.binary, "rb") as f:
        binary = f.read()
    with open(args.ca_bundle, "rb") as f:
        ca_bundle = f.read()
    layer_tar = tar_bytes(
        {BINARY_PATH: (0o755, binary), CA_PATH: (0o644, ca_bundle)}, args.epoch
    )
    layer = gzip_bytes(layer_tar)

    created = datetime.fromtimestamp(args.epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    labels = {
        "org.opencontainers.image.title": args.name,
        "org.opencontainers.image.description": "Kubernetes operator that runs Octopus "
        "Deploy Server HA clusters and upgrades them safely",
        "org.opencontainers.image.version": args.version,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.licenses": "Apache-2.0",
    }
    if args.revision:
        labels["org.opencontainers.image.revision"] = args.revision
    if args.source:
        labels["org.opencontainers.image.source"] = args.source
    config = canonical_json(
        {
            "created": created,
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "User": USER,
                "Entrypoint": ["/" + BINARY_PATH],
                "Cmd": ["run"],
                "Env": [
                    "PATH=/usr/local/bin",
                    "SSL_CERT_FILE=/" + CA_PATH,
                ],
                "WorkingDir": "/",
                "Labels": labels,
            },
            "rootfs": {"type": "layers", "diff_ids": [sha256(layer_tar)]},
            "history": [
                {
                    "created": created,
                    "created_by": "operator/image/assemble.py",
                    "comment": f"{args.name} {args.version}, static binary and CA bundle",
                }
            ],
        }
    )
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": descriptor(MEDIA_CONFIG, config),
            "layers": [descriptor(MEDIA_LAYER, layer)],
            "annotations": labels,
        }
    )
    reference = f"{args.name}:{args.version}"
    index = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [
                descriptor(
                    MEDIA_MANIFEST,
                    manifest,
                    {
                        # containerd names the imported image after this.
                        "io.containerd.image.name": f"docker.io/library/{reference}",
                        # umoci and skopeo select the image by this tag.
                        "org.opencontainers.image.ref.name": args.version,
                    },
                )
            ],
        }
    )

    def blob(data):
        return "blobs/sha256/" + hashlib.sha256(data).hexdigest()

    # docker load (before Docker 25 it reads only this file).
    docker_manifest = canonical_json(
        [{"Config": blob(config), "RepoTags": [reference], "Layers": [blob(layer)]}]
    )
    archive = {
        "oci-layout": (0o644, canonical_json({"imageLayoutVersion": "1.0.0"})),
        "index.json": (0o644, index),
        "manifest.json": (0o644, docker_manifest),
        blob(config): (0o644, config),
        blob(layer): (0o644, layer),
        blob(manifest): (0o644, manifest),
    }
    tmp = args.output + ".tmp"
    with open(tmp, "wb") as f:
        f.write(tar_bytes(archive, args.epoch))
    os.replace(tmp, args.output)
    print(
        json.dumps(
            {
                "image": reference,
                "digest": sha256(manifest),
                "archive": args.output,
                "archiveBytes": os.path.getsize(args.output),
                "layerBytes": len(layer),
                "uncompressedBytes": len(layer_tar),
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
