"""VoiceSessions as the gateway uses them: find or create, request a connection, end it.

Waiting is a watch on the one session (bounded by a deadline), never a sleep: the operator
writes `status`, the watch delivers it, and `_ready` / `_ended` decide whether the caller's
connection has arrived where it should. Only `SessionStore` (kube.py in production, a fake
in unit tests) does I/O.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

from voicefleet_operator.api import (
    API_VERSION,
    KIND,
    ConnectionStatus,
    Phase,
    VoiceSessionStatus,
    parse_status,
)

from .auth import Principal
from .errors import (
    ApiError,
    CapacityExceeded,
    Conflict,
    ConnectionFailed,
    DependencyUnavailable,
    Forbidden,
    NotFound,
    NotReadyInTime,
)
from .kube import KubeApiError, KubeUnavailable, WatchEvent
from .limits import InFlight
from .naming import (
    ANNOTATION_END_CONNECTION,
    CREATED_BY,
    LABEL_CREATED_BY,
    LABEL_USER,
    session_name,
    user_label,
)

# The operator's Failed reason at its cap of live workers (SPEC.md, "Warm pool"): a 429.
REASON_CAPACITY_EXCEEDED = "CapacityExceeded"
CONFLICT_RETRIES = 5
T = TypeVar("T")
U = TypeVar("U")


class SessionStore(Protocol):
    async def read(self, name: str) -> dict[str, Any] | None: ...

    async def create(self, body: dict[str, Any]) -> dict[str, Any]: ...

    async def patch(self, name: str, patch: dict[str, Any]) -> dict[str, Any]: ...

    async def list(self, label_selector: str) -> list[dict[str, Any]]: ...

    def watch(
        self, name: str, resource_version: str, server_timeout: float
    ) -> AsyncIterator[WatchEvent]: ...

    async def close(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class Connected:
    session: str
    connection: int
    room: str


@dataclasses.dataclass(frozen=True)
class Ended:
    session: str
    connection: int
    phase: str | None
    end_reason: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "connection": self.connection,
            "phase": self.phase,
            "endReason": self.end_reason,
        }


# -- reading a session body (pure) --------------------------------------------------------
def _spec(obj: dict[str, Any]) -> dict[str, Any]:
    return dict(obj.get("spec") or {})


def _requested(obj: dict[str, Any]) -> int:
    return int(_spec(obj).get("connection") or 1)


def _rv(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _status(obj: dict[str, Any]) -> VoiceSessionStatus:
    return parse_status(obj.get("status"))


def _reason(status: VoiceSessionStatus) -> tuple[str, str]:
    """(reason, message) of the current state: the connection's failure, else Ready's."""
    ready = status.condition("Ready")
    conn = status.connection
    reason = (conn.failure if conn else None) or (ready.reason if ready else "") or "Unknown"
    message = (conn.failure_message if conn else None) or (ready.message if ready else "")
    return reason, message


def _is_live(obj: dict[str, Any]) -> bool:
    """Holds (or is about to hold) a room and a worker."""
    status = _status(obj)
    if status.phase is None:
        return True  # created, not yet seen by the operator
    return status.phase in (Phase.CONNECTING, Phase.READY)


def ready_room(name: str, obj: dict[str, Any], requested: int) -> str | None:
    """The room once connection `requested` is Ready; None to keep waiting; raises ApiError."""
    if _requested(obj) > requested:
        raise Conflict(
            f"connection {requested} of session {name} was superseded by "
            f"connection {_requested(obj)} (another connect request)"
        )
    status = _status(obj)
    conn = status.connection
    if conn is None or conn.id != requested:
        return None
    if status.phase == Phase.READY and conn.room:
        return conn.room
    if status.phase == Phase.FAILED:
        reason, message = _reason(status)
        detail = f"session {name} connection {requested} failed: {reason}"
        detail += f" ({message})" if message else ""
        if reason == REASON_CAPACITY_EXCEEDED:
            raise CapacityExceeded(detail + "; try again later", retry_after=10)
        raise ConnectionFailed(detail)
    if status.phase == Phase.IDLE or conn.ended:
        raise ConnectionFailed(
            f"session {name} connection {requested} ended before it was "
            f"ready: {conn.end_reason or 'unknown reason'}"
        )
    return None


def connection_ended(obj: dict[str, Any], target: int) -> bool:
    """Connection `target` is over: its room and worker are gone (or it never started)."""
    status = _status(obj)
    conn = status.connection
    if conn is None:
        return status.phase in (Phase.IDLE, Phase.FAILED)
    if conn.id > target:
        return True  # superseded: the operator ends a connection before starting the next
    if conn.id < target:
        return False
    return status.phase == Phase.IDLE or conn.ended


def _connection_json(conn: ConnectionStatus | None) -> dict[str, Any] | None:
    if conn is None:
        return None
    keep = {
        "id",
        "room",
        "startedAt",
        "agentJoinedAt",
        "userJoinedAt",
        "userLeftAt",
        "endedAt",
        "endReason",
        "restarts",
    }
    return {k: v for k, v in conn.to_wire().items() if k in keep}


def describe(name: str, obj: dict[str, Any]) -> dict[str, Any]:
    spec, status = _spec(obj), _status(obj)
    return {
        "session": name,
        "agentId": spec.get("agentId"),
        "userIdentity": spec.get("userIdentity"),
        "requestedConnection": _requested(obj),
        "phase": status.phase.value if status.phase else None,
        "connection": _connection_json(status.connection),
        "connectionsTotal": status.connections_total,
        "conditions": [c.to_wire() for c in status.conditions],
    }


# -- the service ----------------------------------------------------------------------------
class SessionService:
    def __init__(
        self,
        store: SessionStore,
        *,
        namespace: str,
        ready_timeout: float,
        idle_timeout: float,
        max_connections_per_user: int,
        in_flight: InFlight | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._namespace = namespace
        self._ready_timeout = ready_timeout
        self._idle_timeout = idle_timeout
        self._max_connections = max_connections_per_user
        self._in_flight = in_flight or InFlight()
        self._clock = clock

    async def connect(self, user: Principal, agent_id: str) -> Connected:
        """Find or create the caller's session with `agent_id`, start a fresh connection,
        and wait until it is Ready."""
        name = session_name(user.identity, agent_id)
        live = await self._live_sessions(user.identity)
        with self._in_flight.connecting(
            user.identity, name, live=live, limit=self._max_connections
        ):
            obj, requested = await self._request_connection(name, user, agent_id)
            room = await self._wait(
                name,
                obj,
                lambda o: ready_room(name, o, requested),
                self._ready_timeout,
                f"connection {requested} of session {name} to be Ready",
            )
        return Connected(session=name, connection=requested, room=room)

    async def disconnect(self, user: Principal, name: str) -> Ended:
        """End the session's current connection; return once its room and worker are gone."""
        obj = await self._owned(user, name)
        target = _requested(obj)
        if not connection_ended(obj, target):
            obj = await self._kube(
                self._store.patch(
                    name, {"metadata": {"annotations": {ANNOTATION_END_CONNECTION: str(target)}}}
                )
            )
            obj = await self._wait(
                name,
                obj,
                lambda o: o if connection_ended(o, target) else None,
                self._idle_timeout,
                f"connection {target} of session {name} to end",
            )
        status = _status(obj)
        conn = status.connection
        return Ended(
            session=name,
            connection=target,
            phase=status.phase.value if status.phase else None,
            end_reason=conn.end_reason.value if conn and conn.end_reason else None,
        )

    async def describe(self, user: Principal, name: str) -> dict[str, Any]:
        return describe(name, await self._owned(user, name))

    # -- steps ------------------------------------------------------------------------------
    async def _kube(self, call: Awaitable[U]) -> U:
        """Await a store call, turning Kubernetes failures into the API's errors."""
        try:
            return await call
        except KubeUnavailable as exc:
            raise DependencyUnavailable(f"Kubernetes API unavailable: {exc}") from None
        except KubeApiError as exc:
            if exc.status in (401, 403):
                raise DependencyUnavailable(
                    f"the gateway's Kubernetes account may not do this ({exc.reason}): "
                    "check its RBAC (verbs on voicesessions)"
                ) from None
            raise

    async def _owned(self, user: Principal, name: str) -> dict[str, Any]:
        obj = await self._kube(self._store.read(name))
        if obj is None:
            raise NotFound(f"no session {name} in namespace {self._namespace}")
        if _spec(obj).get("userIdentity") != user.identity:
            raise Forbidden(f"session {name} belongs to another user")
        return dict(obj)

    async def _live_sessions(self, identity: str) -> frozenset[str]:
        items = await self._kube(self._store.list(f"{LABEL_USER}={user_label(identity)}"))
        return frozenset(
            str(o["metadata"]["name"])
            for o in items
            if _spec(o).get("userIdentity") == identity and _is_live(o)
        )

    def _new_session(self, name: str, user: Principal, agent_id: str) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {
                "name": name,
                "namespace": self._namespace,
                "labels": {LABEL_USER: user_label(user.identity), LABEL_CREATED_BY: CREATED_BY},
            },
            "spec": {"agentId": agent_id, "userIdentity": user.identity, "connection": 1},
        }

    async def _request_connection(
        self, name: str, user: Principal, agent_id: str
    ) -> tuple[dict[str, Any], int]:
        """(session body, requested connection id): created at 1, or raised by one."""
        for _ in range(CONFLICT_RETRIES):
            obj = await self._kube(self._store.read(name))
            try:
                if obj is None:
                    created = await self._kube(
                        self._store.create(self._new_session(name, user, agent_id))
                    )
                    return created, 1
                spec = _spec(obj)
                if spec.get("userIdentity") != user.identity:
                    raise Forbidden(f"session {name} belongs to another user")
                if spec.get("agentId") != agent_id:
                    raise Conflict(f"session {name} talks to another agent ({spec.get('agentId')})")
                requested = _requested(obj) + 1
                patched = await self._kube(
                    self._store.patch(
                        name,
                        {
                            "metadata": {"resourceVersion": _rv(obj)},
                            "spec": {"connection": requested},
                        },
                    )
                )
                return patched, requested
            except KubeApiError as exc:
                if exc.status != 409:  # AlreadyExists or a stale resourceVersion: read again
                    raise DependencyUnavailable(
                        f"Kubernetes refused session {name}: {exc.reason}: {exc.message}"
                    ) from None
        raise Conflict(f"session {name} changed {CONFLICT_RETRIES} times while connecting; retry")

    async def _wait(
        self,
        name: str,
        obj: dict[str, Any],
        decide: Callable[[dict[str, Any]], T | None],
        limit_seconds: float,
        what: str,
    ) -> T:
        """Watch session `name` from `obj` until `decide` answers (or raises), or time is up."""
        deadline = self._clock() + limit_seconds
        current = obj
        failures = 0
        while True:
            outcome = decide(current)
            if outcome is not None:
                return outcome
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise self._timeout(name, current, what, limit_seconds)
            try:
                async with asyncio.timeout(remaining):
                    async for event in self._store.watch(name, _rv(current), remaining):
                        if event.type == "DELETED":
                            raise NotFound(f"session {name} was deleted while waiting for {what}")
                        if event.type == "BOOKMARK":
                            current = {
                                **current,
                                "metadata": {
                                    **(current.get("metadata") or {}),
                                    "resourceVersion": _rv(event.object),
                                },
                            }
                            continue
                        current = event.object
                        outcome = decide(current)
                        if outcome is not None:
                            return outcome
            except TimeoutError:
                raise self._timeout(name, current, what, limit_seconds) from None
            except KubeApiError as exc:
                if exc.status != 410:  # 410: the version expired; anything else is wrong
                    raise DependencyUnavailable(f"watching session {name}: {exc}") from None
            except KubeUnavailable:
                # A dropped stream: back off a little before watching again, so a flapping
                # API server is not hammered (this is error handling, not waiting for Ready).
                failures += 1
                await asyncio.sleep(min(0.2 * 2**failures, 5.0, max(0.0, deadline - self._clock())))
            # The watch ended (server timeout, expired version, dropped stream): read the
            # session afresh and watch again from its current version.
            fresh = await self._kube(self._store.read(name))
            if fresh is None:
                raise NotFound(f"session {name} was deleted while waiting for {what}")
            current = fresh

    @staticmethod
    def _timeout(name: str, obj: dict[str, Any], what: str, timeout: float) -> ApiError:
        status = _status(obj)
        reason, message = _reason(status)
        phase = status.phase.value if status.phase else "not yet reconciled"
        detail = f"waited {timeout:.0f} s for {what}; phase {phase}, reason {reason}"
        return NotReadyInTime(detail + (f" ({message})" if message else ""))
