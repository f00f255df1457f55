"""Fixtures of the security tests on the real local stack (issue 10 and issue 6's gaps).

Everything runs against the real API server (RBAC on), the real LiveKit server and a real
operator process. Two operators are in play:
- the stack's own (namespace `NAMESPACE`, real workers on the host node): used by tests that
  need no worker (RBAC, forged webhooks, secret scans of its logs, status and Events);
- this checkout's operator (`sec_operator`), in a namespace of its own with worker pods on
  kwok nodes (they never start a process, so a connection never becomes Ready by itself):
  used for random specs, replayed webhooks, 403/504 through a gateway, and the worker pod's
  security context. When a test needs a Ready connection, the STAND-IN worker of
  tests/integration/web/webharness.py joins the room as an agent.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[0] / "web"))
sys.path.insert(0, str(HERE.parents[0] / "operator"))
sys.path.insert(0, str(HERE.parents[1] / "unit" / "security"))  # secprops: strategies, CRD oracle

from secharness import SecOperator  # noqa: E402
from webharness import (  # noqa: E402
    Gateway,
    Gateways,
    Letta,
    create_isolated_namespace,
    gateway_kubeconfig_for,
    letta_or_stand_in,
    stop_checkout_operator,
)


@pytest.fixture(scope="session")
def sec_letta(stack_env: dict[str, str]) -> Iterator[Letta]:
    yield from letta_or_stand_in(stack_env)


@pytest.fixture(scope="session")
def sec_operator(
    stack_env: dict[str, str], kubectl: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecOperator]:
    namespace = create_isolated_namespace(kubectl, prefix="vf-sec")
    from opit import Kube, OperatorProcess, operator_kubeconfig

    folder = tmp_path_factory.mktemp("sec-op")
    env = dict(stack_env, NAMESPACE=namespace)
    proc = OperatorProcess(
        env, operator_kubeconfig(Kube(env), env, folder / "kubeconfig"), folder / "operator.log"
    )
    try:
        proc.start()
    except AssertionError as exc:
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        tail = proc.log.read_text(errors="replace")[-2000:] if proc.log.exists() else ""
        pytest.fail(f"the operator of this checkout does not start: {exc}\n{tail}")
    yield SecOperator(namespace, proc)
    stop_checkout_operator(proc, kubectl, namespace)


@pytest.fixture(scope="session")
def sec_gateway_kubeconfig(
    stack_env: dict[str, str], kubectl: Any, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return gateway_kubeconfig_for(
        stack_env, kubectl, tmp_path_factory.mktemp("sec-gateway") / "kubeconfig"
    )


@pytest.fixture(scope="session")
def sec_gateway(
    stack_env: dict[str, str],
    sec_letta: Letta,
    sec_gateway_kubeconfig: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Gateway]]:
    """sec_gateway(user=..., **env) -> a gateway process (one per set of arguments)."""
    yield from Gateways(
        stack_env,
        sec_gateway_kubeconfig,
        sec_letta.url,
        lambda: tmp_path_factory.mktemp("sec-gateway-run"),
        "it-sec",
    ).serve()


@pytest.fixture(scope="session")
def agent_66(sec_letta: Letta) -> str:
    return str(sec_letta.agent_named("Agent_66")["id"])
