"""One reconcile pass at a time against fakes of Kubernetes and LiveKit (no kopf, no network)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, cast

import pytest
from opfakes import FakeKube, FakeLiveKit
from prometheus_client import CollectorRegistry

from voicefleet_operator import naming as n
from voicefleet_operator.api import parse_status
from voicefleet_operator.clients.kube import KubernetesUnavailable
from voicefleet_operator.config import Settings
from voicefleet_operator.manifests import RoomRequest
from voicefleet_operator.metrics import Metrics
from voicefleet_operator.plan import ParticipantView, RoomView
from voicefleet_operator.reconcile import (
    AgentClaims,
    RecentRooms,
    RetryLater,
    Runtime,
    reconcile_session,
    sweep_orphan_rooms,
    teardown_session,
)

Event = tuple[str, str, str]


def runtime(settings: Settings) -> tuple[Runtime, FakeKube, FakeLiveKit, list[Event]]:
    kube, lk, events = FakeKube(), FakeLiveKit(), []

    def record(body: Any, type_: str, reason: str, message: str) -> None:
        events.append((type_, reason, message))

    rt = Runtime(
        settings=settings,
        kube=cast(Any, kube),
        livekit=cast(Any, lk),
        metrics=Metrics(CollectorRegistry()),
        record_event=record,
    )
    return rt, kube, lk, events


def body(name: str = "alice-agent66", agent: str = "agent-66", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "voicefleet.dev/v1alpha1",
        "kind": "VoiceSession",
        "metadata": {
            "name": name,
            "namespace": "voicefleet",
            "uid": f"uid-{name}",
            "generation": 1,
        },
        "spec": {"agentId": agent, "userIdentity": "alice", **spec},
    }


async def connect(rt: Runtime) -> None:
    """The first two passes: the creates, then the status of what they made."""
    await reconcile_session(rt, body(), [])
    await reconcile_session(rt, body(), [])


def last_status(kube: FakeKube) -> Any:
    return parse_status(kube.status_writes[-1])


async def test_first_pass_creates_and_the_next_writes_what_it_sees(settings: Settings) -> None:
    rt, kube, lk, events = runtime(settings)
    delay = await reconcile_session(rt, body(), [])
    # Creates only: nothing to record first (derived names); the next pass runs at once.
    assert delay == 0.0 and not kube.status_writes
    assert len(lk.rooms) == 1 and len(kube.pods) == 1
    await reconcile_session(rt, body(), [])
    assert len(kube.status_writes) == 1
    status = last_status(kube)
    assert status.connection.room in lk.rooms and status.connection.pod in kube.pods
    assert status.connection.room_created_at is not None
    assert any(e[:2] == ("Normal", "ConnectionStarted") for e in events)
    pod = kube.pods[status.connection.pod]
    assert pod["spec"]["containers"][0]["image"] == settings.worker.image


async def test_a_restarted_operator_finds_what_an_unrecorded_pass_created(
    settings: Settings,
) -> None:
    """Status write lost (the operator died, or the API answered 5xx) after the creates went
    out: the next operator derives the same names, adopts the pod and room, makes no more."""
    rt, kube, lk, _ = runtime(settings)
    original = kube.patch_session_status

    async def unavailable(*_: Any) -> bool:
        raise KubernetesUnavailable("status write lost")

    kube.patch_session_status = unavailable  # type: ignore[method-assign]
    await reconcile_session(rt, body(), [])
    assert not kube.status_writes and len(kube.pods) == 1 and len(lk.rooms) == 1
    kube.patch_session_status = original  # type: ignore[method-assign]
    restarted, _, _, _ = runtime(settings)
    restarted.kube, restarted.livekit = cast(Any, kube), cast(Any, lk)
    for _ in range(3):
        await reconcile_session(restarted, body(), [])
    status = last_status(kube)
    assert set(kube.pods) == {status.connection.pod}
    assert set(lk.rooms) == {status.connection.room}


async def test_the_pass_after_a_create_neither_creates_again_nor_asks_livekit(
    settings: Settings,
) -> None:
    """kopf's pod index lags behind the create: the pod is expected, not created twice."""
    rt, kube, lk, _ = runtime(settings)
    created: list[str] = []
    create = kube.create_pod

    async def counting(namespace: str, pod: Any) -> bool:
        created.append(pod["metadata"]["name"])
        return await create(namespace, pod)

    kube.create_pod = counting  # type: ignore[method-assign]
    await reconcile_session(rt, body(), [])  # creates the room and the pod
    lk.down = True  # any LiveKit call now would fail and show on the RoomReady condition
    await reconcile_session(rt, body(), [], known_pods=())  # the index has not seen the pod
    status = last_status(kube)
    assert created == [status.connection.pod]
    assert status.condition("RoomReady").status == "True"
    assert status.condition("WorkerReady").reason == "PodNotReady"


def other_sessions_pod(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": n.worker_labels("bob-agent77", 1)}, "spec": {}}


async def test_a_pod_name_met_by_another_session_is_named_anew_after_the_409(
    settings: Settings,
) -> None:
    """Pod names are derived from the session's uid, so two sessions can meet on one (seen
    in a 1,000-session burst: one session waited on a pod that was not its own). The create
    answers 409; once the watch shows whose pod it is, the connection names its worker anew
    and leaves the other session's pod alone."""
    rt, kube, _lk, events = runtime(settings)
    met = n.pod_name(n.derived_suffix("uid-alice-agent66", "pod", 1, 0))
    kube.pods[met] = other_sessions_pod(met)  # created a moment ago: the watch lags
    await reconcile_session(rt, body(), [])  # its create of `met` answers 409
    rt.pool.seen({**kube.pods[met], "status": {"phase": "Running"}})  # the watch catches up
    await reconcile_session(rt, body(), [])
    await reconcile_session(rt, body(), [])
    status = last_status(kube)
    assert status.connection.pod != met and status.connection.pod in kube.pods
    mine = kube.pods[status.connection.pod]["metadata"]["labels"]
    assert mine[n.LABEL_SESSION] == "alice-agent66"
    assert kube.pods[met] == other_sessions_pod(met) and not kube.deleting
    assert any(e[1] == "PodNameTaken" and met in e[2] for e in events)


async def test_a_pod_name_already_seen_as_another_sessions_is_skipped(
    settings: Settings,
) -> None:
    rt, kube, _lk, events = runtime(settings)
    met = n.pod_name(n.derived_suffix("uid-alice-agent66", "pod", 1, 0))
    kube.pods[met] = other_sessions_pod(met)
    rt.pool.seen({**kube.pods[met], "status": {"phase": "Running"}})
    await connect(rt)
    status = last_status(kube)
    assert status.connection.pod not in (None, met) and len(kube.pods) == 2
    assert not any(e[1] == "PodNameTaken" for e in events)


async def test_a_pass_that_observes_the_same_world_writes_nothing(settings: Settings) -> None:
    rt, kube, _lk, _ = runtime(settings)
    await reconcile_session(rt, body(), [])
    await reconcile_session(rt, body(), [])
    writes = len(kube.status_writes)
    delay = await reconcile_session(rt, body(), [])
    assert len(kube.status_writes) == writes and delay is not None and delay > 0


async def test_ready_pod_is_dispatched_once_and_the_agent_makes_it_ready(
    settings: Settings,
) -> None:
    rt, kube, lk, _ = runtime(settings)
    await connect(rt)
    status = last_status(kube)
    kube.ready.add(status.connection.pod)
    for _ in range(3):
        await reconcile_session(rt, body(), [])
    assert [d.agent_name for d in lk.dispatches[status.connection.room]] == [status.connection.pod]
    lk.participants[status.connection.room] = [ParticipantView("agent-x", agent=True)]
    await reconcile_session(rt, body(), [])
    assert last_status(kube).phase.value == "Ready"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def with_clock(rt: Runtime) -> Clock:
    clock = Clock()
    rt.rooms = RecentRooms(rt.settings.room_check_seconds / 2, clock)
    return clock


async def test_livekit_down_is_a_condition_not_a_crash(settings: Settings) -> None:
    rt, kube, lk, _ = runtime(settings)
    clock = with_clock(rt)
    await connect(rt)  # the pass after the create takes the create's answer as its look
    lk.down = True
    clock.now += settings.room_check_seconds  # the periodic room check's pass
    delay = await reconcile_session(rt, body(), [])
    ready = last_status(kube).condition("RoomReady")
    assert ready is not None and ready.reason == "LiveKitUnavailable"
    assert delay is not None and delay > 0
    lk.down = False
    await reconcile_session(rt, body(), [])
    ready = last_status(kube).condition("RoomReady")
    assert ready is not None and ready.status == "True"


def marked(mark: str) -> dict[str, Any]:
    """The session after the webhook receiver marked it (a participant joined or left)."""
    b = body()
    b["metadata"]["annotations"] = {n.ANNOTATION_LIVEKIT_EVENT: mark}
    return b


async def test_a_starting_workers_passes_ask_livekit_only_when_the_room_may_have_changed(
    settings: Settings,
) -> None:
    """Passes woken by the worker pod's updates reuse the room's last view while the worker
    starts; a webhook's mark, the periodic room check and a ready worker ask again."""
    rt, kube, lk, _ = runtime(settings)
    clock = with_clock(rt)
    await connect(rt)  # the create's answer is the look of the pass after it
    room = last_status(kube).connection.room
    for _ in range(3):  # the pod is scheduled, its container starts, ...
        await reconcile_session(rt, body(), [])
        clock.now += 1.0
    assert lk.calls.count("observe_room") == 0
    # The user joined; LiveKit's webhook marked the session: the next pass asks, and sees.
    lk.participants[room] = [ParticipantView("alice", agent=False)]
    await reconcile_session(rt, marked("participant_joined/1/EV_1"), [])
    assert lk.calls.count("observe_room") == 1
    assert last_status(kube).connection.user_joined_at is not None
    await reconcile_session(rt, marked("participant_joined/1/EV_1"), [])
    assert lk.calls.count("observe_room") == 1
    # The periodic room check asks whatever the webhooks said (one may have been lost).
    clock.now += settings.room_check_seconds
    await reconcile_session(rt, marked("participant_joined/1/EV_1"), [])
    assert lk.calls.count("observe_room") == 2
    # The worker is ready: the pass that sees it dispatches (nothing was before), and from
    # then on every pass asks LiveKit (its dispatches, whether the agent came).
    kube.ready.add(last_status(kube).connection.pod)
    for _ in range(3):
        await reconcile_session(rt, marked("participant_joined/1/EV_1"), [])
    assert lk.calls.count("create_dispatch") == 1
    assert lk.calls.count("observe_room") == 4


def test_a_kept_room_view_is_only_for_its_room_and_mark_and_until_forgotten() -> None:
    clock = Clock()
    rooms = RecentRooms(5.0, clock)
    view = RoomView(exists=True)
    rooms.put("ns/a", "room-1", None, view)
    assert rooms.get("ns/a", "room-1", None) is view
    assert rooms.get("ns/a", "room-2", None) is None  # another connection's room
    rooms.put("ns/a", "room-1", None, view)
    assert rooms.get("ns/a", "room-1", "participant_left/1/EV_2") is None
    rooms.put("ns/a", "room-1", None, view)
    rooms.forget("ns/a")
    assert rooms.get("ns/a", "room-1", None) is None
    rooms.put("ns/a", "room-1", None, view)
    clock.now += 5.0
    assert rooms.get("ns/a", "room-1", None) is None


async def test_kubernetes_down_backs_off_and_changes_nothing(settings: Settings) -> None:
    rt, kube, lk, _ = runtime(settings)
    kube.down = True
    first = await reconcile_session(rt, body(), [])
    second = await reconcile_session(rt, body(), [])
    assert first is not None and second is not None and second > first
    assert lk.rooms == {} and kube.status_writes == []


async def test_an_invalid_spec_that_reaches_the_operator_fails_with_a_message(
    settings: Settings,
) -> None:
    rt, kube, lk, events = runtime(settings)
    await reconcile_session(rt, body(agent="agent 66"), [])
    status = last_status(kube)
    assert status.phase.value == "Failed"
    ready = status.condition("Ready")
    assert ready is not None and ready.reason == "InvalidSpec" and "agentId" in ready.message
    assert kube.pods == {} and lk.rooms == {}
    assert any(e[1] == "InvalidSpec" and e[0] == "Warning" for e in events)


async def test_two_sessions_for_one_agent_never_both_start(settings: Settings) -> None:
    rt, kube, lk, _ = runtime(settings)
    await reconcile_session(rt, body("a-1"), [])  # the index has not seen a-1's status yet
    await reconcile_session(rt, body("b-1"), [])
    assert len(lk.rooms) == 1
    b = parse_status(kube.status_writes[-1])
    ready = b.condition("Ready")
    assert ready is not None and ready.reason == "AgentBusy" and "a-1" in ready.message


async def test_a_claim_that_outlived_its_connection_does_not_block_the_agent(
    settings: Settings,
) -> None:
    """A stale claim (its holder's releasing pass never ran) is checked, dropped, not obeyed."""
    rt, _kube, lk, _ = runtime(settings)
    rt.claims.update("agent-66", "a-1", True)
    rt.statuses["voicefleet/a-1"] = parse_status({"phase": "Idle"})  # a-1 holds nothing now
    await reconcile_session(rt, body("b-1"), [])
    assert len(lk.rooms) == 1  # b-1 started
    assert rt.claims.holder("agent-66", "c-1", []) == "b-1"


async def test_deletion_waits_for_the_worker_then_deletes_the_room(settings: Settings) -> None:
    rt, kube, lk, events = runtime(settings)
    await connect(rt)
    status = last_status(kube)
    b = body() | {"status": kube.status_writes[-1]}
    rt.settings = dataclasses.replace(
        rt.settings, worker=dataclasses.replace(rt.settings.worker, flush_timeout_seconds=-14)
    )  # wait at most ~1 s here
    with pytest.raises(RetryLater):
        await teardown_session(rt, b, 0.0)
    assert status.connection.pod in kube.deleting and lk.rooms == {}
    kube.finish_deletions()
    await teardown_session(rt, b, 1.0)
    assert kube.pods == {} and ("Normal", "Deleted", "room and worker are gone") in events
    assert rt.statuses == {}


async def test_deletion_waits_inline_for_a_worker_that_goes_quickly(settings: Settings) -> None:
    rt, kube, _lk, _ = runtime(settings)
    await connect(rt)
    b = body() | {"status": kube.status_writes[-1]}

    async def kubelet() -> None:
        await asyncio.sleep(0.3)
        kube.finish_deletions()

    done = asyncio.ensure_future(kubelet())
    await teardown_session(rt, b, 0.0)
    await done
    assert kube.pods == {}


async def test_deletion_never_hangs_on_livekit(settings: Settings) -> None:
    rt, kube, lk, events = runtime(settings)
    await connect(rt)
    b = body() | {"status": kube.status_writes[-1]}
    kube.finish_deletions()
    kube.pods.clear()
    lk.down = True
    with pytest.raises(RetryLater):
        await teardown_session(rt, b, 5.0)
    await teardown_session(rt, b, settings.finalizer_budget_seconds + 1)
    assert any(e[0] == "Warning" and e[1] == "LiveKitUnavailable" for e in events)


async def test_orphan_sweep_deletes_only_rooms_no_connection_can_own(settings: Settings) -> None:
    rt, _kube, lk, _ = runtime(settings)
    meta = '{"session":"voicefleet/alice","connection":1}'
    for name in (
        "vs-alice-1-bbbbb",
        "vs-alice-2-ccccc",
        "vs-alice-2-ddddd",
        "vs-alice-3-fffff",
        "vs-bob-1-bbbbb",
        "test-room",
    ):
        lk.rooms[name] = RoomRequest(name, 1, 1, meta if "alice" in name else "")
    deleted = await sweep_orphan_rooms(rt, {"alice": (2, "vs-alice-2-ccccc")}, min_age_seconds=0)
    assert sorted(deleted) == ["vs-alice-1-bbbbb", "vs-alice-2-ddddd"]
    assert "vs-alice-3-fffff" in lk.rooms  # newer than what this (maybe stale) view knows


async def test_orphan_sweep_deletes_rooms_of_sessions_the_api_server_no_longer_has(
    settings: Settings,
) -> None:
    rt, kube, lk, _ = runtime(settings)
    for session in ("gone", "known-elsewhere"):
        meta = f'{{"session":"voicefleet/{session}","connection":1}}'
        lk.rooms[f"vs-{session}-1-bbbbb"] = RoomRequest(f"vs-{session}-1-bbbbb", 1, 1, meta)
    kube.sessions = {"known-elsewhere"}  # exists, though this process has not seen it yet
    deleted = await sweep_orphan_rooms(rt, {}, min_age_seconds=0)
    assert deleted == ["vs-gone-1-bbbbb"]
    assert "vs-known-elsewhere-1-bbbbb" in lk.rooms
    kube.down = True  # the API server cannot say: nothing is deleted
    meta = '{"session":"voicefleet/gone","connection":1}'
    lk.rooms["vs-gone-1-ccccc"] = RoomRequest("vs-gone-1-ccccc", 1, 1, meta)
    with pytest.raises(KubernetesUnavailable):
        await sweep_orphan_rooms(rt, {}, min_age_seconds=0)
    assert "vs-gone-1-ccccc" in lk.rooms


def test_agent_claims_close_the_index_lag() -> None:
    claims = AgentClaims()
    assert claims.holder("agent-1", "a", []) is None
    claims.update("agent-1", "a", True)
    assert claims.holder("agent-1", "b", []) == "a"
    assert claims.holder("agent-1", "a", ["a"]) is None
    assert claims.holder("agent-1", "c", ["b"]) == "a"
    claims.update("agent-1", "a", False)
    assert claims.holder("agent-1", "b", []) is None
