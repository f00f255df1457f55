"""The chart against the real local stack's API server: every object it renders is accepted,
and `helm install` + `helm test` pass.

What runs where (see docs/install.md): the stack runs the operator and the gateway as host
processes with the chart's RBAC (manifests/rbac.yaml is rendered from the chart), so the
release installed here leaves the operator Deployment, the CRDs and the RBAC to the stack
(`operator.enabled=false`, `crds.install=false`, `*.rbac.create=false`); what it installs
is the worker NetworkPolicy (stored, not enforced: no CNI here) and the `helm test` pod with
its account. That pod runs on the host-process node `host-0` (the hostlet stopgap: images
are ignored, `python` is the stack's) and does what it does in a real cluster: creates a
VoiceSession, waits until the operator made the room and the worker joined it, deletes it.
The operator and gateway Deployments are checked by server-side dry run only; running their
images waits for the real kubelet node (issue 8).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "chart"))

from chartlib import CHART, FULL_VALUES, MONITORING_API, docs, template

pytestmark = pytest.mark.integration

RELEASE_NAMESPACE = "voicefleet-system"
# Kinds the local API server does not serve (prometheus-operator's CRDs are not installed);
# every other rendered object must pass.
NOT_SERVED = {"ServiceMonitor"}


def _dry_run(kubectl: Any, objects: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    """Server-side apply, dry run, strict field validation: the API server checks every
    field against its OpenAPI schema (unknown or duplicate fields are errors), defaults and
    validates, and runs admission; nothing is stored."""
    result: subprocess.CompletedProcess[str] = kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--validate=strict",
        "--force-conflicts",
        "--field-manager=voicefleet-chart-test",
        "-f",
        "-",
        stdin=yaml.safe_dump_all(objects),
        check=False,
    )
    return result


@pytest.fixture
def scratch_namespaces(kubectl: Any) -> Iterator[tuple[str, str]]:
    """A fresh release namespace and sessions namespace, deleted afterwards."""
    suffix = os.urandom(3).hex()
    names = (f"vf-chart-{suffix}", f"vf-chart-sessions-{suffix}")
    for name in names:
        kubectl("create", "namespace", name)
    try:
        yield names
    finally:
        for name in names:
            kubectl("delete", "namespace", name, "--wait=false", check=False)


KIND = Path(__file__).resolve().parents[3] / ".github" / "kind"
VALUE_FILES = {"default": [], "full": [FULL_VALUES], "kind": [KIND / "values-kind.yaml"]}


@pytest.mark.parametrize("values", sorted(VALUE_FILES))
def test_every_rendered_object_passes_a_strict_server_side_dry_run(
    kubectl: Any, scratch_namespaces: tuple[str, str], values: str
) -> None:
    release_ns, sessions_ns = scratch_namespaces
    rendered = template(
        values=VALUE_FILES[values],
        api_versions=[MONITORING_API] if values == "full" else [],
        sets={"sessions.namespace": sessions_ns},
        namespace=release_ns,
    ).stdout
    objects = docs(rendered)
    served = [o for o in objects if o["kind"] not in NOT_SERVED]
    assert {o["kind"] for o in objects} - {o["kind"] for o in served} <= NOT_SERVED
    # Pod admission looks the ServiceAccount up, so the accounts are created for real first
    # (in the scratch namespace); everything else is a dry run.
    accounts = [o for o in served if o["kind"] == "ServiceAccount"]
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(accounts))
    result = _dry_run(kubectl, served)
    assert result.returncode == 0, result.stderr
    for obj in served:
        assert f"{obj['metadata']['name']} serverside-applied (server dry run)" in result.stdout, (
            obj["kind"],
            obj["metadata"]["name"],
            result.stdout,
        )


def test_the_kind_jobs_dependencies_pass_a_strict_server_side_dry_run(
    kubectl: Any, scratch_namespaces: tuple[str, str]
) -> None:
    """.github/kind/deps.yaml (LiveKit, PostgreSQL, Letta, the scripted model), moved into a
    scratch namespace: the kind job itself cannot run here (no Docker engine)."""
    _, namespace = scratch_namespaces
    objects = [o for o in docs((KIND / "deps.yaml").read_text()) if o["kind"] != "Namespace"]
    for obj in objects:
        obj["metadata"]["namespace"] = namespace
    result = _dry_run(kubectl, objects)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("serverside-applied (server dry run)") == len(objects)


def test_the_dry_run_rejects_a_misspelt_field_and_a_bad_value(
    kubectl: Any, scratch_namespaces: tuple[str, str]
) -> None:
    """The check above can fail: the same call refuses what kubeconform would."""
    release_ns, sessions_ns = scratch_namespaces
    objects = docs(template(sets={"sessions.namespace": sessions_ns}, namespace=release_ns).stdout)
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    misspelt = json.loads(json.dumps(deployment))
    misspelt["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    result = _dry_run(kubectl, [misspelt])
    assert result.returncode != 0, result.stdout
    assert "imagePullPolicyy: field not declared in schema" in result.stderr, result.stderr
    bad = json.loads(json.dumps(deployment))
    bad["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "lots"
    result = _dry_run(kubectl, [bad])
    assert result.returncode != 0, result.stdout
    assert "quantities must match" in result.stderr, result.stderr


@pytest.fixture
def helm_release(
    stack_env: dict[str, str], stack_dir: Path, kubectl: Any
) -> Iterator[tuple[Any, Path]]:
    """`helm(*args)` bound to the stack, with the LiveKit Secret the chart references."""
    env = {"KUBECONFIG": stack_env["KUBECONFIG"], "HOME": str(stack_dir / "helm-home")}
    env["PATH"] = "/usr/bin:/bin"

    def helm(*args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [f"{stack_env['VOICEFLEET_BIN']}/helm", *args, "--namespace", RELEASE_NAMESPACE],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    secret = kubectl(
        "-n",
        RELEASE_NAMESPACE,
        "create",
        "secret",
        "generic",
        "voicefleet-livekit",
        f"--from-literal=LIVEKIT_API_KEY={stack_env['LIVEKIT_API_KEY']}",
        f"--from-literal=LIVEKIT_API_SECRET={stack_env['LIVEKIT_API_SECRET']}",
        "--dry-run=client",
        "-o",
        "yaml",
    ).stdout
    kubectl("apply", "-f", "-", stdin=secret)
    try:
        yield helm, stack_dir
    finally:
        helm("uninstall", "voicefleet", "--wait", "--ignore-not-found")
        # Helm leaves hook objects behind on uninstall; the test pod is one.
        kubectl(
            "-n",
            RELEASE_NAMESPACE,
            "delete",
            "pod",
            "voicefleet-test-session-ready",
            "--ignore-not-found",
            "--wait=true",
        )
        kubectl("-n", RELEASE_NAMESPACE, "delete", "secret", "voicefleet-livekit", check=False)


def _install_args(stack_env: dict[str, str], kubectl: Any, **tests: str) -> list[str]:
    server = kubectl(
        "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"
    ).stdout
    sets = {
        "crds.install": "false",
        "operator.enabled": "false",
        "operator.rbac.create": "false",
        "gateway.rbac.create": "false",
        "livekit.url": stack_env["LIVEKIT_URL"],
        "letta.url": stack_env["LETTA_BASE_URL"],
        "tests.apiServer": server,
        "tests.agentName": "Agent_66",
        **{f"tests.{k}": v for k, v in tests.items()},
    }
    args = ["--wait", "--timeout", "2m"]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    return [*args, "--set-json", 'tests.nodeSelector={"voicefleet.dev/node-kind":"host-process"}']


def _pod_log_path(stack_dir: Path) -> Path:
    """Where the hostlet writes the test pod's output (appended run after run)."""
    return stack_dir / "logs" / "pods" / f"{RELEASE_NAMESPACE}_voicefleet-test-session-ready.log"


def _run_helm_test(helm: Any, stack_dir: Path, timeout: str) -> tuple[Any, str]:
    """`helm test` and what the test pod printed during it."""
    path = _pod_log_path(stack_dir)
    start = path.stat().st_size if path.exists() else 0
    tested = helm("test", "voicefleet", "--timeout", timeout)
    with open(path, "rb") as f:
        f.seek(start)
        return tested, f.read().decode(errors="replace")


def test_helm_install_then_helm_test_gets_a_session_ready_and_cleans_up(
    helm_release: tuple[Any, Path], stack_env: dict[str, str], kubectl: Any
) -> None:
    helm, stack_dir = helm_release
    install = helm("install", "voicefleet", str(CHART), *_install_args(stack_env, kubectl))
    assert install.returncode == 0, install.stderr
    assert "helm test voicefleet" in install.stdout  # NOTES.txt
    tested, log = _run_helm_test(helm, stack_dir, "5m")
    assert tested.returncode == 0, f"{tested.stdout}\n{tested.stderr}\n{log}"
    assert "Phase:          Succeeded" in tested.stdout
    assert "phase Ready" in log and "VoiceSession deleted" in log, log
    sessions = kubectl("-n", stack_env["NAMESPACE"], "get", "voicesessions", "-o", "name").stdout
    assert "voicefleet-helm-test" not in sessions


def test_helm_test_fails_when_no_operator_serves_the_sessions_namespace(
    helm_release: tuple[Any, Path],
    stack_env: dict[str, str],
    kubectl: Any,
    scratch_namespaces: tuple[str, str],
) -> None:
    """Sessions in a namespace no operator watches never get Ready, and `helm test` says so:
    it waits for the operator's work, not for its own create call."""
    helm, stack_dir = helm_release
    _, unserved = scratch_namespaces
    args = _install_args(stack_env, kubectl, timeoutSeconds="15")
    install = helm(
        "install", "voicefleet", str(CHART), *args, "--set", f"sessions.namespace={unserved}"
    )
    assert install.returncode == 0, install.stderr
    tested, log = _run_helm_test(helm, stack_dir, "3m")
    assert tested.returncode != 0, f"{tested.stdout}\n{log}"
    assert "not Ready (phase -)" in log, log
    assert "VoiceSession deleted" in log, log


def test_helm_test_fails_when_letta_has_no_such_agent(
    helm_release: tuple[Any, Path], stack_env: dict[str, str], kubectl: Any
) -> None:
    helm, stack_dir = helm_release
    args = _install_args(stack_env, kubectl, agentName="No_Such_Agent")
    install = helm("install", "voicefleet", str(CHART), *args)
    assert install.returncode == 0, install.stderr
    tested, log = _run_helm_test(helm, stack_dir, "3m")
    assert tested.returncode != 0, f"{tested.stdout}\n{log}"
    assert "no Letta agent named 'No_Such_Agent'" in log, log
