"""Random VoiceSession specs against the operator's models and the CRD (issue 10, bad input).

Properties:
- the model never raises anything but a ValidationError (the operator turns that into
  Failed/InvalidSpec), whatever JSON arrives;
- whatever the CRD lets through, the model accepts with the same values: no spec the API
  server admits can make the operator refuse it;
- a refused spec is planned as Failed with reason InvalidSpec and a message naming the field.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from secprops import (
    BOUNDED,
    KNOWN_CEL_RULES,
    cel_rules,
    crd_refusal,
    crd_version_schema,
    json_values,
    specs,
)

from voicefleet_operator.api import VoiceSessionSpec, parse_spec


def _model_answer(raw: Any) -> VoiceSessionSpec | ValidationError:
    try:
        return parse_spec(raw)
    except ValidationError as exc:
        return exc


def test_the_crd_rules_translated_for_these_tests_are_all_the_crd_has() -> None:
    assert cel_rules(crd_version_schema()) == KNOWN_CEL_RULES


@BOUNDED
@given(st.one_of(specs, json_values))
def test_any_json_spec_is_a_model_or_a_validation_error(raw: Any) -> None:
    answer = _model_answer(raw)  # anything but ValidationError propagates and fails
    assert isinstance(answer, VoiceSessionSpec | ValidationError)


@BOUNDED
@given(specs)
def test_every_spec_the_api_server_admits_the_operator_accepts_unchanged(raw: Any) -> None:
    refused = crd_refusal(raw)
    answer = _model_answer(raw)
    if refused is None:
        assert isinstance(answer, VoiceSessionSpec), (raw, answer)
        wire = answer.to_wire()
        for key in ("agentId", "userIdentity", "connection", "maxRestarts"):
            if key in raw:
                assert wire[key] == raw[key]


def test_the_oracle_refuses_what_the_api_server_refuses() -> None:
    """The translated CRD is not vacuous: known-bad specs are refused by it."""
    good = {"agentId": "agent-66", "userIdentity": "alice"}
    assert crd_refusal(good) is None
    for bad in [
        {"agentId": "agent-66\n", "userIdentity": "alice"},
        {**good, "connection": 0},
        {**good, "connection": "2"},
        {**good, "joinTimeoutSeconds": 3600, "maxDurationSeconds": 30},
        {**good, "worker": {"env": [{"name": "LIVEKIT_API_SECRET", "value": "x"}]}},
        {**good, "worker": {"env": [{"name": "A"}, {"name": "A"}]}},
        {**good, "worker": {"resources": {"limits": {"cpu": "1 Gi"}}}},
        {"userIdentity": "alice"},
    ]:
        assert crd_refusal(bad) is not None, bad


@BOUNDED
@given(specs)
def test_a_spec_the_model_refuses_is_planned_failed_with_a_clear_reason(raw: Any) -> None:
    from datetime import UTC, datetime

    from voicefleet_operator.api import Phase, VoiceSessionStatus
    from voicefleet_operator.plan import Observation, plan, plan_invalid_spec

    obs = Observation(now=datetime(2026, 1, 1, tzinfo=UTC), generation=1)
    answer = _model_answer(raw)
    if isinstance(answer, VoiceSessionSpec):
        result = plan("alice-agent66", answer, VoiceSessionStatus(), obs)
        assert result.status.phase is not Phase.FAILED
        return
    message = "; ".join(
        f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in answer.errors()[:5]
    )
    result = plan_invalid_spec(VoiceSessionStatus(), obs, message)
    assert result.status.phase is Phase.FAILED
    ready = result.status.condition("Ready")
    assert ready is not None and ready.reason == "InvalidSpec" and "spec." in ready.message
    assert result.requeue_after is None  # nothing to retry: no hot loop on a spec that stays bad
