"""The pydantic models and the CRD say the same thing about the same fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from voicefleet_operator import api
from voicefleet_operator.api import (
    ConnectionStatus,
    EndReason,
    Phase,
    VoiceSessionSpec,
    VoiceSessionStatus,
    parse_spec,
    parse_status,
)

CRD = Path(__file__).resolve().parents[3] / "manifests" / "crd.yaml"


def _crd_version() -> dict[str, Any]:
    docs = list(yaml.safe_load_all(CRD.read_text()))
    crd = next(d for d in docs if d["metadata"]["name"] == "voicesessions.voicefleet.dev")
    (version,) = crd["spec"]["versions"]
    return dict(version)


def _schema(*path: str) -> dict[str, Any]:
    node: dict[str, Any] = _crd_version()["schema"]["openAPIV3Schema"]
    for part in path:
        node = node["properties"][part]
    return node


def _aliases(model: type[Any]) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


def test_spec_defaults_match_the_spec_document() -> None:
    spec = parse_spec({"agentId": "agent-66", "userIdentity": "alice"})
    assert (
        spec.connection,
        spec.reconnect_grace_seconds,
        spec.join_timeout_seconds,
        spec.max_duration_seconds,
        spec.max_restarts,
    ) == (1, 0, 120, 3600, 2)


def test_spec_round_trips_with_camel_case_names() -> None:
    raw = {
        "agentId": "agent-6f1c",
        "userIdentity": "alice@example.com",
        "connection": 3,
        "reconnectGraceSeconds": 5,
        "joinTimeoutSeconds": 60,
        "maxDurationSeconds": 600,
        "maxRestarts": 1,
        "worker": {"image": "w:1", "env": [{"name": "LOG_LEVEL", "value": "debug"}]},
    }
    assert parse_spec(raw).to_wire() == raw


@pytest.mark.parametrize(
    "bad",
    [
        {"userIdentity": "alice"},
        {"agentId": "agent-66"},
        {"agentId": "agent 66", "userIdentity": "alice"},
        {"agentId": "agent-66", "userIdentity": "alice;rm"},
        {"agentId": "a" * 129, "userIdentity": "alice"},
        {"agentId": "agent-66", "userIdentity": "alice", "connection": 0},
        {"agentId": "agent-66", "userIdentity": "alice", "joinTimeoutSeconds": 1},
        {"agentId": "agent-66", "userIdentity": "alice", "maxRestarts": 11},
        {
            "agentId": "agent-66",
            "userIdentity": "alice",
            "worker": {"env": [{"name": "LIVEKIT_API_SECRET"}]},
        },
        {
            "agentId": "agent-66",
            "userIdentity": "alice",
            "worker": {"env": [{"name": "A"}, {"name": "A"}]},
        },
        {
            "agentId": "agent-66",
            "userIdentity": "alice",
            "worker": {"resources": {"limits": {"cpu": "lots"}}},
        },
    ],
)
def test_invalid_specs_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        parse_spec(bad)


def test_status_serialises_rfc3339_and_omits_unset_fields() -> None:
    from opfixtures import T0

    status = VoiceSessionStatus(
        phase=Phase.IDLE,
        connection=ConnectionStatus(
            id=2, room="vs-a-2-bcdfg", started_at=T0, ended_at=T0, end_reason=EndReason.USER_LEFT
        ),
        connections_total=2,
    )
    wire = status.to_wire()
    assert wire["connection"] == {
        "id": 2,
        "room": "vs-a-2-bcdfg",
        "startedAt": "2026-01-02T03:04:05Z",
        "endedAt": "2026-01-02T03:04:05Z",
        "endReason": "UserLeft",
        "restarts": 0,
        "podsLost": 0,
    }
    assert parse_status(wire) == status


def test_an_unreadable_status_starts_over_instead_of_crashing() -> None:
    assert parse_status({"connection": {"id": "x"}}) == VoiceSessionStatus()


def test_crd_spec_fields_are_the_model_fields() -> None:
    assert set(_schema("spec")["properties"]) == _aliases(VoiceSessionSpec)
    assert set(_schema("spec")["required"]) == {"agentId", "userIdentity"}
    assert set(_schema("spec", "worker")["properties"]) == _aliases(api.WorkerOverrides)


def test_crd_status_fields_are_the_model_fields() -> None:
    assert set(_schema("status")["properties"]) == _aliases(VoiceSessionStatus)
    assert set(_schema("status", "connection")["properties"]) == _aliases(ConnectionStatus)
    assert set(_schema("status", "conditions")["items"]["properties"]) == _aliases(api.Condition)
    assert _schema("status", "phase")["enum"] == [p.value for p in Phase]
    assert _schema("status", "connection", "endReason")["enum"] == [r.value for r in EndReason]


def test_crd_bounds_match_the_model_bounds() -> None:
    spec = _schema("spec")["properties"]
    assert spec["agentId"]["pattern"] == api.ID_PATTERN
    assert spec["agentId"]["maxLength"] == api.ID_MAX
    assert spec["userIdentity"]["pattern"] == api.IDENTITY_PATTERN
    assert spec["userIdentity"]["maxLength"] == api.ID_MAX
    assert (spec["connection"]["minimum"], spec["connection"]["maximum"]) == (1, api.CONNECTION_MAX)
    assert spec["reconnectGraceSeconds"]["maximum"] == api.GRACE_MAX
    assert (spec["joinTimeoutSeconds"]["minimum"], spec["joinTimeoutSeconds"]["maximum"]) == (
        api.JOIN_TIMEOUT_MIN,
        api.JOIN_TIMEOUT_MAX,
    )
    assert (spec["maxDurationSeconds"]["minimum"], spec["maxDurationSeconds"]["maximum"]) == (
        api.MAX_DURATION_MIN,
        api.MAX_DURATION_MAX,
    )
    assert spec["maxRestarts"]["maximum"] == api.RESTARTS_MAX
    defaults = VoiceSessionSpec(agent_id="a", user_identity="b")
    for name, field in VoiceSessionSpec.model_fields.items():
        if name in ("agent_id", "user_identity", "worker"):
            continue
        assert spec[field.alias or name]["default"] == getattr(defaults, name)
    worker = spec["worker"]["properties"]
    assert worker["image"]["maxLength"] == api.IMAGE_MAX
    assert worker["env"]["maxItems"] == api.ENV_MAX_ITEMS
    assert worker["env"]["items"]["properties"]["name"]["pattern"] == api.ENV_NAME_PATTERN
    assert worker["env"]["items"]["properties"]["value"]["maxLength"] == api.ENV_VALUE_MAX
    assert (
        worker["resources"]["properties"]["limits"]["properties"]["cpu"]["pattern"]
        == api.QUANTITY_PATTERN
    )
    for prefix in api.RESERVED_ENV_PREFIXES:
        assert prefix in worker["env"]["x-kubernetes-validations"][0]["rule"]


def test_crd_refuses_lowering_the_connection_and_changing_the_agent() -> None:
    spec = _schema("spec")["properties"]
    assert spec["connection"]["x-kubernetes-validations"][0]["rule"] == "self >= oldSelf"
    assert spec["agentId"]["x-kubernetes-validations"][0]["rule"] == "self == oldSelf"


def test_crd_prints_the_spec_columns() -> None:
    version = _crd_version()
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Agent",
        "User",
        "Phase",
        "Connection",
        "Room",
        "Age",
    ]
    assert version["subresources"] == {"status": {}}
