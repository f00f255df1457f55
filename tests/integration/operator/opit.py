"""Helpers of the operator's integration tests: kubectl as admin, the operator as a real process.

The operator runs with its ServiceAccount's token (never admin), so these tests also prove
manifests/rbac.yaml is enough. Its webhook receiver listens on a free port of its own
(the stack's WEBHOOK_URL may belong to another receiver); the tests post signed webhooks
to it themselves, and LiveKit's own webhooks not reaching it is the "lost webhook" case.
Worker pods go to the kwok nodes (Ready without a process), so dispatch, teardown,
superseding, timeouts and finalizers are tested against the real API server, scheduler,
garbage collector and LiveKit server. A test agent or user is a real LiveKit participant.

`stack_env` comes from tests/conftest.py (VOICEFLEET_STACK_ENV=<env file> reuses a stack).
The test operator runs with kopf peering priority 100, so an operator the stack itself
runs (priority 0) pauses meanwhile (kopf's standby mechanism) and resumes afterwards.
Set VOICEFLEET_TEST_OPERATOR=external to test an operator that is already running instead
(then VOICEFLEET_TEST_WEBHOOK_URL names its webhook receiver; the tests assume worker pods
that never join, as on the kwok nodes).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
NAMESPACE_KEY = "NAMESPACE"
KWOK_TOLERATIONS = json.dumps(
    [{"key": "kwok.x-k8s.io/node", "operator": "Equal", "value": "fake", "effect": "NoSchedule"}]
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Kube:
    """kubectl as the cluster admin (the tests' own hands, not the operator's)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.kubectl = str(Path(env["VOICEFLEET_BIN"]) / "kubectl")
        self.kubeconfig = env["KUBECONFIG"]
        self.namespace = env.get(NAMESPACE_KEY, "voicefleet")

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.kubectl, f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            text=True,
            capture_output=True,
            timeout=60,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def apply(self, obj: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("apply", "-f", "-", stdin=json.dumps(obj), check=check)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        result = self.run("-n", self.namespace, "get", kind, name, "-o", "json", check=False)
        if result.returncode != 0:
            return None
        return dict(json.loads(result.stdout))

    def pods(self, session: str) -> list[dict[str, Any]]:
        out = self.run(
            "-n",
            self.namespace,
            "get",
            "pods",
            "-l",
            f"voicefleet.dev/session={session}",
            "-o",
            "json",
        ).stdout
        return list(json.loads(out)["items"])

    def patch_session(self, name: str, patch: dict[str, Any]) -> None:
        self.run(
            "-n",
            self.namespace,
            "patch",
            "voicesession",
            name,
            "--type",
            "merge",
            "-p",
            json.dumps(patch),
        )

    def delete_session(self, name: str, wait: bool = False) -> None:
        self.run(
            "-n",
            self.namespace,
            "delete",
            "voicesession",
            name,
            "--ignore-not-found",
            f"--wait={'true' if wait else 'false'}",
        )

    def events(self, name: str) -> list[dict[str, Any]]:
        out = self.run(
            "-n",
            self.namespace,
            "get",
            "events",
            "--field-selector",
            f"involvedObject.name={name}",
            "-o",
            "json",
        ).stdout
        return list(json.loads(out)["items"])

    def token(self, namespace: str, account: str) -> str:
        return self.run("-n", namespace, "create", "token", account, "--duration=4h").stdout.strip()


def operator_kubeconfig(kube: Kube, env: dict[str, str], path: Path) -> Path:
    """A kubeconfig holding the voicefleet-operator ServiceAccount's token."""
    server = kube.run("config", "view", "-o", "jsonpath={.clusters[0].cluster.server}").stdout
    ca = kube.run(
        "config", "view", "-o", "jsonpath={.clusters[0].cluster.certificate-authority}"
    ).stdout
    token = kube.token(env.get("OPERATOR_NAMESPACE", "voicefleet-system"), "voicefleet-operator")
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "voicefleet", "cluster": {"server": server, "certificate-authority": ca}}
        ],
        "users": [{"name": "voicefleet-operator", "user": {"token": token}}],
        "contexts": [
            {
                "name": "voicefleet",
                "context": {"cluster": "voicefleet", "user": "voicefleet-operator"},
            }
        ],
        "current-context": "voicefleet",
    }
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


class OperatorProcess:
    """`python -m voicefleet_operator` against the stack, restartable and killable."""

    def __init__(self, env: dict[str, str], kubeconfig: Path, log: Path) -> None:
        self.webhook_port, self.health_port, self.metrics_port = (
            _free_port(),
            _free_port(),
            _free_port(),
        )
        self.log = log
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "PYTHONPATH": str(REPO / "operator"),  # this checkout, whatever the venv maps
            "KUBECONFIG": str(kubeconfig),
            "NAMESPACE": env.get(NAMESPACE_KEY, "voicefleet"),
            "LIVEKIT_URL": env["LIVEKIT_URL"],
            "LIVEKIT_API_KEY": env["LIVEKIT_API_KEY"],
            "LIVEKIT_API_SECRET": env["LIVEKIT_API_SECRET"],
            "LETTA_BASE_URL": env.get("LETTA_BASE_URL", ""),
            "VOICEFLEET_WEBHOOK_PORT": str(self.webhook_port),
            "VOICEFLEET_HEALTH_PORT": str(self.health_port),
            "VOICEFLEET_METRICS_PORT": str(self.metrics_port),
            "VOICEFLEET_WORKER_TOLERATIONS": KWOK_TOLERATIONS,
            "VOICEFLEET_WORKER_NODE_SELECTOR": json.dumps({"type": "kwok"}),
            "VOICEFLEET_ROOM_CHECK_SECONDS": "2",
            "VOICEFLEET_FINALIZER_BUDGET_SECONDS": "20",
            # Above the stack's own operator (priority 0): kopf peering pauses that one while
            # this one runs, and it resumes when this one exits.
            "VOICEFLEET_PEERING_PRIORITY": "100",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.webhook_port}/livekit/webhook"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "voicefleet_operator"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=str(REPO),
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"operator exited with {self.proc.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.webhook_port}/healthz", timeout=1
                ):
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"operator not up within 30 s; see {self.log}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self, **env: str) -> None:
        """Stop, change the given environment variables, start again."""
        self.stop()
        self.env.update(env)
        self.start()

    # A killed replica's peering record holds its successor back for this long at most.
    restart_pause_seconds = 20
