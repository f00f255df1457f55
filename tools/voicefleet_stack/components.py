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

from .kube import ControlPlane, write_kubeconfig
from .parts import Part, StackContext

OPERATOR_NAMESPACE = "voicefleet-system"
OPERATOR_SERVICE_ACCOUNT = "voicefleet-operator"
NAMESPACE = "voicefleet"
WORKER_NODE_SELECTOR = {"voicefleet.dev/node-kind": "host-process"}


def _ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return bool(resp.status == 200)


def operator_part(ctx: StackContext, cp: ControlPlane, python: str) -> Part:
    health = ctx.ports["operator_health"]
    kubeconfig = ctx.stack_dir / "operator.kubeconfig"

    def credentials() -> None:
        token = cp.service_account_token(OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, hours=48)
        write_kubeconfig(
            kubeconfig, cp.server, cp.ca, None, token=token, user=OPERATOR_SERVICE_ACCOUNT
        )

    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(ctx.data("operator")),
        "PYTHONUNBUFFERED": "1",
        "KUBECONFIG": str(kubeconfig),
        "NAMESPACE": NAMESPACE,
        "LIVEKIT_URL": f"ws://127.0.0.1:{ctx.ports['livekit']}",
        "LIVEKIT_API_KEY": ctx.values["LIVEKIT_API_KEY"],
        "LIVEKIT_API_SECRET": ctx.values["LIVEKIT_API_SECRET"],
        "LETTA_BASE_URL": f"http://127.0.0.1:{ctx.ports['letta']}",
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
        prepare=credentials,
        description=f"kopf operator as ServiceAccount {OPERATOR_SERVICE_ACCOUNT}; webhooks on "
        f"{ctx.values['WEBHOOK_URL']}",
    )


GATEWAY_SERVICE_ACCOUNT = "voicefleet-gateway"


def gateway_part(ctx: StackContext, cp: ControlPlane, python: str) -> Part:
    """The gateway and browser client, as ServiceAccount voicefleet-gateway (VoiceSessions only)."""
    port = ctx.ports["gateway"]
    kubeconfig = ctx.stack_dir / "gateway.kubeconfig"

    def credentials() -> None:
        token = cp.service_account_token(OPERATOR_NAMESPACE, GATEWAY_SERVICE_ACCOUNT, hours=48)
        write_kubeconfig(
            kubeconfig, cp.server, cp.ca, None, token=token, user=GATEWAY_SERVICE_ACCOUNT
        )

    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(ctx.data("gateway")),
        "PYTHONUNBUFFERED": "1",
        "KUBECONFIG": str(kubeconfig),
        "NAMESPACE": NAMESPACE,
        "LIVEKIT_URL": f"ws://127.0.0.1:{ctx.ports['livekit']}",
        "LIVEKIT_API_KEY": ctx.values["LIVEKIT_API_KEY"],
        "LIVEKIT_API_SECRET": ctx.values["LIVEKIT_API_SECRET"],
        "LETTA_BASE_URL": f"http://127.0.0.1:{ctx.ports['letta']}",
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
        prepare=credentials,
        description=f"http://127.0.0.1:{port} (browser client and API)",
    )
