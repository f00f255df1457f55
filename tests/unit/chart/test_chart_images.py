"""Static checks of the Dockerfiles the chart's images come from (no Docker engine here:
the images are built by `make images` / the kind job elsewhere).

Each image is multi-stage on a pinned base, ends as a numeric non-root user with no build
tools, copies only paths that exist and that .dockerignore lets through, and starts the
entrypoint the chart (and docs/contracts.md) expect.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest
import yaml
from chartlib import REPO, docs, render_full

DOCKERFILES = {
    "operator": ("operator/Dockerfile", ["python", "-m", "voicefleet_operator"]),
    "gateway": ("web/Dockerfile", ["python", "-m", "voicefleet_web"]),
    "worker": ("worker/Dockerfile", ["python", "-m", "voicefleet_worker"]),
}


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _ignored(relative: str) -> bool:
    patterns = [
        p.strip()
        for p in (REPO / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatch(prefix, pattern.removeprefix("**/")) or fnmatch.fnmatch(prefix, pattern)
        for pattern in patterns
        for prefix in prefixes
    )


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfile_is_multi_stage_pinned_non_root_and_starts_the_right_module(image: str) -> None:
    path, entrypoint = DOCKERFILES[image]
    steps = _instructions(REPO / path)
    args = dict(rest.split("=", 1) for w, rest in steps if w == "ARG")
    bases = [rest.split()[0] for w, rest in steps if w == "FROM"]
    assert len(bases) >= 2, "multi-stage: a build stage and a runtime stage"
    for base in bases:
        ref = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        _, _, tag = ref.partition(":")
        assert tag and tag != "latest" and re.search(r"\d", tag), f"{ref} is not pinned"
    final = steps[max(i for i, (w, _) in enumerate(steps) if w == "FROM") :]
    users = [rest for w, rest in final if w == "USER"]
    assert users and re.fullmatch(r"[1-9]\d{3,}(:\d+)?", users[-1]), users
    assert yaml.safe_load([rest for w, rest in final if w == "ENTRYPOINT"][-1]) == entrypoint
    final_text = " ".join(rest for _, rest in final)
    for tool in ("gcc", "build-essential", "npm ", "git "):
        assert tool not in final_text, f"{tool.strip()} in the runtime stage"


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfile_copies_only_paths_that_exist_and_reach_the_build_context(image: str) -> None:
    path, _ = DOCKERFILES[image]
    for word, rest in _instructions(REPO / path):
        if word != "COPY" or rest.startswith("--from"):
            continue
        sources = rest.split()[:-1]
        for source in sources:
            relative = source if not source.startswith("/") else source.lstrip("/")
            assert (REPO / relative).exists(), f"{path}: COPY {source}: no such path"
            assert not _ignored(relative), f"{path}: COPY {source} is excluded by .dockerignore"


def test_the_chart_runs_the_images_entrypoints() -> None:
    objects = docs(render_full())
    commands = {
        o["metadata"]["name"]: o["spec"]["template"]["spec"]["containers"][0]["command"]
        for o in objects
        if o["kind"] == "Deployment"
    }
    assert commands["voicefleet-operator"] == DOCKERFILES["operator"][1]
    assert commands["voicefleet-gateway"][:3] == DOCKERFILES["gateway"][1]
    worker = yaml.safe_load((REPO / "tests/unit/chart/values-full.yaml").read_text())["worker"]
    assert worker["command"] == DOCKERFILES["worker"][1]
