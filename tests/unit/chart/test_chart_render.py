"""The chart renders, lints, documents and validates its values (no cluster needed).

Golden files: tests/unit/chart/golden/{default,full}.yaml; after an intended change,
`UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/chart` rewrites them (review the diff).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from chartlib import (
    CHART,
    FULL_VALUES,
    GOLDEN,
    docs,
    helm,
    render_default,
    render_full,
    template,
)

from voicefleet_operator.naming import FINALIZER


def test_helm_lint_strict_passes_with_default_and_full_values() -> None:
    helm("lint", "--strict", str(CHART))
    # helm lint cannot be told that the cluster serves ServiceMonitors (--api-versions):
    # that one value is switched off here; `helm template` renders them below.
    helm(
        "lint",
        "--strict",
        str(CHART),
        "-f",
        str(FULL_VALUES),
        "--set",
        "serviceMonitor.enabled=false",
    )


def _kinds(rendered: str) -> list[tuple[str, str]]:
    return sorted((d["kind"], d["metadata"]["name"]) for d in docs(rendered))


def test_default_values_render_crds_rbac_operator_and_worker_policy() -> None:
    assert _kinds(render_default()) == sorted(
        [
            ("CustomResourceDefinition", "voicesessions.voicefleet.dev"),
            ("CustomResourceDefinition", "kopfpeerings.kopf.dev"),
            ("MutatingAdmissionPolicy", "voicefleet-operator-session-finalizer"),
            ("MutatingAdmissionPolicyBinding", "voicefleet-operator-session-finalizer"),
            ("ServiceAccount", "voicefleet-operator"),
            ("Role", "voicefleet-operator"),
            ("RoleBinding", "voicefleet-operator"),
            ("ServiceAccount", "voicefleet-gateway"),
            ("Role", "voicefleet-gateway"),
            ("RoleBinding", "voicefleet-gateway"),
            ("Deployment", "voicefleet-operator"),
            ("Service", "voicefleet-operator-webhook"),
            ("Service", "voicefleet-operator-metrics"),
            ("NetworkPolicy", "voicefleet-worker"),
            ("ServiceAccount", "voicefleet-test"),
            ("Secret", "voicefleet-test-token"),
            ("Role", "voicefleet-test"),
            ("RoleBinding", "voicefleet-test"),
            ("Pod", "voicefleet-test-session-ready"),
        ]
    )


def test_full_values_add_standby_pdb_gateway_ingress_monitors_and_namespace() -> None:
    kinds = _kinds(render_full())
    for expected in [
        ("Deployment", "voicefleet-operator-standby"),
        ("PodDisruptionBudget", "voicefleet-operator"),
        ("Deployment", "voicefleet-gateway"),
        ("Service", "voicefleet-gateway"),
        ("Ingress", "voicefleet-gateway"),
        ("ServiceMonitor", "voicefleet-operator"),
        ("ServiceMonitor", "voicefleet-gateway"),
        ("Namespace", "voicefleet"),
    ]:
        assert expected in kinds


@pytest.mark.parametrize("name", ["default", "full"])
def test_render_matches_golden_file(name: str) -> None:
    rendered = render_default() if name == "default" else render_full()
    golden = GOLDEN / f"{name}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert golden.exists(), f"{golden} missing: run with UPDATE_GOLDEN=1"
    assert rendered == golden.read_text(), (
        f"the {name} render differs from {golden.name}; if intended, UPDATE_GOLDEN=1 and review"
    )


# (values as Python objects, given to helm as --set-json; what helm's schema error names)
BAD_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"operator.bogus": 1}, "additional properties 'bogus' not allowed"),
    ({"bogusTopLevel": 1}, "additional properties 'bogusTopLevel' not allowed"),
    ({"operator.replicas": 2}, "/operator/replicas"),
    ({"operator.replicas": -1}, "/operator/replicas"),
    ({"operator.image.pullPolicy": "Sometimes"}, "/operator/image/pullPolicy"),
    ({"operator.ports.webhook": 70000}, "/operator/ports/webhook"),
    ({"livekit.url": "http://not-a-websocket"}, "/livekit/url"),
    ({"letta.url": "letta:8283"}, "/letta/url"),
    ({"worker.resources.requests.cpu": "lots"}, "/worker/resources/requests/cpu"),
    ({"worker.healthPort": 80}, "/worker/healthPort"),
    ({"worker.flushTimeoutSeconds": 0}, "/worker/flushTimeoutSeconds"),
    ({"worker.tolerations": [{"key": "a", "operator": "Maybe"}]}, "/worker/tolerations/0/operator"),
    ({"gateway.service.type": "ExternalName"}, "/gateway/service/type"),
    ({"gateway.auth.oidc.algorithms": ["HS256"]}, "/gateway/auth/oidc/algorithms"),
    ({"sessions.namespace": "Not_A_Namespace"}, "/sessions/namespace"),
    ({"serviceMonitor.interval": "often"}, "/serviceMonitor/interval"),
    ({"warmPool.size": -3}, "/warmPool/size"),
    ({"crds.install": "yes"}, "/crds/install"),
    (
        {"networkPolicy.livekit.ports": [{"protocol": "ICMP", "port": 1}]},
        "/networkPolicy/livekit/ports",
    ),
    ({"networkPolicy.letta.peers": []}, "/networkPolicy/letta/peers"),
    ({"tests.timeoutSeconds": 1}, "/tests/timeoutSeconds"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_VALUES, ids=[m for _, m in BAD_VALUES])
def test_schema_rejects_bad_values(bad: dict[str, Any], message: str) -> None:
    result = template(set_json={k: json.dumps(v) for k, v in bad.items()}, check=False)
    assert result.returncode != 0, f"{bad} was accepted"
    assert "don't meet the specifications of the schema" in result.stderr, result.stderr
    assert message in result.stderr, result.stderr


IMPOSSIBLE: list[tuple[dict[str, Any], str]] = [
    ({"operator.standalone": True, "operator.standby.enabled": True}, "exclude each other"),
    (
        {"operator.standby.enabled": True, "operator.peering.priority": 0},
        "priority must be above 0",
    ),
    ({"operator.podDisruptionBudget.enabled": True}, "would block every node drain"),
    (
        {
            "operator.podDisruptionBudget.enabled": True,
            "operator.standby.enabled": True,
            "operator.replicas": 0,
        },
        "minAvailable must be below",
    ),
    ({"livekit.existingSecret": ""}, "livekit.existingSecret is required"),
    ({"gateway.enabled": True}, "gateway.enabled needs authentication"),
    (
        {"gateway.enabled": True, "gateway.auth.oidc.issuer": "https://login.example.com"},
        "needs gateway.auth.oidc.audience",
    ),
    ({"gateway.ingress.enabled": True}, "gateway.ingress.enabled needs gateway.enabled"),
    ({"warmPool.size": 5, "worker.maxLive": 3}, "warmPool.size is above worker.maxLive"),
    ({"serviceMonitor.enabled": True}, "needs the prometheus-operator CRDs"),
]


@pytest.mark.parametrize(("values", "message"), IMPOSSIBLE, ids=[m for _, m in IMPOSSIBLE])
def test_preflight_refuses_impossible_combinations(values: dict[str, Any], message: str) -> None:
    result = template(set_json={k: json.dumps(v) for k, v in values.items()}, check=False)
    assert result.returncode != 0, f"{values} was accepted"
    assert message in result.stderr, result.stderr


def _declared(node: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Key paths the schema declares, down to where it stops being strict."""
    for key, sub in node.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        yield path
        if sub.get("additionalProperties") is False:
            yield from _declared(sub, path)


def _present(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Key paths of `values`, down to where the schema stops being strict."""
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        yield path
        sub = schema.get("properties", {}).get(key, {})
        if isinstance(value, dict) and sub.get("additionalProperties") is False:
            yield from _present(value, sub, path)


def test_values_yaml_schema_and_full_values_name_the_same_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    declared = set(_declared(schema)) - {"global"}
    defaults = set(_present(yaml.safe_load((CHART / "values.yaml").read_text()), schema))
    full = set(_present(yaml.safe_load(FULL_VALUES.read_text()), schema))
    assert declared == defaults, (
        f"in the schema only: {sorted(declared - defaults)}; "
        f"in values.yaml only: {sorted(defaults - declared)}"
    )
    assert full == defaults, f"values-full.yaml misses {sorted(defaults - full)}"


def test_every_value_is_documented_in_values_yaml() -> None:
    """Each key has a comment right above it, or sits under a key that has one."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    undocumented = []
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if not match or line.lstrip().startswith("-"):
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        above = lines[i - 1].strip() if i else ""
        documented = above.startswith("#") or any(doc for _, doc in stack)
        if not documented and not _has_children(lines, i, indent):
            undocumented.append(line.strip())
        stack.append((indent, documented))
    assert not undocumented, f"values.yaml keys without a comment: {undocumented}"


def _has_children(lines: list[str], i: int, indent: int) -> bool:
    for nxt in lines[i + 1 :]:
        if not nxt.strip() or nxt.lstrip().startswith("#"):
            continue
        return len(nxt) - len(nxt.lstrip()) > indent and not nxt.lstrip().startswith("-")
    return False


def _objects(node: Any, path: str = "$") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield path, node
        for key, value in node.items():
            yield from _objects(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _objects(value, f"{path}[{i}]")


def test_schema_is_strict_everywhere_but_kubernetes_pass_through_structures() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    loose = []
    for path, node in _objects(schema):
        additional = node.get("additionalProperties")
        if additional is False or isinstance(additional, dict):
            continue  # strict, or a typed map (labels, annotations, node selectors)
        if "Kubernetes structure" in node.get("description", "") or path.endswith(".global"):
            continue  # validated by the API server (tests/integration/chart dry-runs them)
        loose.append(path)
    assert not loose, f"schema objects without additionalProperties: false: {loose}"
    for path, node in _objects(schema):
        for key, prop in node.get("properties", {}).items():
            assert "type" in prop, f"{path}.{key} has no type"


def test_the_finalizer_policy_is_rendered_only_with_the_operator_and_when_enabled() -> None:
    name = ("MutatingAdmissionPolicy", "voicefleet-operator-session-finalizer")
    assert name in _kinds(render_default())
    assert name not in _kinds(template(sets={"operator.finalizerPolicy.enabled": "false"}).stdout)
    assert name not in _kinds(template(sets={"operator.enabled": "false"}).stdout)
    policy = next(d for d in docs(render_default()) if d["kind"] == name[0])
    # It adds the operator's own finalizer, the one kopf would otherwise PATCH in.
    assert FINALIZER in policy["spec"]["mutations"][0]["jsonPatch"]["expression"]
    assert FINALIZER in policy["spec"]["matchConditions"][0]["expression"]
    assert policy["spec"]["failurePolicy"] == "Ignore"
