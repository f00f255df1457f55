"""Expected until seen: what this process created counts until the watch shows it, or a TTL
passes; shared by the reconcile's expectations and the warm pool's pods being started."""

from __future__ import annotations

from voicefleet_operator.expect import ExpectedUntilSeen
from voicefleet_operator.plan import PodView
from voicefleet_operator.reconcile import Expectations


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_created_item_counts_until_the_watch_shows_it() -> None:
    expected: ExpectedUntilSeen[str] = ExpectedUntilSeen(30.0, Clock())
    expected.add("a", "pod a")
    expected.add("b", "pod b")
    expected.seen(["a", "unrelated"])
    assert expected.names() == {"b"}
    assert expected.items() == ["pod b"]
    assert len(expected) == 1


def test_an_item_never_seen_is_dropped_only_after_its_ttl() -> None:
    clock = Clock()
    expected: ExpectedUntilSeen[None] = ExpectedUntilSeen(30.0, clock)
    expected.add("a", None)
    clock.now += 30.0
    expected.expire()
    assert expected.names() == {"a"}  # exactly at the TTL it still counts
    clock.now += 0.5
    expected.expire()
    assert len(expected) == 0


def test_adding_again_restarts_the_ttl() -> None:
    clock = Clock()
    expected: ExpectedUntilSeen[None] = ExpectedUntilSeen(30.0, clock)
    expected.add("a", None)
    clock.now += 20.0
    expected.add("a", None)
    clock.now += 20.0
    expected.expire()
    assert expected.names() == {"a"}


def test_expectations_add_created_pods_to_what_the_index_shows_until_it_shows_them() -> None:
    clock = Clock()
    expect = Expectations(ttl=30.0, clock=clock)
    created = PodView("voicefleet-worker-b", 1, "Pending")
    expect.created_pod("ns/s", created)
    listed = PodView("voicefleet-worker-a", 0, "Running")
    assert expect.pods("ns/s", (listed,)) == (listed, created)
    assert expect.pods("ns/other", ()) == ()
    shown = PodView("voicefleet-worker-b", 1, "Running")
    assert expect.pods("ns/s", (shown,)) == (shown,)
    assert expect.pods("ns/s", ()) == ()  # seen once: no longer expected


def test_expectations_believe_the_index_again_after_the_ttl() -> None:
    clock = Clock()
    expect = Expectations(ttl=30.0, clock=clock)
    created = PodView("voicefleet-worker-b", 1, "Pending")
    expect.created_pod("ns/s", created)
    clock.now += 31.0
    assert expect.pods("ns/s", ()) == ()
