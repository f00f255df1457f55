"""Fixtures of the browser tests: the built client, Chromium, and a gateway on the stack.

The gateway is the one the stack runs (GATEWAY_URL) when it answers, otherwise one started
here with its own ServiceAccount (tests/integration/web/webharness.py). Letta is the
stack's, or a STAND-IN agent directory while Letta is not installed.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
E2E = REPO / "tests" / "e2e"
sys.path.insert(0, str(REPO / "tests" / "integration" / "web"))

from webharness import (  # noqa: E402
    Gateway,
    GatewayFailed,
    Letta,
    OperatorUnavailable,
    StandInOperator,
    StandInWorker,
    create_isolated_namespace,
    gateway_kubeconfig_for,
    letta_or_stand_in,
    operator_running,
    start_checkout_operator,
    start_gateway_process,
    stop_checkout_operator,
)

E2E_USER = "e2e-user"

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="session")
def browser_ready() -> None:
    missing = []
    if not CHROMIUM.exists():
        missing.append("/usr/bin/chromium")
    if not (E2E / "node_modules" / "playwright-core").is_dir():
        missing.append("tests/e2e/node_modules (playwright-core)")
    if not (REPO / "web" / "voicefleet_web" / "static" / "app.js").is_file():
        missing.append("the client bundle")
    if missing:
        pytest.skip(f"missing {', '.join(missing)}: run tools/install-web-deps.sh")


@pytest.fixture(scope="session")
def e2e_letta(stack_env: dict[str, str]) -> Iterator[Letta]:
    yield from letta_or_stand_in(stack_env)


@pytest.fixture(scope="session")
def e2e_gateway(
    stack_env: dict[str, str],
    e2e_letta: Letta,
    kubectl: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway | str]:
    """The stack's gateway URL if it serves, else a Gateway started here."""
    url = stack_env.get("GATEWAY_URL", "")
    with contextlib.suppress(httpx.HTTPError):
        if (
            url
            and httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            and not e2e_letta.stand_in
        ):
            yield url
            return
    folder = tmp_path_factory.mktemp("e2e-gateway")
    kubeconfig = gateway_kubeconfig_for(stack_env, kubectl, folder / "kubeconfig")
    try:
        gateway = start_gateway_process(
            stack_env,
            kubeconfig=kubeconfig,
            letta_url=e2e_letta.url,
            log=folder / "gateway.log",
            user=E2E_USER,
            GATEWAY_READY_TIMEOUT_SECONDS="180",
        )
    except GatewayFailed as exc:
        pytest.fail(str(exc))
    yield gateway
    gateway.stop()


@pytest.fixture(scope="session")
def e2e_stand_in_operator(
    stack_env: dict[str, str],
    stack_dir: Path,
) -> Iterator[StandInOperator]:
    """PLAYS THE OPERATOR'S PART for the e2e user; skips when the real operator runs."""
    if operator_running(stack_dir):
        pytest.skip("the real operator runs in this stack: no stand-in needed")
    operator = StandInOperator(stack_env["KUBECONFIG"], stack_env["NAMESPACE"], users={E2E_USER})
    thread = operator.start()
    yield operator
    operator.stop.set()
    thread.join(timeout=10)
    operator.delete_sessions()


@pytest.fixture(scope="session")
def e2e_checkout_stack(
    browser_ready: None,
    stack_env: dict[str, str],
    stack_dir: Path,
    e2e_letta: Letta,
    kubectl: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Gateway, StandInWorker]]:
    """The operator of this checkout in a namespace of its own, a gateway for it, and the
    STAND-IN worker (joins each dispatched room as an AGENT participant)."""
    if operator_running(stack_dir):
        pytest.skip("the stack runs its own operator (real workers): no stand-in worker")
    folder = tmp_path_factory.mktemp("e2e-checkout")
    namespace = create_isolated_namespace(kubectl, prefix="vf-e2e")
    try:
        operator = start_checkout_operator(stack_env, namespace, folder)
    except OperatorUnavailable as exc:
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        pytest.skip(str(exc))
    worker = StandInWorker(stack_env, namespace)
    worker.start()
    kubeconfig = gateway_kubeconfig_for(stack_env, kubectl, folder / "kubeconfig")
    try:
        gateway = start_gateway_process(
            stack_env,
            kubeconfig=kubeconfig,
            letta_url=e2e_letta.url,
            log=folder / "gateway.log",
            user="e2e-op",
            NAMESPACE=namespace,
            GATEWAY_READY_TIMEOUT_SECONDS="60",
        )
    except GatewayFailed as exc:
        worker.stop()
        stop_checkout_operator(operator, kubectl, namespace)
        pytest.fail(str(exc))
    yield gateway, worker
    gateway.stop()
    worker.stop()
    stop_checkout_operator(operator, kubectl, namespace)
