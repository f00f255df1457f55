"""Fakes of the gateway's edges: an in-memory VoiceSession store with real watch semantics,
a fake operator that plays the operator's part on it, and a fixed Letta agent directory."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

from voicefleet_web.agents import Agent
from voicefleet_web.kube import KubeApiError, KubeUnavailable, WatchEvent
from voicefleet_web.naming import ANNOTATION_END_CONNECTION

NOW = "2026-11-26T10:00:00Z"


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


class FakeStore:
    """VoiceSessions in memory; `watch` replays history after a resourceVersion, then waits."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.history: list[tuple[int, WatchEvent]] = []
        self.rv = 100
        self.changed = asyncio.Event()
        self.unavailable = False
        self.operator: FakeOperator | None = None
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.closed = False
        self.watch_failures: list[Exception] = []  # raised by the next watch calls, in order
        self.watches = 0

    def _check(self) -> None:
        if self.unavailable:
            raise KubeUnavailable("fake API server is down")

    def _commit(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.history.append((self.rv, WatchEvent(kind, copy.deepcopy(obj))))
        self.changed.set()
        self.changed = asyncio.Event()
        if self.operator is not None and kind != "DELETED":
            self.operator.observe(obj["metadata"]["name"])
        return copy.deepcopy(obj)

    async def read(self, name: str) -> dict[str, Any] | None:
        self._check()
        obj = self.objects.get(name)
        return copy.deepcopy(obj) if obj else None

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check()
        name = body["metadata"]["name"]
        if name in self.objects:
            raise KubeApiError(409, "AlreadyExists", f"{name} already exists")
        obj = copy.deepcopy(body)
        obj["metadata"].update(uid=f"uid-{name}", generation=1, creationTimestamp=NOW)
        self.objects[name] = obj
        return self._commit("ADDED", obj)

    async def patch(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self._check()
        obj = self.objects.get(name)
        if obj is None:
            raise KubeApiError(404, "NotFound", f"{name} not found")
        self.patches.append((name, copy.deepcopy(patch)))
        patch = copy.deepcopy(patch)
        wanted = (patch.get("metadata") or {}).pop("resourceVersion", None)
        if wanted is not None and wanted != obj["metadata"]["resourceVersion"]:
            raise KubeApiError(409, "Conflict", "the object has been modified")
        before = copy.deepcopy(obj.get("spec"))
        _merge(obj, patch)
        if obj.get("spec") != before:
            obj["metadata"]["generation"] += 1
        return self._commit("MODIFIED", obj)

    def set_status(self, name: str, status: dict[str, Any]) -> None:
        """The operator's part: write the status subresource."""
        obj = self.objects[name]
        obj["status"] = copy.deepcopy(status)
        self._commit("MODIFIED", obj)

    async def delete(self, name: str) -> None:
        obj = self.objects.pop(name)
        self._commit("DELETED", obj)

    async def list(self, label_selector: str) -> list[dict[str, Any]]:
        self._check()
        wanted = dict(p.split("=", 1) for p in label_selector.split(",") if p)
        return [
            copy.deepcopy(o)
            for o in self.objects.values()
            if all((o["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())
        ]

    async def watch(
        self, name: str, resource_version: str, server_timeout: float
    ) -> AsyncIterator[WatchEvent]:
        self._check()
        self.watches += 1
        if self.watch_failures:
            raise self.watch_failures.pop(0)
        seen = int(resource_version)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + server_timeout
        while True:
            for rv, event in list(self.history):
                if rv > seen and event.object["metadata"]["name"] == name:
                    seen = rv
                    yield WatchEvent(event.type, copy.deepcopy(event.object))
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                return

    async def close(self) -> None:
        self.closed = True


def _conn(cid: int, room: str | None, **extra: Any) -> dict[str, Any]:
    return {"id": cid, "room": room, "startedAt": NOW, **extra}


def ready_condition(status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": NOW,
    }


@dataclasses.dataclass
class FakeOperator:
    """Plays the operator on a FakeStore, asynchronously (as the real one does).

    mode: "ready" (Connecting, then Ready with a room), "fail" (Failed with `reason`),
    "never" (stays Connecting). An end-connection annotation makes the connection Idle.
    """

    store: FakeStore
    mode: str = "ready"
    reason: str = "WorkerFailed"
    honour_end: bool = True

    def __post_init__(self) -> None:
        self.store.operator = self
        self.tasks: set[asyncio.Task[None]] = set()

    def observe(self, name: str) -> None:
        task = asyncio.get_running_loop().create_task(self._reconcile(name))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _reconcile(self, name: str) -> None:
        await asyncio.sleep(0)  # after the gateway's call returned, like a real controller
        obj = self.store.objects.get(name)
        if obj is None:
            return
        wanted = int(obj["spec"].get("connection", 1))
        status = obj.get("status") or {}
        conn = status.get("connection") or {}
        end = (obj["metadata"].get("annotations") or {}).get(ANNOTATION_END_CONNECTION)
        if (
            conn.get("id") == wanted
            and end == str(wanted)
            and self.honour_end
            and status.get("phase") != "Idle"
        ):
            self.store.set_status(
                name,
                {
                    "phase": "Idle",
                    "connection": _conn(
                        wanted, conn.get("room"), endedAt=NOW, endReason="UserLeft"
                    ),
                    "connectionsTotal": status.get("connectionsTotal", 0),
                    "conditions": [ready_condition("False", "ConnectionEnded")],
                },
            )
            return
        if conn.get("id") == wanted:
            return
        room = f"vs-{name}-{wanted}-bcdfg"
        total = int(status.get("connectionsTotal", 0)) + 1
        self.store.set_status(
            name,
            {
                "phase": "Connecting",
                "connection": _conn(wanted, room),
                "connectionsTotal": total,
                "conditions": [ready_condition("False", "Connecting")],
            },
        )
        if self.mode == "never":
            return
        await asyncio.sleep(0)
        if self.mode == "fail":
            self.store.set_status(
                name,
                {
                    "phase": "Failed",
                    "connection": _conn(
                        wanted, room, failure=self.reason, failureMessage=f"fake {self.reason}"
                    ),
                    "connectionsTotal": total,
                    "conditions": [ready_condition("False", self.reason, f"fake {self.reason}")],
                },
            )
            return
        self.store.set_status(
            name,
            {
                "phase": "Ready",
                "connection": _conn(wanted, room, agentJoinedAt=NOW),
                "connectionsTotal": total,
                "conditions": [ready_condition("True", "AgentReady")],
            },
        )


class FakeAgents:
    def __init__(self, agents: list[Agent] | None = None) -> None:
        self.agents = (
            agents
            if agents is not None
            else [Agent("agent-66", "Agent_66"), Agent("agent-7", "Agent_7")]
        )
        self.unavailable = False

    async def list_agents(self) -> list[Agent]:
        if self.unavailable:
            from voicefleet_web.errors import DependencyUnavailable

            raise DependencyUnavailable("fake Letta is down")
        return list(self.agents)

    async def get_agent(self, agent_id: str) -> Agent | None:
        await self.list_agents()
        return next((a for a in self.agents if a.id == agent_id), None)

    async def close(self) -> None:
        pass


# Shared by the unit tests of the gateway (imported by name, so never from `conftest`).
DEV_TOKEN = "dev-token-0123456789abcdef"
LIVEKIT_KEY = "APIunit"
LIVEKIT_SECRET = "unit-secret-0123456789abcdef0123456789"
AUTH = {"Authorization": f"Bearer {DEV_TOKEN}"}
MakeClient = Callable[..., Any]
