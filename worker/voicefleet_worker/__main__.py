"""Composition root: `python -m voicefleet_worker` (the container entrypoint too).

Reads the settings once, serves /healthz, /readyz and /metrics, loads the speech models,
then runs the single-use worker until its one job ends. SIGTERM and SIGINT ask the job to
flush its Letta writes and leave. Exit codes: 0 the job ended or the process was
stopped; 1 LiveKit unreachable or the job lost; 2 unusable configuration.
"""

from __future__ import annotations

import os

# Before LiveKit Agents and onnxruntime are imported: no telemetry, no downloads of
# local inference models; everything this worker needs ships in its packages.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import asyncio
import logging
import signal
import sys

import psutil

from .config import ConfigError, Settings
from .health import HealthServer, HealthState
from .memory import LettaMemory
from .metrics import WorkerMetrics
from .plugins import load_plugins
from .prompts import Prompts
from .server import SingleUseWorker, StopSignal

log = logging.getLogger("voicefleet_worker")


async def serve(settings: Settings, started_at: float) -> int:
    loop = asyncio.get_running_loop()
    metrics = WorkerMetrics()
    state = HealthState()
    stop = StopSignal()
    stop_requested = asyncio.Event()

    def request_stop(signame: str) -> None:
        log.info("%s received: stopping input, flushing memory, leaving", signame)
        stop_requested.set()
        stop.request(signame)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request_stop, signal.Signals(signum).name)

    health = HealthServer(state, metrics, settings.health_host, settings.health_port)
    await health.start()
    log.info(
        "health on http://%s:%d (/healthz /readyz /metrics)", settings.health_host, health.port
    )
    try:
        plugins = await asyncio.to_thread(load_plugins, settings.plugins)
        state.models_loaded = True
        if stop_requested.is_set():
            return 0

        def make_brain(agent_id: str) -> LettaMemory:
            return LettaMemory(settings.letta_base_url, settings.letta_api_key, agent_id)

        worker = SingleUseWorker(
            settings,
            plugins,
            metrics,
            state,
            Prompts.load(),
            stop,
            make_brain,
            started_at=started_at,
        )
        return await worker.run(stop_requested)
    finally:
        await health.aclose()


def main() -> int:
    logging.basicConfig(
        level=os.environ.get("VOICEFLEET_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Letta request is noise
    started_at = psutil.Process().create_time()
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        log.error("cannot start: %s", exc)
        return 2
    log.info(
        "voicefleet worker %s starting (plugins %s, Letta %s, LiveKit %s)",
        settings.agent_name,
        settings.plugins,
        settings.letta_base_url,
        settings.livekit_url,
    )
    try:
        return asyncio.run(serve(settings, started_at))
    except ConfigError as exc:
        log.error("cannot start: %s", exc)
        return 2


def exit_now(code: int) -> None:
    """Leave the process at once, after an orderly shutdown has run.

    By the time `main` returns, the job has flushed its Letta writes, left the room and
    closed its connection to LiveKit, and the health server is closed. What Python would
    still do is tear down the interpreter: the native speech and LiveKit libraries take
    ~0.4 s for it, and the operator waits for this process to be gone before the session's
    next worker may load memory (SPEC rule 3), so a reconnect would wait for it too. Logs
    and stdio are flushed first; nothing else is left to write."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
