"""voicefleet's own processes in the local stack: the operator (and, later, the gateway).

The operator runs with the credentials of its ServiceAccount `voicefleet-operator` (a
token from the TokenRequest API in a kubeconfig of its own), never as admin, so the RBAC
in manifests/rbac.yaml is what it really gets. It owns `WEBHOOK_URL`. Worker pods go to
the host-process node `host-0` (the hostlet stopgap), or, when the stack runs the real
node and the worker image is built, to `node-0` in containers (`ContainerWorkers`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import urllib.request
from collections.abc import Callable
from pathlib import Path

from . import node
from .kube import ControlPlane, write_kubeconfig
from .parts import Part, StackContext

OPERATOR_NAMESPACE = "voicefleet-system"
OPERATOR_SERVICE_ACCOUNT = "voicefleet-operator"
NAMESPACE = "voicefleet"
WORKER_NODE_SELECTOR = {"voicefleet.dev/node-kind": "host-process"}
# Operator settings `voicefleet up` passes on from its own environment (the warm pool is off
# unless asked for: the test suites expect cold workers).
OPERATOR_TUNABLES = (
    "VOICEFLEET_WARM_POOL_SIZE",
    "VOICEFLEET_WARM_POOL_MAX_AGE_SECONDS",
    "VOICEFLEET_MAX_WORKERS",
    "VOICEFLEET_API_MAX_INFLIGHT",
    "VOICEFLEET_EVENT_POSTERS",
    "VOICEFLEET_EVENTS_PER_SECOND",
    "VOICEFLEET_ROOM_CHECK_SECONDS",
    "VOICEFLEET_SWEEP_SECONDS",
    "VOICEFLEET_GC_THRESHOLDS",
)


@dataclasses.dataclass(frozen=True)
class ContainerWorkers:
    """Worker pods on the real node: the imported image and the addresses pods can reach."""

    image: str  # voicefleet.local/worker:<key>, imported into node-0's containerd at `up`
    livekit_url: str  # ws://<bridge IP>:<port>: LiveKit listens there too
    letta_base_url: str  # http://<bridge IP>:<port>: the Letta relay

    def operator_env(self) -> dict[str, str]:
        return {
            "VOICEFLEET_WORKER_NODE_SELECTOR": json.dumps(node.WORKER_NODE_SELECTOR),
            "VOICEFLEET_WORKER_TOLERATIONS": json.dumps(node.WORKER_TOLERATIONS),
            "VOICEFLEET_WORKER_IMAGE": self.image,
            # Imported at `up`, never pulled (there is no registry to pull from).
            "VOICEFLEET_WORKER_IMAGE_PULL_POLICY": "Never",
            "VOICEFLEET_WORKER_LIVEKIT_URL": self.livekit_url,
            "VOICEFLEET_WORKER_LETTA_BASE_URL": self.letta_base_url,
        }


def _ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return bool(resp.status == 200)


def _credentials(cp: ControlPlane, account: str, kubeconfig: Path) -> Callable[[], None]:
    """Before each start: a fresh token of `account` in a kubeconfig of its own (0600)."""

    def write() -> None:
        token = cp.service_account_token(OPERATOR_NAMESPACE, account, hours=48)
        write_kubeconfig(kubeconfig, cp.server, cp.ca, None, token=token, user=account)

    return write


def _common_env(ctx: StackContext, name: str, kubeconfig: Path) -> dict[str, str]:
    """What the operator and the gateway both need: the cluster, LiveKit and Letta."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(ctx.data(name)),
        "PYTHONUNBUFFERED": "1",
        "KUBECONFIG": str(kubeconfig),
        "NAMESPACE": NAMESPACE,
        "LIVEKIT_URL": f"ws://127.0.0.1:{ctx.ports['livekit']}",
        "LIVEKIT_API_KEY": ctx.values["LIVEKIT_API_KEY"],
        "LIVEKIT_API_SECRET": ctx.values["LIVEKIT_API_SECRET"],
        "LETTA_BASE_URL": f"http://127.0.0.1:{ctx.ports['letta']}",
    }


def operator_part(
    ctx: StackContext, cp: ControlPlane, python: str, containers: ContainerWorkers | None = None
) -> Part:
    health = ctx.ports["operator_health"]
    kubeconfig = ctx.stack_dir / "operator.kubeconfig"

    env = {
        **_common_env(ctx, "operator", kubeconfig),
        "VOICEFLEET_WEBHOOK_PORT": str(ctx.ports["webhook"]),
        "VOICEFLEET_METRICS_PORT": str(ctx.ports["operator_metrics"]),
        "VOICEFLEET_HEALTH_PORT": str(health),
        "VOICEFLEET_WORKER_NODE_SELECTOR": json.dumps(WORKER_NODE_SELECTOR),
        # The hostlet runs `python -m voicefleet_worker` with the stack's Python; the worker
        # image has the same command first on its PATH (worker/Dockerfile's ENTRYPOINT).
        "VOICEFLEET_WORKER_COMMAND": "python -m voicefleet_worker",
        **(containers.operator_env() if containers else {}),
        # The operator's tunables pass through from the caller of `voicefleet up`.
        **{k: v for k, v in os.environ.items() if k in OPERATOR_TUNABLES},
    }
    return Part(
        name="operator",
        argv=[python, "-m", "voicefleet_operator", "--plain-logs"],
        env=env,
        cwd=ctx.data("operator"),
        health=lambda: _ok(f"http://127.0.0.1:{health}/healthz"),
        timeout=60,
        prepare=_credentials(cp, OPERATOR_SERVICE_ACCOUNT, kubeconfig),
        description=f"kopf operator as ServiceAccount {OPERATOR_SERVICE_ACCOUNT}; webhooks on "
        f"{ctx.values['WEBHOOK_URL']}; worker pods on "
        + (f"{node.NODE_NAME} ({containers.image})" if containers else "host-0 (host processes)"),
    )


GATEWAY_SERVICE_ACCOUNT = "voicefleet-gateway"


def gateway_part(ctx: StackContext, cp: ControlPlane, python: str) -> Part:
    """The gateway and browser client, as ServiceAccount voicefleet-gateway (VoiceSessions only)."""
    port = ctx.ports["gateway"]
    kubeconfig = ctx.stack_dir / "gateway.kubeconfig"

    env = {
        **_common_env(ctx, "gateway", kubeconfig),
        "GATEWAY_TOKEN": ctx.values["GATEWAY_TOKEN"],
        "GATEWAY_DEV_USER": "dev",
    }
    return Part(
        name="gateway",
        argv=[python, "-m", "voicefleet_web", "--host", "127.0.0.1", f"--port={port}"],
        env=env,
        cwd=ctx.data("gateway"),
        health=lambda: _ok(f"http://127.0.0.1:{port}/healthz"),
        timeout=60,
        prepare=_credentials(cp, GATEWAY_SERVICE_ACCOUNT, kubeconfig),
        description=f"http://127.0.0.1:{port} (browser client and API)",
    )
