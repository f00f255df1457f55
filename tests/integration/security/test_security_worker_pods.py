"""Worker pods as the real API server admitted them (issue 10, least privilege): non-root,
read-only root filesystem, no ServiceAccount token mounted, every capability dropped,
seccomp RuntimeDefault, requests and limits, credentials only by Secret reference; and the
gateway never lets a caller choose the worker's image or environment.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from secharness import SecOperator, dispatched, fresh_name, get_session, session_manifest

from voicefleet_web.naming import session_name

pytestmark = pytest.mark.integration
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"


@pytest.fixture(scope="module")
def worker_pod(sec_operator: SecOperator, kubectl: Any) -> dict[str, Any]:
    ns, name = sec_operator.namespace, fresh_name("sec-pod")
    spec = {
        "agentId": f"agent-{name}",
        "userIdentity": "alice",
        "joinTimeoutSeconds": 600,
        "worker": {"env": [{"name": "EXTRA", "value": "1"}]},
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(session_manifest(ns, name, spec)))
    pod_name = dispatched(kubectl, ns, name)["status"]["connection"]["pod"]
    pod = json.loads(kubectl("get", "pod", pod_name, "-n", ns, "-o", "json").stdout)
    kubectl("delete", "voicesession", name, "-n", ns, "--wait=false")
    return dict(pod)


def test_the_worker_pod_runs_with_least_privilege(worker_pod: dict[str, Any]) -> None:
    spec = worker_pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
    assert spec.get("enableServiceLinks") is False
    pod_ctx = spec["securityContext"]
    assert pod_ctx["runAsNonRoot"] is True and pod_ctx["runAsUser"] != 0
    assert pod_ctx["seccompProfile"]["type"] == "RuntimeDefault"
    for volume in spec.get("volumes", []):
        assert "hostPath" not in volume, volume
        sources = (volume.get("projected") or {}).get("sources", [])
        assert not any("serviceAccountToken" in s for s in sources), volume
    for container in spec["containers"] + spec.get("initContainers", []):
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["runAsNonRoot"] is True
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        assert not ctx.get("privileged")
        assert ctx["seccompProfile"]["type"] == "RuntimeDefault"
        resources = container["resources"]
        for kind in ("requests", "limits"):
            assert set(resources[kind]) >= {"cpu", "memory"}, (kind, resources)
        assert not any(
            m["mountPath"].startswith(TOKEN_PATH) for m in container.get("volumeMounts", [])
        )


def test_credentials_reach_the_worker_only_by_secret_reference(
    worker_pod: dict[str, Any], stack_env: dict[str, str]
) -> None:
    env = {e["name"]: e for e in worker_pod["spec"]["containers"][0]["env"]}
    for name in ("LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "LETTA_API_KEY"):
        assert "value" not in env[name] and "secretKeyRef" in env[name]["valueFrom"], name
    text = json.dumps(worker_pod)
    assert stack_env["LIVEKIT_API_SECRET"] not in text
    assert stack_env["GATEWAY_TOKEN"] not in text


def test_a_gateway_caller_cannot_choose_the_workers_image_or_env(
    sec_operator: SecOperator, sec_gateway: Any, kubectl: Any, agent_66: str
) -> None:
    ns = sec_operator.namespace
    gateway = sec_gateway(user="it-sec-pod", NAMESPACE=ns, GATEWAY_READY_TIMEOUT_SECONDS="1")
    body = {
        "agentId": agent_66,
        "worker": {"image": "evil:latest", "env": [{"name": "LD_PRELOAD", "value": "/x"}]},
        "userIdentity": "someone-else",
        "spec": {"maxRestarts": 10},
    }
    name = session_name("it-sec-pod", agent_66)
    with gateway.client(timeout=30) as http:
        try:
            assert http.post("/api/sessions", json=body).status_code in (200, 504)
            spec = get_session(kubectl, ns, name)["spec"]
        finally:
            http.delete(f"/api/sessions/{name}/connection")
    assert spec["userIdentity"] == "it-sec-pod"
    assert spec.get("worker") in (None, {}) and spec["maxRestarts"] == 2
