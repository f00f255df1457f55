"""Shared pieces of the property-based security tests: bounded settings, the CRD as an oracle.

`crd_refusal(spec)` answers what the real API server would say about a VoiceSession spec on
create, from manifests/crd.yaml: the OpenAPI schema (types, bounds, patterns with RE2's
anchors, list-map keys) after defaulting, plus the create-time CEL rules, translated by hand.
`KNOWN_CEL_RULES` pins the rules translated here: a new rule in the CRD fails a test until it
is added. The integration tests check the same against the real API server.
"""

from __future__ import annotations

import functools
import os
import re
import string
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[3]
CRD = REPO / "manifests" / "crd.yaml"

# Deterministic and bounded; VOICEFLEET_HYPOTHESIS_EXAMPLES raises it for a deeper local run.
BOUNDED = settings(
    max_examples=int(os.environ.get("VOICEFLEET_HYPOTHESIS_EXAMPLES", "150")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

KNOWN_CEL_RULES = {
    "self.metadata.name.size() <= 63",
    "self.joinTimeoutSeconds <= self.maxDurationSeconds",
    "self == oldSelf",
    "self >= oldSelf",
    "self.all(e, !e.name.startsWith('LIVEKIT_') && !e.name.startsWith('VOICEFLEET_') "
    "&& !e.name.startsWith('LETTA_'))",
}


@functools.cache
def crd_version_schema() -> dict[str, Any]:
    """The CRD's schema, read once (callers must not change it)."""
    docs = [d for d in yaml.safe_load_all(CRD.read_text()) if d]
    crd = next(d for d in docs if d["metadata"]["name"] == "voicesessions.voicefleet.dev")
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def cel_rules(schema: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(schema, dict):
        for rule in schema.get("x-kubernetes-validations", []):
            found.add(" ".join(rule["rule"].split()))
        for value in schema.values():
            found |= cel_rules(value)
    elif isinstance(schema, list):
        for value in schema:
            found |= cel_rules(value)
    return found


def re2_match(pattern: str, text: str) -> bool:
    """RE2's `$` is the end of the text (Python's also matches before a final newline)."""
    assert pattern.startswith("^") and pattern.endswith("$"), pattern
    return re.fullmatch(pattern[1:-1], text) is not None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def default(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it (before validation)."""
    if not isinstance(value, dict) or schema.get("type") != "object":
        return value
    props = schema.get("properties", {})
    out = {k: v for k, v in value.items() if k in props}  # pruning of unknown fields
    for key, sub in props.items():
        if key not in out and "default" in sub:
            out[key] = sub["default"]
        if key in out:
            out[key] = default(sub, out[key])
    return out


def refusal(schema: dict[str, Any], value: Any, where: str) -> str | None:
    """Why the OpenAPI part of `schema` refuses `value`, or None."""
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return f"{where}: not an object"
        for key in schema.get("required", []):
            if key not in value:
                return f"{where}.{key}: required"
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                why = refusal(sub, value[key], f"{where}.{key}")
                if why:
                    return why
        return None
    if kind == "array":
        if not isinstance(value, list):
            return f"{where}: not an array"
        if len(value) > schema.get("maxItems", len(value)):
            return f"{where}: too many items"
        for i, item in enumerate(value):
            why = refusal(schema["items"], item, f"{where}[{i}]")
            if why:
                return why
        keys = schema.get("x-kubernetes-list-map-keys")
        if keys:
            seen = [tuple(item.get(k) for k in keys) for item in value]
            if len(seen) != len(set(seen)):
                return f"{where}: duplicate map keys"
        return None
    if kind == "integer":
        if not _is_int(value):
            return f"{where}: not an integer"
        if value < schema.get("minimum", value) or value > schema.get("maximum", value):
            return f"{where}: out of bounds"
        if schema.get("format") == "int32" and not -(2**31) <= value < 2**31:
            return f"{where}: not int32"
        return None
    if kind == "string":
        if not isinstance(value, str):
            return f"{where}: not a string"
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 1e9):
            return f"{where}: bad length"
        if "pattern" in schema and not re2_match(schema["pattern"], value):
            return f"{where}: pattern"
        return None
    return None


def crd_refusal(spec: Any) -> str | None:
    """Why the API server refuses to create a VoiceSession with `spec`, or None."""
    schema = crd_version_schema()["properties"]["spec"]
    if not isinstance(spec, dict):
        return "spec: not an object"
    spec = default(schema, spec)
    why = refusal(schema, spec, "spec")
    if why:
        return why
    if spec["joinTimeoutSeconds"] > spec["maxDurationSeconds"]:
        return "spec: joinTimeoutSeconds > maxDurationSeconds"
    for item in spec.get("worker", {}).get("env", []):
        if item["name"].startswith(("LIVEKIT_", "VOICEFLEET_", "LETTA_")):
            return "spec.worker.env: reserved name"
    return None


# -- strategies: mostly plausible values, with the edges and the garbage mixed in ----------
ID_CHARS = string.ascii_letters + string.digits + "._:-@+ /\n\t\u00e9\u0661"
ids = st.one_of(
    st.text(alphabet=ID_CHARS, min_size=0, max_size=12),
    st.sampled_from(["agent-66", "alice", "a", "a" * 128, "a" * 129, "agent-66\n", "-x", "x-"]),
    st.text(max_size=8),
    st.integers(),
    st.none(),
)
ints = st.one_of(
    st.integers(min_value=-2, max_value=90_000),
    st.sampled_from([0, 1, 4, 5, 29, 30, 3600, 3601, 86_400, 86_401, 2**31 - 1, 2**31, -(2**31)]),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=string.digits, min_size=1, max_size=3),
    st.none(),
)
quantities = st.one_of(
    st.sampled_from(["100m", "1", "0.5", "512Mi", "1Gi", "", "1.", "-1", "1e3", "1 Gi", "1Gi\n"]),
    st.text(alphabet="0123456789.mKiMGT", max_size=6),
    st.integers(),
)
amounts = st.dictionaries(st.sampled_from(["cpu", "memory", "gpu"]), quantities, max_size=3)
env_names = st.one_of(
    st.sampled_from(["FOO", "_X", "LIVEKIT_API_SECRET", "VOICEFLEET_X", "LETTA_API_KEY", "1A"]),
    st.text(alphabet=string.ascii_uppercase + "_-0", min_size=0, max_size=6),
)
env_items = st.fixed_dictionaries(
    {"name": env_names},
    optional={"value": st.one_of(st.text(max_size=10), st.integers(), st.none())},
)
workers = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "image": st.one_of(st.sampled_from(["", "img:1", "x" * 513]), st.integers()),
            "resources": st.fixed_dictionaries(
                {}, optional={"requests": amounts, "limits": amounts}
            ),
            "env": st.lists(env_items, max_size=4),
            "privileged": st.booleans(),
        },
    ),
    st.sampled_from([None, [], "x", 3]),
)
specs = st.fixed_dictionaries(
    {},
    optional={
        "agentId": ids,
        "userIdentity": ids,
        "connection": ints,
        "reconnectGraceSeconds": ints,
        "joinTimeoutSeconds": ints,
        "maxDurationSeconds": ints,
        "maxRestarts": ints,
        "worker": workers,
        "unknownField": st.text(max_size=3),
    },
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6)),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=10,
)

# Specs the CRD admits (mostly: requests above limits and the like still reach the operator).
valid_ids = st.from_regex(r"\A[A-Za-z0-9]([A-Za-z0-9._:-]{0,30}[A-Za-z0-9])?\Z", fullmatch=True)
valid_identities = st.from_regex(
    r"\A[A-Za-z0-9]([A-Za-z0-9._@:+-]{0,30}[A-Za-z0-9])?\Z", fullmatch=True
)
valid_quantities = st.sampled_from(["1m", "100m", "1", "2", "0.5", "64Mi", "1Gi", "0", "3T"])
valid_amounts = st.fixed_dictionaries(
    {}, optional={"cpu": valid_quantities, "memory": valid_quantities}
)
valid_env = st.lists(
    st.fixed_dictionaries(
        {"name": st.from_regex(r"\A[A-KM-UW-Z_][A-Z0-9_]{0,10}\Z", fullmatch=True)},
        optional={"value": st.text(max_size=20)},
    ),
    max_size=3,
    unique_by=lambda e: e["name"],
)
valid_specs = st.fixed_dictionaries(
    {"agentId": valid_ids, "userIdentity": valid_identities},
    optional={
        "connection": st.integers(min_value=1, max_value=2**31 - 1),
        "reconnectGraceSeconds": st.integers(min_value=0, max_value=3600),
        "joinTimeoutSeconds": st.integers(min_value=5, max_value=600),
        "maxDurationSeconds": st.integers(min_value=600, max_value=86_400),
        "maxRestarts": st.integers(min_value=0, max_value=10),
        "worker": st.fixed_dictionaries(
            {},
            optional={
                "image": st.text(
                    alphabet=string.ascii_lowercase + ":/.-0123456789", min_size=1, max_size=40
                ),
                "resources": st.fixed_dictionaries(
                    {}, optional={"requests": valid_amounts, "limits": valid_amounts}
                ),
                "env": valid_env,
            },
        ),
    },
)
