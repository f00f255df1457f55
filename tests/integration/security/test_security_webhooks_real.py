"""Bad webhooks against real operator processes (issue 10): unsigned, forged, expired,
tampered, oversized (with and without Content-Length), malformed and replayed bodies are
refused (401/413) or acknowledged without effect: the session's resourceVersion does not move.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from secharness import (
    SecOperator,
    dispatched,
    fresh_name,
    get_session,
    metric_value,
    metrics_text,
    raw_request,
    session_manifest,
    signed_webhook,
    webhook_body,
)

pytestmark = pytest.mark.integration
MARK = "voicefleet.dev/livekit-event"
MAX_BODY = 1 << 20


def post(url: str, body: bytes, auth: str | None, chunked: bool = False) -> int:
    headers = {"Content-Type": "application/webhook+json"}
    if auth is not None:
        headers["Authorization"] = auth
    payload: Any = [body[i : i + 32_768] for i in range(0, len(body), 32_768)] if chunked else body
    return raw_request(url, body=payload, headers=headers)[0]


@pytest.fixture
def live_session(sec_operator: SecOperator, kubectl: Any) -> tuple[str, str]:
    """(name, room) of a session whose connection has a room and a (kwok) worker pod."""
    name = fresh_name("sec-wh")
    spec = {"agentId": f"agent-{name}", "userIdentity": "alice", "joinTimeoutSeconds": 600}
    kubectl(
        "apply", "-f", "-", stdin=json.dumps(session_manifest(sec_operator.namespace, name, spec))
    )
    obj = dispatched(kubectl, sec_operator.namespace, name)
    return name, obj["status"]["connection"]["room"]


def bad_webhooks(env: dict[str, str], room: str) -> list[tuple[str, bytes, str | None, bool, int]]:
    """(what, body, Authorization, chunked, expected status)."""
    body = webhook_body("participant_left", room, "EV_bad")
    big = b'{"event": "participant_left", "pad": "' + b"a" * MAX_BODY + b'"}'
    garbage = b"\xff\x00{not json"
    return [
        ("unsigned", body, None, False, 401),
        ("empty token", body, "", False, 401),
        ("forged: another secret", body, signed_webhook(env, body, secret="f" * 48), False, 401),
        (
            "expired",
            body,
            signed_webhook(env, body, ttl=datetime.timedelta(seconds=-300)),
            False,
            401,
        ),
        (
            "tampered body",
            body.replace(b"participant_left", b"room_finished"),
            signed_webhook(env, body),
            False,
            401,
        ),
        ("oversized", big, signed_webhook(env, big), False, 413),
        ("oversized, chunked", big, signed_webhook(env, big), True, 413),
        ("signed garbage", garbage, signed_webhook(env, garbage), False, 401),
        ("signed JSON array", b"[1]", signed_webhook(env, b"[1]"), False, 401),
    ]


def test_bad_webhooks_are_refused_and_change_nothing(
    sec_operator: SecOperator,
    stack_env: dict[str, str],
    kubectl: Any,
    live_session: tuple[str, str],
) -> None:
    name, room = live_session
    before = get_session(kubectl, sec_operator.namespace, name)["metadata"]
    refused_before = metric_value(
        metrics_text(sec_operator.metrics_url), "voicefleet_webhooks_total"
    )
    answers = {
        what: post(sec_operator.webhook_url, body, auth, chunked)
        for what, body, auth, chunked, _ in bad_webhooks(stack_env, room)
    }
    expected = {what: status for what, _, _, _, status in bad_webhooks(stack_env, room)}
    assert answers == expected
    after = get_session(kubectl, sec_operator.namespace, name)["metadata"]
    assert after["resourceVersion"] == before["resourceVersion"]
    assert MARK not in (after.get("annotations") or {})
    counted = metric_value(metrics_text(sec_operator.metrics_url), "voicefleet_webhooks_total")
    assert counted - refused_before == len(expected)  # every refusal is visible in metrics
    assert sec_operator.alive()


def test_a_replayed_webhook_changes_nothing(
    sec_operator: SecOperator,
    stack_env: dict[str, str],
    kubectl: Any,
    live_session: tuple[str, str],
) -> None:
    name, room = live_session
    first = webhook_body("participant_joined", room, "EV_first")
    second = webhook_body("participant_left", room, "EV_second")
    url = sec_operator.webhook_url
    assert post(url, first, signed_webhook(stack_env, first)) == 200
    assert post(url, second, signed_webhook(stack_env, second)) == 200
    meta = get_session(kubectl, sec_operator.namespace, name)["metadata"]
    assert meta["annotations"][MARK] == "participant_left/1/EV_second"
    # The same signed requests again, in the order an attacker who recorded them would send.
    for body in (first, second, first):
        assert post(url, body, signed_webhook(stack_env, body)) == 200
    again = get_session(kubectl, sec_operator.namespace, name)["metadata"]
    assert again["annotations"][MARK] == "participant_left/1/EV_second"
    assert again["resourceVersion"] == meta["resourceVersion"]
    text = metrics_text(sec_operator.metrics_url)
    assert 'result="replayed"' in text


def test_the_stacks_own_receiver_refuses_bad_webhooks(stack_env: dict[str, str]) -> None:
    room = "vs-nobody-here-1-bcdfg"
    answers, expected = {}, {}
    for what, body, auth, chunked, status in bad_webhooks(stack_env, room):
        answers[what] = post(stack_env["WEBHOOK_URL"], body, auth, chunked)
        expected[what] = status
    assert answers == expected
