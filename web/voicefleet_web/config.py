"""The gateway's configuration: a frozen object read once from the environment.

Every variable is listed in `ENV_DOC` (also printed by `python -m voicefleet_web --help`).
Nothing else in the package reads `os.environ`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"

ENV_DOC = {
    "NAMESPACE": "namespace of the VoiceSessions (default voicefleet)",
    "KUBECONFIG": "kubeconfig to use; unset: the in-cluster ServiceAccount",
    "LETTA_BASE_URL": "the Letta server (agent list)",
    "LETTA_API_KEY": "bearer token for Letta (optional)",
    "LETTA_AGENT_TAGS": "comma-separated tags; if set, only agents with one of them are offered",
    "LIVEKIT_URL": "the LiveKit server as the browser reaches it (ws:// or wss://)",
    "LIVEKIT_PUBLIC_URL": "overrides LIVEKIT_URL in answers to browsers (behind an ingress)",
    "LIVEKIT_API_KEY": "LiveKit key that signs join tokens",
    "LIVEKIT_API_SECRET": "LiveKit secret that signs join tokens",
    "GATEWAY_TOKEN": "static dev bearer token (local stack); unset: disabled",
    "GATEWAY_DEV_USER": "identity of the static dev token's user (default dev)",
    "OIDC_ISSUER": "expected `iss` of bearer JWTs; set to enable OIDC",
    "OIDC_AUDIENCE": "expected `aud` of bearer JWTs (required with OIDC_ISSUER)",
    "OIDC_JWKS_URL": "JWKS of the issuer (required with OIDC_ISSUER)",
    "OIDC_ALGORITHMS": "accepted JWT algorithms (default RS256,ES256)",
    "GATEWAY_JOIN_TOKEN_TTL_SECONDS": "lifetime of LiveKit join tokens (default 300)",
    "GATEWAY_READY_TIMEOUT_SECONDS": "how long POST /api/sessions waits for Ready (default 90)",
    "GATEWAY_IDLE_TIMEOUT_SECONDS": "how long DELETE .../connection waits for Idle (default 60)",
    "GATEWAY_MAX_CONNECTIONS_PER_USER": "live voice connections per user (default 2)",
    "GATEWAY_REQUESTS_PER_MINUTE": "API requests per user per minute (default 60)",
    "GATEWAY_STATIC_DIR": "built browser client (default: the package's static/ folder)",
}


class ConfigError(ValueError):
    """The environment does not describe a usable gateway; the message says which variable."""


@dataclasses.dataclass(frozen=True)
class OidcSettings:
    issuer: str
    audience: str
    jwks_url: str
    algorithms: tuple[str, ...] = ("RS256", "ES256")


@dataclasses.dataclass(frozen=True)
class Settings:
    namespace: str = "voicefleet"
    kubeconfig: str | None = None
    letta_base_url: str = "http://127.0.0.1:8283"
    letta_api_key: str | None = dataclasses.field(default=None, repr=False)
    letta_agent_tags: tuple[str, ...] = ()
    livekit_url: str = "ws://127.0.0.1:7880"
    livekit_api_key: str = ""
    livekit_api_secret: str = dataclasses.field(default="", repr=False)
    dev_token: str | None = dataclasses.field(default=None, repr=False)
    dev_user: str = "dev"
    oidc: OidcSettings | None = None
    join_token_ttl_seconds: int = 300
    ready_timeout_seconds: float = 90.0
    idle_timeout_seconds: float = 60.0
    max_connections_per_user: int = 2
    requests_per_minute: int = 60
    static_dir: Path = STATIC_DIR


def _int(env: Mapping[str, str], key: str, default: int, minimum: int = 1) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{key} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{key} must be >= {minimum}, got {value}")
    return value


def _csv(raw: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (raw or "").split(",") if part.strip())


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from `env` (default: the process environment); raises ConfigError."""
    env = os.environ if env is None else env
    oidc = None
    if env.get("OIDC_ISSUER"):
        audience, jwks = env.get("OIDC_AUDIENCE", ""), env.get("OIDC_JWKS_URL", "")
        if not audience or not jwks:
            raise ConfigError("OIDC_ISSUER needs OIDC_AUDIENCE and OIDC_JWKS_URL")
        oidc = OidcSettings(
            issuer=env["OIDC_ISSUER"],
            audience=audience,
            jwks_url=jwks,
            algorithms=_csv(env.get("OIDC_ALGORITHMS")) or ("RS256", "ES256"),
        )
    dev_token = env.get("GATEWAY_TOKEN") or None
    if dev_token is not None and len(dev_token) < 16:
        raise ConfigError("GATEWAY_TOKEN must be at least 16 characters")
    if dev_token is None and oidc is None:
        raise ConfigError("no authentication configured: set GATEWAY_TOKEN or OIDC_ISSUER")
    api_key, api_secret = env.get("LIVEKIT_API_KEY", ""), env.get("LIVEKIT_API_SECRET", "")
    if not api_key or not api_secret:
        raise ConfigError("LIVEKIT_API_KEY and LIVEKIT_API_SECRET are required (join tokens)")
    livekit_url = env.get("LIVEKIT_PUBLIC_URL") or env.get("LIVEKIT_URL", "")
    if not livekit_url.startswith(("ws://", "wss://", "http://", "https://")):
        raise ConfigError(f"LIVEKIT_URL must be a ws:// or wss:// URL, got {livekit_url!r}")
    letta = env.get("LETTA_BASE_URL", "")
    if not letta.startswith(("http://", "https://")):
        raise ConfigError(f"LETTA_BASE_URL must be an http(s) URL, got {letta!r}")
    return Settings(
        namespace=env.get("NAMESPACE") or "voicefleet",
        kubeconfig=env.get("KUBECONFIG") or None,
        letta_base_url=letta.rstrip("/"),
        letta_api_key=env.get("LETTA_API_KEY") or None,
        letta_agent_tags=_csv(env.get("LETTA_AGENT_TAGS")),
        livekit_url=livekit_url,
        livekit_api_key=api_key,
        livekit_api_secret=api_secret,
        dev_token=dev_token,
        dev_user=env.get("GATEWAY_DEV_USER") or "dev",
        oidc=oidc,
        join_token_ttl_seconds=_int(env, "GATEWAY_JOIN_TOKEN_TTL_SECONDS", 300, minimum=30),
        ready_timeout_seconds=float(_int(env, "GATEWAY_READY_TIMEOUT_SECONDS", 90)),
        idle_timeout_seconds=float(_int(env, "GATEWAY_IDLE_TIMEOUT_SECONDS", 60)),
        max_connections_per_user=_int(env, "GATEWAY_MAX_CONNECTIONS_PER_USER", 2),
        requests_per_minute=_int(env, "GATEWAY_REQUESTS_PER_MINUTE", 60),
        static_dir=Path(env.get("GATEWAY_STATIC_DIR") or STATIC_DIR),
    )
