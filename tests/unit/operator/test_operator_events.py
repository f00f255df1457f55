"""The operator's Events: queued by the reconcile pass, posted behind the work, bounded."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from voicefleet_operator import events
from voicefleet_operator.clients.kube import KubernetesUnavailable
from voicefleet_operator.events import EventPoster, TokenBucket, build_event

SESSION = {
    "apiVersion": "voicefleet.dev/v1alpha1",
    "kind": "VoiceSession",
    "metadata": {"name": "alice", "namespace": "voicefleet", "uid": "u-1"},
}
NOW = datetime(2026, 11, 26, 19, 0, 5, tzinfo=UTC)


class Kube:
    def __init__(self, failures: int = 0) -> None:
        self.posted: list[tuple[str, dict[str, Any]]] = []
        self.failures = failures
        self.gate = asyncio.Event()
        self.gate.set()

    async def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise KubernetesUnavailable("posting event: 503")
        self.posted.append((namespace, body))


def test_an_event_names_its_object_reason_and_component_and_is_cut_to_1024() -> None:
    event = build_event(SESSION, "Normal", "Dispatched", "x" * 2000, "voicefleet-operator", NOW)
    assert event["involvedObject"] == {
        "apiVersion": "voicefleet.dev/v1alpha1",
        "kind": "VoiceSession",
        "name": "alice",
        "namespace": "voicefleet",
        "uid": "u-1",
    }
    assert event["metadata"] == {"generateName": "alice.", "namespace": "voicefleet"}
    assert (event["type"], event["reason"], len(event["message"])) == ("Normal", "Dispatched", 1024)
    assert event["source"] == {"component": "voicefleet-operator"}
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2026-11-26T19:00:05Z"


async def test_recorded_events_are_posted_in_order_and_stop_drains_the_queue() -> None:
    kube = Kube()
    poster = EventPoster(kube, "voicefleet-operator", posters=1)  # type: ignore[arg-type]
    kube.gate.clear()
    poster.start()
    for reason in ("ConnectionStarted", "RoomCreated", "Dispatched"):
        poster.record(SESSION, "Normal", reason, "m")  # never waits for the API server
    assert poster.pending() >= 2 and kube.posted == []
    kube.gate.set()
    await poster.stop(drain_seconds=2.0)
    assert [b["reason"] for _, b in kube.posted] == [
        "ConnectionStarted",
        "RoomCreated",
        "Dispatched",
    ]
    assert {ns for ns, _ in kube.posted} == {"voicefleet"}


async def test_a_full_queue_drops_the_oldest_event_and_counts_it() -> None:
    dropped: list[int] = []
    poster = EventPoster(Kube(), "c", posters=1, on_dropped=lambda: dropped.append(1), queue_max=2)  # type: ignore[arg-type]
    for reason in ("A", "B", "C"):
        poster.record(SESSION, "Normal", reason, "m")
    assert poster.pending() == 2 and len(dropped) == 1
    poster.start()
    await poster.stop(drain_seconds=2.0)


async def test_an_unreachable_api_server_is_retried_then_the_event_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(events, "RETRY_SECONDS", 0.0)
    dropped: list[int] = []
    kube = Kube(failures=events.ATTEMPTS - 1)
    poster = EventPoster(kube, "c", posters=1, on_dropped=lambda: dropped.append(1))  # type: ignore[arg-type]
    poster.start()
    poster.record(SESSION, "Normal", "Retried", "m")
    await poster.stop(drain_seconds=2.0)
    assert [b["reason"] for _, b in kube.posted] == ["Retried"] and dropped == []
    kube.failures = events.ATTEMPTS
    poster.start()
    poster.record(SESSION, "Normal", "Lost", "m")
    await poster.stop(drain_seconds=2.0)
    assert [b["reason"] for _, b in kube.posted] == ["Retried"] and dropped == [1]


def test_the_bucket_gives_a_burst_of_rate_tokens_then_one_per_interval() -> None:
    now = [100.0]
    bucket = TokenBucket(4.0, monotonic=lambda: now[0])
    assert [bucket.wait_seconds() for _ in range(4)] == [0.0] * 4  # the burst
    assert bucket.wait_seconds() == pytest.approx(0.25)  # empty: the next token in 1/rate
    now[0] += 0.25
    assert bucket.wait_seconds() == 0.0
    assert bucket.wait_seconds() == pytest.approx(0.25)
    now[0] += 60.0  # an idle minute saves up no more than the burst
    assert [bucket.wait_seconds() for _ in range(5)][-1] == pytest.approx(0.25)


def test_a_bucket_of_rate_zero_never_holds_anything_back() -> None:
    bucket = TokenBucket(0.0, monotonic=lambda: 0.0)
    assert {bucket.wait_seconds() for _ in range(1000)} == {0.0}


async def test_a_rate_limited_poster_posts_everything_in_order_at_that_rate() -> None:
    kube = Kube()
    poster = EventPoster(kube, "c", posters=4, per_second=50.0)  # type: ignore[arg-type]
    for i in range(60):
        poster.record(SESSION, "Normal", f"R{i}", "m")
    poster.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await poster.stop(drain_seconds=5.0)
    # The burst of 50 goes at once, the other 10 at 50 a second: never sooner than 0.2 s.
    assert len(kube.posted) == 60 and loop.time() - started >= 0.19
    assert [b["reason"] for _, b in kube.posted] == [f"R{i}" for i in range(60)]
