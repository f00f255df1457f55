"""The operator asks a started, not-ready worker why (its /readyz), bounded and best effort."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

from aiohttp import web

from voicefleet_operator.clients.worker_probe import WorkerReadiness


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[tuple[int, list[int]]]:
    """A worker's /readyz on a free loopback port; the list counts the requests."""
    asked: list[int] = []

    async def readyz(_: web.Request) -> web.Response:
        asked.append(1)
        body = {"ready": False, "reasons": ["Letta unreachable"], "job": "waiting"}
        return web.Response(status=503, text=json.dumps(body), content_type="application/json")

    app = web.Application()
    app.add_routes([web.get("/readyz", readyz)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield port, asked
    await runner.cleanup()


async def test_the_workers_own_reasons_are_read_and_cached() -> None:
    async with serving() as (port, asked):
        await _reads_and_caches(port, asked)


async def _reads_and_caches(port: int, asked: list[int]) -> None:
    now = [100.0]
    probe = WorkerReadiness(port, every=3.0, clock=lambda: now[0], ask_loopback=True)
    try:
        assert await probe.reasons("p", "127.0.0.1") == ("Letta unreachable",)
        assert await probe.reasons("p", "127.0.0.1") == ("Letta unreachable",)
        assert len(asked) == 1  # cached within `every`
        now[0] += 3.5
        await probe.reasons("p", "127.0.0.1")
        assert len(asked) == 2
    finally:
        await probe.aclose()


async def test_loopback_pods_are_never_asked_by_default() -> None:
    async with serving() as (port, asked):
        await _never_asks_loopback(port, asked)


async def _never_asks_loopback(port: int, asked: list[int]) -> None:
    probe = WorkerReadiness(port)
    try:
        # The host-process stopgap gives every pod 127.0.0.1: that port is someone else's.
        assert await probe.reasons("p", "127.0.0.1") == ()
        assert await probe.reasons("p", None) == ()
        assert await probe.reasons("p", "not-an-address") == ()
        assert asked == []
    finally:
        await probe.aclose()


async def test_no_answer_is_no_reason_not_an_error() -> None:
    probe = WorkerReadiness(9, ask_loopback=True)  # nothing listens on the discard port
    try:
        assert await probe.reasons("p", "127.0.0.1") == ()
    finally:
        await probe.aclose()
