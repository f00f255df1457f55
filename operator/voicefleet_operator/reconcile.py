"""Reconcile a VoiceSession: observe → plan (desired, diff) → write status → apply, as plain async functions.

The status is written *before* the actions are applied: it records the intent (the names
of the room and the pod about to be created), so an operator that dies in between finds
its own names on restart instead of making new ones. Creating twice is harmless (a pod of
the same name answers 409, LiveKit returns an existing room), and what was actually done is
only ever recorded from what is observed on the next pass.

Only this operator writes VoiceSession status, so the last status it wrote is kept in
memory and preferred to the (possibly older) copy in the watch stream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from . import naming as n
from .api import (
    ConnectionStatus,
    EndReason,
    VoiceSessionSpec,
    VoiceSessionStatus,
    now_utc,
    parse_spec,
    parse_status,
)
from .clients.kube import KubeClient, KubernetesUnavailable
from .clients.livekit import LiveKitClient, LiveKitUnavailable
from .config import Settings
from .manifests import (
    SessionRef,
    build_dispatch_metadata,
    build_room_request,
    build_worker_pod,
)
from .metrics import Metrics
from .plan import (
    Action,
    CreateDispatch,
    CreatePod,
    CreateRoom,
    DeletePod,
    DeleteRoom,
    Limits,
    Observation,
    Plan,
    PodView,
    RecordEvent,
    RoomView,
    plan,
    plan_invalid_spec,
)

log = logging.getLogger("voicefleet.operator")

# (session body, event type, reason, message) → posts a Kubernetes Event.
EventSink = Callable[[Mapping[str, Any], str, str, str], None]
RETRY_MIN, RETRY_MAX = 1.0, 30.0
IDLE_RECHECK = 300.0  # a session with nothing pending is still looked at now and then


class RetryLater(Exception):
    """Teardown cannot finish yet; the kopf handler turns this into a TemporaryError."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


class AgentClaims:
    """Which session holds each Letta agent, as decided in this process.

    kopf's index of session statuses lags behind this operator's own writes by one watch
    event; these claims close that window so two sessions never start for one agent.
    """

    def __init__(self) -> None:
        self._by_agent: dict[str, str] = {}

    def holder(self, agent_id: str, session: str, indexed: Iterable[str]) -> str | None:
        others = {h for h in indexed if h != session}
        mine = self._by_agent.get(agent_id)
        if mine is not None and mine != session:
            others.add(mine)
        if mine == session:
            return None  # this process gave it to us; the index has not caught up on its release
        return min(others) if others else None

    def update(self, agent_id: str, session: str, holds: bool) -> None:
        if holds:
            self._by_agent.setdefault(agent_id, session)
        elif self._by_agent.get(agent_id) == session:
            del self._by_agent[agent_id]

    def release_all(self, session: str) -> None:
        for agent, holder in list(self._by_agent.items()):
            if holder == session:
                del self._by_agent[agent]


@dataclasses.dataclass
class Runtime:
    """Everything a reconcile needs, built once by the composition root."""

    settings: Settings
    kube: KubeClient
    livekit: LiveKitClient
    metrics: Metrics
    record_event: EventSink
    claims: AgentClaims = dataclasses.field(default_factory=AgentClaims)
    statuses: dict[str, VoiceSessionStatus] = dataclasses.field(default_factory=dict)
    failures: dict[str, int] = dataclasses.field(default_factory=dict)
    locks: dict[str, asyncio.Lock] = dataclasses.field(default_factory=dict)

    def lock(self, key: str) -> asyncio.Lock:
        return self.locks.setdefault(key, asyncio.Lock())

    @property
    def limits(self) -> Limits:
        return Limits(
            room_check_seconds=self.settings.room_check_seconds,
            livekit_budget_seconds=self.settings.finalizer_budget_seconds,
        )


def holds_agent(status: VoiceSessionStatus) -> bool:
    """A session holds its agent while its connection is live or ending and has a room."""
    conn = status.connection
    return conn is not None and not conn.ended and conn.room is not None


def session_ref(body: Mapping[str, Any]) -> SessionRef:
    meta = body["metadata"]
    return SessionRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"spec.{where}: {err['msg']}")
    return "; ".join(parts)


# -- observe --------------------------------------------------------------------------------
async def observe(
    rt: Runtime,
    ref: SessionRef,
    spec: VoiceSessionSpec | None,
    status: VoiceSessionStatus,
    indexed_holders: Collection[str],
    generation: int,
    known_pods: Iterable[PodView] | None = None,
    end_requested: int | None = None,
) -> Observation:
    """What is: the session's pods (from kopf's pod index when given, else a LIST), its room."""
    if known_pods is not None:
        pods = tuple(sorted(known_pods, key=lambda p: p.name))
    else:
        pods = await rt.kube.list_session_pods(ref.namespace, ref.name)
    conn = status.connection
    room: RoomView | None = None
    error: str | None = None
    if conn is not None and conn.room is not None and not conn.ended:
        try:
            room = await rt.livekit.observe_room(
                conn.room, dispatches_if_no_agent=conn.pod_ready_at is not None
            )
        except LiveKitUnavailable as exc:
            error = str(exc)
            rt.metrics.errors.labels("LiveKitUnavailable").inc()
    holder = None
    if spec is not None and rt.settings.one_connection_per_agent:
        holder = rt.claims.holder(spec.agent_id, ref.name, indexed_holders)
        if holder is not None and holder in indexed_holders:
            # kopf's index can lag behind (or miss) the holder's release; before keeping a
            # user waiting, ask the API server whether that session still holds the agent.
            current = await rt.kube.read_session_status(ref.namespace, holder)
            if current is None or not holds_agent(parse_status(current)):
                others = [h for h in indexed_holders if h not in (holder, ref.name)]
                holder = rt.claims.holder(spec.agent_id, ref.name, others)
    return Observation(
        now=now_utc(),
        generation=generation,
        pods=pods,
        room=room,
        livekit_error=error,
        agent_holder=holder,
        room_suffix=n.random_suffix(),
        pod_suffix=n.random_suffix(),
        end_requested=end_requested,
    )


# -- apply ----------------------------------------------------------------------------------
async def apply(
    rt: Runtime,
    body: Mapping[str, Any],
    ref: SessionRef,
    spec: VoiceSessionSpec | None,
    actions: Iterable[Action],
) -> list[str]:
    """Carry out the plan's actions; returns what failed (each also an Event and a metric)."""
    failed: list[str] = []
    for action in actions:
        try:
            await _apply_one(rt, body, ref, spec, action)
        except (LiveKitUnavailable, KubernetesUnavailable) as exc:
            reason = (
                "LiveKitUnavailable"
                if isinstance(exc, LiveKitUnavailable)
                else "KubernetesUnavailable"
            )
            failed.append(str(exc))
            rt.metrics.errors.labels(reason).inc()
            log.warning("session %s/%s: %s", ref.namespace, ref.name, exc)
        except Exception as exc:  # a refusal (403, 422, 4xx from LiveKit): say so, go on
            failed.append(f"{type(action).__name__}: {type(exc).__name__}")
            rt.metrics.errors.labels(type(action).__name__ + "Refused").inc()
            log.exception(
                "session %s/%s: %s failed", ref.namespace, ref.name, type(action).__name__
            )
            rt.record_event(
                body,
                "Warning",
                "ActionFailed",
                f"{type(action).__name__} failed: {type(exc).__name__}: {_safe(exc)}",
            )
    return failed


def _safe(exc: BaseException) -> str:
    """An error text for an Event: first line, bounded (no request bodies, no headers)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text[:300]


async def _apply_one(
    rt: Runtime,
    body: Mapping[str, Any],
    ref: SessionRef,
    spec: VoiceSessionSpec | None,
    action: Action,
) -> None:
    if isinstance(action, RecordEvent):
        rt.record_event(body, action.type, action.reason, action.message)
    elif isinstance(action, DeletePod):
        await rt.kube.delete_pod(ref.namespace, action.pod)
    elif isinstance(action, DeleteRoom):
        await rt.livekit.delete_room(action.room)
    elif spec is None:
        raise RuntimeError(f"{type(action).__name__} needs a valid spec")
    elif isinstance(action, CreateRoom):
        await rt.livekit.create_room(build_room_request(ref, spec, action.connection, action.room))
    elif isinstance(action, CreatePod):
        pod = build_worker_pod(ref, spec, action.connection, action.pod, action.room, rt.settings)
        await rt.kube.create_pod(ref.namespace, pod)
    elif isinstance(action, CreateDispatch):
        metadata = build_dispatch_metadata(ref, spec, action.connection)
        await rt.livekit.create_dispatch(action.room, action.agent_name, metadata, action.stale)


# -- status ---------------------------------------------------------------------------------
def status_patch(status: VoiceSessionStatus) -> dict[str, Any]:
    """The whole status as a merge patch: unset fields as null, so they are removed."""
    return status.model_dump(mode="json", by_alias=True)


def _record_steps(
    metrics: Metrics, old: ConnectionStatus | None, new: ConnectionStatus | None
) -> None:
    if new is None:
        return
    same = old is not None and old.id == new.id
    for step, field in (
        ("room_ready", "room_created_at"),
        ("worker_ready", "pod_ready_at"),
        ("dispatched", "dispatched_at"),
        ("agent_joined", "agent_joined_at"),
    ):
        at: datetime | None = getattr(new, field)
        before = getattr(old, field) if same and old is not None else None
        if at is not None and before is None:
            metrics.connection_step_seconds.labels(step).observe(
                (at - new.started_at).total_seconds()
            )
    if new.ended and not (same and old is not None and old.ended) and new.end_reason is not None:
        metrics.connections_ended.labels(new.end_reason.value).inc()


def _end_requested(body: Mapping[str, Any]) -> int | None:
    raw = (body["metadata"].get("annotations") or {}).get(n.ANNOTATION_END_CONNECTION)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None  # not ours to interpret; the gateway writes integers only


# -- one pass -------------------------------------------------------------------------------
async def reconcile_session(
    rt: Runtime,
    body: Mapping[str, Any],
    indexed_holders: Collection[str],
    known_pods: Iterable[PodView] | None = None,
) -> float | None:
    """One observe → plan → status → apply pass. Returns when to look again (None: on change).

    `known_pods` is kopf's index of worker pods (filled from the watch before any handler
    runs); it spares a LIST per pass. Its lag behind this operator's own creates is harmless:
    the pod's name is in the status, and creating it again answers 409.
    """
    ref = session_ref(body)
    key = n.session_key(ref.namespace, ref.name)
    if body["metadata"].get("deletionTimestamp"):
        return None  # the finalizer's teardown owns it now
    started = time.monotonic()
    status = rt.statuses.get(key) or parse_status(body.get("status"))
    generation = int(body["metadata"].get("generation") or 0)
    spec: VoiceSessionSpec | None
    try:
        spec = parse_spec(body.get("spec"))
        invalid = None
    except ValidationError as exc:
        spec, invalid = None, _validation_message(exc)
    try:
        obs = await observe(
            rt, ref, spec, status, indexed_holders, generation, known_pods, _end_requested(body)
        )
    except KubernetesUnavailable as exc:
        return _backoff(rt, key, str(exc), "KubernetesUnavailable")
    result: Plan = (
        plan(ref.name, spec, status, obs, rt.limits)
        if spec is not None
        else plan_invalid_spec(status, obs, invalid or "invalid spec", rt.limits)
    )
    if result.status != status:
        try:
            if not await rt.kube.patch_session_status(
                ref.namespace, ref.name, status_patch(result.status)
            ):
                return None  # the session is gone
        except KubernetesUnavailable as exc:
            return _backoff(rt, key, str(exc), "KubernetesUnavailable")
        rt.statuses[key] = result.status
        _record_steps(rt.metrics, status.connection, result.status.connection)
    if spec is not None:
        rt.claims.update(spec.agent_id, ref.name, holds_agent(result.status))
    failed = await apply(rt, body, ref, spec, result.actions)
    log.debug(
        "session %s: phase %s, %d action(s), %d failed, next look in %s s",
        key,
        result.status.phase,
        len(result.actions),
        len(failed),
        result.requeue_after,
    )
    rt.metrics.set_phase(key, result.status.phase.value if result.status.phase else None)
    rt.metrics.reconcile_seconds.observe(time.monotonic() - started)
    if failed:
        return _backoff(rt, key, "; ".join(failed), None)
    rt.failures.pop(key, None)
    if result.changes_world:
        return 0.0  # look at what the actions did right away
    return result.requeue_after if result.requeue_after is not None else IDLE_RECHECK


def _backoff(rt: Runtime, key: str, why: str, reason: str | None) -> float:
    count = rt.failures.get(key, 0) + 1
    rt.failures[key] = count
    if reason is not None:
        rt.metrics.errors.labels(reason).inc()
    delay: float = min(RETRY_MAX, RETRY_MIN * 2.0 ** min(count - 1, 10))
    log.warning("session %s: retrying in %.0f s: %s", key, delay, why)
    return delay


def forget(rt: Runtime, ref: SessionRef) -> None:
    key = n.session_key(ref.namespace, ref.name)
    rt.statuses.pop(key, None)
    rt.failures.pop(key, None)
    rt.locks.pop(key, None)
    rt.claims.release_all(ref.name)
    rt.metrics.set_phase(key, None)


# -- deletion (the finalizer) -----------------------------------------------------------------
async def teardown_session(rt: Runtime, body: Mapping[str, Any], deleting_for: float) -> None:
    """Delete the session's pods and room, awaited; raises RetryLater until done.

    LiveKit being down does not block deletion forever: after the finalizer budget the room
    is left to LiveKit's own empty timeout, and a Warning Event says so.
    """
    ref = session_ref(body)
    key = n.session_key(ref.namespace, ref.name)
    status = rt.statuses.get(key) or parse_status(body.get("status"))
    try:
        pods = await rt.kube.list_session_pods(ref.namespace, ref.name)
        for pod in pods:
            if not pod.deleting:
                await rt.kube.delete_pod(ref.namespace, pod.name)
    except KubernetesUnavailable as exc:
        raise RetryLater(str(exc), 2.0) from exc
    conn = status.connection
    if conn is not None and conn.room is not None and not conn.ended:
        try:
            await rt.livekit.delete_room(conn.room)
        except LiveKitUnavailable as exc:
            if deleting_for < rt.settings.finalizer_budget_seconds:
                rt.metrics.errors.labels("LiveKitUnavailable").inc()
                raise RetryLater(
                    f"deleting room {conn.room}: {exc}", min(10.0, 1.0 + deleting_for / 4)
                ) from exc
            rt.record_event(
                body,
                "Warning",
                "LiveKitUnavailable",
                f"gave up deleting room {conn.room} after {deleting_for:.0f} s: LiveKit "
                "unavailable; its empty timeout will close the room",
            )
    if pods and not await _pods_gone(rt, ref, rt.settings.worker.termination_grace_seconds + 10.0):
        raise RetryLater(f"waiting for {len(pods)} worker pod(s) to be gone", 2.0)
    if conn is not None and not conn.ended:
        now = now_utc()
        ended = conn.model_copy(
            update={"end_reason": conn.end_reason or EndReason.DELETED, "ended_at": now}
        )
        try:
            await rt.kube.patch_session_status(
                ref.namespace,
                ref.name,
                status_patch(status.model_copy(update={"connection": ended})),
            )
        except KubernetesUnavailable:
            pass  # best effort: the object is going away
    rt.record_event(body, "Normal", "Deleted", "room and worker are gone")
    forget(rt, ref)


async def _pods_gone(rt: Runtime, ref: SessionRef, within: float) -> bool:
    """Awaited: each worker gets SIGTERM and its grace period to flush its memory writes."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        try:
            if not await rt.kube.list_session_pods(ref.namespace, ref.name):
                return True
        except KubernetesUnavailable:
            return False
    return False


# -- orphan rooms -------------------------------------------------------------------------------
async def sweep_orphan_rooms(
    rt: Runtime, current: Mapping[str, tuple[int, str | None]], min_age_seconds: float = 60.0
) -> list[str]:
    """Delete rooms of this namespace's sessions that no connection holds any more.

    `current` maps session name → (its connection id, its live room or None). A room goes
    only if it belongs to an *older* connection, or to the same connection under another
    name (left by an operator that died between creating it and recording it). Rooms of
    sessions not in `current` are left alone (LiveKit's empty timeout closes them), so a
    stale view (a paused standby replica) can never delete a live room.
    """
    deleted: list[str] = []
    now = time.time()
    for name, metadata, created in await rt.livekit.list_rooms():
        parsed = n.parse_room_name(name)
        if parsed is None or now - created < min_age_seconds:
            continue
        if not metadata.startswith(f'{{"session":"{rt.settings.namespace}/'):
            continue  # another namespace's (operator's) room
        session, connection = parsed
        if session not in current:
            continue
        current_id, current_room = current[session]
        if connection < current_id or (connection == current_id and name != current_room):
            await rt.livekit.delete_room(name)
            deleted.append(name)
    return deleted


def current_connection(status: VoiceSessionStatus) -> tuple[int, str | None] | None:
    conn = status.connection
    if conn is None:
        return None
    return conn.id, (conn.room if not conn.ended else None)
