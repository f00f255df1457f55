"""Read the image config of a Dockerfile's last stage, as oci_image.py options.

The images the real node runs are built without Docker (tools/images/build-images.sh), but
from the same definition as the user-facing Dockerfile: this reads the last stage's `ENV`,
`USER`, `WORKDIR`, `EXPOSE`, `STOPSIGNAL`, `ENTRYPOINT` and `CMD` and prints them one per
line as `--option=value` for oci_image.py, so the entrypoint and environment can never
drift from the Dockerfile. `$PATH` in an ENV value expands to the base image's PATH
(Debian's default), the only variable the project's Dockerfiles use.
Usage: python3 dockerfile_config.py worker/Dockerfile
Standard library only.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def last_stage_options(dockerfile: Path) -> list[str]:
    stages: list[list[tuple[str, str]]] = []
    for word, rest in _instructions(dockerfile.read_text()):
        if word == "FROM":
            stages.append([])
        elif stages:
            stages[-1].append((word, rest))
    if not stages:
        raise SystemExit(f"{dockerfile}: no FROM")
    env: dict[str, str] = {"PATH": BASE_PATH}
    options: list[str] = []
    for word, rest in stages[-1]:
        if word == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value.replace("$PATH", env.get("PATH", BASE_PATH))
        elif word == "USER":
            options.append(f"--user={rest}")
        elif word == "WORKDIR":
            options.append(f"--workdir={rest}")
        elif word == "EXPOSE":
            options += [f"--port={p.split('/')[0]}" for p in rest.split()]
        elif word == "STOPSIGNAL":
            options.append(f"--stop-signal={rest}")
        elif word in ("ENTRYPOINT", "CMD"):
            form = json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]
            options.append(f"--{word.lower()}={json.dumps(form)}")
    return [f"--env={k}={v}" for k, v in env.items()] + options


if __name__ == "__main__":
    print("\n".join(last_stage_options(Path(sys.argv[1]))))
