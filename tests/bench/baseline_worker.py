"""The benchmark's baseline: ONE long-lived LiveKit Agents worker serving every connection.

This is the design voicefleet replaces (SPEC.md, "The problem it solves"), built from the
same parts as voicefleet's worker so that only the design differs: the same plugins
(`load_plugins`: Silero VAD, faster-whisper, espeak-ng, loaded once), the same job
(`VoiceJob`: Letta memory, AgentSession, greeting, `lk.chat` in, `lk.transcription` out,
flush at the end), the same Letta brain (`LettaMemory`). What differs:

- it registers once, under the fixed agent name `baseline-longlived` (explicit dispatch:
  `AgentDispatchService.create_dispatch` to that name, a fresh room per connection), and
  accepts every job, one after another, for as long as it runs;
- jobs run on LiveKit Agents' THREAD executor (`job_executor_type=JobExecutorType.THREAD`):
  every job is a thread of this one process. LiveKit Agents' default on Linux is PROCESS
  (a pool of prewarmed child processes, one per job); that default already isolates jobs
  from each other, which is not the design being compared. The long-lived worker of the
  problem statement keeps its jobs in one process, with whatever state survives between
  them; THREAD reproduces that, and makes the process's RSS the figure to watch;
- its load is reported as 0 (`load_fnc`): on a busy two-core machine LiveKit Agents'
  default CPU-based load would mark the worker unavailable and turn the comparison into a
  measurement of the machine's load.

Run by tests/bench/bench_connect.py as `python tests/bench/baseline_worker.py` with
LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET, LETTA_BASE_URL and
BASELINE_READY_FILE (written with the process id once registered with LiveKit).
SIGTERM ends the current job (flush) and exits.
"""

from __future__ import annotations

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "worker"))

from livekit.agents import AgentServer, JobContext, JobExecutorType, utils  # noqa: E402

from voicefleet_worker.agent import JobDeps, VoiceJob  # noqa: E402
from voicefleet_worker.config import DispatchMetadata, Settings  # noqa: E402
from voicefleet_worker.memory import LettaMemory  # noqa: E402
from voicefleet_worker.metrics import WorkerMetrics  # noqa: E402
from voicefleet_worker.plugins import load_plugins  # noqa: E402
from voicefleet_worker.prompts import Prompts  # noqa: E402
from voicefleet_worker.server import StopSignal  # noqa: E402

AGENT_NAME = "baseline-longlived"
log = logging.getLogger("baseline")


async def serve(settings: Settings, ready_file: Path) -> int:
    loop = asyncio.get_running_loop()
    stop = StopSignal()
    stopping = asyncio.Event()

    def on_signal(name: str) -> None:
        log.info("%s received: ending the current job and exiting", name)
        stop.request(name)
        stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signal.Signals(signum).name)

    plugins = await asyncio.to_thread(load_plugins, settings.plugins)
    deps = JobDeps(
        plugins=plugins,
        metrics=WorkerMetrics(),
        prompts=Prompts.load(),
        make_brain=lambda agent_id: LettaMemory(
            settings.letta_base_url, settings.letta_api_key, agent_id
        ),
        wait_for_stop=stop.wait,
        flush_timeout=settings.flush_timeout_seconds,
    )
    jobs = 0

    async def entrypoint(ctx: JobContext) -> None:
        nonlocal jobs
        jobs += 1
        log.info("job %d: room %s", jobs, ctx.room.name)
        await VoiceJob(ctx, DispatchMetadata.parse(ctx.job.metadata), deps).run()

    server = AgentServer(
        job_executor_type=JobExecutorType.THREAD,
        num_idle_processes=1,
        load_fnc=lambda: 0.0,
        load_threshold=0.9,
        ws_url=settings.livekit_url,
        api_key=settings.livekit_api_key,
        api_secret=settings.livekit_api_secret,
        host="127.0.0.1",
        port=0,
        shutdown_process_timeout=settings.flush_timeout_seconds + 15,
    )
    server.rtc_session(entrypoint, agent_name=AGENT_NAME)

    def on_registered(worker_id: str, _info: object) -> None:
        log.info("registered with LiveKit as %s (worker %s)", AGENT_NAME, worker_id)
        ready_file.write_text(str(os.getpid()))

    server.on("worker_registered", on_registered)
    run_task = asyncio.create_task(server.run(devmode=False), name="agent-server")
    stop_task = asyncio.create_task(stopping.wait(), name="stop")
    try:
        await asyncio.wait({run_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await utils.aio.cancel_and_wait(stop_task)
        await server.aclose()
        with contextlib.suppress(Exception):
            await run_task
    log.info("served %d jobs; exiting", jobs)
    return 0


def main() -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = Settings.from_env({**os.environ, "VOICEFLEET_AGENT_NAME": AGENT_NAME})
    return asyncio.run(serve(settings, Path(os.environ["BASELINE_READY_FILE"])))


if __name__ == "__main__":
    sys.exit(main())
