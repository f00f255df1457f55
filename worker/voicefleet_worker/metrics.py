"""The worker's Prometheus metrics, in a registry owned by one `WorkerMetrics` object.

The composition root makes one; the job, the LLM adapter and the health server share it.
prometheus_client's metric objects are thread-safe, which matters: the job runs on its
own thread and event loop (see server.py).
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # RSS, CPU, open fds of this process
        self.ready = Gauge(
            "voicefleet_worker_ready",
            "1 when registered with LiveKit, models loaded and Letta reachable",
            registry=self.registry,
        )
        self.startup_seconds = Gauge(
            "voicefleet_worker_startup_seconds",
            "process start to first ready",
            registry=self.registry,
        )
        self.jobs = Counter(
            "voicefleet_worker_jobs",
            "job requests by outcome (accepted, rejected)",
            ["outcome"],
            registry=self.registry,
        )
        self.turns = Counter(
            "voicefleet_worker_turns", "user turns sent to Letta", registry=self.registry
        )
        self.letta_errors = Counter(
            "voicefleet_worker_letta_errors",
            "Letta failures answered with an apology",
            ["stage"],
            registry=self.registry,
        )
        self.first_token_seconds = Histogram(
            "voicefleet_worker_letta_first_token_seconds",
            "user turn sent to Letta → first reply text",
            registry=self.registry,
            buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
        )
        self.flush_seconds = Histogram(
            "voicefleet_worker_flush_seconds",
            "time to flush pending Letta writes at job end",
            registry=self.registry,
            buckets=(0.01, 0.1, 0.5, 1, 2, 5, 10, 30),
        )
        self.flush_abandoned = Counter(
            "voicefleet_worker_flush_abandoned_writes",
            "Letta writes still pending when the flush bound ran out",
            registry=self.registry,
        )

        for outcome in ("accepted", "rejected"):
            self.jobs.labels(outcome=outcome)  # exported as 0 before the first event
        for stage in ("load", "turn"):
            self.letta_errors.labels(stage=stage)

    def render(self) -> bytes:
        return generate_latest(self.registry)
