"""No secret or token in status, Events, logs or metrics (SPEC rule 5, issue 10).

The scan issues credentials first (a join token through a real connect, forged and valid
webhooks, refused bearer tokens), then reads everything an operator of the cluster or a
metrics scraper can read: every VoiceSession, every Event, the logs of the stack and of this
test session's operator and gateways, and the /metrics of both operators and the gateways.
Secrets on disk (env file, state, kubeconfigs, keys) must be readable by their owner only.
"""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from secharness import SecOperator, raw_request, signed_webhook, webhook_body
from webharness import Gateway, StandInWorker

pytestmark = pytest.mark.integration


def _variants(secret: str) -> list[str]:
    return [secret, base64.b64encode(secret.encode()).decode()]


def _service_account_token(kubeconfig: Path) -> str:
    import yaml

    return str(yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"])


@pytest.fixture(scope="module")
def issued(
    sec_operator: SecOperator,
    sec_gateway: Any,
    stack_env: dict[str, str],
    agent_66: str,
    sec_gateway_kubeconfig: Path,
) -> dict[str, str]:
    """Credentials of every kind, each used once against the stack."""
    ns = sec_operator.namespace
    gateway: Gateway = sec_gateway(
        user="it-sec-scan", NAMESPACE=ns, GATEWAY_READY_TIMEOUT_SECONDS="60"
    )
    worker = StandInWorker(stack_env, ns)
    worker.start()
    try:
        with gateway.client(timeout=90) as http:
            resp = http.post("/api/sessions", json={"agentId": agent_66})
            assert resp.status_code == 200, resp.text
            connected = resp.json()
            http.delete(f"/api/sessions/{connected['session']}/connection")
    finally:
        worker.stop()
    refused_token = "refused-bearer-" + "z" * 30
    with gateway.client(token=refused_token) as http:
        assert http.get("/api/agents").status_code == 401
    body = webhook_body("participant_left", connected["room"], "EV_scan")
    webhook_token = signed_webhook(stack_env, body)
    for url in (sec_operator.webhook_url, stack_env["WEBHOOK_URL"]):
        raw_request(url, body=body, headers={"Authorization": webhook_token})
    return {
        "LiveKit API secret": stack_env["LIVEKIT_API_SECRET"],
        "gateway dev token": stack_env["GATEWAY_TOKEN"],
        "join token": connected["token"],
        "refused bearer token": refused_token,
        "webhook token": webhook_token,
        "gateway ServiceAccount token": _service_account_token(sec_gateway_kubeconfig),
        "operator ServiceAccount token": _service_account_token(
            Path(sec_operator.proc.env["KUBECONFIG"])
        ),
    }


def _leaks(where: str, text: str, issued: dict[str, str]) -> list[str]:
    return [
        f"{what} in {where}"
        for what, secret in issued.items()
        for variant in _variants(secret)
        if variant in text
    ]


def test_no_secret_in_status_or_events(issued: dict[str, str], kubectl: Any) -> None:
    sessions = kubectl("get", "voicesessions", "-A", "-o", "json").stdout
    events = kubectl("get", "events", "-A", "-o", "json").stdout
    assert len(json.loads(events)["items"]) > 0  # the scan read something
    assert _leaks("VoiceSessions", sessions, issued) + _leaks("Events", events, issued) == []


def test_no_secret_in_logs(
    issued: dict[str, str],
    stack_dir: Path,
    sec_operator: SecOperator,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    logs = sorted((stack_dir / "logs").rglob("*.log"))
    logs += sorted(tmp_path_factory.getbasetemp().rglob("*.log"))
    logs.append(sec_operator.log)
    assert any("gateway" in str(p) for p in logs) and sec_operator.log.stat().st_size > 0
    leaks: list[str] = []
    for path in logs:
        leaks += _leaks(str(path), path.read_text(errors="replace"), issued)
    assert leaks == []


def test_no_secret_in_metrics(
    issued: dict[str, str], stack_dir: Path, stack_env: dict[str, str], sec_operator: SecOperator
) -> None:
    ports = json.loads((stack_dir / "state.json").read_text())["ports"]
    urls = [
        sec_operator.metrics_url,
        f"http://127.0.0.1:{ports['operator_metrics']}/metrics",
        f"{stack_env['GATEWAY_URL']}/metrics",
    ]
    leaks: list[str] = []
    for url in urls:
        status, body = raw_request(url, "GET")
        assert status == 200, url
        leaks += _leaks(url, body.decode(errors="replace"), issued)
    assert leaks == []


def test_secrets_on_disk_are_readable_by_their_owner_only(stack_dir: Path) -> None:
    files = [stack_dir / "env", stack_dir / "state.json", *stack_dir.glob("*kubeconfig")]
    files += [p for p in (stack_dir / "pki").rglob("*") if p.suffix in (".key", ".kubeconfig")]
    loose = [
        f"{p} {oct(p.stat().st_mode & 0o777)}"
        for p in files
        if p.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO)
    ]
    assert loose == []
