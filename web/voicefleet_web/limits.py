"""Per-user limits: requests per minute (token bucket) and connects in flight.

Both are in-process: one gateway replica enforces them exactly; with several replicas the
request rate is per replica (the ingress can add a global limit), while the live-connection
count itself comes from the VoiceSessions in Kubernetes (see sessions.py), so it holds
across replicas.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .errors import TooManyRequests

Clock = Callable[[], float]


@dataclasses.dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """`per_minute` requests per user per minute, with bursts up to `per_minute`."""

    def __init__(self, per_minute: int, clock: Clock = time.monotonic) -> None:
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def check(self, user: str) -> None:
        """Spend one request of `user`; raises TooManyRequests (with Retry-After) when none left."""
        now = self._clock()
        self._forget_idle(now)
        bucket = self._buckets.setdefault(user, _Bucket(self._capacity, now))
        bucket.tokens = min(self._capacity, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        if bucket.tokens < 1.0:
            wait = math.ceil((1.0 - bucket.tokens) / self._rate)
            raise TooManyRequests(
                f"more than {int(self._capacity)} requests per minute; retry in {wait} s",
                retry_after=wait,
            )
        bucket.tokens -= 1.0

    def _forget_idle(self, now: float) -> None:
        # A bucket idle for a minute is full again: dropping it changes nothing.
        if len(self._buckets) > 1024:
            for user in [u for u, b in self._buckets.items() if now - b.updated > 60.0]:
                del self._buckets[user]


class InFlight:
    """Which sessions each user is connecting right now (POST /api/sessions still waiting).

    `connecting` checks the limit and records the session in one step with no await in
    between, so two concurrent connects of one user cannot both pass a limit of one.
    """

    def __init__(self) -> None:
        self._by_user: dict[str, dict[str, int]] = {}

    def sessions(self, user: str) -> frozenset[str]:
        return frozenset(self._by_user.get(user, {}))

    @contextmanager
    def connecting(
        self, user: str, session: str, *, live: frozenset[str], limit: int
    ) -> Iterator[None]:
        """Hold a connect slot of `user` for `session`; `live` are sessions live in Kubernetes.

        Reconnecting a session that is already live replaces its connection, so that
        session never counts against the limit. Raises TooManyRequests.
        """
        others = (live | self.sessions(user)) - {session}
        if len(others) >= limit:
            raise TooManyRequests(
                f"{len(others)} other voice connection(s) live or starting, the limit is {limit}; "
                "disconnect one first",
            )
        names = self._by_user.setdefault(user, {})
        names[session] = names.get(session, 0) + 1
        try:
            yield
        finally:
            names[session] -= 1
            if not names[session]:
                del names[session]
            if not names:
                del self._by_user[user]
