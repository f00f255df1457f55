"""The warm pool on the real stack (SPEC.md, "Warm pool"), with real workers.

An operator of this checkout runs with `VOICEFLEET_WARM_POOL_SIZE=2` (kopf peering priority
100: the stack's own operator pauses meanwhile) and puts its workers on the host-process
node, where they are real worker processes that register with LiveKit and load their
models. A connection claims a ready pool worker instead of starting one, the user talks to
it, the pool refills, and the reconnect claims another (fresh) worker. Leftover pool pods
are removed at the end.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from reconnect_harness import Session, create_letta_agent, delete_letta_agent, talk

sys.path.insert(0, str(Path(__file__).parent / "operator"))
from opit import Kube, OperatorProcess, operator_kubeconfig

pytestmark = pytest.mark.integration

POOL_SIZE = 2
POOL_SELECTOR = "voicefleet.dev/pool=warm"


@pytest.fixture
def warm_operator(
    stack_env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[OperatorProcess, Kube]]:
    kube = Kube(stack_env)
    logs = Path(stack_env["KUBECONFIG"]).parent / "logs"
    proc = OperatorProcess(
        stack_env,
        operator_kubeconfig(kube, stack_env, tmp_path / "kubeconfig"),
        logs / "operator-warm-pool.log",
    )
    # Real workers: the host-process node (as the stack's operator), not the kwok nodes.
    proc.env.pop("VOICEFLEET_WORKER_TOLERATIONS", None)
    proc.env["VOICEFLEET_WORKER_NODE_SELECTOR"] = json.dumps(
        {"voicefleet.dev/node-kind": "host-process"}
    )
    proc.env["VOICEFLEET_WORKER_COMMAND"] = "python -m voicefleet_worker"
    proc.env["VOICEFLEET_WARM_POOL_SIZE"] = str(POOL_SIZE)
    proc.start()
    try:
        yield proc, kube
    finally:
        proc.stop()
        kube.run(
            "-n", kube.namespace, "delete", "pods", "-l", POOL_SELECTOR, "--wait=true",
            "--timeout=60s", check=False,
        )  # fmt: skip


def ready_pool_pods(kube: Kube) -> set[str]:
    out = kube.run("-n", kube.namespace, "get", "pods", "-l", POOL_SELECTOR, "-o", "json").stdout
    ready = set()
    for pod in json.loads(out)["items"]:
        conds = (pod.get("status") or {}).get("conditions") or []
        deleting = pod["metadata"].get("deletionTimestamp")
        if not deleting and any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
            ready.add(pod["metadata"]["name"])
    return ready


def full_pool(kube: Kube) -> set[str] | None:
    pods = ready_pool_pods(kube)
    return pods if len(pods) >= POOL_SIZE else None


def wait_until(what: str, check: Callable[[], Any], within: float = 120.0) -> Any:
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {within} s waiting for {what} (last: {last!r})")


def test_connections_claim_warm_workers_and_the_pool_refills(
    stack_env: dict[str, str], kubectl: Any, warm_operator: tuple[OperatorProcess, Kube]
) -> None:
    _, kube = warm_operator
    warm = wait_until(f"{POOL_SIZE} ready warm workers", lambda: full_pool(kube))
    agent = create_letta_agent(stack_env, "warm")
    session = Session(kubectl, stack_env, agent, prefix="warm")
    try:
        pods = []
        for connection in (1, 2):
            session.apply(connection)
            status = session.wait("Ready", connection, timeout=60)
            pod, room = status["connection"]["pod"], status["connection"]["room"]
            assert pod in warm, f"connection {connection} got {pod}, not a warm worker {warm}"
            pods.append(pod)
            said = f"hello warm pool {connection}"
            heard = asyncio.run(talk(stack_env, room, session.user, said, f"You said: {said}"))
            assert heard.agents == 1
            # The pool refills with fresh workers; the claimed one is the session's alone.
            warm = wait_until("the pool refilled", lambda: full_pool(kube))
            assert pod not in warm
            session.wait("Idle", connection, timeout=60)  # the user left: torn down
        assert pods[0] != pods[1]  # a reconnect gets a fresh worker process
        reasons = {e["reason"] for e in kube.events(session.name)}
        assert "WarmPodClaimed" in reasons
    finally:
        session.delete()
        delete_letta_agent(stack_env, agent)
