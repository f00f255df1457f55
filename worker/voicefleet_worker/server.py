"""The single-use worker's life: register, take exactly one job, end, exit.

`SingleUseWorker.run` drives a LiveKit `AgentServer` registered under the pod's unique
agent name (explicit dispatch only). `OneJobGate` accepts the first valid job request
and refuses every later one, and reports full load from then on so LiveKit stops
offering more. The job runs on the server's thread executor: a single-use process has
no other job to be isolated from, and the thread shares the models this process loaded
before it registered (no second process, no second copy of the models).

`StopSignal` carries a stop request (SIGTERM/SIGINT) from the main event loop to the
job's loop; the job answers it by flushing Letta and leaving. `run` returns the exit
code: 0 when the job ended or the process was told to stop, 1 when LiveKit could not be
reached or a job accepted was never assigned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from livekit.agents import AgentServer, JobContext, JobExecutorType, JobRequest, utils

from .agent import Brain, JobDeps, VoiceJob
from .config import ConfigError, DispatchMetadata, Settings
from .health import HealthState
from .memory import LettaUnavailable, check_letta
from .metrics import WorkerMetrics
from .plugins import PluginSet
from .prompts import Prompts

log = logging.getLogger(__name__)

LETTA_PROBE_INTERVAL_SECONDS = 2.0
# After the flush bound: closing the session and leaving the room.
LEAVE_SECONDS = 15.0


class StopSignal:
    """A stop request crossing threads: made on the main loop, awaited on the job's loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[str]]] = []

    @property
    def requested(self) -> bool:
        with self._lock:
            return self._reason is not None

    def request(self, reason: str) -> None:
        with self._lock:
            if self._reason is not None:
                return
            self._reason = reason
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits
                loop.call_soon_threadsafe(_resolve, future, reason)

    async def wait(self) -> str:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        with self._lock:
            if self._reason is not None:
                return self._reason
            self._waiters.append((loop, future))
        try:
            return await future
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._waiters.remove((loop, future))


def _resolve(future: asyncio.Future[str], value: str) -> None:
    if not future.done():
        future.set_result(value)


@dataclass(frozen=True)
class JobOutcome:
    reason: str
    exit_code: int


class OneJobGate:
    """Accept the first valid job request; refuse every other one."""

    def __init__(
        self,
        agent_name: str,
        metrics: WorkerMetrics,
        on_accepted: Callable[[DispatchMetadata], None],
        on_lost: Callable[[str], None],
    ) -> None:
        self._agent_name = agent_name
        self._metrics = metrics
        self._on_accepted = on_accepted
        self._on_lost = on_lost
        self._taken = False

    @property
    def taken(self) -> bool:
        return self._taken

    def load(self) -> float:
        """The load LiveKit sees: full once the one job is taken."""
        return 1.0 if self._taken else 0.0

    async def on_request(self, request: JobRequest) -> None:
        room = request.room.name
        if self._taken:
            log.warning(
                "refusing job %s for room %s: this worker already took its one job",
                request.id,
                room,
            )
            self._metrics.jobs.labels(outcome="rejected").inc()
            await request.reject()
            return
        try:
            metadata = DispatchMetadata.parse(request.job.metadata)
        except ConfigError as exc:
            log.error("refusing job %s for room %s: %s", request.id, room, exc)
            self._metrics.jobs.labels(outcome="rejected").inc()
            await request.reject()
            return
        self._taken = True  # before any await: a request racing this one is refused
        log.info(
            "accepting job %s: room %s, session %s, connection %d",
            request.id,
            room,
            metadata.session,
            metadata.connection,
        )
        self._on_accepted(metadata)
        try:
            await request.accept(
                identity=self._agent_name,
                name="voicefleet",
                attributes={
                    "voicefleet.dev/session": metadata.session,
                    "voicefleet.dev/connection": str(metadata.connection),
                },
            )
        except Exception as exc:
            self._on_lost(f"job {request.id} was accepted but never started: {exc!r}")
            raise
        self._metrics.jobs.labels(outcome="accepted").inc()


class SingleUseWorker:
    def __init__(
        self,
        settings: Settings,
        plugins: PluginSet,
        metrics: WorkerMetrics,
        state: HealthState,
        prompts: Prompts,
        stop: StopSignal,
        make_brain: Callable[[str], Brain],
        *,
        started_at: float,
    ) -> None:
        self._settings = settings
        self._plugins = plugins
        self._metrics = metrics
        self._state = state
        self._prompts = prompts
        self._stop = stop
        self._make_brain = make_brain
        self._started_at = started_at  # wall-clock start of the process
        self._was_ready = False

    def _note_readiness(self) -> None:
        if self._state.ready and not self._was_ready:
            self._was_ready = True
            elapsed = time.time() - self._started_at
            self._metrics.startup_seconds.set(elapsed)
            log.info(
                "ready %.2f s after process start: waiting for one job as %s",
                elapsed,
                self._settings.agent_name,
            )

    async def run(self, stop_requested: asyncio.Event) -> int:
        loop = asyncio.get_running_loop()
        settings = self._settings
        outcome: asyncio.Future[JobOutcome] = loop.create_future()

        def finish(reason: str, exit_code: int) -> None:
            # called from the job's thread too
            def resolve() -> None:
                if not outcome.done():
                    outcome.set_result(JobOutcome(reason, exit_code))

            loop.call_soon_threadsafe(resolve)

        def on_accepted(_: DispatchMetadata) -> None:
            self._state.job = "running"

        gate = OneJobGate(
            settings.agent_name,
            self._metrics,
            on_accepted,
            on_lost=lambda reason: finish(reason, 1),
        )
        deps = JobDeps(
            plugins=self._plugins,
            metrics=self._metrics,
            prompts=self._prompts,
            make_brain=self._make_brain,
            wait_for_stop=self._stop.wait,
            flush_timeout=settings.flush_timeout_seconds,
        )

        async def entrypoint(ctx: JobContext) -> None:
            failure: list[str] = []  # this job's, set if it raised

            async def on_job_shutdown(reason: str) -> None:
                # A job that raised exits 1: the operator counts it against maxRestarts.
                if failure:
                    finish(f"job failed: {failure[0]}", 1)
                else:
                    finish(reason, 0)

            ctx.add_shutdown_callback(on_job_shutdown)  # runs even if the job fails early
            try:
                metadata = DispatchMetadata.parse(ctx.job.metadata)
                await VoiceJob(ctx, metadata, deps).run()
            except Exception as exc:
                failure.append(repr(exc))
                raise

        server = AgentServer(
            job_executor_type=JobExecutorType.THREAD,
            num_idle_processes=1,
            load_threshold=0.5,
            load_fnc=gate.load,
            ws_url=settings.livekit_url,
            api_key=settings.livekit_api_key,
            api_secret=settings.livekit_api_secret,
            host="127.0.0.1",
            port=0,  # the framework's own health page; ours is health.py
            shutdown_process_timeout=settings.flush_timeout_seconds + LEAVE_SECONDS,
        )
        server.rtc_session(entrypoint, agent_name=settings.agent_name, on_request=gate.on_request)

        def on_registered(worker_id: str, _server_info: object) -> None:
            log.info("registered with LiveKit as %s (worker %s)", settings.agent_name, worker_id)
            self._state.registered = True
            self._note_readiness()

        server.on("worker_registered", on_registered)
        self._note_readiness()
        run_task = asyncio.create_task(server.run(devmode=False), name="agent-server")
        stop_task = asyncio.create_task(stop_requested.wait(), name="stop-requested")
        probe_task = asyncio.create_task(self._watch_letta(), name="letta-probe")
        exit_code = 0
        try:
            waiting: set[asyncio.Future[Any]] = {run_task, stop_task, outcome}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if outcome.done():
                exit_code = self._report(outcome.result())
            elif stop_task.done():
                exit_code = await self._stop_with_job(gate, outcome)
            else:
                exc = run_task.exception() if not run_task.cancelled() else None
                log.error(
                    "LiveKit at %s could not be reached: %r; exiting", settings.livekit_url, exc
                )
                exit_code = 1
        finally:
            self._state.job = "ended"
            self._state.registered = False
            await utils.aio.cancel_and_wait(stop_task, probe_task)
            await server.aclose()
            with contextlib.suppress(Exception):
                await run_task
        return exit_code

    async def _stop_with_job(self, gate: OneJobGate, outcome: asyncio.Future[JobOutcome]) -> int:
        if not gate.taken:
            log.info("stopping before any job was taken")
            return 0
        bound = self._settings.flush_timeout_seconds + LEAVE_SECONDS
        log.info("stopping: waiting up to %.0f s for the job to flush and leave", bound)
        try:
            return self._report(await asyncio.wait_for(asyncio.shield(outcome), bound))
        except TimeoutError:
            log.error("the job did not end within %.0f s of the stop request", bound)
            return 0

    @staticmethod
    def _report(outcome: JobOutcome) -> int:
        if outcome.exit_code:
            log.error("%s; exiting %d", outcome.reason, outcome.exit_code)
        else:
            log.info("job ended (%s); exiting", outcome.reason)
        return outcome.exit_code

    async def _watch_letta(self) -> None:
        """Keep readiness honest about Letta; log only when reachability changes."""
        settings = self._settings
        known: bool | None = None
        while True:
            try:
                version = await check_letta(settings.letta_base_url, settings.letta_api_key)
                reachable, detail = True, f"Letta {version} reachable at {settings.letta_base_url}"
            except LettaUnavailable as exc:
                reachable, detail = False, f"{exc}: not ready"
            if reachable != known:
                (log.info if reachable else log.error)("%s", detail)
                known = reachable
            self._state.letta_reachable = reachable
            self._note_readiness()
            await asyncio.sleep(LETTA_PROBE_INTERVAL_SECONDS if not reachable else 10.0)
