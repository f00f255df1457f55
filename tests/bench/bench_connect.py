"""The `connect`, `reconnect` and `memory` benchmarks: voicefleet against one long-lived
LiveKit Agents worker (the design it replaces), side by side in the same run.

Both sides serve the same user journey on the same stack (LiveKit, Letta, the scripted
model), observed the same way:

- voicefleet: one VoiceSession applied with kubectl; the stack's own operator makes a room
  and a fresh worker pod per connection; the pod runs `python -m voicefleet_worker` in a
  container on the real node (node-0, the stack's default), or as a host process on the
  hostlet stopgap where the machine cannot run the node. A connection is requested by
  creating the session or raising `spec.connection`. Every connection is cold (a new
  process): the stack's operator runs with its warm pool off (VOICEFLEET_WARM_POOL_SIZE=0).
- voicefleet, warm (a second phase, BENCH_WARM_CYCLES, default 20): the same through an
  operator of this checkout with a warm pool of 2; each connection claims a ready worker.
  The long-lived baseline serves its own connections in the same minutes (its figures of
  that phase are `warm_phase_*`, the ratio's denominator).
- baseline: ONE long-lived worker process (tests/bench/baseline_worker.py: the same
  plugins, job code and Letta brain, LiveKit Agents' THREAD executor, agent name
  `baseline-longlived`) started here; a connection is requested by creating a fresh room
  and dispatching to that agent name (`AgentDispatchService.create_dispatch`), as the
  operator does for its workers.

A connection, on either side: request → an AGENT participant is in the room (LiveKit's
ListParticipants, polled every 50 ms: `agent`) → the user joins (a real LiveKit
participant that publishes a silent microphone track on joining, as the browser client does;
without one LiveKit tells the agent about the user only in its 3 s batches) and, as soon as
the agent starts greeting (it listens from then on), sends
`cycle <n>` on `lk.chat`, which interrupts the greeting → the agent starts saying the answer
`You said: cycle <n>` (`answer`: its `lk.transcription` stream opens; LiveKit Agents opens it
with the audio, so this is when the user starts hearing it) → the answer has been said →
the worker's RSS is read from /proc (the pod's worker process, container or not; the
baseline's one process) → the user leaves.

Cycles come in pairs per side, the sides taking turns pair by pair (so both see the same
background load): an odd cycle is a `connect` (requested once the previous connection has
fully ended: the session is Idle / the baseline's agent left its room), the even cycle
after it is a `reconnect` (requested the moment the user left). Figures:

- connect: request → agent in the room, p50/p99 (voicefleet: `cold_*`; the baseline:
  `baseline_longlived_*`), and request → the agent starts answering;
- reconnect: user left → reconnect requested at once → agent in the new room → the agent
  starts answering the first message: p50/p99 (and `answer_end_*`: until it has said it).
  Until 2026-11-26 late (`6ee3ca8` and before) the user waited for the whole greeting and
  the figure ran to the end of the spoken answer: ~8 s of speech on both sides.
- memory: RSS per connection (voicefleet: each a fresh process), and the growth over the
  run: median of the last 10 cycles' RSS minus median of the first 10, per side.

BENCH_CYCLES (default 100, even) bounds the run; every wait has a timeout; everything talks
to 127.0.0.1. A side that fails BENCH_MAX_FAILURES (default 3) cycles in a row stops there;
its failures are counted in the results. Benchmarks report; nothing here asserts a timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchlib import (
    REPO,
    fmt,
    format_table,
    growth,
    latency_figures,
    log,
    ms,
    read_rss,
    stack_dir_of,
)
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from livekit import api
from opit import Kube
from reconnect_harness import (
    Session,
    Talk,
    create_letta_agent,
    delete_letta_agent,
    livekit_client,
    remove_pool,
    talk,
    wait_agent_in_room,
    wait_agents_left,
    wait_pool,
    warm_pool_operator,
    worker_pid,
)
from worker_harness import dispatch

BASELINE_AGENT = "baseline-longlived"
STEP_SECONDS = 60.0  # each wait of a connection: agent in the room, greeting, answer
SETTLE_SECONDS = 90.0  # the previous connection fully ended
GROWTH_WINDOW = 10
GOALS = {
    "cold_p50_ms": "<= 5000",
    "reconnect_p50_ms": "<= 1500",
    "worker_rss_growth_mb": "<= 5",
}
WARM_SIZE = 2
WARM_REASON = "not measured: BENCH_WARM_CYCLES=0"


@dataclass
class Cycle:
    """One connection of one side; durations in seconds, None when not reached."""

    side: str
    cycle: int
    kind: str  # "connect" | "reconnect"
    ok: bool = False
    error: str = ""
    request_to_agent: float | None = None
    request_to_answer: float | None = None
    # "answer" instants: the user hears the answer begin (its audio); `_transcript`: its
    # transcript stream opens instead (paced to the audio, ~0.03-0.25 s later; the figure of
    # the runs before 2026-11-27).
    leave_to_answer: float | None = None  # reconnect only: from the user leaving
    leave_to_answer_transcript: float | None = None
    leave_to_answer_end: float | None = None  # ... until the answer has been said
    message_to_answer: float | None = None
    message_to_answer_transcript: float | None = None
    message_to_answer_end: float | None = None
    agent_to_greeting: float | None = None  # agent in the room → greeting heard (user joined)
    rss_mb: float | None = None
    rss_anon_mb: float | None = None
    pid: int | None = None
    left_at: float | None = None  # time.monotonic() the user left


class Side:
    """How one design serves a connection; `connect` and `settle` are what differs."""

    name = ""

    def __init__(self, env: dict[str, str], lk: api.LiveKitAPI, agent_id: str) -> None:
        self.env = env
        self.lk = lk
        self.agent_id = agent_id
        self.user = f"u{uuid.uuid4().hex[:6]}"

    async def request(self, cycle: int) -> tuple[str, int | None, Callable[[], int]]:
        """Ask for connection `cycle`; (room, pid or None, how to find the pid)."""
        raise NotImplementedError

    async def settle(self) -> None:
        """Until the last connection has fully ended."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def connect(self, cycle: int, kind: str, left_at: float | None) -> Cycle:
        result = Cycle(self.name, cycle, kind)
        started = time.monotonic()
        try:
            room, _, find_pid = await self.request(cycle)
            agent_at = await wait_agent_in_room(self.lk, room, STEP_SECONDS)
            result.request_to_agent = agent_at - started
            pid = find_pid()
            result.pid = pid
            rss: list[dict[str, float]] = []
            visit: Talk = await talk(
                self.env,
                room,
                self.user,
                f"cycle {cycle}",
                f"You said: cycle {cycle}",
                within=STEP_SECONDS,
                on_answer=lambda: rss.append(read_rss(pid)),
                barge_in=True,
                microphone=True,
                listen=True,
            )
            heard = visit.answer_heard
            result.left_at = visit.left
            result.request_to_answer = None if heard is None else heard - started
            result.message_to_answer = None if heard is None else heard - visit.sent
            result.message_to_answer_transcript = visit.answer_started - visit.sent
            result.message_to_answer_end = visit.answer_seconds
            result.agent_to_greeting = visit.greeted - agent_at
            if left_at is not None:
                result.leave_to_answer = None if heard is None else heard - left_at
                result.leave_to_answer_transcript = visit.answer_started - left_at
                result.leave_to_answer_end = visit.answered - left_at
            if rss:
                result.rss_mb, result.rss_anon_mb = rss[0]["rss_mb"], rss[0]["rss_anon_mb"]
            result.ok = visit.agents == 1
            if not result.ok:
                result.error = f"{visit.agents} agents in the room"
        except Exception as exc:  # a failed connection is a figure, not the end of the run
            result.error = f"{type(exc).__name__}: {exc}"[:300]
            result.left_at = None
        return result


class Voicefleet(Side):
    """Connections are asked for with one API call from this process, as the gateway asks
    for them (and as the baseline's dispatch is one LiveKit API call): `kubectl apply` would
    add its own process start and a GET before its PATCH (~0.1-0.17 s) to every figure."""

    name = "voicefleet"

    def __init__(self, env: dict[str, str], lk: api.LiveKitAPI, agent_id: str) -> None:
        super().__init__(env, lk, agent_id)
        self.session = Session(Kube(env).run, env, agent_id, prefix="bench-connect")
        self.session.user = self.user
        self.api = k8s.CustomObjectsApi(k8s_config.new_client_from_config(env["KUBECONFIG"]))
        self._where = ("voicefleet.dev", "v1alpha1", self.session.ns, "voicesessions")
        self.last = 0

    def _ask(self, cycle: int) -> None:
        """Create the session at connection `cycle`, or raise its spec.connection to it."""
        if self.last:
            body = {"spec": {"connection": cycle}}
            self.api.patch_namespaced_custom_object(*self._where, self.session.name, body)
        else:
            self.api.create_namespaced_custom_object(*self._where, self.session.manifest(cycle))

    def _get(self) -> dict[str, Any]:
        return dict(self.api.get_namespaced_custom_object(*self._where, self.session.name))

    async def request(self, cycle: int) -> tuple[str, int | None, Callable[[], int]]:
        await asyncio.to_thread(self._ask, cycle)
        self.last = cycle
        room, pod = await asyncio.to_thread(
            self.session.wait_room, cycle, STEP_SECONDS, self._get, 0.05
        )
        return room, None, lambda: worker_pid(pod)

    async def settle(self) -> None:
        if self.last:
            await asyncio.to_thread(self.session.wait, "Idle", self.last, SETTLE_SECONDS)

    async def close(self) -> None:
        await asyncio.to_thread(self.session.delete)


class VoicefleetWarm(Voicefleet):
    """The same journey through an operator with a warm pool: each connection claims a
    ready worker (registered, models loaded) instead of starting one."""

    name = "voicefleet-warm"


class Baseline(Side):
    name = "baseline"

    def __init__(
        self,
        env: dict[str, str],
        lk: api.LiveKitAPI,
        agent_id: str,
        process: BaselineProcess,
        name: str = "baseline",
    ) -> None:
        super().__init__(env, lk, agent_id)
        self.name = name  # "baseline-warm-phase": the baseline of the warm phase
        self.process = process
        self.session = f"bench-baseline-{self.user}"
        self.rooms: list[str] = []

    async def request(self, cycle: int) -> tuple[str, int | None, Callable[[], int]]:
        room = f"bench-baseline-{self.user}-{cycle}-{uuid.uuid4().hex[:5]}"
        self.rooms.append(room)
        metadata = {
            "session": self.session,
            "agentId": self.agent_id,
            "connection": cycle,
            "userIdentity": self.user,
        }
        await dispatch(self.lk, room, BASELINE_AGENT, metadata)
        return room, self.process.pid, lambda: self.process.pid

    async def settle(self) -> None:
        # The job of each earlier room ended (the agent left); then the rooms go, as the
        # operator deletes a connection's room.
        for room in self.rooms:
            await wait_agents_left(self.lk, room, SETTLE_SECONDS)
            with contextlib.suppress(api.TwirpError):
                await self.lk.room.delete_room(api.DeleteRoomRequest(room=room))
        self.rooms = []

    async def close(self) -> None:
        with contextlib.suppress(AssertionError):
            await self.settle()


class BaselineProcess:
    """tests/bench/baseline_worker.py as a subprocess; ready once registered with LiveKit."""

    def __init__(self, env: dict[str, str], log_path: Path, ready_file: Path) -> None:
        self.log_path = log_path
        self.ready_file = ready_file
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "LIVEKIT_URL": env["LIVEKIT_URL"],
            "LIVEKIT_API_KEY": env["LIVEKIT_API_KEY"],
            "LIVEKIT_API_SECRET": env["LIVEKIT_API_SECRET"],
            "LETTA_BASE_URL": env["LETTA_BASE_URL"],
            "BASELINE_READY_FILE": str(ready_file),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, within: float = 180) -> float:
        """Start it; seconds until it registered with LiveKit."""
        self.ready_file.unlink(missing_ok=True)
        started = time.monotonic()
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("baseline_worker.py"))],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=str(REPO),
            )
        while not self.ready_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"the baseline worker exited; see {self.log_path}")
            if time.monotonic() - started > within:
                self.stop()
                raise RuntimeError(f"the baseline worker did not register; see {self.log_path}")
            time.sleep(0.2)
        return time.monotonic() - started

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


async def run_cycles(sides: list[Side], cycles: int, max_failures: int) -> list[Cycle]:
    """Pairs of (connect, reconnect) per side, the sides taking turns pair by pair."""
    results: list[Cycle] = []
    failures_in_a_row = dict.fromkeys((s.name for s in sides), 0)
    for first in range(1, cycles + 1, 2):
        for side in sides:
            if failures_in_a_row[side.name] >= max_failures:
                continue
            left_at: float | None = None
            for cycle, kind in ((first, "connect"), (first + 1, "reconnect")):
                stop_if_cancelled()
                if kind == "connect" or left_at is None:
                    try:
                        await side.settle()
                    except AssertionError as exc:
                        log(f"{side.name}: previous connection did not end: {exc}")
                c = await side.connect(cycle, kind, left_at if kind == "reconnect" else None)
                results.append(c)
                left_at = c.left_at
                failures_in_a_row[side.name] = 0 if c.ok else failures_in_a_row[side.name] + 1
                log(describe(c))
            if failures_in_a_row[side.name] >= max_failures:
                log(f"{side.name}: {max_failures} failed cycles in a row: this side stops here")
    return results


def stop_if_cancelled() -> None:
    """Ctrl-C cancels the main task, but Python 3.11's asyncio.wait_for can swallow a
    cancellation that races a completion (fixed in 3.12); the task still counts it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def describe(c: Cycle) -> str:
    def s(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} s"

    head = f"{c.side} cycle {c.cycle} ({c.kind})"
    if not c.ok:
        return f"{head}: FAILED {c.error}"
    extra = (
        f", leave→answer heard {s(c.leave_to_answer)} (transcript {s(c.leave_to_answer_transcript)})"
        if c.kind == "reconnect"
        else ""
    )
    return (
        f"{head}: agent {s(c.request_to_agent)}, greeting heard {s(c.agent_to_greeting)} later,"
        f" answer heard {s(c.request_to_answer)} (message→answer {s(c.message_to_answer)})"
        f"{extra}, RSS {c.rss_mb} MB"
    )


# -- figures -----------------------------------------------------------------------------------
def figures(results: list[Cycle], cycles: int, baseline_start_s: float) -> dict[str, Any]:
    def of(side: str, kind: str | None, attr: str) -> list[float]:
        return [
            float(getattr(c, attr))
            for c in results
            if c.side == side
            and c.ok
            and (kind is None or c.kind == kind)
            and getattr(c, attr) is not None
        ]

    def rss_series(side: str, attr: str = "rss_mb") -> list[float]:
        return [float(getattr(c, attr)) for c in sorted(results, key=lambda c: c.cycle)
                if c.side == side and c.ok and getattr(c, attr) is not None]  # fmt: skip

    def counts(side: str) -> dict[str, int]:
        mine = [c for c in results if c.side == side]
        return {"attempted": len(mine), "answered": sum(c.ok for c in mine)}

    vf_connect = latency_figures(of("voicefleet", "connect", "request_to_agent"))
    # The warm phase: every connection of the warm side claims a pool worker (connect and
    # reconnect alike); its baseline is the long-lived worker in the same minutes.
    warm = latency_figures(of("voicefleet-warm", None, "request_to_agent"))
    warm_base = latency_figures(of("baseline-warm-phase", None, "request_to_agent"))
    warm_reconnect = latency_figures(of("voicefleet-warm", "reconnect", "leave_to_answer"))
    warm_base_reconnect = latency_figures(of("baseline-warm-phase", "reconnect", "leave_to_answer"))
    base_connect = latency_figures(of("baseline", "connect", "request_to_agent"))
    vf_reconnect = latency_figures(of("voicefleet", "reconnect", "leave_to_answer"))
    base_reconnect = latency_figures(of("baseline", "reconnect", "leave_to_answer"))
    vf_rss, base_rss = rss_series("voicefleet"), rss_series("baseline")

    def p50(side: str, kind: str | None, attr: str) -> float | None:
        return latency_figures(of(side, kind, attr))["p50_ms"]

    def ratio(a: Any, b: Any) -> float | None:
        return round(a / b, 2) if a and b else None

    return {
        "connect": {
            "what": "request → agent participant in the room (ListParticipants, 50 ms polls)",
            "cold_p50_ms": vf_connect["p50_ms"],
            "cold_p99_ms": vf_connect["p99_ms"],
            "cold_n": vf_connect["n"],
            "warm_p50_ms": warm["p50_ms"],
            "warm_p99_ms": warm["p99_ms"],
            "warm_n": warm["n"],
            "warm_reason": None if warm["n"] else WARM_REASON,
            "warm_pool_size": WARM_SIZE,
            "warm_phase_baseline_longlived_p50_ms": warm_base["p50_ms"],
            "baseline_longlived_p50_ms": base_connect["p50_ms"],
            "baseline_longlived_p99_ms": base_connect["p99_ms"],
            "baseline_longlived_n": base_connect["n"],
            "warm_ratio_to_baseline": ratio(warm["p50_ms"], warm_base["p50_ms"]),
            "cold_ratio_to_baseline": ratio(vf_connect["p50_ms"], base_connect["p50_ms"]),
            "first_answer_p50_ms": p50("voicefleet", "connect", "request_to_answer"),
            "baseline_first_answer_p50_ms": p50("baseline", "connect", "request_to_answer"),
            "agent_to_greeting_p50_ms": p50("voicefleet", None, "agent_to_greeting"),
            "baseline_agent_to_greeting_p50_ms": p50("baseline", None, "agent_to_greeting"),
            "message_to_answer_p50_ms": p50("voicefleet", None, "message_to_answer"),
            "baseline_message_to_answer_p50_ms": p50("baseline", None, "message_to_answer"),
            "message_to_answer_transcript_p50_ms": p50(
                "voicefleet", None, "message_to_answer_transcript"
            ),
            "baseline_message_to_answer_transcript_p50_ms": p50(
                "baseline", None, "message_to_answer_transcript"
            ),
            "message_to_answer_end_p50_ms": p50("voicefleet", None, "message_to_answer_end"),
            "goals": {"cold_p50_ms": GOALS["cold_p50_ms"]},
        },
        "reconnect": {
            "what": (
                "user left → reconnect requested at once → the user hears the agent start "
                "answering the first message (sent as soon as the greeting is heard)"
            ),
            "p50_ms": vf_reconnect["p50_ms"],
            "p99_ms": vf_reconnect["p99_ms"],
            "n": vf_reconnect["n"],
            "transcript_p50_ms": p50("voicefleet", "reconnect", "leave_to_answer_transcript"),
            "baseline_longlived_transcript_p50_ms": p50(
                "baseline", "reconnect", "leave_to_answer_transcript"
            ),
            "warm_transcript_p50_ms": p50(
                "voicefleet-warm", "reconnect", "leave_to_answer_transcript"
            ),
            "answer_end_p50_ms": p50("voicefleet", "reconnect", "leave_to_answer_end"),
            "baseline_longlived_answer_end_p50_ms": p50(
                "baseline", "reconnect", "leave_to_answer_end"
            ),
            "warm_p50_ms": warm_reconnect["p50_ms"],
            "warm_n": warm_reconnect["n"],
            "baseline_longlived_p50_ms": base_reconnect["p50_ms"],
            "baseline_longlived_p99_ms": base_reconnect["p99_ms"],
            "baseline_longlived_n": base_reconnect["n"],
            "leave_to_agent_p50_ms": p50("voicefleet", "reconnect", "request_to_agent"),
            "baseline_leave_to_agent_p50_ms": p50("baseline", "reconnect", "request_to_agent"),
            # The warm phase: what a reconnect costs beyond what the same conversation costs
            # a long-lived worker in the same minutes (both include the greeting's start and
            # the brain's answer, which no isolation design can shorten).
            "warm_leave_to_agent_p50_ms": p50("voicefleet-warm", "reconnect", "request_to_agent"),
            "warm_phase_baseline_p50_ms": warm_base_reconnect["p50_ms"],
            "warm_behind_baseline_p50_ms": (
                round(warm_reconnect["p50_ms"] - warm_base_reconnect["p50_ms"], 1)
                if warm_reconnect["p50_ms"] is not None
                and warm_base_reconnect["p50_ms"] is not None
                else None
            ),
            "goals": {"p50_ms": GOALS["reconnect_p50_ms"]},
        },
        "memory": {
            "operator_rss_mb_at_1000": None,  # run.py fills it from the reconcile benchmark
            "cycles": cycles,
            "growth_method": (
                f"median RSS of the last {GROWTH_WINDOW} answered cycles minus the median of "
                f"the first {GROWTH_WINDOW}, read after each cycle's first answer"
            ),
            "worker_rss_mb_per_fresh_worker": median_or_none(vf_rss),
            "worker_rss_mb_per_fresh_worker_min_max": (
                [min(vf_rss), max(vf_rss)] if vf_rss else None
            ),
            "worker_rss_growth_mb_over_100_cycles": growth(vf_rss, GROWTH_WINDOW),
            "baseline_longlived_rss_mb_first_last": (
                [base_rss[0], base_rss[-1]] if base_rss else None
            ),
            "baseline_longlived_rss_growth_mb_over_100_cycles": growth(base_rss, GROWTH_WINDOW),
            # The same from RssAnon (heap and anonymous memory only; see benchlib.read_rss).
            "worker_rss_anon_mb_per_fresh_worker": median_or_none(
                rss_series("voicefleet", "rss_anon_mb")
            ),
            "worker_rss_anon_growth_mb_over_100_cycles": growth(
                rss_series("voicefleet", "rss_anon_mb"), GROWTH_WINDOW
            ),
            "baseline_longlived_rss_anon_growth_mb_over_100_cycles": growth(
                rss_series("baseline", "rss_anon_mb"), GROWTH_WINDOW
            ),
            "baseline_longlived_start_s": round(baseline_start_s, 1),
            "goals": {"worker_rss_growth_mb": GOALS["worker_rss_growth_mb"]},
        },
        "connect_cycles": {
            "voicefleet": counts("voicefleet"),
            "baseline": counts("baseline"),
            "voicefleet-warm": counts("voicefleet-warm"),
            "baseline-warm-phase": counts("baseline-warm-phase"),
            "samples": [asdict(c) | {"left_at": None} for c in results],
        },
    }


def median_or_none(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def tables(results: dict[str, Any]) -> str:
    c, r, m = results["connect"], results["reconnect"], results["memory"]
    counts = results["connect_cycles"]
    rows = [
        ("figure", "voicefleet", "baseline (long-lived)", "goal"),
        (
            "connections answered / attempted",
            f"{counts['voicefleet']['answered']} / {counts['voicefleet']['attempted']}",
            f"{counts['baseline']['answered']} / {counts['baseline']['attempted']}",
            "",
        ),
        (
            "connect → agent in room p50 (ms)",
            f"cold {fmt(c['cold_p50_ms'])}",
            fmt(c["baseline_longlived_p50_ms"]),
            f"cold {GOALS['cold_p50_ms']}",
        ),
        (
            "connect → agent in room p99 (ms)",
            f"cold {fmt(c['cold_p99_ms'])}",
            fmt(c["baseline_longlived_p99_ms"]),
            "",
        ),
        (
            f"connect, warm pool of {c['warm_pool_size']} p50 / p99 (ms)",
            f"{fmt(c['warm_p50_ms'])} / {fmt(c['warm_p99_ms'])} (n={c['warm_n']})",
            f"{fmt(c['warm_phase_baseline_longlived_p50_ms'])} (same phase)",
            "warm <= 1000",
        ),
        ("warm / baseline (p50)", fmt(c["warm_ratio_to_baseline"], 2), "1.00", "<= 3"),
        ("cold / baseline (p50)", fmt(c["cold_ratio_to_baseline"], 2), "1.00", ""),
        (
            "connect → first answer p50 (ms)",
            fmt(c["first_answer_p50_ms"]),
            fmt(c["baseline_first_answer_p50_ms"]),
            "",
        ),
        (
            "agent in room → greeting heard p50 (ms)",
            fmt(c["agent_to_greeting_p50_ms"]),
            fmt(c["baseline_agent_to_greeting_p50_ms"]),
            "",
        ),
        (
            "message → answer heard p50 (ms)",
            fmt(c["message_to_answer_p50_ms"]),
            fmt(c["baseline_message_to_answer_p50_ms"]),
            "",
        ),
        (
            "message → answer transcript begins p50 (ms)",
            fmt(c["message_to_answer_transcript_p50_ms"]),
            fmt(c["baseline_message_to_answer_transcript_p50_ms"]),
            "",
        ),
        (
            "reconnect: left → answer heard p50 (ms)",
            fmt(r["p50_ms"]),
            fmt(r["baseline_longlived_p50_ms"]),
            GOALS["reconnect_p50_ms"],
        ),
        (
            "reconnect: left → answer heard p99 (ms)",
            fmt(r["p99_ms"]),
            fmt(r["baseline_longlived_p99_ms"]),
            "",
        ),
        (
            "reconnect, warm pool: left → answer heard p50 (ms)",
            f"{fmt(r['warm_p50_ms'])} (n={r['warm_n']})",
            f"{fmt(r['warm_phase_baseline_p50_ms'])} (same phase)",
            "",
        ),
        (
            "reconnect: left → answer transcript begins p50 (ms)",
            f"{fmt(r['transcript_p50_ms'])}, warm {fmt(r['warm_transcript_p50_ms'])}",
            fmt(r["baseline_longlived_transcript_p50_ms"]),
            "",
        ),
        (
            "reconnect: left → answer said p50 (ms)",
            fmt(r["answer_end_p50_ms"]),
            fmt(r["baseline_longlived_answer_end_p50_ms"]),
            "",
        ),
        (
            "reconnect: left → agent in room p50 (ms)",
            fmt(r["leave_to_agent_p50_ms"]),
            fmt(r["baseline_leave_to_agent_p50_ms"]),
            "",
        ),
        (
            "worker RSS per connection p50 (MB)",
            f"{fmt(m['worker_rss_mb_per_fresh_worker'])} (fresh process)",
            "-".join(fmt(x) for x in m["baseline_longlived_rss_mb_first_last"] or [])
            + " (first-last)",
            "",
        ),
        (
            f"worker RSS growth over {m['cycles']} cycles (MB)",
            fmt(m["worker_rss_growth_mb_over_100_cycles"], 1),
            fmt(m["baseline_longlived_rss_growth_mb_over_100_cycles"], 1),
            GOALS["worker_rss_growth_mb"],
        ),
        (
            f"RssAnon growth over {m['cycles']} cycles (MB)",
            fmt(m.get("worker_rss_anon_growth_mb_over_100_cycles"), 1),
            fmt(m.get("baseline_longlived_rss_anon_growth_mb_over_100_cycles"), 1),
            "",
        ),
        ("operator RSS, 1000 live sessions (MB)", fmt(m["operator_rss_mb_at_1000"]), "", ""),
    ]
    return format_table("connect, reconnect, memory", rows)


# -- plot --------------------------------------------------------------------------------------
def plot(results: dict[str, Any], path: Path) -> Path | None:
    """Connect latency distributions (ECDF): voicefleet cold, warm (none yet), baseline."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("plot skipped: matplotlib is not installed (pyproject's `test` extra has it)")
        return None
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    samples = results["connect_cycles"]["samples"]
    sides = (
        ("voicefleet", "voicefleet, cold (new process)", "tab:blue"),
        ("voicefleet-warm", f"voicefleet, warm pool of {WARM_SIZE}", "tab:green"),
        ("baseline", "baseline, one long-lived worker", "tab:orange"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    panels = (
        ("connect: request → agent in room", "connect", "request_to_agent"),
        ("reconnect: user left → first answer", "reconnect", "leave_to_answer"),
    )
    for ax, (title, kind, key) in zip(axes, panels, strict=False):
        for side, label, color in sides:
            values = sorted(
                ms(s[key])
                for s in samples
                if s["side"] == side and s["kind"] == kind and s["ok"] and s[key] is not None
            )
            if values:  # an ECDF that starts at 0
                ys = [0.0] + [(i + 1) / len(values) for i in range(len(values))]
                ax.step([values[0], *values], ys, where="post", color=color, lw=1.5,
                        label=f"{label} (n={len(values)})")  # fmt: skip
        ax.set_title(title)
        ax.set_xlabel("ms (log scale)")
        ax.set_ylabel("fraction of connections")
        ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    ax = axes[2]
    for side, label, color in sides:
        points = [
            (s["cycle"], s["rss_mb"])
            for s in samples
            if s["side"] == side and s["ok"] and s["rss_mb"] is not None
        ]
        if points:
            ax.plot(*zip(*points, strict=True), ".", color=color, label=label)
    ax.set_title("worker RSS after each connection's first answer")
    ax.set_xlabel("cycle")
    ax.set_ylabel("MiB")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(
        f"voicefleet vs long-lived baseline, {results['memory']['cycles']} cycles per side"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- the entry point of run.py -----------------------------------------------------------------
async def warm_phase(
    env: dict[str, str],
    work: Path,
    lk: api.LiveKitAPI,
    baseline: BaselineProcess,
    cycles: int,
    max_failures: int,
    sides: list[Side],
) -> list[Cycle]:
    """The warm pool side: an operator of this checkout with a pool of WARM_SIZE (the stack's
    operator pauses meanwhile), against the same long-lived baseline in the same minutes."""
    logs = stack_dir_of(env) / "logs"
    proc, kube = warm_pool_operator(env, work, logs / "operator-bench-warm.log", WARM_SIZE)
    agent = await asyncio.to_thread(create_letta_agent, env, "bench-warm")
    base_agent = await asyncio.to_thread(create_letta_agent, env, "bench-base-warm")
    warm_sides: list[Side] = []
    try:
        await asyncio.to_thread(proc.start)
        pool = await asyncio.to_thread(wait_pool, kube, WARM_SIZE)
        log(f"warm phase: pool ready ({', '.join(sorted(pool))}); {cycles} cycles per side")
        warm_sides = [
            VoicefleetWarm(env, lk, agent),
            Baseline(env, lk, base_agent, baseline, name="baseline-warm-phase"),
        ]
        sides.extend(warm_sides)  # closed with the others
        return await run_cycles(warm_sides, cycles, max_failures)
    finally:
        for side in warm_sides:
            with contextlib.suppress(Exception):
                await side.close()
        await asyncio.to_thread(proc.stop)
        await asyncio.to_thread(remove_pool, kube)
        for a in (agent, base_agent):
            with contextlib.suppress(Exception):
                await asyncio.to_thread(delete_letta_agent, env, a)


async def measure(
    env: dict[str, str], work: Path, cycles: int, max_failures: int, warm_cycles: int = 0
) -> Any:
    logs = stack_dir_of(env) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    vf_agent = await asyncio.to_thread(create_letta_agent, env, "bench-vf")
    base_agent = await asyncio.to_thread(create_letta_agent, env, "bench-base")
    baseline = BaselineProcess(env, logs / "baseline-longlived.log", work / "baseline.ready")
    lk = livekit_client(env)
    sides: list[Side] = []
    try:
        log(f"starting the long-lived baseline worker, log {baseline.log_path}")
        start_s = await asyncio.to_thread(baseline.start)
        log(f"baseline registered after {start_s:.1f} s, RSS {read_rss(baseline.pid)} MB")
        sides = [Voicefleet(env, lk, vf_agent), Baseline(env, lk, base_agent, baseline)]
        log(f"{cycles} cycles per side: (connect, reconnect) pairs, the sides taking turns")
        results = await run_cycles(sides, cycles, max_failures)
        if warm_cycles:
            results += await warm_phase(env, work, lk, baseline, warm_cycles, max_failures, sides)
        return figures(results, cycles, start_s)
    finally:
        for side in sides:
            with contextlib.suppress(Exception):
                await side.close()
        await asyncio.to_thread(baseline.stop)
        await lk.aclose()
        for agent in (vf_agent, base_agent):
            with contextlib.suppress(Exception):
                await asyncio.to_thread(delete_letta_agent, env, agent)


def run(env: dict[str, str], work: Path) -> dict[str, Any]:
    cycles = int(os.environ.get("BENCH_CYCLES", "100"))
    cycles += cycles % 2  # whole (connect, reconnect) pairs
    max_failures = int(os.environ.get("BENCH_MAX_FAILURES", "3"))
    warm_cycles = int(os.environ.get("BENCH_WARM_CYCLES", "20"))
    warm_cycles += warm_cycles % 2
    return dict(asyncio.run(measure(env, work, cycles, max_failures, warm_cycles)))


if __name__ == "__main__":
    from run import main

    sys.exit(main(["--only", "connect,reconnect,memory"]))
