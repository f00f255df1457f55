"""voicefleet's own processes in the local stack: the operator (and, later, the gateway).

The operator runs with the credentials of its ServiceAccount `voicefleet-operator` (a
token from the TokenRequest API in a kubeconfig of its own), never as admin, so the RBAC
in manifests/rbac.yaml is what it really gets. It owns `WEBHOOK_URL`. Worker pods go to
the host-process node `host-0` (the hostlet stopgap) until the real kubelet node exists.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .kube import ControlPlane, write_kubeconfig
from .parts import Part, StackContext

OPERATOR_NAMESPACE = "voicefleet-system"
OPERATOR_SERVICE_ACCOUNT = "voicefleet-operator"
NAMESPACE = "voicefleet"
WORKER_NODE_SELECTOR = {"voicefleet.dev/node-kind": "host-process"}


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


def operator_part(ctx: StackContext, cp: ControlPlane, python: str) -> Part:
    health = ctx.ports["operator_health"]
    kubeconfig = ctx.stack_dir / "operator.kubeconfig"

    env = {
        **_common_env(ctx, "operator", kubeconfig),
        "VOICEFLEET_WEBHOOK_PORT": str(ctx.ports["webhook"]),
        "VOICEFLEET_METRICS_PORT": str(ctx.ports["operator_metrics"]),
        "VOICEFLEET_HEALTH_PORT": str(health),
        "VOICEFLEET_WORKER_NODE_SELECTOR": json.dumps(WORKER_NODE_SELECTOR),
        # The hostlet runs `python -m voicefleet_worker` with the stack's Python.
        "VOICEFLEET_WORKER_COMMAND": "python -m voicefleet_worker",
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
        f"{ctx.values['WEBHOOK_URL']}",
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
