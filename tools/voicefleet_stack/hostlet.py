"""STOPGAP node agent: runs the pods bound to one node as host processes.

kwok nodes never run a process, and the real kubelet + containerd node (issue 8) is not
built yet. Until it is, this "hostlet" registers a Node (`host-0`, label
`voicefleet.dev/node-kind=host-process`), keeps its Lease fresh, and for every pod the
scheduler binds to it:

- runs the first container's `command` + `args` as a host process (the image is ignored;
  a leading `python`/`python3` is the stack's Python, which has the project installed),
  with the container's `env` (literal values, `secretKeyRef`, `configMapKeyRef` and the
  pod-name/namespace `fieldRef`s resolved from the API);
- gives each pod its own loopback port for every declared `containerPort` (host processes
  share one network namespace): the env var that names the port (any env value equal to a
  declared port) is rewritten, and probes are sent to the mapped port;
- reports pod status like a kubelet: Pending → Running, Ready from the readiness probe,
  container `terminated` with the exit code, phase Succeeded/Failed (restartPolicy Never)
  or a restart with `restartCount` (OnFailure/Always);
- on deletion sends SIGTERM, waits `terminationGracePeriodSeconds`, then SIGKILL, and
  removes the pod object (grace 0), exactly the order a kubelet keeps.

What it does not do: images, volumes, resource limits, securityContext, networking. Tests
that need those wait for the real node. Logs of each pod: `<stack>/logs/pods/<ns>_<pod>.log`.
Run: `python -m voicefleet_stack.hostlet --kubeconfig K --node host-0 --log-dir D`.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

log = logging.getLogger("hostlet")
NODE_KIND_LABEL = "voicefleet.dev/node-kind"
LEASE_SECONDS = 40


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PodRun:
    namespace: str
    name: str
    uid: str
    spec: Any
    ports: dict[int, int] = field(default_factory=dict)  # declared containerPort -> host port
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    ready: bool = False
    deleting: bool = False
    started_at: str = ""
    finished: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class Hostlet:
    def __init__(self, node: str, log_dir: Path, python: str) -> None:
        self.node = node
        self.log_dir = log_dir
        self.python = python
        self.core = client.CoreV1Api()
        self.coord = client.CoordinationV1Api()
        self.pods: dict[str, PodRun] = {}
        self.stop = threading.Event()

    # -- node ---------------------------------------------------------------------------
    def register_node(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node,
                "labels": {
                    NODE_KIND_LABEL: "host-process",
                    "kubernetes.io/hostname": self.node,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                },
            },
        }
        try:
            self.core.create_node(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
        self.update_node_status()

    def update_node_status(self) -> None:
        now = _now()
        conditions = [
            {
                "type": "Ready",
                "status": "True",
                "reason": "HostletReady",
                "message": "host-process stopgap node",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            },
            {
                "type": "MemoryPressure",
                "status": "False",
                "reason": "Ok",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            },
            {
                "type": "DiskPressure",
                "status": "False",
                "reason": "Ok",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            },
            {
                "type": "PIDPressure",
                "status": "False",
                "reason": "Ok",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            },
        ]
        capacity = {"cpu": "16", "memory": "64Gi", "pods": "110"}
        self.core.patch_node_status(
            self.node,
            {
                "status": {
                    "conditions": conditions,
                    "capacity": capacity,
                    "allocatable": capacity,
                    "addresses": [
                        {"type": "InternalIP", "address": "127.0.0.1"},
                        {"type": "Hostname", "address": self.node},
                    ],
                    "nodeInfo": {
                        "kubeletVersion": "hostlet-stopgap",
                        "operatingSystem": "linux",
                        "architecture": "amd64",
                        "containerRuntimeVersion": "host-process://0",
                        "kernelVersion": os.uname().release,
                        "osImage": "host",
                        "kubeProxyVersion": "",
                        "machineID": "",
                        "systemUUID": "",
                        "bootID": "",
                    },
                }
            },
        )

    def renew_lease(self) -> None:
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        try:
            self.coord.patch_namespaced_lease(
                self.node,
                "kube-node-lease",
                {
                    "spec": {
                        "holderIdentity": self.node,
                        "leaseDurationSeconds": LEASE_SECONDS,
                        "renewTime": now,
                    }
                },
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.coord.create_namespaced_lease(
                "kube-node-lease",
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.node, "namespace": "kube-node-lease"},
                    "spec": {
                        "holderIdentity": self.node,
                        "leaseDurationSeconds": LEASE_SECONDS,
                        "renewTime": now,
                    },
                },
            )

    def heartbeat_loop(self) -> None:
        while not self.stop.wait(10):
            try:
                self.renew_lease()
                self.update_node_status()
            except Exception:
                log.exception("heartbeat failed; retrying in 10 s")

    # -- pods ---------------------------------------------------------------------------
    def watch_pods(self) -> None:
        selector = f"spec.nodeName={self.node}"
        while not self.stop.is_set():
            try:
                listing = self.core.list_pod_for_all_namespaces(field_selector=selector)
                seen = set()
                for pod in listing.items:
                    seen.add(pod.metadata.uid)
                    self.on_pod(pod)
                for uid in [u for u in self.pods if u not in seen]:
                    self.forget(uid)
                w = watch.Watch()
                for event in w.stream(
                    self.core.list_pod_for_all_namespaces,
                    field_selector=selector,
                    resource_version=listing.metadata.resource_version,
                    timeout_seconds=300,
                ):
                    if self.stop.is_set():
                        w.stop()
                        break
                    pod = event["object"]
                    if event["type"] == "DELETED":
                        self.forget(pod.metadata.uid)
                    else:
                        self.on_pod(pod)
            except Exception:
                if not self.stop.is_set():
                    log.exception("pod watch failed; relisting in 2 s")
                    time.sleep(2)

    def on_pod(self, pod: Any) -> None:
        uid = pod.metadata.uid
        run = self.pods.get(uid)
        if run is None:
            if pod.status.phase in ("Succeeded", "Failed"):
                return
            run = PodRun(pod.metadata.namespace, pod.metadata.name, uid, pod.spec)
            self.pods[uid] = run
            if pod.metadata.deletion_timestamp is None:
                threading.Thread(
                    target=self.run_pod, args=(run,), daemon=True, name=f"pod-{run.name}"
                ).start()
        if pod.metadata.deletion_timestamp is not None and not run.deleting:
            run.deleting = True
            threading.Thread(
                target=self.terminate,
                args=(run, pod.metadata.deletion_grace_period_seconds),
                daemon=True,
            ).start()

    def forget(self, uid: str) -> None:
        run = self.pods.pop(uid, None)
        if run is not None and run.proc is not None and run.proc.poll() is None:
            self._kill(run, 0)

    def _resolve_env(self, run: PodRun, container: Any) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.log_dir / "home"),
            "PYTHONUNBUFFERED": "1",
            "HOSTNAME": run.name,
        }
        for var in container.env or []:
            if var.value is not None:
                env[var.name] = var.value
            elif var.value_from is not None:
                src = var.value_from
                if src.secret_key_ref is not None:
                    ref = src.secret_key_ref
                    data = self._read_optional(self.core.read_namespaced_secret, ref, run.namespace)
                    if ref.key in data:
                        env[var.name] = base64.b64decode(data[ref.key]).decode()
                    elif not ref.optional:
                        raise ValueError(f"secret {ref.name} has no key {ref.key}")
                elif src.config_map_key_ref is not None:
                    ref = src.config_map_key_ref
                    data = self._read_optional(
                        self.core.read_namespaced_config_map, ref, run.namespace
                    )
                    if ref.key in data:
                        env[var.name] = data[ref.key]
                    elif not ref.optional:
                        raise ValueError(f"configmap {ref.name} has no key {ref.key}")
                elif src.field_ref is not None:
                    path = src.field_ref.field_path
                    env[var.name] = {
                        "metadata.name": run.name,
                        "metadata.namespace": run.namespace,
                        "metadata.uid": run.uid,
                        "spec.nodeName": self.node,
                        "status.podIP": "127.0.0.1",
                        "status.hostIP": "127.0.0.1",
                    }.get(path, "")
        for declared, host in run.ports.items():
            for key, value in env.items():
                if value == str(declared):
                    env[key] = str(host)
        return env

    @staticmethod
    def _read_optional(read: Any, ref: Any, namespace: str) -> dict[str, Any]:
        """The data of a referenced Secret/ConfigMap; {} if it is missing and optional."""
        try:
            return dict(read(ref.name, namespace).data or {})
        except ApiException as exc:
            if exc.status == 404 and ref.optional:
                return {}
            raise ValueError(f"{ref.name} not readable: {exc.reason}") from None

    def _argv(self, container: Any) -> list[str]:
        argv = list(container.command or []) + list(container.args or [])
        if not argv:
            raise ValueError("the hostlet needs an explicit command (images are not run)")
        if argv[0] in ("python", "python3"):
            argv[0] = self.python
        return argv

    def run_pod(self, run: PodRun) -> None:
        container = run.spec.containers[0]
        for p in container.ports or []:
            run.ports[p.container_port] = _free_port()
        policy = run.spec.restart_policy or "Always"
        while not run.deleting and not self.stop.is_set():
            # Like the kubelet, retry a container config that cannot be resolved yet: the
            # Node authorizer learns of the pod -> secret edge a moment after binding.
            argv, env, error = None, None, ""
            deadline = time.monotonic() + 30
            delay = 0.2
            while argv is None and not run.deleting:
                try:
                    argv = self._argv(container)
                    env = self._resolve_env(run, container)
                except Exception as exc:
                    argv, error = None, str(exc)
                    if time.monotonic() > deadline:
                        break
                    time.sleep(delay)
                    delay = min(delay * 2, 3.0)
            if argv is None or env is None:
                if run.deleting:
                    return
                log.warning("pod %s/%s cannot start: %s", run.namespace, run.name, error)
                self.patch_status(
                    run,
                    phase="Failed",
                    terminated={"exitCode": 128, "reason": "StartError", "message": error},
                )
                return
            log_path = self.log_dir / f"{run.namespace}_{run.name}.log"
            with open(log_path, "ab") as out, run.lock:
                if run.deleting:
                    return
                run.proc = subprocess.Popen(
                    argv,
                    env=env,
                    cwd=self.log_dir,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            run.started_at = _now()
            run.ready = False
            log.info(
                "pod %s/%s started pid %d ports %s",
                run.namespace,
                run.name,
                run.proc.pid,
                run.ports,
            )
            self.patch_status(run, phase="Running")
            probe = threading.Thread(
                target=self.probe_loop, args=(run, container, run.proc), daemon=True
            )
            probe.start()
            code = run.proc.wait()
            log.info("pod %s/%s exited with %d", run.namespace, run.name, code)
            if run.deleting:
                return
            run.ready = False
            if policy == "Always" or (policy == "OnFailure" and code != 0):
                run.restarts += 1
                self.patch_status(
                    run,
                    phase="Running",
                    terminated={"exitCode": code, "reason": "Error" if code else "Completed"},
                )
                time.sleep(min(10, 2**run.restarts))
                continue
            self.patch_status(
                run,
                phase="Succeeded" if code == 0 else "Failed",
                terminated={"exitCode": code, "reason": "Completed" if code == 0 else "Error"},
            )
            run.finished = True
            return

    def _probe_ok(self, run: PodRun, probe: Any) -> bool:
        if probe is None:
            return True
        if probe.http_get is not None:
            port = probe.http_get.port
            port = (
                run.ports.get(int(port), int(port))
                if str(port).isdigit()
                else next(iter(run.ports.values()))
            )
            url = f"http://127.0.0.1:{port}{probe.http_get.path or '/'}"
            try:
                with urllib.request.urlopen(url, timeout=probe.timeout_seconds or 1) as resp:
                    return bool(200 <= resp.status < 400)
            except Exception:
                return False
        if probe.tcp_socket is not None:
            port = run.ports.get(int(probe.tcp_socket.port), int(probe.tcp_socket.port))
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return True
            except OSError:
                return False
        return True

    def probe_loop(self, run: PodRun, container: Any, proc: subprocess.Popen[bytes]) -> None:
        readiness = container.readiness_probe
        liveness = container.liveness_probe
        period = readiness.period_seconds if readiness and readiness.period_seconds else 1
        live_failures = 0
        started = time.monotonic()
        while proc.poll() is None and not run.deleting and not self.stop.is_set():
            ready = self._probe_ok(run, readiness)
            if ready != run.ready:
                run.ready = ready
                self.patch_status(run, phase="Running")
            if liveness is not None and time.monotonic() - started > (
                liveness.initial_delay_seconds or 0
            ):
                live_failures = 0 if self._probe_ok(run, liveness) else live_failures + 1
                if live_failures >= (liveness.failure_threshold or 3):
                    log.warning(
                        "pod %s/%s failed its liveness probe; killing it", run.namespace, run.name
                    )
                    self._kill(run, 0)
                    return
            time.sleep(min(period, 1))

    def patch_status(
        self, run: PodRun, phase: str, terminated: dict[str, Any] | None = None
    ) -> None:
        now = _now()
        container = run.spec.containers[0]
        if terminated is not None and phase != "Running":
            state: dict[str, Any] = {
                "terminated": {**terminated, "startedAt": run.started_at or now, "finishedAt": now}
            }
        elif run.proc is not None and run.proc.poll() is None:
            state = {"running": {"startedAt": run.started_at or now}}
        else:
            state = {"waiting": {"reason": "ContainerCreating"}}
        status = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": run.started_at or now,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {
                    "type": "ContainersReady",
                    "status": str(run.ready).capitalize(),
                    "lastTransitionTime": now,
                },
                {"type": "Ready", "status": str(run.ready).capitalize(), "lastTransitionTime": now},
            ],
            "containerStatuses": [
                {
                    "name": container.name,
                    "image": container.image or "",
                    "imageID": "",
                    "ready": run.ready,
                    "restartCount": run.restarts,
                    "started": state.get("running") is not None,
                    "state": state,
                    **(
                        {"lastState": {"terminated": {**terminated, "finishedAt": now}}}
                        if terminated is not None and phase == "Running"
                        else {}
                    ),
                }
            ],
        }
        try:
            self.core.patch_namespaced_pod_status(run.name, run.namespace, {"status": status})
        except ApiException as exc:
            if exc.status != 404:
                log.warning("status of %s/%s not written: %s", run.namespace, run.name, exc.reason)

    def _kill(self, run: PodRun, grace: float) -> None:
        proc = run.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log.warning(
                "pod %s/%s ignored SIGTERM for %.0f s; SIGKILL", run.namespace, run.name, grace
            )
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def terminate(self, run: PodRun, grace: int | None) -> None:
        with run.lock:
            pass  # a start in progress finishes first; then run.deleting stops any restart
        grace_s = float(
            grace if grace is not None else (run.spec.termination_grace_period_seconds or 30)
        )
        self._kill(run, grace_s)
        try:
            self.core.delete_namespaced_pod(
                run.name,
                run.namespace,
                grace_period_seconds=0,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=client.V1Preconditions(uid=run.uid)
                ),
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                log.warning("final delete of %s/%s failed: %s", run.namespace, run.name, exc.reason)
        self.pods.pop(run.uid, None)

    def shutdown(self) -> None:
        self.stop.set()
        for run in list(self.pods.values()):
            run.deleting = True
            self._kill(run, 10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node", default="host-0")
    parser.add_argument("--log-dir", type=Path, required=True)
    parser.add_argument("--health-port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stdout,
    )
    args.log_dir.mkdir(parents=True, exist_ok=True)
    (args.log_dir / "home").mkdir(exist_ok=True)
    config.load_kube_config(args.kubeconfig)
    hostlet = Hostlet(args.node, args.log_dir, sys.executable)
    hostlet.register_node()
    hostlet.renew_lease()
    signal.signal(signal.SIGTERM, lambda *_: hostlet.stop.set())
    threading.Thread(target=hostlet.heartbeat_loop, daemon=True).start()
    threading.Thread(target=hostlet.watch_pods, daemon=True).start()
    threading.Thread(target=_serve_health, args=(args.health_port,), daemon=True).start()
    log.info(
        "hostlet for node %s running pods as host processes (STOPGAP until the real kubelet)",
        args.node,
    )
    try:
        while not hostlet.stop.wait(1):
            pass
    except KeyboardInterrupt:
        pass
    hostlet.shutdown()


def _serve_health(port: int) -> None:
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    HTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
