"""Kubernetes Events of the operator's decisions, posted behind the work.

`EventPoster.record` only queues (the reconcile pass never waits for an Event); a few poster
tasks send them through the operator's own API client at background priority, so in a burst
of sessions every pod create and status write goes before any Event (kopf's own poster
would send them as soon as they are queued, competing with the work for the API server).
The queue is bounded like client-go's event broadcaster: when it is full the oldest queued
Event is dropped and counted (`voicefleet_events_dropped_total`), never the work.

Posting is also held to a rate (a token bucket, `per_second` with a burst of as many, like
client-go's QPS limit): in a burst of a thousand sessions the API server, not the operator,
is the bottleneck, and the three Events of each new connection are about a third of the
writes it asks of it. The Events then trail the burst; each keeps the time of its decision
(`firstTimestamp`), so the trace reads the same once it is posted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from .clients.kube import KubeClient, KubernetesUnavailable

log = logging.getLogger("voicefleet.events")
MESSAGE_MAX = 1024  # as kopf and client-go cut them
QUEUE_MAX = 10_000
ATTEMPTS = 3
RETRY_SECONDS = 1.0


def build_event(
    involved: Mapping[str, Any],
    type_: str,
    reason: str,
    message: str,
    component: str,
    now: datetime,
) -> dict[str, Any]:
    """A core/v1 Event about `involved` (an object's body), as kopf and client-go post them."""
    meta = involved.get("metadata") or {}
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "generateName": f"{meta.get('name', 'object')}.",
            "namespace": meta.get("namespace"),
        },
        "involvedObject": {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:MESSAGE_MAX],
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": component,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class TokenBucket:
    """`rate` tokens a second, at most `rate` saved up (at least 1); rate 0: no limit."""

    def __init__(self, rate: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._capacity = max(1.0, rate)
        self._tokens = self._capacity
        self._monotonic = monotonic
        self._at = monotonic()

    def wait_seconds(self) -> float:
        """Take a token if one is there (0.0), else how long until the next one is."""
        if self._rate <= 0:
            return 0.0
        now = self._monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate

    async def take(self) -> None:
        while True:
            delay = self.wait_seconds()
            if delay <= 0:
                return
            await asyncio.sleep(delay)  # a time to wait out, not an event to wait for


class EventPoster:
    def __init__(
        self,
        kube: KubeClient,
        component: str,
        posters: int,
        on_dropped: Callable[[], None] = lambda: None,
        queue_max: int = QUEUE_MAX,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        per_second: float = 0.0,
    ) -> None:
        self._kube = kube
        self._bucket = TokenBucket(per_second)
        self._component = component
        self._posters = max(1, posters)
        self._on_dropped = on_dropped
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._queue_max = queue_max
        self._clock = clock
        self._ready = asyncio.Event()  # something is queued
        self._drained = asyncio.Event()  # nothing queued, nothing being posted
        self._drained.set()
        self._posting = 0
        self._tasks: list[asyncio.Task[None]] = []

    def record(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Queue an Event (the `EventSink` of the reconcile functions); never blocks."""
        if len(self._queue) >= self._queue_max:
            self._queue.popleft()
            self._on_dropped()
        event = build_event(body, type_, reason, message, self._component, self._clock())
        self._queue.append(event)
        self._drained.clear()
        self._ready.set()

    def pending(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._post_forever(), name=f"event-poster-{i}")
            for i in range(self._posters)
        ]

    async def stop(self, drain_seconds: float = 5.0) -> None:
        """Post what is queued (bounded by `drain_seconds`), then stop the posters."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), drain_seconds)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _post_forever(self) -> None:
        while True:
            if not self._queue:
                if self._posting == 0:
                    self._drained.set()
                self._ready.clear()
                await self._ready.wait()
                continue
            self._posting += 1
            try:
                await self._bucket.take()
                if not self._queue:  # another poster took the last one meanwhile
                    continue
                await self._post(self._queue.popleft())
            finally:
                self._posting -= 1

    async def _post(self, event: dict[str, Any]) -> None:
        namespace = str(event["metadata"]["namespace"])
        for attempt in range(1, ATTEMPTS + 1):
            try:
                await self._kube.create_event(namespace, event)
                return
            except KubernetesUnavailable as exc:  # no answer, 5xx, 429, and refusals alike
                if attempt == ATTEMPTS:
                    log.warning("event %s dropped: %s", event["reason"], exc)
                    self._on_dropped()
                    return
                await asyncio.sleep(RETRY_SECONDS * attempt)
            except Exception:  # anything unexpected: an Event is never worth a crash
                log.exception("event %s refused", event["reason"])
                self._on_dropped()
                return
