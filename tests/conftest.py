"""Shared fixtures: the real local stack, started once per test session (or reused).

`stack_env` is the dict of the stack's env file (SPEC.md, "Local stack"). Resolution:
1. `VOICEFLEET_STACK_ENV=<path>`: use that running stack as it is (never stopped here);
2. otherwise a private stack is started with `voicefleet up --detach` in a fresh folder
   under $VOICEFLEET_HOME/test-stacks/ on free ports, and stopped at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from voicefleet_stack.stack import read_env_file, voicefleet_home


def _voicefleet(
    stack_dir: Path, *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, VOICEFLEET_STACK_DIR=str(stack_dir))
    return subprocess.run(
        [sys.executable, "-m", "voicefleet_stack", *args],
        env=env,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def stack_dir() -> Iterator[Path]:
    given = os.environ.get("VOICEFLEET_STACK_ENV")
    if given:
        yield Path(given).parent
        return
    root = voicefleet_home() / "test-stacks"
    root.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="stack-", dir=root))
    result = _voicefleet(directory, "up", "--detach")
    if result.returncode != 0:
        _voicefleet(directory, "down")
        pytest.fail(
            f"`voicefleet up --detach` failed (exit {result.returncode}); logs in {directory}/logs"
        )
    try:
        yield directory
    finally:
        _voicefleet(directory, "down", timeout=120)
        # Keep the logs of the three newest test stacks (for a failure to be read), no more.
        stacks = sorted(root.glob("stack-*"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in stacks[3:]:
            shutil.rmtree(old, ignore_errors=True)


@pytest.fixture(scope="session")
def stack_env(stack_dir: Path) -> dict[str, str]:
    return read_env_file(stack_dir / "env")


@pytest.fixture(scope="session")
def kubectl(stack_env: dict[str, str]):  # type: ignore[no-untyped-def]
    """Run the stack's kubectl as admin: kubectl("get", "pods") -> CompletedProcess."""

    def run(
        *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                f"{stack_env['VOICEFLEET_BIN']}/kubectl",
                f"--kubeconfig={stack_env['KUBECONFIG']}",
                *args,
            ],
            input=stdin,
            text=True,
            capture_output=True,
            check=check,
            timeout=60,
        )

    return run
