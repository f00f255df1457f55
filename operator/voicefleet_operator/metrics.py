"""Prometheus metrics of the operator, and the HTTP endpoint that serves them.

Sessions by phase, reconcile latency, connection start latency per step (from the start of
a connection to: room open, worker ready, dispatched, agent joined), errors by reason,
connection ends by reason, webhooks by event and result, and the operator's own API calls
(count and latency by target and call: what a burst of sessions costs the API server).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

_STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 34, 60, 120)


class Metrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.sessions = Gauge(
            "voicefleet_sessions", "VoiceSessions by phase", ["phase"], registry=registry
        )
        self.reconcile_seconds = Histogram(
            "voicefleet_reconcile_seconds",
            "Duration of one reconcile pass (observe, plan, apply, status)",
            registry=registry,
        )
        self.connection_step_seconds = Histogram(
            "voicefleet_connection_step_seconds",
            "Seconds from the start of a connection to each step",
            ["step"],
            buckets=_STEP_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "voicefleet_errors_total", "Errors by reason", ["reason"], registry=registry
        )
        self.connections_ended = Counter(
            "voicefleet_connections_ended_total",
            "Connections ended, by end reason",
            ["reason"],
            registry=registry,
        )
        self.webhooks = Counter(
            "voicefleet_webhooks_total",
            "LiveKit webhooks by event and result",
            ["event", "result"],
            registry=registry,
        )
        self.api_seconds = Histogram(
            "voicefleet_api_request_seconds",
            "The operator's own calls to the Kubernetes API and to LiveKit, by call and result",
            ["target", "call", "result"],
            registry=registry,
        )
        self.warm_claims = Counter(
            "voicefleet_warm_claims_total",
            "Connections' worker pods by origin: claimed from the warm pool, lost a claim "
            "race (conflict), or started cold (the pool had none ready)",
            ["result"],
            registry=registry,
        )
        self.events_dropped = Counter(
            "voicefleet_events_dropped_total",
            "Kubernetes Events not posted (the queue was full, or the API server refused)",
            registry=registry,
        )
        self.warm_pool = Gauge(
            "voicefleet_warm_pool_pods", "Warm pool pods, ready or not", registry=registry
        )
        self._phases: dict[str, str] = {}

    def api_observer(self, target: str) -> Callable[[str, float, bool], None]:
        """A client's call observer: (call, seconds, succeeded) → voicefleet_api_request_seconds."""

        def observe(call: str, seconds: float, ok: bool) -> None:
            self.api_seconds.labels(target, call, "ok" if ok else "error").observe(seconds)

        return observe

    def set_phase(self, session: str, phase: str | None) -> None:
        """Track one session's phase (None: the session is gone)."""
        old = self._phases.pop(session, None)
        if old is not None:
            self.sessions.labels(old).dec()
        if phase is not None:
            self._phases[session] = phase
            self.sessions.labels(phase).inc()


def serve_metrics(host: str, port: int) -> None:
    """Serve /metrics on host:port (a daemon thread of prometheus_client)."""
    start_http_server(port, addr=host)
