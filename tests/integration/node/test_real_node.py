"""The real node `node-0`: kubelet + containerd + runc running pods in containers (issue 8).

Runs only when the stack has the real node: `VOICEFLEET_REAL_NODE=1` (the session's private
stack then starts it) or `VOICEFLEET_STACK_ENV` pointing at a stack started with
`voicefleet up --real-node`. Otherwise every test here is skipped with that reason.
Each pod test prints how long the pod took from creation to Running (and Ready).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from nodekit import NEEDS_NODE

from voicefleet_stack import node
from voicefleet_stack.stack import voicefleet_home

NAMESPACE = f"node-test-{secrets.token_hex(3)}"  # a deleted one may still be terminating


pytestmark = [pytest.mark.integration, NEEDS_NODE]


def _wait(check: Callable[[], bool], timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if check():
            return time.monotonic() - t0
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def namespace(kubectl) -> Iterator[str]:  # type: ignore[no-untyped-def]
    kubectl("create", "namespace", NAMESPACE, check=False)
    yield NAMESPACE
    kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def _pod(name: str, image: str, container: dict[str, Any]) -> dict[str, Any]:
    """A pod for node-0 shaped like a worker pod: non-root, read-only root, no token."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "nodeSelector": {node.NODE_KIND_LABEL: node.NODE_KIND},
            "tolerations": [{**node.NODE_TAINT, "operator": "Equal"}],
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534},
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "resources": {
                        "requests": {"cpu": "10m", "memory": "16Mi"},
                        "limits": {"cpu": "200m", "memory": "64Mi"},
                    },
                    **container,
                }
            ],
        },
    }


def _status(kubectl, name: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    out = kubectl("-n", NAMESPACE, "get", "pod", name, "-o", "json", check=False)
    return json.loads(out.stdout)["status"] if out.returncode == 0 else {}


def _ready(status: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))


def _run_pod(kubectl, pod: dict[str, Any], want_ready: bool) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Create the pod and time it: created → Running (→ Ready)."""
    name = pod["metadata"]["name"]
    t0 = time.monotonic()
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(pod))
    timings = {
        "running": _wait(
            lambda: _status(kubectl, name).get("phase") == "Running",
            90,
            f"pod {name} to run on {node.NODE_NAME}: {_status(kubectl, name)}",
        )
    }
    if want_ready:
        _wait(lambda: _ready(_status(kubectl, name)), 60, f"pod {name} to pass its probe")
        timings["ready"] = time.monotonic() - t0
    return timings


def _delete_pod(kubectl, name: str) -> float:  # type: ignore[no-untyped-def]
    kubectl("-n", NAMESPACE, "delete", "pod", name, "--wait=false")
    return _wait(
        lambda: kubectl("-n", NAMESPACE, "get", "pod", name, check=False).returncode != 0,
        60,
        f"pod {name} to be gone",
    )


def test_node_registers_as_a_real_kubelet_with_containerd(kubectl) -> None:  # type: ignore[no-untyped-def]
    n = json.loads(kubectl("get", "node", node.NODE_NAME, "-o", "json").stdout)
    info = n["status"]["nodeInfo"]
    assert info["kubeletVersion"] == "v1.37.2"
    assert info["containerRuntimeVersion"].startswith("containerd://2.")
    assert n["metadata"]["labels"][node.NODE_KIND_LABEL] == node.NODE_KIND
    assert {"key": node.NODE_KIND_LABEL, "value": node.NODE_KIND, "effect": "NoSchedule"} in n[
        "spec"
    ]["taints"]
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])


def test_pause_image_pod_runs_in_a_container(kubectl, namespace: str) -> None:  # type: ignore[no-untyped-def]
    name = f"pause-{secrets.token_hex(3)}"
    pod = _pod(name, node.PAUSE_IMAGE, {})
    timings = _run_pod(kubectl, pod, want_ready=False)
    status = _status(kubectl, name)
    assert status["containerStatuses"][0]["containerID"].startswith("containerd://")
    assert status["podIP"].startswith("10.244.")
    deleted = _delete_pod(kubectl, name)
    print(f"\npause pod: created → Running {timings['running']:.2f} s, deleted in {deleted:.2f} s")


def _testbox_image() -> str:
    ref = node.image_ref(node.images_dir(voicefleet_home()), "testbox")
    if ref is None:
        pytest.fail("no testbox image: run tools/images/build-images.sh")
    return ref


def test_testbox_pod_is_ready_by_probe_logs_execs_and_is_deleted(kubectl, namespace: str) -> None:  # type: ignore[no-untyped-def]
    name = f"box-{secrets.token_hex(3)}"
    pod = _pod(
        name,
        _testbox_image(),
        {
            "command": ["/bin/sh", "-c", "echo started as $(id -u); exec httpd -f -p 8080 -h /www"],
            "ports": [{"containerPort": 8080}],
            "readinessProbe": {
                "httpGet": {"path": "/index.html", "port": 8080},
                "periodSeconds": 1,
            },
        },
    )
    timings = _run_pod(kubectl, pod, want_ready=True)
    logs = kubectl("-n", NAMESPACE, "logs", name).stdout
    assert "started as 65534" in logs
    out = kubectl("-n", NAMESPACE, "exec", name, "--", "cat", "/www/index.html").stdout
    assert out.strip() == "testbox"
    # The pod reaches its subnet only: no default route (so nothing leaves this machine), no DNS.
    routes = kubectl("-n", NAMESPACE, "exec", name, "--", "cat", "/proc/net/route").stdout
    destinations = [line.split()[1] for line in routes.splitlines()[1:] if line.strip()]
    assert destinations and "00000000" not in destinations
    resolv = kubectl("-n", NAMESPACE, "exec", name, "--", "cat", "/etc/resolv.conf", check=False)
    servers = [ln.split()[1] for ln in resolv.stdout.splitlines() if ln.startswith("nameserver")]
    assert all(s.startswith("127.") for s in servers), servers  # the pod's own loopback
    # The root file system is read-only, as for worker pods.
    touch = kubectl("-n", NAMESPACE, "exec", name, "--", "touch", "/x", check=False)
    assert touch.returncode != 0
    deleted = _delete_pod(kubectl, name)
    print(
        f"\ntestbox pod: created → Running {timings['running']:.2f} s, "
        f"→ Ready {timings['ready']:.2f} s, deleted in {deleted:.2f} s"
    )


def test_worker_image_starts_the_worker_in_a_hardened_container(kubectl, namespace: str) -> None:  # type: ignore[no-untyped-def]
    """The image of worker/Dockerfile, built without Docker, runs `python -m voicefleet_worker`.

    LiveKit and Letta listen on 127.0.0.1 of this machine, which a pod cannot reach yet
    (docs/real-node.md, "Next"); here they point at the bridge's discard port, so the
    worker gets as far as serving /healthz with its speech models loaded: enough to prove
    the image, its user and its entrypoint.
    """
    image = node.image_ref(node.images_dir(voicefleet_home()), "worker")
    if image is None:
        pytest.skip("no worker image: run tools/images/build-images.sh worker")
    name = f"worker-{secrets.token_hex(3)}"
    # The node's own bridge address, on the discard port nothing listens on: refused at once.
    bridge = kubectl(
        "get",
        "node",
        node.NODE_NAME,
        "-o",
        'jsonpath={.status.addresses[?(@.type=="InternalIP")].address}',
    ).stdout.strip()
    pod = _pod(
        name,
        image,
        {
            "env": [
                {"name": "LIVEKIT_URL", "value": f"ws://{bridge}:9"},
                {"name": "LIVEKIT_API_KEY", "value": "test"},
                {"name": "LIVEKIT_API_SECRET", "value": "x" * 40},
                {"name": "LETTA_BASE_URL", "value": f"http://{bridge}:9"},
                {"name": "VOICEFLEET_AGENT_NAME", "value": name},
            ],
            "ports": [{"containerPort": 8081}],
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            "resources": {
                "requests": {"cpu": "100m", "memory": "256Mi"},
                "limits": {"cpu": "1", "memory": "1Gi"},
            },
        },
    )
    pod["spec"]["securityContext"] = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001}
    pod["spec"]["volumes"] = [{"name": "tmp", "emptyDir": {}}]
    timings = _run_pod(kubectl, pod, want_ready=False)
    _wait(
        lambda: "speech plugins" in kubectl("-n", NAMESPACE, "logs", name, check=False).stdout,
        60,
        "the worker to load its speech models",
    )
    health = kubectl(
        "-n",
        NAMESPACE,
        "exec",
        name,
        "--",
        "python",
        "-c",
        "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8081/healthz').read().decode())",
    ).stdout
    assert health.strip() == "ok"
    whoami = kubectl("-n", NAMESPACE, "exec", name, "--", "id", "-u").stdout
    assert whoami.strip() == "10001"
    deleted = _delete_pod(kubectl, name)
    print(f"\nworker pod: created → Running {timings['running']:.2f} s, deleted in {deleted:.2f} s")
