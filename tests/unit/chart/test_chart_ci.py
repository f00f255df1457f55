"""The CI workflow runs only steps that exist locally: make targets of the Makefile and
steps of .github/kind/e2e.sh (the kind job itself cannot run on the project's machines)."""

from __future__ import annotations

import re
import subprocess

import yaml
from chartlib import REPO

WORKFLOW = REPO / ".github" / "workflows" / "ci.yaml"
E2E = REPO / ".github" / "kind" / "e2e.sh"


def _runs() -> list[str]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    return [
        step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step
    ]


def test_workflow_make_targets_exist_in_the_makefile() -> None:
    targets = set(re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(), re.M))
    used = {t for run in _runs() for t in re.findall(r"\bmake ((?:[a-z-]+ ?)+)", run)}
    wanted = {name for group in used for name in group.split()}
    assert wanted, "the workflow runs no make target"
    assert wanted <= targets, f"unknown make targets: {sorted(wanted - targets)}"


def test_workflow_kind_steps_exist_in_the_e2e_script() -> None:
    script = E2E.read_text()
    known = set(re.search(r"^  (cluster \|.*)\) \"step_\$1\"", script, re.M).group(1).split(" | "))  # type: ignore[union-attr]
    used = {m for run in _runs() for m in re.findall(r"\.github/kind/e2e\.sh (\w+)", run)}
    assert used and used <= known, f"unknown steps: {sorted(used - known)}"
    assert {f"step_{s}" for s in known} <= set(re.findall(r"^(step_\w+)\(\)", script, re.M))


def test_e2e_script_is_valid_bash() -> None:
    result = subprocess.run(["bash", "-n", str(E2E)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
