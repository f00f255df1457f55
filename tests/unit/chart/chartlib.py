"""Helpers of the chart tests: run helm on charts/voicefleet, parse what it renders.

Shared by tests/unit/chart (no cluster) and tests/integration/chart (the local stack).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "voicefleet"
HERE = Path(__file__).resolve().parent
FULL_VALUES = HERE / "values-full.yaml"
GOLDEN = HERE / "golden"
RELEASE, NAMESPACE = "voicefleet", "voicefleet-system"
# The full values enable ServiceMonitors, which the chart renders only when the cluster
# serves the prometheus-operator API; `helm template` is told that it does.
MONITORING_API = "monitoring.coreos.com/v1/ServiceMonitor"

sys.path.insert(0, str(REPO / "charts"))
from render_manifests import helm_binary  # noqa: E402


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    binary = helm_binary()
    if binary == "helm" and not any(
        (Path(p) / "helm").is_file() for p in os.environ.get("PATH", "").split(os.pathsep)
    ):
        raise RuntimeError("helm not found: run `make bins` (tools/build-bins.sh builds it)")
    result = subprocess.run([binary, *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args[:2])} failed:\n{result.stderr}")
    return result


def template(
    *,
    values: Sequence[Path] = (),
    sets: dict[str, str] | None = None,
    set_json: dict[str, str] | None = None,
    api_versions: Sequence[str] = (),
    show_only: Sequence[str] = (),
    check: bool = True,
    namespace: str = NAMESPACE,
) -> subprocess.CompletedProcess[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", namespace]
    for path in values:
        args += ["-f", str(path)]
    for key, value in (sets or {}).items():
        args += ["--set", f"{key}={value}"]
    for key, value in (set_json or {}).items():
        args += ["--set-json", f"{key}={value}"]
    for api in api_versions:
        args += ["--api-versions", api]
    for template_path in show_only:
        args += ["--show-only", template_path]
    return helm(*args, check=check)


def render_default() -> str:
    return template().stdout


def render_full() -> str:
    return template(values=[FULL_VALUES], api_versions=[MONITORING_API]).stdout


def docs(rendered: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(rendered) if d]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(
        f"no {kind} {name} in {[(o['kind'], o['metadata']['name']) for o in objects]}"
    )


def container_env(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    return env
