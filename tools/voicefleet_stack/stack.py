"""`voicefleet up/down/status`: the whole local stack, started in dependency order.

Three chains start side by side (Kubernetes; LiveKit; model → PostgreSQL → Letta), each
part waiting for its health check. When every part is healthy the env file of SPEC.md is
written to `<stack>/env`. If any part fails, its log tail is printed, everything started
is stopped, and `up` exits non-zero.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from . import components, kube, livekit, node
from .parts import Part, StackContext
from .supervisor import (
    PartFailed,
    Supervisor,
    _alive,
    recorded_pids,
    recorded_stop_signals,
    say,
    stop_pids,
    stop_recorded,
)

NAMESPACE = "voicefleet"
OPERATOR_NAMESPACE = "voicefleet-system"
OPERATOR_SERVICE_ACCOUNT = "voicefleet-operator"
REPO_ROOT = Path(__file__).resolve().parents[2]

# The keys of the env file, in the order SPEC.md lists them.
ENV_KEYS = (
    "KUBECONFIG",
    "NAMESPACE",
    "OPERATOR_NAMESPACE",
    "LIVEKIT_URL",
    "LIVEKIT_API_KEY",
    "LIVEKIT_API_SECRET",
    "LETTA_BASE_URL",
    "GATEWAY_URL",
    "GATEWAY_TOKEN",
    "WEBHOOK_URL",
    "VOICEFLEET_BIN",
    "PYTHON",
)


def voicefleet_home() -> Path:
    return Path(os.environ.get("VOICEFLEET_HOME", Path.home() / ".cache" / "voicefleet"))


def stack_dir() -> Path:
    return Path(os.environ.get("VOICEFLEET_STACK_DIR", voicefleet_home() / "stack"))


def env_file(directory: Path | None = None) -> Path:
    return (directory or stack_dir()) / "env"


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = shlex.split(value)[0] if value.strip() else ""
    return values


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on loopback (held open together so none repeats)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_udp_range(size: int = 100) -> int:
    """Start of a range of `size` UDP ports on loopback that are free right now."""
    for _ in range(50):
        start = 20000 + secrets.randbelow(400) * 100
        socks = []
        try:
            for p in range(start, start + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return start
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free range of 100 UDP ports on 127.0.0.1")


PORT_NAMES = (
    "etcd",
    "etcd_peer",
    "apiserver",
    "controller_manager",
    "scheduler",
    "kwok",
    "livekit",
    "livekit_rtc_tcp",
    "webhook",
    "model",
    "postgres",
    "letta",
    "gateway",
    "operator_health",
    "operator_metrics",
    "hostlet",
    "kubelet",
    "kubelet_healthz",
)


def new_context(directory: Path) -> StackContext:
    home = voicefleet_home()
    ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
    ports["livekit_udp_start"] = free_udp_range()
    values = {
        "LIVEKIT_API_KEY": "vf" + secrets.token_hex(6),
        "LIVEKIT_API_SECRET": secrets.token_urlsafe(36),
        "GATEWAY_TOKEN": "vfdev-" + secrets.token_urlsafe(24),
        "WEBHOOK_URL": f"http://127.0.0.1:{ports['webhook']}/livekit/webhook",
    }
    return StackContext(
        home=home, stack_dir=directory, bin_dir=home / "bin" / "current", ports=ports, values=values
    )


def _project_python() -> str:
    return sys.executable


def write_env(ctx: StackContext, cp: kube.ControlPlane) -> Path:
    values = {
        "KUBECONFIG": str(cp.admin_kubeconfig),
        "NAMESPACE": NAMESPACE,
        "OPERATOR_NAMESPACE": OPERATOR_NAMESPACE,
        "LIVEKIT_URL": f"ws://127.0.0.1:{ctx.ports['livekit']}",
        "LIVEKIT_API_KEY": ctx.values["LIVEKIT_API_KEY"],
        "LIVEKIT_API_SECRET": ctx.values["LIVEKIT_API_SECRET"],
        "LETTA_BASE_URL": f"http://127.0.0.1:{ctx.ports['letta']}",
        "GATEWAY_URL": f"http://127.0.0.1:{ctx.ports['gateway']}",
        "GATEWAY_TOKEN": ctx.values["GATEWAY_TOKEN"],
        "WEBHOOK_URL": ctx.values["WEBHOOK_URL"],
        "VOICEFLEET_BIN": str(ctx.bin_dir),
        "PYTHON": _project_python(),
    }
    path = env_file(ctx.stack_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{k}={shlex.quote(values[k])}\n" for k in ENV_KEYS))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def bootstrap_cluster(cp: kube.ControlPlane) -> None:
    """Namespaces and the operator's ServiceAccount; RBAC from manifests/ when present."""
    objects: list[dict[str, object]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": OPERATOR_SERVICE_ACCOUNT, "namespace": OPERATOR_NAMESPACE},
        },
    ]
    cp.apply(objects)
    for path in (
        REPO_ROOT / "manifests" / "crd.yaml",
        REPO_ROOT / "manifests" / "rbac.yaml",  # operator and gateway (from the chart)
        REPO_ROOT / "manifests" / "admission.yaml",  # the finalizer set at create (chart)
    ):
        if path.exists():
            result = cp.kubectl(
                "apply", "--server-side", "--force-conflicts", "-f", str(path), check=False
            )
            if result.returncode != 0:
                raise RuntimeError(f"applying {path} failed: {result.stderr.strip()}")


def _letta_parts(ctx: StackContext) -> tuple[list[Part], Callable[[], None]]:
    from . import letta

    if not letta.letta_installed(ctx.home):
        raise PartFailed(
            "the Letta server is not installed; run tools/install-letta.sh (make deps does)"
        )
    model, pg, server = (
        letta.scripted_model_part(ctx),
        letta.postgres_part(ctx),
        letta.letta_part(ctx),
    )

    def demo_agent() -> None:
        t0 = time.monotonic()
        agent_id = letta.ensure_demo_agent(
            f"http://127.0.0.1:{ctx.ports['letta']}", f"http://127.0.0.1:{ctx.ports['model']}"
        )
        say(f"{'demo agent Agent_66':<24} ready in {time.monotonic() - t0:5.1f} s  id {agent_id}")

    return [model, pg, server], demo_agent


def save_state(ctx: StackContext) -> None:
    """Ports and generated values, so `restart` can rebuild a part (0600: holds keys)."""
    path = ctx.stack_dir / "state.json"
    path.write_text(json.dumps({"ports": ctx.ports, "values": ctx.values}))
    path.chmod(0o600)


def load_context(directory: Path) -> StackContext:
    state = json.loads((directory / "state.json").read_text())
    home = voicefleet_home()
    return StackContext(
        home=home,
        stack_dir=directory,
        bin_dir=home / "bin" / "current",
        ports=state["ports"],
        values=state["values"],
    )


WORKER_IMAGE_KEY = "VOICEFLEET_WORKER_IMAGE"  # in state.json's values: the image of this `up`


def _bridge(layout: node.NodeLayout | None) -> tuple[str, str] | None:
    return (layout.bridge, layout.gateway) if layout is not None else None


def _container_workers(
    ctx: StackContext, layout: node.NodeLayout | None
) -> components.ContainerWorkers | None:
    """Worker pods in containers on node-0, when the node runs and its image was imported."""
    image = ctx.values.get(WORKER_IMAGE_KEY)
    if layout is None or not image:
        return None
    return components.ContainerWorkers(
        image=image,
        livekit_url=f"ws://{layout.gateway}:{ctx.ports['livekit']}",
        letta_base_url=f"http://{layout.gateway}:{ctx.ports['letta']}",
    )


def restart(name: str) -> int:
    """Stop one running part and start it again on the same ports with the same data."""
    directory = stack_dir()
    if not running_stack(directory):
        say("the local stack is not running")
        return 3
    ctx = load_context(directory)
    cp = kube.ControlPlane(ctx)
    python = _project_python()
    layout = node.NodeLayout.load(directory)
    parts: dict[str, Part] = {
        p.name: p
        for p in (
            cp.etcd(),
            cp.apiserver(),
            cp.controller_manager(),
            cp.scheduler(),
            cp.kwok(),
            cp.hostlet(python),
            livekit.livekit_part(ctx, _bridge(layout)),
            components.operator_part(ctx, cp, python, _container_workers(ctx, layout)),
            components.gateway_part(ctx, cp, python),
        )
    }
    if layout is not None:
        for part in (*node.parts(ctx, cp), node.letta_relay_part(ctx, layout)):
            parts[part.name] = part
    from . import letta

    for part in (letta.scripted_model_part(ctx), letta.postgres_part(ctx), letta.letta_part(ctx)):
        parts[part.name] = part
    if name not in parts:
        say(f"unknown part {name!r}; parts: {', '.join(parts)}")
        return 2
    part = parts[name]
    part.after_healthy = None  # objects made after the first start already exist
    sup = Supervisor(ctx)
    signals = recorded_stop_signals(sup.pid_file)
    sup.started = [(n, p) for n, p in recorded_pids(sup.pid_file) if n != name]
    sup.stop_signals = signals
    old = [(n, p) for n, p in recorded_pids(sup.pid_file) if n == name]
    stop_pids(old, signals=signals)
    try:
        sup.start(part)
    except PartFailed as exc:
        say(f"FAILED: {exc}")
        return 1
    return 0


def running_stack(directory: Path) -> bool:
    pids = recorded_pids(directory / "pids.json")
    return bool(pids) and all(_alive(pid) for _, pid in pids) and env_file(directory).exists()


def up(detach: bool, with_letta: bool = True, real_node: bool | None = None) -> int:
    directory = stack_dir()
    if running_stack(directory):
        say(f"the stack is already running; env file: {env_file(directory)}")
        if not detach:
            say(
                "attaching is not supported; run `voicefleet down` first to restart in the foreground"
            )
        return 0
    if recorded_pids(directory / "pids.json"):
        say("a previous stack is partly running; stopping what is left of it")
        stop_recorded(directory / "pids.json")
    _cleanup_node(directory)  # mounts and cgroups of an earlier real node, if any
    directory.mkdir(parents=True, exist_ok=True)
    env_file(directory).unlink(missing_ok=True)
    # A fresh stack each time: old data, keys and logs of an earlier run are dropped.
    for sub in ("data", "pki", "node"):
        _rmtree(directory / sub)
    logs = directory / "logs"
    _rmtree(logs)
    missing = [
        b
        for b in (
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
            "livekit-server",
            "kubectl",
        )
        if not (voicefleet_home() / "bin" / "current" / b).exists()
    ]
    if missing:
        say(f"missing binaries {missing}; run tools/build-bins.sh (make deps does)")
        return 2
    with_node, problems = node.decide(
        voicefleet_home(), voicefleet_home() / "bin" / "current", real_node
    )
    if with_node and problems:
        say("the real node (--real-node / VOICEFLEET_REAL_NODE=1) cannot run here:")
        for problem in problems:
            say(f"  - {problem}")
        return 2
    if problems:
        # The default, never silent: say why worker pods run as host processes instead.
        say(
            f"no real node: {'; '.join(problems)}. Worker pods run as host processes on "
            "host-0 (the stopgap); --no-real-node or VOICEFLEET_REAL_NODE=0 silences this"
        )
    t0 = time.monotonic()
    ctx = new_context(directory)
    sup = Supervisor(ctx)
    save_state(ctx)
    cp = kube.ControlPlane(ctx)
    cp.generate_pki()
    errors: list[BaseException] = []

    def chain(steps: list[Part | Callable[[], None]]) -> None:
        try:
            for step in steps:
                if errors:
                    return
                if isinstance(step, Part):
                    sup.start(step)
                else:
                    step()
        except BaseException as exc:  # reported below; the other chains stop early
            errors.append(exc)

    letta_steps: list[Part | Callable[[], None]] = []
    if with_letta:
        try:
            letta_parts, demo = _letta_parts(ctx)
            letta_steps = [*letta_parts, demo]
        except PartFailed as exc:
            say(str(exc))
            return 2
    else:
        say("--without-letta: no model, PostgreSQL or Letta server in this stack")
    layout: node.NodeLayout | None = None
    containers: components.ContainerWorkers | None = None
    if with_node:
        # The bridge address exists before LiveKit (and later the Letta relay) bind to it.
        try:
            layout = node.prepare_network(directory)
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            say(f"FAILED: the real node's bridge: {exc}")
            _cleanup_node(directory)
            return 1
        image = node.image_ref(node.images_dir(voicefleet_home()), node.WORKER_IMAGE)
        if image is None:
            say(
                f"no worker image: worker pods stay on host-0 (host processes); "
                f"tools/images/build-images.sh worker builds it for {node.NODE_NAME}"
            )
        elif with_letta:
            ctx.values[WORKER_IMAGE_KEY] = image
            save_state(ctx)
            containers = _container_workers(ctx, layout)
    chains = [
        [
            cp.etcd(),
            cp.apiserver(),
            lambda: bootstrap_cluster(cp),
            cp.controller_manager(),
            lambda: cp.wait_default_service_account(NAMESPACE),
            cp.scheduler(),
            cp.kwok(),
            cp.hostlet(_project_python()),
            *(node.parts(ctx, cp) if with_node else []),
        ],
        [livekit.livekit_part(ctx, _bridge(layout))],
        letta_steps,
    ]
    threads = [threading.Thread(target=chain, args=(c,), daemon=True) for c in chains]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if not errors:
        # voicefleet's own processes need the cluster and LiveKit; the gateway (and the
        # workers' relay to Letta) need Letta too. Without Letta the operator still owns
        # WEBHOOK_URL and makes rooms and worker pods; the workers cannot reach an agent.
        chain(
            [
                *(
                    [node.letta_relay_part(ctx, layout)]
                    if layout is not None and with_letta
                    else []
                ),
                components.operator_part(ctx, cp, _project_python(), containers),
                *([components.gateway_part(ctx, cp, _project_python())] if with_letta else []),
            ]
        )
    if errors:
        say(f"FAILED: {errors[0]}")
        say("stopping everything that was started")
        sup.stop_all()
        _cleanup_node(directory)
        return 1
    path = write_env(ctx, cp)
    say(f"all parts healthy in {time.monotonic() - t0:.1f} s")
    _print_summary(ctx, path, with_letta, with_node, containers)
    if detach:
        return 0
    say("running in the foreground; Ctrl-C stops everything")
    try:
        while all(_alive(pid) for _, pid in recorded_pids(sup.pid_file)):
            time.sleep(1)
        dead = [n for n, p in recorded_pids(sup.pid_file) if not _alive(p)]
        say(f"part(s) stopped unexpectedly: {', '.join(dead)}; see {ctx.log_dir}")
        return_code = 1
    except KeyboardInterrupt:
        return_code = 0
    say("stopping the stack")
    sup.stop_all()
    _cleanup_node(directory)
    env_file(directory).unlink(missing_ok=True)
    return return_code


def _print_summary(
    ctx: StackContext,
    path: Path,
    with_letta: bool,
    with_node: bool,
    containers: components.ContainerWorkers | None = None,
) -> None:
    operator_line = (
        f"running as ServiceAccount voicefleet-operator; webhooks {ctx.values['WEBHOOK_URL']}"
    )
    if with_letta:
        gateway_line = (
            f"open http://127.0.0.1:{ctx.ports['gateway']}/#token={ctx.values['GATEWAY_TOKEN']}"
            "   (the token stays in the URL fragment, never in a server log)"
        )
    else:
        gateway_line = "not started (--without-letta)"
    node_line = (
        f"{node.NODE_NAME}: kubelet + containerd + runc (taint {node.NODE_KIND_LABEL}={node.NODE_KIND})"
        if with_node
        else "off (--no-real-node, VOICEFLEET_REAL_NODE=0, or this machine cannot run it)"
    )
    workers_line = (
        f"node {node.NODE_NAME} runs them in containers (image {containers.image}; they reach "
        f"LiveKit at {containers.livekit_url}, Letta at {containers.letta_base_url})"
        if containers
        else "node host-0 runs them as host processes (STOPGAP until the real kubelet, issue 8)"
    )
    letta_line = (
        f"http://127.0.0.1:{ctx.ports['letta']}   (demo agent Agent_66, scripted model)"
        if with_letta
        else "not started (--without-letta)"
    )
    print(
        f"""
voicefleet local stack is up
  env file     {path}   (source it: set -a; . {path}; set +a)
  kubectl      {ctx.bin_dir}/kubectl --kubeconfig {ctx.stack_dir}/kubeconfig get nodes
  LiveKit      ws://127.0.0.1:{ctx.ports["livekit"]}
  Letta        {letta_line}
  logs         {ctx.log_dir}
  worker pods  {workers_line}
  real node    {node_line}
  operator     {operator_line}
  gateway      {gateway_line}
""",
        flush=True,
    )


def down() -> int:
    directory = stack_dir()
    stopped = stop_recorded(directory / "pids.json")
    _cleanup_node(directory)
    env_file(directory).unlink(missing_ok=True)
    say(
        f"stopped {len(stopped)} part(s)" + (f": {', '.join(reversed(stopped))}" if stopped else "")
    )
    return 0


def status() -> int:
    directory = stack_dir()
    pids = recorded_pids(directory / "pids.json")
    if not pids:
        print("the local stack is not running")
        return 3
    ok = True
    for name, pid in pids:
        alive = _alive(pid)
        ok &= alive
        print(f"  {name:<24} pid {pid:<8} {'running' if alive else 'STOPPED'}")
    print(f"  env file: {env_file(directory) if env_file(directory).exists() else '(not written)'}")
    return 0 if ok else 1


def _cleanup_node(directory: Path) -> None:
    """What the real node leaves outside its processes (mounts, cgroups, bridge); see node.py."""
    for line in node.cleanup(directory):
        say(f"real node cleanup: {line}")


def _rmtree(path: Path) -> None:
    import shutil

    if path.exists():
        # PostgreSQL's data dir belongs to `nobody`; root can still remove it.
        shutil.rmtree(path, ignore_errors=False)
