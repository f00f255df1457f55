"""Start, watch and stop the stack's processes.

Each part runs in its own process group with its output in `<stack>/logs/<part>.log`.
The pids are recorded in `<stack>/pids.json` so `voicefleet down` (or a later `up`) can
stop exactly what was started, even from another process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .parts import Part, StackContext


class PartFailed(RuntimeError):
    """A part did not become healthy; the message carries its log tail."""


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(text[-lines:])


def say(message: str) -> None:
    print(f"[voicefleet {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Supervisor:
    def __init__(self, ctx: StackContext) -> None:
        self.ctx = ctx
        self.pid_file = ctx.stack_dir / "pids.json"
        self.started: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self.stop_signals: dict[str, int] = {}

    # -- bookkeeping --------------------------------------------------------------
    def _record(self) -> None:
        self.pid_file.write_text(
            json.dumps(
                [
                    {"name": n, "pid": p, "stop_signal": self.stop_signals.get(n, signal.SIGTERM)}
                    for n, p in self.started
                ]
            )
        )

    # -- start --------------------------------------------------------------------
    def start(self, part: Part) -> None:
        self.ctx.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.ctx.log_dir / f"{part.name}.log"
        t0 = time.monotonic()
        if part.prepare is not None:
            part.prepare()
        argv = list(part.argv)
        if part.run_as and os.geteuid() == 0:
            argv = ["setpriv", f"--reuid={part.run_as}", "--regid=nogroup", "--init-groups", *argv]
        with open(log_path, "ab") as log:
            log.write(
                f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} start: {' '.join(argv)}\n".encode()
            )
            log.flush()
            proc = subprocess.Popen(
                argv,
                cwd=part.cwd,
                env=part.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with self._lock:
            self.started.append((part.name, proc.pid))
            self.stop_signals[part.name] = part.stop_signal
            self._record()
        deadline = time.monotonic() + part.timeout
        next_note = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise PartFailed(
                    f"{part.name} exited with code {proc.returncode} before it was healthy.\n"
                    f"--- last lines of {log_path} ---\n{log_tail(log_path)}"
                )
            try:
                if part.health():
                    break
            except Exception:  # health probes raise while the server is starting
                pass
            if time.monotonic() > deadline:
                raise PartFailed(
                    f"{part.name} not healthy after {part.timeout:.0f} s.\n"
                    f"--- last lines of {log_path} ---\n{log_tail(log_path)}"
                )
            if time.monotonic() > next_note:
                say(f"  ... waiting for {part.name} ({time.monotonic() - t0:.0f} s)")
                next_note = time.monotonic() + 10
            time.sleep(0.2)
        if part.after_healthy is not None:
            part.after_healthy()
        say(f"{part.name:<24} healthy in {time.monotonic() - t0:5.1f} s  {part.description}")

    # -- stop ---------------------------------------------------------------------
    def stop_all(self, grace: float = 15.0) -> None:
        stop_recorded(self.pid_file, grace)
        self.started.clear()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def recorded_pids(pid_file: Path) -> list[tuple[str, int]]:
    try:
        return [(e["name"], int(e["pid"])) for e in json.loads(pid_file.read_text())]
    except (FileNotFoundError, ValueError):
        return []


def stop_recorded(pid_file: Path, grace: float = 15.0) -> list[str]:
    """Stop every recorded part in reverse start order: SIGTERM, then SIGKILL after grace."""
    stopped = stop_pids(recorded_pids(pid_file), grace, recorded_stop_signals(pid_file))
    pid_file.unlink(missing_ok=True)
    return stopped


def recorded_stop_signals(pid_file: Path) -> dict[str, int]:
    try:
        return {
            e["name"]: int(e.get("stop_signal", signal.SIGTERM))
            for e in json.loads(pid_file.read_text())
        }
    except (FileNotFoundError, ValueError):
        return {}


def stop_pids(
    parts: list[tuple[str, int]], grace: float = 15.0, signals: dict[str, int] | None = None
) -> list[str]:
    stopped = []
    for name, pid in reversed(parts):
        if not _alive(pid):
            continue
        _signal_group(pid, (signals or {}).get(name, signal.SIGTERM))
        deadline = time.monotonic() + grace
        while _alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.1)
        if _alive(pid):
            say(f"{name} ignored SIGTERM for {grace:.0f} s; killing it")
            _signal_group(pid, signal.SIGKILL)
            while _alive(pid):
                _reap(pid)
                time.sleep(0.05)
        # The group may hold children that outlived their leader.
        _signal_group(pid, signal.SIGKILL)
        stopped.append(name)
    return stopped
