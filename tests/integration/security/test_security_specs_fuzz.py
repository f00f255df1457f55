"""Random VoiceSession specs against the real API server and a real operator (issue 10).

Each random spec is either refused by the API server (400/422, as the CRD translated in
tests/unit/security/secprops.py predicts) or admitted; every admitted session gets a phase
and a Ready condition with a reason from the operator, which neither crashes nor hot-loops
(reconcile passes and status writes stay bounded in a quiet window), and deleting them all
leaves no session, pod or finalizer behind.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from secharness import (
    SecOperator,
    fresh_name,
    metric_value,
    metrics_text,
    session_manifest,
    wait_for,
)
from secprops import crd_refusal, specs, valid_specs

pytestmark = pytest.mark.integration
EXAMPLES = int(os.environ.get("VOICEFLEET_SPEC_FUZZ_EXAMPLES", "20"))
GROUP, VERSION, PLURAL = "voicefleet.dev", "v1alpha1", "voicesessions"
QUIET_SECONDS = 6.0
SETTLE_SECONDS = 3.0


@pytest.fixture(scope="module")
def admin_api(stack_env: dict[str, str]) -> Any:
    from kubernetes import client, config

    return client.CustomObjectsApi(config.new_client_from_config(stack_env["KUBECONFIG"]))


def test_random_specs_are_refused_or_handled_and_never_crash_or_hot_loop(
    sec_operator: SecOperator, admin_api: Any, kubectl: Any
) -> None:
    from kubernetes.client.exceptions import ApiException

    ns = sec_operator.namespace
    admitted: list[str] = []
    disagreements: list[str] = []
    refusals: list[str] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(spec=st.one_of(valid_specs, specs))
    def create(spec: dict[str, Any]) -> None:
        name = fresh_name("sec-fz")
        predicted = crd_refusal(spec)
        try:
            admin_api.create_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, session_manifest(ns, name, spec)
            )
        except ApiException as exc:
            assert exc.status in (400, 422), (exc.status, exc.reason, spec)
            refusals.append(str(exc.status))
            if predicted is None:
                disagreements.append(f"server refused, oracle admits: {spec!r}: {exc.body}")
            return
        admitted.append(name)
        if predicted is not None:
            disagreements.append(f"server admitted, oracle refuses ({predicted}): {spec!r}")

    try:
        create()
        assert refusals and admitted, (len(refusals), len(admitted))  # both paths were taken

        def all_handled() -> bool:
            return all(_handled(kubectl, ns, name) for name in admitted)

        wait_for(f"{len(admitted)} admitted sessions to get a phase", all_handled, within=90)
        assert sec_operator.alive()

        def settled() -> bool:
            """No admitted session's resourceVersion moves for SETTLE_SECONDS."""
            versions = {name: _rv(kubectl, ns, name) for name in admitted}
            time.sleep(SETTLE_SECONDS)
            return all(_rv(kubectl, ns, name) == versions[name] for name in admitted)

        # A hot loop (status rewritten again and again) never settles.
        wait_for("the admitted sessions to stop changing", settled, within=90, every=0)
        before = metric_value(
            metrics_text(sec_operator.metrics_url), "voicefleet_reconcile_seconds_count"
        )
        time.sleep(QUIET_SECONDS)
        after = metric_value(
            metrics_text(sec_operator.metrics_url), "voicefleet_reconcile_seconds_count"
        )
        rate = (after - before) / QUIET_SECONDS
        # Each session of the namespace (other tests' too) is looked at about every
        # VOICEFLEET_ROOM_CHECK_SECONDS (2 s here): twice that rate is the bound.
        sessions = len(kubectl("get", "voicesessions", "-n", ns, "-o", "name").stdout.split())
        assert rate <= sessions * 1.0 + 2, (rate, sessions)
        assert sec_operator.alive()
        assert disagreements == []
    finally:
        if admitted:
            kubectl(
                "delete",
                "voicesessions",
                *admitted,
                "-n",
                ns,
                "--wait=true",
                "--timeout=90s",
                check=False,
            )
    left = kubectl("get", "voicesessions,pods", "-n", ns, "-o", "name").stdout.split()
    assert not [item for item in left if "sec-fz-" in item]


def _session(kubectl: Any, ns: str, name: str) -> dict[str, Any]:
    import json

    return dict(json.loads(kubectl("get", "voicesession", name, "-n", ns, "-o", "json").stdout))


def _rv(kubectl: Any, ns: str, name: str) -> str:
    return str(_session(kubectl, ns, name)["metadata"]["resourceVersion"])


def _handled(kubectl: Any, ns: str, name: str) -> bool:
    status = _session(kubectl, ns, name).get("status") or {}
    ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)
    return status.get("phase") in ("Connecting", "Ready", "Idle", "Failed") and bool(
        ready and ready.get("reason")
    )
