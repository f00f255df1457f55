"""The gateway on the real local stack, as plain helpers shared by the integration tests
(tests/integration/web) and the browser tests (tests/e2e):

- `gateway_kubeconfig_for`: a kubeconfig of the gateway's own ServiceAccount (manifests/rbac.yaml),
  never admin;
- `start_gateway_process`: `python -m voicefleet_web` as a subprocess bound to 127.0.0.1;
- `find_letta` / `StandInLetta`: the stack's Letta when it answers, otherwise a STAND-IN
  agent directory (`Agent_66`) so the API can be tested before Letta is installed;
- `StandInOperator`: PLAYS THE OPERATOR'S PART (writes VoiceSession status with admin
  credentials) for tests that need one while the real operator is not in the stack.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[3]
GROUP, VERSION, PLURAL = "voicefleet.dev", "v1alpha1", "voicesessions"
END_ANNOTATION = "voicefleet.dev/end-connection"
GATEWAY_ACCOUNT = "voicefleet-gateway"
STAND_IN_AGENTS = [
    {"id": "agent-standin-66", "name": "Agent_66", "tags": []},
    {"id": "agent-standin-7", "name": "Agent_7", "tags": []},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def operator_running(stack_dir: Path) -> bool:
    """Whether the stack runs the real operator (a live part named like it in pids.json)."""
    pids = stack_dir / "pids.json"
    if not pids.exists():
        return False
    for part in json.loads(pids.read_text()):
        if "operator" in part["name"]:
            with contextlib.suppress(OSError):
                os.kill(int(part["pid"]), 0)
                return True
    return False


# -- Letta, or a stand-in directory ---------------------------------------------------------
@dataclass(frozen=True)
class Letta:
    url: str
    stand_in: bool
    agents: list[dict[str, Any]]

    def agent_named(self, name: str) -> dict[str, Any]:
        return next(a for a in self.agents if a["name"] == name)


class _Directory(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path in ("/v1/agents/", "/v1/agents"):
            self._send(200, STAND_IN_AGENTS)
        elif path.startswith("/v1/agents/"):
            agent = next((a for a in STAND_IN_AGENTS if a["id"] == path.rsplit("/", 1)[1]), None)
            self._send(200 if agent else 404, agent or {"detail": "Agent not found"})
        elif path == "/v1/health/":
            self._send(200, {"status": "ok"})
        else:
            self._send(404, {"detail": "not found"})

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


class StandInLetta:
    """A STAND-IN for Letta's agent list (GET /v1/agents/ and /v1/agents/{id}) on loopback."""

    def __init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Directory)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.letta = Letta(
            f"http://127.0.0.1:{self._server.server_address[1]}", True, STAND_IN_AGENTS
        )

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def find_letta(stack_env: dict[str, str]) -> Letta | None:
    """The stack's Letta server, if it answers."""
    url = stack_env.get("LETTA_BASE_URL", "")
    try:
        if httpx.get(f"{url}/v1/health/", timeout=3).status_code == 200:
            agents = httpx.get(f"{url}/v1/agents/", params={"limit": 100}, timeout=10).json()
            return Letta(url, False, agents)
    except httpx.HTTPError:
        pass
    return None


# -- the gateway ----------------------------------------------------------------------------
def gateway_kubeconfig_for(stack_env: dict[str, str], kubectl: Any, path: Path) -> Path:
    """Write a kubeconfig for ServiceAccount voicefleet-gateway (manifests/rbac.yaml) to `path`."""
    kubectl("apply", "-f", str(REPO / "manifests" / "rbac.yaml"))
    token = kubectl(
        "create",
        "token",
        GATEWAY_ACCOUNT,
        "-n",
        stack_env.get("OPERATOR_NAMESPACE", "voicefleet-system"),
        "--duration=2h",
    ).stdout.strip()
    admin = yaml.safe_load(Path(stack_env["KUBECONFIG"]).read_text())
    cluster = admin["clusters"][0]["cluster"]
    if "certificate-authority" in cluster:
        ca = Path(cluster["certificate-authority"]).read_bytes()
        cluster = {
            "server": cluster["server"],
            "certificate-authority-data": base64.b64encode(ca).decode(),
        }
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "gateway",
        "clusters": [{"name": "stack", "cluster": cluster}],
        "users": [{"name": "gateway", "user": {"token": token}}],
        "contexts": [{"name": "gateway", "context": {"cluster": "stack", "user": "gateway"}}],
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@dataclass
class Gateway:
    url: str
    token: str
    user: str
    log: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)

    def client(self, token: str | None = None, timeout: float = 60) -> httpx.Client:
        token = self.token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, timeout=timeout, headers=headers)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def letta_or_stand_in(stack_env: dict[str, str]) -> Iterator[Letta]:
    """A session fixture's body: the stack's Letta, or a STAND-IN agent directory without it."""
    found = find_letta(stack_env)
    if found is not None:
        yield found
        return
    stand_in = StandInLetta()
    yield stand_in.letta
    stand_in.stop()


class GatewayFailed(RuntimeError):
    pass


class Gateways:
    """Gateway processes started on demand, one per set of arguments, all stopped at the end."""

    def __init__(
        self,
        stack_env: dict[str, str],
        kubeconfig: Path,
        letta_url: str,
        folders: Callable[[], Path],
        default_user: str,
    ) -> None:
        self._args = (stack_env, kubeconfig, letta_url)
        self._folders, self._default_user = folders, default_user
        self._running: dict[tuple[tuple[str, str], ...], Gateway] = {}

    def start(self, user: str | None = None, **overrides: str) -> Gateway:
        user = user or self._default_user
        key = tuple(sorted({"user": user, **overrides}.items()))
        if key not in self._running:
            stack_env, kubeconfig, letta_url = self._args
            self._running[key] = start_gateway_process(
                stack_env,
                kubeconfig=kubeconfig,
                letta_url=letta_url,
                log=self._folders() / "gateway.log",
                user=user,
                **overrides,
            )
        return self._running[key]

    def stop_all(self) -> None:
        for gateway in self._running.values():
            gateway.stop()

    def serve(self) -> Iterator[Callable[..., Gateway]]:
        """A session fixture's body: yields start(user=None, **env), stops them all after."""
        import pytest

        def start(user: str | None = None, **overrides: str) -> Gateway:
            try:
                return self.start(user, **overrides)
            except GatewayFailed as exc:
                pytest.fail(str(exc))

        yield start
        self.stop_all()


def start_gateway_process(
    stack_env: dict[str, str],
    *,
    kubeconfig: Path,
    letta_url: str,
    log: Path,
    user: str = "it-alice",
    **overrides: str,
) -> Gateway:
    """Start the checkout's gateway on a free loopback port; wait until /healthz answers."""
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(log.parent),
        "PYTHONPATH": os.pathsep.join(str(REPO / d) for d in ("web", "operator")),
        "KUBECONFIG": str(kubeconfig),
        "NAMESPACE": stack_env["NAMESPACE"],
        "LIVEKIT_URL": stack_env["LIVEKIT_URL"],
        "LIVEKIT_API_KEY": stack_env["LIVEKIT_API_KEY"],
        "LIVEKIT_API_SECRET": stack_env["LIVEKIT_API_SECRET"],
        "LETTA_BASE_URL": letta_url,
        "GATEWAY_TOKEN": stack_env["GATEWAY_TOKEN"],
        "GATEWAY_DEV_USER": user,
        "GATEWAY_READY_TIMEOUT_SECONDS": "30",
        "GATEWAY_IDLE_TIMEOUT_SECONDS": "30",
        "GATEWAY_REQUESTS_PER_MINUTE": "600",
        "GATEWAY_MAX_CONNECTIONS_PER_USER": "3",
        **overrides,
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "voicefleet_web", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    gateway = Gateway(f"http://127.0.0.1:{port}", env["GATEWAY_TOKEN"], user, log, process, env)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise GatewayFailed(f"the gateway exited ({process.returncode}): {log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{gateway.url}/healthz", timeout=1).status_code == 200:
                return gateway
        if time.monotonic() > deadline:
            gateway.stop()
            raise GatewayFailed(f"the gateway did not become healthy: {log.read_text()}")
        time.sleep(0.1)  # a process that is starting has no event to wait on


# -- a stand-in for the operator ------------------------------------------------------------
def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class StandInOperator:
    """Writes VoiceSession status like the operator would, for sessions of `users` only.

    `modes[user]`: "ready" (default), "never" (stays Connecting) or a Failed reason such as
    "CapacityExceeded". An end-connection annotation for the current connection makes it Idle.
    """

    kubeconfig: str
    namespace: str
    modes: dict[str, str] = field(default_factory=dict)
    users: set[str] = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)

    def delete_sessions(self) -> None:
        """Delete the sessions of `users` (the stand-in adds no finalizer: they go at once)."""
        from kubernetes import client, config

        api = client.CustomObjectsApi(config.new_client_from_config(self.kubeconfig))
        items = api.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)["items"]
        for obj in items:
            if (obj.get("spec") or {}).get("userIdentity") in self.users:
                with contextlib.suppress(Exception):
                    api.delete_namespaced_custom_object(
                        GROUP, VERSION, self.namespace, PLURAL, obj["metadata"]["name"]
                    )

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        return thread

    def run(self) -> None:
        from kubernetes import client, config, watch

        api = client.CustomObjectsApi(config.new_client_from_config(self.kubeconfig))
        while not self.stop.is_set():
            stream = watch.Watch().stream(
                api.list_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                timeout_seconds=2,
            )
            for event in stream:
                if self.stop.is_set():
                    break
                if event["type"] in ("ADDED", "MODIFIED"):
                    with contextlib.suppress(Exception):
                        self.reconcile(api, event["object"])

    def reconcile(self, api: Any, obj: dict[str, Any]) -> None:
        spec, meta = obj.get("spec") or {}, obj["metadata"]
        user = spec.get("userIdentity")
        if user not in self.users:
            return
        name, wanted = meta["name"], int(spec.get("connection", 1))
        status = obj.get("status") or {}
        conn = status.get("connection") or {}
        end = (meta.get("annotations") or {}).get(END_ANNOTATION)
        mode = self.modes.get(user, "ready")
        total = int(status.get("connectionsTotal", 0))
        room = f"vs-{name}-{wanted}-bcdfg"

        def write(phase: str, reason: str, started: str, **connection: Any) -> None:
            body = {
                "status": {
                    "phase": phase,
                    "connectionsTotal": total,
                    "connection": {
                        "id": wanted,
                        "startedAt": started,
                        "room": room,
                        "endedAt": None,
                        "endReason": None,
                        "failure": None,
                        "agentJoinedAt": None,
                        **connection,
                    },
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": str(phase == "Ready"),
                            "reason": reason,
                            "message": f"stand-in operator: {reason}",
                            "lastTransitionTime": _now(),
                        }
                    ],
                }
            }
            api.patch_namespaced_custom_object_status(
                GROUP, VERSION, self.namespace, PLURAL, name, body
            )

        if conn.get("id") == wanted:
            if end == str(wanted) and status.get("phase") != "Idle":
                write(
                    "Idle",
                    "ConnectionEnded",
                    conn.get("startedAt") or _now(),
                    endedAt=_now(),
                    endReason="UserLeft",
                )
            return
        total += 1
        if mode == "never":
            write("Connecting", "Connecting", _now())
        elif mode == "ready":
            write("Ready", "AgentReady", _now(), agentJoinedAt=_now())
        else:
            write("Failed", mode, _now(), failure=mode, failureMessage=f"stand-in {mode}")


# -- the operator of this checkout, in a namespace of its own --------------------------------
def _namespaced(manifest: Path, namespace: str) -> str:
    """The manifest's Roles and RoleBindings moved to `namespace` (accounts stay put)."""
    docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    for doc in docs:
        if doc["kind"] in ("Role", "RoleBinding"):
            doc["metadata"]["namespace"] = namespace
    return yaml.safe_dump_all(docs)


def create_isolated_namespace(kubectl: Any, prefix: str = "vf-gw") -> str:
    """A fresh namespace with the operator's and the gateway's Roles bound in it."""
    namespace = f"{prefix}-{os.urandom(3).hex()}"
    kubectl("create", "namespace", namespace)
    manifest = REPO / "manifests" / "rbac.yaml"  # operator and gateway (from the chart)
    kubectl("apply", "-f", "-", stdin=_namespaced(manifest, namespace))
    return namespace


class OperatorUnavailable(RuntimeError):
    pass


def start_checkout_operator(stack_env: dict[str, str], namespace: str, folder: Path) -> Any:
    """`python -m voicefleet_operator` of this checkout for `namespace`, with its own account,
    worker pods on kwok nodes; started by the operator's own test helper (opit.py)."""
    sys.path.insert(0, str(REPO / "tests" / "integration" / "operator"))
    try:
        from opit import Kube, OperatorProcess, operator_kubeconfig
    except ImportError as exc:
        raise OperatorUnavailable(f"the operator's test helpers are not available: {exc}") from None
    env = dict(stack_env, NAMESPACE=namespace)
    proc = OperatorProcess(
        env, operator_kubeconfig(Kube(env), env, folder / "kubeconfig"), folder / "operator.log"
    )
    try:
        proc.start()
    except AssertionError as exc:
        raise OperatorUnavailable(f"the operator of this checkout does not start: {exc}") from None
    return proc


def stop_checkout_operator(proc: Any, kubectl: Any, namespace: str) -> None:
    # Sessions go while the operator still runs: their finalizer needs it.
    kubectl(
        "delete",
        "voicesessions",
        "--all",
        "-n",
        namespace,
        "--wait=true",
        "--timeout=45s",
        check=False,
    )
    proc.stop()
    kubectl("delete", "namespace", namespace, "--wait=false", check=False)


# -- a stand-in for the worker -----------------------------------------------------------------
class StandInWorker:
    """PLAYS THE WORKER for the operator of this checkout (whose worker pods run on kwok and
    never start a process): when a connection is dispatched (room and pod in status), it joins
    the room as a LiveKit participant of kind AGENT, greets on `lk.transcription`, answers each
    `lk.chat` message with "You said: <text>" on `lk.transcription`, and leaves when the
    connection ends."""

    GREETING = "Hello, I am a stand-in agent."

    def __init__(self, stack_env: dict[str, str], namespace: str) -> None:
        self.env = stack_env
        self.namespace = namespace
        self.stop_event = threading.Event()
        self.rooms: list[str] = []
        self._thread = threading.Thread(target=self._main, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self._thread.join(timeout=20)

    def _main(self) -> None:
        import asyncio

        asyncio.run(self._run())

    async def _run(self) -> None:
        import asyncio

        from kubernetes import client, config

        api = client.CustomObjectsApi(config.new_client_from_config(self.env["KUBECONFIG"]))
        joined: dict[str, asyncio.Task[None]] = {}
        while not self.stop_event.is_set():
            items = await asyncio.to_thread(
                api.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL
            )
            live = set()
            for obj in items["items"]:
                conn = (obj.get("status") or {}).get("connection") or {}
                if (
                    conn.get("room")
                    and conn.get("pod")
                    and not conn.get("endedAt")
                    and not conn.get("endReason")
                ):
                    key = f"{conn['room']}|{conn['pod']}"
                    live.add(key)
                    if key not in joined:
                        joined[key] = asyncio.create_task(self._serve(conn["room"], conn["pod"]))
            for key in [k for k in joined if k not in live]:
                joined.pop(key).cancel()
            await asyncio.sleep(0.3)  # the stand-in polls; the gateway under test watches
        for task in joined.values():
            task.cancel()
        await asyncio.gather(*joined.values(), return_exceptions=True)

    async def _serve(self, room_name: str, pod: str) -> None:
        import asyncio

        from livekit import api, rtc

        grants = api.VideoGrants(room_join=True, room=room_name, agent=True)
        token = (
            api.AccessToken(self.env["LIVEKIT_API_KEY"], self.env["LIVEKIT_API_SECRET"])
            .with_identity(f"agent-{pod}")
            .with_kind("agent")
            .with_grants(grants)
            .to_jwt()
        )
        room = rtc.Room()
        replies: set[asyncio.Task[None]] = set()

        async def say(text: str) -> None:
            await room.local_participant.send_text(
                text,
                topic="lk.transcription",
                attributes={"lk.segment_id": os.urandom(6).hex(), "lk.transcription_final": "true"},
            )

        def on_chat(reader: Any, sender: str) -> None:
            async def answer() -> None:
                text = await reader.read_all()
                await say(f"You said: {text}")

            task = asyncio.get_running_loop().create_task(answer())
            replies.add(task)
            task.add_done_callback(replies.discard)

        user_here = asyncio.Event()

        def on_participant(participant: Any) -> None:
            if participant.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
                user_here.set()

        room.register_text_stream_handler("lk.chat", on_chat)
        room.on("participant_connected", on_participant)
        await room.connect(self.env["LIVEKIT_URL"], token)
        self.rooms.append(room_name)
        for participant in room.remote_participants.values():
            on_participant(participant)
        try:
            await user_here.wait()
            # A browser drops data that arrives before its data channel is open, right after
            # it joined; real agents greet only after their session started, too.
            await asyncio.sleep(1.5)
            await say(self.GREETING)
            await asyncio.Event().wait()  # until cancelled: the connection ended
        finally:
            await room.disconnect()
