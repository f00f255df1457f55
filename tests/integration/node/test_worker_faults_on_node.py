"""Worker faults on the real node (issues 8 and 10), served by the stack's own operator.

Each fault ends the connection within its timeouts with the reason named on the session,
and a fresh worker serves the reconnect (`spec.connection` + 1):

- image missing: the worker's image is not on the node (`imagePullPolicy: Never`), the
  kubelet says `ErrImageNeverPull`; the session is `Failed` with `ImagePullFailed` at once
  (no silent wait), its pod and room gone.
- out of memory: the worker's container hits its cgroup memory limit and the kernel's OOM
  killer ends it. The test raises the worker's `oom_score_adj` (allowed without privilege:
  only lowering needs CAP_SYS_RESOURCE) and runs a helper process in the container's
  memory cgroup that allocates up to the limit, so the kernel picks the worker, as it
  would pick a leaking one. The kubelet reports `OOMKilled` (exit code 137); with
  `maxRestarts: 0` the session is `Failed` with `WorkerFailed` and a message that says
  OOMKilled.
- stuck: the worker is frozen (SIGSTOP), so its liveness probe (/healthz) stops answering;
  the kubelet kills and restarts the container, the operator counts the restart against
  the budget (`maxRestarts: 0`) and fails the connection with the reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from nodekit import NEEDS_NODE

sys.path.insert(0, str(Path(__file__).parents[1]))
from reconnect_harness import Session, list_rooms, talk, worker_pid

pytestmark = [pytest.mark.integration, NEEDS_NODE]


def _ready_condition(status: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})


def _events(kubectl: Any, session: Session) -> list[str]:
    out = kubectl(
        "-n",
        session.ns,
        "get",
        "events",
        "--field-selector",
        f"involvedObject.name={session.name}",
        "-o",
        "json",
    ).stdout
    return [f"{e.get('reason')}: {e.get('message')}" for e in json.loads(out)["items"]]


def _reconnect_is_served_fresh(session: Session, connection: int, old_pod: str) -> None:
    """`spec.connection` raised after a failure: a fresh pod in a fresh room answers."""
    session.apply(connection)
    status = session.wait("Ready", connection, timeout=120)
    pod, room = status["connection"]["pod"], status["connection"]["room"]
    assert pod != old_pod
    visit = asyncio.run(
        talk(
            session.env, room, session.user, f"again {connection}", f"You said: again {connection}"
        )
    )
    assert visit.agents == 1
    session.wait("Idle", connection)


def _gone(session: Session, room: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if session.pods() == [] and room not in asyncio.run(list_rooms(session.env)):
            return
        time.sleep(0.5)
    raise AssertionError(f"{session.name}: pod or room {room} still there after {within} s")


def test_a_missing_worker_image_fails_the_connection_at_once_with_the_reason(
    session: Session,
) -> None:
    t0 = time.monotonic()
    session.apply(1, worker={"image": "voicefleet.local/worker:not-built"})
    status = session.wait("Failed", 1, timeout=90)
    failed_after = time.monotonic() - t0
    ready = _ready_condition(status)
    assert ready.get("reason") == "ImagePullFailed", ready
    assert "ErrImageNeverPull" in ready.get("message", ""), ready
    _gone(session, status["connection"]["room"])
    print(f"\nimage missing: Failed/ImagePullFailed {failed_after:.1f} s after apply")
    _reconnect_is_served_fresh(session, 2, status["connection"]["pod"])


def _memory_cgroup(pid: int) -> Path:
    line = next(
        x
        for x in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        if x.split(":")[1] == "memory"
    )
    return Path("/sys/fs/cgroup/memory", line.split(":", 2)[2].lstrip("/"))


# Runs in the worker container's memory cgroup (it moves itself there first) and touches
# memory up to nearly the limit; with the worker's own ~300 MB that is past the limit.
_HOG = """
import sys, time
open(sys.argv[1], "w").write("0")  # "0": this process
block = []
for _ in range(int(sys.argv[2])):
    block.append(b"\\x01" * (16 << 20))
    time.sleep(0.005)
time.sleep(30)
"""


def test_an_out_of_memory_worker_ends_its_connection_with_the_reason(
    kubectl: Any, session: Session
) -> None:
    limit_mb = 1024
    session.apply(
        1,
        maxRestarts=0,
        worker={"resources": {"limits": {"memory": f"{limit_mb}Mi"}}},
    )
    status = session.wait("Ready", 1, timeout=120)
    pod, room = status["connection"]["pod"], status["connection"]["room"]
    pid = worker_pid(pod)
    cgroup = _memory_cgroup(pid)
    assert int((cgroup / "memory.limit_in_bytes").read_text()) == limit_mb << 20
    Path(f"/proc/{pid}/oom_score_adj").write_text("1000")
    t0 = time.monotonic()
    hog = subprocess.Popen(
        [sys.executable, "-c", _HOG, str(cgroup / "cgroup.procs"), str((limit_mb - 64) // 16)]
    )
    try:
        status = session.wait("Failed", 1, timeout=90)
    finally:
        hog.kill()
        hog.wait()
    failed_after = time.monotonic() - t0
    ready = _ready_condition(status)
    assert ready.get("reason") == "WorkerFailed", ready
    assert "OOMKilled" in ready.get("message", ""), ready
    assert any("OOMKilled" in e for e in _events(kubectl, session)), _events(kubectl, session)
    _gone(session, room)
    print(f"\nout of memory: Failed/WorkerFailed (OOMKilled) {failed_after:.1f} s after the hog")
    _reconnect_is_served_fresh(session, 2, pod)


def test_a_stuck_worker_is_restarted_by_its_liveness_probe_and_counted(
    kubectl: Any, session: Session
) -> None:
    session.apply(1, maxRestarts=0)
    status = session.wait("Ready", 1, timeout=120)
    pod, room = status["connection"]["pod"], status["connection"]["room"]
    pid = worker_pid(pod)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGSTOP)  # no heartbeat: /healthz never answers again
    try:
        # Liveness: first probe after 10 s, every 10 s, 3 failures; then grace, SIGKILL.
        status = session.wait("Failed", 1, timeout=150)
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    failed_after = time.monotonic() - t0
    ready = _ready_condition(status)
    assert ready.get("reason") == "WorkerFailed", ready
    assert "restarted 1 times" in ready.get("message", ""), ready
    _gone(session, room)
    print(f"\nstuck worker: Failed/WorkerFailed {failed_after:.1f} s after SIGSTOP")
    _reconnect_is_served_fresh(session, 2, pod)
