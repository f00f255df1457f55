"""Smoke tests that each part of the local stack is a real server doing its real job."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from livekit import api

from voicefleet_stack.kube import write_kubeconfig

pytestmark = pytest.mark.integration


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- Kubernetes ---------------------------------------------------------------------------


def test_apiserver_reports_the_pinned_kubernetes_version(kubectl) -> None:
    version = json.loads(kubectl("version", "-o", "json").stdout)
    pinned = (Path(__file__).parents[2] / "tools" / "versions.env").read_text()
    expected = next(
        line.split("=", 1)[1]
        for line in pinned.splitlines()
        if line.startswith("KUBERNETES_VERSION=")
    )
    assert version["serverVersion"]["gitVersion"] == expected


def test_namespace_is_made_and_deleted(kubectl) -> None:
    ns = _name("smoke-ns")
    kubectl("create", "namespace", ns)
    kubectl("-n", ns, "create", "configmap", "content", "--from-literal=a=b")
    kubectl("delete", "namespace", ns, "--wait=false")
    # The namespace controller must empty it and remove the finalizer.
    _wait(
        lambda: kubectl("get", "namespace", ns, check=False).returncode != 0,
        60,
        f"namespace {ns} to be deleted by the namespace controller",
    )


def test_garbage_collector_removes_owned_objects(kubectl) -> None:
    owner, child = _name("owner"), _name("child")
    kubectl("-n", "default", "create", "configmap", owner)
    uid = kubectl(
        "-n", "default", "get", "configmap", owner, "-o", "jsonpath={.metadata.uid}"
    ).stdout
    kubectl(
        "apply",
        "-f",
        "-",
        stdin=yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": child,
                    "namespace": "default",
                    "ownerReferences": [
                        {"apiVersion": "v1", "kind": "ConfigMap", "name": owner, "uid": uid}
                    ],
                },
            }
        ),
    )
    kubectl("-n", "default", "delete", "configmap", owner)
    _wait(
        lambda: kubectl("-n", "default", "get", "configmap", child, check=False).returncode != 0,
        60,
        "the garbage collector to delete the owned ConfigMap",
    )


def test_rbac_denies_an_unprivileged_service_account(
    kubectl, stack_env: dict[str, str], tmp_path: Path
) -> None:
    sa = _name("nobody")
    kubectl("-n", "default", "create", "serviceaccount", sa)
    token = kubectl("-n", "default", "create", "token", sa).stdout.strip()
    admin = yaml.safe_load(Path(stack_env["KUBECONFIG"]).read_text())
    cluster = admin["clusters"][0]["cluster"]
    # A kubeconfig with the token only: a client certificate would win over it.
    kubeconfig = write_kubeconfig(
        tmp_path / "sa.kubeconfig",
        cluster["server"],
        Path(cluster["certificate-authority"]),
        None,
        token=token,
        user=sa,
    )
    base = [f"{stack_env['VOICEFLEET_BIN']}/kubectl", f"--kubeconfig={kubeconfig}"]
    denied = subprocess.run(
        [*base, "-n", "default", "get", "secrets"], capture_output=True, text=True, timeout=30
    )
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
    assert f"system:serviceaccount:default:{sa}" in denied.stderr
    # The same token is authenticated (not merely rejected): whoami names the account.
    who = subprocess.run(
        [*base, "auth", "whoami", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert (
        json.loads(who.stdout)["status"]["userInfo"]["username"]
        == f"system:serviceaccount:default:{sa}"
    )
    can = kubectl(
        "auth",
        "can-i",
        "create",
        "pods",
        "-n",
        "default",
        f"--as=system:serviceaccount:default:{sa}",
        check=False,
    )
    assert can.stdout.strip() == "no"


def test_scheduler_binds_a_pod_and_kwok_runs_it(kubectl) -> None:
    pod = _name("smoke-pod")
    kubectl(
        "apply",
        "-f",
        "-",
        stdin=yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod, "namespace": "default"},
                "spec": {
                    "nodeSelector": {"type": "kwok"},
                    "tolerations": [
                        {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}
                    ],
                    "containers": [{"name": "c", "image": "fake.example/none:1"}],
                },
            }
        ),
    )

    def running() -> bool:
        out = kubectl("-n", "default", "get", "pod", pod, "-o", "json").stdout
        status = json.loads(out)
        return bool(status["spec"].get("nodeName")) and status["status"].get("phase") == "Running"

    _wait(running, 60, "the pod to be bound by the scheduler and Running on a kwok node")
    node = kubectl("-n", "default", "get", "pod", pod, "-o", "jsonpath={.spec.nodeName}").stdout
    assert node.startswith("kwok-node-")
    kubectl("-n", "default", "delete", "pod", pod, "--wait=true", "--timeout=60s")


# -- LiveKit ------------------------------------------------------------------------------


def _lk(stack_env: dict[str, str]) -> api.LiveKitAPI:
    return api.LiveKitAPI(
        stack_env["LIVEKIT_URL"].replace("ws://", "http://"),
        stack_env["LIVEKIT_API_KEY"],
        stack_env["LIVEKIT_API_SECRET"],
    )


def test_livekit_room_is_created_listed_deleted_and_webhooks_verify(
    stack_env: dict[str, str], stack_dir: Path
) -> None:
    room = _name("smoke-room")

    async def scenario() -> tuple[list[str], list[str]]:
        lk = _lk(stack_env)
        try:
            await lk.room.create_room(api.CreateRoomRequest(name=room, empty_timeout=30))
            listed = [r.name for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms]
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
            after = [r.name for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms]
            return listed, after
        finally:
            await lk.aclose()

    listed, after = asyncio.run(scenario())
    assert room in listed
    assert room not in after

    # LiveKit signs a webhook for the room; the operator's receiver verified it (room_started
    # is acknowledged and counted as ignored: the operator opens its rooms itself).
    _wait(
        lambda: _webhooks_counted(stack_dir, "room_started", "ignored") > 0,
        30,
        f"a verified room_started webhook for {room}",
    )


def _operator_metrics(stack_dir: Path) -> str:
    port = json.loads((stack_dir / "state.json").read_text())["ports"]["operator_metrics"]
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text


def _webhooks_counted(stack_dir: Path, event: str, result: str) -> float:
    for line in _operator_metrics(stack_dir).splitlines():
        if (
            line.startswith("voicefleet_webhooks_total{")
            and f'event="{event}"' in line
            and f'result="{result}"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_webhook_receiver_refuses_a_forged_signature(
    stack_env: dict[str, str], stack_dir: Path
) -> None:
    before = _webhooks_counted(stack_dir, "unknown", "unauthorized")
    body = json.dumps({"event": "room_finished", "room": {"name": "forged"}})
    wrong = api.AccessToken(stack_env["LIVEKIT_API_KEY"], "x" * 40)  # right key, wrong secret
    wrong.claims.sha256 = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    forged = httpx.post(
        stack_env["WEBHOOK_URL"],
        content=body,
        headers={"Authorization": wrong.to_jwt(), "Content-Type": "application/webhook+json"},
    )
    assert forged.status_code == 401
    unsigned = httpx.post(stack_env["WEBHOOK_URL"], content=body)
    assert unsigned.status_code == 401
    assert _webhooks_counted(stack_dir, "unknown", "unauthorized") == before + 2


# -- Letta and the scripted model ---------------------------------------------------------


def _letta(stack_env: dict[str, str]) -> Any:
    from letta_client import Letta

    return Letta(base_url=stack_env["LETTA_BASE_URL"], api_key="unused-local")


def _assistant_text(response: Any) -> str:
    return " ".join(m.content for m in response.messages if m.message_type == "assistant_message")


def test_demo_agent_exists(stack_env: dict[str, str]) -> None:
    names = [a.name for a in _letta(stack_env).agents.list()]
    assert "Agent_66" in names


def test_letta_memory_written_by_the_model_survives_a_restart(
    stack_env: dict[str, str], stack_dir: Path
) -> None:
    client = _letta(stack_env)
    demo = next(a for a in client.agents.list() if a.name == "Agent_66")
    agent = client.agents.create(
        name=_name("smoke-agent"),
        model=demo.llm_config.handle or f"openai-proxy/{demo.llm_config.model}",
        embedding=demo.embedding_config.handle or "openai/text-embedding-3-small",
        memory_blocks=[
            {"label": "human", "value": "Name: smoke test"},
            {"label": "persona", "value": "A terse test agent."},
        ],
    )
    try:
        labels = {b.label for b in client.agents.blocks.list(agent_id=agent.id)}
        assert {"human", "persona"} <= labels

        reply = client.agents.messages.create(
            agent.id, messages=[{"role": "user", "content": "hello there"}]
        )
        assert "You said: hello there" in _assistant_text(reply)

        fact = f"my badge number is {uuid.uuid4().hex[:6]}"
        reply = client.agents.messages.create(
            agent.id, messages=[{"role": "user", "content": f"remember {fact}"}]
        )
        assert f"OK, I will remember {fact}." in _assistant_text(reply)
        assert fact in client.agents.blocks.retrieve("human", agent_id=agent.id).value

        env = dict(os.environ, VOICEFLEET_STACK_DIR=str(stack_dir))
        subprocess.run(
            [sys.executable, "-m", "voicefleet_stack", "restart", "letta"],
            env=env,
            check=True,
            timeout=240,
        )

        client = _letta(stack_env)
        assert fact in client.agents.blocks.retrieve("human", agent_id=agent.id).value
        reply = client.agents.messages.create(
            agent.id, messages=[{"role": "user", "content": "what do you remember"}]
        )
        assert fact in _assistant_text(reply)
    finally:
        _letta(stack_env).agents.delete(agent.id)


# -- the stopgap host-process node --------------------------------------------------------

_POD_SCRIPT = """
import http.server, os, signal, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
srv = http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H)
def term(*_):
    open(os.environ["MARKER"], "w").write("terminated " + os.environ["POD_NAME"])
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
srv.serve_forever()
"""


def test_hostlet_runs_a_pod_as_a_process_and_stops_it_with_sigterm(kubectl, tmp_path: Path) -> None:
    pod = _name("host-pod")
    marker = tmp_path / "marker"
    kubectl(
        "apply",
        "-f",
        "-",
        stdin=yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod, "namespace": "default"},
                "spec": {
                    "nodeSelector": {"voicefleet.dev/node-kind": "host-process"},
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 10,
                    "containers": [
                        {
                            "name": "c",
                            "image": "ignored.example/none:1",
                            "command": ["python", "-c", _POD_SCRIPT],
                            "env": [
                                {"name": "PORT", "value": "8080"},
                                {"name": "MARKER", "value": str(marker)},
                                {
                                    "name": "POD_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                },
                            ],
                            "ports": [{"containerPort": 8080}],
                            "readinessProbe": {
                                "httpGet": {"path": "/", "port": 8080},
                                "periodSeconds": 1,
                            },
                        }
                    ],
                },
            }
        ),
    )

    def ready() -> bool:
        status = json.loads(kubectl("-n", "default", "get", "pod", pod, "-o", "json").stdout)[
            "status"
        ]
        return any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
        )

    _wait(ready, 60, "the host-process pod to pass its readiness probe")
    assert (
        kubectl("-n", "default", "get", "pod", pod, "-o", "jsonpath={.spec.nodeName}").stdout
        == "host-0"
    )
    kubectl("-n", "default", "delete", "pod", pod, "--wait=false")
    _wait(
        lambda: kubectl("-n", "default", "get", "pod", pod, check=False).returncode != 0,
        30,
        "the pod object to be removed after its process stopped",
    )
    assert marker.read_text() == f"terminated {pod}"


def test_hostlet_keeps_its_node_lease_fresh(kubectl) -> None:
    # A stale lease makes the node-lifecycle controller taint host-0 unreachable, and then
    # no worker pod can be scheduled there.
    def renew_time() -> str:
        return kubectl(
            "-n", "kube-node-lease", "get", "lease", "host-0", "-o", "jsonpath={.spec.renewTime}"
        ).stdout

    first = renew_time()
    _wait(lambda: renew_time() != first, 25, "the hostlet to renew its node lease")
    taints = kubectl("get", "node", "host-0", "-o", "jsonpath={.spec.taints}").stdout
    assert "unreachable" not in taints and "not-ready" not in taints
