"""Reconcile a VoiceSession: observe → plan (desired, diff) → write status + apply, as plain async functions.

The status write and the actions go out together, in one round trip. That is safe because
the names of a connection's room and pod are derived from the session's uid and the
connection (naming.derived_suffix): an operator that dies between creating and recording
finds the same names on restart instead of making new ones. Creating twice is harmless (a
pod of the same name answers 409, LiveKit returns an existing room), and what was actually
done is only ever recorded from what is observed on the next pass.

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
    WorkerOverrides,
    now_utc,
    parse_spec,
    parse_status,
)
from .clients.kube import KubeClient, KubernetesUnavailable
from .clients.livekit import LiveKitClient, LiveKitUnavailable
from .clients.worker_probe import WorkerReadiness
from .config import Settings
from .expect import ExpectedUntilSeen
from .manifests import (
    SessionRef,
    build_dispatch_metadata,
    build_room_request,
    build_worker_pod,
    warm_pod_claim,
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
from .pool import WarmPool

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


class Expectations:
    """What this process created and has not seen yet (client-go's controller expectations).

    kopf's pod index lags behind a create by one watch event, and the pass after a create
    runs at once: without this it would see no pod and create it again (a 409, but a full
    API write). A created pod counts as Pending until the index shows it, for at most `ttl`
    seconds (then the index is believed again). A created room is taken as seen and empty by
    the next pass: the create's answer is that observation, so LiveKit is not asked again.
    """

    def __init__(self, ttl: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl, self._clock = ttl, clock
        self._pods: dict[str, ExpectedUntilSeen[PodView]] = {}
        self._rooms: dict[str, str] = {}

    def created_pod(self, key: str, pod: PodView) -> None:
        expected = self._pods.get(key)
        if expected is None:
            expected = self._pods[key] = ExpectedUntilSeen(self._ttl, self._clock)
        expected.add(pod.name, pod)

    def pods(self, key: str, seen: tuple[PodView, ...]) -> tuple[PodView, ...]:
        """`seen` plus the pods created here that the index does not show yet."""
        expected = self._pods.get(key)
        if not expected:
            return seen
        expected.seen(p.name for p in seen)
        expected.expire()
        if not expected:
            del self._pods[key]
            return seen
        return tuple(sorted((*seen, *expected.items()), key=lambda p: p.name))

    def created_room(self, key: str, room: str) -> None:
        self._rooms[key] = room

    def take_room(self, key: str, room: str) -> bool:
        """True once after `room` was created here (the next pass's observation of it)."""
        if self._rooms.get(key) != room:
            return False
        del self._rooms[key]
        return True

    def forget(self, key: str) -> None:
        self._pods.pop(key, None)
        self._rooms.pop(key, None)


class RecentRooms:
    """Room views LiveKit gave a session's earlier pass, reused while a worker starts.

    Until a connection's worker is ready its passes are woken by the worker pod's own updates
    (created, scheduled, started, ready: several per cold start), not by anything in the
    room, and each asked LiveKit for the room's participants again: 1.35 ListParticipants
    per session in a burst of 1,000. A view younger than `max_age` answers such a pass
    instead, unless LiveKit reported something about the session since it was taken (the
    webhook's mark on the session, or this process's receiver forgetting the view). The
    periodic room check comes `room_check_seconds` (at least `max_age`) after a pass and asks
    again, so a lost webhook still changes nothing but latency; once the status has the
    worker ready, every pass asks (it needs the room's dispatches too).
    """

    def __init__(self, max_age: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_age, self._clock = max_age, clock
        self._views: dict[str, tuple[str, str | None, float, RoomView]] = {}

    def get(self, key: str, room: str, mark: str | None) -> RoomView | None:
        """The view of `room` kept for the session, if still good for a pass with `mark`."""
        kept = self._views.get(key)
        if kept is None:
            return None
        kept_room, kept_mark, at, view = kept
        if kept_room != room or kept_mark != mark or self._clock() - at >= self._max_age:
            del self._views[key]
            return None
        return view

    def put(self, key: str, room: str, mark: str | None, view: RoomView) -> None:
        self._views[key] = (room, mark, self._clock(), view)

    def forget(self, key: str) -> None:
        self._views.pop(key, None)


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
    unwritten: set[str] = dataclasses.field(default_factory=set)  # statuses kept for the next pass
    expect: Expectations = dataclasses.field(default_factory=Expectations)
    rooms: RecentRooms = dataclasses.field(init=False)
    pool: WarmPool = dataclasses.field(default_factory=WarmPool)
    readiness: WorkerReadiness | None = None  # asks a not-ready worker why (None: never)
    failures: dict[str, int] = dataclasses.field(default_factory=dict)
    locks: dict[str, asyncio.Lock] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        # Half the periodic room check: the check's own pass always asks LiveKit again.
        self.rooms = RecentRooms(self.settings.room_check_seconds / 2)

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
async def _with_worker_reasons(
    readiness: WorkerReadiness, pods: tuple[PodView, ...]
) -> tuple[PodView, ...]:
    """Started workers that are not ready, with their own reasons (their /readyz)."""
    out = []
    for pod in pods:
        if pod.phase == "Running" and not pod.ready and not pod.deleting:
            why = await readiness.reasons(pod.name, pod.address)
            if why:
                pod = dataclasses.replace(pod, not_ready_because=why)
        elif pod.ready or pod.deleting:
            readiness.forget(pod.name)
        out.append(pod)
    return tuple(out)


async def observe(
    rt: Runtime,
    ref: SessionRef,
    spec: VoiceSessionSpec | None,
    status: VoiceSessionStatus,
    indexed_holders: Collection[str],
    generation: int,
    known_pods: Iterable[PodView] | None = None,
    end_requested: int | None = None,
    livekit_mark: str | None = None,
) -> Observation:
    """What is: the session's pods (from kopf's pod index when given, else a LIST), its room."""
    key = n.session_key(ref.namespace, ref.name)
    if known_pods is not None:
        pods = tuple(sorted(known_pods, key=lambda p: p.name))
    else:
        pods = await rt.kube.list_session_pods(ref.namespace, ref.name)
    pods = rt.expect.pods(key, pods)
    # Pod names come from a hash of the session's uid (naming.derived_suffix): two sessions
    # can meet on one name (1,000 live pods: ~3 % per 1,000 new ones). The create of the
    # second answers 409, and its expectation must not stand in for another session's pod
    # (nor ever be deleted as an extra one of this session).
    pods = tuple(p for p in pods if not rt.pool.taken_by_another(p.name, ref.name))
    conn = status.connection
    pod_name_taken = (
        conn is not None
        and conn.pod is not None
        and not conn.ended
        and rt.pool.taken_by_another(conn.pod, ref.name)
    )
    if rt.readiness is not None:
        pods = await _with_worker_reasons(rt.readiness, pods)
    room: RoomView | None = None
    error: str | None = None
    if conn is not None and conn.room is not None and not conn.ended:
        try:
            room = await _observe_room(rt, key, conn, livekit_mark)
        except LiveKitUnavailable as exc:
            error = str(exc)
            rt.metrics.errors.labels("LiveKitUnavailable").inc()
    holder = None
    if spec is not None and rt.settings.one_connection_per_agent:
        holder = await _agent_holder(rt, ref, spec.agent_id, indexed_holders)
    # The names a new room or pod of this pass would get (see naming.derived_suffix): the
    # connection is spec.connection (a live one with a lower id ends instead of growing), and
    # a pod is named after how many pods the connection has lost, counting the one the plan
    # will find lost now (a recorded pod that is not seen).
    connection = spec.connection if spec is not None else (conn.id if conn else 1)
    pods_lost = 0
    if conn is not None and conn.id == connection:
        pods_lost = conn.pods_lost + (1 if conn.pod is not None else 0)
    cap = rt.settings.max_workers
    return Observation(
        capacity_left=cap - rt.pool.live_workers() if cap else None,
        now=now_utc(),
        generation=generation,
        pods=pods,
        room=room,
        livekit_error=error,
        agent_holder=holder,
        room_suffix=n.derived_suffix(ref.uid, "room", connection),
        pod_suffix=_free_pod_suffix(rt, ref, connection, pods_lost),
        pod_name_taken=pod_name_taken,
        end_requested=end_requested,
    )


async def _observe_room(
    rt: Runtime, key: str, conn: ConnectionStatus, mark: str | None
) -> RoomView:
    """The connection's room: as just created here, as seen a moment ago (RecentRooms: only
    while the worker starts), or as LiveKit has it now."""
    assert conn.room is not None
    starting = conn.pod_ready_at is None  # dispatches are looked at once the worker is ready
    if rt.expect.take_room(key, conn.room):
        # Just created here: it exists, nobody is in it, nothing is dispatched to it.
        room = RoomView(exists=True, dispatches=None if starting else ())
    elif starting and (kept := rt.rooms.get(key, conn.room, mark)) is not None:
        return kept
    else:
        room = await rt.livekit.observe_room(conn.room, dispatches_if_no_agent=not starting)
    if starting:
        rt.rooms.put(key, conn.room, mark, room)
    return room


POD_NAME_CANDIDATES = 8


def _free_pod_suffix(rt: Runtime, ref: SessionRef, connection: int, pods_lost: int) -> str:
    """The first derived pod suffix whose name no other session's pod has (as watched)."""
    suffix = n.derived_suffix(ref.uid, "pod", connection, pods_lost)
    for attempt in range(1, POD_NAME_CANDIDATES):
        if not rt.pool.taken_by_another(n.pod_name(suffix), ref.name):
            break
        suffix = n.derived_suffix(ref.uid, "pod", connection, pods_lost, attempt)
    return suffix


async def _agent_holder(
    rt: Runtime, ref: SessionRef, agent_id: str, indexed: Collection[str]
) -> str | None:
    """Another session holding `agent_id` now, each candidate checked before a user waits.

    Both sources can be stale: kopf's index lags behind (or misses) a release, and a claim
    of this process outlives its connection if the holder's releasing pass never ran. A
    candidate that does not hold the agent by its latest status (this process's own view
    first, else the API server's) is dropped, and the next one is looked at.
    """
    excluded: set[str] = set()
    for _ in range(len(indexed) + 2):
        holder = rt.claims.holder(agent_id, ref.name, [h for h in indexed if h not in excluded])
        if holder is None or await _holds(rt, ref.namespace, holder):
            return holder
        excluded.add(holder)
        rt.claims.update(agent_id, holder, holds=False)
    return None


async def _holds(rt: Runtime, namespace: str, session: str) -> bool:
    known = rt.statuses.get(n.session_key(namespace, session))
    if known is not None:
        return holds_agent(known)
    current = await rt.kube.read_session_status(namespace, session)
    return current is not None and holds_agent(parse_status(current))


# -- apply ----------------------------------------------------------------------------------
async def apply(
    rt: Runtime,
    body: Mapping[str, Any],
    ref: SessionRef,
    spec: VoiceSessionSpec | None,
    actions: Iterable[Action],
) -> list[str]:
    """Carry out the plan's actions; returns what failed (each also an Event and a metric)."""
    # Events are only queued (kopf posts them in the background), in the plan's order; the
    # other actions are independent of each other (the plan never creates and deletes one
    # thing in one pass), so they go out together: one round trip, not one per action.
    todo = list(actions)
    for event in (a for a in todo if isinstance(a, RecordEvent)):
        rt.record_event(body, event.type, event.reason, event.message)
    world = [a for a in todo if not isinstance(a, RecordEvent)]
    results = await asyncio.gather(
        *(_apply_one(rt, ref, spec, a) for a in world), return_exceptions=True
    )
    failed: list[str] = []
    for action, exc in zip(world, results, strict=True):
        if isinstance(exc, asyncio.CancelledError):
            raise exc
        if exc is None:
            continue
        if isinstance(exc, LiveKitUnavailable | KubernetesUnavailable):
            reason = (
                "LiveKitUnavailable"
                if isinstance(exc, LiveKitUnavailable)
                else "KubernetesUnavailable"
            )
            failed.append(str(exc))
            rt.metrics.errors.labels(reason).inc()
            log.warning("session %s/%s: %s", ref.namespace, ref.name, exc)
        elif isinstance(exc, Exception):  # a refusal (403, 422, 4xx from LiveKit): say so, go on
            failed.append(f"{type(action).__name__}: {type(exc).__name__}")
            rt.metrics.errors.labels(type(action).__name__ + "Refused").inc()
            log.error(
                "session %s/%s: %s failed",
                ref.namespace,
                ref.name,
                type(action).__name__,
                exc_info=exc,
            )
            rt.record_event(
                body,
                "Warning",
                "ActionFailed",
                f"{type(action).__name__} failed: {type(exc).__name__}: {_safe(exc)}",
            )
        else:
            raise exc
    return failed


def _safe(exc: BaseException) -> str:
    """An error text for an Event: first line, bounded (no request bodies, no headers)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text[:300]


async def _apply_one(
    rt: Runtime, ref: SessionRef, spec: VoiceSessionSpec | None, action: Action
) -> None:
    if isinstance(action, DeletePod):
        await rt.kube.delete_pod(ref.namespace, action.pod)
    elif isinstance(action, DeleteRoom):
        await rt.livekit.delete_room(action.room)
    elif spec is None:
        raise RuntimeError(f"{type(action).__name__} needs a valid spec")
    elif isinstance(action, CreateRoom):
        await rt.livekit.create_room(build_room_request(ref, spec, action.connection, action.room))
        rt.expect.created_room(n.session_key(ref.namespace, ref.name), action.room)
    elif isinstance(action, CreatePod):
        pod = build_worker_pod(ref, spec, action.connection, action.pod, action.room, rt.settings)
        await rt.kube.create_pod(ref.namespace, pod)  # False: it exists already; as good
        rt.expect.created_pod(
            n.session_key(ref.namespace, ref.name), PodView(action.pod, action.connection)
        )
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
            rt,
            ref,
            spec,
            status,
            indexed_holders,
            generation,
            known_pods,
            _end_requested(body),
            (body["metadata"].get("annotations") or {}).get(n.ANNOTATION_LIVEKIT_EVENT),
        )
    except KubernetesUnavailable as exc:
        return _backoff(rt, key, str(exc), "KubernetesUnavailable")
    result: Plan = (
        plan(ref.name, spec, status, obs, rt.limits)
        if spec is not None
        else plan_invalid_spec(status, obs, invalid or "invalid spec", rt.limits)
    )
    if spec is not None:
        result = await claim_warm_pod(rt, body, ref, spec, status, obs, result)
        rt.claims.update(spec.agent_id, ref.name, holds_agent(result.status))
    changed = result.status != status
    if changed and _creates_only(result.actions):
        # Nothing needs recording before a create (the names are derived from the session:
        # naming.derived_suffix), and the next pass runs at once and sees what the creates
        # did: that pass writes the status, one write where there were two. A failed create
        # is written now, with the condition that says why.
        failed = await apply(rt, body, ref, spec, result.actions)
        if not failed:
            rt.statuses[key] = result.status
            rt.unwritten.add(key)
            _record_steps(rt.metrics, status.connection, result.status.connection)
            rt.failures.pop(key, None)
            return 0.0
        written = await _write_status(rt, ref, result.status)
    else:
        # The status write and the plan's actions go out together (one round trip).
        write = changed or key in rt.unwritten
        written, failed = await asyncio.gather(
            _write_status(rt, ref, result.status) if write else _nothing(),
            apply(rt, body, ref, spec, result.actions),
        )
    if isinstance(written, KubernetesUnavailable):
        return _backoff(rt, key, str(written), "KubernetesUnavailable")
    if written is False:
        return None  # the session is gone
    rt.unwritten.discard(key)
    if changed:
        rt.statuses[key] = result.status
        _record_steps(rt.metrics, status.connection, result.status.connection)
    log.debug(
        "session %s: phase %s, actions [%s], %d failed, next look in %s s",
        key,
        result.status.phase,
        ", ".join(type(a).__name__ for a in result.actions),
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


async def claim_warm_pod(
    rt: Runtime,
    body: Mapping[str, Any],
    ref: SessionRef,
    spec: VoiceSessionSpec,
    status: VoiceSessionStatus,
    obs: Observation,
    result: Plan,
) -> Plan:
    """The warm path: a plan that creates a new worker pod claims a ready pool pod instead.

    Only for a pod not decided before (a name the last status already holds may be on its
    way) and a spec without worker overrides (pool pods run the defaults). The claim is a
    resourceVersion-guarded patch; a lost race tries the next pod, then the cold path. On a
    win, the claimed pod is expected in the session's pods and the pass is planned again:
    the plan adopts it (ready: no cold start) instead of creating one.
    """
    create = next((a for a in result.actions if isinstance(a, CreatePod)), None)
    if create is None or rt.settings.warm_pool_size == 0 or spec.worker != WorkerOverrides():
        return result
    if status.connection is not None and status.connection.pod == create.pod:
        return result
    key = n.session_key(ref.namespace, ref.name)
    for pod in rt.pool.candidates()[:3]:
        rt.pool.claiming(pod.name)
        patch = warm_pod_claim(ref, spec, create.connection, create.room, pod.resource_version)
        try:
            won = await rt.kube.claim_pod(ref.namespace, pod.name, patch)
        except KubernetesUnavailable as exc:
            rt.pool.released(pod.name)
            log.warning("session %s: claiming warm pod %s: %s", key, pod.name, exc)
            break
        if not won:
            rt.pool.released(pod.name)
            rt.metrics.warm_claims.labels("conflict").inc()
            continue
        rt.expect.created_pod(key, PodView(pod.name, create.connection, "Running", ready=True))
        claimed = dataclasses.replace(obs, pods=rt.expect.pods(key, obs.pods))
        replanned = plan(ref.name, spec, status, claimed, rt.limits)
        rt.record_event(
            body,
            "Normal",
            "WarmPodClaimed",
            f"warm worker {pod.name} claimed for room {create.room}",
        )
        rt.metrics.warm_claims.labels("claimed").inc()
        return replanned
    rt.metrics.warm_claims.labels("cold").inc()
    return result


def _creates_only(actions: Iterable[Action]) -> bool:
    world = [a for a in actions if not isinstance(a, RecordEvent)]
    return bool(world) and all(isinstance(a, CreateRoom | CreatePod) for a in world)


async def _write_status(
    rt: Runtime, ref: SessionRef, status: VoiceSessionStatus
) -> bool | KubernetesUnavailable:
    """True when written, False when the session is gone, the error when unreachable."""
    try:
        return await rt.kube.patch_session_status(ref.namespace, ref.name, status_patch(status))
    except KubernetesUnavailable as exc:
        return exc


async def _nothing() -> bool:
    return True


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
    rt.unwritten.discard(key)
    rt.expect.forget(key)
    rt.rooms.forget(key)
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
    if it belongs to an *older* connection, or to the same connection under another name
    (left by an operator that died between creating it and recording it), or to a session
    the API server no longer has (deleted while LiveKit was down for longer than the
    finalizer's budget). That last check asks the API server itself, after listing the
    rooms (a room is only made for a session that exists), and only for rooms whose session
    this process does not know, so a stale or empty view (a standby replica, a fresh
    start) can never delete a live room.
    """
    deleted: list[str] = []
    now = time.time()
    unknown: list[tuple[str, str]] = []  # (room, session) of sessions not in `current`
    for name, metadata, created in await rt.livekit.list_rooms():
        parsed = n.parse_room_name(name)
        if parsed is None or now - created < min_age_seconds:
            continue
        if not metadata.startswith(f'{{"session":"{rt.settings.namespace}/'):
            continue  # another namespace's (operator's) room
        session, connection = parsed
        if session not in current:
            unknown.append((name, session))
            continue
        current_id, current_room = current[session]
        if connection < current_id or (connection == current_id and name != current_room):
            await rt.livekit.delete_room(name)
            deleted.append(name)
    if unknown:
        existing = await rt.kube.list_session_names(rt.settings.namespace)
        for name, session in unknown:
            if session not in existing:
                await rt.livekit.delete_room(name)
                deleted.append(name)
    return deleted


def current_connection(status: VoiceSessionStatus) -> tuple[int, str | None] | None:
    conn = status.connection
    if conn is None:
        return None
    return conn.id, (conn.room if not conn.ended else None)
