"""Why a worker is not ready, in its own words: GET /readyz on the worker pod.

The kubelet's readiness probe says only "HTTP probe failed with statuscode: 503"; the
worker's answer names the reason ("Letta unreachable", "not registered with LiveKit",
"speech models not loaded"). The operator asks a started, not-ready worker for it so the
session's WorkerReady condition can say what the worker is waiting for (issue 10: "Letta
down: session reason says so").

Best effort and bounded: at most one request per pod per `every` seconds, a short timeout,
loopback pod addresses skipped (the host-process stopgap gives every pod 127.0.0.1, so that
address would reach another pod's worker). No answer is no reason, never an error.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable

import aiohttp

TIMEOUT_SECONDS = 1.0
MAX_REASONS = 4
MAX_REASON_CHARS = 120
MAX_PODS = 2048


class WorkerReadiness:
    def __init__(
        self,
        port: int,
        every: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        ask_loopback: bool = False,  # tests only: every stopgap pod is 127.0.0.1
    ) -> None:
        self._port, self._every, self._clock = port, every, clock
        self._ask_loopback = ask_loopback
        self._asked: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def reasons(self, pod: str, address: str | None) -> tuple[str, ...]:
        """The worker's not-ready reasons (cached per pod for `every` seconds)."""
        if not address or self._port <= 0 or (_loopback(address) and not self._ask_loopback):
            return ()
        now = self._clock()
        seen = self._asked.get(pod)
        if seen is not None and now - seen[0] < self._every:
            return seen[1]
        got = await self._ask(address)
        if len(self._asked) >= MAX_PODS:  # pods that vanished unready: drop the old answers
            self._asked = {k: v for k, v in self._asked.items() if now - v[0] < self._every}
        self._asked[pod] = (now, got)
        return got

    def forget(self, pod: str) -> None:
        self._asked.pop(pod, None)

    async def _ask(self, address: str) -> tuple[str, ...]:
        host = f"[{address}]" if ":" in address else address
        url = f"http://{host}:{self._port}/readyz"
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
            )
        try:
            async with self._session.get(url) as resp:
                body = json.loads(await resp.text())
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return ()
        reasons = body.get("reasons") if isinstance(body, dict) else None
        if not isinstance(reasons, list):
            return ()
        return tuple(str(r)[:MAX_REASON_CHARS] for r in reasons[:MAX_REASONS])

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return True  # not an address: do not ask
