"""Issue 10, faults: the operator SIGKILLed at random points during N session lifecycles.

Each lifecycle: create a VoiceSession (connection 1 starts), raise spec.connection to 2 (a
reconnect: room and worker of 1 go, fresh ones come), then delete it; every fourth session is
kept at connection 2. Meanwhile a killer SIGKILLs the operator at random moments and starts
it again at once. At the end: no stuck finalizer, no orphan pod or LiveKit room, and every
kept session is Connecting on connection 2 with one pod and one room (kwok workers never
join, so Connecting is what its history implies).

VOICEFLEET_FAULT_LIFECYCLES sets N for the small run (default 20, in `make test`); the
`slow` run does 200. VOICEFLEET_FAULT_SEED replays a run (the seed is printed).
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import time
from typing import Any

import pytest
from faultkit import astatus, inventory
from opit import Kube, OperatorProcess
from test_operator_lifecycle import session_obj

pytestmark = pytest.mark.integration

CONCURRENCY = int(os.environ.get("VOICEFLEET_FAULT_CONCURRENCY", "5"))
# Seconds between the operator being up and the next SIGKILL: "low,high" (uniform).
KILL_EVERY = tuple(
    float(x) for x in os.environ.get("VOICEFLEET_FAULT_KILL_EVERY", "1,6").split(",")
)
STEP_WITHIN = 90.0  # one step of a lifecycle, kills included
CONVERGE_WITHIN = 150.0  # the orphan sweep: every 60 s, rooms older than 60 s


async def _until(what: str, check: Any, within: float = STEP_WITHIN) -> Any:
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out after {within} s waiting for {what} (last: {last!r})")


async def _lifecycle(kube: Kube, name: str, agent: str, keep: bool) -> None:
    async def dispatched(conn_id: int) -> dict[str, Any] | None:
        conn = (await astatus(kube, name)).get("connection") or {}
        ok = conn.get("id") == conn_id and conn.get("dispatchedAt") and not conn.get("endedAt")
        return conn if ok else None

    # Longer than any run (200 lifecycles take ~21 min): a kept session must still be waiting
    # for its user at the end, not ended by its join timeout.
    obj = session_obj(kube, name, agent, joinTimeoutSeconds=3600, maxDurationSeconds=7200)
    await asyncio.to_thread(kube.apply, obj)
    await _until(f"{name} connection 1 dispatched", lambda: dispatched(1))
    await asyncio.to_thread(kube.patch_session, name, {"spec": {"connection": 2}})
    await _until(f"{name} connection 2 dispatched", lambda: dispatched(2))
    if keep:
        return
    await asyncio.to_thread(kube.delete_session, name)

    async def gone() -> bool:
        return await asyncio.to_thread(kube.get, "voicesession", name) is None

    await _until(f"{name} gone", gone)


async def _killer(operator: OperatorProcess, rng: random.Random, stop: asyncio.Event) -> int:
    kills = 0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), rng.uniform(*KILL_EVERY))
            break
        except TimeoutError:
            pass
        await asyncio.to_thread(operator.kill)
        kills += 1
        await asyncio.sleep(rng.uniform(0.0, 1.0))  # down for a moment, changes pile up
        await asyncio.to_thread(operator.start)
    return kills


async def run_lifecycles(
    env: dict[str, str], kube: Kube, operator: OperatorProcess, lifecycles: int
) -> dict[str, Any]:
    seed = int(os.environ.get("VOICEFLEET_FAULT_SEED", secrets.randbits(32)))
    print(f"fault seed {seed} (VOICEFLEET_FAULT_SEED replays it), {lifecycles} lifecycles")
    rng = random.Random(seed)
    prefix = f"fk{secrets.token_hex(2)}"
    names = [f"{prefix}-{i}" for i in range(lifecycles)]
    kept = {name for i, name in enumerate(names) if i % 4 == 3}
    gate = asyncio.Semaphore(CONCURRENCY)
    started = time.monotonic()

    async def one(i: int, name: str) -> None:
        async with gate:
            # Jitter: the sessions' steps fall at different moments relative to the kills.
            await asyncio.sleep(rng.uniform(0.0, 1.5))
            await _lifecycle(kube, name, f"agent-{name}", name in kept)

    stop = asyncio.Event()
    killer = asyncio.create_task(_killer(operator, rng, stop))
    try:
        await asyncio.gather(*(one(i, name) for i, name in enumerate(names)))
    finally:
        stop.set()
        kills = await killer
        if operator.proc is None:
            operator.start()
    lifecycles_seconds = time.monotonic() - started

    # Convergence after the last kill: bounded by the orphan sweep's period and room age.
    room_prefix = f"vs-{prefix}-"
    deadline = time.monotonic() + CONVERGE_WITHIN
    while True:
        inv = await inventory(kube, env, room_prefix)
        clean = not (inv.stuck_finalizers() or inv.orphan_pods() or inv.orphan_rooms())
        if clean or time.monotonic() > deadline:
            break
        await asyncio.sleep(2)
    converge_seconds = time.monotonic() - started - lifecycles_seconds
    result = {
        "seed": seed,
        "lifecycles": lifecycles,
        "kills": kills,
        "lifecycles_seconds": round(lifecycles_seconds, 1),
        "converge_seconds": round(converge_seconds, 1),
        "stuck_finalizers": inv.stuck_finalizers(),
        "orphan_pods": inv.orphan_pods(),
        "orphan_rooms": inv.orphan_rooms(),
        "leftover_sessions": sorted(set(inv.sessions) - kept),
        "kept": sorted(kept),
    }
    print(f"fault result: {result}")
    assert kills >= 1
    assert result["stuck_finalizers"] == [], result
    assert result["orphan_pods"] == [], result
    assert result["orphan_rooms"] == [], result
    assert result["leftover_sessions"] == [], result
    # The phase each kept session's history implies: connection 2 live, Connecting (kwok
    # workers never join), one pod, its room; two connections counted.
    assert set(inv.sessions) == kept
    for name in kept:
        st = inv.sessions[name].get("status") or {}
        conn = st.get("connection") or {}
        assert st.get("phase") == "Connecting", (name, st)
        assert conn.get("id") == 2 and not conn.get("endedAt"), (name, st)
        assert st.get("connectionsTotal") == 2, (name, st)
        pods = [
            p for p in inv.pods if p["metadata"]["labels"].get("voicefleet.dev/session") == name
        ]
        assert [p["metadata"]["name"] for p in pods] == [conn["pod"]], (name, st)
        assert conn["room"] in inv.rooms, (name, st)
    return result


async def test_operator_sigkilled_during_lifecycles_leaves_no_orphans(
    fault_env: dict[str, str], fault_kube: Kube, fault_operator: OperatorProcess
) -> None:
    lifecycles = int(os.environ.get("VOICEFLEET_FAULT_LIFECYCLES", "20"))
    await run_lifecycles(fault_env, fault_kube, fault_operator, lifecycles)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # ~25 min on 2 cores
async def test_operator_sigkilled_during_200_lifecycles_leaves_no_orphans(
    fault_env: dict[str, str], fault_kube: Kube, fault_operator: OperatorProcess
) -> None:
    await run_lifecycles(fault_env, fault_kube, fault_operator, 200)
