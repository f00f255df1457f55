"""What the worker is told: settings read once from the environment, and the dispatch metadata.

Both are frozen values. `Settings.from_env` is the only place that reads the worker's
environment variables (docs/contracts.md, "Worker process"); `DispatchMetadata.parse` is
the only place that reads the JSON the operator attaches to its dispatch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_HEALTH_PORT = 8081
DEFAULT_FLUSH_TIMEOUT_SECONDS = 10.0
OFFLINE_PLUGINS = "offline"


class ConfigError(ValueError):
    """The environment or the dispatch metadata cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Settings:
    livekit_url: str
    livekit_api_key: str
    livekit_api_secret: str = field(repr=False)
    letta_base_url: str
    letta_api_key: str | None = field(repr=False)
    agent_name: str
    health_port: int = DEFAULT_HEALTH_PORT
    # 127.0.0.1 on the local stack; a pod sets 0.0.0.0 so the kubelet's probes reach it.
    health_host: str = "127.0.0.1"
    plugins: str = OFFLINE_PLUGINS
    flush_timeout_seconds: float = DEFAULT_FLUSH_TIMEOUT_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        required = (
            "LIVEKIT_URL",
            "LIVEKIT_API_KEY",
            "LIVEKIT_API_SECRET",
            "LETTA_BASE_URL",
            "VOICEFLEET_AGENT_NAME",
        )
        missing = [name for name in required if not env.get(name, "").strip()]
        if missing:
            raise ConfigError(f"missing environment variables: {', '.join(missing)}")
        return cls(
            livekit_url=env["LIVEKIT_URL"].strip(),
            livekit_api_key=env["LIVEKIT_API_KEY"].strip(),
            livekit_api_secret=env["LIVEKIT_API_SECRET"].strip(),
            letta_base_url=env["LETTA_BASE_URL"].strip().rstrip("/"),
            letta_api_key=env.get("LETTA_API_KEY", "").strip() or None,
            agent_name=env["VOICEFLEET_AGENT_NAME"].strip(),
            health_port=_int(env, "VOICEFLEET_HEALTH_PORT", DEFAULT_HEALTH_PORT, low=0),
            health_host=env.get("VOICEFLEET_HEALTH_HOST", "").strip() or "127.0.0.1",
            plugins=env.get("VOICEFLEET_PLUGINS", "").strip() or OFFLINE_PLUGINS,
            flush_timeout_seconds=_float(
                env, "VOICEFLEET_FLUSH_TIMEOUT_SECONDS", DEFAULT_FLUSH_TIMEOUT_SECONDS
            ),
        )


def _int(env: Mapping[str, str], name: str, default: int, *, low: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if not low <= value <= 65535:
        raise ConfigError(f"{name}={value} is outside {low}..65535")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise ConfigError(f"{name}={value} must be positive")
    return value


@dataclass(frozen=True)
class DispatchMetadata:
    """The operator's dispatch metadata: which Letta agent, for which session and connection."""

    session: str
    agent_id: str
    connection: int
    user_identity: str

    @classmethod
    def parse(cls, raw: str) -> DispatchMetadata:
        try:
            data = json.loads(raw or "")
        except json.JSONDecodeError as exc:
            raise ConfigError(f"dispatch metadata is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError("dispatch metadata must be a JSON object")
        missing = [k for k in ("session", "agentId", "userIdentity") if not data.get(k)]
        if missing:
            raise ConfigError(f"dispatch metadata lacks {', '.join(missing)}")
        connection = data.get("connection", 1)
        if isinstance(connection, bool) or not isinstance(connection, int) or connection < 1:
            raise ConfigError(f"dispatch metadata connection={connection!r} is not an int >= 1")
        return cls(
            session=str(data["session"]),
            agent_id=str(data["agentId"]),
            connection=connection,
            user_identity=str(data["userIdentity"]),
        )
