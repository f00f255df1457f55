"""The real node `node-0`: kubelet + containerd + runc running pods in containers (issue 8).

Runs only when the stack has the real node: `VOICEFLEET_REAL_NODE=1` (the session's private
stack then starts it) or `VOICEFLEET_STACK_ENV` pointing at a stack started with
`voicefleet up --real-node`. Otherwise every test here is skipped with that reason.
Each pod test prints how long the pod took from creation to Running (and Ready).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
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


@pytest.mark.parametrize(
    ("image_name", "usage"),
    [("operator", "voicefleet_operator"), ("gateway", "voicefleet_web")],
)
def test_operator_and_gateway_images_run_in_hardened_containers(  # type: ignore[no-untyped-def]
    kubectl, namespace: str, image_name: str, usage: str
) -> None:
    """The images of operator/Dockerfile and web/Dockerfile, built without Docker, start their
    entrypoints as user 10001 on a read-only root (`--help`: they need an API server that
    pods here cannot reach, so they stop there; their imports are checked at build time)."""
    image = node.image_ref(node.images_dir(voicefleet_home()), image_name)
    if image is None:
        pytest.skip(f"no {image_name} image: run make node-images")
    name = f"{image_name}-{secrets.token_hex(3)}"
    pod = _pod(
        name,
        image,
        {
            "args": ["--help"],
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            "resources": {
                "requests": {"cpu": "50m", "memory": "64Mi"},
                "limits": {"cpu": "1", "memory": "256Mi"},
            },
        },
    )
    pod["spec"]["securityContext"] = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001}
    pod["spec"]["volumes"] = [{"name": "tmp", "emptyDir": {}}]
    t0 = time.monotonic()
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(pod))
    _wait(
        lambda: _status(kubectl, name).get("phase") in ("Succeeded", "Failed"),
        90,
        f"pod {name} to finish: {_status(kubectl, name)}",
    )
    took = time.monotonic() - t0
    status = _status(kubectl, name)
    logs = kubectl("-n", NAMESPACE, "logs", name, check=False).stdout
    assert status["phase"] == "Succeeded", (status, logs[-2000:])
    assert "usage" in logs.lower() and usage in logs, logs[-2000:]
    print(f"\n{image_name} image: pod created → `--help` done in {took:.1f} s ({image})")
    _delete_pod(kubectl, name)


def test_the_operator_image_runs_the_operator_in_a_pod_with_its_service_account(  # type: ignore[no-untyped-def]
    kubectl, stack_env: dict[str, str]
) -> None:
    """operator/Dockerfile's image as the real operator: a pod on node-0 that authenticates
    with its ServiceAccount's projected token (in-cluster config, no kubeconfig) and serves
    a VoiceSession end to end: room in LiveKit, worker pod (on a kwok node), dispatch;
    then deletes both when the session goes.

    The local API server and LiveKit listen on 127.0.0.1 only, which the pod network
    cannot reach; so this pod runs with `hostNetwork` and is told the API server's loopback
    address (KUBERNETES_SERVICE_HOST/PORT, which a cluster's kubelet sets to the
    `kubernetes` Service) and binds its own servers to 127.0.0.1. Everything else is the
    chart's operator container: user 10001, read-only root, no capabilities, /tmp emptyDir.
    """
    import urllib.parse
    import urllib.request

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "web"))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))
    from opit import KWOK_TOLERATIONS, Kube, _free_port
    from test_operator_lifecycle import room_exists, session_obj
    from webharness import create_isolated_namespace

    image = node.image_ref(node.images_dir(voicefleet_home()), "operator")
    if image is None:
        pytest.skip("no operator image: run make node-images")
    namespace = create_isolated_namespace(kubectl, prefix="vf-img")
    kube = Kube(dict(stack_env, NAMESPACE=namespace))
    api = urllib.parse.urlsplit(
        kubectl("config", "view", "-o", "jsonpath={.clusters[0].cluster.server}").stdout.strip()
    )
    webhook, health, metrics = _free_port(), _free_port(), _free_port()
    env = {
        "KUBERNETES_SERVICE_HOST": api.hostname or "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(api.port),
        "VOICEFLEET_BIND_HOST": "127.0.0.1",
        "NAMESPACE": namespace,
        "LIVEKIT_URL": stack_env["LIVEKIT_URL"],
        "LIVEKIT_API_KEY": stack_env["LIVEKIT_API_KEY"],
        "LIVEKIT_API_SECRET": stack_env["LIVEKIT_API_SECRET"],
        "LETTA_BASE_URL": stack_env["LETTA_BASE_URL"],
        "VOICEFLEET_WEBHOOK_PORT": str(webhook),
        "VOICEFLEET_HEALTH_PORT": str(health),
        "VOICEFLEET_METRICS_PORT": str(metrics),
        "VOICEFLEET_WORKER_TOLERATIONS": KWOK_TOLERATIONS,
        "VOICEFLEET_WORKER_NODE_SELECTOR": json.dumps({"type": "kwok"}),
        "VOICEFLEET_ROOM_CHECK_SECONDS": "2",
    }
    operator_ns = stack_env.get("OPERATOR_NAMESPACE", "voicefleet-system")
    name = f"operator-image-{secrets.token_hex(3)}"
    pod = _pod(
        name,
        image,
        {
            "env": [{"name": k, "value": v} for k, v in env.items()],
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            "resources": {
                "requests": {"cpu": "100m", "memory": "128Mi"},
                "limits": {"cpu": "1", "memory": "512Mi"},
            },
        },
    )
    pod["metadata"]["namespace"] = operator_ns
    pod["spec"].update(
        serviceAccountName="voicefleet-operator",
        automountServiceAccountToken=True,
        hostNetwork=True,
        securityContext={"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001},
        volumes=[{"name": "tmp", "emptyDir": {}}],
    )
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(pod))
    session = f"img-{secrets.token_hex(2)}"
    try:
        t0 = time.monotonic()

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=1):
                    return True
            except OSError:
                return False

        _wait(healthy, 120, f"the operator in pod {name} to serve /healthz")
        up = time.monotonic() - t0
        kube.apply(session_obj(kube, session, "agent-image", joinTimeoutSeconds=600))

        def dispatched() -> dict[str, Any] | None:
            obj = kube.get("voicesession", session) or {}
            conn = (obj.get("status") or {}).get("connection") or {}
            return conn if conn.get("dispatchedAt") else None

        _wait(lambda: dispatched() is not None, 90, f"{session} dispatched by the pod's operator")
        conn = dispatched() or {}
        assert asyncio.run(room_exists(stack_env, conn["room"]))
        assert kube.get("pod", conn["pod"]) is not None
        kube.delete_session(session, wait=True)
        _wait(lambda: kube.get("pod", conn["pod"]) is None, 60, "the worker pod to go")
        assert not asyncio.run(room_exists(stack_env, conn["room"]))
        logs = kubectl("-n", operator_ns, "logs", name, check=False).stdout
        assert "voicefleet operator started" in logs, logs[-2000:]
        print(f"\noperator image: pod created → operator serving in {up:.1f} s; session served")
    finally:
        kubectl("-n", namespace, "delete", "voicesessions", "--all", "--wait=true", check=False)
        kubectl("-n", operator_ns, "delete", "pod", name, "--wait=true", check=False)
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)
