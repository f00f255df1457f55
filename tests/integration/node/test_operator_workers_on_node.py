"""The stack's operator runs worker pods in containers on node-0, and they serve (issue 8).

Runs when the stack has the real node and the worker image (`voicefleet up --real-node`
after `tools/images/build-images.sh worker`): the operator then puts worker pods on
node-0 and gives them the bridge addresses of LiveKit and Letta. Each cycle applies a
VoiceSession connection as a user would, talks to the worker through a real LiveKit
participant and leaves; a watch on the pods times each one. The first worker is checked
from this machine's side of the container: its user, capabilities, seccomp, read-only
root, missing service-account token, own network namespace and memory limit.
Prints a table; `VOICEFLEET_NODE_CYCLES` sets how many connections (default 4).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parents[1] / "worker"))
from nodekit import NEEDS_NODE
from reconnect_harness import (
    Session,
    talk,
    worker_pid,
)

from voicefleet_stack import node

CYCLES = int(os.environ.get("VOICEFLEET_NODE_CYCLES", "4"))


pytestmark = [pytest.mark.integration, NEEDS_NODE]


class PodTimes:
    """Watches the session's pods; the monotonic instant each was seen created/Running/Ready."""

    def __init__(self, stack_env: dict[str, str], session: str) -> None:
        from kubernetes import client, config

        self.v1 = client.CoreV1Api(config.new_client_from_config(stack_env["KUBECONFIG"]))
        self.ns = stack_env["NAMESPACE"]
        self.selector = f"voicefleet.dev/session={session}"
        self.times: dict[str, dict[str, float]] = {}
        self.nodes: dict[str, str] = {}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from kubernetes import watch

        while not self.stopped.is_set():
            w = watch.Watch()
            for event in w.stream(
                self.v1.list_namespaced_pod,
                self.ns,
                label_selector=self.selector,
                timeout_seconds=5,
            ):
                now = time.monotonic()
                pod = event["object"]
                seen = self.times.setdefault(pod.metadata.name, {"created": now})
                if pod.spec.node_name:
                    self.nodes[pod.metadata.name] = pod.spec.node_name
                statuses = pod.status.container_statuses or []
                if any(s.state and s.state.running for s in statuses):
                    seen.setdefault("running", now)
                conditions = pod.status.conditions or []
                if any(c.type == "Ready" and c.status == "True" for c in conditions):
                    seen.setdefault("ready", now)
                if self.stopped.is_set():
                    w.stop()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)


def _proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def _assert_hardened_container(kubectl: Any, namespace: str, pod: str) -> None:
    spec = json.loads(kubectl("-n", namespace, "get", "pod", pod, "-o", "json").stdout)["spec"]
    assert spec["nodeName"] == node.NODE_NAME
    assert spec["automountServiceAccountToken"] is False
    pid = worker_pid(pod)
    status = _proc_status(pid)
    assert status["Uid"].split()[:2] == ["10001", "10001"]
    assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"  # filter mode: containerd's RuntimeDefault profile
    assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    mounts = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    root = next(m.split() for m in mounts if m.split()[4] == "/")
    assert "ro" in root[5].split(","), root
    assert not any("serviceaccount" in m for m in mounts)
    assert any(m.split()[4] == "/tmp" for m in mounts)
    memory = next(
        line.split(":", 2)[2]
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        if line.split(":")[1] == "memory"
    )
    limit = Path("/sys/fs/cgroup/memory", memory.lstrip("/"), "memory.limit_in_bytes")
    assert int(limit.read_text()) == 2 * 1024**3  # the operator's default worker limit


def test_worker_pods_run_in_containers_on_node_0_and_answer(
    kubectl: Any, stack_env: dict[str, str], session: Session
) -> None:
    pods = PodTimes(stack_env, session.name)
    rows = []
    try:
        for cycle in range(1, CYCLES + 1):
            t0 = time.monotonic()
            session.apply(cycle)
            status = session.wait("Ready", cycle)
            ready = time.monotonic() - t0
            pod = status["connection"]["pod"]
            if cycle == 1:
                _assert_hardened_container(kubectl, session.ns, pod)
            visit = asyncio.run(
                talk(
                    stack_env,
                    status["connection"]["room"],
                    session.user,
                    f"container {cycle}",
                    f"You said: container {cycle}",
                )
            )
            assert visit.agents == 1
            session.wait("Idle", cycle)
            rows.append((cycle, pod, ready, visit))
    finally:
        pods.stop()
    print(
        f"\n{'cycle':>5} {'pod created→Running':>20} {'→Ready (probe)':>15} "
        f"{'apply→session Ready':>20} {'join→greeting':>14} {'message→answer':>15}"
    )
    for cycle, pod, ready, visit in rows:
        t = pods.times[pod]
        assert pods.nodes[pod] == node.NODE_NAME
        print(
            f"{cycle:>5} {t['running'] - t['created']:>19.2f}s {t['ready'] - t['created']:>14.2f}s "
            f"{ready:>19.2f}s {visit.greeted - visit.joined:>13.2f}s {visit.answer_seconds:>14.2f}s"
        )
