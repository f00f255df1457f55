"""The worker's HTTP endpoints: /healthz (live), /readyz (ready), /metrics (Prometheus).

Ready means: registered with LiveKit, speech models loaded, and Letta reachable. The
state is written by the composition root on the main event loop and only read here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from aiohttp import web

from .metrics import CONTENT_TYPE, WorkerMetrics


@dataclass
class HealthState:
    models_loaded: bool = False
    registered: bool = False
    letta_reachable: bool | None = None  # None until the first probe answered
    job: str = "waiting"  # waiting → running → ended

    def not_ready_because(self) -> list[str]:
        reasons = []
        if not self.models_loaded:
            reasons.append("speech models not loaded")
        if not self.registered:
            reasons.append("not registered with LiveKit")
        if self.letta_reachable is None:
            reasons.append("Letta not checked yet")
        elif not self.letta_reachable:
            reasons.append("Letta unreachable")
        return reasons

    @property
    def ready(self) -> bool:
        return not self.not_ready_because()


class HealthServer:
    def __init__(self, state: HealthState, metrics: WorkerMetrics, host: str, port: int) -> None:
        self._state = state
        self._metrics = metrics
        self._host = host
        self._port = port
        app = web.Application()
        app.add_routes(
            [
                web.get("/healthz", self._healthz),
                web.get("/readyz", self._readyz),
                web.get("/metrics", self._metrics_page),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None)
        self._site: web.TCPSite | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0)."""
        server = self._site._server if self._site else None  # aiohttp keeps it private
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else self._port

    async def start(self) -> None:
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self._host, self._port)
        await self._site.start()

    async def aclose(self) -> None:
        await self._runner.cleanup()

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        reasons = self._state.not_ready_because()
        body = {"ready": not reasons, "reasons": reasons, "job": self._state.job}
        return web.Response(
            status=200 if not reasons else 503,
            text=json.dumps(body) + "\n",
            content_type="application/json",
        )

    async def _metrics_page(self, _: web.Request) -> web.Response:
        self._metrics.ready.set(1 if self._state.ready else 0)
        return web.Response(body=self._metrics.render(), headers={"Content-Type": CONTENT_TYPE})
