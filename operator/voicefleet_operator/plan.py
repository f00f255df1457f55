"""The reconcile decision, pure: (spec, last status, observation) → (actions, new status, requeue).

This is the "compute desired → diff" half of observe → desired → diff → apply → status.
It does no I/O and reads no clock: `Observation` carries the time, the random suffixes for
new names, and everything seen in Kubernetes and LiveKit. The same inputs always give the
same plan, so the rules of SPEC.md are unit-tested here as tables.

Bookkeeping is level-based. What was *done* is only ever recorded from what is *seen*
(`roomCreatedAt` when the room is observed, `podReadyAt` when the pod is observed ready);
what is *intended* (the room and pod names of the connection) is written before it is
created, and creating it again is harmless (both creates are idempotent).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from . import naming as n
from .api import ConnectionStatus, EndReason, VoiceSessionSpec, VoiceSessionStatus
from .conditions import Reason, Status, Type, compute_phase, failure_for, set_condition

# Container waiting reasons that will not fix themselves: fail fast instead of waiting.
FATAL_WAITING_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)
IMAGE_REASONS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
# ...unless the kubelet's message says it only ran out of time: its secret or configmap
# cache had not synced yet ("failed to sync secret cache: timed out waiting for the
# condition", seen on a busy node) or the runtime call timed out. The kubelet retries
# those by itself; the connection waits, bounded by joinTimeoutSeconds like any start.
TRANSIENT_WAITING_MESSAGES = (
    "failed to sync",
    "timed out waiting for the condition",
    "context deadline exceeded",
)
WAIT_SHORT = 1.0  # polling while something is on its way out (a pod terminating, a busy agent)


# -- what was observed --------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PodView:
    name: str
    connection: int | None
    phase: str = "Pending"  # Pending | Running | Succeeded | Failed | Unknown
    ready: bool = False
    deleting: bool = False
    restarts: int = 0
    waiting_reason: str | None = None
    waiting_message: str = ""
    unschedulable: str | None = None  # the scheduler's message when PodScheduled is False
    # How the container last ended, e.g. "OOMKilled, exit code 137" (lastState or state
    # terminated): said in the restart and failure messages, so an OOM kill is named.
    last_exit: str | None = None
    address: str | None = None  # status.podIP of a running pod
    not_ready_because: tuple[str, ...] = ()  # the worker's own /readyz reasons, when asked


def fatal_waiting(pod: PodView) -> bool:
    """Is the pod's container waiting for something that will not come by itself?"""
    if pod.waiting_reason not in FATAL_WAITING_REASONS:
        return False
    return not any(m in pod.waiting_message for m in TRANSIENT_WAITING_MESSAGES)


@dataclasses.dataclass(frozen=True)
class ParticipantView:
    identity: str
    agent: bool  # LiveKit participant kind AGENT (never guessed from the identity)


@dataclasses.dataclass(frozen=True)
class DispatchView:
    id: str
    agent_name: str


@dataclasses.dataclass(frozen=True)
class RoomView:
    exists: bool
    participants: tuple[ParticipantView, ...] = ()
    dispatches: tuple[DispatchView, ...] | None = None  # None: not looked at


@dataclasses.dataclass(frozen=True)
class Observation:
    now: datetime
    generation: int
    pods: tuple[PodView, ...] = ()
    room: RoomView | None = None  # None: no room to look at, or LiveKit could not be asked
    livekit_error: str | None = None
    agent_holder: str | None = None  # another session with a live connection to spec.agentId
    room_suffix: str = "aaaaa"
    pod_suffix: str = "aaaaa"
    # The connection's recorded pod name is another session's pod (two derived names met).
    pod_name_taken: bool = False
    end_requested: int | None = None  # the connection id the user asked to end (annotation)
    capacity_left: int | None = None  # worker pods that may still be started (None: no cap)


# -- what to do ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CreateRoom:
    room: str
    connection: int


@dataclasses.dataclass(frozen=True)
class DeleteRoom:
    room: str


@dataclasses.dataclass(frozen=True)
class CreatePod:
    pod: str
    connection: int
    room: str


@dataclasses.dataclass(frozen=True)
class DeletePod:
    pod: str


@dataclasses.dataclass(frozen=True)
class CreateDispatch:
    room: str
    agent_name: str
    connection: int
    stale: tuple[str, ...] = ()  # dispatch ids to delete first (for an earlier worker process)


@dataclasses.dataclass(frozen=True)
class RecordEvent:
    type: str  # Normal | Warning
    reason: str
    message: str


Action = CreateRoom | DeleteRoom | CreatePod | DeletePod | CreateDispatch | RecordEvent


@dataclasses.dataclass(frozen=True)
class Plan:
    status: VoiceSessionStatus
    actions: tuple[Action, ...]
    requeue_after: float | None  # None: nothing will happen until something changes

    @property
    def changes_world(self) -> bool:
        return any(not isinstance(a, RecordEvent) for a in self.actions)


@dataclasses.dataclass(frozen=True)
class Limits:
    room_check_seconds: float = 10.0
    livekit_budget_seconds: float = 60.0  # how long teardown waits for LiveKit before giving up


# -- the decision -------------------------------------------------------------------------
class _Builder:
    """Accumulates actions, conditions and deadlines for one plan."""

    def __init__(self, status: VoiceSessionStatus, obs: Observation, limits: Limits) -> None:
        self.obs = obs
        self.limits = limits
        self.now = obs.now
        self.actions: list[Action] = []
        self.conditions = status.conditions
        self.deadlines: list[float] = []

    def cond(self, type_: str, status: Status, reason: str, message: str = "") -> None:
        self.conditions = set_condition(
            self.conditions, type_, status, reason, message, self.now, self.obs.generation
        )

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.actions.append(RecordEvent("Warning" if warning else "Normal", reason, message))

    def due_in(self, since: datetime | None, seconds: float) -> float:
        """Seconds until `since + seconds` (<= 0: due now); also remembered as a deadline."""
        if since is None:
            return float("inf")
        left = (since - self.now).total_seconds() + seconds
        self.deadlines.append(max(left, 0.0))
        return left

    def wait(self, seconds: float) -> None:
        self.deadlines.append(seconds)


def _elapsed(since: datetime | None, now: datetime) -> float:
    return float("inf") if since is None else (now - since).total_seconds()


def plan(
    session: str,
    spec: VoiceSessionSpec,
    status: VoiceSessionStatus,
    obs: Observation,
    limits: Limits = Limits(),
) -> Plan:
    """One reconcile step for a VoiceSession named `session`."""
    obs = _normalized(obs)
    b = _Builder(status, obs, limits)
    conn = status.connection
    total = status.connections_total

    # A new connection starts when none exists yet, or the last one ended and a higher one is
    # asked for. It never starts while the previous one is still ending (SPEC rule 3).
    if conn is None or (conn.ended and spec.connection > conn.id):
        conn = ConnectionStatus(id=spec.connection, started_at=obs.now)
        total += 1
        b.event("ConnectionStarted", f"connection {conn.id} requested")

    agent_present = False
    if conn.live:
        conn, agent_present = _progress(session, spec, conn, obs, b)
    if not conn.live and not conn.ended:
        conn = _teardown(conn, obs, b, limits)
    if conn.ended:
        _ended_conditions(conn, b)
        if spec.connection > conn.id:
            b.wait(0.0)  # the next connection starts on the next pass
        stray = [p for p in obs.pods if not p.deleting]
        b.actions.extend(DeletePod(p.name) for p in stray)
        if obs.pods:
            b.wait(WAIT_SHORT)

    new_status = VoiceSessionStatus(
        phase=compute_phase(conn, agent_present, status.phase),
        observed_generation=obs.generation,
        connection=conn,
        connections_total=total,
        conditions=b.conditions,
    )
    requeue = min(b.deadlines) if b.deadlines else None
    return Plan(new_status, _folded(b.actions), requeue)


# Events that one pass often records together, told as one (each Event is an API write).
_FOLDS = {
    ("ConnectionStarted", "PodCreated"): "ConnectionStarted",
    (Reason.POD_READY, Reason.DISPATCHED): Reason.DISPATCHED,
}


def _folded(actions: list[Action]) -> tuple[Action, ...]:
    out: list[Action] = []
    for action in actions:
        if isinstance(action, RecordEvent):
            last = next((a for a in reversed(out) if isinstance(a, RecordEvent)), None)
            folded = _FOLDS.get((last.reason, action.reason)) if last else None
            if last is not None and folded is not None and last.type == action.type:
                out[out.index(last)] = RecordEvent(
                    action.type, folded, f"{last.message}; {action.message}"
                )
                continue
        out.append(action)
    return tuple(out)


def plan_invalid_spec(
    status: VoiceSessionStatus, obs: Observation, message: str, limits: Limits = Limits()
) -> Plan:
    """A spec the API server should have refused: end what runs, report Failed/InvalidSpec."""
    obs = _normalized(obs)
    b = _Builder(status, obs, limits)
    conn = status.connection
    if conn is not None and conn.live:
        conn = conn.model_copy(
            update=dict(
                end_reason=EndReason.WORKER_FAILED,
                failure=Reason.INVALID_SPEC,
                failure_message=message[:1024],
            )
        )
    if conn is not None and not conn.ended:
        conn = _teardown(conn, obs, b, limits)  # deletes the pods itself
    else:
        b.actions.extend(DeletePod(p.name) for p in obs.pods if not p.deleting)
    if obs.pods:
        b.wait(WAIT_SHORT)
    b.cond(Type.READY, "False", Reason.INVALID_SPEC, message[:1024])
    b.event(Reason.INVALID_SPEC, message[:1024], warning=True)
    new_status = status.model_copy(
        update=dict(
            phase=compute_phase(conn, False, status.phase, invalid_spec=True),
            observed_generation=obs.generation,
            connection=conn,
            conditions=b.conditions,
        )
    )
    return Plan(new_status, tuple(b.actions), min(b.deadlines) if b.deadlines else None)


def _normalized(obs: Observation) -> Observation:
    """No room view and no LiveKit error means there was no room to ask about: none exists."""
    if obs.room is None and obs.livekit_error is None:
        return dataclasses.replace(obs, room=RoomView(exists=False))
    return obs


# -- a live connection: make progress, or decide that it ends ------------------------------
def _progress(
    session: str, spec: VoiceSessionSpec, conn: ConnectionStatus, obs: Observation, b: _Builder
) -> tuple[ConnectionStatus, bool]:
    now = obs.now
    others = [p for p in obs.pods if p.connection != conn.id]
    mine = [p for p in obs.pods if p.connection == conn.id]
    b.actions.extend(DeletePod(p.name) for p in others if not p.deleting)

    # -- participants (only when LiveKit answered about an existing room) --
    room_seen = obs.room is not None and obs.room.exists
    participants = obs.room.participants if obs.room is not None else ()
    agent_present = room_seen and any(p.agent for p in participants)
    user_present = room_seen and any(p.identity == spec.user_identity for p in participants)
    humans_present = room_seen and any(not p.agent for p in participants)
    if agent_present and conn.agent_joined_at is None:
        conn = conn.model_copy(update=dict(agent_joined_at=now))
        b.event("AgentJoined", f"the agent joined room {conn.room}")
    if user_present and conn.user_joined_at is None:
        conn = conn.model_copy(update=dict(user_joined_at=now))
        b.event("UserJoined", f"{spec.user_identity} joined room {conn.room}")
    if room_seen and conn.user_joined_at is not None:
        if humans_present and conn.user_left_at is not None:
            conn = conn.model_copy(update=dict(user_left_at=None))
        elif not humans_present and conn.user_left_at is None:
            conn = conn.model_copy(update=dict(user_left_at=now))
            b.event("UserLeft", f"the last human left room {conn.room}")

    # -- ends that do not depend on the worker --
    end: EndReason | None = None
    why = ""
    if spec.connection > conn.id:
        end, why = EndReason.SUPERSEDED, f"connection {spec.connection} was requested"
    elif obs.end_requested == conn.id:
        end, why = EndReason.USER_LEFT, f"the user ended connection {conn.id}"
    elif (
        conn.user_left_at is not None
        and b.due_in(conn.user_left_at, spec.reconnect_grace_seconds) <= 0
    ):
        end, why = EndReason.USER_LEFT, "the last human left"
    elif b.due_in(conn.started_at, spec.max_duration_seconds) <= 0:
        end, why = EndReason.MAX_DURATION, f"the connection reached {spec.max_duration_seconds} s"
    elif conn.user_joined_at is None and b.due_in(conn.started_at, spec.join_timeout_seconds) <= 0:
        end, why = (
            EndReason.JOIN_TIMEOUT,
            f"the user did not join within {spec.join_timeout_seconds} s",
        )
    finished = next((p for p in mine if p.phase == "Succeeded" and not p.deleting), None)
    if end is None and finished is not None and conn.user_joined_at is not None:
        # The worker ends its job (and exits 0) when its user is gone: a normal end.
        end, why = EndReason.USER_LEFT, f"worker {finished.name} finished its job"
    if end is not None:
        ready = next((c for c in b.conditions if c.type == Type.READY), None)
        stuck_at = (
            Reason.AGENT_READY if agent_present else (ready.reason if ready else Reason.CONNECTING)
        )
        return _end(conn, end, why, stuck_at, b), agent_present

    # -- one agent at a time per Letta agent (SPEC rule 3) --
    if conn.room is None:
        if obs.agent_holder is not None:
            before = next((c for c in b.conditions if c.type == Type.READY), None)
            msg = f"agent {spec.agent_id} has a live connection in session {obs.agent_holder}"
            if before is None or before.reason != Reason.AGENT_BUSY:
                b.event(Reason.AGENT_BUSY, msg, warning=True)
            b.cond(Type.READY, "False", Reason.AGENT_BUSY, msg)
            b.cond(
                Type.ROOM_READY, "False", Reason.ROOM_PENDING, "waiting for the agent to be free"
            )
            b.cond(Type.WORKER_READY, "False", Reason.AGENT_BUSY, msg)
            b.cond(Type.AGENT_JOINED, "False", Reason.AGENT_BUSY, msg)
            b.cond(Type.USER_CONNECTED, "False", Reason.USER_NOT_JOINED, "")
            b.wait(WAIT_SHORT)
            return conn, False
        conn = conn.model_copy(update=dict(room=n.room_name(session, conn.id, obs.room_suffix)))

    # -- the room --
    room = conn.room
    assert room is not None
    if obs.room is None:
        b.cond(
            Type.ROOM_READY,
            "False",
            Reason.LIVEKIT_UNAVAILABLE,
            f"LiveKit could not be asked about room {conn.room}: {obs.livekit_error or 'unknown'}",
        )
        b.wait(WAIT_SHORT * 2)
    elif obs.room.exists:
        if conn.room_created_at is None:
            conn = conn.model_copy(update=dict(room_created_at=now))
            b.event(Reason.ROOM_CREATED, f"room {conn.room} is open")
        b.cond(Type.ROOM_READY, "True", Reason.ROOM_CREATED, f"room {conn.room}")
        b.wait(b.limits.room_check_seconds)
    elif conn.room_created_at is not None and conn.user_joined_at is not None:
        return _end(
            conn,
            EndReason.USER_LEFT,
            f"room {conn.room} was closed by LiveKit",
            Reason.AGENT_READY,
            b,
        ), False
    else:
        if conn.room_created_at is not None:
            # LiveKit lost the room (restarted?) before the user came: open it again and
            # dispatch again; the worker of the lost room will have ended its job.
            conn = conn.model_copy(
                update=dict(room_created_at=None, dispatched_at=None, dispatched_restarts=None)
            )
            b.event(
                "RoomLost",
                f"room {conn.room} disappeared from LiveKit; opening it again",
                warning=True,
            )
        b.actions.append(CreateRoom(room, conn.id))
        b.cond(Type.ROOM_READY, "False", Reason.ROOM_PENDING, f"creating room {conn.room}")

    # -- the worker pod (one per session, created only once every older pod is gone) --
    conn, blocking, pod = _worker(spec, conn, obs, mine, others, b)
    if blocking is not None and blocking[0] in (
        Reason.IMAGE_PULL_FAILED,
        Reason.UNSCHEDULABLE,
        Reason.WORKER_FAILED,
        Reason.CAPACITY_EXCEEDED,
    ):
        conn = conn.model_copy(update=dict(failure_message=blocking[1][:1024]))
        return _end(conn, EndReason.WORKER_FAILED, blocking[1], blocking[0], b), False

    # -- dispatch: once the worker is ready, to its agent name, unless an agent is there --
    if blocking is None and pod is not None and room_seen and not agent_present:
        assert obs.room is not None
        current = obs.room.dispatches
        for_pod = [d for d in (current or ()) if d.agent_name == pod.name]
        fresh = conn.dispatched_restarts == pod.restarts and conn.dispatched_at is not None
        if fresh and (current is None or for_pod):
            blocking = (
                Reason.AGENT_NOT_JOINED,
                f"dispatched to {pod.name}; waiting for the agent to join",
            )
        else:
            stale = tuple(d.id for d in for_pod)
            b.actions.append(CreateDispatch(room, pod.name, conn.id, stale))
            conn = conn.model_copy(update=dict(dispatched_at=now, dispatched_restarts=pod.restarts))
            b.event(Reason.DISPATCHED, f"job for room {conn.room} dispatched to agent {pod.name}")
            blocking = (
                Reason.AGENT_NOT_JOINED,
                f"dispatched to {pod.name}; waiting for the agent to join",
            )
        b.cond(Type.AGENT_JOINED, "False", Reason.DISPATCHED, blocking[1])
    elif agent_present:
        b.cond(Type.AGENT_JOINED, "True", Reason.AGENT_IN_ROOM, f"the agent is in room {conn.room}")
    elif conn.agent_joined_at is not None and room_seen:
        b.cond(Type.AGENT_JOINED, "False", Reason.AGENT_LEFT, "the agent left the room")
    else:
        b.cond(Type.AGENT_JOINED, "False", Reason.AWAITING_DISPATCH, "waiting for a ready worker")

    if user_present:
        b.cond(
            Type.USER_CONNECTED, "True", Reason.USER_JOINED, f"{spec.user_identity} is in the room"
        )
    elif conn.user_joined_at is not None:
        b.cond(Type.USER_CONNECTED, "False", Reason.USER_LEFT, f"{spec.user_identity} left")
    else:
        b.cond(Type.USER_CONNECTED, "False", Reason.USER_NOT_JOINED, "")

    if agent_present:
        b.cond(Type.READY, "True", Reason.AGENT_READY, f"the agent is waiting in room {conn.room}")
    elif obs.room is None:
        b.cond(Type.READY, "False", Reason.LIVEKIT_UNAVAILABLE, "LiveKit is unavailable; retrying")
    elif blocking is not None:
        b.cond(Type.READY, "False", blocking[0], blocking[1])
    else:
        b.cond(Type.READY, "False", Reason.CONNECTING, f"opening room {conn.room}")
    return conn, agent_present


def _worker(
    spec: VoiceSessionSpec,
    conn: ConnectionStatus,
    obs: Observation,
    mine: list[PodView],
    others: list[PodView],
    b: _Builder,
) -> tuple[ConnectionStatus, tuple[str, str] | None, PodView | None]:
    """Ensure the connection's one pod; returns (conn, blocking reason+message, ready pod)."""
    room = conn.room
    assert room is not None
    if others:
        names = ", ".join(sorted(p.name for p in others))
        msg = f"waiting for the previous worker(s) to be gone: {names}"
        b.cond(Type.WORKER_READY, "False", Reason.WAITING_FOR_PREVIOUS_WORKER, msg)
        b.wait(WAIT_SHORT)
        return conn, (Reason.WAITING_FOR_PREVIOUS_WORKER, msg), None

    # Adopt what exists (an operator restarted between create and status write finds it).
    alive = [p for p in mine if not p.deleting]
    keep = next((p for p in alive if p.name == conn.pod), alive[0] if alive else None)
    extra = [p for p in alive if keep is not None and p.name != keep.name]
    b.actions.extend(DeletePod(p.name) for p in extra)
    if any(p.deleting for p in mine) and keep is None:
        b.cond(
            Type.WORKER_READY,
            "False",
            Reason.WAITING_FOR_PREVIOUS_WORKER,
            "a worker is terminating",
        )
        b.wait(WAIT_SHORT)
        return conn, (Reason.WAITING_FOR_PREVIOUS_WORKER, "a worker is terminating"), None

    if keep is None and conn.pod is None and obs.capacity_left is not None:
        if obs.capacity_left <= 0:
            return (
                conn,
                (Reason.CAPACITY_EXCEEDED, "no worker can be started: the cap on live workers"),
                None,
            )
    if keep is None:
        lost = conn.pod is not None and conn.pod_ready_at is not None
        if lost:
            restarts = conn.restarts + 1
            if restarts > spec.max_restarts:
                return (
                    conn,
                    (
                        Reason.WORKER_FAILED,
                        f"worker pod {conn.pod} is gone and the restart budget "
                        f"({spec.max_restarts}) is spent",
                    ),
                    None,
                )
            b.event(
                Reason.WORKER_RESTARTING,
                f"worker pod {conn.pod} is gone; starting another",
                warning=True,
            )
            conn = conn.model_copy(
                update=dict(
                    restarts=restarts,
                    pods_lost=conn.pods_lost + 1,
                    pod=None,
                    pod_ready_at=None,
                    dispatched_at=None,
                    dispatched_restarts=None,
                )
            )
        if conn.pod is not None and obs.pod_name_taken:
            # Never this connection's pod: the name is another session's (it answered the
            # create with 409). A name of its own (obs.pod_suffix skips taken ones) instead.
            b.event(
                "PodNameTaken",
                f"worker pod name {conn.pod} belongs to another session's pod; using another",
                warning=True,
            )
            conn = conn.model_copy(update=dict(pod=None))
        name = conn.pod or n.pod_name(obs.pod_suffix)
        if conn.pod is None:
            b.event("PodCreated", f"worker pod {name} for room {conn.room}")
        conn = conn.model_copy(update=dict(pod=name))
        b.actions.append(CreatePod(name, conn.id, room))
        b.cond(Type.WORKER_READY, "False", Reason.POD_PENDING, f"creating worker pod {name}")
        return conn, (Reason.POD_PENDING, f"creating worker pod {name}"), None

    if keep.name != conn.pod:
        conn = conn.model_copy(update=dict(pod=keep.name))
    # Restarts of this pod's container count against the budget, on top of lost pods.
    restarts = max(conn.restarts, keep.restarts + conn.pods_lost)
    ended = f" (last exit: {keep.last_exit})" if keep.last_exit else ""
    if restarts != conn.restarts:
        b.event(
            Reason.WORKER_RESTARTING,
            f"worker {keep.name} restarted ({restarts} so far){ended}",
            warning=True,
        )
        conn = conn.model_copy(update=dict(restarts=restarts))
    if restarts > spec.max_restarts:
        return (
            conn,
            (
                Reason.WORKER_FAILED,
                f"worker {keep.name} restarted {restarts} times "
                f"(maxRestarts {spec.max_restarts}){ended}",
            ),
            None,
        )
    if keep.phase == "Failed":
        return conn, (Reason.WORKER_FAILED, f"worker pod {keep.name} failed{ended}"), None
    if keep.phase == "Succeeded":
        return conn, (Reason.WORKER_FAILED, f"worker {keep.name} exited before the user left"), None
    if fatal_waiting(keep):
        reason = (
            Reason.IMAGE_PULL_FAILED
            if keep.waiting_reason in IMAGE_REASONS
            else Reason.WORKER_FAILED
        )
        return (
            conn,
            (reason, f"worker {keep.name}: {keep.waiting_reason}: {keep.waiting_message}".strip()),
            None,
        )
    if keep.unschedulable is not None:
        return (
            conn,
            (Reason.UNSCHEDULABLE, f"worker {keep.name} cannot be scheduled: {keep.unschedulable}"),
            None,
        )
    if not keep.ready:
        reason = (
            Reason.WORKER_RESTARTING
            if keep.waiting_reason == "CrashLoopBackOff"
            else Reason.POD_NOT_READY
        )
        # The container's waiting reason when it has one; not the bare phase, whose
        # Pending → Running step would cost a status write and say nothing new.
        why = f" ({keep.waiting_reason})" if keep.waiting_reason else ""
        msg = f"worker {keep.name} is starting{why}"
        if keep.not_ready_because:  # the worker's own words (its /readyz)
            msg = f"worker {keep.name} is not ready: {'; '.join(keep.not_ready_because)}"
            if any("Letta" in r and "unreachable" in r for r in keep.not_ready_because):
                reason = Reason.LETTA_UNAVAILABLE
        b.cond(Type.WORKER_READY, "False", reason, msg)
        return conn, (reason, msg), None
    if conn.pod_ready_at is None:
        conn = conn.model_copy(update=dict(pod_ready_at=obs.now))
        b.event(Reason.POD_READY, f"worker {keep.name} is ready")
    b.cond(Type.WORKER_READY, "True", Reason.POD_READY, f"worker {keep.name} is ready")
    return conn, None, keep


def _end(
    conn: ConnectionStatus, reason: EndReason, why: str, ready_reason: str, b: _Builder
) -> ConnectionStatus:
    failure = failure_for(reason, ready_reason)
    conn = conn.model_copy(
        update=dict(
            end_reason=reason,
            ending_at=b.now,
            failure=failure,
            failure_message=(conn.failure_message or why) if failure else None,
        )
    )
    b.event(
        "ConnectionEnding",
        f"connection {conn.id} ends: {reason.value} ({why})",
        warning=failure is not None,
    )
    return conn


# -- an ending connection: worker stopped, pod gone, room gone; all awaited ----------------
def _teardown(
    conn: ConnectionStatus, obs: Observation, b: _Builder, limits: Limits
) -> ConnectionStatus:
    b.actions.extend(DeletePod(p.name) for p in obs.pods if not p.deleting)
    pods_gone = not obs.pods
    room_gone = conn.room is None or (obs.room is not None and not obs.room.exists)
    if pods_gone and conn.room is not None and obs.room is not None and obs.room.exists:
        # SPEC rule 2's order: the worker leaves the room on its own (SIGTERM, memory flush,
        # exit) before the room goes; deleting it under the worker only makes noise.
        b.actions.append(DeleteRoom(conn.room))
    if conn.room is not None and obs.room is None:
        # LiveKit cannot be asked. Wait for it a bounded time; after that the room is left
        # to LiveKit's own empty/departure timeouts, and an Event says so.
        ending_for = _elapsed(conn.ending_at or obs.now, obs.now)
        if ending_for >= limits.livekit_budget_seconds:
            room_gone = True
            b.event(
                Reason.LIVEKIT_UNAVAILABLE,
                f"could not delete room {conn.room}: LiveKit unavailable; "
                "LiveKit's empty timeout will close it",
                warning=True,
            )
    reason = conn.end_reason.value if conn.end_reason else "?"
    b.cond(Type.READY, "False", Reason.ENDING, f"connection {conn.id} is ending ({reason})")
    if pods_gone and room_gone:
        conn = conn.model_copy(update=dict(ended_at=obs.now))
        b.event(
            "ConnectionEnded",
            f"connection {conn.id} ended: {reason}; room and worker are gone",
            warning=conn.failure is not None,
        )
        return conn
    b.wait(WAIT_SHORT)
    return conn


def _ended_conditions(conn: ConnectionStatus, b: _Builder) -> None:
    reason = conn.end_reason.value if conn.end_reason else "?"
    b.cond(Type.ROOM_READY, "False", Reason.ROOM_DELETED, "the connection ended")
    b.cond(Type.WORKER_READY, "False", Reason.POD_DELETED, "the connection ended")
    b.cond(Type.AGENT_JOINED, "False", Reason.CONNECTION_ENDED, "the connection ended")
    b.cond(Type.USER_CONNECTED, "False", Reason.CONNECTION_ENDED, "the connection ended")
    if conn.failure is not None:
        b.cond(
            Type.READY,
            "False",
            conn.failure,
            f"connection {conn.id} failed ({reason}): {conn.failure_message or ''}".strip(),
        )
    else:
        b.cond(
            Type.READY,
            "False",
            Reason.CONNECTION_ENDED,
            f"connection {conn.id} ended ({reason}); raise spec.connection to reconnect",
        )
