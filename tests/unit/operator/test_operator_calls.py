"""Every client call waits for a slot of the client's in-flight bound and is timed for the
metrics as (call, seconds, ok); the Kubernetes and LiveKit clients share that one helper."""

from __future__ import annotations

import asyncio

import pytest
from kubernetes.aio.client import ApiClient
from kubernetes.aio.client.exceptions import ApiException
from livekit import api

from voicefleet_operator.clients.calls import timed_slot
from voicefleet_operator.clients.kube import KubeClient, KubernetesUnavailable
from voicefleet_operator.clients.livekit import LiveKitClient, LiveKitUnavailable

Observed = list[tuple[str, float, bool]]


async def test_a_call_is_timed_from_its_slot_and_ok_unless_it_raised() -> None:
    ticks = iter([10.0, 12.5, 20.0, 21.0])
    seen: Observed = []
    slots = asyncio.Semaphore(1)
    async with timed_slot(slots, "list_pods", lambda *a: seen.append(a), lambda: next(ticks)):
        pass
    with pytest.raises(RuntimeError):
        async with timed_slot(slots, "create_pod", lambda *a: seen.append(a), lambda: next(ticks)):
            raise RuntimeError("refused")
    assert seen == [("list_pods", 2.5, True), ("create_pod", 1.0, False)]
    assert not slots.locked()  # the slot is given back after a failure too


async def test_calls_beyond_the_bound_wait_for_a_slot() -> None:
    slots = asyncio.Semaphore(2)
    inside, most = 0, 0

    async def one() -> None:
        nonlocal inside, most
        async with timed_slot(slots, "call", None):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(one() for _ in range(6)))
    assert most == 2


async def _answer(value: object) -> object:
    return value


async def _refuse(exc: BaseException) -> object:
    raise exc


async def test_the_kube_client_counts_an_absent_answer_as_ok_and_a_5xx_as_failed() -> None:
    seen: Observed = []
    kube = KubeClient(ApiClient())
    kube.observe = lambda *a: seen.append(a)
    try:
        assert await kube._send("get_session", "reading", _answer("body")) == "body"
        assert await kube._send("get_session", "reading", _refuse(ApiException(404))) is None
        with pytest.raises(KubernetesUnavailable):
            await kube._send("patch_status", "patching", _refuse(ApiException(503)))
    finally:
        await kube.close()
    assert [(c, ok) for c, _, ok in seen] == [
        ("get_session", True),
        ("get_session", True),
        ("patch_status", False),
    ]


async def test_the_livekit_client_counts_a_5xx_as_failed() -> None:
    seen: Observed = []
    livekit = LiveKitClient("http://127.0.0.1:9", "key", "secret-secret-secret-secret-1234")
    livekit.observe = lambda *a: seen.append(a)
    try:
        assert await livekit._call("list_rooms", "listing", _answer(3)) == 3
        with pytest.raises(LiveKitUnavailable):
            await livekit._call(
                "create_room",
                "creating",
                _refuse(api.ServerError("unavailable", "down", status=503)),
            )
    finally:
        await livekit.aclose()
    assert [(c, ok) for c, _, ok in seen] == [("list_rooms", True), ("create_room", False)]
