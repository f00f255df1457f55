"""In-memory fakes of the operator's two dependencies (Kubernetes, LiveKit) for unit tests.

They keep the same contract as clients/kube.py and clients/livekit.py (idempotent
creates, not-found as a result, `*Unavailable` when switched off), not their internals.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from voicefleet_operator.clients.kube import KubernetesUnavailable
from voicefleet_operator.clients.livekit import LiveKitUnavailable
from voicefleet_operator.manifests import RoomRequest
from voicefleet_operator.plan import DispatchView, ParticipantView, PodView, RoomView


class FakeKube:
    def __init__(self) -> None:
        self.pods: dict[str, dict[str, Any]] = {}
        self.ready: set[str] = set()
        self.deleting: set[str] = set()
        self.status_writes: list[dict[str, Any]] = []
        self.annotations: dict[str, dict[str, str]] = {}
        self.secrets: dict[str, dict[str, Any]] = {}
        self.down = False
        self.claims: list[str] = []
        self.sessions: set[str] = set()  # VoiceSession names the API server has

    def _check(self) -> None:
        if self.down:
            raise KubernetesUnavailable("fake API server is down")

    async def list_session_pods(self, namespace: str, session: str) -> tuple[PodView, ...]:
        self._check()
        views = []
        for name, pod in sorted(self.pods.items()):
            labels = pod["metadata"]["labels"]
            if labels.get("voicefleet.dev/session") != session:
                continue
            ready = name in self.ready
            views.append(
                PodView(
                    name=name,
                    connection=int(labels["voicefleet.dev/connection"]),
                    phase="Running" if ready else "Pending",
                    ready=ready,
                    deleting=name in self.deleting,
                )
            )
        return tuple(views)

    async def list_session_names(self, namespace: str) -> set[str]:
        self._check()
        return set(self.sessions)

    async def create_pod(self, namespace: str, body: Mapping[str, Any]) -> bool:
        self._check()
        name = body["metadata"]["name"]
        if name in self.pods:
            return False
        self.pods[name] = dict(body)
        return True

    async def claim_pod(self, namespace: str, name: str, patch: Mapping[str, Any]) -> bool:
        """A resourceVersion-guarded merge patch: 409 (False) if the version moved on."""
        self._check()
        pod = self.pods.get(name)
        meta = patch["metadata"]
        if pod is None or pod["metadata"].get("resourceVersion") != meta["resourceVersion"]:
            return False
        labels = {**pod["metadata"].get("labels", {}), **meta["labels"]}
        pod["metadata"]["labels"] = {k: v for k, v in labels.items() if v is not None}
        pod["metadata"]["ownerReferences"] = meta["ownerReferences"]
        pod["metadata"]["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        self.claims.append(name)
        return True

    async def delete_pod_if_unchanged(
        self, namespace: str, name: str, resource_version: str
    ) -> bool:
        self._check()
        pod = self.pods.get(name)
        if pod is None or pod["metadata"].get("resourceVersion") != resource_version:
            return False
        self.deleting.add(name)
        return True

    async def delete_pod(self, namespace: str, name: str) -> None:
        self._check()
        if name in self.pods:
            self.deleting.add(name)

    def finish_deletions(self) -> None:
        """What the kubelet and the API server do once the grace period is over."""
        for name in list(self.deleting):
            self.pods.pop(name, None)
            self.ready.discard(name)
        self.deleting.clear()

    async def patch_session_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> bool:
        self._check()
        self.status_writes.append(dict(status))
        return True

    async def annotate_session(
        self, namespace: str, name: str, annotations: Mapping[str, str]
    ) -> bool:
        self._check()
        self.annotations.setdefault(name, {}).update(annotations)
        return True

    async def ensure_secret(self, namespace: str, body: Mapping[str, Any]) -> None:
        self.secrets[body["metadata"]["name"]] = dict(body)


class FakeLiveKit:
    def __init__(self) -> None:
        self.rooms: dict[str, RoomRequest] = {}
        self.participants: dict[str, list[ParticipantView]] = {}
        self.dispatches: dict[str, list[DispatchView]] = {}
        self.created_at: dict[str, int] = {}
        self.down = False
        self.calls: list[str] = []

    def _check(self, what: str) -> None:
        self.calls.append(what)
        if self.down:
            raise LiveKitUnavailable(f"{what}: fake LiveKit is down")

    async def observe_room(self, room: str, dispatches_if_no_agent: bool) -> RoomView:
        self._check("observe_room")
        if room not in self.rooms:
            return RoomView(exists=False)
        who = tuple(self.participants.get(room, ()))
        dispatches = tuple(self.dispatches.get(room, ())) if dispatches_if_no_agent else None
        return RoomView(exists=True, participants=who, dispatches=dispatches)

    async def create_room(self, req: RoomRequest) -> None:
        self._check("create_room")
        self.rooms.setdefault(req.name, req)

    async def delete_room(self, room: str) -> None:
        self._check("delete_room")
        self.rooms.pop(room, None)
        self.participants.pop(room, None)
        self.dispatches.pop(room, None)

    async def create_dispatch(
        self, room: str, agent_name: str, metadata: str, stale: tuple[str, ...] = ()
    ) -> str:
        self._check("create_dispatch")
        found = [d for d in self.dispatches.get(room, []) if d.id not in stale]
        dispatch = DispatchView(id=f"AD_{len(found) + 1}", agent_name=agent_name)
        self.dispatches[room] = [*found, dispatch]
        return dispatch.id

    async def list_rooms(self) -> list[tuple[str, str, int]]:
        self._check("list_rooms")
        return [
            (name, req.metadata, self.created_at.get(name, 0)) for name, req in self.rooms.items()
        ]

    async def aclose(self) -> None:
        return None
