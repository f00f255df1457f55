"""Condition types and reasons (constants, never ad-hoc strings), condition updates, phases.

Conditions have the metav1.Condition shape. `lastTransitionTime` moves only when the
status flips, so a reconcile that observes the same world rewrites nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal

from .api import Condition, ConnectionStatus, EndReason, Phase

Status = Literal["True", "False", "Unknown"]


class Type:
    ROOM_READY = "RoomReady"
    WORKER_READY = "WorkerReady"
    AGENT_JOINED = "AgentJoined"
    USER_CONNECTED = "UserConnected"
    READY = "Ready"


ALL_TYPES = (Type.ROOM_READY, Type.WORKER_READY, Type.AGENT_JOINED, Type.USER_CONNECTED, Type.READY)


class Reason:
    # RoomReady
    ROOM_CREATED = "RoomCreated"
    ROOM_PENDING = "RoomPending"
    ROOM_DELETED = "RoomDeleted"
    LIVEKIT_UNAVAILABLE = "LiveKitUnavailable"
    # WorkerReady
    POD_PENDING = "PodPending"
    POD_READY = "PodReady"
    POD_NOT_READY = "PodNotReady"
    POD_DELETED = "PodDeleted"
    WAITING_FOR_PREVIOUS_WORKER = "WaitingForPreviousWorker"
    WORKER_RESTARTING = "WorkerRestarting"
    LETTA_UNAVAILABLE = "LettaUnavailable"  # the worker says it cannot reach Letta
    IMAGE_PULL_FAILED = "ImagePullFailed"
    UNSCHEDULABLE = "Unschedulable"
    WORKER_FAILED = "WorkerFailed"
    KUBERNETES_UNAVAILABLE = "KubernetesUnavailable"
    # AgentJoined
    AWAITING_DISPATCH = "AwaitingDispatch"
    DISPATCHED = "Dispatched"
    AGENT_IN_ROOM = "AgentInRoom"
    AGENT_LEFT = "AgentLeft"
    # UserConnected
    USER_NOT_JOINED = "UserNotJoined"
    USER_JOINED = "UserJoined"
    USER_LEFT = "UserLeft"
    # Ready
    CONNECTING = "Connecting"
    AGENT_READY = "AgentReady"
    AGENT_BUSY = "AgentBusy"
    AGENT_NOT_JOINED = "AgentNotJoined"
    ENDING = "Ending"
    CONNECTION_ENDED = "ConnectionEnded"
    INVALID_SPEC = "InvalidSpec"
    NO_CONNECTION = "NoConnection"
    CAPACITY_EXCEEDED = "CapacityExceeded"


# Reasons a connection fails with (phase Failed) rather than ends normally (phase Idle).
FAILURE_REASONS = frozenset(
    {
        Reason.IMAGE_PULL_FAILED,
        Reason.UNSCHEDULABLE,
        Reason.WORKER_FAILED,
        Reason.AGENT_BUSY,
        Reason.INVALID_SPEC,
        Reason.AWAITING_DISPATCH,
        Reason.POD_PENDING,
        Reason.POD_NOT_READY,
        Reason.DISPATCHED,
        Reason.LIVEKIT_UNAVAILABLE,
        Reason.KUBERNETES_UNAVAILABLE,
        Reason.WAITING_FOR_PREVIOUS_WORKER,
        Reason.ROOM_PENDING,
        Reason.AGENT_NOT_JOINED,
        Reason.CONNECTING,
        Reason.WORKER_RESTARTING,
        Reason.AGENT_LEFT,
        Reason.CAPACITY_EXCEEDED,
    }
)


def set_condition(
    conditions: Iterable[Condition],
    type_: str,
    status: Status,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None = None,
) -> tuple[Condition, ...]:
    """`conditions` with `type_` set; its transition time moves only if the status changed."""
    result: list[Condition] = []
    found = False
    for existing in conditions:
        if existing.type != type_:
            result.append(existing)
            continue
        found = True
        since = existing.last_transition_time if existing.status == status else now
        result.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=since,
                observed_generation=generation,
            )
        )
    if not found:
        result.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=now,
                observed_generation=generation,
            )
        )
    order = {t: i for i, t in enumerate(ALL_TYPES)}
    return tuple(sorted(result, key=lambda c: order.get(c.type, len(order))))


def compute_phase(
    connection: ConnectionStatus | None,
    agent_present: bool,
    previous: Phase | None = None,
    invalid_spec: bool = False,
) -> Phase:
    """The phase of SPEC.md from the connection's state.

    Until teardown is complete (`endedAt`), an ending connection keeps reporting the phase
    it had (Ready stays Ready with the Ready condition False/Ending); Idle and Failed
    promise that the room and the pod are gone.
    """
    if invalid_spec:
        return Phase.FAILED
    if connection is None:
        return Phase.IDLE
    if connection.ended:
        return Phase.FAILED if connection.failure is not None else Phase.IDLE
    if connection.end_reason is not None:
        return previous if previous in (Phase.READY, Phase.CONNECTING) else Phase.CONNECTING
    return Phase.READY if agent_present else Phase.CONNECTING


def failure_for(end_reason: EndReason, ready_reason: str) -> str | None:
    """The failure recorded when a connection ends: None for a normal end (→ Idle).

    A join timeout is normal when the agent was in the room and the user never came; it is
    a failure when the connection never got that far (the reason it was stuck at).
    """
    if end_reason is EndReason.WORKER_FAILED:
        return ready_reason if ready_reason in FAILURE_REASONS else Reason.WORKER_FAILED
    if end_reason is EndReason.JOIN_TIMEOUT and ready_reason in FAILURE_REASONS:
        return ready_reason
    return None
