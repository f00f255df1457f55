"""kopf's settings for this operator: the watches ask the API server for what they need."""

from __future__ import annotations

from typing import Any

import kopf

from voicefleet_operator import naming as n
from voicefleet_operator.api import GROUP, PLURAL, VERSION, VoiceSessionSpec
from voicefleet_operator.config import Settings
from voicefleet_operator.handlers import configure_kopf
from voicefleet_operator.manifests import (
    SessionRef,
    build_warm_pod,
    build_worker_pod,
    warm_pod_claim,
)

PODS = kopf.Resource("", "v1", "pods", namespaced=True)
SESSIONS = kopf.Resource(GROUP, VERSION, PLURAL, namespaced=True)


def _matches(selector: str, labels: dict[str, Any]) -> bool:
    """An equality-based label selector ("k=v,k2=v2"), as the API server reads it."""
    pairs = [term.split("=", 1) for term in selector.split(",")]
    return all(labels.get(key) == value for key, value in pairs)


def _configured(settings: Settings) -> kopf.OperatorSettings:
    kopf_settings = kopf.OperatorSettings()
    configure_kopf(kopf_settings, settings)
    return kopf_settings


def test_the_pod_watch_carries_a_server_side_selector_and_the_session_watch_none(
    settings: Settings,
) -> None:
    selectors = _configured(settings).watching.label_selectors
    assert selectors.collect(PODS) == [n.WORKERS_SELECTOR]
    assert selectors.collect(SESSIONS) == []


def test_every_pod_this_operator_makes_or_claims_is_on_its_pod_watch(
    settings: Settings, session: SessionRef, spec: VoiceSessionSpec
) -> None:
    [selector] = _configured(settings).watching.label_selectors.collect(PODS)
    worker = build_worker_pod(session, spec, 1, "voicefleet-worker-aaaaa", "vs-room", settings)
    warm = build_warm_pod(session.namespace, "voicefleet-worker-bbbbb", settings)
    claim = warm_pod_claim(session, spec, 2, "vs-room-2", "41")["metadata"]["labels"]
    claimed = {k: v for k, v in {**warm["metadata"]["labels"], **claim}.items() if v is not None}
    for labels in (worker["metadata"]["labels"], warm["metadata"]["labels"], claimed):
        assert _matches(selector, labels), labels
    # and another workload's pod in the namespace is not sent to the operator at all
    assert not _matches(selector, {"app": "postgres"})
