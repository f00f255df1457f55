"""Fakes of the worker's pipeline parts: a Letta server (behind httpx), STT, TTS, a job context.

`FakeLetta` speaks just enough of Letta's HTTP API for `memory.LettaMemory`, with the
scripted model's replies (`You said: ...`, `OK, I will remember ...`, the human block),
and knobs to hold a turn (a memory write in flight), or fail.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from livekit import rtc
from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions, stt, tts, utils
from livekit.agents.language import LanguageCode
from livekit.agents.types import NOT_GIVEN, NotGivenOr

AGENT_ID = "agent-66"
BASE_URL = "http://letta.test"


@dataclass
class FakeLetta:
    human_block: str = ""
    conversations_supported: bool = True
    fail_turns: bool = False
    hold_turns: asyncio.Event | None = None  # a turn's write waits for this
    turns: list[str] = field(default_factory=list)
    turn_started: asyncio.Event = field(default_factory=asyncio.Event)
    conversations: list[str] = field(default_factory=list)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle), base_url=BASE_URL)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/health/":
            return httpx.Response(200, json={"status": "ok", "version": "0.16.8-fake"})
        if path == f"/v1/agents/{AGENT_ID}":
            return httpx.Response(
                200,
                json={
                    "id": AGENT_ID,
                    "name": "Agent_66",
                    "blocks": [
                        {"id": "block-1", "label": "human", "value": self.human_block},
                        {"id": "block-2", "label": "persona", "value": "a helper"},
                    ],
                },
            )
        if path.startswith("/v1/agents/"):
            return httpx.Response(404, json={"detail": "agent not found"})
        if path == "/v1/conversations/" and request.method == "POST":
            if not self.conversations_supported:
                return httpx.Response(404, json={"detail": "Not Found"})
            conversation = f"conv-{len(self.conversations) + 1}"
            self.conversations.append(conversation)
            return httpx.Response(200, json={"id": conversation, "agent_id": AGENT_ID})
        if path.endswith("/messages") and request.method == "POST":
            return await self._turn(json.loads(request.content))
        return httpx.Response(404, json={"detail": f"no route {path}"})

    async def _turn(self, body: dict[str, Any]) -> httpx.Response:
        text = str(body.get("input") or "")
        self.turn_started.set()
        if self.fail_turns:
            return httpx.Response(500, json={"detail": "the model is down"})
        if self.hold_turns is not None:
            await self.hold_turns.wait()
        lowered = text.lower()
        if "remember " in lowered and "what do you remember" not in lowered:
            fact = text[lowered.index("remember ") + len("remember ") :].strip()
            self.human_block = (self.human_block + "\n" + fact).strip()
            reply = f"OK, I will remember {fact}."
        elif "what do you remember" in lowered:
            reply = self.human_block
        else:
            reply = f"You said: {text}"
        self.turns.append(text)
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=_sse(reply)
        )


async def _sse(reply: str) -> AsyncIterator[bytes]:
    words = reply.split(" ")
    for i, word in enumerate(words):
        delta = word if i == 0 else " " + word
        event = {
            "message_type": "assistant_message",
            "id": "message-1",
            "date": "2026-11-26T00:00:00Z",
            "content": delta,
        }
        yield f"data: {json.dumps(event)}\n\n".encode()
    yield b'data: {"message_type": "stop_reason", "stop_reason": "end_turn"}\n\n'
    yield b"data: [DONE]\n\n"


class FakeSTT(stt.STT[Any]):
    def __init__(self, text: str = "hello") -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self.text = text

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            alternatives=[stt.SpeechData(language=LanguageCode("en"), text=self.text)],
        )


class FakeTTS(tts.TTS[Any]):
    def __init__(self) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False), sample_rate=16000, num_channels=1
        )

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        return _Silence(tts=self, input_text=text, conn_options=conn_options)


class _Silence(tts.ChunkedStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(
            request_id="silence", sample_rate=16000, num_channels=1, mime_type="audio/pcm"
        )
        output_emitter.push(b"\x00\x00" * 1600)
        output_emitter.flush()


@dataclass
class FakeParticipant:
    identity: str
    kind: int = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD


class FakeRoom(rtc.EventEmitter[str]):
    def __init__(self) -> None:
        super().__init__()
        self.remote_participants: dict[str, FakeParticipant] = {}
        self.name = "room-test"

    def join(self, participant: FakeParticipant) -> None:
        self.remote_participants[participant.identity] = participant
        self.emit("participant_connected", participant)

    def leave(self, identity: str) -> None:
        participant = self.remote_participants.pop(identity)
        self.emit("participant_disconnected", participant)


class FakeJobContext:
    """The parts of livekit.agents.JobContext that VoiceJob touches."""

    def __init__(self, user: str = "alice") -> None:
        self.room = FakeRoom()
        self.user = FakeParticipant(user)
        self.room.join(self.user)
        self.shutdown_reason: str | None = None
        self.timeline: list[str] = []

    async def connect(self) -> None:
        self.timeline.append("connect")

    async def wait_for_participant(self, *, identity: str) -> FakeParticipant:
        return self.room.remote_participants[identity]

    def shutdown(self, reason: str = "") -> None:
        self.timeline.append(f"shutdown:{reason}")
        self.shutdown_reason = reason
