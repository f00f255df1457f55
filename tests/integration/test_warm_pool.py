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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opit import Kube, OperatorProcess
from reconnect_harness import (
    Session,
    create_letta_agent,
    delete_letta_agent,
    remove_pool,
    talk,
    wait_pool,
    warm_pool_operator,
)

pytestmark = pytest.mark.integration

POOL_SIZE = 2


@pytest.fixture
def warm_operator(
    stack_env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[OperatorProcess, Kube]]:
    logs = Path(stack_env["KUBECONFIG"]).parent / "logs"
    proc, kube = warm_pool_operator(stack_env, tmp_path, logs / "operator-warm-pool.log", POOL_SIZE)
    proc.start()
    try:
        yield proc, kube
    finally:
        proc.stop()
        remove_pool(kube)


def test_connections_claim_warm_workers_and_the_pool_refills(
    stack_env: dict[str, str], kubectl: Any, warm_operator: tuple[OperatorProcess, Kube]
) -> None:
    _, kube = warm_operator
    warm = wait_pool(kube, POOL_SIZE)
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
            warm = wait_pool(kube, POOL_SIZE)
            assert pod not in warm
            session.wait("Idle", connection, timeout=60)  # the user left: torn down
        assert pods[0] != pods[1]  # a reconnect gets a fresh worker process
        reasons = {e["reason"] for e in kube.events(session.name)}
        assert "WarmPodClaimed" in reasons
    finally:
        session.delete()
        delete_letta_agent(stack_env, agent)
