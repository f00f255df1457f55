"""The real node's pure parts, without a stack: configs it writes and the image packer.

These run everywhere (no root, no stack): they pin what `voicefleet up --real-node` hands to
containerd and the kubelet, and that tools/images/oci_image.py packs reproducibly.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path
from types import ModuleType

from voicefleet_stack import node
from voicefleet_stack.certs import CertPair
from voicefleet_stack.parts import StackContext

REPO = Path(__file__).resolve().parents[3]
PACKER = REPO / "tools" / "images" / "oci_image.py"


def _packer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("oci_image", PACKER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _layout(tmp_path: Path) -> node.NodeLayout:
    return node.NodeLayout.for_stack(tmp_path / "stack")


def test_layout_names_fit_kernel_and_containerd_limits(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    assert len(layout.bridge) <= 15  # IFNAMSIZ - 1
    assert len(layout.shim_sockets) <= 42  # containerd's maxSocketDirLen on Linux
    assert layout.subnet.startswith("10.244.") and layout.gateway.endswith(".1")
    assert layout.cgroup_root.startswith("/voicefleet-")
    # Another stack folder gets other names, so two stacks never share them.
    other = node.NodeLayout.for_stack(tmp_path / "other")
    assert (other.bridge, other.cgroup_root) != (layout.bridge, layout.cgroup_root)


def test_containerd_config_keeps_everything_in_the_stack_folder(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    config = tomllib.loads(node.containerd_config(layout, Path("/usr/lib/cni")))
    assert config["version"] == 3
    assert config["grpc"]["address"] == layout.socket
    assert config["root"].startswith(layout.base) and config["state"].startswith(layout.base)
    plugins = config["plugins"]
    runtime = plugins["io.containerd.cri.v1.runtime"]
    assert runtime["netns_mounts_under_state_dir"] is True
    assert runtime["restrict_oom_score_adj"] is True
    assert runtime["cni"]["conf_dir"].startswith(layout.base)
    runc = runtime["containerd"]["runtimes"]["runc"]["options"]
    assert runc["SystemdCgroup"] is False and runc["Root"].startswith(layout.base)
    assert plugins["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == node.PAUSE_IMAGE
    assert plugins["io.containerd.shim.v1.manager"]["socket_dir"] == layout.shim_sockets
    assert plugins["io.containerd.grpc.v1.cri"]["stream_server_address"] == "127.0.0.1"
    assert plugins["io.containerd.internal.v1.opt"]["path"].startswith(layout.base)
    assert "io.containerd.nri.v1.nri" in config["disabled_plugins"]


def test_kubelet_config_for_cgroup_v1_hosts_and_a_private_api(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    ctx = StackContext(
        home=tmp_path,
        stack_dir=tmp_path / "stack",
        bin_dir=tmp_path / "bin",
        ports={"kubelet": 10250, "kubelet_healthz": 10248},
    )
    config = node.kubelet_config(
        ctx, layout, CertPair(tmp_path / "s.crt", tmp_path / "s.key"), tmp_path / "ca.crt"
    )
    assert config["failCgroupV1"] is False and config["cgroupDriver"] == "cgroupfs"
    assert config["failSwapOn"] is False
    assert config["address"] == layout.gateway and config["healthzBindAddress"] == "127.0.0.1"
    assert config["readOnlyPort"] == 0
    assert config["authentication"] == {
        "anonymous": {"enabled": False},
        "webhook": {"enabled": True},
        "x509": {"clientCAFile": str(tmp_path / "ca.crt")},
    }
    assert config["authorization"] == {"mode": "Webhook"}
    assert config["registerWithTaints"] == [node.NODE_TAINT]
    assert config["containerRuntimeEndpoint"] == f"unix://{layout.socket}"
    assert config["cgroupRoot"] == layout.cgroup_root


def test_cni_conflist_is_a_bridge_without_masquerade(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    (bridge,) = node.cni_conflist(layout)["plugins"]  # type: ignore[misc]
    assert bridge["type"] == "bridge" and bridge["bridge"] == layout.bridge
    assert bridge["ipMasq"] is False and bridge["isDefaultGateway"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": layout.subnet, "gateway": layout.gateway}]]
    assert bridge["ipam"]["dataDir"].startswith(layout.base)


def _pack(tmp_path: Path, rootfs: Path, out: Path) -> str:
    result = subprocess.run(
        [
            sys.executable,
            str(PACKER),
            "--rootfs",
            str(rootfs),
            "--name",
            "voicefleet.local/t:1",
            "--out",
            str(out),
            "--entrypoint",
            "/bin/app",
            "--user",
            "65534:65534",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def test_image_packer_is_reproducible_and_writes_an_oci_layout(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "bin" / "app").write_text("#!/bin/sh\necho hi\n")
    (rootfs / "bin" / "app").chmod(0o755)
    (rootfs / "bin" / "sh").symlink_to("app")
    first = _pack(tmp_path, rootfs, tmp_path / "a.tar")
    (rootfs / "bin" / "app").touch()  # a newer mtime must not change the image
    second = _pack(tmp_path, rootfs, tmp_path / "b.tar")
    assert first == second and first.startswith("sha256:")
    with tarfile.open(tmp_path / "a.tar") as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        (entry,) = index["manifests"]
        assert entry["digest"] == first
        assert entry["annotations"]["io.containerd.image.name"] == "voicefleet.local/t:1"
        blob = tar.extractfile(f"blobs/sha256/{first.split(':')[1]}").read()  # type: ignore[union-attr]
        assert "sha256:" + hashlib.sha256(blob).hexdigest() == first
        manifest = json.loads(blob)
        config = json.loads(
            tar.extractfile(f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}").read()  # type: ignore[union-attr]
        )
        assert config["config"]["Entrypoint"] == ["/bin/app"]
        assert config["config"]["User"] == "65534:65534"
        layer = tar.extractfile(f"blobs/sha256/{manifest['layers'][0]['digest'].split(':')[1]}")
        with tarfile.open(fileobj=layer) as inner:
            members = {m.name: m for m in inner.getmembers()}
    assert set(members) == {"bin", "bin/app", "bin/sh"}
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members.values())
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "app"
    assert members["bin/app"].mode == 0o755
    assert _packer().OCI_LAYER.endswith("tar")
