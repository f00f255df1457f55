"""The local Kubernetes control plane: etcd, kube-apiserver, controller-manager, scheduler, kwok.

Real servers built from source by `tools/build-bins.sh`, on loopback, with generated
certificates. RBAC is on: the admin kubeconfig is `system:masters`; every other
component gets its own identity.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import yaml

from .certs import CertificateAuthority, CertPair, write_service_account_keys
from .parts import Part, StackContext

SERVICE_CIDR = "10.96.0.0/16"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_NODE_COUNT = 3
HOST_NODE = "host-0"


def _base_env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
    }


def _http_ok(url: str, context: ssl.SSLContext | None = None, expect: bytes | None = None) -> bool:
    with urllib.request.urlopen(url, timeout=2, context=context) as resp:
        body = resp.read()
        return resp.status == 200 and (expect is None or expect in body)


def write_kubeconfig(
    path: Path,
    server: str,
    ca: Path,
    client: CertPair | None,
    token: str | None = None,
    user: str = "admin",
) -> Path:
    user_entry: dict[str, str] = {}
    if client is not None:
        user_entry = {"client-certificate": str(client.cert), "client-key": str(client.key)}
    if token is not None:
        user_entry = {"token": token}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "voicefleet", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": user, "user": user_entry}],
        "contexts": [{"name": "voicefleet", "context": {"cluster": "voicefleet", "user": user}}],
        "current-context": "voicefleet",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


class ControlPlane:
    """Certificates, kubeconfigs and the Part of each control-plane server."""

    def __init__(self, ctx: StackContext) -> None:
        """Paths only; `generate_pki` makes the files (once per `up`)."""
        self.ctx = ctx
        self.pki = ctx.stack_dir / "pki"

        def pair(stem: str) -> CertPair:
            return CertPair(self.pki / f"{stem}.crt", self.pki / f"{stem}.key")

        self.ca = self.pki / "ca.crt"
        self.serving = pair("apiserver")
        self.admin = pair("admin")
        self.cm_cert = pair("controller-manager")
        self.sched_cert = pair("scheduler")
        self.kwok_cert = pair("kwok")
        self.kubelet_client = pair("apiserver-kubelet-client")
        self.sa = CertPair(self.pki / "sa.pub", self.pki / "sa.key")
        self.server = f"https://127.0.0.1:{ctx.ports['apiserver']}"
        self.admin_kubeconfig = ctx.stack_dir / "kubeconfig"
        self._cm_kubeconfig = self.pki / "controller-manager.kubeconfig"
        self._sched_kubeconfig = self.pki / "scheduler.kubeconfig"
        self._kwok_kubeconfig = self.pki / "kwok.kubeconfig"
        self.host_node_cert = pair(f"node-{HOST_NODE}")
        self._host_node_kubeconfig = self.pki / f"node-{HOST_NODE}.kubeconfig"

    def generate_pki(self) -> None:
        self.pki.mkdir(parents=True, exist_ok=True)
        ca = CertificateAuthority(self.pki)
        ca.issue(
            "apiserver",
            "kube-apiserver",
            client=False,
            server=True,
            server_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            server_ips=("127.0.0.1", "10.96.0.1"),
        )
        ca.issue("admin", "voicefleet-admin", orgs=("system:masters",))
        ca.issue("controller-manager", "system:kube-controller-manager")
        ca.issue("scheduler", "system:kube-scheduler")
        # kwok acts for the fake nodes it manages: it needs to write any node and pod status.
        ca.issue("kwok", "voicefleet-kwok", orgs=("system:masters",))
        ca.issue(
            "apiserver-kubelet-client", "kube-apiserver-kubelet-client", orgs=("system:masters",)
        )
        # The hostlet is the kubelet of its node: it authenticates as that node and the Node
        # authorizer limits it to its own node, its pods and the secrets they reference.
        ca.issue(f"node-{HOST_NODE}", f"system:node:{HOST_NODE}", orgs=("system:nodes",))
        write_service_account_keys(self.pki)
        write_kubeconfig(self.admin_kubeconfig, self.server, self.ca, self.admin)
        write_kubeconfig(
            self._cm_kubeconfig, self.server, self.ca, self.cm_cert, user="controller-manager"
        )
        write_kubeconfig(
            self._sched_kubeconfig, self.server, self.ca, self.sched_cert, user="scheduler"
        )
        write_kubeconfig(self._kwok_kubeconfig, self.server, self.ca, self.kwok_cert, user="kwok")
        write_kubeconfig(
            self._host_node_kubeconfig,
            self.server,
            self.ca,
            self.host_node_cert,
            user=f"system:node:{HOST_NODE}",
        )

    def _bin(self, name: str) -> str:
        return str(self.ctx.bin_dir / name)

    def _tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.admin.cert), str(self.admin.key))
        return context

    # -- parts ----------------------------------------------------------------------
    def etcd(self) -> Part:
        port, peer = self.ctx.ports["etcd"], self.ctx.ports["etcd_peer"]
        data = self.ctx.data("etcd")
        return Part(
            name="etcd",
            argv=[
                self._bin("etcd"),
                "--name=default",
                f"--data-dir={data}",
                f"--listen-client-urls=http://127.0.0.1:{port}",
                f"--advertise-client-urls=http://127.0.0.1:{port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=default=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            env=_base_env(),
            cwd=data,
            health=lambda: _http_ok(f"http://127.0.0.1:{port}/health", expect=b'"health":"true"'),
            timeout=30,
            description=f"http://127.0.0.1:{port}",
        )

    def apiserver(self) -> Part:
        port = self.ctx.ports["apiserver"]
        return Part(
            name="kube-apiserver",
            argv=[
                self._bin("kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self.ctx.ports['etcd']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # The endpoint reconciler refuses loopback addresses; nothing here needs it.
                "--endpoint-reconciler-type=none",
                f"--secure-port={port}",
                f"--tls-cert-file={self.serving.cert}",
                f"--tls-private-key-file={self.serving.key}",
                f"--client-ca-file={self.ca}",
                f"--kubelet-client-certificate={self.kubelet_client.cert}",
                f"--kubelet-client-key={self.kubelet_client.key}",
                # Logs and exec reach a kubelet at its node IP (the real node's bridge
                # address), never by a host name that only a DNS server could resolve.
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                f"--service-account-key-file={self.sa.cert}",
                f"--service-account-signing-key-file={self.sa.key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--api-audiences=https://kubernetes.default.svc.cluster.local",
                "--authorization-mode=Node,RBAC",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                # API Priority and Fairness stays on, as on every real cluster: a burst from
                # one client is queued in its priority level instead of answered with 429.
                "--profiling=false",
                f"--cert-dir={self.pki}",
                "--v=1",
            ],
            env=_base_env(),
            cwd=self.ctx.stack_dir,
            health=lambda: _http_ok(f"{self.server}/readyz", self._tls()),
            timeout=90,
            description=self.server,
        )

    def controller_manager(self) -> Part:
        port = self.ctx.ports["controller_manager"]
        return Part(
            name="kube-controller-manager",
            argv=[
                self._bin("kube-controller-manager"),
                f"--kubeconfig={self._cm_kubeconfig}",
                f"--authentication-kubeconfig={self._cm_kubeconfig}",
                f"--authorization-kubeconfig={self._cm_kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={self.sa.key}",
                f"--root-ca-file={self.ca}",
                "--controllers="
                + ",".join(
                    [
                        "garbage-collector-controller",
                        "namespace-controller",
                        "clusterrole-aggregation-controller",
                        "node-lifecycle-controller",
                        "serviceaccount-controller",
                        "serviceaccount-token-controller",
                        "root-ca-certificate-publisher-controller",
                        "deployment-controller",
                        "replicaset-controller",
                        "job-controller",
                        "endpointslice-controller",
                        "pod-garbage-collector-controller",
                        "ttl-after-finished-controller",
                        "disruption-controller",
                        "statefulset-controller",
                        "daemonset-controller",
                    ]
                ),
                "--concurrent-gc-syncs=20",
                "--v=1",
            ],
            env=_base_env(),
            cwd=self.ctx.stack_dir,
            health=lambda: _http_ok(f"https://127.0.0.1:{port}/healthz", _insecure()),
            timeout=60,
            description="gc, namespaces, service accounts, workloads",
        )

    def scheduler(self) -> Part:
        port = self.ctx.ports["scheduler"]
        config = self.pki / "scheduler-config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kubescheduler.config.k8s.io/v1",
                    "kind": "KubeSchedulerConfiguration",
                    "clientConnection": {
                        "kubeconfig": str(self._sched_kubeconfig),
                        "qps": 500,
                        "burst": 1000,
                    },
                    "leaderElection": {"leaderElect": False},
                }
            )
        )
        return Part(
            name="kube-scheduler",
            argv=[
                self._bin("kube-scheduler"),
                f"--config={config}",
                f"--authentication-kubeconfig={self._sched_kubeconfig}",
                f"--authorization-kubeconfig={self._sched_kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                "--v=1",
            ],
            env=_base_env(),
            cwd=self.ctx.stack_dir,
            health=lambda: _http_ok(f"https://127.0.0.1:{port}/healthz", _insecure()),
            timeout=60,
            description="",
        )

    def kwok(self) -> Part:
        port = self.ctx.ports["kwok"]
        stages = sorted((self.ctx.bin_dir / "kwok-stages").glob("*.yaml"))
        argv = [
            self._bin("kwok"),
            f"--kubeconfig={self._kwok_kubeconfig}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            f"--server-address=127.0.0.1:{port}",
            "--node-lease-duration-seconds=40",
        ]
        for stage in stages:
            argv.append(f"--config={stage}")
        return Part(
            name="kwok",
            argv=argv,
            env=_base_env(),
            cwd=self.ctx.stack_dir,
            health=lambda: _http_ok(f"http://127.0.0.1:{port}/healthz"),
            timeout=30,
            after_healthy=self.create_kwok_nodes,
            description=f"{KWOK_NODE_COUNT} fake nodes",
        )

    def hostlet(self, python: str) -> Part:
        """STOPGAP node that runs pods as host processes (see hostlet.py) until issue 8."""
        port = self.ctx.ports["hostlet"]
        log_dir = self.ctx.log_dir / "pods"
        return Part(
            name="hostlet",
            argv=[
                python,
                "-m",
                "voicefleet_stack.hostlet",
                f"--kubeconfig={self._host_node_kubeconfig}",
                f"--node={HOST_NODE}",
                f"--log-dir={log_dir}",
                f"--health-port={port}",
            ],
            env={**_base_env(), "PYTHONUNBUFFERED": "1"},
            cwd=self.ctx.stack_dir,
            health=lambda: _http_ok(f"http://127.0.0.1:{port}/") and self._node_ready(HOST_NODE),
            timeout=30,
            description=f"node {HOST_NODE}: pods as host processes (stopgap for a real kubelet)",
        )

    def _node_ready(self, name: str) -> bool:
        out = self.kubectl(
            "get",
            "node",
            name,
            "-o",
            'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
            check=False,
        )
        return out.stdout.strip() == "True"

    # -- objects --------------------------------------------------------------------
    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self._bin("kubectl"), f"--kubeconfig={self.admin_kubeconfig}", *args],
            input=stdin,
            text=True,
            capture_output=True,
            check=check,
            timeout=60,
        )

    def apply(self, objects: list[dict[str, object]]) -> None:
        doc = yaml.safe_dump_all(objects)
        result = self.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=doc, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"kubectl apply failed: {result.stderr.strip()}")

    def create_kwok_nodes(self) -> None:
        nodes: list[dict[str, object]] = []
        for i in range(KWOK_NODE_COUNT):
            nodes.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": f"kwok-node-{i}",
                        "annotations": {
                            KWOK_NODE_ANNOTATION: "fake",
                            "node.alpha.kubernetes.io/ttl": "0",
                        },
                        "labels": {
                            "type": "kwok",
                            "kubernetes.io/hostname": f"kwok-node-{i}",
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                        },
                    },
                    "spec": {
                        "taints": [
                            {"key": KWOK_NODE_ANNOTATION, "value": "fake", "effect": "NoSchedule"}
                        ]
                    },
                }
            )
        self.apply(nodes)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            out = self.kubectl(
                "get",
                "nodes",
                "-l",
                "type=kwok",
                "-o",
                'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}',
                check=False,
            ).stdout.split()
            if len(out) == KWOK_NODE_COUNT and all(s == "True" for s in out):
                return
            time.sleep(0.5)
        raise RuntimeError("kwok nodes did not become Ready within 30 s")

    def wait_default_service_account(self, namespace: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (
                self.kubectl(
                    "-n", namespace, "get", "serviceaccount", "default", check=False
                ).returncode
                == 0
            ):
                return
            time.sleep(0.3)
        raise RuntimeError(
            f"no default ServiceAccount in {namespace} after {timeout} s (controller-manager?)"
        )

    def service_account_token(self, namespace: str, name: str, hours: int = 24) -> str:
        return self.kubectl(
            "-n", namespace, "create", "token", name, f"--duration={hours}h"
        ).stdout.strip()


def _insecure() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
