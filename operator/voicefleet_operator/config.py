"""The operator's settings: a frozen object read once from the environment at startup.

Nothing else in the operator reads `os.environ`. The LiveKit API secret is kept out of
`repr()` so that logging the settings never prints it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
from collections.abc import Mapping
from typing import Any


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
    """What every worker pod gets unless the VoiceSession overrides it (spec.worker)."""

    image: str = "voicefleet-worker:dev"
    command: tuple[str, ...] = ("python", "-m", "voicefleet_worker")
    image_pull_policy: str = "IfNotPresent"
    # The Secret (in the sessions' namespace) holding LIVEKIT_API_KEY / LIVEKIT_API_SECRET
    # (and optionally LETTA_API_KEY) for the workers; the operator keeps it in step.
    secret_name: str = "voicefleet-worker-credentials"
    livekit_url: str = ""
    letta_base_url: str = ""
    plugins: str = "offline"
    health_port: int = 8081
    flush_timeout_seconds: int = 10
    cpu_request: str = "250m"
    memory_request: str = "512Mi"
    cpu_limit: str = "2"
    memory_limit: str = "2Gi"
    tolerations: tuple[Mapping[str, Any], ...] = ()
    node_selector: Mapping[str, str] = dataclasses.field(default_factory=dict)
    run_as_user: int = 10001
    priority_class_name: str = ""
    runtime_class_name: str = ""

    @property
    def termination_grace_seconds(self) -> int:
        # SIGTERM → the worker flushes Letta writes within flush_timeout, then exits.
        return self.flush_timeout_seconds + 5


@dataclasses.dataclass(frozen=True)
class Settings:
    namespace: str = "voicefleet"
    livekit_url: str = "ws://127.0.0.1:7880"
    livekit_api_key: str = ""
    livekit_api_secret: str = dataclasses.field(default="", repr=False)
    letta_api_key: str = dataclasses.field(default="", repr=False)
    worker: WorkerSettings = dataclasses.field(default_factory=WorkerSettings)
    bind_host: str = "127.0.0.1"
    webhook_port: int = 8090  # 0: no webhook receiver
    metrics_port: int = 9090  # 0: no metrics endpoint
    health_port: int = 8080  # kopf liveness (/healthz); 0: none
    room_check_seconds: float = 10.0
    sweep_seconds: float = 60.0  # period of the orphan room sweep
    one_connection_per_agent: bool = True
    peering_name: str = "voicefleet-operator"
    peering_priority: int = 0
    # A crashed replica's peering record blocks its successor (same priority) until it
    # expires: short enough for a quick restart, longer than kopf's keep-alive margin.
    peering_lifetime_seconds: int = 20
    standalone: bool = False
    finalizer_budget_seconds: float = 60.0  # then the room is left to LiveKit's empty timeout
    # Calls in flight from the operator to each of the API server and LiveKit: a burst of
    # sessions queues in the operator instead of drawing 429s (and everyone's retries).
    api_max_inflight: int = 48
    # Kubernetes Events posted at once (kopf posts them in the background, behind the work).
    event_posters: int = 4
    # Events posted per second at most (a burst of sessions waits for no Event); 0: no limit.
    events_per_second: float = 50.0
    # The warm pool (SPEC "Warm pool"): idle, registered workers a new connection claims
    # instead of waiting for a cold start; recycled after max age. 0: no pool.
    warm_pool_size: int = 0
    warm_pool_max_age_seconds: float = 3600.0
    # Cap on live worker pods (warm and bound); a connection beyond it fails with
    # CapacityExceeded (the gateway's 429). 0: no cap.
    max_workers: int = 0
    # Python's cyclic GC (gc.set_threshold). In a burst of 1,000 sessions CPython's defaults
    # (700, 10, 10) spent 2.0-2.2 s of the operator's 5.4-6.4 s of CPU in collections; these
    # spent 0.44-0.53 s of 4.5 s (BENCHMARKS.md, reconcile, 2026-11-27 later).
    gc_thresholds: tuple[int, int, int] = (20000, 20, 20)

    @property
    def livekit_http_url(self) -> str:
        """The server API URL (the room service speaks HTTP on the same port as ws)."""
        url = self.livekit_url
        for ws, http in (("wss://", "https://"), ("ws://", "http://")):
            if url.startswith(ws):
                return http + url[len(ws) :]
        return url


# Every variable load_settings reads, for `--help` (a unit test keeps the two in step).
ENV_DOC: dict[str, str] = {
    "NAMESPACE": "namespace whose VoiceSessions are served (default voicefleet)",
    "KUBECONFIG": "credentials file (the operator's ServiceAccount); else in-cluster",
    "LIVEKIT_URL": "LiveKit server, ws:// or wss:// (required)",
    "LIVEKIT_API_KEY": "LiveKit API key (required)",
    "LIVEKIT_API_SECRET": "LiveKit API secret (required; never logged)",
    "LETTA_BASE_URL": "Letta server the workers use",
    "LETTA_API_KEY": "Letta API key for the workers (optional)",
    "VOICEFLEET_WORKER_IMAGE": "worker image (default voicefleet-worker:dev)",
    "VOICEFLEET_WORKER_IMAGE_PULL_POLICY": "IfNotPresent | Always | Never",
    "VOICEFLEET_WORKER_COMMAND": "worker command (default: python -m voicefleet_worker)",
    "VOICEFLEET_WORKER_SECRET": "Secret with the workers' credentials (made by the operator)",
    "VOICEFLEET_WORKER_LIVEKIT_URL": "LiveKit URL as the workers reach it (default LIVEKIT_URL)",
    "VOICEFLEET_WORKER_LETTA_BASE_URL": "Letta URL as the workers reach it (default LETTA_BASE_URL)",
    "VOICEFLEET_PLUGINS": "worker plugin set: offline (default) or a production set",
    "VOICEFLEET_WORKER_HEALTH_PORT": "worker health/metrics port (default 8081)",
    "VOICEFLEET_FLUSH_TIMEOUT_SECONDS": "worker's bound on flushing Letta writes at SIGTERM",
    "VOICEFLEET_WORKER_CPU_REQUEST": "worker CPU request (default 250m)",
    "VOICEFLEET_WORKER_MEMORY_REQUEST": "worker memory request (default 512Mi)",
    "VOICEFLEET_WORKER_CPU_LIMIT": "worker CPU limit (default 2)",
    "VOICEFLEET_WORKER_MEMORY_LIMIT": "worker memory limit (default 2Gi)",
    "VOICEFLEET_WORKER_TOLERATIONS": "worker tolerations, JSON list",
    "VOICEFLEET_WORKER_NODE_SELECTOR": "worker node selector, JSON object",
    "VOICEFLEET_WORKER_PRIORITY_CLASS_NAME": "worker priorityClassName (default none)",
    "VOICEFLEET_WORKER_RUNTIME_CLASS_NAME": "worker runtimeClassName (default none)",
    "VOICEFLEET_BIND_HOST": "address of the webhook, metrics and health servers (127.0.0.1)",
    "VOICEFLEET_WEBHOOK_PORT": "LiveKit webhook receiver port (8090; 0: none)",
    "VOICEFLEET_METRICS_PORT": "Prometheus /metrics port (9090; 0: none)",
    "VOICEFLEET_HEALTH_PORT": "liveness /healthz port (8080; 0: none)",
    "VOICEFLEET_ROOM_CHECK_SECONDS": "period of the level-based room check (10)",
    "VOICEFLEET_SWEEP_SECONDS": "period of the orphan room sweep against LiveKit's room list (60)",
    "VOICEFLEET_ONE_CONNECTION_PER_AGENT": "one live connection per Letta agent (true)",
    "VOICEFLEET_PEERING_NAME": "KopfPeering object (voicefleet-operator)",
    "VOICEFLEET_PEERING_PRIORITY": "kopf peering priority; the higher one is active (0)",
    "VOICEFLEET_PEERING_LIFETIME_SECONDS": "how long a silent peer counts as alive (20)",
    "VOICEFLEET_STANDALONE": "no peering at all (false)",
    "VOICEFLEET_FINALIZER_BUDGET_SECONDS": "how long deletion waits for LiveKit (60)",
    "VOICEFLEET_API_MAX_INFLIGHT": "calls in flight to the API server, and to LiveKit (48)",
    "VOICEFLEET_EVENT_POSTERS": "Kubernetes Events posted at once (4)",
    "VOICEFLEET_EVENTS_PER_SECOND": "Kubernetes Events posted per second at most (50; 0: no limit)",
    "VOICEFLEET_WARM_POOL_SIZE": "idle warm workers kept ready (0: no pool)",
    "VOICEFLEET_WARM_POOL_MAX_AGE_SECONDS": "age at which a warm worker is replaced (3600)",
    "VOICEFLEET_MAX_WORKERS": "cap on live worker pods; beyond it CapacityExceeded (0: none)",
    "VOICEFLEET_GC_THRESHOLDS": "Python GC thresholds gen0,gen1,gen2 (20000,20,20; CPython's: 700,10,10)",
}


def _gc_thresholds(
    env: Mapping[str, str], name: str, default: tuple[int, int, int]
) -> tuple[int, int, int]:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    parts = [p.strip() for p in raw.split(",")]
    if len(parts) != 3 or not all(p.isdigit() for p in parts) or int(parts[0]) < 1:
        raise ConfigError(
            f"{name} must be three whole numbers gen0,gen1,gen2 with gen0 >= 1, got {raw!r}"
        )
    return int(parts[0]), int(parts[1]), int(parts[2])


def env_help() -> str:
    width = max(map(len, ENV_DOC))
    return "environment:\n" + "\n".join(f"  {k:<{width}}  {v}" for k, v in ENV_DOC.items())


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{key} must be an integer, got {raw!r}") from None


def _period(env: Mapping[str, str], key: str, default: float) -> float:
    """A loop's period in seconds: a number of at least 1 (never a hot loop)."""
    value = _float(env, key, default)
    if value < 1:
        raise ConfigError(f"{key} must be at least 1 (seconds), got {value:g}")
    return value


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{key} must be a number, got {raw!r}") from None


def _bool(env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = env.get(key, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{key} must be true or false, got {raw!r}")


def _json(env: Mapping[str, str], key: str, kind: type, default: Any) -> Any:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{key} is not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        raise ConfigError(f"{key} must be a JSON {kind.__name__}")
    return value


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from `env` (default: the process environment). Call once, at startup."""
    env = os.environ if env is None else env
    livekit_url = env.get("LIVEKIT_URL", "").strip()
    key, secret = env.get("LIVEKIT_API_KEY", "").strip(), env.get("LIVEKIT_API_SECRET", "").strip()
    missing = [
        k
        for k, v in (
            ("LIVEKIT_URL", livekit_url),
            ("LIVEKIT_API_KEY", key),
            ("LIVEKIT_API_SECRET", secret),
        )
        if not v
    ]
    if missing:
        raise ConfigError(f"missing environment variable(s): {', '.join(missing)}")
    letta = env.get("LETTA_BASE_URL", "").strip()
    defaults = WorkerSettings()
    command = env.get("VOICEFLEET_WORKER_COMMAND", "").strip()
    worker = WorkerSettings(
        image=env.get("VOICEFLEET_WORKER_IMAGE", "").strip() or defaults.image,
        command=tuple(shlex.split(command)) if command else defaults.command,
        image_pull_policy=env.get("VOICEFLEET_WORKER_IMAGE_PULL_POLICY", "").strip()
        or defaults.image_pull_policy,
        secret_name=env.get("VOICEFLEET_WORKER_SECRET", "").strip() or defaults.secret_name,
        livekit_url=env.get("VOICEFLEET_WORKER_LIVEKIT_URL", "").strip() or livekit_url,
        letta_base_url=env.get("VOICEFLEET_WORKER_LETTA_BASE_URL", "").strip() or letta,
        plugins=env.get("VOICEFLEET_PLUGINS", "").strip() or defaults.plugins,
        health_port=_int(env, "VOICEFLEET_WORKER_HEALTH_PORT", defaults.health_port),
        flush_timeout_seconds=_int(
            env, "VOICEFLEET_FLUSH_TIMEOUT_SECONDS", defaults.flush_timeout_seconds
        ),
        cpu_request=env.get("VOICEFLEET_WORKER_CPU_REQUEST", "").strip() or defaults.cpu_request,
        memory_request=env.get("VOICEFLEET_WORKER_MEMORY_REQUEST", "").strip()
        or defaults.memory_request,
        cpu_limit=env.get("VOICEFLEET_WORKER_CPU_LIMIT", "").strip() or defaults.cpu_limit,
        memory_limit=env.get("VOICEFLEET_WORKER_MEMORY_LIMIT", "").strip() or defaults.memory_limit,
        tolerations=tuple(_json(env, "VOICEFLEET_WORKER_TOLERATIONS", list, [])),
        node_selector=_json(env, "VOICEFLEET_WORKER_NODE_SELECTOR", dict, {}),
        priority_class_name=env.get("VOICEFLEET_WORKER_PRIORITY_CLASS_NAME", "").strip(),
        runtime_class_name=env.get("VOICEFLEET_WORKER_RUNTIME_CLASS_NAME", "").strip(),
    )
    return Settings(
        namespace=env.get("NAMESPACE", "").strip() or "voicefleet",
        livekit_url=livekit_url,
        livekit_api_key=key,
        livekit_api_secret=secret,
        letta_api_key=env.get("LETTA_API_KEY", "").strip(),
        worker=worker,
        bind_host=env.get("VOICEFLEET_BIND_HOST", "").strip() or "127.0.0.1",
        webhook_port=_int(env, "VOICEFLEET_WEBHOOK_PORT", 8090),
        metrics_port=_int(env, "VOICEFLEET_METRICS_PORT", 9090),
        health_port=_int(env, "VOICEFLEET_HEALTH_PORT", 8080),
        room_check_seconds=_float(env, "VOICEFLEET_ROOM_CHECK_SECONDS", 10.0),
        sweep_seconds=_period(env, "VOICEFLEET_SWEEP_SECONDS", 60.0),
        one_connection_per_agent=_bool(env, "VOICEFLEET_ONE_CONNECTION_PER_AGENT", True),
        peering_name=env.get("VOICEFLEET_PEERING_NAME", "").strip() or "voicefleet-operator",
        peering_priority=_int(env, "VOICEFLEET_PEERING_PRIORITY", 0),
        peering_lifetime_seconds=_int(env, "VOICEFLEET_PEERING_LIFETIME_SECONDS", 20),
        standalone=_bool(env, "VOICEFLEET_STANDALONE", False),
        finalizer_budget_seconds=_float(env, "VOICEFLEET_FINALIZER_BUDGET_SECONDS", 60.0),
        api_max_inflight=max(1, _int(env, "VOICEFLEET_API_MAX_INFLIGHT", 48)),
        event_posters=max(1, _int(env, "VOICEFLEET_EVENT_POSTERS", 4)),
        events_per_second=max(0.0, _float(env, "VOICEFLEET_EVENTS_PER_SECOND", 50.0)),
        warm_pool_size=max(0, _int(env, "VOICEFLEET_WARM_POOL_SIZE", 0)),
        warm_pool_max_age_seconds=max(
            10.0, _float(env, "VOICEFLEET_WARM_POOL_MAX_AGE_SECONDS", 3600.0)
        ),
        max_workers=max(0, _int(env, "VOICEFLEET_MAX_WORKERS", 0)),
        gc_thresholds=_gc_thresholds(env, "VOICEFLEET_GC_THRESHOLDS", (20000, 20, 20)),
    )
