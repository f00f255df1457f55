"""The worker as a real process on the real stack: LiveKit, Letta, the scripted model.

Each test starts `python -m voicefleet_worker`, creates a room, dispatches to the worker's
agent name as the operator does, and joins as a real participant with the `livekit` SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
from letta_client import AsyncLetta
from livekit import api, rtc
from worker_harness import Human, WorkerProcess, dispatch, livekit_api, unique

pytestmark = pytest.mark.integration

DEMO_AGENT = "Agent_66"


@pytest.fixture(scope="module")
def agent_id(stack_env: dict[str, str]) -> str:
    async def find() -> str:
        letta = AsyncLetta(base_url=stack_env["LETTA_BASE_URL"])
        try:
            agents = [a async for a in letta.agents.list(name=DEMO_AGENT) if a.name == DEMO_AGENT]
        finally:
            await letta.close()
        assert agents, f"the stack has no {DEMO_AGENT}"
        return agents[0].id

    return asyncio.run(find())


@pytest.fixture
def workers(stack_env: dict[str, str], tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    """Worker processes started by a test; any still running at the end are killed."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.kill()


@contextlib.asynccontextmanager
async def livekit(stack_env: dict[str, str]) -> AsyncIterator[api.LiveKitAPI]:
    client = livekit_api(stack_env)
    try:
        yield client
    finally:
        await client.aclose()


def start_worker(
    stack_env: dict[str, str], workers: list[WorkerProcess], tmp_path: Path, **kwargs: object
) -> WorkerProcess:
    worker = WorkerProcess(stack_env, tmp_path / f"worker-{len(workers) + 1}.log", **kwargs)  # type: ignore[arg-type]
    workers.append(worker)
    worker.start()
    seconds = worker.wait_ready()
    print(
        f"\n{worker.agent_name}: ready {seconds:.2f} s after start, "
        f"RSS {worker.rss_bytes() / 2**20:.0f} MiB"
    )
    return worker


async def connect(
    stack_env: dict[str, str],
    lk: api.LiveKitAPI,
    worker: WorkerProcess,
    agent_id: str,
    *,
    connection: int = 1,
) -> Human:
    """Room + dispatch + join; returns once the agent greeted the user."""
    room = unique("vs-test")
    await dispatch(
        lk,
        room,
        worker.agent_name,
        {
            "session": "voicefleet/test",
            "agentId": agent_id,
            "connection": connection,
            "userIdentity": "alice",
        },
    )
    human = Human(stack_env, room, "alice")
    await human.join()
    await human.wait_for(lambda text: bool(text.strip()), within=30)  # the greeting
    return human


async def ask(human: Human, text: str) -> str:
    since = len(human.transcripts)
    await human.say_text(text)
    return await human.wait_for(lambda reply: bool(reply.strip()), within=45, since=since)


def errors_in(worker: WorkerProcess) -> list[str]:
    return [line for line in worker.log_path.read_text().splitlines() if " ERROR " in line]


async def test_text_on_lk_chat_is_answered_on_lk_transcription(
    stack_env: dict[str, str], workers: list[WorkerProcess], agent_id: str, tmp_path: Path
) -> None:
    async with livekit(stack_env) as lk:
        worker = start_worker(stack_env, workers, tmp_path)
        human = await connect(stack_env, lk, worker, agent_id)
        assert await ask(human, "hello from the test") == "You said: hello from the test"
        assert [p.identity for p in human.agents_in_room()] == [worker.agent_name]
        await human.leave()
        assert await asyncio.to_thread(worker.wait_exit, 30) == 0  # last human left: job over
        assert errors_in(worker) == []


async def test_memory_carries_over_to_a_fresh_worker(
    stack_env: dict[str, str], workers: list[WorkerProcess], agent_id: str, tmp_path: Path
) -> None:
    async with livekit(stack_env) as lk:
        fact = f"the test word is {secrets.token_hex(3)}"
        first = start_worker(stack_env, workers, tmp_path)
        human = await connect(stack_env, lk, first, agent_id, connection=1)
        assert await ask(human, f"remember {fact}") == f"OK, I will remember {fact}."
        await human.leave()
        assert await asyncio.to_thread(first.wait_exit, 30) == 0

        second = start_worker(stack_env, workers, tmp_path)
        human = await connect(stack_env, lk, second, agent_id, connection=2)
        assert fact in await ask(human, "what do you remember")
        await human.leave()
        assert await asyncio.to_thread(second.wait_exit, 30) == 0
        assert errors_in(first) == [] and errors_in(second) == []


async def test_sigterm_right_after_a_memory_write_flushes_it(
    stack_env: dict[str, str], workers: list[WorkerProcess], agent_id: str, tmp_path: Path
) -> None:
    async with livekit(stack_env) as lk:
        fact = f"the flushed word is {secrets.token_hex(3)}"
        worker = start_worker(stack_env, workers, tmp_path)
        human = await connect(stack_env, lk, worker, agent_id)
        await human.say_text(f"remember {fact}")
        await asyncio.sleep(0.3)  # the turn is on its way to Letta, no answer yet
        worker.terminate()
        assert await asyncio.to_thread(worker.wait_exit, 40) == 0
        await human.leave()
        log = worker.log_path.read_text()
        assert "SIGTERM received" in log and "job ended (SIGTERM)" in log

        letta = AsyncLetta(base_url=stack_env["LETTA_BASE_URL"])
        try:
            block = await letta.agents.blocks.retrieve("human", agent_id=agent_id)
        finally:
            await letta.close()
        assert fact in (block.value or "")


async def test_deleting_the_room_ends_the_job(
    stack_env: dict[str, str], workers: list[WorkerProcess], agent_id: str, tmp_path: Path
) -> None:
    async with livekit(stack_env) as lk:
        worker = start_worker(stack_env, workers, tmp_path)
        human = await connect(stack_env, lk, worker, agent_id)
        await lk.room.delete_room(api.DeleteRoomRequest(room=human.room_name))
        assert await asyncio.to_thread(worker.wait_exit, 30) == 0
        await human.leave()
        assert "job ended (room disconnected)" in worker.log_path.read_text()
        # the rtc SDK logs the data channel it lost with the room as an ERROR; ours must not
        assert [line for line in errors_in(worker) if "voicefleet_worker" in line] == []


async def test_a_used_worker_takes_no_second_job(
    stack_env: dict[str, str], workers: list[WorkerProcess], agent_id: str, tmp_path: Path
) -> None:
    async with livekit(stack_env) as lk:
        worker = start_worker(stack_env, workers, tmp_path)
        human = await connect(stack_env, lk, worker, agent_id)
        other_room = unique("vs-test-second")
        await dispatch(
            lk,
            other_room,
            worker.agent_name,
            {
                "session": "voicefleet/other",
                "agentId": agent_id,
                "connection": 1,
                "userIdentity": "bob",
            },
        )
        bob = Human(stack_env, other_room, "bob")
        await bob.join()
        await asyncio.sleep(5)
        assert bob.agents_in_room() == []
        await bob.leave()
        assert await ask(human, "still there") == "You said: still there"
        await human.leave()
        assert await asyncio.to_thread(worker.wait_exit, 30) == 0


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing")
async def test_spoken_question_is_transcribed_and_answered(
    stack_env: dict[str, str], workers: list[WorkerProcess], agent_id: str, tmp_path: Path
) -> None:
    async with livekit(stack_env) as lk:
        worker = start_worker(stack_env, workers, tmp_path)
        human = await connect(stack_env, lk, worker, agent_id)
        samples, rate = espeak_pcm("hello world", tmp_path / "hello.wav")
        source = rtc.AudioSource(rate, 1)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
        await human.room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        since = len(human.transcripts)
        await asyncio.sleep(1.0)  # let the agent subscribe
        silence = np.zeros(rate * 2, dtype=np.int16)
        await play(source, np.concatenate([silence[: rate // 2], samples, silence]), rate)
        answer = await human.wait_for(
            lambda t: t.lower().startswith("you said:"), within=45, since=since
        )
        assert "hello world" in answer.lower()
        await human.leave()
        assert await asyncio.to_thread(worker.wait_exit, 30) == 0


def espeak_pcm(text: str, path: Path) -> tuple[np.ndarray, int]:
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True)
    import wave

    with wave.open(str(path)) as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16), wav.getframerate()


async def play(source: rtc.AudioSource, samples: np.ndarray, rate: int) -> None:
    """Publish `samples` as a microphone would: 10 ms frames in real time."""
    per_frame = rate // 100
    for i in range(math.ceil(samples.size / per_frame)):
        chunk = samples[i * per_frame : (i + 1) * per_frame]
        if chunk.size < per_frame:
            chunk = np.pad(chunk, (0, per_frame - chunk.size))
        await source.capture_frame(rtc.AudioFrame(chunk.tobytes(), rate, 1, per_frame))


async def test_five_connections_in_a_row_each_answer_without_slowing_down(
    stack_env: dict[str, str], workers: list[WorkerProcess], agent_id: str, tmp_path: Path
) -> None:
    """T1/T3 at the worker's level: disconnect, wait, a fresh worker for each connection."""
    rows = []
    async with livekit(stack_env) as lk:
        for cycle in range(1, 6):
            worker = start_worker(stack_env, workers, tmp_path)
            started = time.monotonic()
            human = await connect(stack_env, lk, worker, agent_id, connection=cycle)
            greeted = time.monotonic() - started
            sent = time.monotonic()
            assert await ask(human, f"cycle {cycle}") == f"You said: cycle {cycle}"
            answered = time.monotonic() - sent
            rss = worker.rss_bytes() / 2**20
            await human.leave()
            assert await asyncio.to_thread(worker.wait_exit, 30) == 0
            assert errors_in(worker) == []
            rows.append((cycle, greeted, answered, rss))
            await asyncio.sleep(3 if cycle == 1 else 0)  # T1: reconnect after a pause
    print("\ncycle  dispatch→greeted s  message→answer s  worker RSS MiB")
    for cycle, greeted, answered, rss in rows:
        print(f"{cycle:>5}  {greeted:>18.2f}  {answered:>16.2f}  {rss:>14.0f}")
    answers = [row[2] for row in rows]
    assert max(answers[1:]) < 2 * answers[0] + 2.0
