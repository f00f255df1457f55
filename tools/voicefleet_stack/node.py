"""The real node: kubelet + containerd + runc running pods in containers (issue 8).

On by default where the machine allows it (`decide`: root, cgroups, overlayfs, the
binaries and images); `voicefleet up --no-real-node` or `VOICEFLEET_REAL_NODE=0` turns it
off, `--real-node` / `VOICEFLEET_REAL_NODE=1` insists on it (fails with the reasons where it
cannot run). Two more parts join the Kubernetes chain after the hostlet:

- `containerd` (v2, built by tools/build-bins.sh) with its root, state, socket, CNI config,
  runc state and pod network namespaces all under `<stack>/node/`, CRI on, runc from
  Debian, overlayfs snapshots, the sandbox image `registry.k8s.io/pause:<PAUSE_VERSION>`.
  Once healthy it imports every OCI archive in `$VOICEFLEET_HOME/images/current/`
  (tools/images/build-images.sh: pause, the test box; later the worker image).
- `kubelet` (v1.37.2, same build) as node `node-0`: static config file (cgroupfs driver,
  `failCgroupV1: false` since these machines run cgroup v1 with a cgroup2 mount,
  `failSwapOn: false`), a client certificate `O=system:nodes, CN=system:node:node-0`
  from the stack's CA (the Node authorizer scopes it), x509 + webhook authentication and
  webhook authorization of its own API, label `voicefleet.dev/node-kind=container` and
  taint `voicefleet.dev/node-kind=container:NoSchedule`, so only pods that ask for it
  (worker pods with that toleration and node selector) land there.

Networking: a Linux bridge of this stack (`vf<hash>`, 10.244.X.0/24 chosen free) made
before any part starts (`prepare_network`: LiveKit binds there too, and the Letta relay
`letta_relay_part` listens there, so worker pods reach both), with the CNI `bridge` +
`host-local` plugins (Debian) attaching
each pod to it; no default route, no masquerading and no DNS, so pods reach this
machine's bridge address and their own subnet, nothing beyond it. The kubelet serves its API on the bridge address (the node IP: Kubernetes
refuses a loopback node IP, and the API server reaches kubelets by node IP for logs and
exec); its health port stays on 127.0.0.1.

Pods live in cgroups under `/voicefleet-<hash>` in every hierarchy (the kubelet's
`cgroupRoot`), so two stacks on one machine never share `kubepods`.

`cleanup(stack_dir)` removes what the node made outside its own processes: processes left
in its cgroups, its containerd shims, mounts under `<stack>/node/` (rootfs overlays,
network namespaces, pod volumes), the cgroups, the bridge, its shim socket folder
`/run/voicefleet/<hash>` and the kubelet's links in `/var/log/containers/`. `voicefleet down`
runs it after stopping the processes; `up` runs it before reusing a stack folder.
See docs/real-node.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from .certs import CertificateAuthority, CertPair
from .kube import ControlPlane, _http_ok, write_kubeconfig
from .parts import Part, StackContext

NODE_NAME = "node-0"
NODE_KIND_LABEL = "voicefleet.dev/node-kind"
NODE_KIND = "container"
NODE_TAINT = {"key": NODE_KIND_LABEL, "value": NODE_KIND, "effect": "NoSchedule"}
# What a worker pod carries to land on node-0 (the operator's VOICEFLEET_WORKER_* settings).
WORKER_NODE_SELECTOR = {NODE_KIND_LABEL: NODE_KIND}
WORKER_TOLERATIONS = [{**NODE_TAINT, "operator": "Equal"}]
WORKER_IMAGE = "worker"  # the name tools/images/build-images.sh gives the worker image
POD_CIDR_POOL = ipaddress.IPv4Network("10.244.0.0/16")  # clear of the service range 10.96/16
CGROUP_FS = Path("/sys/fs/cgroup")
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
CNI_PLUGINS = ("bridge", "host-local", "loopback")
RUNC = "/usr/sbin/runc"
# Shim sockets need a folder path of at most 42 characters (containerd's limit), too short
# for the stack folder; each stack gets /run/voicefleet/<hash>.
SHIM_SOCKET_ROOT = Path("/run/voicefleet")
CONTAINER_LOG_LINKS = Path("/var/log/containers")  # fixed in the kubelet
# Fixed in libcni as containerd uses it: results of CNI ADD, removed by CNI DEL.
CNI_RESULTS = Path("/var/lib/cni/results")
# Fixed in the kubelet's device manager (one socket per machine, whatever --root-dir says).
DEVICE_PLUGIN_SOCKET = Path("/var/lib/kubelet/device-plugins/kubelet.sock")
ENV_FLAG = "VOICEFLEET_REAL_NODE"
_VERSIONS_ENV = Path(__file__).resolve().parent.parent / "versions.env"


def _versions() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in _VERSIONS_ENV.read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            values[key.strip()] = value.strip().strip("\"'")
    return values


PAUSE_IMAGE = f"registry.k8s.io/pause:{_versions().get('PAUSE_VERSION', '3.10.2')}"


def requested(flag: bool | None = None) -> bool | None:
    """What was asked for: True (insist), False (off) or None (default: where it can run).

    The flag (`--real-node` / `--no-real-node`) wins over VOICEFLEET_REAL_NODE.
    """
    if flag is not None:
        return flag
    value = os.environ.get(ENV_FLAG, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return None


def decide(home: Path, bin_dir: Path, flag: bool | None = None) -> tuple[bool, list[str]]:
    """(start the node?, why it cannot run here). Asked for explicitly and impossible:
    (True, reasons), and the caller refuses to start; by default: (False, reasons)."""
    wanted = requested(flag)
    if wanted is False:
        return False, []
    problems = preflight(home, bin_dir)
    return (bool(wanted) or not problems), problems


def cni_bin_dir() -> Path | None:
    for d in CNI_BIN_DIRS:
        if all((Path(d) / p).exists() for p in CNI_PLUGINS):
            return Path(d)
    return None


def images_dir(home: Path) -> Path:
    return home / "images" / "current"


def image_ref(directory: Path, name: str) -> str | None:
    """The reference tools/images/build-images.sh gave image `name` (from its .ref file)."""
    try:
        return (directory / f"{name}.ref").read_text().strip() or None
    except FileNotFoundError:
        return None


def preflight(home: Path, bin_dir: Path) -> list[str]:
    """Reasons this machine cannot run the real node; empty when it can."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not root (containers need namespaces, mounts and cgroups)")
    if not (CGROUP_FS / "memory").is_dir() and not (CGROUP_FS / "cgroup.controllers").exists():
        problems.append(f"no usable cgroup file system at {CGROUP_FS}")
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError:
        filesystems = ""
    if "overlay" not in filesystems:
        problems.append("the kernel has no overlayfs (containerd's snapshotter)")
    missing = [
        b
        for b in ("kubelet", "containerd", "containerd-shim-runc-v2", "ctr")
        if not (bin_dir / b).exists()
    ]
    if missing:
        problems.append(f"missing binaries {missing}: run tools/build-bins.sh kubelet containerd")
    if shutil.which("ip") is None:
        problems.append("no `ip` command: run tools/install-system.sh (Debian iproute2)")
    if not Path(RUNC).exists():
        problems.append(f"no {RUNC}: run tools/install-system.sh (Debian runc)")
    if cni_bin_dir() is None:
        problems.append(
            "no CNI plugins (bridge, host-local, loopback): run tools/install-system.sh "
            "(Debian containernetworking-plugins)"
        )
    if not (images_dir(home) / "pause.oci.tar").exists():
        problems.append("no pause image: run tools/images/build-images.sh")
    return problems


@dataclass(frozen=True)
class NodeLayout:
    """Names and paths of one stack's node; saved as `<stack>/node/node.json` for cleanup."""

    base: str
    bridge: str
    cgroup_root: str
    subnet: str
    gateway: str
    socket: str
    shim_sockets: str

    @classmethod
    def for_stack(cls, stack_dir: Path) -> NodeLayout:
        base = stack_dir / "node"
        tag = hashlib.sha256(str(stack_dir.resolve()).encode()).hexdigest()[:10]
        subnet = _free_subnet(int(tag[:2], 16))
        return cls(
            base=str(base),
            bridge=f"vf{tag}",  # at most 15 characters (IFNAMSIZ)
            cgroup_root=f"/voicefleet-{tag}",
            subnet=str(subnet),
            gateway=str(next(subnet.hosts())),
            socket=str(base / "containerd.sock"),
            shim_sockets=str(SHIM_SOCKET_ROOT / tag),
        )

    @classmethod
    def load(cls, stack_dir: Path) -> NodeLayout | None:
        try:
            return cls(**json.loads((stack_dir / "node" / "node.json").read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def save(self) -> None:
        Path(self.base).mkdir(parents=True, exist_ok=True)
        (Path(self.base) / "node.json").write_text(json.dumps(asdict(self), indent=1))

    def path(self, *parts: str) -> Path:
        return Path(self.base, *parts)

    @property
    def network(self) -> str:
        """The CNI network name; names this stack's files in /var/lib/cni/results."""
        return "vf-" + self.bridge.removeprefix("vf")


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = subprocess.run(
        ["ip", "-j", "-4", "route", "show", "table", "all"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    nets = []
    for route in json.loads(out or "[]"):
        dst = route.get("dst", "")
        if dst and dst != "default":
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False))
    return [n for n in nets if isinstance(n, ipaddress.IPv4Network)]


def _free_subnet(start: int) -> ipaddress.IPv4Network:
    used = _used_networks()
    subnets: list[ipaddress.IPv4Network] = list(POD_CIDR_POOL.subnets(new_prefix=24))
    for i in range(len(subnets)):
        candidate = subnets[(start + i) % len(subnets)]
        if not any(candidate.overlaps(u) for u in used if u.prefixlen > 0):
            return candidate
    raise RuntimeError(f"no free /24 in {POD_CIDR_POOL} for the node's pod network")


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)


# -- host resources: bridge and cgroups ---------------------------------------------------
def _make_bridge(layout: NodeLayout) -> None:
    """The pods' bridge with the node IP, made before the kubelet needs that IP."""
    prefix = ipaddress.ip_network(layout.subnet).prefixlen
    if not Path("/sys/class/net", layout.bridge).exists():
        _run("ip", "link", "add", layout.bridge, "type", "bridge")
    have = _run("ip", "-j", "addr", "show", "dev", layout.bridge).stdout
    if layout.gateway not in have:
        _run("ip", "addr", "add", f"{layout.gateway}/{prefix}", "dev", layout.bridge)
    _run("ip", "link", "set", layout.bridge, "up")


def prepare_network(stack_dir: Path) -> NodeLayout:
    """The node's layout and bridge, made before any part starts.

    LiveKit binds its signalling and media ports on the bridge address and the Letta relay
    listens there, so the address must exist before they start, not only before the kubelet.
    """
    layout = NodeLayout.load(stack_dir) or NodeLayout.for_stack(stack_dir)
    layout.save()
    _make_bridge(layout)
    return layout


def _hierarchies() -> list[Path]:
    """Every mounted cgroup hierarchy (v1 controllers, the named systemd one, cgroup2)."""
    if (CGROUP_FS / "cgroup.controllers").exists():
        return [CGROUP_FS]  # pure cgroup v2
    return sorted(p for p in CGROUP_FS.iterdir() if p.is_dir() and not p.is_symlink())


def _make_cgroup_root(layout: NodeLayout) -> None:
    rel = layout.cgroup_root.strip("/")
    for h in _hierarchies():
        d = h / rel
        d.mkdir(exist_ok=True)
        if (h / "cpuset.cpus").exists():
            # A new v1 cpuset cgroup starts empty; tasks cannot join it until it has both.
            for f in ("cpuset.cpus", "cpuset.mems"):
                if not (d / f).read_text().strip():
                    (d / f).write_text((h / f).read_text())


# -- parts --------------------------------------------------------------------------------
def _base_env(ctx: StackContext) -> dict[str, str]:
    path = f"{ctx.bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return {"PATH": path, "HOME": os.environ.get("HOME", "/root")}


def _ctr(ctx: StackContext, layout: NodeLayout, *args: str, timeout: float = 300) -> str:
    result = subprocess.run(
        [str(ctx.bin_dir / "ctr"), "--address", layout.socket, "--namespace", "k8s.io", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env=_base_env(ctx),
    )
    if result.returncode != 0:
        raise RuntimeError(f"ctr {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def containerd_config(layout: NodeLayout, cni_bin: Path) -> str:
    """containerd 2 config (version 3): everything under the node folder, CRI on."""

    def q(value: str) -> str:
        return json.dumps(value)  # a TOML basic string

    return f"""version = 3
root = {q(str(layout.path("containerd", "root")))}
state = {q(str(layout.path("containerd", "state")))}
# Keep containerd out of the machine's shared folders: no NRI socket in /run/nri, no image
# verifiers from /opt/containerd (its "opt" folder is in the stack, below).
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.image-verifier.v1.bindir"]

[grpc]
  address = {q(layout.socket)}

[ttrpc]
  address = ""

[debug]
  address = ""

[metrics]
  address = ""

[plugins.'io.containerd.internal.v1.opt']
  path = {q(str(layout.path("containerd", "opt")))}

[plugins.'io.containerd.shim.v1.manager']
  socket_dir = {q(layout.shim_sockets)}

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = {q(PAUSE_IMAGE)}

[plugins.'io.containerd.cri.v1.runtime']
  # Pod network namespaces are bind mounts: keep them in this stack's folder, not /run/netns.
  netns_mounts_under_state_dir = true
  # Development sandboxes often lack CAP_SYS_RESOURCE: a container may not get an
  # oom_score_adj below containerd's own (the pause container asks for -998).
  restrict_oom_score_adj = true
  cdi_spec_dirs = []
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      BinaryName = {q(RUNC)}
      Root = {q(str(layout.path("containerd", "runc")))}
      SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = [{q(str(cni_bin))}]
    conf_dir = {q(str(layout.path("cni", "net.d")))}
    max_conf_num = 1

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""


def cni_conflist(layout: NodeLayout) -> dict[str, object]:
    return {
        "cniVersion": "1.0.0",
        "name": layout.network,
        "plugins": [
            {
                "type": "bridge",
                "bridge": layout.bridge,
                "isGateway": True,
                # No default route and no masquerade: a pod reaches its own subnet (the
                # bridge address is this machine) and nothing else, even with forwarding on.
                "isDefaultGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": layout.subnet, "gateway": layout.gateway}]],
                    "dataDir": str(layout.path("cni", "ipam")),
                },
            }
        ],
    }


def parts(ctx: StackContext, cp: ControlPlane) -> list[Part]:
    """containerd then kubelet, sharing one layout (saved by containerd's `prepare`)."""
    layout = NodeLayout.load(ctx.stack_dir) or NodeLayout.for_stack(ctx.stack_dir)
    return [containerd_part(ctx, layout), kubelet_part(ctx, cp, layout), pod_logs_part(ctx, layout)]


def kept_logs_dir(stack_dir: Path) -> Path:
    """Where `pod-logs` keeps container logs: `<ns>_<pod>/<container>/<restart>.log`."""
    return stack_dir / "logs" / "pods"


def pod_logs_part(ctx: StackContext, layout: NodeLayout) -> Part:
    """Container logs kept after their pods are gone (voicefleet_stack/podlogs.py)."""
    source, dest = layout.path("pod-logs"), kept_logs_dir(ctx.stack_dir)

    def prepare() -> None:
        source.mkdir(parents=True, exist_ok=True)
        dest.mkdir(parents=True, exist_ok=True)

    return Part(
        name="pod-logs",
        argv=[sys.executable, "-m", "voicefleet_stack.podlogs", str(source), str(dest)],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONUNBUFFERED": "1"},
        cwd=ctx.data("pod-logs"),
        prepare=prepare,
        health=lambda: dest.is_dir(),
        timeout=10,
        description=f"container logs of {NODE_NAME} kept in {dest} after their pods are gone",
    )


def containerd_part(ctx: StackContext, layout: NodeLayout) -> Part:
    config = layout.path("containerd.toml")

    def prepare() -> None:
        cni_bin = cni_bin_dir()
        if cni_bin is None:
            raise RuntimeError("CNI plugins missing: run tools/install-system.sh")
        layout.save()
        (layout.path("cni", "net.d")).mkdir(parents=True, exist_ok=True)
        (layout.path("cni", "net.d", "10-voicefleet.conflist")).write_text(
            json.dumps(cni_conflist(layout), indent=1)
        )
        config.write_text(containerd_config(layout, cni_bin))
        _make_bridge(layout)
        _make_cgroup_root(layout)

    def healthy() -> bool:
        return Path(layout.socket).exists() and bool(_ctr(ctx, layout, "version", timeout=5))

    def import_images() -> None:
        t0 = time.monotonic()
        archives = sorted(images_dir(ctx.home).glob("*.oci.tar"))
        for archive in archives:
            _ctr(ctx, layout, "images", "import", "--platform", "linux/amd64", str(archive))
        names = [a.name.removesuffix(".oci.tar") for a in archives]
        print(
            f"  containerd: imported {', '.join(names)} in {time.monotonic() - t0:.1f} s",
            flush=True,
        )

    return Part(
        name="containerd",
        argv=[str(ctx.bin_dir / "containerd"), f"--config={config}"],
        env=_base_env(ctx),
        cwd=layout.path(),
        health=healthy,
        timeout=60,
        prepare=prepare,
        after_healthy=import_images,
        description=f"CRI on {layout.socket}; pods on bridge {layout.bridge} {layout.subnet}",
    )


def kubelet_config(
    ctx: StackContext, layout: NodeLayout, serving: CertPair, ca: Path
) -> dict[str, object]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": layout.gateway,
        "port": ctx.ports["kubelet"],
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ctx.ports["kubelet_healthz"],
        "tlsCertFile": str(serving.cert),
        "tlsPrivateKeyFile": str(serving.key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": layout.cgroup_root,
        # These machines run cgroup v1 (hybrid); kubelet >= 1.35 refuses it unless told.
        "failCgroupV1": False,
        "failSwapOn": False,
        # Without CAP_SYS_RESOURCE the kubelet cannot lower its own score (default -999).
        "oomScoreAdj": 0,
        "containerRuntimeEndpoint": f"unix://{layout.socket}",
        "imageServiceEndpoint": f"unix://{layout.socket}",
        "podLogsDir": str(layout.path("pod-logs")),
        "volumePluginDir": str(layout.path("volume-plugins")),
        "registerNode": True,
        "registerWithTaints": [NODE_TAINT],
        "maxPods": 30,
        "serializeImagePulls": False,
        # Images are imported, never pulled: never garbage-collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # A shared development disk is often fuller than the defaults allow.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "nodeStatusUpdateFrequency": "10s",
        "nodeStatusReportFrequency": "10s",
        "shutdownGracePeriod": "0s",
        # No DNS in pods: the host's resolver is off the pod network, and nothing needs names.
        "resolvConf": "",
        # Pods of the default dnsPolicy (ClusterFirst, e.g. worker pods) get the pod's own
        # loopback as their resolver, like the others, instead of a MissingClusterDNS
        # warning Event each.
        "clusterDNS": ["127.0.0.1"],
        "clusterDomain": "cluster.local",
        "containerLogMaxSize": "10Mi",
    }


def kubelet_part(ctx: StackContext, cp: ControlPlane, layout: NodeLayout) -> Part:
    pki = layout.path("pki")
    config = layout.path("kubelet.yaml")
    kubeconfig = pki / "kubelet.kubeconfig"
    client = CertPair(cp.pki / f"node-{NODE_NAME}.crt", cp.pki / f"node-{NODE_NAME}.key")
    serving = CertPair(
        cp.pki / f"node-{NODE_NAME}-serving.crt", cp.pki / f"node-{NODE_NAME}-serving.key"
    )
    port = ctx.ports["kubelet_healthz"]

    def prepare() -> None:
        ca = CertificateAuthority.load(cp.pki)
        pki.mkdir(parents=True, exist_ok=True)
        # The Node authorizer and NodeRestriction scope this identity to node-0's objects.
        ca.issue(f"node-{NODE_NAME}", f"system:node:{NODE_NAME}", orgs=("system:nodes",))
        ca.issue(
            f"node-{NODE_NAME}-serving",
            f"system:node:{NODE_NAME}",
            orgs=("system:nodes",),
            client=False,
            server=True,
            server_names=(NODE_NAME, "localhost"),
            server_ips=(layout.gateway, "127.0.0.1"),
        )
        write_kubeconfig(kubeconfig, cp.server, cp.ca, client, user=f"system:node:{NODE_NAME}")
        config.write_text(yaml.safe_dump(kubelet_config(ctx, layout, serving, cp.ca)))

    return Part(
        name="kubelet",
        argv=[
            str(ctx.bin_dir / "kubelet"),
            f"--config={config}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={layout.path('kubelet')}",
            f"--cert-dir={pki}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={layout.gateway}",
            f"--node-labels={NODE_KIND_LABEL}={NODE_KIND}",
            "--v=1",
        ],
        env=_base_env(ctx),
        cwd=layout.path(),
        health=lambda: _http_ok(f"http://127.0.0.1:{port}/healthz") and cp._node_ready(NODE_NAME),
        timeout=120,
        prepare=prepare,
        description=f"node {NODE_NAME}: real pods (containerd + runc), API on {layout.gateway}",
    )


# -- cleanup ------------------------------------------------------------------------------
def _cgroup_dirs(layout: NodeLayout) -> list[Path]:
    """The node's cgroup folders in every hierarchy, deepest first."""
    rel = layout.cgroup_root.strip("/")
    if not CGROUP_FS.is_dir():
        return []
    found: list[Path] = []
    for h in _hierarchies():
        top = h / rel
        if top.is_dir():
            found.extend(p for p in top.rglob("*") if p.is_dir())
            found.append(top)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _pids_in(dirs: list[Path]) -> set[int]:
    pids: set[int] = set()
    for d in dirs:
        with contextlib.suppress(OSError):
            pids.update(int(x) for x in (d / "cgroup.procs").read_text().split())
    return pids


def _shim_pids(layout: NodeLayout) -> list[int]:
    """containerd-shim-runc-v2 processes that this node's containerd started."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # argv[0] is the resolved file (containerd-shim-runc-v2-<version> in the bin cache).
        shim = argv[0].rsplit(b"/", 1)[-1].startswith(b"containerd-shim-runc-v2")
        if shim and layout.socket.encode() in argv:
            found.append(int(proc.name))
    return found


def _mounts_under(base: str) -> list[str]:
    points = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == base or point.startswith(base.rstrip("/") + "/"):
                points.append(point)
    return sorted(set(points), key=len, reverse=True)


def _kill_all(pids: set[int] | list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def cleanup(stack_dir: Path) -> list[str]:
    """Remove what the node left outside its processes; idempotent. Returns what it did."""
    layout = NodeLayout.load(stack_dir)
    if layout is None:
        return []
    done: list[str] = []
    # 1. Container processes (all in the node's cgroups), then the shims that watched them.
    dirs = _cgroup_dirs(layout)
    for _ in range(50):
        pids = _pids_in(dirs) | set(_shim_pids(layout))
        if not pids:
            break
        _kill_all(pids)
        done.append(f"killed {len(pids)} process(es)")
        time.sleep(0.1)
    # 2. Mounts: container root file systems, pod network namespaces, pod volumes, shm.
    points = _mounts_under(layout.base)
    for point in points:
        with contextlib.suppress(OSError):
            _umount(point)
    if points:
        done.append(f"unmounted {len(points)} mount(s)")
    # 3. The cgroups (empty now), deepest first.
    removed = 0
    for d in _cgroup_dirs(layout):
        for _ in range(20):
            try:
                d.rmdir()
                removed += 1
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    break
                _kill_all(_pids_in([d]))
                time.sleep(0.05)
    if removed:
        done.append(f"removed {removed} cgroup(s) under {layout.cgroup_root}")
    # 4. The bridge (pods' veth ends went with their network namespaces).
    if Path("/sys/class/net", layout.bridge).exists():
        _run("ip", "link", "delete", layout.bridge, check=False)
        done.append(f"deleted bridge {layout.bridge}")
    # 5. Files containerd and the kubelet keep outside any configurable folder.
    sockets = Path(layout.shim_sockets)
    if sockets.is_dir():
        shutil.rmtree(sockets, ignore_errors=True)
        done.append(f"removed {sockets}")
    with contextlib.suppress(OSError):
        SHIM_SOCKET_ROOT.rmdir()  # only when no other stack uses it
    sandboxes = layout.path("containerd", "root", "io.containerd.grpc.v1.cri", "sandboxes")
    ids = {p.name for p in sandboxes.iterdir()} if sandboxes.is_dir() else set()
    if CNI_RESULTS.is_dir():
        for result in CNI_RESULTS.iterdir():
            ours = result.name.startswith(layout.network + "-") or any(
                result.name == f"cni-loopback-{i}-lo" for i in ids
            )
            if ours:
                result.unlink(missing_ok=True)
    if DEVICE_PLUGIN_SOCKET.exists() and not _kubelets_running():
        DEVICE_PLUGIN_SOCKET.unlink(missing_ok=True)
        for d in (DEVICE_PLUGIN_SOCKET.parent, DEVICE_PLUGIN_SOCKET.parent.parent):
            with contextlib.suppress(OSError):
                d.rmdir()
    if CONTAINER_LOG_LINKS.is_dir():
        logs = layout.path("pod-logs")
        for link in CONTAINER_LOG_LINKS.iterdir():
            if link.is_symlink() and os.readlink(link).startswith(str(logs)):
                link.unlink(missing_ok=True)
    return done


def _kubelets_running() -> bool:
    """Whether any kubelet runs on this machine (the device-plugin socket is shared)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                argv0 = (proc / "cmdline").read_bytes().split(b"\0")[0]
                if argv0.rsplit(b"/", 1)[-1].startswith(b"kubelet"):
                    return True
    return False


def _umount(point: str) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    mnt_detach = 2
    if libc.umount2(point.encode(), mnt_detach) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise OSError(err, os.strerror(err), point)


# -- reaching host services from pods -----------------------------------------------------
def letta_relay_part(ctx: StackContext, layout: NodeLayout) -> Part:
    """Worker pods reach Letta at `<bridge IP>:<letta port>`: a TCP relay to 127.0.0.1.

    `letta server` (uvicorn) listens on one address only, and host-side clients (tests,
    gateway, operator) keep using 127.0.0.1; so this relay, on the bridge address only,
    forwards each connection to Letta's loopback port. Same port number, other address.
    """
    port = ctx.ports["letta"]
    url = f"http://{layout.gateway}:{port}"

    def healthy() -> bool:
        return _http_ok(f"{url}/v1/health/")

    return Part(
        name="letta-relay",
        argv=[
            sys.executable,
            "-m",
            "voicefleet_stack.node",
            "relay",
            f"{layout.gateway}:{port}",
            f"127.0.0.1:{port}",
        ],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONUNBUFFERED": "1"},
        cwd=ctx.data("letta-relay"),
        health=healthy,
        timeout=30,
        description=f"{url} → Letta on 127.0.0.1 (for worker pods on {NODE_NAME})",
    )


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # half-close: the other direction may still be streaming
    except (ConnectionError, OSError):
        pass


async def _relay(listen: tuple[str, int], target: tuple[str, int]) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                w.close()

    server = await asyncio.start_server(handle, *listen)
    async with server:
        await server.serve_forever()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str]) -> int:
    """`python -m voicefleet_stack.node relay LISTEN_IP:PORT TARGET_IP:PORT`."""
    if len(argv) != 3 or argv[0] != "relay":
        print("usage: python -m voicefleet_stack.node relay LISTEN_IP:PORT TARGET_IP:PORT")
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_relay(_address(argv[1]), _address(argv[2])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
