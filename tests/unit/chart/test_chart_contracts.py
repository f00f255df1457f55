"""The chart keeps the contracts of the code it deploys (no cluster needed).

- its CRD is manifests/crd.yaml, and manifests/ is rendered from it;
- the operator Deployment sets exactly the environment operator/config.py reads, and the
  settings the operator parses from it are the chart's values;
- the gateway Deployment sets only variables web/config.py documents, and they parse;
- least privilege, non-root pods, the worker NetworkPolicy, one `helm test` hook.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import yaml
from chartlib import (
    CHART,
    REPO,
    container_env,
    docs,
    find,
    render_default,
    render_full,
    template,
)

sys.path[:0] = [str(REPO / "operator"), str(REPO / "web")]

from voicefleet_operator import config as operator_config  # noqa: E402
from voicefleet_operator.api import VoiceSessionSpec  # noqa: E402
from voicefleet_operator.manifests import SessionRef, build_worker_pod  # noqa: E402
from voicefleet_web import config as gateway_config  # noqa: E402


def _strip_source(rendered: str) -> str:
    lines = [line for line in rendered.splitlines() if not line.startswith("# Source: ")]
    return "\n".join(lines).removeprefix("---\n").strip() + "\n"


def test_chart_crd_file_is_a_byte_copy_of_manifests_crd() -> None:
    assert (CHART / "files" / "crds.yaml").read_bytes() == (
        REPO / "manifests" / "crd.yaml"
    ).read_bytes(), "run `make manifests`"


def test_rendered_crd_equals_manifests_crd() -> None:
    manifest = (REPO / "manifests" / "crd.yaml").read_text()
    plain = template(sets={"crds.keep": "false"}, show_only=["templates/crds.yaml"]).stdout
    assert _strip_source(plain) == manifest.strip() + "\n"
    assert docs(plain) == docs(manifest)
    # By default the only difference is that `helm uninstall` keeps them.
    kept = docs(template(show_only=["templates/crds.yaml"]).stdout)
    for doc in kept:
        assert doc["metadata"].pop("annotations") == {"helm.sh/resource-policy": "keep"}
    assert kept == docs(manifest)


def test_crds_are_not_rendered_when_crds_install_is_false() -> None:
    kinds = {d["kind"] for d in docs(template(sets={"crds.install": "false"}).stdout)}
    assert "CustomResourceDefinition" not in kinds


def test_manifests_are_rendered_from_the_chart() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "charts" / "render_manifests.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rbac = docs((REPO / "manifests" / "rbac.yaml").read_text())
    assert {(d["kind"], d["metadata"]["name"]) for d in rbac} == {
        (kind, f"voicefleet-{who}")
        for kind in ("ServiceAccount", "Role", "RoleBinding")
        for who in ("operator", "gateway")
    }
    operator = docs((REPO / "manifests" / "operator.yaml").read_text())
    assert find(operator, "Deployment", "voicefleet-operator")


class RecordingEnv(Mapping[str, str]):
    """An environment that records every name the code looks up."""

    def __init__(self, data: dict[str, str]) -> None:
        self.data = data
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return self.data.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


SECRETS = {
    ("voicefleet-livekit", "LIVEKIT_API_KEY"): "key-default",
    ("voicefleet-livekit", "LIVEKIT_API_SECRET"): "secret-default-0123456789abcdef0123",
    ("livekit-keys", "key"): "key-full",
    ("livekit-keys", "secret"): "secret-full-0123456789abcdef0123456",
    ("letta-key", "token"): "letta-token",
    ("gateway-dev-token", "token"): "dev-token-0123456789",
}


def _resolve(env: list[dict[str, Any]]) -> dict[str, str]:
    """The container's environment as a kubelet would give it (secrets from SECRETS)."""
    out = {}
    for var in env:
        if "value" in var:
            out[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            out[var["name"]] = SECRETS[(ref["name"], ref["key"])]
    return out


def _operator_names_read() -> set[str]:
    probe = RecordingEnv(
        {"LIVEKIT_URL": "ws://x", "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s"}
    )
    operator_config.load_settings(probe)
    return probe.read


def test_operator_deployment_sets_exactly_the_names_the_operator_reads() -> None:
    read = _operator_names_read()
    deployment = find(docs(render_full()), "Deployment", "voicefleet-operator")
    names = [v["name"] for v in container_env(deployment)]
    assert len(names) == len(set(names)), "a variable is set twice"
    assert set(names) == read, (
        f"set but never read: {sorted(set(names) - read)}; read but not set: {sorted(read - set(names))}"
    )


def test_operator_settings_parsed_from_the_rendered_env_are_the_values() -> None:
    values = yaml.safe_load((REPO / "tests" / "unit" / "chart" / "values-full.yaml").read_text())
    deployment = find(docs(render_full()), "Deployment", "voicefleet-operator")
    settings = operator_config.load_settings(_resolve(container_env(deployment)))
    w, v = settings.worker, values["worker"]
    assert settings.namespace == values["sessions"]["namespace"]
    assert settings.livekit_url == values["livekit"]["url"]
    assert settings.livekit_api_key == "key-full"
    assert settings.letta_api_key == "letta-token"
    assert settings.bind_host == "0.0.0.0"
    assert (settings.webhook_port, settings.metrics_port, settings.health_port) == (
        18090,
        19090,
        18080,
    )
    assert settings.peering_name == "vf-peering" and settings.peering_priority == 50
    assert settings.one_connection_per_agent is False and settings.room_check_seconds == 5
    assert (settings.api_max_inflight, settings.event_posters) == (32, 8)
    assert w.image == "registry.example.com/voicefleet/worker:1.2.3"
    assert w.image_pull_policy == "Always"
    assert w.command == tuple(v["command"])
    assert w.livekit_url == values["livekit"]["workerUrl"]
    assert w.letta_base_url == values["letta"]["workerUrl"]
    assert w.secret_name == "voicefleet-worker-credentials"
    assert (w.cpu_request, w.memory_request, w.cpu_limit, w.memory_limit) == (
        "500m",
        "1Gi",
        "4",
        "4Gi",
    )
    assert (w.health_port, w.flush_timeout_seconds) == (18081, 15)
    # What the operator then builds: the worker pod carries the chart's defaults.
    pod = build_worker_pod(
        SessionRef("voicefleet", "alice", "uid-1"),
        VoiceSessionSpec.model_validate({"agentId": "agent-1", "userIdentity": "alice"}),
        1,
        "voicefleet-worker-abcde",
        "vs-alice-1-abcde",
        settings,
    )
    assert pod["spec"]["nodeSelector"] == v["nodeSelector"]
    assert pod["spec"]["tolerations"] == v["tolerations"]
    assert pod["spec"]["containers"][0]["resources"] == v["resources"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "voicefleet-worker"


def test_operator_default_env_parses_and_the_role_names_the_worker_secret() -> None:
    objects = docs(render_default())
    deployment = find(objects, "Deployment", "voicefleet-operator")
    settings = operator_config.load_settings(_resolve(container_env(deployment)))
    role = find(objects, "Role", "voicefleet-operator")
    named = [r for r in role["rules"] if r.get("resourceNames")]
    assert named == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [settings.worker.secret_name],
            "verbs": ["get", "patch"],
        }
    ]


def test_standby_runs_with_a_lower_peering_priority_than_the_active_operator() -> None:
    objects = docs(render_full())
    priority = {
        name: _resolve(container_env(find(objects, "Deployment", name)))[
            "VOICEFLEET_PEERING_PRIORITY"
        ]
        for name in ("voicefleet-operator", "voicefleet-operator-standby")
    }
    assert priority == {"voicefleet-operator": "50", "voicefleet-operator-standby": "0"}
    pdb = find(objects, "PodDisruptionBudget", "voicefleet-operator")
    for name in ("voicefleet-operator", "voicefleet-operator-standby"):
        labels = find(objects, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_gateway_sets_only_documented_variables_and_they_parse() -> None:
    deployment = find(docs(render_full()), "Deployment", "voicefleet-gateway")
    env = _resolve(container_env(deployment))
    documented = set(gateway_config.ENV_DOC)
    assert set(env) <= documented, f"undocumented: {sorted(set(env) - documented)}"
    # Everything but the two a pod never needs (in-cluster account, built-in client).
    assert documented - set(env) == {"KUBECONFIG", "GATEWAY_STATIC_DIR"}
    settings = gateway_config.load_settings(env)
    assert settings.oidc is not None and settings.oidc.issuer == "https://login.example.com"
    assert settings.livekit_url == "wss://rtc.example.com"
    assert settings.letta_agent_tags == ("voice", "public")
    assert settings.max_connections_per_user == 3
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["python", "-m", "voicefleet_web"] and "8088" in command


def test_no_cluster_wide_rights_and_no_wildcards() -> None:
    for rendered in (render_default(), render_full()):
        objects = docs(rendered)
        assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
        for role in (o for o in objects if o["kind"] == "Role"):
            for rule in role["rules"]:
                for field in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule[field], (role["metadata"]["name"], rule)
    gateway = find(docs(render_default()), "Role", "voicefleet-gateway")
    assert gateway["rules"] == [
        {
            "apiGroups": ["voicefleet.dev"],
            "resources": ["voicesessions"],
            "verbs": ["get", "list", "watch", "create", "patch"],
        }
    ]


def _pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects:
        if obj["kind"] == "Deployment":
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]
        elif obj["kind"] == "Pod":
            yield obj["metadata"]["name"], obj["spec"]


def test_every_pod_runs_non_root_read_only_without_capabilities_and_with_limits() -> None:
    for name, spec in _pod_specs(docs(render_full())):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert set(container["resources"]) == {"requests", "limits"}, name


def test_worker_network_policy_allows_egress_only_to_livekit_letta_and_dns() -> None:
    policy = find(docs(render_default()), "NetworkPolicy", "voicefleet-worker")
    assert policy["metadata"]["namespace"] == "voicefleet"
    assert policy["spec"]["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/name": "voicefleet-worker"}
    }
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    egress = policy["spec"]["egress"]
    assert len(egress) == 3 and all(rule.get("to") for rule in egress)
    dns, livekit, letta = egress
    assert {p["port"] for p in dns["ports"]} == {53}
    assert livekit["to"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "livekit"}
    assert {(p["protocol"], p["port"]) for p in livekit["ports"]} == {
        ("TCP", 7880),
        ("TCP", 7881),
        ("UDP", 50000),
    }
    assert letta["ports"] == [{"protocol": "TCP", "port": 8283}]
    assert policy["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8081}]}]
    disabled = docs(template(sets={"networkPolicy.enabled": "false"}).stdout)
    assert not [o for o in disabled if o["kind"] == "NetworkPolicy"]


def test_the_test_pod_is_the_only_helm_test_hook_and_carries_the_test_script() -> None:
    objects = docs(render_default())
    hooks = [o for o in objects if "helm.sh/hook" in o["metadata"].get("annotations", {})]
    # `helm test --logs` (Helm 3) reads the logs of every test hook as if it were a pod.
    assert [(o["kind"], o["metadata"]["annotations"]["helm.sh/hook"]) for o in hooks] == [
        ("Pod", "test")
    ]
    pod = hooks[0]
    command = pod["spec"]["containers"][0]["command"]
    assert command[:2] == ["python", "-c"]
    assert command[2] == (CHART / "files" / "helm_test.py").read_text()
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["VF_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "voicefleet-test-token",
        "key": "token",
    }
    token = find(objects, "Secret", "voicefleet-test-token")
    assert token["type"] == "kubernetes.io/service-account-token"
    role = find(objects, "Role", "voicefleet-test")
    assert role["rules"] == [
        {
            "apiGroups": ["voicefleet.dev"],
            "resources": ["voicesessions"],
            "verbs": ["get", "create", "delete"],
        }
    ]


def test_no_secret_value_is_rendered() -> None:
    """Credentials are referenced (secretKeyRef), never rendered into an object."""
    for rendered in (render_default(), render_full()):
        for obj in docs(rendered):
            if obj["kind"] == "Secret":
                assert "data" not in obj and "stringData" not in obj, obj["metadata"]["name"]
        for secret in SECRETS.values():
            assert secret not in rendered
            assert base64.b64encode(secret.encode()).decode() not in rendered
