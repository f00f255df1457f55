"""Every client call waits for a slot of the client's in-flight bound and is timed for the
metrics as (call, seconds, ok); the Kubernetes and LiveKit clients share that one helper."""

from __future__ import annotations

import asyncio

import pytest
from kubernetes.aio.client import ApiClient
from kubernetes.aio.client.exceptions import ApiException
from livekit import api

from voicefleet_operator.clients.calls import Priority, PrioritySlots, SharedFresh, timed_slot
from voicefleet_operator.clients.kube import KubeClient, KubernetesUnavailable, proxy_configured
from voicefleet_operator.clients.livekit import LiveKitClient, LiveKitUnavailable

Observed = list[tuple[str, float, bool]]


async def test_a_call_is_timed_from_its_slot_and_ok_unless_it_raised() -> None:
    ticks = iter([10.0, 12.5, 20.0, 21.0])
    seen: Observed = []
    slots = PrioritySlots(1)
    async with timed_slot(slots, "list_pods", lambda *a: seen.append(a), lambda: next(ticks)):
        pass
    with pytest.raises(RuntimeError):
        async with timed_slot(slots, "create_pod", lambda *a: seen.append(a), lambda: next(ticks)):
            raise RuntimeError("refused")
    assert seen == [("list_pods", 2.5, True), ("create_pod", 1.0, False)]
    assert not slots.locked()  # the slot is given back after a failure too


async def test_calls_beyond_the_bound_wait_for_a_slot() -> None:
    slots = PrioritySlots(2)
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


class Listing:
    """A fetch whose answers the test releases one at a time: answer n is the n-th call."""

    def __init__(self) -> None:
        self.started = 0
        self.starts: asyncio.Queue[int] = asyncio.Queue()
        self.release: asyncio.Queue[int | Exception] = asyncio.Queue()
        self.asked: list[frozenset[str]] = []  # the keys each call asked about

    async def next_start(self) -> int:
        """Wait until the next call starts; its number (1, 2, ...)."""
        return await asyncio.wait_for(self.starts.get(), 1.0)

    async def __call__(self, keys: frozenset[str]) -> int:
        self.asked.append(keys)
        self.started += 1
        self.starts.put_nowait(self.started)
        answer = await self.release.get()
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_callers_that_ask_together_share_one_call() -> None:
    listing = Listing()
    shared = SharedFresh(listing)
    waiting = [asyncio.create_task(shared.get(f"room-{i}")) for i in range(50)]
    assert await listing.next_start() == 1
    await listing.release.put(7)
    assert await asyncio.gather(*waiting) == [7] * 50
    assert shared.calls == 1
    assert listing.asked == [frozenset(f"room-{i}" for i in range(50))]


async def test_an_answer_is_never_older_than_the_question() -> None:
    listing = Listing()
    shared = SharedFresh(listing)
    early = asyncio.create_task(shared.get("a"))
    assert await listing.next_start() == 1
    # These ask while call 1 runs: call 1 may have read the world before they asked.
    late = [asyncio.create_task(shared.get(key)) for key in ("b", "c", "a")]
    await asyncio.sleep(0)
    await listing.release.put(1)
    assert await early == 1
    assert await listing.next_start() == 2  # the late ones' own call, shared by them
    await listing.release.put(2)
    assert await asyncio.gather(*late) == [2, 2, 2]
    assert shared.calls == 2
    # each call asked about what its own callers asked, nothing else
    assert listing.asked == [frozenset("a"), frozenset("abc")]


async def test_an_error_reaches_the_callers_of_that_call_and_the_next_call_is_fresh() -> None:
    listing = Listing()
    shared = SharedFresh(listing)
    waiting = [asyncio.create_task(shared.get(key)) for key in ("a", "b")]
    assert await listing.next_start() == 1
    await listing.release.put(LiveKitUnavailable("listing rooms: down"))
    for result in await asyncio.gather(*waiting, return_exceptions=True):
        assert isinstance(result, LiveKitUnavailable)
    again = asyncio.create_task(shared.get("c"))
    assert await listing.next_start() == 2
    await listing.release.put(3)
    assert await again == 3
    assert listing.asked == [
        frozenset("ab"),
        frozenset("c"),
    ]  # a failed call's keys are not asked again


async def test_a_cancelled_caller_does_not_cancel_the_call_the_others_wait_for() -> None:
    listing = Listing()
    shared = SharedFresh(listing)
    leaving, staying = asyncio.create_task(shared.get("a")), asyncio.create_task(shared.get("b"))
    assert await listing.next_start() == 1
    leaving.cancel()
    await listing.release.put(5)
    assert await staying == 5
    await shared.aclose()


def test_the_kube_client_trusts_the_environment_only_when_it_names_a_proxy() -> None:
    assert not proxy_configured({"HOME": "/root", "NO_PROXY": "127.0.0.1"})
    assert proxy_configured({"HTTPS_PROXY": "http://proxy:3128"})
    assert proxy_configured({"http_proxy": "http://proxy:3128"})
    assert not proxy_configured({"HTTPS_PROXY": ""})


async def test_a_freed_slot_goes_to_the_oldest_waiter_of_the_most_urgent_priority() -> None:
    slots = PrioritySlots(1)
    order: list[str] = []
    await slots.acquire()  # the one slot is taken: everyone below waits

    async def one(name: str, priority: Priority) -> None:
        async with timed_slot(slots, name, None, priority=priority):
            order.append(name)

    tasks = [
        asyncio.create_task(one(name, priority))
        for name, priority in (
            ("event-1", Priority.BACKGROUND),
            ("status-1", Priority.NORMAL),
            ("pod-1", Priority.URGENT),
            ("status-2", Priority.NORMAL),
        )
    ]
    await asyncio.sleep(0)
    assert slots.waiting() == (1, 2, 1)
    tasks.append(asyncio.create_task(one("pod-2", Priority.URGENT)))  # comes last, goes second
    await asyncio.sleep(0)
    slots.release()
    await asyncio.gather(*tasks)
    assert order == ["pod-1", "pod-2", "status-1", "status-2", "event-1"]
    assert not slots.locked() and slots.waiting() == (0, 0, 0)


async def test_a_free_slot_is_not_taken_past_a_more_urgent_waiter() -> None:
    slots = PrioritySlots(1)
    await slots.acquire()
    urgent = asyncio.create_task(slots.acquire(Priority.URGENT))
    await asyncio.sleep(0)
    slots.release()  # handed to the urgent waiter, not left free for the next comer
    await asyncio.wait_for(urgent, 1.0)
    assert slots.locked()


async def test_a_caller_cancelled_while_waiting_gives_up_its_place_not_a_slot() -> None:
    slots = PrioritySlots(1)
    await slots.acquire()
    leaving = asyncio.create_task(slots.acquire(Priority.URGENT))
    staying = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    leaving.cancel()
    await asyncio.sleep(0)
    slots.release()
    await asyncio.wait_for(staying, 1.0)  # the slot went to the caller still waiting
    assert slots.locked()
    slots.release()
    assert not slots.locked()
    with pytest.raises(ValueError):
        PrioritySlots(0)
