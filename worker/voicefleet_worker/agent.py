"""The LiveKit Agents job: one connection's voice session with a Letta brain.

`VoiceJob.run` is the whole life of a job: load Letta memory while joining the room,
start the AgentSession (Silero VAD → STT for the microphone, `lk.chat` text streams;
TTS audio and `lk.transcription` out), greet the user, and wait for the end (the last
human left, the room went away, the session closed, or the process was told to stop).
Then, in this order: stop input, flush pending Letta writes within the bound, close the
session, leave. Every task the job starts is cancelled or awaited before `run` returns.

`LettaLLM` is the LLM the session sees: each user turn goes to Letta as it is and the
reply streams back; a Letta failure becomes a spoken, transcribed apology and a metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from livekit import rtc
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    Agent,
    AgentSession,
    APIConnectOptions,
    JobContext,
    llm,
    utils,
)
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.voice import room_io

from .config import DispatchMetadata
from .memory import LettaUnavailable, MemorySnapshot
from .metrics import WorkerMetrics
from .plugins import PluginSet
from .prompts import Prompts

log = logging.getLogger(__name__)

# A user waiting longer than this for the first words of a reply hears the apology instead;
# the turn itself goes on in Letta (its memory write is a pending write the flush awaits).
FIRST_REPLY_SECONDS = 20.0

# Reasons a job ends, as they appear in logs and in the process's last line.
END_LAST_HUMAN_LEFT = "last human left"
END_ROOM_DISCONNECTED = "room disconnected"
END_SESSION_CLOSED = "session closed"


class Brain(Protocol):
    """What the job needs from its memory (memory.LettaMemory; fakes in the unit tests)."""

    async def open(self) -> MemorySnapshot: ...

    def send(self, text: str) -> AsyncGenerator[str, None]: ...

    async def flush(self, within: float) -> int: ...

    async def aclose(self) -> None: ...


class LettaLLM(llm.LLM[Any]):
    def __init__(
        self,
        brain: Brain,
        metrics: WorkerMetrics,
        apology: str,
        *,
        first_reply_seconds: float = FIRST_REPLY_SECONDS,
    ) -> None:
        super().__init__()
        self.brain = brain
        self.metrics = metrics
        self.apology = apology
        self.first_reply_seconds = first_reply_seconds
        self.ending = False  # set at job end: failures of abandoned turns are not apologised

    @property
    def model(self) -> str:
        return "letta"

    @property
    def provider(self) -> str:
        return "letta"

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        # Never retried here: a retried turn would enter Letta's memory twice.
        once = APIConnectOptions(max_retry=0, retry_interval=0, timeout=conn_options.timeout)
        return _LettaTurn(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=once)


class _LettaTurn(llm.LLMStream):
    def __init__(self, letta: LettaLLM, **kwargs: Any) -> None:
        super().__init__(letta, **kwargs)
        self._letta = letta

    async def _run(self) -> None:
        text = last_user_text(self._chat_ctx)
        if not text:
            return
        letta = self._letta
        letta.metrics.turns.inc()
        request_id = utils.shortuuid("letta_")
        started = time.monotonic()
        said_something = False
        reply = letta.brain.send(text)
        try:
            try:
                first = await asyncio.wait_for(anext(reply), letta.first_reply_seconds)
            except TimeoutError:
                raise LettaUnavailable(
                    f"no reply within {letta.first_reply_seconds:.0f} s"
                ) from None
            letta.metrics.first_token_seconds.observe(time.monotonic() - started)
            said_something = True
            self._event_ch.send_nowait(_chunk(request_id, first))
            async for delta in reply:
                self._event_ch.send_nowait(_chunk(request_id, delta))
        except StopAsyncIteration:
            return  # Letta answered with no words (a memory tool call alone, say)
        except LettaUnavailable as exc:
            if letta.ending:
                return
            log.error("Letta failed on a user turn, apologising: %s", exc)
            letta.metrics.letta_errors.labels(stage="turn").inc()
            apology = (" " if said_something else "") + letta.apology
            self._event_ch.send_nowait(_chunk(request_id, apology))
        finally:
            await reply.aclose()


def _chunk(request_id: str, content: str) -> llm.ChatChunk:
    return llm.ChatChunk(id=request_id, delta=llm.ChoiceDelta(role="assistant", content=content))


def last_user_text(chat_ctx: llm.ChatContext) -> str:
    """The newest user message: the turn to send (Letta keeps the history itself)."""
    for item in reversed(chat_ctx.items):
        if item.type == "message" and item.role == "user":
            return (item.text_content or "").strip()
    return ""


def is_human(participant: rtc.RemoteParticipant) -> bool:
    return participant.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT


@dataclass(frozen=True)
class JobDeps:
    """Everything a job gets from the composition root (models are loaded once, shared)."""

    plugins: PluginSet
    metrics: WorkerMetrics
    prompts: Prompts
    make_brain: Callable[[str], Brain]  # Letta agent id → a fresh Brain for this connection
    wait_for_stop: Callable[[], Awaitable[str]]  # returns the reason the process must stop
    flush_timeout: float
    first_reply_seconds: float = FIRST_REPLY_SECONDS


class VoiceJob:
    def __init__(self, ctx: JobContext, metadata: DispatchMetadata, deps: JobDeps) -> None:
        self._ctx = ctx
        self._meta = metadata
        self._deps = deps
        self._accepting_input = True
        self._ended = asyncio.Event()
        self._end_reason = ""
        self._session: AgentSession[None] | None = None
        self._default_text_cb = room_io.TextInputOptions().text_input_cb

    def end(self, reason: str) -> None:
        if not self._ended.is_set():
            self._end_reason = reason
            self._ended.set()

    async def run(self) -> str:
        """Serve the connection until it ends; return why it ended."""
        deps, meta, room = self._deps, self._meta, self._ctx.room
        brain = deps.make_brain(meta.agent_id)
        letta = LettaLLM(
            brain, deps.metrics, deps.prompts.apology, first_reply_seconds=deps.first_reply_seconds
        )
        tasks: list[asyncio.Task[Any]] = []
        log.info(
            "job for session %s connection %d (Letta agent %s, user %s)",
            meta.session,
            meta.connection,
            meta.agent_id,
            meta.user_identity,
        )

        def on_participant_left(participant: rtc.RemoteParticipant) -> None:
            others = [
                p
                for p in room.remote_participants.values()
                if p.identity != participant.identity and is_human(p)
            ]
            if is_human(participant) and not others:
                self.end(END_LAST_HUMAN_LEFT)

        def on_room_disconnected(*_: object) -> None:
            self.end(END_ROOM_DISCONNECTED)

        room.on("participant_disconnected", on_participant_left)
        room.on("disconnected", on_room_disconnected)
        try:
            # Memory loads while the room connects: both are on the path to the greeting.
            opening = asyncio.create_task(brain.open(), name="letta-open")
            tasks.append(opening)
            tasks.append(asyncio.create_task(self._watch_stop(), name="watch-stop"))
            session = self._session = self.make_session(letta)
            session.on("close", lambda _ev: self.end(END_SESSION_CLOSED))
            await self.start_session(session)
            tasks.append(asyncio.create_task(self._greet(session, opening), name="greet"))
            await self._ended.wait()
        finally:
            await utils.aio.cancel_and_wait(*tasks)
            room.off("participant_disconnected", on_participant_left)
            room.off("disconnected", on_room_disconnected)
            await self._finish(brain, letta)
        return self._end_reason

    @property
    def session(self) -> AgentSession[None] | None:
        return self._session

    def make_session(self, letta: LettaLLM) -> AgentSession[None]:
        plugins = self._deps.plugins
        return AgentSession(
            vad=plugins.vad,
            stt=plugins.stt,
            tts=plugins.tts,
            llm=letta,
            turn_handling={
                "turn_detection": "vad",
                # A preemptive reply would send a turn to Letta twice.
                "preemptive_generation": {"enabled": False},
            },
            user_away_timeout=None,
            # Closing would wait this long for a last transcript of the user's speech. The job
            # stops taking input before it closes (SPEC: SIGTERM stops input first), so there is
            # no turn left to transcribe: every wait here delays the exit the session's next
            # worker waits for (SPEC rule 3).
            session_close_transcript_timeout=0.0,
        )

    async def start_session(self, session: AgentSession[None]) -> None:
        """Join the room and attach the session to it (the seam the unit tests replace)."""
        await self._ctx.connect()
        await session.start(
            Agent(instructions=self._deps.prompts.instructions),
            room=self._ctx.room,
            room_options=room_io.RoomOptions(
                participant_identity=self._meta.user_identity,
                close_on_disconnect=False,  # the job ends itself: flush first, then leave
                text_input=room_io.TextInputOptions(text_input_cb=self._on_text),
            ),
            record=False,
        )

    async def _watch_stop(self) -> None:
        self.end(await self._deps.wait_for_stop())

    async def _greet(
        self, session: AgentSession[None], opening: asyncio.Task[MemorySnapshot]
    ) -> None:
        """Greet the user once they are in the room, or apologise if memory did not load."""
        try:
            snapshot = await opening
        except LettaUnavailable as exc:
            log.error("Letta memory did not load (each turn will try again): %s", exc)
            self._deps.metrics.letta_errors.labels(stage="load").inc()
            text = self._deps.prompts.apology
        else:
            log.info(
                "Letta agent %s (%s) loaded: blocks %s, conversation %s",
                snapshot.agent_id,
                snapshot.agent_name,
                ", ".join(snapshot.block_labels),
                snapshot.conversation_id or "(the agent's default)",
            )
            text = self._deps.prompts.greeting
        await self._ctx.wait_for_participant(identity=self._meta.user_identity)
        session.say(text)

    async def _on_text(self, session: AgentSession[None], event: room_io.TextInputEvent) -> None:
        if not self._accepting_input:
            log.info("text input after the job started ending: ignored")
            return
        result = self._default_text_cb(session, event)
        if result is not None:
            await result

    async def _finish(self, brain: Brain, letta: LettaLLM) -> None:
        reason = self._end_reason or "job cancelled"
        log.info("job ending (%s): stopping input, flushing Letta writes", reason)
        self._accepting_input = False
        letta.ending = True  # turns cut by the flush bound are not apologised for
        session = self._session
        if session is not None:
            with contextlib.suppress(Exception):
                session.input.set_audio_enabled(False)
        try:
            started = time.monotonic()
            abandoned = await brain.flush(self._deps.flush_timeout)
            flushed = time.monotonic()
            self._deps.metrics.flush_seconds.observe(flushed - started)
            if abandoned:
                self._deps.metrics.flush_abandoned.inc(abandoned)
            if session is not None:
                await session.aclose()
            log.info(
                "job ended: Letta writes flushed in %.2f s, session closed in %.2f s",
                flushed - started,
                time.monotonic() - flushed,
            )
        finally:
            await brain.aclose()
            self._ctx.shutdown(reason)  # the framework then leaves the room
