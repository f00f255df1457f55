"""Built objects compared to golden YAML (VOICEFLEET_UPDATE_GOLDEN=1 rewrites them)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import yaml
from opfixtures import ENV

from voicefleet_operator.api import VoiceSessionSpec
from voicefleet_operator.config import Settings
from voicefleet_operator.manifests import (
    SessionRef,
    build_dispatch_metadata,
    build_room_request,
    build_warm_pod,
    build_worker_pod,
    build_worker_secret,
    warm_pod_claim,
)

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "golden"


def assert_golden(name: str, obj: Any) -> None:
    path = GOLDEN / name
    text = yaml.safe_dump(obj, sort_keys=True, default_flow_style=False)
    if os.environ.get("VOICEFLEET_UPDATE_GOLDEN") == "1" or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert yaml.safe_load(path.read_text()) == obj, f"{name} differs from the golden file"


def _pod(session: SessionRef, spec: VoiceSessionSpec, settings: Settings) -> dict[str, Any]:
    return build_worker_pod(
        session, spec, 1, "voicefleet-worker-7fz2q", "vs-alice-agent66-1-k4x9b", settings
    )


def test_worker_pod_matches_golden(
    session: SessionRef, spec: VoiceSessionSpec, settings: Settings
) -> None:
    assert_golden("worker-pod.yaml", _pod(session, spec, settings))


def test_worker_pod_with_overrides_matches_golden(session: SessionRef, settings: Settings) -> None:
    spec = VoiceSessionSpec.model_validate(
        {
            "agentId": "agent-66",
            "userIdentity": "alice",
            "worker": {
                "image": "registry.local/worker:2",
                "env": [{"name": "LOG_LEVEL", "value": "debug"}],
                "resources": {"limits": {"memory": "3Gi"}, "requests": {"cpu": "500m"}},
            },
        }
    )
    assert_golden("worker-pod-overrides.yaml", _pod(session, spec, settings))


def test_worker_pod_carries_the_spec_labels_and_its_owner(
    session: SessionRef, spec: VoiceSessionSpec, settings: Settings
) -> None:
    meta = _pod(session, spec, settings)["metadata"]
    assert meta["labels"] == {
        "app.kubernetes.io/name": "voicefleet-worker",
        "app.kubernetes.io/managed-by": "voicefleet-operator",
        "voicefleet.dev/session": "alice-agent66",
        "voicefleet.dev/connection": "1",
    }
    (owner,) = meta["ownerReferences"]
    assert owner == {
        "apiVersion": "voicefleet.dev/v1alpha1",
        "kind": "VoiceSession",
        "name": "alice-agent66",
        "uid": "0b1e-uid",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_worker_pod_is_locked_down(
    session: SessionRef, spec: VoiceSessionSpec, settings: Settings
) -> None:
    pod_spec = _pod(session, spec, settings)["spec"]
    assert pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod_spec["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert set(container["resources"]) == {"requests", "limits"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_worker_pod_never_holds_a_secret_literal(
    session: SessionRef, spec: VoiceSessionSpec, settings: Settings
) -> None:
    text = json.dumps(_pod(session, spec, settings))
    assert ENV["LIVEKIT_API_SECRET"] not in text
    assert ENV["LIVEKIT_API_KEY"] not in text
    env = {e["name"]: e for e in _pod(session, spec, settings)["spec"]["containers"][0]["env"]}
    assert (
        env["LIVEKIT_API_SECRET"]["valueFrom"]["secretKeyRef"]["name"]
        == settings.worker.secret_name
    )


def test_worker_env_follows_the_contract(
    session: SessionRef, spec: VoiceSessionSpec, settings: Settings
) -> None:
    env = {e["name"]: e for e in _pod(session, spec, settings)["spec"]["containers"][0]["env"]}
    assert {
        "LIVEKIT_URL",
        "LIVEKIT_API_KEY",
        "LIVEKIT_API_SECRET",
        "LETTA_BASE_URL",
        "LETTA_API_KEY",
        "VOICEFLEET_AGENT_NAME",
        "VOICEFLEET_HEALTH_PORT",
        "VOICEFLEET_PLUGINS",
        "VOICEFLEET_FLUSH_TIMEOUT_SECONDS",
    } <= set(env)
    assert env["VOICEFLEET_AGENT_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["LETTA_API_KEY"]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_worker_grace_period_covers_the_memory_flush(
    session: SessionRef, spec: VoiceSessionSpec, settings: Settings
) -> None:
    pod_spec = _pod(session, spec, settings)["spec"]
    assert pod_spec["terminationGracePeriodSeconds"] > settings.worker.flush_timeout_seconds


def test_worker_secret_holds_the_credentials_encoded(settings: Settings) -> None:
    secret = build_worker_secret("voicefleet", settings)
    assert secret["metadata"]["name"] == settings.worker.secret_name
    assert set(secret["data"]) == {"LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"}
    assert ENV["LIVEKIT_API_SECRET"] not in json.dumps(secret)


def test_room_request_sets_livekit_backstop_timeouts(session: SessionRef) -> None:
    spec = VoiceSessionSpec(
        agent_id="agent-66",
        user_identity="alice",
        join_timeout_seconds=30,
        reconnect_grace_seconds=5,
    )
    room = build_room_request(session, spec, 2, "vs-alice-agent66-2-bcdfg")
    assert room.empty_timeout > spec.join_timeout_seconds
    assert room.departure_timeout > spec.reconnect_grace_seconds
    assert json.loads(room.metadata) == {"session": "voicefleet/alice-agent66", "connection": 2}


def test_dispatch_metadata_follows_the_contract(
    session: SessionRef, spec: VoiceSessionSpec
) -> None:
    assert json.loads(build_dispatch_metadata(session, spec, 4)) == {
        "session": "voicefleet/alice-agent66",
        "agentId": "agent-66",
        "connection": 4,
        "userIdentity": "alice",
    }


def test_warm_pod_is_the_cold_pod_without_a_session(
    session: SessionRef, spec: VoiceSessionSpec, settings: Settings
) -> None:
    """A claimed warm pod must be what the cold path would have made: same pod spec."""
    warm = build_warm_pod("voicefleet", "voicefleet-worker-wwwww", settings)
    assert warm["spec"] == _pod(session, spec, settings)["spec"]
    assert "ownerReferences" not in warm["metadata"]
    assert warm["metadata"]["labels"]["voicefleet.dev/pool"] == "warm"
    claim = warm_pod_claim(session, spec, 1, "vs-alice-agent66-1-k4x9b", "42")["metadata"]
    assert claim["resourceVersion"] == "42"
    assert claim["labels"]["voicefleet.dev/pool"] is None
    cold = _pod(session, spec, settings)["metadata"]
    assert {k: v for k, v in claim["labels"].items() if v is not None} == cold["labels"]
    assert claim["ownerReferences"] == cold["ownerReferences"]


def test_worker_priority_and_runtime_class_come_from_the_settings(
    session: SessionRef, spec: VoiceSessionSpec, settings: Settings
) -> None:
    assert "priorityClassName" not in _pod(session, spec, settings)["spec"]
    worker = dataclasses.replace(
        settings.worker, priority_class_name="voice", runtime_class_name="gvisor"
    )
    pod_spec = _pod(session, spec, dataclasses.replace(settings, worker=worker))["spec"]
    assert (pod_spec["priorityClassName"], pod_spec["runtimeClassName"]) == ("voice", "gvisor")
