"""`python -m voicefleet_worker` as a process, with nothing to talk to (no stack needed)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import voicefleet_worker.config

WORKER_DIR = Path(voicefleet_worker.config.__file__).resolve().parents[1]
SECRET = "a-livekit-secret-that-must-never-be-logged"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


def worker_env(**extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONPATH": str(WORKER_DIR),
        **extra,
    }


def test_missing_configuration_exits_2_and_names_it() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "voicefleet_worker"],
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "missing environment variables" in result.stderr
    assert "VOICEFLEET_AGENT_NAME" in result.stderr


def test_unreachable_dependencies_keep_it_not_ready_and_sigterm_exits_zero(tmp_path: Path) -> None:
    health_port = closed_port()
    letta_url = f"http://127.0.0.1:{closed_port()}"
    env = worker_env(
        LIVEKIT_URL=f"ws://127.0.0.1:{closed_port()}",
        LIVEKIT_API_KEY="key",
        LIVEKIT_API_SECRET=SECRET,
        LETTA_BASE_URL=letta_url,
        VOICEFLEET_AGENT_NAME="voicefleet-worker-test",
        VOICEFLEET_HEALTH_PORT=str(health_port),
    )
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voicefleet_worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        body = wait_for_reasons(
            health_port,
            proc,
            lambda reasons: reasons == ["not registered with LiveKit", "Letta unreachable"],
        )
        assert body["ready"] is False
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = log_path.read_text()
    assert f"Letta at {letta_url} is unreachable" in log and "not ready" in log
    assert "stopping before any job was taken" in log
    assert SECRET not in log


def wait_for_reasons(
    port: int, proc: subprocess.Popen[bytes], wanted: Callable[[object], bool], within: float = 60.0
) -> dict[str, object]:
    deadline = time.monotonic() + within
    body: dict[str, object] = {}
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"worker exited {proc.returncode}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read())
        except OSError:
            pass
        if wanted(body.get("reasons")):
            return body
        time.sleep(0.2)
    raise AssertionError(f"/readyz never matched; last {body}")
