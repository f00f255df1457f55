"""The reconnect test plan (issue 5) through the whole system on the real local stack.

VoiceSessions are applied as a user (or the gateway) would; the stack's operator makes a
room and a worker pod per connection; the pod runs on the host-process node (the hostlet
stopgap) as a real worker process; the user is a real LiveKit participant talking on
`lk.chat` and reading `lk.transcription`; the brain is the real Letta server with the
scripted model. Each test has its own Letta agent, so tests do not share memory or wait
for each other's agent (one live connection per agent).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from livekit import api

sys.path.insert(0, str(Path(__file__).parent / "worker"))
from worker_harness import Human

pytestmark = pytest.mark.integration


# -- helpers --------------------------------------------------------------------------------


@pytest.fixture
def letta_agent(stack_env: dict[str, str]) -> Any:
    from letta_client import Letta

    client = Letta(base_url=stack_env["LETTA_BASE_URL"], api_key="unused-local")
    demo = next(a for a in client.agents.list() if a.name == "Agent_66")
    agent = client.agents.create(
        name=f"plan-{uuid.uuid4().hex[:8]}",
        model=demo.llm_config.handle or f"openai-proxy/{demo.llm_config.model}",
        embedding=demo.embedding_config.handle or "openai/text-embedding-3-small",
        memory_blocks=[
            {"label": "human", "value": ""},
            {"label": "persona", "value": "A helpful agent."},
        ],
    )
    yield agent.id
    client.agents.delete(agent.id)


class Session:
    """One VoiceSession driven with kubectl, as `kubectl apply -f session.yaml` users do."""

    def __init__(self, kubectl: Any, stack_env: dict[str, str], agent_id: str) -> None:
        self.kubectl = kubectl
        self.env = stack_env
        self.ns = stack_env["NAMESPACE"]
        self.user = f"u{uuid.uuid4().hex[:6]}"
        self.name = f"plan-{self.user}"
        self.agent_id = agent_id

    def apply(self, connection: int) -> None:
        self.kubectl(
            "apply",
            "-f",
            "-",
            stdin=yaml.safe_dump(
                {
                    "apiVersion": "voicefleet.dev/v1alpha1",
                    "kind": "VoiceSession",
                    "metadata": {"name": self.name, "namespace": self.ns},
                    "spec": {
                        "agentId": self.agent_id,
                        "userIdentity": self.user,
                        "connection": connection,
                        "reconnectGraceSeconds": 0,
                        "joinTimeoutSeconds": 120,
                    },
                }
            ),
        )

    def get(self) -> dict[str, Any]:
        return json.loads(
            self.kubectl("-n", self.ns, "get", "voicesession", self.name, "-o", "json").stdout
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
        return out.split()

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


@pytest.fixture
def session(kubectl: Any, stack_env: dict[str, str], letta_agent: str) -> Any:
    s = Session(kubectl, stack_env, letta_agent)
    yield s
    s.delete()
    assert s.pods() == [], "the session's pods outlived its deletion"


async def _rooms(stack_env: dict[str, str]) -> list[str]:
    lk = api.LiveKitAPI(
        stack_env["LIVEKIT_URL"], stack_env["LIVEKIT_API_KEY"], stack_env["LIVEKIT_API_SECRET"]
    )
    try:
        return [r.name for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms]
    finally:
        await lk.aclose()


async def _talk(
    stack_env: dict[str, str], s: Session, room: str, text: str, expect: str, within: float = 60
) -> tuple[str, float, int]:
    """Join `room` as the user, say `text`, wait for an answer containing `expect`, leave."""
    human = Human(stack_env, room, s.user)
    await human.join()
    try:
        # The agent greets once it listens; words sent before that have no one to hear them.
        await human.wait_for(lambda t: True, within=within)
        t0 = time.monotonic()
        since = len(human.transcripts)
        await human.say_text(text)
        answer = await human.wait_for(lambda t: expect in t, within=within, since=since)
        agents = len(human.agents_in_room())
        return answer, time.monotonic() - t0, agents
    finally:
        await human.leave()


def _connect_and_talk(
    s: Session, connection: int, text: str, expect: str
) -> tuple[str, str, str, int]:
    s.apply(connection)  # creates the session, or asks it for a fresh connection
    status = s.wait("Ready", connection)
    room, pod = status["connection"]["room"], status["connection"]["pod"]
    answer, _, agents = asyncio.run(_talk(s.env, s, room, text, expect))
    return room, pod, answer, agents


def _worker_log_errors(stack_dir: Path, pods: list[str]) -> list[str]:
    errors = []
    for pod in pods:
        path = stack_dir / "logs" / "pods" / f"voicefleet_{pod}.log"
        if path.exists():
            errors += [
                f"{pod}: {line}" for line in path.read_text().splitlines() if " ERROR " in line
            ]
    return errors


# -- the plan -------------------------------------------------------------------------------


def test_t1_basic_reconnect_gets_a_fresh_room_and_worker(
    session: Session, stack_env: dict[str, str], stack_dir: Path
) -> None:
    room1, pod1, _, _ = _connect_and_talk(session, 1, "hello one", "You said: hello one")
    session.wait("Idle", 1)  # the user left: room and worker are torn down, awaited
    assert session.pods() == []
    assert room1 not in asyncio.run(_rooms(stack_env))
    time.sleep(3)  # T1: disconnect, wait 3 s, reconnect
    room2, pod2, _, _ = _connect_and_talk(session, 2, "hello two", "You said: hello two")
    assert room2 != room1 and pod2 != pod1
    assert _worker_log_errors(stack_dir, [pod1, pod2]) == []


def test_t2_supersede_before_the_agent_joins_gets_exactly_one_agent(session: Session) -> None:
    session.apply(1)
    session.apply(2)  # at once: connection 1 never gets its agent
    status = session.wait("Ready", 2)
    _, _, agents = asyncio.run(
        _talk(
            session.env,
            session,
            status["connection"]["room"],
            "are you alone",
            "You said: are you alone",
        )
    )
    assert agents == 1
    assert session.pods() == [status["connection"]["pod"]]


def test_t3_five_cycles_each_answer(session: Session, stack_dir: Path) -> None:
    rows = []
    pods = []
    for cycle in range(1, 6):
        t0 = time.monotonic()
        session.apply(cycle)
        status = session.wait("Ready", cycle)
        ready_s = time.monotonic() - t0
        pods.append(status["connection"]["pod"])
        _, answer_s, agents = asyncio.run(
            _talk(
                session.env,
                session,
                status["connection"]["room"],
                f"cycle {cycle}",
                f"You said: cycle {cycle}",
            )
        )
        assert agents == 1
        session.wait("Idle", cycle)
        rows.append((cycle, ready_s, answer_s))
    assert len(set(pods)) == 5, "every cycle must get a fresh worker pod"
    print("\ncycle  connect->Ready s  message->answer s")
    for cycle, ready_s, answer_s in rows:
        print(f"{cycle:5d}  {ready_s:16.2f}  {answer_s:17.2f}")
    assert _worker_log_errors(stack_dir, pods) == []


def test_t4_disconnect_right_after_a_memory_write_and_reconnect_at_once(
    session: Session, stack_dir: Path
) -> None:
    fact = f"my locker code is {uuid.uuid4().hex[:4]}"
    _, pod1, _, _ = _connect_and_talk(session, 1, f"remember {fact}", "OK, I will remember")
    session.apply(2)  # reconnect at once: the previous worker flushes before the next one loads
    status = session.wait("Ready", 2)
    answer, _, _ = asyncio.run(
        _talk(session.env, session, status["connection"]["room"], "what do you remember", fact)
    )
    assert fact in answer
    assert _worker_log_errors(stack_dir, [pod1, status["connection"]["pod"]]) == []


def test_memory_from_connection_1_is_recalled_in_connection_3(session: Session) -> None:
    fact = f"my dog is called {uuid.uuid4().hex[:5]}"
    _connect_and_talk(session, 1, f"remember {fact}", "OK, I will remember")
    session.wait("Idle", 1)
    _connect_and_talk(session, 2, "just saying hi", "You said: just saying hi")
    session.wait("Idle", 2)
    _, _, answer, _ = _connect_and_talk(session, 3, "what do you remember", fact)
    assert fact in answer


def _worker_pid(pod: str) -> int:
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


def test_a_crashed_worker_is_replaced_and_the_conversation_continues(session: Session) -> None:
    fact = f"my plant is a {uuid.uuid4().hex[:5]}"
    session.apply(1)
    status = session.wait("Ready", 1)
    room, pod = status["connection"]["room"], status["connection"]["pod"]

    async def scenario() -> str:
        human = Human(session.env, room, session.user)
        await human.join()
        try:
            await human.wait_for(lambda t: True, within=60)  # the greeting: the agent listens
            since = len(human.transcripts)
            await human.say_text(f"remember {fact}")
            await human.wait_for(lambda t: "OK, I will remember" in t, within=60, since=since)
            os.kill(_worker_pid(pod), signal.SIGKILL)  # a crash: no flush, no goodbye
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                s = session.get().get("status") or {}
                if (s.get("connection") or {}).get("restarts", 0) >= 1 and s.get(
                    "phase"
                ) == "Ready":
                    break
                await asyncio.sleep(0.5)
            else:
                raise AssertionError(
                    f"no restarted worker within 90 s: {session.get().get('status')}"
                )
            # The fresh worker greets in the same room before it listens.
            await human.wait_for(lambda t: True, within=60, since=len(human.transcripts))
            since = len(human.transcripts)
            await human.say_text("what do you remember")
            return await human.wait_for(lambda t: fact in t, within=60, since=since)
        finally:
            await human.leave()

    assert fact in asyncio.run(scenario())
