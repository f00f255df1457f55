"""The reconcile decision as tables: each SPEC.md rule as (status, observation) → plan."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from opfixtures import at

from voicefleet_operator.api import EndReason, Phase, VoiceSessionSpec, VoiceSessionStatus
from voicefleet_operator.conditions import Reason, Type
from voicefleet_operator.plan import (
    CreateDispatch,
    CreatePod,
    CreateRoom,
    DeletePod,
    DeleteRoom,
    DispatchView,
    Limits,
    Observation,
    ParticipantView,
    Plan,
    PodView,
    RecordEvent,
    RoomView,
    plan,
    plan_invalid_spec,
)

SESSION = "alice-agent66"
ROOM1 = "vs-alice-agent66-1-rrrrr"
POD1 = "voicefleet-worker-ppppp"
AGENT = ParticipantView("agent-AJ_x", agent=True)
ALICE = ParticipantView("alice", agent=False)


def spec_(**kw: Any) -> VoiceSessionSpec:
    return VoiceSessionSpec(agent_id="agent-66", user_identity="alice", **kw)


def step(spec: VoiceSessionSpec, status: VoiceSessionStatus, t: float = 0, **obs: Any) -> Plan:
    obs.setdefault("room_suffix", "rrrrr")
    obs.setdefault("pod_suffix", "ppppp")
    return plan(SESSION, spec, status, Observation(now=at(t), generation=1, **obs), Limits())


def world(p: Plan) -> list[Any]:
    return [a for a in p.actions if not isinstance(a, RecordEvent)]


def ready(p: Plan) -> tuple[str, str]:
    c = p.status.condition(Type.READY)
    assert c is not None
    return c.status, c.reason


def pod(ready: bool = True, conn: int = 1, **kw: Any) -> PodView:
    return PodView(
        name=kw.pop("name", POD1),
        connection=conn,
        phase="Running" if ready else "Pending",
        ready=ready,
        **kw,
    )


def room(*who: ParticipantView, dispatches: tuple[DispatchView, ...] | None = ()) -> RoomView:
    return RoomView(exists=True, participants=who, dispatches=dispatches)


def running(spec: VoiceSessionSpec, t: float = 0, agent: bool = True) -> VoiceSessionStatus:
    """A connection 1 with its room, its ready pod, dispatched, and (by default) the agent in."""
    p = step(spec, VoiceSessionStatus(), t)
    p = step(spec, p.status, t, room=room(), pods=(pod(ready=True),))
    if agent:
        p = step(
            spec,
            p.status,
            t,
            room=room(AGENT, dispatches=(DispatchView("d1", POD1),)),
            pods=(pod(),),
        )
    return p.status


# -- rule 1: creating a VoiceSession starts a connection at once ---------------------------
def test_new_session_opens_a_room_and_creates_a_pod_in_the_first_pass() -> None:
    p = step(spec_(), VoiceSessionStatus())
    assert world(p) == [CreateRoom(ROOM1, 1), CreatePod(POD1, 1, ROOM1)]
    assert p.status.phase is Phase.CONNECTING
    assert (p.status.connection and p.status.connection.room, p.status.connection.pod) == (
        ROOM1,
        POD1,
    )
    assert p.status.connections_total == 1


def test_creating_again_after_a_lost_status_write_reuses_the_names() -> None:
    first = step(spec_(), VoiceSessionStatus())
    again = step(spec_(), first.status, 1, room=RoomView(exists=False))
    assert world(again) == [CreateRoom(ROOM1, 1), CreatePod(POD1, 1, ROOM1)]


def test_ready_worker_gets_exactly_one_dispatch_to_its_pod_name() -> None:
    p = step(spec_(), VoiceSessionStatus())
    p = step(spec_(), p.status, 1, room=room(), pods=(pod(ready=False),))
    assert world(p) == [] and ready(p) == ("False", Reason.POD_NOT_READY)
    p = step(spec_(), p.status, 2, room=room(), pods=(pod(),))
    assert world(p) == [CreateDispatch(ROOM1, POD1, 1)]
    p = step(spec_(), p.status, 3, room=room(dispatches=(DispatchView("d1", POD1),)), pods=(pod(),))
    assert world(p) == [] and ready(p) == ("False", Reason.AGENT_NOT_JOINED)


def test_dispatch_is_not_repeated_while_livekit_is_not_asked_for_dispatches() -> None:
    p = step(spec_(), VoiceSessionStatus())
    p = step(spec_(), p.status, 1, room=room(), pods=(pod(),))
    p = step(spec_(), p.status, 2, room=room(dispatches=None), pods=(pod(),))
    assert world(p) == []


def test_agent_in_the_room_makes_the_session_ready() -> None:
    status = running(spec_())
    assert status.phase is Phase.READY
    assert status.connection is not None and status.connection.agent_joined_at is not None
    c = status.condition(Type.AGENT_JOINED)
    assert c is not None and c.status == "True"


def test_a_participant_named_like_an_agent_is_not_taken_for_one() -> None:
    p = step(spec_(), VoiceSessionStatus())
    p = step(
        spec_(),
        p.status,
        1,
        room=room(
            ParticipantView("agent-lookalike", agent=False), dispatches=(DispatchView("d1", POD1),)
        ),
        pods=(pod(),),
    )
    assert p.status.phase is Phase.CONNECTING


# -- rule 2: when a connection ends, and how ------------------------------------------------
def test_user_leaving_ends_the_connection_and_awaits_room_and_pod() -> None:
    spec = spec_()
    status = running(spec)
    p = step(spec, status, 5, room=room(AGENT, ALICE), pods=(pod(),))
    assert p.status.connection and p.status.connection.user_joined_at == at(5)
    p = step(spec, p.status, 9, room=room(AGENT), pods=(pod(),))
    assert world(p) == [DeletePod(POD1)]  # the worker leaves (SIGTERM, flush) before the room goes
    assert p.status.connection and p.status.connection.end_reason is EndReason.USER_LEFT
    assert ready(p) == ("False", Reason.ENDING)
    p = step(spec, p.status, 10, room=room(), pods=(pod(deleting=True),))
    assert p.status.connection and p.status.connection.ended_at is None and p.requeue_after == 1.0
    assert world(p) == []
    p = step(spec, p.status, 10.5, room=room(), pods=())
    assert world(p) == [DeleteRoom(ROOM1)]
    p = step(spec, p.status, 11, room=RoomView(exists=False), pods=())
    assert (
        p.status.phase is Phase.IDLE
        and p.status.connection
        and p.status.connection.ended_at == at(11)
    )
    assert ready(p) == ("False", Reason.CONNECTION_ENDED)
    assert p.requeue_after is None


def test_reconnect_grace_keeps_the_connection_for_a_returning_user() -> None:
    spec = spec_(reconnect_grace_seconds=10)
    p = step(spec, running(spec), 5, room=room(AGENT, ALICE), pods=(pod(),))
    p = step(spec, p.status, 6, room=room(AGENT), pods=(pod(),))
    assert world(p) == [] and p.requeue_after == 10
    p = step(spec, p.status, 12, room=room(AGENT, ALICE), pods=(pod(),))
    assert p.status.connection and p.status.connection.user_left_at is None
    p = step(spec, p.status, 13, room=room(AGENT), pods=(pod(),))
    p = step(spec, p.status, 22, room=room(AGENT), pods=(pod(),))
    assert world(p) == []
    p = step(spec, p.status, 23, room=room(AGENT), pods=(pod(),))
    assert p.status.connection and p.status.connection.end_reason is EndReason.USER_LEFT


def test_join_timeout_ends_a_connection_the_user_never_joins_as_idle() -> None:
    spec = spec_(join_timeout_seconds=30)
    p = step(spec, running(spec), 29, room=room(AGENT), pods=(pod(),))
    assert world(p) == [] and p.requeue_after == 1
    p = step(spec, p.status, 30, room=room(AGENT), pods=(pod(),))
    assert p.status.connection and p.status.connection.end_reason is EndReason.JOIN_TIMEOUT
    p = step(spec, p.status, 31, room=RoomView(exists=False))
    assert p.status.phase is Phase.IDLE


def test_join_timeout_without_an_agent_is_a_failure_that_says_why() -> None:
    spec = spec_(join_timeout_seconds=30)
    p = step(
        spec,
        running(spec, agent=False),
        30,
        room=room(dispatches=(DispatchView("d", POD1),)),
        pods=(pod(),),
    )
    p = step(spec, p.status, 31, room=RoomView(exists=False))
    assert p.status.phase is Phase.FAILED
    assert ready(p) == ("False", Reason.AGENT_NOT_JOINED)


def test_max_duration_ends_even_a_busy_connection() -> None:
    spec = spec_(max_duration_seconds=60, join_timeout_seconds=30)
    p = step(spec, running(spec), 10, room=room(AGENT, ALICE), pods=(pod(),))
    assert p.requeue_after is not None and p.requeue_after <= 50
    p = step(spec, p.status, 60, room=room(AGENT, ALICE), pods=(pod(),))
    assert p.status.connection and p.status.connection.end_reason is EndReason.MAX_DURATION


# -- rule 3: one worker per session; superseding; one live connection per agent ------------
def test_superseded_connection_is_torn_down_before_the_next_one_starts() -> None:
    spec1 = spec_()
    spec2 = spec_(connection=2)
    p = step(spec2, running(spec1), 5, room=room(AGENT, ALICE), pods=(pod(),))
    assert p.status.connection and p.status.connection.end_reason is EndReason.SUPERSEDED
    assert world(p) == [DeletePod(POD1)]
    p = step(spec2, p.status, 5.5, room=room(), pods=())
    assert world(p) == [DeleteRoom(ROOM1)]
    p = step(spec2, p.status, 6, room=RoomView(exists=False), pods=(pod(deleting=True),))
    assert not any(isinstance(a, CreatePod) for a in p.actions)
    p = step(spec2, p.status, 7, room=RoomView(exists=False), pods=())
    assert p.status.connection and p.status.connection.ended_at == at(7) and p.requeue_after == 0
    p = step(spec2, p.status, 7, room_suffix="sssss", pod_suffix="qqqqq")
    assert world(p) == [
        CreateRoom("vs-alice-agent66-2-sssss", 2),
        CreatePod("voicefleet-worker-qqqqq", 2, "vs-alice-agent66-2-sssss"),
    ]
    assert p.status.connections_total == 2 and p.status.phase is Phase.CONNECTING


def test_user_ending_the_current_connection_tears_it_down_to_idle() -> None:
    spec1 = spec_()
    p = step(spec1, running(spec1), 5, room=room(AGENT, ALICE), pods=(pod(),), end_requested=1)
    assert p.status.connection and p.status.connection.end_reason is EndReason.USER_LEFT
    assert world(p) == [DeletePod(POD1)]
    p = step(spec1, p.status, 5.5, room=room(), pods=(), end_requested=1)
    assert world(p) == [DeleteRoom(ROOM1)]
    p = step(spec1, p.status, 6, room=RoomView(exists=False), pods=(), end_requested=1)
    assert p.status.connection and p.status.connection.ended_at == at(6)
    assert p.status.phase is Phase.IDLE


def test_a_request_to_end_another_connection_changes_nothing() -> None:
    spec1 = spec_()
    p = step(spec1, running(spec1), 5, room=room(AGENT, ALICE), pods=(pod(),), end_requested=7)
    assert p.status.connection and p.status.connection.end_reason is None
    assert not any(isinstance(a, (DeletePod, DeleteRoom)) for a in world(p))


def test_rapid_double_bump_starts_only_the_last_connection() -> None:
    spec3 = spec_(connection=3)
    p = step(spec3, running(spec_()), 5, room=room(AGENT), pods=(pod(),))
    p = step(spec3, p.status, 6, room=RoomView(exists=False), pods=())
    p = step(spec3, p.status, 6, room_suffix="sssss", pod_suffix="qqqqq")
    assert p.status.connection and p.status.connection.id == 3
    assert [a for a in world(p) if isinstance(a, CreatePod)] == [
        CreatePod("voicefleet-worker-qqqqq", 3, "vs-alice-agent66-3-sssss")
    ]


def test_new_worker_waits_until_every_older_worker_is_gone() -> None:
    old = PodView(name="voicefleet-worker-old11", connection=1, deleting=True)
    p = step(spec_(connection=2), VoiceSessionStatus(), 0, pods=(old,))
    assert not any(isinstance(a, CreatePod) for a in p.actions)
    c = p.status.condition(Type.WORKER_READY)
    assert c is not None and c.reason == Reason.WAITING_FOR_PREVIOUS_WORKER


def test_a_second_pod_for_the_same_connection_is_deleted() -> None:
    spec = spec_()
    status = running(spec)
    extra = PodView(name="voicefleet-worker-xxxxx", connection=1, phase="Running", ready=True)
    p = step(spec, status, 1, room=room(AGENT), pods=(pod(), extra))
    assert world(p) == [DeletePod("voicefleet-worker-xxxxx")]


def test_an_operator_restarted_before_writing_status_adopts_the_pod_it_made() -> None:
    p = step(spec_(), VoiceSessionStatus())
    lost_write = p.status.model_copy(
        update={
            "connection": p.status.connection
            and p.status.connection.model_copy(update={"pod": None})
        }
    )
    again = step(
        spec_(),
        lost_write,
        1,
        room=room(),
        pods=(pod(ready=False, name="voicefleet-worker-made1"),),
    )
    assert not any(isinstance(a, CreatePod) for a in again.actions)
    assert again.status.connection and again.status.connection.pod == "voicefleet-worker-made1"


def test_busy_agent_waits_in_connecting_then_fails_at_join_timeout() -> None:
    spec = spec_(join_timeout_seconds=30)
    p = step(spec, VoiceSessionStatus(), 0, agent_holder="bob-agent66")
    assert world(p) == [] and ready(p) == ("False", Reason.AGENT_BUSY)
    assert p.status.phase is Phase.CONNECTING and p.requeue_after == 1.0
    p = step(spec, p.status, 30, agent_holder="bob-agent66")
    p = step(spec, p.status, 31, agent_holder="bob-agent66")
    assert p.status.phase is Phase.FAILED and ready(p) == ("False", Reason.AGENT_BUSY)


def test_busy_agent_freed_in_time_gets_its_room_and_worker() -> None:
    p = step(spec_(), VoiceSessionStatus(), 0, agent_holder="bob-agent66")
    p = step(spec_(), p.status, 5)
    assert world(p) == [CreateRoom(ROOM1, 1), CreatePod(POD1, 1, ROOM1)]


# -- worker failures ------------------------------------------------------------------------
def test_image_pull_errors_fail_fast_with_the_reason() -> None:
    p = step(spec_(), VoiceSessionStatus())
    p = step(
        spec_(),
        p.status,
        2,
        room=room(),
        pods=(pod(ready=False, waiting_reason="ImagePullBackOff", waiting_message="not found"),),
    )
    assert p.status.connection and p.status.connection.end_reason is EndReason.WORKER_FAILED
    assert DeletePod(POD1) in p.actions and DeleteRoom(ROOM1) not in p.actions
    p = step(spec_(), p.status, 2.5, room=room())
    assert DeleteRoom(ROOM1) in p.actions
    p = step(spec_(), p.status, 3, room=RoomView(exists=False))
    assert p.status.phase is Phase.FAILED and ready(p)[1] == Reason.IMAGE_PULL_FAILED


@pytest.mark.parametrize(
    ("waiting_reason", "message", "fatal"),
    [
        ("CreateContainerConfigError", 'secret "livekit-keys" not found', True),
        ("CreateContainerConfigError", "couldn't find key url in ConfigMap default/x", True),
        ("CreateContainerError", "invalid mount path", True),
        # The kubelet ran out of time, and will try again by itself (seen on a busy node).
        (
            "CreateContainerConfigError",
            "failed to sync secret cache: timed out waiting for the condition",
            False,
        ),
        ("CreateContainerConfigError", "failed to sync configmap cache: timed out", False),
        ("CreateContainerError", "context deadline exceeded", False),
        ("ContainerCreating", "", False),
    ],
)
def test_container_config_errors_fail_fast_unless_the_kubelet_only_timed_out(
    waiting_reason: str, message: str, fatal: bool
) -> None:
    p = step(spec_(), VoiceSessionStatus())
    waiting = pod(ready=False, waiting_reason=waiting_reason, waiting_message=message)
    p = step(spec_(), p.status, 2, room=room(), pods=(waiting,))
    conn = p.status.connection
    assert conn is not None
    if fatal:
        assert conn.end_reason is EndReason.WORKER_FAILED and DeletePod(POD1) in p.actions
        assert message in (conn.failure_message or "")
    else:
        assert conn.end_reason is None and DeletePod(POD1) not in p.actions
        worker = p.status.condition(Type.WORKER_READY)
        assert worker and worker.reason == Reason.POD_NOT_READY
        assert waiting_reason in worker.message
        # It is still bounded: the user never joins, the connection ends at the timeout.
        p = step(spec_(join_timeout_seconds=30), p.status, 33, room=room(), pods=(waiting,))
        assert p.status.connection and p.status.connection.end_reason is not None


def test_unschedulable_pods_fail_fast() -> None:
    p = step(spec_(), VoiceSessionStatus())
    p = step(
        spec_(),
        p.status,
        2,
        room=room(),
        pods=(pod(ready=False, unschedulable="0/3 nodes are available"),),
    )
    p = step(spec_(), p.status, 3, room=RoomView(exists=False))
    assert p.status.phase is Phase.FAILED and ready(p)[1] == Reason.UNSCHEDULABLE


def test_a_restarted_worker_is_dispatched_again_within_the_budget() -> None:
    spec = spec_(max_restarts=2)
    status = running(spec, agent=False)
    d = (DispatchView("d1", POD1),)
    p = step(
        spec,
        status,
        5,
        room=room(dispatches=d),
        pods=(pod(ready=False, restarts=1, waiting_reason="CrashLoopBackOff"),),
    )
    assert p.status.connection and p.status.connection.restarts == 1
    assert ready(p) == ("False", Reason.WORKER_RESTARTING)
    p = step(spec, p.status, 9, room=room(dispatches=d), pods=(pod(restarts=1),))
    assert world(p) == [CreateDispatch(ROOM1, POD1, 1, stale=("d1",))]


def test_crashes_past_max_restarts_fail_the_connection() -> None:
    spec = spec_(max_restarts=1)
    status = running(spec)
    p = step(spec, status, 5, room=room(), pods=(pod(ready=False, restarts=2),))
    assert p.status.connection and p.status.connection.end_reason is EndReason.WORKER_FAILED
    p = step(spec, p.status, 6, room=RoomView(exists=False))
    assert p.status.phase is Phase.FAILED and ready(p)[1] == Reason.WORKER_FAILED


def test_an_out_of_memory_kill_is_named_in_the_restart_event_and_the_failure() -> None:
    spec = spec_(max_restarts=1)
    oom = "OOMKilled, exit code 137"
    p = step(
        spec, running(spec), 5, room=room(), pods=(pod(ready=False, restarts=1, last_exit=oom),)
    )
    said = [a.message for a in p.actions if isinstance(a, RecordEvent)]
    assert any("restarted (1 so far)" in m and oom in m for m in said), said
    p = step(spec, p.status, 6, room=room(), pods=(pod(ready=False, restarts=2, last_exit=oom),))
    conn = p.status.connection
    assert conn and conn.end_reason is EndReason.WORKER_FAILED
    assert oom in (conn.failure_message or "")


def test_a_worker_that_cannot_reach_letta_says_so_on_the_session() -> None:
    spec = spec_()
    p = step(spec_(), VoiceSessionStatus())
    p = step(spec, p.status, 1, room=room(), pods=(pod(ready=False),))
    assert ready(p)[1] == Reason.POD_NOT_READY
    waiting = dataclasses.replace(
        pod(ready=False), phase="Running", not_ready_because=("Letta unreachable",)
    )
    p = step(spec, p.status, 2, room=room(), pods=(waiting,))
    c = p.status.condition(Type.WORKER_READY)
    assert c is not None and c.reason == Reason.LETTA_UNAVAILABLE
    assert "Letta unreachable" in c.message
    assert ready(p)[1] == Reason.LETTA_UNAVAILABLE


def test_a_vanished_worker_pod_is_replaced_and_counted() -> None:
    spec = spec_(max_restarts=1)
    p = step(spec, running(spec), 5, room=room(), pods=(), pod_suffix="nnnnn")
    assert CreatePod("voicefleet-worker-nnnnn", 1, ROOM1) in p.actions
    assert p.status.connection and p.status.connection.restarts == 1


# -- LiveKit trouble ------------------------------------------------------------------------
def test_livekit_unavailable_is_reported_and_retried() -> None:
    p = step(spec_(), VoiceSessionStatus())
    p = step(spec_(), p.status, 1, room=None, livekit_error="connection refused", pods=(pod(),))
    c = p.status.condition(Type.ROOM_READY)
    assert c is not None and c.reason == Reason.LIVEKIT_UNAVAILABLE
    assert ready(p) == ("False", Reason.LIVEKIT_UNAVAILABLE)
    assert not any(isinstance(a, CreateDispatch) for a in p.actions) and p.requeue_after == 2.0


def test_a_room_lost_before_the_user_came_is_opened_again() -> None:
    spec = spec_()
    p = step(spec, running(spec, agent=False), 5, room=RoomView(exists=False), pods=(pod(),))
    assert CreateRoom(ROOM1, 1) in p.actions
    assert p.status.connection and p.status.connection.dispatched_at is None


def test_teardown_stops_waiting_for_livekit_after_its_budget() -> None:
    spec = spec_(connection=2)
    p = step(spec, running(spec_()), 5, room=room(AGENT), pods=(pod(),))
    p = step(spec, p.status, 30, room=None, livekit_error="down", pods=())
    assert p.status.connection and p.status.connection.ended_at is None
    p = step(spec, p.status, 66, room=None, livekit_error="down", pods=())
    assert p.status.connection and p.status.connection.ended_at == at(66)
    assert any(
        isinstance(a, RecordEvent)
        and a.type == "Warning"
        and a.reason == Reason.LIVEKIT_UNAVAILABLE
        for a in p.actions
    )


# -- rule 6: an invalid spec that still reaches the operator -------------------------------
def test_invalid_spec_fails_with_a_message_and_stops_the_worker() -> None:
    status = running(spec_())
    p = plan_invalid_spec(
        status,
        Observation(now=at(5), generation=2, room=room(AGENT), pods=(pod(),)),
        "spec.agentId: string does not match pattern",
    )
    assert p.status.phase is Phase.FAILED
    assert ready(p) == ("False", Reason.INVALID_SPEC)
    assert DeletePod(POD1) in p.actions and DeleteRoom(ROOM1) not in p.actions  # pod first


# -- rule 5: every decision leaves a trace ---------------------------------------------------
def test_each_step_of_a_connection_records_an_event() -> None:
    spec = spec_()
    reasons: list[str] = []
    p = step(spec, VoiceSessionStatus())
    reasons += [a.reason for a in p.actions if isinstance(a, RecordEvent)]
    p = step(spec, p.status, 1, room=room(), pods=(pod(),))
    reasons += [a.reason for a in p.actions if isinstance(a, RecordEvent)]
    p = step(
        spec, p.status, 2, room=room(AGENT, dispatches=(DispatchView("d", POD1),)), pods=(pod(),)
    )
    reasons += [a.reason for a in p.actions if isinstance(a, RecordEvent)]
    # What one pass records together is one Event (each is an API write): the pod created
    # with the connection, the dispatch with the pod turning ready.
    assert reasons == ["ConnectionStarted", Reason.ROOM_CREATED, Reason.DISPATCHED, "AgentJoined"]
    assert any(
        isinstance(a, RecordEvent) and "worker pod" in a.message and "requested" in a.message
        for a in step(spec, VoiceSessionStatus()).actions
    )


def test_a_steady_state_pass_changes_nothing() -> None:
    spec = spec_()
    status = running(spec)
    p = step(spec, status, 3, room=room(AGENT), pods=(pod(),))
    assert p.actions == () and p.status == status.model_copy(update={"observed_generation": 1})


def test_a_worker_that_finished_its_job_after_the_user_came_ends_the_connection_normally() -> None:
    spec = spec_(reconnect_grace_seconds=30)
    p = step(spec, running(spec), 5, room=room(AGENT, ALICE), pods=(pod(),))
    done = PodView(name=POD1, connection=1, phase="Succeeded", ready=False)
    p = step(spec, p.status, 8, room=room(), pods=(done,))
    assert p.status.connection and p.status.connection.end_reason is EndReason.USER_LEFT
    p = step(spec, p.status, 9, room=RoomView(exists=False))
    assert p.status.phase is Phase.IDLE


def test_a_worker_that_exits_before_the_user_came_fails_the_connection() -> None:
    spec = spec_()
    done = PodView(name=POD1, connection=1, phase="Succeeded", ready=False)
    p = step(spec, running(spec), 5, room=room(AGENT), pods=(done,))
    assert p.status.connection and p.status.connection.end_reason is EndReason.WORKER_FAILED
