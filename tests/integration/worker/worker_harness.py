"""Drive a real worker process and a real LiveKit participant (the integration tests' hands).

`WorkerProcess` starts `python -m voicefleet_worker` as the operator would (env of
docs/contracts.md), waits for /readyz, and stops it with SIGTERM. `Human` joins a room
with the python `livekit` SDK, sends text on `lk.chat` and collects what the agent
publishes on `lk.transcription`.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from livekit import api, rtc

_T = TypeVar("_T")

REPO_ROOT = Path(__file__).resolve().parents[3]
TOPIC_CHAT = "lk.chat"
TOPIC_TRANSCRIPTION = "lk.transcription"
AGENT_STATE = "lk.agent.state"  # participant attribute LiveKit Agents keeps up to date
VOICE_LEVEL = 300  # int16 peak above which a 10 ms frame is heard (espeak's speech: ~10,000)
VOICE_GAP = 0.1  # seconds of silence before a heard frame that make it the start of speech


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@dataclass
class WorkerProcess:
    stack_env: dict[str, str]
    log_path: Path
    agent_name: str = field(default_factory=lambda: unique("vf-worker"))
    health_port: int = field(default_factory=free_port)
    flush_timeout: float = 10.0
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    def start(self) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            # the worker of this checkout, whatever the virtualenv's editable link points at
            "PYTHONPATH": str(REPO_ROOT / "worker"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "LIVEKIT_URL": self.stack_env["LIVEKIT_URL"],
            "LIVEKIT_API_KEY": self.stack_env["LIVEKIT_API_KEY"],
            "LIVEKIT_API_SECRET": self.stack_env["LIVEKIT_API_SECRET"],
            "LETTA_BASE_URL": self.stack_env["LETTA_BASE_URL"],
            "VOICEFLEET_AGENT_NAME": self.agent_name,
            "VOICEFLEET_HEALTH_PORT": str(self.health_port),
            "VOICEFLEET_PLUGINS": "offline",
            "VOICEFLEET_FLUSH_TIMEOUT_SECONDS": str(self.flush_timeout),
            **self.extra_env,
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "voicefleet_worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def readyz(self) -> tuple[int, dict[str, object]]:
        url = f"http://127.0.0.1:{self.health_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.health_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return str(resp.read().decode())

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Block until /readyz says ready; return seconds since start."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                status, body = self.readyz()
                last = body
                if status == 200:
                    return time.monotonic() - self.started_at
            except (OSError, ValueError) as exc:
                last = exc
            time.sleep(0.1)
        raise AssertionError(f"worker not ready in {timeout} s ({last}):\n{self.log_tail()}")

    def rss_bytes(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"worker did not exit in {timeout} s:\n{self.log_tail()}"
            ) from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def livekit_api(stack_env: dict[str, str]) -> api.LiveKitAPI:
    return api.LiveKitAPI(
        stack_env["LIVEKIT_URL"], stack_env["LIVEKIT_API_KEY"], stack_env["LIVEKIT_API_SECRET"]
    )


async def dispatch(
    lk: api.LiveKitAPI, room: str, agent_name: str, metadata: dict[str, object]
) -> None:
    """What the operator does: a room, then an explicit dispatch to the worker's agent name."""
    await lk.room.create_room(api.CreateRoomRequest(name=room, empty_timeout=30))
    await lk.agent_dispatch.create_dispatch(
        api.CreateAgentDispatchRequest(
            room=room, agent_name=agent_name, metadata=json.dumps(metadata)
        )
    )


class Human:
    """A real participant: joins with a token, talks on lk.chat, reads lk.transcription."""

    def __init__(
        self,
        stack_env: dict[str, str],
        room: str,
        identity: str,
        microphone: bool = False,
        listen: bool = False,
    ) -> None:
        self.stack_env = stack_env
        self.room_name = room
        self.identity = identity
        # A browser user publishes its microphone on joining. LiveKit tells the others about
        # a participant that publishes nothing only in batches (every 3 s: livekit-server
        # pkg/rtc/room.go, subscriberUpdateInterval), so without one the agent may learn of
        # the user up to 3 s late and greets that much later.
        self.microphone = microphone
        self.room = rtc.Room()
        self.transcripts: list[tuple[str, str]] = []  # (participant identity, text)
        # time.monotonic() each transcript's stream opened, index for index with
        # `transcripts`: the agent's transcription is synchronised with its audio, so a
        # stream opens when the agent starts saying it.
        self.opened_at: list[float] = []
        self.streams_opened: list[tuple[str, float]] = []  # streams begun, finished or not
        # `listen`: the user hears the agent's audio track, as a browser plays it. A transcript
        # is paced to the audio word by word (LiveKit Agents' TranscriptionSynchronizer sends
        # a word half-way through its estimated duration), so its stream opens ~0.03-0.25 s
        # after the voice is heard; `voice_onsets` are the instants the voice begins.
        self.listen = listen
        self.voice_onsets: list[float] = []  # time.monotonic() speech began after VOICE_GAP
        self._last_voiced: float | None = None
        self.agent_states: list[tuple[float, str]] = []  # (instant, lk.agent.state)
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def join(self) -> None:
        token = (
            api.AccessToken(self.stack_env["LIVEKIT_API_KEY"], self.stack_env["LIVEKIT_API_SECRET"])
            .with_identity(self.identity)
            .with_grants(api.VideoGrants(room_join=True, room=self.room_name))
            .to_jwt()
        )
        self.room.register_text_stream_handler(TOPIC_TRANSCRIPTION, self._on_transcription)
        if self.listen:
            self.room.on("track_subscribed", self._on_track)
            self.room.on("participant_attributes_changed", self._on_attributes)
        await self.room.connect(self.stack_env["LIVEKIT_URL"], token)
        if self.microphone:  # a silent one: this user speaks on lk.chat
            track = rtc.LocalAudioTrack.create_audio_track("microphone", rtc.AudioSource(48000, 1))
            await self.room.local_participant.publish_track(
                track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            )

    def _on_attributes(self, changed: dict[str, str], participant: rtc.Participant) -> None:
        if AGENT_STATE in changed and participant.identity != self.identity:
            self.agent_states.append((time.monotonic(), changed[AGENT_STATE]))
            self._changed.set()

    def _on_track(
        self,
        track: rtc.Track,
        _publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        if track.kind != rtc.TrackKind.KIND_AUDIO or participant.identity == self.identity:
            return

        async def hear() -> None:
            stream = rtc.AudioStream(track)
            try:
                async for event in stream:
                    samples = np.frombuffer(event.frame.data, dtype=np.int16)
                    if samples.size == 0 or max(-int(samples.min()), int(samples.max())) <= (
                        VOICE_LEVEL
                    ):
                        continue
                    now = time.monotonic()
                    if self._last_voiced is None or now - self._last_voiced > VOICE_GAP:
                        self.voice_onsets.append(now)
                        self._changed.set()
                    self._last_voiced = now
            finally:
                await stream.aclose()

        task = asyncio.create_task(hear())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_for_voice(self, after: float, within: float = 30.0) -> float:
        """Until the user hears the agent begin to speak after `after` (needs `listen`)."""

        def begun() -> float | None:
            return next((t for t in self.voice_onsets if t > after), None)

        return await self._until(begun, within, lambda: "the agent's voice was not heard")

    def answer_voice(self, sent: float) -> float | None:
        """When the user heard the answer to words sent at `sent` begin: the first onset of
        the agent's voice after it started thinking about them (the words interrupt what it
        was saying, so the greeting's audio stops before that)."""
        thinking = next(
            (t for t, state in self.agent_states if t > sent and state == "thinking"), None
        )
        if thinking is None:
            return None
        return next((t for t in self.voice_onsets if t > thinking), None)

    def _on_transcription(self, reader: rtc.TextStreamReader, identity: str) -> None:
        opened = time.monotonic()
        self.streams_opened.append((identity, opened))
        self._changed.set()

        async def read() -> None:
            text = await reader.read_all()
            self.transcripts.append((identity, text))
            self.opened_at.append(opened)
            self._changed.set()

        task = asyncio.create_task(read())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def say_text(self, text: str) -> None:
        await self.room.local_participant.send_text(text, topic=TOPIC_CHAT)

    async def wait_for(
        self, predicate: Callable[[str], bool], within: float = 30.0, since: int = 0
    ) -> str:
        """The first agent transcript (index >= since) matching `predicate`."""
        return (await self.wait_for_said(predicate, within, since))[0]

    async def wait_for_said(
        self, predicate: Callable[[str], bool], within: float = 30.0, since: int = 0
    ) -> tuple[str, float]:
        """Like `wait_for`: the transcript, and the instant the agent started saying it."""

        def found() -> tuple[str, float] | None:
            for i in range(since, len(self.transcripts)):
                identity, text = self.transcripts[i]
                if identity != self.identity and predicate(text):
                    return text, self.opened_at[i]
            return None

        return await self._until(found, within, lambda: f"got {self.transcripts[since:]}")

    async def wait_for_speech(self, within: float = 30.0) -> float:
        """Until the agent starts saying something (its first transcription stream opens)."""

        def begun() -> float | None:
            return next((t for who, t in self.streams_opened if who != self.identity), None)

        return await self._until(begun, within, lambda: "the agent said nothing")

    async def _until(
        self, check: Callable[[], _T | None], within: float, what: Callable[[], str]
    ) -> _T:
        deadline = time.monotonic() + within
        while True:
            result = check()
            if result is not None:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching transcript in {within} s; {what()}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    def agents_in_room(self) -> list[rtc.RemoteParticipant]:
        return [
            p
            for p in self.room.remote_participants.values()
            if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        ]

    async def leave(self) -> None:
        await self.room.disconnect()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
