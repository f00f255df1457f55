"""Fixtures of the operator's integration tests (helpers in opit.py; see its docstring)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from opit import Kube, OperatorProcess, operator_kubeconfig


@pytest.fixture(scope="session")
def kube(stack_env: dict[str, str]) -> Kube:
    return Kube(stack_env)


# Module scope: while the test operator runs (peering priority 100) the stack's own operator
# pauses; later test modules need the stack's operator (real workers on the host node).
@pytest.fixture(scope="module")
def operator(
    stack_env: dict[str, str], kube: Kube, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess | None]:
    if os.environ.get("VOICEFLEET_TEST_OPERATOR") == "external":
        yield None
        return
    folder = tmp_path_factory.mktemp("operator")
    # The log goes next to the stack's own logs, where it outlives pytest's temporary folders.
    logs = Path(stack_env["KUBECONFIG"]).parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    proc = OperatorProcess(
        stack_env,
        operator_kubeconfig(kube, stack_env, folder / "kubeconfig"),
        logs / "operator-tests.log",
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def webhook_url(operator: OperatorProcess | None) -> str:
    if operator is None:
        return os.environ["VOICEFLEET_TEST_WEBHOOK_URL"]
    return operator.webhook_url


@pytest.fixture
def session_name(kube: Kube) -> Iterator[str]:
    """A fresh VoiceSession name, deleted (and awaited) after the test."""
    name = f"it-{secrets.token_hex(3)}"
    yield name
    kube.delete_session(name, wait=True)


@pytest.fixture
def agent_id() -> str:
    """A Letta agent id of this test alone (no worker runs, so it need not exist in Letta)."""
    return f"agent-it-{secrets.token_hex(4)}"
