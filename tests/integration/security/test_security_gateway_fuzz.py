"""The gateway fuzzed from its own OpenAPI description (schemathesis), and raw HTTP abuse
(issue 10): no 5xx, no hang, every answer as documented; oversized bodies, header floods and
endless requests are refused and the gateway keeps serving.

The gateway is a real process (its own ServiceAccount, the real API server, the stack's
Letta); its sessions live in the security tests' operator namespace.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from secharness import SecOperator, raw_request
from webharness import Gateway

pytestmark = pytest.mark.integration
EXAMPLES = int(os.environ.get("VOICEFLEET_FUZZ_EXAMPLES", "25"))  # per operation and mode
MAX_SECONDS = 10.0  # any answer slower than this is a hang (connect waits are not reached)
BOUNDED = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def fuzz_gateway(sec_operator: SecOperator, sec_gateway: Any) -> Gateway:
    return sec_gateway(
        user="it-sec-fuzz",
        NAMESPACE=sec_operator.namespace,
        GATEWAY_REQUESTS_PER_MINUTE="100000",
        GATEWAY_READY_TIMEOUT_SECONDS="5",
    )


def fuzz(gateway: Gateway, mode: schemathesis.GenerationMode, token: str | None) -> list[str]:
    schema = schemathesis.openapi.from_url(f"{gateway.url}/api/openapi.json")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    problems: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 4, [op.label for op in operations]
    for operation in operations:
        _fuzz_operation(gateway, operation, mode, headers, token, problems)
    return problems


def _fuzz_operation(
    gateway: Gateway,
    operation: Any,
    mode: schemathesis.GenerationMode,
    headers: dict[str, str],
    token: str | None,
    problems: list[str],
) -> None:
    @BOUNDED
    @given(case=operation.as_strategy(generation_mode=mode))
    def one(case: schemathesis.Case) -> None:
        started = time.monotonic()
        response = case.call(base_url=gateway.url, headers=headers, timeout=MAX_SECONDS + 5)
        took = time.monotonic() - started
        label = f"{case.method} {case.formatted_path} -> {response.status_code} in {took:.1f} s"
        if response.status_code >= 500 or took > MAX_SECONDS:
            problems.append(label)
        if not token and response.status_code != 401:
            problems.append(f"without a token: {label}")
        try:
            case.validate_response(response)
        except Exception as exc:  # a documented-contract failure: report, keep fuzzing
            problems.append(f"{label}: {str(exc).splitlines()[0][:200]}")

    one()


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_fuzzing_the_openapi_description_finds_no_5xx_no_hang_no_undocumented_answer(
    fuzz_gateway: Gateway, stack_env: dict[str, str], mode: str
) -> None:
    problems = fuzz(fuzz_gateway, schemathesis.GenerationMode(mode), stack_env["GATEWAY_TOKEN"])
    assert problems == []


def test_fuzzing_without_a_token_only_ever_gets_401(fuzz_gateway: Gateway) -> None:
    assert fuzz(fuzz_gateway, schemathesis.GenerationMode.POSITIVE, None) == []


# -- raw HTTP abuse ----------------------------------------------------------------------------
def healthy(gateway: Gateway) -> bool:
    return raw_request(f"{gateway.url}/healthz", "GET", timeout=5)[0] == 200


def test_oversized_bodies_are_refused_whatever_their_framing(
    fuzz_gateway: Gateway, stack_env: dict[str, str]
) -> None:
    url = f"{fuzz_gateway.url}/api/sessions"
    auth = {
        "Authorization": f"Bearer {stack_env['GATEWAY_TOKEN']}",
        "Content-Type": "application/json",
    }
    big = b'{"agentId": "' + b"a" * 200_000 + b'"}'
    answers = {
        "content-length": raw_request(url, body=big, headers=auth)[0],
        "chunked": raw_request(
            url, body=[big[i : i + 8192] for i in range(0, len(big), 8192)], headers=auth
        )[0],
        "deep nesting": raw_request(
            url, body=b'{"agentId": ' + b"[" * 8000 + b"]" * 8000 + b"}", headers=auth
        )[0],
    }
    assert answers == {"content-length": 413, "chunked": 413, "deep nesting": 400}
    assert healthy(fuzz_gateway)


def test_a_body_announced_huge_is_refused_at_once(
    fuzz_gateway: Gateway, stack_env: dict[str, str]
) -> None:
    """Content-Length: 1 GB, then silence: a 413 now, not a connection held open forever."""
    port = int(fuzz_gateway.url.rsplit(":", 1)[1])
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {stack_env['GATEWAY_TOKEN']}\r\n".encode()
            + b"Content-Length: 1000000000\r\n\r\n{"
        )
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert time.monotonic() - started < 5
    assert healthy(fuzz_gateway)


def test_header_floods_and_endless_request_lines_are_refused(fuzz_gateway: Gateway) -> None:
    url = f"{fuzz_gateway.url}/api/agents"
    answers = {
        "one 64 KiB header": raw_request(url, "GET", headers={"X-Flood": "a" * 65_536})[0],
        "10000 headers": raw_request(url, "GET", headers=[(f"X-F{i}", "a") for i in range(10_000)])[
            0
        ],
        "1 MiB of headers": raw_request(
            url, "GET", headers=[(f"X-F{i}", "a" * 8000) for i in range(128)]
        )[0],
        "64 KiB URL": raw_request(f"{url}?q={'a' * 65_536}", "GET")[0],
        "64 KiB Authorization": raw_request(
            url, "GET", headers={"Authorization": "Bearer " + "a" * 65_536}
        )[0],
    }
    # 400/431/414: refused by the HTTP parser; 0: the server closed the connection.
    assert {k: v for k, v in answers.items() if v not in (0, 400, 414, 431)} == {}
    assert healthy(fuzz_gateway)
