"""Fixtures of the gateway's integration tests on the real local stack (see webharness.py).

Tests whose name ends in `_stand_in_operator` use the STAND-IN operator (it writes status
with admin credentials) and skip when the real operator runs in the stack.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from webharness import (
    Gateway,
    GatewayFailed,
    Letta,
    StandInLetta,
    StandInOperator,
    find_letta,
    gateway_kubeconfig_for,
    operator_running,
    start_gateway_process,
)


@pytest.fixture(scope="session")
def letta(stack_env: dict[str, str]) -> Iterator[Letta]:
    """The stack's Letta, or a STAND-IN agent directory when Letta is not running."""
    found = find_letta(stack_env)
    if found is not None:
        yield found
        return
    stand_in = StandInLetta()
    yield stand_in.letta
    stand_in.stop()


@pytest.fixture(scope="session")
def gateway_kubeconfig(
    stack_env: dict[str, str],
    kubectl: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    return gateway_kubeconfig_for(
        stack_env, kubectl, tmp_path_factory.mktemp("gateway") / "kubeconfig"
    )


@pytest.fixture(scope="session")
def start_gateway(
    stack_env: dict[str, str],
    letta: Letta,
    gateway_kubeconfig: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Gateway]]:
    """start_gateway(user="it-alice", **env) -> a running gateway (one per set of arguments)."""
    running: dict[tuple[tuple[str, str], ...], Gateway] = {}

    def start(user: str = "it-alice", **overrides: str) -> Gateway:
        key = tuple(sorted({"user": user, **overrides}.items()))
        if key not in running:
            log = tmp_path_factory.mktemp("gateway-run") / "gateway.log"
            try:
                running[key] = start_gateway_process(
                    stack_env,
                    kubeconfig=gateway_kubeconfig,
                    letta_url=letta.url,
                    log=log,
                    user=user,
                    **overrides,
                )
            except GatewayFailed as exc:
                pytest.fail(str(exc))
        return running[key]

    yield start
    for gateway in running.values():
        gateway.stop()


@pytest.fixture(scope="session")
def stand_in_operator(stack_env: dict[str, str], stack_dir: Path) -> Iterator[StandInOperator]:
    """PLAYS THE OPERATOR'S PART; skips when the real operator runs in the stack."""
    if operator_running(stack_dir):
        pytest.skip("the real operator runs in this stack: no stand-in needed")
    operator = StandInOperator(stack_env["KUBECONFIG"], stack_env["NAMESPACE"])
    thread = operator.start()
    yield operator
    operator.stop.set()
    thread.join(timeout=10)
    operator.delete_sessions()
