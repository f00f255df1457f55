"""Least privilege, asked of the real API server's RBAC authorizer (`kubectl auth can-i`).

For the operator's and the gateway's ServiceAccounts: what each must be able to do (or the
product breaks) and the dangerous verbs each must not have (or a compromised process owns
more than its namespace's sessions). Asked in the sessions' namespace, in the accounts' own
namespace and cluster-wide.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

import pytest

pytestmark = pytest.mark.integration

OPERATOR, GATEWAY = "voicefleet-operator", "voicefleet-gateway"
VS = "voicesessions.voicefleet.dev"

# (verb, resource, extra kubectl args) the account must be allowed in the sessions' namespace.
# `kubectl auth can-i VERB TYPE/NAME` names one object; subresources need --subresource.
MUST = {
    OPERATOR: [
        ("get", VS),
        ("list", VS),
        ("watch", VS),
        ("patch", VS),
        ("patch", VS, "--subresource=status"),
        ("create", "pods"),
        ("delete", "pods"),
        ("list", "pods"),
        ("watch", "pods"),
        ("create", "events"),
        ("create", "secrets"),
        ("get", "secrets/voicefleet-worker-credentials"),
    ],
    GATEWAY: [
        ("get", VS),
        ("list", VS),
        ("watch", VS),
        ("create", VS),
        ("patch", VS),
    ],
}

# Dangerous for both: reading other credentials, running code in pods, changing RBAC,
# minting tokens, impersonating, touching the cluster's definitions.
DANGEROUS = [
    ("get", "secrets"),
    ("list", "secrets"),
    ("watch", "secrets"),
    ("get", "secrets/some-other-secret"),
    ("create", "pods", "--subresource=exec"),
    ("create", "pods", "--subresource=attach"),
    ("create", "pods", "--subresource=portforward"),
    ("create", "pods", "--subresource=eviction"),
    ("create", "serviceaccounts", "--subresource=token"),
    ("create", "serviceaccounts"),
    ("create", "roles.rbac.authorization.k8s.io"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("escalate", "roles.rbac.authorization.k8s.io"),
    ("bind", "roles.rbac.authorization.k8s.io"),
    ("create", "deployments.apps"),
    ("create", "configmaps"),
    ("update", "configmaps"),
    ("delete", "events"),
    ("create", "services"),
    ("create", "networkpolicies.networking.k8s.io"),
    ("delete", "networkpolicies.networking.k8s.io"),
    ("impersonate", "users"),
    ("impersonate", "serviceaccounts"),
    ("*", "*"),
]
DANGEROUS_FOR = {
    OPERATOR: [
        *DANGEROUS,
        ("delete", VS),  # only the user (or the gateway's owner) deletes a session
        ("update", VS),
        ("create", VS),
        ("update", "pods"),
    ],
    GATEWAY: [
        *DANGEROUS,
        ("delete", VS),
        ("deletecollection", VS),
        ("update", VS),
        ("patch", VS, "--subresource=status"),
        ("update", VS, "--subresource=status"),
        ("get", "pods"),
        ("create", "pods"),
        ("delete", "pods"),
        ("create", "events"),
        ("create", "secrets"),
    ],
}
# Cluster-wide or in other namespaces neither may do anything of the kind.
ELSEWHERE = [
    ("list", VS),
    ("create", "pods"),
    ("list", "pods"),
    ("get", "secrets"),
    ("list", "nodes"),
    ("patch", "nodes"),
    ("list", "namespaces"),
    ("create", "namespaces"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("patch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "clusterroles.rbac.authorization.k8s.io"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("create", "mutatingwebhookconfigurations.admissionregistration.k8s.io"),
    ("approve", "certificatesigningrequests.certificates.k8s.io"),
]


def _as(stack_env: dict[str, str], account: str) -> str:
    return f"--as=system:serviceaccount:{stack_env['OPERATOR_NAMESPACE']}:{account}"


def can_i(
    kubectl: Any, who: str, namespace: str | None, verb: str, resource: str, *extra: str
) -> str:
    scope = ["-n", namespace] if namespace else ["--all-namespaces"]
    result = kubectl("auth", "can-i", verb, resource, *extra, *scope, who, check=False)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), (verb, resource, result.stderr)
    return answer


def matrix(
    kubectl: Any, who: str, namespace: str | None, rows: list[tuple[str, ...]]
) -> dict[tuple[str, ...], str]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        answers = pool.map(lambda row: can_i(kubectl, who, namespace, *row), rows)
        return dict(zip(rows, answers, strict=True))


@pytest.mark.parametrize("account", [OPERATOR, GATEWAY])
def test_each_account_may_do_its_job_in_the_sessions_namespace(
    account: str, stack_env: dict[str, str], kubectl: Any
) -> None:
    answers = matrix(kubectl, _as(stack_env, account), stack_env["NAMESPACE"], MUST[account])
    assert [row for row, answer in answers.items() if answer != "yes"] == []


@pytest.mark.parametrize("account", [OPERATOR, GATEWAY])
def test_each_account_has_none_of_the_dangerous_verbs_in_the_sessions_namespace(
    account: str, stack_env: dict[str, str], kubectl: Any
) -> None:
    answers = matrix(
        kubectl, _as(stack_env, account), stack_env["NAMESPACE"], DANGEROUS_FOR[account]
    )
    assert [row for row, answer in answers.items() if answer != "no"] == []


@pytest.mark.parametrize("account", [OPERATOR, GATEWAY])
def test_each_account_may_do_nothing_elsewhere(
    account: str, stack_env: dict[str, str], kubectl: Any
) -> None:
    who = _as(stack_env, account)
    allowed = []
    for namespace in (stack_env["OPERATOR_NAMESPACE"], "kube-system", "default", None):
        answers = matrix(kubectl, who, namespace, ELSEWHERE)
        allowed += [(namespace, row) for row, answer in answers.items() if answer != "no"]
    assert allowed == []


@pytest.mark.parametrize("account", [OPERATOR, GATEWAY])
def test_no_account_holds_a_wildcard_rule(
    account: str, stack_env: dict[str, str], kubectl: Any
) -> None:
    for namespace in (stack_env["NAMESPACE"], stack_env["OPERATOR_NAMESPACE"]):
        listing = kubectl(
            "auth", "can-i", "--list", "-n", namespace, _as(stack_env, account)
        ).stdout
        for line in listing.splitlines()[1:]:
            resource = line.split()[0]
            # Discovery and self-reviews are granted to every authenticated account.
            if resource.startswith(("selfsubject", "[")):
                continue
            assert "*" not in line, line
