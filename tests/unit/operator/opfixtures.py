"""Constants and helpers shared by the operator's unit tests (a uniquely named module, since
the test folders are not packages)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

ENV = {
    "LIVEKIT_URL": "ws://127.0.0.1:7880",
    "LIVEKIT_API_KEY": "vfkey123",
    "LIVEKIT_API_SECRET": "super-secret-value-that-must-never-leak",
    "LETTA_BASE_URL": "http://127.0.0.1:8283",
    "NAMESPACE": "voicefleet",
    "VOICEFLEET_WORKER_IMAGE": "voicefleet-worker:test",
    "VOICEFLEET_WORKER_TOLERATIONS": '[{"key": "kwok.x-k8s.io/node", "operator": "Equal", "value": "fake", "effect": "NoSchedule"}]',
}


def at(seconds: float) -> datetime:
    """T0 + seconds: the clock of the plan tables."""
    return T0 + timedelta(seconds=seconds)
