"""The job's behaviour with fakes of every pipeline part: Letta (over httpx), STT, TTS, room."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from livekit.agents import Agent, AgentSession
from livekit.agents.voice.run_result import ChatMessageEvent, RunResult
from livekit.plugins import silero
from worker_fakes import AGENT_ID, BASE_URL, FakeJobContext, FakeLetta, FakeSTT, FakeTTS

from voicefleet_worker.agent import (
    END_LAST_HUMAN_LEFT,
    END_ROOM_DISCONNECTED,
    JobDeps,
    VoiceJob,
    last_user_text,
)
from voicefleet_worker.config import DispatchMetadata
from voicefleet_worker.memory import LettaMemory
from voicefleet_worker.metrics import WorkerMetrics
from voicefleet_worker.plugins import PluginSet
from voicefleet_worker.prompts import Prompts
from voicefleet_worker.server import StopSignal

METADATA = DispatchMetadata(
    session="voicefleet/alice-agent66", agent_id=AGENT_ID, connection=1, user_identity="alice"
)


class RoomlessJob(VoiceJob):
    """The job with its room I/O replaced: turns are driven with `session.run(user_input=...)`."""

    async def start_session(self, session: AgentSession[None]) -> None:
        await session.start(Agent(instructions="test"))


class Harness:
    def __init__(
        self, letta: FakeLetta, *, flush_timeout: float = 5.0, first_reply_seconds: float = 10.0
    ) -> None:
        self.letta = letta
        self.metrics = WorkerMetrics()
        self.stop = StopSignal()
        self.ctx = FakeJobContext()
        self.prompts = Prompts.load()
        self.brains: list[LettaMemory] = []
        deps = JobDeps(
            plugins=PluginSet(name="fake", vad=silero.VAD.load(), stt=FakeSTT(), tts=FakeTTS()),
            metrics=self.metrics,
            prompts=self.prompts,
            make_brain=self.make_brain,
            wait_for_stop=self.stop.wait,
            flush_timeout=flush_timeout,
            first_reply_seconds=first_reply_seconds,
        )
        self.job = RoomlessJob(self.ctx, METADATA, deps)  # type: ignore[arg-type]
        self.task: asyncio.Task[str] | None = None

    def make_brain(self, agent_id: str) -> LettaMemory:
        brain = LettaMemory(BASE_URL, None, agent_id, http_client=self.letta.client())
        self.brains.append(brain)
        return brain

    async def start(self) -> AgentSession[None]:
        self.task = asyncio.create_task(self.job.run())
        for _ in range(500):  # started, and greeted (the greeting must not mix with a reply)
            session = self.job.session
            if session is not None and any(
                getattr(item, "role", None) == "assistant" for item in session.history.items
            ):
                return session
            await asyncio.sleep(0.01)
        raise AssertionError("the session did not start and greet")

    async def ended(self, within: float = 10.0) -> str:
        assert self.task is not None
        return await asyncio.wait_for(self.task, within)

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels or None)
        return value or 0.0


async def reply_to(session: AgentSession[None], text: str) -> str:
    result: RunResult[None] = await session.run(user_input=text)
    replies = [
        event.item.text_content or ""
        for event in result.events
        if isinstance(event, ChatMessageEvent) and event.item.role == "assistant"
    ]
    return " ".join(replies)


async def test_text_turn_is_answered_by_letta_in_a_fresh_conversation() -> None:
    h = Harness(FakeLetta())
    session = await h.start()
    assert await reply_to(session, "hello there") == "You said: hello there"
    assert h.letta.turns == ["hello there"]
    assert h.letta.conversations == ["conv-1"]
    h.stop.request("SIGTERM")
    assert await h.ended() == "SIGTERM"
    assert h.ctx.shutdown_reason == "SIGTERM"


async def test_memory_written_in_one_job_is_seen_by_the_next() -> None:
    letta = FakeLetta()
    first = Harness(letta)
    session = await first.start()
    assert await reply_to(session, "remember the cat is called Tom") == (
        "OK, I will remember the cat is called Tom."
    )
    first.ctx.room.leave("alice")
    assert await first.ended() == END_LAST_HUMAN_LEFT

    second = Harness(letta)
    session = await second.start()
    assert "the cat is called Tom" in await reply_to(session, "what do you remember")
    assert letta.conversations == ["conv-1", "conv-2"]  # one conversation per connection
    second.stop.request("SIGTERM")
    await second.ended()


async def test_sigterm_flushes_pending_memory_writes() -> None:
    hold = asyncio.Event()
    letta = FakeLetta(hold_turns=hold)
    h = Harness(letta, flush_timeout=5.0)
    session = await h.start()
    session.generate_reply(user_input="remember the door code is 1234")
    await asyncio.wait_for(letta.turn_started.wait(), 5)
    assert h.brains[0].pending_writes == 1

    h.stop.request("SIGTERM")
    await asyncio.sleep(0.3)  # the job is flushing: it must not have left yet
    assert h.ctx.shutdown_reason is None
    hold.set()  # Letta finishes the write
    assert await h.ended() == "SIGTERM"
    assert "the door code is 1234" in letta.human_block
    assert h.brains[0].pending_writes == 0
    assert h.ctx.timeline[-1] == "shutdown:SIGTERM"  # left only after the flush
    assert h.metric("voicefleet_worker_flush_abandoned_writes_total") == 0


async def test_flush_is_bounded_when_letta_hangs() -> None:
    letta = FakeLetta(hold_turns=asyncio.Event())  # never set: Letta hangs
    h = Harness(letta, flush_timeout=0.5)
    session = await h.start()
    session.generate_reply(user_input="remember something")
    await asyncio.wait_for(letta.turn_started.wait(), 5)
    started = time.monotonic()
    h.stop.request("SIGTERM")
    assert await h.ended() == "SIGTERM"
    assert time.monotonic() - started < 5
    assert h.metric("voicefleet_worker_flush_abandoned_writes_total") == 1
    assert h.metric("voicefleet_worker_letta_errors_total", stage="turn") == 0  # no apology at exit


async def test_letta_failure_gets_an_apology_and_a_metric() -> None:
    h = Harness(FakeLetta(fail_turns=True))
    session = await h.start()
    assert await reply_to(session, "hello") == h.prompts.apology
    assert h.metric("voicefleet_worker_letta_errors_total", stage="turn") == 1
    h.stop.request("SIGTERM")
    await h.ended()


async def test_letta_too_slow_to_answer_gets_an_apology_and_its_write_still_lands() -> None:
    hold = asyncio.Event()
    letta = FakeLetta(hold_turns=hold)
    h = Harness(letta, first_reply_seconds=0.3)
    session = await h.start()
    assert await reply_to(session, "remember the slow fact") == h.prompts.apology
    assert h.metric("voicefleet_worker_letta_errors_total", stage="turn") == 1
    hold.set()  # Letta gets there in the end: the flush at job end waits for it
    h.stop.request("SIGTERM")
    await h.ended()
    assert "the slow fact" in letta.human_block


async def test_missing_letta_agent_is_apologised_at_greeting() -> None:
    h = Harness(FakeLetta())
    h.job._meta = DispatchMetadata(
        session="s/x", agent_id="agent-missing", connection=1, user_identity="alice"
    )
    await h.start()
    for _ in range(100):
        if h.metric("voicefleet_worker_letta_errors_total", stage="load"):
            break
        await asyncio.sleep(0.02)
    assert h.metric("voicefleet_worker_letta_errors_total", stage="load") == 1
    h.stop.request("SIGTERM")
    await h.ended()


async def test_last_human_leaving_ends_the_job() -> None:
    h = Harness(FakeLetta())
    await h.start()
    h.ctx.room.leave("alice")
    assert await h.ended() == END_LAST_HUMAN_LEFT
    assert h.ctx.shutdown_reason == END_LAST_HUMAN_LEFT


async def test_room_going_away_ends_the_job() -> None:
    h = Harness(FakeLetta())
    await h.start()
    h.ctx.room.emit("disconnected", "ROOM_DELETED")
    assert await h.ended() == END_ROOM_DISCONNECTED


async def test_text_after_the_job_started_ending_is_ignored() -> None:
    h = Harness(FakeLetta())
    session = await h.start()
    h.stop.request("SIGTERM")
    await h.ended()
    from livekit.agents.voice.room_io import TextInputEvent

    await h.job._on_text(session, TextInputEvent(text="too late"))
    assert h.letta.turns == []


async def test_job_leaves_no_task_behind() -> None:
    before = set(asyncio.all_tasks())
    h = Harness(FakeLetta())
    session = await h.start()
    await reply_to(session, "hello")
    h.stop.request("SIGTERM")
    await h.ended()
    await asyncio.sleep(0.1)
    leftover = {
        t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()
    }
    assert not leftover, [t.get_name() for t in leftover]


def test_last_user_text_is_the_newest_user_message() -> None:
    from livekit.agents import llm

    ctx = llm.ChatContext()
    ctx.add_message(role="user", content="first")
    ctx.add_message(role="assistant", content="You said: first")
    ctx.add_message(role="user", content="second")
    assert last_user_text(ctx) == "second"
    assert last_user_text(llm.ChatContext()) == ""


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: Any) -> None:
    monkeypatch.setenv("LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE", "0")
