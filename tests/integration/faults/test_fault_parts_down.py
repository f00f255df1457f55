"""Issue 10, faults: a part of the stack goes away and comes back.

- kube-apiserver restarted (`voicefleet restart kube-apiserver`) while sessions change: the
  operator's watches recover by themselves; changes made around the restart and sessions
  created after it converge; nothing is lost or left behind.
- LiveKit server unreachable for 30 s (frozen with SIGSTOP, so every call hangs and times
  out, then SIGCONT): sessions report LiveKitUnavailable, the operator retries with backoff
  (bounded error count), a session deleted meanwhile waits in its finalizer and its room is
  deleted once LiveKit answers; everything converges with no orphan room or pod.

Only the stack of the env file under test is touched (its folder's `pids.json`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from faultkit import Partition, astatus, inventory, operator_errors, part_pid, voicefleet
from opit import Kube, OperatorProcess
from test_operator_lifecycle import condition, room_exists, session_obj, wait_for

pytestmark = pytest.mark.integration

LIVEKIT_DOWN_SECONDS = float(os.environ.get("VOICEFLEET_FAULT_LIVEKIT_DOWN_SECONDS", "30"))


def _prefix() -> str:
    return f"fp{secrets.token_hex(2)}"


def _create(kube: Kube, name: str) -> None:
    kube.apply(session_obj(kube, name, f"agent-{name}", joinTimeoutSeconds=600))


async def _dispatched(kube: Kube, name: str, conn_id: int, within: float = 60.0) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        conn = (await astatus(kube, name)).get("connection") or {}
        ok = conn.get("id") == conn_id and conn.get("dispatchedAt") and not conn.get("endedAt")
        return conn if ok else None

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if got := await check():
            return got
        await asyncio.sleep(0.5)
    raise AssertionError(f"{name}: connection {conn_id} not dispatched within {within} s")


async def _started(kube: Kube, *names: str) -> list[dict[str, Any]]:
    """Sessions created, each with connection 1 dispatched (room and pod made)."""
    for name in names:
        _create(kube, name)
    return [await _dispatched(kube, name, 1) for name in names]


async def _retrying(what: str, call: Any, within: float = 60.0) -> None:
    """A kubectl call retried while the API server is away (the test's hands, bounded)."""
    deadline = time.monotonic() + within
    while True:
        try:
            await asyncio.to_thread(call)
            return
        except (AssertionError, subprocess.TimeoutExpired):
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: the API server did not come back") from None
            await asyncio.sleep(0.5)


async def _gone(kube: Kube, name: str, within: float) -> float:
    started = time.monotonic()
    await wait_for(
        f"{name} gone", lambda: kube.get("voicesession", name) is None, within=within, every=0.5
    )
    return time.monotonic() - started


async def _clean(kube: Kube, env: dict[str, str], prefix: str, within: float = 150.0) -> Any:
    """Bounded: the orphan sweep runs every 60 s and takes rooms older than 60 s."""
    deadline = time.monotonic() + within
    while True:
        inv = await inventory(kube, env, f"vs-{prefix}-")
        bad = inv.stuck_finalizers() + inv.orphan_pods() + inv.orphan_rooms()
        if not bad or time.monotonic() > deadline:
            return inv
        await asyncio.sleep(2)


# -- kube-apiserver restarted ---------------------------------------------------------------
async def test_kube_apiserver_restart_watches_recover_nothing_lost(
    fault_env: dict[str, str],
    fault_kube: Kube,
    fault_operator: OperatorProcess,
    stack_dir: Path,
) -> None:
    kube = fault_kube
    prefix = _prefix()
    bumped, deleted, after = f"{prefix}-bump", f"{prefix}-del", f"{prefix}-after"
    first, deleted_conn = await _started(kube, bumped, deleted)
    deleted_room = deleted_conn["room"]

    started = time.monotonic()
    restart = asyncio.create_task(
        asyncio.to_thread(voicefleet, stack_dir, "restart", "kube-apiserver")
    )
    await asyncio.sleep(0.5)  # the old API server is on its way down
    # Changes made while it is away or coming back (retried by the test until accepted).
    await _retrying("bump", lambda: kube.patch_session(bumped, {"spec": {"connection": 2}}))
    await _retrying("delete", lambda: kube.delete_session(deleted))
    await restart
    restart_seconds = time.monotonic() - started
    # A session made after the restart is seen only through a recovered watch.
    _create(kube, after)

    conn = await _dispatched(kube, bumped, 2, within=90)
    await _dispatched(kube, after, 1, within=90)
    await _gone(kube, deleted, within=90)
    converged_seconds = time.monotonic() - started
    inv = await _clean(kube, fault_env, prefix)
    print(
        f"kube-apiserver restart: {restart_seconds:.1f} s, all converged "
        f"{converged_seconds:.1f} s after the restart began"
    )
    assert fault_operator.proc is not None and fault_operator.proc.poll() is None
    assert inv.stuck_finalizers() == [] and inv.orphan_pods() == [] and inv.orphan_rooms() == []
    assert {n for n in inv.sessions if n.startswith(prefix)} == {bumped, after}
    assert conn["room"] != first["room"] and conn["pod"] != first["pod"]
    assert first["room"] not in inv.rooms and deleted_room not in inv.rooms
    assert (await astatus(kube, bumped))["connectionsTotal"] == 2
    for name in (bumped, after):
        assert (await astatus(kube, name))["phase"] == "Connecting"


# -- LiveKit server away for 30 s ----------------------------------------------------------------
async def test_livekit_down_30s_reports_retries_and_converges(
    fault_env: dict[str, str],
    fault_kube: Kube,
    fault_operator: OperatorProcess,
    stack_dir: Path,
) -> None:
    kube = fault_kube
    prefix = _prefix()
    live, doomed, newcomer = f"{prefix}-live", f"{prefix}-del", f"{prefix}-new"
    live_conn, doomed_conn = await _started(kube, live, doomed)
    doomed_room = doomed_conn["room"]

    pid = part_pid(stack_dir, "livekit-server")
    errors_before = operator_errors(fault_operator, "LiveKitUnavailable")
    os.kill(pid, signal.SIGSTOP)
    down_at = time.monotonic()
    try:
        kube.delete_session(doomed)
        _create(kube, newcomer)
        for name in (live, newcomer):
            await wait_for(
                f"{name}: RoomReady=False/LiveKitUnavailable",
                lambda name=name: (
                    condition(kube.get("voicesession", name).get("status") or {}, "RoomReady").get(
                        "reason"
                    )
                    == "LiveKitUnavailable"
                ),
                within=LIVEKIT_DOWN_SECONDS,
                every=0.5,
            )
        newcomer_ready = condition(await astatus(kube, newcomer), "Ready")
        assert newcomer_ready.get("reason") == "LiveKitUnavailable", newcomer_ready
        await asyncio.sleep(max(0.0, LIVEKIT_DOWN_SECONDS - (time.monotonic() - down_at)))
        # Its finalizer keeps trying (budget 60 s), it does not give up or drop the room.
        doomed_obj = kube.get("voicesession", doomed)
        assert doomed_obj is not None and doomed_obj["metadata"].get("deletionTimestamp")
    finally:
        os.kill(pid, signal.SIGCONT)
    down_seconds = time.monotonic() - down_at
    errors_down = operator_errors(fault_operator, "LiveKitUnavailable") - errors_before

    doomed_gone = await _gone(kube, doomed, within=60)
    new_conn = await _dispatched(kube, newcomer, 1, within=60)
    await wait_for(
        "RoomReady=True on both",
        lambda: all(
            condition(kube.get("voicesession", n).get("status") or {}, "RoomReady").get("status")
            == "True"
            for n in (live, newcomer)
        ),
        within=60,
        every=0.5,
    )
    inv = await _clean(kube, fault_env, prefix)
    print(
        f"LiveKit down {down_seconds:.1f} s: {errors_down:.0f} LiveKitUnavailable errors while "
        f"down; deleted session gone {doomed_gone:.1f} s after LiveKit came back"
    )
    # Backoff, not a hot loop: 3 sessions and the sweep over 30 s.
    assert 1 <= errors_down <= 60, errors_down
    assert inv.stuck_finalizers() == [] and inv.orphan_pods() == [] and inv.orphan_rooms() == []
    assert {n for n in inv.sessions if n.startswith(prefix)} == {live, newcomer}
    assert not await room_exists(fault_env, doomed_room)
    after = (await astatus(kube, live))["connection"]
    assert (after["room"], after["pod"]) == (live_conn["room"], live_conn["pod"])
    assert await room_exists(fault_env, live_conn["room"])
    assert await room_exists(fault_env, new_conn["room"])


async def test_livekit_unreachable_past_the_finalizer_budget_the_sweep_deletes_the_room_later(
    fault_env: dict[str, str],
    fault_kube: Kube,
    fault_operator: OperatorProcess,
) -> None:
    """A session deleted while the operator cannot reach LiveKit for longer than the
    finalizer's budget is let go (its deletion never hangs), and its room, left behind on
    the live LiveKit server, is deleted by the orphan sweep once LiveKit is reachable again
    (against LiveKit's room list and the API server's sessions)."""
    kube = fault_kube
    prefix = _prefix()
    doomed = f"{prefix}-del"
    url = urllib.parse.urlsplit(fault_env["LIVEKIT_URL"])
    partition = Partition(url.hostname or "127.0.0.1", url.port or 7880)
    await partition.open()
    # This test only: the operator reaches LiveKit through the partition, with a 10 s
    # finalizer budget and a 5 s sweep (the product's: 60 s / 60 s).
    saved = dict(fault_operator.env)
    await asyncio.to_thread(
        fault_operator.restart,
        LIVEKIT_URL=f"ws://127.0.0.1:{partition.port}",
        VOICEFLEET_WORKER_LIVEKIT_URL=fault_env["LIVEKIT_URL"],
        VOICEFLEET_FINALIZER_BUDGET_SECONDS="10",
        VOICEFLEET_SWEEP_SECONDS="5",
    )
    try:
        [conn] = await _started(kube, doomed)
        room = conn["room"]
        await partition.cut()
        kube.delete_session(doomed)
        let_go = await _gone(kube, doomed, within=60)
        assert await room_exists(fault_env, room), "the room should have outlived its session"
        await partition.open()  # same port: LiveKit is reachable again
        back = time.monotonic()
        deadline = back + 120  # rooms are swept once older than 60 s
        while await room_exists(fault_env, room):
            assert time.monotonic() < deadline, f"{room} still there 120 s after LiveKit came back"
            await asyncio.sleep(1)
        swept = time.monotonic() - back
    finally:
        await asyncio.to_thread(fault_operator.stop)
        fault_operator.env.clear()
        fault_operator.env.update(saved)
        await asyncio.to_thread(fault_operator.start)
        await partition.cut()
    inv = await _clean(kube, fault_env, prefix)
    print(
        f"LiveKit unreachable past the finalizer budget: session let go {let_go:.1f} s after "
        f"its deletion; its room swept {swept:.1f} s after LiveKit was reachable again"
    )
    assert inv.stuck_finalizers() == [] and inv.orphan_pods() == [] and inv.orphan_rooms() == []
