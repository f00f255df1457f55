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
    Gateways,
    Letta,
    StandInOperator,
    gateway_kubeconfig_for,
    letta_or_stand_in,
    operator_running,
)


@pytest.fixture(scope="session")
def letta(stack_env: dict[str, str]) -> Iterator[Letta]:
    """The stack's Letta, or a STAND-IN agent directory when Letta is not running."""
    yield from letta_or_stand_in(stack_env)


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
    yield from Gateways(
        stack_env,
        gateway_kubeconfig,
        letta.url,
        lambda: tmp_path_factory.mktemp("gateway-run"),
        "it-alice",
    ).serve()


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
