"""The single-use lifecycle: one job only, stop requests that cross threads, readiness."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from voicefleet_worker.health import HealthServer, HealthState
from voicefleet_worker.metrics import WorkerMetrics
from voicefleet_worker.server import OneJobGate, StopSignal

GOOD_METADATA = json.dumps(
    {
        "session": "voicefleet/alice-agent66",
        "agentId": "agent-66",
        "connection": 3,
        "userIdentity": "alice",
    }
)


@dataclass
class FakeRoomInfo:
    name: str = "vs-alice-agent66-3-abcde"


@dataclass
class FakeJob:
    metadata: str = GOOD_METADATA


@dataclass
class FakeJobRequest:
    """livekit.agents.JobRequest as the gate sees it."""

    id: str
    job: FakeJob = field(default_factory=FakeJob)
    room: FakeRoomInfo = field(default_factory=FakeRoomInfo)
    accepted: dict[str, Any] | None = None
    rejected: bool = False

    async def accept(self, **kwargs: Any) -> None:
        self.accepted = kwargs

    async def reject(self, *, terminate: bool = True) -> None:
        self.rejected = True


def make_gate() -> tuple[OneJobGate, list[Any], list[str]]:
    accepted: list[Any] = []
    lost: list[str] = []
    gate = OneJobGate("voicefleet-worker-7fz2q", WorkerMetrics(), accepted.append, lost.append)
    return gate, accepted, lost


async def test_worker_takes_exactly_one_job() -> None:
    gate, accepted, lost = make_gate()
    assert gate.load() == 0.0
    first, second, third = FakeJobRequest("AJ_1"), FakeJobRequest("AJ_2"), FakeJobRequest("AJ_3")
    await gate.on_request(first)  # type: ignore[arg-type]
    await gate.on_request(second)  # type: ignore[arg-type]
    await gate.on_request(third)  # type: ignore[arg-type]
    assert first.accepted is not None and not first.rejected
    assert second.rejected and second.accepted is None
    assert third.rejected and third.accepted is None
    assert gate.load() == 1.0  # LiveKit sees a full worker from now on
    assert [m.connection for m in accepted] == [3]
    assert not lost


async def test_job_joins_under_the_agent_name_with_session_attributes() -> None:
    gate, _, _ = make_gate()
    request = FakeJobRequest("AJ_1")
    await gate.on_request(request)  # type: ignore[arg-type]
    assert request.accepted == {
        "identity": "voicefleet-worker-7fz2q",
        "name": "voicefleet",
        "attributes": {
            "voicefleet.dev/session": "voicefleet/alice-agent66",
            "voicefleet.dev/connection": "3",
        },
    }


async def test_racing_requests_get_one_job() -> None:
    gate, accepted, _ = make_gate()
    requests = [FakeJobRequest(f"AJ_{i}") for i in range(5)]
    await asyncio.gather(*(gate.on_request(r) for r in requests))  # type: ignore[arg-type]
    assert sum(r.accepted is not None for r in requests) == 1
    assert len(accepted) == 1


async def test_job_with_bad_metadata_is_refused_and_the_worker_stays_free() -> None:
    gate, accepted, _ = make_gate()
    bad = FakeJobRequest("AJ_bad", job=FakeJob(metadata='{"session": "x"}'))
    await gate.on_request(bad)  # type: ignore[arg-type]
    assert bad.rejected and not gate.taken
    good = FakeJobRequest("AJ_good")
    await gate.on_request(good)  # type: ignore[arg-type]
    assert good.accepted is not None and len(accepted) == 1


async def test_accepted_job_that_never_starts_is_reported_lost() -> None:
    gate, _, lost = make_gate()

    class Unassigned(FakeJobRequest):
        async def accept(self, **kwargs: Any) -> None:
            raise TimeoutError("assignment timed out")

    try:
        await gate.on_request(Unassigned("AJ_1"))  # type: ignore[arg-type]
    except TimeoutError:
        pass
    assert lost and "AJ_1" in lost[0]


async def test_stop_request_reaches_a_job_on_another_thread() -> None:
    stop = StopSignal()
    seen: list[str] = []
    waiting = threading.Event()

    def job_thread() -> None:
        async def job() -> None:
            waiter = asyncio.create_task(stop.wait())
            await asyncio.sleep(0)
            waiting.set()
            seen.append(await waiter)

        asyncio.run(job())

    thread = threading.Thread(target=job_thread)
    thread.start()
    assert await asyncio.to_thread(waiting.wait, 5)
    stop.request("SIGTERM")
    stop.request("SIGINT")  # the first reason wins
    await asyncio.to_thread(thread.join, 5)
    assert seen == ["SIGTERM"]


async def test_stop_requested_before_the_job_waits_is_not_lost() -> None:
    stop = StopSignal()
    stop.request("SIGTERM")
    assert stop.requested
    assert await asyncio.wait_for(stop.wait(), 1) == "SIGTERM"


async def test_ready_means_registered_models_loaded_and_letta_reachable() -> None:
    state = HealthState()
    metrics = WorkerMetrics()
    server = HealthServer(state, metrics, "127.0.0.1", 0)
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 503
                body = await resp.json()
                assert set(body["reasons"]) == {
                    "speech models not loaded",
                    "not registered with LiveKit",
                    "Letta not checked yet",
                }
            state.models_loaded = state.registered = True
            state.letta_reachable = False
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 503
                assert (await resp.json())["reasons"] == ["Letta unreachable"]
            state.letta_reachable = True
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 200
            async with http.get(f"{base}/metrics") as resp:
                text = await resp.text()
                assert "voicefleet_worker_ready 1.0" in text
                assert "process_resident_memory_bytes" in text
    finally:
        await server.aclose()
