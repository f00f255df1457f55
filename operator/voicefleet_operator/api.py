"""Pydantic models of the VoiceSession resource: the one source of its field names and bounds.

Python names are snake_case; the wire names (camelCase, as in SPEC.md and the CRD) come
from the alias generator. The bounds repeat the CRD's OpenAPI schema on purpose: the API
server refuses bad specs, and anything that still reaches the operator (an older CRD, a
hand-edited object) fails validation here and turns into `Failed`/`InvalidSpec` instead of
an exception loop. `tests/unit/operator/test_api.py` keeps the two in step.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
)
from pydantic.alias_generators import to_camel

GROUP = "voicefleet.dev"
VERSION = "v1alpha1"
PLURAL = "voicesessions"
KIND = "VoiceSession"
API_VERSION = f"{GROUP}/{VERSION}"

# -- bounds (mirrored in manifests/crd.yaml) ----------------------------------------------
NAME_MAX = 63  # the session name is a label value (voicefleet.dev/session)
ID_MAX = 128
ID_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._:-]*[A-Za-z0-9])?$"
IDENTITY_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._@:+-]*[A-Za-z0-9])?$"
CONNECTION_MAX = 2_147_483_647
GRACE_MAX = 3600
JOIN_TIMEOUT_MIN, JOIN_TIMEOUT_MAX = 5, 3600
MAX_DURATION_MIN, MAX_DURATION_MAX = 30, 86_400
RESTARTS_MAX = 10
IMAGE_MAX = 512
ENV_MAX_ITEMS = 32
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
ENV_NAME_MAX = 128
ENV_VALUE_MAX = 4096
QUANTITY_PATTERN = r"^([0-9]+(\.[0-9]+)?)(m|Ki|Mi|Gi|Ti|k|M|G|T)?$"
QUANTITY_MAX = 32
# Env names a session may not override: the operator owns them (identity, credentials).
RESERVED_ENV_PREFIXES = ("LIVEKIT_", "VOICEFLEET_", "LETTA_")


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


Timestamp = Annotated[datetime, PlainSerializer(_rfc3339, return_type=str)]


def now_utc() -> datetime:
    """The current time, truncated to the second (what metav1.Time keeps)."""
    return datetime.now(UTC).replace(microsecond=0)


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
        serialize_by_alias=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict with camelCase keys, unset (None) fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# -- spec ---------------------------------------------------------------------------------
Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=QUANTITY_MAX)]


class ResourceAmounts(_Model):
    cpu: Quantity | None = None
    memory: Quantity | None = None


class WorkerResources(_Model):
    requests: ResourceAmounts | None = None
    limits: ResourceAmounts | None = None


class EnvVar(_Model):
    name: str = Field(pattern=ENV_NAME_PATTERN, max_length=ENV_NAME_MAX)
    value: str = Field(default="", max_length=ENV_VALUE_MAX)

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name.startswith(RESERVED_ENV_PREFIXES):
            raise ValueError(f"env {name} is reserved for the operator")
        return name


class WorkerOverrides(_Model):
    image: str | None = Field(default=None, min_length=1, max_length=IMAGE_MAX)
    resources: WorkerResources | None = None
    env: tuple[EnvVar, ...] = Field(default=(), max_length=ENV_MAX_ITEMS)

    @field_validator("env")
    @classmethod
    def _unique_names(cls, env: tuple[EnvVar, ...]) -> tuple[EnvVar, ...]:
        names = [e.name for e in env]
        if len(names) != len(set(names)):
            raise ValueError("worker.env names must be unique")
        return env


class VoiceSessionSpec(_Model):
    agent_id: str = Field(pattern=ID_PATTERN, max_length=ID_MAX)
    user_identity: str = Field(pattern=IDENTITY_PATTERN, max_length=ID_MAX)
    connection: int = Field(default=1, ge=1, le=CONNECTION_MAX)
    reconnect_grace_seconds: int = Field(default=0, ge=0, le=GRACE_MAX)
    join_timeout_seconds: int = Field(default=120, ge=JOIN_TIMEOUT_MIN, le=JOIN_TIMEOUT_MAX)
    max_duration_seconds: int = Field(default=3600, ge=MAX_DURATION_MIN, le=MAX_DURATION_MAX)
    max_restarts: int = Field(default=2, ge=0, le=RESTARTS_MAX)
    worker: WorkerOverrides = WorkerOverrides()


# -- status -------------------------------------------------------------------------------
class Phase(enum.StrEnum):
    CONNECTING = "Connecting"
    READY = "Ready"
    IDLE = "Idle"
    FAILED = "Failed"


class EndReason(enum.StrEnum):
    USER_LEFT = "UserLeft"
    JOIN_TIMEOUT = "JoinTimeout"
    MAX_DURATION = "MaxDuration"
    SUPERSEDED = "Superseded"
    WORKER_FAILED = "WorkerFailed"
    DELETED = "Deleted"


class Condition(_Model):
    """metav1.Condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: Timestamp
    observed_generation: int | None = None


class ConnectionStatus(_Model):
    """The current or last connection. Fields past `restarts` are the operator's bookkeeping."""

    id: int
    room: str | None = None
    pod: str | None = None
    started_at: Timestamp
    agent_joined_at: Timestamp | None = None
    user_joined_at: Timestamp | None = None
    user_left_at: Timestamp | None = None
    ended_at: Timestamp | None = None
    end_reason: EndReason | None = None
    restarts: int = 0
    # bookkeeping: what the operator did, so it never does it twice
    room_created_at: Timestamp | None = None
    pod_ready_at: Timestamp | None = None
    dispatched_at: Timestamp | None = None
    dispatched_restarts: int | None = None  # the pod's restart count the dispatch was for
    pods_lost: int = 0  # worker pods that vanished (count as restarts)
    ending_at: Timestamp | None = None
    failure: str | None = None  # the Ready condition's reason when the connection failed
    failure_message: str | None = None

    @property
    def live(self) -> bool:
        """Not ended and not ending: it holds (or waits for) a room and a worker."""
        return self.end_reason is None

    @property
    def ended(self) -> bool:
        return self.ended_at is not None


class VoiceSessionStatus(_Model):
    phase: Phase | None = None
    observed_generation: int | None = None
    connection: ConnectionStatus | None = None
    connections_total: int = 0
    conditions: tuple[Condition, ...] = ()

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


def parse_spec(raw: object) -> VoiceSessionSpec:
    """The spec from a resource body; raises pydantic.ValidationError when it is invalid."""
    return VoiceSessionSpec.model_validate(raw or {})


def parse_status(raw: object) -> VoiceSessionStatus:
    """The status from a resource body; a status this operator cannot read starts over."""
    try:
        return VoiceSessionStatus.model_validate(raw or {})
    except ValueError:
        return VoiceSessionStatus()
