"""Connections through the whole system, as plain helpers shared by the reconnect test plan
(tests/integration/test_reconnect_plan.py) and the connect/reconnect benchmark
(tests/bench/bench_connect.py).

- `create_letta_agent` / `delete_letta_agent`: a Letta agent of one test or benchmark, made
  like the stack's demo agent `Agent_66` (same model and embedding handles);
- `Session`: one VoiceSession driven with kubectl (`apply` creates it or raises
  `spec.connection`), its status polled until a phase;
- `talk`: join a room as the user (a real LiveKit participant), wait for the greeting, say
  one thing on `lk.chat`, wait for the answer on `lk.transcription`, leave; with the
  instants of each step, for the benchmark;
- `wait_agent_in_room`: poll LiveKit until a participant of kind AGENT is in a room, the one
  observation both the voicefleet and the baseline side of the benchmark share;
- `worker_pid`: the host process of a worker pod (the hostlet stopgap runs pods as host
  processes, with the pod's environment).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from livekit import api

sys.path.insert(0, str(Path(__file__).parent / "worker"))
sys.path.insert(0, str(Path(__file__).parent / "operator"))
from opit import Kube, OperatorProcess, operator_kubeconfig
from worker_harness import Human

DEMO_AGENT = "Agent_66"
AGENT_POLL_SECONDS = 0.05


# -- Letta ----------------------------------------------------------------------------------
def create_letta_agent(stack_env: dict[str, str], prefix: str = "plan") -> str:
    """A fresh Letta agent with empty `human` memory, on the demo agent's model."""
    from letta_client import Letta

    client = Letta(base_url=stack_env["LETTA_BASE_URL"], api_key="unused-local")
    demo = next(a for a in client.agents.list() if a.name == DEMO_AGENT)
    agent = client.agents.create(
        name=f"{prefix}-{uuid.uuid4().hex[:8]}",
        model=demo.llm_config.handle or f"openai-proxy/{demo.llm_config.model}",
        embedding=demo.embedding_config.handle or "openai/text-embedding-3-small",
        memory_blocks=[
            {"label": "human", "value": ""},
            {"label": "persona", "value": "A helpful agent."},
        ],
    )
    return str(agent.id)


def delete_letta_agent(stack_env: dict[str, str], agent_id: str) -> None:
    from letta_client import Letta

    Letta(base_url=stack_env["LETTA_BASE_URL"], api_key="unused-local").agents.delete(agent_id)


# -- the VoiceSession -----------------------------------------------------------------------
Kubectl = Callable[..., Any]  # kubectl(*args, stdin=None, check=True) -> CompletedProcess


class Session:
    """One VoiceSession driven with kubectl, as `kubectl apply -f session.yaml` users do."""

    def __init__(
        self, kubectl: Kubectl, stack_env: dict[str, str], agent_id: str, prefix: str = "plan"
    ) -> None:
        self.kubectl = kubectl
        self.env = stack_env
        self.ns = stack_env["NAMESPACE"]
        self.user = f"u{uuid.uuid4().hex[:6]}"
        self.name = f"{prefix}-{self.user}"
        self.agent_id = agent_id

    def manifest(self, connection: int, **spec: Any) -> dict[str, Any]:
        """The session at `connection`; `spec` adds or overrides spec fields."""
        return {
            "apiVersion": "voicefleet.dev/v1alpha1",
            "kind": "VoiceSession",
            "metadata": {"name": self.name, "namespace": self.ns},
            "spec": {
                "agentId": self.agent_id,
                "userIdentity": self.user,
                "connection": connection,
                "reconnectGraceSeconds": 0,
                "joinTimeoutSeconds": 120,
                **spec,
            },
        }

    def apply(self, connection: int, **spec: Any) -> None:
        """Apply the session at `connection`; `spec` adds or overrides spec fields."""
        self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(self.manifest(connection, **spec)))

    def get(self) -> dict[str, Any]:
        return dict(
            json.loads(
                self.kubectl("-n", self.ns, "get", "voicesession", self.name, "-o", "json").stdout
            )
        )

    def wait(self, phase: str, connection: int, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.get().get("status") or {}
            conn = status.get("connection") or {}
            if status.get("phase") == phase and conn.get("id") == connection:
                if phase not in ("Idle", "Failed") or conn.get("endedAt"):
                    return status
            time.sleep(0.2)
        raise AssertionError(
            f"{self.name}: not {phase} for connection {connection} in {timeout} s: {status}"
        )

    def wait_room(
        self,
        connection: int,
        timeout: float = 90,
        get: Callable[[], dict[str, Any]] | None = None,
        every: float = 0.1,
    ) -> tuple[str, str]:
        """(room, pod) of `connection` as soon as the operator has named both; the session is
        read with kubectl every `every` s, or with `get` (the benchmark's API client)."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = (get or self.get)().get("status") or {}
            conn = status.get("connection") or {}
            if conn.get("id") == connection and conn.get("room") and conn.get("pod"):
                return str(conn["room"]), str(conn["pod"])
            if status.get("phase") == "Failed" and conn.get("id") == connection:
                break
            time.sleep(every)
        raise AssertionError(
            f"{self.name}: no room and pod for connection {connection} in {timeout} s: {status}"
        )

    def pods(self) -> list[str]:
        out = self.kubectl(
            "-n",
            self.ns,
            "get",
            "pods",
            "-l",
            f"voicefleet.dev/session={self.name}",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ).stdout
        return list(out.split())

    def delete(self) -> None:
        self.kubectl(
            "-n",
            self.ns,
            "delete",
            "voicesession",
            self.name,
            "--wait=true",
            "--timeout=60s",
            check=False,
        )


# -- the warm pool ----------------------------------------------------------------------------
POOL_SELECTOR = "voicefleet.dev/pool=warm"


def warm_pool_operator(
    stack_env: dict[str, str], folder: Path, log: Path, size: int
) -> tuple[OperatorProcess, Kube]:
    """This checkout's operator with a warm pool of `size` (not started), its workers real
    processes on the host-process node like the stack's; kopf peering priority 100, so the
    stack's own operator pauses while it runs."""
    kube = Kube(stack_env)
    proc = OperatorProcess(stack_env, operator_kubeconfig(kube, stack_env, folder / "kc"), log)
    proc.env.pop("VOICEFLEET_WORKER_TOLERATIONS", None)
    proc.env["VOICEFLEET_WORKER_NODE_SELECTOR"] = json.dumps(
        {"voicefleet.dev/node-kind": "host-process"}
    )
    proc.env["VOICEFLEET_WORKER_COMMAND"] = "python -m voicefleet_worker"
    proc.env["VOICEFLEET_WARM_POOL_SIZE"] = str(size)
    return proc, kube


def ready_pool_pods(kube: Kube) -> set[str]:
    out = kube.run("-n", kube.namespace, "get", "pods", "-l", POOL_SELECTOR, "-o", "json").stdout
    ready = set()
    for pod in json.loads(out)["items"]:
        conds = (pod.get("status") or {}).get("conditions") or []
        deleting = pod["metadata"].get("deletionTimestamp")
        if not deleting and any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
            ready.add(pod["metadata"]["name"])
    return ready


def wait_pool(kube: Kube, size: int, within: float = 120.0) -> set[str]:
    """Until `size` pool workers are ready (registered, models loaded); their names."""
    deadline = time.monotonic() + within
    pods: set[str] = set()
    while time.monotonic() < deadline:
        pods = ready_pool_pods(kube)
        if len(pods) >= size:
            return pods
        time.sleep(0.25)
    raise AssertionError(f"{size} warm workers not ready in {within} s (ready: {sorted(pods)})")


def remove_pool(kube: Kube) -> None:
    kube.run(
        "-n", kube.namespace, "delete", "pods", "-l", POOL_SELECTOR, "--wait=true",
        "--timeout=60s", check=False,
    )  # fmt: skip


# -- LiveKit --------------------------------------------------------------------------------
def livekit_client(stack_env: dict[str, str]) -> api.LiveKitAPI:
    return api.LiveKitAPI(
        stack_env["LIVEKIT_URL"], stack_env["LIVEKIT_API_KEY"], stack_env["LIVEKIT_API_SECRET"]
    )


async def wait_agent_in_room(lk: api.LiveKitAPI, room: str, within: float = 90) -> float:
    """Poll LiveKit until a participant of kind AGENT is in `room`; the instant it was seen."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            listed = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
        except api.TwirpError:
            listed = None  # the room is not there yet
        if listed is not None and any(
            p.kind == api.ParticipantInfo.Kind.AGENT for p in listed.participants
        ):
            return time.monotonic()
        await asyncio.sleep(AGENT_POLL_SECONDS)
    raise AssertionError(f"no agent in room {room} within {within} s")


async def wait_agents_left(lk: api.LiveKitAPI, room: str, within: float = 60) -> None:
    """Until no AGENT participant is left in `room` (or the room is gone)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            listed = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
        except api.TwirpError:
            return
        if not any(p.kind == api.ParticipantInfo.Kind.AGENT for p in listed.participants):
            return
        await asyncio.sleep(AGENT_POLL_SECONDS * 4)
    raise AssertionError(f"an agent still in room {room} after {within} s")


async def list_rooms(stack_env: dict[str, str]) -> list[str]:
    lk = livekit_client(stack_env)
    try:
        return [r.name for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms]
    finally:
        await lk.aclose()


@dataclass
class Talk:
    """One visit of the user to a room; instants are time.monotonic() seconds."""

    answer: str
    agents: int
    joined: float
    greeted: float  # the greeting began (the agent listens) or, with `barge_in=False`, ended
    sent: float
    answer_started: float  # the agent began saying the answer
    answered: float  # ... and finished saying it
    left: float
    # With `listen`: when the user heard the answer begin (None: not heard).
    answer_heard: float | None = None

    @property
    def answer_seconds(self) -> float:
        return self.answered - self.sent


async def talk(
    stack_env: dict[str, str],
    room: str,
    user: str,
    text: str,
    expect: str,
    within: float = 60,
    on_answer: Callable[[], object] | None = None,
    barge_in: bool = False,
    microphone: bool = False,
    listen: bool = False,
) -> Talk:
    """Join `room` as `user`, say `text`, wait for an answer containing `expect`, leave.

    The user speaks once the greeting has been said, or with `barge_in` as soon as the agent
    starts greeting (it listens from then on; the words interrupt the greeting, as a user
    who comes back mid-conversation does). `microphone`: the user publishes a (silent)
    microphone track on joining, as a browser does (see `Human`). `listen`: the user hears
    the agent's audio and, with `barge_in`, speaks when the greeting's voice is heard rather
    than when its transcript begins (~0.25 s later; `greeted` is then that instant), and
    `answer_heard` says when the answer was heard. `on_answer` runs after the answer and
    before leaving (the benchmark reads RSS there)."""
    human = Human(stack_env, room, user, microphone=microphone, listen=listen)
    await human.join()
    joined = time.monotonic()
    try:
        # The agent greets once it listens; words sent before that have no one to hear them.
        if barge_in and listen:
            greeted = await human.wait_for_voice(joined, within=within)
        elif barge_in:
            greeted = await human.wait_for_speech(within=within)
        else:
            await human.wait_for(lambda t: True, within=within)
            greeted = time.monotonic()
        sent = time.monotonic()
        since = len(human.transcripts)
        await human.say_text(text)
        answer, answer_started = await human.wait_for_said(
            lambda t: expect in t, within=within, since=since
        )
        answered = time.monotonic()
        answer_heard = human.answer_voice(sent) if listen else None
        agents = len(human.agents_in_room())
        if on_answer is not None:
            on_answer()
    finally:
        await human.leave()
    return Talk(
        answer,
        agents,
        joined,
        greeted,
        sent,
        answer_started,
        answered,
        time.monotonic(),
        answer_heard,
    )


# -- worker processes on the host node ------------------------------------------------------
def worker_pid(pod: str) -> int:
    """The host process the hostlet runs for worker pod `pod`."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"VOICEFLEET_AGENT_NAME={pod}".encode() in environ:
            return int(proc.name)
    raise AssertionError(f"no worker process for pod {pod}")


def worker_log_files(stack_dir: Path, pod: str) -> list[Path]:
    """A worker pod's logs: the hostlet's file (host-0), or its containers' logs (node-0) as
    the stack's `pod-logs` part keeps them after the kubelet deleted them with the pod."""
    host = stack_dir / "logs" / "pods" / f"voicefleet_{pod}.log"
    node = sorted((stack_dir / "logs" / "pods" / f"voicefleet_{pod}" / "worker").glob("*.log*"))
    return [p for p in (host, *node) if p.exists()]


def worker_log_errors(stack_dir: Path, pods: list[str]) -> list[str]:
    """ERROR lines of the pods' logs; a pod with no log at all is an error too (a check that
    reads nothing must not pass)."""
    errors = []
    for pod in pods:
        files = worker_log_files(stack_dir, pod)
        if not files:
            errors.append(f"{pod}: no log found")
        for path in files:
            errors += [
                f"{pod}: {line}" for line in path.read_text().splitlines() if " ERROR " in line
            ]
    return errors
