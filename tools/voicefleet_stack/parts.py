"""What a part of the local stack is: a process, how to start it, how to know it is healthy.

Pure data plus the context every part is built from. Starting, watching and stopping
processes lives in `supervisor.py`; building each part's command line lives in the
modules that know that server (`kube.py`, `livekit.py`, `letta.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class StackContext:
    """Where the stack keeps its files and which ports it uses."""

    home: Path  # VOICEFLEET_HOME (caches: bin/, venvs, letta install)
    stack_dir: Path  # home/stack: state, certificates, logs of the running stack
    bin_dir: Path  # home/bin/current: kubectl, helm, servers (VOICEFLEET_BIN)
    ports: dict[str, int] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)  # generated keys, urls, tokens

    @property
    def log_dir(self) -> Path:
        return self.stack_dir / "logs"

    def data(self, name: str) -> Path:
        """A part's own data folder under the stack folder."""
        path = self.stack_dir / "data" / name
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass
class Part:
    """One server of the stack.

    `health` returns True once the server answers; it may raise, which counts as not yet.
    `prepare` runs before the first start (init a data dir, write configs); `after_healthy`
    runs once it is healthy (migrations, demo objects). `run_as` names an unprivileged
    user the process is started as (via setpriv) when the stack runs as root.
    """

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    health: Callable[[], bool]
    timeout: float = 60.0
    prepare: Callable[[], None] | None = None
    after_healthy: Callable[[], None] | None = None
    run_as: str | None = None
    description: str = ""
    stop_signal: int = 15  # SIGTERM; PostgreSQL wants SIGINT (fast shutdown, not "smart")
