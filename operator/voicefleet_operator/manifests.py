"""Pure builders: the worker pod, the workers' credentials Secret, the room request, dispatch metadata.

Nothing here does I/O: each function returns a JSON-ready object that the reconcile layer
hands to a client. Secrets never appear as literals in a pod: the pod reads them from the
credentials Secret by reference.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from . import naming as n
from .api import API_VERSION, KIND, VoiceSessionSpec, WorkerOverrides
from .config import Settings

CONTAINER = "worker"
HEALTH_PORT_NAME = "health"
SECRET_KEY_LIVEKIT_KEY = "LIVEKIT_API_KEY"
SECRET_KEY_LIVEKIT_SECRET = "LIVEKIT_API_SECRET"
SECRET_KEY_LETTA = "LETTA_API_KEY"
# LiveKit's own backstops, should the operator be gone: it closes a room nobody joined and
# a room everybody left, later than the operator would.
ROOM_EMPTY_MARGIN_SECONDS = 60
ROOM_DEPARTURE_MARGIN_SECONDS = 60

Object = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class SessionRef:
    """What a builder needs to know about the VoiceSession object itself."""

    namespace: str
    name: str
    uid: str


@dataclasses.dataclass(frozen=True)
class RoomRequest:
    name: str
    empty_timeout: int
    departure_timeout: int
    metadata: str


def owner_reference(session: SessionRef) -> Object:
    """The VoiceSession as controller owner: deleting it deletes the pod (garbage collector)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": session.name,
        "uid": session.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _secret_env(name: str, secret: str, key: str, optional: bool = False) -> Object:
    ref: Object = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def worker_env(settings: Settings, overrides: WorkerOverrides) -> list[Object]:
    """The worker's environment of docs/contracts.md, then the session's own (non-reserved) env."""
    w = settings.worker
    env: list[Object] = [
        {"name": "LIVEKIT_URL", "value": w.livekit_url},
        _secret_env("LIVEKIT_API_KEY", w.secret_name, SECRET_KEY_LIVEKIT_KEY),
        _secret_env("LIVEKIT_API_SECRET", w.secret_name, SECRET_KEY_LIVEKIT_SECRET),
        {"name": "LETTA_BASE_URL", "value": w.letta_base_url},
        _secret_env("LETTA_API_KEY", w.secret_name, SECRET_KEY_LETTA, optional=True),
        # The agent name the worker registers under is its pod name (the dispatch target).
        {
            "name": "VOICEFLEET_AGENT_NAME",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
        },
        {"name": "VOICEFLEET_HEALTH_PORT", "value": str(w.health_port)},
        {"name": "VOICEFLEET_PLUGINS", "value": w.plugins},
        {"name": "VOICEFLEET_FLUSH_TIMEOUT_SECONDS", "value": str(w.flush_timeout_seconds)},
        # The root filesystem is read-only; caches and temporary files go to the /tmp volume.
        {"name": "HOME", "value": "/tmp"},
    ]
    reserved = {e["name"] for e in env}
    env.extend({"name": e.name, "value": e.value} for e in overrides.env if e.name not in reserved)
    return env


def worker_resources(settings: Settings, overrides: WorkerOverrides) -> Object:
    w = settings.worker
    requests = {"cpu": w.cpu_request, "memory": w.memory_request}
    limits = {"cpu": w.cpu_limit, "memory": w.memory_limit}
    override = overrides.resources
    if override is not None:
        if override.requests is not None:
            requests.update(override.requests.model_dump(exclude_none=True))
        if override.limits is not None:
            limits.update(override.limits.model_dump(exclude_none=True))
    return {"requests": requests, "limits": limits}


def build_worker_pod(
    session: SessionRef,
    spec: VoiceSessionSpec,
    connection: int,
    pod: str,
    room: str,
    settings: Settings,
) -> Object:
    """The single-use worker pod of one connection (cold path)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod,
            "namespace": session.namespace,
            "labels": n.worker_labels(session.name, connection),
            "annotations": {n.ANNOTATION_AGENT_ID: spec.agent_id, n.ANNOTATION_ROOM: room},
            "ownerReferences": [owner_reference(session)],
        },
        "spec": _worker_pod_spec(settings, spec.worker),
    }


def build_warm_pod(namespace: str, pod: str, settings: Settings) -> Object:
    """An idle worker of the warm pool: no session yet, the deployed defaults, no overrides."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod,
            "namespace": namespace,
            "labels": {**n.worker_labels(), n.LABEL_POOL: n.POOL_WARM},
        },
        "spec": _worker_pod_spec(settings, WorkerOverrides()),
    }


def warm_pod_claim(
    session: SessionRef,
    spec: VoiceSessionSpec,
    connection: int,
    room: str,
    resource_version: str,
) -> Object:
    """The merge patch that binds a warm pod to a connection: it makes the pod exactly what
    the cold path would have labelled and owned. The resourceVersion makes it a compare-and-
    swap: of two claims of one pod, one gets 409 Conflict and looks elsewhere."""
    return {
        "metadata": {
            "resourceVersion": resource_version,
            "labels": {n.LABEL_POOL: None, **n.worker_labels(session.name, connection)},
            "annotations": {n.ANNOTATION_AGENT_ID: spec.agent_id, n.ANNOTATION_ROOM: room},
            "ownerReferences": [owner_reference(session)],
        }
    }


def _worker_pod_spec(settings: Settings, overrides: WorkerOverrides) -> Object:
    w = settings.worker
    security: Object = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    pod_spec: Object = {
        # A crashed worker is restarted by the kubelet with its backoff; the operator counts
        # restarts against spec.maxRestarts. A worker that finished its job exits 0 and stays.
        "restartPolicy": "OnFailure",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": w.termination_grace_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": w.run_as_user,
            "runAsGroup": w.run_as_user,
            "fsGroup": w.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": CONTAINER,
                "image": overrides.image or w.image,
                "imagePullPolicy": w.image_pull_policy,
                "command": list(w.command),
                "env": worker_env(settings, overrides),
                "ports": [
                    {"name": HEALTH_PORT_NAME, "containerPort": w.health_port, "protocol": "TCP"}
                ],
                "readinessProbe": {
                    "httpGet": {"path": "/readyz", "port": HEALTH_PORT_NAME},
                    "periodSeconds": 1,
                    "failureThreshold": 1,
                    "timeoutSeconds": 1,
                },
                "livenessProbe": {
                    "httpGet": {"path": "/healthz", "port": HEALTH_PORT_NAME},
                    "initialDelaySeconds": 10,
                    "periodSeconds": 10,
                    "failureThreshold": 3,
                    "timeoutSeconds": 2,
                },
                "resources": worker_resources(settings, overrides),
                "securityContext": security,
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            }
        ],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
    }
    if w.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in w.tolerations]
    if w.node_selector:
        pod_spec["nodeSelector"] = dict(w.node_selector)
    if w.priority_class_name:
        pod_spec["priorityClassName"] = w.priority_class_name
    if w.runtime_class_name:
        pod_spec["runtimeClassName"] = w.runtime_class_name
    return pod_spec


def build_worker_secret(namespace: str, settings: Settings) -> Object:
    """The workers' credentials, referenced by every worker pod (never copied into one)."""
    values: Mapping[str, str] = {
        SECRET_KEY_LIVEKIT_KEY: settings.livekit_api_key,
        SECRET_KEY_LIVEKIT_SECRET: settings.livekit_api_secret,
    }
    if settings.letta_api_key:
        values = {**values, SECRET_KEY_LETTA: settings.letta_api_key}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": settings.worker.secret_name,
            "namespace": namespace,
            "labels": {n.LABEL_NAME: n.WORKER_APP, n.LABEL_MANAGED_BY: n.MANAGER},
        },
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


def build_room_request(
    session: SessionRef, spec: VoiceSessionSpec, connection: int, room: str
) -> RoomRequest:
    return RoomRequest(
        name=room,
        empty_timeout=spec.join_timeout_seconds + ROOM_EMPTY_MARGIN_SECONDS,
        departure_timeout=spec.reconnect_grace_seconds + ROOM_DEPARTURE_MARGIN_SECONDS,
        metadata=json.dumps(
            {"session": n.session_key(session.namespace, session.name), "connection": connection},
            separators=(",", ":"),
        ),
    )


def build_dispatch_metadata(session: SessionRef, spec: VoiceSessionSpec, connection: int) -> str:
    """The job metadata of docs/contracts.md."""
    return json.dumps(
        {
            "session": n.session_key(session.namespace, session.name),
            "agentId": spec.agent_id,
            "connection": connection,
            "userIdentity": spec.user_identity,
        },
        separators=(",", ":"),
    )
