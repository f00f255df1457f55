"""Prometheus metrics of the gateway, in a registry of its own (one per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

CONNECT_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 90, 120, float("inf"))


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "voicefleet_gateway_requests_total",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "voicefleet_gateway_request_seconds",
            "HTTP request duration by route",
            ["method", "route"],
            registry=self.registry,
        )
        self.connects = Counter(
            "voicefleet_gateway_connects_total",
            "POST /api/sessions outcomes",
            ["outcome"],
            registry=self.registry,
        )
        self.connect_seconds = Histogram(
            "voicefleet_gateway_connect_seconds",
            "time from connect request to Ready",
            buckets=CONNECT_BUCKETS,
            registry=self.registry,
        )
        self.disconnect_seconds = Histogram(
            "voicefleet_gateway_disconnect_seconds",
            "time from disconnect request to Idle",
            buckets=CONNECT_BUCKETS,
            registry=self.registry,
        )
        self.waiting = Gauge(
            "voicefleet_gateway_waiting_requests",
            "requests waiting on a VoiceSession",
            ["kind"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "voicefleet_gateway_rejected_total",
            "requests refused by a per-user limit",
            ["limit"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "voicefleet_gateway_auth_failures_total",
            "requests refused by authentication",
            registry=self.registry,
        )
