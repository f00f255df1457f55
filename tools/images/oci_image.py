"""Pack a root filesystem folder into an OCI image archive that `ctr images import` reads.

No Docker, no registry: one uncompressed layer made from a folder, an image config
(entrypoint, env, user, ...) and a manifest, written as an OCI image layout inside a tar
(`oci-layout`, `index.json`, `blobs/sha256/...`). The layer is reproducible: entries are
sorted, owned by root (or the owners given), with mtime 0, so the same folder always gives
the same digest, which is what the image cache keys on.

Usage (tools/images/build-images.sh calls it):
  python3 oci_image.py --rootfs DIR --name REF --out FILE.tar [--entrypoint /pause]
      [--cmd '["/bin/sh", "-c", "..."]'] [--env K=V ...] [--user 65535:65535] [--workdir /] [--port 8081]
      [--stop-signal SIGTERM] [--owner PATH=UID:GID ...]
Prints the manifest digest. Standard library only (runs before the project venv exists).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import stat
import tarfile
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def _entries(rootfs: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(rootfs, followlinks=False):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(dirnames + filenames):
            out.append(base / name)
    return sorted(out, key=lambda p: p.relative_to(rootfs).as_posix())


def _owner_of(rel: str, owners: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """Owner from the longest matching `--owner` prefix, else root."""
    best = ""
    for prefix in owners:
        if (rel == prefix or rel.startswith(prefix.rstrip("/") + "/")) and len(prefix) > len(best):
            best = prefix
    return owners[best] if best else (0, 0)


def write_layer(rootfs: Path, dest: io.BufferedWriter, owners: dict[str, tuple[int, int]]) -> None:
    """A reproducible tar of `rootfs`: sorted, mtime 0, numeric owners, no device files."""
    with tarfile.open(fileobj=dest, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in _entries(rootfs):
            rel = path.relative_to(rootfs).as_posix()
            st = path.lstat()
            info = tarfile.TarInfo(rel)
            info.mtime = 0
            info.uid, info.gid = _owner_of(rel, owners)
            info.uname = info.gname = ""
            info.mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif stat.S_ISLNK(st.st_mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(path)
                tar.addfile(info)
            elif stat.S_ISREG(st.st_mode):
                info.size = st.st_size
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            # Sockets, fifos and device nodes have no place in an image layer.


def _blob(blobs: dict[str, bytes], data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return digest, len(data)


def build(args: argparse.Namespace) -> str:
    rootfs = Path(args.rootfs)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    owners = {}
    for spec in args.owner or []:
        path, _, ids = spec.partition("=")
        uid, _, gid = ids.partition(":")
        owners[path.strip("/")] = (int(uid), int(gid or uid))
    layer_path = out.with_name(out.name + ".layer.tmp")
    with open(layer_path, "wb") as f:
        write_layer(rootfs, f, owners)
    h = hashlib.sha256()
    with open(layer_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    layer_digest = "sha256:" + h.hexdigest()
    layer_size = layer_path.stat().st_size

    config: dict[str, object] = {"Env": args.env or ["PATH=/usr/local/bin:/usr/bin:/bin"]}
    if args.entrypoint:
        config["Entrypoint"] = args.entrypoint
    if args.cmd:
        config["Cmd"] = args.cmd
    if args.user:
        config["User"] = args.user
    if args.workdir:
        config["WorkingDir"] = args.workdir
    if args.port:
        config["ExposedPorts"] = {f"{p}/tcp": {} for p in args.port}
    if args.stop_signal:
        config["StopSignal"] = args.stop_signal
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": f"tools/images/oci_image.py {rootfs.name}"}],
    }
    blobs: dict[str, bytes] = {}
    cfg_digest, cfg_size = _blob(blobs, json.dumps(image_config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cfg_digest, "size": cfg_size},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": layer_size}],
    }
    man_digest, man_size = _blob(blobs, json.dumps(manifest, sort_keys=True).encode())
    tag = args.name.rsplit(":", 1)[1] if ":" in args.name.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": man_digest,
                "size": man_size,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    # ctr names the imported image from this annotation.
                    "io.containerd.image.name": args.name,
                    "org.opencontainers.image.ref.name": tag,
                },
            }
        ],
    }

    def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        tar.addfile(info, io.BytesIO(data))

    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        add_bytes(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        add_bytes(tar, "index.json", json.dumps(index, sort_keys=True).encode())
        for digest, data in blobs.items():
            add_bytes(tar, f"blobs/sha256/{digest.split(':')[1]}", data)
        info = tarfile.TarInfo(f"blobs/sha256/{layer_digest.split(':')[1]}")
        info.size, info.mtime, info.mode = layer_size, 0, 0o644
        with open(layer_path, "rb") as f:
            tar.addfile(info, f)
    layer_path.unlink()
    tmp.replace(out)
    return man_digest


def _exec_form(value: str) -> list[str]:
    """`["python", "-m", "app"]` (a Dockerfile's exec form) or one plain word."""
    if value.lstrip().startswith("["):
        parsed = json.loads(value)
        if not (isinstance(parsed, list) and all(isinstance(v, str) for v in parsed)):
            raise argparse.ArgumentTypeError(f"not a JSON list of strings: {value}")
        return parsed
    return [value]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rootfs", required=True)
    p.add_argument(
        "--name", required=True, help="image reference, e.g. registry.k8s.io/pause:3.10.2"
    )
    p.add_argument("--out", required=True)
    p.add_argument(
        "--entrypoint", type=_exec_form, help="JSON list (the Dockerfile's exec form) or a path"
    )
    p.add_argument("--cmd", type=_exec_form, help="like --entrypoint")
    p.add_argument("--env", action="append")
    p.add_argument("--user")
    p.add_argument("--workdir")
    p.add_argument("--port", action="append", type=int)
    p.add_argument("--stop-signal")
    p.add_argument("--owner", action="append", help="PATH=UID:GID for a subtree (default root)")
    print(build(p.parse_args()))


if __name__ == "__main__":
    main()
