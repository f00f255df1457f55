"""Fixtures of the fault tests (issue 10, "Faults") on the real local stack.

This checkout's operator runs as a real process (tests/integration/operator/opit.py) in a
namespace of its own (tests/integration/web/webharness.py), with a short kopf peering
lifetime (a SIGKILLed operator's successor waits ~3 s), and the stack's own operator never touches these
sessions. Worker pods go to the kwok nodes (Running/Ready without a process). Faults are
done to the stack of the env file under test only (its folder holds `pids.json`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[0] / "web"))
sys.path.insert(0, str(HERE.parents[0] / "operator"))

from opit import Kube, OperatorProcess, operator_kubeconfig  # noqa: E402
from webharness import create_isolated_namespace, stop_checkout_operator  # noqa: E402


@pytest.fixture(scope="module")
def fault_namespace(kubectl: Any) -> str:
    return create_isolated_namespace(kubectl, prefix="vf-fault")


@pytest.fixture(scope="module")
def fault_env(stack_env: dict[str, str], fault_namespace: str) -> dict[str, str]:
    return dict(stack_env, NAMESPACE=fault_namespace)


@pytest.fixture(scope="module")
def fault_kube(fault_env: dict[str, str]) -> Kube:
    return Kube(fault_env)


@pytest.fixture(scope="module")
def fault_operator(
    fault_env: dict[str, str],
    fault_kube: Kube,
    kubectl: Any,
    stack_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    folder = tmp_path_factory.mktemp("fault-op")
    logs = stack_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    proc = OperatorProcess(
        fault_env,
        operator_kubeconfig(fault_kube, fault_env, folder / "kubeconfig"),
        logs / f"operator-faults-{fault_kube.namespace}.log",
    )
    # A SIGKILLed replica's peering record holds its successor back this long at most.
    proc.env["VOICEFLEET_PEERING_LIFETIME_SECONDS"] = "3"
    proc.env["VOICEFLEET_FINALIZER_BUDGET_SECONDS"] = "60"  # the product's default
    proc.start()
    try:
        yield proc
    finally:
        if proc.proc is None or proc.proc.poll() is not None:
            proc.start()  # the finalizers of what is left need an operator
        stop_checkout_operator(proc, kubectl, fault_kube.namespace)
